import Foundation
import RunbookCore
import Testing

@testable import RunbookEngine
@testable import RunbookSteps

/// What pg_kill_queries asks PostgreSQL: the integration tests show it ending a real query;
/// these pin down the safety conditions that a test host cannot easily provoke (autovacuum
/// workers, replication, the step's own session).
@Suite("pg_kill_queries: the SQL it plans and runs")
struct PostgresKillSQLTests {
    @Test("the filter keeps to client backends, never its own, in the wanted state and age")
    func filter() {
        let filter = PostgresKillQueriesStep.filter(olderThan: .seconds(90), state: "idle in transaction", database: "app",
                                                    excludeUsers: ["replicator"], excludeApplications: ["pg_dump"])
        let conditions = filter.components(separatedBy: "\n   AND ")
        #expect(conditions.contains("backend_type = 'client backend'"))  // not autovacuum, walsender, background workers
        #expect(conditions.contains("pid <> pg_backend_pid()"))
        #expect(conditions.contains("state = 'idle in transaction'"))
        #expect(conditions.contains("now() - state_change > interval '90000 milliseconds'"))
        #expect(conditions.contains("datname = 'app'"))
        #expect(conditions.contains { $0.hasPrefix("usename::text <> ALL (") && $0.contains("replicator") })
        #expect(conditions.contains { $0.hasPrefix("coalesce(application_name, '') <> ALL (") && $0.contains("pg_dump") })
        let active = PostgresKillQueriesStep.filter(olderThan: .seconds(2), state: "active", database: nil, excludeUsers: [], excludeApplications: [])
        #expect(active.contains("now() - query_start > interval '2000 milliseconds'"))
        #expect(!active.contains("datname"))
    }

    @Test("apply terminates only the planned backends (same pid and start) that still match the filter")
    func terminate() {
        let victims = [
            PostgresKillQueriesStep.Victim(pid: 41, backendStart: "2026-12-04 10:00:00.1+00", user: "app", application: "", ageSeconds: 120, query: "SELECT 1"),
            PostgresKillQueriesStep.Victim(pid: 42, backendStart: "2026-12-04 10:00:01.5+00", user: "app", application: "", ageSeconds: 99, query: "SELECT 2"),
        ]
        let filter = PostgresKillQueriesStep.filter(olderThan: .seconds(60), state: "active", database: "app", excludeUsers: [], excludeApplications: [])
        let sql = PostgresKillQueriesStep.terminateSQL(victims, filter: filter, serverVersion: 150004)
        #expect(sql.contains("WHERE (pid, backend_start::text) IN ((41, '2026-12-04 10:00:00.1+00'), (42, '2026-12-04 10:00:01.5+00'))"))
        #expect(sql.contains("AND " + filter))
        #expect(sql.contains("pg_terminate_backend(pid, 5000)"))
        #expect(sql.contains("'terminated %s of %s planned backend(s)'"))
        #expect(PostgresKillQueriesStep.terminateSQL(victims, filter: filter, serverVersion: 130010).contains("pg_terminate_backend(pid) AS ended"))
    }
}

import Foundation
import RunbookCore

// MARK: - pg_kill_queries

/// `pg_kill_queries`: terminates client backends in `state` (default active) for longer
/// than `older_than`. The plan lists each one (pid, user, application, age, query cut and
/// masked); apply terminates only those, and only if they still qualify (same pid and
/// backend start, same state, still older than the limit). Never its own backend,
/// autovacuum workers, replication or other background processes (`backend_type = 'client
/// backend'` only). No backend qualifies: a no-op. Irreversible.
package struct PostgresKillQueriesStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_kill_queries", summary: "terminate queries running longer than a limit",
        arguments: pgConnection + [
            ArgumentSpec("older_than", .duration, required: true, "age of the queries to end, e.g. 1m"),
            ArgumentSpec("state", .enumeration(pgStates), default: "active", "backend state to match"),
            ArgumentSpec("exclude_users", .stringOrList, "users whose queries are left alone"),
            ArgumentSpec("exclude_applications", .stringOrList, "application names whose queries are left alone"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .irreversible }
    package init() {}

    /// A backend the plan found.
    struct Victim: Sendable {
        let pid: Int
        let backendStart: String
        let user: String
        let application: String
        let ageSeconds: Int
        let query: String
    }

    package func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = rendered
        let client = try PostgresClient(arguments)
        guard let olderThanText = arguments.string("older_than") else { throw StepFailure("pg_kill_queries needs older_than, e.g. 1m") }
        guard let olderThan = DurationText.parse(olderThanText) else { throw StepFailure("older_than: \(olderThanText) is not a duration") }
        let state = arguments.string("state") ?? "active"
        let filter = Self.filter(olderThan: olderThan, state: state, database: client.database,
                                 excludeUsers: try arguments.list("exclude_users"),
                                 excludeApplications: try arguments.list("exclude_applications"))
        let ageColumn = Self.ageColumn(state)
        let rows = try await postgresRows(client, """
            SELECT current_setting('server_version_num'), '', '', '', '', '';
            SELECT pid, backend_start::text, coalesce(usename::text, ''), coalesce(application_name, ''),
                   floor(extract(epoch FROM now() - \(ageColumn)))::bigint,
                   regexp_replace(left(coalesce(query, ''), 400), '\\s+', ' ', 'g')
              FROM pg_stat_activity
             WHERE \(filter)
             ORDER BY \(ageColumn), pid;
            """, columns: 6, step: step, host: host.name, facts: facts)
        guard let versionRow = rows.first, let serverVersion = Int(versionRow[0]) else {
            throw StepFailure.onHost("unexpected answer from PostgreSQL on \(host.name)")
        }
        let victims = rows.dropFirst().compactMap { row -> Victim? in
            guard let pid = Int(row[0]) else { return nil }
            return Victim(pid: pid, backendStart: row[1], user: row[2], application: row[3], ageSeconds: Int(row[4]) ?? 0, query: row[5])
        }
        let what = "backends \(state) for more than \(olderThanText) in \(client.database ?? "any database")"
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: false, summary: "")
        change.fingerprints.append(FactFingerprint(
            fact: "pg_stat_activity: \(what)",
            digest: victims.isEmpty ? "none" : sha256Hex(victims.map { "\($0.pid) \($0.backendStart)" }.joined(separator: "\n"))))
        if victims.isEmpty {
            change.action = .noop
            change.reversible = true
            change.summary = "no \(what)"
            change.reason = change.summary
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
        let run = client.command(client.psql(Self.terminateSQL(victims, filter: filter, serverVersion: serverVersion), tuples: true))
        change.summary = "terminate \(victims.count) \(what)"
        change.diff = listing(victims.map {
            "pid \($0.pid)  user \($0.user)  app \($0.application.isEmpty ? "-" : $0.application)  age \(Self.age($0.ageSeconds))  "
                + PostgresSQL.cut($0.query)
        })
        return HostStepPlan(change: change, operation: .run(run, undo: nil), deferredUntilApply: false)
    }

    /// The column the age is measured from: query start for active backends, the last state
    /// change otherwise (how long a session has been idle in a transaction, say).
    static func ageColumn(_ state: String) -> String {
        state == "active" ? "query_start" : "state_change"
    }

    /// The conditions a backend must meet, at plan time and again at apply time.
    static func filter(olderThan: Duration, state: String, database: String?, excludeUsers: [String],
                       excludeApplications: [String]) -> String {
        let milliseconds = Int(DurationText.milliseconds(olderThan).rounded())
        var conditions = [
            "backend_type = 'client backend'",
            "pid <> pg_backend_pid()",
            "state = \(PostgresSQL.literal(state))",
            "now() - \(ageColumn(state)) > interval '\(milliseconds) milliseconds'",
        ]
        if let database { conditions.append("datname = \(PostgresSQL.literal(database))") }
        if !excludeUsers.isEmpty { conditions.append("usename::text <> ALL (\(PostgresSQL.textArray(excludeUsers)))") }
        if !excludeApplications.isEmpty {
            conditions.append("coalesce(application_name, '') <> ALL (\(PostgresSQL.textArray(excludeApplications)))")
        }
        return conditions.joined(separator: "\n   AND ")
    }

    /// Terminates the planned backends that still qualify and prints how many it ended.
    /// From PostgreSQL 14 on, it waits up to 5 s for each to exit.
    static func terminateSQL(_ victims: [Victim], filter: String, serverVersion: Int) -> String {
        let planned = victims.map { "(\($0.pid), \(PostgresSQL.literal($0.backendStart)))" }.joined(separator: ", ")
        let terminate = serverVersion >= 140000 ? "pg_terminate_backend(pid, 5000)" : "pg_terminate_backend(pid)"
        return """
            SELECT format('terminated %s of %s planned backend(s)', count(*) FILTER (WHERE ended), \(victims.count))
              FROM (SELECT \(terminate) AS ended
                      FROM pg_stat_activity
                     WHERE (pid, backend_start::text) IN (\(planned))
                       AND \(filter)) AS victims;
            """
    }

    /// `42s`, `3m05s`, `2h10m`.
    static func age(_ seconds: Int) -> String {
        if seconds < 60 { return "\(seconds)s" }
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : String(n) }
        if seconds < 3600 { return "\(seconds / 60)m\(two(seconds % 60))s" }
        return "\(seconds / 3600)h\(two((seconds % 3600) / 60))m"
    }
}


import Foundation
import RunbookCore

// MARK: - pg_slow_queries

/// `pg_slow_queries`: the top `limit` statements of the database by total execution time,
/// from pg_stat_statements: a read-only report shown in the plan (and, at apply, read again
/// into `steps.<id>.report` / `stdout`). When the extension is not installed in the
/// database (or its library not preloaded), the step is a no-op whose summary says how to
/// enable it: a missing report should not block the steps after it.
package struct PostgresSlowQueriesStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_slow_queries", summary: "report the slowest statements from pg_stat_statements",
        arguments: pgConnection + [
            ArgumentSpec("limit", .int, default: 10, "how many statements"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = rendered
        let client = try PostgresClient(arguments)
        let limit = try arguments.int("limit") ?? 10
        guard limit > 0 else { throw StepFailure("limit must be at least 1, got \(limit)") }
        let probe = try await postgresRows(client, """
            SELECT current_setting('server_version_num'), current_database(),
                   coalesce((SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'), ''),
                   coalesce((SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), '?');
            """, columns: 4, step: step, host: host.name, facts: facts)
        guard let row = probe.first, let version = Int(row[0]) else {
            throw StepFailure.onHost("unexpected answer from PostgreSQL on \(host.name)")
        }
        let database = row[1]
        let installed = !row[2].isEmpty
        // Without pg_read_all_settings the setting is hidden ("?"): then only the query can tell.
        let preloaded: Bool? = row[3] == "?" ? nil : row[3].split(separator: ",").contains { PostgresSQL.trim($0) == "pg_stat_statements" }
        var change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: "")
        if !installed || preloaded == false {
            return Self.unavailable(change, Self.enableHint(database: database, installed: installed, preloaded: preloaded))
        }
        let query = client.command(client.psql(Self.sql(limit: limit, serverVersion: version), tuples: true))
        let output = try await facts.check(query, timeout: step.timeout ?? .seconds(60))
        guard output.succeeded else {
            if output.stderrText.contains("shared_preload_libraries") {
                return Self.unavailable(change, Self.enableHint(database: database, installed: true, preloaded: false))
            }
            throw StepFailure.onHost("cannot read pg_stat_statements on \(host.name) (\(output.statusText)): \(postgresError(output.stderrText))")
        }
        let rows = PostgresSQL.rows(output.stdoutText, columns: 5)
        change.summary = "top \(rows.count) of at most \(limit) statements in \(database) by total time (pg_stat_statements)"
        change.diff = Self.report(rows)
        return HostStepPlan(change: change, operation: .action(PostgresReportAction(query: query)), deferredUntilApply: false)
    }

    static func unavailable(_ change: PlannedChange, _ message: String) -> HostStepPlan {
        var change = change
        change.action = .noop
        change.summary = "no report: " + message
        change.reason = message
        return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
    }

    /// How to enable pg_stat_statements, for what is missing.
    /// `preloaded` nil: unknown (the setting is hidden from this user).
    static func enableHint(database: String, installed: Bool, preloaded: Bool?) -> String {
        let preload = "add pg_stat_statements to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
        let create = "run CREATE EXTENSION pg_stat_statements; in \(database)"
        switch (installed, preloaded) {
        case (false, false?): return "pg_stat_statements is not enabled: \(preload), then \(create)"
        case (false, _): return "pg_stat_statements is not installed in \(database): \(create) (it also needs pg_stat_statements in shared_preload_libraries)"
        default: return "pg_stat_statements is not loaded: \(preload)"
        }
    }

    /// The report query: PostgreSQL 13 renamed total_time/mean_time to total_exec_time/mean_exec_time.
    static func sql(limit: Int, serverVersion: Int) -> String {
        let total = serverVersion >= 130000 ? "total_exec_time" : "total_time"
        let mean = serverVersion >= 130000 ? "mean_exec_time" : "mean_time"
        return """
            /* runbook pg_slow_queries */
            SELECT calls, round(\(total)::numeric, 1), round(\(mean)::numeric, 2), rows,
                   regexp_replace(left(query, 400), '\\s+', ' ', 'g')
              FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '/* runbook pg_slow_queries */%'
             ORDER BY \(total) DESC
             LIMIT \(limit);
            """
    }

    /// The report's lines (ending with a newline), or nil when there is nothing to show.
    static func report(_ rows: [[String]]) -> String? {
        guard !rows.isEmpty else { return "no statements recorded yet\n" }
        let header = ["#", "calls", "total ms", "mean ms", "rows", "query"]
        let table = rows.enumerated().map { index, row in [String(index + 1), row[0], row[1], row[2], row[3], PostgresSQL.cut(row[4])] }
        var widths = header.map(\.count)
        for line in table { for (i, cell) in line.enumerated().dropLast() { widths[i] = max(widths[i], cell.count) } }
        func format(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: max(0, widths[i] - cell.count))
                return i == cells.count - 1 ? cell : (i == 0 ? cell + pad : pad + cell)
            }.joined(separator: "  ")
        }
        return ([format(header)] + table.map(format)).joined(separator: "\n") + "\n"
    }
}

/// Reads the slow-query report again at apply time, for `steps.<id>.report`; it only reads.
struct PostgresReportAction: StepAction {
    let query: ShellCommand
    var canonical: String { query.commandLine }
    var commands: [ShellCommand] { [query] }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
        do throws(TransportError) {
            let output = try await transport.run(query, stdin: [], timeout: step.timeout ?? .seconds(60), onOutput: nil)
            guard output.succeeded else {
                return .failure("cannot read pg_stat_statements (\(output.statusText)): \(postgresError(output.stderrText))")
            }
            let report = PostgresSlowQueriesStep.report(PostgresSQL.rows(output.stdoutText, columns: 5)) ?? ""
            return .success(["changed": false, "report": .string(report), "stdout": .string(report), "rc": 0])
        } catch {
            return .failure(error.message)
        }
    }
}

import Foundation
import RunbookCore

// MARK: - pg_vacuum

/// `pg_vacuum`: `VACUUM (FULL, ANALYZE) tables` (the whole database without `tables`).
/// The plan checks that the tables exist and shows when each was last vacuumed and analyzed.
/// Irreversible (nothing to undo, and the schema says so).
package struct PostgresVacuumStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_vacuum", summary: "VACUUM (ANALYZE) tables",
        arguments: pgConnection + [
            ArgumentSpec("tables", .stringOrList, "tables to vacuum (default: the whole database)"),
            ArgumentSpec("analyze", .bool, default: true, "also ANALYZE"),
            ArgumentSpec("full", .bool, default: false, "VACUUM FULL (locks the tables)"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .irreversible }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = rendered
        let client = try PostgresClient(arguments)
        let tables = try arguments.list("tables")
        for table in tables where !PostgresSQL.isTableName(table) {
            throw StepFailure("\(table.debugDescription) is not a table name; write name, schema.name, or \"Quoted Name\"")
        }
        let sql = Self.sql(tables: tables, analyze: try arguments.bool("analyze", default: true), full: try arguments.bool("full", default: false))

        var lines: [String] = []
        if tables.isEmpty {
            let rows = try await postgresRows(client, """
                SELECT current_database(), count(*), coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables;
                """, columns: 3, step: step, host: host.name, facts: facts)
            if let row = rows.first { lines.append("all \(row[1]) tables of \(row[0]) (\(row[2]) dead rows)") }
        } else {
            let rows = try await postgresRows(client, """
                SELECT t.name, c.oid IS NOT NULL, coalesce(s.n_dead_tup, 0),
                       coalesce(greatest(s.last_vacuum, s.last_autovacuum)::text, 'never'),
                       coalesce(greatest(s.last_analyze, s.last_autoanalyze)::text, 'never')
                  FROM unnest(\(PostgresSQL.textArray(tables))) WITH ORDINALITY AS t(name, n)
                  LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)
                  LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
                 ORDER BY t.n;
                """, columns: 5, step: step, host: host.name, facts: facts)
            let missing = rows.filter { $0[1] != "t" }.map { $0[0] }
            if !missing.isEmpty {
                throw StepFailure.onHost("no table \(missing.joined(separator: ", ")) in \(client.database ?? "the database") on \(host.name)")
            }
            for row in rows {
                lines.append("\(row[0]): \(row[2]) dead rows, last vacuum \(row[3]), last analyze \(row[4])")
            }
        }
        let run = client.command(client.psql(sql))
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: false,
                                        summary: String(sql.dropLast()) + " on " + client.label)
        change.diff = listing(lines)
        return HostStepPlan(change: change, operation: .run(run, undo: nil), deferredUntilApply: false)
    }

    /// `VACUUM (FULL, ANALYZE) a, b;`.
    static func sql(tables: [String], analyze: Bool, full: Bool) -> String {
        var options: [String] = []
        if full { options.append("FULL") }
        if analyze { options.append("ANALYZE") }
        var sql = "VACUUM"
        if !options.isEmpty { sql += " (" + options.joined(separator: ", ") + ")" }
        if !tables.isEmpty { sql += " " + tables.joined(separator: ", ") }
        return sql + ";"
    }
}


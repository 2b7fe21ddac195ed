import Foundation
import RunbookCore

// MARK: - pg_sql

/// `pg_sql`: runs `sql` with psql; reversible only with `undo_sql`, which runs on rollback.
package struct PostgresSQLStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_sql", summary: "run SQL",
        arguments: pgConnection + [
            ArgumentSpec("sql", .string, required: true, "the SQL"),
            ArgumentSpec("undo_sql", .string, "SQL that undoes it on rollback; without it the step is irreversible"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { arguments.has("undo_sql") ? .restore : .irreversible }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = rendered
        let client = try PostgresClient(arguments)
        guard let sql = arguments.string("sql"), !PostgresSQL.trim(sql).isEmpty else { throw StepFailure("pg_sql needs sql") }
        let undoSQL = arguments.string("undo_sql").flatMap { PostgresSQL.trim($0).isEmpty ? nil : $0 }
        if undoSQL != nil {
            if case .string(let written) = rendered.raw["undo_sql"], written.contains("secrets.") {
                throw StepFailure("undo_sql cannot use secrets: the undo command is kept in the journal")
            }
            if let password = client.password, !password.isNamedSecret {
                throw StepFailure("with undo_sql, give password as {{ secrets.NAME }}: a rollback looks the password up by that name")
            }
        }
        // SQL that uses secrets does not go on the command line (see PostgresClient.psql).
        var written = ""
        if case .string(let text) = rendered.raw["sql"] { written = text }
        let hidden = written.contains("secrets.")
        let run = client.command(client.psql(sql, hidden: hidden))
        let undo = undoSQL.map { client.command(client.psql($0)) }
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: undo != nil,
                                        summary: "SQL on \(client.label): " + PostgresSQL.cut(sql))
        if hidden { change.diff = listing(["SQL, sent through the environment:"] + sql.split(separator: "\n").map { "  " + $0 }) }
        // The digest of a hidden statement covers it as written ({{ secrets.NAME }}), never its secrets.
        return HostStepPlan(change: change, operation: .run(run, undo: undo), deferredUntilApply: false, digestExtra: hidden ? written : "")
    }
}


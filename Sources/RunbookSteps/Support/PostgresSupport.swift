import RunbookCore

// The `pg_*` kinds (SPEC §5). Each reads its facts through `FactReader` at plan time (psql
// queries and directory listings, all read-only) and applies one remote shell command built
// by `PostgresClient`, so what runs is what the plan showed.

/// Runs a read-only query at plan time; rows of `columns` fields.
func postgresRows(_ client: PostgresClient, _ sql: String, columns: Int, step: Step, host: String,
                          facts: FactReader) async throws -> [[String]] {
    let output = try await facts.check(client.command(client.psql(sql, tuples: true)), timeout: step.timeout ?? .seconds(60))
    guard output.succeeded else {
        throw StepFailure.onHost("cannot read from PostgreSQL (\(client.label)) on \(host) (\(output.statusText)): "
                          + postgresError(output.stderrText))
    }
    return PostgresSQL.rows(output.stdoutText, columns: columns)
}

/// The useful part of psql's stderr: its last few lines, on one line.
func postgresError(_ stderr: String) -> String {
    let lines = stderr.split(separator: "\n").map { PostgresSQL.trim($0) }.filter { !$0.isEmpty }
    return lines.suffix(3).joined(separator: " | ")
}

/// The `diff` field carries a multi-line listing for display (the plan prints it indented
/// under the step); it always ends with a newline.
func listing(_ lines: [String]) -> String? {
    lines.isEmpty ? nil : lines.joined(separator: "\n") + "\n"
}

/// The connection arguments every `pg_*` kind (and `gather`) takes.
let pgConnection: [ArgumentSpec] = [
    ArgumentSpec("database", .string, "database name (psql -d)"),
    ArgumentSpec("user", .string, "database user (psql -U)"),
    ArgumentSpec("host", .string, "server host or socket directory (psql -h)"),
    ArgumentSpec("port", .int, "server port (psql -p)"),
    ArgumentSpec("password", .string, "password, normally {{ secrets.NAME }}; passed as PGPASSWORD in the environment"),
    ArgumentSpec("via", .enumeration(["direct", "compose", "docker"]), default: "direct",
                 "where psql runs: on the host, in a compose service, or in a container"),
    ArgumentSpec("service", .string, "compose service running PostgreSQL (via: compose)"),
    ArgumentSpec("compose_file", .string, "compose file (via: compose)"),
    ArgumentSpec("container", .string, "container running PostgreSQL (via: docker)"),
]

let pgRequirements = [
    ArgumentRequirement(when: "via", equals: "compose", requires: ["service"]),
    ArgumentRequirement(when: "via", equals: "docker", requires: ["container"]),
]

let pgStates = ["active", "idle", "idle in transaction", "idle in transaction (aborted)", "fastpath function call", "disabled"]

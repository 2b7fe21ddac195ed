import RunbookCore

// The `pg_*` kinds (SPEC §5). Each reads its facts through `FactReader` at plan time (psql
// queries and directory listings, all read-only) and applies one remote shell command built
// by `PostgresClient`, so what runs is what the plan showed.

/// Runs a read-only query at plan time; rows of `columns` fields.
private func postgresRows(_ client: PostgresClient, _ sql: String, columns: Int, step: Step, host: String,
                          facts: FactReader) async throws -> [[String]] {
    let output = try await facts.check(client.command(client.psql(sql, tuples: true)), timeout: step.timeout ?? .seconds(60))
    guard output.succeeded else {
        throw StepFailure("cannot read from PostgreSQL (\(client.label)) on \(host) (\(output.statusText)): "
                          + postgresError(output.stderrText))
    }
    return PostgresSQL.rows(output.stdoutText, columns: columns)
}

/// The useful part of psql's stderr: its last few lines, on one line.
private func postgresError(_ stderr: String) -> String {
    let lines = stderr.split(separator: "\n").map { PostgresSQL.trim($0) }.filter { !$0.isEmpty }
    return lines.suffix(3).joined(separator: " | ")
}

/// The `diff` field carries a multi-line listing for display (the plan prints it indented
/// under the step); it always ends with a newline.
private func listing(_ lines: [String]) -> String? {
    lines.isEmpty ? nil : lines.joined(separator: "\n") + "\n"
}

// MARK: - pg_sql

/// `pg_sql`: runs `sql` with psql; reversible only with `undo_sql`, which runs on rollback.
struct PostgresSQLStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = PostgresArguments(rendered)
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
        change.commands = [run.display]
        if let undo { change.commands.append("undo: " + undo.display) }
        // The digest of a hidden statement covers it as written ({{ secrets.NAME }}), never its secrets.
        change.operationsDigest = sha256Hex(run.commandLine + "\u{0}" + (hidden ? written : "") + "\u{0}" + (undo?.commandLine ?? ""))
        return HostStepPlan(change: change, operation: .run(run, undo: undo), deferredUntilApply: false)
    }
}

// MARK: - pg_vacuum

/// `pg_vacuum`: `VACUUM (FULL, ANALYZE) tables` (the whole database without `tables`).
/// The plan checks that the tables exist and shows when each was last vacuumed and analyzed.
/// Irreversible (nothing to undo, and the schema says so).
struct PostgresVacuumStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = PostgresArguments(rendered)
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
                throw StepFailure("no table \(missing.joined(separator: ", ")) in \(client.database ?? "the database") on \(host.name)")
            }
            for row in rows {
                lines.append("\(row[0]): \(row[2]) dead rows, last vacuum \(row[3]), last analyze \(row[4])")
            }
        }
        let run = client.command(client.psql(sql))
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: false,
                                        summary: String(sql.dropLast()) + " on " + client.label)
        change.diff = listing(lines)
        change.commands = [run.display]
        change.operationsDigest = sha256Hex(run.commandLine)
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

// MARK: - pg_kill_queries

/// `pg_kill_queries`: terminates client backends in `state` (default active) for longer
/// than `older_than`. The plan lists each one (pid, user, application, age, query cut and
/// masked); apply terminates only those, and only if they still qualify (same pid and
/// backend start, same state, still older than the limit). Never its own backend,
/// autovacuum workers, replication or other background processes (`backend_type = 'client
/// backend'` only). No backend qualifies: a no-op. Irreversible.
struct PostgresKillQueriesStep: StepKind {
    /// A backend the plan found.
    struct Victim: Sendable {
        let pid: Int
        let backendStart: String
        let user: String
        let application: String
        let ageSeconds: Int
        let query: String
    }

    func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = PostgresArguments(rendered)
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
            throw StepFailure("unexpected answer from PostgreSQL on \(host.name)")
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
            change.operationsDigest = sha256Hex("noop")
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
        let run = client.command(client.psql(Self.terminateSQL(victims, filter: filter, serverVersion: serverVersion), tuples: true))
        change.summary = "terminate \(victims.count) \(what)"
        change.diff = listing(victims.map {
            "pid \($0.pid)  user \($0.user)  app \($0.application.isEmpty ? "-" : $0.application)  age \(Self.age($0.ageSeconds))  "
                + PostgresSQL.cut($0.query)
        })
        change.commands = [run.display]
        change.operationsDigest = sha256Hex(run.commandLine)
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

// MARK: - pg_backup

/// `pg_backup`: `pg_dump -Fc` into a 0600 temp file in `dir`, verified with
/// `pg_restore --list` (a dump that does not verify is removed and the step fails), renamed
/// to `DATABASE-YYYYmmdd-HHMMSS.dump` (UTC, the time apply runs), then the oldest dumps of
/// that database beyond `keep` are removed. One remote command. Its last line of stdout is
/// the new dump's path (`outputs(stdout:)`). Nothing to undo: a rollback keeps the dump.
struct PostgresBackupStep: StepKind {
    /// The glob matching this kind's dump names after `DATABASE`.
    static let stampGlob = "-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9].dump"

    func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = PostgresArguments(rendered)
        let client = try PostgresClient(arguments)
        guard let database = client.database else { throw StepFailure("pg_backup needs database: the database to dump") }
        guard let dir = arguments.string("dir") else { throw StepFailure("pg_backup needs dir") }
        guard dir.hasPrefix("/") else { throw StepFailure("dir must be an absolute path, got \(dir)") }
        let keep = try arguments.int("keep")
        if let keep, keep < 1 { throw StepFailure("keep must be at least 1 (the new dump), got \(keep)") }
        let directory = dir.count > 1 && dir.hasSuffix("/") ? String(dir.dropLast()) : dir
        let base = Self.fileBase(database)

        // Facts: the server answers with these credentials, and the dumps already in dir.
        let sizes = try await postgresRows(client, "SELECT pg_size_pretty(pg_database_size(current_database()));",
                                           columns: 1, step: step, host: host.name, facts: facts)
        let size = sizes.first?[0] ?? "?"
        let list: ShellCommand = """
            if [ -d \(directory) ]; then echo dir; for f in \(directory + "/" + base)\(literal: Self.stampGlob); do \
            [ -e "$f" ] && printf '%s\\n' "${f##*/}"; done; fi; true
            """
        let listed = try await facts.check(list, timeout: step.timeout ?? .seconds(60))
        guard listed.succeeded else { throw StepFailure("cannot list \(directory) on \(host.name): \(listed.stderrText)") }
        let lines = listed.stdoutText.split(separator: "\n").map(String.init)
        let dirExists = lines.first == "dir"
        let existing = lines.dropFirst().sorted()
        let removed = keep.map { Array(existing.prefix(max(0, existing.count - ($0 - 1)))) } ?? []

        let newName = "\(base)-YYYYmmdd-HHMMSS.dump"
        var summary = "pg_dump -Fc \(client.label) (\(size)) to \(directory)/\(newName) (UTC time of apply)"
        if !dirExists { summary += ", creating \(directory)" }
        if let keep { summary += "; keep \(keep): " + (removed.isEmpty ? "removes none" : "removes \(removed.count)") }
        var details = existing.map { "\(directory)/\($0)  " + (removed.contains($0) ? "remove (keep \(keep ?? 0))" : "keep") }
        details.append("\(directory)/\(newName)  new")

        let run = client.command(Self.script(client: client, directory: directory, base: base, keep: keep))
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: true, summary: summary)
        change.diff = listing(details)
        change.commands = [run.display]
        change.fingerprints.append(FactFingerprint(fact: "dumps:\(directory)/\(base)-*.dump",
                                                   digest: sha256Hex((dirExists ? "dir\n" : "") + existing.joined(separator: "\n"))))
        change.operationsDigest = sha256Hex(run.commandLine)
        return HostStepPlan(change: change, operation: .run(run, undo: nil), deferredUntilApply: false)
    }

    /// The dump file name's prefix: the database name with anything but `[A-Za-z0-9_.-]` as `_`.
    static func fileBase(_ database: String) -> String {
        String(database.map { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) ? $0 : "_" })
    }

    /// The remote script (after the client prelude).
    static func script(client: PostgresClient, directory: String, base: String, keep: Int?) -> ShellCommand {
        var script: ShellCommand = """
            dir=\(directory); base=\(base)
            [ -d "$dir" ] || mkdir -p -m 700 -- "$dir" || exit 1
            stamp=$(date -u +%Y%m%d-%H%M%S); final="$dir/$base-$stamp.dump"; n=0
            while [ -e "$final" ] && [ "$n" -lt 5 ]; do sleep 1; n=$((n + 1)); stamp=$(date -u +%Y%m%d-%H%M%S); final="$dir/$base-$stamp.dump"; done
            [ ! -e "$final" ] || { echo "$final already exists" >&2; exit 1; }
            tmp=$(mktemp "$dir/.$base-$stamp.dump.XXXXXX") || exit 1
            if ! \(client.program("pg_dump")) -Fc > "$tmp"; then rm -f -- "$tmp"; echo "pg_dump failed; nothing was kept" >&2; exit 1; fi
            if ! \(client.program("pg_restore", connect: false)) --list < "$tmp" > /dev/null; then
              rm -f -- "$tmp"; echo "the dump did not pass pg_restore --list; nothing was kept" >&2; exit 1
            fi
            mv -f -- "$tmp" "$final" || { rm -f -- "$tmp"; exit 1; }

            """
        if let keep {
            script = script + """
                for f in "$dir/$base"\(literal: stampGlob); do [ -e "$f" ] && printf '%s\\n' "$f"; done | sort \
                | awk -v keep=\(keep) '{ p[NR] = $0 } END { for (i = 1; i <= NR - keep; i++) print p[i] }' \
                | while IFS= read -r old; do rm -f -- "$old" && echo "removed $old"; done

                """
        }
        return script + #"echo "$final""#
    }

    /// The outputs of an applied backup for `steps.<id>`: `path`, the last line of stdout.
    static func outputs(stdout: String) -> [String: Value] {
        guard let last = stdout.split(separator: "\n").last else { return [:] }
        return ["path": .string(String(last))]
    }
}

// MARK: - pg_slow_queries

/// `pg_slow_queries`: the top `limit` statements of the database by total execution time,
/// from pg_stat_statements: a read-only report shown in the plan (and, at apply, read again
/// into `steps.<id>.report` / `stdout`). When the extension is not installed in the
/// database (or its library not preloaded), the step is a no-op whose summary says how to
/// enable it: a missing report should not block the steps after it.
struct PostgresSlowQueriesStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = PostgresArguments(rendered)
        let client = try PostgresClient(arguments)
        let limit = try arguments.int("limit") ?? 10
        guard limit > 0 else { throw StepFailure("limit must be at least 1, got \(limit)") }
        let probe = try await postgresRows(client, """
            SELECT current_setting('server_version_num'), current_database(),
                   coalesce((SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'), ''),
                   coalesce((SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), '?');
            """, columns: 4, step: step, host: host.name, facts: facts)
        guard let row = probe.first, let version = Int(row[0]) else {
            throw StepFailure("unexpected answer from PostgreSQL on \(host.name)")
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
            throw StepFailure("cannot read pg_stat_statements on \(host.name) (\(output.statusText)): \(postgresError(output.stderrText))")
        }
        let rows = PostgresSQL.rows(output.stdoutText, columns: 5)
        change.summary = "top \(rows.count) of at most \(limit) statements in \(database) by total time (pg_stat_statements)"
        change.diff = Self.report(rows)
        change.operationsDigest = sha256Hex(query.commandLine)
        return HostStepPlan(change: change, operation: .action(PostgresReportAction(query: query)), deferredUntilApply: false)
    }

    static func unavailable(_ change: PlannedChange, _ message: String) -> HostStepPlan {
        var change = change
        change.action = .noop
        change.summary = "no report: " + message
        change.reason = message
        change.operationsDigest = sha256Hex("noop: " + message)
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

    func perform(on transport: any Transport, step: Step) async -> StepActionResult {
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

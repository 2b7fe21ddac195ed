import Foundation
import RunbookCore

/// `pg_restore`: a dump (`pg_backup`'s custom format) restored into a database of its own
/// beside the live one, and verified: the dump, chosen by name or the newest of `dir`, is
/// pinned in the plan; the target database (`database`) must not exist (or `replace: true`
/// drops it first); `pg_restore --no-owner --exit-on-error` fills it (as the connecting user,
/// so that extensions can be created; `owner` then gets the rest); then every table of
/// the public schema is counted, the counts printed, and an empty restore fails the step. One
/// remote command; the undo drops the restored database. A test restore, a restore drill, or
/// the first half of swapping a backup in (renaming databases is a `pg_sql` step).
package struct PostgresRestoreStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_restore", summary: "restore a dump into a database of its own, verified",
        arguments: pgConnection + [
            ArgumentSpec("dir", .string, required: true, "directory on the host holding the dumps"),
            ArgumentSpec("dump", .string, default: "latest", "the dump's file name in dir (or its path there), or latest (the newest matching prefix)"),
            ArgumentSpec("prefix", .string, "with latest: only dumps whose names start with this"),
            ArgumentSpec("replace", .bool, default: false, "drop the target database first when it exists (else that is an error)"),
            ArgumentSpec("maintenance_database", .string, default: "postgres", "the database connected to for CREATE and DROP DATABASE"),
            ArgumentSpec("compare_with", .string, "a database whose tables must hold the same row counts (a drill right after a backup: the live one)"),
            ArgumentSpec("drop_after", .bool, default: false, "drop the restored database once it is verified (a restore drill)"),
            ArgumentSpec("owner", .string, "the role that owns the new database and what is restored into it, extensions aside (default: the connecting user)"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    package static let reportsOutput = true
    package static func defaultName(_ arguments: [String: Value]) -> String {
        "pg_restore \(arguments["dump"]?.description ?? "latest") into \(arguments["database"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let target = try PostgresClient(arguments)
        guard let database = target.database, !database.isEmpty else { throw StepFailure("pg_restore needs database: the database to restore into") }
        guard let dir = arguments.string("dir"), dir.hasPrefix("/") else { throw StepFailure("pg_restore needs dir, an absolute path") }
        let directory = dir.count > 1 && dir.hasSuffix("/") ? String(dir.dropLast()) : dir
        var wanted = arguments.string("dump") ?? "latest"
        // A path in dir (a pg_backup step's `path`) names the file too.
        if wanted.hasPrefix(directory + "/") { wanted = String(wanted.dropFirst(directory.count + 1)) }
        let prefix = arguments.string("prefix") ?? ""
        let replace = arguments.raw["replace"]?.boolValue ?? (arguments.string("replace") == "true")
        var maintenance = target
        maintenance.database = arguments.string("maintenance_database") ?? "postgres"

        // The dump: named, or the newest by modification time.
        if wanted != "latest", wanted.contains("/") || wanted.hasPrefix(".") {
            throw StepFailure("dump must be a file name in \(directory), a path in it, or latest; not \(wanted)")
        }
        let find: ShellCommand = wanted == "latest"
            ? "cd \(directory) 2>/dev/null || exit 3; ls -1t -- \(prefix)\(literal: "*.dump") 2>/dev/null | head -n 1"
            : "cd \(directory) 2>/dev/null || exit 3; [ -f \(wanted) ] && printf '%s\\n' \(wanted)"
        let found = try await facts.check(find, timeout: step.timeout ?? .seconds(30))
        let name = found.stdoutText.split(separator: "\n").first.map(String.init) ?? ""
        if found.exitStatus == 3 { throw StepFailure.onHost("\(directory) does not exist on \(host.name): no dump to restore") }
        guard !name.isEmpty else {
            throw StepFailure.onHost(wanted == "latest" ? "no dump \(prefix)*.dump in \(directory) on \(host.name)"
                                                 : "no dump \(wanted) in \(directory) on \(host.name)")
        }
        let path = directory + "/" + name
        guard let info = try await facts.transport.stat(path) else { throw StepFailure.onHost("cannot read \(path) on \(host.name)") }

        // The target must not exist, unless replace.
        let exists = try await postgresRows(maintenance, "SELECT count(*) FROM pg_database WHERE datname = \(PostgresSQL.literal(database));",
                                            columns: 1, step: step, host: host.name, facts: facts)
        let present = exists.first?.first == "1"
        if present && !replace {
            throw StepFailure.onHost("the database \(database) already exists on \(target.label): drop it, restore under another name, or give replace: true")
        }
        let ident = PostgresSQL.identifier(database)
        let owner = arguments.string("owner").flatMap { $0.isEmpty ? nil : $0 }
        var script = ShellCommand("set -e\n")
        if present { script = script + Self.quiet(maintenance.psql("DROP DATABASE \(ident) WITH (FORCE);")) }
        var compare: PostgresClient? = nil
        if let other = arguments.string("compare_with"), !other.isEmpty {
            compare = target
            compare?.database = other
        }
        let dropAfter = arguments.raw["drop_after"]?.boolValue ?? (arguments.string("drop_after") == "true")
        script = script + Self.quiet(maintenance.psql("CREATE DATABASE \(ident)" + (owner.map { " OWNER " + PostgresSQL.identifier($0) } ?? "") + ";"))
            + target.program("pg_restore") + " " + ShellCommand(argv: ["--no-owner", "--exit-on-error"])
            + " < " + ShellCommand(argv: [path]) + "\n"
        // Restored as the connecting user (extensions need a superuser), then handed to the owner.
        if let owner { script = script + Self.quiet(target.psql(Self.ownershipSQL(owner))) }
        script = script + "counts=$(" + target.psql(Self.countSQL, tuples: true) + ")\n"
            + """
            printf '%s\\n' "$counts" | awk -F'|' 'NF == 2 { printf "%s: %s rows\\n", $1, $2 }'
            [ -n "$counts" ] || { echo "the restored database has no tables: the dump is empty or not a dump of this schema" >&2; exit 1; }

            """
        if let compare {
            script = script + "live=$(" + compare.psql(Self.countSQL, tuples: true) + ")\n" + """
                if [ "$counts" != "$live" ]; then
                  printf 'row counts differ from %s:\\n' \(compare.database ?? "") >&2
                  printf '%s\\n' "$live" | awk -F'|' 'NF == 2 { printf "  %s: %s rows there\\n", $1, $2 }' >&2
                  exit 1
                fi
                printf "every table's row count equals %s's\\n" \(compare.database ?? "")

                """
        }
        if dropAfter {
            script = script + Self.quiet(maintenance.psql("DROP DATABASE \(ident) WITH (FORCE);"))
                + ShellCommand("printf 'dropped %s\\n' ") + ShellCommand(argv: [database]) + "\n"
        }
        let undo = maintenance.command(maintenance.psql("DROP DATABASE IF EXISTS \(ident) WITH (FORCE);"))
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: true,
                                        summary: "restore \(path) (\(info.size / 1024) KiB) into \(target.label)"
                                            + (present ? ", replacing it" : ", a new database") + "; count every table"
                                            + (compare.map { ", compare with \($0.database ?? "")" } ?? "") + (dropAfter ? ", then drop it (drill)" : ""))
        change.fingerprints.append(FactFingerprint(fact: "dump:\(path)", digest: "size \(info.size)"))
        change.fingerprints.append(FactFingerprint(fact: "database:\(database)", digest: present ? "present" : "absent"))
        return HostStepPlan(change: change, operation: .run(target.command(script), undo: undo), deferredUntilApply: false)
    }

    /// Gives `owner` the public schema's tables, views and sequences and functions, except what
    /// belongs to an extension and sequences a column owns (they follow their table).
    static func ownershipSQL(_ owner: String) -> String {
        let role = PostgresSQL.literal(owner)
        return """
            DO $runbook$
            DECLARE r record;
            BEGIN
              FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i') AND (c.relkind = 'S' OR d.deptype = 'e'))
              LOOP
                EXECUTE format('ALTER %s %s OWNER TO %I', CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                  WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.name, \(role));
              END LOOP;
              FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
              LOOP
                EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.name, \(role));
              END LOOP;
            END
            $runbook$;
            """
    }

    /// `command` (which may end in a heredoc) with its stdout discarded: psql's command tags.
    static func quiet(_ command: ShellCommand) -> ShellCommand { "{ " + command + "\n} >/dev/null\n" }

    /// Exact row counts of every table of the public schema, `name|count` per line.
    static let countSQL = """
        SELECT c.relname, (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM public.%I', c.relname), false, true, '')))[1]::text
        FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
        WHERE s.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1;
        """

    /// The outputs for `steps.<id>`: `tables` (how many) from the printed counts.
    package static func outputs(stdout: String) -> [String: Value] {
        let tables = stdout.split(separator: "\n").filter { $0.hasSuffix(" rows") }.count
        return ["tables": .int(tables)]
    }
}

import Foundation
import Testing
import TestSupport

/// The throwaway PostgreSQL cluster of `scripts/pg-test` on a test host, started when it is
/// not running (`scripts/test` stops it at the end).
struct TestPostgres {
    let values: [String: String]
    let env: TestHosts

    static let script = repositoryRoot + "/scripts/pg-test"

    /// The cluster on h3, started if needed.
    static func ready(_ env: TestHosts) throws -> TestPostgres {
        var r = try runProcessFull(script, ["env", "h3"])
        if r.status != 0 {
            let up = try runProcessFull(script, ["up", "h3"])
            guard up.status == 0 else { throw PostgresUnavailable(message: "scripts/pg-test up h3 failed: \(up.stderr)") }
            r = try runProcessFull(script, ["env", "h3"])
        }
        var values: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        guard values["PG_PASSWORD"] != nil else { throw PostgresUnavailable(message: "scripts/pg-test env printed nothing usable") }
        return TestPostgres(values: values, env: env)
    }

    subscript(_ key: String) -> String { values[key] ?? "" }
    var password: String { self["PG_PASSWORD"] }
    var host: String { self["PG_TESTHOST"] }

    /// Runs SQL as the superuser over the socket on the host; returns psql's unaligned output, trimmed.
    @discardableResult
    func superuser(_ sql: String, database: String = "appdb") throws -> String {
        let command = "psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -h \(self["PG_SOCKET_DIR"]) -d \(database) -c \(shellQuote(sql))"
        return try env.inHost(host, command).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts `SELECT pg_sleep(600)` as the app user in the background on the host, with
    /// `application` as its application_name; returns its backend pid.
    func startSleeper(application: String, sql: String = "SELECT pg_sleep(600)") throws -> Int {
        // Every descriptor but 0-2 is closed first: an inherited pipe would keep this
        // process's caller waiting for end of file until the query ends.
        let script = "for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done 2>/dev/null; "
            + "exec psql -X -h 127.0.0.1 -U app -d appdb -c \(shellQuote(sql))"
        let command = "PGPASSWORD=\(shellQuote(password)) PGAPPNAME=\(application) "
            + "setsid bash -c \(shellQuote(script)) </dev/null >/dev/null 2>&1 &"
        _ = try env.inHost(host, command)
        for _ in 0..<50 {
            let pid = try superuser("SELECT pid FROM pg_stat_activity WHERE application_name = '\(application)' AND state = 'active'")
            if let pid = Int(pid) { return pid }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw PostgresUnavailable(message: "the sleeping query \(application) did not show up in pg_stat_activity")
    }

    /// Ends every backend the tests started (application names `rbtest-…`).
    func endSleepers() {
        _ = try? superuser("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'rbtest-%'")
    }

    /// The connection arguments of a step, as YAML flow-mapping entries.
    var connection: String {
        "database: appdb, user: app, host: \(self["PG_HOST"]), port: \(self["PG_PORT"]), password: \"{{ secrets.db_password }}\""
    }
}

struct PostgresUnavailable: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// `text` as one POSIX shell word.
func shellQuote(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

extension RunbookProject {
    /// Defines the secret `db_password` in `.runbook/secrets.env` (mode 0600).
    func defineSecret(_ value: String) throws {
        try write(".runbook/secrets.env", "db_password=\(value)\n")
        chmod(root + "/.runbook/secrets.env", 0o600)
    }
}

/// The `pg_*` kinds end to end: the built binary against a real PostgreSQL 15 on h3, reached
/// over SSH.
@Suite("PostgreSQL step kinds", .serialized)
struct PostgresStepTests {
    let env: TestHosts
    let pg: TestPostgres

    init() throws {
        env = try TestHosts.load()
        pg = try TestPostgres.ready(env)
    }

    /// A project with the secret defined and one runbook on h3; `REMOTE` in `steps` stands
    /// for the test's remote directory.
    func project(_ name: String, steps: String) throws -> RunbookProject {
        let p = try RunbookProject(env)
        try p.defineSecret(pg.password)
        try p.write("runbooks/\(name).yml", """
            name: \(name)
            description: pg test
            hosts: \(pg.host)
            steps:
            \(steps.replacingOccurrences(of: "REMOTE", with: p.remoteDir))
            """)
        return p
    }

    @Test("pg_kill_queries ends the old query it planned, and leaves younger and excluded ones alone")
    func killQueries() throws {
        defer { pg.endSleepers() }
        let p = try project("kill", steps: """
              - id: kill
                name: Kill long queries
                pg_kill_queries: { \(pg.connection), older_than: 4s, exclude_applications: [rbtest-keep] }
              - name: Record the result
                command: { run: "printf '%s' {{ steps.kill.stdout | quote }} > REMOTE/killed" }
            """)
        defer { p.cleanUp() }

        // The old query carries the secret's value as a literal: the plan must mask it.
        let old = try pg.startSleeper(application: "rbtest-old", sql: "SELECT pg_sleep(600), '\(pg.password)' AS token")
        let kept = try pg.startSleeper(application: "rbtest-keep")
        Thread.sleep(forTimeInterval: 4.5)

        let plan = try p.run(["plan", "kill"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        // pid, user, application, the age (4.5 s and counting) and the query, masked.
        #expect(plan.stdout.contains(try Regex("pid \(old)  user app  app rbtest-old  age [4-9]s  SELECT pg_sleep\\(600\\), '\\*+' AS token")),
                "\(plan.stdout)")
        #expect(!plan.stdout.contains(pg.password), "the secret shows in the plan")
        #expect(!plan.stdout.contains("pid \(kept) "), "the excluded application is listed:\n\(plan.stdout)")
        #expect(plan.stdout.contains("(irreversible)"))

        // A query younger than the limit (4 s), started just before apply.
        let young = try pg.startSleeper(application: "rbtest-young")
        let apply = try p.run(["apply", "kill", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("pid \(old) "))
        #expect(!apply.stdout.contains("pid \(young) "))

        let alive = try pg.superuser("SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE application_name LIKE 'rbtest-%'")
            .split(separator: ",").compactMap { Int($0) }
        #expect(!alive.contains(old), "the old query is still there")
        #expect(alive.contains(young), "the young query was ended")
        #expect(alive.contains(kept), "the excluded query was ended")
        // The step's own session printed this after terminating: it was left alone.
        let report = try String(contentsOfFile: p.remoteDir + "/killed", encoding: .utf8)
        #expect(report.contains("terminated 1 of 1 planned backend(s)"), "\(report)")

        // Nothing old enough any more (the young one may be just over the limit by now: end it first).
        pg.endSleepers()
        let again = try p.run(["plan", "kill"])
        #expect(again.stdout.contains("= Kill long queries  no backends active for more than 4s in appdb"), "\(again.stdout)")
    }

    @Test("pg_kill_queries checks again when it runs: a query that finished since the plan is left alone")
    func killQueriesRechecks() throws {
        defer { pg.endSleepers() }
        let old = try pg.startSleeper(application: "rbtest-recheck")
        Thread.sleep(forTimeInterval: 2.5)
        // Every step is planned before the first runs: the kill step plans `old` as its
        // victim, then the step before it cancels the query (and psql, its client, exits).
        let p = try project("recheck", steps: """
              - name: The query ends on its own
                command: { run: "psql -X -q -U postgres -h \(pg["PG_SOCKET_DIR"]) -d appdb -c 'SELECT pg_cancel_backend(\(old))' && sleep 0.5" }
              - id: kill
                name: Kill long queries
                pg_kill_queries: { \(pg.connection), older_than: 2s }
              - name: Record the result
                command: { run: "printf '%s' {{ steps.kill.stdout | quote }} > REMOTE/killed" }
            """)
        defer { p.cleanUp() }
        let apply = try p.run(["apply", "recheck", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("pid \(old) "), "the plan listed it:\n\(apply.stdout)")
        let report = try String(contentsOfFile: p.remoteDir + "/killed", encoding: .utf8)
        #expect(report.contains("terminated 0 of 1 planned backend(s)"), "\(report)")
    }

    @Test("pg_backup writes a verified dump that restores with the same rows; keep removes only the oldest")
    func backupRestoreAndRetention() throws {
        let p = try project("backup", steps: """
              - id: backup
                name: Back up appdb
                pg_backup: { \(pg.connection), dir: REMOTE/dumps, keep: 2 }
              - name: Record its output
                command: { run: "printf '%s' {{ steps.backup.stdout | quote }} > REMOTE/backup.out" }
            """)
        defer { p.cleanUp() }
        let dumps = p.remoteDir + "/dumps"
        // Files retention must leave alone: another database's dump, and not a dump at all.
        try FileManager.default.createDirectory(atPath: dumps, withIntermediateDirectories: true)
        let decoys = ["otherdb-20000101-000000.dump", "appdb-notes.txt"]
        for decoy in decoys { _ = FileManager.default.createFile(atPath: dumps + "/" + decoy, contents: Data("keep me\n".utf8)) }
        func listing() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: dumps).filter { !decoys.contains($0) }.sorted()
        }

        let plan = try p.run(["plan", "backup"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("\(dumps)/appdb-YYYYmmdd-HHMMSS.dump"), "\(plan.stdout)")
        #expect(plan.stdout.contains("keep 2: removes none"))

        var made: [String] = []
        for round in 1...3 {
            if round == 3 {
                let third = try p.run(["plan", "backup"])
                #expect(third.stdout.contains("\(dumps)/\(made[0])  remove (keep 2)"), "\(third.stdout)")
                #expect(third.stdout.contains("\(dumps)/\(made[1])  keep"))
                #expect(third.stdout.contains("keep 2: removes 1"))
            }
            let apply = try p.run(["apply", "backup", "--yes"])
            #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
            let files = try listing()
            let new = files.filter { !made.contains($0) }
            #expect(new.count == 1, "\(files)")
            made += new
            // The last line of the step's stdout is the new dump's path (what steps.<id>.path is made of).
            let stdout = try String(contentsOfFile: p.remoteDir + "/backup.out", encoding: .utf8)
            #expect(stdout.split(separator: "\n").last.map(String.init) == "\(dumps)/\(new.first ?? "?")", "\(stdout)")
            if round == 3 { #expect(stdout.contains("removed \(dumps)/\(made[0])"), "\(stdout)") }
            if round < 3 { Thread.sleep(forTimeInterval: 1.1) }
        }
        #expect(made.count == 3)
        #expect(made.allSatisfy { $0.range(of: #"^appdb-\d{8}-\d{6}\.dump$"#, options: .regularExpression) != nil }, "\(made)")
        let remaining = try listing()
        #expect(remaining == Array(made.suffix(2)), "retention removed the wrong dumps: \(remaining)")
        for decoy in decoys { #expect(FileManager.default.fileExists(atPath: dumps + "/" + decoy), "retention removed \(decoy)") }
        let mode = try FileManager.default.attributesOfItem(atPath: dumps + "/" + made[2])[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)

        // Restore the newest into a new database: same row counts.
        let restored = "rbtest_restore_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP DATABASE IF EXISTS \(restored)", database: "postgres") }
        try pg.superuser("CREATE DATABASE \(restored) OWNER app", database: "postgres")
        let restore = try env.inHost(pg.host, "pg_restore -U postgres -h \(pg["PG_SOCKET_DIR"]) -d \(restored) \(dumps)/\(made[2]) && echo restored")
        #expect(restore.stdout.contains("restored"))
        for table in ["product", "orders"] {
            let original = try pg.superuser("SELECT count(*) FROM \(table)")
            let copy = try pg.superuser("SELECT count(*) FROM \(table)", database: restored)
            #expect(Int(original) ?? -1 > 0)
            #expect(copy == original, "\(table): \(copy) rows restored, \(original) in appdb")
        }
    }

    @Test("pg_vacuum sets last_vacuum and last_analyze of the table")
    func vacuum() throws {
        let table = "rbtest_vac_\(Int.random(in: 100_000...999_999))"
        try pg.superuser("CREATE TABLE \(table) AS SELECT i AS id FROM generate_series(1, 500) AS i; ALTER TABLE \(table) OWNER TO app; DELETE FROM \(table) WHERE id % 2 = 0")
        defer { _ = try? pg.superuser("DROP TABLE IF EXISTS \(table)") }
        let p = try project("vacuum", steps: """
              - name: Vacuum
                pg_vacuum: { \(pg.connection), tables: [\(table)] }
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "vacuum"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("VACUUM (ANALYZE) \(table) on appdb"), "\(plan.stdout)")
        #expect(plan.stdout.contains("\(table): "))
        #expect(plan.stdout.contains("last vacuum never"))

        let apply = try p.run(["apply", "vacuum", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        var stats = ""
        for _ in 0..<50 {
            stats = try pg.superuser("SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = '\(table)'")
            if stats == "t|t" { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(stats == "t|t", "last_vacuum, last_analyze set: \(stats)")

        // A table that does not exist fails the plan, naming it.
        try p.write("runbooks/missing.yml", """
            name: missing
            description: pg test
            hosts: \(pg.host)
            steps:
              - pg_vacuum: { \(pg.connection), tables: [no_such_table] }
            """)
        let missing = try p.run(["plan", "missing"])
        #expect(missing.status == 1, "a missing table is the host's state, not invalid input")
        #expect((missing.stdout + missing.stderr).contains("no table no_such_table"), "\(missing.stdout)\(missing.stderr)")
    }

    @Test("pg_sql with undo_sql is undone when a later step fails")
    func sqlRolledBack() throws {
        let index = "rbtest_idx_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP INDEX IF EXISTS \(index)") }
        let p = try project("index", steps: """
              - name: Add the index
                pg_sql:
                  \(pg.connection.replacingOccurrences(of: ", ", with: "\n      "))
                  sql: CREATE INDEX CONCURRENTLY \(index) ON product (tenant_id, active) WHERE active = true;
                  undo_sql: DROP INDEX CONCURRENTLY IF EXISTS \(index);
              - name: Fail while the index exists
                pg_sql:
                  \(pg.connection.replacingOccurrences(of: ", ", with: "\n      "))
                  sql: |
                    DO $$ BEGIN
                      IF EXISTS (SELECT FROM pg_indexes WHERE indexname = '\(index)') THEN
                        RAISE EXCEPTION 'the index is there: failing on purpose';
                      END IF;
                    END $$;
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "index", "-v"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("undo: "), "\(plan.stdout)")
        #expect(plan.stdout.contains("DROP INDEX CONCURRENTLY IF EXISTS \(index);"))

        let apply = try p.run(["apply", "index", "--yes"])
        #expect(apply.status == 1, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("failing on purpose"), "\(apply.stdout)")
        #expect(apply.stdout.contains("rolled back"), "\(apply.stdout)")
        #expect(try pg.superuser("SELECT count(*) FROM pg_indexes WHERE indexname = '\(index)'") == "0")
    }

    /// The state of index `name` on the server: `valid`, `invalid` or `absent`.
    func indexState(_ name: String) throws -> String {
        let state = try pg.superuser("SELECT CASE WHEN indisvalid THEN 'valid' ELSE 'invalid' END FROM pg_index "
                                     + "WHERE indexrelid = to_regclass('public.\(name)')")
        return state.isEmpty ? "absent" : state
    }

    @Test("pg_index builds the index concurrently; planned again it is unchanged; rolling back the run drops it")
    func indexCreatedAndRolledBack() throws {
        let index = "rbtest_pgidx_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP INDEX IF EXISTS \(index)") }
        let p = try project("index", steps: """
              - name: Index active products by tenant
                pg_index: { \(pg.connection), name: \(index), table: public.product, columns: [tenant_id, active], where: "active = true" }
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "index", "--out", "saved.json", "-v"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("+ Index active products by tenant  create index \(index) on public.product (tenant_id, active) WHERE active = true"),
                "\(plan.stdout)")
        #expect(plan.stdout.contains("CREATE INDEX CONCURRENTLY \"\(index)\" ON \"public\".\"product\" (\"tenant_id\", \"active\") WHERE ("))
        #expect(plan.stdout.contains("undo: "))
        #expect(plan.stdout.contains("DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"\(index)\";"))
        #expect(try indexState(index) == "absent", "planning changed the server")

        // Someone builds it by hand after the plan was saved: the saved plan is refused, and
        // the hand-made index stays.
        try pg.superuser("CREATE INDEX \(index) ON product (tenant_id)")
        let stale = try p.run(["apply", "--plan", "saved.json"])
        #expect(stale.status == 3, "\(stale.stdout)\(stale.stderr)")
        #expect((stale.stdout + stale.stderr).contains("pg_index:appdb on 127.0.0.1:5432 as app:public.\(index) changed since the plan was made"),
                "\(stale.stdout)\(stale.stderr)")
        #expect(try pg.superuser("SELECT indexdef FROM pg_indexes WHERE indexname = '\(index)'").hasSuffix("(tenant_id)"))
        try pg.superuser("DROP INDEX \(index)")

        let apply = try p.run(["apply", "index", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try indexState(index) == "valid")
        let definition = try pg.superuser("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = '\(index)'")
        #expect(definition == "CREATE INDEX \(index) ON public.product USING btree (tenant_id, active) WHERE (active = true)", "\(definition)")

        let again = try p.run(["plan", "index"])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("= Index active products by tenant  index \(index) exists and is valid"), "\(again.stdout)")
        #expect(again.stdout.contains("0 to create, 0 to update, 0 to run, 0 checks, 1 unchanged"), "\(again.stdout)")

        let runID = try #require(try runIDs(p).first)
        let rollback = try p.run(["rollback", runID, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(try indexState(index) == "absent", "the rollback left the index the run built")
    }

    @Test("pg_index: an index that existed before the run is left alone by the run and by its rollback")
    func existingIndexSurvivesRollback() throws {
        let index = "rbtest_pgidx_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP INDEX IF EXISTS \(index)") }
        try pg.superuser("CREATE INDEX \(index) ON product (price)")
        let p = try project("existing", steps: """
              - name: Index prices
                pg_index: { \(pg.connection), name: \(index), table: product, columns: price }
              - name: Something else the run changes
                command: { run: "touch REMOTE/flag", undo: "rm -f REMOTE/flag" }
            """)
        defer { p.cleanUp() }
        let apply = try p.run(["apply", "existing", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("= Index prices  index \(index) exists and is valid"), "\(apply.stdout)")
        #expect(FileManager.default.fileExists(atPath: p.remoteDir + "/flag"))

        let runID = try #require(try runIDs(p).first)
        let rollback = try p.run(["rollback", runID, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        // The rollback ran (the file is gone), and the index is still there, still valid.
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/flag"))
        #expect(try indexState(index) == "valid", "the rollback dropped an index the run did not create")
        #expect(try pg.superuser("SELECT indexdef FROM pg_indexes WHERE indexname = '\(index)'").hasSuffix("(price)"))
    }

    @Test("pg_index: a failed build is rolled back, and the undo leaves an index someone else made under that name")
    func undoLeavesAnIndexItDidNotBuild() throws {
        let index = "rbtest_pgidx_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP INDEX IF EXISTS \(index)") }
        // Every step is planned before the first runs: the index step plans a build, then
        // the step before it makes an index of that name by hand, so the build fails and the
        // run is rolled back, the index step's undo included.
        let p = try project("race", steps: """
              - name: Someone builds it by hand meanwhile
                command: { run: "psql -X -q -U postgres -h \(pg["PG_SOCKET_DIR"]) -d appdb -c 'CREATE INDEX \(index) ON product (price)'" }
              - name: Index prices
                pg_index: { \(pg.connection), name: \(index), table: product, columns: [price, tenant_id] }
            """)
        defer { p.cleanUp() }
        let apply = try p.run(["apply", "race", "--yes"])
        #expect(apply.status == 1, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("already exists"), "\(apply.stdout)")
        #expect(apply.stdout.contains("rolled back"), "\(apply.stdout)")
        #expect(try indexState(index) == "valid", "the undo dropped an index the run did not build")
        #expect(try pg.superuser("SELECT indexdef FROM pg_indexes WHERE indexname = '\(index)'").hasSuffix("(price)"))
    }

    @Test("pg_index: a build that fails half-way leaves no invalid index once rolled back")
    func failedBuildRolledBack() throws {
        let index = "rbtest_pgidx_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP INDEX IF EXISTS \(index)") }
        // tenant_id has duplicates: the unique build fails after creating the (invalid) index.
        let p = try project("unique", steps: """
              - name: Unique tenants
                pg_index: { \(pg.connection), name: \(index), table: product, columns: tenant_id, unique: true }
            """)
        defer { p.cleanUp() }
        let apply = try p.run(["apply", "unique", "--yes"])
        #expect(apply.status == 1, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("is duplicated"), "\(apply.stdout)")
        #expect(apply.stdout.contains("rolled back"), "\(apply.stdout)")
        #expect(try indexState(index) == "absent", "the failed build's invalid index is still there")
    }

    @Test("pg_index drops an invalid index left by a failed concurrent build and builds it again")
    func invalidIndexRebuilt() throws {
        let index = "rbtest_pgidx_\(Int.random(in: 100_000...999_999))"
        defer { _ = try? pg.superuser("DROP INDEX IF EXISTS \(index)") }
        // A unique index on a column with duplicates: the concurrent build fails and leaves
        // an invalid index behind, owned by app (as the table is).
        let failed = try env.inHost(pg.host, "psql -X -q -U postgres -h \(pg["PG_SOCKET_DIR"]) -d appdb -c 'SET ROLE app' "
                                    + "-c 'CREATE UNIQUE INDEX CONCURRENTLY \(index) ON product (tenant_id)' 2>&1; echo \"status=$?\"")
        #expect(failed.stdout.contains("is duplicated"), "\(failed.stdout)")
        #expect(try indexState(index) == "invalid")

        let p = try project("rebuild", steps: """
              - name: Index tenants
                pg_index: { \(pg.connection), name: \(index), on: "product(tenant_id)" }
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "rebuild", "-v"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("~ Index tenants  index \(index) is invalid (a failed concurrent build): drop it and build it again"),
                "\(plan.stdout)")
        #expect(plan.stdout.contains("existing: CREATE UNIQUE INDEX \(index) ON public.product USING btree (tenant_id)"), "\(plan.stdout)")
        #expect(plan.stdout.contains("DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"\(index)\";\n        CREATE INDEX CONCURRENTLY \"\(index)\""),
                "\(plan.stdout)")

        let apply = try p.run(["apply", "rebuild", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try indexState(index) == "valid")
        #expect(try pg.superuser("SELECT indisunique FROM pg_index WHERE indexrelid = to_regclass('public.\(index)')") == "f")

        let again = try p.run(["plan", "rebuild"])
        #expect(again.stdout.contains("= Index tenants  index \(index) exists and is valid"), "\(again.stdout)")
    }

    @Test("the password is never on a command line on the host, nor in any output")
    func passwordStaysSecret() throws {
        let p = try project("sleep", steps: """
              - id: sleep
                name: Sleep in SQL
                pg_sql: { \(pg.connection), sql: "SELECT pg_sleep(2), current_user, length('{{ secrets.db_password }}');" }
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "sleep", "-v"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")

        // Apply in the background and sample every process's arguments on the host meanwhile.
        let out = p.root + "/apply.out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: p.binary)
        process.arguments = ["apply", "sleep", "--yes"]
        process.currentDirectoryURL = URL(fileURLWithPath: p.root)
        var environment = ProcessInfo.processInfo.environment
        environment["NO_COLOR"] = "1"
        process.environment = environment
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        var samples: [String] = []
        while process.isRunning {
            samples.append(try env.inHost(pg.host, "ps -eo args").stdout)
            Thread.sleep(forTimeInterval: 0.05)
        }
        process.waitUntilExit()
        try handle.close()
        let output = try String(contentsOfFile: out, encoding: .utf8)
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(samples.contains { $0.contains("psql -h 127.0.0.1 -p 5432 -U app -d appdb") }, "psql was never seen running")
        #expect(samples.allSatisfy { !$0.contains(pg.password) }, "the password showed in ps")
        #expect(!output.contains(pg.password))
        #expect(!plan.stdout.contains(pg.password) && !plan.stderr.contains(pg.password))
        #expect(plan.stdout.contains("PGPASSWORD=\"${RUNBOOK_SECRET_DB_PASSWORD}\""))
        // SQL using a secret is shown masked, and sent through the environment.
        #expect(plan.stdout.contains("length('********')"), "\(plan.stdout)")
        #expect(plan.stdout.contains("printf '%s\\n' \"${RUNBOOK_SECRET_PG_SQL}\" | psql"))
        let json = try p.run(["plan", "sleep", "--json"])
        #expect(!json.stdout.contains(pg.password))
        let journal = try Data(contentsOf: URL(fileURLWithPath: p.root + "/.runbook/journal.sqlite"))
        #expect(journal.range(of: Data(pg.password.utf8)) == nil, "the password is in the journal")
    }

    @Test("pg_slow_queries reports from pg_stat_statements, or says how to enable it")
    func slowQueries() throws {
        defer { _ = try? pg.superuser("CREATE EXTENSION IF NOT EXISTS pg_stat_statements") }
        try pg.superuser("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        try pg.superuser("SELECT pg_stat_statements_reset()")
        for _ in 0..<3 {
            try pg.superuser("SELECT pg_sleep(0.05), count(*) FROM product p JOIN orders o ON o.product_id = p.id WHERE p.price > 10")
        }
        let p = try project("slow", steps: """
              - id: slow
                name: Slow queries
                pg_slow_queries: { \(pg.connection), limit: 50 }
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "slow"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("· Slow queries  top "), "\(plan.stdout)")
        let header = plan.stdout.split(separator: "\n").first { $0.contains("calls") }.map(String.init) ?? ""
        #expect(["#", "calls", "total ms", "mean ms", "rows", "query"].allSatisfy(header.contains), "\(plan.stdout)")
        // The slowest statement first: the one that slept 3 × 50 ms.
        let first = plan.stdout.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("1 ") }.map(String.init) ?? ""
        #expect(first.contains("SELECT pg_sleep($1), count(*) FROM product p JOIN orders o ON"), "\(plan.stdout)")
        #expect(first.contains(" 3 "), "calls: \(first)")
        let apply = try p.run(["apply", "slow", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")

        try pg.superuser("DROP EXTENSION pg_stat_statements")
        let without = try p.run(["plan", "slow"])
        #expect(without.status == 0, "\(without.stdout)\(without.stderr)")
        #expect(without.stdout.contains("= Slow queries  no report: pg_stat_statements is not installed in appdb: run CREATE EXTENSION pg_stat_statements; in appdb"),
                "\(without.stdout)")
    }

    @Test("via docker and compose: the client runs in the container, the password passed by name only")
    func viaContainers() throws {
        let p = try project("containers", steps: """
              - name: In a container
                pg_sql: { database: appdb, user: app, password: "{{ secrets.db_password }}", via: docker, container: db1, sql: SELECT 1; }
              - name: In a compose service
                pg_sql:
                  database: appdb
                  user: app
                  password: "{{ secrets.db_password }}"
                  via: compose
                  compose_file: /srv/app/docker-compose.prod.yml
                  service: db
                  sql: SELECT 1;
            """)
        defer { p.cleanUp() }
        let plan = try p.run(["plan", "containers", "-v"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("docker exec -i -e PGPASSWORD -e PGAPPNAME -e PGCONNECT_TIMEOUT db1 psql -U app -d appdb -w"), "\(plan.stdout)")
        #expect(plan.stdout.contains("runbook_compose -f /srv/app/docker-compose.prod.yml exec -T -e PGPASSWORD -e PGAPPNAME -e PGCONNECT_TIMEOUT db psql -U app -d appdb -w"))
        #expect(plan.stdout.contains("if docker compose version >/dev/null 2>&1; then docker compose \"$@\""))
        #expect(plan.stdout.contains("command -v docker-compose"))
        #expect(!plan.stdout.contains(pg.password))
    }
}

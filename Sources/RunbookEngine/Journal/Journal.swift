import Foundation
import CSQLite
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// The journal: a SQLite database in the state dir recording every run and, for each step on
/// each host, its intent (with the before-state needed to undo it) before it runs and its
/// outcome after. A controller killed mid-run leaves a record that `runbook rollback` can finish.
///
/// Every write is committed before the call returns, in WAL mode with `synchronous=NORMAL`:
/// a commit survives the controller being killed at any point; a power loss of the
/// controller can take the last commits back (never corrupt the file). An fsync per commit
/// (`FULL`) would cost a step more than running `true` on a host does. A successful step's
/// outcome may wait for the next intent of that host and share its transaction
/// (`recordIntent(…completing:)`); until then the step reads as started, and rollback undoes
/// it, which is right whether or not it ran. The database, its `-wal` and `-shm` files are
/// mode 0600; a state dir created here is 0700.
public final class Journal: Sendable {
    /// The database file.
    public let path: String
    private let queue: DatabaseQueue

    /// Opens (creating if needed) the journal at `path`, creating its directory (0700) and
    /// bringing the schema up to date.
    public init(path: String) throws {
        self.path = path
        do {
            try Journal.prepareFiles(path)
            var configuration = Configuration()
            configuration.label = "runbook.journal"
            configuration.journalMode = .wal
            // Another runbook (history, show, a second apply) may hold the write lock briefly.
            configuration.busyMode = .timeout(10)
            configuration.prepareDatabase { db in
                // Closing leaves the WAL for the next run (no checkpoint, fsyncs and unlinks
                // on every exit); SQLite checkpoints it automatically as it grows.
                if let connection = db.sqliteConnection {
                    _ = rb_sqlite_no_checkpoint_on_close(connection)
                }
            }
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try Journal.migrator.migrate(queue)
            // SQLite gives -wal and -shm the database's mode; tighten any left by older versions.
            Journal.restrictSideFiles(path)
        } catch let error as JournalError {
            throw error
        } catch {
            throw JournalError(path: path, message: "cannot open: \(Journal.describe(error))",
                               hint: "check the state dir's ownership and free space")
        }
    }

    // MARK: Writing

    /// Records a run as `running` and returns its id.
    public func startRun(_ r: RunStart) throws -> String {
        let hostsJSON = String(decoding: try JSONEncoder().encode(r.hosts), as: UTF8.self)
        return try access("record the start of a run") {
            for attempt in 0..<16 {
                let id = r.id ?? Journal.makeRunID(date: r.startedAt)
                do {
                    try transaction { db in
                        try db.execute(sql: """
                            INSERT INTO runs (id, runbook, params_json, hosts_json, controller, pid, started_at, status, plan_digest, message)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """, arguments: [id, r.runbook, r.paramsJSON, hostsJSON, r.controller, Int64(r.pid),
                                             Journal.timestamp(r.startedAt), RunStatus.running.rawValue, r.planDigest, r.message])
                    }
                    return id
                } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY
                    && r.id == nil && attempt < 15 {
                    continue // Same second, same random suffix: draw again.
                }
            }
            throw JournalError(path: path, message: "cannot find a free run id")
        }
    }

    /// Records that a step is about to run, committed before this returns, and returns the
    /// entry's id for `recordOutcome`. `undo` is the encoded before-state, opaque here.
    /// `completing`: the previous step's outcome, written in the same transaction.
    /// `target`: the host it runs on for `host` (`delegate_to:`); `iteration`: of its loop (1-based).
    public func recordIntent(run: String, host: String, stepIndex: Int, stepName: String, kind: String, phase: Phase,
                             undo: Data?, irreversible: Bool, target: String? = nil, iteration: Int? = nil,
                             completing previous: StepOutcome? = nil) throws -> Int64 {
        try access("record the intent of step \(stepIndex) (\(stepName)) on \(host)") {
            try transaction { db in
                if let previous { try Journal.write(previous, db, path: path) }
                try db.cachedStatement(sql: """
                    INSERT INTO entries (run_id, host, step_index, step_name, kind, phase, status, undo_json, irreversible, changed, started_at, target, iteration)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
                    """).execute(arguments: [run, host, stepIndex, stepName, kind, phase.rawValue, EntryStatus.intent.rawValue,
                                             Journal.undoValue(undo), irreversible, Journal.timestamp(), target, iteration])
                return db.lastInsertedRowID
            }
        }
    }

    /// Records how a step ended. A non-nil `undo` replaces the one written with the intent
    /// (for before-state only known once the step ran).
    public func recordOutcome(entry: Int64, status: EntryStatus, changed: Bool, message: String?,
                              undo: Data? = nil) throws {
        try recordOutcome(StepOutcome(entry: entry, status: status, changed: changed, message: message, undo: undo))
    }

    /// Records how a step ended, at the time `outcome` was made.
    public func recordOutcome(_ outcome: StepOutcome) throws {
        try access("record the outcome of entry \(outcome.entry)") {
            try transaction { db in try Journal.write(outcome, db, path: path) }
        }
    }

    private static func write(_ outcome: StepOutcome, _ db: Database, path: String) throws {
        try db.cachedStatement(sql: """
            UPDATE entries SET status = ?, changed = ?, message = ?, finished_at = ?,
                duration_ms = MAX(0, CAST(ROUND((julianday(?) - julianday(started_at)) * 86400000) AS INTEGER)),
                undo_json = COALESCE(?, undo_json)
            WHERE id = ?
            """).execute(arguments: [outcome.status.rawValue, outcome.changed, outcome.message, outcome.finishedAt,
                                     outcome.finishedAt, Journal.undoValue(outcome.undo), outcome.entry])
        if db.changesCount == 0 {
            throw JournalError(path: path, message: "no entry \(outcome.entry)")
        }
    }

    /// Records how a run ended.
    public func finishRun(_ id: String, status: RunStatus, exitCode: Int32, message: String?) throws {
        try access("record the end of run \(id)") {
            try transaction { db in
                try db.execute(sql: """
                    UPDATE runs SET status = ?, exit_code = ?, message = ?, finished_at = ? WHERE id = ?
                    """, arguments: [status.rawValue, Int64(exitCode), message, Journal.timestamp(), id])
                if db.changesCount == 0 {
                    throw JournalError(path: path, message: "no run \(id)")
                }
            }
        }
    }

    /// Marks as `interrupted` every `running` run started on this controller whose process is
    /// gone, and returns their ids. Runs of other controllers are left alone: their pids mean
    /// nothing here.
    public func markInterruptedRuns() throws -> [String] {
        let hostname = ControllerIdentity.hostname
        let candidates = try access("look for interrupted runs") {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT id, pid FROM runs WHERE status = ? AND controller = ?",
                                 arguments: [RunStatus.running.rawValue, hostname])
                    .map { (id: $0["id"] as String, pid: Int32(truncatingIfNeeded: $0["pid"] as Int64)) }
            }
        }
        var marked: [String] = []
        for candidate in candidates where !ControllerIdentity.processIsAlive(candidate.pid) {
            let changed = try access("mark run \(candidate.id) interrupted") {
                try transaction { db in
                    try db.execute(sql: """
                        UPDATE runs SET status = ?, message = COALESCE(message, ?) WHERE id = ? AND status = ?
                        """, arguments: [RunStatus.interrupted.rawValue,
                                         "controller process \(candidate.pid) ended without finishing the run",
                                         candidate.id, RunStatus.running.rawValue])
                    return db.changesCount > 0
                }
            }
            if changed { marked.append(candidate.id) }
        }
        return marked
    }

    // MARK: Reading

    /// The most recent runs, newest first; `limit` <= 0 means all of them.
    public func runs(limit: Int) throws -> [RunRecord] {
        try access("list runs") {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
                                 arguments: [limit > 0 ? limit : -1])
                    .map(runRecord)
            }
        }
    }

    /// The run with exactly this id.
    public func run(_ id: String) throws -> RunRecord? {
        try access("read run \(id)") {
            try queue.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id]).map(runRecord)
            }
        }
    }

    /// A run's entries in the order they were written.
    public func entries(run: String) throws -> [EntryRecord] {
        try access("read the entries of run \(run)") {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM entries WHERE run_id = ? ORDER BY id", arguments: [run])
                    .map(entryRecord)
            }
        }
    }

    /// The full id of the run `prefix` names, like git: an exact id, or a prefix of exactly one
    /// id. Nil when nothing matches; an error naming the candidates when several do.
    public func resolveRunID(_ prefix: String) throws -> String? {
        guard !prefix.isEmpty else { return nil }
        let matches = try access("look up run \(prefix)") {
            try queue.read { db -> [String] in
                if try String.fetchOne(db, sql: "SELECT id FROM runs WHERE id = ?", arguments: [prefix]) != nil {
                    return [prefix]
                }
                return try String.fetchAll(db, sql: """
                    SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 11
                    """, arguments: [prefix.utf8.count, prefix])
            }
        }
        if matches.count > 1 {
            let shown = matches.prefix(10).joined(separator: ", ") + (matches.count > 10 ? ", …" : "")
            throw JournalError(path: path, message: "run id \(prefix) is ambiguous: it matches \(shown)",
                               hint: "give more of the id")
        }
        return matches.first
    }

    // MARK: Identity

    /// The journal's path in `stateDir`: `STATE/journal.sqlite`.
    public static func path(stateDir: String) -> String {
        (stateDir as NSString).appendingPathComponent("journal.sqlite")
    }

    /// `yyyy-MM-dd HH:mm:ss.SSS` in UTC: how GRDB stores a `Date`, and reads it back. Written
    /// here because GRDB formats it with a `DateFormatter`, whose ICU set-up costs every run
    /// a few milliseconds and megabytes; SQLite's date functions read the same text.
    static func timestamp(_ date: Date = Date()) -> String {
        let (parts, milliseconds) = utc(date)
        return fields(parts, date: "-", between: " ", time: ":") + ".\(pad(milliseconds, 3))"
    }

    /// `yyyy-MM-ddTHH:mm:ssZ` in UTC, as `Date.formatted(.iso8601)` writes it (lock info, a
    /// saved plan's creation time). That format style builds a Gregorian calendar for the current
    /// time zone, and ICU loads its time zone data to name it: on a cold page cache, tens of
    /// milliseconds of disk reads before the first host is locked.
    public static func iso8601(_ date: Date = Date()) -> String {
        fields(utc(date).0, date: "-", between: "T", time: ":") + "Z"
    }

    /// A fresh run id: `yyyyMMdd-HHmmss` in UTC, `-`, and 4 random hex digits.
    public static func makeRunID(date: Date = Date()) -> String {
        fields(utc(date).0, date: "", between: "-", time: "") + "-" + pad(String(UInt16.random(in: 0...UInt16.max), radix: 16), 4)
    }

    /// Year, month, day, `between`, hour, minute, second, each zero-padded, with `date` between
    /// the date's fields and `time` between the time's.
    private static func fields(_ parts: tm, date: String, between: String, time: String) -> String {
        "\(pad(parts.tm_year + 1900, 4))\(date)\(pad(parts.tm_mon + 1, 2))\(date)\(pad(parts.tm_mday, 2))\(between)"
            + "\(pad(parts.tm_hour, 2))\(time)\(pad(parts.tm_min, 2))\(time)\(pad(parts.tm_sec, 2))"
    }

    /// `date`'s calendar fields in UTC, and its milliseconds.
    private static func utc(_ date: Date) -> (tm, Int64) {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return (parts, milliseconds % 1000)
    }

    /// `n` with leading zeros to `width` digits.
    private static func pad(_ n: some BinaryInteger, _ width: Int) -> String {
        pad(String(n), width)
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count < width ? String(repeating: "0", count: width - text.count) + text : text
    }
}

// MARK: - Internals

extension Journal {
    /// The schema. Append migrations; never edit a released one.
    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: runs and entries") { db in
            try db.execute(sql: """
                CREATE TABLE runs (
                    id TEXT PRIMARY KEY NOT NULL,
                    runbook TEXT NOT NULL,
                    params_json TEXT NOT NULL DEFAULT '{}',
                    hosts_json TEXT NOT NULL DEFAULT '[]',
                    controller TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    started_at DATETIME NOT NULL,
                    finished_at DATETIME,
                    status TEXT NOT NULL,
                    exit_code INTEGER,
                    plan_digest TEXT,
                    message TEXT
                );
                CREATE INDEX runs_started_at ON runs (started_at);
                CREATE TABLE entries (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    host TEXT NOT NULL,
                    step_index INTEGER NOT NULL,
                    step_name TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    phase TEXT NOT NULL,
                    status TEXT NOT NULL,
                    undo_json TEXT,
                    irreversible BOOLEAN NOT NULL DEFAULT 0,
                    changed BOOLEAN NOT NULL DEFAULT 0,
                    message TEXT,
                    started_at DATETIME NOT NULL,
                    finished_at DATETIME,
                    duration_ms INTEGER
                );
                CREATE INDEX entries_run_id ON entries (run_id);
                """)
        }
        migrator.registerMigration("v2: delegated hosts and loop iterations") { db in
            try db.execute(sql: """
                ALTER TABLE entries ADD COLUMN target TEXT;
                ALTER TABLE entries ADD COLUMN iteration INTEGER;
                """)
        }
        return migrator
    }()

    /// Creates the directory (0700) when missing and the database file (0600) before SQLite
    /// does, so it never exists with a wider mode; tightens an existing one.
    static func prepareFiles(_ path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw JournalError(path: path, message: "cannot create the state dir \(directory): \(error.localizedDescription)")
            }
            chmod(directory, 0o700)
        }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw JournalError(path: path, message: "cannot create the database: \(String(cString: strerror(errno)))")
        }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_mode & 0o077 != 0 {
            fchmod(fd, info.st_mode & 0o700)
        }
        close(fd)
        restrictSideFiles(path)
    }

    /// Removes group and other access from the database's `-wal`, `-shm` and `-journal` files.
    static func restrictSideFiles(_ path: String) {
        for suffix in ["-wal", "-shm", "-journal"] {
            var info = stat()
            if lstat(path + suffix, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o077 != 0 {
                chmod(path + suffix, info.st_mode & 0o700)
            }
        }
    }

    /// Undo records go in as text when they are UTF-8 (JSON, readable with `sqlite3`), else as a blob.
    static func undoValue(_ undo: Data?) -> DatabaseValue {
        guard let undo else { return .null }
        if let text = String(data: undo, encoding: .utf8) { return text.databaseValue }
        return undo.databaseValue
    }

    /// The error's SQLite message without GRDB's SQL dump.
    static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError { return error.message ?? "\(error.resultCode)" }
        return "\(error)"
    }

    /// Runs `body` in one write transaction (`BEGIN IMMEDIATE`: the write lock is taken, or
    /// waited for, before anything is read). BEGIN and COMMIT come from the statement cache:
    /// GRDB's `write` builds both from SQL literals each time, and each step commits once.
    private func transaction<T>(_ body: (Database) throws -> T) throws -> T {
        try queue.writeWithoutTransaction { db in
            try db.cachedStatement(sql: "BEGIN IMMEDIATE").execute()
            do {
                let result = try body(db)
                try db.cachedStatement(sql: "COMMIT").execute()
                return result
            } catch {
                // After some errors SQLite has already rolled back; nothing is left to undo then.
                if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK").execute() }
                throw error
            }
        }
    }

    /// Runs `body`, turning database failures into `JournalError`s that say what was attempted
    /// (`what` is only built then: most calls are one per step, and succeed).
    func access<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as JournalError {
            throw error
        } catch {
            throw JournalError(path: path, message: "cannot \(what()): \(Journal.describe(error))")
        }
    }

    func runRecord(_ row: Row) throws -> RunRecord {
        let id: String = row["id"]
        let statusText: String = row["status"]
        guard let status = RunStatus(rawValue: statusText) else {
            throw JournalError(path: path, message: "run \(id) has an unknown status \(statusText)",
                               hint: "was it written by a newer runbook?")
        }
        let hostsJSON: String = row["hosts_json"]
        let hosts = (try? JSONDecoder().decode([String].self, from: Data(hostsJSON.utf8))) ?? []
        let exitCode: Int64? = row["exit_code"]
        return RunRecord(id: id, runbook: row["runbook"], paramsJSON: row["params_json"], hosts: hosts,
                         controller: row["controller"], pid: Int32(truncatingIfNeeded: row["pid"] as Int64),
                         startedAt: row["started_at"], finishedAt: row["finished_at"], status: status,
                         exitCode: exitCode.map { Int32(truncatingIfNeeded: $0) }, planDigest: row["plan_digest"],
                         message: row["message"])
    }

    func entryRecord(_ row: Row) throws -> EntryRecord {
        let id: Int64 = row["id"]
        let phaseText: String = row["phase"], statusText: String = row["status"]
        guard let phase = Phase(rawValue: phaseText), let status = EntryStatus(rawValue: statusText) else {
            throw JournalError(path: path, message: "entry \(id) has an unknown phase or status (\(phaseText), \(statusText))",
                               hint: "was it written by a newer runbook?")
        }
        var undo: Data?
        switch (row["undo_json"] as DatabaseValue).storage {
        case .string(let text): undo = Data(text.utf8)
        case .blob(let data): undo = data
        default: undo = nil
        }
        return EntryRecord(id: id, runID: row["run_id"], host: row["host"], stepIndex: row["step_index"],
                           stepName: row["step_name"], kind: row["kind"], phase: phase, status: status, undo: undo,
                           irreversible: row["irreversible"], changed: row["changed"], message: row["message"],
                           startedAt: row["started_at"], finishedAt: row["finished_at"], durationMs: row["duration_ms"],
                           target: row["target"], iteration: row["iteration"])
    }
}

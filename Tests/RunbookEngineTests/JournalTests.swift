import Foundation
import RunbookEngine
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Scratch state for the journal and lock tests.
enum StateFixtures {
    /// A fresh state dir under /tmp that does not exist yet.
    static func dir(_ label: String) -> String {
        "/tmp/rbtest-\(label)-\(UUID().uuidString)/.runbook"
    }

    /// Removes what `dir` made: the state dir's parent.
    static func remove(_ stateDir: String) {
        try? FileManager.default.removeItem(atPath: (stateDir as NSString).deletingLastPathComponent)
    }

    /// The permission bits of `path`, or nil when it is absent.
    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        return lstat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    /// The pid of a process that has exited and been reaped.
    static func deadPID() throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }
}

@Suite("Journal")
struct JournalTests {
    @Test("a run with its intents and outcomes reads back as written")
    func roundTrip() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let journal = try Journal(path: state + "/journal.sqlite")
        let id = try journal.startRun(RunStart(runbook: "vertical-scale", paramsJSON: #"{"workers":8,"db_password":"********"}"#,
                                               hosts: ["h1", "h2"], planDigest: "sha256:abc"))
        #expect(id.wholeMatch(of: /\d{8}-\d{6}-[0-9a-f]{4}/) != nil, "\(id)")

        let undo = Data(#"{"path":"/etc/app.conf","before":"sha256:01"}"#.utf8)
        let first = try journal.recordIntent(run: id, host: "h1", stepIndex: 0, stepName: "raise workers", kind: "file",
                                             phase: .apply, undo: undo, irreversible: false)
        try journal.recordOutcome(entry: first, status: .done, changed: true, message: nil)
        let second = try journal.recordIntent(run: id, host: "h1", stepIndex: 1, stepName: "vacuum", kind: "command",
                                              phase: .apply, undo: nil, irreversible: true)
        try journal.recordOutcome(entry: second, status: .failed, changed: false, message: "exit 1")
        let binary = Data([0xFF, 0x00, 0xFE])
        let undoing = try journal.recordIntent(run: id, host: "h1", stepIndex: 0, stepName: "raise workers", kind: "file",
                                               phase: .rollback, undo: nil, irreversible: false)
        try journal.recordOutcome(entry: undoing, status: .done, changed: true, message: nil, undo: binary)
        try journal.finishRun(id, status: .rolledBack, exitCode: 1, message: "step vacuum failed on h1")

        let run = try #require(try journal.run(id))
        #expect(run.runbook == "vertical-scale" && run.hosts == ["h1", "h2"] && run.planDigest == "sha256:abc")
        #expect(run.paramsJSON.contains("********"))
        #expect(run.status == .rolledBack && run.exitCode == 1 && run.message == "step vacuum failed on h1")
        #expect(run.controller == ControllerIdentity.hostname && run.pid == getpid())
        #expect(run.finishedAt != nil && run.finishedAt! >= run.startedAt)

        let entries = try journal.entries(run: id)
        #expect(entries.map(\.id) == [first, second, undoing])
        #expect(entries[0].undo == undo && entries[0].status == .done && entries[0].changed && !entries[0].irreversible)
        #expect(entries[1].status == .failed && entries[1].irreversible && entries[1].message == "exit 1")
        #expect(entries[1].undo == nil)
        #expect(entries[2].phase == .rollback && entries[2].undo == binary)
        #expect(entries.allSatisfy { $0.finishedAt != nil && $0.durationMs != nil && $0.host == "h1" && $0.runID == id })
        #expect(try journal.entries(run: "no-such-run").isEmpty)
        #expect(try journal.run("no-such-run") == nil)
    }

    @Test("times are stored as UTC text to the millisecond and read back; a step's duration is its wall time")
    func times() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let journal = try Journal(path: state + "/journal.sqlite")
        // 2026-11-23 16:41:59.123 UTC, and a date before 2000 with leading zeros everywhere.
        for seconds in [1_795_452_119.123, 946_684_799.007] {
            let started = Date(timeIntervalSince1970: seconds)
            let id = try journal.startRun(RunStart(runbook: "times", paramsJSON: "{}", hosts: ["h1"], startedAt: started))
            let run = try #require(try journal.run(id))
            #expect(abs(run.startedAt.timeIntervalSince(started)) < 0.001, "\(run.startedAt) != \(started)")
        }
        let id = try journal.startRun(RunStart(runbook: "times", paramsJSON: "{}", hosts: ["h1"]))
        let entry = try journal.recordIntent(run: id, host: "h1", stepIndex: 0, stepName: "wait", kind: "sleep",
                                             phase: .apply, undo: nil, irreversible: false)
        usleep(150_000)
        try journal.recordOutcome(entry: entry, status: .done, changed: false, message: nil)
        let recorded = try #require(try journal.entries(run: id).first)
        let duration = try #require(recorded.durationMs)
        #expect(duration >= 150 && duration < 60_000, "\(duration) ms")
        #expect(recorded.finishedAt! >= recorded.startedAt)
        #expect(throws: JournalError.self) { try journal.recordOutcome(entry: entry + 1000, status: .done, changed: false, message: nil) }
    }

    @Test("lock info and plan times are ISO 8601 in UTC, as Foundation's format style writes them",
          arguments: [0.0, 951_782_400.999, 1_764_870_731.5, 4_102_444_799.0])
    func iso8601(seconds: Double) {
        let date = Date(timeIntervalSince1970: seconds)
        #expect(Journal.iso8601(date) == date.formatted(.iso8601))
        #expect(LockInfo.current(runID: "r", runbook: "b", at: date).startedAt == date.formatted(.iso8601))
    }

    @Test("runs are listed newest first, limited")
    func listing() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let journal = try Journal(path: state + "/journal.sqlite")
        let base = Date(timeIntervalSince1970: 1_800_000_000)
        var ids: [String] = []
        for n in 0..<5 {
            ids.append(try journal.startRun(RunStart(runbook: "rb\(n)", hosts: ["h1"], startedAt: base + Double(n) * 60)))
        }
        #expect(try journal.runs(limit: 3).map(\.id) == ids.reversed().prefix(3).map { $0 })
        #expect(try journal.runs(limit: 0).count == 5)
        #expect(ids[0].hasPrefix("20270115-"), "the id carries the UTC start time: \(ids[0])")
    }

    @Test("the state dir is 0700 and the database and its side files are 0600")
    func fileModes() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let path = Journal.path(stateDir: state)
        #expect(path == state + "/journal.sqlite")
        let journal = try Journal(path: path)
        let id = try journal.startRun(RunStart(runbook: "rb", hosts: []))
        _ = try journal.recordIntent(run: id, host: "h1", stepIndex: 0, stepName: "s", kind: "command",
                                     phase: .apply, undo: nil, irreversible: false)
        #expect(StateFixtures.mode(state) == 0o700)
        #expect(StateFixtures.mode(path) == 0o600)
        #expect(StateFixtures.mode(path + "-wal") == 0o600, "WAL is on, so the -wal file exists while the journal is open")
        #expect(StateFixtures.mode(path + "-shm") == 0o600)
        let names = try FileManager.default.contentsOfDirectory(atPath: state)
        for name in names {
            #expect(StateFixtures.mode(state + "/" + name)! & 0o077 == 0, "\(name) is readable by others")
        }

        // An existing database left readable by others is tightened on open.
        chmod(path, 0o644)
        _ = try Journal(path: path)
        #expect(StateFixtures.mode(path) == 0o600)
    }

    @Test("an intent is committed before its outcome: another connection sees it at once")
    func intentIsDurable() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let writer = try Journal(path: state + "/journal.sqlite")
        let id = try writer.startRun(RunStart(runbook: "rb", hosts: ["h1"]))
        let entry = try writer.recordIntent(run: id, host: "h1", stepIndex: 3, stepName: "restart web", kind: "service",
                                            phase: .apply, undo: Data("{}".utf8), irreversible: false)
        let reader = try Journal(path: state + "/journal.sqlite")
        let seen = try reader.entries(run: id)
        #expect(seen.map(\.id) == [entry])
        #expect(seen.first?.status == .intent && seen.first?.finishedAt == nil && seen.first?.stepIndex == 3)
        #expect(try reader.run(id)?.status == .running)
        try writer.recordOutcome(entry: entry, status: .done, changed: true, message: nil)
        #expect(try reader.entries(run: id).first?.status == .done)
    }

    @Test("a running run whose controller process is gone is marked interrupted; a live one is not")
    func interruptedRuns() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let journal = try Journal(path: state + "/journal.sqlite")
        let dead = try StateFixtures.deadPID()
        #expect(!ControllerIdentity.processIsAlive(dead))
        let gone = try journal.startRun(RunStart(runbook: "rb", hosts: ["h1"], pid: dead))
        let alive = try journal.startRun(RunStart(runbook: "rb", hosts: ["h1"]))
        let elsewhere = try journal.startRun(RunStart(runbook: "rb", hosts: ["h1"], controller: "other-controller", pid: dead))
        let finished = try journal.startRun(RunStart(runbook: "rb", hosts: ["h1"], pid: dead))
        try journal.finishRun(finished, status: .succeeded, exitCode: 0, message: nil)

        #expect(try journal.markInterruptedRuns() == [gone])
        #expect(try journal.run(gone)?.status == .interrupted)
        #expect(try journal.run(gone)?.message?.contains("\(dead)") == true)
        #expect(try journal.run(alive)?.status == .running)
        #expect(try journal.run(elsewhere)?.status == .running, "another controller's pid means nothing here")
        #expect(try journal.run(finished)?.status == .succeeded)
        #expect(try journal.markInterruptedRuns().isEmpty)
    }

    @Test("a run id is resolved from a unique prefix, like git")
    func prefixes() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let journal = try Journal(path: state + "/journal.sqlite")
        for id in ["20261123-114501-a1b2", "20261123-114501-a1c3", "20261124-090000-0f0f", "20261123-114501-a1"] {
            _ = try journal.startRun(RunStart(id: id, runbook: "rb", hosts: []))
        }
        #expect(try journal.resolveRunID("20261124") == "20261124-090000-0f0f")
        #expect(try journal.resolveRunID("20261123-114501-a1b") == "20261123-114501-a1b2")
        #expect(try journal.resolveRunID("20261123-114501-a1c3") == "20261123-114501-a1c3")
        #expect(try journal.resolveRunID("20261123-114501-a1") == "20261123-114501-a1", "an exact id wins over longer ones")
        #expect(try journal.resolveRunID("2025") == nil)
        #expect(try journal.resolveRunID("") == nil)
        #expect(try journal.resolveRunID("%") == nil, "no LIKE wildcards")
        do {
            _ = try journal.resolveRunID("20261123")
            Issue.record("an ambiguous prefix resolved")
        } catch let error as JournalError {
            #expect(error.description.contains("ambiguous") && error.description.contains("20261123-114501-a1b2"))
        }
        #expect(throws: JournalError.self) {
            _ = try journal.startRun(RunStart(id: "20261124-090000-0f0f", runbook: "rb", hosts: []))
        }
    }

    @Test("writing to a run or entry that does not exist is an error naming it")
    func unknownTargets() throws {
        let state = StateFixtures.dir("journal")
        defer { StateFixtures.remove(state) }
        let journal = try Journal(path: state + "/journal.sqlite")
        #expect(throws: JournalError.self) { try journal.finishRun("nope", status: .failed, exitCode: 1, message: nil) }
        #expect(throws: JournalError.self) { try journal.recordOutcome(entry: 999, status: .done, changed: false, message: nil) }
        #expect(throws: JournalError.self, "an entry must belong to a run") {
            _ = try journal.recordIntent(run: "nope", host: "h1", stepIndex: 0, stepName: "s", kind: "command",
                                         phase: .apply, undo: nil, irreversible: false)
        }
    }

    @Test("a journal that cannot be created says where")
    func unopenable() throws {
        let dir = "/tmp/rbtest-journal-\(UUID().uuidString)"
        try Data().write(to: URL(fileURLWithPath: dir))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            _ = try Journal(path: dir + "/.runbook/journal.sqlite")
            Issue.record("opened a journal under a regular file")
        } catch let error as JournalError {
            #expect(error.description.contains(dir))
        }
    }
}

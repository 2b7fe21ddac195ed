import Foundation
import Logging
import RunbookCore
import RunbookEngine
import RunbookTransport
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("Local lock")
struct LocalLockTests {
    @Test("the local lock is exclusive, names its holder, and is 0600 in a 0700 state dir")
    func exclusive() throws {
        let state = StateFixtures.dir("lock")
        defer { StateFixtures.remove(state) }
        let info = LockInfo.current(runID: "20261123-114501-ab12", runbook: "vertical-scale")
        let lock = try LocalLock.acquire(stateDir: state, info: info)
        #expect(StateFixtures.mode(state) == 0o700)
        #expect(StateFixtures.mode(lock.path) == 0o600)
        #expect(try LocalLock.read(stateDir: state) == info)

        do {
            _ = try LocalLock.acquire(stateDir: state, info: LockInfo.current(runID: "20261123-120000-cd34", runbook: "site-slow"))
            Issue.record("a second acquire succeeded")
        } catch let held as LockHeld {
            #expect(held.holder == info && held.host == "local" && held.path == lock.path && !held.isStale)
            #expect(held.description.hasPrefix("local is locked by run 20261123-114501-ab12 (runbook vertical-scale) from controller \(ControllerIdentity.hostname) pid \(getpid()) since "))
        }

        #expect(try lock.release())
        #expect(try LocalLock.read(stateDir: state) == nil)
        let again = try LocalLock.acquire(stateDir: state, info: LockInfo.current(runID: "20261123-120000-cd34", runbook: "site-slow"))
        #expect(try lock.release() == false, "a released lock does not remove the next run's lock")
        #expect(FileManager.default.fileExists(atPath: again.path))
        #expect(try again.release())
    }

    @Test("a lock left by a dead process is reported as stale with the unlock hint, never taken over")
    func stale() throws {
        let state = StateFixtures.dir("lock")
        defer { StateFixtures.remove(state) }
        let dead = try StateFixtures.deadPID()
        var info = LockInfo.current(runID: "20261123-114501-dead", runbook: "nightly-maintenance")
        info.pid = dead
        _ = try LocalLock.acquire(stateDir: state, info: info)
        do {
            _ = try LocalLock.acquire(stateDir: state, info: LockInfo.current(runID: "20261123-120000-cd34", runbook: "site-slow"))
            Issue.record("a stale lock was taken over")
        } catch let held as LockHeld {
            #expect(held.isStale && held.holder?.pid == dead)
            #expect(held.description.contains("stale") && held.description.contains("`runbook unlock local`"))
        }
        #expect(try LocalLock.read(stateDir: state)?.runID == "20261123-114501-dead")

        try LocalLock.forceRemove(stateDir: state)
        let lock = try LocalLock.acquire(stateDir: state, info: LockInfo.current(runID: "20261123-120000-cd34", runbook: "site-slow"))
        #expect(try lock.release())
        try LocalLock.forceRemove(stateDir: state)
    }

    @Test("a lock of another controller is never called stale, and an unreadable one still refuses")
    func otherControllerAndGarbage() throws {
        let state = StateFixtures.dir("lock")
        defer { StateFixtures.remove(state) }
        var info = LockInfo.current(runID: "20261123-114501-0ther", runbook: "rb")
        info.controller = "some-other-controller"
        info.pid = try StateFixtures.deadPID()
        _ = try LocalLock.acquire(stateDir: state, info: info)
        #expect(throws: LockHeld.self) {
            _ = try LocalLock.acquire(stateDir: state, info: LockInfo.current(runID: "x", runbook: "rb"))
        }
        #expect(info.isStale == false)

        try "garbage".write(toFile: LocalLock.path(stateDir: state), atomically: false, encoding: .utf8)
        do {
            _ = try LocalLock.acquire(stateDir: state, info: LockInfo.current(runID: "x", runbook: "rb"))
            Issue.record("an unreadable lock was taken over")
        } catch let held as LockHeld {
            #expect(held.holder == nil && held.description.contains("`runbook unlock local`"))
        }
    }
}

/// The remote lock against the real test host h1 over SSH, and the controller through the local transport.
@Suite("Host lock")
struct HostLockTests {
    let env: TestHosts
    let host: RunbookCore.Host

    init() throws {
        env = try TestHosts.load()
        host = env.inventoryHost("h1")
    }

    func transports() async throws -> [any Transport] {
        try await env.bothTransports(host.name)
    }

    func uniquePath() -> String { "/tmp/rbtest-lock-\(UUID().uuidString)" }

    @Test("a held host lock refuses a second run, naming the holder read from the host")
    func heldAndReleased() async throws {
        for t in try await transports() {
            let path = uniquePath()
            let first = LockInfo.current(runID: "20261123-114501-ab12", runbook: "vertical-scale")
            try await HostLock.acquire(on: t, info: first, path: path)
            #expect(try await t.stat(path).map { !$0.isDirectory } == true, "a file on \(t.hostName)")
            #expect(try await HostLock.read(on: t, path: path) == first, "\(t.hostName)")

            do {
                try await HostLock.acquire(on: t, info: LockInfo.current(runID: "20261123-120000-cd34", runbook: "site-slow"), path: path)
                Issue.record("a second acquire succeeded on \(t.hostName)")
            } catch let held as LockHeld {
                #expect(held.holder == first && held.host == t.hostName && held.path == path)
                #expect(held.description.hasPrefix("\(t.hostName) is locked by run 20261123-114501-ab12 (runbook vertical-scale) from controller "))
            }

            #expect(try await HostLock.release(on: t, runID: "20261123-120000-cd34", path: path) == false)
            #expect(try await HostLock.read(on: t, path: path) == first, "the wrong run id leaves the lock on \(t.hostName)")
            #expect(try await HostLock.release(on: t, runID: first.runID, path: path))
            #expect(try await t.stat(path) == nil, "released on \(t.hostName)")
            #expect(try await HostLock.read(on: t, path: path) == nil)
            #expect(try await HostLock.release(on: t, runID: first.runID, path: path) == false, "releasing twice is harmless")

            // Free again: the next run takes it.
            try await HostLock.acquire(on: t, info: LockInfo.current(runID: "20261123-120000-cd34", runbook: "site-slow"), path: path)
            try await HostLock.forceRemove(on: t, path: path)
            await t.close()
        }
    }

    @Test("release by info removes only the lock holding exactly that info")
    func releaseByInfo() async throws {
        for t in try await transports() {
            let path = uniquePath()
            let mine = LockInfo.current(runID: "20261123-114501-ab12", runbook: "vertical-scale")
            let other = LockInfo.current(runID: "20261123-120000-cd34", runbook: "vertical-scale")
            #expect(try await HostLock.release(on: t, info: mine, path: path) == false, "no lock: nothing to release on \(t.hostName)")
            try await HostLock.acquire(on: t, info: other, path: path)
            #expect(try await HostLock.release(on: t, info: mine, path: path) == false)
            #expect(try await HostLock.read(on: t, path: path) == other, "another run's lock stays on \(t.hostName)")
            try await HostLock.forceRemove(on: t, path: path)
            try await HostLock.acquire(on: t, info: mine, path: path)
            let onHost = try #require(try await t.readFile(path))
            #expect(try JSONDecoder().decode(LockInfo.self, from: Data(onHost)) == mine, "\(t.hostName)")
            #expect(onHost.filter { $0 == UInt8(ascii: "\n") }.count == 1 && onHost.last == UInt8(ascii: "\n"),
                    "the info is one JSON line on \(t.hostName)")
            #expect(try await t.stat(path)?.permissions == 0o644, "everyone on \(t.hostName) can see who holds it")
            #expect(try await HostLock.release(on: t, info: mine, path: path))
            #expect(try await t.stat(path) == nil, "released on \(t.hostName)")
            #expect(try await HostLock.release(on: t, info: mine, path: path) == false, "releasing twice is harmless")
            await t.close()
        }
    }

    @Test("forceRemove removes whoever's lock, and is harmless when there is none")
    func forceRemove() async throws {
        for t in try await transports() {
            let path = uniquePath()
            try await HostLock.acquire(on: t, info: LockInfo.current(runID: "20261123-114501-ab12", runbook: "rb"), path: path)
            try await HostLock.forceRemove(on: t, path: path)
            #expect(try await t.stat(path) == nil, "\(t.hostName)")
            try await HostLock.forceRemove(on: t, path: path)

            // An empty lock (a controller killed between creating and writing it) still refuses.
            _ = try await t.run(": > \(path)")
            await #expect(throws: LockHeld.self) {
                try await HostLock.acquire(on: t, info: LockInfo.current(runID: "x", runbook: "rb"), path: path)
            }
            try await HostLock.forceRemove(on: t, path: path)
            #expect(try await t.stat(path) == nil, "\(t.hostName)")

            // A lock left by an earlier version (a directory holding info.json) is read, refused and removed.
            let old = LockInfo.current(runID: "20261101-010101-0ld0", runbook: "rb")
            let line = String(decoding: try JSONEncoder().encode(old), as: UTF8.self)
            _ = try await t.run("mkdir -- \(path) && printf '%s\\n' \(line) > \(path)/info.json")
            #expect(try await HostLock.read(on: t, path: path) == old, "\(t.hostName)")
            #expect(try await HostLock.release(on: t, info: old, path: path) == false, "release by info leaves it to unlock")
            do {
                try await HostLock.acquire(on: t, info: LockInfo.current(runID: "x", runbook: "rb"), path: path)
                Issue.record("an old-style lock was not refused on \(t.hostName)")
            } catch let held as LockHeld {
                #expect(held.holder == old)
            }
            try await HostLock.forceRemove(on: t, path: path)
            #expect(try await t.stat(path) == nil, "\(t.hostName)")
            await t.close()
        }
    }

    @Test("of two concurrent acquires exactly one wins, and the other names the winner")
    func concurrent() async throws {
        for t in try await transports() {
            for _ in 0..<3 {
                let path = uniquePath()
                let infos = ["20261123-114501-aaaa", "20261123-114501-bbbb"].map { LockInfo.current(runID: $0, runbook: "rb") }
                let outcomes = await withTaskGroup(of: (String, Result<Void, any Error>).self) { group in
                    for info in infos {
                        group.addTask {
                            do {
                                try await HostLock.acquire(on: t, info: info, path: path)
                                return (info.runID, .success(()))
                            } catch {
                                return (info.runID, .failure(error))
                            }
                        }
                    }
                    var all: [(String, Result<Void, any Error>)] = []
                    for await outcome in group { all.append(outcome) }
                    return all
                }
                let winners = outcomes.filter { if case .success = $0.1 { true } else { false } }.map(\.0)
                #expect(winners.count == 1, "\(t.hostName): \(outcomes)")
                for (runID, result) in outcomes {
                    if case .failure(let error) = result {
                        let held = try #require(error as? LockHeld, "\(t.hostName): \(error)")
                        #expect(held.holder?.runID == winners.first && held.holder?.runID != runID, "\(t.hostName)")
                    }
                }
                #expect(try await HostLock.read(on: t, path: path)?.runID == winners.first)
                try await HostLock.forceRemove(on: t, path: path)
            }
            await t.close()
        }
    }

    @Test("a lock path that cannot be created is an error, not a held lock")
    func uncreatable() async throws {
        for t in try await transports() {
            let file = uniquePath()
            _ = try await t.run("touch -- \(file)")
            await #expect(throws: LockError.self, "\(t.hostName)") {
                try await HostLock.acquire(on: t, info: LockInfo.current(runID: "x", runbook: "rb"), path: file + "/lock")
            }
            await #expect(throws: LockError.self, "\(t.hostName)") {
                try await HostLock.acquire(on: t, info: LockInfo.current(runID: "x", runbook: "rb"), path: "/nonexistent-rbtest/lock")
            }
            _ = try await t.run("rm -f -- \(file)")
            await t.close()
        }
    }
}

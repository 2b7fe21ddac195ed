import Foundation
import RunbookCore
import RunbookSteps
#if canImport(Glibc)
import Glibc
#endif

/// Who holds a lock: written into the lock when it is taken, shown when someone else is refused.
public struct LockInfo: Codable, Sendable, Hashable {
    /// The run holding the lock.
    public var runID: String
    /// The controller's hostname.
    public var controller: String
    /// The controller's process id.
    public var pid: Int32
    /// The user who started the run on the controller.
    public var user: String
    /// When the lock was taken, ISO 8601 in UTC (`2026-11-23T11:45:01Z`).
    public var startedAt: String
    /// The runbook being applied.
    public var runbook: String

    /// Creates a record.
    public init(runID: String, controller: String, pid: Int32, user: String, startedAt: String, runbook: String) {
        self.runID = runID
        self.controller = controller
        self.pid = pid
        self.user = user
        self.startedAt = startedAt
        self.runbook = runbook
    }

    /// The info for a run of `runbook` by this process, now.
    public static func current(runID: String, runbook: String, at date: Date = Date()) -> LockInfo {
        LockInfo(runID: runID, controller: ControllerIdentity.hostname, pid: ControllerIdentity.pid,
                 user: ControllerIdentity.user, startedAt: Journal.iso8601(date), runbook: runbook)
    }

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", controller, pid, user, startedAt = "started_at", runbook
    }

    /// Whether a process with this id exists (see `ControllerIdentity.processIsAlive`).
    public static func processIsAlive(_ pid: Int32) -> Bool {
        ControllerIdentity.processIsAlive(pid)
    }

    /// True when the holder ran on this controller and its process is gone: nobody will release it.
    public var isStale: Bool {
        controller == ControllerIdentity.hostname && !ControllerIdentity.processIsAlive(pid)
    }

    /// The JSON written into a lock, one line.
    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding strings and an integer cannot fail.
        return Array((try? encoder.encode(self)) ?? Data()) + [UInt8(ascii: "\n")]
    }

    /// Decodes a lock's JSON; nil when it is empty, partial or not ours.
    static func decode(_ bytes: [UInt8]) -> LockInfo? {
        try? JSONDecoder().decode(LockInfo.self, from: Data(bytes))
    }
}

/// The controller this process runs on, as recorded in runs and locks.
public enum ControllerIdentity {
    /// This machine's hostname (`gethostname`).
    public static var hostname: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The effective user's login name, or the uid when it has none.
    public static var user: String {
        let uid = geteuid()
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        if getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name {
            return String(cString: name)
        }
        return ProcessInfo.processInfo.environment["USER"] ?? String(uid)
    }

    /// This process's id.
    public static var pid: Int32 { getpid() }

    /// False only when no process has this id (`kill(pid, 0)` fails with ESRCH); a process of
    /// another user counts as alive. A recycled pid also counts as alive: staleness is never
    /// claimed without proof.
    public static func processIsAlive(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return !(kill(pid, 0) == -1 && errno == ESRCH)
    }
}

/// A lock is held by another run (or by no one who will release it): the apply is refused.
public struct LockHeld: Error, Sendable, CustomStringConvertible {
    /// Who holds it; nil when the lock holds no readable info.
    public let holder: LockInfo?
    /// The host locked (`local` for the controller's own lock).
    public let host: String
    /// The lock's path on that host.
    public let path: String

    /// True when the holder ran on this controller and its process was gone when the lock was
    /// found: nobody will release it, and it is still not taken over.
    public let isStale: Bool

    /// Creates an error; staleness is judged now.
    public init(holder: LockInfo?, host: String, path: String) {
        self.holder = holder
        self.host = host
        self.path = path
        self.isStale = holder?.isStale ?? false
    }

    /// `h1 is locked by run 20261123-114501-ab12 (runbook vertical-scale) from controller ops1 pid 123 since …`,
    /// plus what to do when the lock is stale or unreadable.
    public var description: String {
        guard let holder else {
            return "\(host) is locked (\(path) holds no readable run info): if no run is in progress, "
                + "remove the lock with `runbook unlock \(host)`"
        }
        var text = "\(host) is locked by run \(holder.runID) (runbook \(holder.runbook)) from controller "
            + "\(holder.controller) pid \(holder.pid) since \(holder.startedAt)"
        if holder.user.isEmpty == false { text += " (user \(holder.user))" }
        if isStale {
            text += "; that process is gone, so the lock is stale: after checking that no run is in progress, "
                + "remove it with `runbook unlock \(host)`"
        }
        return text
    }
}

/// Taking, reading or removing a lock failed for a reason other than someone holding it.
public struct LockError: Error, Sendable, CustomStringConvertible {
    /// The host (`local` for the controller's own lock).
    public let host: String
    /// The lock's path on that host.
    public let path: String
    /// What went wrong.
    public let message: String

    /// Creates an error.
    public init(host: String, path: String, message: String) {
        self.host = host
        self.path = path
        self.message = message
    }

    /// `host: lock PATH: message`.
    public var description: String { "\(host): lock \(path): \(message)" }
}

// MARK: - Local lock

/// The controller's own lock, `STATE/lock`: a file created exclusively (O_CREAT|O_EXCL, 0600)
/// holding the `LockInfo` JSON. A lock whose process is gone is reported as stale, never taken
/// over: `runbook unlock local` removes it after a person has looked.
public final class LocalLock: Sendable {
    /// The lock file.
    public let path: String
    /// What this lock says about its holder.
    public let info: LockInfo

    private init(path: String, info: LockInfo) {
        self.path = path
        self.info = info
    }

    /// The lock file's path in `stateDir`.
    public static func path(stateDir: String) -> String {
        (stateDir as NSString).appendingPathComponent("lock")
    }

    /// Takes the lock, creating the state dir (0700) when missing; throws `LockHeld` naming the
    /// holder when it is taken.
    public static func acquire(stateDir: String, info: LockInfo) throws -> LocalLock {
        let path = path(stateDir: stateDir)
        if !FileManager.default.fileExists(atPath: stateDir) {
            do {
                try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw LockError(host: "local", path: path, message: "cannot create the state dir: \(error.localizedDescription)")
            }
        }
        for _ in 0..<5 {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 {
                defer { close(fd) }
                fchmod(fd, 0o600)
                let bytes = info.encoded()
                if writeAll(fd, bytes) && fsync(fd) == 0 {
                    return LocalLock(path: path, info: info)
                }
                let reason = String(cString: strerror(errno))
                unlink(path)
                throw LockError(host: "local", path: path, message: "cannot write: \(reason)")
            }
            guard errno == EEXIST else {
                throw LockError(host: "local", path: path, message: "cannot create: \(String(cString: strerror(errno)))")
            }
            switch readHolder(path) {
            case .gone: continue // Released in between: try again.
            case .held(let holder): throw LockHeld(holder: holder, host: "local", path: path)
            }
        }
        throw LockError(host: "local", path: path, message: "taken and released repeatedly; try again")
    }

    /// Removes the lock if it is still this run's (someone may have unlocked it and another run
    /// taken it since). Returns whether it removed it.
    @discardableResult
    public func release() throws -> Bool {
        guard case .held(let holder?) = LocalLock.readHolder(path, patience: 0), holder.runID == info.runID else {
            return false
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw LockError(host: "local", path: path, message: "cannot remove: \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// Whoever holds the lock in `stateDir`: nil when it is free. A lock holding no readable
    /// info throws `LockHeld` with no holder.
    public static func read(stateDir: String) throws -> LockInfo? {
        let path = path(stateDir: stateDir)
        switch readHolder(path, patience: 0) {
        case .gone: return nil
        case .held(let holder?): return holder
        case .held(nil): throw LockHeld(holder: nil, host: "local", path: path)
        }
    }

    /// Removes the lock whoever holds it (`runbook unlock local`, after confirming).
    public static func forceRemove(stateDir: String) throws {
        let path = path(stateDir: stateDir)
        guard unlink(path) == 0 || errno == ENOENT else {
            throw LockError(host: "local", path: path, message: "cannot remove: \(String(cString: strerror(errno)))")
        }
    }

    enum Holder { case gone, held(LockInfo?) }

    /// Reads the holder; an empty or partial file (a lock being written this instant) is read
    /// again for up to `patience` tries 50 ms apart before it is reported as unreadable.
    static func readHolder(_ path: String, patience: Int = 10) -> Holder {
        var attempt = 0
        while true {
            guard let data = FileManager.default.contents(atPath: path) else {
                return FileManager.default.fileExists(atPath: path) ? .held(nil) : .gone
            }
            if let info = LockInfo.decode(Array(data)) { return .held(info) }
            if attempt >= patience { return .held(nil) }
            attempt += 1
            usleep(50_000)
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}

// MARK: - Host lock

/// The lock on a host: a file created over SFTP with `O_CREAT|O_EXCL` (exactly one of several
/// concurrent creators succeeds) holding the holder's `LockInfo` as one JSON line. Taking and
/// releasing it start no process on the host beyond the session's one `sftp-server`, which
/// file steps use as well: a shell command for each would cost the host a fork and an exec.
///
/// The default path is `/tmp/runbook.lock`: writable by any SSH user without setup, and
/// cleared by a reboot, which also ends any run that held it. The file is 0644, so every user
/// on the host can see who holds it. A lock left by an earlier version of runbook (a directory
/// holding `info.json`) is read, refused and removed like a file.
public enum HostLock {
    /// `/tmp/runbook.lock`.
    public static let defaultPath = "/tmp/runbook.lock"

    /// Takes the lock on the host; throws `LockHeld` with the holder's info read from the host
    /// when someone else has it.
    public static func acquire(on transport: any Transport, info: LockInfo, path: String = defaultPath) async throws {
        let line = info.encoded()
        for _ in 0..<5 {
            do {
                // Created only if nothing is at the path, a dangling symlink included.
                try await transport.writeFile(path, contents: line, mode: 0o644, exclusive: true)
                return
            } catch {
                // Something is there (SFTP reports it as a plain failure), or the file cannot be made.
                guard try await transport.stat(path) != nil else {
                    throw LockError(host: transport.hostName, path: path, message: "cannot create: \(error.message)")
                }
            }
            switch try await readHolder(on: transport, path: path, patience: 10) {
            case .gone: continue  // released in between: try again
            case .held(let holder): throw LockHeld(holder: holder, host: transport.hostName, path: path)
            }
        }
        throw LockError(host: transport.hostName, path: path, message: "taken and released repeatedly; try again")
    }

    /// Removes the lock only if it is held by `runID`; returns whether it did.
    @discardableResult
    public static func release(on transport: any Transport, runID: String, path: String = defaultPath) async throws -> Bool {
        guard case .held(let holder?) = try await readHolder(on: transport, path: path, patience: 0),
              holder.runID == runID else {
            return false
        }
        try await remove(on: transport, path: path)
        return true
    }

    /// Removes the lock if it still holds exactly `info` (the lock `acquire` took with it);
    /// returns whether it did. A lock taken over by another run (after a `runbook unlock`) holds
    /// other info and is left alone.
    @discardableResult
    public static func release(on transport: any Transport, info: LockInfo, path: String = defaultPath) async throws -> Bool {
        let held: [UInt8]?
        do {
            held = try await transport.readFile(path)
        } catch {
            // Not a file we could have made (an old-format lock directory): not ours.
            if let found = try await transport.stat(path), !found.isRegularFile { return false }
            throw LockError(host: transport.hostName, path: path, message: "cannot read: \(error.message)")
        }
        guard held == info.encoded() else { return false }
        do {
            try await transport.removeFile(path)
        } catch {
            throw LockError(host: transport.hostName, path: path, message: "cannot remove: \(error.message)")
        }
        return true
    }

    /// Whoever holds the lock: nil when it is free. A lock holding no readable info throws
    /// `LockHeld` with no holder.
    public static func read(on transport: any Transport, path: String = defaultPath) async throws -> LockInfo? {
        switch try await readHolder(on: transport, path: path, patience: 0) {
        case .gone: return nil
        case .held(let holder?): return holder
        case .held(nil): throw LockHeld(holder: nil, host: transport.hostName, path: path)
        }
    }

    /// Removes the lock whoever holds it (`runbook unlock HOST`, after confirming). No error
    /// when there is none.
    public static func forceRemove(on transport: any Transport, path: String = defaultPath) async throws {
        try await remove(on: transport, path: path)
    }

    static func remove(on transport: any Transport, path: String) async throws {
        let result = try await transport.run(
            "if [ -d \(path) ] && ! [ -L \(path) ]; then rm -f -- \(path + "/info.json") && rmdir -- \(path); "
                + "elif [ -e \(path) ] || [ -L \(path) ]; then rm -f -- \(path); fi")
        guard result.succeeded else {
            throw LockError(host: transport.hostName, path: path,
                            message: "cannot remove: \(result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Reads the holder; a lock whose info is missing or partial (being written this instant)
    /// is read again for up to `patience` tries 100 ms apart.
    static func readHolder(on transport: any Transport, path: String, patience: Int) async throws -> LocalLock.Holder {
        var attempt = 0
        while true {
            guard let found = try await transport.stat(path) else { return .gone }
            let infoPath = found.isDirectory ? path + "/info.json" : path
            if let bytes = try await transport.readFile(infoPath), let info = LockInfo.decode(bytes) {
                return .held(info)
            }
            if attempt >= patience { return .held(nil) }
            attempt += 1
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

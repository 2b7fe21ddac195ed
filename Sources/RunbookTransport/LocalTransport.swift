import Foundation
import RunbookCore
import Subprocess
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The controller itself (`connection: local`): commands run under `/bin/sh -c`, files are
/// local files. Same interface and semantics as SSH.
public struct LocalTransport: Transport {
    /// The inventory name.
    public let hostName: String

    /// Creates the transport.
    public init(hostName: String) {
        self.hostName = hostName
    }

    public func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                    onOutput: (@Sendable (OutputEvent) -> Void)?) async throws(TransportError) -> CommandOutput {
        var options = PlatformOptions()
        // Its own session, so a timeout can end everything the command started.
        options.createSession = true
        var overrides: [Environment.Key: String?] = [:]
        for (key, value) in command.environment { overrides[Environment.Key(stringLiteral: key)] = value }
        let started = ContinuousClock.now
        let timedOut = Flag()
        do {
            let result = try await Subprocess.run(
                .path("/bin/sh"), arguments: ["-c", command.commandLine],
                environment: .inherit.updating(overrides), platformOptions: options,
                input: .array(stdin), output: .bytes(limit: 1 << 30), error: .bytes(limit: 1 << 30)
            ) { execution in
                guard let timeout else { return }
                let pid = execution.processIdentifier.value
                // A Dispatch timer, not a task: the concurrency runtime's few threads (two on a
                // 2-core host) can all be busy, and a step's timeout must fire regardless.
                let (seconds, attoseconds) = timeout.components
                let nanoseconds = max(0, min(seconds, 1 << 32) * 1_000_000_000 + attoseconds / 1_000_000_000)
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) {
                    // The child is a session leader: its pid is the process group.
                    guard kill(pid, 0) == 0 else { return }
                    timedOut.set()
                    kill(-pid, SIGTERM)
                    DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(3)) { kill(-pid, SIGKILL) }
                }
            }
            let stdout = result.standardOutput
            let stderr = result.standardError
            if let onOutput {
                if !stdout.isEmpty { onOutput(OutputEvent(stream: .stdout, bytes: stdout)) }
                if !stderr.isEmpty { onOutput(OutputEvent(stream: .stderr, bytes: stderr)) }
            }
            var status: Int32? = nil
            var signal: String? = nil
            switch result.terminationStatus {
            case .exited(let code): status = Int32(code)
            case .signaled(let code): signal = Self.signalName(Int32(code))
            }
            return CommandOutput(stdout: stdout, stderr: stderr, exitStatus: status, exitSignal: signal,
                                 timedOut: timedOut.isSet, duration: .now - started)
        } catch {
            throw TransportError(host: hostName, message: "cannot run the command locally: \(error)")
        }
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: return "TERM"
        case SIGKILL: return "KILL"
        case SIGINT: return "INT"
        case SIGHUP: return "HUP"
        case SIGPIPE: return "PIPE"
        case SIGSEGV: return "SEGV"
        case SIGABRT: return "ABRT"
        default: return String(signal)
        }
    }

    public func readFile(_ path: String) async throws(TransportError) -> [UInt8]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TransportError(host: hostName, message: "cannot read \(path)")
        }
        return Array(data)
    }

    public func readFile(_ path: String, chunks sink: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool) async throws(TransportError) -> UInt64? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw TransportError(host: hostName, message: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var total: UInt64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TransportError(host: hostName, message: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { return total }
            total += UInt64(n)
            guard buffer.withUnsafeBytes({ sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) else {
                throw TransportError(host: hostName, message: "reading \(path) was stopped by its receiver")
            }
        }
    }

    public func stat(_ path: String) async throws(TransportError) -> FileInfo? {
        var link = Glibc.stat()
        guard lstat(path, &link) == 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw TransportError(host: hostName, message: "cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        var found = link
        var target: String?
        let isSymlink = link.st_mode & S_IFMT == S_IFLNK
        if isSymlink {
            // Followed, as over SSH: what it resolves to, and where that is.
            guard followingStat(path, &found) == 0, let resolved = realpath(path, nil) else {
                return FileInfo(size: 0, permissions: link.st_mode & 0o7777, isDirectory: false, isRegularFile: false,
                                uid: link.st_uid, gid: link.st_gid, isSymlink: true)
            }
            target = String(cString: resolved)
            free(resolved)
        }
        let type = found.st_mode & S_IFMT
        return FileInfo(size: UInt64(found.st_size), permissions: found.st_mode & 0o7777,
                        isDirectory: type == S_IFDIR, isRegularFile: type == S_IFREG,
                        uid: found.st_uid, gid: found.st_gid, isSymlink: isSymlink, symlinkTarget: target)
    }

    public func writeFile(_ path: String, contents: [UInt8], mode: UInt32, exclusive: Bool) async throws(TransportError) {
        let flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (exclusive ? O_EXCL : 0)
        let fd = open(path, flags, mode_t(mode))
        guard fd >= 0 else {
            throw TransportError(host: hostName, message: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(fd) }
        fchmod(fd, mode_t(mode))
        var offset = 0
        while offset < contents.count {
            let n = contents.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard n > 0 else {
                throw TransportError(host: hostName, message: "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    public func removeFile(_ path: String) async throws(TransportError) {
        if unlink(path) != 0 && errno != ENOENT {
            throw TransportError(host: hostName, message: "cannot remove \(path): \(String(cString: strerror(errno)))")
        }
    }

    public func exchange(address: String, port: Int, send: [UInt8], timeout: Duration) async throws(TransportError) -> ExchangeReply? {
        let deadline = ContinuousClock.now + timeout
        // The exchange blocks for up to `timeout`: on a thread of its own, not one of the few
        // the concurrency runtime has for every task of the run.
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: Self.blockingExchange(address: address, port: port, send: send, deadline: deadline))
            }
        }
    }

    /// A plain TCP exchange on the controller, bounded by `deadline` (poll on a non-blocking socket).
    static func blockingExchange(address: String, port: Int, send: [UInt8], deadline: ContinuousClock.Instant) -> ExchangeReply? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(address, String(port), &hints, &list) == 0, let first = list else { return nil }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        func remainingMS() -> Int32 {
            let left = deadline - .now
            return Int32(clamping: max(0, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
        }
        // poll until ready or the deadline; a signal (EINTR: the controller's child processes
        // exiting) is not a timeout.
        func wait(_ events: Int32) -> Bool {
            while true {
                var p = pollfd(fd: fd, events: Int16(events), revents: 0)
                let r = poll(&p, 1, remainingMS())
                if r > 0 { return true }
                if r == 0 || errno != EINTR { return false }
            }
        }
        if connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 {
            guard errno == EINPROGRESS else { return nil }
            guard wait(Int32(POLLOUT)) else { return nil }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { return nil }
        }
        var offset = 0
        while offset < send.count {
            guard wait(Int32(POLLOUT)) else { return ExchangeReply(bytes: [], complete: false) }
            let n = send.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if n <= 0 { break }
            offset += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            guard wait(Int32(POLLIN)) else { return ExchangeReply(bytes: received, complete: false) }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            // A reset after the peer answered is it hanging up on unread input: still an end.
            if n <= 0 { return ExchangeReply(bytes: received, complete: n == 0 || errno == ECONNRESET) }
            received += buffer[0..<n]
        }
    }

    public func close() async {}
}

/// A set-once flag shared with the timeout task.
final class Flag: Sendable {
    private let state = Mutex(false)
    func set() { state.withLock { $0 = true } }
    var isSet: Bool { state.withLock { $0 } }
}

/// `stat(2)` (following links), named apart from `LocalTransport.stat`.
private func followingStat(_ path: String, _ buffer: inout Glibc.stat) -> Int32 {
    stat(path, &buffer)
}

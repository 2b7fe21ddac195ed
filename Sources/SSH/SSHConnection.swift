import CLibSSH2
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where and how to connect: one host's SSH settings.
public struct SSHTarget: Sendable {
    /// Address or name to connect to (IPv4, IPv6 with or without brackets, or a DNS name).
    public var host: String
    /// TCP port.
    public var port: Int
    /// Remote user.
    public var user: String
    /// Private key files to offer, in order (missing files are skipped and reported).
    public var identityFiles: [String]
    /// Passphrase for encrypted identity files.
    public var passphrase: String?
    /// Password, offered only when set (the inventory asked for it).
    public var password: String?
    /// Whether to offer the keys of ssh-agent first.
    public var useAgent: Bool
    /// The agent socket (defaults to `SSH_AUTH_SOCK`).
    public var agentSocket: String?
    /// The known_hosts file to check (and, under accept-new, to record in).
    public var knownHostsFile: String
    /// How host keys are checked.
    public var hostKeyPolicy: HostKeyPolicy
    /// Limit for TCP connect, handshake and authentication together.
    public var connectTimeout: Duration
    /// Seconds between keepalives while commands run (0: off).
    public var keepaliveInterval: Int
    /// Unanswered keepalive intervals before the host counts as gone.
    public var keepaliveCountMax: Int

    /// Creates a target with OpenSSH-like defaults.
    public init(host: String, port: Int = 22, user: String, identityFiles: [String] = [], passphrase: String? = nil,
                password: String? = nil, useAgent: Bool = true,
                agentSocket: String? = getenv("SSH_AUTH_SOCK").map { String(cString: $0) },
                knownHostsFile: String, hostKeyPolicy: HostKeyPolicy = .strict, connectTimeout: Duration = .seconds(10),
                keepaliveInterval: Int = 15, keepaliveCountMax: Int = 3) {
        self.host = host
        self.port = port
        self.user = user
        self.identityFiles = identityFiles
        self.passphrase = passphrase
        self.password = password
        self.useAgent = useAgent
        self.agentSocket = agentSocket
        self.knownHostsFile = knownHostsFile
        self.hostKeyPolicy = hostKeyPolicy
        self.connectTimeout = connectTimeout
        self.keepaliveInterval = keepaliveInterval
        self.keepaliveCountMax = keepaliveCountMax
    }

    /// `user@host:port`, for messages.
    public var label: String {
        let shown = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "\(user)@\(shown):\(port)"
    }
}

/// An authenticated SSH session to one host, reused for every command and file operation.
/// Commands may run concurrently on it (each on its own channel).
public final class SSHConnection: Sendable {
    /// Prepares the SSH machinery in the background (see `EventLoopGroup.warmUp`), for a
    /// process about to connect: call it first, then load what the connections need.
    public static func warmUp() {
        EventLoopGroup.warmUp()
    }

    /// The host this connection reaches.
    public let target: SSHTarget
    private let loop: EventLoop
    private let sessionID: Int
    /// The connection to the previous jump host, kept open as long as this one is.
    private let via: SSHConnection?
    private let closed = Mutex(false)
    private static let tokens = Mutex(0)

    private init(target: SSHTarget, loop: EventLoop, sessionID: Int, via: SSHConnection?) {
        self.target = target
        self.loop = loop
        self.sessionID = sessionID
        self.via = via
    }

    deinit {
        let alreadyClosed = closed.withLock { $0 }
        if !alreadyClosed {
            let id = sessionID
            loop.execute { state in
                guard let session = state.sessions[id] else { return }
                state.start(CloseOperation(loopState: state, session: session, continuation: nil))
            }
        }
    }

    /// Connects to `target`, through `jumps` in order when given (ProxyJump).
    public static func connect(to target: SSHTarget, via jumps: [SSHTarget] = [], logger: Logger = Logger(label: "runbook.ssh")) async throws -> SSHConnection {
        var previous: SSHConnection? = nil
        for jump in jumps {
            previous = try await open(jump, through: previous, logger: logger)
        }
        return try await open(target, through: previous, logger: logger)
    }

    private static func open(_ target: SSHTarget, through jump: SSHConnection?, logger: Logger) async throws -> SSHConnection {
        let addresses = jump == nil ? try SocketAddress.resolve(host: target.host, port: target.port) : []
        let loop = jump?.loop ?? EventLoopGroup.shared.next()
        let jumpID = jump?.sessionID
        let idBox = Mutex<Int?>(nil)
        do {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                loop.execute { state in
                    let session = state.addSession { SessionState(id: $0, label: target.label) }
                    idBox.withLock { $0 = session.id }
                    if let jumpID {
                        guard let outer = state.sessions[jumpID], outer.failure == nil else {
                            continuation.resume(throwing: SSHError(.closed, "the jump host connection is closed"))
                            return
                        }
                        var pair: [Int32] = [0, 0]
                        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
                            continuation.resume(throwing: SSHError(.connect, "cannot create a socketpair for the jump: \(String(cString: strerror(errno)))"))
                            return
                        }
                        session.fd = pair[0]
                        outer.dependents.append(session)
                        state.start(JumpPumpOperation(loopState: state, session: outer, host: target.host, port: target.port, fd: pair[1], inner: session))
                    }
                    state.start(ConnectOperation(session: session, target: target, addresses: addresses, logger: logger, continuation: continuation))
                }
            }
        } catch {
            if let id = idBox.withLock({ $0 }) {
                loop.execute { state in
                    guard let session = state.sessions[id] else { return }
                    state.failSession(session, error as? SSHError ?? SSHError(.connect, "\(error)"))
                    state.removeSession(session)
                }
            }
            if let jump { await jump.close() }
            throw error
        }
        let id = idBox.withLock { $0 }!
        logger.debug("connected to \(target.label)")
        return SSHConnection(target: target, loop: loop, sessionID: id, via: jump)
    }

    /// Runs `command` through the remote login shell, as `ssh host command` does.
    ///
    /// stdout and stderr come back separately as bytes. With a `timeout`, a command still
    /// running at the deadline has its whole remote process group sent TERM, then KILL, and
    /// the result says `timedOut`. Cancelling the calling task ends the command the same way.
    public func run(_ command: String, stdin: [UInt8] = [], timeout: Duration? = nil,
                    onOutput: (@Sendable (OutputChunk) -> Void)? = nil, gate: ExecGate? = nil) async throws -> CommandResult {
        // A cancellation that comes before the command is handed over is applied right after.
        let box = Mutex<(started: StartedCommand?, cancelled: Bool)>((nil, false))
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CommandResult, any Error>) in
                let started = start(command, stdin: stdin, timeout: timeout, onOutput: onOutput, gate: gate) { result in
                    continuation.resume(with: result)
                }
                if box.withLock({ value -> Bool in
                    value.started = started
                    return value.cancelled
                }) {
                    started.cancel()
                }
            }
        } onCancel: {
            box.withLock { value -> StartedCommand? in
                value.cancelled = true
                return value.started
            }?.cancel()
        }
    }

    /// `run`, without waiting: the command is handed to the connection's loop at once and
    /// `completion` is called there with its result. The caller can go on with other work
    /// (the engine commits its journal) and no task has to be started to wait for it.
    @discardableResult
    public func start(_ command: String, stdin: [UInt8] = [], timeout: Duration? = nil,
                      onOutput: (@Sendable (OutputChunk) -> Void)? = nil, gate: ExecGate? = nil,
                      completion: @escaping @Sendable (Result<CommandResult, SSHError>) -> Void) -> StartedCommand {
        let token = Self.tokens.withLock { value in
            value += 1
            return value
        }
        let id = sessionID
        // Cancellation needs the process group, so a cancellable run always tracks it.
        let effectiveTimeout = timeout ?? .seconds(366 * 86_400)
        loop.execute { state in
            guard let session = state.sessions[id] else {
                completion(.failure(SSHError(.closed, "the connection to \(self.target.label) is closed")))
                return
            }
            let op = ExecOperation(loopState: state, session: session, command: command, stdin: stdin,
                                   timeout: effectiveTimeout, onOutput: onOutput, completion: completion, gate: gate)
            state.register(op, token: token)
            state.start(op)
            gate?.attach(self.loop)
        }
        return StartedCommand(loop: loop, token: token)
    }

    /// The executor of the thread that drives this connection: a task that prefers it
    /// (`withTaskExecutorPreference`) gets each command's result without a thread switch.
    public var taskExecutor: any TaskExecutor { loop }

    /// Reads a remote file over SFTP; nil when it does not exist.
    public func readFile(_ path: String) async throws -> [UInt8]? {
        try await submit { state, session, continuation in
            ReadFileOperation(loopState: state, session: session, path: path, continuation: continuation)
        }
    }

    /// Reads a remote file over SFTP in chunks, each handed to `sink` on the connection's
    /// thread as it arrives (never the whole file in memory); nil when it does not exist, else
    /// its size. `sink` returns false to stop (the read then throws).
    public func readFile(_ path: String, chunks sink: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool) async throws -> UInt64? {
        try await submit { state, session, continuation in
            StreamReadOperation(loopState: state, session: session, path: path, sink: sink, continuation: continuation)
        }
    }

    /// Stats a remote path over SFTP; nil when it does not exist.
    public func stat(_ path: String) async throws -> FileAttributes? {
        try await submit { state, session, continuation in
            StatOperation(loopState: state, session: session, path: path, continuation: continuation)
        }
    }

    /// Writes a remote file over SFTP with exactly `mode`; `exclusive` fails if it exists.
    public func writeFile(_ path: String, contents: [UInt8], mode: UInt32 = 0o600, exclusive: Bool = false) async throws {
        try await submit { state, session, continuation in
            WriteFileOperation(loopState: state, session: session, path: path, data: contents, mode: mode,
                               exclusive: exclusive, continuation: continuation)
        }
    }

    /// Removes a remote file over SFTP (no error when it is already gone).
    public func removeFile(_ path: String) async throws {
        try await submit { state, session, continuation in
            UnlinkOperation(loopState: state, session: session, path: path, continuation: continuation)
        }
    }

    /// Closes the session (and the jump hosts' sessions it went through).
    public func close() async {
        let first = closed.withLock { value in
            defer { value = true }
            return !value
        }
        guard first else { return }
        let id = sessionID
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            loop.execute { state in
                guard let session = state.sessions[id] else {
                    continuation.resume()
                    return
                }
                state.start(CloseOperation(loopState: state, session: session, continuation: continuation))
            }
        }
        if let via { await via.close() }
    }

    func submit<T: Sendable>(_ make: @escaping @Sendable (LoopState, SessionState, CheckedContinuation<T, any Error>) -> LoopOperation) async throws -> T {
        let id = sessionID
        let label = target.label
        return try await withCheckedThrowingContinuation { continuation in
            loop.execute { state in
                guard let session = state.sessions[id] else {
                    continuation.resume(throwing: SSHError(.closed, "the connection to \(label) is closed"))
                    return
                }
                state.start(make(state, session, continuation))
            }
        }
    }
}

/// A command handed to its connection by `SSHConnection.start`.
public struct StartedCommand: Sendable {
    fileprivate let loop: EventLoop
    fileprivate let token: Int

    /// Ends the command early, as cancelling `run`'s task does: its remote process group is
    /// killed and the completion gets `.cancelled`.
    public func cancel() {
        loop.execute { state in state.cancel(token: token) }
    }
}

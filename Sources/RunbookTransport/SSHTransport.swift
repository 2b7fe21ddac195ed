import Foundation
import Logging
import RunbookCore
import SSH
import Synchronization

/// A host reached over SSH: one session, reused for every command and file operation.
public final class SSHTransport: Transport {
    /// The inventory name.
    public let hostName: String
    private let connection: SSHConnection

    private init(hostName: String, connection: SSHConnection) {
        self.hostName = hostName
        self.connection = connection
    }

    /// Starts the SSH layer's one-time set-up in the background (`SSHConnection.warmUp`).
    public static func warmUp() {
        SSHConnection.warmUp()
    }

    /// Connects to `host` (through its jump hosts) with its inventory settings.
    /// `secret` resolves the secret names the inventory refers to (password, passphrase).
    public static func connect(_ host: RunbookCore.Host, secret: (String) -> String? = { _ in nil },
                               logger: Logger) async throws(TransportError) -> SSHTransport {
        var target = SSHTarget(host: host.address, port: host.port, user: host.user, identityFiles: host.identityFiles,
                               knownHostsFile: host.knownHosts, hostKeyPolicy: policy(host.hostKeyChecking),
                               connectTimeout: .milliseconds(Int(host.connectTimeout * 1000)),
                               keepaliveInterval: host.serverAliveInterval, keepaliveCountMax: host.serverAliveCountMax)
        if let name = host.password {
            guard let value = secret(name) else {
                throw TransportError(host: host.name, message: "the inventory asks for password authentication with secret \(name), but RUNBOOK_SECRET_\(name) is not set and .runbook/secrets.env has no \(name)")
            }
            target.password = value
        }
        target.passphrase = secret("SSH_KEY_PASSPHRASE")
        let jumps = host.proxyJump.map { jump in
            SSHTarget(host: jump.address, port: jump.port, user: jump.user, identityFiles: jump.identityFiles,
                      knownHostsFile: jump.knownHosts, hostKeyPolicy: policy(jump.hostKeyChecking),
                      connectTimeout: target.connectTimeout, keepaliveInterval: host.serverAliveInterval,
                      keepaliveCountMax: host.serverAliveCountMax)
        }
        var hostLogger = logger
        hostLogger[metadataKey: "host"] = "\(host.name)"
        do {
            let connection = try await SSHConnection.connect(to: target, via: jumps, logger: hostLogger)
            return SSHTransport(hostName: host.name, connection: connection)
        } catch {
            throw wrap(error, host: host.name)
        }
    }

    private static func policy(_ checking: HostKeyChecking) -> HostKeyPolicy {
        switch checking {
        case .strict: return .strict
        case .acceptNew: return .acceptNew
        case .off: return .off
        }
    }

    private static func wrap(_ error: any Error, host: String) -> TransportError {
        if let ssh = error as? SSHError {
            let lost = [.disconnected, .closed, .connect, .handshake].contains(ssh.kind)
            return TransportError(host: host, message: ssh.description, connectionLost: lost)
        }
        return TransportError(host: host, message: "\(error)")
    }

    /// The connection's event loop.
    public var preferredExecutor: (any TaskExecutor)? { connection.taskExecutor }

    /// Opens the command's channel at once and sends the command when `gate` opens.
    public func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                    onOutput: (@Sendable (OutputEvent) -> Void)?, startingAfter gate: CommandGate) async throws(TransportError) -> CommandOutput {
        try await start(command, stdin: stdin, timeout: timeout, onOutput: onOutput, startingAfter: gate).output()
    }

    /// Hands the command to the connection's loop at once: its channel opens while the caller
    /// works, the command goes when `gate` opens, and the output comes back to whoever awaits it.
    public func start(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                      onOutput: (@Sendable (OutputEvent) -> Void)?, startingAfter gate: CommandGate) -> PendingCommand {
        let execGate = ExecGate()
        gate.whenDecided { $0 == .open ? execGate.open() : execGate.cancel() }
        let (line, input) = Self.deliverEnvironment(command, stdin: stdin)
        let host = hostName
        let started = Mutex<StartedCommand?>(nil)
        let pending = PendingCommand(onCancel: { started.withLock { $0 }?.cancel() })
        let handle = connection.start(line, stdin: input, timeout: timeout, onOutput: Self.forward(onOutput), gate: execGate) { result in
            pending.finish(result.map(Self.output).mapError { Self.wrap($0, host: host) })
        }
        started.withLock { $0 = handle }
        return pending
    }

    public func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                    onOutput: (@Sendable (OutputEvent) -> Void)?) async throws(TransportError) -> CommandOutput {
        let (line, input) = Self.deliverEnvironment(command, stdin: stdin)
        do {
            return Self.output(try await connection.run(line, stdin: input, timeout: timeout, onOutput: Self.forward(onOutput)))
        } catch {
            throw Self.wrap(error, host: hostName)
        }
    }

    private static func forward(_ onOutput: (@Sendable (OutputEvent) -> Void)?) -> (@Sendable (OutputChunk) -> Void)? {
        guard let onOutput else { return nil }
        return { chunk in
            onOutput(OutputEvent(stream: chunk.stream == .stdout ? .stdout : .stderr, bytes: chunk.bytes))
        }
    }

    private static func output(_ r: CommandResult) -> CommandOutput {
        CommandOutput(stdout: r.stdout, stderr: r.stderr, exitStatus: r.exitStatus, exitSignal: r.exitSignal,
                      timedOut: r.timedOut, duration: r.duration)
    }

    /// Secrets travel on stdin, never on a command line: the first stdin line carries the
    /// `export` statements, base64-encoded; the remote shell reads and evaluates it with
    /// builtins before running the command, which then gets the rest of stdin.
    static func deliverEnvironment(_ command: ShellCommand, stdin: [UInt8]) -> (String, [UInt8]) {
        let environment = command.environment
        guard !environment.isEmpty else { return (command.commandLine, stdin) }
        let exports = environment.keys.sorted().map { "export \($0)=\(Shell.quote(environment[$0]!))\n" }.joined()
        let encoded = Data(exports.utf8).base64EncodedString()
        let prelude = "IFS= read -r __rb_env && eval \"$(printf '%s' \"$__rb_env\" | base64 -d)\" && unset __rb_env && "
        return (prelude + "{ " + command.commandLine + "\n}", Array((encoded + "\n").utf8) + stdin)
    }

    public func readFile(_ path: String) async throws(TransportError) -> [UInt8]? {
        do { return try await connection.readFile(path) } catch { throw Self.wrap(error, host: hostName) }
    }

    public func readFile(_ path: String, chunks sink: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool) async throws(TransportError) -> UInt64? {
        do { return try await connection.readFile(path, chunks: sink) } catch { throw Self.wrap(error, host: hostName) }
    }

    public func stat(_ path: String) async throws(TransportError) -> FileInfo? {
        do {
            return try await connection.stat(path).map {
                FileInfo(size: $0.size, permissions: $0.permissions, isDirectory: $0.isDirectory,
                         isRegularFile: $0.isRegularFile, uid: $0.uid, gid: $0.gid,
                         isSymlink: $0.isSymlink, symlinkTarget: $0.symlinkTarget)
            }
        } catch {
            throw Self.wrap(error, host: hostName)
        }
    }

    public func writeFile(_ path: String, contents: [UInt8], mode: UInt32, exclusive: Bool) async throws(TransportError) {
        do { try await connection.writeFile(path, contents: contents, mode: mode, exclusive: exclusive) } catch { throw Self.wrap(error, host: hostName) }
    }

    public func removeFile(_ path: String) async throws(TransportError) {
        do { try await connection.removeFile(path) } catch { throw Self.wrap(error, host: hostName) }
    }

    public func exchange(address: String, port: Int, send: [UInt8], timeout: Duration) async throws(TransportError) -> ExchangeReply? {
        do {
            switch try await connection.exchange(host: address, port: port, send: send, timeout: timeout) {
            case .refused: return nil
            case .data(let bytes, let complete): return ExchangeReply(bytes: bytes, complete: complete)
            }
        } catch {
            throw Self.wrap(error, host: hostName)
        }
    }

    public func close() async {
        await connection.close()
    }
}

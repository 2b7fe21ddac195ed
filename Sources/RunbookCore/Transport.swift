import Synchronization
/// A piece of output from a running command.
public struct OutputEvent: Sendable {
    /// stdout or stderr.
    public enum Stream: String, Sendable { case stdout, stderr }
    /// Which stream.
    public let stream: Stream
    /// The bytes as they arrived.
    public let bytes: [UInt8]

    /// Creates an event.
    public init(stream: Stream, bytes: [UInt8]) {
        self.stream = stream
        self.bytes = bytes
    }
}

/// The outcome of one command on one host.
public struct CommandOutput: Sendable {
    /// stdout bytes.
    public var stdout: [UInt8]
    /// stderr bytes.
    public var stderr: [UInt8]
    /// The exit status when the command exited.
    public var exitStatus: Int32?
    /// The signal name when it was killed by one.
    public var exitSignal: String?
    /// True when it ran past its timeout and was ended.
    public var timedOut: Bool
    /// Wall time.
    public var duration: Duration

    /// Creates an output record.
    public init(stdout: [UInt8], stderr: [UInt8], exitStatus: Int32?, exitSignal: String?, timedOut: Bool, duration: Duration) {
        self.stdout = stdout
        self.stderr = stderr
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
        self.timedOut = timedOut
        self.duration = duration
    }

    /// stdout decoded leniently.
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    /// stderr decoded leniently.
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    /// True for exit status 0.
    public var succeeded: Bool { exitStatus == 0 && !timedOut }
    /// `exit 3`, `signal TERM`, `timed out`: for messages.
    public var statusText: String {
        if timedOut { return "timed out" }
        if let exitSignal { return "killed by signal \(exitSignal)" }
        return "exit \(exitStatus.map(String.init) ?? "?")"
    }
}

/// What `stat` reports about a path on a host.
public struct FileInfo: Sendable, Equatable {
    /// Size in bytes.
    public var size: UInt64
    /// Permission bits.
    public var permissions: UInt32
    /// Directory?
    public var isDirectory: Bool
    /// Regular file?
    public var isRegularFile: Bool
    /// Owner uid.
    public var uid: UInt32
    /// Group gid.
    public var gid: UInt32
    /// True when the path is a symbolic link; the other fields then describe what it resolves to.
    public var isSymlink: Bool
    /// The canonical path a symbolic link resolves to; nil for a dangling link or another file.
    public var symlinkTarget: String?

    /// Creates a record.
    public init(size: UInt64, permissions: UInt32, isDirectory: Bool, isRegularFile: Bool, uid: UInt32, gid: UInt32,
                isSymlink: Bool = false, symlinkTarget: String? = nil)
    {
        self.size = size
        self.permissions = permissions
        self.isDirectory = isDirectory
        self.isRegularFile = isRegularFile
        self.uid = uid
        self.gid = gid
        self.isSymlink = isSymlink
        self.symlinkTarget = symlinkTarget
    }
}

/// A failure to reach or use a host, with the host named.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    /// The inventory name of the host.
    public let host: String
    /// What went wrong, for the operator.
    public let message: String
    /// True when the connection itself is gone (as opposed to one operation failing).
    public let connectionLost: Bool

    /// Creates an error.
    public init(host: String, message: String, connectionLost: Bool = false) {
        self.host = host
        self.message = message
        self.connectionLost = connectionLost
    }

    /// `host: message`.
    public var description: String { "\(host): \(message)" }
}

/// Moves bytes to and from one host: run a command, read, write, stat and remove files.
/// Implemented over SSH, locally, and in memory for unit tests. Steps never talk to it
/// directly; the engine does.
public protocol Transport: Sendable {
    /// The inventory name of the host.
    var hostName: String { get }
    /// Runs a shell command. Secrets in `command` reach the host out of band, never on its
    /// command line. A non-zero exit is a normal result, not an error.
    func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
             onOutput: (@Sendable (OutputEvent) -> Void)?) async throws(TransportError) -> CommandOutput
    /// `run`, started only once `gate` opens; when it is cancelled instead, nothing runs and
    /// this throws. An implementation may get ready meanwhile (the default just waits).
    func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
             onOutput: (@Sendable (OutputEvent) -> Void)?, startingAfter gate: CommandGate) async throws(TransportError) -> CommandOutput
    /// `run(…startingAfter:)` without waiting for it: the command is on its way when this
    /// returns, and its output is awaited through the `PendingCommand`. An implementation may
    /// hand it over without starting a task (the default starts one).
    func start(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
               onOutput: (@Sendable (OutputEvent) -> Void)?, startingAfter gate: CommandGate) -> PendingCommand
    /// The file's bytes, or nil when it does not exist.
    func readFile(_ path: String) async throws(TransportError) -> [UInt8]?
    /// The file's bytes in order, chunk by chunk as they arrive, to `sink` (an implementation
    /// holds no more than a chunk); nil when it does not exist, else its size. `sink` returns
    /// false to stop the read, which then throws.
    func readFile(_ path: String, chunks sink: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool) async throws(TransportError) -> UInt64?
    /// What the path is, or nil when it does not exist.
    func stat(_ path: String) async throws(TransportError) -> FileInfo?
    /// Writes a file with exactly `mode`; `exclusive` fails when it exists.
    func writeFile(_ path: String, contents: [UInt8], mode: UInt32, exclusive: Bool) async throws(TransportError)
    /// Removes a file; no error when it is already gone.
    func removeFile(_ path: String) async throws(TransportError)
    /// Connects from the host to `address:port` (as `ssh -L` does), sends `send`, and returns
    /// what came back until the peer closed or `timeout` passed; nil when the connection was
    /// refused or could not be made. Health checks start on the host this way, without curl.
    func exchange(address: String, port: Int, send: [UInt8], timeout: Duration) async throws(TransportError) -> ExchangeReply?
    /// Ends the connection.
    func close() async
    /// Where work that waits on this host step after step is best run: the executor that
    /// drives the connection, so that no thread is woken between a command's end and the
    /// next command. nil: anywhere.
    var preferredExecutor: (any TaskExecutor)? { get }
}

/// What a TCP exchange through a host brought back.
public struct ExchangeReply: Sendable, Equatable {
    /// The bytes received.
    public var bytes: [UInt8]
    /// True when the peer closed the connection (false: the timeout cut it short).
    public var complete: Bool

    /// Creates a reply.
    public init(bytes: [UInt8], complete: Bool) {
        self.bytes = bytes
        self.complete = complete
    }
}

extension Transport {
    /// No preference.
    public var preferredExecutor: (any TaskExecutor)? { nil }

    /// Waits for `gate`, then runs the command.
    public func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                    onOutput: (@Sendable (OutputEvent) -> Void)?, startingAfter gate: CommandGate) async throws(TransportError) -> CommandOutput {
        guard await gate.decided() == .open else {
            throw TransportError(host: hostName, message: "the command was not started")
        }
        return try await run(command, stdin: stdin, timeout: timeout, onOutput: onOutput)
    }

    /// Runs `run(…startingAfter:)` in a task of its own.
    public func start(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                      onOutput: (@Sendable (OutputEvent) -> Void)?, startingAfter gate: CommandGate) -> PendingCommand {
        let task = Mutex<Task<Void, Never>?>(nil)
        let pending = PendingCommand(onCancel: { task.withLock { $0 }?.cancel() })
        let running = Task {
            do throws(TransportError) {
                pending.finish(.success(try await run(command, stdin: stdin, timeout: timeout, onOutput: onOutput, startingAfter: gate)))
            } catch {
                pending.finish(.failure(error))
            }
        }
        task.withLock { $0 = running }
        return pending
    }

    /// Reads the whole file and hands it over as one chunk: for transports whose files are
    /// small or already in memory (the in-memory one of unit tests).
    public func readFile(_ path: String, chunks sink: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool) async throws(TransportError) -> UInt64? {
        guard let bytes = try await readFile(path) else { return nil }
        guard bytes.withUnsafeBytes({ sink($0) }) else {
            throw TransportError(host: hostName, message: "reading \(path) was stopped by its receiver")
        }
        return UInt64(bytes.count)
    }

    /// Runs a command without stdin, timeout or streaming.
    public func run(_ command: ShellCommand) async throws(TransportError) -> CommandOutput {
        try await run(command, stdin: [], timeout: nil, onOutput: nil)
    }

    /// Replaces `path` atomically: the bytes go to a 0600 temp file with an unpredictable name
    /// beside it, which gets its final mode (and owner/group), then `mv -fT` renames it over
    /// the target (rename(2) on one filesystem). On any failure the temp file is removed and
    /// the old file is left as it was.
    /// With `validate`, the candidate must pass that command (`%s` is the candidate's path)
    /// before it is put in place.
    public func writeFileAtomically(_ path: String, contents: [UInt8], mode: UInt32 = 0o644,
                                    owner: String? = nil, group: String? = nil,
                                    validate: ShellCommand? = nil) async throws(TransportError) {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let base = path.split(separator: "/").last.map(String.init) ?? "file"
        let temp = (directory.isEmpty && !path.hasPrefix("/") ? "" : directory + "/") + ".\(base).runbook-\(randomToken()).tmp"
        try await writeFile(temp, contents: contents, mode: 0o600, exclusive: true)
        if let validate {
            let check = validate.substituting("%s", with: temp)
            let outcome: CommandOutput
            do {
                outcome = try await run(check)
            } catch {
                try? await removeFile(temp)
                throw error
            }
            guard outcome.succeeded else {
                try? await removeFile(temp)
                let reason = String((outcome.stderrText + outcome.stdoutText).split(whereSeparator: \.isNewline).joined(separator: " "))
                throw TransportError(host: hostName, message: "validation of the new \(path) failed (`\(check.display)`: \(outcome.statusText)): \(reason)")
            }
        }
        var command: ShellCommand = "chmod \(String(mode, radix: 8)) -- \(temp)"
        if let owner {
            let spec = group.map { "\(owner):\($0)" } ?? owner
            command = "\(command) && chown -- \(spec) \(temp)"
        } else if let group {
            command = "\(command) && chgrp -- \(group) \(temp)"
        }
        command = "\(command) && mv -fT -- \(temp) \(path)"
        let result: CommandOutput
        do {
            result = try await run(command)
        } catch {
            try? await removeFile(temp)
            throw error
        }
        guard result.succeeded else {
            try? await removeFile(temp)
            let reason = String(result.stderrText.split(whereSeparator: \.isNewline).joined(separator: " "))
            throw TransportError(host: hostName, message: "cannot put \(path) in place (\(result.statusText)): \(reason)")
        }
    }
}

extension ShellCommand {
    /// The command with every `placeholder` in its literal text replaced by `value`, quoted.
    public func substituting(_ placeholder: String, with value: String) -> ShellCommand {
        var result: [Part] = []
        for part in parts {
            guard case .literal(let text) = part, text.contains(placeholder) else {
                result.append(part)
                continue
            }
            let pieces = text.split(separator: placeholder, omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if index > 0 { result.append(.value(value)) }
                if !piece.isEmpty { result.append(.literal(String(piece))) }
            }
        }
        return ShellCommand(parts: result)
    }
}

/// 16 random hex digits for temp names.
func randomToken() -> String {
    var generator = SystemRandomNumberGenerator()
    return String(generator.next(), radix: 16)
}

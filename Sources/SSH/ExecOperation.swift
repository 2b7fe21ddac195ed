import CLibSSH2
#if canImport(Glibc)
import Glibc
#endif

/// A piece of a command's output as it arrives.
public struct OutputChunk: Sendable {
    /// Which stream the bytes came from.
    public enum Stream: Sendable { case stdout, stderr }
    /// The stream.
    public let stream: Stream
    /// The bytes, exactly as sent (not decoded).
    public let bytes: [UInt8]
}

/// What a finished command produced.
public struct CommandResult: Sendable {
    /// Everything written to stdout, as bytes.
    public var stdout: [UInt8]
    /// Everything written to stderr, as bytes.
    public var stderr: [UInt8]
    /// The exit status, when the command exited normally.
    public var exitStatus: Int32?
    /// The signal name (e.g. `TERM`, `KILL`) when the command was killed by one.
    public var exitSignal: String?
    /// True when the command ran past its timeout and was ended.
    public var timedOut: Bool
    /// Wall time from sending the command to its channel closing.
    public var duration: Duration
    /// True when the command ran on a channel opened ahead of it (after the previous command
    /// on the connection ended) rather than one opened for it.
    public var openedAhead: Bool = false

    /// stdout decoded as UTF-8, with invalid bytes replaced.
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    /// stderr decoded as UTF-8, with invalid bytes replaced.
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// Reused by every read on a loop thread.


/// The marker the timeout wrapper prints first on stderr: the remote process group id.
private let groupMarker: [UInt8] = Array("\u{1E}RBPGID ".utf8)

/// Runs one command on an exec channel: stdin in, stdout and stderr read separately and
/// together (so neither can stall the other), exit status or signal out.
final class ExecOperation: LoopOperation {
    private enum State { case opening, starting, running, closing, waitingClosed, freeing, done }

    private let loopState: LoopState
    private let command: [UInt8]
    private let stdin: [UInt8]
    private let onOutput: (@Sendable (OutputChunk) -> Void)?
    private var completion: (@Sendable (Result<CommandResult, SSHError>) -> Void)?
    private let tracksGroup: Bool
    /// When set, the command waits for it after the channel is open.
    private let gate: ExecGate?

    private var state = State.opening
    private var channel: OpaquePointer?
    /// The channel is the session's spare (see `LoopState.prepareSpareChannel`).
    private var openedAhead = false
    private var stdinOffset = 0
    private var eofSent = false
    private var stdout: [UInt8] = []
    private var stderr: [UInt8] = []
    private var markerBuffer: [UInt8]? = nil
    private var processGroup: Int?
    private var timedOut = false
    private var cancelled = false
    private var forced = false
    private var exitStatus: Int32?
    private var exitSignal: String?
    private let started = ContinuousClock.now
    /// The id under which the loop can cancel this command.
    var token: Int?
    private var error: SSHError?

    /// - Parameters:
    ///   - timeout: when set, the command is wrapped so its remote process group is known, and
    ///     at the deadline that group is sent TERM (then KILL) through a second channel.
    init(loopState: LoopState, session: SessionState, command: String, stdin: [UInt8], timeout: Duration?,
         onOutput: (@Sendable (OutputChunk) -> Void)?, completion: (@Sendable (Result<CommandResult, SSHError>) -> Void)?,
         gate: ExecGate? = nil) {
        self.loopState = loopState
        self.gate = gate
        self.stdin = stdin
        self.onOutput = onOutput
        self.completion = completion
        self.tracksGroup = timeout != nil
        if timeout != nil {
            // sshd runs the command through the login shell after setsid(), so that shell's pid is
            // the process group of everything the command starts.
            self.command = Array("printf '\\036RBPGID %d\\n' \"$$\" >&2; ".utf8) + Array(command.utf8)
            self.markerBuffer = []
        } else {
            self.command = Array(command.utf8)
        }
        super.init(session: session)
        if let timeout { deadline = started + timeout }
    }

    /// Ends the command early: the remote process group is killed and the caller gets `.cancelled`.
    func cancel() {
        guard state != .done else { return }
        cancelled = true
        deadline = .now
    }

    override func advance(now: ContinuousClock.Instant) -> Advance {
        guard let raw = session.raw else {
            fail(session.failure ?? SSHError(.closed, "the connection to \(session.label) is closed"))
            return .finished
        }
        if let deadline, now >= deadline { handleDeadline(now: now) }
        var progressed = false
        while true {
            switch state {
            case .opening:
                if cancelled { finish(); return .finished }
                if let spare = session.spareChannel {
                    session.spareChannel = nil
                    channel = spare
                    openedAhead = true
                    state = .starting
                    progressed = true
                    continue
                }
                guard session.acquireOpenLock(self) else { return .blocked([]) }
                guard let ch = rb_channel_open_session(raw) else {
                    if wouldBlock(raw) { return .blocked([.session(session)]) }
                    session.releaseOpenLock(self)
                    error = .libssh2(.channel, "cannot open a channel to \(session.label) (sshd MaxSessions may be too low)", session: raw)
                    finish()
                    return .finished
                }
                session.releaseOpenLock(self)
                channel = ch
                state = .starting
                progressed = true
            case .starting:
                switch gate?.state {
                case .waiting?:
                    return progressed ? .progressed : .blocked([])
                case .cancelled?:
                    cancelled = true
                    state = .closing
                    progressed = true
                    continue
                case .open?, nil:
                    break
                }
                let rc = command.withUnsafeBufferPointer { buf in
                    buf.withMemoryRebound(to: CChar.self) { rb_channel_exec(channel, $0.baseAddress, UInt32(buf.count)) }
                }
                switch call(rc) {
                case .again: return .blocked([.session(session)])
                case .failed where openedAhead:
                    // The spare channel went bad while it waited: drop it, open a fresh one.
                    if call(libssh2_channel_free(channel)).isAgain { return .blocked([.session(session)]) }
                    channel = nil
                    openedAhead = false
                    state = .opening
                case .failed:
                    error = .libssh2(.channel, "\(session.label) refused to run the command", session: raw)
                    state = .freeing
                case .ok:
                    state = .running
                }
                progressed = true
            case .running:
                switch pump(raw) {
                case .failed:
                    error = .libssh2(.disconnected, "reading command output from \(session.label) failed", session: raw)
                    state = .freeing
                    progressed = true
                case .again(let moved):
                    if moved { return .progressed }
                    return progressed ? .progressed : .blocked([.session(session)])
                case .eof:
                    state = .closing
                    progressed = true
                }
            case .closing:
                switch call(libssh2_channel_close(channel)) {
                case .again: return .blocked([.session(session)])
                default: state = forced ? .freeing : .waitingClosed
                }
                progressed = true
            case .waitingClosed:
                switch call(libssh2_channel_wait_closed(channel)) {
                case .again: return .blocked([.session(session)])
                default: collectExit(raw)
                }
                state = .freeing
                progressed = true
            case .freeing:
                if let ch = channel {
                    if call(libssh2_channel_free(ch)).isAgain { return .blocked([.session(session)]) }
                    channel = nil
                }
                finish()
                return .finished
            case .done:
                return .finished
            }
        }
    }

    private enum PumpResult { case again(moved: Bool), eof, failed }

    /// Moves stdin out and stdout/stderr in until every direction would block.
    private func pump(_ raw: OpaquePointer) -> PumpResult {
        var moved = false
        for stream: Int32 in [0, 1] {
            while true {
                let n = loopState.readBuffer.withUnsafeMutableBufferPointer { buf in
                    buf.withMemoryRebound(to: CChar.self) { libssh2_channel_read_ex(channel, stream, $0.baseAddress, $0.count) }
                }
                if n > 0 {
                    deliver(stream: stream, count: Int(n))
                    moved = true
                    continue
                }
                if n < 0 && Int32(n) != RB_ERROR_EAGAIN { return .failed }
                break
            }
        }
        if stdinOffset < stdin.count {
            let n = stdin.withUnsafeBufferPointer { buf in
                buf.withMemoryRebound(to: CChar.self) {
                    libssh2_channel_write_ex(channel, 0, $0.baseAddress! + stdinOffset, $0.count - stdinOffset)
                }
            }
            if n > 0 {
                stdinOffset += Int(n)
                moved = true
            } else if n < 0 && Int32(n) != RB_ERROR_EAGAIN {
                stdinOffset = stdin.count  // the command closed its stdin; stop feeding it
            }
        }
        if stdinOffset >= stdin.count && !eofSent {
            let rc = libssh2_channel_send_eof(channel)
            if rc != RB_ERROR_EAGAIN { eofSent = true; moved = true }
        }
        if !moved && libssh2_channel_eof(channel) != 0 { return .eof }
        return .again(moved: moved)
    }

    private func deliver(stream: Int32, count: Int) {
        let bytes = Array(loopState.readBuffer[0..<count])
        if stream == 0 {
            stdout += bytes
            onOutput?(OutputChunk(stream: .stdout, bytes: bytes))
            return
        }
        guard var pending = markerBuffer else {
            stderr += bytes
            onOutput?(OutputChunk(stream: .stderr, bytes: bytes))
            return
        }
        pending += bytes
        guard let newline = pending.firstIndex(of: 10) else {
            if pending.count > groupMarker.count + 24 || !pending.starts(with: groupMarker.prefix(pending.count)) {
                markerBuffer = nil
                stderr += pending
                onOutput?(OutputChunk(stream: .stderr, bytes: pending))
            } else {
                markerBuffer = pending
            }
            return
        }
        markerBuffer = nil
        var rest = Array(pending[(newline + 1)...])
        if pending.starts(with: groupMarker) {
            processGroup = Int(String(decoding: pending[groupMarker.count..<newline], as: UTF8.self))
        } else {
            rest = pending
        }
        if !rest.isEmpty {
            stderr += rest
            onOutput?(OutputChunk(stream: .stderr, bytes: rest))
        }
        if timedOut, let group = processGroup { startKill(group) }
    }

    private func handleDeadline(now: ContinuousClock.Instant) {
        if !timedOut {
            timedOut = true
            if let group = processGroup {
                startKill(group)
                deadline = now + .seconds(5)
            } else if state == .running || state == .starting {
                deadline = now + .seconds(2)  // the marker may still be on its way
            } else {
                deadline = now + .milliseconds(1)
            }
            return
        }
        // The process group did not go away (or never reported itself): drop the channel.
        if !forced, state == .running || state == .starting {
            forced = true
            state = .closing
        } else if forced {
            state = .freeing
        }
        deadline = now + .seconds(2)
    }

    private var killStarted = false
    private func startKill(_ group: Int) {
        guard !killStarted, state == .running else { return }
        killStarted = true
        let script = "kill -TERM -- -\(group) 2>/dev/null; i=0; while kill -0 -- -\(group) 2>/dev/null; do i=$((i+1)); if [ $i -gt 30 ]; then kill -KILL -- -\(group) 2>/dev/null; break; fi; sleep 0.1; done; true"
        loopState.start(ExecOperation(loopState: loopState, session: session, command: script, stdin: [], timeout: nil, onOutput: nil, completion: nil))
    }

    private func collectExit(_ raw: OpaquePointer) {
        var signal: UnsafeMutablePointer<CChar>? = nil
        var signalLength = 0
        _ = libssh2_channel_get_exit_signal(channel, &signal, &signalLength, nil, nil, nil, nil)
        if let signal {
            exitSignal = String(decoding: UnsafeRawBufferPointer(start: signal, count: signalLength), as: UTF8.self)
            libssh2_free(raw, signal)
        } else {
            exitStatus = libssh2_channel_get_exit_status(channel)
        }
    }

    private func finish() {
        state = .done
        session.releaseOpenLock(self)
        loopState.prepareSpareChannel(for: session)
        guard let completion else { return }
        self.completion = nil
        if cancelled {
            completion(.failure(SSHError(.cancelled, "the command on \(session.label) was cancelled")))
        } else if let error, !timedOut {
            completion(.failure(error))
        } else {
            if let pending = markerBuffer { stderr += pending }
            completion(.success(CommandResult(
                stdout: stdout, stderr: stderr, exitStatus: exitStatus, exitSignal: exitSignal,
                timedOut: timedOut, duration: .now - started, openedAhead: openedAhead)))
        }
    }

    override func fail(_ error: SSHError) {
        self.error = error
        channel = nil
        state = .done
        guard let completion else { return }
        self.completion = nil
        completion(.failure(error))
    }
}

extension CallResult {
    var isAgain: Bool { if case .again = self { return true } else { return false } }
}

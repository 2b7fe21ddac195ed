import CLibSSH2
#if canImport(Glibc)
import Glibc
#endif

/// Carries a session to a further host through a jump host: a `direct-tcpip` channel on the
/// jump host's session, pumped to and from one end of a socketpair whose other end is the
/// further session's socket. Runs on the jump host's session, on the same loop.
final class JumpPumpOperation: LoopOperation {
    private let loopState: LoopState
    private let destinationHost: String
    private let destinationPort: Int
    private let fd: Int32
    private let inner: SessionState
    private var channel: OpaquePointer?
    private var toSocket: [UInt8] = []
    private var toChannel: [UInt8] = []
    private var socketClosed = false
    private var done = false
    private static let bufferLimit = 256 * 1024

    init(loopState: LoopState, session: SessionState, host: String, port: Int, fd: Int32, inner: SessionState) {
        self.loopState = loopState
        self.destinationHost = host
        self.destinationPort = port
        self.fd = fd
        self.inner = inner
        super.init(session: session)
    }

    override func advance(now: ContinuousClock.Instant) -> Advance {
        guard !done else { return .finished }
        guard let raw = session.raw else {
            // The session (and the channel with it) is gone: only our socket end is left.
            channel = nil
            return shutdown()
        }
        if channel == nil {
            guard session.acquireOpenLock(self) else { return .blocked([]) }
            guard let ch = rb_channel_direct_tcpip(raw, destinationHost, Int32(destinationPort)) else {
                if wouldBlock(raw) { return .blocked([.session(session)]) }
                session.releaseOpenLock(self)
                let error = SSHError.libssh2(.connect,
                    "the jump host \(session.label) could not open a connection to \(destinationHost):\(destinationPort)", session: raw)
                loopState.failSession(inner, error)
                return shutdown()
            }
            session.releaseOpenLock(self)
            channel = ch
        }
        var moved = false
        // Channel → socket.
        while toSocket.count < Self.bufferLimit {
            let n = loopState.readBuffer.withUnsafeMutableBufferPointer { buf in
                buf.withMemoryRebound(to: CChar.self) { libssh2_channel_read_ex(channel, 0, $0.baseAddress, $0.count) }
            }
            if n > 0 {
                toSocket += loopState.readBuffer[0..<Int(n)]
                moved = true
            } else if n == 0 || Int32(n) == RB_ERROR_EAGAIN {
                break
            } else {
                loopState.failSession(inner, .libssh2(.disconnected, "the tunnel through \(session.label) broke", session: raw))
                return shutdown()
            }
        }
        if !toSocket.isEmpty {
            let n = toSocket.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                toSocket.removeFirst(n)
                moved = true
            }
        }
        // Socket → channel.
        if !socketClosed && toChannel.count < Self.bufferLimit {
            let n = loopState.readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                toChannel += loopState.readBuffer[0..<n]
                moved = true
            } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                socketClosed = true
                moved = true
            }
        }
        if !toChannel.isEmpty {
            let n = toChannel.withUnsafeBufferPointer { buf in
                buf.withMemoryRebound(to: CChar.self) { libssh2_channel_write_ex(channel, 0, $0.baseAddress, $0.count) }
            }
            if n > 0 {
                toChannel.removeFirst(Int(n))
                moved = true
            } else if n < 0 && Int32(n) != RB_ERROR_EAGAIN {
                socketClosed = true
                toChannel.removeAll()
            }
        }
        if socketClosed && toChannel.isEmpty { return shutdown() }
        if libssh2_channel_eof(channel) != 0 && toSocket.isEmpty {
            // The far side hung up: let the inner session see end of file.
            return shutdown()
        }
        if moved { return .progressed }
        var events = Int16(0)
        if !socketClosed && toChannel.count < Self.bufferLimit { events |= Int16(POLLIN) }
        if !toSocket.isEmpty { events |= Int16(POLLOUT) }
        return .blocked([.session(session), .descriptor(fd, events)])
    }

    private func shutdown() -> Advance {
        done = true
        session.releaseOpenLock(self)
        if let channel {
            // Best effort: the channel is freed with the session if this would block.
            _ = libssh2_channel_close(channel)
            _ = libssh2_channel_free(channel)
            self.channel = nil
        }
        close(fd)
        return .finished
    }

    override func fail(_ error: SSHError) {
        guard !done else { return }
        done = true
        channel = nil
        close(fd)
        loopState.failSession(inner, SSHError(.disconnected, "the jump host \(session.label) failed: \(error.message)"))
    }
}

/// Closes a session politely: SFTP shutdown, disconnect message, free, close the socket.
final class CloseOperation: LoopOperation {
    private let loopState: LoopState
    private var continuation: CheckedContinuation<Void, Never>?
    private var step = 0
    private var detached = false

    init(loopState: LoopState, session: SessionState, continuation: CheckedContinuation<Void, Never>?) {
        self.loopState = loopState
        self.continuation = continuation
        super.init(session: session)
        deadline = .now + .seconds(2)
    }

    override func advance(now: ContinuousClock.Instant) -> Advance {
        guard let raw = session.raw else { return finish() }
        if !detached {
            detached = true
            session.closing = true
            loopState.detachOperations(of: session, except: self,
                                       error: SSHError(.closed, "the connection to \(session.label) was closed"))
        }
        if let deadline, now >= deadline { return finish() }
        while true {
            switch step {
            case 0:
                // The spare channel's CLOSE goes out now and is not waited for: its answer comes
                // back while SFTP shuts down, and the session frees the channel at the end.
                if let spare = session.spareChannel {
                    if call(libssh2_channel_close(spare)).isAgain,
                       libssh2_session_block_directions(raw) & RB_BLOCK_OUTBOUND != 0 {
                        return .blocked([.session(session)])
                    }
                    session.spareChannel = nil
                }
                if let sftp = session.sftp {
                    if call(libssh2_sftp_shutdown(sftp)).isAgain { return .blocked([.session(session)]) }
                    session.sftp = nil
                }
                step = 1
            case 1:
                if call(rb_session_disconnect(raw, "closed by runbook")).isAgain { return .blocked([.session(session)]) }
                step = 2
            default:
                if call(rb_session_free(raw)).isAgain { return .blocked([.session(session)]) }
                session.raw = nil
                return finish()
            }
        }
    }

    private func finish() -> Advance {
        session.abandon()
        session.failure = session.failure ?? SSHError(.closed, "the connection to \(session.label) is closed")
        loopState.removeSession(session)
        continuation?.resume()
        continuation = nil
        return .finished
    }

    override func fail(_ error: SSHError) {
        loopState.removeSession(session)
        continuation?.resume()
        continuation = nil
    }
}

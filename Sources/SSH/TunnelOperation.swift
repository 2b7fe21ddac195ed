import CLibSSH2
#if canImport(Glibc)
import Glibc
#endif

/// What came back through a tunnel.
public enum TunnelReply: Sendable, Equatable {
    /// The host could not connect to the destination (refused, unreachable).
    case refused(String)
    /// The bytes the destination sent until it closed the connection (or the deadline passed).
    case data([UInt8], complete: Bool)
}

/// One TCP exchange made from the remote host (`direct-tcpip`, as `ssh -L` does): connect to
/// host:port there, send bytes, read until the peer closes or the deadline passes. Lets a
/// health check start on the host without curl on it.
final class TunnelExchangeOperation: LoopOperation {
    private enum State { case opening, exchanging, closing, done }
    private let loopState: LoopState
    private let destination: String
    private let port: Int
    private let payload: [UInt8]
    private var continuation: CheckedContinuation<TunnelReply, any Error>?
    private var state = State.opening
    private var channel: OpaquePointer?
    private var written = 0
    private var received: [UInt8] = []
    private var complete = false

    init(loopState: LoopState, session: SessionState, host: String, port: Int, send: [UInt8], timeout: Duration,
         continuation: CheckedContinuation<TunnelReply, any Error>) {
        self.loopState = loopState
        self.destination = host
        self.port = port
        self.payload = send
        self.continuation = continuation
        super.init(session: session)
        deadline = .now + timeout
    }

    override func advance(now: ContinuousClock.Instant) -> Advance {
        guard let raw = session.raw else {
            fail(session.failure ?? SSHError(.closed, "the connection to \(session.label) is closed"))
            return .finished
        }
        if let deadline, now >= deadline, state == .opening || state == .exchanging {
            if state == .opening {
                session.releaseOpenLock(self)
                return finish(.refused("timed out connecting to \(destination):\(port) from \(session.label)"))
            }
            state = .closing
        }
        while true {
            switch state {
            case .opening:
                guard session.acquireOpenLock(self) else { return .blocked([]) }
                guard let ch = rb_channel_direct_tcpip(raw, destination, Int32(port)) else {
                    if wouldBlock(raw) { return .blocked([.session(session)]) }
                    session.releaseOpenLock(self)
                    let (_, text) = lastError(raw)
                    return finish(.refused("\(session.label) could not connect to \(destination):\(port): \(text)"))
                }
                session.releaseOpenLock(self)
                channel = ch
                state = .exchanging
            case .exchanging:
                var moved = false
                if written < payload.count {
                    let n = payload.withUnsafeBufferPointer { buf in
                        buf.withMemoryRebound(to: CChar.self) { libssh2_channel_write_ex(channel, 0, $0.baseAddress! + written, $0.count - written) }
                    }
                    if n > 0 { written += Int(n); moved = true }
                    else if n < 0 && Int32(n) != RB_ERROR_EAGAIN { state = .closing; continue }
                }
                var ended = false
                while true {
                    let n = loopState.readBuffer.withUnsafeMutableBufferPointer { buf in
                        buf.withMemoryRebound(to: CChar.self) { libssh2_channel_read_ex(channel, 0, $0.baseAddress, $0.count) }
                    }
                    if n > 0 {
                        received += loopState.readBuffer[0..<Int(n)]
                        moved = true
                        continue
                    }
                    // 0 is the end of the stream: the peer sent EOF, or closed the channel
                    // without one (sshd does that when the destination hangs up).
                    ended = n == 0
                    break
                }
                if ended || libssh2_channel_eof(channel) != 0 {
                    complete = true
                    state = .closing
                    continue
                }
                return moved ? .progressed : .blocked([.session(session)])
            case .closing:
                if let ch = channel {
                    _ = libssh2_channel_close(ch)
                    if call(libssh2_channel_free(ch)).isAgain { return .blocked([.session(session)]) }
                    channel = nil
                }
                return finish(.data(received, complete: complete))
            case .done:
                return .finished
            }
        }
    }

    private func finish(_ reply: TunnelReply) -> Advance {
        state = .done
        continuation?.resume(returning: reply)
        continuation = nil
        return .finished
    }

    override func fail(_ error: SSHError) {
        state = .done
        channel = nil
        continuation?.resume(throwing: error)
        continuation = nil
    }
}

extension SSHConnection {
    /// Connects from the remote host to `host:port` (e.g. `127.0.0.1:5000` on that host),
    /// sends `send`, and returns what comes back until the peer closes or `timeout` passes.
    public func exchange(host: String, port: Int, send: [UInt8], timeout: Duration) async throws -> TunnelReply {
        try await submit { state, session, continuation in
            TunnelExchangeOperation(loopState: state, session: session, host: host, port: port, send: send,
                                    timeout: timeout, continuation: continuation)
        }
    }
}

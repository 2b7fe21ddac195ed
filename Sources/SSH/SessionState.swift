import CLibSSH2
#if canImport(Glibc)
import Glibc
#endif

/// One libssh2 session and the per-session state its operations share. Loop-confined.
final class SessionState {
    /// The loop-local id, used by `SSHConnection` to find this session.
    let id: Int
    /// `user@host:port`, for messages.
    let label: String
    /// The libssh2 session handle (nil once freed).
    var raw: OpaquePointer?
    /// The socket (a TCP socket, or a socketpair end when reached through a jump host).
    var fd: Int32 = -1
    /// Set when the session died; every later operation fails with it.
    var failure: SSHError?
    /// Operations currently running on this session.
    var activeOperations = 0
    /// libssh2 keeps one state machine per session for opening channels and starting SFTP, so
    /// only one operation may be opening at a time: this is the one that is.
    var openLockHolder: ObjectIdentifier?
    /// A session channel opened ahead of need (after a command ended), for the next command:
    /// its open round trip then overlaps whatever the caller does between two commands.
    var spareChannel: OpaquePointer?
    /// Set while the spare channel is being opened.
    var spareOpening = false
    /// Set once the session is being closed: no spare channel is opened any more.
    var closing = false
    /// The SFTP subsystem, started on first use.
    var sftp: OpaquePointer?
    /// SFTP requests share per-SFTP state in libssh2: they run one at a time, in arrival order.
    var sftpQueue: [ObjectIdentifier] = []
    /// Sessions reached through this one (jump hosts); they die with it.
    var dependents: [SessionState] = []

    /// Seconds between keepalives while busy (0: off).
    var keepaliveInterval: Int = 0
    /// Missed keepalive rounds before the peer is declared dead.
    var keepaliveCountMax: Int = 3
    /// When bytes last arrived from the peer.
    var lastInbound: ContinuousClock.Instant = .now
    private var nextKeepalive: ContinuousClock.Instant?

    init(id: Int, label: String) {
        self.id = id
        self.label = label
    }

    /// Seconds of silence after which the peer counts as dead.
    var silenceLimit: Int { keepaliveInterval * keepaliveCountMax }

    /// When the peer counts as dead unless something arrives.
    var deadAfter: ContinuousClock.Instant? {
        guard keepaliveInterval > 0, raw != nil else { return nil }
        return lastInbound + .seconds(silenceLimit) + .milliseconds(500)
    }

    /// Called when the first operation starts after an idle period.
    func becameBusy(now: ContinuousClock.Instant) {
        lastInbound = now
        nextKeepalive = keepaliveInterval > 0 ? now + .seconds(keepaliveInterval) : nil
    }

    /// Sends a keepalive when one is due; returns when the next is due.
    func keepaliveTick(now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        guard keepaliveInterval > 0, let raw else { return nil }
        // Keepalives configured while the session was already busy (by its own connection)
        // start now: without them an idle wait would read as a dead peer.
        guard let due = nextKeepalive else {
            nextKeepalive = now + .seconds(keepaliveInterval)
            lastInbound = max(lastInbound, now)
            return nextKeepalive
        }
        if now >= due {
            var seconds: Int32 = 0
            _ = libssh2_keepalive_send(raw, &seconds)
            nextKeepalive = now + .seconds(max(1, Int(seconds)))
        }
        return nextKeepalive
    }

    /// Takes the open lock for `op` if free; true when `op` holds it.
    func acquireOpenLock(_ op: AnyObject) -> Bool {
        let id = ObjectIdentifier(op)
        if openLockHolder == nil { openLockHolder = id }
        return openLockHolder == id
    }

    /// Releases the open lock if `op` holds it.
    func releaseOpenLock(_ op: AnyObject) {
        if openLockHolder == ObjectIdentifier(op) { openLockHolder = nil }
    }

    /// Drops the handles of a dead session without talking to the peer.
    func abandon() {
        sftp = nil
        spareChannel = nil  // freed with the session
        if let raw {
            libssh2_session_set_blocking(raw, 0)
            _ = rb_session_free(raw)
            self.raw = nil
        }
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }
}

/// Calls a libssh2 function that returns an int, mapping EAGAIN.
enum CallResult {
    case ok(Int32)
    case again
    case failed(Int32)
}

@inline(__always)
func call(_ rc: Int32) -> CallResult {
    if rc == RB_ERROR_EAGAIN { return .again }
    if rc < 0 { return .failed(rc) }
    return .ok(rc)
}

/// True when a libssh2 call that returned NULL did so only because it would block.
@inline(__always)
func wouldBlock(_ session: OpaquePointer?) -> Bool {
    guard let session else { return false }
    return libssh2_session_last_errno(session) == RB_ERROR_EAGAIN
}

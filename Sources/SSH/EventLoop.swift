import CLibSSH2
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Calls `libssh2_init` once per process.
let libssh2Initialized: Bool = { libssh2_init(0) == 0 }()

/// A thread that owns libssh2 sessions and drives every operation on them without blocking.
///
/// libssh2 handles are not thread-safe, so each session lives on exactly one loop and is only
/// touched from that loop's thread. Work arrives as jobs through a locked inbox; a pipe wakes the
/// thread from `poll(2)`. Results leave through continuations as Sendable values.
///
/// A loop is also a `TaskExecutor`: a task that prefers it runs on the loop's thread between
/// rounds of I/O, so a caller working through one host's commands one after another hands each
/// command to the loop and gets its result back without waking another thread.
final class EventLoop: TaskExecutor, Sendable {
    private let inbox = Mutex<[@Sendable (LoopState) -> Void]>([])
    private let wakeRead: Int32
    private let wakeWrite: Int32
    /// The loop's thread, once it runs.
    private let thread = Mutex<pthread_t?>(nil)

    init(name: String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { fatalError("pipe failed: \(errno)") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        let readFD = fds[0]
        // Only loop threads use libssh2, so the first one to start initialises it (OpenSSL's
        // set-up, most of a millisecond) rather than the thread that made the group, which
        // has the arguments to parse and the project to load.
        let worker = Thread { [self] in
            self.thread.withLock { $0 = pthread_self() }
            // Named for ps, top -H and perf (Foundation leaves the creating thread's name).
            rb_name_this_thread(name)
            _ = libssh2Initialized
            LoopState(loop: self, wakeFD: readFD).run()
        }
        worker.name = name
        worker.stackSize = 1 << 20
        worker.start()
    }

    /// True on the loop's own thread.
    private var onLoopThread: Bool {
        thread.withLock { $0.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Runs `job` on the loop's thread. From that thread itself the job runs before the loop
    /// next polls, so the loop is not woken.
    func execute(_ job: @escaping @Sendable (LoopState) -> Void) {
        inbox.withLock { $0.append(job) }
        guard !onLoopThread else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// Runs a job of a task that prefers this loop (`withTaskExecutorPreference`).
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        execute { [self] _ in job.runSynchronously(on: asUnownedTaskExecutor()) }
    }

    /// Takes every queued job.
    func drain() -> [@Sendable (LoopState) -> Void] {
        inbox.withLock { jobs in
            defer { jobs.removeAll(keepingCapacity: true) }
            return jobs
        }
    }
}

/// A fixed set of event loops shared by all connections; sessions are spread round-robin.
final class EventLoopGroup: Sendable {
    /// The process-wide group, sized to the machine (at least two loops, at most eight).
    static let shared = EventLoopGroup(count: min(8, max(2, ProcessInfo.processInfo.activeProcessorCount)))

    private let loops: [EventLoop]
    private let counter = Mutex(0)

    init(count: Int) {
        loops = (0..<count).map { EventLoop(name: "ssh-loop-\($0)") }
    }

    /// Starts the loops and, on each loop's thread, does once what a process's first
    /// connection would otherwise do on its critical path: OpenSSL's and libssh2's set-up
    /// (a session made and freed) and a known_hosts line parsed. Returns at once; the work
    /// overlaps whatever the caller does next (loading a project), on another core.
    static func warmUp() {
        for loop in shared.loops {
            loop.execute { _ in
                if let raw = rb_session_init() { libssh2_session_free(raw) }
                _ = KnownHostsFile.parse("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
                                         path: "-")
            }
        }
    }

    /// The loop for the next new session.
    func next() -> EventLoop {
        let index = counter.withLock { value in
            defer { value &+= 1 }
            return value
        }
        return loops[index % loops.count]
    }
}

/// What a blocked operation waits for.
enum PollInterest {
    /// The session's socket, in the directions libssh2 reports it is blocked on.
    case session(SessionState)
    /// A plain descriptor (a connecting socket, a jump pump's socketpair end).
    case descriptor(Int32, Int16)
}

/// The result of advancing an operation.
enum Advance {
    /// The operation finished (successfully or not) and can be dropped.
    case finished
    /// It did something; advance everything again before polling.
    case progressed
    /// It can go no further until one of these is ready (empty: until another operation moves).
    case blocked([PollInterest])
}

/// A state machine driven by the loop. Subclasses override `advance` and `fail`.
class LoopOperation {
    /// The session the operation runs on.
    let session: SessionState
    /// When the operation must give up (checked by the operation itself in `advance`).
    var deadline: ContinuousClock.Instant?

    init(session: SessionState) {
        self.session = session
    }

    /// Does as much as possible without blocking.
    func advance(now: ContinuousClock.Instant) -> Advance { .finished }

    /// Ends the operation with an error (the session died); must resume any waiter.
    func fail(_ error: SSHError) {}
}

/// Opens the spare channel of `prepareSpareChannel`.
final class SpareChannelOperation: LoopOperation {
    private var ended = false

    override func advance(now: ContinuousClock.Instant) -> Advance {
        guard !ended else { return .finished }
        guard let raw = session.raw, !session.closing else { return done(nil) }
        guard session.acquireOpenLock(self) else { return .blocked([]) }
        guard let channel = rb_channel_open_session(raw) else {
            if wouldBlock(raw) { return .blocked([.session(session)]) }
            return done(nil)
        }
        return done(channel)
    }

    private func done(_ channel: OpaquePointer?) -> Advance {
        ended = true
        session.releaseOpenLock(self)
        session.spareOpening = false
        session.spareChannel = channel
        return .finished
    }

    override func fail(_ error: SSHError) {
        ended = true
        session.releaseOpenLock(self)
        session.spareOpening = false
    }
}

/// The loop thread's private state: sessions and the operations running on them.
final class LoopState {
    unowned let loop: EventLoop
    let wakeFD: Int32
    private(set) var sessions: [Int: SessionState] = [:]
    private var operations: [LoopOperation] = []
    private var nextSessionID = 1
    /// Scratch space for channel and SFTP reads on this thread.
    var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    init(loop: EventLoop, wakeFD: Int32) {
        self.loop = loop
        self.wakeFD = wakeFD
    }

    /// Registers a new session on this loop.
    func addSession(_ make: (Int) -> SessionState) -> SessionState {
        let id = nextSessionID
        nextSessionID += 1
        let session = make(id)
        sessions[id] = session
        return session
    }

    /// Forgets a session (after it was freed).
    func removeSession(_ session: SessionState) {
        sessions[session.id] = nil
    }

    private var cancellable: [Int: ExecOperation] = [:]

    /// Remembers a command so `cancel(token:)` can end it.
    func register(_ op: ExecOperation, token: Int) {
        op.token = token
        cancellable[token] = op
    }

    /// Ends a running command early (its task was cancelled).
    func cancel(token: Int) {
        cancellable[token]?.cancel()
    }

    /// Starts an operation; it is advanced before the next poll.
    func start(_ operation: LoopOperation) {
        if let failure = operation.session.failure {
            operation.fail(failure)
            return
        }
        operation.session.activeOperations += 1
        if operation.session.activeOperations == 1 {
            operation.session.becameBusy(now: .now)
        }
        operations.append(operation)
    }

    /// Opens a session channel on `session` for its next command, unless one is ready or on
    /// its way, or the session is closing or dead. Commands run one after another on a host
    /// then find their channel open: the round trip of opening it is no longer between two
    /// steps. A refused open (sshd's MaxSessions) is not an error; the next command opens its own.
    func prepareSpareChannel(for session: SessionState) {
        guard session.spareChannel == nil, !session.spareOpening, !session.closing,
              session.failure == nil, session.raw != nil else { return }
        session.spareOpening = true
        let operation = SpareChannelOperation(session: session)
        start(operation)
        // The request goes out now, not after whatever the ended command's caller does next.
        _ = operation.advance(now: .now)
    }

    /// Ends every operation on `session` except `keep` with `error`, before the session is
    /// freed: their channels are freed with it, so they must not touch them afterwards.
    func detachOperations(of session: SessionState, except keep: LoopOperation, error: SSHError) {
        let others = operations.filter { $0.session === session && $0 !== keep }
        guard !others.isEmpty else { return }
        operations.removeAll { $0.session === session && $0 !== keep }
        session.activeOperations -= others.count
        for op in others {
            forget(op)
            op.fail(error)
        }
    }

    /// Fails every operation of a session and marks it dead.
    func failSession(_ session: SessionState, _ error: SSHError) {
        guard session.failure == nil else { return }
        session.failure = error
        let victims = operations.filter { $0.session === session }
        operations.removeAll { $0.session === session }
        session.activeOperations = 0
        for op in victims {
            forget(op)
            op.fail(error)
        }
        session.abandon()
        for dependent in session.dependents {
            failSession(dependent, SSHError(.disconnected, "the jump host \(session.label) failed: \(error.message)"))
        }
    }

    private func forget(_ op: LoopOperation) {
        if let exec = op as? ExecOperation, let token = exec.token { cancellable[token] = nil }
    }

    func run() {
        var pollSet: [pollfd] = []
        var owners: [SessionState?] = []
        while true {
            for job in loop.drain() { job(self) }
            let now = ContinuousClock.now
            var interests: [PollInterest] = []
            var progressed = true
            while progressed {
                progressed = false
                interests.removeAll(keepingCapacity: true)
                // Advancing one operation may start or end others (closing a session ends
                // its operations, a failed jump ends the sessions behind it): work on a
                // snapshot and remove by identity.
                for op in operations {
                    guard operations.contains(where: { $0 === op }) else { continue }
                    switch op.advance(now: now) {
                    case .finished:
                        if let index = operations.firstIndex(where: { $0 === op }) {
                            operations.remove(at: index)
                            forget(op)
                            op.session.activeOperations -= 1
                        }
                        progressed = true
                    case .progressed:
                        progressed = true
                    case .blocked(let wants):
                        interests.append(contentsOf: wants)
                    }
                }
                // Jobs that arrived meanwhile (a cancel, a new command) join this round.
                let more = loop.drain()
                if !more.isEmpty {
                    for job in more { job(self) }
                    progressed = true
                }
            }

            // Keepalives and dead-peer detection for busy sessions.
            var wakeAt: ContinuousClock.Instant? = nil
            func earliest(_ t: ContinuousClock.Instant?) {
                guard let t else { return }
                if wakeAt == nil || t < wakeAt! { wakeAt = t }
            }
            for session in sessions.values where session.activeOperations > 0 && session.failure == nil {
                // Silence counts only while an operation waits on the peer. One held back by
                // its gate reads nothing, so the peer's answers to keepalives wait unread in
                // the socket: that is no sign of a dead peer.
                let waitsOnPeer = interests.contains { interest in
                    if case .session(let polled) = interest { return polled === session }
                    return false
                }
                if !waitsOnPeer { session.lastInbound = now }
                if let dead = session.deadAfter, now >= dead {
                    failSession(session, SSHError(.disconnected,
                        "no answer from \(session.label) for \(session.silenceLimit) s (keepalive every \(session.keepaliveInterval) s): the host or the network is down"))
                    continue
                }
                earliest(session.keepaliveTick(now: now))
                earliest(session.deadAfter)
            }
            for op in operations { earliest(op.deadline) }

            pollSet.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            pollSet.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            owners.append(nil)
            var seen = Set<Int32>()
            for interest in interests {
                switch interest {
                case .session(let session):
                    guard session.failure == nil, session.fd >= 0, seen.insert(session.fd).inserted else { continue }
                    var events = Int16(POLLIN)
                    if let raw = session.raw, libssh2_session_block_directions(raw) & RB_BLOCK_OUTBOUND != 0 {
                        events |= Int16(POLLOUT)
                    }
                    pollSet.append(pollfd(fd: session.fd, events: events, revents: 0))
                    owners.append(session)
                case .descriptor(let fd, let events):
                    guard fd >= 0 else { continue }
                    if let i = pollSet.firstIndex(where: { $0.fd == fd }) {
                        pollSet[i].events |= events
                    } else {
                        pollSet.append(pollfd(fd: fd, events: events, revents: 0))
                        owners.append(nil)
                        seen.insert(fd)
                    }
                }
            }
            var timeoutMS: Int32 = -1
            if let wakeAt {
                let remaining = wakeAt - ContinuousClock.now
                let ms = remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
                timeoutMS = Int32(clamping: max(0, ms + 1))
            }
            let ready = poll(&pollSet, nfds_t(pollSet.count), timeoutMS)
            guard ready > 0 else { continue }
            if pollSet[0].revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 256)
                while read(wakeFD, &buffer, buffer.count) > 0 {}
            }
            let after = ContinuousClock.now
            for (i, entry) in pollSet.enumerated() where entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                owners[i]?.lastInbound = after
            }
        }
    }
}

import Foundation
import Synchronization
import RunbookCore

/// An apply begun before the command line is fully parsed: the project is loaded and checked,
/// and the hosts' connections are opened, on other threads while the argument parser runs.
/// The caller begins it from the request the arguments most likely parse to; `Engine.apply`
/// takes it only when its own request and settings are exactly those, and otherwise closes
/// its connections unused. Nothing on a host changes before `apply` takes it: a connection
/// changes nothing, and no host lock is taken until the run has its id and the local lock.
/// Invalid input opens no connection, as in `apply` itself (the error is found again there).
public final class HeadStart: Sendable {
    let request: RunRequest
    let settings: EngineSettings
    private let launch: Task<Launch?, Never>
    private let taken = Mutex(false)

    /// Begins loading `request` with `settings` and connecting to its hosts.
    public init(_ request: RunRequest, settings: EngineSettings) {
        self.request = request
        self.settings = settings
        let engine = Engine(settings: settings, events: SilentEvents())
        // The journal is left to `apply`: opened here, it would take the pool's other thread
        // (the parser has one) just before the connections' tasks need it.
        launch = Task.detached {
            guard let prepared = try? engine.prepare(request) else { return nil }
            return engine.launch(prepared, journal: nil)
        }
    }

    /// The launch, when it was for `request` with `settings` and loaded without error; nil
    /// (its connections closed) otherwise. Taken once.
    func take(_ request: RunRequest, settings: EngineSettings) async -> Launch? {
        guard !taken.withLock({ was in defer { was = true }; return was }) else { return nil }
        guard let launch = await launch.value else { return nil }
        guard request == self.request, settings.sameRun(as: self.settings) else {
            launch.abandon()
            return nil
        }
        settings.logger.debug("the project was loaded and the hosts connected while the arguments were parsed")
        return launch
    }
}

/// The start of an apply once its input is loaded: the connections going up, each host's lock
/// waiting for the run's info, and perhaps the journal opening.
struct Launch: Sendable {
    let prepared: PreparedRun
    let connecting: Task<[String: ConnectedHost], Never>
    /// Yields the run's lock info (each host is locked as it connects), or finishes without
    /// it (no lock is taken).
    let lockInfo: AsyncStream<LockInfo>.Continuation
    /// An existing journal, opening on another thread; nil: `apply` opens it.
    let journal: Task<Result<Journal, any Error>, Never>?

    /// Takes no host lock, and closes the connections in the background as they come up (an
    /// unreachable host could take its whole connect timeout).
    func abandon() {
        lockInfo.finish()
        let connecting = connecting
        Task { await Engine.closeAll((await connecting.value).compactMapValues { try? $0.connection.get() }) }
    }
}

extension Engine {
    /// An existing journal opens on another thread while the project loads, so that its work
    /// is done before the handshakes start rather than competing with them for the CPU. A new
    /// one is only created once the input is known to be valid.
    func openJournalEarly() -> Task<Result<Journal, any Error>, Never>? {
        let journalPath = self.journalPath
        return FileManager.default.fileExists(atPath: journalPath)
            ? Task.detached { Result<Journal, any Error> { try Journal(path: journalPath) } } : nil
    }

    /// Starts connecting to every host the prepared run may touch, delegated ones included.
    /// Connecting changes nothing on a host, so it starts as soon as the input is valid and
    /// its handshakes overlap the journal and the local lock. Each host's lock is taken as
    /// soon as that host is connected and the run's info is yielded, so with many hosts the
    /// locks go on while the slowest handshakes finish. The connections are the run's critical
    /// path, so their tasks go ahead of the journal's opening and the warm-ups.
    func launch(_ prepared: PreparedRun, journal: Task<Result<Journal, any Error>, Never>?) -> Launch {
        let (lockInfo, lockInfoContinuation) = AsyncStream<LockInfo>.makeStream()
        let runInfo = Task<LockInfo?, Never> {
            for await info in lockInfo { return info }
            return nil
        }
        let connecting = Task(priority: .high) { await self.connectAndLockAll(prepared.touchedHosts, secrets: prepared.secrets, info: runInfo) }
        return Launch(prepared: prepared, connecting: connecting, lockInfo: lockInfoContinuation, journal: journal)
    }
}

extension EngineSettings {
    /// Whether a run with these settings is the same as one with `other`: the same project,
    /// state, inventory, width and log level, and both open hosts over SSH or both through an
    /// opener (closures cannot be compared; only tests give one).
    func sameRun(as other: EngineSettings) -> Bool {
        root == other.root && stateDir == other.stateDir && inventoryPath == other.inventoryPath && forks == other.forks
            && logger.logLevel == other.logger.logLevel && (opener == nil) == (other.opener == nil)
    }
}

/// Drops every event (a head start emits none; its engine needs a sink).
private struct SilentEvents: EventSink {
    func emit(_ event: RunEvent) {}
}

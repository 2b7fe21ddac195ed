import Synchronization

/// Holds a command back once its channel is open. `SSHConnection.run(…gate:)` opens the
/// channel at once, so that round trip overlaps whatever the caller does meanwhile (writing
/// its journal), and sends the command only when the gate opens. A cancelled gate closes
/// the channel with nothing run, and the run throws `SSHError.Kind.cancelled`.
public final class ExecGate: Sendable {
    enum State: Sendable { case waiting, open, cancelled }

    private let storage = Mutex<(state: State, loop: EventLoop?)>((.waiting, nil))

    public init() {}

    /// Lets the command go.
    public func open() { decide(.open) }

    /// Closes the channel instead; nothing runs.
    public func cancel() { decide(.cancelled) }

    var state: State { storage.withLock { $0.state } }

    /// The loop to wake when the gate is decided.
    func attach(_ loop: EventLoop) {
        let decided = storage.withLock { value -> Bool in
            value.loop = loop
            return value.state != .waiting
        }
        if decided { loop.execute { _ in } }
    }

    private func decide(_ new: State) {
        let loop = storage.withLock { value -> EventLoop? in
            guard value.state == .waiting else { return nil }
            value.state = new
            return value.loop
        }
        // Any job wakes the loop, which advances every operation again.
        loop?.execute { _ in }
    }
}

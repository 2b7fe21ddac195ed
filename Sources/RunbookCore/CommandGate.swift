import Synchronization

/// Holds a command back until the caller has done what must come first: the engine commits a
/// step's journal intent before the step's command may start. `Transport.run(…startingAfter:)`
/// may get ready meanwhile (over SSH it opens the command's channel, so that round trip
/// overlaps the commit) and starts the command only once the gate opens; after `cancel`
/// nothing runs.
public final class CommandGate: Sendable {
    /// Where the gate stands.
    public enum State: Sendable { case waiting, open, cancelled }

    private let storage = Mutex<(state: State, observers: [@Sendable (State) -> Void])>((.waiting, []))

    /// A closed gate.
    public init() {}

    /// Lets the command start.
    public func open() { decide(.open) }

    /// Runs nothing.
    public func cancel() { decide(.cancelled) }

    /// Where the gate stands now.
    public var state: State { storage.withLock { $0.state } }

    /// Calls `observer` once with the decision: at once when the gate is already decided.
    public func whenDecided(_ observer: @escaping @Sendable (State) -> Void) {
        let decided = storage.withLock { value -> State? in
            guard value.state == .waiting else { return value.state }
            value.observers.append(observer)
            return nil
        }
        if let decided { observer(decided) }
    }

    /// Waits for the decision.
    public func decided() async -> State {
        await withCheckedContinuation { continuation in
            whenDecided { continuation.resume(returning: $0) }
        }
    }

    private func decide(_ new: State) {
        let observers = storage.withLock { value -> [@Sendable (State) -> Void] in
            guard value.state == .waiting else { return [] }
            value.state = new
            defer { value.observers = [] }
            return value.observers
        }
        for observer in observers { observer(new) }
    }
}

import Synchronization

/// A command already handed to its transport (`Transport.start`) whose output is awaited
/// later. The engine starts a step's command, commits the step's journal intent meanwhile,
/// and then waits here: the result comes straight back to the waiting task, with no task
/// started just to wait for it.
public final class PendingCommand: Sendable {
    private enum State {
        case waiting([CheckedContinuation<Result<CommandOutput, TransportError>, Never>])
        case done(Result<CommandOutput, TransportError>)
    }

    private let state = Mutex<State>(.waiting([]))
    private let onCancel: @Sendable () -> Void

    /// A command not finished yet; `onCancel` ends it when a waiting task is cancelled.
    public init(onCancel: @escaping @Sendable () -> Void = {}) {
        self.onCancel = onCancel
    }

    /// Delivers the result: to the tasks waiting, or to the next one that asks. Only the
    /// first call counts.
    public func finish(_ result: Result<CommandOutput, TransportError>) {
        let waiting = state.withLock { state -> [CheckedContinuation<Result<CommandOutput, TransportError>, Never>] in
            guard case .waiting(let continuations) = state else { return [] }
            state = .done(result)
            return continuations
        }
        for continuation in waiting { continuation.resume(returning: result) }
    }

    /// The command's output, once it has finished.
    public func output() async throws(TransportError) -> CommandOutput {
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<CommandOutput, TransportError>, Never>) in
                let done = state.withLock { state -> Result<CommandOutput, TransportError>? in
                    switch state {
                    case .done(let result):
                        return result
                    case .waiting(let continuations):
                        state = .waiting(continuations + [continuation])
                        return nil
                    }
                }
                if let done { continuation.resume(returning: done) }
            }
        } onCancel: {
            onCancel()
        }
        return try result.get()
    }
}

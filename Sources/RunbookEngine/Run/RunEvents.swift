import RunbookCore
import RunbookSteps

/// How a step ended on a host.
public enum StepStatus: String, Sendable, Codable {
    /// It changed something.
    case changed
    /// It ran and changed nothing (a check, a no-op).
    case ok
    /// `when` was false, or `run_once` on another host.
    case skipped
    /// It failed.
    case failed
}

/// Progress of a plan, apply or rollback, for the human and JSON printers.
public enum RunEvent: Sendable {
    /// A plan was made (before confirmation).
    case planned(Plan)
    /// The run was recorded in the journal.
    case runStarted(id: String, runbook: String, hosts: [String])
    /// A step started on a host.
    case stepStarted(host: String, index: Int, total: Int, name: String)
    /// A step ended on a host.
    case stepFinished(host: String, index: Int, total: Int, name: String, status: StepStatus, duration: Duration, message: String?)
    /// A host stopped with an error.
    case hostFailed(host: String, message: String)
    /// Rollback began on a host.
    case rollbackStarted(host: String)
    /// One undo action on a host.
    case undoFinished(host: String, name: String, ok: Bool, message: String)
    /// What `runbook rollback RUN_ID --dry-run` would do; nothing was changed.
    case rollbackPreview(RollbackPreview)
    /// The run ended.
    case runFinished(id: String, status: String, exitCode: Int32, message: String)
    /// A notification was sent to a target (shown masked), or could not be.
    case notification(target: String, ok: Bool, message: String)
}

/// Receives events; the CLI prints them.
public protocol EventSink: Sendable {
    /// Handles one event (may be called from several hosts' tasks at once).
    func emit(_ event: RunEvent)
}

/// What a rollback of a run would do, host by host, in the order it would do it.
public struct RollbackPreview: Sendable, Codable {
    /// One action of the preview.
    public struct Item: Sendable, Codable {
        /// The host.
        public var host: String
        /// The step of the run it is about.
        public var step: String
        /// 1 (restore, in reverse order), 2 (service actions again) or 3 (checks again).
        public var phase: Int
        /// What would happen, for people.
        public var summary: String
        /// The commands that would run, secrets masked.
        public var commands: [String]
        /// True when it would not be done (irreversible, a backup gone, a step the runbook lost).
        public var problem: Bool
    }
    /// The run.
    public var runID: String
    /// The runbook of the run.
    public var runbook: String
    /// The actions, host by host.
    public var items: [Item]
}

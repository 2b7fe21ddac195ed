import Foundation

/// How a run ended, or that it has not (`running`).
public enum RunStatus: String, Sendable, Codable, CaseIterable {
    /// In progress (or its controller died and `markInterruptedRuns` has not noticed yet).
    case running
    /// Every step applied.
    case succeeded
    /// A step failed and rollback was off, or there was nothing to roll back.
    case failed
    /// A step failed and every change was rolled back.
    case rolledBack = "rolled_back"
    /// Rollback itself failed: a person must look.
    case rollbackFailed = "rollback_failed"
    /// The controller went away mid-run; `runbook rollback RUN_ID` can finish from the entries.
    case interrupted
    /// Refused before changing anything (lock held, stale plan, not confirmed).
    case refused
}

/// Which direction an entry goes.
public enum Phase: String, Sendable, Codable, CaseIterable {
    /// Applying the runbook's step.
    case apply
    /// Undoing a step.
    case rollback
}

/// Where one step on one host got to.
public enum EntryStatus: String, Sendable, Codable, CaseIterable {
    /// About to run; no outcome recorded yet. Left as is when the controller died mid-step.
    case intent
    /// Ran and succeeded.
    case done
    /// Ran and failed.
    case failed
    /// Not run (an earlier failure, a condition, a limit).
    case skipped
    /// Nothing to change.
    case noop
}

/// What `Journal.startRun` records about a run as it begins.
public struct RunStart: Sendable {
    /// The run id; nil generates one (`20261123-114501-a1b2`, UTC time and 4 random hex digits).
    public var id: String?
    /// The runbook's name.
    public var runbook: String
    /// The params as display-safe JSON: secret-looking values already masked by the caller.
    public var paramsJSON: String
    /// The hosts the run targets, by inventory name.
    public var hosts: [String]
    /// The digest of the plan being applied, when there is one.
    public var planDigest: String?
    /// The controller's hostname.
    public var controller: String
    /// The controller's process id.
    public var pid: Int32
    /// When the run began.
    public var startedAt: Date
    /// A note for `runbook show`.
    public var message: String?

    /// Describes a run started by this process, now, unless told otherwise.
    public init(id: String? = nil, runbook: String, paramsJSON: String = "{}", hosts: [String],
                planDigest: String? = nil, controller: String = ControllerIdentity.hostname,
                pid: Int32 = ControllerIdentity.pid, startedAt: Date = Date(), message: String? = nil) {
        self.id = id
        self.runbook = runbook
        self.paramsJSON = paramsJSON
        self.hosts = hosts
        self.planDigest = planDigest
        self.controller = controller
        self.pid = pid
        self.startedAt = startedAt
        self.message = message
    }
}

/// One row of the `runs` table.
public struct RunRecord: Sendable, Codable, Hashable, Identifiable {
    /// `20261123-114501-a1b2`.
    public var id: String
    /// The runbook's name.
    public var runbook: String
    /// The params as display-safe JSON.
    public var paramsJSON: String
    /// The hosts the run targeted.
    public var hosts: [String]
    /// The controller's hostname.
    public var controller: String
    /// The controller's process id.
    public var pid: Int32
    /// When the run began.
    public var startedAt: Date
    /// When it finished; nil while running or after an interruption.
    public var finishedAt: Date?
    /// How it ended.
    public var status: RunStatus
    /// The process exit code the run ended with.
    public var exitCode: Int32?
    /// The digest of the applied plan, when there was one.
    public var planDigest: String?
    /// A note for people: the failure, the refusal, the interruption.
    public var message: String?

    /// Creates a record.
    public init(id: String, runbook: String, paramsJSON: String, hosts: [String], controller: String, pid: Int32,
                startedAt: Date, finishedAt: Date?, status: RunStatus, exitCode: Int32?, planDigest: String?,
                message: String?) {
        self.id = id
        self.runbook = runbook
        self.paramsJSON = paramsJSON
        self.hosts = hosts
        self.controller = controller
        self.pid = pid
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.status = status
        self.exitCode = exitCode
        self.planDigest = planDigest
        self.message = message
    }
}

/// One row of the `entries` table: one step (or its undo) on one host.
public struct EntryRecord: Sendable, Codable, Hashable, Identifiable {
    /// Row id, as returned by `recordIntent`.
    public var id: Int64
    /// The run it belongs to.
    public var runID: String
    /// The host's inventory name.
    public var host: String
    /// The step's position in the runbook, from 0.
    public var stepIndex: Int
    /// The step's name.
    public var stepName: String
    /// The step kind (`file`, `command`, `service`, …).
    public var kind: String
    /// Apply or rollback.
    public var phase: Phase
    /// Where it got to.
    public var status: EntryStatus
    /// The encoded undo record (before-state); opaque to the journal.
    public var undo: Data?
    /// True when the step cannot be undone.
    public var irreversible: Bool
    /// True when the step changed the host.
    public var changed: Bool
    /// A note: the failure, the reason for a no-op.
    public var message: String?
    /// When the intent was written.
    public var startedAt: Date
    /// When the outcome was written; nil while only the intent exists.
    public var finishedAt: Date?
    /// Milliseconds from intent to outcome.
    public var durationMs: Int64?
    /// The host the step ran on for `host` (`delegate_to:`), when another one.
    public var target: String?
    /// The iteration of the step's loop (1-based), when it has one.
    public var iteration: Int?

    /// `web2` or `web2 → lb`.
    public var hostDisplay: String { target.map { "\(host) → \($0)" } ?? host }
    /// `drain` or `drain [2]`: the step, and its iteration.
    public var stepDisplay: String { iteration.map { "\(stepName) [\($0)]" } ?? stepName }

    /// Creates a record.
    public init(id: Int64, runID: String, host: String, stepIndex: Int, stepName: String, kind: String, phase: Phase,
                status: EntryStatus, undo: Data?, irreversible: Bool, changed: Bool, message: String?,
                startedAt: Date, finishedAt: Date?, durationMs: Int64?, target: String? = nil, iteration: Int? = nil) {
        self.target = target
        self.iteration = iteration
        self.id = id
        self.runID = runID
        self.host = host
        self.stepIndex = stepIndex
        self.stepName = stepName
        self.kind = kind
        self.phase = phase
        self.status = status
        self.undo = undo
        self.irreversible = irreversible
        self.changed = changed
        self.message = message
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.durationMs = durationMs
    }
}

/// A journal that cannot be opened, read or written, or a question it cannot answer.
public struct JournalError: Error, Sendable, CustomStringConvertible {
    /// The database file.
    public let path: String
    /// What went wrong, for the operator.
    public let message: String
    /// What to do about it, when there is something to say.
    public let hint: String?

    /// Creates an error.
    public init(path: String, message: String, hint: String? = nil) {
        self.path = path
        self.message = message
        self.hint = hint
    }

    /// `journal PATH: message (hint)`.
    public var description: String {
        "journal \(path): \(message)" + (hint.map { " (\($0))" } ?? "")
    }
}

/// How a step ended, taken when it ended and written then or with the host's next intent.
public struct StepOutcome: Sendable {
    public let entry: Int64
    public let status: EntryStatus
    public let changed: Bool
    public let message: String?
    /// Replaces the before-state written with the intent, when not nil.
    public let undo: Data?
    /// When the step ended (the journal's time format).
    let finishedAt: String

    /// The outcome of `entry`, ending now.
    public init(entry: Int64, status: EntryStatus, changed: Bool, message: String?, undo: Data? = nil) {
        self.entry = entry
        self.status = status
        self.changed = changed
        self.message = message
        self.undo = undo
        finishedAt = Journal.timestamp()
    }
}

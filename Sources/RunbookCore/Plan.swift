/// What a planned change does (Terraform's actions, plus `run` for commands).
public enum ChangeAction: String, Sendable, Codable {
    /// Nothing to do: the host is already as wanted (or `when` is false).
    case noop
    /// A file or resource will be created.
    case create
    /// A file or resource will be changed.
    case update
    /// A command will run.
    case run
    /// The step reads or checks only (assert, sleep, reports).
    case check
    /// The outcome depends on earlier steps' results: decided at apply time.
    case deferred
}

/// A fact a change relied on, reduced to a fingerprint so a saved plan can be checked for
/// staleness without storing the fact itself (it may hold secrets).
public struct FactFingerprint: Sendable, Codable, Hashable {
    /// What was read, e.g. `file:/etc/nginx/conf.d/upstream.conf` or `command:test -e /x`.
    public var fact: String
    /// SHA-256 of what was read (`absent` for a missing file).
    public var digest: String

    /// Creates a fingerprint.
    public init(fact: String, digest: String) {
        self.fact = fact
        self.digest = digest
    }
}

/// A shell command in a form that can be stored: secrets by name only, never by value.
public struct CommandRecord: Sendable, Codable, Hashable {
    /// One part of the command.
    public enum Part: Sendable, Codable, Hashable {
        case literal(String)
        case value(String)
        case secret(String)
        case binding(String)
    }
    /// The parts, in order.
    public var parts: [Part]

    /// Records `command` (secret values are dropped, names kept).
    public init(_ command: ShellCommand) {
        parts = command.parts.map {
            switch $0 {
            case .literal(let text): return .literal(text)
            case .value(let text): return .value(text)
            case .secret(let name, _): return .secret(name)
            case .binding(let name, _): return .binding(name)
            }
        }
    }

    /// The command again, with each secret's value looked up by name (nil: a secret is gone).
    public func command(secret: (String) -> String?) -> ShellCommand? {
        var result: [ShellCommand.Part] = []
        for part in parts {
            switch part {
            case .literal(let text): result.append(.literal(text))
            case .value(let text): result.append(.value(text))
            case .secret(let name):
                guard let value = secret(name) else { return nil }
                result.append(.secret(name: name, value: value))
            case .binding(let name):
                guard let value = secret(name) else { return nil }
                result.append(.binding(name: name, value: value))
            }
        }
        return ShellCommand(parts: result)
    }

    /// For people: secrets shown as `********`.
    public var display: String {
        ShellCommand(parts: parts.map {
            switch $0 {
            case .literal(let text): return .literal(text)
            case .value(let text): return .value(text)
            case .secret(let name): return .secret(name: name, value: "")
            case .binding: return .literal("")
            }
        }).display
    }
}

/// How an applied step is undone, recorded in the journal before the step runs.
public enum UndoRecord: Sendable, Codable, Hashable {
    /// Put a file back: from `backup` on the host if it existed (`beforeDigest` is its
    /// SHA-256), or remove it if it did not.
    case restoreFile(path: String, backup: String?, beforeDigest: String, afterDigest: String)
    /// Run this command (a `command` step's `undo`).
    case command(CommandRecord)
    /// Nothing can undo it (the reason is shown).
    case irreversible(String)
    /// Nothing to undo (a check, a sleep).
    case nothing
}

/// One step on one host, as planned.
public struct PlannedChange: Sendable, Codable {
    /// `host/step`, e.g. `app1/render` or `app1/#3`.
    public var address: String
    /// The host.
    public var host: String
    /// The step's index in the runbook.
    public var stepIndex: Int
    /// The step's name.
    public var stepName: String
    /// The step kind.
    public var kind: String
    /// What will happen.
    public var action: ChangeAction
    /// False when nothing can undo it; the plan says so.
    public var reversible: Bool
    /// One line for people, e.g. `update /etc/app.conf (0644)` (display only).
    public var summary: String
    /// A unified diff for files, secrets masked (display only).
    public var diff: String?
    /// The commands that will run, secrets masked (display only).
    public var commands: [String]
    /// Facts the change relied on.
    public var fingerprints: [FactFingerprint]
    /// SHA-256 of exactly what apply will do, to tell a saved plan from a fresh one.
    public var operationsDigest: String
    /// Why it is a no-op or deferred, when it is.
    public var reason: String?
    /// The iteration of the step's `loop:` (1-based), if it has one.
    public var iteration: Int? = nil
    /// That iteration's item, for people.
    public var item: String? = nil
    /// The host the step runs on for `host` (`delegate_to:`), if another one.
    public var delegate: String? = nil

    /// `web2` or `web2 → lb`: who the change is for, and where it happens.
    public var hostDisplay: String { delegate.map { "\(host) → \($0)" } ?? host }

    /// Creates a change.
    public init(address: String, host: String, stepIndex: Int, stepName: String, kind: String, action: ChangeAction,
                reversible: Bool, summary: String, diff: String? = nil, commands: [String] = [],
                fingerprints: [FactFingerprint] = [], operationsDigest: String = "", reason: String? = nil) {
        self.address = address
        self.host = host
        self.stepIndex = stepIndex
        self.stepName = stepName
        self.kind = kind
        self.action = action
        self.reversible = reversible
        self.summary = summary
        self.diff = diff
        self.commands = commands
        self.fingerprints = fingerprints
        self.operationsDigest = operationsDigest
        self.reason = reason
    }
}

/// A whole plan: every host × step, and digests of what it was made from (SPEC §6).
public struct Plan: Sendable, Codable {
    /// The format this version writes and reads.
    public static let formatVersion = 1
    /// Format version of the saved file.
    public var version: Int = Plan.formatVersion
    /// The runbook's name.
    public var runbook: String
    /// Parameters as resolved (display-safe: params are not secrets).
    public var params: [String: Value]
    /// Hosts in order.
    public var hosts: [String]
    /// When it was made (ISO 8601).
    public var createdAt: String
    /// SHA-256 of the runbook file, the templates directory, the inventory file and the params.
    public var digests: [String: String]
    /// The changes, host by host in step order.
    public var changes: [PlannedChange]

    /// Creates a plan.
    public init(runbook: String, params: [String: Value], hosts: [String], createdAt: String,
                digests: [String: String], changes: [PlannedChange]) {
        self.runbook = runbook
        self.params = params
        self.hosts = hosts
        self.createdAt = createdAt
        self.digests = digests
        self.changes = changes
    }

    /// Changes that do something.
    public var effective: [PlannedChange] { changes.filter { $0.action != .noop } }
}

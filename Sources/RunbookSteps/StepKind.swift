import Crypto
import Foundation
import RunbookCore
import Synchronization

/// What apply will do for one planned change: exactly what the plan showed, executed by the
/// engine (kinds never write to a host themselves). The commands a plan displays and its
/// operations digest are derived from this value (`shownCommands`, `digest`), never written
/// beside it.
package enum StepOperation: Sendable {
    /// Replace a file atomically (backup first, validate the candidate, then rename).
    case putFile(path: String, contents: [UInt8], mode: UInt32, owner: String?, group: String?,
                 validate: ShellCommand?, existed: Bool, beforeDigest: String)
    /// Run a command; a non-zero exit fails the step. `undo` is recorded first when given.
    case run(ShellCommand, undo: ShellCommand?)
    /// Check expressions against the run's state at apply time.
    case assert(conditions: [String], message: String?)
    /// Wait.
    case sleep(Duration)
    /// Something other than a shell command (an HTTP health check, a port wait), done by
    /// the step's own action through the host's transport.
    case action(any StepAction)
    /// Nothing.
    case nothing

    /// The commands as the host will run them, `become` applied: what apply executes and what
    /// the plan shows (masked by the engine). An undo is shown as `undo: …`, a file's
    /// validation as `validate: …`.
    package func commands(become: Bool) -> [ShellCommand] {
        switch self {
        case .run(let command, _): return [Become.wrap(command, if: become)]
        case .action(let action): return action.commands
        default: return []
        }
    }

    /// The undo command as it will run, `become` applied.
    package func undoCommand(become: Bool) -> ShellCommand? {
        if case .run(_, let undo?) = self { return Become.wrap(undo, if: become) }
        return nil
    }

    /// The lines a plan shows for this operation.
    package func shownCommands(become: Bool) -> [String] {
        var lines = commands(become: become).map(\.display)
        if let undo = undoCommand(become: become) { lines.append("undo: " + undo.display) }
        if case .putFile(_, _, _, _, _, let validate?, _, _) = self { lines.append("validate: " + validate.display) }
        return lines
    }

    /// SHA-256 of exactly what apply will do, so a saved plan can be told from a fresh one.
    /// `extra` covers what the commands carry out of band (a statement sent through the
    /// environment, as written, never a secret's value).
    package func digest(become: Bool, extra: String = "") -> String {
        let nul = "\u{0}"
        switch self {
        case .putFile(let path, let contents, let mode, let owner, let group, let validate, _, _):
            return sha256Hex(contents + Array("file\(nul)\(path)\(nul)\(String(mode, radix: 8))\(nul)\(owner ?? "")\(nul)\(group ?? "")\(nul)\(validate?.commandLine ?? "")".utf8))
        case .run:
            return sha256Hex("run" + nul + commands(become: become).map(\.commandLine).joined(separator: nul) + nul
                             + (undoCommand(become: become)?.commandLine ?? "") + nul + extra)
        case .assert(let conditions, let message):
            return sha256Hex("assert" + nul + conditions.joined(separator: nul) + nul + (message ?? ""))
        case .sleep(let duration):
            return sha256Hex("sleep" + nul + DurationText.format(duration))
        case .action(let action):
            return sha256Hex("action" + nul + String(describing: type(of: action)) + nul + action.canonical + nul + extra)
        case .nothing:
            return sha256Hex("noop")
        }
    }
}

/// `become: true`: a command runs through `sudo -n` as root, keeping the secrets' environment.
package enum Become {
    /// `command` as it runs with `become` (unchanged without it).
    package static func wrap(_ command: ShellCommand, if become: Bool) -> ShellCommand {
        guard become else { return command }
        return "sudo -n -E -- sh -c \(command.commandLine)" + ShellCommand(parts: command.parts.filter {
            if case .binding = $0 { return true }
            return false
        } + command.parts.compactMap {
            if case .secret(let name, let value) = $0 { return .binding(name: name, value: value) }
            return nil
        })
    }
}

/// What a step does at apply time when it is not a command or a file: it may read and probe
/// through the transport; it must not change the host (changes are commands, which the plan
/// shows and the journal records).
package protocol StepAction: Sendable {
    /// Everything that decides what the action does, for the operations digest.
    var canonical: String { get }
    /// The commands it runs on the host, if any (shown in the plan).
    var commands: [ShellCommand] { get }
    /// Performs the action on `transport` (the host); `controller` reaches out from the
    /// controller itself. `.success` outputs become `steps.<id>.*`.
    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult
}

extension StepAction {
    package var commands: [ShellCommand] { [] }
}

/// The outcome of a `StepAction`.
package enum StepActionResult: Sendable {
    /// It passed, with outputs for later steps, and optionally a report for the operator
    /// (a load test's table), shown under the step and journaled.
    case success([String: Value], message: String? = nil)
    /// It failed, with the reason.
    case failure(String)
}

/// A step planned for one host: the public change plus the operation behind it.
package struct HostStepPlan: Sendable {
    package var change: PlannedChange
    package var operation: StepOperation
    /// Set when the step must be planned again at apply time (it reads earlier steps' results).
    package var deferredUntilApply: Bool
    /// Facts a `gather` step read, for the later steps of the same host.
    package var facts: [String: Value]? = nil
    /// What the operation carries out of band, for its digest (see `StepOperation.digest`).
    package var digestExtra: String = ""

    /// A planned step.
    package init(change: PlannedChange, operation: StepOperation, deferredUntilApply: Bool, facts: [String: Value]? = nil,
                 digestExtra: String = "") {
        self.change = change
        self.operation = operation
        self.deferredUntilApply = deferredUntilApply
        self.facts = facts
        self.digestExtra = digestExtra
    }
}

/// Files that earlier steps of the same run will have written on a host, by path: a later
/// step is planned against them, not against the host's state before the run.
package struct PlannedFiles: Sendable {
    /// One planned file.
    package struct Entry: Sendable {
        package var contents: [UInt8]
        package var mode: UInt32
        package var uid: UInt32
        package var gid: UInt32
        /// The step that writes it (1-based, as people count).
        package var step: Int
    }

    /// By path.
    package var entries: [String: Entry] = [:]

    /// None yet.
    package init() {}

    /// Records what `operation` of step `index` (0-based) will write.
    package mutating func record(_ operation: StepOperation, step index: Int) {
        guard case .putFile(let path, let contents, let mode, let owner, let group, _, _, _) = operation else { return }
        entries[path] = Entry(contents: contents, mode: mode, uid: owner.flatMap { UInt32($0) } ?? entries[path]?.uid ?? 0,
                              gid: group.flatMap { UInt32($0) } ?? entries[path]?.gid ?? 0, step: index + 1)
    }
}

/// Named facts of one host, read once per plan and shared by its steps (which compose the
/// host has, say): a second step asking gets the first answer without another round trip.
package final class FactCache: Sendable {
    private let values = Mutex<[String: any Sendable]>([:])

    /// An empty cache.
    package init() {}

    /// The fact `name`, read with `read` the first time it is asked for.
    package func value<T: Sendable>(_ name: String, read: () async throws -> T) async throws -> T {
        if let known = values.withLock({ $0[name] }) as? T { return known }
        let value = try await read()
        values.withLock { $0[name] = value }
        return value
    }
}

/// Read-only access to a host while planning: files, stats, check commands and named facts.
/// Files an earlier step of the run writes are read as that step will leave them (`planned`).
package struct FactReader: Sendable {
    package let transport: any Transport
    /// What earlier steps of the run write.
    package var planned: PlannedFiles
    /// The host's named facts, shared by the steps of one plan.
    package let cache: FactCache

    /// A reader of `transport`, with what earlier steps write and the host's fact cache.
    package init(transport: any Transport, planned: PlannedFiles = PlannedFiles(), cache: FactCache = FactCache()) {
        self.transport = transport
        self.planned = planned
        self.cache = cache
    }

    /// A named fact, read once per plan (see `FactCache`).
    package func fact<T: Sendable>(_ name: String, read: () async throws -> T) async throws -> T {
        try await cache.value(name, read: read)
    }

    /// The step (1-based) that writes `path` earlier in this run, if one does.
    package func plannedBy(_ path: String) -> Int? { planned.entries[path]?.step }

    /// A file's contents, mode and owner, or nil when absent (as an earlier step leaves it, if one
    /// writes it). When `path` is a symbolic link, they are those of the file it resolves to, and
    /// `target` is that file's canonical path: a change is made there, and the link stays.
    package func file(_ path: String) async throws(TransportError)
        -> (contents: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32, target: String?)?
    {
        if let entry = planned.entries[path] { return (entry.contents, entry.mode, entry.uid, entry.gid, nil) }
        guard let info = try await transport.stat(path) else { return nil }
        if info.isSymlink && info.symlinkTarget == nil {
            throw TransportError(host: transport.hostName, message: "\(path) is a symbolic link to a file that does not exist")
        }
        if info.isDirectory {
            throw TransportError(host: transport.hostName, message: "\(path) is a directory")
        }
        if let target = info.symlinkTarget, let entry = planned.entries[target] {
            return (entry.contents, entry.mode, entry.uid, entry.gid, target)
        }
        guard let contents = try await transport.readFile(info.symlinkTarget ?? path) else { return nil }
        return (contents, info.permissions, info.uid, info.gid, info.symlinkTarget)
    }

    /// Whether `path` exists (or an earlier step of the run creates it).
    package func exists(_ path: String) async throws(TransportError) -> Bool {
        if planned.entries[path] != nil { return true }
        return try await transport.stat(path) != nil
    }

    /// Runs a read-only check (`creates`, `unless`).
    package func check(_ command: ShellCommand, timeout: Duration?) async throws(TransportError) -> CommandOutput {
        try await transport.run(command, stdin: [], timeout: timeout ?? .seconds(60), onOutput: nil)
    }
}

/// Step arguments after rendering for one host.
package struct RenderedArguments: Sendable {
    /// Strings rendered with secrets as values (file content, paths).
    package var strings: [String: String]
    /// Commands rendered with secrets as references, with the secrets they use.
    package var commands: [String: ShellCommand]
    /// Everything else as written (numbers, bools, lists).
    package var raw: [String: Value]
    /// Rendered template file contents (`template` src), when the kind has one.
    package var fileContents: [UInt8]?
    /// The project's root on the controller, which a controller path relative to it is of.
    package var projectRoot: String?

    /// Rendered arguments.
    package init(strings: [String: String] = [:], commands: [String: ShellCommand] = [:], raw: [String: Value] = [:],
                 fileContents: [UInt8]? = nil) {
        self.strings = strings
        self.commands = commands
        self.raw = raw
        self.fileContents = fileContents
    }

}

/// A step kind, self-described: its schema, what rollback does about it, and its planner.
/// Adding a kind is one file declaring a type that conforms, and one line in
/// `StepRegistry.kinds`. The engine asks these members and never names a kind.
package protocol StepKind: Sendable {
    /// The kind's key and arguments (SPEC §5), as data: the loader validates steps against it.
    static var schema: StepKindSchema { get }
    /// What a rollback does once a step of this kind ran, given its arguments (a map, as the
    /// loader stores them). No default: a kind that forgot to say would be taken as read-only.
    static func undoPolicy(_ arguments: Value) -> UndoBehavior
    /// When rollback runs the step again after restoring state; default `.never`.
    static var replay: ReplayPhase { get }
    /// Where the file a step puts comes from (`template`, `copy`); default `.none`.
    static var fileSource: FileSource { get }
    /// True when the step's outputs are host facts for later steps (`gather`); default false.
    static var outputsAreFacts: Bool { get }
    /// True when a successful command's stdout is the step's report, shown under it and
    /// journaled (`pg_restore`'s row counts); default false.
    static var reportsOutput: Bool { get }
    /// False when the step cannot run through sudo (it writes over SFTP); default true.
    static var supportsBecome: Bool { get }
    /// Outputs parsed from a successful command's stdout, besides rc/stdout/stderr; default none.
    static func outputs(stdout: String) -> [String: Value]
    /// The step's name when the runbook gives none.
    static func defaultName(_ arguments: [String: Value]) -> String
    /// Why a step of this kind cannot be undone, for the journal and rollback's report.
    static func irreversibleReason(_ arguments: Value) -> String
    /// The planner.
    init()
    /// Plans `step` on one host: facts in, the change and the operation behind it out.
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan
}

/// When rollback runs a step again, after phase 1 restored state (SPEC §6).
package enum ReplayPhase: Sendable, Hashable {
    /// Never.
    case never
    /// Phase 2: service actions and reloads, in original order, once the files are back.
    case afterRestore
    /// Phase 3: checks of the restored state (unless the step says `recheck: false`).
    case recheck
}

/// Where a file step's content comes from.
package enum FileSource: Sendable, Hashable {
    /// The kind puts no file.
    case none
    /// `src` is a template under templates/, rendered per host.
    case template
    /// `src` is a file under templates/, copied as is.
    case copy
}

extension StepKind {
    package static var replay: ReplayPhase { .never }
    package static var fileSource: FileSource { .none }
    package static var outputsAreFacts: Bool { false }
    package static var reportsOutput: Bool { false }
    package static var supportsBecome: Bool { true }
    package static func outputs(stdout: String) -> [String: Value] { [:] }
    package static func defaultName(_ arguments: [String: Value]) -> String {
        if let database = arguments["database"] { return "\(schema.name) \(database.description)" }
        return schema.name
    }
    package static func irreversibleReason(_ arguments: Value) -> String { "\(schema.name) cannot be undone" }
    /// The kind's name as written in runbooks.
    package static var name: String { schema.name }
}

extension Value {
    /// The value as `-p` would have typed it.
    package var plainText: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .bool(let b): return b ? "true" : "false"
        case .null: return ""
        default: return description
        }
    }

    /// True when the map has `key` with a value that is not blank.
    package func has(_ key: String) -> Bool {
        guard let value = self[key] else { return false }
        if case .string(let text) = value { return !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
        return !value.isNull
    }
}

/// Every step kind, in documentation order: the one list the engine, the loader and
/// `runbook list` read.
package enum StepRegistry {
    /// The kinds.
    package static let kinds: [any StepKind.Type] = [
        CommandStep.self,
        TemplateStep.self,
        CopyStep.self,
        EnvSetStep.self,
        YamlSetStep.self,
        ServiceStep.self,
        ComposeScaleStep.self,
        NginxReloadStep.self,
        NginxUpstreamStep.self,
        PostgresBackupStep.self,
        PostgresRestoreStep.self,
        FetchStep.self,
        PostgresVacuumStep.self,
        PostgresKillQueriesStep.self,
        PostgresSQLStep.self,
        PostgresSlowQueriesStep.self,
        PostgresIndexStep.self,
        HealthStep.self,
        LoadTestStep.self,
        WaitForStep.self,
        DockerPruneStep.self,
        GatherStep.self,
        QueueDepthStep.self,
        AssertStep.self,
        SleepStep.self,
    ]

    private static let byName: [String: any StepKind.Type] = Dictionary(uniqueKeysWithValues: kinds.map { ($0.name, $0) })

    /// The kind named `name`, if there is one.
    package static func kind(_ name: String) -> (any StepKind.Type)? { byName[name] }

    /// The schema of `name`, if there is such a kind.
    package static func schema(for name: String) -> StepKindSchema? { byName[name]?.schema }

    /// Every kind name, in documentation order.
    package static var names: [String] { kinds.map { $0.name } }

    /// What rollback does about a step of `kind`; an unknown kind counts as irreversible.
    package static func undoBehavior(kind: String, arguments: Value) -> UndoBehavior {
        byName[kind]?.undoPolicy(arguments) ?? .irreversible
    }

    /// Whether a check of `kind` (`ReplayPhase.recheck`) runs again in rollback phase 3: the
    /// step's `recheck`, else the kind's default for it (`health`: yes, `load_test`: no), else yes.
    package static func rechecks(kind: String, arguments: Value) -> Bool {
        if case .bool(let written)? = arguments["recheck"] { return written }
        if case .bool(let fallback)? = byName[kind]?.schema.argument("recheck")?.defaultValue { return fallback }
        return true
    }

    /// Whether a step of `kind` with `arguments` cannot be undone, so the plan must say so.
    package static func isIrreversible(kind: String, arguments: Value) -> Bool {
        undoBehavior(kind: kind, arguments: arguments) == .irreversible
    }
}

/// SHA-256 in hex.
package func sha256Hex(_ bytes: [UInt8]) -> String {
    hexEncoded(SHA256.hash(data: bytes))
}

/// Lower-case hex of `bytes` (a digest). Not `String(format:)`, which goes through
/// CoreFoundation's formatter for every byte.
package func hexEncoded<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var text: [UInt8] = []
    text.reserveCapacity(64)
    for byte in bytes {
        text.append(digits[Int(byte >> 4)])
        text.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: text, as: UTF8.self)
}

/// SHA-256 in hex of a string.
package func sha256Hex(_ text: String) -> String { sha256Hex(Array(text.utf8)) }

/// Parses a file mode written as `"0644"`, `"644"`, `0644` or `420`.
package func parseMode(_ value: Value?) -> UInt32? {
    switch value {
    case .string(let s): return UInt32(s, radix: 8)
    case .int(let i): return UInt32(String(i), radix: 8)
    default: return nil
    }
}

extension PlannedChange {
    /// A change for `step` on `host` with the usual address.
    package static func make(step: Step, host: String, action: ChangeAction, reversible: Bool, summary: String) -> PlannedChange {
        PlannedChange(address: "\(host)/\(step.reference)", host: host, stepIndex: step.index, stepName: step.name,
                      kind: step.kind, action: action, reversible: reversible, summary: summary)
    }
}

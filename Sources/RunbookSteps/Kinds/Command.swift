import Foundation
import RunbookCore

/// `command`: `run` through the remote shell. `creates` (a path) and `unless` (a command)
/// are checked at plan time and make it a no-op; `undo` makes it reversible.
package struct CommandStep: StepKind {
    package static let schema = StepKindSchema(
        name: "command", summary: "run a shell command",
        arguments: [
            ArgumentSpec("run", .command, required: true, "the command, run by sh -c"),
            ArgumentSpec("creates", .string, "skip when this path exists on the host"),
            ArgumentSpec("unless", .command, "skip when this command exits 0 (run at plan time)"),
            ArgumentSpec("undo", .command, "command that undoes it on rollback; without it the step is irreversible"),
            ArgumentSpec("check", .bool, default: false,
                         "the command only reads (a verification that fails by its exit status): shown as a check, nothing to undo"),
        ],
        scalarForm: .command, scalarKey: "run")
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior {
        if arguments.has("undo") { return .restore }
        if case .map(let map) = arguments, map["check"]?.boolValue == true { return .readOnly }
        return .irreversible
    }
    package static func irreversibleReason(_ arguments: Value) -> String { "command without undo" }
    package static func defaultName(_ arguments: [String: Value]) -> String {
        let run = (arguments["run"]?.description ?? "").split(whereSeparator: \.isNewline).joined(separator: " ")
        return "command: " + (run.count > 40 ? run.prefix(40).trimmingCharacters(in: .whitespaces) + "…" : run)
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let run = arguments.commands["run"] else { throw StepFailure("command needs run") }
        let undo = arguments.commands["undo"]
        let check = arguments.raw["check"]?.boolValue == true
        if check && undo != nil { throw StepFailure("command: a check has nothing to undo; give check: true or undo, not both") }
        var change = PlannedChange.make(step: step, host: host.name, action: check ? .check : .run, reversible: undo != nil || check,
                                        summary: run.display.split(separator: "\n").first.map(String.init) ?? "")
        if let creates = arguments.string("creates") {
            let exists = try await facts.exists(creates)
            let plannedBy = facts.plannedBy(creates)
            change.fingerprints.append(FactFingerprint(fact: "exists:\(creates)",
                                                       digest: plannedBy.map { "written by step \($0)" } ?? (exists ? "present" : "absent")))
            if exists {
                change.action = .noop
                change.reason = "creates: \(creates) exists" + (plannedBy.map { " (written by step \($0) of this run)" } ?? "")
                change.summary = "skip: \(creates) exists"
                return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
            }
        }
        if let unless = arguments.commands["unless"] {
            let result = try await facts.check(unless, timeout: step.timeout)
            change.fingerprints.append(FactFingerprint(fact: "command:\(unless.display)", digest: "exit \(result.exitStatus.map(String.init) ?? "?")"))
            if result.succeeded {
                change.action = .noop
                change.reason = "unless: `\(unless.display)` succeeded"
                change.summary = "skip: unless check passed"
                return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
            }
        }
        return HostStepPlan(change: change, operation: .run(run, undo: undo), deferredUntilApply: false)
    }
}

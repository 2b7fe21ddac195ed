import Foundation
import RunbookCore

// MARK: - compose_scale

/// `compose_scale`: sets the number of running containers of a compose service.
///
/// Plan reads the running count (and whether the host has compose v2 or v1) in one command;
/// equal counts are a no-op. Apply runs `up -d --no-recreate --no-deps --scale SERVICE=N SERVICE` with
/// the compose found at plan time; the undo is the same command with the previous count.
/// The fingerprint is that count and flavor, so a saved plan is stale once either changed.
package struct ComposeScaleStep: StepKind {
    package static let schema = StepKindSchema(
        name: "compose_scale", summary: "set the replica count of a compose service",
        arguments: [
            ArgumentSpec("compose_file", .string, "compose file"),
            ArgumentSpec("service", .string, required: true, "compose service"),
            ArgumentSpec("replicas", .int, required: true, "replicas wanted"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    package static func defaultName(_ arguments: [String: Value]) -> String {
        "compose_scale \(arguments["service"]?.description ?? "")=\(arguments["replicas"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let service = arguments.string("service"), !service.isEmpty else {
            throw StepFailure("compose_scale needs service")
        }
        let wanted: Int
        switch arguments.raw["replicas"] {
        case .int(let n): wanted = n
        case .string:
            guard let n = arguments.string("replicas").flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw StepFailure("compose_scale: replicas must be a whole number (got \(arguments.string("replicas") ?? ""))")
            }
            wanted = n
        default: throw StepFailure("compose_scale needs replicas: a whole number")
        }
        guard wanted >= 0 else { throw StepFailure("compose_scale: replicas must not be negative (got \(wanted))") }
        let file = arguments.string("compose_file")
        let compose = ComposeCommand(file: file)

        let probe = compose.runningCountProbe(service: service)
        let output = try await facts.check(probe, timeout: step.timeout)
        guard output.succeeded, let counted = ComposeCommand.parseRunningCount(output.stdoutText) else {
            let reason = output.stderrText.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw StepFailure.onHost("compose_scale: cannot count the containers of \(service) on \(host.name) (\(output.statusText))"
                              + (reason.isEmpty ? "" : ": \(reason)"))
        }
        let (flavor, current) = counted
        let project = compose.with(flavor)
        let location = file.map { " in \($0)" } ?? ""
        var change = PlannedChange.make(step: step, host: host.name, action: .update, reversible: true,
                                        summary: "\(service): \(current) → \(wanted) replicas\(location) (\(flavor.program))")
        change.fingerprints = [FactFingerprint(fact: "compose:\(file ?? "(default)")#\(service)",
                                               digest: "\(flavor.program): \(current) running")]
        if current == wanted {
            change.action = .noop
            change.summary = "\(service): \(current) replicas, as wanted"
            change.reason = "\(service) already runs \(current) replicas"
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
        let apply = Self.scale(project, service: service, to: wanted)
        let undo = Self.scale(project, service: service, to: current)
        return HostStepPlan(change: change, operation: .run(apply, undo: undo), deferredUntilApply: false)
    }

    /// `up -d --no-recreate --no-deps --scale SERVICE=N SERVICE`: creates or removes
    /// containers of that service only, leaving its running containers and the services it
    /// depends on alone (starting those would be a change the plan does not show and the
    /// undo would not take back).
    static func scale(_ compose: ComposeCommand, service: String, to replicas: Int) -> ShellCommand {
        compose(["up", "-d", "--no-recreate", "--no-deps", "--scale", "\(service)=\(replicas)", service])
    }
}


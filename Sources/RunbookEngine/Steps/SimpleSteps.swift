import RunbookCore

/// A step that cannot be planned or applied, with the reason for the operator.
struct StepFailure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// `command`: `run` through the remote shell. `creates` (a path) and `unless` (a command)
/// are checked at plan time and make it a no-op; `undo` makes it reversible.
struct CommandStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let run = arguments.commands["run"] else { throw StepFailure("command needs run") }
        let undo = arguments.commands["undo"]
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: undo != nil,
                                        summary: run.display.split(separator: "\n").first.map(String.init) ?? "")
        if let creates = arguments.string("creates") {
            let exists = try await facts.transport.stat(creates) != nil
            change.fingerprints.append(FactFingerprint(fact: "exists:\(creates)", digest: exists ? "present" : "absent"))
            if exists {
                change.action = .noop
                change.reason = "creates: \(creates) exists"
                change.summary = "skip: \(creates) exists"
                change.operationsDigest = sha256Hex("noop")
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
                change.operationsDigest = sha256Hex("noop")
                return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
            }
        }
        change.commands = [run.display]
        if let undo { change.commands.append("undo: " + undo.display) }
        change.operationsDigest = sha256Hex(run.commandLine + "\u{0}" + (undo?.commandLine ?? ""))
        return HostStepPlan(change: change, operation: .run(run, undo: undo), deferredUntilApply: false)
    }
}

/// `assert`: expressions that must hold; checked when the step runs.
struct AssertStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let conditions: [String]
        switch arguments.raw["that"] {
        case .string(let s): conditions = [s]
        case .list(let items): conditions = items.compactMap(\.stringValue)
        default: throw StepFailure("assert needs that: an expression or a list of them")
        }
        let message = arguments.string("message")
        var change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true,
                                        summary: "assert " + conditions.joined(separator: " and "))
        change.operationsDigest = sha256Hex(conditions.joined(separator: "\u{0}"))
        return HostStepPlan(change: change, operation: .assert(conditions: conditions, message: message), deferredUntilApply: false)
    }
}

/// `sleep: 5s`.
struct SleepStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        // The loader stores `sleep: 5s` as { duration: "5s" }.
        let text: String
        switch arguments.raw["duration"] {
        case .string(let s): text = arguments.strings["duration"] ?? s
        case .int(let i): text = "\(i)s"
        default: throw StepFailure("sleep takes a duration, e.g. sleep: 5s")
        }
        guard let duration = DurationText.parse(text) else { throw StepFailure("sleep: \(text) is not a duration") }
        var change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: "sleep \(text)")
        change.operationsDigest = sha256Hex("sleep \(text)")
        return HostStepPlan(change: change, operation: .sleep(duration), deferredUntilApply: false)
    }
}

/// The kinds this engine can run, by name.
enum StepKinds {
    /// Kinds whose command reports outputs on stdout (e.g. `pg_backup`'s `path`), turned into
    /// `steps.<id>.*` after the command succeeds.
    static let outputParsers: [String: @Sendable (String) -> [String: Value]] = [
        "pg_backup": { PostgresBackupStep.outputs(stdout: $0) },
    ]

    static let implemented: [String: any StepKind] = [
        "command": CommandStep(),
        "template": FileStep(),
        "copy": FileStep(),
        "assert": AssertStep(),
        "sleep": SleepStep(),
        "gather": GatherStep(),
        "pg_sql": PostgresSQLStep(),
        "pg_vacuum": PostgresVacuumStep(),
        "pg_kill_queries": PostgresKillQueriesStep(),
        "pg_backup": PostgresBackupStep(),
        "pg_slow_queries": PostgresSlowQueriesStep(),
        "service": ServiceStep(),
        "nginx_reload": NginxReloadStep(),
        "health": HealthStep(),
        "wait_for": WaitForStep(),
        "compose_scale": ComposeScaleStep(),
        "docker_prune": DockerPruneStep(),
    ]
}

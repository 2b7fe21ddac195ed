import Foundation
import RunbookCore
import Synchronization
import RunbookSteps
import RunbookTransport

/// How `apply` should behave.
public struct ApplyOptions: Sendable {
    /// Skip the confirmation.
    public var yes: Bool
    /// Roll back automatically on failure (false: `--no-rollback`, or the runbook's `rollback: off`).
    public var rollback: Bool
    /// Apply exactly this saved plan, or refuse if it is stale.
    public var planFile: String?
    /// Asks the operator; nil when there is no terminal to ask on.
    public var confirm: (@Sendable (Plan) -> Bool)?
    /// Set when the operator interrupts (SIGINT, SIGTERM): no further step starts, what ran is
    /// rolled back and the locks are released.
    public var interruption: Interruption?
    /// The run begun before the arguments were parsed, taken when it is for this request.
    public var headStart: HeadStart?

    /// Creates options.
    public init(yes: Bool, rollback: Bool, planFile: String?, confirm: (@Sendable (Plan) -> Bool)?,
                interruption: Interruption? = nil, headStart: HeadStart? = nil) {
        self.yes = yes
        self.rollback = rollback
        self.planFile = planFile
        self.confirm = confirm
        self.interruption = interruption
        self.headStart = headStart
    }
}

/// The run as loaded, once it is (for notifying about an outcome, whatever path it took).
final class PreparedBox: Sendable {
    private let stored = Mutex<PreparedRun?>(nil)
    var value: PreparedRun? {
        get { stored.withLock { $0 } }
        set { stored.withLock { $0 = newValue } }
    }
}

/// An operator's request to stop a run: the signal that asked, once set.
public final class Interruption: Sendable {
    private let signal = Mutex<Int32?>(nil)

    /// Not requested yet.
    public init() {}

    /// Records the request; true for the first one.
    @discardableResult
    public func request(_ number: Int32) -> Bool {
        signal.withLock { current in
            guard current == nil else { return false }
            current = number
            return true
        }
    }

    /// The signal's name when a stop was requested (`SIGINT`).
    public var requested: String? {
        signal.withLock { $0 }.map { $0 == SIGINT ? "SIGINT" : $0 == SIGTERM ? "SIGTERM" : "signal \($0)" }
    }
}

/// How a run ended.
public struct RunOutcome: Sendable {
    /// The journal's run id (nil when refused before one was made).
    public var runID: String?
    /// SPEC §2's exit code.
    public var exitCode: Int32
    /// One line for the operator.
    public var message: String
}

/// A step that was started on a host, with what undoes it.
struct AppliedStep: Sendable {
    let entry: Int64
    let stepIndex: Int
    let name: String
    let undo: UndoRecord
    /// The host it ran on, when delegated there (its undo and replays run there too).
    var target: String? = nil
    /// The iteration of its loop (1-based), if it has one.
    var iteration: Int? = nil

    /// The step's name as the journal keeps it (`name` shows the iteration too: `drain [2]`).
    var stepName: String {
        guard let iteration, name.hasSuffix(" [\(iteration)]") else { return name }
        return String(name.dropLast(" [\(iteration)]".count))
    }
    /// For service actions, reloads and health checks: the operation to run again in
    /// rollback phases 2 and 3 (nil for everything else).
    var replay: Replay? = nil
    /// Why a service action, reload or health check cannot be run again by `runbook rollback
    /// RUN_ID` (the runbook lost the step, or no longer loads). Once phase 1 has restored
    /// something, that makes the rollback incomplete: a service may still run what the run
    /// gave it.
    var replayProblem: String? = nil
    /// False for the step that failed: a reload that failed reloaded nothing, so phase 2
    /// does not run it again.
    var succeeded = false
}

/// A step that rollback runs again after restoring state (SPEC §6).
struct Replay: Sendable {
    /// Phase 2 (service actions and reloads, in original order) or 3 (health checks).
    let phase: Int
    let step: Step
    let operation: StepOperation
    /// The context the step ran in (its loop item), for a check that evaluates expressions.
    var context: TemplateContext? = nil
}

/// What happened on one host.
struct HostOutcome: Sendable {
    let host: String
    var applied: [AppliedStep] = []
    var changed = false
    var failure: String?
}

extension Engine {
    /// `runbook apply`: lock, plan, confirm, apply host by host (rolling batches), and roll back
    /// on failure. Invalid input throws `DiagnosticError` before anything is contacted. Once
    /// the runbook and inventory are loaded, the outcome goes to their `notify:` targets (a
    /// failed delivery never changes it).
    public func apply(_ request: RunRequest?, options: ApplyOptions) async throws(DiagnosticError) -> RunOutcome {
        let loaded = PreparedBox()
        let outcome: RunOutcome
        do {
            outcome = try await applyLoaded(request, options: options, loaded: loaded)
        } catch {
            if let prepared = loaded.value {
                await notify(RunOutcome(runID: nil, exitCode: 2, message: "invalid input: \(error.description)"), prepared: prepared)
            }
            throw error
        }
        // An operator who answers no at the prompt needs no message about it.
        if let prepared = loaded.value, !outcome.message.hasPrefix("not confirmed") {
            await notify(outcome, prepared: prepared)
        }
        return outcome
    }

    /// Sends an outcome to the run's notify targets, if it has any.
    func notify(_ outcome: RunOutcome, prepared: PreparedRun) async {
        let targets = Notifier.targets(prepared)
        guard !targets.isEmpty else { return }
        let journal = try? Journal(path: journalPath)
        let event = Notifier.event(outcome, prepared: prepared, journal: journal)
        await Notifier(targets: targets, prepared: prepared, logPath: settings.stateDir + "/logs/notifications.log", events: events)
            .deliver(event)
    }

    private func applyLoaded(_ request: RunRequest?, options: ApplyOptions, loaded: PreparedBox) async throws(DiagnosticError) -> RunOutcome {
        var request = request
        var saved: Plan? = nil
        if let path = options.planFile {
            let plan: Plan
            do {
                plan = try JSONDecoder().decode(Plan.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                throw DiagnosticError(.error("cannot read the saved plan: \(error)", at: SourceLocation(file: path, line: 1, column: 1)))
            }
            guard plan.version == Plan.formatVersion else {
                throw DiagnosticError(.error("the saved plan is format \(plan.version); this runbook reads format \(Plan.formatVersion)",
                                             at: SourceLocation(file: path, line: 1, column: 1),
                                             hint: "make the plan again with this version: runbook plan … --out FILE"))
            }
            saved = plan
            request = RunRequest(runbook: plan.runbook, params: plan.params.mapValues(\.plainText), limit: plan.hosts.joined(separator: ","))
        }
        guard let request else { throw DiagnosticError(.error("apply needs a runbook name or --plan FILE")) }
        let launch: Launch
        let early = await options.headStart?.take(request, settings: settings)
        if let early, saved == nil {
            launch = early
            loaded.value = early.prepared
        } else {
            early?.abandon()
            let journal = openJournalEarly()
            let prepared = try prepare(request)
            loaded.value = prepared
            if let saved {
                // A key on one side only is a change too (a template added or removed).
                let stale = Set(saved.digests.keys).union(prepared.digests.keys).sorted()
                    .filter { saved.digests[$0] != prepared.digests[$0] }
                    .map { describeDigest($0, runbookFile: prepared.runbook.file) }
                if !stale.isEmpty {
                    return RunOutcome(runID: nil, exitCode: 3, message: "the plan is stale: \(stale.joined(separator: ", ")) changed since it was made; nothing was applied. Make a new plan.")
                }
            }
            launch = self.launch(prepared, journal: journal)
        }
        let prepared = launch.prepared
        // The run's info is yielded below, once the local lock is held. On any return before
        // that the stream ends without it and no host lock is taken; a refusal also abandons
        // the connections (closed in the background, so it does not wait for them).
        defer { launch.lockInfo.finish() }
        let connecting = launch.connecting
        let journal: Journal
        do { journal = try await launch.journal?.value.get() ?? Journal(path: journalPath) } catch {
            launch.abandon()
            return RunOutcome(runID: nil, exitCode: 1, message: "cannot open the journal: \(error)")
        }
        _ = try? journal.markInterruptedRuns()
        let runID: String
        do {
            runID = try journal.startRun(RunStart(runbook: prepared.runbook.name, paramsJSON: Self.canonicalJSON(prepared.params),
                                                  hosts: prepared.hosts.map(\.name), planDigest: saved.map { _ in prepared.digests["runbook"] ?? "" }))
        } catch {
            launch.abandon()
            return RunOutcome(runID: nil, exitCode: 1, message: "cannot write the journal: \(error)")
        }
        func finish(_ status: RunStatus, _ code: Int32, _ message: String) -> RunOutcome {
            try? journal.finishRun(runID, status: status, exitCode: code, message: message)
            events.emit(.runFinished(id: runID, status: status.rawValue, exitCode: code, message: message))
            return RunOutcome(runID: runID, exitCode: code, message: message)
        }
        let info = LockInfo.current(runID: runID, runbook: prepared.runbook.name)
        let localLock: LocalLock
        do {
            localLock = try LocalLock.acquire(stateDir: settings.stateDir, info: info)
        } catch {
            launch.abandon()
            return finish(.refused, 3, "\(error)")
        }
        defer { _ = try? localLock.release() }
        launch.lockInfo.yield(info)
        let hostResults = await connecting.value
        let connections = hostResults.mapValues(\.connection)
        let transports = connections.compactMapValues { try? $0.get() }
        let lockAttempts = prepared.touchedHosts.compactMap { hostResults[$0.name]?.lock }
        do {
            let outcome = try await applyConnected(request, prepared: prepared, saved: saved, options: options, journal: journal,
                                                   runID: runID, info: info, connections: connections, transports: transports,
                                                   lockAttempts: lockAttempts)
            await Self.closeAll(transports)
            return outcome
        } catch {
            await Self.closeAll(transports)
            throw error
        }
    }

    private func applyConnected(_ request: RunRequest, prepared: PreparedRun, saved: Plan?, options: ApplyOptions, journal: Journal,
                                runID: String, info: LockInfo, connections: [String: Result<any Transport, TransportError>],
                                transports: [String: any Transport], lockAttempts: [HostLockAttempt]) async throws(DiagnosticError) -> RunOutcome {
        func finish(_ status: RunStatus, _ code: Int32, _ message: String) -> RunOutcome {
            try? journal.finishRun(runID, status: status, exitCode: code, message: message)
            events.emit(.runFinished(id: runID, status: status.rawValue, exitCode: code, message: message))
            return RunOutcome(runID: runID, exitCode: code, message: message)
        }
        let unreachable = connections.compactMap { _, r -> String? in
            if case .failure(let e) = r { return e.description }
            return nil
        }.sorted()
        let locked: [HostLockAttempt]
        switch await allOrNothing(lockAttempts, info: info) {
        case .failure(let refusal):
            if unreachable.isEmpty { return finish(.refused, 3, "\(refusal.message); nothing was changed") }
            locked = []
        case .success(let taken): locked = taken
        }
        if !unreachable.isEmpty {
            await self.releaseHostLocks(locked, info: info)
            return finish(.failed, 1, "cannot reach every host; nothing was changed:\n  " + unreachable.joined(separator: "\n  "))
        }
        func releaseHostLocks() async { await self.releaseHostLocks(locked, info: info) }

        let plan: Plan
        let operations: [String: [PlannedInstance]]
        do {
            (plan, operations) = try await makePlan(request, prepared: prepared, transports: transports)
        } catch let error as DiagnosticError {
            await releaseHostLocks()
            _ = finish(.refused, 2, "invalid input")
            throw error
        } catch {
            await releaseHostLocks()
            return finish(.failed, 1, "planning failed: \(error)")
        }
        if let saved {
            let differences = Self.compare(saved: saved, fresh: plan)
            if !differences.isEmpty {
                await releaseHostLocks()
                return finish(.refused, 3, "the plan is stale; nothing was applied:\n  " + differences.joined(separator: "\n  "))
            }
        }
        events.emit(.planned(plan))
        if !options.yes && saved == nil {
            guard let confirm = options.confirm else {
                await releaseHostLocks()
                return finish(.refused, 3, "not confirmed: no terminal to ask on; pass --yes to apply without asking")
            }
            if !confirm(plan) {
                await releaseHostLocks()
                return finish(.refused, 3, "not confirmed; nothing was changed")
            }
        }
        events.emit(.runStarted(id: runID, runbook: prepared.runbook.name, hosts: prepared.hosts.map(\.name)))

        // Apply in rolling batches.
        let rollbackEnabled = options.rollback && prepared.runbook.rollback == .auto
        var outcomes: [HostOutcome] = []
        var failures = 0
        var stopped = false
        for batch in prepared.batches {
            let results = await boundedMap(batch, limit: settings.forks) { host in
                // A host's steps run on the thread that drives its connection (over SSH): each
                // command's end resumes the next step there, without waking another thread.
                let transport = transports[host.name]!
                return await withTaskExecutorPreference(transport.preferredExecutor) {
                    await self.applyHost(host, transports: transports, plans: operations[host.name] ?? [],
                                         prepared: prepared, journal: journal, runID: runID,
                                         interruption: options.interruption)
                }
            }
            outcomes += results
            failures += results.filter { $0.failure != nil }.count
            if failures > prepared.runbook.maxFail || options.interruption?.requested != nil {
                stopped = true
                break
            }
        }
        let failed = outcomes.filter { $0.failure != nil }
        if failed.isEmpty {
            // Nothing more to do on any host: each connection closes as soon as its lock is gone.
            await self.releaseHostLocks(locked, info: info, thenClose: true)
            let changed = outcomes.filter(\.changed).count
            return finish(.succeeded, 0, "applied: \(changed) of \(outcomes.count) host\(outcomes.count == 1 ? "" : "s") changed")
        }
        let summary = failed.map { "\($0.host): \($0.failure!)" }.joined(separator: "; ")
        guard rollbackEnabled else {
            await releaseHostLocks()
            return finish(.failed, 1, "failed (rollback off): \(summary)")
        }
        // Failed hosts are rolled back; when the run stopped, every changed host is.
        let targets = outcomes.filter { $0.failure != nil || (stopped && !$0.applied.isEmpty) }
        let rollbackResults = await boundedMap(targets, limit: settings.forks) { outcome in
            await self.rollBack(outcome.applied.reversed(), host: outcome.host, transports: transports,
                                secrets: prepared.secrets, journal: journal, runID: runID, prepared: prepared)
        }
        await releaseHostLocks()
        let incomplete = rollbackResults.flatMap { $0.failures }
        let irreversible = rollbackResults.flatMap { $0.irreversible }
        if !incomplete.isEmpty {
            return finish(.rollbackFailed, 4, "failed: \(summary); ROLLBACK INCOMPLETE, a person must look: " + incomplete.joined(separator: "; "))
        }
        let note = irreversible.isEmpty ? "" : "; not undone (irreversible): " + irreversible.joined(separator: ", ")
        return finish(.rolledBack, 1, "failed: \(summary); rolled back\(note)")
    }

    /// Differences between a saved plan and a fresh one (empty: the saved plan still holds).
    static func compare(saved: Plan, fresh: Plan) -> [String] {
        var differences: [String] = []
        let freshByAddress = Dictionary(fresh.changes.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        for old in saved.changes {
            guard let new = freshByAddress[old.address] else {
                differences.append("\(old.address): no longer in the plan")
                continue
            }
            let oldFacts = Dictionary(old.fingerprints.map { ($0.fact, $0.digest) }, uniquingKeysWith: { a, _ in a })
            for fact in new.fingerprints where oldFacts[fact.fact] != fact.digest {
                differences.append("\(old.address): \(fact.fact) changed since the plan was made")
            }
            if old.action != new.action {
                differences.append("\(old.address): was \(old.action.rawValue), now \(new.action.rawValue)")
            } else if old.operationsDigest != new.operationsDigest && !differences.contains(where: { $0.hasPrefix(old.address + ":") }) {
                differences.append("\(old.address): what it would do changed")
            }
        }
        if saved.changes.count != fresh.changes.count {
            differences.append("the number of changes went from \(saved.changes.count) to \(fresh.changes.count)")
        }
        return differences
    }

    /// Applies one host's steps (each iteration of a loop, each on the host it is delegated
    /// to) in order; stops at the first failure.
    func applyHost(_ host: RunbookCore.Host, transports: [String: any Transport], plans: [PlannedInstance], prepared: PreparedRun,
                   journal: Journal, runID: String, interruption: Interruption? = nil) async -> HostOutcome {
        var outcome = HostOutcome(host: host.name)
        let total = plans.count
        let masker = prepared.secrets.masker
        var context: TemplateContext
        do {
            context = try self.context(for: host, prepared: prepared, steps: [:])
        } catch {
            outcome.failure = "\(error)"
            return outcome
        }
        let leader = prepared.batchLeader(of: host.name)
        // A successful step's outcome goes into the journal with the host's next intent (one
        // commit per step instead of two), or when the host is done.
        var pendingOutcome: StepOutcome? = nil
        defer { if let pendingOutcome { try? journal.recordOutcome(pendingOutcome) } }
        let encoder = JSONEncoder()
        // A looped step's results: `steps.ID` holds the last iteration's outputs and `results`, all of them.
        var loopResults: [Int: [Value]] = [:]
        for (index, planned) in plans.enumerated() {
            let step = planned.instance.step
            let instance = planned.instance
            let target = instance.delegate ?? host
            let transport = transports[target.name]!
            let shownHost = planned.plan.change.hostDisplay
            let shownName = instance.iteration.map { "\(step.name) [\($0)]" } ?? step.name
            if let signal = interruption?.requested {
                outcome.failure = "interrupted by \(signal) before \(shownName)"
                events.emit(.hostFailed(host: host.name, message: outcome.failure!))
                return outcome
            }
            var plan = planned.plan
            let stepContext = instance.context(context)
            let started = ContinuousClock.now
            events.emit(.stepStarted(host: shownHost, index: index, total: total, name: shownName))
            func finishStep(_ status: StepStatus, _ message: String?) {
                events.emit(.stepFinished(host: shownHost, index: index, total: total, name: shownName, status: status,
                                          duration: .now - started, message: message.map(masker.mask)))
            }
            func record(_ outputs: [String: Value]) {
                guard let id = step.id else { return }
                guard instance.iteration != nil else {
                    context.steps[id] = .map(outputs)
                    return
                }
                loopResults[step.index, default: []].append(.map(outputs))
                var last = outputs
                let all = loopResults[step.index]!
                last["results"] = .list(all)
                last["changed"] = .bool(all.contains { $0["changed"]?.boolValue == true })
                context.steps[id] = .map(last)
            }
            if step.runOnce, let leader, leader != host.name {
                record(["changed": false, "skipped": true])
                finishStep(.skipped, "run_once: runs on \(leader) only")
                continue
            }
            do {
                if plan.deferredUntilApply {
                    plan = try await planStep(step, host: target, transport: transport, context: stepContext, prepared: prepared, atApply: true)
                    Self.address(&plan.change, instance: instance, host: host.name)
                } else if plan.change.action != .noop,
                          let when = try step.conditions.first(where: { !(try prepared.templates.evaluate(condition: $0, at: step.location, context: stepContext)) }) {
                    // Planned to run, but what the condition reads (gathered facts) says no now.
                    plan.change.action = .noop
                    plan.change.reason = "when is false at apply time: \(when)"
                    plan.operation = .nothing
                }
            } catch {
                outcome.failure = "\(shownName): \(error)"
                finishStep(.failed, "\(error)")
                return outcome
            }
            if plan.change.action == .noop {
                record(["changed": false, "rc": 0, "stdout": "", "stderr": ""])
                if planned.plan.change.action != .noop {
                    // The plan showed it would run: the journal keeps why it did not.
                    if let entry = try? journal.recordIntent(run: runID, host: host.name, stepIndex: step.index, stepName: step.name,
                                                             kind: step.kind, phase: .apply, undo: nil, irreversible: false,
                                                             target: instance.delegate?.name, iteration: instance.iteration,
                                                             completing: pendingOutcome) {
                        pendingOutcome = StepOutcome(entry: entry, status: .skipped, changed: false,
                                                     message: plan.change.reason.map(masker.mask))
                    }
                }
                finishStep(.skipped, plan.change.reason)
                continue
            }
            var backup: String? = nil
            if case .putFile(let path, _, _, _, _, _, _, _) = plan.operation {
                backup = Self.backupPath(for: path, runID: runID, step: step.index, iteration: instance.iteration,
                                         for: instance.delegate == nil ? nil : host.name)
            }
            let undo = Self.undoRecord(for: plan.operation, step: step, runID: runID, backup: backup)
            // A command is handed to the transport now (over SSH its channel opens while the
            // intent is committed) and starts only once the commit is done (the gate opens).
            var command: PendingCommand? = nil
            let gate = CommandGate()
            if case .run(let line, _) = plan.operation {
                command = transport.start(Become.wrap(line, if: step.become), stdin: [], timeout: step.timeout ?? Self.defaultStepTimeout, onOutput: nil, startingAfter: gate)
            }
            let entry: Int64
            do {
                entry = try journal.recordIntent(run: runID, host: host.name, stepIndex: step.index, stepName: step.name, kind: step.kind,
                                                 phase: .apply, undo: try encoder.encode(undo), irreversible: !plan.change.reversible,
                                                 target: instance.delegate?.name, iteration: instance.iteration,
                                                 completing: pendingOutcome)
                pendingOutcome = nil
            } catch {
                gate.cancel()
                _ = try? await command?.output()
                outcome.failure = "cannot write the journal: \(error)"
                finishStep(.failed, outcome.failure)
                return outcome
            }
            outcome.applied.append(AppliedStep(entry: entry, stepIndex: step.index, name: shownName, undo: undo,
                                               target: instance.delegate?.name, iteration: instance.iteration,
                                               replay: Self.replay(step, plan.operation, context: stepContext)))
            gate.open()
            var result: StepResult = .failure("not run")
            for attempt in 0...max(0, step.retries) {
                if attempt > 0 { try? await Task.sleep(for: step.delay) }
                if attempt == 0, let command {
                    do throws(TransportError) {
                        result = Self.commandResult(try await command.output(), step: step)
                    } catch {
                        result = .failure(error.message)
                    }
                } else {
                    result = await execute(plan.operation, step: step, transport: transport, context: stepContext, prepared: prepared,
                                           runID: runID, delegated: instance.delegate != nil, backup: backup)
                }
                if case .success = result { break }
            }
            switch result {
            case .success(let outputs, let message):
                outcome.applied[outcome.applied.count - 1].succeeded = true
                let changed = outputs["changed"]?.boolValue ?? false
                outcome.changed = outcome.changed || changed
                pendingOutcome = StepOutcome(entry: entry, status: .done, changed: changed, message: message.map(masker.mask))
                record(outputs)
                if StepRegistry.kind(step.kind)?.outputsAreFacts == true {
                    context.facts.merge(outputs.filter { $0.key != "changed" }) { _, new in new }
                }
                finishStep(changed ? .changed : .ok, message)
            case .failure(let message):
                let masked = masker.mask(message)
                try? journal.recordOutcome(entry: entry, status: .failed, changed: false, message: masked)
                // The run's summary says what failed; a report under it (a load test's
                // table) stays with the step, shown above and journaled.
                outcome.failure = "\(shownName)\(instance.delegate.map { " (on \($0.name))" } ?? ""): \(masked.prefix { $0 != "\n" })"
                finishStep(.failed, masked)
                return outcome
            }
        }
        return outcome
    }

    enum StepResult: Sendable {
        /// Outputs for later steps, and the action's report, if it made one (shown and journaled).
        case success([String: Value], message: String? = nil)
        case failure(String)
    }

    /// A finished command as a step's result: its outputs (`rc`, `stdout`, `stderr`, and what
    /// the kind parses from stdout), or a failure naming the status and the last lines of stderr.
    static func commandResult(_ output: CommandOutput, step: Step) -> StepResult {
        var outputs: [String: Value] = ["changed": true, "rc": .int(Int(output.exitStatus ?? -1)),
                                        "stdout": .string(output.stdoutText), "stderr": .string(output.stderrText)]
        if output.succeeded, let kind = StepRegistry.kind(step.kind) {
            outputs.merge(kind.outputs(stdout: output.stdoutText)) { _, new in new }
        }
        guard output.succeeded else {
            let tail = output.stderrText.split(separator: "\n").suffix(5).joined(separator: " | ")
            return .failure("\(output.statusText)\(tail.isEmpty ? "" : ": " + tail)")
        }
        // A read-only command (a check) changed nothing, and what it printed is its report.
        let readOnly = StepRegistry.undoBehavior(kind: step.kind, arguments: step.arguments) == .readOnly
        if readOnly { outputs["changed"] = false }
        if readOnly || StepRegistry.kind(step.kind)?.reportsOutput == true {
            let report = output.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            if !report.isEmpty { return .success(outputs, message: report) }
        }
        return .success(outputs)
    }

    /// How long a step's command may run when the step sets no `timeout:` (then it is ended,
    /// its whole process group, and the step fails).
    static let defaultStepTimeout: Duration = .seconds(3600)

    /// The backup a file step keeps beside the file, for undo: one per write, so that a file
    /// written several times in a run (a loop, two hosts delegating to one load balancer) is
    /// put back write by write: `.NAME.runbook-bak-RUN_ID.STEP[.ITERATION]`, with the host the
    /// write was for when it was delegated (`.NAME.runbook-bak-RUN_ID.web1.3.2`).
    static func backupPath(for path: String, runID: String, step: Int = 0, iteration: Int? = nil, for host: String? = nil) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        let tag = ([host, String(step + 1), iteration.map(String.init)].compactMap { $0 }).joined(separator: ".")
        return (directory == "/" ? "" : directory) + "/.\(base).runbook-bak-\(runID).\(tag)"
    }

    /// How many runs' backups of a file are kept on the host (`runbook_keep_backups`; 0 keeps all).
    static let defaultKeptBackupRuns = 5

    /// Removes the backups of `path` (`.NAME.runbook-bak-RUN_ID.…`, see `backupPath`) of every
    /// run but the newest `keep` (run IDs sort by time); a name that holds no run ID is not a
    /// backup and stays. The name is an argument, never code.
    static func pruneBackupsCommand(for path: String, keep: Int) -> ShellCommand {
        let directory = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        let script = [
            "cd -- \"$1\" || exit 0; n=$2",
            "runs=$(for f in .\"$n\".runbook-bak-*; do [ -e \"$f\" ] || continue; r=${f#.\"$n\".runbook-bak-}; r=${r%%.*}; case $r in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]-*) echo \"$r\";; esac; done | sort -u -r | tail -n +$(($3 + 1)))",
            "for r in $runs; do rm -f -- .\"$n\".runbook-bak-\"$r\" .\"$n\".runbook-bak-\"$r\".*; done",
        ].joined(separator: "; ")
        return ShellCommand(argv: ["sh", "-c", script, "prune", directory.isEmpty ? "/" : directory, base, String(keep)])
    }

    /// When rollback runs a step of `kind` again (never for an unknown kind).
    static func replayPhase(_ kind: String) -> ReplayPhase { StepRegistry.kind(kind)?.replay ?? .never }

    /// Records why rollback cannot run `applied` (of `kind`) again, where it would have: a
    /// service action or reload that failed changed nothing, so it is not run again anyway.
    static func noteReplayProblem(_ problem: String, kind: String, on applied: inout AppliedStep) {
        let phase = replayPhase(kind)
        guard phase == .recheck || (phase == .afterRestore && applied.succeeded) else { return }
        applied.replayProblem = problem
    }

    static func replay(_ step: Step, _ operation: StepOperation, context: TemplateContext? = nil) -> Replay? {
        // A service action with its own undo (gunicorn TTIN undone by TTOU) is undone in
        // phase 1; running it again in phase 2 would redo it.
        if case .run(_, let undo) = operation, undo != nil { return nil }
        switch replayPhase(step.kind) {
        case .never:
            return nil
        case .afterRestore:
            return Replay(phase: 2, step: step, operation: operation, context: context)
        case .recheck:
            // A check of the new state (`recheck: false`), such as "8 workers run", would fail
            // by design once rollback restored the old state; a load test is heavy, and runs
            // again only when it says `recheck: true`.
            if !StepRegistry.rechecks(kind: step.kind, arguments: step.arguments) { return nil }
            return Replay(phase: 3, step: step, operation: operation, context: context)
        }
    }

    /// `backup`: where a file step's previous content is copied (`backupPath`).
    static func undoRecord(for operation: StepOperation, step: Step, runID: String, backup: String? = nil) -> UndoRecord {
        switch operation {
        case .putFile(let path, let contents, _, _, _, _, let existed, let before):
            return .restoreFile(path: path, backup: existed ? (backup ?? backupPath(for: path, runID: runID, step: step.index)) : nil,
                                beforeDigest: before, afterDigest: sha256Hex(contents))
        case .run:
            // The undo runs as the step did: through sudo when the step has become.
            if let undo = operation.undoCommand(become: step.become) { return .command(CommandRecord(undo)) }
            switch StepRegistry.undoBehavior(kind: step.kind, arguments: step.arguments) {
            case .rerun, .kept, .readOnly, .restore: return .nothing
            case .irreversible:
                return .irreversible(StepRegistry.kind(step.kind)?.irreversibleReason(step.arguments) ?? "\(step.kind) cannot be undone")
            }
        case .assert, .sleep, .action, .nothing:
            return .nothing
        }
    }

    /// Executes one planned operation (the only place a step changes a host).
    /// `gate`: a `.run` operation's command starts only once it opens (see `CommandGate`).
    /// `delegated`: the step runs on another host for this one; other hosts' steps may change
    /// the same files there, so a file is written only while it is what the plan read.
    func execute(_ operation: StepOperation, step: Step, transport: any Transport, context: TemplateContext,
                 prepared: PreparedRun, runID: String, delegated: Bool = false, backup: String? = nil) async -> StepResult {
        do throws(TransportError) {
            switch operation {
            case .putFile(let path, let contents, let mode, let owner, let group, let validate, let existed, let before):
                if delegated {
                    let current = try await transport.readFile(path).map(sha256Hex) ?? "absent"
                    if current != before {
                        return .failure("\(path) on \(transport.hostName) changed since the plan was made (another host's steps, or a hand edit); nothing was written. Delegated steps that change the same file run one host at a time: serial: 1, or run_once")
                    }
                }
                if existed {
                    let backup = backup ?? Self.backupPath(for: path, runID: runID, step: step.index)
                    let copy = try await transport.run(Become.wrap("cp -p -- \(path) \(backup)", if: step.become), stdin: [], timeout: step.timeout, onOutput: nil)
                    guard copy.succeeded else { return .failure("cannot back up \(path): \(copy.stderrText)") }
                    // Older runs' backups of the file beyond the newest `runbook_keep_backups`
                    // runs go (a failed prune leaves them; it never fails the step).
                    let host = prepared.touchedHosts.first { $0.name == transport.hostName }
                    let keep = host?.vars["runbook_keep_backups"].flatMap { Int($0.plainText) } ?? Self.defaultKeptBackupRuns
                    if keep > 0 {
                        _ = try? await transport.run(Become.wrap(Self.pruneBackupsCommand(for: path, keep: keep), if: step.become),
                                                     stdin: [], timeout: .seconds(60), onOutput: nil)
                    }
                }
                try await transport.writeFileAtomically(path, contents: contents, mode: mode, owner: owner, group: group,
                                                        validate: validate)
                return .success(["changed": true, "path": .string(path)])
            case .run:
                // The command the plan showed (`StepOperation.commands`), as it was shown.
                let commands = operation.commands(become: step.become)
                return Self.commandResult(try await transport.run(commands[0], stdin: [], timeout: step.timeout ?? Self.defaultStepTimeout,
                                                                  onOutput: nil),
                                          step: step)
            case .assert(let conditions, let message):
                for condition in conditions {
                    let holds: Bool
                    do {
                        holds = try prepared.templates.evaluate(condition: condition, at: step.location, context: context)
                    } catch {
                        return .failure("\(error)")
                    }
                    if !holds { return .failure(message ?? "assertion failed: \(condition)") }
                }
                return .success(["changed": false])
            case .sleep(let duration):
                try? await Task.sleep(for: duration)
                return .success(["changed": false])
            case .action(let action):
                switch await action.perform(on: transport, controller: LocalTransport(hostName: "controller"), step: step) {
                case .success(let outputs, let message):
                    var all = outputs
                    if all["changed"] == nil { all["changed"] = false }
                    return .success(all, message: message)
                case .failure(let message):
                    return .failure(message)
                }
            case .nothing:
                return .success(["changed": false])
            }
        } catch {
            return .failure(error.message)
        }
    }
}

extension RunbookCore.Host {
    /// Where this host's run lock lives: the host var `runbook_lock_path`, else `/tmp/runbook.lock`.
    public var lockPath: String { vars["runbook_lock_path"]?.stringValue ?? HostLock.defaultPath }
}

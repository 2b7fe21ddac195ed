import Foundation
import RunbookCore
import RunbookSteps

/// What rolling back one host achieved.
struct RollbackResult: Sendable {
    var failures: [String] = []
    var irreversible: [String] = []
    /// How many undo actions changed something.
    var restored = 0
}

extension Engine {
    /// Undoes `steps` (already in reverse order) on one host, journaling each undo.
    ///
    /// Phase 1 restores state in reverse order; phase 2 runs the run's service actions and
    /// reloads again in their original order (so services pick up the restored files);
    /// phase 3 runs its health checks again. Phases 2 and 3 need the runbook (`prepared`):
    /// an automatic rollback has it; `runbook rollback RUN_ID` loads it again with the run's
    /// params and plans those steps anew on the host.
    /// A delegated step is undone (and run again) on the host it ran on (`transports` holds
    /// every host of the run).
    func rollBack(_ steps: [AppliedStep], host: String, transports: [String: any Transport], secrets: SecretStore,
                  journal: Journal, runID: String, prepared: PreparedRun? = nil) async -> RollbackResult {
        var result = await restore(steps, host: host, transports: transports, secrets: secrets, journal: journal, runID: runID)
        // Nothing restored: services already run what they ran; there is nothing to re-check.
        guard result.restored > 0 else { return result }
        for applied in steps.reversed() {
            guard let problem = applied.replayProblem else { continue }
            result.failures.append("\(host): \(applied.name): not run again after the restore: \(problem)")
            events.emit(.undoFinished(host: host, name: applied.name, ok: false, message: "not run again: \(problem)"))
        }
        guard let prepared else { return result }
        let replays = steps.reversed().compactMap { (applied: AppliedStep) -> (Replay, AppliedStep)? in
            guard let replay = applied.replay else { return nil }
            return replay.phase == 2 && !applied.succeeded ? nil : (replay, applied)
        }
        for phase in [2, 3] {
            for (replay, applied) in replays where replay.phase == phase {
                let entry = try? journal.recordIntent(run: runID, host: host, stepIndex: replay.step.index, stepName: replay.step.name,
                                                      kind: replay.step.kind, phase: .rollback, undo: nil, irreversible: false,
                                                      target: applied.target, iteration: applied.iteration)
                let context = replay.context ?? (try? self.context(for: prepared.inventory.host(named: host)!, prepared: prepared, steps: [:]))
                    ?? TemplateContext(secrets: prepared.secrets)
                guard let transport = transports[applied.target ?? host] else { continue }
                let outcome = await execute(replay.operation, step: replay.step, transport: transport, context: context,
                                            prepared: prepared, runID: runID)
                switch outcome {
                case .success(_, let report):
                    let shown = report.map { "\n" + secrets.masker.mask($0) } ?? ""
                    if let entry { try? journal.recordOutcome(entry: entry, status: .done, changed: true, message: "phase \(phase)" + shown) }
                    events.emit(.undoFinished(host: Self.shown(host, applied.target), name: applied.name, ok: true, message: "ran again (rollback phase \(phase))" + shown))
                case .failure(let message):
                    let masked = secrets.masker.mask(message)
                    if let entry { try? journal.recordOutcome(entry: entry, status: .failed, changed: false, message: masked) }
                    result.failures.append("\(Self.shown(host, applied.target)): \(applied.name) (rollback phase \(phase)): \(masked)")
                    events.emit(.undoFinished(host: Self.shown(host, applied.target), name: applied.name, ok: false, message: masked))
                }
            }
        }
        return result
    }

    /// Rollback phase 1: undo records in reverse order.
    func restore(_ steps: [AppliedStep], host: String, transports: [String: any Transport], secrets: SecretStore,
                 journal: Journal, runID: String) async -> RollbackResult {
        var result = RollbackResult()
        events.emit(.rollbackStarted(host: host))
        for step in steps {
            let entry = try? journal.recordIntent(run: runID, host: host, stepIndex: step.stepIndex, stepName: step.stepName,
                                                  kind: "undo", phase: .rollback, undo: nil, irreversible: false,
                                                  target: step.target, iteration: step.iteration)
            let shownHost = Self.shown(host, step.target)
            guard let transport = transports[step.target ?? host] else {
                result.failures.append("\(shownHost): \(step.name): not connected to \(step.target ?? host)")
                continue
            }
            let outcome = await undo(step.undo, transport: transport, secrets: secrets)
            switch outcome {
            case .undone(let message):
                result.restored += 1
                if let entry { try? journal.recordOutcome(entry: entry, status: .done, changed: true, message: message) }
                events.emit(.undoFinished(host: shownHost, name: step.name, ok: true, message: message))
            case .nothingToDo:
                if let entry { try? journal.recordOutcome(entry: entry, status: .noop, changed: false, message: nil) }
            case .irreversible(let reason):
                result.irreversible.append("\(shownHost): \(step.name) (\(reason))")
                if let entry { try? journal.recordOutcome(entry: entry, status: .skipped, changed: false, message: "irreversible: \(reason)") }
                events.emit(.undoFinished(host: shownHost, name: step.name, ok: false, message: "not undone: \(reason)"))
            case .failed(let message):
                let masked = secrets.masker.mask(message)
                result.failures.append("\(shownHost): \(step.name): \(masked)")
                if let entry { try? journal.recordOutcome(entry: entry, status: .failed, changed: false, message: masked) }
                events.emit(.undoFinished(host: shownHost, name: step.name, ok: false, message: masked))
            }
        }
        return result
    }

    enum UndoOutcome {
        case undone(String)
        case nothingToDo
        case irreversible(String)
        case failed(String)
    }

    /// Undoes one step from its record. Restoring a file checks digests first, so undoing a
    /// step that never got to change anything (a controller killed mid-step) is harmless.
    func undo(_ record: UndoRecord, transport: any Transport, secrets: SecretStore) async -> UndoOutcome {
        do throws(TransportError) {
            switch record {
            case .nothing:
                return .nothingToDo
            case .irreversible(let reason):
                return .irreversible(reason)
            case .command(let recorded):
                guard let command = recorded.command(secret: { secrets.lookup($0) }) else {
                    return .failed("the undo command needs a secret that is no longer defined: \(recorded.display)")
                }
                let output = try await transport.run(command, stdin: [], timeout: .seconds(600), onOutput: nil)
                guard output.succeeded else { return .failed("undo `\(recorded.display)`: \(output.statusText): \(output.stderrText)") }
                return .undone("ran " + Self.oneLine(recorded.display))
            case .restoreFile(let path, let backup, let before, _):
                let current = try await transport.readFile(path)
                let currentDigest = current.map(sha256Hex) ?? "absent"
                if currentDigest == before {
                    // The content is as it was; the mode and owner may not be (a step that
                    // changed only those): the backup, which kept them, goes back then.
                    guard let backup, let kept = try await transport.stat(backup) else { return .nothingToDo }
                    if let now = try await transport.stat(path),
                       now.permissions == kept.permissions, now.uid == kept.uid, now.gid == kept.gid {
                        try? await transport.removeFile(backup)
                        return .nothingToDo
                    }
                    let output = try await transport.run(Self.restoreCommand(backup: backup, path: path), stdin: [], timeout: .seconds(60), onOutput: nil)
                    guard output.succeeded else { return .failed("cannot restore the mode and owner of \(path): \(output.stderrText)") }
                    return .undone("restored the mode and owner of \(path)")
                }
                if before == "absent" {
                    try await transport.removeFile(path)
                    return .undone("removed \(path)")
                }
                guard let backup, try await transport.stat(backup) != nil else {
                    return .failed("cannot restore \(path): its backup is gone")
                }
                let output = try await transport.run(Self.restoreCommand(backup: backup, path: path), stdin: [], timeout: .seconds(60), onOutput: nil)
                guard output.succeeded else { return .failed("cannot restore \(path): \(output.stderrText)") }
                return .undone("restored \(path)")
            }
        } catch {
            return .failed(error.message)
        }
    }

    /// A command as one line of the rollback's report: a one-line command as it is; of a
    /// script, the first line fed to its heredoc (a built-in kind's SQL) or else its last line,
    /// with the number of lines; cut at 120 characters. The journal's undo record keeps it whole.
    public static func oneLine(_ command: String) -> String {
        func cut(_ text: String) -> String { text.count > 120 ? String(text.prefix(119)) + "…" : text }
        let lines = command.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard lines.count > 1 else { return cut(lines.first ?? "") }
        if let start = lines.firstIndex(where: { $0.contains("<<'") }), start + 1 < lines.count {
            return cut(lines[start + 1] + " (a \(lines.count)-line script)")
        }
        return cut(lines.last! + " (a \(lines.count)-line script)")
    }

    /// `web2` or `web2 → lb`.
    static func shown(_ host: String, _ target: String?) -> String { target.map { "\(host) → \($0)" } ?? host }

    /// The command that puts a file's backup back in place.
    static func restoreCommand(backup: String, path: String) -> ShellCommand { "mv -fT -- \(backup) \(path)" }

    /// What rollback would do on one host for `steps` (already in reverse order), read from
    /// the host without changing it: the same decisions `undo` and the replay phases make.
    func preview(_ steps: [AppliedStep], host: String, transports: [String: any Transport], secrets: SecretStore,
                 replaysKnown: Bool, edited: Set<EditedFile>) async -> [RollbackPreview.Item] {
        var items: [RollbackPreview.Item] = []
        let masker = secrets.masker
        var shownHost = host
        func add(_ step: String, _ phase: Int, _ summary: String, _ commands: [String] = [], problem: Bool = false) {
            items.append(RollbackPreview.Item(host: shownHost, step: step, phase: phase, summary: masker.mask(summary),
                                              commands: commands.map(masker.mask), problem: problem))
        }
        for applied in steps {
            shownHost = Self.shown(host, applied.target)
            guard let transport = transports[applied.target ?? host] else {
                add(applied.name, 1, "not connected to \(applied.target ?? host)", problem: true)
                continue
            }
            switch applied.undo {
            case .nothing:
                continue
            case .irreversible(let reason):
                add(applied.name, 1, "not undone: \(reason)", problem: true)
            case .command(let recorded):
                add(applied.name, 1, "run its undo", [recorded.display])
            case .restoreFile(let path, let backup, let before, _):
                let current: [UInt8]?
                do { current = try await transport.readFile(path) } catch {
                    add(applied.name, 1, "cannot read \(path): \(error.message)", problem: true)
                    continue
                }
                let currentDigest = current.map(sha256Hex) ?? "absent"
                let changed = edited.contains(EditedFile(shownHost: shownHost, path: path))
                    ? " (it changed since the run: rollback needs --force, and those edits would be lost)" : ""
                if currentDigest == before {
                    // As `undo` decides: the backup goes back when only the mode or owner differ.
                    var kept: FileInfo?
                    if let backup { kept = (try? await transport.stat(backup)) ?? nil }
                    let now = (try? await transport.stat(path)) ?? nil
                    if let backup, let kept, let now,
                       now.permissions != kept.permissions || now.uid != kept.uid || now.gid != kept.gid {
                        add(applied.name, 1, "restore the mode and owner of \(path) from \(backup)",
                            [Self.restoreCommand(backup: backup, path: path).display])
                    } else {
                        add(applied.name, 1, "\(path) is as it was before the run: nothing to restore")
                    }
                } else if before == "absent" {
                    add(applied.name, 1, "remove \(path), which the run created\(changed)")
                } else if let backup, (try? await transport.stat(backup)) != nil {
                    add(applied.name, 1, "restore \(path) from \(backup)\(changed)",
                        [Self.restoreCommand(backup: backup, path: path).display])
                } else {
                    add(applied.name, 1, "cannot restore \(path): its backup is gone", problem: true)
                }
            }
        }
        for applied in steps.reversed() {
            shownHost = Self.shown(host, applied.target)
            if let problem = applied.replayProblem {
                add(applied.name, 2, "not run again after the restore: \(problem)", problem: true)
            } else if let replay = applied.replay, replay.phase == 3 || applied.succeeded {
                add(applied.name, replay.phase, replay.phase == 2 ? "run again once state is restored" : "check again",
                    replay.operation.shownCommands(become: replay.step.become))
            }
        }
        shownHost = host
        if !replaysKnown && steps.contains(where: { $0.replay == nil && $0.replayProblem == nil && !$0.succeeded }) {
            add("", 2, "the runbook does not load: service actions and checks would not run again", problem: true)
        }
        return items
    }

    /// `runbook rollback RUN_ID`: undoes a finished or interrupted run from the journal. With
    /// `dryRun`, shows what it would do (`RunEvent.rollbackPreview`) and changes nothing: no
    /// lock is taken and only reads reach the hosts.
    /// Without `force`, a file the run wrote that has changed since (a hand edit, another
    /// tool) refuses the whole rollback before anything changes: restoring it would lose those
    /// edits. `--dry-run` names them.
    public func rollback(runID prefix: String, dryRun: Bool = false, force: Bool = false) async -> RunOutcome {
        let journal: Journal
        do { journal = try Journal(path: journalPath) } catch {
            return RunOutcome(runID: nil, exitCode: 1, message: "cannot open the journal: \(error)")
        }
        _ = try? journal.markInterruptedRuns()
        guard let runID = try? journal.resolveRunID(prefix), let run = try? journal.run(runID) else {
            return RunOutcome(runID: nil, exitCode: 2, message: "no run matches \(prefix) (see `runbook history`)")
        }
        switch run.status {
        case .running:
            return RunOutcome(runID: runID, exitCode: 3, message: "run \(runID) is still running (pid \(run.pid) on \(run.controller))")
        case .rolledBack:
            return RunOutcome(runID: runID, exitCode: 3, message: "run \(runID) was already rolled back")
        case .refused:
            return RunOutcome(runID: runID, exitCode: 3, message: "run \(runID) was refused and changed nothing")
        default:
            break
        }
        let entries = (try? journal.entries(run: runID)) ?? []
        func key(_ entry: EntryRecord) -> String { "\(entry.host)#\(entry.stepIndex)#\(entry.iteration ?? 0)#\(entry.target ?? "")" }
        let rolledBackEntries = Set(entries.filter { $0.phase == .rollback && $0.status != .failed }.map(key))
        var byHost: [String: [AppliedStep]] = [:]
        var kinds: [Int64: String] = [:]
        for entry in entries where entry.phase == .apply && entry.status != .noop && entry.status != .skipped {
            guard !rolledBackEntries.contains(key(entry)),
                  let data = entry.undo, let undo = try? JSONDecoder().decode(UndoRecord.self, from: data) else { continue }
            kinds[entry.id] = entry.kind
            byHost[entry.host, default: []].append(AppliedStep(entry: entry.id, stepIndex: entry.stepIndex, name: entry.stepDisplay, undo: undo,
                                                               target: entry.target, iteration: entry.iteration,
                                                               succeeded: entry.status == .done))
        }
        if byHost.isEmpty {
            try? journal.finishRun(runID, status: .rolledBack, exitCode: 0, message: "nothing to roll back")
            return RunOutcome(runID: runID, exitCode: 0, message: "run \(runID) changed nothing that can be undone")
        }
        let inventory: Inventory
        let secrets: SecretStore
        do {
            inventory = try InventoryLoader.forCurrentUser().load(path: settings.inventoryPath)
            secrets = try SecretStore(file: settings.stateDir + "/secrets.env")
        } catch {
            return RunOutcome(runID: runID, exitCode: 2, message: error.description)
        }
        // The run's hosts and the hosts its steps were delegated to: each is connected and locked.
        let names = Set(byHost.keys).union(byHost.values.flatMap { $0.compactMap(\.target) })
        let hosts = names.sorted().compactMap { inventory.host(named: $0) }
        if hosts.count != names.count {
            let missing = names.subtracting(hosts.map(\.name)).sorted()
            return RunOutcome(runID: runID, exitCode: 2, message: "hosts of run \(runID) are no longer in the inventory: \(missing.joined(separator: ", "))")
        }
        let info = LockInfo.current(runID: runID, runbook: run.runbook)
        // A lock left by this very run, whose controller is gone, is taken over.
        if let holder = try? LocalLock.read(stateDir: settings.stateDir), holder.runID == runID,
           holder.controller == ControllerIdentity.hostname, !LockInfo.processIsAlive(holder.pid) {
            try? LocalLock.forceRemove(stateDir: settings.stateDir)
        }
        var localLock: LocalLock? = nil
        if !dryRun {
            do { localLock = try LocalLock.acquire(stateDir: settings.stateDir, info: info) } catch {
                return RunOutcome(runID: runID, exitCode: 3, message: "\(error)")
            }
        }
        defer { _ = try? localLock?.release() }
        // Phases 2 and 3 run the run's service actions and health checks again: they need the
        // runbook, loaded anew with the run's params. When it cannot be loaded (removed, now
        // invalid), phase 1 still runs and the outcome says what was not re-run.
        var prepared: PreparedRun? = nil
        do {
            prepared = try prepare(RunRequest(runbook: run.runbook, params: Self.paramStrings(run.paramsJSON)))
        } catch {
            let problem = "the runbook \(run.runbook) does not load: \(error.description)"
            for (host, steps) in byHost {
                byHost[host] = steps.map { applied in
                    var applied = applied
                    if let kind = kinds[applied.entry] { Self.noteReplayProblem(problem, kind: kind, on: &applied) }
                    return applied
                }
            }
        }
        let connections = await connectAll(hosts, secrets: secrets)
        let transports = connections.compactMapValues { try? $0.get() }
        if let prepared {
            for host in hosts {
                guard let steps = byHost[host.name] else { continue }
                byHost[host.name] = await replays(for: steps, kinds: kinds, host: host, transports: transports, prepared: prepared)
            }
        }
        if dryRun {
            guard transports.count == hosts.count else {
                await Self.closeAll(transports)
                let errors = connections.compactMap { _, r -> String? in
                    if case .failure(let e) = r { return e.description }
                    return nil
                }
                return RunOutcome(runID: runID, exitCode: 1, message: "cannot reach: " + errors.sorted().joined(separator: "; "))
            }
            // The same decision `rollback` makes: a file counts as edited once, by what the
            // run's last write of it left.
            let edited = await editedSinceRun(byHost: byHost, transports: transports)
            var items: [RollbackPreview.Item] = []
            for host in hosts where byHost[host.name] != nil {
                items += await preview((byHost[host.name] ?? []).reversed(), host: host.name, transports: transports,
                                       secrets: secrets, replaysKnown: prepared != nil, edited: edited)
            }
            await Self.closeAll(transports)
            events.emit(.rollbackPreview(RollbackPreview(runID: runID, runbook: run.runbook, items: items)))
            let problems = items.filter(\.problem).count
            return RunOutcome(runID: runID, exitCode: 0,
                              message: "dry run: nothing was changed; rollback would take \(items.count) action\(items.count == 1 ? "" : "s")"
                                  + (problems > 0 ? ", \(problems) of them not possible" : ""))
        }
        if !force, transports.count == hosts.count {
            let edited = await editedSinceRun(byHost: byHost, transports: transports)
            if !edited.isEmpty {
                await Self.closeAll(transports)
                return RunOutcome(runID: runID, exitCode: 3, message: "nothing was rolled back: "
                                  + edited.sorted().map { "\($0.shownHost): \($0.path) changed since the run" }.joined(separator: "; ")
                                  + ". Restoring would lose those edits; `runbook rollback \(runID) --force` restores anyway")
            }
        }
        let outcome = await rollbackConnected(runID: runID, run: run, hosts: hosts, byHost: byHost, journal: journal, secrets: secrets,
                                              info: info, connections: connections, transports: transports, prepared: prepared)
        await Self.closeAll(transports)
        return outcome
    }

    /// The files the run wrote that are no longer as it left them: for each file, the last
    /// step (in the order they ran) that wrote it says what the run left; a file back as it
    /// was before the run is not counted (there is nothing to lose).
    func editedSinceRun(byHost: [String: [AppliedStep]], transports: [String: any Transport]) async -> Set<EditedFile> {
        var edited: Set<EditedFile> = []
        for (host, steps) in byHost.sorted(by: { $0.key < $1.key }) {
            var left: [String: (target: String?, before: String, after: String)] = [:]
            var order: [String] = []
            for step in steps {
                guard case .restoreFile(let path, _, let before, let after) = step.undo else { continue }
                let key = (step.target ?? host) + "\u{0}" + path
                if left[key] == nil { order.append(key) }
                left[key] = (step.target, left[key]?.before ?? before, after)
            }
            for key in order {
                let (target, before, after) = left[key]!
                let path = String(key.split(separator: "\u{0}", maxSplits: 1)[1])
                guard let transport = transports[target ?? host] else { continue }
                let current = (try? await transport.readFile(path)) ?? nil
                let digest = current.map(sha256Hex) ?? "absent"
                if digest != after && digest != before {
                    edited.insert(EditedFile(shownHost: Self.shown(host, target), path: path))
                }
            }
        }
        return edited
    }

    /// A file a run wrote that changed since, on the host shown as `shownHost` (`web2 → lb`).
    struct EditedFile: Hashable, Comparable {
        let shownHost: String
        let path: String
        static func < (a: Self, b: Self) -> Bool { (a.shownHost, a.path) < (b.shownHost, b.path) }
    }

    private func rollbackConnected(runID: String, run: RunRecord, hosts: [RunbookCore.Host], byHost: [String: [AppliedStep]],
                                   journal: Journal, secrets: SecretStore, info: LockInfo,
                                   connections: [String: Result<any Transport, TransportError>],
                                   transports: [String: any Transport], prepared: PreparedRun?) async -> RunOutcome {
        if transports.count != hosts.count {
            let errors = connections.compactMap { _, r -> String? in
                if case .failure(let e) = r { return e.description }
                return nil
            }
            return RunOutcome(runID: runID, exitCode: 1, message: "cannot reach: " + errors.sorted().joined(separator: "; "))
        }
        // The run's own host locks (left by a killed controller) are taken over.
        for host in hosts {
            let transport = transports[host.name]!
            if let holder = try? await HostLock.read(on: transport, path: host.lockPath), holder.runID == runID {
                try? await HostLock.forceRemove(on: transport, path: host.lockPath)
            }
        }
        let locked: [HostLockAttempt]
        switch await lockHosts(hosts, transports: transports, info: info) {
        case .failure(let refusal): return RunOutcome(runID: runID, exitCode: 3, message: refusal.message)
        case .success(let taken): locked = taken
        }
        let planned = byHost
        // Hosts that delegated steps to the same host are rolled back one after another.
        let delegated = planned.values.contains { $0.contains { $0.target != nil } }
        let results = await boundedMap(hosts.filter { planned[$0.name] != nil }, limit: delegated ? 1 : settings.forks) { host in
            await self.rollBack((planned[host.name] ?? []).reversed(), host: host.name, transports: transports,
                                secrets: secrets, journal: journal, runID: runID, prepared: prepared)
        }
        await releaseHostLocks(locked, info: info)
        let failures = results.flatMap(\.failures)
        let irreversible = results.flatMap(\.irreversible)
        if !failures.isEmpty {
            let message = "ROLLBACK INCOMPLETE, a person must look: " + failures.joined(separator: "; ")
            try? journal.finishRun(runID, status: .rollbackFailed, exitCode: 4, message: message)
            events.emit(.runFinished(id: runID, status: RunStatus.rollbackFailed.rawValue, exitCode: 4, message: message))
            return RunOutcome(runID: runID, exitCode: 4, message: message)
        }
        let message = "rolled back" + (irreversible.isEmpty ? "" : "; not undone (irreversible): " + irreversible.joined(separator: ", "))
        try? journal.finishRun(runID, status: .rolledBack, exitCode: 0, message: message)
        events.emit(.runFinished(id: runID, status: RunStatus.rolledBack.rawValue, exitCode: 0, message: message))
        return RunOutcome(runID: runID, exitCode: 0, message: message)
    }

    /// The run's params as `-p` text, from the journal's JSON.
    static func paramStrings(_ json: String) -> [String: String] {
        guard let values = try? JSONDecoder().decode([String: Value].self, from: Data(json.utf8)) else { return [:] }
        return values.compactMapValues { value in
            switch value {
            case .string(let s): return s
            case .int(let i): return String(i)
            case .double(let d): return String(d)
            case .bool(let b): return b ? "true" : "false"
            default: return nil
            }
        }
    }

    /// Attaches to each journaled service action, reload and health check the operation that
    /// rollback phases 2 and 3 run again, planned anew from the runbook. A step that no longer
    /// matches the journal (the runbook changed) or cannot be planned without the run's step
    /// results is left out, and the event says so.
    func replays(for steps: [AppliedStep], kinds: [Int64: String], host: RunbookCore.Host, transports: [String: any Transport],
                 prepared: PreparedRun) async -> [AppliedStep] {
        var result = steps
        let context: TemplateContext?
        do { context = try self.context(for: host, prepared: prepared, steps: [:]) } catch {
            context = nil
        }
        for (i, applied) in steps.enumerated() {
            guard let kind = kinds[applied.entry],
                  Self.replayPhase(kind) != .never else { continue }
            guard let context else {
                Self.noteReplayProblem("the host's variables do not render", kind: kind, on: &result[i])
                continue
            }
            guard applied.stepIndex < prepared.runbook.steps.count,
                  case let step = prepared.runbook.steps[applied.stepIndex], step.kind == kind,
                  applied.stepName == step.name else {
                Self.noteReplayProblem("the runbook no longer has this step at #\(applied.stepIndex + 1)", kind: kind, on: &result[i])
                continue
            }
            // The journal shows the step ran, so its `when:` held then; it is not asked again
            // (it may read results of earlier steps, which a later rollback does not have).
            var ran = step
            ran.when = nil
            ran.block?.when = nil
            do {
                // A loop's iteration gets its item again; a delegated step is planned where it ran.
                var stepContext = context
                if let iteration = applied.iteration {
                    let items = try loopItems(step, context: context, prepared: prepared)
                    guard iteration <= items.count else {
                        Self.noteReplayProblem("the loop no longer has an item \(iteration)", kind: kind, on: &result[i])
                        continue
                    }
                    stepContext = context.iterating(items, at: iteration - 1)
                }
                let target = applied.target.flatMap { prepared.inventory.host(named: $0) } ?? host
                guard let transport = transports[target.name] else {
                    Self.noteReplayProblem("not connected to \(target.name)", kind: kind, on: &result[i])
                    continue
                }
                let plan = try await planStep(ran, host: target, transport: transport, context: stepContext, prepared: prepared, atApply: true)
                result[i].replay = Self.replay(step, plan.operation, context: stepContext)
            } catch {
                Self.noteReplayProblem("\(error)", kind: kind, on: &result[i])
            }
        }
        return result
    }
}

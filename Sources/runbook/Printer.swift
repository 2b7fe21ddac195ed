import Foundation
import RunbookCore
import RunbookEngine
import Synchronization

/// Prints engine events for people (plain lines that read well live and in cron logs) or as
/// JSON Lines with `--json`.
final class Printer: EventSink {
    let out: Terminal
    let json: Bool

    /// Built-in kinds' generated scripts whole (`-v`); else each in one line.
    let verbose: Bool

    /// The steps running now, for the live status line on a terminal.
    private let running: RunningSteps?

    init(out: Terminal, json: Bool, verbose: Bool = false) {
        self.out = out
        self.json = json
        self.verbose = verbose
        running = !json && out.columns != nil ? RunningSteps(out: out) : nil
    }

    /// Whether `text` (without colour) fits one line of the terminal; always on a pipe.
    func fits(_ text: String) -> Bool {
        guard let columns = out.columns else { return true }
        return text.count <= columns
    }

    /// A command as a plan shows it: whole when it is the runbook's own (`command`), with
    /// `-v`, or short; a built-in kind's script or long line otherwise in one line that says
    /// what it does (`Engine.oneLine`: a script's SQL, or its last line), marked as such.
    /// `--json` and the journal always keep it whole.
    func shown(_ command: String, kind: String) -> String {
        if verbose || kind == "command" || (!command.contains("\n") && command.count <= 240) {
            return command.replacingOccurrences(of: "\n", with: "\n        ")
        }
        var prefix = ""
        var body = Substring(command)
        for label in ["undo: ", "validate: "] where body.hasPrefix(label) {
            prefix = label
            body = body.dropFirst(label.count)
        }
        let line: String
        if body.contains("\n") {
            line = Engine.oneLine(String(body))
        } else {
            // Its start and its end, cut between words; the last word (often a path) whole.
            let head = body.prefix(100)
            let lastWord = body[(body.lastIndex(of: " ").map(body.index(after:)) ?? body.startIndex)...]
            let tail = body.suffix(max(60, lastWord.count + 1))
            line = String(head[..<(head.lastIndex(of: " ") ?? head.endIndex)]) + " … "
                + String(tail[(tail.firstIndex(of: " ").map(tail.index(after:)) ?? tail.startIndex)...])
        }
        return prefix + line + out.paint("   (-v: whole)", .dim)
    }

    func emit(_ event: RunEvent) {
        if json {
            out.write(Self.jsonLine(event) + "\n")
            return
        }
        switch event {
        case .planned(let plan):
            out.write(render(plan))
        case .runStarted(let id, let runbook, let hosts):
            out.write(out.paint("run \(id): applying \(runbook) to \(hosts.joined(separator: ", "))", .bold) + "\n")
        case .stepStarted(let host, let index, let total, let name):
            running?.started("\(host)  [\(index + 1)/\(total)] \(name)", key: "\(host)#\(index)")
        case .stepFinished(let host, let index, let total, let name, let status, let duration, let message):
            running?.finished(key: "\(host)#\(index)")
            let word: String
            switch status {
            case .changed: word = out.paint("changed", .yellow)
            case .ok: word = out.paint("ok", .green)
            case .skipped: word = out.paint("skipped", .dim)
            case .failed: word = out.paint("FAILED", .red)
            }
            let head = "\(Terminal.oneLine(host))  [\(index + 1)/\(total)] \(Terminal.oneLine(name))"
            let tail = "\(word)  \(DurationText.format(duration))"
            let plainTail = "\(status == .failed ? "FAILED" : status.rawValue)  \(DurationText.format(duration))"
            var line = head + (fits(head + "  " + plainTail) ? "  " : "\n    ") + tail
            // A failure's or skip's reason; an ok step's report (a load test's table).
            if let message { line += "\n    " + message.replacingOccurrences(of: "\n", with: "\n    ") }
            out.write(line + "\n")
        case .hostFailed(let host, let message):
            out.write(out.paint("\(Terminal.oneLine(host)): \(message)", .red) + "\n")
        case .rollbackStarted(let host):
            out.write(out.paint("\(host): rolling back", .magenta) + "\n")
        case .undoFinished(let host, let name, let ok, let message):
            // A multi-line message (a re-run load test's table) continues indented, as under a step.
            let shown = message.split(separator: "\n", omittingEmptySubsequences: false).map { Terminal.oneLine(String($0)) }.joined(separator: "\n    ")
            let head = "\(Terminal.oneLine(host))  undo \(Terminal.oneLine(name))"
            let first = shown.split(separator: "\n").first.map(String.init) ?? ""
            let gap = fits(head + "  " + (ok ? "ok" : "NOT UNDONE") + "  " + first) ? "  " : "\n    "
            out.write(head + gap + (ok ? out.paint("ok", .green) : out.paint("NOT UNDONE", .red)) + "  \(shown)\n")
        case .rollbackPreview(let preview):
            out.write(render(preview))
        case .runFinished(let id, let status, let code, let message):
            let style: Terminal.Style = code == 0 ? .green : (code == 3 ? .yellow : .red)
            // `run ID succeeded: applied: …`, `run ID rolled back`, `run ID rolled back; not undone …`.
            let state = status.replacingOccurrences(of: "_", with: " ")
            let line = message == state ? "run \(id) \(state)"
                : message.hasPrefix(state + ";") ? "run \(id) \(message)" : "run \(id) \(state): \(message)"
            out.write(out.paint(line, style) + "\n")
        case .notification(let target, let ok, let message):
            if ok {
                out.write("notified \(Terminal.oneLine(target))\n")
            } else {
                out.write(out.paint("warning: notification to \(Terminal.oneLine(target)) \(Terminal.oneLine(message))", .yellow) + "\n")
            }
        }
    }

    /// The plan as Terraform shows one: per host, a symbol per step, diffs and commands indented.
    func render(_ plan: Plan) -> String {
        var text = out.paint("Plan for \(plan.runbook) on \(plan.hosts.joined(separator: ", "))", .bold)
        if !plan.params.isEmpty {
            text += " (" + plan.params.keys.sorted().map { "\($0)=\(Terminal.oneLine(plan.params[$0]!.plainDisplay))" }.joined(separator: ", ") + ")"
        }
        text += "\n"
        for host in plan.hosts {
            text += "\n" + out.paint(Terminal.oneLine(host), .bold) + "\n"
            for change in plan.changes where change.host == host {
                let (symbol, style) = Self.symbol(change.action)
                // An iteration shows its number and item; a delegated step where it runs: `→ lb`.
                var name = change.stepName
                if let iteration = change.iteration { name += " [\(iteration)]" + (change.item.map { " (\($0))" } ?? "") }
                if let delegate = change.delegate { name += "  → " + delegate }
                let irreversible = !change.reversible && change.action != .noop ? "  (irreversible)" : ""
                let head = "  \(symbol) " + Terminal.oneLine(name)
                let summary = Terminal.oneLine(change.summary)
                // On a terminal too narrow for the line, the summary goes under the name.
                let gap = fits(head + "  " + summary + irreversible) ? "  " : "\n      "
                text += "  " + out.paint(symbol, style) + " " + Terminal.oneLine(name) + out.paint(gap + summary, .dim)
                    + (irreversible.isEmpty ? "" : out.paint(irreversible, .red)) + "\n"
                // A kind's warning about what the step does (e.g. an unverified certificate).
                if let reason = change.reason, reason.hasPrefix("warning: ") { text += "      " + out.paint(Terminal.oneLine(reason), .yellow) + "\n" }
                if let diff = change.diff, !diff.isEmpty {
                    for diffLine in diff.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                        let s = String(diffLine)
                        let painted = s.hasPrefix("+") && !s.hasPrefix("+++") ? out.paint(s, .green)
                            : s.hasPrefix("-") && !s.hasPrefix("---") ? out.paint(s, .red)
                            : s.hasPrefix("@@") ? out.paint(s, .cyan) : s
                        text += "      " + painted + "\n"
                    }
                }
                // Every command the step runs is shown, a file's `validate` too (after its diff).
                for command in change.commands { text += "      $ " + shown(command, kind: change.kind) + "\n" }
            }
        }
        let count = { (action: ChangeAction) in plan.changes.filter { $0.action == action }.count }
        let irreversible = plan.changes.filter { !$0.reversible && $0.action != .noop }.count
        var parts = ["\(count(.create)) to create", "\(count(.update)) to update", "\(count(.run)) to run"]
        if irreversible > 0 { parts.append(out.paint("\(irreversible) irreversible", .red)) }
        if count(.deferred) > 0 { parts.append("\(count(.deferred)) decided at apply") }
        parts.append("\(count(.check)) checks")
        parts.append("\(count(.noop)) unchanged")
        text += "\n" + out.paint("Plan:", .bold) + " " + parts.joined(separator: ", ") + ".\n"
        return text
    }

    /// A rollback's dry run: per host, one line per action in the order it would run.
    func render(_ preview: RollbackPreview) -> String {
        var text = out.paint("Rollback of run \(preview.runID) (\(preview.runbook)), dry run: nothing is changed", .bold) + "\n"
        var host = ""
        for item in preview.items {
            if item.host != host {
                host = item.host
                text += "\n" + out.paint(host, .bold) + "\n"
            }
            let mark = item.problem ? out.paint("!", .red) : out.paint("<", .magenta)
            let step = item.step.isEmpty ? "" : item.step + "  "
            text += "  \(mark) [phase \(item.phase)] \(step)" + out.paint(item.summary, item.problem ? .red : .dim) + "\n"
            for command in item.commands { text += "      $ " + command.replacingOccurrences(of: "\n", with: "\n        ") + "\n" }
        }
        if preview.items.isEmpty { text += "\nnothing to undo\n" }
        return text
    }

    static func symbol(_ action: ChangeAction) -> (String, Terminal.Style) {
        switch action {
        case .create: return ("+", .green)
        case .update: return ("~", .yellow)
        case .run: return (">", .yellow)
        case .check: return ("·", .blue)
        case .deferred: return ("?", .magenta)
        case .noop: return ("=", .dim)
        }
    }

    static func jsonLine(_ event: RunEvent) -> String {
        var object: [String: Any]
        switch event {
        case .planned(let plan):
            let data = (try? JSONEncoder().encode(plan)) ?? Data()
            object = ["event": "plan", "plan": (try? JSONSerialization.jsonObject(with: data)) ?? [:]]
        case .runStarted(let id, let runbook, let hosts):
            object = ["event": "run_started", "run_id": id, "runbook": runbook, "hosts": hosts]
        case .stepStarted(let host, let index, _, let name):
            object = ["event": "step_started", "host": host, "step": index, "name": name]
        case .stepFinished(let host, let index, _, let name, let status, let duration, let message):
            object = ["event": "step_finished", "host": host, "step": index, "name": name, "status": status.rawValue,
                      "duration_ms": (DurationText.milliseconds(duration) * 10).rounded() / 10]
            if let message { object["message"] = message }
        case .hostFailed(let host, let message):
            object = ["event": "host_failed", "host": host, "message": message]
        case .rollbackStarted(let host):
            object = ["event": "rollback_started", "host": host]
        case .undoFinished(let host, let name, let ok, let message):
            object = ["event": "undo", "host": host, "name": name, "ok": ok, "message": message]
        case .rollbackPreview(let preview):
            let data = (try? JSONEncoder().encode(preview)) ?? Data()
            object = ["event": "rollback_preview", "preview": (try? JSONSerialization.jsonObject(with: data)) ?? [:]]
        case .runFinished(let id, let status, let code, let message):
            object = ["event": "run_finished", "run_id": id, "status": status, "exit_code": code, "message": message]
        case .notification(let target, let ok, let message):
            object = ["event": "notification", "target": target, "ok": ok, "message": message]
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

extension Value {
    /// A param value as typed.
    var plainDisplay: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .bool(let b): return b ? "true" : "false"
        case .double(let d): return String(d)
        default: return description
        }
    }
}

/// On a terminal, the steps running now and how long each has run: a status line under the
/// output, redrawn every second once a step has run for a second (a quick step shows nothing),
/// cleared when a line is written. Nothing of it reaches a pipe, a log or `--json`.
final class RunningSteps: Sendable {
    private let out: Terminal
    private let steps = Mutex<[(key: String, label: String, started: ContinuousClock.Instant)]>([])
    private let ticker = Mutex<Task<Void, Never>?>(nil)

    init(out: Terminal) { self.out = out }

    func started(_ label: String, key: String) {
        steps.withLock { $0.append((key, label, .now)) }
        ticker.withLock { task in
            guard task == nil else { return }
            task = Task.detached { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    guard let self else { return }
                    self.draw()
                }
            }
        }
    }

    func finished(key: String) {
        let empty = steps.withLock { steps in
            steps.removeAll { $0.key == key }
            if steps.isEmpty { out.status(nil) }
            return steps.isEmpty
        }
        if empty {
            ticker.withLock { task in
                task?.cancel()
                task = nil
            }
        }
    }

    /// `web1  [3/9] Back up the database  running 12s (and 1 more)`.
    private func draw() {
        let now = ContinuousClock.now
        // Drawn while the list is held: a step that finishes meanwhile clears the line after
        // this, never before (a late draw would leave a finished step on the screen).
        steps.withLock { steps in
            guard let oldest = steps.first, now - oldest.started >= .seconds(1) else { return }
            let seconds = (now - oldest.started).components.seconds
            let elapsed = seconds >= 60 ? "\(seconds / 60)m\(String(format: "%02d", seconds % 60))s" : "\(seconds)s"
            out.status("\(oldest.label)  running \(elapsed)" + (steps.count > 1 ? " (and \(steps.count - 1) more)" : ""))
        }
    }
}

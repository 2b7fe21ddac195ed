import Foundation
import RunbookCore
import RunbookTransport

/// What a notification says about a run (SPEC §12), as JSON: the run id, runbook, hosts,
/// status and exit code, the failed step and its message, and a one-line `text` (what Slack
/// and ntfy show). Secrets are masked before it is made.
struct NotifyEvent: Codable, Sendable {
    struct FailedStep: Codable, Sendable {
        var host: String
        var step: String
        var message: String
    }

    var event = "run_finished"
    var runID: String?
    var runbook: String
    var hosts: [String]
    var status: String
    var exitCode: Int32
    var succeeded: Bool
    var message: String
    var failedSteps: [FailedStep]
    var controller: String
    var finishedAt: String
    var text: String

    enum CodingKeys: String, CodingKey {
        case event, runbook, hosts, status, message, controller, text, succeeded
        case runID = "run_id", exitCode = "exit_code", failedSteps = "failed_steps", finishedAt = "finished_at"
    }

    var json: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data())
    }
}

/// Sends a run's outcome to its `notify:` targets: each with its timeout and retries; a
/// failed delivery is reported (an event, and a line in `STATE/logs/notifications.log`) and
/// never changes the run's outcome.
struct Notifier: Sendable {
    let targets: [NotifyTarget]
    let prepared: PreparedRun
    let logPath: String
    let events: any EventSink

    /// The targets of a run: the runbook's and the inventory's defaults, each once.
    static func targets(_ prepared: PreparedRun) -> [NotifyTarget] {
        var seen = Set<NotifyTarget>()
        return (prepared.runbook.notify + prepared.inventory.notify).filter { seen.insert($0).inserted }
    }

    /// The event for an outcome, with the failed steps read from the journal.
    static func event(_ outcome: RunOutcome, prepared: PreparedRun, journal: Journal?) -> NotifyEvent {
        let masker = prepared.secrets.masker
        var failed: [NotifyEvent.FailedStep] = []
        if let runID = outcome.runID, let entries = try? journal?.entries(run: runID) {
            for entry in entries where entry.status == .failed && entry.phase == .apply {
                failed.append(.init(host: entry.host, step: masker.mask(entry.stepName), message: masker.mask(entry.message ?? "")))
            }
        }
        let status = (try? outcome.runID.flatMap { try journal?.run($0) })??.status.rawValue ?? (outcome.exitCode == 0 ? "succeeded" : "failed")
        let hosts = prepared.hosts.map(\.name)
        var text = "runbook \(prepared.runbook.name) \(status) on \(hosts.joined(separator: ", "))"
        if let runID = outcome.runID { text += " (run \(runID))" }
        if let first = failed.first {
            text += ": \(first.host): \(first.step): \(first.message)"
        } else if outcome.exitCode != 0 {
            text += ": " + masker.mask(outcome.message)
        }
        return NotifyEvent(runID: outcome.runID, runbook: prepared.runbook.name, hosts: hosts, status: status,
                           exitCode: outcome.exitCode, succeeded: outcome.exitCode == 0, message: masker.mask(outcome.message),
                           failedSteps: failed, controller: ProcessInfo.processInfo.hostName,
                           finishedAt: Journal.iso8601(), text: String(text.prefix(2000)))
    }

    /// Delivers `event` to every target that wants it; returns how each went.
    @discardableResult
    func deliver(_ event: NotifyEvent) async -> [(target: String, ok: Bool, message: String)] {
        var results: [(String, Bool, String)] = []
        for target in targets where target.on.matches(succeeded: event.succeeded) {
            let shown = prepared.secrets.masker.mask("\(target.kind.rawValue) \(target.target)")
            let outcome = await deliver(event, to: target)
            let message = outcome.map { "failed: " + prepared.secrets.masker.mask($0) } ?? "sent"
            events.emit(.notification(target: shown, ok: outcome == nil, message: message))
            log("\(Journal.iso8601()) \(event.runID ?? "-") \(event.runbook) \(event.status) → \(shown): \(message)")
            results.append((shown, outcome == nil, message))
        }
        return results
    }

    /// One target, with its retries: nil when delivered, else why not.
    private func deliver(_ event: NotifyEvent, to target: NotifyTarget) async -> String? {
        let rendered: (text: String, bindings: [String: String])
        do {
            rendered = try render(target)
        } catch {
            return "\(error)"
        }
        var last = ""
        for attempt in 0...target.retries {
            if attempt > 0 { try? await Task.sleep(for: .seconds(attempt)) }
            switch target.kind {
            case .webhook:
                last = await post(rendered.text, body: event.json, headers: ["Content-Type": "application/json"], timeout: target.timeout) ?? ""
            case .ntfy:
                let headers = ["Title": "runbook \(event.runbook) \(event.status)", "Priority": event.succeeded ? "default" : "high",
                               "Tags": event.succeeded ? "white_check_mark" : "warning", "Content-Type": "text/plain; charset=utf-8"]
                last = await post(rendered.text, body: Array(event.text.utf8), headers: headers, timeout: target.timeout) ?? ""
            case .command:
                last = await run(rendered.text, bindings: rendered.bindings, stdin: event.json + [UInt8(ascii: "\n")], timeout: target.timeout) ?? ""
            }
            if last.isEmpty { return nil }
        }
        let attempts = target.retries + 1
        return "\(last) (\(attempts) attempt\(attempts == 1 ? "" : "s"))"
    }

    /// The target with its `{{ }}` rendered: secrets as values in a URL; in a command, as
    /// references to environment variables that carry them (never on its command line).
    private func render(_ target: NotifyTarget) throws -> (text: String, bindings: [String: String]) {
        let context = TemplateContext(params: prepared.params, vars: [:], host: [:], facts: [:], steps: [:], secrets: prepared.secrets)
        if target.kind == .command {
            let result = try prepared.templates.render(string: target.target, at: target.location, context: context, secrets: .references)
            var bindings: [String: String] = [:]
            for name in result.secretsUsed { if let value = prepared.secrets.value(name) { bindings[name] = value } }
            return (result.text, bindings)
        }
        let result = try prepared.templates.render(string: target.target, at: target.location, context: context, secrets: .values)
        return (result.text.trimmingCharacters(in: .whitespacesAndNewlines), [:])
    }

    /// POSTs `body` with the controller's curl; nil on a 2xx answer. The URL (which may hold
    /// a secret) and the headers reach curl as a config on its stdin, the body as a 0600 temp
    /// file: nothing of either is on its command line. (curl, not Foundation's URLSession: that
    /// would link libcurl into every run of the binary for the sake of a message at its end.)
    private func post(_ url: String, body: [UInt8], headers: [String: String], timeout: Duration) async -> String? {
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else { return "not an http(s) URL" }
        guard !url.contains(where: { $0.isNewline }) else { return "the URL holds a line break" }
        let bodyPath = NSTemporaryDirectory() + "runbook-notify-\(UUID().uuidString).body"
        guard FileManager.default.createFile(atPath: bodyPath, contents: Data(body), attributes: [.posixPermissions: 0o600]) else {
            return "cannot write the request body to \(bodyPath)"
        }
        defer { try? FileManager.default.removeItem(atPath: bodyPath) }
        func quoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        var config = "url = \(quoted(url))\n"
        for (name, value) in (headers.merging(["User-Agent": "runbook-notify/1"]) { a, _ in a }).sorted(by: { $0.key < $1.key }) {
            config += "header = \(quoted("\(name): \(value)"))\n"
        }
        let seconds = max(1, Int(timeout.components.seconds))
        let command: ShellCommand = "curl --silent --show-error --proto =http,https --max-time \(seconds) -o /dev/null -w '%{http_code}' -X POST --data-binary @\(bodyPath) -K -"
        do {
            let output = try await LocalTransport(hostName: "controller").run(command, stdin: Array(config.utf8), timeout: timeout + .seconds(5), onOutput: nil)
            let status = Int(output.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            if output.succeeded, (200..<300).contains(status) { return nil }
            if output.exitStatus == 127 { return "curl is not installed on the controller (it sends webhook and ntfy notifications)" }
            if status > 0 { return "HTTP \(status)" }
            let reason = output.stderrText.split(whereSeparator: \.isNewline).first.map(String.init) ?? output.statusText
            return reason.replacingOccurrences(of: "curl: ", with: "")
        } catch {
            return "\(error)"
        }
    }

    /// Runs a command on the controller (`sh -c`) with the event on stdin; nil when it exits 0.
    /// Secrets reach it as environment variables, never on its command line.
    private func run(_ command: String, bindings: [String: String], stdin: [UInt8], timeout: Duration) async -> String? {
        var parts: [ShellCommand.Part] = [.literal(command)]
        for (name, value) in bindings.sorted(by: { $0.key < $1.key }) { parts.append(.binding(name: name, value: value)) }
        do {
            let output = try await LocalTransport(hostName: "controller").run(ShellCommand(parts: parts), stdin: stdin, timeout: timeout, onOutput: nil)
            if output.succeeded { return nil }
            let reason = (output.stderrText + output.stdoutText).split(whereSeparator: \.isNewline).prefix(3).joined(separator: " ")
            return (output.timedOut ? "timed out after \(DurationText.format(timeout))" : output.statusText) + (reason.isEmpty ? "" : ": " + reason)
        } catch {
            return "\(error)"
        }
    }

    private func log(_ line: String) {
        let directory = (logPath as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let fd = open(logPath, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}

import Foundation
import Testing
import TestSupport

/// A local HTTP receiver for notifications: a small Python server on 127.0.0.1 (a free port)
/// that records every POST (path, headers, body) as a JSON line and answers `status`.
final class WebhookReceiver {
    let process = Process()
    let port: Int
    let record: String
    let folder: String

    init(status: Int = 200) throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("rb-hook-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        record = folder + "/received.jsonl"
        let script = folder + "/receiver.py"
        try """
            import http.server, json, sys
            record, status = sys.argv[1], int(sys.argv[2])
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    with open(record, "a") as f:
                        f.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": body.decode("utf-8", "replace")}) + "\\n")
                    self.send_response(status); self.send_header("Content-Length", "0"); self.end_headers()
                def log_message(self, *args): pass
            server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
            print(server.server_address[1], flush=True)
            server.serve_forever()
            """.write(toFile: script, atomically: true, encoding: .utf8)
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, record, String(status)]
        process.standardOutput = pipe
        try process.run()
        let line = String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let port = Int(line) else {
            kill(process.processIdentifier, SIGKILL)
            throw SandboxError("the webhook receiver did not start: \(line)")
        }
        self.port = port
    }

    /// The requests received so far.
    var received: [[String: Any]] {
        let text = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// The JSON body of request `index`.
    func body(_ index: Int) -> [String: Any]? {
        guard index < received.count, let text = received[index]["body"] as? String else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    }

    /// Stops the server with SIGKILL: a child of the test process inherits its blocked
    /// signals, SIGTERM among them, so `terminate()` would never end it.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// Notifications (SPEC §12) and scheduled-run logs, against a `connection: local` host.
@Suite("notifications", .serialized)
struct NotifyTests {
    struct Project {
        let root: String
        init(inventoryExtra: String = "") throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("rb-notify-\(UUID().uuidString)").path
            for dir in ["runbooks", "templates", "inventory"] {
                try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
            }
            try (inventoryExtra + "hosts:\n  ctl: { connection: local, vars: { runbook_lock_path: \(root)/host.lock } }\n")
                .write(toFile: root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
        }
        func write(_ path: String, _ text: String) throws { try text.write(toFile: root + "/" + path, atomically: true, encoding: .utf8) }
        func run(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessOutput {
            try runBuiltRunbook(arguments + ["--root", root, "-i", root + "/inventory/hosts.yml"], environment: environment)
        }
        func cleanUp() { try? FileManager.default.removeItem(atPath: root) }
    }

    static let failing = """
        name: backup
        description: A backup that fails
        hosts: ctl
        steps:
          - name: Dump the database
            command: { run: "echo 'pg_dump: connection refused' >&2; exit 1", undo: "true" }
        """

    @Test("a failed run posts one JSON event naming run, runbook, host and failed step; the secret in the URL never shows")
    func webhookOnFailure() throws {
        let hook = try WebhookReceiver()
        defer { hook.stop() }
        let p = try Project(inventoryExtra: """
            defaults:
              notify:
                - webhook: "http://127.0.0.1:\(hook.port)/hooks/{{ secrets.HOOK_TOKEN }}"
                - { webhook: "http://127.0.0.1:\(hook.port)/success-only", on: success }

            """)
        defer { p.cleanUp() }
        try p.write("runbooks/backup.yml", Self.failing)
        let r = try p.run(["apply", "backup", "--yes"], environment: ["RUNBOOK_SECRET_HOOK_TOKEN": "tok-81f3a9c2"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(!r.stdout.contains("tok-81f3a9c2") && !r.stderr.contains("tok-81f3a9c2"))
        #expect(hook.received.count == 1, "\(hook.received)")
        #expect(hook.received.first?["path"] as? String == "/hooks/tok-81f3a9c2")
        let event = try #require(hook.body(0))
        let runID = try #require(r.stdout.range(of: #"run (\d{8}-\d{6}-[0-9a-f]{4})"#, options: .regularExpression).map { String(r.stdout[$0].dropFirst(4)) })
        #expect(event["run_id"] as? String == runID)
        #expect(event["runbook"] as? String == "backup")
        #expect(event["hosts"] as? [String] == ["ctl"])
        #expect(event["exit_code"] as? Int == 1)
        let failed = try #require((event["failed_steps"] as? [[String: Any]])?.first)
        #expect(failed["host"] as? String == "ctl" && failed["step"] as? String == "Dump the database")
        #expect((failed["message"] as? String ?? "").contains("pg_dump: connection refused"))
        #expect((event["text"] as? String ?? "").contains("runbook backup rolled_back on ctl"), "\(event)")
        let log = try String(contentsOfFile: p.root + "/.runbook/logs/notifications.log", encoding: .utf8)
        #expect(log.contains(runID) && log.contains("sent") && !log.contains("tok-81f3a9c2"), "\(log)")
    }

    @Test("with the receiver down or refusing, the run's exit code is what it would have been, and the failure is reported")
    func failedDeliveryKeepsTheOutcome() throws {
        let refusing = try WebhookReceiver(status: 500)
        defer { refusing.stop() }
        let p = try Project()
        defer { p.cleanUp() }
        try p.write("runbooks/backup.yml", Self.failing + """

            notify:
              - { webhook: "http://127.0.0.1:1/nobody-listens", retries: 1, timeout: 2s }
              - { webhook: "http://127.0.0.1:\(refusing.port)/refuses", retries: 1 }
            """)
        let failed = try p.run(["apply", "backup", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("warning: notification to webhook http://127.0.0.1:1/nobody-listens failed"), "\(failed.stdout)")
        #expect(failed.stdout.contains("HTTP 500 (2 attempts)"), "\(failed.stdout)")
        #expect(refusing.received.count == 2, "one retry")

        try p.write("runbooks/fine.yml", """
            name: fine
            description: Succeeds
            hosts: ctl
            notify:
              - { webhook: "http://127.0.0.1:1/nobody-listens", on: always, retries: 0 }
            steps:
              - name: Works
                command: { run: "true", undo: "true" }
            """)
        let fine = try p.run(["apply", "fine", "--yes"])
        #expect(fine.status == 0, "\(fine.stdout)\(fine.stderr)")
    }

    @Test("a command target gets the event as JSON on stdin and its secret through the environment; ntfy gets the text")
    func commandAndNtfy() throws {
        let hook = try WebhookReceiver()
        defer { hook.stop() }
        let p = try Project()
        defer { p.cleanUp() }
        let out = p.root + "/command-got.json"
        try p.write("runbooks/backup.yml", Self.failing + """

            notify:
              - command: "cat > \(out); printf '%s' \\"$RUNBOOK_SECRET_MAIL_PW\\" > \(out).pw; ps -o args= -p $$ > \(out).ps; echo '{{ secrets.MAIL_PW }}' >/dev/null"
              - ntfy: "http://127.0.0.1:\(hook.port)/ops-alerts"
            """)
        let r = try p.run(["apply", "backup", "--yes"], environment: ["RUNBOOK_SECRET_MAIL_PW": "mail-pw-5521"])
        #expect(r.status == 1)
        let event = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any]
        #expect(event?["runbook"] as? String == "backup")
        #expect(try String(contentsOfFile: out + ".pw", encoding: .utf8) == "mail-pw-5521")
        #expect(!(try String(contentsOfFile: out + ".ps", encoding: .utf8)).contains("mail-pw-5521"), "the secret is not on the command line")
        let ntfy = try #require(hook.received.first)
        #expect(ntfy["path"] as? String == "/ops-alerts")
        let headers = ntfy["headers"] as? [String: String] ?? [:]
        #expect(headers["Title"] == "runbook backup rolled_back" && headers["Priority"] == "high", "\(headers)")
        #expect((ntfy["body"] as? String ?? "").hasPrefix("runbook backup rolled_back on ctl"))
    }

    @Test("a notify target without webhook, ntfy or command is an error naming its line (exit 2)")
    func invalidTarget() throws {
        let p = try Project()
        defer { p.cleanUp() }
        try p.write("runbooks/bad.yml", """
            name: bad
            description: Bad notify
            hosts: ctl
            notify:
              - { on: failure }
              - { webhook: "ftp://example.org/x" }
            steps:
              - name: Works
                command: { run: "true" }
            """)
        let r = try p.run(["validate", "bad"])
        #expect(r.status == 2, "\(r.stdout)\(r.stderr)")
        let all = r.stdout + r.stderr
        #expect(all.contains("bad.yml:5") && all.contains("needs one of webhook, ntfy or command"), "\(all)")
        #expect(all.contains("bad.yml:6") && all.contains("needs an http:// or https:// URL"), "\(all)")
    }

    @Test("apply --log appends with a header, 0600, and rotates a log over 1 MiB (five kept)")
    func logRotation() throws {
        let p = try Project()
        defer { p.cleanUp() }
        try p.write("runbooks/fine.yml", """
            name: fine
            description: Succeeds
            hosts: ctl
            steps:
              - name: Works
                command: { run: "echo did-it", undo: "true" }
            """)
        let log = p.root + "/logs/fine.log"
        try FileManager.default.createDirectory(atPath: p.root + "/logs", withIntermediateDirectories: true)
        try String(repeating: "old line\n", count: 130_000).write(toFile: log, atomically: true, encoding: .utf8)
        try "older\n".write(toFile: log + ".1", atomically: true, encoding: .utf8)
        let r = try p.run(["apply", "fine", "--yes", "--log", log])
        #expect(r.status == 0 && r.stdout.isEmpty, "\(r.stdout)\(r.stderr)")
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(text.hasPrefix("== ") && text.contains("runbook apply fine") && text.contains("succeeded"), "\(text)")
        #expect(try String(contentsOfFile: log + ".1", encoding: .utf8).hasPrefix("old line"))
        #expect(try String(contentsOfFile: log + ".2", encoding: .utf8) == "older\n")
        let mode = try FileManager.default.attributesOfItem(atPath: log)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // A small log is appended to, not rotated.
        _ = try p.run(["apply", "fine", "--yes", "--log", log])
        #expect(try String(contentsOfFile: log, encoding: .utf8).components(separatedBy: "runbook apply fine").count == 3)
    }
}

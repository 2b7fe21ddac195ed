import Foundation
import Logging
import RunbookCore
import Synchronization
import Testing
import TestSupport

@testable import RunbookEngine
@testable import RunbookSteps

/// Collects the engine's events; remembers how many commands a host had run when the run
/// started, so apply's commands can be told from planning's.
final class EventLog: EventSink, Sendable {
    let events = Mutex<[RunEvent]>([])
    let host: ScriptedTransport
    let ranBeforeApply = Mutex<Int?>(nil)

    init(host: ScriptedTransport) { self.host = host }

    func emit(_ event: RunEvent) {
        if case .runStarted = event { ranBeforeApply.withLock { $0 = host.ran.count } }
        events.withLock { $0.append(event) }
    }

    var plan: Plan? {
        events.withLock { $0.compactMap { if case .planned(let plan) = $0 { return plan } else { return nil } }.last }
    }

    var preview: RollbackPreview? {
        events.withLock { $0.compactMap { if case .rollbackPreview(let p) = $0 { return p } else { return nil } }.last }
    }

    /// What apply ran (commands after the run started), as displayed.
    var appliedLines: [String] {
        let start = ranBeforeApply.withLock { $0 } ?? host.ran.count
        return host.ran.dropFirst(start).map(\.display)
    }

    var skippedMessages: [String] {
        events.withLock {
            $0.compactMap {
                if case .stepFinished(_, _, _, _, .skipped, _, let message) = $0 { return message ?? "" } else { return nil }
            }
        }
    }
}

/// A throwaway project whose one host is a `ScriptedTransport`.
final class ScriptedProject: Sendable {
    let root: String
    let host: ScriptedTransport
    let second: ScriptedTransport

    init(files: [String: ScriptedTransport.File] = [:]) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("rb-fidelity-\(UUID().uuidString)").path
        for dir in ["runbooks", "templates", "inventory", ".runbook"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        try """
            hosts:
              h1: { address: 127.0.0.1 }
              h2: { address: 127.0.0.2 }
            groups:
              web: { hosts: [h1] }
              both: { hosts: [h1, h2] }
            """.write(toFile: root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
        host = ScriptedTransport(hostName: "h1", files: files)
        second = ScriptedTransport(hostName: "h2", files: files)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func write(_ path: String, _ text: String) throws {
        try text.write(toFile: root + "/" + path, atomically: true, encoding: .utf8)
    }

    /// An engine whose hosts are the scripted ones, reporting to a fresh log of `host`.
    func engine() -> (Engine, EventLog) {
        let log = EventLog(host: host)
        var settings = EngineSettings(root: root, stateDir: root + "/.runbook", inventoryPath: root + "/inventory/hosts.yml",
                                      forks: 4, logger: Logger(label: "test"))
        let (one, two) = (host, second)
        settings.opener = { $0.name == "h1" ? one : two }
        return (Engine(settings: settings, events: log), log)
    }
}

/// JSON is YAML: a step's arguments written as a flow mapping.
func json(_ value: Value) -> String {
    let data = try! JSONEncoder().encode(value)
    return String(decoding: data, as: UTF8.self)
}

@Suite struct PlanFidelityTests {
    /// For every kind, each command the plan shows is a command apply executes, byte for byte
    /// as displayed: become, validate and undo included.
    @Test(arguments: stepCases.filter { $0.action != .noop }) func shownCommandRuns(_ testCase: StepCase) async throws {
        let project = try ScriptedProject(files: testCase.files)
        for (match, reply) in testCase.replies { project.host.reply(to: match, reply) }
        project.host.answer(address: "127.0.0.1", port: 80, with: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        project.host.answer(address: "127.0.0.1", port: 5432, with: "")
        if let contents = testCase.fileContents { try project.write("templates/a.j2", contents) }
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - name: the step
                become: \(testCase.become)
                \(testCase.kind): \(json(.map(testCase.arguments)))
            """)
        let (engine, log) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        let change = try #require(log.plan?.changes.first, "\(testCase): no plan (\(outcome.message))")
        #expect(change.action == testCase.action, "\(testCase)")
        let applied = log.appliedLines
        for shown in change.commands {
            if shown.hasPrefix("undo: ") { continue }
            if shown.hasPrefix("validate: ") {
                // Run against the candidate file: %s is its temp path.
                let prefix = String(shown.dropFirst("validate: ".count).prefix { $0 != "%" })
                #expect(applied.contains { $0.hasPrefix(prefix) && $0.contains(".runbook-") }, "\(testCase): \(shown) not in \(applied)")
                continue
            }
            #expect(applied.contains(shown), "\(testCase): shown `\(shown)` was not executed; apply ran \(applied)")
        }
    }

    /// The undo a plan shows is the command rollback runs, through sudo when the step had become.
    @Test func shownUndoRuns() async throws {
        let project = try ScriptedProject()
        project.host.reply(to: "false-step", status: 1)
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - name: change
                become: true
                command: { run: "touch /srv/flag", undo: "rm -f /srv/flag" }
              - name: fail
                command: "echo false-step; exit 1"
            """)
        let (engine, log) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(outcome.exitCode == 1)
        let shown = try #require(log.plan?.changes.first?.commands)
        #expect(shown == ["sudo -n -E -- sh -c 'touch /srv/flag'", "undo: sudo -n -E -- sh -c 'rm -f /srv/flag'"])
        #expect(log.appliedLines.contains("sudo -n -E -- sh -c 'rm -f /srv/flag'"))
    }

    /// A template without `owner` keeps the file's owner and group: the plan says so, and the
    /// file is put back with the same numeric ids.
    @Test func templateKeepsOwner() async throws {
        let project = try ScriptedProject(files: ["/etc/app.conf": .init("a=0\n", mode: 0o640, uid: 65534, gid: 65534)])
        try project.write("templates/app.conf.j2", "a=1\n")
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - template: { src: app.conf.j2, dest: /etc/app.conf }
            """)
        let (engine, log) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        let change = try #require(log.plan?.changes.first)
        #expect(change.summary.contains("owner 65534:65534 kept"), "\(change.summary)")
        #expect(log.appliedLines.contains { $0.hasPrefix("chmod 640 -- ") && $0.contains("chown -- 65534:65534 ") }, "\(log.appliedLines)")
        #expect(project.host.files["/etc/app.conf"]?.mode == 0o640)
    }

    /// `run_once` is planned as a change on the first host only; the others show why not.
    @Test func runOncePlannedOnOneHost() async throws {
        let project = try ScriptedProject()
        try project.write("runbooks/t.yml", """
            hosts: both
            steps:
              - name: migrate
                run_once: true
                command: "echo migrate"
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        let changes = try #require(log.plan?.changes)
        #expect(changes.map(\.action) == [.run, .noop])
        #expect(changes[1].reason?.contains("run_once: runs on h1") == true, "\(changes[1])")
    }

    /// A file without a final newline gets a diff that says so, and so patches onto it.
    @Test func diffMarksMissingNewline() {
        let diff = UnifiedDiff.make(old: "a\nb", new: "a\nc\n", path: "/f")
        #expect(diff.contains("-b\n\\ No newline at end of file\n+c\n"), "\(diff)")
        let added = UnifiedDiff.make(old: "a\n", new: "a\nb", path: "/f")
        #expect(added.hasSuffix("+b\n\\ No newline at end of file\n"), "\(added)")
    }

    /// A binary copy shows sizes and digests, never raw bytes, the same on every host.
    @Test func binaryCopyShownAsBinary() async throws {
        let old: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 0x00, 0x01, 0xff]
        let project = try ScriptedProject(files: ["/usr/local/bin/tool": .init(old, mode: 0o755)])
        try Data([0x7f, 0x45, 0x4c, 0x46, 0x00, 0x02, 0xfe, 0x10]).write(to: URL(fileURLWithPath: project.root + "/templates/tool"))
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - copy: { src: tool, dest: /usr/local/bin/tool }
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        let diff = try #require(log.plan?.changes.first?.diff)
        #expect(diff.contains("binary file: 7 bytes → 8 bytes"), "\(diff)")
        #expect(diff.contains("sha256 "), "\(diff)")
        #expect(!diff.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
    }

    /// A file past the diff cap is shown as sizes and digests, not as a line diff.
    @Test func largeFileIsNotLineDiffed() async throws {
        var lines = (0..<200_000).map { "line \($0) of a large generated file" }
        let old = lines.joined(separator: "\n") + "\n"
        lines[100_000] = "the one changed line"
        let project = try ScriptedProject(files: ["/srv/big.txt": .init(old)])
        try project.write("templates/big.txt", lines.joined(separator: "\n") + "\n")
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - copy: { src: big.txt, dest: /srv/big.txt }
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        let diff = try #require(log.plan?.changes.first?.diff)
        #expect(diff.hasPrefix("large file, no line diff above 1 MiB: "), "\(diff.prefix(200))")
    }

    /// Under the size cap, two texts with almost nothing in common (Myers' worst case, about a
    /// minute for 16,000 lines) are shown as line counts, sizes and digests; a few changed lines
    /// in a file as large still get their line diff.
    @Test func rewrittenFileIsNotLineDiffed() async throws {
        let old = (0..<16_000).map { "old line \($0) " + String(repeating: "a", count: 40) }
        var new = old.map { $0.replacingOccurrences(of: "old", with: "new") }
        let project = try ScriptedProject(files: ["/srv/rewritten.txt": .init(old.joined(separator: "\n") + "\n"),
                                                  "/srv/edited.txt": .init(old.joined(separator: "\n") + "\n")])
        try project.write("templates/rewritten.txt", new.joined(separator: "\n") + "\n")
        new = old
        new[8_000] = "the one changed line"
        try project.write("templates/edited.txt", new.joined(separator: "\n") + "\n")
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - copy: { src: rewritten.txt, dest: /srv/rewritten.txt }
              - copy: { src: edited.txt, dest: /srv/edited.txt }
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        let diffs = (log.plan?.changes ?? []).compactMap(\.diff)
        #expect(diffs.count == 2)
        #expect(diffs.first?.hasPrefix("32000 of 32002 lines differ, too many for a line diff: ") == true, "\(diffs.first?.prefix(200) ?? "")")
        #expect(diffs.last?.contains("-old line 8000 ") == true && diffs.last?.contains("+the one changed line") == true,
                "\(diffs.last?.prefix(300) ?? "")")
    }

    /// A step skipped at apply because its `when:` turned false says why.
    @Test func whenFalseAtApplySaysWhy() async throws {
        let project = try ScriptedProject()
        project.host.reply(to: "cat /proc/loadavg", stdout: "")
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - id: probe
                command: "echo 1"
              - name: only when probe said 2
                when: "steps.probe.stdout == '2'"
                command: "echo never"
            """)
        let (engine, log) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(log.skippedMessages.contains { $0.contains("when is false at apply time") }, "\(log.skippedMessages)")
        #expect(!log.appliedLines.contains("echo never"))
        // `runbook show` lists it: the journal has the skip and its reason.
        let journal = try Journal(path: project.root + "/.runbook/journal.sqlite")
        let entries = try journal.entries(run: try #require(outcome.runID))
        let skipped = try #require(entries.first { $0.stepName == "only when probe said 2" })
        #expect(skipped.status == .skipped)
        #expect(skipped.message?.contains("when is false at apply time") == true)
    }

    /// A step decided at apply time fingerprints the file it would change: a hand edit made
    /// after `plan --out` makes the saved plan stale (exit 3) instead of being overwritten unseen.
    @Test func deferredFileStepIsFingerprinted() async throws {
        let project = try ScriptedProject(files: ["/srv/app.conf": .init("v=1\n")])
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - id: probe
                command: "echo 2"
              - name: write the probed value
                copy: { content: "v={{ steps.probe.stdout }}", dest: /srv/app.conf }
            """)
        let (engine, log) = project.engine()
        let path = project.root + "/plan.json"
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: path)
        let deferred = try #require(log.plan?.changes.last)
        #expect(deferred.action == .deferred)
        #expect(deferred.summary == "decided at apply time: reads steps.probe")
        #expect(deferred.commands.contains("dest: /srv/app.conf"), "\(deferred.commands)")
        #expect(deferred.fingerprints.contains { $0.fact == "file:/srv/app.conf" })
        project.host.put("/srv/app.conf", .init("v=1\n# hand edit\n"))
        let (again, _) = project.engine()
        let outcome = try await again.apply(nil, options: ApplyOptions(yes: true, rollback: true, planFile: path, confirm: nil))
        #expect(outcome.exitCode == 3, "\(outcome.message)")
        #expect(outcome.message.contains("file:/srv/app.conf changed"), "\(outcome.message)")
        #expect(project.host.files["/srv/app.conf"]?.contents == Array("v=1\n# hand edit\n".utf8))
    }

    /// A step that reads a file an earlier step of the same run writes is planned against
    /// the planned content, not the host's state before the run.
    @Test func laterStepSeesEarlierPlannedFile() async throws {
        let project = try ScriptedProject(files: ["/srv/maintenance": .init("on\n")])
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - name: maintenance off
                copy: { content: "off\\n", dest: /srv/maintenance }
              - name: maintenance on
                copy: { content: "on\\n", dest: /srv/maintenance }
              - name: marker
                command: { run: "echo go", creates: /srv/marker }
              - name: write marker
                copy: { content: "x\\n", dest: /srv/marker }
              - name: marker again
                command: { run: "echo again", creates: /srv/marker }
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        let changes = try #require(log.plan?.changes)
        #expect(changes.map(\.action) == [.update, .update, .run, .create, .noop], "\(changes.map(\.summary))")
        #expect(changes[1].diff?.contains("-off") == true, "\(changes[1].diff ?? "")")
        #expect(changes[4].reason?.contains("step 4") == true, "\(changes[4].reason ?? "")")
    }

    /// A named fact is read once per plan: two compose steps ask the host which compose it
    /// has with one probe.
    @Test func namedFactsAreReadOnce() async throws {
        let project = try ScriptedProject()
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - service: { name: web, action: restart, compose_file: /srv/c.yml }
              - nginx_reload: { via: compose, service: nginx, compose_file: /srv/c.yml }
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        #expect(log.plan?.changes.count == 2)
        #expect(project.host.ranLines.filter { $0 == "docker compose version >/dev/null 2>&1" }.count == 1, "\(project.host.ranLines)")
    }

    /// A file whose content holds a secret is written 0600; the diff never shows the value;
    /// rotating the secret makes a saved plan stale (the plan keeps a keyed fingerprint, not the value).
    @Test func secretBearingFiles() async throws {
        let project = try ScriptedProject(files: ["/etc/app.env": .init("TOKEN=old\n", mode: 0o644)])
        try project.write(".runbook/secrets.env", "api_token=tok-123-secret\n")
        chmod(project.root + "/.runbook/secrets.env", 0o600)
        try project.write("templates/app.env.j2", "TOKEN={{ secrets.api_token }}\n")
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - template: { src: app.env.j2, dest: /etc/app.env }
            """)
        let (engine, log) = project.engine()
        let path = project.root + "/plan.json"
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: path)
        let change = try #require(log.plan?.changes.first)
        #expect(change.summary.contains("mode 644 → 600"), "\(change.summary)")
        #expect(change.diff?.contains("tok-123-secret") == false)
        // The old value is masked too: it may be the previous password.
        #expect(change.diff?.contains("-TOKEN=********") == true && change.diff?.contains("TOKEN=old") == false, "\(change.diff ?? "")")
        let saved = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!saved.contains("tok-123-secret"))
        try project.write(".runbook/secrets.env", "api_token=rotated-456\n")
        chmod(project.root + "/.runbook/secrets.env", 0o600)
        let (again, _) = project.engine()
        let outcome = try await again.apply(nil, options: ApplyOptions(yes: true, rollback: true, planFile: path, confirm: nil))
        #expect(outcome.exitCode == 3, "\(outcome.message)")
        #expect(outcome.message.contains("a secret the runbook uses"), "\(outcome.message)")
        #expect(project.host.files["/etc/app.env"]?.contents == Array("TOKEN=old\n".utf8))
        // Applied fresh, the file is 0600.
        let fresh = try await again.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(fresh.exitCode == 0, "\(fresh.message)")
        #expect(project.host.files["/etc/app.env"]?.mode == 0o600)
    }

    /// A secret carried through `vars:` (a URL that holds a password, a map built from that
    /// var, a loop item) stays off the command line: the host runs `${RUNBOOK_SECRET_…}`
    /// references with the value in the environment, a real `sh` expands them back to the
    /// var's exact text in every quoting context, a file that reads the var is 0600, and
    /// neither the plan nor the journal holds the value.
    @Test func secretThroughVarsStaysOffTheCommandLine() async throws {
        let password = #"p@ss w'o"rd$1*`x`"#
        let project = try ScriptedProject(files: ["/etc/app.conf": .init("old\n", mode: 0o644)])
        try project.write(".runbook/secrets.env", "db_password=\(password)\n")
        chmod(project.root + "/.runbook/secrets.env", 0o600)
        try project.write("templates/a.j2", "DSN={{ vars.conf.dsn }}\n")
        try project.write("runbooks/t.yml", #"""
            hosts: web
            vars:
              url: "postgresql://app:{{ secrets.db_password }}@db:5432/app"
              conf: { dsn: "{{ vars.url }}?sslmode=require", user: app }
            steps:
              - name: use it
                command:
                  run: printf '[%s]\n' {{ vars.url }} 'x {{ vars.conf.dsn }}' "y {{ vars.url }}" {{ vars.conf.user }}
                  undo: echo {{ vars.url }}
              - name: each
                loop: ["{{ vars.url }}", plain]
                command: { run: "printf '[%s]\n' {{ item }}" }
              - template: { src: a.j2, dest: /etc/app.conf }
            """#)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: project.root + "/plan.json")
        let url = "postgresql://app:\(password)@db:5432/app"
        let shownCommands = (log.plan?.changes ?? []).flatMap(\.commands).joined(separator: "\n")
        #expect(shownCommands.contains("${RUNBOOK_SECRET_DB_PASSWORD}"), "\(shownCommands)")
        #expect(!shownCommands.contains("p@ss"), "\(shownCommands)")
        #expect(!(try String(contentsOfFile: project.root + "/plan.json", encoding: .utf8)).contains("p@ss"))

        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(!project.host.ranLines.contains { $0.contains("p@ss") }, "\(project.host.ranLines)")
        let printf = project.host.ran.filter { $0.commandLine.contains("printf") }
        #expect(printf.count == 3, "\(project.host.ranLines)")
        var printed: [String] = []
        for command in printf {
            #expect(command.environment["RUNBOOK_SECRET_DB_PASSWORD"] == password || !command.commandLine.contains("RUNBOOK_SECRET"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", command.commandLine]
            process.environment = command.environment
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            printed.append(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
            process.waitUntilExit()
        }
        #expect(printed == ["[\(url)]\n[x \(url)?sslmode=require]\n[y \(url)]\n[app]\n", "[\(url)]\n", "[plain]\n"], "\(printed)")
        #expect(project.host.files["/etc/app.conf"]?.contents == Array("DSN=\(url)?sslmode=require\n".utf8))
        #expect(project.host.files["/etc/app.conf"]?.mode == 0o600)
        // The journal (and its WAL) never holds the value.
        for name in (try FileManager.default.contentsOfDirectory(atPath: project.root + "/.runbook")) where name != "secrets.env" {
            let data = (try? Data(contentsOf: URL(fileURLWithPath: project.root + "/.runbook/" + name))) ?? Data()
            #expect(data.range(of: Data("p@ss".utf8)) == nil, "\(name) holds the secret")
        }
    }

    /// `rollback RUN_ID --dry-run` shows the restore and the commands, and changes nothing.
    @Test func rollbackDryRunChangesNothing() async throws {
        let project = try ScriptedProject(files: ["/etc/app.conf": .init("a=0\n")])
        try project.write("templates/app.conf.j2", "a=1\n")
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - template: { src: app.conf.j2, dest: /etc/app.conf }
              - command: { run: "echo hi", undo: "echo undo" }
              - service: { name: nginx, action: reload, manager: systemd }
            """)
        let (engine, _) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        let runID = try #require(outcome.runID)
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        let before = project.host.files
        let ranBefore = project.host.ran.count
        let (again, log) = project.engine()
        let dry = await again.rollback(runID: runID, dryRun: true)
        #expect(dry.exitCode == 0, "\(dry.message)")
        let preview = try #require(log.preview)
        let summaries = preview.items.map(\.summary)
        #expect(summaries.contains { $0.hasPrefix("restore /etc/app.conf from /etc/.app.conf.runbook-bak-") }, "\(summaries)")
        #expect(preview.items.contains { $0.commands == ["echo undo"] })
        #expect(preview.items.contains { $0.phase == 2 && $0.commands == ["systemctl reload nginx"] })
        #expect(project.host.files == before)
        // Only reads: the file, the backup's stat; no command ran.
        #expect(project.host.ran.count == ranBefore)
        // A real rollback afterwards still works.
        let real = await again.rollback(runID: runID)
        #expect(real.exitCode == 0, "\(real.message)")
        #expect(project.host.files["/etc/app.conf"]?.contents == Array("a=0\n".utf8))
    }
}

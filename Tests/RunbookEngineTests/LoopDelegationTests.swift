import Foundation
import Logging
import RunbookCore
@testable import RunbookEngine
import Synchronization
import Testing
import TestSupport

/// A project with three scripted hosts: a load balancer `lb` and two web hosts.
final class ThreeHostProject: Sendable {
    let root: String
    let hosts: [String: ScriptedTransport]

    init(files: [String: [String: ScriptedTransport.File]] = [:], serial: Bool = false) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("rb-loops-\(UUID().uuidString)").path
        for dir in ["runbooks", "templates", "inventory", ".runbook"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        try """
            hosts:
              lb: { address: 10.0.0.10 }
              web1: { address: 10.0.0.11, vars: { app_port: 8001 } }
              web2: { address: 10.0.0.12, vars: { app_port: 8002 } }
            groups:
              lbs: { hosts: [lb] }
              web: { hosts: [web1, web2] }
            """.write(toFile: root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
        var made: [String: ScriptedTransport] = [:]
        for name in ["lb", "web1", "web2"] { made[name] = ScriptedTransport(hostName: name, files: files[name] ?? [:]) }
        hosts = made
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    subscript(_ name: String) -> ScriptedTransport { hosts[name]! }

    func write(_ path: String, _ text: String) throws {
        try text.write(toFile: root + "/" + path, atomically: true, encoding: .utf8)
    }

    func engine() -> (Engine, EventLog) {
        let log = EventLog(host: hosts["web1"]!)
        var settings = EngineSettings(root: root, stateDir: root + "/.runbook", inventoryPath: root + "/inventory/hosts.yml",
                                      forks: 4, logger: Logger(label: "test"))
        let hosts = self.hosts
        settings.opener = { hosts[$0.name]! }
        return (Engine(settings: settings, events: log), log)
    }

    func apply(_ runbook: String = "t", params: [String: String] = [:]) async throws -> (RunOutcome, EventLog) {
        let (engine, log) = engine()
        let outcome = try await engine.apply(RunRequest(runbook: runbook, params: params),
                                             options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        return (outcome, log)
    }

    /// The commands a host ran that the test's runbook wrote (`echo …`, `touch …`, `rm …`).
    func ran(_ host: String, prefix: String) -> [String] {
        hosts[host]!.ranLines.filter { $0.hasPrefix(prefix) }
    }
}

@Suite struct LoopDelegationTests {
    /// A list loop is one change per item, addressed HOST/STEP[i], with `item` and `loop.index`;
    /// apply runs them in order.
    @Test func listLoopExpandsPerItem() async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: web1
            steps:
              - id: each
                command: "echo {{ item }} {{ loop.index }} of {{ loop.length }}"
                loop: [alpha, "beta gamma", "{{ host.app_port }}"]
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        let changes = try #require(log.plan?.changes)
        #expect(changes.map(\.address) == ["web1/each[1]", "web1/each[2]", "web1/each[3]"])
        #expect(changes.map(\.item) == ["alpha", "beta gamma", "8001"])
        #expect(changes.map(\.commands) == [["echo alpha 1 of 3"], ["echo 'beta gamma' 2 of 3"], ["echo 8001 3 of 3"]])
        #expect(p.ran("web1", prefix: "echo ") == ["echo alpha 1 of 3", "echo 'beta gamma' 2 of 3", "echo 8001 3 of 3"])
    }

    /// An expression loop: `groups.NAME`, `range(A, B)` with a param, and `hostvars`.
    @Test func expressionLoops() async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: lb
            params:
              replicas: { type: int, default: 2 }
            steps:
              - name: upstream
                command: "echo server {{ hostvars[item].address }}:{{ hostvars[item].app_port }}"
                loop: "{{ groups.web }}"
              - name: replica
                command: "echo replica {{ item }}"
                loop: "{{ range(1, params.replicas + 1) }}"
            """)
        let (outcome, log) = try await p.apply(params: ["replicas": "3"])
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(p.ran("lb", prefix: "echo ") == ["echo server 10.0.0.11:8001", "echo server 10.0.0.12:8002",
                                                "echo replica 1", "echo replica 2", "echo replica 3"])
        #expect(log.plan?.changes.map(\.address) == ["lb/#1[1]", "lb/#1[2]", "lb/#2[1]", "lb/#2[2]", "lb/#2[3]"])
    }

    /// `when` is decided per item; a loop over no items is one no-op that says why.
    @Test func whenPerItemAndEmptyLoop() async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: web1
            params:
              replicas: { type: int, default: 0 }
            steps:
              - command: "echo {{ item }}"
                loop: [a, b, c]
                when: "item != 'b'"
              - command: "echo never {{ item }}"
                loop: "{{ range(1, params.replicas + 1) }}"
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        let changes = try #require(log.plan?.changes)
        #expect(changes.map(\.action) == [.run, .noop, .run, .noop])
        #expect(changes[3].reason == "loop: no items")
        #expect(p.ran("web1", prefix: "echo ") == ["echo a", "echo c"])
    }

    /// A delegated step reads and changes the other host, is shown `web1 → lb`, and a failure
    /// later on web1 restores the file on lb, not on web1.
    @Test func delegatedFileIsRestoredOnItsHost() async throws {
        let upstream = "upstream app {\n    server 10.0.0.11:8001;\n    server 10.0.0.12:8002;\n}\n"
        let p = try ThreeHostProject(files: ["lb": ["/etc/nginx/upstream.conf": .init(upstream)]])
        p["web1"].reply(to: "deploy-fails", status: 1)
        try p.write("templates/upstream.j2", """
            upstream app {
            {% for name in groups.web %}{% if name != host.name %}    server {{ hostvars[name].address }}:{{ hostvars[name].app_port }};
            {% endif %}{% endfor %}}

            """)
        // web1's deploy fails (a scripted reply); web2 would succeed.
        try p.write("runbooks/t.yml", """
            hosts: web
            serial: 1
            steps:
              - name: drain
                template: { src: upstream.j2, dest: /etc/nginx/upstream.conf }
                delegate_to: lb
              - name: deploy
                command: "echo deploy-fails-on {{ host.name }}"
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 1, "\(outcome.message)")
        let drain = try #require(log.plan?.changes.first { $0.address == "web1/#1" })
        #expect(drain.delegate == "lb" && drain.host == "web1" && drain.hostDisplay == "web1 → lb")
        #expect(drain.diff?.contains("-    server 10.0.0.11:8001;") == true, "\(drain.diff ?? "")")
        // The file on lb is back as it was; web1 never had one.
        #expect(p["lb"].files["/etc/nginx/upstream.conf"]?.contents == Array(upstream.utf8))
        #expect(p["web1"].files["/etc/nginx/upstream.conf"] == nil)
        // The drain ran on lb (its backup copy), the deploy on web1, and web2 never started.
        #expect(p["lb"].ranLines.contains { $0.hasPrefix("cp -p -- /etc/nginx/upstream.conf ") })
        #expect(p.ran("web2", prefix: "echo ").isEmpty)
        #expect(outcome.message.contains("web1: deploy"), "\(outcome.message)")
        // The journal keeps where each step ran.
        let journal = try Journal(path: p.root + "/.runbook/journal.sqlite")
        let entries = try journal.entries(run: try #require(outcome.runID))
        let applied = entries.filter { $0.phase == .apply && $0.stepName == "drain" }
        #expect(applied.map(\.hostDisplay) == ["web1 → lb"])
        #expect(entries.contains { $0.phase == .rollback && $0.target == "lb" && $0.status == .done })
    }

    /// With serial: 1, each host's delegated edit is planned against what the host before it
    /// leaves, so a rolling drain and restore applies on every host.
    @Test func rollingDrainAcrossHosts() async throws {
        let upstream = "server 10.0.0.11:8001;\nserver 10.0.0.12:8002;\n"
        let p = try ThreeHostProject(files: ["lb": ["/etc/up.conf": .init(upstream)]])
        try p.write("templates/drained.j2", """
            {% for name in groups.web %}server {{ hostvars[name].address }}:{{ hostvars[name].app_port }}{% if name == host.name %} down{% endif %};
            {% endfor %}
            """)
        try p.write("templates/all.j2", """
            {% for name in groups.web %}server {{ hostvars[name].address }}:{{ hostvars[name].app_port }};
            {% endfor %}
            """)
        try p.write("runbooks/t.yml", """
            hosts: web
            serial: 1
            steps:
              - name: drain
                template: { src: drained.j2, dest: /etc/up.conf }
                delegate_to: "{{ groups.lbs[0] }}"
              - name: update
                command: "echo update {{ host.name }}"
              - name: restore
                template: { src: all.j2, dest: /etc/up.conf }
                delegate_to: lb
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        let changes = try #require(log.plan?.changes)
        #expect(changes.map(\.action) == [.update, .run, .update, .update, .run, .update], "\(changes.map(\.summary))")
        #expect(p["lb"].files["/etc/up.conf"]?.contents == Array(upstream.utf8))
        #expect(p.ran("web1", prefix: "echo ") == ["echo update web1"])
        #expect(p.ran("web2", prefix: "echo ") == ["echo update web2"])
        // lb's lock was released with the others.
        #expect(p["lb"].files[HostLock.defaultPath] == nil)
    }

    /// A delegated host is locked with the run's hosts before anything changes: while another
    /// run holds it, the apply is refused (exit 3), names the holder, and changes nothing.
    @Test func delegatedHostLockedFirst() async throws {
        let p = try ThreeHostProject(files: ["lb": ["/etc/up.conf": .init("before\n")]])
        try await HostLock.acquire(on: p["lb"], info: LockInfo.current(runID: "20261205-holder", runbook: "rolling-update"))
        try p.write("templates/after.j2", "after\n")
        try p.write("runbooks/t.yml", """
            hosts: web
            steps:
              - command: "echo first {{ host.name }}"
              - template: { src: after.j2, dest: /etc/up.conf }
                delegate_to: lb
                run_once: true
            """)
        let (outcome, _) = try await p.apply()
        #expect(outcome.exitCode == 3, "\(outcome.message)")
        #expect(outcome.message.contains("20261205-holder") && outcome.message.contains("rolling-update"), "\(outcome.message)")
        #expect(p.ran("web1", prefix: "echo ").isEmpty && p.ran("web2", prefix: "echo ").isEmpty)
        #expect(p["lb"].files["/etc/up.conf"]?.contents == Array("before\n".utf8))
        // The run's own hosts were released again.
        #expect(p["web1"].files[HostLock.defaultPath] == nil && p["web2"].files[HostLock.defaultPath] == nil)
    }

    /// A loop's undos run in reverse order; each iteration of a delegated loop is undone where it ran.
    @Test func loopUndoneInReverse() async throws {
        let p = try ThreeHostProject()
        p["web1"].reply(to: "exit 7", status: 7)
        try p.write("runbooks/t.yml", """
            hosts: web1
            steps:
              - command: { run: "echo on {{ item }}", undo: "echo off {{ item }}" }
                loop: [1, 2, 3]
                delegate_to: lb
              - command: "exit 7"
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 1, "\(outcome.message)")
        #expect(p.ran("lb", prefix: "echo ") == ["echo on 1", "echo on 2", "echo on 3", "echo off 3", "echo off 2", "echo off 1"])
        #expect(p.ran("web1", prefix: "echo ").isEmpty)
        #expect(log.plan?.changes.prefix(3).allSatisfy { $0.delegate == "lb" && $0.host == "web1" } == true)
    }

    /// `runbook rollback RUN_ID` undoes delegated iterations on their host, from the journal.
    @Test func rollbackFromJournalReachesTheDelegate() async throws {
        let p = try ThreeHostProject(files: ["lb": ["/etc/up.conf": .init("before\n")]])
        try p.write("templates/after.j2", "after {{ item }}\n")
        try p.write("runbooks/t.yml", """
            hosts: web1
            steps:
              - template: { src: after.j2, dest: /etc/up.conf }
                loop: [x]
                delegate_to: lb
            """)
        let (outcome, _) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(p["lb"].files["/etc/up.conf"]?.contents == Array("after x\n".utf8))
        let (engine, _) = p.engine()
        let rolled = await engine.rollback(runID: try #require(outcome.runID))
        #expect(rolled.exitCode == 0, "\(rolled.message)")
        #expect(p["lb"].files["/etc/up.conf"]?.contents == Array("before\n".utf8))
    }

    /// `run_once` runs on the first host of each `serial` batch.
    @Test func runOncePerBatch() async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: web
            serial: 1
            steps:
              - command: "echo once {{ host.name }}"
                run_once: true
                delegate_to: lb
            """)
        let (outcome, _) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(p.ran("lb", prefix: "echo ") == ["echo once web1", "echo once web2"])

        let q = try ThreeHostProject()
        try q.write("runbooks/t.yml", """
            hosts: web
            steps:
              - command: "echo once {{ host.name }}"
                run_once: true
                delegate_to: lb
            """)
        let (again, _) = try await q.apply()
        #expect(again.exitCode == 0, "\(again.message)")
        #expect(q.ran("lb", prefix: "echo ") == ["echo once web1"])
    }

    /// A looped block runs all its steps per item, in order, each item drained on lb and back,
    /// with the block's `when` and `delegate_to`; a failure in item 2 undoes item 2, then item 1.
    @Test func loopedBlockRunsItsStepsPerItem() async throws {
        let upstream = "upstream app {\n    server 10.0.0.11:8001;\n    server 10.0.0.11:8002;\n}\n"
        let p = try ThreeHostProject(files: ["lb": ["/etc/up.conf": .init(upstream)]])
        try p.write("runbooks/t.yml", """
            hosts: web1
            params:
              fail_at: { type: int, default: 0 }
            steps:
              - name: each replica
                loop: [8001, 8002]
                block:
                  - name: drain
                    nginx_upstream: { file: /etc/up.conf, server: "{{ host.address }}:{{ item }}", state: drained }
                    delegate_to: lb
                  - name: restart
                    command: { run: "echo restart {{ item }}", undo: "echo unrestart {{ item }}" }
                  - name: check
                    command: "echo check {{ item }} {{ params.fail_at }}"
                  - name: undrain
                    nginx_upstream: { file: /etc/up.conf, server: "{{ host.address }}:{{ item }}", state: active }
                    delegate_to: lb
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        let changes = try #require(log.plan?.changes)
        #expect(changes.map(\.address) == ["web1/#1[1]", "web1/#2[1]", "web1/#3[1]", "web1/#4[1]",
                                            "web1/#1[2]", "web1/#2[2]", "web1/#3[2]", "web1/#4[2]"])
        #expect(changes.map(\.delegate) == ["lb", nil, nil, "lb", "lb", nil, nil, "lb"])
        #expect(changes[0].diff?.contains("+    server 10.0.0.11:8001 down;") == true, "\(changes[0].diff ?? "")")
        // The second drain is planned against the file as the first item's undrain leaves it.
        #expect(changes[4].diff?.contains("+    server 10.0.0.11:8002 down;") == true, "\(changes[4].diff ?? "")")
        #expect(p.ran("web1", prefix: "echo ") == ["echo restart 8001", "echo check 8001 0", "echo restart 8002", "echo check 8002 0"])
        #expect(p["lb"].files["/etc/up.conf"]?.contents == Array(upstream.utf8))

        let q = try ThreeHostProject(files: ["lb": ["/etc/up.conf": .init(upstream)]])
        try q.write("runbooks/t.yml", try String(contentsOfFile: p.root + "/runbooks/t.yml", encoding: .utf8))
        q["web1"].reply(to: "echo check 8002 1", status: 1)
        let (failed, _) = try await q.apply(params: ["fail_at": "1"])
        #expect(failed.exitCode == 1, "\(failed.message)")
        #expect(failed.message.contains("check [2]"), "\(failed.message)")
        #expect(q.ran("web1", prefix: "echo ") == ["echo restart 8001", "echo check 8001 1", "echo restart 8002", "echo check 8002 1",
                                                  "echo unrestart 8002", "echo unrestart 8001"])
        #expect(q["lb"].files["/etc/up.conf"]?.contents == Array(upstream.utf8))
    }

    /// A block's `when` skips all its steps; keys a block does not take are refused.
    @Test func blockWhenAndBadKeys() async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: web1
            params:
              go: { type: bool, default: false }
            steps:
              - when: params.go
                block:
                  - command: "echo a {{ item }}"
                    loop: [x, y]
                  - command: "echo b"
                    when: "1 == 1"
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(log.plan?.changes.map(\.action) == [.noop, .noop, .noop])
        #expect(p.ran("web1", prefix: "echo ").isEmpty)
        // A step of a block without a loop loops on its own: both of its items, then the next step.
        let (again, _) = try await p.apply(params: ["go": "true"])
        #expect(again.exitCode == 0)
        #expect(p.ran("web1", prefix: "echo ") == ["echo a x", "echo a y", "echo b"])

        try p.write("runbooks/bad.yml", """
            hosts: web1
            steps:
              - retries: 2
                loop: [1]
                block:
                  - command: "echo {{ item }}"
                    loop: [2]
            """)
        let (engine, _) = p.engine()
        do {
            _ = try await engine.plan(RunRequest(runbook: "bad"), saveTo: nil)
            Issue.record("no error")
        } catch let error as DiagnosticError {
            let text = error.diagnostics.map(\.rendered).joined(separator: "\n")
            #expect(text.contains("bad.yml:3:5: error:") && text.contains("unknown key \"retries\" in a block"), "\(text)")
            #expect(text.contains("bad.yml:7:") && text.contains("a step of a looped block cannot loop itself"), "\(text)")
        }
    }

    /// A loop written as a template that renders a flow list: every replica of every other
    /// host, each item a map, each delegated to the host it names.
    @Test func templateLoopBuildsAList() async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: lb
            steps:
              - command: "echo {{ item.host }} {{ item.port }}"
                loop: "[{% for h in groups.web %}{% for port in hostvars[h].ports %}{ host: '{{ h }}', port: {{ port }} }, {% endfor %}{% endfor %}]"
                delegate_to: "{{ item.host }}"
            """)
        try p.write("inventory/hosts.yml", """
            hosts:
              lb: { address: 10.0.0.10 }
              web1: { address: 10.0.0.11, vars: { ports: [8001, 8002] } }
              web2: { address: 10.0.0.12, vars: { ports: [8001] } }
            groups:
              web: { hosts: [web1, web2] }
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(p.ran("web1", prefix: "echo ") == ["echo web1 8001", "echo web1 8002"])
        #expect(p.ran("web2", prefix: "echo ") == ["echo web2 8001"])
        #expect(log.plan?.changes.map(\.delegate) == ["web1", "web1", "web2"])
        #expect(log.plan?.changes.first?.item == #"{"host":"web1","port":8001}"#)
    }

    /// `command` with `check: true` is a read-only check: shown as one, nothing to undo.
    @Test func commandCheckIsReadOnly() async throws {
        let p = try ThreeHostProject()
        p["web1"].reply(to: "exit 9", status: 9)
        try p.write("runbooks/t.yml", """
            hosts: web1
            steps:
              - command: { run: "echo verify", check: true }
              - command: "exit 9"
            """)
        let (outcome, log) = try await p.apply()
        #expect(outcome.exitCode == 1)
        #expect(log.plan?.changes.first?.action == .check && log.plan?.changes.first?.reversible == true)
        // Only the failed command is reported as not undone, not the check.
        #expect(!outcome.message.contains("echo verify"), "\(outcome.message)")
    }

    /// Bad loops and delegations are errors naming the line, before any host is contacted.
    @Test(arguments: [
        ("delegate_to: nowhere", "", "delegate_to: \"nowhere\" is not a host of the inventory"),
        ("delegate_to: \"{{ facts.lb }}\"", "", "must be known before any host is contacted"),
        ("loop: \"{{ params.name }}\"", "", "not a list"),
        ("loop: \"{{ steps.first.stdout }}\"", "", "the plan must know every iteration"),
        ("loop: \"groups.web\"", "", "loop: takes a list or one {{ }} expression"),
        ("", "{{ item }}", "undefined variable `item`"),
    ])
    func badLoopsAndDelegations(_ extra: String, _ argument: String, _ expected: String) async throws {
        let p = try ThreeHostProject()
        try p.write("runbooks/t.yml", """
            hosts: web1
            params:
              name: { type: string, default: x }
            steps:
              - id: first
                command: "echo first"
              - command: "echo {{ host.name }}\(argument)"
                \(extra)
            """)
        let (engine, _) = p.engine()
        do {
            _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
            Issue.record("no error for \(extra)\(argument)")
        } catch let error as DiagnosticError {
            let text = error.diagnostics.map(\.rendered).joined(separator: "\n")
            #expect(text.contains(expected), "\(text)")
            #expect(text.contains("t.yml:7") || text.contains("t.yml:8"), "\(text)")
        }
        for host in ["lb", "web1", "web2"] { #expect(p.ran(host, prefix: "echo ").isEmpty) }
    }
}

import Foundation
import RunbookCore
import RunbookSteps
import RunbookEngine
import Testing
import TestSupport

/// A throwaway project root: runbooks/, templates/ and inventory/ in a temporary folder.
private final class Project {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory.path + "/runbook-loader-\(UUID().uuidString)"
        for dir in ["runbooks", "templates/nginx", "inventory"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        try write("templates/docker-compose.prod.yml.j2", "services:\n  web:\n    command: gunicorn -w {{ params.workers }}\n")
        try write("templates/nginx/upstream.conf.j2", "upstream app {}\n")
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func write(_ path: String, _ text: String) throws {
        try text.write(toFile: root + "/" + path, atomically: true, encoding: .utf8)
    }

    var loader: RunbookLoader { RunbookLoader(root: root) }

    /// The diagnostics of loading `text` as runbook `name`, which must fail.
    func failures(_ text: String, name: String = "scale", sourceLocation: Testing.SourceLocation = #_sourceLocation) -> [Diagnostic] {
        do {
            _ = try loader.load(text: text, file: "runbooks/\(name).yml", name: name)
            Issue.record("expected the runbook to be rejected", sourceLocation: sourceLocation)
            return []
        } catch {
            return error.diagnostics
        }
    }
}

/// The one diagnostic for `field`, checked to be an error at `line`.
@discardableResult
private func expectError(
    _ diagnostics: [Diagnostic], field: String, line: Int, containing text: String? = nil, hint: String? = nil,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) -> Diagnostic? {
    guard let found = diagnostics.first(where: { $0.field == field }) else {
        Issue.record("no diagnostic for \(field) in:\n\(DiagnosticError(diagnostics))", sourceLocation: sourceLocation)
        return nil
    }
    #expect(found.severity == .error, sourceLocation: sourceLocation)
    #expect(found.location?.line == line, "\(found)", sourceLocation: sourceLocation)
    #expect(found.location?.file == "runbooks/scale.yml", sourceLocation: sourceLocation)
    if let text { #expect(found.summary.contains(text), "\(found)", sourceLocation: sourceLocation) }
    if let hint { #expect(found.hint?.contains(hint) == true, "\(found)", sourceLocation: sourceLocation) }
    return found
}

/// SPEC §4's example.
private let specExample = """
    name: vertical-scale
    description: Raise gunicorn workers after a VPS resize
    hosts: web
    params:
      workers: { type: int, default: 8, min: 1, max: 64, description: gunicorn workers }
    vars: { compose_file: "{{ host.app_dir }}/docker-compose.prod.yml" }
    serial: 0            # 0 = every host at once (bounded by --forks); N or "25%" = rolling batches
    max_fail: 0          # hosts that may fail before the run stops
    rollback: auto       # auto | off
    schedule: "0 3 * * *"   # optional, for `runbook schedule`
    steps:
      - id: render
        name: Render the compose file
        template: { src: docker-compose.prod.yml.j2, dest: "{{ vars.compose_file }}" }
      - name: Restart web
        service: { name: web, action: restart, manager: compose, compose_file: "{{ vars.compose_file }}" }
        when: "steps.render.changed"
      - name: Verify health
        health: { url: "http://127.0.0.1:5000/health", retries: 10, delay: 2s }

    """

/// A minimal valid header, so that each bad case shows only its own problem (steps start on line 3).
private let header = "hosts: web\nsteps:\n"

@Suite struct RunbookLoaderTests {
    @Test func specExampleLoadsWithEveryField() throws {
        let project = try Project()
        try project.write("runbooks/vertical-scale.yml", specExample)
        #expect(project.loader.path(for: "vertical-scale") == project.root + "/runbooks/vertical-scale.yml")
        let runbook = try project.loader.load(name: "vertical-scale")
        #expect(runbook.name == "vertical-scale")
        #expect(runbook.description == "Raise gunicorn workers after a VPS resize")
        #expect(runbook.hosts == "web")
        #expect(runbook.serial == .all)
        #expect(runbook.maxFail == 0)
        #expect(runbook.rollback == .auto)
        #expect(runbook.schedule == "0 3 * * *")
        #expect(runbook.file.hasSuffix("runbooks/vertical-scale.yml"))

        #expect(runbook.params.count == 1)
        let workers = runbook.params[0]
        #expect(workers.name == "workers")
        #expect(workers.type == .int)
        #expect(workers.defaultValue == 8)
        #expect(workers.min == 1)
        #expect(workers.max == 64)
        #expect(workers.description == "gunicorn workers")
        #expect(workers.location.line == 5)
        #expect(workers.location.column == 3)

        #expect(runbook.vars.count == 1)
        #expect(runbook.vars[0].name == "compose_file")
        #expect(runbook.vars[0].value == "{{ host.app_dir }}/docker-compose.prod.yml")
        #expect(runbook.vars[0].location.line == 6)

        #expect(runbook.steps.count == 3)
        let render = runbook.steps[0]
        #expect(render.index == 0)
        #expect(render.id == "render")
        #expect(render.name == "Render the compose file")
        #expect(render.kind == "template")
        #expect(render.arguments == ["src": "docker-compose.prod.yml.j2", "dest": "{{ vars.compose_file }}"])
        #expect(render.argumentLocations["src"] == SourceLocation(file: runbook.file, line: 14, column: 22))
        #expect(render.argumentLocations[""]?.line == 14)
        #expect(render.argumentLocations[""]?.column == 5)
        #expect(render.location.line == 12)
        #expect(render.when == nil)
        #expect(render.retries == 0)
        #expect(render.timeout == nil)
        #expect(!render.runOnce)
        #expect(!render.become)
        #expect(render.reference == "render")

        let restart = runbook.steps[1]
        #expect(restart.id == nil)
        #expect(restart.kind == "service")
        #expect(restart.when == "steps.render.changed")
        #expect(restart.arguments == [
            "name": "web", "action": "restart", "manager": "compose", "compose_file": "{{ vars.compose_file }}",
        ])
        #expect(restart.reference == "#2")

        let health = runbook.steps[2]
        #expect(health.kind == "health")
        #expect(health.arguments == ["url": "http://127.0.0.1:5000/health", "retries": 10, "delay": "2s"])
        #expect(health.argumentLocations["delay"]?.line == 19)
        #expect(!StepRegistry.isIrreversible(kind: health.kind, arguments: health.arguments))
    }

    @Test func commonKeysScalarFormsAndDefaultNames() throws {
        let project = try Project()
        let runbook = try project.loader.load(text: """
            hosts: [web, db]
            serial: "25%"
            max_fail: 1
            rollback: off
            schedule: "@daily"
            params:
              mode: { type: enum, values: [fast, safe], default: safe }
              wait: { type: duration, default: 90s }
              target: { type: string, min: 1 }
              dry: { type: bool, default: no }
            steps:
              - id: up
                command: uptime
                timeout: 30s
                retries: 2
                delay: 500ms
                run_once: true
                become: yes
              - sleep: "{{ params.wait }}"
              - copy: { content: "x\\n", dest: /etc/x, mode: 0644 }
              - template: { src: nginx/upstream.conf.j2, dest: /etc/nginx/conf.d/up.conf, mode: 644 }
              - assert: "steps.up.rc == 0"
              - pg_vacuum: { database: app, tables: users, via: compose, service: db }
              - wait_for: { port: 5432, state: up, timeout: 1m }
              - command:
                  run: "echo this is a rather long command line that goes on and on"
                  undo: echo undo
            """, file: "runbooks/scale.yml", name: "scale")
        #expect(runbook.name == "scale")
        #expect(runbook.hosts == "web,db")
        #expect(runbook.serial == .percent(25))
        #expect(runbook.maxFail == 1)
        #expect(runbook.rollback == .off)
        #expect(runbook.schedule == "@daily")
        #expect(runbook.params.map(\.type) == [.enumeration(["fast", "safe"]), .duration, .string, .bool])
        #expect(runbook.params.map(\.defaultValue) == ["safe", "90s", nil, false])

        let up = runbook.steps[0]
        #expect(up.name == "command: uptime")
        #expect(up.arguments == ["run": "uptime"])
        #expect(up.timeout == .seconds(30))
        #expect(up.retries == 2)
        #expect(up.delay == .milliseconds(500))
        #expect(up.runOnce)
        #expect(up.become)
        #expect(StepRegistry.isIrreversible(kind: up.kind, arguments: up.arguments))

        #expect(runbook.steps[1].arguments == ["duration": "{{ params.wait }}"])
        #expect(runbook.steps[1].name == "sleep {{ params.wait }}")
        #expect(runbook.steps[2].arguments == ["content": "x\n", "dest": "/etc/x", "mode": "0644"])
        #expect(runbook.steps[2].name == "copy to /etc/x")
        #expect(runbook.steps[3].arguments["mode"] == "644")
        #expect(runbook.steps[3].name == "template nginx/upstream.conf.j2")
        #expect(runbook.steps[4].arguments == ["that": ["steps.up.rc == 0"]])
        #expect(runbook.steps[5].arguments["tables"] == ["users"])
        #expect(runbook.steps[6].arguments == ["port": 5432, "state": "up", "timeout": "1m"])
        #expect(runbook.steps[7].name == "command: echo this is a rather long command line…")
        #expect(!StepRegistry.isIrreversible(kind: "command", arguments: runbook.steps[7].arguments))
    }

    @Test func unknownKindSuggestsTheClosest() throws {
        let found = try Project().failures(header + """
              - templat: { src: docker-compose.prod.yml.j2, dest: /x }
            """)
        expectError(found, field: "steps[0].templat", line: 3, containing: "unknown step kind \"templat\"", hint: "did you mean \"template\"?")
        #expect(found.count == 1)
    }

    @Test func sftpKindsCannotBecomeRoot() throws {
        let found = try Project().failures(header + """
              - fetch: { src: /var/backups/app.dump, dest: backups/ }
                become: true
            """)
        expectError(found, field: "steps[0].become", line: 4, containing: "fetch reads or writes its file over SFTP as the login user, so it cannot become root")
    }

    @Test func twoKindKeysOrNone() throws {
        let found = try Project().failures(header + """
              - name: both
                template: { src: docker-compose.prod.yml.j2, dest: /x }
                copy: { content: x, dest: /y }
              - name: neither
            """)
        expectError(found, field: "steps[0].copy", line: 5, containing: "exactly one kind key")
        expectError(found, field: "steps[1]", line: 6, containing: "no kind key")
    }

    @Test func wrongTypes() throws {
        let found = try Project().failures(header + """
              - command: uptime
                retries: many
                timeout: soon
                become: perhaps
              - compose_scale: { service: web, replicas: two }
              - service: { name: web, action: bounce }
            """)
        expectError(found, field: "steps[0].retries", line: 4, containing: "expected an integer, got \"many\"")
        expectError(found, field: "steps[0].timeout", line: 5, containing: "expected a duration")
        expectError(found, field: "steps[0].become", line: 6, containing: "expected true or false")
        expectError(found, field: "steps[1].compose_scale.replicas", line: 7, containing: "expected an integer")
        expectError(found, field: "steps[2].service.action", line: 8, containing: "expected one of restart, reload, start, stop",
                    hint: nil)
        #expect(found.count == 5)
    }

    @Test func templateStringsAreAcceptedForAnyScalar() throws {
        let project = try Project()
        let runbook = try project.loader.load(text: """
            hosts: web
            params: { n: { type: int, default: 2 } }
            steps:
              - compose_scale: { service: web, replicas: "{{ params.n }}" }
            """, file: "runbooks/scale.yml", name: "scale")
        #expect(runbook.steps[0].arguments["replicas"] == "{{ params.n }}")
    }

    @Test func missingRequiredArgumentsAndUnknownArguments() throws {
        let found = try Project().failures(header + """
              - template: { src: docker-compose.prod.yml.j2 }
              - template: { src: docker-compose.prod.yml.j2, dset: /x }
              - copy: { src: docker-compose.prod.yml.j2, content: x, dest: /y }
              - service: { name: web, action: reload, manager: signal }
              - wait_for: { state: down }
            """)
        expectError(found, field: "steps[0].template.dest", line: 3, containing: "missing required argument \"dest\"")
        expectError(found, field: "steps[1].template.dset", line: 4, containing: "unknown argument \"dset\"", hint: "did you mean \"dest\"?")
        expectError(found, field: "steps[2].copy.content", line: 5, containing: "only one of src, content")
        expectError(found, field: "steps[3].service.pidfile", line: 6, containing: "manager: signal needs \"pidfile\"")
        expectError(found, field: "steps[4].wait_for.port", line: 7, containing: "needs one of port, url")
    }

    @Test func paramDeclarationsAreChecked() throws {
        let found = try Project().failures("""
            hosts: web
            params:
              workers: { type: int, default: 100, min: 1, max: 64 }
              mode: { type: enum, values: [fast, safe], default: slow }
              wait: { type: duration, default: later }
              kind: { type: integer }
              speed: { type: enum }
            steps:
              - command: "echo {{ params.wokers }}"
            """)
        expectError(found, field: "params.workers.default", line: 3, containing: "above the maximum 64")
        expectError(found, field: "params.mode.default", line: 4, containing: "not one of fast, safe")
        expectError(found, field: "params.wait.default", line: 5, containing: "expected a duration")
        expectError(found, field: "params.kind.type", line: 6, containing: "unknown parameter type \"integer\"", hint: "did you mean \"int\"?")
        expectError(found, field: "params.speed.values", line: 7, containing: "needs values")
        expectError(found, field: "steps[0].command", line: 9, containing: "params.wokers is not a declared parameter",
                    hint: "did you mean \"workers\"?")
    }

    @Test func yamlSyntaxErrorHasItsLine() throws {
        let found = try Project().failures("hosts: web\nsteps:\n  - command: uptime\n   bad: [unclosed\n")
        #expect(found.count == 1)
        #expect(found[0].location?.file == "runbooks/scale.yml")
        #expect(found[0].location?.line == 4)
        #expect(found[0].summary.hasPrefix("invalid YAML"))
    }

    @Test func stepIdsAreUniqueIdentifiers() throws {
        let found = try Project().failures(header + """
              - id: backup
                command: "true"
              - id: backup
                command: "true"
              - id: 2fast
                command: "true"
            """)
        expectError(found, field: "steps[1].id", line: 5, containing: "duplicate step id \"backup\"", hint: "runbooks/scale.yml:3:9")
        expectError(found, field: "steps[2].id", line: 7, containing: "invalid step id \"2fast\"")
    }

    @Test func stepReferencesMustBeToEarlierSteps() throws {
        let found = try Project().failures(header + """
              - command: "echo {{ steps.later.stdout }}"
                when: steps.nothing.changed
              - id: later
                command: "true"
                when: "steps.later.rc == 0"
              - assert: { that: ["steps.latr.changed", "steps.later.rc == 0"] }
            """)
        expectError(found, field: "steps[0].command", line: 3, containing: "steps.later refers to a later step (steps[1])")
        expectError(found, field: "steps[0].when", line: 4, containing: "steps.nothing refers to no step")
        expectError(found, field: "steps[1].when", line: 7, containing: "refers to this step itself")
        expectError(found, field: "steps[2].assert.that[0]", line: 8, containing: "steps.latr refers to no step", hint: "did you mean \"later\"?")
        #expect(found.count == 4)
    }

    @Test func templateSourcesLiveUnderTemplates() throws {
        let project = try Project()
        try FileManager.default.createSymbolicLink(atPath: project.root + "/templates/passwd", withDestinationPath: "/etc/passwd")
        let found = project.failures(header + """
              - template: { src: docker-compose.prod.yaml.j2, dest: /x }
              - template: { src: ../inventory/hosts.yml, dest: /x }
              - copy: { src: /etc/passwd, dest: /x }
              - copy: { src: passwd, dest: /x }
              - template: { src: nginx, dest: /x }
            """)
        expectError(found, field: "steps[0].template.src", line: 3, containing: "not found: templates/docker-compose.prod.yaml.j2",
                    hint: "did you mean \"docker-compose.prod.yml.j2\"?")
        expectError(found, field: "steps[1].template.src", line: 4, containing: "leads outside templates/")
        expectError(found, field: "steps[2].copy.src", line: 5, containing: "absolute path")
        expectError(found, field: "steps[3].copy.src", line: 6, containing: "outside templates/")
        expectError(found, field: "steps[4].template.src", line: 7, containing: "is a directory")
    }

    @Test func topLevelIsChecked() throws {
        let found = try Project().failures("""
            name: other
            hosts: web
            serial: half
            max_fail: -1
            rollback: maybe
            schedule: "0 25 * *"
            colour: blue
            steps: []
            """)
        expectError(found, field: "name", line: 1, containing: "differs from the file name \"scale\"")
        expectError(found, field: "serial", line: 3)
        expectError(found, field: "max_fail", line: 4)
        expectError(found, field: "rollback", line: 5, containing: "expected auto or off")
        expectError(found, field: "schedule", line: 6, containing: "expected 5 fields")
        expectError(found, field: "colour", line: 7, containing: "unknown key \"colour\"")
        expectError(found, field: "steps", line: 8, containing: "at least one step")

        let missing = try Project().failures("description: nothing else\n")
        expectError(missing, field: "hosts", line: 1, containing: "missing required key \"hosts\"")
        expectError(missing, field: "steps", line: 1, containing: "missing required key \"steps\"")
        #expect(RunbookLoader.scheduleProblem("0 25 * * *")?.contains("outside 0-23") == true)
        #expect(RunbookLoader.scheduleProblem("*/15 2-4 1,15 jan-mar mon-fri") == nil)
        #expect(RunbookLoader.scheduleProblem("@reboot") != nil)
    }

    @Test func severalErrorsAreAllReportedInOrder() throws {
        let found = try Project().failures("""
            hosts: web
            params:
              workers: { type: int, default: 0, min: 1 }
            steps:
              - sleep: forever
              - templat: { src: a, dest: b }
              - command: uptime
                retries: -1
            """)
        #expect(found.count == 4)
        #expect(found.map { $0.location?.line ?? 0 } == [3, 5, 6, 8])
        #expect(found.map(\.field) == ["params.workers.default", "steps[0].sleep", "steps[1].templat", "steps[2].retries"])
    }

    @Test func listAndLoadByName() throws {
        let project = try Project()
        try project.write("runbooks/vertical-scale.yml", specExample)
        try project.write("runbooks/broken.yml", "hosts: web\nsteps:\n  - sleep: never\n")
        let listed = project.loader.list()
        #expect(listed.map(\.name) == ["broken", "vertical-scale"])
        if case .failure(let error) = listed[0].result {
            #expect(error.diagnostics.first?.location?.line == 3)
            #expect(error.diagnostics.first?.location?.file.hasSuffix("runbooks/broken.yml") == true)
        } else {
            Issue.record("broken.yml should fail to load")
        }
        #expect((try? listed[1].result.get())?.name == "vertical-scale")

        #expect(throws: DiagnosticError.self) { try project.loader.load(name: "vertical-scal") }
        do {
            _ = try project.loader.load(name: "vertical-scal")
        } catch {
            #expect(error.diagnostics.first?.hint == "did you mean \"vertical-scale\"?")
        }
    }

    @Test func hostsPatternIsCheckedAgainstTheInventory() throws {
        let project = try Project()
        try project.write("runbooks/vertical-scale.yml", specExample.replacingOccurrences(of: "hosts: web", with: "hosts: wbe"))
        let runbook = try project.loader.load(name: "vertical-scale")
        let inventory = try InventoryLoader(homeDirectory: "/home/op", defaultUser: "op")
            .load(text: "hosts: { app1: {} }\ngroups: { web: [app1] }\n", file: "inventory/hosts.yml")
        let problems = project.loader.checkHosts(runbook, against: inventory)
        #expect(problems.count == 1)
        #expect(problems.first?.location?.line == 3)
        #expect(problems.first?.field == "hosts")
        #expect(problems.first?.hint == "did you mean \"web\"?")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: repositoryRoot + "/.build/debug/runbook")))
    func builtBinaryListsAndValidates() throws {
        let project = try Project()
        try project.write("runbooks/vertical-scale.yml", specExample)
        try project.write("inventory/hosts.yml", "hosts:\n  app1: { address: 127.0.0.1 }\ngroups:\n  web: [app1]\n")
        let binary = repositoryRoot + "/.build/debug/runbook"
        var environment = ProcessInfo.processInfo.environment
        environment["NO_COLOR"] = "1"
        environment["RUNBOOK_INVENTORY"] = nil
        func runbook(_ arguments: String...) throws -> ProcessOutput {
            try runProcessFull(binary, arguments, environment: environment, currentDirectory: project.root)
        }

        let ok = try runbook("validate")
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("ok  vertical-scale"))
        let list = try runbook("list")
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains("vertical-scale"))
        #expect(list.stdout.contains("Raise gunicorn workers after a VPS resize"))
        #expect(list.stdout.contains("workers:int=8"))
        #expect(list.stdout.contains("0 3 * * *"))

        try project.write("runbooks/broken.yml", "hosts: web\nsteps:\n  - command: uptime\n    retries: many\n  - templat: {}\n")
        try project.write("runbooks/elsewhere.yml", "hosts: db\nsteps:\n  - sleep: 1s\n")
        let bad = try runbook("validate")
        #expect(bad.status == 2)
        #expect(bad.stdout.contains("ok  vertical-scale"))
        #expect(bad.stderr.contains("runbooks/broken.yml:4:14: error: steps[0].retries: expected an integer, got \"many\""))
        #expect(bad.stderr.contains("runbooks/broken.yml:5:5: error: steps[1].templat: unknown step kind \"templat\""))
        #expect(bad.stderr.contains("runbooks/elsewhere.yml:1:8: error: hosts: no host or group matches the name \"db\""))

        let one = try runbook("validate", "vertical-scale")
        #expect(one.status == 0)
        let missing = try runbook("validate", "vertical-scal")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("did you mean \"vertical-scale\"?"))

        let badList = try runbook("list", "--json")
        #expect(badList.status == 2)
        let objects = badList.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(objects.count == 3)
        #expect((objects.first?["error"] as? String)?.contains("runbooks/broken.yml:4:14") == true)
        let good = objects.first { $0["name"] as? String == "vertical-scale" }
        let params = good?["params"] as? [[String: Any]]
        #expect(params?.first?["default"] as? Int == 8)
        #expect(good?["schedule"] as? String == "0 3 * * *")
    }
}

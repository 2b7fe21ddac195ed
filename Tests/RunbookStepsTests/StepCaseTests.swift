import Foundation
import RunbookCore
import Testing
import TestSupport

@testable import RunbookSteps

/// The arguments as the engine renders them for a host (no `{{ }}` here): strings as strings,
/// command arguments as commands, everything in `raw`.
func rendered(_ testCase: StepCase, schema: StepKindSchema) -> RenderedArguments {
    var arguments = RenderedArguments(raw: testCase.arguments)
    for (key, value) in testCase.arguments {
        guard case .string(let text) = value else { continue }
        if schema.argument(key)?.type == .command {
            arguments.commands[key] = ShellCommand(text)
        } else {
            arguments.strings[key] = text
        }
    }
    arguments.fileContents = testCase.fileContents.map { Array($0.utf8) }
    return arguments
}

func step(_ testCase: StepCase) -> Step {
    Step(index: 0, id: nil, name: testCase.name, kind: testCase.kind, arguments: .map(testCase.arguments), argumentLocations: [:],
         when: nil, timeout: nil, retries: 0, delay: .seconds(1), runOnce: false, become: testCase.become,
         location: SourceLocation(file: "runbooks/t.yml", line: 1, column: 1))
}

/// Plans a case against a scripted host, as the engine does (commands and digest from the operation).
func plan(_ testCase: StepCase, transport: ScriptedTransport) async throws -> HostStepPlan {
    let kind = try #require(StepRegistry.kind(testCase.kind), "no kind \(testCase.kind)")
    let host = Host(name: "h1", address: "10.0.0.1", user: "deploy", knownHosts: "/dev/null")
    var planned = try await kind.init().plan(step: step(testCase), host: host, arguments: rendered(testCase, schema: kind.schema),
                                             facts: FactReader(transport: transport))
    planned.change.commands = planned.operation.shownCommands(become: testCase.become)
    return planned
}

func scripted(_ testCase: StepCase) -> ScriptedTransport {
    let transport = ScriptedTransport(hostName: "h1", files: testCase.files)
    for (match, reply) in testCase.replies { transport.reply(to: match, reply) }
    return transport
}

@Suite struct StepCaseTests {
    @Test(arguments: stepCases) func plans(_ testCase: StepCase) async throws {
        let planned = try await plan(testCase, transport: scripted(testCase))
        let change = planned.change
        #expect(change.action == testCase.action, "\(testCase): \(change.summary)")
        if let summary = testCase.summary { #expect(change.summary.contains(summary), "\(testCase): \(change.summary)") }
        #expect(change.commands.count == testCase.commands.count, "\(testCase): \(change.commands)")
        for (shown, wanted) in zip(change.commands, testCase.commands) {
            #expect(shown.contains(wanted), "\(testCase): \(shown) lacks \(wanted)")
        }
        #expect(StepRegistry.undoBehavior(kind: testCase.kind, arguments: .map(testCase.arguments)) == testCase.undo, "\(testCase)")
        if change.action != .noop { #expect(change.reversible == testCase.reversible, "\(testCase)") }
        // A no-op runs nothing; anything else is identified by what it runs.
        if change.action == .noop { #expect(planned.change.commands.isEmpty) }
    }

    @Test func everyKindHasCasesForItsPlanAndUndo() {
        let covered = Set(stepCases.map(\.kind))
        #expect(covered == Set(StepRegistry.names))
        // Every kind that can change something has a no-op row too, where the kind has one.
        for kind in ["command", "template", "copy", "env_set", "yaml_set", "service", "compose_scale", "nginx_upstream", "pg_kill_queries", "pg_index"] {
            #expect(stepCases.contains { $0.kind == kind && $0.action == .noop }, "\(kind) has no no-op case")
        }
    }

    @Test func registryDescribesEveryKindOfTheSpec() {
        let kinds = ["command", "template", "copy", "env_set", "yaml_set", "service", "compose_scale", "nginx_reload", "nginx_upstream", "pg_backup", "pg_restore", "fetch", "pg_vacuum",
                     "pg_kill_queries", "pg_sql", "pg_slow_queries", "pg_index", "health", "load_test", "wait_for", "docker_prune", "gather", "queue_depth", "assert", "sleep"]
        #expect(StepRegistry.names == kinds)
        #expect(StepRegistry.schema(for: "sleep")?.scalarForm == .duration)
        #expect(StepRegistry.schema(for: "template")?.argument("dest")?.required == true)
        #expect(StepRegistry.schema(for: "pg_kill_queries")?.argument("older_than")?.type == .duration)
        #expect(StepRegistry.isIrreversible(kind: "command", arguments: ["run": "x"]))
        #expect(!StepRegistry.isIrreversible(kind: "command", arguments: ["run": "x", "undo": "y"]))
        #expect(StepRegistry.isIrreversible(kind: "pg_sql", arguments: ["sql": "x"]))
        #expect(!StepRegistry.isIrreversible(kind: "pg_sql", arguments: ["sql": "x", "undo_sql": "y"]))
        #expect(StepRegistry.isIrreversible(kind: "no_such_kind", arguments: [:]))
        #expect(StepRegistry.kind("service")?.replay == .afterRestore)
        #expect(StepRegistry.kind("health")?.replay == .recheck)
        #expect(StepRegistry.kind("load_test")?.replay == .recheck)
        // Rollback re-runs a health check unless it says no, a load test only when it says yes.
        #expect(StepRegistry.rechecks(kind: "health", arguments: ["url": "http://x/"]))
        #expect(!StepRegistry.rechecks(kind: "health", arguments: ["url": "http://x/", "recheck": false]))
        #expect(!StepRegistry.rechecks(kind: "load_test", arguments: ["url": "http://x/", "requests": 10]))
        #expect(StepRegistry.rechecks(kind: "load_test", arguments: ["url": "http://x/", "requests": 10, "recheck": true]))
        #expect(StepRegistry.undoBehavior(kind: "load_test", arguments: ["url": "http://x/", "requests": 10]) == .readOnly)
        #expect(StepRegistry.kind("template")?.supportsBecome == false)
        #expect(StepRegistry.kind("fetch")?.supportsBecome == false)
        #expect(StepRegistry.kind("gather")?.outputsAreFacts == true)
    }

    /// What a plan shows for a `.run` is the command the host receives: executing the planned
    /// operation's commands on a scripted host records exactly the shown lines.
    @Test(arguments: stepCases.filter { $0.action == .run }) func shownIsExecuted(_ testCase: StepCase) async throws {
        let planTransport = scripted(testCase)
        let planned = try await plan(testCase, transport: planTransport)
        let host = scripted(testCase)
        for command in planned.operation.commands(become: testCase.become) {
            _ = try await host.run(command, stdin: [], timeout: nil, onOutput: nil)
        }
        #expect(host.ran.map(\.display) == planned.change.commands.filter { !$0.hasPrefix("undo: ") && !$0.hasPrefix("validate: ") })
    }

    @Test func digestFollowsTheOperation() {
        let a = StepOperation.run("echo 1", undo: nil)
        let b = StepOperation.run("echo 2", undo: nil)
        #expect(a.digest(become: false) != b.digest(become: false))
        #expect(a.digest(become: false) != a.digest(become: true))
        #expect(a.digest(become: false) == StepOperation.run("echo 1", undo: nil).digest(become: false))
        #expect(a.digest(become: false, extra: "x") != a.digest(become: false, extra: "y"))
    }
}

/// Planning failures a kind must report before anything runs.
@Suite struct StepRefusalTests {
    @Test func backupRefusesWhenTheDiskCannotHoldTheDump() async throws {
        let testCase = StepCase(name: "full disk", kind: "pg_backup", arguments: ["database": "app", "dir": "/var/backups/pg", "keep": 2],
                                replies: [("pg_size_pretty", .init(stdout: "2 GB|2147483648\n")), ("df -Pk", .init(stdout: "1048576\n"))],
                                action: .run, undo: .kept)
        let transport = scripted(testCase)
        await #expect(throws: StepFailure.self) { try await plan(testCase, transport: transport) }
        do { _ = try await plan(testCase, transport: transport) } catch {
            #expect("\(error)".contains("1024 MiB free, 2304 MiB needed"), "\(error)")
        }
        #expect(!transport.ranLines.contains { $0.contains("pg_dump") })
    }

    @Test func yamlSetOnAMissingFileOrPath() async throws {
        let missingFile = StepCase(name: "no file", kind: "yaml_set",
                                   arguments: ["file": "/srv/app/docker-compose.yml", "path": "services.web.command",
                                               "flag": .map(["name": "--workers", "value": "8"])],
                                   action: .update, undo: .restore)
        await #expect(throws: StepFailure.self) { try await plan(missingFile, transport: scripted(missingFile)) }
        var missingPath = missingFile
        missingPath.files = ["/srv/app/docker-compose.yml": .init("services:\n  api:\n    command: gunicorn app:app\n")]
        do {
            _ = try await plan(missingPath, transport: scripted(missingPath))
            Issue.record("a missing path must fail the plan")
        } catch {
            #expect("\(error)".contains("services.web.command is not in the file"), "\(error)")
        }
    }
}

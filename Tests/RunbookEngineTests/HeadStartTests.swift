import Foundation
import Logging
import RunbookCore
import Synchronization
import Testing
import TestSupport

@testable import RunbookEngine

/// An apply begun before the arguments are parsed (`HeadStart`) is taken only for exactly its
/// request and settings, and never reaches a host on invalid input.
/// How many connections an opener made.
final class OpenCount: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

@Suite struct HeadStartTests {
    /// The project's engine, and a head start with the same settings whose opener counts the
    /// connections it makes.
    func begin(_ project: ScriptedProject, _ request: RunRequest) -> (Engine, EventLog, HeadStart, OpenCount) {
        let (engine, log) = project.engine()
        let opened = OpenCount()
        var settings = engine.settings
        let (one, two) = (project.host, project.second)
        settings.opener = { host in
            opened.add()
            return host.name == "h1" ? one : two
        }
        return (engine, log, HeadStart(request, settings: settings), opened)
    }

    /// A runbook `t` on h1 whose one step runs `command`, with an int param `n` when `withParam`.
    func writeRunbook(_ project: ScriptedProject, command: String, withParam: Bool = false) throws {
        try project.write("runbooks/t.yml", """
            hosts: web
            \(withParam ? "params: { n: { type: int } }" : "")
            steps:
              - name: first
                command: "\(command)"
            """)
    }

    func waitUntil(_ condition: () -> Bool) async {
        for _ in 0..<1000 where !condition() { try? await Task.sleep(for: .milliseconds(10)) }
    }

    @Test("taken for the same request: apply runs what was loaded before it was called, on the connection already made")
    func takenForTheSameRequest() async throws {
        let project = try ScriptedProject()
        try writeRunbook(project, command: "echo loaded-early {{ params.n }}", withParam: true)
        let request = RunRequest(runbook: "t", params: ["n": "7"])
        let (engine, log, headStart, opened) = begin(project, request)
        await waitUntil { opened.value == 1 }
        #expect(opened.value == 1)
        // Edited after the head start loaded it: the run is the one that was loaded.
        try writeRunbook(project, command: "echo loaded-late {{ params.n }}", withParam: true)
        let outcome = try await engine.apply(request, options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil,
                                                                            headStart: headStart))
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(log.appliedLines.contains("echo loaded-early 7"), "\(log.appliedLines)")
        #expect(!project.host.ranLines.contains { $0.contains("loaded-late") })
        #expect(opened.value == 1, "apply connected again")
        // The host lock was taken and released by the run.
        #expect(project.host.files.keys.filter { $0.hasSuffix(".lock") }.isEmpty, "\(project.host.files.keys)")
    }

    @Test("not taken for another request: apply loads and connects itself, and the head start took no lock")
    func notTakenForAnotherRequest() async throws {
        let project = try ScriptedProject()
        try writeRunbook(project, command: "echo n={{ params.n }}", withParam: true)
        let (engine, log, headStart, opened) = begin(project, RunRequest(runbook: "t", params: ["n": "1"]))
        await waitUntil { opened.value == 1 }
        let outcome = try await engine.apply(RunRequest(runbook: "t", params: ["n": "2"]),
                                             options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil,
                                                                   headStart: headStart))
        // Had the head start locked the host, this run's lock would have been refused.
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(log.appliedLines == ["echo n=2"])
        #expect(!project.host.ranLines.contains("echo n=1"))
    }

    @Test("not taken with other settings (another state dir)")
    func notTakenWithOtherSettings() async throws {
        let project = try ScriptedProject()
        try writeRunbook(project, command: "echo one")
        let request = RunRequest(runbook: "t")
        let (engine, _, _, _) = begin(project, request)
        var other = engine.settings
        other.stateDir = project.root + "/.elsewhere"
        let headStart = HeadStart(request, settings: other)
        #expect(await headStart.take(request, settings: engine.settings) == nil)
        // Taken once only: a second ask gets nothing either.
        #expect(await headStart.take(request, settings: other) == nil)
    }

    @Test("invalid input: no host is contacted, and apply reports the error itself")
    func invalidInputConnectsNothing() async throws {
        let project = try ScriptedProject()
        try writeRunbook(project, command: "echo {{ params.missing }}")
        let request = RunRequest(runbook: "t")
        let (engine, _, headStart, opened) = begin(project, request)
        await #expect(throws: DiagnosticError.self) {
            _ = try await engine.apply(request, options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil,
                                                                      headStart: headStart))
        }
        #expect(opened.value == 0)
        #expect(project.host.ran.isEmpty)
    }
}

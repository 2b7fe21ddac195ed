import Foundation
import RunbookCore
import Testing
import TestSupport

@testable import RunbookEngine
@testable import RunbookSteps

/// A `load_test` applied by the engine on a scripted host: its table under the step and in
/// the journal, its numbers for later steps, and its re-run in rollback only when asked.
@Suite struct LoadTestJournalTests {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

    @Test func theTableIsShownJournaledAndItsNumbersAreOutputs() async throws {
        let project = try ScriptedProject()
        project.host.answer(address: "127.0.0.1", port: 8080, delay: .milliseconds(1)) { _ in Self.ok }
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - id: lt
                name: load
                load_test: { url: "http://127.0.0.1:8080/health", requests: 30, concurrency: 3, p95_under: 1h, max_error_rate: 1% }
              - name: numbers
                assert: { that: ["steps.lt.requests == 30", "steps.lt.errors == 0", "steps.lt.error_rate == 0", "steps.lt.p95_ms >= 1", "steps.lt.rate > 0"] }
            """)
        let (engine, log) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(outcome.exitCode == 0, "\(outcome.message)")
        #expect(project.host.exchangeCount(address: "127.0.0.1", port: 8080) == 30)
        let change = try #require(log.plan?.changes.first)
        #expect(change.action == .check)
        #expect(change.summary.contains("30 requests, concurrency 3; gates: p95 under 60m, error rate at most 1%"), "\(change.summary)")
        let finished = log.events.withLock {
            $0.compactMap { event -> String? in
                if case .stepFinished(_, 0, _, _, .ok, _, let message) = event { return message }
                return nil
            }
        }
        let message = try #require(finished.first, "the load test's step ended without its table")
        let lines = message.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(message)")
        #expect(lines.first?.hasPrefix("GET http://127.0.0.1:8080/health from h1: 30 requests, concurrency 3, in ") == true, "\(message)")
        #expect(lines.dropFirst().first?.split(separator: " ") == ["requests", "errors", "p50", "p95", "p99", "rate"], "\(message)")
        #expect(lines.last?.hasPrefix("30        0") == true, "\(message)")
        // `runbook show` lists it: the journal keeps the table with the step.
        let journal = try Journal(path: project.root + "/.runbook/journal.sqlite")
        let entries = try journal.entries(run: try #require(outcome.runID))
        let entry = try #require(entries.first { $0.stepName == "load" })
        #expect(entry.status == .done)
        #expect(entry.message == message)
    }

    /// A failed step later in the run rolls back; the load test runs again in phase 3 only
    /// with `recheck: true`.
    @Test(arguments: [false, true]) func rerunInRollbackOnlyWhenAsked(_ recheck: Bool) async throws {
        let project = try ScriptedProject()
        project.host.answer(address: "127.0.0.1", port: 8080) { _ in Self.ok }
        project.host.reply(to: "false-step", status: 1)
        try project.write("runbooks/t.yml", """
            hosts: web
            steps:
              - name: change
                command: { run: "touch /srv/flag", undo: "rm -f /srv/flag" }
              - name: load
                load_test: { url: "http://127.0.0.1:8080/health", requests: 12, concurrency: 4\(recheck ? ", recheck: true" : "") }
              - name: fail
                command: "echo false-step; exit 1"
            """)
        let (engine, log) = project.engine()
        let outcome = try await engine.apply(RunRequest(runbook: "t"), options: ApplyOptions(yes: true, rollback: true, planFile: nil, confirm: nil))
        #expect(outcome.exitCode == 1, "\(outcome.message)")
        #expect(log.appliedLines.contains("rm -f /srv/flag"), "rollback did not undo the change: \(log.appliedLines)")
        #expect(project.host.exchangeCount(address: "127.0.0.1", port: 8080) == (recheck ? 24 : 12))
        let undone = log.events.withLock {
            $0.compactMap { event -> String? in
                if case .undoFinished(_, "load", true, let message) = event { return message }
                return nil
            }
        }
        if recheck {
            let message = try #require(undone.first, "the load test did not run again")
            #expect(message.hasPrefix("ran again (rollback phase 3)\nGET http://127.0.0.1:8080/health from h1: 12 requests"), "\(message)")
            #expect(message.contains("\nrequests  errors"), "\(message)")
        } else {
            #expect(undone.isEmpty, "\(undone)")
        }
    }
}

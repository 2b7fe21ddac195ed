import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine

extension Runbook {
    /// `runbook history`: recent runs from the journal.
    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "history", abstract: "List recent runs from the journal.")

        @Option(name: .short, help: "How many runs.")
        var n: Int = 20

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let journal = try context.journal()
            _ = try journal.markInterruptedRuns()
            let runs = try journal.runs(limit: n)
            if context.json {
                for run in runs { context.out.write(try jsonLine(run) + "\n") }
                return
            }
            if runs.isEmpty {
                context.out.write("no runs yet\n")
                return
            }
            let rows = runs.map { run in
                [run.id, run.runbook, Self.time(run.startedAt), context.out.paint(run.status.rawValue, Self.style(run.status)),
                 run.hosts.joined(separator: ","), run.message.map { String($0.prefix(80)) } ?? ""]
            }
            context.out.write(table(header: ["RUN", "RUNBOOK", "STARTED", "STATUS", "HOSTS", "MESSAGE"], rows: rows, terminal: context.out, wrap: [5]))
        }

        static func time(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
            return formatter.string(from: date)
        }

        static func style(_ status: RunStatus) -> Terminal.Style {
            switch status {
            case .succeeded: return .green
            case .running: return .cyan
            case .rolledBack, .refused: return .yellow
            case .failed, .rollbackFailed, .interrupted: return .red
            }
        }
    }

    /// `runbook show RUN_ID`: one run, step by step.
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one run from the journal, step by step.")

        @Argument(help: "The run id (or a unique prefix).")
        var runID: String

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let journal = try context.journal()
            _ = try journal.markInterruptedRuns()
            guard let id = try journal.resolveRunID(runID), let run = try journal.run(id) else {
                throw DiagnosticError(.error("no run matches \(runID)", hint: "see `runbook history`"))
            }
            let entries = try journal.entries(run: id)
            if context.json {
                context.out.write(try jsonLine(run) + "\n")
                for entry in entries {
                    var e = entry
                    e.undo = nil
                    context.out.write(try jsonLine(e) + "\n")
                }
                return
            }
            let out = context.out
            out.write(out.paint("run \(run.id)", .bold) + "  \(run.runbook)  " + out.paint(run.status.rawValue, History.style(run.status)) + "\n")
            out.write("started \(History.time(run.startedAt)) on \(run.controller) (pid \(run.pid))")
            if let finished = run.finishedAt { out.write(", finished \(History.time(finished))") }
            if let code = run.exitCode { out.write(", exit \(code)") }
            out.write("\nparams \(run.paramsJSON)\nhosts \(run.hosts.joined(separator: ", "))\n")
            if let message = run.message { out.write(message + "\n") }
            out.write("\n")
            let rows = entries.map { e in
                [e.hostDisplay, e.phase.rawValue, "#\(e.stepIndex + 1) \(e.stepDisplay)", e.status.rawValue + (e.changed ? " (changed)" : ""),
                 e.irreversible ? "irreversible" : "", e.durationMs.map { "\($0) ms" } ?? "", e.message ?? ""]
            }
            out.write(table(header: ["HOST", "PHASE", "STEP", "STATUS", "", "TIME", "MESSAGE"], rows: rows, terminal: out, wrap: [2, 6]))
        }
    }
}

/// One Codable value as a JSON line with sorted keys and ISO 8601 dates.
func jsonLine<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

extension Context {
    /// The journal in the state directory.
    func journal() throws -> Journal {
        try Journal(path: stateDir + "/journal.sqlite")
    }
}

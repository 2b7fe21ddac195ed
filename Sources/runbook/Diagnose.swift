import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine
import RunbookSteps

extension Runbook {
    /// `runbook diagnose`: the seeds' decision tree as a command.
    struct Diagnose: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "diagnose",
            abstract: "Measure each host against the scaling guide's thresholds and name the runbook to run next.",
            discussion: """
                Samples CPU over --window (sustained, as the guide means it), memory, swap, load, disk per \
                mount, PostgreSQL (connections, queries over a minute, cache hit) where the host has db vars, \
                p95 and error rate of 50 requests to latency_url (or health_url), and the queue's pending jobs \
                (queue_url). Changes nothing. Exits 0 when every metric is ok, 1 when any is at warning or critical.
                """)

        @Option(name: [.customShort("l"), .long], help: "Hosts: a host, a group, all, a comma list, a * glob, !exclusions.")
        var limit: String = "all"

        @Option(help: "How long CPU is sampled (e.g. 60s, 5m).")
        var window: String = "60s"

        @OptionGroup var options: GlobalOptions

        func validate() throws {
            guard let duration = DurationText.parse(window), duration >= .seconds(1), duration <= .seconds(3600) else {
                throw ValidationError("--window: \(window) is not a duration from 1s to 1h (e.g. 60s, 5m)")
            }
        }

        func run() async throws {
            let context = Context(options)
            let inventory = try context.loadInventory()
            let hosts = try context.select(limit, in: inventory)
            let secrets = try context.loadSecrets()
            let diagnoser = Diagnoser(connector: Connector(secrets: secrets, logger: context.logger), forks: context.forks,
                                      window: DurationText.parse(window)!, databasePassword: secrets.value("DB_PASSWORD"))
            let reports = await diagnoser.run(hosts)
            let out = context.out
            if context.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                for report in reports {
                    out.write(String(decoding: (try? encoder.encode(report)) ?? Data(), as: UTF8.self) + "\n")
                }
            } else {
                for report in reports { out.write(Self.table(report, terminal: out)) }
                let all = reports.flatMap(\.recommendations)
                out.write(all.isEmpty ? "\nNo action needed: every metric is within the guide's warning levels.\n"
                                      : "\nNext:\n" + all.map { "  - " + Terminal.oneLine($0) }.joined(separator: "\n") + "\n")
            }
            if reports.contains(where: { $0.state >= .warning }) { throw ExitCode(1) }
        }

        /// One host's table: metric, value, warning, critical, state.
        static func table(_ report: DiagnoseReport, terminal: Terminal) -> String {
            var text = "\n" + terminal.paint(Terminal.oneLine(report.host), .bold) + "\n"
            if let error = report.error {
                return text + terminal.paint("  cannot measure: \(Terminal.oneLine(error))", .red) + "\n"
            }
            let rows = [["metric", "value", "warning", "critical", "state"]] + report.metrics.map { metric in
                let comparison = metric.higherIsWorse ? ">" : "<"
                return [metric.label, Capacity.format(metric.value, metric.unit), comparison + Capacity.format(metric.warning, metric.unit),
                        comparison + Capacity.format(metric.critical, metric.unit), metric.state.rawValue]
            }
            let widths = (0..<5).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for (index, row) in rows.enumerated() {
                var line = "  " + row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                    .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
                if index > 0 {
                    switch report.metrics[index - 1].state {
                    case .critical: line = terminal.paint(line, .red)
                    case .warning: line = terminal.paint(line, .yellow)
                    default: break
                    }
                }
                text += line + "\n"
            }
            return text
        }
    }
}

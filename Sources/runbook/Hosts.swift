import ArgumentParser
import Foundation
import RunbookCore

extension Runbook {
    /// `runbook hosts`: the resolved hosts and how each is reached.
    struct Hosts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hosts",
            abstract: "List the resolved hosts with their connection settings.")

        @Option(name: [.customShort("l"), .long], help: "Only hosts matching LIMIT (host, group, all, comma list, * glob, !exclusion).")
        var limit: String = "all"

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let inventory = try context.loadInventory()
            let hosts = try context.select(limit, in: inventory)
            if context.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                for host in hosts {
                    let line = String(decoding: try encoder.encode(host), as: UTF8.self)
                    context.out.write(line + "\n")
                }
                return
            }
            let rows = hosts.map { (host: RunbookCore.Host) -> [String] in
                let destination = host.connection == .local ? "(this machine)" : host.destination
                let via = host.proxyJump.map { $0.name ?? $0.destination }.joined(separator: " → ")
                let keys = host.connection == .local ? "-" : "\(host.hostKeyChecking.rawValue) \(host.knownHosts)"
                return [host.name, host.connection.rawValue, destination, via.isEmpty ? "-" : via,
                        host.groups.isEmpty ? "-" : host.groups.joined(separator: ","), keys]
            }
            let header = ["HOST", "CONNECTION", "DESTINATION", "VIA", "GROUPS", "HOST KEYS"]
            context.out.write(table(header: header, rows: rows, terminal: context.out))
            context.out.write(context.out.paint("\(hosts.count) host\(hosts.count == 1 ? "" : "s") from \(context.inventoryPath)", .dim) + "\n")
        }
    }
}

/// Left-aligned columns separated by two spaces; the header is bold when colour is on.
func table(header: [String], rows: [[String]], terminal: Terminal) -> String {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    // The last cell may have several lines (a load test's table): they go on under its column.
    let lastColumn = String(repeating: " ", count: widths.dropLast().reduce(0) { $0 + $1 + 2 })
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, cell in
            i == cells.count - 1 ? cell.replacingOccurrences(of: "\n", with: "\n" + lastColumn)
                : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    var text = terminal.paint(line(header), .bold) + "\n"
    for row in rows { text += line(row) + "\n" }
    return text
}

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
func table(header: [String], rows: [[String]], terminal: Terminal, wrap wrapColumns: [Int] = [], width: Int? = nil) -> String {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.split(separator: "\n").map(\.count).max() ?? 0) }
    }
    // Too wide for the terminal: the wrappable columns share what the others leave, and their
    // cells wrap at spaces (`--json` has every text whole). A column narrower than an equal
    // share keeps its width and leaves the rest to the wider ones, which split it equally
    // (at least 16 columns each).
    if let limit = width ?? terminal.columns, !wrapColumns.isEmpty {
        let total = widths.reduce(0, +) + 2 * (widths.count - 1)
        if total > limit {
            let fixed = widths.enumerated().filter { !wrapColumns.contains($0.offset) }.map(\.element).reduce(0, +) + 2 * (widths.count - 1)
            var remaining = max(16 * wrapColumns.count, limit - fixed)
            var open = wrapColumns
            while !open.isEmpty {
                let share = remaining / open.count
                let narrow = open.filter { widths[$0] <= share }
                if narrow.isEmpty {
                    for column in open { widths[column] = max(16, share) }
                    break
                }
                for column in narrow { remaining -= widths[column] }
                open.removeAll { narrow.contains($0) }
            }
        }
    }
    // The last cell may have several lines (a load test's table): they go on under its column.
    let lastColumn = String(repeating: " ", count: widths.dropLast().reduce(0) { $0 + $1 + 2 })
    func lines(_ cells: [String]) -> String {
        // Wrapped cells make a row several lines tall; the others stay on its first line.
        let wrapped = cells.enumerated().map { i, cell in
            // A cell of several lines is laid out already (a load test's table): never rewrapped.
            wrapColumns.contains(i) && !cell.contains("\n") && cell.count > widths[i] ? wrapWords(cell, width: widths[i]) : [cell]
        }
        let height = wrapped.dropLast().map(\.count).max() ?? 1
        var out: [String] = []
        for lineIndex in 0..<max(1, height) {
            out.append(wrapped.enumerated().map { i, parts in
                let cell = lineIndex < parts.count ? parts[lineIndex] : ""
                if i == cells.count - 1 { return lineIndex == 0 ? parts.joined(separator: "\n").replacingOccurrences(of: "\n", with: "\n" + lastColumn) : cell }
                return cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  "))
        }
        return out.map { $0.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) }.joined(separator: "\n")
    }
    var text = terminal.paint(lines(header), .bold) + "\n"
    for row in rows { text += lines(row) + "\n" }
    return text
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word is cut).
func wrapWords(_ text: String, width: Int) -> [String] {
    var lines: [String] = []
    var current = ""
    for word in text.split(separator: " ", omittingEmptySubsequences: true) {
        var word = String(word)
        while word.count > width {
            if !current.isEmpty { lines.append(current); current = "" }
            lines.append(String(word.prefix(width)))
            word = String(word.dropFirst(width))
        }
        if current.isEmpty { current = word } else if current.count + 1 + word.count <= width { current += " " + word } else {
            lines.append(current)
            current = word
        }
    }
    if !current.isEmpty || lines.isEmpty { lines.append(current) }
    return lines
}

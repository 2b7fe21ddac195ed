import Foundation
import RunbookCore

/// `nginx_upstream`: one server of an nginx `upstream` block, edited in place: drained (`down`)
/// or active again, weighted, added or removed. Every other byte of the operator's file stays:
/// comments, other servers and their parameters, indentation, CRLF line ends. Drain a web
/// host on the load balancer (`delegate_to: lb`), shift canary weights, add a new droplet.
/// Plan: a unified diff; apply and undo as `template` (the previous bytes come back). Reload
/// nginx with `nginx_reload` afterwards.
package struct NginxUpstreamStep: StepKind {
    package static let schema = StepKindSchema(
        name: "nginx_upstream", summary: "drain, restore, weight, add or remove one server of an nginx upstream, in place",
        arguments: [
            ArgumentSpec("file", .string, required: true, "the nginx config file holding the upstream block"),
            ArgumentSpec("server", .string, required: true, "the server's address as the file writes it (10.0.0.11:8000, app_web_1:5000, unix:/run/app.sock)"),
            ArgumentSpec("upstream", .string, "the upstream block's name (needed when the file has more than one; empty: the only one)"),
            ArgumentSpec("state", .enumeration(["active", "drained", "present", "absent"]), default: "active",
                         "active: in rotation (no `down`); drained: marked `down`; present: added when missing; absent: removed"),
            ArgumentSpec("weight", .int, "weight=N on the server (1 … 1000)"),
            ArgumentSpec("params", .string, "parameters for a server that present adds (max_fails=3 fail_timeout=30s)"),
            ArgumentSpec("validate", .command, "command that must pass on the candidate file before it is put in place; %s is its path"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    /// Written over SFTP as the login user, like `template`.
    package static let supportsBecome = false
    package static func defaultName(_ arguments: [String: Value]) -> String {
        "nginx_upstream \(arguments["server"]?.description ?? "") \(arguments["state"]?.description ?? "active")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let file = arguments.string("file") else { throw StepFailure("nginx_upstream needs file") }
        guard let server = arguments.string("server")?.trimmingCharacters(in: .whitespaces), !server.isEmpty,
              !server.contains(where: { $0 == ";" || $0 == "{" || $0 == "}" || $0 == "#" || $0.isWhitespace }) else {
            throw StepFailure("nginx_upstream: server must be one address (host:port), without spaces, ;, { } or #")
        }
        let state = arguments.string("state") ?? "active"
        var weight: Int? = nil
        if let text = arguments.string("weight") ?? arguments.raw["weight"]?.intValue.map(String.init) {
            guard let n = Int(text), (1...1000).contains(n) else { throw StepFailure("nginx_upstream: weight must be a whole number from 1 to 1000, not \(text)") }
            weight = n
        }
        let params = arguments.string("params") ?? ""
        if params.contains(where: { $0 == ";" || $0 == "{" || $0 == "}" || $0 == "#" || $0 == "\n" }) {
            throw StepFailure("nginx_upstream: params must be server parameters only, without ;, { }, # or newlines")
        }
        guard let current = try await facts.file(file) else {
            throw StepFailure.onHost("\(file) does not exist on \(host.name); nginx_upstream edits an existing nginx config")
        }
        let edited: [UInt8]
        do {
            let upstream = arguments.string("upstream").flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
            edited = try Self.edit(current.contents, upstream: upstream, server: server, state: state,
                                   weight: weight, params: params)
        } catch let problem as EditProblem {
            throw StepFailure("\(file) on \(host.name): \(problem.message)")
        }
        var fileArguments = RenderedArguments(strings: ["dest": file], raw: [:], fileContents: edited)
        fileArguments.commands["validate"] = arguments.commands["validate"]
        return try await FilePlanner().plan(step: step, host: host, arguments: fileArguments, facts: facts)
    }

    struct EditProblem: Error { let message: String }

    /// The file's bytes with the server set as asked. Pure, for the tests.
    static func edit(_ bytes: [UInt8], upstream name: String?, server: String, state: String, weight: Int?, params: String) throws -> [UInt8] {
        // Lines split on bytes keep their `\r` (CRLF files stay CRLF).
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        let finalNewline = bytes.last == UInt8(ascii: "\n")
        if finalNewline { lines.removeLast() }
        let crlf = lines.first?.hasSuffix("\r") ?? false

        let blocks = Self.upstreamBlocks(lines)
        let block: (name: String, open: Int, close: Int)
        if let name {
            guard let found = blocks.first(where: { $0.name == name }) else {
                throw EditProblem(message: "no `upstream \(name) { … }` block" + (blocks.isEmpty ? "" : " (upstreams: \(blocks.map(\.name).joined(separator: ", ")))"))
            }
            block = found
        } else {
            guard let only = blocks.first else { throw EditProblem(message: "no `upstream NAME { … }` block") }
            guard blocks.count == 1 else {
                throw EditProblem(message: "\(blocks.count) upstream blocks (\(blocks.map(\.name).joined(separator: ", "))): say which with upstream:")
            }
            block = only
        }
        var matches: [Int] = []
        var lastServer: Int? = nil
        for index in (block.open + 1)..<block.close {
            guard let directive = ServerLine(lines[index]) else {
                let code = lines[index].split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                if code.trimmingCharacters(in: .whitespaces).hasPrefix("server ") || code.trimmingCharacters(in: .whitespaces) == "server" {
                    throw EditProblem(message: "line \(index + 1): a server directive over several lines is not edited in place; put it on one line")
                }
                continue
            }
            lastServer = index
            if directive.address == server { matches.append(index) }
        }
        if matches.count > 1 { throw EditProblem(message: "server \(server) is listed \(matches.count) times in upstream \(block.name)") }

        switch (state, matches.first) {
        case ("absent", nil):
            return bytes
        case ("absent", let index?):
            lines.remove(at: index)
        case ("present", nil):
            let indent = lastServer.map { String(lines[$0].prefix { $0 == " " || $0 == "\t" }) } ?? "    "
            var parameters = params.split(separator: " ").map(String.init)
            if let weight { parameters = parameters.filter { !$0.hasPrefix("weight=") } + ["weight=\(weight)"] }
            let line = indent + "server " + ([server] + parameters).joined(separator: " ") + ";" + (crlf ? "\r" : "")
            lines.insert(line, at: (lastServer ?? block.open) + 1)
        case (_, nil):
            throw EditProblem(message: "upstream \(block.name) has no server \(server)"
                              + (state == "active" ? " (state: present adds one)" : ""))
        case (_, let index?):
            var directive = ServerLine(lines[index])!
            if state == "drained" { directive.set("down", present: true) }
            if state == "active" { directive.set("down", present: false) }
            if let weight { directive.setWeight(weight) }
            lines[index] = directive.text
        }
        if lines.isEmpty { return [] }
        return Array((lines.joined(separator: "\n") + (finalNewline ? "\n" : "")).utf8)
    }

    /// Each `upstream NAME {` block: its name, the line it opens on and the line of its `}`.
    static func upstreamBlocks(_ lines: [String]) -> [(name: String, open: Int, close: Int)] {
        var blocks: [(name: String, open: Int, close: Int)] = []
        var index = 0
        while index < lines.count {
            let code = Self.code(lines[index]).trimmingCharacters(in: .whitespacesAndNewlines)
            let words = code.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "{" })
            if words.first == "upstream", words.count >= 2, code.hasSuffix("{") {
                var depth = 0
                var close: Int? = nil
                for inner in index..<lines.count {
                    for character in Self.code(lines[inner]) {
                        if character == "{" { depth += 1 }
                        if character == "}" { depth -= 1 }
                    }
                    if depth == 0 { close = inner; break }
                }
                if let close {
                    blocks.append((String(words[1]), index, close))
                    index = close
                }
            }
            index += 1
        }
        return blocks
    }

    /// A line without its `# comment` (nginx has no quoting that matters in an upstream block).
    static func code(_ line: String) -> Substring {
        line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }

    /// `    server 10.0.0.11:8000 weight=3 max_fails=3;  # comment`, split so that parameters
    /// can change and the rest stays.
    struct ServerLine {
        var indent: Substring
        var address: String
        var parameters: [String]
        /// `;` and everything after it (spaces, a comment, `\r`).
        var tail: Substring

        init?(_ line: String) {
            let code = NginxUpstreamStep.code(line)
            guard let semicolon = code.firstIndex(of: ";") else { return nil }
            let body = code[..<semicolon]
            indent = body.prefix { $0 == " " || $0 == "\t" }
            let words = body.dropFirst(indent.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard words.first == "server", words.count >= 2 else { return nil }
            address = words[1]
            parameters = Array(words.dropFirst(2))
            tail = line[semicolon...]
        }

        var text: String { indent + "server " + ([address] + parameters).joined(separator: " ") + tail }

        mutating func set(_ flag: String, present: Bool) {
            parameters.removeAll { $0 == flag }
            if present { parameters.append(flag) }
        }

        mutating func setWeight(_ weight: Int) {
            if let index = parameters.firstIndex(where: { $0.hasPrefix("weight=") }) {
                parameters[index] = "weight=\(weight)"
            } else {
                parameters.insert("weight=\(weight)", at: 0)
            }
        }
    }
}

import Foundation
import RunbookCore

/// `env_set`: set or remove variables in a dotenv file (`.env.prod`) in place. Every line it
/// does not edit stays byte for byte: comments, blank lines, order, `export ` prefixes, other
/// variables, CRLF line ends. An edited line keeps its `export `, its quoting style where the
/// new value allows it, and a trailing comment after an unquoted value. A variable that is not
/// in the file is added at its end; `null` removes every line that sets it. A file that does
/// not exist is created 0600 (it may hold secrets). Plan: a unified diff (secrets masked by
/// the engine); apply and undo as `template` (the previous bytes come back).
package struct EnvSetStep: StepKind {
    package static let schema = StepKindSchema(
        name: "env_set", summary: "set or remove variables in a dotenv file, in place",
        arguments: [
            ArgumentSpec("file", .string, required: true, "the dotenv file on the host"),
            ArgumentSpec("vars", .map, required: true, "KEY: value to set; KEY: null removes it"),
            ArgumentSpec("mode", .fileMode, "permissions, in octal (default: those of the file, else 0600)"),
            ArgumentSpec("validate", .command, "command that must pass on the candidate file before it is put in place; %s is its path"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    /// Written over SFTP as the login user, like `template`.
    package static let supportsBecome = false
    package static func defaultName(_ arguments: [String: Value]) -> String {
        let keys = arguments["vars"]?.mapValue?.keys.sorted().joined(separator: ", ") ?? ""
        return "env_set \(arguments["file"]?.description ?? "") \(keys)"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let file = arguments.string("file") else { throw StepFailure("env_set needs file") }
        guard case .map(let vars)? = arguments.raw["vars"], !vars.isEmpty else {
            throw StepFailure("env_set needs vars: a mapping of KEY: value")
        }
        var wanted: [(String, String?)] = []
        for key in vars.keys.sorted() {
            guard Self.isKey(key) else { throw StepFailure("vars: \(key.debugDescription) is not a variable name ([A-Za-z_][A-Za-z0-9_.]*)") }
            switch vars[key]! {
            case .null: wanted.append((key, nil))
            case .string(let s): wanted.append((key, s))
            case .int(let i): wanted.append((key, String(i)))
            case .double(let d): wanted.append((key, String(d)))
            case .bool(let b): wanted.append((key, b ? "true" : "false"))
            default: throw StepFailure("vars: \(key) must be a string, a number, a bool or null")
            }
        }
        let current = try await facts.file(file)
        let edited = Self.edit(current?.contents ?? [], set: wanted)
        var fileArguments = RenderedArguments(strings: ["dest": file], raw: [:], fileContents: edited)
        fileArguments.raw["mode"] = arguments.raw["mode"] ?? (current == nil ? .string("0600") : nil)
        fileArguments.commands["validate"] = arguments.commands["validate"]
        return try await FilePlanner().plan(step: step, host: host, arguments: fileArguments, facts: facts)
    }

    /// A dotenv variable name.
    static func isKey(_ key: String) -> Bool {
        guard let first = key.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return key.unicodeScalars.allSatisfy { $0 == "_" || $0 == "." || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// The file's bytes with `set` applied (nil value: removed). Pure, for the step-case tests.
    static func edit(_ bytes: [UInt8], set: [(key: String, value: String?)]) -> [UInt8] {
        let crlf = bytes.indices.dropFirst().contains { bytes[$0] == UInt8(ascii: "\n") && bytes[$0 - 1] == UInt8(ascii: "\r") }
        // Lines keep their `\r` (CRLF files stay CRLF); a new file ends with a newline.
        // Split on bytes: String sees "\r\n" as one Character, which "\n" does not split.
        var lines = bytes.isEmpty ? [] : bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        // On bytes: to String, a final "\r\n" is one Character, not a suffix "\n".
        let finalNewline = bytes.isEmpty || bytes.last == UInt8(ascii: "\n")
        if !bytes.isEmpty && finalNewline { lines.removeLast() }
        var appended = false
        for (key, value) in set {
            var found = false
            var index = 0
            while index < lines.count {
                guard let parsed = Line(lines[index]), parsed.key == key else { index += 1; continue }
                if let value {
                    lines[index] = parsed.replacing(value: value)
                    found = true
                    index += 1
                } else {
                    lines.remove(at: index)
                }
            }
            if !found, let value {
                lines.append("\(key)=\(Self.quoted(value, style: nil))" + (crlf ? "\r" : ""))
                appended = true
            }
        }
        if lines.isEmpty { return [] }
        return Array((lines.joined(separator: "\n") + (finalNewline || appended ? "\n" : "")).utf8)
    }

    /// The value as dotenv reads it back: bare when it is plain, else in the old line's
    /// quotes when they can hold it, else double quotes with `\`, `"`, `$` and newlines escaped.
    static func quoted(_ value: String, style: Character?) -> String {
        let plain = value.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "_-./:@%+,=".unicodeScalars.contains($0)
        }
        if style == "'" && !value.contains("'") && !value.contains("\n") { return "'" + value + "'" }
        if plain && style == nil { return value }
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "$": escaped += "\\$"
            case "\n": escaped += "\\n"
            case "`": escaped += "\\`"
            default: escaped.append(character)
            }
        }
        return "\"" + escaped + "\""
    }

    /// One `KEY=value` line, split so that its value can be replaced and nothing else moves.
    struct Line {
        /// Everything before the value: indentation, `export `, the key and `=` (with its spaces).
        var head: Substring
        var key: String
        /// The quote the value was written in, if any.
        var quote: Character?
        /// What follows the value: a comment, trailing blanks, a `\r`.
        var tail: Substring

        init?(_ line: String) {
            var rest = Substring(line)
            let start = rest.startIndex
            rest = rest.drop { $0 == " " || $0 == "\t" }
            if rest.hasPrefix("#") || rest.isEmpty { return nil }
            if rest.hasPrefix("export ") { rest = rest.dropFirst("export ".count).drop { $0 == " " } }
            let key = rest.prefix { $0 == "_" || $0 == "." || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            guard !key.isEmpty else { return nil }
            rest = rest[key.endIndex...].drop { $0 == " " || $0 == "\t" }
            guard rest.first == "=" else { return nil }
            rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" }
            self.key = String(key)
            head = line[start..<rest.startIndex]
            if let first = rest.first, first == "\"" || first == "'" {
                quote = first
                var index = rest.index(after: rest.startIndex)
                var closed = rest.endIndex
                while index < rest.endIndex {
                    if rest[index] == "\\" && first == "\"" {
                        index = rest.index(after: index)
                        if index < rest.endIndex { index = rest.index(after: index) }
                        continue
                    }
                    if rest[index] == first { closed = rest.index(after: index); break }
                    index = rest.index(after: index)
                }
                tail = rest[closed...]
            } else {
                quote = nil
                // An unquoted value ends at ` #` (a comment) or at a `\r`.
                var end = rest.endIndex
                if let comment = rest.range(of: " #") { end = comment.lowerBound }
                if let cr = rest[..<end].firstIndex(of: "\r") { end = cr }
                var valueEnd = end
                while valueEnd > rest.startIndex, rest[rest.index(before: valueEnd)] == " " || rest[rest.index(before: valueEnd)] == "\t" {
                    valueEnd = rest.index(before: valueEnd)
                }
                tail = rest[valueEnd...]
            }
        }

        func replacing(value: String) -> String {
            String(head) + EnvSetStep.quoted(value, style: quote) + tail
        }
    }
}

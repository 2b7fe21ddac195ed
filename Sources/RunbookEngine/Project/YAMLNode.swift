import Foundation
import RunbookCore
import RunbookSteps
import Yams

/// A parsed YAML file whose every node knows its file, line, column and dotted field path.
public struct YAMLDocument: Sendable {
    /// The file name used in diagnostics.
    public let file: String
    /// The top node; nil for an empty document.
    public let root: YAMLNode?

    /// Parses `text`; a syntax error becomes a diagnostic at the line and column YAML reports.
    public static func parse(text: String, file: String) throws(DiagnosticError) -> YAMLDocument {
        let node: Yams.Node?
        do {
            // `.basic`: no tag resolution by Yams. Plain scalars are typed here (`value`), and
            // Yams' default resolver runs seven ICU regular expressions over every key.
            node = try Yams.compose(yaml: text, .basic)
        } catch {
            throw DiagnosticError(syntaxDiagnostic(error, text: text, file: file))
        }
        guard let node else { return YAMLDocument(file: file, root: nil) }
        var diagnostics = Diagnostics()
        var budget = YAMLNode.Budget()
        let root = YAMLNode.convert(node, file: file, path: "", diagnostics: &diagnostics, budget: &budget)
        try diagnostics.throwIfErrors()
        return YAMLDocument(file: file, root: root)
    }

    /// Reads and parses the file at `path`; `file` is the name used in diagnostics (default: `path`).
    public static func load(path: String, file: String? = nil) throws(DiagnosticError) -> YAMLDocument {
        let name = file ?? path
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let decoded = String(data: data, encoding: .utf8) else {
                let at = Self.firstInvalidUTF8(Array(data))
                throw DiagnosticError(
                    .error("cannot read \(name): not valid UTF-8 text" + (at.map { " (byte 0x\(String($0.byte, radix: 16)) at line \($0.line), column \($0.column))" } ?? ""),
                           at: SourceLocation(file: name, line: at?.line ?? 0, column: at?.column ?? 0),
                           hint: "save the file as UTF-8"))
            }
            text = decoded
        } catch let error as DiagnosticError {
            throw error
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? error.localizedDescription
            throw DiagnosticError(
                .error("cannot read \(name): \(reason)",
                       at: SourceLocation(file: name, line: 0, column: 0)))
        }
        return try parse(text: text, file: name)
    }

    /// Where the first byte that is not UTF-8 stands (1-based line and column, in characters).
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> (line: Int, column: Int, byte: UInt8)? {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var (line, column, offset) = (1, 1, 0)
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                offset += UTF8.width(scalar)
                if scalar == "\n" { (line, column) = (line + 1, 1) } else { column += 1 }
            case .emptyInput:
                return nil
            case .error:
                return (line, column, offset < bytes.count ? bytes[offset] : 0)
            }
        }
    }

    /// A diagnostic for an error thrown by Yams, located where the YAML parser reports it.
    static func syntaxDiagnostic(_ error: any Error, text: String, file: String) -> Diagnostic {
        func located(_ mark: Mark) -> SourceLocation {
            SourceLocation(file: file, line: mark.line, column: mark.column)
        }
        func detail(_ context: YamlError.Context?) -> String? {
            guard let context else { return nil }
            return "\(context.text) at line \(context.mark.line), column \(context.mark.column)"
        }
        guard let yamlError = error as? YamlError else {
            return .error("invalid YAML: \(error)", at: SourceLocation(file: file, line: 0, column: 0))
        }
        switch yamlError {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return .error(
                "invalid YAML: \(problem)", detail: detail(context), at: located(mark),
                hint: syntaxHint(problem, at: mark, in: text))
        case .reader(let problem, let offset, _, _):
            var location = SourceLocation(file: file, line: 0, column: 0)
            if let offset {
                let prefix = text.prefix(offset)
                location.line = prefix.reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
                location.column = prefix.count - (prefix.lastIndex(of: "\n").map {
                    prefix.distance(from: prefix.startIndex, to: $0) + 1
                } ?? 0) + 1
            }
            return .error("invalid YAML: \(problem)", at: location)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map(\.debugDescription).joined(separator: ", ")
            return .error(
                "duplicate key \(keys) in a mapping", at: located(context.mark),
                hint: "each key may appear once in a mapping; merge the entries")
        default:
            return .error("invalid YAML: \(yamlError)", at: SourceLocation(file: file, line: 0, column: 0))
        }
    }

    private static func syntaxHint(_ problem: String, at mark: Mark, in text: String) -> String? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if mark.line >= 1, mark.line <= lines.count {
            let scalars = Array(lines[mark.line - 1].unicodeScalars)
            if mark.column >= 1, mark.column <= scalars.count, scalars[mark.column - 1] == "\t" {
                return "indent with spaces, not tabs"
            }
        }
        if problem.contains("tab") {
            return "indent with spaces, not tabs"
        }
        if problem.contains("mapping values are not allowed") {
            return "a value containing \": \" must be quoted"
        }
        return nil
    }
}

/// A YAML node with its location and field path, detached from Yams (and so Sendable).
public struct YAMLNode: Sendable {
    /// How a scalar was written.
    public enum ScalarStyle: Sendable, Hashable {
        /// Unquoted.
        case plain
        /// In single quotes.
        case singleQuoted
        /// In double quotes.
        case doubleQuoted
        /// A `|` block.
        case literal
        /// A `>` block.
        case folded
    }

    /// What the node holds.
    public enum Kind: Sendable {
        /// A scalar: its text, how it was written and its explicit tag (like `tag:yaml.org,2002:str`) if any.
        case scalar(String, ScalarStyle, tag: String?)
        /// A sequence.
        case sequence([YAMLNode])
        /// A mapping, in the order written.
        case mapping([YAMLEntry])
    }

    /// What the node holds.
    public let kind: Kind
    /// Where the node starts.
    public let location: SourceLocation
    /// The dotted field path from the document root, like `hosts.app2.port` or `groups.web.hosts[1]`.
    public let path: String

    /// A node; loaders get theirs from `YAMLDocument`.
    public init(kind: Kind, location: SourceLocation, path: String) {
        self.kind = kind
        self.location = location
        self.path = path
    }

    /// The field path of an entry `key` under a node at `path`.
    public static func childPath(_ path: String, key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    /// How much a document may expand to: aliases (`*name`) repeat the node they name, so a
    /// small file can stand for billions of nodes; past the limit the document is refused.
    struct Budget {
        /// Nodes left.
        var nodes = 100_000
        /// Nesting left.
        var depth = 200
        /// Set once the refusal is reported.
        var exceeded = false
    }

    /// Converts a Yams node, applying `<<` merge keys and checking that keys are scalars.
    static func convert(
        _ node: Yams.Node, file: String, path: String, diagnostics: inout Diagnostics, budget: inout Budget
    ) -> YAMLNode {
        let mark = node.mark
        let location = SourceLocation(file: file, line: mark?.line ?? 0, column: mark?.column ?? 0)
        budget.nodes -= 1
        if budget.nodes < 0 || budget.depth <= 0 {
            if !budget.exceeded {
                budget.exceeded = true
                diagnostics.error(
                    budget.nodes < 0 ? "the document expands to more than 100000 nodes (aliases repeating anchors?)"
                                     : "the document nests more than 200 levels deep",
                    at: location, field: path.isEmpty ? nil : path)
            }
            return YAMLNode(kind: .scalar("", .plain, tag: nil), location: location, path: path)
        }
        budget.depth -= 1
        defer { budget.depth += 1 }
        switch node {
        case .scalar(let scalar):
            let style: ScalarStyle
            switch scalar.style {
            case .singleQuoted: style = .singleQuoted
            case .doubleQuoted: style = .doubleQuoted
            case .literal: style = .literal
            case .folded: style = .folded
            default: style = .plain
            }
            let tag = scalar.tag.rawValue
            return YAMLNode(
                kind: .scalar(scalar.string, style, tag: tag.isEmpty ? nil : tag),
                location: location, path: path)
        case .sequence(let sequence):
            var items: [YAMLNode] = []
            for (index, item) in sequence.enumerated() {
                items.append(convert(item, file: file, path: "\(path)[\(index)]", diagnostics: &diagnostics, budget: &budget))
            }
            return YAMLNode(kind: .sequence(items), location: location, path: path)
        case .mapping(let mapping):
            var entries: [YAMLEntry] = []
            var merged: [YAMLEntry] = []
            for (keyNode, valueNode) in mapping {
                guard case .scalar(let keyScalar) = keyNode else {
                    let keyMark = keyNode.mark
                    diagnostics.error(
                        "mapping keys must be plain text",
                        at: SourceLocation(file: file, line: keyMark?.line ?? 0, column: keyMark?.column ?? 0),
                        field: path.isEmpty ? nil : path)
                    continue
                }
                let key = keyScalar.string
                let convertedKey = convert(keyNode, file: file, path: childPath(path, key: key), diagnostics: &diagnostics, budget: &budget)
                if key == "<<", keyScalar.style == .plain || keyScalar.style == .any {
                    merged += mergeEntries(valueNode, file: file, path: path, diagnostics: &diagnostics, budget: &budget)
                    continue
                }
                let value = convert(valueNode, file: file, path: childPath(path, key: key), diagnostics: &diagnostics, budget: &budget)
                entries.append(YAMLEntry(key: key, keyNode: convertedKey, value: value))
            }
            let explicit = Set(entries.map(\.key))
            var mergedSeen = Set<String>()
            for entry in merged where !explicit.contains(entry.key) && !mergedSeen.contains(entry.key) {
                mergedSeen.insert(entry.key)
                entries.append(entry)
            }
            return YAMLNode(kind: .mapping(entries), location: location, path: path)
        case .alias:
            // Yams resolves aliases while composing; this is not reached.
            return YAMLNode(kind: .scalar("", .plain, tag: nil), location: location, path: path)
        }
    }

    /// The entries a `<<` merge key brings in: one mapping, or a list of mappings (earlier ones win).
    private static func mergeEntries(
        _ node: Yams.Node, file: String, path: String, diagnostics: inout Diagnostics, budget: inout Budget
    ) -> [YAMLEntry] {
        let sources: [Yams.Node]
        switch node {
        case .mapping: sources = [node]
        case .sequence(let sequence): sources = Array(sequence)
        default: sources = []
        }
        var entries: [YAMLEntry] = []
        for source in sources {
            let converted = convert(source, file: file, path: path, diagnostics: &diagnostics, budget: &budget)
            if case .mapping(let sourceEntries) = converted.kind {
                entries += sourceEntries
            } else {
                diagnostics.error(
                    "a merge key (<<) takes a mapping or a list of mappings", at: converted.location,
                    field: path.isEmpty ? nil : path)
            }
        }
        if sources.isEmpty {
            let mark = node.mark
            diagnostics.error(
                "a merge key (<<) takes a mapping or a list of mappings",
                at: SourceLocation(file: file, line: mark?.line ?? 0, column: mark?.column ?? 0),
                field: path.isEmpty ? nil : path)
        }
        return entries
    }
}

/// One `key: value` of a mapping.
public struct YAMLEntry: Sendable {
    /// The key's text.
    public let key: String
    /// The key node (for its location).
    public let keyNode: YAMLNode
    /// The value node.
    public let value: YAMLNode
}

// MARK: - Reading scalars

extension YAMLNode {
    private static let intTag = "tag:yaml.org,2002:int"
    private static let floatTag = "tag:yaml.org,2002:float"
    private static let boolTag = "tag:yaml.org,2002:bool"
    private static let nullTag = "tag:yaml.org,2002:null"

    /// The scalar's text, when this is a scalar.
    public var scalarText: String? {
        if case .scalar(let text, _, _) = kind { return text }
        return nil
    }

    /// Whether this is null: `~`, `null` or nothing, unquoted (or tagged `!!null`).
    public var isNull: Bool {
        guard case .scalar(let text, let style, let tag) = kind else { return false }
        if tag == YAMLNode.nullTag { return true }
        guard style == .plain, tag == nil else { return false }
        return text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL"
    }

    /// Whether this is a sequence.
    public var isSequence: Bool {
        if case .sequence = kind { return true }
        return false
    }

    /// Whether this is a mapping.
    public var isMapping: Bool {
        if case .mapping = kind { return true }
        return false
    }

    /// The node converted to a `Value`.
    ///
    /// Unquoted scalars resolve like YAML 1.2's core schema: `true`/`false` (any case style),
    /// null, decimal, `0x` and `0o` integers, and floats. `yes`/`no`/`on`/`off` stay strings, and
    /// so do integers written with a leading zero (`0644`), keeping the text a file mode needs.
    /// Quoted and block scalars are always strings; `!!str`, `!!int`, `!!float`, `!!bool` tags are honoured.
    public var value: Value {
        switch kind {
        case .sequence(let items):
            return .list(items.map(\.value))
        case .mapping(let entries):
            var map: [String: Value] = [:]
            for entry in entries { map[entry.key] = entry.value.value }
            return .map(map)
        case .scalar(let text, let style, let tag):
            if isNull { return .null }
            switch tag {
            case YAMLNode.intTag?:
                return YAMLNode.parseInt(text).map(Value.int) ?? .string(text)
            case YAMLNode.floatTag?:
                return YAMLNode.parseDouble(text).map(Value.double) ?? .string(text)
            case YAMLNode.boolTag?:
                return YAMLNode.parseBool(text).map(Value.bool) ?? .string(text)
            case nil:
                break
            default:
                return .string(text)
            }
            guard style == .plain else { return .string(text) }
            if let b = YAMLNode.parseBool(text) { return .bool(b) }
            if let i = YAMLNode.parseInt(text) { return .int(i) }
            if let d = YAMLNode.parseDouble(text) { return .double(d) }
            return .string(text)
        }
    }

    /// `true`/`True`/`TRUE` and the same for false.
    static func parseBool(_ text: String) -> Bool? {
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: return nil
        }
    }

    /// A decimal integer (optional sign), or `0x…`/`0o…`; a leading zero like `0644` is not one.
    static func parseInt(_ text: String) -> Int? {
        var body = Substring(text)
        var negative = false
        if body.first == "+" || body.first == "-" {
            negative = body.first == "-"
            body = body.dropFirst()
        }
        guard !body.isEmpty else { return nil }
        let magnitude: Int?
        if body.hasPrefix("0x") {
            magnitude = Int(body.dropFirst(2), radix: 16)
        } else if body.hasPrefix("0o") {
            magnitude = Int(body.dropFirst(2), radix: 8)
        } else if body.count > 1, body.first == "0" {
            return nil
        } else if body.allSatisfy({ $0.isASCII && $0.isNumber }) {
            magnitude = Int(body)
        } else {
            return nil
        }
        guard let magnitude else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// A float: digits with a point or an exponent, `.inf`, `-.inf`, `.nan`.
    static func parseDouble(_ text: String) -> Double? {
        switch text {
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .infinity
        case "-.inf", "-.Inf", "-.INF": return -.infinity
        case ".nan", ".NaN", ".NAN": return .nan
        default: break
        }
        let allowed = text.allSatisfy { $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) }
        guard allowed, text.contains(where: \.isNumber), !text.hasPrefix("."),
              text.contains(".") || text.contains("e") || text.contains("E") else { return nil }
        return Double(text)
    }

    /// How the node reads in a "got …" message: quoted text for scalars, "a list", "a mapping", "null".
    public var gotDescription: String {
        switch kind {
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        case .scalar(let text, _, _):
            if isNull { return "null" }
            let shown = text.count > 40 ? String(text.prefix(37)) + "..." : text
            return shown.debugDescription
        }
    }

    /// Records an error located at this node, with its field path.
    public func error(_ summary: String, hint: String? = nil, in diagnostics: inout Diagnostics) {
        diagnostics.error(summary, at: location, field: path.isEmpty ? nil : path, hint: hint)
    }

    /// Records a warning located at this node, with its field path.
    public func warning(_ summary: String, hint: String? = nil, in diagnostics: inout Diagnostics) {
        diagnostics.warning(summary, at: location, field: path.isEmpty ? nil : path, hint: hint)
    }

    /// The text of a non-null scalar of any type (so `user: 1000` reads as "1000"); else an error.
    public func string(_ diagnostics: inout Diagnostics) -> String? {
        if case .scalar(let text, _, _) = kind, !isNull { return text }
        error("expected a string, got \(gotDescription)", in: &diagnostics)
        return nil
    }

    /// A non-empty string without surrounding spaces; else an error.
    public func nonEmptyString(_ diagnostics: inout Diagnostics) -> String? {
        guard let text = string(&diagnostics) else { return nil }
        if text.trimmingCharacters(in: .whitespaces).isEmpty {
            error("expected a non-empty string", in: &diagnostics)
            return nil
        }
        return text
    }

    /// An integer, optionally within `range`; else an error like `expected an integer, got "abc"`.
    public func int(_ diagnostics: inout Diagnostics, in range: ClosedRange<Int>? = nil) -> Int? {
        guard case .int(let number) = value else {
            var hint: String?
            if case .scalar(let text, let style, _) = kind, style != .plain, YAMLNode.parseInt(text) != nil {
                hint = "remove the quotes to write a number"
            }
            error("expected an integer, got \(gotDescription)", hint: hint, in: &diagnostics)
            return nil
        }
        if let range, !range.contains(number) {
            error("expected an integer from \(range.lowerBound) to \(range.upperBound), got \(number)", in: &diagnostics)
            return nil
        }
        return number
    }

    /// A number (integer or float); else an error.
    public func double(_ diagnostics: inout Diagnostics) -> Double? {
        guard let number = value.doubleValue else {
            error("expected a number, got \(gotDescription)", in: &diagnostics)
            return nil
        }
        return number
    }

    /// true or false (unquoted `yes`/`no`/`on`/`off` are accepted too); else an error.
    public func bool(_ diagnostics: inout Diagnostics) -> Bool? {
        if case .bool(let b) = value { return b }
        if case .scalar(let text, .plain, nil) = kind {
            switch text.lowercased() {
            case "yes", "on": return true
            case "no", "off": return false
            default: break
            }
        }
        error("expected true or false, got \(gotDescription)", in: &diagnostics)
        return nil
    }

    /// A duration in seconds: a number (seconds) or text like `500ms`, `90s`, `5m`, `1h`, `1m30s`; else an error.
    public func duration(_ diagnostics: inout Diagnostics) -> Double? {
        switch value {
        case .int(let seconds) where seconds >= 0:
            return Double(seconds)
        case .double(let seconds) where seconds >= 0 && seconds.isFinite:
            return seconds
        case .string(let text):
            if let seconds = YAMLNode.parseDuration(text) { return seconds }
        default:
            break
        }
        error(
            "expected a duration, got \(gotDescription)",
            hint: "write seconds as a number, or a duration like 500ms, 90s, 5m, 1h", in: &diagnostics)
        return nil
    }

    /// Parses `500ms`, `90s`, `5m`, `1h`, `2d`, or sums like `1m30s`, into seconds; nil when malformed or negative.
    public static func parseDuration(_ text: String) -> Double? {
        DurationText.parse(text).map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
    }

    /// A value from a fixed set (such as `strict | accept-new | off`); else an error listing the choices.
    public func oneOf<T: RawRepresentable & CaseIterable>(
        _ type: T.Type, _ diagnostics: inout Diagnostics
    ) -> T? where T.RawValue == String {
        let choices = T.allCases.map(\.rawValue)
        if case .scalar(let text, _, _) = kind, !isNull, let choice = T(rawValue: text) {
            return choice
        }
        var hint: String?
        if let text = scalarText, let suggestion = closestMatch(text, in: choices) {
            hint = "did you mean \(suggestion.debugDescription)?"
        }
        error("expected one of \(choices.joined(separator: ", ")), got \(gotDescription)", hint: hint, in: &diagnostics)
        return nil
    }

    /// The items of a sequence (null reads as empty); else an error.
    public func list(_ diagnostics: inout Diagnostics) -> [YAMLNode]? {
        if case .sequence(let items) = kind { return items }
        if isNull { return [] }
        error("expected a list, got \(gotDescription)", in: &diagnostics)
        return nil
    }

    /// Strings from a list, or from a single string when `allowSingle` (then one element); else an error.
    public func stringList(_ diagnostics: inout Diagnostics, allowSingle: Bool = true) -> [String]? {
        if allowSingle, case .scalar = kind, !isNull {
            return string(&diagnostics).map { [$0] }
        }
        guard let items = list(&diagnostics) else { return nil }
        var strings: [String] = []
        var ok = true
        for item in items {
            if let text = item.string(&diagnostics) { strings.append(text) } else { ok = false }
        }
        return ok ? strings : nil
    }

    /// The node as a mapping (null reads as empty). With `allowedKeys`, each other key is an error
    /// with a "did you mean" hint, and is left out of the result. `what` and `hint` word the
    /// error when the node is not a mapping.
    public func mapping(
        _ diagnostics: inout Diagnostics, allowedKeys: [String]? = nil, what: String? = nil,
        hint: String? = nil
    ) -> YAMLMapping? {
        let entries: [YAMLEntry]
        switch kind {
        case .mapping(let e): entries = e
        case .scalar where isNull: entries = []
        default:
            error("expected \(what ?? "a mapping"), got \(gotDescription)", hint: hint, in: &diagnostics)
            return nil
        }
        guard let allowedKeys else { return YAMLMapping(node: self, entries: entries) }
        var kept: [YAMLEntry] = []
        for entry in entries {
            if allowedKeys.contains(entry.key) {
                kept.append(entry)
                continue
            }
            let hint: String
            if let suggestion = closestMatch(entry.key, in: allowedKeys) {
                hint = "did you mean \(suggestion.debugDescription)?"
            } else {
                hint = "allowed keys here: \(allowedKeys.joined(separator: ", "))"
            }
            entry.keyNode.error("unknown key \(entry.key.debugDescription)", hint: hint, in: &diagnostics)
        }
        return YAMLMapping(node: self, entries: kept)
    }
}

/// A mapping node's entries, looked up by key.
public struct YAMLMapping: Sendable {
    /// The mapping node itself.
    public let node: YAMLNode
    /// The entries, in the order written.
    public let entries: [YAMLEntry]

    /// A mapping view of `node` holding `entries`.
    public init(node: YAMLNode, entries: [YAMLEntry]) {
        self.node = node
        self.entries = entries
    }

    /// The keys, in the order written.
    public var keys: [String] { entries.map(\.key) }

    /// The value under `key`; nil when the key is absent or its value is null.
    public subscript(key: String) -> YAMLNode? {
        guard let value = entries.first(where: { $0.key == key })?.value, !value.isNull else { return nil }
        return value
    }

    /// The entry for `key`, even when its value is null.
    public func entry(_ key: String) -> YAMLEntry? {
        entries.first { $0.key == key }
    }

    /// Whether `key` is written, even with a null value.
    public func contains(_ key: String) -> Bool {
        entries.contains { $0.key == key }
    }

    /// The value under `key`; when absent or null, an error at the mapping saying the key is required.
    public func required(_ key: String, _ diagnostics: inout Diagnostics) -> YAMLNode? {
        if let value = self[key] { return value }
        let location = entry(key)?.keyNode.location ?? node.location
        diagnostics.error(
            "missing required key \(key.debugDescription)", at: location,
            field: YAMLNode.childPath(node.path, key: key))
        return nil
    }

    /// The entries converted to values.
    public var values: [String: Value] {
        var map: [String: Value] = [:]
        for entry in entries { map[entry.key] = entry.value.value }
        return map
    }
}

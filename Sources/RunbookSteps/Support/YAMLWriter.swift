import Foundation
import RunbookCore

/// Writes values as YAML text for `YAMLEdit`: a scalar in the quoting style of the node it
/// replaces where it can, quoted where a plain word would read as something else (`yes`,
/// `0644`, `1.10`), lists and mappings in block or flow style.
enum YAMLWriter {
    /// A scalar value's text (`8`, `true`, `gunicorn app:app`).
    static func scalarText(_ value: Value) -> String {
        switch value {
        case .string(let text): return text
        case .int(let number): return String(number)
        case .double(let number): return String(number)
        case .bool(let flag): return flag ? "true" : "false"
        case .null: return "null"
        case .list, .map: return flow(value)
        }
    }

    /// A scalar written like `style` (nil: plain where safe). A number or bool from the
    /// runbook is written bare; text is quoted where a plain word would not read back as that
    /// text. `stringsOnly`: a word that must stay a string (a command list's item) is quoted
    /// even when it looks like a number.
    static func scalar(_ value: Value, like style: YAMLSourceNode.ScalarStyle?, flow: Bool, stringsOnly: Bool = false) -> String {
        let text = scalarText(value)
        var typed = false
        switch value {
        case .int, .double, .bool, .null: typed = true
        default: break
        }
        switch style {
        case .single?:
            if !text.contains("\n"), text.unicodeScalars.allSatisfy(printable) {
                return "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
            }
            return doubleQuoted(text)
        case .double?, .literal?, .folded?:
            return doubleQuoted(text)
        case .plain?, nil:
            if typed && !stringsOnly { return text }
            if plainSafe(text, flow: flow), !readsAsOther(text), !(stringsOnly && readsAsInteger(text)) { return text }
            return doubleQuoted(text)
        }
    }

    /// A value inside a flow collection.
    static func flowItem(_ value: Value) -> String {
        switch value {
        case .list, .map: return flow(value)
        default: return scalar(value, like: nil, flow: true)
        }
    }

    /// `[a, b]`, `{k: v}` (keys sorted).
    static func flow(_ value: Value) -> String {
        switch value {
        case .list(let items): return "[" + items.map(flowItem).joined(separator: ", ") + "]"
        case .map(let entries):
            return "{" + entries.keys.sorted().map { scalar(.string($0), like: nil, flow: true) + ": " + flowItem(entries[$0]!) }.joined(separator: ", ") + "}"
        default: return scalar(value, like: nil, flow: true)
        }
    }

    /// A list as `- item` lines or a mapping as `key: value` lines at `indent` (nested
    /// collections in flow style). The first line is indented only when asked: it usually
    /// starts where the old node started.
    static func block(_ value: Value, indent: Int, newline: String, firstLineIndented: Bool) -> String {
        let pad = String(repeating: " ", count: indent)
        var lines: [String]
        switch value {
        case .list(let items): lines = items.map { "- " + flowItem($0) }
        case .map(let entries):
            lines = entries.keys.sorted().map { scalar(.string($0), like: nil, flow: false) + ": " + flowItem(entries[$0]!) }
        default: return scalar(value, like: nil, flow: false)
        }
        return lines.enumerated().map { ($0.offset == 0 && !firstLineIndented ? "" : pad) + $0.element }.joined(separator: newline)
    }

    /// The value in string form, as `plainValue(of:)` reads it back: scalars as text, null as null.
    static func normalized(_ value: Value) -> Value {
        switch value {
        case .list(let items): return .list(items.map(normalized))
        case .map(let entries): return .map(entries.mapValues(normalized))
        case .null: return .null
        default: return .string(scalarText(value))
        }
    }

    /// A node's value with scalars as their text (merge keys not expanded; a plain `~`,
    /// `null` or nothing is null).
    static func plainValue(of node: YAMLSourceNode, source: YAMLSource, depth: Int = 0) -> Value {
        guard depth < 64 else { return .null }
        switch node.kind {
        case .scalar(let text, let style):
            if style == .plain, ["", "~", "null", "Null", "NULL"].contains(text) { return .null }
            return .string(text)
        case .sequence(let items, _): return .list(items.map { plainValue(of: $0, source: source, depth: depth + 1) })
        case .mapping(let entries, _):
            var map: [String: Value] = [:]
            for entry in entries { map[entry.key.scalar ?? ""] = plainValue(of: entry.value, source: source, depth: depth + 1) }
            return .map(map)
        case .alias(let name):
            guard let target = source.anchors[name] else { return .null }
            return plainValue(of: target, source: source, depth: depth + 1)
        }
    }

    /// Whether plain text would read as something other than a string: a bool or null
    /// (YAML 1.1 and 1.2 spellings), a float, an octal, hex or sexagesimal number, a date.
    /// A plain decimal integer is not "other": it stays a number, as it was meant.
    static func readsAsOther(_ text: String) -> Bool {
        let words: Set<String> = ["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ""]
        if words.contains(text.lowercased()) { return true }
        if readsAsInteger(text) { return false }
        if [".inf", "-.inf", "+.inf", ".nan"].contains(text.lowercased()) { return true }
        // Digits with signs, dots, exponents, colons, dashes or underscores: some number or date.
        let numeric = CharacterSet(charactersIn: "0123456789+-._:eExXoObB")
        return text.unicodeScalars.contains { ("0"..."9").contains($0) }
            && text.unicodeScalars.allSatisfy { numeric.contains($0) || (text.lowercased().hasPrefix("0x") && $0.properties.isASCIIHexDigit) }
    }

    /// `0`, `42`, `-7`: a decimal integer as YAML reads it.
    static func readsAsInteger(_ text: String) -> Bool {
        var digits = Substring(text)
        if digits.hasPrefix("-") { digits = digits.dropFirst() }
        guard let first = digits.first, digits.allSatisfy({ ("0"..."9").contains($0) }) else { return false }
        return first != "0" || digits.count == 1
    }

    /// Whether text can be written as a plain scalar and read back unchanged.
    static func plainSafe(_ text: String, flow: Bool) -> Bool {
        guard let first = text.unicodeScalars.first, let last = text.unicodeScalars.last else { return false }
        guard text.unicodeScalars.allSatisfy({ printable($0) && $0 != "\t" }) else { return false }
        if first == " " || last == " " || last == ":" { return false }
        let scalars = Array(text.unicodeScalars)
        if "#&*!|>'\"%@`,[]{}".unicodeScalars.contains(first) { return false }
        if "-?:".unicodeScalars.contains(first), scalars.count == 1 || scalars[1] == " " { return false }
        if text.contains(": ") || text.contains(" #") { return false }
        if flow, text.unicodeScalars.contains(where: { ",[]{}".unicodeScalars.contains($0) }) { return false }
        return true
    }

    static func printable(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value >= 0x20 && scalar.value != 0x7F && !(0x80...0x9F).contains(scalar.value) || scalar == "\t"
    }

    /// `"text"` with `\`, `"` and control characters escaped.
    static func doubleQuoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if printable(scalar) { out.unicodeScalars.append(scalar) } else { out += String(format: "\\u%04X", scalar.value) }
            }
        }
        return out + "\""
    }
}

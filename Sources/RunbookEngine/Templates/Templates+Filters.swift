import Foundation
import RunbookCore
import RunbookSteps
import Stencil

/// The filters and tags templates get besides Stencil's own.
///
/// Stencil's `uppercase`, `lowercase`, `join`, `split`, `indent` and `filter` stay; this adds
/// `upper`, `lower`, `quote`, `trim`, `length`, `range`, and replaces `default` (Stencil's also replaces
/// the string "nil") and `capitalize` (Stencil's capitalizes every word). The private tags and
/// filter that `TemplateSource.prepare` writes are registered here too.
final class RunbookTemplateExtension: Extension {
    init(session: RenderSession) {
        super.init()
        registerFilter(TemplateSource.iterableFilter) { [unowned session] (value: Any?, arguments: [Any?]) throws -> Any? in
            switch value {
            case let list as [Any]:
                try session.countIterations(list.count)
                return value
            case let map as [String: Any]:
                try session.countIterations(map.count)
                return value
            case nil: return value
            default:
                let path = arguments.first.flatMap { $0 as? String } ?? "the value"
                throw session.fail(TemplateProblem(
                    summary: "cannot loop over `\(path)`: it is \(kindDescription(value)), not a list or a map",
                    hint: "loop over a list or a map", path: path))
            }
        }
        registerFilter(TemplateSource.captureFilter) { [unowned session] (value: Any?) throws -> Any? in
            guard let captured = capturedValue(value) else {
                throw session.fail(TemplateProblem(summary: "the expression yields \(kindDescription(value)), which is not a value a step can use"))
            }
            session.captured = captured
            return ""
        }
        registerFilter("default") { (value: Any?, arguments: [Any?]) -> Any? in
            if let value, !(value is NullValue) { return value }
            for case let argument? in arguments { return argument }
            return nil
        }
        registerFilter("upper") { (value: Any?) -> Any? in mapText(value) { $0.uppercased() } }
        registerFilter("lower") { (value: Any?) -> Any? in mapText(value) { $0.lowercased() } }
        registerFilter("capitalize") { (value: Any?) -> Any? in
            mapText(value) { text in
                guard let first = text.first else { return text }
                return first.uppercased() + text.dropFirst().lowercased()
            }
        }
        registerFilter("trim") { (value: Any?) -> Any? in
            mapText(value) { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        registerFilter("length") { [unowned session] (value: Any?) throws -> Any? in
            switch value {
            case let list as [Any]: return list.count
            case let text as String: return text.count
            case nil: return 0
            default:
                throw session.fail(TemplateProblem(summary: "`length` needs a list, a map or a string, not \(kindDescription(value))"))
            }
        }
        // `n|range` is 0, 1, … n-1 and `a|range:b` is a, … b-1 (as Python's range), for
        // loops like one upstream server per replica: `{% for i in params.replicas|range %}`.
        registerFilter("range") { [unowned session] (value: Any?, arguments: [Any?]) throws -> Any? in
            func integer(_ any: Any?) -> Int? {
                switch any {
                case let i as Int: return i
                case let d as Double where d == d.rounded(): return Int(d)
                case let s as String: return Int(s.trimmingCharacters(in: .whitespaces))
                default: return nil
                }
            }
            guard let first = integer(value) else {
                throw session.fail(TemplateProblem(summary: "`range` needs a whole number, not \(kindDescription(value))"))
            }
            var (low, high) = (0, first)
            if let argument = arguments.first {
                guard let end = integer(argument) else {
                    throw session.fail(TemplateProblem(summary: "`range`'s end must be a whole number, not \(kindDescription(argument))"))
                }
                (low, high) = (first, end)
            }
            guard high - low <= 100_000 else {
                throw session.fail(TemplateProblem(summary: "`range` of \(high - low) numbers is more than a template needs (100000 at most)"))
            }
            try session.countIterations(max(0, high - low))
            return high > low ? Array(low..<high) : [Int]()
        }
        registerFilter("quote") { [unowned session] (value: Any?) throws -> Any? in
            do throws(TemplateProblem) {
                if let list = value as? [Any] {
                    var words: [String] = []
                    for element in list { words.append(try quoteWord(element)) }
                    return words.joined(separator: " ")
                }
                return try quoteWord(value)
            } catch {
                throw session.fail(error)
            }
        }
        // A command's `{{ }}` as data in its place (see `TemplateSource.prepare(shell:)`).
        registerFilter(TemplateSource.shellFilter) { [unowned session] (value: Any?, arguments: [Any?]) throws -> Any? in
            let quoting = (arguments.first as? String).flatMap(ShellQuoting.init(rawValue:)) ?? .none
            do throws(TemplateProblem) {
                return try shellText(value, quoting: quoting)
            } catch {
                throw session.fail(error)
            }
        }
        // The author's opt-out of a command's quoting: the value is pasted as shell code.
        // `runbook validate` lists every use in a command.
        registerFilter("raw") { (value: Any?) -> Any? in value }
        // SQL built from values: an identifier (`"name"`, quotes doubled) or a string literal
        // (`'text'`, quotes doubled; standard_conforming_strings, PostgreSQL's default).
        registerFilter("sql_ident") { (value: Any?) -> Any? in
            "\"" + templateText(value).replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        registerFilter("sql_literal") { (value: Any?) -> Any? in
            "'" + templateText(value).replacingOccurrences(of: "'", with: "''") + "'"
        }
        registerSimpleTag(TemplateSource.commentTag) { _ in "" }
        registerTag(TemplateSource.rawTag) { [unowned session] _, token in
            guard token.components.count == 2, let index = Int(token.components[1]),
                  let texts = session.source(named: token.sourceMap.filename)?.rawTexts, index < texts.count
            else { throw TemplateSyntaxError("unknown tag '\(TemplateSource.rawTag)'") }
            let text = texts[index]
            return SimpleNode(token: token) { _ in text }
        }
    }
}

/// `value` as text, the way it renders.
func templateText(_ value: Any?) -> String {
    switch value {
    case nil: return ""
    case let text as String: return text
    case let number as Double: return Value.double(number).description
    case let list as [Any]: return "[" + list.map { ($0 as? CustomDebugStringConvertible)?.debugDescription ?? templateText($0) }.joined(separator: ", ") + "]"
    case let value as CustomStringConvertible: return value.description
    default: return "\(value!)"
    }
}

/// Applies `transform` to text, or to each element of a list.
private func mapText(_ value: Any?, _ transform: (String) -> String) -> Any? {
    if let list = value as? [Any] {
        return list.map { transform(templateText($0)) }
    }
    return transform(templateText(value))
}

/// One shell word: `Shell.quote`, except that a secret reference is double-quoted so the shell
/// still expands it.
private func quoteWord(_ value: Any?) throws(TemplateProblem) -> String {
    switch value {
    case let reference as SecretReference: return "\"\(reference.doubleQuoted)\""
    case is MapEntry, is MapValue, is ListValue, is [Any]:
        throw TemplateProblem(summary: "`quote` makes shell words of strings, numbers and lists, not of \(kindDescription(value))",
                              hint: "quote the members you need, e.g. `x.name|quote`")
    default: return Shell.quote(templateText(value))
    }
}

/// `value` as data where a command puts it: one shell word outside quotes (a list: one word
/// each), escaped for the quotes it sits in otherwise. A secret stays a reference the remote
/// shell expands, double-quoted so it is never split or globbed.
func shellText(_ value: Any?, quoting: ShellQuoting) throws(TemplateProblem) -> String {
    switch value {
    case let reference as SecretReference:
        switch quoting {
        case .none: return "\"\(reference.doubleQuoted)\""
        case .double: return reference.doubleQuoted
        case .single: return "'\"\(reference.doubleQuoted)\"'"
        }
    case is MapEntry, is MapValue, is ListValue:
        throw TemplateProblem(summary: "a command cannot hold \(kindDescription(value)) as a value",
                              hint: "use the members you need, e.g. `x.name`, or `|raw` to paste it as shell code")
    case let list as [Any]:
        var parts: [String] = []
        for element in list { parts.append(try shellText(element, quoting: quoting)) }
        return parts.joined(separator: " ")
    default:
        let text = templateText(value)
        switch quoting {
        case .none: return Shell.quote(text)
        case .single: return text.replacingOccurrences(of: "'", with: "'\\''")
        case .double: return Shell.escapeForDoubleQuotes(text)
        }
    }
}

/// The kind of a resolved value with an article, for messages.
func kindDescription(_ value: Any?) -> String {
    switch value {
    case nil: return "null"
    case is String, is SecretReference: return "a string"
    case is Int: return "an integer"
    case is Double: return "a number"
    case is Bool: return "a boolean"
    case let scalar as ScalarValue: return scalar.value.kindDescription
    case is MapEntry, is MapValue: return "a map"
    case is [Any], is ListValue: return "a list"
    default: return "a \(type(of: value!))"
    }
}

import Foundation
import RunbookCore

/// The one reader of a step's typed arguments after rendering, for every kind: a value is
/// read as written (a YAML number, a bool) or from its rendered text (`{{ }}`), and a value
/// of the wrong type is a `StepFailure` naming the key.
extension RenderedArguments {
    /// A text argument as rendered; a blank one counts as absent, and a number written bare
    /// reads as its digits.
    package func string(_ key: String) -> String? {
        if let text = strings[key] {
            return text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? nil : text
        }
        switch raw[key] {
        case .int(let i)?: return String(i)
        case .double(let d)?: return String(d)
        default: return nil
        }
    }

    /// An integer argument.
    package func int(_ key: String) throws(StepFailure) -> Int? {
        if case .int(let value)? = raw[key] { return value }
        guard let text = string(key)?.trimmingCharacters(in: .whitespacesAndNewlines) else { return nil }
        guard let value = Int(text) else { throw StepFailure("\(key): \(text) is not a whole number") }
        return value
    }

    /// A boolean argument: true, yes, on or 1; false, no, off or 0 (any case).
    package func bool(_ key: String, default fallback: Bool) throws(StepFailure) -> Bool {
        if case .bool(let value)? = raw[key] { return value }
        guard let text = string(key)?.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() else { return fallback }
        switch text {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw StepFailure("\(key): \(text) is not true or false")
        }
    }

    /// A duration argument (`500ms`, `2s`, `1m`, or a number of seconds).
    package func duration(_ key: String) throws(StepFailure) -> Duration? {
        if let text = strings[key] {
            guard let value = DurationText.parse(text) else { throw StepFailure("\(key): \(text) is not a duration (e.g. 500ms, 2s, 1m)") }
            return value
        }
        guard let value = raw[key], !value.isNull else { return nil }
        guard let duration = ArgumentType.duration(value) else { throw StepFailure("\(key): \(value) is not a duration (e.g. 500ms, 2s, 1m)") }
        return duration
    }

    /// A string-or-list argument (the loader stores a list either way); blank items are dropped.
    package func list(_ key: String) throws(StepFailure) -> [String] {
        switch raw[key] {
        case .none, .some(.null): return []
        case .string:
            return string(key).map { [$0] } ?? []
        case .list(let items):
            let strings = items.compactMap(\.stringValue)
            if strings.contains(where: { $0.contains("{{") }) {
                throw StepFailure("\(key): templates inside a list are not rendered; write the values themselves")
            }
            return strings.filter { !$0.isEmpty }
        default:
            throw StepFailure("\(key) must be a string or a list of strings")
        }
    }
}

/// Durations as an operator writes them, for summaries and outputs.
enum Durations {
    /// `2s`, `500ms`.
    static func text(_ duration: Duration) -> String {
        let ms = Int(DurationText.milliseconds(duration).rounded())
        if ms == 0 { return "0s" }
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// Milliseconds rounded to a tenth, for outputs.
    static func milliseconds(_ duration: Duration) -> Double {
        (DurationText.milliseconds(duration) * 10).rounded() / 10
    }
}

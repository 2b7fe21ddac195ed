/// Parameter values for a run: `-p NAME=VALUE` overrides checked against the runbook's `params:`, then defaults.
public enum ParamValues {
    /// The value of every declared parameter: the `-p` override (typed), else the default.
    ///
    /// Values are typed as follows: int → `.int`, bool → `.bool` (`true`/`false`/`yes`/`no`, any
    /// case), duration → `.string` as written (checked with `DurationText`), enum and string →
    /// `.string`. Every problem is collected: an undeclared name (with a did-you-mean hint), a
    /// value of the wrong type or out of bounds, a required parameter left out. `file` is the
    /// runbook, named in messages.
    public static func resolve(specs: [ParamSpec], overrides: [String: String], file: String) throws(DiagnosticError) -> [String: Value] {
        var diagnostics = Diagnostics()
        var values: [String: Value] = [:]
        let names = specs.map(\.name)
        for name in overrides.keys.sorted() where !names.contains(name) {
            var hint: String
            if let suggestion = closestMatch(name, in: names) {
                hint = "did you mean \(suggestion.debugDescription)?"
            } else if names.isEmpty {
                hint = "this runbook takes no parameters"
            } else {
                hint = "its parameters: \(names.joined(separator: ", "))"
            }
            diagnostics.error("unknown parameter \(name.debugDescription): \(file) declares no such param", at: nil, field: "-p \(name)", hint: hint)
        }
        for spec in specs {
            if let text = overrides[spec.name] {
                switch parse(text, for: spec) {
                case .success(let value): values[spec.name] = value
                case .failure(let problem):
                    diagnostics.error(
                        "invalid value \(text.debugDescription) for parameter \(spec.name.debugDescription): \(problem.message)",
                        at: nil, field: "-p \(spec.name)",
                        hint: problem.hint ?? "\(spec.name) is declared at \(spec.location) as \(describe(spec))")
                }
            } else if let value = spec.defaultValue {
                values[spec.name] = value
            } else {
                diagnostics.error(
                    "missing required parameter \(spec.name.debugDescription) (declared at \(spec.location), no default)",
                    at: nil, field: "-p \(spec.name)",
                    hint: "pass -p \(spec.name)=VALUE (\(describe(spec)))")
            }
        }
        try diagnostics.throwIfErrors()
        return values
    }

    /// Splits `NAME=VALUE` at the first `=`; nil when there is no `=` or the name is empty. The name is trimmed, the value kept as written.
    public static func parseAssignment(_ text: String) -> (String, String)? {
        guard let eq = text.firstIndex(of: "=") else { return nil }
        let name = text[..<eq].trimmingWhitespace()
        guard !name.isEmpty else { return nil }
        return (name, String(text[text.index(after: eq)...]))
    }

    /// `-p` arguments as a map; a malformed one is an error, and a name given twice keeps its last value.
    public static func parseAssignments(_ texts: [String]) throws(DiagnosticError) -> [String: String] {
        var result: [String: String] = [:]
        var diagnostics = Diagnostics()
        for text in texts {
            guard let (name, value) = parseAssignment(text) else {
                diagnostics.error("invalid parameter \(text.debugDescription)", at: nil, field: "-p", hint: "write -p NAME=VALUE")
                continue
            }
            result[name] = value
        }
        try diagnostics.throwIfErrors()
        return result
    }

    /// Why a value does not fit a parameter, and what to do.
    public struct Problem: Error, Sendable, Hashable {
        /// What is wrong, e.g. `expected an integer`.
        public var message: String
        /// What to do, when there is something specific to say.
        public var hint: String?

        /// A problem.
        public init(_ message: String, hint: String? = nil) {
            self.message = message
            self.hint = hint
        }
    }

    /// Parses command-line `text` as a value of `spec`'s type, within its bounds.
    public static func parse(_ text: String, for spec: ParamSpec) -> Result<Value, Problem> {
        switch spec.type {
        case .int:
            guard let number = Int(text.trimmingWhitespace()) else { return .failure(Problem("expected an integer")) }
            return check(.int(number), against: spec)
        case .bool:
            switch text.trimmingWhitespace().lowercased() {
            case "true", "yes": return .success(.bool(true))
            case "false", "no": return .success(.bool(false))
            default: return .failure(Problem("expected true or false", hint: "write true, false, yes or no"))
            }
        case .duration, .enumeration, .string:
            return check(.string(text), against: spec)
        }
    }

    /// Checks `value` (a default from the runbook, or a parsed `-p` value) against `spec`'s type and bounds.
    ///
    /// Returns the value as stored: a duration written as a number of seconds becomes its text.
    public static func check(_ value: Value, against spec: ParamSpec) -> Result<Value, Problem> {
        switch spec.type {
        case .int:
            guard case .int(let number) = value else { return .failure(Problem("expected an integer, got \(value.kindDescription)")) }
            if let min = spec.min, number < min { return .failure(Problem("\(number) is below the minimum \(min)", hint: bounds(spec))) }
            if let max = spec.max, number > max { return .failure(Problem("\(number) is above the maximum \(max)", hint: bounds(spec))) }
            return .success(value)
        case .bool:
            guard case .bool = value else { return .failure(Problem("expected true or false, got \(value.kindDescription)")) }
            return .success(value)
        case .duration:
            let text: String
            switch value {
            case .string(let s): text = s
            case .int(let i): text = String(i)
            case .double(let d): text = String(d)
            default: return .failure(Problem("expected a duration, got \(value.kindDescription)", hint: "write a duration like 500ms, 90s, 5m or 1h"))
            }
            guard DurationText.parse(text) != nil else {
                return .failure(Problem("expected a duration", hint: "write a duration like 500ms, 90s, 5m or 1h"))
            }
            return .success(.string(text))
        case .enumeration(let choices):
            guard case .string(let text) = value, choices.contains(text) else {
                var hint = "expected one of \(choices.joined(separator: ", "))"
                if let text = value.stringValue ?? (value.isNull ? nil : value.description), let suggestion = closestMatch(text, in: choices) {
                    hint = "did you mean \(suggestion.debugDescription)? (one of \(choices.joined(separator: ", ")))"
                }
                return .failure(Problem("not one of \(choices.joined(separator: ", "))", hint: hint))
            }
            return .success(value)
        case .string:
            guard case .string(let text) = value else { return .failure(Problem("expected a string, got \(value.kindDescription)", hint: "quote the value")) }
            if let min = spec.min, text.count < min {
                return .failure(Problem("\(text.count) characters, fewer than the minimum \(min)", hint: bounds(spec)))
            }
            if let max = spec.max, text.count > max {
                return .failure(Problem("\(text.count) characters, more than the maximum \(max)", hint: bounds(spec)))
            }
            return .success(value)
        }
    }

    /// `int from 1 to 64`: the type with its bounds, for hints.
    public static func describe(_ spec: ParamSpec) -> String {
        var text = spec.type.description
        let unit = spec.type == .string ? " characters" : ""
        switch (spec.min, spec.max) {
        case (let min?, let max?): text += " from \(min) to \(max)\(unit)"
        case (let min?, nil): text += ", at least \(min)\(unit)"
        case (nil, let max?): text += ", at most \(max)\(unit)"
        case (nil, nil): break
        }
        return text
    }

    private static func bounds(_ spec: ParamSpec) -> String {
        "\(spec.name) is \(describe(spec)) (declared at \(spec.location))"
    }
}

/// The type of one step argument, as checked by the runbook loader.
///
/// Wherever a scalar type is expected, a string containing `{{` is accepted as is: it is
/// rendered per host later, and checked against the type then.
public enum ArgumentType: Sendable, Hashable {
    /// Text; may contain `{{ }}`.
    case string
    /// A whole number.
    case int
    /// true or false (unquoted `yes`/`no`/`on`/`off` too).
    case bool
    /// `500ms`, `90s`, `5m`, `1h30m`, or a number of seconds.
    case duration
    /// A list of strings.
    case stringList
    /// One string or a list of strings (the loader stores a list either way).
    case stringOrList
    /// A mapping of names to values.
    case map
    /// One of the listed words.
    case enumeration([String])
    /// One template `if` expression or a list of them (`assert`'s `that`; stored as a list).
    case expressionList
    /// A shell command line, run by `sh -c`.
    case command
    /// A file mode: octal digits as a string (`"0644"`, unquoted `0644`) or as a number (`644`).
    case fileMode
    /// Any YAML value: a scalar, a list or a mapping (`yaml_set`'s `value`).
    case any

    /// `an integer`, `one of restart, reload`: for messages and `runbook list`.
    public var description: String {
        switch self {
        case .string: return "a string"
        case .int: return "an integer"
        case .bool: return "true or false"
        case .duration: return "a duration (e.g. 500ms, 90s, 5m)"
        case .stringList: return "a list of strings"
        case .stringOrList: return "a string or a list of strings"
        case .map: return "a mapping"
        case .enumeration(let values): return "one of \(values.joined(separator: ", "))"
        case .expressionList: return "an expression or a list of expressions"
        case .command: return "a shell command"
        case .fileMode: return "a file mode in octal (e.g. \"0644\")"
        case .any: return "a scalar, a list or a mapping"
        }
    }

    /// A duration argument's value (`"90s"`, `"5m"`, or a number of seconds) as a `Duration`; nil when it is not one.
    public static func duration(_ value: Value) -> Duration? {
        switch value {
        case .string(let text): return DurationText.parse(text)
        case .int(let seconds) where seconds >= 0 && Double(seconds) <= DurationText.maximumSeconds: return .seconds(seconds)
        case .double(let seconds) where seconds >= 0 && seconds.isFinite && seconds <= DurationText.maximumSeconds:
            return .milliseconds(Int((seconds * 1000).rounded()))
        default: return nil
        }
    }
}

/// One argument of a step kind: `dest` of `template`, `replicas` of `compose_scale`.
public struct ArgumentSpec: Sendable, Hashable {
    /// The key as written under the kind.
    public var name: String
    /// What the value must be.
    public var type: ArgumentType
    /// Whether the step is invalid without it.
    public var required: Bool
    /// The value the step uses when the key is absent (documentation for implementers; the loader does not fill it in).
    public var defaultValue: Value?
    /// One line for people.
    public var description: String

    /// An argument spec.
    public init(_ name: String, _ type: ArgumentType, required: Bool = false, default defaultValue: Value? = nil, _ description: String) {
        self.name = name
        self.type = type
        self.required = required
        self.defaultValue = defaultValue
        self.description = description
    }
}

/// An argument that becomes required when another argument has a given value, e.g. `manager: signal` needs `pidfile`.
public struct ArgumentRequirement: Sendable, Hashable {
    /// The argument whose value is tested.
    public var key: String
    /// The value that triggers the requirement (compared as written, or against the key's default when absent).
    public var equals: String
    /// The arguments then required.
    public var requires: [String]

    /// A conditional requirement.
    public init(when key: String, equals value: String, requires: [String]) {
        self.key = key
        self.equals = value
        self.requires = requires
    }
}

/// What a rollback can do about a step kind once it has run (SPEC §5, §6).
public enum UndoBehavior: Sendable, Hashable {
    /// The step only reads (or waits); nothing to undo.
    case readOnly
    /// The previous state is restored (file content, replica count, an `undo` command or `undo_sql`).
    case restore
    /// A service action or reload: re-run in rollback phase 2 once state is restored.
    case rerun
    /// The step's result is deliberately kept (a backup dump); nothing is undone and nothing is lost.
    case kept
    /// What it did cannot be undone; the plan marks it and a rollback reports it.
    case irreversible
}

/// The argument schema of one step kind (SPEC §5), as data.
public struct StepKindSchema: Sendable, Hashable {
    /// The kind key: `template`, `pg_backup`, …
    public var name: String
    /// One line for people.
    public var summary: String
    /// Every argument the kind accepts, in documentation order.
    public var arguments: [ArgumentSpec]
    /// The type of the value when the kind takes a bare scalar instead of a mapping (`sleep: 5s`), if it may.
    public var scalarForm: ArgumentType?
    /// The argument a bare scalar stands for (`sleep: 5s` is `sleep: { duration: 5s }`); set with `scalarForm`.
    public var scalarKey: String?
    /// Groups of arguments of which exactly one must be given (`copy`: `src` or `content`).
    public var exactlyOneOf: [[String]]
    /// Arguments required only when another one has a given value.
    public var requirements: [ArgumentRequirement]

    /// A schema.
    public init(
        name: String, summary: String, arguments: [ArgumentSpec], scalarForm: ArgumentType? = nil, scalarKey: String? = nil,
        exactlyOneOf: [[String]] = [], requirements: [ArgumentRequirement] = []
    ) {
        self.name = name
        self.summary = summary
        self.arguments = arguments
        self.scalarForm = scalarForm
        self.scalarKey = scalarKey
        self.exactlyOneOf = exactlyOneOf
        self.requirements = requirements
    }

    /// The argument named `name`, if the kind has it.
    public func argument(_ name: String) -> ArgumentSpec? {
        arguments.first { $0.name == name }
    }

    /// The argument names, in documentation order.
    public var argumentNames: [String] { arguments.map(\.name) }
}

/// The keys every step shares (the kinds themselves are described in RunbookSteps).
public enum StepSchema {
    /// Keys a step may have besides its one kind key.
    public static let commonKeys = ["id", "name", "when", "timeout", "retries", "delay", "run_once", "become", "loop", "delegate_to"]

}

/// A runbook as loaded from `runbooks/NAME.yml` (SPEC §4), before any host is contacted.
public struct Runbook: Sendable {
    /// The name the CLI takes (the file name without `.yml`).
    public var name: String
    /// One line for `runbook list`.
    public var description: String
    /// The host pattern the runbook targets (`hosts:`), narrowed further by `-l`.
    public var hosts: String
    /// Declared parameters, in file order.
    public var params: [ParamSpec]
    /// Runbook variables in file order; values may contain `{{ }}` (rendered per host).
    public var vars: [(name: String, value: Value, location: SourceLocation)]
    /// Rolling batches.
    public var serial: Serial
    /// Hosts that may fail before the run stops.
    public var maxFail: Int
    /// Whether a failure rolls back automatically.
    public var rollback: RollbackMode
    /// A cron expression for `runbook schedule`, if any.
    public var schedule: String?
    /// The steps, in order.
    public var steps: [Step]
    /// The file it came from.
    public var file: String
    /// Where the run's outcome is sent (`notify:`), besides the inventory's defaults.
    public var notify: [NotifyTarget] = []

    /// Creates a runbook.
    public init(name: String, description: String, hosts: String, params: [ParamSpec],
                vars: [(name: String, value: Value, location: SourceLocation)], serial: Serial, maxFail: Int,
                rollback: RollbackMode, schedule: String?, steps: [Step], file: String) {
        self.name = name
        self.description = description
        self.hosts = hosts
        self.params = params
        self.vars = vars
        self.serial = serial
        self.maxFail = maxFail
        self.rollback = rollback
        self.schedule = schedule
        self.steps = steps
        self.file = file
    }
}

/// `rollback: auto | off`.
public enum RollbackMode: String, Sendable, Codable {
    /// A failed step or health check rolls the run back.
    case auto
    /// Failures leave the hosts as they are.
    case off
}

/// `serial:` — how many hosts run at once, in rolling batches.
public enum Serial: Sendable, Hashable, Codable {
    /// Every host at once (bounded by `--forks`).
    case all
    /// Batches of this many hosts.
    case count(Int)
    /// Batches of this percentage of the hosts (at least one).
    case percent(Int)

    /// The batch size for `hostCount` hosts.
    public func batchSize(for hostCount: Int) -> Int {
        switch self {
        case .all: return max(1, hostCount)
        case .count(let n): return max(1, n)
        case .percent(let p): return max(1, hostCount * p / 100)
        }
    }
}

/// A declared parameter: `workers: { type: int, default: 8, min: 1, max: 64 }`.
public struct ParamSpec: Sendable, Hashable {
    /// The parameter's name (`params.NAME` in templates, `-p NAME=value`).
    public var name: String
    /// Its type; `-p` values and defaults are checked against it.
    public var type: ParamType
    /// The default; nil makes the parameter required.
    public var defaultValue: Value?
    /// Lower bound (int) or minimum length (string), inclusive.
    public var min: Int?
    /// Upper bound (int) or maximum length (string), inclusive.
    public var max: Int?
    /// For `runbook list`.
    public var description: String?
    /// Where it was declared.
    public var location: SourceLocation

    /// Creates a spec.
    public init(name: String, type: ParamType, defaultValue: Value?, min: Int?, max: Int?, description: String?, location: SourceLocation) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.min = min
        self.max = max
        self.description = description
        self.location = location
    }
}

/// Parameter types (SPEC §4).
public enum ParamType: Sendable, Hashable {
    /// A whole number.
    case int
    /// Text.
    case string
    /// true/false.
    case bool
    /// `90s`, `5m`; stored as a string, checked with `DurationText`.
    case duration
    /// One of the listed values.
    case enumeration([String])

    /// `int`, `enum (a|b)`: for messages and `runbook list`.
    public var description: String {
        switch self {
        case .int: return "int"
        case .string: return "string"
        case .bool: return "bool"
        case .duration: return "duration"
        case .enumeration(let values): return "enum (\(values.joined(separator: "|")))"
        }
    }
}

/// One step: exactly one kind key with its arguments, plus the common keys.
public struct Step: Sendable {
    /// 0-based position in the runbook.
    public var index: Int
    /// `id:`, by which later steps refer to it (`steps.ID.changed`).
    public var id: String?
    /// `name:`, or a name made from the kind and position.
    public var name: String
    /// The kind key (`command`, `template`, …).
    public var kind: String
    /// The kind's arguments as written (strings may contain `{{ }}`).
    public var arguments: Value
    /// Where each argument was written, by key (the kind's mapping keys); `""` is the kind key itself.
    public var argumentLocations: [String: SourceLocation]
    /// `when:` condition (a template `if` expression), if any.
    public var when: String?
    /// `timeout:`.
    public var timeout: Duration?
    /// `retries:` (extra attempts after a failure).
    public var retries: Int
    /// `delay:` between attempts.
    public var delay: Duration
    /// `run_once:` — only on the first host of the run.
    public var runOnce: Bool
    /// `become:` — run through `sudo -n`.
    public var become: Bool
    /// Where the step begins.
    public var location: SourceLocation
    /// `loop:` — the step runs once per item (SPEC §4 "Loops and other hosts").
    public var loop: StepLoop? = nil
    /// `delegate_to:` — the inventory host the step runs on, for the current host (may hold `{{ }}`).
    public var delegateTo: String? = nil
    /// Where `loop:` and `delegate_to:` were written.
    public var loopLocation: SourceLocation? = nil
    public var delegateLocation: SourceLocation? = nil
    /// The `block:` the step belongs to, if any: its steps run in order, once per item of
    /// the block's loop (the step's `loop` is the block's).
    public var block: StepBlock? = nil

    /// Creates a step.
    public init(index: Int, id: String?, name: String, kind: String, arguments: Value, argumentLocations: [String: SourceLocation],
                when: String?, timeout: Duration?, retries: Int, delay: Duration, runOnce: Bool, become: Bool, location: SourceLocation,
                loop: StepLoop? = nil, delegateTo: String? = nil, loopLocation: SourceLocation? = nil, delegateLocation: SourceLocation? = nil) {
        self.index = index
        self.id = id
        self.name = name
        self.kind = kind
        self.arguments = arguments
        self.argumentLocations = argumentLocations
        self.when = when
        self.timeout = timeout
        self.retries = retries
        self.delay = delay
        self.runOnce = runOnce
        self.become = become
        self.location = location
        self.loop = loop
        self.delegateTo = delegateTo
        self.loopLocation = loopLocation
        self.delegateLocation = delegateLocation
    }

    /// Its block's `when:` and its own, in that order: the step runs when all hold.
    public var conditions: [String] { [block?.when, when].compactMap { $0 } }

    /// `id` or `#N` (1-based): the step's part of a change address.
    public var reference: String { id ?? "#\(index + 1)" }

    /// The step's part of a change address for one iteration of its loop: `drain[2]` (1-based,
    /// as `loop.index`), or the plain reference without a loop.
    public func reference(iteration: Int?) -> String {
        iteration.map { "\(reference)[\($0)]" } ?? reference
    }
}

/// A `block:` of steps: its steps share its `loop:` (all of them per item, in order), its
/// `when:` (besides their own) and its `delegate_to:` (unless they name their own).
public struct StepBlock: Sendable, Hashable {
    /// The position of the block's first step (its steps are consecutive).
    public var first: Int
    /// The block's name.
    public var name: String
    /// The block's `when:`, checked with each step's own.
    public var when: String?
    /// True when the block has a `loop:` (its steps then run per item, together).
    public var looped: Bool

    public init(first: Int, name: String, when: String?, looped: Bool = false) {
        self.first = first
        self.name = name
        self.when = when
        self.looped = looped
    }
}

/// `loop:` on a step: a list written in the runbook, or a template expression that yields one.
public enum StepLoop: Sendable, Hashable {
    /// A YAML list (items may hold `{{ }}`, rendered per host).
    case items([Value])
    /// `"{{ groups.web }}"`, `"{{ range(1, params.replicas + 1) }}"`: evaluated per host.
    case expression(String)
    /// A template with `{% %}` tags that renders a YAML flow list (`[a, b]`): for lists built
    /// from several others (every replica of every other web host).
    case template(String)
}

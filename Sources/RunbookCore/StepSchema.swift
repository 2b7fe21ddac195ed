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
        }
    }

    /// A duration argument's value (`"90s"`, `"5m"`, or a number of seconds) as a `Duration`; nil when it is not one.
    public static func duration(_ value: Value) -> Duration? {
        switch value {
        case .string(let text): return DurationText.parse(text)
        case .int(let seconds) where seconds >= 0: return .seconds(seconds)
        case .double(let seconds) where seconds >= 0 && seconds.isFinite:
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

    /// Whether a step of `kind` with `arguments` cannot be undone (same as `StepSchema.isIrreversible`).
    public static func isIrreversible(kind: String, arguments: Value) -> Bool {
        StepSchema.isIrreversible(kind: kind, arguments: arguments)
    }

    /// What a rollback does about a step of `kind` (same as `StepSchema.undoBehavior`).
    public static func undoBehavior(kind: String, arguments: Value) -> UndoBehavior {
        StepSchema.undoBehavior(kind: kind, arguments: arguments)
    }

    /// Every step kind by name.
    public static let all: [String: StepKindSchema] = Dictionary(
        uniqueKeysWithValues: StepSchema.kinds.map { ($0.name, $0) })
}

/// The step kinds of SPEC §5 and the keys every step shares.
public enum StepSchema {
    /// Keys a step may have besides its one kind key.
    public static let commonKeys = ["id", "name", "when", "timeout", "retries", "delay", "run_once", "become"]

    /// Every kind name, in documentation order.
    public static var kindNames: [String] { kinds.map(\.name) }

    /// The schema of `kind`, or nil when there is no such kind.
    public static func schema(for kind: String) -> StepKindSchema? { StepKindSchema.all[kind] }

    /// What a rollback does about a step of `kind` with `arguments` (a map, as the loader stores them).
    ///
    /// `command` restores with its `undo`, and is irreversible without one; `pg_sql` likewise with
    /// `undo_sql`. `template`, `copy` and `compose_scale` restore the previous state. `service` and
    /// `nginx_reload` are re-run. `pg_kill_queries`, `pg_vacuum` and `docker_prune` are
    /// irreversible. `pg_backup` is kept: rollback leaves the new dump in place (dumps removed by
    /// `keep` retention are old backups, pruned on purpose). Every other kind only reads.
    public static func undoBehavior(kind: String, arguments: Value) -> UndoBehavior {
        func has(_ key: String) -> Bool {
            guard let value = arguments[key] else { return false }
            if case .string(let text) = value { return !text.trimmingWhitespace().isEmpty }
            return !value.isNull
        }
        switch kind {
        case "command": return has("undo") ? .restore : .irreversible
        case "pg_sql": return has("undo_sql") ? .restore : .irreversible
        case "template", "copy", "compose_scale": return .restore
        case "service", "nginx_reload": return .rerun
        case "pg_kill_queries", "pg_vacuum", "docker_prune": return .irreversible
        case "pg_backup": return .kept
        default: return .readOnly
        }
    }

    /// Whether a step of `kind` with `arguments` cannot be undone, so the plan must say so (see `undoBehavior`).
    public static func isIrreversible(kind: String, arguments: Value) -> Bool {
        undoBehavior(kind: kind, arguments: arguments) == .irreversible
    }

    // MARK: - The kinds

    static let fileArguments: [ArgumentSpec] = [
        ArgumentSpec("dest", .string, required: true, "the file on the host"),
        ArgumentSpec("mode", .fileMode, "permissions of the file, in octal (default: those of the file replaced, else 0644)"),
        ArgumentSpec("owner", .string, "owner of the file"),
        ArgumentSpec("group", .string, "group of the file"),
        ArgumentSpec("validate", .command, "command that must pass on the candidate file before it is put in place; %s is its path"),
    ]

    static let pgConnection: [ArgumentSpec] = [
        ArgumentSpec("database", .string, "database name (psql -d)"),
        ArgumentSpec("user", .string, "database user (psql -U)"),
        ArgumentSpec("host", .string, "server host or socket directory (psql -h)"),
        ArgumentSpec("port", .int, "server port (psql -p)"),
        ArgumentSpec("password", .string, "password, normally {{ secrets.NAME }}; passed as PGPASSWORD in the environment"),
        ArgumentSpec("via", .enumeration(["direct", "compose", "docker"]), default: "direct",
                     "where psql runs: on the host, in a compose service, or in a container"),
        ArgumentSpec("service", .string, "compose service running PostgreSQL (via: compose)"),
        ArgumentSpec("compose_file", .string, "compose file (via: compose)"),
        ArgumentSpec("container", .string, "container running PostgreSQL (via: docker)"),
    ]

    static let pgRequirements = [
        ArgumentRequirement(when: "via", equals: "compose", requires: ["service"]),
        ArgumentRequirement(when: "via", equals: "docker", requires: ["container"]),
    ]

    static let pgStates = ["active", "idle", "idle in transaction", "idle in transaction (aborted)", "fastpath function call", "disabled"]

    /// Every kind, in documentation order.
    static let kinds: [StepKindSchema] = [
        StepKindSchema(
            name: "command", summary: "run a shell command",
            arguments: [
                ArgumentSpec("run", .command, required: true, "the command, run by sh -c"),
                ArgumentSpec("creates", .string, "skip when this path exists on the host"),
                ArgumentSpec("unless", .command, "skip when this command exits 0 (run at plan time)"),
                ArgumentSpec("undo", .command, "command that undoes it on rollback; without it the step is irreversible"),
            ],
            scalarForm: .command, scalarKey: "run"),
        StepKindSchema(
            name: "template", summary: "render a template from templates/ to a file on the host",
            arguments: [ArgumentSpec("src", .string, required: true, "template under templates/")] + fileArguments),
        StepKindSchema(
            name: "copy", summary: "put a file from templates/ (or inline content) on the host",
            arguments: [
                ArgumentSpec("src", .string, "file under templates/, copied as is"),
                ArgumentSpec("content", .string, "the file's content, instead of src"),
            ] + fileArguments,
            exactlyOneOf: [["src", "content"]]),
        StepKindSchema(
            name: "service", summary: "restart, reload, start or stop a service",
            arguments: [
                ArgumentSpec("name", .string, required: true, "the service (compose service, systemd unit, or a label)"),
                ArgumentSpec("action", .enumeration(["restart", "reload", "start", "stop"]), required: true, "what to do"),
                ArgumentSpec("manager", .enumeration(["compose", "systemd", "signal", "command"]), default: "compose", "how the service is run"),
                ArgumentSpec("compose_file", .string, "compose file (manager: compose)"),
                ArgumentSpec("project_directory", .string, "compose project directory (manager: compose)"),
                ArgumentSpec("pidfile", .string, "file holding the process id (manager: signal)"),
                ArgumentSpec("signal", .string, "signal to send, e.g. HUP (manager: signal; default per action)"),
                ArgumentSpec("run", .command, "command performing the action (manager: command)"),
            ],
            requirements: [
                ArgumentRequirement(when: "manager", equals: "signal", requires: ["pidfile"]),
                ArgumentRequirement(when: "manager", equals: "command", requires: ["run"]),
            ]),
        StepKindSchema(
            name: "compose_scale", summary: "set the replica count of a compose service",
            arguments: [
                ArgumentSpec("compose_file", .string, "compose file"),
                ArgumentSpec("service", .string, required: true, "compose service"),
                ArgumentSpec("replicas", .int, required: true, "replicas wanted"),
            ]),
        StepKindSchema(
            name: "nginx_reload", summary: "test the nginx configuration, then reload",
            arguments: [
                ArgumentSpec("config", .string, "configuration file to test (nginx -c)"),
                ArgumentSpec("binary", .string, default: "nginx", "the nginx executable"),
                ArgumentSpec("via", .enumeration(["direct", "compose", "docker"]), default: "direct",
                             "where nginx runs: on the host, in a compose service, or in a container"),
                ArgumentSpec("service", .string, "compose service running nginx (via: compose)"),
                ArgumentSpec("compose_file", .string, "compose file (via: compose)"),
                ArgumentSpec("container", .string, "container running nginx (via: docker)"),
            ],
            requirements: [
                ArgumentRequirement(when: "via", equals: "compose", requires: ["service"]),
                ArgumentRequirement(when: "via", equals: "docker", requires: ["container"]),
            ]),
        StepKindSchema(
            name: "pg_backup", summary: "dump a PostgreSQL database (custom format), verified, with retention",
            arguments: pgConnection + [
                ArgumentSpec("dir", .string, required: true, "directory on the host for the dumps"),
                ArgumentSpec("keep", .int, "dumps to keep in dir (older ones are removed)"),
            ],
            requirements: pgRequirements),
        StepKindSchema(
            name: "pg_vacuum", summary: "VACUUM (ANALYZE) tables",
            arguments: pgConnection + [
                ArgumentSpec("tables", .stringOrList, "tables to vacuum (default: the whole database)"),
                ArgumentSpec("analyze", .bool, default: true, "also ANALYZE"),
                ArgumentSpec("full", .bool, default: false, "VACUUM FULL (locks the tables)"),
            ],
            requirements: pgRequirements),
        StepKindSchema(
            name: "pg_kill_queries", summary: "terminate queries running longer than a limit",
            arguments: pgConnection + [
                ArgumentSpec("older_than", .duration, required: true, "age of the queries to end, e.g. 1m"),
                ArgumentSpec("state", .enumeration(pgStates), default: "active", "backend state to match"),
                ArgumentSpec("exclude_users", .stringOrList, "users whose queries are left alone"),
                ArgumentSpec("exclude_applications", .stringOrList, "application names whose queries are left alone"),
            ],
            requirements: pgRequirements),
        StepKindSchema(
            name: "pg_sql", summary: "run SQL",
            arguments: pgConnection + [
                ArgumentSpec("sql", .string, required: true, "the SQL"),
                ArgumentSpec("undo_sql", .string, "SQL that undoes it on rollback; without it the step is irreversible"),
            ],
            requirements: pgRequirements),
        StepKindSchema(
            name: "pg_slow_queries", summary: "report the slowest statements from pg_stat_statements",
            arguments: pgConnection + [
                ArgumentSpec("limit", .int, default: 10, "how many statements"),
            ],
            requirements: pgRequirements),
        StepKindSchema(
            name: "health", summary: "check an HTTP endpoint, optionally with a latency gate",
            arguments: [
                ArgumentSpec("url", .string, required: true, "the URL"),
                ArgumentSpec("from", .enumeration(["host", "controller"]), default: "host",
                             "where the request starts: on the host, or on the controller"),
                ArgumentSpec("expect_status", .int, default: 200, "HTTP status expected"),
                ArgumentSpec("contains", .string, "text the body must contain"),
                ArgumentSpec("retries", .int, default: 0, "extra attempts before failing"),
                ArgumentSpec("delay", .duration, default: "1s", "pause between attempts"),
                ArgumentSpec("timeout", .duration, default: "10s", "per request"),
                ArgumentSpec("samples", .int, "requests to time for the latency gate"),
                ArgumentSpec("p95_under", .duration, "the 95th percentile latency must be under this"),
                ArgumentSpec("recheck", .bool, default: true,
                             "run again in rollback phase 3 (false for a check of the new state, e.g. a worker count)"),
            ]),
        StepKindSchema(
            name: "wait_for", summary: "wait until a TCP port or URL is up (or down)",
            arguments: [
                ArgumentSpec("port", .int, "TCP port"),
                ArgumentSpec("host", .string, default: "127.0.0.1", "address of the port, as seen from the host"),
                ArgumentSpec("url", .string, "URL answering any HTTP status"),
                ArgumentSpec("state", .enumeration(["up", "down"]), default: "up", "what to wait for"),
                ArgumentSpec("timeout", .duration, default: "60s", "give up after this long"),
                ArgumentSpec("delay", .duration, default: "1s", "pause between checks"),
                ArgumentSpec("recheck", .bool, default: true, "run again in rollback phase 3"),
            ],
            exactlyOneOf: [["port", "url"]]),
        StepKindSchema(
            name: "docker_prune", summary: "docker system prune -f",
            arguments: [
                ArgumentSpec("all", .bool, default: false, "also unused images (-a)"),
                ArgumentSpec("volumes", .bool, default: false, "also unused volumes (--volumes)"),
            ]),
        StepKindSchema(
            name: "gather", summary: "capacity facts into facts: cpu, load, memory, swap, disk, PostgreSQL, docker",
            arguments: pgConnection + [
                ArgumentSpec("mounts", .stringOrList, "mount points for disk usage (default: every real filesystem)"),
            ],
            requirements: pgRequirements),
        StepKindSchema(
            name: "assert", summary: "fail unless every expression is true",
            arguments: [
                ArgumentSpec("that", .expressionList, required: true, "template if expressions"),
                ArgumentSpec("message", .string, "shown when an expression is false"),
            ],
            scalarForm: .expressionList, scalarKey: "that"),
        StepKindSchema(
            name: "sleep", summary: "pause",
            arguments: [ArgumentSpec("duration", .duration, required: true, "how long")],
            scalarForm: .duration, scalarKey: "duration"),
    ]
}

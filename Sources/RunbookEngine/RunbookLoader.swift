import Foundation
import RunbookCore
import RunbookSteps

/// Loads and validates `runbooks/NAME.yml` (SPEC §4, §5) into a `Runbook`, reporting every problem at once.
///
/// Each diagnostic names the file, line, column and field path (`steps[2].template.dest`) with a
/// hint. Nothing is rendered and no host is contacted: `{{ }}` is accepted in place of any
/// scalar, and only checked for references to undeclared params and to steps that do not come
/// earlier.
///
/// A step's `arguments` is always a `.map`, normalized by the kind's `StepKindSchema`: a bare
/// scalar form (`sleep: 5s`, `command: uptime`, `assert: EXPR`) is stored under the kind's
/// `scalarKey`; string, command and enumeration arguments are `.string` (a number written
/// unquoted becomes its text); ints are `.int`, bools `.bool`; durations are `.string` as written
/// (read them with `ArgumentType.duration`); file modes are `.string` of octal digits (`"0644"`,
/// `"644"`); string-or-list and expression arguments are `.list` of `.string`; maps as written.
/// A scalar containing `{{` is stored as `.string` (or a one-element list) whatever the type.
/// Null arguments are left out, and defaults are not filled in.
public struct RunbookLoader: Sendable {
    /// The project root (holding `runbooks/` and `templates/`).
    public let root: String

    /// A loader for the project at `root`.
    public init(root: String) {
        self.root = root
    }

    /// `ROOT/runbooks`.
    public var runbooksDirectory: String { root + "/runbooks" }

    /// `ROOT/templates`, where `template` and `copy` sources live.
    public var templatesDirectory: String { root + "/templates" }

    /// `ROOT/runbooks/NAME.yml`.
    public func path(for name: String) -> String {
        runbooksDirectory + "/" + name + ".yml"
    }

    /// The names of the runbooks in `ROOT/runbooks` (every `*.yml`), sorted.
    public func names() -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: runbooksDirectory)) ?? []
        return files.filter { $0.hasSuffix(".yml") && !$0.hasPrefix(".") }.map { String($0.dropLast(4)) }.sorted()
    }

    /// Loads the runbook called `name` (a file name without `.yml`, as the CLI takes it).
    public func load(name: String) throws(DiagnosticError) -> Runbook {
        if name.isEmpty || name.contains("/") {
            throw DiagnosticError(.error(
                "invalid runbook name \(name.debugDescription)",
                hint: "give the file name under runbooks/ without .yml, e.g. vertical-scale"))
        }
        let path = path(for: name)
        guard FileManager.default.fileExists(atPath: path) else {
            var hint = "runbooks are files named \(runbooksDirectory)/NAME.yml"
            let known = names()
            if let suggestion = closestMatch(name, in: known) {
                hint = "did you mean \(suggestion.debugDescription)?"
            } else if !known.isEmpty {
                hint = "run `runbook list` to see the runbooks (\(known.joined(separator: ", ")))"
            }
            throw DiagnosticError(.error("no runbook named \(name.debugDescription) (\(Self.displayPath(path)) does not exist)", hint: hint))
        }
        return try load(path: path)
    }

    /// Loads the runbook file at `path`; its name is the file name without `.yml`/`.yaml`.
    public func load(path: String) throws(DiagnosticError) -> Runbook {
        let file = Self.displayPath(path)
        let document = try YAMLDocument.load(path: path, file: file)
        return try validate(document, name: Self.runbookName(forPath: path))
    }

    /// Loads runbook `text` called `name`; `file` names it in diagnostics.
    public func load(text: String, file: String, name: String) throws(DiagnosticError) -> Runbook {
        let document = try YAMLDocument.parse(text: text, file: file)
        return try validate(document, name: name)
    }

    /// Every runbook in `ROOT/runbooks`, sorted by name, each loaded or with the reason it failed.
    public func list() -> [(name: String, result: Result<Runbook, DiagnosticError>)] {
        names().map { name in
            do throws(DiagnosticError) {
                return (name, .success(try load(path: path(for: name))))
            } catch {
                return (name, .failure(error))
            }
        }
    }

    /// Problems with the runbook's `hosts:` pattern against `inventory`, located at the `hosts:` line.
    ///
    /// A pattern containing `{{` is rendered at run time and not checked here. A pattern that
    /// selects no host is an error.
    public func checkHosts(_ runbook: Runbook, against inventory: Inventory) -> [Diagnostic] {
        guard !runbook.hosts.contains("{{") else { return [] }
        let location = Self.location(of: "hosts", in: runbook)
        do throws(DiagnosticError) {
            let hosts = try HostPattern(runbook.hosts).select(from: inventory)
            if hosts.isEmpty {
                return [.error("hosts pattern \(runbook.hosts.debugDescription) selects no host", at: location, field: "hosts",
                               hint: "run `runbook hosts -l '\(runbook.hosts)'` to see what it matches")]
            }
            return []
        } catch {
            return error.diagnostics.map { d in
                var d = d
                d.location = d.location ?? location
                d.field = d.field ?? "hosts"
                return d
            }
        }
    }

    /// Problems with running the runbook from cron (`runbook schedule`), located at the
    /// `schedule:` line: a scheduled run passes no `-p`, so every param needs a default, or
    /// the run would fail every time. Nothing when the runbook has no schedule.
    public func checkSchedule(_ runbook: Runbook) -> [Diagnostic] {
        guard runbook.schedule != nil else { return [] }
        let required = runbook.params.filter { $0.defaultValue == nil }.map(\.name)
        guard !required.isEmpty else { return [] }
        return [.error("a scheduled run passes no -p, but these params have no default: \(required.joined(separator: ", "))",
                       at: Self.location(of: "schedule", in: runbook), field: "schedule",
                       hint: "give each a default:, or remove schedule:")]
    }

    /// Where the top-level `key` of the runbook's file is written (its value), or the file alone.
    private static func location(of key: String, in runbook: Runbook) -> SourceLocation {
        if let document = try? YAMLDocument.load(path: runbook.file),
           case .mapping(let entries)? = document.root?.kind,
           let entry = entries.first(where: { $0.key == key })
        {
            return entry.value.location
        }
        return SourceLocation(file: runbook.file, line: 0, column: 0)
    }

    /// A path as shown in diagnostics and stored in `Runbook.file`: relative to the current directory when under it.
    public static func displayPath(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let standardized = URL(fileURLWithPath: absolute).standardizedFileURL.path
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).standardizedFileURL.path
        if cwd != "/", standardized.hasPrefix(cwd + "/") {
            return String(standardized.dropFirst(cwd.count + 1))
        }
        return standardized
    }

    /// The runbook name a file stands for: its base name without `.yml` or `.yaml`.
    public static func runbookName(forPath path: String) -> String {
        var base = (path as NSString).lastPathComponent
        for suffix in [".yml", ".yaml"] where base.hasSuffix(suffix) {
            base = String(base.dropLast(suffix.count))
            break
        }
        return base
    }

    /// Validates a parsed document as the runbook called `name`.
    public func validate(_ document: YAMLDocument, name: String) throws(DiagnosticError) -> Runbook {
        var validator = RunbookValidator(loader: self, file: document.file, expectedName: name)
        let runbook = validator.run(document.root)
        try validator.diagnostics.sortedByLocation().throwIfErrors()
        guard let runbook else {
            throw DiagnosticError(.error("cannot load runbook", at: SourceLocation(file: document.file, line: 0, column: 0)))
        }
        return runbook
    }
}

// MARK: - Keys

extension RunbookLoader {
    /// The keys a runbook file may have at the top.
    public static let topLevelKeys = ["name", "description", "hosts", "params", "vars", "serial", "max_fail", "rollback", "schedule", "steps"]
    /// The keys of one `params:` entry.
    public static let paramKeys = ["type", "default", "min", "max", "values", "description"]
    /// The `type:` of a param.
    public static let paramTypes = ["int", "string", "bool", "duration", "enum"]
    /// The cron shortcuts `schedule:` accepts besides five fields.
    public static let scheduleShortcuts = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]

    /// Whether `name` is an identifier usable in templates: `[A-Za-z_][A-Za-z0-9_]*`.
    public static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// A problem with a cron expression, or nil when it is valid (five fields, or a shortcut like `@daily`).
    public static func scheduleProblem(_ text: String) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("@") {
            return scheduleShortcuts.contains(trimmed) ? nil : "unknown shortcut \(trimmed.debugDescription) (use \(scheduleShortcuts.joined(separator: ", ")))"
        }
        let fields = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count == 5 else {
            return "expected 5 fields (minute hour day-of-month month day-of-week), got \(fields.count)"
        }
        let specs: [(name: String, range: ClosedRange<Int>, names: [String])] = [
            ("minute", 0...59, []), ("hour", 0...23, []), ("day-of-month", 1...31, []),
            ("month", 1...12, ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]),
            ("day-of-week", 0...7, ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
        ]
        for (field, spec) in zip(fields, specs) {
            if let problem = cronFieldProblem(String(field), range: spec.range, names: spec.names) {
                return "\(spec.name) field \(String(field).debugDescription): \(problem)"
            }
        }
        return nil
    }

    private static func cronFieldProblem(_ field: String, range: ClosedRange<Int>, names: [String]) -> String? {
        func number(_ text: Substring) -> Int? {
            if let n = Int(text) { return n }
            if let index = names.firstIndex(of: text.lowercased()) { return range.lowerBound == 1 ? index + 1 : index }
            return nil
        }
        for item in field.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { return "empty list item" }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { return "more than one /" }
            if parts.count == 2 {
                guard let step = Int(parts[1]), step > 0 else { return "a step after / must be a positive number" }
            }
            let base = parts[0]
            if base == "*" { continue }
            let bounds = base.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2 else { return "invalid range \(String(base).debugDescription)" }
            var values: [Int] = []
            for bound in bounds {
                guard let n = number(bound) else {
                    return "\(String(bound).debugDescription) is not a number\(names.isEmpty ? "" : " or a name")"
                }
                guard range.contains(n) else { return "\(n) is outside \(range.lowerBound)-\(range.upperBound)" }
                values.append(n)
            }
            if values.count == 2, values[0] > values[1] { return "range \(String(base).debugDescription) is backwards" }
        }
        return nil
    }
}

// MARK: - Validation

/// The state of one runbook's validation: diagnostics and what was read so far.
private struct RunbookValidator {
    let loader: RunbookLoader
    let file: String
    let expectedName: String
    var diagnostics = Diagnostics()
    var paramNames: [String] = []

    init(loader: RunbookLoader, file: String, expectedName: String) {
        self.loader = loader
        self.file = file
        self.expectedName = expectedName
    }

    mutating func run(_ root: YAMLNode?) -> Runbook? {
        guard let root, !root.isNull else {
            diagnostics.error("the runbook is empty", at: SourceLocation(file: file, line: 1, column: 1),
                              hint: "a runbook needs at least hosts: and steps:")
            return nil
        }
        guard let top = root.mapping(
            &diagnostics, allowedKeys: RunbookLoader.topLevelKeys,
            what: "a mapping with name, description, hosts, params, vars and steps")
        else { return nil }

        var name = expectedName
        if let node = top["name"], let text = node.nonEmptyString(&diagnostics) {
            if text != expectedName {
                node.error(
                    "name \(text.debugDescription) differs from the file name \(expectedName.debugDescription)",
                    hint: "the CLI finds a runbook by its file name: rename the file to runbooks/\(text).yml, or write name: \(expectedName)",
                    in: &diagnostics)
            }
            name = text
        }
        var description = ""
        if let node = top["description"], let text = node.string(&diagnostics) { description = text }

        var hosts = ""
        if let node = top.required("hosts", &diagnostics) { hosts = readHosts(node) ?? "" }

        var params: [ParamSpec] = []
        if let node = top["params"] { params = readParams(node) }
        paramNames = params.map(\.name)

        var vars: [(name: String, value: Value, location: SourceLocation)] = []
        if let node = top["vars"] { vars = readVars(node) }

        var serial = Serial.all
        if let node = top["serial"] { serial = readSerial(node) ?? .all }

        var maxFail = 0
        if let node = top["max_fail"] { maxFail = nonNegativeInt(node) ?? 0 }

        var rollback = RollbackMode.auto
        if let node = top["rollback"] {
            if let text = node.scalarText, let mode = RollbackMode(rawValue: text) {
                rollback = mode
            } else {
                let choices = ["auto", "off"]
                var hint: String?
                if let text = node.scalarText, let suggestion = closestMatch(text, in: choices) { hint = "did you mean \(suggestion.debugDescription)?" }
                // YAML reads an unquoted `off` as a string here, so only other words land here.
                node.error("expected auto or off, got \(node.gotDescription)", hint: hint, in: &diagnostics)
            }
        }

        var schedule: String?
        if let node = top["schedule"], let text = node.nonEmptyString(&diagnostics) {
            if let problem = RunbookLoader.scheduleProblem(text) {
                node.error("invalid cron schedule: \(problem)",
                           hint: "write five fields, e.g. \"0 3 * * *\" for 03:00 every day, or a shortcut like @daily", in: &diagnostics)
            } else {
                schedule = text
            }
        }

        var steps: [Step] = []
        if let node = top.required("steps", &diagnostics) { steps = readSteps(node) }

        return Runbook(name: name, description: description, hosts: hosts, params: params, vars: vars, serial: serial,
                       maxFail: maxFail, rollback: rollback, schedule: schedule, steps: steps, file: file)
    }

    // MARK: Top level

    mutating func readHosts(_ node: YAMLNode) -> String? {
        var text: String
        if node.isSequence {
            guard let names = node.stringList(&diagnostics, allowSingle: false) else { return nil }
            text = names.joined(separator: ",")
        } else {
            guard let single = node.nonEmptyString(&diagnostics) else { return nil }
            text = single
        }
        checkTemplateText(text, node: node, expression: false)
        do throws(DiagnosticError) {
            _ = try HostPattern(text)
        } catch {
            for d in error.diagnostics {
                node.error(d.summary, hint: d.hint, in: &diagnostics)
            }
            return nil
        }
        return text
    }

    mutating func readVars(_ node: YAMLNode) -> [(name: String, value: Value, location: SourceLocation)] {
        guard let map = node.mapping(&diagnostics, what: "a mapping of variable names to values") else { return [] }
        var vars: [(name: String, value: Value, location: SourceLocation)] = []
        for entry in map.entries {
            if !RunbookLoader.isIdentifier(entry.key) {
                entry.keyNode.error(
                    "invalid variable name \(entry.key.debugDescription)",
                    hint: "templates read it as vars.NAME: use letters, digits and _ (not starting with a digit)", in: &diagnostics)
                continue
            }
            scanTemplates(in: entry.value, expression: false, step: nil)
            vars.append((entry.key, entry.value.value, entry.value.location))
        }
        return vars
    }

    mutating func readSerial(_ node: YAMLNode) -> Serial? {
        let hint = "write 0 (every host at once), a number of hosts, or a percentage like \"25%\""
        switch node.value {
        case .int(let n) where n == 0: return .all
        case .int(let n) where n > 0: return .count(n)
        case .string(let text) where text.hasSuffix("%"):
            if let p = Int(text.dropLast().trimmingCharacters(in: .whitespaces)), (1...100).contains(p) { return .percent(p) }
            node.error("expected a percentage from 1% to 100%, got \(node.gotDescription)", hint: hint, in: &diagnostics)
            return nil
        default:
            node.error("expected 0, a number of hosts or a percentage, got \(node.gotDescription)", hint: hint, in: &diagnostics)
            return nil
        }
    }

    // MARK: Params

    mutating func readParams(_ node: YAMLNode) -> [ParamSpec] {
        guard let map = node.mapping(&diagnostics, what: "a mapping of parameter names to { type, default, … }") else { return [] }
        var specs: [ParamSpec] = []
        for entry in map.entries {
            let name = entry.key
            if !RunbookLoader.isIdentifier(name) {
                entry.keyNode.error(
                    "invalid parameter name \(name.debugDescription)",
                    hint: "templates read it as params.NAME: use letters, digits and _ (not starting with a digit)", in: &diagnostics)
                continue
            }
            guard let body = entry.value.mapping(
                &diagnostics, allowedKeys: RunbookLoader.paramKeys,
                what: "a mapping with type, default, min, max, values and description",
                hint: "e.g. \(name): { type: int, default: 8, min: 1, max: 64 }")
            else { continue }
            guard let type = readParamType(body) else { continue }
            var min: Int?
            var max: Int?
            for key in ["min", "max"] {
                guard let bound = body[key] else { continue }
                switch type {
                case .int, .string:
                    let number = type == .string ? nonNegativeInt(bound) : bound.int(&diagnostics)
                    if key == "min" { min = number } else { max = number }
                default:
                    bound.error("\(key) applies only to int (bounds) and string (length) parameters", in: &diagnostics)
                }
            }
            if let lower = min, let upper = max, lower > upper, let node = body["max"] {
                node.error("max \(upper) is below min \(lower)", in: &diagnostics)
                continue
            }
            var description: String?
            if let node = body["description"] { description = node.string(&diagnostics) }
            var spec = ParamSpec(name: name, type: type, defaultValue: nil, min: min, max: max, description: description,
                                 location: entry.keyNode.location)
            if let node = body["default"], let value = readDefault(node, spec: spec) {
                spec.defaultValue = value
            }
            specs.append(spec)
        }
        return specs
    }

    mutating func readParamType(_ body: YAMLMapping) -> ParamType? {
        let typeHint = "type is one of \(RunbookLoader.paramTypes.joined(separator: ", "))"
        guard let typeNode = body.entry("type").map(\.value), !typeNode.isNull else {
            diagnostics.error("missing required key \"type\"", at: body.node.location, field: YAMLNode.childPath(body.node.path, key: "type"),
                              hint: typeHint)
            return nil
        }
        let valuesNode = body["values"]
        guard let text = typeNode.string(&diagnostics) else { return nil }
        switch text {
        case "int": break
        case "string": break
        case "bool": break
        case "duration": break
        case "enum":
            guard let valuesNode else {
                diagnostics.error("an enum parameter needs values:", at: typeNode.location, field: YAMLNode.childPath(body.node.path, key: "values"),
                                  hint: "e.g. { type: enum, values: [fast, safe], default: safe }")
                return nil
            }
            guard let values = valuesNode.stringList(&diagnostics, allowSingle: false) else { return nil }
            if values.isEmpty {
                valuesNode.error("an enum needs at least one value", in: &diagnostics)
                return nil
            }
            var seen = Set<String>()
            for (index, value) in values.enumerated() where !seen.insert(value).inserted {
                let item = valuesNode.list(&diagnostics)?[index] ?? valuesNode
                item.error("value \(value.debugDescription) is listed twice", in: &diagnostics)
            }
            return .enumeration(values)
        default:
            var hint = typeHint
            let aliases = ["integer": "int", "number": "int", "str": "string", "text": "string", "boolean": "bool", "enumeration": "enum"]
            if let suggestion = aliases[text.lowercased()] ?? closestMatch(text, in: RunbookLoader.paramTypes) {
                hint = "did you mean \(suggestion.debugDescription)?"
            }
            typeNode.error("unknown parameter type \(text.debugDescription)", hint: hint, in: &diagnostics)
            return nil
        }
        if let valuesNode {
            valuesNode.error("values: applies only to type enum", in: &diagnostics)
        }
        switch text {
        case "int": return .int
        case "string": return .string
        case "bool": return .bool
        default: return .duration
        }
    }

    mutating func readDefault(_ node: YAMLNode, spec: ParamSpec) -> Value? {
        var value: Value
        switch spec.type {
        case .int:
            value = node.value
        case .bool:
            guard let b = node.bool(&diagnostics) else { return nil }
            value = .bool(b)
        case .duration, .string, .enumeration:
            guard case .scalar(let text, _, _) = node.kind else {
                node.error("expected \(spec.type == .string ? "a string" : spec.type.description), got \(node.gotDescription)", in: &diagnostics)
                return nil
            }
            value = .string(text)
        }
        switch ParamValues.check(value, against: spec) {
        case .success(let checked):
            return checked
        case .failure(let problem):
            node.error("default \(node.gotDescription) does not fit \(spec.name): \(problem.message)",
                       hint: problem.hint ?? "\(spec.name) is \(ParamValues.describe(spec))", in: &diagnostics)
            return nil
        }
    }

    // MARK: Steps

    mutating func readSteps(_ node: YAMLNode) -> [Step] {
        guard let items = node.list(&diagnostics) else { return [] }
        if items.isEmpty {
            node.error("a runbook needs at least one step", hint: "add steps: with a list of steps", in: &diagnostics)
            return []
        }
        // Every id written, to tell "a later step" from "no such step".
        var allIDs: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            if case .mapping(let entries) = item.kind, let idText = entries.first(where: { $0.key == "id" })?.value.scalarText,
               allIDs[idText] == nil
            {
                allIDs[idText] = index
            }
        }
        var steps: [Step] = []
        var earlier: [String: YAMLNode] = [:]
        for (index, item) in items.enumerated() {
            var context = StepContext(index: index, earlierIDs: earlier, allIDs: allIDs)
            if let step = readStep(item, context: &context) { steps.append(step) }
            if let id = context.ownID, earlier[id] == nil, let idNode = context.idNode { earlier[id] = idNode }
        }
        return steps
    }

    /// What a step's references are checked against.
    struct StepContext {
        let index: Int
        /// Ids of the steps before this one, with where each was written.
        let earlierIDs: [String: YAMLNode]
        /// Every id in the file, with its step's index.
        let allIDs: [String: Int]
        var ownID: String?
        var idNode: YAMLNode?
    }

    mutating func readStep(_ node: YAMLNode, context: inout StepContext) -> Step? {
        let kindNames = StepRegistry.names
        guard let map = node.mapping(
            &diagnostics, what: "a step: a mapping with one kind key (\(kindNames.joined(separator: ", ")))")
        else { return nil }

        // The kind key: the one key that is not a common key.
        var kindEntries: [YAMLEntry] = []
        var unknownKeys = 0
        for entry in map.entries where !StepSchema.commonKeys.contains(entry.key) {
            if StepRegistry.schema(for: entry.key) != nil {
                kindEntries.append(entry)
                continue
            }
            unknownKeys += 1
            if let suggestion = closestMatch(entry.key, in: StepSchema.commonKeys + kindNames) {
                let isKind = kindNames.contains(suggestion)
                entry.keyNode.error(
                    isKind ? "unknown step kind \(entry.key.debugDescription)" : "unknown key \(entry.key.debugDescription) in a step",
                    hint: "did you mean \(suggestion.debugDescription)?", in: &diagnostics)
            } else {
                entry.keyNode.error(
                    "unknown step kind \(entry.key.debugDescription)",
                    hint: "step kinds: \(kindNames.joined(separator: ", ")); other step keys: \(StepSchema.commonKeys.joined(separator: ", "))",
                    in: &diagnostics)
            }
        }
        if kindEntries.isEmpty, unknownKeys == 0 {
            node.error("the step has no kind key", hint: "add one of: \(kindNames.joined(separator: ", "))", in: &diagnostics)
        }
        if kindEntries.count > 1 {
            let names = kindEntries.map(\.key)
            kindEntries[1].keyNode.error(
                "a step has exactly one kind key, this one has \(names.map(\.debugDescription).joined(separator: " and "))",
                hint: "split it into one step per kind", in: &diagnostics)
        }

        // Common keys.
        var id: String?
        if let idNode = map["id"], let text = idNode.nonEmptyString(&diagnostics) {
            if !RunbookLoader.isIdentifier(text) {
                idNode.error("invalid step id \(text.debugDescription)",
                             hint: "later steps read it as steps.ID: use letters, digits and _ (not starting with a digit)", in: &diagnostics)
            } else if let first = context.earlierIDs[text] {
                idNode.error("duplicate step id \(text.debugDescription)",
                             hint: "already used by \(first.path.split(separator: ".").first.map(String.init) ?? "an earlier step") at \(first.location); ids must be unique",
                             in: &diagnostics)
            } else {
                id = text
                context.ownID = text
                context.idNode = idNode
            }
        }
        var name: String?
        if let node = map["name"] { name = node.string(&diagnostics) }
        var when: String?
        if let node = map["when"], let text = node.nonEmptyString(&diagnostics) {
            when = text
            checkTemplateText(text, node: node, expression: true, step: context)
        }
        var timeout: Duration?
        if let node = map["timeout"] { timeout = readDuration(node) }
        var retries = 0
        if let node = map["retries"] { retries = nonNegativeInt(node) ?? 0 }
        var delay = Duration.seconds(1)
        if let node = map["delay"] { delay = readDuration(node) ?? delay }
        var runOnce = false
        if let node = map["run_once"] { runOnce = node.bool(&diagnostics) ?? false }
        var become = false
        if let node = map["become"] { become = node.bool(&diagnostics) ?? false }

        guard kindEntries.count == 1, let kindEntry = kindEntries.first, let kind = StepRegistry.kind(kindEntry.key) else { return nil }
        let schema = kind.schema
        if become, !kind.supportsBecome, let node = map["become"] {
            node.error("\(schema.name) writes its file over SFTP as the login user, so it cannot become root",
                       hint: "log in as a user that may write \(schema.name)'s dest, or render to a writable path and install it with a `command` step that has become: true",
                       in: &diagnostics)
            return nil
        }
        guard let (arguments, locations) = readArguments(kindEntry, schema: schema, step: context) else { return nil }
        return Step(
            index: context.index, id: id, name: name ?? kind.defaultName(arguments),
            kind: schema.name, arguments: .map(arguments), argumentLocations: locations, when: when, timeout: timeout,
            retries: retries, delay: delay, runOnce: runOnce, become: become, location: node.location)
    }

    mutating func nonNegativeInt(_ node: YAMLNode) -> Int? {
        guard let number = node.int(&diagnostics) else { return nil }
        guard number >= 0 else {
            node.error("expected 0 or more, got \(number)", in: &diagnostics)
            return nil
        }
        return number
    }

    mutating func readDuration(_ node: YAMLNode) -> Duration? {
        let value: Value
        if case .scalar(let text, let style, _) = node.kind, style != .plain { value = .string(text) } else { value = node.value }
        if let duration = ArgumentType.duration(value) { return duration }
        node.error("expected a duration, got \(node.gotDescription)", hint: "write a duration like 500ms, 90s, 5m or 1h (a bare number is seconds)",
                   in: &diagnostics)
        return nil
    }

    /// The kind's arguments, normalized (see `RunbookLoader`), with where each was written; nil when not a mapping or scalar form.
    mutating func readArguments(
        _ kindEntry: YAMLEntry, schema: StepKindSchema, step: StepContext
    ) -> ([String: Value], [String: SourceLocation])? {
        let kindNode = kindEntry.value
        var locations: [String: SourceLocation] = ["": kindEntry.keyNode.location]
        var written: [(key: String, node: YAMLNode)] = []
        if let scalarKey = schema.scalarKey, !kindNode.isMapping, !kindNode.isNull {
            // Scalar form: `sleep: 5s`, `command: uptime`, `assert: EXPR` (or a list of expressions).
            if kindNode.isSequence, schema.scalarForm != .expressionList {
                kindNode.error("expected a mapping of arguments or \(schema.scalarForm?.description ?? "a value"), got a list",
                               hint: "arguments of \(schema.name): \(schema.argumentNames.joined(separator: ", "))", in: &diagnostics)
                return nil
            }
            written = [(scalarKey, kindNode)]
        } else {
            var hint = "arguments of \(schema.name): \(schema.argumentNames.joined(separator: ", "))"
            if let form = schema.scalarForm { hint += "; or write \(schema.name): followed by \(form.description)" }
            guard let map = kindNode.mapping(&diagnostics, what: "a mapping of \(schema.name) arguments", hint: hint) else { return nil }
            for entry in map.entries {
                guard schema.argument(entry.key) != nil else {
                    let hint: String
                    if let suggestion = closestMatch(entry.key, in: schema.argumentNames) {
                        hint = "did you mean \(suggestion.debugDescription)?"
                    } else if StepSchema.commonKeys.contains(entry.key) {
                        hint = "\(entry.key) belongs to the step, not to \(schema.name): move it one level up (same indentation as \(schema.name):)"
                    } else {
                        hint = "arguments of \(schema.name): \(schema.argumentNames.joined(separator: ", "))"
                    }
                    entry.keyNode.error("unknown argument \(entry.key.debugDescription) for \(schema.name)", hint: hint, in: &diagnostics)
                    continue
                }
                if !entry.value.isNull { written.append((entry.key, entry.value)) }
            }
        }

        var arguments: [String: Value] = [:]
        for (key, node) in written {
            guard let spec = schema.argument(key) else { continue }
            locations[key] = node.location
            let expression = spec.type == .expressionList
            scanTemplates(in: node, expression: expression, step: step)
            if let value = readArgument(node, spec: spec) { arguments[key] = value }
        }

        // Required, exactly-one-of and conditional requirements, judged on what was written.
        let present = Set(written.map(\.key))
        func missing(_ key: String, _ summary: String, hint: String?) {
            diagnostics.error(summary, at: kindNode.location, field: YAMLNode.childPath(kindNode.path, key: key), hint: hint)
        }
        for spec in schema.arguments where spec.required && !present.contains(spec.name) {
            missing(spec.name, "missing required argument \(spec.name.debugDescription) for \(schema.name)",
                    hint: "\(spec.name): \(spec.description) (\(spec.type.description))")
        }
        for group in schema.exactlyOneOf {
            let given = group.filter(present.contains)
            if given.isEmpty {
                missing(group[0], "\(schema.name) needs one of \(group.joined(separator: ", "))",
                        hint: group.compactMap { schema.argument($0) }.map { "\($0.name): \($0.description)" }.joined(separator: "; "))
            } else if given.count > 1 {
                missing(given[1], "\(schema.name) takes only one of \(given.joined(separator: ", "))", hint: "remove all but one of them")
            }
        }
        for requirement in schema.requirements {
            let actual = arguments[requirement.key]?.stringValue ?? schema.argument(requirement.key)?.defaultValue?.stringValue
            guard actual == requirement.equals else { continue }
            for key in requirement.requires where !present.contains(key) {
                missing(key, "\(requirement.key): \(requirement.equals) needs \(key.debugDescription)",
                        hint: schema.argument(key).map { "\(key): \($0.description)" })
            }
        }

        if StepRegistry.kind(schema.name)?.fileSource != FileSource.none, let src = arguments["src"]?.stringValue,
           let srcNode = written.first(where: { $0.key == "src" })?.node
        {
            checkSource(src, node: srcNode)
        }
        return (arguments, locations)
    }

    /// One argument checked against its type and normalized; nil (with a diagnostic) when it does not fit.
    mutating func readArgument(_ node: YAMLNode, spec: ArgumentSpec) -> Value? {
        if case .scalar(let text, _, _) = node.kind, !node.isNull, text.contains("{{") {
            switch spec.type {
            case .stringList, .stringOrList, .expressionList: return .list([.string(text)])
            default: return .string(text)
            }
        }
        switch spec.type {
        case .string, .command:
            guard case .scalar(let text, _, _) = node.kind else {
                node.error("expected \(spec.type.description), got \(node.gotDescription)", in: &diagnostics)
                return nil
            }
            return .string(text)
        case .int:
            return node.int(&diagnostics).map(Value.int)
        case .bool:
            return node.bool(&diagnostics).map(Value.bool)
        case .duration:
            if case .scalar(let text, _, _) = node.kind, ArgumentType.duration(node.value) != nil || DurationText.parse(text) != nil {
                return .string(text)
            }
            node.error("expected a duration, got \(node.gotDescription)", hint: "write a duration like 500ms, 90s, 5m or 1h (a bare number is seconds)",
                       in: &diagnostics)
            return nil
        case .stringList:
            return node.stringList(&diagnostics, allowSingle: false).map { .list($0.map(Value.string)) }
        case .stringOrList, .expressionList:
            return node.stringList(&diagnostics, allowSingle: true).map { .list($0.map(Value.string)) }
        case .map:
            guard node.isMapping else {
                node.error("expected a mapping, got \(node.gotDescription)", in: &diagnostics)
                return nil
            }
            return node.value
        case .enumeration(let choices):
            if let text = node.scalarText, choices.contains(text) { return .string(text) }
            var hint: String?
            if let text = node.scalarText, let suggestion = closestMatch(text, in: choices) { hint = "did you mean \(suggestion.debugDescription)?" }
            node.error("expected one of \(choices.joined(separator: ", ")), got \(node.gotDescription)", hint: hint, in: &diagnostics)
            return nil
        case .fileMode:
            if var text = node.scalarText {
                if text.hasPrefix("0o") { text = String(text.dropFirst(2)) }
                if (3...4).contains(text.count), text.allSatisfy({ ("0"..."7").contains($0) }) { return .string(text) }
            }
            node.error("expected a file mode in octal, got \(node.gotDescription)", hint: "write it quoted, e.g. mode: \"0644\"", in: &diagnostics)
            return nil
        }
    }

    /// A `template`/`copy` source: relative, inside `templates/`, and present there.
    mutating func checkSource(_ src: String, node: YAMLNode) {
        let templates = loader.templatesDirectory
        if src.hasPrefix("/") || src.hasPrefix("~") {
            node.error("src must be a path under templates/, got the absolute path \(src.debugDescription)",
                       hint: "put the file in templates/ and give its path relative to it", in: &diagnostics)
            return
        }
        if src.split(separator: "/").contains("..") {
            node.error("src \(src.debugDescription) leads outside templates/",
                       hint: "templates and copied files must live under templates/; remove the ..", in: &diagnostics)
            return
        }
        guard !src.contains("{{") else { return }
        let path = templates + "/" + src
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            var hint = "create templates/\(src), or fix the path (relative to templates/)"
            if let suggestion = closestMatch(src, in: templateFiles()) { hint = "did you mean \(suggestion.debugDescription)?" }
            node.error("\(isDirectory.boolValue ? "is a directory" : "not found"): templates/\(src)", hint: hint, in: &diagnostics)
            return
        }
        let realTemplates = URL(fileURLWithPath: templates).resolvingSymlinksInPath().path
        let realFile = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        if !realFile.hasPrefix(realTemplates + "/") {
            node.error("templates/\(src) is a link to \(realFile), outside templates/",
                       hint: "copy the file into templates/ instead of linking to it", in: &diagnostics)
        }
    }

    /// Files under `templates/`, relative to it (for did-you-mean hints).
    func templateFiles() -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: loader.templatesDirectory) else { return [] }
        var files: [String] = []
        while let item = enumerator.nextObject() as? String, files.count < 1000 { files.append(item) }
        return files
    }

    // MARK: Template references

    /// Checks every scalar under `node`: `{{`/`{%` closed, `params.X` declared, `steps.X` an earlier step.
    /// With `expression`, the whole text is an expression (`when`, `assert`); else only its `{{ }}`/`{% %}` blocks are.
    mutating func scanTemplates(in node: YAMLNode, expression: Bool, step: StepContext?) {
        switch node.kind {
        case .scalar(let text, _, _):
            checkTemplateText(text, node: node, expression: expression, step: step)
        case .sequence(let items):
            for item in items { scanTemplates(in: item, expression: expression, step: step) }
        case .mapping(let entries):
            for entry in entries { scanTemplates(in: entry.value, expression: expression, step: step) }
        }
    }

    mutating func checkTemplateText(_ text: String, node: YAMLNode, expression: Bool, step: StepContext? = nil) {
        var code: [Substring] = []
        if expression {
            code = [Substring(text)]
        } else {
            let (blocks, unclosed) = Self.templateBlocks(text)
            if let unclosed {
                node.error("unclosed \(unclosed) in \(node.gotDescription)",
                           hint: "close it with \(unclosed == "{{" ? "}}" : "%}"), or quote the whole value", in: &diagnostics)
            }
            code = blocks
        }
        for block in code {
            for name in Self.references(to: "params", in: block) where !paramNames.contains(name) {
                var hint = paramNames.isEmpty ? "this runbook declares no params" : "declared params: \(paramNames.joined(separator: ", "))"
                if let suggestion = closestMatch(name, in: paramNames) { hint = "did you mean \(suggestion.debugDescription)?" }
                node.error("params.\(name) is not a declared parameter", hint: hint, in: &diagnostics)
            }
            guard let step else { continue }
            for name in Self.references(to: "steps", in: block) where step.earlierIDs[name] == nil {
                let summary: String
                var hint: String
                if name == step.ownID {
                    summary = "steps.\(name) refers to this step itself"
                    hint = "a step can only read the results of earlier steps"
                } else if let later = step.allIDs[name], later > step.index {
                    summary = "steps.\(name) refers to a later step (steps[\(later)])"
                    hint = "a step can only read the results of earlier steps: move steps[\(later)] before this one"
                } else {
                    summary = "steps.\(name) refers to no step"
                    hint = step.earlierIDs.isEmpty
                        ? "no earlier step has an id: give the step you mean id: \(name)"
                        : "ids of earlier steps: \(step.earlierIDs.keys.sorted().joined(separator: ", "))"
                    if let suggestion = closestMatch(name, in: Array(step.earlierIDs.keys).sorted()) { hint = "did you mean \(suggestion.debugDescription)?" }
                }
                node.error(summary, hint: hint, in: &diagnostics)
            }
        }
    }

    /// The code inside `{{ }}` and `{% %}` blocks of `text`, and the opener of an unclosed block if any.
    static func templateBlocks(_ text: String) -> (blocks: [Substring], unclosed: String?) {
        var blocks: [Substring] = []
        var rest = text[...]
        while let open = rest.firstRange(of: "{"), open.upperBound < rest.endIndex {
            let next = rest[open.upperBound]
            let closer: String
            switch next {
            case "{": closer = "}}"
            case "%": closer = "%}"
            case "#": closer = "#}"
            default:
                rest = rest[open.upperBound...]
                continue
            }
            let bodyStart = rest.index(after: open.upperBound)
            guard let close = rest[bodyStart...].firstRange(of: closer) else {
                return (blocks, next == "#" ? "{#" : "{" + String(next))
            }
            if next != "#" { blocks.append(rest[bodyStart..<close.lowerBound]) }
            rest = rest[close.upperBound...]
        }
        return (blocks, nil)
    }

    /// The names `X` in `PREFIX.X` within `code`, where PREFIX is not part of a longer name (`mysteps.x`, `a.steps.x` do not count).
    static func references(to prefix: String, in code: Substring) -> [String] {
        var names: [String] = []
        var rest = code
        let marker = prefix + "."
        while let range = rest.firstRange(of: marker) {
            defer { rest = rest[range.upperBound...] }
            if range.lowerBound > code.startIndex {
                let before = code[code.index(before: range.lowerBound)]
                if before == "_" || before == "." || before.isLetter || before.isNumber { continue }
            }
            let name = rest[range.upperBound...].prefix { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            if let first = name.first, !first.isNumber { names.append(String(name)) }
        }
        return names
    }
}

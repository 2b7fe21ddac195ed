import Foundation
import RunbookCore
import RunbookSteps

// MARK: - Validation

/// The state of one runbook's validation: diagnostics and what was read so far.
struct RunbookValidator {
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

        var runbook = Runbook(name: name, description: description, hosts: hosts, params: params, vars: vars, serial: serial,
                              maxFail: maxFail, rollback: rollback, schedule: schedule, steps: steps, file: file)
        if let node = top["notify"] { runbook.notify = NotifyReader.read(node, &diagnostics) }
        return runbook
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
}

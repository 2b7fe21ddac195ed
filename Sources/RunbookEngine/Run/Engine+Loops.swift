import Foundation
import RunbookCore
import RunbookSteps

/// One unit of a host's work: a step, or one iteration of a step's `loop:`, on the host itself
/// or on the host it is delegated to.
struct StepInstance: Sendable {
    /// The step as written.
    let step: Step
    /// 1-based iteration of its loop (nil without a loop).
    let iteration: Int?
    /// The items of the loop (empty without one); the context of iteration i reads items[i-1].
    let items: [Value]
    /// The inventory host it runs on, when not the current host (`delegate_to:`).
    let delegate: RunbookCore.Host?

    /// The context the step's arguments render in: the host's, plus `item` and `loop`.
    func context(_ base: TemplateContext) -> TemplateContext {
        guard let iteration else { return base }
        return base.iterating(items, at: iteration - 1)
    }
}

extension Engine {
    /// `name`, `address`, `port`, `user`, `groups` and the merged inventory vars of a host, as
    /// templates see it under `host` (and under `hostvars.NAME` for every host).
    static func hostValues(_ host: RunbookCore.Host) -> [String: Value] {
        var values = host.vars
        values["name"] = .string(host.name)
        values["address"] = .string(host.address)
        values["port"] = .int(host.port)
        values["user"] = .string(host.user)
        values["groups"] = .list(host.groups.map(Value.string))
        return values
    }

    /// `groups.NAME` (host names in inventory order; `all` is every host) and `hostvars.NAME`.
    static func inventoryValues(_ inventory: Inventory) -> (groups: [String: Value], hostvars: [String: Value]) {
        var groups: [String: Value] = [:]
        for (name, members) in inventory.groups { groups[name] = .list(members.map(Value.string)) }
        groups["all"] = .list(inventory.hosts.map { .string($0.name) })
        var hostvars: [String: Value] = [:]
        for host in inventory.hosts { hostvars[host.name] = .map(hostValues(host)) }
        return (groups, hostvars)
    }

    /// `{{ range(A, B) }}` (A and B each a whole number, a name, or a name plus or minus a whole
    /// number): the operands, else nil.
    static func rangeOperands(_ expression: String) -> (String, String)? {
        var inner = expression.trimmingCharacters(in: .whitespaces)
        guard inner.hasPrefix("{{"), inner.hasSuffix("}}") else { return nil }
        inner = inner.dropFirst(2).dropLast(2).trimmingCharacters(in: .whitespaces)
        guard inner.hasPrefix("range("), inner.hasSuffix(")") else { return nil }
        let arguments = inner.dropFirst("range(".count).dropLast().split(separator: ",", omittingEmptySubsequences: false)
        guard arguments.count == 2 else { return nil }
        return (arguments[0].trimmingCharacters(in: .whitespaces), arguments[1].trimmingCharacters(in: .whitespaces))
    }

    /// An operand of `range(…)` split into a name (or number) and what is added to it.
    static func rangeOperand(_ text: String) -> (base: String, offset: Int)? {
        for sign in ["+", "-"] {
            let parts = text.split(separator: Character(sign), maxSplits: 1)
            if parts.count == 2, let n = Int(parts[1].trimmingCharacters(in: .whitespaces)) {
                return (parts[0].trimmingCharacters(in: .whitespaces), sign == "+" ? n : -n)
            }
        }
        return text.isEmpty ? nil : (text, 0)
    }

    /// What the static template check reads of a loop expression: `range(A, B)`'s names.
    static func loopExpressionForCheck(_ expression: String) -> String {
        guard let (low, high) = rangeOperands(expression) else { return expression }
        return [low, high].compactMap { rangeOperand($0) }.filter { Int($0.base) == nil }.map { "{{ \($0.base) }}" }.joined()
    }

    /// The items of `step`'s loop for one host's context (at most 10000).
    func loopItems(_ step: Step, context: TemplateContext, prepared: PreparedRun) throws(DiagnosticError) -> [Value] {
        let location = step.loopLocation ?? step.location
        let field = "steps[\(step.index)].loop"
        func problem(_ summary: String, hint: String? = nil) -> DiagnosticError {
            DiagnosticError(.error(summary, at: location, field: field, hint: hint))
        }
        switch step.loop {
        case nil:
            return []
        case .items(let items):
            var out: [Value] = []
            var secretsUsed: Set<String> = []
            for item in items {
                out.append(try renderValue(item, at: location, context: context, templates: prepared.templates, secretsUsed: &secretsUsed))
            }
            return out
        case .template(let text):
            let rendered = try prepared.templates.render(string: text, at: location, context: context, secrets: .values).text
            let parsed: YAMLNode?
            do { parsed = try YAMLDocument.parse(text: rendered, file: location.file).root } catch {
                throw problem("loop: the template renders \(rendered.prefix(200).debugDescription), which is not a YAML list",
                              hint: "render a flow list: [a, b, c] (a trailing comma is fine)")
            }
            guard case .list(let items)? = parsed?.value else {
                throw problem("loop: the template renders \(rendered.prefix(200).debugDescription), which is not a list")
            }
            guard items.count <= 10_000 else { throw problem("loop: the template renders \(items.count) items (10000 at most)") }
            return items
        case .expression(let text):
            if let (lowText, highText) = Self.rangeOperands(text) {
                func number(_ operand: String) throws(DiagnosticError) -> Int {
                    guard let (base, offset) = Self.rangeOperand(operand) else { throw problem("range(…) needs two operands") }
                    if let literal = Int(base) { return literal + offset }
                    let (value, _) = try prepared.templates.value(of: "{{ \(base) }}", at: location, context: context)
                    guard let n = value.intValue ?? value.stringValue.flatMap({ Int($0) }) else {
                        throw problem("range(…): \(base) is \(value.plainText.isEmpty ? "empty" : value.plainText.debugDescription), not a whole number")
                    }
                    return n + offset
                }
                let (low, high) = (try number(lowText), try number(highText))
                guard high - low <= 10_000 else { throw problem("loop: range(\(low), \(high)) has \(high - low) items (10000 at most)") }
                return high > low ? (low..<high).map { .int($0) } : []
            }
            let (value, _) = try prepared.templates.value(of: text, at: location, context: context)
            switch value {
            case .list(let items):
                guard items.count <= 10_000 else { throw problem("loop: \(text) has \(items.count) items (10000 at most)") }
                return items
            case .null:
                throw problem("loop: \(text) is empty (null), not a list",
                              hint: "give a default: {{ … | default:'[]' }} does not make a list; check the name")
            default:
                throw problem("loop: \(text) is \(value.plainText.debugDescription), not a list",
                              hint: "loop over a list: groups.NAME, a list var, or range(A, B)")
            }
        }
    }

    /// The inventory host a step runs on for `host` (`delegate_to:`), or nil when it runs on
    /// `host` itself. Not in the inventory: an error naming the line.
    func delegateHost(_ step: Step, for host: RunbookCore.Host, context: TemplateContext,
                      prepared: PreparedRun) throws(DiagnosticError) -> RunbookCore.Host? {
        guard let text = step.delegateTo else { return nil }
        let location = step.delegateLocation ?? step.location
        let name = try prepared.templates.render(string: text, at: location, context: context, secrets: .values).text
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard let target = prepared.inventory.host(named: name) else {
            let known = prepared.inventory.hosts.map(\.name)
            throw DiagnosticError(.error("delegate_to: \(name.debugDescription) is not a host of the inventory",
                                         at: location, field: "steps[\(step.index)].delegate_to",
                                         hint: "inventory hosts: \(known.joined(separator: ", "))"))
        }
        return target.name == host.name ? nil : target
    }

    /// The runbook's steps in the units they expand in: a step alone, or the steps of a block.
    static func stepGroups(_ steps: [Step]) -> [[Step]] {
        var groups: [[Step]] = []
        for step in steps {
            if let block = step.block, let last = groups.last?.last, last.block?.first == block.first {
                groups[groups.count - 1].append(step)
            } else {
                groups.append([step])
            }
        }
        return groups
    }

    /// The instances of a group for one host: a looped block runs all its steps per item, in
    /// order (item 1: steps a, b, c; item 2: a, b, c); otherwise each step's own.
    func instances(of group: [Step], host: RunbookCore.Host, context: TemplateContext, prepared: PreparedRun) throws(DiagnosticError) -> [StepInstance] {
        guard let first = group.first, first.block?.looped == true else {
            var out: [StepInstance] = []
            for step in group { out += try instances(of: step, host: host, context: context, prepared: prepared) }
            return out
        }
        let items = try loopItems(first, context: context, prepared: prepared)
        var out: [StepInstance] = []
        for index in items.indices {
            let inner = context.iterating(items, at: index)
            for step in group {
                out.append(StepInstance(step: step, iteration: index + 1, items: items,
                                        delegate: try delegateHost(step, for: host, context: inner, prepared: prepared)))
            }
        }
        return out
    }

    /// The step instances of `step` for one host: one per loop item (or one), each with its
    /// delegate.
    func instances(of step: Step, host: RunbookCore.Host, context: TemplateContext, prepared: PreparedRun) throws(DiagnosticError) -> [StepInstance] {
        guard step.loop != nil else {
            return [StepInstance(step: step, iteration: nil, items: [],
                                 delegate: try delegateHost(step, for: host, context: context, prepared: prepared))]
        }
        let items = try loopItems(step, context: context, prepared: prepared)
        var out: [StepInstance] = []
        for index in items.indices {
            let inner = context.iterating(items, at: index)
            out.append(StepInstance(step: step, iteration: index + 1, items: items,
                                    delegate: try delegateHost(step, for: host, context: inner, prepared: prepared)))
        }
        return out
    }

    /// Every host the run's steps are delegated to that is not one of the run's hosts: found
    /// before any host is contacted, so that each is connected and locked with the others
    /// before anything changes. A `delegate_to:` that reads facts or step results (unknown
    /// until the hosts are read) is an error.
    func delegateHosts(of prepared: PreparedRun) throws(DiagnosticError) -> [RunbookCore.Host] {
        let delegated = prepared.runbook.steps.filter { $0.delegateTo != nil }
        guard !delegated.isEmpty else { return [] }
        var found: [String: RunbookCore.Host] = [:]
        let runHosts = Set(prepared.hosts.map(\.name))
        // Each host's context (its vars rendered) once, not once per delegated step.
        var hostContexts: [(RunbookCore.Host, TemplateContext)] = []
        for host in prepared.hosts { hostContexts.append((host, try self.context(for: host, prepared: prepared, steps: [:]))) }
        for step in delegated {
            let text = step.delegateTo!
            let readsLate = ["facts", "steps"].contains { !RunbookValidator.references(to: $0, in: text[...]).isEmpty }
            let loopReadsLate: Bool = {
                switch step.loop {
                case .expression(let expression)?, .template(let expression)?:
                    return ["facts", "steps"].contains { !RunbookValidator.references(to: $0, in: expression[...]).isEmpty }
                default: return false
                }
            }()
            let readsItem = text.contains("item") || text.contains("loop.")
            if readsLate || (readsItem && loopReadsLate) {
                throw DiagnosticError(.error("delegate_to: \(text) must be known before any host is contacted: it may read params, vars, host, groups, hostvars and the loop's item, not facts or step results",
                                             at: step.delegateLocation ?? step.location, field: "steps[\(step.index)].delegate_to",
                                             hint: "every host a run touches is locked before the first change; name it from the inventory"))
            }
            for (host, context) in hostContexts {
                var contexts = [context]
                if readsItem, step.loop != nil {
                    let items = try loopItems(step, context: context, prepared: prepared)
                    contexts = items.indices.map { context.iterating(items, at: $0) }
                }
                for inner in contexts {
                    if let target = try delegateHost(step, for: host, context: inner, prepared: prepared), !runHosts.contains(target.name) {
                        found[target.name] = target
                    }
                }
            }
        }
        return prepared.inventory.hosts.filter { found[$0.name] != nil }
    }
}

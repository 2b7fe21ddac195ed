import Foundation
import RunbookCore
import RunbookSteps

/// Steps and the template references in them.
extension RunbookValidator {
    // MARK: Steps

    mutating func readSteps(_ node: YAMLNode) -> [Step] {
        guard let items = node.list(&diagnostics) else { return [] }
        if items.isEmpty {
            node.error("a runbook needs at least one step", hint: "add steps: with a list of steps", in: &diagnostics)
            return []
        }
        // Blocks are flattened: their steps take their place in the list, numbered with the rest.
        var flat: [(node: YAMLNode, block: BlockSource?)] = []
        for item in items {
            if case .mapping(let entries) = item.kind, entries.contains(where: { $0.key == "block" }) {
                readBlock(item, entries: entries, first: flat.count, into: &flat)
            } else {
                flat.append((item, nil))
            }
        }
        // Every id written, to tell "a later step" from "no such step".
        var allIDs: [String: Int] = [:]
        for (index, item) in flat.map(\.node).enumerated() {
            if case .mapping(let entries) = item.kind, let idText = entries.first(where: { $0.key == "id" })?.value.scalarText,
               allIDs[idText] == nil
            {
                allIDs[idText] = index
            }
        }
        var steps: [Step] = []
        var earlier: [String: YAMLNode] = [:]
        for (index, entry) in flat.enumerated() {
            var context = StepContext(index: index, earlierIDs: earlier, allIDs: allIDs)
            if var step = readStep(entry.node, context: &context) {
                if let block = entry.block { apply(block, to: &step) }
                steps.append(step)
            }
            if let id = context.ownID, earlier[id] == nil, let idNode = context.idNode { earlier[id] = idNode }
        }
        return steps
    }

    /// A `block:` as written: its own keys, applied to each of its steps.
    struct BlockSource {
        var info: StepBlock
        var loop: StepLoop?
        var loopNode: YAMLNode?
        var delegateTo: String?
        var delegateNode: YAMLNode?
    }

    static let blockKeys = ["block", "name", "loop", "when", "delegate_to"]

    /// Reads a `block:` item into its steps' nodes, each with the block's keys.
    mutating func readBlock(_ node: YAMLNode, entries: [YAMLEntry], first: Int, into flat: inout [(node: YAMLNode, block: BlockSource?)]) {
        for entry in entries where !Self.blockKeys.contains(entry.key) {
            entry.keyNode.error("unknown key \(entry.key.debugDescription) in a block",
                                hint: "a block takes \(Self.blockKeys.joined(separator: ", ")); put step keys on its steps", in: &diagnostics)
        }
        func value(_ key: String) -> YAMLNode? { entries.first { $0.key == key }?.value }
        let name = value("name")?.scalarText ?? "block \(first + 1)"
        var when: String?
        let context = StepContext(index: first, earlierIDs: [:], allIDs: [:])
        if let whenNode = value("when"), let text = whenNode.nonEmptyString(&diagnostics) {
            when = text
            checkTemplateText(text, node: whenNode, expression: true)
        }
        var source = BlockSource(info: StepBlock(first: first, name: name, when: when))
        if let loopNode = value("loop") {
            source.loop = readLoop(loopNode, context: context)
            source.loopNode = loopNode
            source.info.looped = source.loop != nil
        }
        if let delegateNode = value("delegate_to"), let text = delegateNode.nonEmptyString(&diagnostics) {
            checkTemplateText(text, node: delegateNode, expression: false)
            source.delegateTo = text
            source.delegateNode = delegateNode
        }
        guard let stepsNode = value("block"), let inner = stepsNode.list(&diagnostics) else { return }
        if inner.isEmpty { stepsNode.error("a block needs at least one step", in: &diagnostics) }
        for item in inner {
            if case .mapping(let innerEntries) = item.kind, innerEntries.contains(where: { $0.key == "block" }) {
                item.error("a block inside a block is not supported", hint: "put its steps in the outer block", in: &diagnostics)
                continue
            }
            if source.loop != nil, case .mapping(let innerEntries) = item.kind, let loopEntry = innerEntries.first(where: { $0.key == "loop" }) {
                loopEntry.keyNode.error("a step of a looped block cannot loop itself", hint: "the block's loop runs each of its steps per item", in: &diagnostics)
            }
            flat.append((item, source))
        }
    }

    /// Gives a step of a block the block's loop, delegation and condition.
    func apply(_ block: BlockSource, to step: inout Step) {
        step.block = block.info
        if let loop = block.loop {
            step.loop = loop
            step.loopLocation = block.loopNode?.location
        }
        if step.delegateTo == nil, let delegate = block.delegateTo {
            step.delegateTo = delegate
            step.delegateLocation = block.delegateNode?.location
        }
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
        if let node = map["name"] {
            name = node.string(&diagnostics)
            // A name is shown on one line of the plan and the run; a control character in it
            // (a newline, an escape) could forge lines of the output.
            if let text = name, text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) }) {
                node.error("a step name must be one line of text, without control characters", in: &diagnostics)
            }
        }
        var when: String?
        if let node = map["when"], let text = node.nonEmptyString(&diagnostics) {
            when = text
            checkTemplateText(text, node: node, expression: true, step: context)
        }
        var timeout: Duration?
        if let node = map["timeout"] {
            timeout = readDuration(node)
            if timeout == .zero {
                node.error("timeout: 0s would end the step before it starts", hint: "give the longest the step may take, e.g. 10m", in: &diagnostics)
            }
        }
        var retries = 0
        if let node = map["retries"] { retries = nonNegativeInt(node) ?? 0 }
        var delay = Duration.seconds(1)
        if let node = map["delay"] { delay = readDuration(node) ?? delay }
        var runOnce = false
        if let node = map["run_once"] { runOnce = node.bool(&diagnostics) ?? false }
        var become = false
        if let node = map["become"] { become = node.bool(&diagnostics) ?? false }
        var loop: StepLoop?
        if let node = map["loop"] { loop = readLoop(node, context: context) }
        var delegateTo: String?
        if let node = map["delegate_to"], let text = node.nonEmptyString(&diagnostics) {
            checkTemplateText(text, node: node, expression: false, step: context)
            delegateTo = text
        }

        guard kindEntries.count == 1, let kindEntry = kindEntries.first, let kind = StepRegistry.kind(kindEntry.key) else { return nil }
        let schema = kind.schema
        if become, !kind.supportsBecome, let node = map["become"] {
            node.error("\(schema.name) reads or writes its file over SFTP as the login user, so it cannot become root",
                       hint: "log in as a user with access to the file, or move it through a path the login user can use, with a `command` step that has become: true",
                       in: &diagnostics)
            return nil
        }
        guard let (arguments, locations) = readArguments(kindEntry, schema: schema, step: context) else { return nil }
        return Step(
            index: context.index, id: id, name: name ?? kind.defaultName(arguments),
            kind: schema.name, arguments: .map(arguments), argumentLocations: locations, when: when, timeout: timeout,
            retries: retries, delay: delay, runOnce: runOnce, become: become, location: node.location,
            loop: loop, delegateTo: delegateTo, loopLocation: map["loop"]?.location, delegateLocation: map["delegate_to"]?.location)
    }


    /// `loop:` of a step or a block: a list, or one `{{ }}` expression.
    mutating func readLoop(_ node: YAMLNode, context: StepContext) -> StepLoop? {
        var loop: StepLoop?
        if case .sequence(let items) = node.kind {
            if items.count > 10_000 {
                node.error("loop: \(items.count) items is more than a runbook needs (10000 at most)", in: &diagnostics)
            }
            for item in items {
                if let text = item.scalarText, text.contains("{") { checkTemplateText(text, node: item, expression: false, step: context) }
            }
            loop = .items(items.map(\.value))
        } else if let text = node.nonEmptyString(&diagnostics) {
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("{{"), trimmed.hasSuffix("}}"), Self.templateBlocks(trimmed).blocks.count == 1 {
                if let read = Self.references(to: "steps", in: trimmed[...]).first {
                    node.error("loop: reads steps.\(read), a result known only while applying; the plan must know every iteration",
                               hint: "loop over params, vars, groups, hostvars or gathered facts", in: &diagnostics)
                }
                checkTemplateText(text, node: node, expression: false, step: context)
                loop = .expression(trimmed)
            } else if trimmed.hasPrefix("["), trimmed.hasSuffix("]"), trimmed.contains("{%") {
                if let read = Self.references(to: "steps", in: trimmed[...]).first {
                    node.error("loop: reads steps.\(read), a result known only while applying; the plan must know every iteration",
                               hint: "loop over params, vars, groups, hostvars or gathered facts", in: &diagnostics)
                }
                checkTemplateText(text, node: node, expression: false, step: context)
                loop = .template(trimmed)
            } else {
                node.error("loop: takes a list or one {{ }} expression that yields a list, not \(node.gotDescription)",
                           hint: "loop: [a, b], loop: \"{{ groups.web }}\", loop: \"{{ range(1, params.replicas + 1) }}\", or a flow list built with {% for %}: \"[{% for h in groups.web %}{{ h }}, {% endfor %}]\"",
                           in: &diagnostics)
            }
        }
        return loop
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
        node.error("expected a duration of at most 30d, got \(node.gotDescription)",
                   hint: "write a duration like 500ms, 90s, 5m or 1h (a bare number is seconds)", in: &diagnostics)
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
        case .any:
            return node.value
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

import Crypto
import Foundation
import Logging
import Synchronization
import RunbookCore
import RunbookSteps

/// What to run: a runbook, its `-p` values, and an optional host limit.
public struct RunRequest: Sendable, Equatable {
    /// The runbook's name.
    public var runbook: String
    /// `-p k=v` values as typed.
    public var params: [String: String]
    /// `-l LIMIT`, narrowing the runbook's `hosts:`.
    public var limit: String?

    /// Creates a request.
    public init(runbook: String, params: [String: String] = [:], limit: String? = nil) {
        self.runbook = runbook
        self.params = params
        self.limit = limit
    }
}

/// Where the project lives and how wide to run.
public struct EngineSettings: Sendable {
    /// The project root (runbooks/, templates/).
    public var root: String
    /// The state directory (journal, plans, lock).
    public var stateDir: String
    /// The inventory file.
    public var inventoryPath: String
    /// Hosts at once.
    public var forks: Int
    /// Logger for connection warnings and debugging.
    public var logger: Logger
    /// Opens hosts other than over SSH (tests: `ScriptedTransport`); nil: the inventory decides.
    public var opener: HostOpener? = nil

    /// Creates settings.
    public init(root: String, stateDir: String, inventoryPath: String, forks: Int, logger: Logger) {
        self.root = root
        self.stateDir = stateDir
        self.inventoryPath = inventoryPath
        self.forks = forks
        self.logger = logger
    }
}

/// A failure of the engine, with the exit code it means (SPEC §2).
public struct EngineError: Error, Sendable, CustomStringConvertible {
    /// 1 runtime, 2 invalid input, 3 refused, 4 rollback incomplete.
    public let exitCode: Int32
    /// For the operator.
    public let message: String

    /// Creates an error.
    public init(exitCode: Int32, _ message: String) {
        self.exitCode = exitCode
        self.message = message
    }

    public var description: String { message }
}

/// Everything loaded and checked before any host is contacted.
struct PreparedRun: Sendable {
    let runbook: Runbook
    let params: [String: Value]
    let inventory: Inventory
    let hosts: [RunbookCore.Host]
    let secrets: SecretStore
    let templates: TemplateEngine
    let digests: [String: String]
    /// `groups.NAME` and `hostvars.NAME` for templates.
    var groups: [String: Value] = [:]
    var hostvars: [String: Value] = [:]
    /// Hosts the steps are delegated to besides `hosts` (connected and locked with them).
    var delegates: [RunbookCore.Host] = []

    /// The run's hosts and the hosts its steps are delegated to: every host it may touch.
    var touchedHosts: [RunbookCore.Host] { hosts + delegates }

    /// The hosts of each `serial:` batch, in order.
    var batches: [[RunbookCore.Host]] {
        let size = runbook.serial.batchSize(for: hosts.count)
        return stride(from: 0, to: hosts.count, by: size).map { Array(hosts[$0..<min($0 + size, hosts.count)]) }
    }

    /// The first host of each batch: where a `run_once` step runs.
    var batchLeaders: Set<String> { Set(batches.compactMap(\.first?.name)) }

    /// The leader of `host`'s batch.
    func batchLeader(of host: String) -> String? { batches.first { $0.contains { $0.name == host } }?.first?.name }
}

/// Plans, applies and rolls back runbooks (SPEC §6). The CLI hands it a request and prints
/// its events; the engine owns every decision.
public struct Engine: Sendable {
    /// Paths and limits.
    public let settings: EngineSettings
    /// Where progress goes.
    public let events: any EventSink

    /// Creates an engine.
    public init(settings: EngineSettings, events: any EventSink) {
        self.settings = settings
        self.events = events
    }

    var journalPath: String { settings.stateDir + "/journal.sqlite" }
    var templatesDirectory: String { settings.root + "/templates" }

    // MARK: Preparation

    /// Loads and checks the runbook, params, inventory and secrets: invalid input throws
    /// `DiagnosticError` before any host is contacted.
    func prepare(_ request: RunRequest) throws(DiagnosticError) -> PreparedRun {
        let runbook = try RunbookLoader(root: settings.root).load(name: request.runbook)
        let params = try ParamValues.resolve(specs: runbook.params, overrides: request.params, file: runbook.file)
        guard FileManager.default.fileExists(atPath: settings.inventoryPath) else {
            throw DiagnosticError(.error("inventory file not found: \(settings.inventoryPath)",
                                         hint: "create inventory/hosts.yml, or pass -i FILE or set RUNBOOK_INVENTORY"))
        }
        let inventory = try InventoryLoader.forCurrentUser().load(path: settings.inventoryPath)
        var hosts = try HostPattern(runbook.hosts).select(from: inventory)
        if let limit = request.limit {
            let limited = Set(try HostPattern(limit).select(from: inventory).map(\.name))
            hosts = hosts.filter { limited.contains($0.name) }
            if hosts.isEmpty {
                throw DiagnosticError(.error("-l \(limit) leaves no host of the runbook's hosts: \(runbook.hosts)"))
            }
        }
        // A run on no host would "succeed" having done nothing.
        if hosts.isEmpty {
            throw DiagnosticError(.error("hosts: \(runbook.hosts) matches no host of the inventory \(settings.inventoryPath)",
                                         at: SourceLocation(file: runbook.file, line: 1, column: 1), field: "hosts"))
        }
        let secrets = try SecretStore(file: settings.stateDir + "/secrets.env")
        let templates = TemplateEngine(templatesDirectory: templatesDirectory)
        try Self.checkTemplates(runbook, templates: templates)
        let runbookBytes = FileManager.default.contents(atPath: runbook.file).map(Array.init)
        var digests = [
            "runbook": runbookBytes.map(sha256Hex) ?? "absent",
            "inventory": Self.fileDigest(settings.inventoryPath),
            "params": sha256Hex(Self.canonicalJSON(params)),
        ]
        // One digest per template file, so that a stale plan can name the file that changed.
        let templateFiles = Self.directoryFiles(templatesDirectory)
        for (name, bytes) in templateFiles { digests["template:" + name] = sha256Hex(bytes) }
        // The secrets the runbook and its templates use, keyed (never a bare hash a saved plan
        // could be checked against): rotating one makes a saved plan stale. Read from the
        // bytes just digested, not from the files again.
        let used = Self.secretNames(in: [runbookBytes ?? []] + Array(templateFiles.values))
        if !used.isEmpty {
            digests["secrets"] = Self.secretsFingerprint(used.map { ($0, secrets.lookup($0) ?? "") }, stateDir: settings.stateDir)
        }
        var prepared = PreparedRun(runbook: runbook, params: params, inventory: inventory, hosts: hosts, secrets: secrets,
                                   templates: templates, digests: digests)
        (prepared.groups, prepared.hostvars) = Self.inventoryValues(inventory)
        prepared.delegates = try delegateHosts(of: prepared)
        return prepared
    }

    /// Every template the runbook uses, checked without a host: syntax, and names that can
    /// never be defined (params and vars it does not declare, steps without that id).
    public static func checkTemplates(_ runbook: Runbook, templates: TemplateEngine) throws(DiagnosticError) {
        var known = TemplateEngine.defaultKnownNames.subtracting(TemplateEngine.loopNames)
        for param in runbook.params { known.insert("params.\(param.name)") }
        for variable in runbook.vars { known.insert("vars.\(variable.name)") }
        var problems: [Diagnostic] = []
        for (name, value, location) in runbook.vars {
            for text in value.strings { problems += templates.check(string: text, at: location, knownNames: known) }
            known.insert("vars.\(name)")
        }
        for step in runbook.steps {
            // Where the loop is evaluated, `item` is not there yet; in the step it is.
            switch step.loop {
            case .expression(let text)?:
                problems += templates.check(string: Self.loopExpressionForCheck(text), at: step.loopLocation ?? step.location, knownNames: known)
            case .template(let text)?:
                problems += templates.check(string: text, at: step.loopLocation ?? step.location, knownNames: known)
            case .items(let items)?:
                for text in Value.list(items).strings { problems += templates.check(string: text, at: step.loopLocation ?? step.location, knownNames: known) }
            case nil:
                break
            }
            let outer = known
            if step.loop != nil { known.formUnion(TemplateEngine.loopNames) }
            defer { known = outer.union(known.subtracting(TemplateEngine.loopNames)) }
            if let delegate = step.delegateTo { problems += templates.check(string: delegate, at: step.delegateLocation ?? step.location, knownNames: known) }
            for when in step.conditions { problems += templates.check(condition: when, at: step.location, knownNames: known) }
            if case .map(let arguments) = step.arguments {
                let schema = StepRegistry.schema(for: step.kind)
                for (key, value) in arguments.sorted(by: { $0.key < $1.key }) {
                    let location = step.argumentLocations[key] ?? step.location
                    if schema?.argument(key)?.type == .expressionList {
                        for text in value.strings { problems += templates.check(condition: text, at: location, knownNames: known) }
                        continue
                    }
                    for text in value.strings { problems += templates.check(string: text, at: location, knownNames: known) }
                }
                if StepRegistry.kind(step.kind)?.fileSource == .template, case .string(let src) = arguments["src"], !src.contains("{{") {
                    problems += templates.checkFile(src, knownNames: known)
                }
            }
            if let id = step.id { known.insert("steps.\(id)") }
        }
        let errors = problems.filter { $0.severity == .error }
        if !errors.isEmpty { throw DiagnosticError(errors) }
    }

    /// A warning for each `|raw` in a command argument: the value is pasted as shell code
    /// there, which only the author's own text should be (`runbook validate` lists them).
    public static func rawWarnings(_ runbook: Runbook) -> [Diagnostic] {
        var warnings: [Diagnostic] = []
        for step in runbook.steps {
            guard case .map(let arguments) = step.arguments, let schema = StepRegistry.schema(for: step.kind) else { continue }
            for key in arguments.keys.sorted() where schema.argument(key)?.type == .command {
                for text in arguments[key]!.strings {
                    for expression in Self.expressions(in: text) {
                        let filters = expression.split(separator: "|").dropFirst().map {
                            $0.split(separator: ":").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                        }
                        guard filters.last == "raw" else { continue }
                        warnings.append(.warning(
                            "`{{\(expression)}}` is pasted into the command as shell code (raw): a value there can run commands",
                            at: step.argumentLocations[key] ?? step.location, field: "steps[\(step.index)].\(step.kind).\(key)",
                            hint: "drop `|raw` unless the value is shell code you wrote yourself; without it the value is quoted as data"))
                    }
                }
            }
        }
        return warnings
    }

    /// The insides of the `{{ … }}` tags of `text`.
    static func expressions(in text: String) -> [String] {
        var found: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{"), let close = rest[open.upperBound...].range(of: "}}") {
            found.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return found
    }

    /// The names read as `secrets.NAME` in `files` (the runbook and its templates), sorted.
    static func secretNames(in files: [[UInt8]]) -> [String] {
        var names = Set<String>()
        for bytes in files {
            let text = String(decoding: bytes, as: UTF8.self)
            guard text.contains("secrets.") else { continue }
            names.formUnion(RunbookValidator.references(to: "secrets", in: text[...]))
        }
        return names.sorted()
    }

    /// HMAC-SHA256 of `name=value` lines under the state directory's own key (made once, 0600).
    static func secretsFingerprint(_ secrets: [(String, String)], stateDir: String) -> String {
        let keyPath = stateDir + "/plan.key"
        var key = FileManager.default.contents(atPath: keyPath).map(Array.init) ?? []
        if key.count != 32 {
            var generator = SystemRandomNumberGenerator()
            key = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
            try? FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true,
                                                     attributes: [.posixPermissions: 0o700])
            let fd = open(keyPath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd >= 0 {
                _ = key.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            } else if let written = FileManager.default.contents(atPath: keyPath), written.count == 32 {
                key = Array(written)  // another process made it first
            }
        }
        let text = secrets.map { "\($0.0)=\($0.1)" }.joined(separator: "\n")
        return hexEncoded(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: key)))
    }

    static func fileDigest(_ path: String) -> String {
        FileManager.default.contents(atPath: path).map { sha256Hex(Array($0)) } ?? "absent"
    }

    /// The bytes of every file below `path`, by relative name.
    static func directoryFiles(_ path: String) -> [String: [UInt8]] {
        guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [:] }
        var files: [String: [UInt8]] = [:]
        while let name = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path + "/" + name, isDirectory: &isDirectory), !isDirectory.boolValue,
                  let data = FileManager.default.contents(atPath: path + "/" + name) else { continue }
            files[name] = Array(data)
        }
        return files
    }

    /// What a plan digest's key stands for, in a stale plan's refusal.
    func describeDigest(_ key: String, runbookFile: String) -> String {
        func relative(_ path: String) -> String {
            path.hasPrefix(settings.root + "/") ? String(path.dropFirst(settings.root.count + 1)) : path
        }
        switch key {
        case "runbook": return "the runbook \(relative(runbookFile))"
        case "inventory": return "the inventory \(relative(settings.inventoryPath))"
        case "params": return "the params"
        case "secrets": return "a secret the runbook uses"
        case "templates": return "the templates"  // plans saved before templates had a digest each
        default:
            return key.hasPrefix("template:") ? "the template templates/\(key.dropFirst("template:".count))" : key
        }
    }

    static func canonicalJSON(_ params: [String: Value]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(params)) ?? Data(), as: UTF8.self)
    }

    // MARK: Template context

    /// The template context for a host: params, the runbook's vars rendered for this host,
    /// host facts from the inventory, and the steps' results so far.
    func context(for host: RunbookCore.Host, prepared: PreparedRun, steps: [String: Value]) throws(DiagnosticError) -> TemplateContext {
        var context = TemplateContext(params: prepared.params, vars: [:], host: Self.hostValues(host), facts: [:], steps: steps,
                                      secrets: prepared.secrets)
        context.groups = prepared.groups
        context.hostvars = prepared.hostvars
        for (name, value, location) in prepared.runbook.vars {
            var secretsUsed: Set<String> = []
            context.vars[name] = try renderValue(value, at: location, context: context, templates: prepared.templates,
                                                 secretsUsed: &secretsUsed)
            if !secretsUsed.isEmpty { context.varSecrets[name] = secretsUsed.sorted() }
        }
        return context
    }

    /// `value` with every string in it rendered; the secrets read are added to `secretsUsed`.
    func renderValue(_ value: Value, at location: SourceLocation, context: TemplateContext, templates: TemplateEngine,
                     secretsUsed: inout Set<String>) throws(DiagnosticError) -> Value
    {
        switch value {
        case .string(let text):
            let result = try templates.render(string: text, at: location, context: context, secrets: .values)
            secretsUsed.formUnion(result.secretsUsed)
            return .string(result.text)
        case .list(let items):
            var out: [Value] = []
            for item in items {
                out.append(try renderValue(item, at: location, context: context, templates: templates, secretsUsed: &secretsUsed))
            }
            return .list(out)
        case .map(let map):
            var out: [String: Value] = [:]
            for (key, item) in map {
                out[key] = try renderValue(item, at: location, context: context, templates: templates, secretsUsed: &secretsUsed)
            }
            return .map(out)
        default:
            return value
        }
    }

    /// Renders a step's arguments for one host.
    func renderArguments(_ step: Step, context: TemplateContext, prepared: PreparedRun) throws(DiagnosticError) -> RenderedArguments {
        var rendered = RenderedArguments()
        rendered.projectRoot = settings.root
        let templates = prepared.templates
        let kind = StepRegistry.kind(step.kind)
        let schema = kind?.schema
        func location(_ key: String) -> SourceLocation { step.argumentLocations[key] ?? step.location }
        // Whether any value rendered holds a secret's value (a file that gets one is written 0600).
        var holdsSecret = false
        func renderValue(_ text: String, _ key: String) throws(DiagnosticError) -> String {
            let result = try templates.render(string: text, at: location(key), context: context, secrets: .values)
            if !result.secretsUsed.isEmpty { holdsSecret = true }
            return result.text
        }
        switch step.arguments {
        case .map(let map):
            for (key, value) in map {
                rendered.raw[key] = value
                // Lists of strings (tables, users) are rendered item by item; assert's
                // expressions are not templates.
                if case .list(let items) = value, schema?.argument(key)?.type != .expressionList {
                    var out: [Value] = []
                    for item in items {
                        if case .string(let text) = item {
                            out.append(.string(try renderValue(text, key)))
                        } else {
                            out.append(item)
                        }
                    }
                    rendered.raw[key] = .list(out)
                    continue
                }
                if case .map(let entries) = value {
                    // A mapping's string values are rendered (env_set's vars), and its keys
                    // where they hold `{{ }}` (`"{{ vars.version_var }}": 2`).
                    var out: [String: Value] = [:]
                    for (written, item) in entries {
                        let name = written.contains("{{") ? try renderValue(written, key) : written
                        if case .string(let text) = item {
                            out[name] = .string(try renderValue(text, key))
                        } else {
                            out[name] = item
                        }
                    }
                    rendered.raw[key] = .map(out)
                    continue
                }
                guard case .string(let text) = value else { continue }
                if schema?.argument(key)?.type == .command {
                    let result = try templates.render(string: text, at: location(key), context: context, secrets: .references)
                    var parts: [ShellCommand.Part] = [.literal(result.text)]
                    for name in result.secretsUsed {
                        if let value = prepared.secrets.value(name) { parts.append(.binding(name: name, value: value)) }
                    }
                    rendered.commands[key] = ShellCommand(parts: parts)
                } else {
                    rendered.strings[key] = try renderValue(text, key)
                }
            }
        case .string(let text):
            rendered.raw[""] = .string(text)
            rendered.strings[""] = try renderValue(text, "")
        default:
            rendered.raw[""] = step.arguments
        }
        switch (kind?.fileSource, rendered.strings["src"]) {
        case (.template?, let src?):
            let result = try templates.renderFile(src, context: context, secrets: .values)
            if !result.secretsUsed.isEmpty { holdsSecret = true }
            rendered.fileContents = Array(result.text.utf8)
        case (.copy?, let src?):
            rendered.fileContents = try templates.readFile(src)
        default:
            break
        }
        // A file whose content holds a secret is written 0600 unless `mode:` says otherwise (SPEC §4).
        if holdsSecret, schema?.argument("mode") != nil, rendered.raw["mode"] == nil || rendered.raw["mode"] == .null {
            rendered.raw["mode"] = .string("0600")
        }
        return rendered
    }

    /// True when a step's `when` or arguments read earlier steps' results.
    static func readsSteps(_ step: Step) -> Bool {
        if step.conditions.contains(where: { $0.contains("steps.") }) { return true }
        return step.arguments.containsText("steps.")
    }

    // MARK: Planning

    /// Plans every step on one host, reading facts only. Each step is planned against the
    /// state the earlier steps of the run leave (the files they write), not the state before it;
    /// a delegated step against what the run leaves on the host it is delegated to (`shared`).
    func planHost(_ host: RunbookCore.Host, transports: [String: any Transport], prepared: PreparedRun,
                  shared: SharedPlanning) async throws -> [PlannedInstance] {
        var context = try context(for: host, prepared: prepared, steps: [:])
        var plans: [PlannedInstance] = []
        let caches = FactCaches()
        let leader = prepared.batchLeader(of: host.name)
        for group in Self.stepGroups(prepared.runbook.steps) {
            let instances = try instances(of: group, host: host, context: context, prepared: prepared)
            if instances.isEmpty {
                // A loop over no items: nothing to do, and the plan says why.
                for step in group {
                    var change = PlannedChange.make(step: step, host: host.name, action: .noop, reversible: true, summary: "skip: the loop has no items")
                    change.reason = "loop: no items"
                    change.operationsDigest = StepOperation.nothing.digest(become: false, extra: "empty loop")
                    plans.append(PlannedInstance(instance: StepInstance(step: step, iteration: nil, items: [], delegate: nil),
                                                 plan: HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)))
                }
                continue
            }
            for instance in instances {
                let step = instance.step
                var plan: HostStepPlan
                if step.runOnce, let leader, leader != host.name {
                    var change = PlannedChange.make(step: step, host: host.name, action: .noop, reversible: true,
                                                    summary: "skip: run_once, runs on \(leader)")
                    change.reason = "run_once: runs on \(leader) only"
                    change.operationsDigest = StepOperation.nothing.digest(become: false, extra: "run_once")
                    plan = HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
                } else {
                    let target = instance.delegate ?? host
                    guard let transport = transports[target.name] else { throw EngineError(exitCode: 1, "\(target.name): not connected") }
                    plan = try await planStep(step, host: target, transport: transport, context: instance.context(context),
                                              prepared: prepared, atApply: false, planned: shared.files(on: target.name),
                                              cache: caches.cache(for: target.name))
                    if let facts = plan.facts { context.facts.merge(facts) { _, new in new } }
                    shared.record(plan.operation, step: step.index, on: target.name)
                }
                Self.address(&plan.change, instance: instance, host: host.name)
                plans.append(PlannedInstance(instance: instance, plan: plan))
            }
        }
        return plans
    }

    /// Gives a change its address (`web2/drain[2]`), its host (the one it is for), its
    /// iteration and item, and the host it is delegated to.
    static func address(_ change: inout PlannedChange, instance: StepInstance, host: String) {
        change.address = "\(host)/\(instance.step.reference(iteration: instance.iteration))"
        change.host = host
        change.iteration = instance.iteration
        change.item = instance.iteration.map { itemDisplay(instance.items[$0 - 1]) }
        change.delegate = instance.delegate?.name
    }

    /// An item for people: a string or number as is, anything else as compact JSON.
    static func itemDisplay(_ item: Value) -> String {
        let text: String
        switch item {
        case .string(let s): text = s
        case .int, .double, .bool: text = item.plainText
        default: text = canonicalJSON(["item": item]).dropFirst("{\"item\":".count).dropLast().description
        }
        return text.count > 80 ? String(text.prefix(77)) + "..." : text
    }

    /// Plans one step; at plan time a step that reads earlier steps' results is deferred, and
    /// shows what it would run as written, with fingerprints of the files it would change.
    func planStep(_ step: Step, host: RunbookCore.Host, transport: any Transport, context: TemplateContext,
                  prepared: PreparedRun, atApply: Bool, planned: PlannedFiles = PlannedFiles(),
                  cache: FactCache = FactCache()) async throws -> HostStepPlan {
        if !atApply && Self.readsSteps(step) {
            return try await deferredPlan(step, host: host, facts: FactReader(transport: transport, planned: planned, cache: cache))
        }
        for when in step.conditions {
            let holds = try prepared.templates.evaluate(condition: when, at: step.location, context: context)
            if !holds {
                var change = PlannedChange.make(step: step, host: host.name, action: .noop, reversible: true, summary: "skip: when is false")
                change.reason = (atApply ? "when is false at apply time: " : "when: ") + when
                change.operationsDigest = StepOperation.nothing.digest(become: false)
                return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
            }
        }
        guard let kind = StepRegistry.kind(step.kind) else {
            throw DiagnosticError(.error("step kind \(step.kind) is not available in this version of runbook",
                                         at: step.location, field: "steps[\(step.index)].\(step.kind)"))
        }
        let arguments = try renderArguments(step, context: context, prepared: prepared)
        do {
            var plan = try await kind.init().plan(step: step, host: host, arguments: arguments,
                                                  facts: FactReader(transport: transport, planned: planned, cache: cache))
            // What the plan shows and what identifies it come from the operation apply runs.
            plan.change.commands = plan.operation.shownCommands(become: step.become)
            plan.change.operationsDigest = plan.operation.digest(become: step.become, extra: plan.digestExtra)
            return plan
        } catch let failure as StepFailure {
            let diagnostic = Diagnostic.error(failure.description, at: step.location, field: "steps[\(step.index)].\(step.kind)")
            // What the host lacks is a runtime failure (exit 1), not invalid input (exit 2).
            if failure.hostSide { throw HostPlanningFailure(diagnostic: diagnostic) }
            throw DiagnosticError(diagnostic)
        }
    }

    /// A step decided at apply time: its commands as written (they read earlier steps'
    /// results), and fingerprints of the file it would change, so a hand edit made after the
    /// plan makes a saved plan stale instead of being overwritten unseen.
    func deferredPlan(_ step: Step, host: RunbookCore.Host, facts: FactReader) async throws -> HostStepPlan {
        let reads = Set((step.conditions + step.arguments.strings).flatMap { RunbookValidator.references(to: "steps", in: $0[...]) }).sorted()
        var change = PlannedChange.make(step: step, host: host.name, action: .deferred,
                                        reversible: !StepRegistry.isIrreversible(kind: step.kind, arguments: step.arguments),
                                        summary: "decided at apply time: reads " + reads.map { "steps.\($0)" }.joined(separator: ", "))
        change.reason = "reads the results of earlier steps"
        let schema = StepRegistry.schema(for: step.kind)
        for key in (schema?.argumentNames ?? []) {
            guard case .string(let text)? = step.arguments[key] else { continue }
            switch schema?.argument(key)?.type {
            case .command?: change.commands.append((key == "run" ? "" : key + ": ") + text + "   (as written; rendered at apply)")
            default: if key == "dest" || key == "src" || key == "sql" { change.commands.append("\(key): \(text)") }
            }
        }
        for when in step.conditions { change.commands.append("when: \(when)") }
        if case .string(let dest)? = step.arguments["dest"], !dest.contains("{{") {
            let current = try await facts.file(dest)
            change.fingerprints.append(FactFingerprint(fact: "file:\(dest)", digest: current.map {
                "\(sha256Hex($0.contents)) mode \(String($0.mode, radix: 8)) owner \($0.uid):\($0.gid)" } ?? "absent"))
        }
        change.operationsDigest = sha256Hex("deferred\u{0}" + step.kind + "\u{0}" + Self.canonicalJSON(["arguments": step.arguments])
                                            + "\u{0}" + step.conditions.joined(separator: "\u{0}") + "\u{0}" + String(step.become))
        return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: true)
    }

    /// Connects to every host (at most `forks` at once); unreachable hosts are errors.
    func connectAll(_ hosts: [RunbookCore.Host], secrets: SecretStore) async -> [String: Result<any Transport, TransportError>] {
        await connectAndLockAll(hosts, secrets: secrets, info: nil).mapValues(\.connection)
    }

    /// Makes a plan: loads, connects, reads facts, and returns the plan with the operations
    /// behind it (still connected). Nothing on any host changes.
    func makePlan(_ request: RunRequest, prepared: PreparedRun, transports: [String: any Transport]) async throws -> (Plan, [String: [PlannedInstance]]) {
        let shared = SharedPlanning()
        // Hosts whose steps are delegated may change the same host's files: they are planned one
        // after another, in the order the run applies them, each against what the ones before leave.
        let together = prepared.runbook.steps.contains { $0.delegateTo != nil } ? 1 : settings.forks
        let results = await boundedMap(prepared.hosts, limit: together) { host -> HostPlanResult in
            guard transports[host.name] != nil else {
                return HostPlanResult(host: host.name, outcome: .failed("\(host.name): not connected"))
            }
            do {
                return HostPlanResult(host: host.name, outcome: .planned(try await self.planHost(host, transports: transports, prepared: prepared,
                                                                                                  shared: shared)))
            } catch let error as DiagnosticError {
                return HostPlanResult(host: host.name, outcome: .invalid(error.diagnostics))
            } catch {
                return HostPlanResult(host: host.name, outcome: .failed("\(host.name): \(error)"))
            }
        }
        var byHost: [String: [PlannedInstance]] = [:]
        var diagnostics: [Diagnostic] = []
        var failures: [String] = []
        for result in results {
            switch result.outcome {
            case .planned(let plans): byHost[result.host] = plans
            case .invalid(let found): diagnostics += found
            case .failed(let message): failures.append(message)
            }
        }
        if !diagnostics.isEmpty { throw DiagnosticError(Array(Set(diagnostics)).sorted { ($0.location?.line ?? 0) < ($1.location?.line ?? 0) }) }
        if !failures.isEmpty { throw EngineError(exitCode: 1, "planning failed:\n  " + failures.joined(separator: "\n  ")) }
        let masker = prepared.secrets.masker
        var changes: [PlannedChange] = []
        for host in prepared.hosts {
            for var planned in byHost[host.name] ?? [] {
                planned.plan.change.diff = planned.plan.change.diff.map(masker.maskDiff)
                planned.plan.change.summary = masker.mask(planned.plan.change.summary)
                planned.plan.change.commands = planned.plan.change.commands.map(masker.mask)
                planned.plan.change.item = planned.plan.change.item.map(masker.mask)
                changes.append(planned.plan.change)
            }
        }
        let plan = Plan(runbook: prepared.runbook.name, params: prepared.params, hosts: prepared.hosts.map(\.name),
                        createdAt: Journal.iso8601(), digests: prepared.digests, changes: changes)
        return (plan, byHost)
    }

    /// `runbook plan`: the plan, optionally saved (JSON, mode 0600).
    public func plan(_ request: RunRequest, saveTo path: String?) async throws -> Plan {
        let prepared = try prepare(request)
        let connections = await connectAll(prepared.touchedHosts, secrets: prepared.secrets)
        let transports = connections.compactMapValues { try? $0.get() }
        do {
            let plan = try await planConnected(request, prepared: prepared, connections: connections, transports: transports, saveTo: path)
            await Self.closeAll(transports)
            return plan
        } catch {
            await Self.closeAll(transports)
            throw error
        }
    }

    /// Closes every connection (before the process may exit).
    static func closeAll(_ transports: [String: any Transport]) async {
        await withTaskGroup(of: Void.self) { group in
            for transport in transports.values { group.addTask { await transport.close() } }
        }
    }

    private func planConnected(_ request: RunRequest, prepared: PreparedRun, connections: [String: Result<any Transport, TransportError>],
                               transports: [String: any Transport], saveTo path: String?) async throws -> Plan {
        let unreachable = connections.compactMap { name, result -> String? in
            if case .failure(let error) = result { return error.description }
            return nil
        }
        if !unreachable.isEmpty { throw EngineError(exitCode: 1, "cannot reach every host:\n  " + unreachable.sorted().joined(separator: "\n  ")) }
        let (plan, _) = try await makePlan(request, prepared: prepared, transports: transports)
        if let path { try Self.save(plan, to: path) }
        events.emit(.planned(plan))
        return plan
    }

    /// Writes a plan as JSON with mode 0600: into a new temp file beside `path` (never through
    /// a symlink, every byte checked and synced), then renamed over it. A full disk or any other
    /// failure is an error and leaves `path` as it was.
    static func save(_ plan: Plan, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = Array(try encoder.encode(plan))
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        func failure(_ what: String) -> EngineError {
            EngineError(exitCode: 1, "cannot write the plan to \(path): \(what): \(String(cString: strerror(errno)))")
        }
        var generator = SystemRandomNumberGenerator()
        let temp = (directory.isEmpty ? "" : directory + "/") + ".\((path as NSString).lastPathComponent).\(String(generator.next(), radix: 16)).tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("cannot create \(temp)") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let error = failure("writing")
                close(fd)
                unlink(temp)
                throw error
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let error = failure("syncing")
            close(fd)
            unlink(temp)
            throw error
        }
        close(fd)
        guard rename(temp, path) == 0 else {
            let error = failure("renaming")
            unlink(temp)
            throw error
        }
    }
}

extension Value {
    /// Every string inside, depth first.
    var strings: [String] {
        switch self {
        case .string(let s): return [s]
        case .list(let items): return items.flatMap(\.strings)
        case .map(let map): return map.keys.sorted().flatMap { map[$0]!.strings }
        default: return []
        }
    }

    /// True when any string inside contains `text`.
    func containsText(_ text: String) -> Bool {
        switch self {
        case .string(let s): return s.contains(text)
        case .list(let items): return items.contains { $0.containsText(text) }
        case .map(let map): return map.values.contains { $0.containsText(text) }
        default: return false
        }
    }
}

/// One host's planning outcome, as `makePlan` collects it from its tasks. A plain enum rather
/// than `Result<[HostStepPlan], any Error>`: a tuple holding that `Result` came back from the
/// task group corrupted in release builds (Swift 6.3.1), and `runbook plan` crashed.
struct HostPlanResult: Sendable {
    enum Outcome: Sendable {
        case planned([PlannedInstance])
        case invalid([Diagnostic])
        case failed(String)
    }
    let host: String
    let outcome: Outcome
}

/// A step instance as planned: what apply runs for it.
struct PlannedInstance: Sendable {
    let instance: StepInstance
    var plan: HostStepPlan
}

/// What a run's planning shares across hosts: the files each host will hold once the steps
/// planned so far have run (a delegated step changes another host's files).
final class SharedPlanning: Sendable {
    private let files = Mutex<[String: PlannedFiles]>([:])

    func files(on host: String) -> PlannedFiles { files.withLock { $0[host] ?? PlannedFiles() } }

    func record(_ operation: StepOperation, step: Int, on host: String) {
        files.withLock { $0[host, default: PlannedFiles()].record(operation, step: step) }
    }
}

/// One host's fact caches, by the host the facts are read on.
final class FactCaches: Sendable {
    private let caches = Mutex<[String: FactCache]>([:])

    func cache(for host: String) -> FactCache {
        caches.withLock { caches in
            if let cache = caches[host] { return cache }
            let cache = FactCache()
            caches[host] = cache
            return cache
        }
    }
}

/// A step that cannot be planned because of the host's state (no such file, no PostgreSQL):
/// shown like a diagnostic, with the runbook's file, line and field, and exit code 1.
struct HostPlanningFailure: Error, CustomStringConvertible {
    let diagnostic: Diagnostic
    var description: String { diagnostic.rendered }
}

import Foundation
import RunbookCore
import RunbookSteps
import Stencil

/// What templates and `{{ }}` in step arguments can read.
public struct TemplateContext: Sendable {
    /// The top-level names a template can read, besides its loop variables.
    public static let namespaces: [String] = ["params", "vars", "host", "facts", "steps", "secrets", "groups", "hostvars", "item", "loop"]

    /// The runbook's parameters, typed.
    public var params: [String: Value]
    /// The runbook's vars, rendered for this host.
    public var vars: [String: Value]
    /// `name`, `address`, `port`, `user`, `groups`, plus the host's merged inventory vars.
    public var host: [String: Value]
    /// Facts gathered from the host.
    public var facts: [String: Value]
    /// `steps.<id>`: a map with `changed`, `rc`, `stdout` and the step kind's outputs.
    public var steps: [String: Value]
    /// Where `secrets.NAME` comes from.
    public var secrets: SecretStore
    /// `groups.NAME`: the host names of each inventory group, in inventory order (`all` too).
    public var groups: [String: Value] = [:]
    /// `hostvars.NAME`: every inventory host's name, address, port, user, groups and merged vars.
    public var hostvars: [String: Value] = [:]
    /// `item`: the current item of the step's `loop:` (nil outside a loop).
    public var item: Value? = nil
    /// `loop.index` (1-based), `loop.index0`, `loop.first`, `loop.last`, `loop.length`.
    public var loop: [String: Value]? = nil
    /// The secrets each var was made from. Reading such a var counts as reading them (a file
    /// gets 0600, a saved plan fingerprints them), and in a command each secret's value in it
    /// stays a reference the remote shell expands.
    public var varSecrets: [String: [String]] = [:]
    /// The secrets whose values the loop's current item holds, treated as `varSecrets` are.
    public var itemSecrets: [String] = []

    /// This context inside iteration `index` (0-based) of a loop over `items`.
    public func iterating(_ items: [Value], at index: Int) -> TemplateContext {
        var context = self
        context.item = items[index]
        // An item that holds a secret's value (4 characters or more) is treated as made from it.
        let texts = items[index].strings
        context.itemSecrets = secrets.names.filter { name in
            guard let value = secrets.value(name), value.count >= 4 else { return false }
            return texts.contains { $0.contains(value) }
        }
        context.loop = ["index": .int(index + 1), "index0": .int(index), "first": .bool(index == 0),
                        "last": .bool(index == items.count - 1), "length": .int(items.count)]
        return context
    }

    /// A context with every namespace given.
    public init(params: [String: Value] = [:], vars: [String: Value] = [:], host: [String: Value] = [:],
                facts: [String: Value] = [:], steps: [String: Value] = [:], secrets: SecretStore)
    {
        self.params = params
        self.vars = vars
        self.host = host
        self.facts = facts
        self.steps = steps
        self.secrets = secrets
    }
}

/// How `{{ secrets.NAME }}` renders.
public enum SecretRendering: Sendable, Hashable {
    /// The real value: file content written with mode 0600, never shown.
    case values
    /// `${RUNBOOK_SECRET_NAME}`: commands, which get the value through their environment.
    case references
}

/// A rendered template and the secrets it read.
public struct RenderResult: Sendable, Hashable {
    /// The rendered text.
    public var text: String
    /// Names of the secrets read (as `SecretStore` knows them), sorted, each once.
    public var secretsUsed: [String]

    /// A result with `text` that read `secretsUsed`.
    public init(text: String, secretsUsed: [String]) {
        self.text = text
        self.secretsUsed = secretsUsed
    }
}

/// Renders the Jinja-like templates of runbooks (Stencil syntax), strictly and in a sandbox.
///
/// - Strict: reading an undefined name, at any depth (`nope`, `params.nope`,
///   `steps.missing.changed`), is an error naming the file, the line and the variable, with a
///   hint; never an empty string. `x.y|default:z` is the one way to allow a missing last member.
/// - Sandboxed: `renderFile`, `include` and `extends` read only regular files inside the
///   templates directory, after resolving symbolic links.
/// - Whitespace: a line holding only block tags (`{% … %}`) and comments leaves nothing, not
///   even its newline; tags inside a line of text leave the text around them alone. A template
///   ending with a newline renders to text ending with one. `{% raw %}…{% endraw %}` is copied
///   as is (for `{{` meant for another tool, such as `docker inspect -f`).
/// - Values: ints print as `8`, bools as `true`/`false`, whole doubles without `.0`; lists and
///   maps are meant for loops (`{% for k, v in vars.map %}`) and filters (`join`, `quote`).
///
/// Filters: Stencil's (`join`, `indent`, `split`, `uppercase`, `lowercase`, `filter`) and
/// `default`, `upper`, `lower`, `capitalize`, `trim`, `length`, `quote` (one POSIX shell word;
/// a list becomes several words).
public struct TemplateEngine: Sendable {
    /// `ROOT/templates`.
    public let templatesDirectory: String

    /// The names `check` accepts when none are given: the context's namespaces.
    public static let defaultKnownNames: Set<String> = Set(TemplateContext.namespaces)
    /// The names a step's `loop:` adds (`item`, `loop`).
    public static let loopNames: Set<String> = ["item", "loop"]

    /// An engine reading template files from `templatesDirectory` (`ROOT/templates`).
    public init(templatesDirectory: String) {
        self.templatesDirectory = templatesDirectory
    }

    var sandbox: TemplateSandbox { TemplateSandbox(directory: templatesDirectory) }

    // MARK: Rendering

    /// Renders `string`, written in a runbook at `location`: where its first character is (for a
    /// YAML block scalar, `|` or `>`, the first line after the indicator), so that a problem on
    /// line N of the string is reported at `location.line + N - 1`.
    public func render(string: String, at location: SourceLocation, context: TemplateContext,
                       secrets: SecretRendering) throws(DiagnosticError) -> RenderResult
    {
        // A command (secrets as references) quotes each `{{ }}` as data where it stands.
        let prepared = TemplateSource.prepare(string, name: nil, file: location.file, firstLine: location.line,
                                              firstColumn: max(1, location.column), shell: secrets == .references)
        return try render(prepared, original: string, fallback: location, context: context, secrets: secrets)
    }

    /// Renders the template file `relativePath` of the templates directory.
    public func renderFile(_ relativePath: String, context: TemplateContext,
                           secrets: SecretRendering) throws(DiagnosticError) -> RenderResult
    {
        let fileLocation = SourceLocation(file: sandbox.displayName(relativePath), line: 0, column: 0)
        let text: String
        let name: String
        switch sandbox.readText(relativePath) {
        case .failure(let problem): throw DiagnosticError(Self.diagnostic(problem, at: fileLocation))
        case .success(let read): (text, name) = read
        }
        let prepared = TemplateSource.prepare(text, name: name, file: sandbox.displayName(name), firstLine: 1, firstColumn: 1)
        return try render(prepared, original: text, fallback: SourceLocation(file: sandbox.displayName(name), line: 1, column: 1),
                          context: context, secrets: secrets)
    }

    /// The value of `expression`, one `{{ … }}` written at `location` (filters allowed): a list
    /// stays a list, a map a map (a step's `loop:`).
    public func value(of expression: String, at location: SourceLocation, context: TemplateContext) throws(DiagnosticError) -> (value: Value, secretsUsed: [String]) {
        var inner = expression.trimmingCharacters(in: .whitespaces)
        if inner.hasPrefix("{{"), inner.hasSuffix("}}") { inner = String(inner.dropFirst(2).dropLast(2)) }
        let text = "{{ " + inner.trimmingCharacters(in: .whitespaces) + "|" + TemplateSource.captureFilter + " }}"
        let prepared = TemplateSource.prepare(text, name: nil, file: location.file, firstLine: location.line,
                                              firstColumn: max(1, location.column))
        var captured: Value? = nil
        let result = try render(prepared, original: text, fallback: location, context: context, secrets: .values) { captured = $0.captured }
        return (captured ?? .null, result.secretsUsed)
    }

    /// Whether the `when:`/`assert:` expression `condition` holds: Stencil's `if` expression
    /// (`and`, `or`, `not`, `==`, `!=`, `<`, `>`, `<=`, `>=`, `in`; numbers compare as numbers).
    public func evaluate(condition: String, at location: SourceLocation,
                         context: TemplateContext) throws(DiagnosticError) -> Bool
    {
        let text = try Self.conditionTemplate(condition, at: location)
        let prepared = TemplateSource.prepare(text, name: nil, file: location.file, firstLine: location.line,
                                              firstColumn: max(1, location.column), prefixLength: Self.conditionPrefix.count)
        let result = try render(prepared, original: text, fallback: location, context: context, secrets: .values)
        return result.text == "true"
    }

    /// The bytes of the file `relativePath` of the templates directory (for `copy`), with the same sandbox.
    public func readFile(_ relativePath: String) throws(DiagnosticError) -> [UInt8] {
        switch sandbox.read(relativePath) {
        case .failure(let problem):
            throw DiagnosticError(Self.diagnostic(problem, at: SourceLocation(file: sandbox.displayName(relativePath), line: 0, column: 0)))
        case .success(let read): return read.bytes
        }
    }

    /// The most one template or `{{ }}` may render.
    static let maximumOutputBytes = 32 * 1_048_576

    private func render(_ prepared: Result<TemplateSource, TemplateProblem>, original: String, fallback: SourceLocation,
                        context: TemplateContext, secrets mode: SecretRendering,
                        inspect: ((RenderSession) -> Void)? = nil) throws(DiagnosticError) -> RenderResult
    {
        let source: TemplateSource
        switch prepared {
        case .failure(let problem):
            throw DiagnosticError(Self.diagnostic(problem, at: fallback))
        case .success(let prepared): source = prepared
        }
        if source.isPlainText {
            return RenderResult(text: original, secretsUsed: [])
        }
        let session = RenderSession(context: context, secretMode: mode, secrets: context.secrets)
        session.main = source
        // `item` and `loop` exist only inside a step's loop.
        let known = context.item == nil ? Self.defaultKnownNames.subtracting(Self.loopNames) : Self.defaultKnownNames
        let environment = makeEnvironment(session: session, knownNames: known)
        let template = Self.makeTemplate(source, environment: environment)
        do {
            _ = try TokenParser(tokens: template.tokens, environment: environment).parse()
        } catch {
            throw DiagnosticError(Self.diagnostic(for: error, session: session, fallback: fallback))
        }
        if let problem = Self.unknownNames(in: source, known: known, session: session).first {
            throw DiagnosticError(Self.diagnostic(problem, at: fallback))
        }
        var values: [String: Any] = [
            "params": MapValue(entries: context.params, path: "params", session: session),
            "vars": MapValue(entries: context.vars, path: "vars", session: session, entryTaint: context.varSecrets),
            "host": MapValue(entries: context.host, path: "host", session: session),
            "facts": MapValue(entries: context.facts, path: "facts", session: session),
            "steps": MapValue(entries: context.steps, path: "steps", session: session),
            "secrets": SecretsValue(session: session),
            "groups": MapValue(entries: context.groups, path: "groups", session: session),
            "hostvars": MapValue(entries: context.hostvars, path: "hostvars", session: session),
        ]
        if let item = context.item {
            if original.contains("item") { session.secretsUsed.formUnion(context.itemSecrets) }
            values["item"] = session.element(item, path: "item", taint: context.itemSecrets)
        }
        if let loop = context.loop { values["loop"] = MapValue(entries: loop, path: "loop", session: session) }
        var text: String
        do {
            text = try template.render(Context(dictionary: values, environment: environment))
        } catch {
            throw DiagnosticError(Self.diagnostic(for: error, session: session, fallback: fallback))
        }
        if text.utf8.count > Self.maximumOutputBytes {
            throw DiagnosticError(.error("the template renders \(text.utf8.count / 1_048_576) MiB, more than \(Self.maximumOutputBytes / 1_048_576) MiB",
                                         at: fallback, hint: "a file this large is better copied than rendered"))
        }
        if original.hasSuffix("\n"), !text.isEmpty, !text.hasSuffix("\n") {
            text += "\n"
        }
        inspect?(session)
        return RenderResult(text: text, secretsUsed: session.secretsUsed.sorted())
    }

    // MARK: Static checks

    /// Problems in `string` (written at `location`) found without a host: syntax errors, unknown
    /// filters and tags, names other than `knownNames` and loop variables, and missing included
    /// templates. When `knownNames` also holds dotted names under a namespace (`params.workers`,
    /// `steps.render`), members of that namespace are checked against them too.
    public func check(string: String, at location: SourceLocation,
                      knownNames: Set<String> = TemplateEngine.defaultKnownNames) -> [Diagnostic]
    {
        switch TemplateSource.prepare(string, name: nil, file: location.file, firstLine: location.line,
                                      firstColumn: max(1, location.column)) {
        case .failure(let problem): return [Self.diagnostic(problem, at: location)]
        case .success(let source):
            var visited: Set<String> = []
            return check(source, fallback: location, knownNames: knownNames, inheritedLoopVariables: [], visited: &visited)
        }
    }

    /// Problems in the `when:`/`assert:` expression `condition`, as `check(string:at:knownNames:)`.
    public func check(condition: String, at location: SourceLocation,
                      knownNames: Set<String> = TemplateEngine.defaultKnownNames) -> [Diagnostic]
    {
        let text: String
        do throws(DiagnosticError) {
            text = try Self.conditionTemplate(condition, at: location)
        } catch {
            return error.diagnostics
        }
        switch TemplateSource.prepare(text, name: nil, file: location.file, firstLine: location.line,
                                      firstColumn: max(1, location.column), prefixLength: Self.conditionPrefix.count) {
        case .failure(let problem): return [Self.diagnostic(problem, at: location)]
        case .success(let source):
            var visited: Set<String> = []
            return check(source, fallback: location, knownNames: knownNames, inheritedLoopVariables: [], visited: &visited)
        }
    }

    /// Problems in the template file `relativePath`, and in the files it includes or extends.
    public func checkFile(_ relativePath: String, knownNames: Set<String> = TemplateEngine.defaultKnownNames) -> [Diagnostic] {
        switch sandbox.readText(relativePath) {
        case .failure(let problem):
            return [Self.diagnostic(problem, at: SourceLocation(file: sandbox.displayName(relativePath), line: 0, column: 0))]
        case .success(let (text, name)):
            let file = sandbox.displayName(name)
            switch TemplateSource.prepare(text, name: name, file: file, firstLine: 1, firstColumn: 1) {
            case .failure(let problem):
                return [Self.diagnostic(problem, at: SourceLocation(file: file, line: 1, column: 1))]
            case .success(let source):
                var visited: Set<String> = [name]
                return check(source, fallback: SourceLocation(file: file, line: 1, column: 1), knownNames: knownNames,
                             inheritedLoopVariables: [], visited: &visited)
            }
        }
    }

    private func check(_ source: TemplateSource, fallback: SourceLocation, knownNames: Set<String>,
                       inheritedLoopVariables: Set<String>, visited: inout Set<String>) -> [Diagnostic]
    {
        // Plain text (most commands: `true`, `nginx -t`) has nothing to check; building a
        // template environment for it cost every step of a run's preparation.
        if source.isPlainText { return [] }
        var diagnostics: [Diagnostic] = []
        let session = RenderSession(context: nil, secretMode: .references, secrets: nil)
        session.main = source
        let environment = makeEnvironment(session: session, knownNames: knownNames)
        let template = Self.makeTemplate(source, environment: environment)
        do {
            _ = try TokenParser(tokens: template.tokens, environment: environment).parse()
        } catch {
            diagnostics.append(Self.diagnostic(for: error, session: session, fallback: fallback))
        }
        let roots = Set(knownNames.map { name in name.split(separator: ".", maxSplits: 1).first.map(String.init) ?? name })
        for problem in Self.unknownNames(in: source, known: roots.union(inheritedLoopVariables), session: nil) {
            diagnostics.append(Self.diagnostic(problem, at: fallback))
        }
        diagnostics += Self.unknownMembers(in: source, knownNames: knownNames)
        for (name, offset) in source.analysis.includes {
            let at = source.location(ofPreparedOffset: offset)
            switch sandbox.readText(name) {
            case .failure(let problem):
                diagnostics.append(Self.diagnostic(problem, at: at))
            case .success(let (text, normalized)):
                guard visited.insert(normalized).inserted else { continue }
                let file = sandbox.displayName(normalized)
                switch TemplateSource.prepare(text, name: normalized, file: file, firstLine: 1, firstColumn: 1) {
                case .failure(let problem):
                    diagnostics.append(Self.diagnostic(problem, at: SourceLocation(file: file, line: 1, column: 1)))
                case .success(let included):
                    diagnostics += check(included, fallback: SourceLocation(file: file, line: 1, column: 1), knownNames: knownNames,
                                         inheritedLoopVariables: inheritedLoopVariables.union(source.analysis.loopVariables),
                                         visited: &visited)
                }
            }
        }
        return diagnostics
    }

    /// References to top-level names that are neither `known`, nor loop variables, nor Stencil's helpers.
    static func unknownNames(in source: TemplateSource, known: Set<String>, session: RenderSession?) -> [TemplateProblem] {
        let visible = known.union(source.analysis.loopVariables).union(TemplateSource.builtinNames)
        var problems: [TemplateProblem] = []
        for reference in source.analysis.references where !visible.contains(reference.root) {
            var problem = TemplateProblem(summary: "undefined variable `\(reference.root)`", path: reference.root)
            let owners = (session?.namespaces ?? [:]).filter { $0.value[reference.root] != nil }.keys.sorted()
            if let owner = owners.first {
                problem.hint = "did you mean `\(owner).\(reference.root)`?"
            } else {
                let candidates = visible.subtracting(TemplateSource.builtinNames).sorted()
                problem.hint = RenderSession.hint(for: reference.root, under: "", candidates: candidates)
                if closestMatch(reference.root, in: candidates) == nil {
                    problem.hint = "top-level names are \(TemplateContext.namespaces.joined(separator: ", ")) and loop variables"
                }
            }
            problem.location = source.location(ofPreparedOffset: reference.offset)
            problems.append(problem)
        }
        return problems
    }

    /// Members of namespaces whose members are listed in `knownNames` (`params.workers`) that are not listed.
    static func unknownMembers(in source: TemplateSource, knownNames: Set<String>) -> [Diagnostic] {
        var members: [String: [String]] = [:]
        for name in knownNames {
            let parts = name.split(separator: ".", maxSplits: 1)
            if parts.count == 2 { members[String(parts[0]), default: []].append(String(parts[1])) }
        }
        guard !members.isEmpty else { return [] }
        var diagnostics: [Diagnostic] = []
        for reference in source.analysis.references {
            guard !source.analysis.loopVariables.contains(reference.root), let listed = members[reference.root] else { continue }
            let parts = reference.path.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count >= 2 else { continue }
            var member = String(parts[1])
            if let bracket = member.firstIndex(of: "[") { member = String(member[..<bracket]) }
            if reference.optional && parts.count == 2 { continue }
            if listed.contains(member) { continue }
            diagnostics.append(.error(
                "undefined variable `\(reference.root).\(member)`", at: source.location(ofPreparedOffset: reference.offset),
                hint: RenderSession.hint(for: member, under: reference.root, candidates: listed.sorted())))
        }
        return diagnostics
    }

    // MARK: Plumbing

    static let conditionPrefix = "{% if "

    /// The template that renders `true` or `false` for a condition.
    static func conditionTemplate(_ condition: String, at location: SourceLocation) throws(DiagnosticError) -> String {
        if condition.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw DiagnosticError(.error("the condition is empty", at: location,
                                         hint: "write an expression such as `steps.render.changed`"))
        }
        for delimiter in ["{{", "}}", "{%", "%}", "{#", "#}"] where condition.contains(delimiter) {
            throw DiagnosticError(.error("a condition is an expression, without `{{ }}` or `{% %}`", at: location,
                                         hint: "write `steps.render.changed`, not `{{ steps.render.changed }}`"))
        }
        return conditionPrefix + condition + " %}true{% else %}false{% endif %}"
    }

    func makeEnvironment(session: RenderSession, knownNames: Set<String>) -> Environment {
        Environment(loader: SandboxLoader(sandbox: sandbox, session: session, knownNames: knownNames),
                    extensions: [RunbookTemplateExtension(session: session)])
    }

    /// A Stencil template for `source`, with Stencil's tokens mapped to ours.
    static func makeTemplate(_ source: TemplateSource, environment: Environment) -> Template {
        let template = Template(templateString: source.text, environment: environment, name: source.name)
        if template.tokens.count == source.tokens.count {
            for (index, token) in template.tokens.enumerated() where kind(token.kind) == source.tokens[index].kind {
                source.tokenIndexes[ObjectIdentifier(token)] = index
            }
        }
        return template
    }

    private static func kind(_ kind: Token.Kind) -> ScannedToken.Kind {
        switch kind {
        case .text: return .text
        case .variable: return .variable
        case .block: return .block
        case .comment: return .comment
        }
    }
}

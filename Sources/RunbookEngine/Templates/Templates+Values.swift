import Foundation
import RunbookCore
import RunbookSteps
import Stencil

// How `Value`s look to Stencil. Stencil resolves `a.b.c` one member at a time and gives up with
// an empty string at the first nil. So every map, list and scalar is wrapped in an object that
// answers Stencil's `DynamicMemberLookup`: a missing member yields `UndefinedValue` instead of
// nil, further members keep it, and when it is the final value of the lookup Stencil calls its
// `Resolvable.resolve`, which throws. The throw happens inside the node being rendered, so
// Stencil attaches that node's token: the error gets its line. Wrappers that are the final value
// resolve to what filters and `if` understand: String, Int, Double, Bool, [Any].

/// A problem found while preparing or rendering a template, before it has a location.
struct TemplateProblem: Error {
    /// One line saying what is wrong.
    var summary: String
    /// What to do about it.
    var hint: String?
    /// More explanation.
    var detail: String?
    /// The exact location, when known.
    var location: SourceLocation?
    /// The variable path concerned, to find the tag that reads it.
    var path: String?

    init(summary: String, hint: String? = nil, detail: String? = nil, path: String? = nil) {
        self.summary = summary
        self.hint = hint
        self.detail = detail
        self.path = path
    }
}

/// State shared by everything that takes part in one rendering.
final class RenderSession {
    /// How secrets appear.
    let secretMode: SecretRendering
    /// Where secrets come from (none when checking without rendering).
    let secrets: SecretStore?
    /// The context's values, for hints.
    let namespaces: [String: [String: Value]]
    /// Names of the secrets read, as the store knows them.
    var secretsUsed: Set<String> = []
    /// The secrets each var's value was made from (`TemplateContext.varSecrets`).
    let varSecrets: [String: [String]]
    /// The value the capture filter received (`TemplateEngine.value(of:)`).
    var captured: Value?
    /// The problem behind the error being thrown, with more detail than Stencil's message carries.
    var problem: TemplateProblem?
    /// The template being rendered (or checked) first.
    var main: TemplateSource?
    /// Templates loaded by `include` and `extends`, by Stencil name.
    var loaded: [String: (source: TemplateSource, template: Template)] = [:]
    /// How many times a template was loaded, to stop runaway recursion.
    var loads = 0
    /// Templates read only to look for include cycles, by name (nil: unreadable).
    var scanned: [String: TemplateSource?] = [:]

    init(context: TemplateContext?, secretMode: SecretRendering, secrets: SecretStore?) {
        self.secretMode = secretMode
        self.secrets = secrets
        varSecrets = context?.varSecrets ?? [:]
        if let context {
            namespaces = ["params": context.params, "vars": context.vars, "host": context.host,
                          "facts": context.facts, "steps": context.steps, "groups": context.groups,
                          "hostvars": context.hostvars, "loop": context.loop ?? [:]]
        } else {
            namespaces = [:]
        }
    }

    /// The source of the template Stencil calls `name` (nil: the main one).
    func source(named name: String?) -> TemplateSource? {
        guard let name else { return main }
        if let loaded = loaded[name] { return loaded.source }
        if main?.name == name { return main }
        return nil
    }

    /// Loop iterations so far (nested loops multiply).
    private(set) var iterations = 0
    /// The most loop iterations one rendering may run.
    static let maximumIterations = 200_000

    /// Counts a loop of `count` iterations, failing past `maximumIterations` in all.
    func countIterations(_ count: Int) throws {
        iterations += count
        if iterations > Self.maximumIterations {
            throw fail(TemplateProblem(summary: "the template loops more than \(Self.maximumIterations) times",
                                       hint: "nested loops multiply: loop over less, or split the file"))
        }
    }

    /// Records `problem` and returns the error that carries it through Stencil.
    func fail(_ problem: TemplateProblem) -> TemplateSyntaxError {
        self.problem = problem
        return TemplateSyntaxError(problem.summary)
    }

    /// What a member lookup yields for `value`: a wrapper that knows its path. `taint` names
    /// the secrets `value` was made from (a var that read one).
    func member(_ value: Value, path: String, optional: Bool = false, taint: [String] = []) -> Any? {
        if case .null = value, optional { return nil }
        return element(value, path: path, taint: taint)
    }

    /// What an element of a resolved list or map (a loop variable) is: still wrapped, so its
    /// members stay checked. Scalars hash as their Swift values, so `"web" in host.groups` works.
    /// In a command, a string made from a secret is a `SecretReference`: the secret's value
    /// travels in the environment, never on the command line.
    func element(_ value: Value, path: String, taint: [String] = []) -> Any {
        switch value {
        case .map(let entries): return MapValue(entries: entries, path: path, session: self, taint: taint)
        case .list(let items): return ListValue(items: items, path: path, session: self, taint: taint)
        case .null: return NullValue(path: path, session: self)
        case .string(let text) where !taint.isEmpty && secretMode == .references:
            let pieces = secretPieces(text, secrets: taint)
            if pieces.contains(where: { if case .secret = $0 { return true } else { return false } }) {
                return SecretReference(pieces: pieces, path: path, session: self)
            }
            return ScalarValue(value: value, path: path, session: self)
        default: return ScalarValue(value: value, path: path, session: self)
        }
    }

    /// `text` cut where the value of one of `secrets` appears in it (the longest first where
    /// two start at the same place).
    func secretPieces(_ text: String, secrets names: [String]) -> [SecretReference.Piece] {
        let known = names.compactMap { name in secrets?.value(name).map { (name, $0) } }
            .filter { !$0.1.isEmpty }
            .sorted { $0.1.count > $1.1.count }
        var pieces: [SecretReference.Piece] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var first: (range: Range<Substring.Index>, name: String)?
            for (name, value) in known {
                if let range = rest.range(of: value), first == nil || range.lowerBound < first!.range.lowerBound {
                    first = (range, name)
                }
            }
            guard let first else { break }
            if first.range.lowerBound > rest.startIndex { pieces.append(.text(String(rest[..<first.range.lowerBound]))) }
            pieces.append(.secret(first.name))
            rest = rest[first.range.upperBound...]
        }
        if !rest.isEmpty { pieces.append(.text(String(rest))) }
        return pieces
    }

    /// The error for a missing member `key` of `parent` (whose members are `candidates`).
    func undefined(_ key: String, of parent: String, candidates: [String]) -> UndefinedValue {
        let path = parent.isEmpty ? key : parent + "." + key
        return UndefinedValue(
            problem: TemplateProblem(summary: "undefined variable `\(path)`",
                                     hint: RenderSession.hint(for: key, under: parent, candidates: candidates), path: path),
            session: self)
    }

    /// "did you mean …" when a candidate is close, else the names there are.
    static func hint(for key: String, under parent: String, candidates: [String]) -> String {
        let prefix = parent.isEmpty ? "" : parent + "."
        if let close = closestMatch(key, in: candidates) {
            return "did you mean `\(prefix)\(close)`?"
        }
        if candidates.isEmpty {
            return parent.isEmpty ? "nothing is defined here" : "`\(parent)` is empty here"
        }
        let shown = candidates.prefix(12).joined(separator: ", ")
        let more = candidates.count > 12 ? ", … (\(candidates.count) in all)" : ""
        return parent.isEmpty ? "defined here: \(shown)\(more)" : "`\(parent)` has: \(shown)\(more)"
    }

    /// Splits a member name into the name and whether it may be missing (`name?`, see `TemplateSource.prepare`).
    static func optionalMember(_ member: String) -> (name: String, optional: Bool) {
        member.hasSuffix("?") ? (String(member.dropLast()), true) : (member, false)
    }
}

/// A map: members are its keys (and `count`, `keys` when no key has that name). As a final
/// value it is its entries sorted by key, so `{% for k, v in m %}` works and `{% for k in m %}`
/// gives the keys.
final class MapValue: DynamicMemberLookup, Resolvable, CustomStringConvertible, CustomDebugStringConvertible {
    let entries: [String: Value]
    let path: String
    let session: RenderSession
    /// The secrets the whole map was made from.
    let taint: [String]
    /// The secrets each entry was made from (the `vars` namespace).
    let entryTaint: [String: [String]]

    init(entries: [String: Value], path: String, session: RenderSession, taint: [String] = [],
         entryTaint: [String: [String]] = [:])
    {
        self.entries = entries
        self.path = path
        self.session = session
        self.taint = taint
        self.entryTaint = entryTaint
    }

    /// The secrets the entry `key` was made from; reading it counts as reading them.
    private func taint(of key: String) -> [String] {
        let secrets = taint + (entryTaint[key] ?? [])
        session.secretsUsed.formUnion(secrets)
        return secrets
    }

    subscript(dynamicMember member: String) -> Any? {
        let (key, optional) = RenderSession.optionalMember(member)
        if let value = entries[key] {
            return session.member(value, path: path + "." + key, optional: optional, taint: taint(of: key))
        }
        switch key {
        case "count": return entries.count
        case "keys": return entries.keys.sorted()
        default: break
        }
        if optional { return nil }
        return session.undefined(key, of: path, candidates: entries.keys.sorted())
    }

    func resolve(_ context: Context) throws -> Any? {
        entries.keys.sorted().map { key in
            MapEntry(key: key, value: session.element(entries[key]!, path: path + "." + key, taint: taint(of: key)),
                     display: entries[key]!)
        } as [Any]
    }

    var description: String { Value.map(entries).description }
    var debugDescription: String { Value.map(entries).description }
}

/// One entry of a map being looped over; Stencil takes it apart like a tuple (key, value).
final class MapEntry: CustomReflectable, CustomStringConvertible, CustomDebugStringConvertible {
    let key: String
    let value: Any
    let display: Value

    init(key: String, value: Any, display: Value) {
        self.key = key
        self.value = value
        self.display = display
    }

    var customMirror: Mirror {
        Mirror(self, children: [(label: "key", value: key as Any), (label: "value", value: value)], displayStyle: .tuple)
    }

    var description: String { "\(key)=\(display)" }
    var debugDescription: String {
        if case .string(let text) = display { return "\(key.debugDescription): \(text.debugDescription)" }
        return "\(key.debugDescription): \(display)"
    }
}

/// A list: members are indexes, `first`, `last` and `count`. As a final value it is an array.
final class ListValue: DynamicMemberLookup, Resolvable, CustomStringConvertible, CustomDebugStringConvertible {
    let items: [Value]
    let path: String
    let session: RenderSession
    /// The secrets the list was made from.
    let taint: [String]

    init(items: [Value], path: String, session: RenderSession, taint: [String] = []) {
        self.items = items
        self.path = path
        self.session = session
        self.taint = taint
    }

    subscript(dynamicMember member: String) -> Any? {
        let (key, optional) = RenderSession.optionalMember(member)
        var index: Int?
        switch key {
        case "count": return items.count
        case "first": index = items.isEmpty ? nil : 0
        case "last": index = items.isEmpty ? nil : items.count - 1
        default:
            if let number = Int(key), number >= 0, number < items.count { index = number }
        }
        if let index {
            return session.member(items[index], path: "\(path).\(key)", optional: optional, taint: taint)
        }
        if optional { return nil }
        let summary: String
        if Int(key) != nil || key == "first" || key == "last" {
            summary = "`\(path)` has no element `\(key)` (it has \(items.count))"
        } else {
            summary = "undefined variable `\(path).\(key)`"
        }
        let hint = "a list has `count`, `first`, `last` and indexes 0…\(max(0, items.count - 1)); loop over it with `{% for x in \(path) %}`"
        return UndefinedValue(problem: TemplateProblem(summary: summary, hint: hint, path: "\(path).\(key)"), session: session)
    }

    func resolve(_ context: Context) throws -> Any? {
        items.enumerated().map { session.element($1, path: "\(path).\($0)", taint: taint) } as [Any]
    }

    var description: String { Value.list(items).description }
    var debugDescription: String { Value.list(items).description }
}

/// A string, number or bool reached by a member lookup; it has no members of its own (except a
/// string's `count`, `first`, `last` and indexes, as in Stencil). As a final value it is the
/// Swift value; inside a resolved list it stays wrapped, and hashes as the Swift value so that
/// Stencil's `in` (which compares `AnyHashable`s) finds it.
final class ScalarValue: DynamicMemberLookup, Resolvable, CustomStringConvertible, CustomDebugStringConvertible,
    Hashable, _HasCustomAnyHashableRepresentation
{
    let value: Value
    let path: String
    let session: RenderSession

    init(value: Value, path: String, session: RenderSession) {
        self.value = value
        self.path = path
        self.session = session
    }

    /// The Swift value Stencil's filters and operators understand; a whole double is an Int, so
    /// it prints without `.0`.
    static func native(_ value: Value) -> Any {
        switch value {
        case .string(let s): return s
        case .int(let i): return i
        case .double(let d):
            if d.isFinite, d.rounded() == d, abs(d) < 1e15 { return Int(d) }
            return d
        case .bool(let b): return b
        default: return value.description
        }
    }

    subscript(dynamicMember member: String) -> Any? {
        let (key, optional) = RenderSession.optionalMember(member)
        if case .string(let text) = value {
            switch key {
            case "count": return text.count
            case "first": if let c = text.first { return String(c) }
            case "last": if let c = text.last { return String(c) }
            default:
                if let index = Int(key), index >= 0, index < text.count {
                    return String(text[text.index(text.startIndex, offsetBy: index)])
                }
            }
        }
        if optional { return nil }
        return UndefinedValue(
            problem: TemplateProblem(summary: "undefined variable `\(path).\(key)`: `\(path)` is \(value.kindDescription), not a map",
                                     hint: "use `\(path)` itself", path: "\(path).\(key)"),
            session: session)
    }

    func resolve(_ context: Context) throws -> Any? { ScalarValue.native(value) }

    var description: String { String(describing: ScalarValue.native(value)) }
    /// As an element of a printed list: strings quoted.
    var debugDescription: String {
        if case .string(let text) = value { return text.debugDescription }
        return description
    }

    /// The Swift value, as `AnyHashable`.
    var hashableNative: AnyHashable {
        switch ScalarValue.native(value) {
        case let s as String: return AnyHashable(s)
        case let i as Int: return AnyHashable(i)
        case let d as Double: return AnyHashable(d)
        case let b as Bool: return AnyHashable(b)
        default: return AnyHashable(value)
        }
    }

    static func == (lhs: ScalarValue, rhs: ScalarValue) -> Bool { lhs.hashableNative == rhs.hashableNative }
    func hash(into hasher: inout Hasher) { hasher.combine(hashableNative) }
    func _toCustomAnyHashable() -> AnyHashable? { hashableNative }
}

/// A null value: it renders as nothing, is false in `if`, and `default` replaces it.
final class NullValue: DynamicMemberLookup, Resolvable, CustomStringConvertible {
    let path: String
    let session: RenderSession

    init(path: String, session: RenderSession) {
        self.path = path
        self.session = session
    }

    subscript(dynamicMember member: String) -> Any? {
        let (key, optional) = RenderSession.optionalMember(member)
        if optional { return nil }
        return UndefinedValue(
            problem: TemplateProblem(summary: "undefined variable `\(path).\(key)`: `\(path)` is null",
                                     hint: "give `\(path)` a value, or use `\(path).\(key)|default:…`", path: "\(path).\(key)"),
            session: session)
    }

    func resolve(_ context: Context) throws -> Any? { nil }

    var description: String { "" }
}

/// A reference to a missing name. Members of it are itself (the first missing name is what the
/// error names); as the final value of a lookup it throws.
final class UndefinedValue: DynamicMemberLookup, Resolvable {
    let problem: TemplateProblem
    let session: RenderSession

    init(problem: TemplateProblem, session: RenderSession) {
        self.problem = problem
        self.session = session
    }

    subscript(dynamicMember member: String) -> Any? { self }

    func resolve(_ context: Context) throws -> Any? {
        throw session.fail(problem)
    }
}

/// `secrets`: `secrets.NAME` is the value (file content) or `${RUNBOOK_SECRET_NAME}` (commands),
/// and the name is recorded. The namespace itself cannot be printed or looped over.
final class SecretsValue: DynamicMemberLookup, Resolvable {
    let session: RenderSession

    init(session: RenderSession) {
        self.session = session
    }

    subscript(dynamicMember member: String) -> Any? {
        let (name, optional) = RenderSession.optionalMember(member)
        let environmentName = String(Shell.secretVariable(name).dropFirst("RUNBOOK_SECRET_".count))
        let store = session.secrets
        let known = store?.value(name) != nil ? name : store?.value(environmentName) != nil ? environmentName : nil
        guard let known, let value = store?.value(known) else {
            if optional { return nil }
            var hint = "define it with the environment variable \(Shell.secretVariable(name)) or a line `\(name)=…` in .runbook/secrets.env (mode 0600)"
            if let close = closestMatch(name, in: store?.names ?? []) {
                hint = "did you mean `secrets.\(close)`? Otherwise " + hint
            }
            return UndefinedValue(problem: TemplateProblem(summary: "undefined secret `secrets.\(name)`", hint: hint,
                                                           path: "secrets.\(name)"),
                                  session: session)
        }
        session.secretsUsed.insert(known)
        switch session.secretMode {
        case .values: return ScalarValue(value: .string(value), path: "secrets.\(known)", session: session)
        case .references: return SecretReference(pieces: [.secret(known)], path: "secrets.\(known)", session: session)
        }
    }

    func resolve(_ context: Context) throws -> Any? {
        throw session.fail(TemplateProblem(summary: "`secrets` can only be used one secret at a time",
                                           hint: "write `secrets.NAME`", path: "secrets"))
    }
}

/// A secret in a command: `${RUNBOOK_SECRET_NAME}`, filled in from the environment of the
/// remote command; the `quote` filter makes it `"${RUNBOOK_SECRET_NAME}"`. A string made from
/// secrets (a var such as `postgresql://app:{{ secrets.DB_PASSWORD }}@db/app`) is its text with
/// each secret's value a reference: `"postgresql://app:${RUNBOOK_SECRET_DB_PASSWORD}@db/app"`.
final class SecretReference: DynamicMemberLookup, CustomStringConvertible {
    /// A piece of the string: text as written, or a secret's value.
    enum Piece: Equatable {
        case text(String)
        case secret(String)
    }

    let pieces: [Piece]
    let path: String
    let session: RenderSession

    init(pieces: [Piece], path: String, session: RenderSession) {
        self.pieces = pieces
        self.path = path
        self.session = session
    }

    /// The text with `${RUNBOOK_SECRET_NAME}` for each secret, unquoted (`|raw`).
    var description: String {
        pieces.map {
            switch $0 {
            case .text(let text): return text
            case .secret(let name): return "${\(Shell.secretVariable(name))}"
            }
        }.joined()
    }

    /// The text as it goes between double quotes: the text escaped, each secret a reference.
    var doubleQuoted: String {
        pieces.map {
            switch $0 {
            case .text(let text): return Shell.escapeForDoubleQuotes(text)
            case .secret(let name): return "${\(Shell.secretVariable(name))}"
            }
        }.joined()
    }

    subscript(dynamicMember member: String) -> Any? {
        let (key, optional) = RenderSession.optionalMember(member)
        if optional { return nil }
        return UndefinedValue(problem: TemplateProblem(summary: "undefined variable `\(path).\(key)`: `\(path)` is a string",
                                                       hint: "use `\(path)` itself", path: "\(path).\(key)"),
                              session: session)
    }
}

/// A value a template resolved, as a `Value` again (the capture filter, `loop:`); nil for
/// something a template value cannot be.
func capturedValue(_ any: Any?) -> Value? {
    switch any {
    case nil: return .null
    case let v as MapValue: return .map(v.entries)
    case let v as ListValue: return .list(v.items)
    case let v as ScalarValue: return v.value
    case is NullValue: return .null
    case let v as Int: return .int(v)
    case let v as Double: return .double(v)
    case let v as Bool: return .bool(v)
    case let v as String: return .string(v)
    case let v as [Any]:
        var items: [Value] = []
        for element in v {
            guard let item = capturedValue(element) else { return nil }
            items.append(item)
        }
        return .list(items)
    case let v as [String: Any]:
        var entries: [String: Value] = [:]
        for (key, element) in v {
            guard let item = capturedValue(element) else { return nil }
            entries[key] = item
        }
        return .map(entries)
    default: return nil
    }
}

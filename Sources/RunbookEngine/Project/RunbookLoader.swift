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
    public static let topLevelKeys = ["name", "description", "hosts", "params", "vars", "serial", "max_fail", "rollback", "schedule", "notify", "steps"]
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

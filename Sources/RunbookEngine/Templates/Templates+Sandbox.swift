import Foundation
import RunbookCore
import RunbookSteps
import Stencil

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Finding template files: only regular files inside the templates directory, after resolving
/// symbolic links.
struct TemplateSandbox: Sendable {
    /// The templates directory as given (for messages).
    let directory: String

    /// The directory as shown in diagnostics, without a leading `./`.
    var displayDirectory: String {
        var shown = directory
        while shown.hasPrefix("./") { shown.removeFirst(2) }
        while shown.count > 1 && shown.hasSuffix("/") { shown.removeLast() }
        return shown
    }

    /// The file named in diagnostics for the template `name`.
    func displayName(_ name: String) -> String {
        displayDirectory.isEmpty || displayDirectory == "." ? name : displayDirectory + "/" + name
    }

    /// `name` with `.` and empty components removed and `..` applied; nil when it climbs out.
    static func normalize(_ name: String) -> String? {
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..":
                if parts.isEmpty { return nil }
                parts.removeLast()
            default: parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    /// The real path of the template `name` and its normalized name, or why it cannot be read.
    func resolve(_ name: String) -> Result<(path: String, name: String), TemplateProblem> {
        let shownDirectory = displayDirectory.isEmpty ? "templates" : displayDirectory
        if name.isEmpty {
            return .failure(TemplateProblem(summary: "the template path is empty",
                                            hint: "give a path relative to \(shownDirectory)/"))
        }
        if name.hasPrefix("/") || name.hasPrefix("~") {
            return .failure(TemplateProblem(
                summary: "template `\(name)` is an absolute path; templates can only be read from \(shownDirectory)/",
                hint: "give a path relative to \(shownDirectory)/"))
        }
        guard let normalized = TemplateSandbox.normalize(name), !normalized.isEmpty else {
            return .failure(TemplateProblem(
                summary: "template `\(name)` is outside \(shownDirectory)/: `..` leaves the templates directory",
                hint: "templates can only read files inside \(shownDirectory)/"))
        }
        guard let root = TemplateSandbox.realPath(directory) else {
            return .failure(TemplateProblem(summary: "templates directory `\(shownDirectory)` does not exist",
                                            hint: "create it, or run from the project root (--root)"))
        }
        guard let real = TemplateSandbox.realPath(root + "/" + normalized) else {
            var problem = TemplateProblem(summary: "template `\(normalized)` not found in \(shownDirectory)/")
            let known = listTemplates(root: root)
            if let close = closestMatch(normalized, in: known) {
                problem.hint = "did you mean `\(close)`?"
            } else if !known.isEmpty {
                problem.hint = "templates: " + known.prefix(12).joined(separator: ", ") + (known.count > 12 ? ", …" : "")
            }
            return .failure(problem)
        }
        guard real.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            return .failure(TemplateProblem(
                summary: "template `\(normalized)` resolves to `\(real)`, outside \(shownDirectory)/",
                hint: "templates can only read files inside \(shownDirectory)/; a symbolic link may not point out of it"))
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: real, isDirectory: &isDirectory), !isDirectory.boolValue else {
            return .failure(TemplateProblem(summary: "template `\(normalized)` is a directory, not a file"))
        }
        return .success((real, normalized))
    }

    /// The bytes of the template file `name`.
    func read(_ name: String) -> Result<(bytes: [UInt8], name: String), TemplateProblem> {
        switch resolve(name) {
        case .failure(let problem): return .failure(problem)
        case .success(let (path, normalized)):
            guard let data = FileManager.default.contents(atPath: path) else {
                return .failure(TemplateProblem(summary: "cannot read template `\(normalized)`",
                                                hint: "check the file's permissions"))
            }
            return .success((Array(data), normalized))
        }
    }

    /// The text of the template file `name`, which must be UTF-8.
    func readText(_ name: String) -> Result<(text: String, name: String), TemplateProblem> {
        switch read(name) {
        case .failure(let problem): return .failure(problem)
        case .success(let (bytes, normalized)):
            guard let text = String(bytes: bytes, encoding: .utf8) else {
                let at = YAMLDocument.firstInvalidUTF8(bytes)
                var problem = TemplateProblem(summary: "template `\(normalized)` is not UTF-8 text"
                                                  + (at.map { " (byte 0x\(String($0.byte, radix: 16)) at line \($0.line), column \($0.column))" } ?? ""),
                                              hint: "save it as UTF-8, or use a `copy` step for binary files")
                if let at { problem.location = SourceLocation(file: displayName(normalized), line: at.line, column: at.column) }
                return .failure(problem)
            }
            return .success((text, normalized))
        }
    }

    /// The canonical absolute path of `path` with every symbolic link resolved; nil when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Relative paths of the files under `root`, sorted (for hints).
    private func listTemplates(root: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
        var names: [String] = []
        while let next = enumerator.nextObject() as? String, names.count < 500 {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + next, isDirectory: &isDirectory), !isDirectory.boolValue {
                names.append(next)
            }
        }
        return names.sorted()
    }
}

/// Stencil's loader for `include` and `extends`: only files inside the templates directory,
/// each prepared like the main template and checked for unknown names before it renders.
final class SandboxLoader: Loader {
    /// Loads beyond this many in one rendering mean an include that includes itself.
    static let maximumLoads = 1000

    let sandbox: TemplateSandbox
    /// Unowned: the session keeps the loaded templates, whose environment keeps this loader.
    unowned let session: RenderSession
    /// Top-level names every template may read.
    let knownNames: Set<String>

    init(sandbox: TemplateSandbox, session: RenderSession, knownNames: Set<String>) {
        self.sandbox = sandbox
        self.session = session
        self.knownNames = knownNames
    }

    func loadTemplate(name: String, environment: Environment) throws -> Template {
        session.loads += 1
        if session.loads > SandboxLoader.maximumLoads {
            throw session.fail(TemplateProblem(summary: "more than \(SandboxLoader.maximumLoads) templates included",
                                               hint: "a template probably includes itself"))
        }
        let text: String
        let normalized: String
        switch sandbox.readText(name) {
        case .failure(let problem): throw session.fail(problem)
        case .success(let read): (text, normalized) = read
        }
        if let cached = session.loaded[normalized] { return cached.template }
        let source: TemplateSource
        switch TemplateSource.prepare(text, name: normalized, file: sandbox.displayName(normalized), firstLine: 1, firstColumn: 1) {
        case .failure(let problem):
            throw session.fail(problem)
        case .success(let prepared): source = prepared
        }
        if let cycle = cycle(from: normalized, source: source) {
            throw session.fail(TemplateProblem(summary: "`\(normalized)` includes itself: " + cycle.joined(separator: " → "),
                                               hint: "break the cycle of `include`/`extends`"))
        }
        let template = TemplateEngine.makeTemplate(source, environment: environment)
        session.loaded[normalized] = (source, template)
        let visible = knownNames.union(session.loopVariables)
        if let problem = TemplateEngine.unknownNames(in: source, known: visible, session: session).first {
            throw session.fail(problem)
        }
        return template
    }
}

extension SandboxLoader {
    /// The chain of literal `include`/`extends` names leading from `start` back to it, if any.
    func cycle(from start: String, source: TemplateSource) -> [String]? {
        var visited: Set<String> = [start]
        func visit(_ source: TemplateSource, path: [String]) -> [String]? {
            for (name, _) in source.analysis.includes {
                guard let next = TemplateSandbox.normalize(name) else { continue }
                if next == start { return path + [next] }
                guard visited.insert(next).inserted, let nextSource = scanned(next) else { continue }
                if let found = visit(nextSource, path: path + [next]) { return found }
            }
            return nil
        }
        return visit(source, path: [start])
    }

    /// The prepared source of the template `name`, read once per rendering; nil when it cannot be read.
    private func scanned(_ name: String) -> TemplateSource? {
        if let loaded = session.loaded[name] { return loaded.source }
        if let scanned = session.scanned[name] { return scanned }
        var result: TemplateSource?
        if case .success(let (text, normalized)) = sandbox.readText(name),
           case .success(let source) = TemplateSource.prepare(text, name: normalized, file: sandbox.displayName(normalized),
                                                              firstLine: 1, firstColumn: 1)
        {
            result = source
        }
        session.scanned[name] = result
        return result
    }
}

extension RenderSession {
    /// Loop variables of every template of this rendering (an included template sees its includer's).
    var loopVariables: Set<String> {
        var names = main?.analysis.loopVariables ?? []
        for (_, loaded) in loaded { names.formUnion(loaded.source.analysis.loopVariables) }
        return names
    }
}

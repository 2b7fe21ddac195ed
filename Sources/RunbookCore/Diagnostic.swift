/// A position in a source file; line and column start at 1 (0 means unknown).
public struct SourceLocation: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The file, as the user named it.
    public var file: String
    /// The line, from 1; 0 when unknown.
    public var line: Int
    /// The column, from 1; 0 when unknown.
    public var column: Int

    /// A location in `file` at `line`:`column`.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line:column`, leaving out what is unknown.
    public var description: String {
        if line <= 0 { return file }
        if column <= 0 { return "\(file):\(line)" }
        return "\(file):\(line):\(column)"
    }
}

/// A problem found in the user's input: what, where (file, line, column, field) and what to do.
public struct Diagnostic: Sendable, Hashable, Codable, CustomStringConvertible {
    /// How bad a diagnostic is.
    public enum Severity: String, Sendable, Hashable, Codable {
        /// The input cannot be used.
        case error
        /// The input can be used, but probably not as meant.
        case warning
    }

    /// How bad it is.
    public var severity: Severity
    /// One line saying what is wrong.
    public var summary: String
    /// More explanation, when useful.
    public var detail: String?
    /// Where in which file.
    public var location: SourceLocation?
    /// The dotted path of the field, like `hosts.app2.port`.
    public var field: String?
    /// What to do about it.
    public var hint: String?

    /// A diagnostic with every part given.
    public init(
        severity: Severity = .error, summary: String, detail: String? = nil,
        location: SourceLocation? = nil, field: String? = nil, hint: String? = nil
    ) {
        self.severity = severity
        self.summary = summary
        self.detail = detail
        self.location = location
        self.field = field
        self.hint = hint
    }

    /// An error diagnostic.
    public static func error(
        _ summary: String, detail: String? = nil, at location: SourceLocation? = nil,
        field: String? = nil, hint: String? = nil
    ) -> Diagnostic {
        Diagnostic(
            severity: .error, summary: summary, detail: detail, location: location, field: field,
            hint: hint)
    }

    /// A warning diagnostic.
    public static func warning(
        _ summary: String, detail: String? = nil, at location: SourceLocation? = nil,
        field: String? = nil, hint: String? = nil
    ) -> Diagnostic {
        Diagnostic(
            severity: .warning, summary: summary, detail: detail, location: location,
            field: field, hint: hint)
    }

    /// The compiler-style text: `file:line:col: error: field: summary`, then indented detail and hint lines.
    public var rendered: String {
        var text = ""
        if let location { text += "\(location): " }
        text += "\(severity.rawValue): "
        if let field, !field.isEmpty { text += "\(field): " }
        text += summary
        if let detail, !detail.isEmpty {
            for line in detail.split(separator: "\n", omittingEmptySubsequences: false) {
                text += "\n  \(line)"
            }
        }
        if let hint, !hint.isEmpty { text += "\n  hint: \(hint)" }
        return text
    }

    /// Same as `rendered`.
    public var description: String { rendered }
}

/// One or more diagnostics thrown together, errors (and any warnings found alongside them).
public struct DiagnosticError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Every diagnostic, in the order found.
    public var diagnostics: [Diagnostic]

    /// An error carrying `diagnostics`.
    public init(_ diagnostics: [Diagnostic]) {
        self.diagnostics = diagnostics
    }

    /// An error carrying one diagnostic.
    public init(_ diagnostic: Diagnostic) {
        self.diagnostics = [diagnostic]
    }

    /// The diagnostics of severity error.
    public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }

    /// All diagnostics rendered, one after another.
    public var description: String {
        diagnostics.map(\.rendered).joined(separator: "\n")
    }
}

/// A collector of diagnostics, so that a loader reports every problem instead of stopping at the first.
public struct Diagnostics: Sendable, Hashable {
    /// Every diagnostic collected, in order.
    public private(set) var all: [Diagnostic] = []

    /// An empty collector.
    public init() {}

    /// Adds one diagnostic.
    public mutating func append(_ diagnostic: Diagnostic) {
        all.append(diagnostic)
    }

    /// Adds several diagnostics.
    public mutating func append(contentsOf diagnostics: [Diagnostic]) {
        all += diagnostics
    }

    /// Adds an error.
    public mutating func error(
        _ summary: String, at location: SourceLocation?, field: String? = nil,
        hint: String? = nil, detail: String? = nil
    ) {
        append(.error(summary, detail: detail, at: location, field: field, hint: hint))
    }

    /// Adds a warning.
    public mutating func warning(
        _ summary: String, at location: SourceLocation?, field: String? = nil,
        hint: String? = nil, detail: String? = nil
    ) {
        append(.warning(summary, detail: detail, at: location, field: field, hint: hint))
    }

    /// Whether any error was collected.
    public var hasErrors: Bool { all.contains { $0.severity == .error } }

    /// The errors collected.
    public var errors: [Diagnostic] { all.filter { $0.severity == .error } }

    /// The warnings collected.
    public var warnings: [Diagnostic] { all.filter { $0.severity == .warning } }

    /// The same diagnostics ordered by file, line and column (unlocated ones last), keeping the order of ties.
    public func sortedByLocation() -> Diagnostics {
        let ordered = all.enumerated().sorted { a, b in
            let la = a.element.location
            let lb = b.element.location
            switch (la, lb) {
            case (nil, nil): return a.offset < b.offset
            case (nil, _): return false
            case (_, nil): return true
            case (let x?, let y?):
                if x.file != y.file { return x.file < y.file }
                if x.line != y.line { return x.line < y.line }
                if x.column != y.column { return x.column < y.column }
                return a.offset < b.offset
            }
        }
        var sorted = Diagnostics()
        sorted.append(contentsOf: ordered.map(\.element))
        return sorted
    }

    /// Throws everything collected when there is at least one error.
    public func throwIfErrors() throws(DiagnosticError) {
        if hasErrors { throw DiagnosticError(all) }
    }
}

/// The candidate closest to `word` by edit distance, for "did you mean" hints; nil when none is close.
///
/// A candidate is close when its edit distance (Levenshtein, counting a swap of neighbours as one edit) is at most 2, or at most a third of the
/// word's length, and smaller than the word's length. Case is ignored; among equally close
/// candidates the first wins.
public func closestMatch(_ word: String, in candidates: [String]) -> String? {
    let target = Array(word.lowercased())
    guard !target.isEmpty else { return nil }
    let limit = max(2, target.count / 3)
    var best: (candidate: String, distance: Int)?
    for candidate in candidates where candidate != word {
        let distance = levenshtein(target, Array(candidate.lowercased()))
        guard distance <= limit, distance < target.count else { continue }
        if best == nil || distance < best!.distance {
            best = (candidate, distance)
        }
    }
    return best?.candidate
}

/// The edit distance between two character arrays (insertions, deletions, substitutions, and swaps of neighbours).
func levenshtein(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var beforePrevious = Array(repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = Array(repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], beforePrevious[j - 2] + 1)
            }
        }
        (beforePrevious, previous, current) = (previous, current, beforePrevious)
    }
    return previous[b.count]
}

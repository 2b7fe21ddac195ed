/// A LIMIT or PATTERN choosing hosts: comma-separated terms, each a host, a group, `all` or a glob.
///
/// A glob (`*` any run of characters, `?` one character) is matched against host names and
/// group names. A term starting with `!` excludes what it matches; exclusions apply after every
/// inclusion, and a pattern made only of exclusions starts from all hosts (as in Ansible).
public struct HostPattern: Sendable, Hashable, CustomStringConvertible {
    /// One comma-separated term.
    public struct Term: Sendable, Hashable {
        /// The text without its `!`.
        public var text: String
        /// Whether the term had a leading `!`.
        public var excluded: Bool

        /// Whether the text has glob characters.
        public var isGlob: Bool { text.contains("*") || text.contains("?") }
    }

    /// The terms, in the order written.
    public let terms: [Term]

    /// Parses `text`; an empty pattern or an empty term is an error.
    public init(_ text: String) throws(DiagnosticError) {
        var terms: [Term] = []
        var problems: [Diagnostic] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: false) {
            var term = raw.trimmingWhitespace()
            var excluded = false
            if term.hasPrefix("!") {
                excluded = true
                term = String(term.dropFirst()).trimmingWhitespace()
            }
            if term.isEmpty {
                problems.append(
                    .error(
                        "empty term in host pattern \(text.debugDescription)",
                        hint: "write host or group names separated by commas, e.g. \"web,db1\""))
                continue
            }
            terms.append(Term(text: term, excluded: excluded))
        }
        if !problems.isEmpty { throw DiagnosticError(problems) }
        self.terms = terms
    }

    /// The pattern as written, normalised.
    public var description: String {
        terms.map { ($0.excluded ? "!" : "") + $0.text }.joined(separator: ",")
    }

    /// The hosts selected, in inventory order without duplicates; a term that matches nothing is an error.
    public func select(from inventory: Inventory) throws(DiagnosticError) -> [Host] {
        var included = Set<String>()
        var excluded = Set<String>()
        var problems: [Diagnostic] = []
        let hasInclusion = terms.contains { !$0.excluded }
        if !hasInclusion {
            included = Set(inventory.hosts.map(\.name))
        }
        for term in terms {
            let matched = names(matching: term.text, in: inventory)
            guard let matched else {
                problems.append(unmatched(term, in: inventory))
                continue
            }
            if term.excluded {
                excluded.formUnion(matched)
            } else {
                included.formUnion(matched)
            }
        }
        if !problems.isEmpty { throw DiagnosticError(problems) }
        return inventory.hosts.filter { included.contains($0.name) && !excluded.contains($0.name) }
    }

    /// The host names a term stands for, or nil when it matches no host and no group.
    private func names(matching text: String, in inventory: Inventory) -> Set<String>? {
        if text == "all" {
            return Set(inventory.hosts.map(\.name))
        }
        var result = Set<String>()
        var matchedSomething = false
        let isGlob = text.contains("*") || text.contains("?")
        for host in inventory.hosts
        where isGlob ? globMatch(text, host.name) : host.name == text {
            result.insert(host.name)
            matchedSomething = true
        }
        for (group, members) in inventory.groups
        where isGlob ? globMatch(text, group) : group == text {
            result.formUnion(members)
            matchedSomething = true
        }
        return matchedSomething ? result : nil
    }

    private func unmatched(_ term: Term, in inventory: Inventory) -> Diagnostic {
        let candidates = inventory.hosts.map(\.name) + inventory.groupNames
        var hint: String?
        if let suggestion = closestMatch(term.text, in: candidates) {
            hint = "did you mean \(suggestion.debugDescription)?"
        } else if !candidates.isEmpty {
            hint = "run `runbook hosts` to list hosts and groups"
        }
        let what = term.isGlob ? "pattern" : "name"
        return .error(
            "no host or group matches the \(what) \(term.text.debugDescription)", hint: hint)
    }
}

/// Whether `text` matches the glob `pattern`, where `*` is any run of characters and `?` one character.
func globMatch(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern)
    let t = Array(text)
    var pi = 0
    var ti = 0
    var starP = -1
    var starT = 0
    while ti < t.count {
        if pi < p.count, p[pi] == "?" || p[pi] == t[ti] {
            pi += 1
            ti += 1
        } else if pi < p.count, p[pi] == "*" {
            starP = pi
            starT = ti
            pi += 1
        } else if starP >= 0 {
            pi = starP + 1
            starT += 1
            ti = starT
        } else {
            return false
        }
    }
    while pi < p.count, p[pi] == "*" { pi += 1 }
    return pi == p.count
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs and line breaks.
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = lastIndex(where: { !isSpace($0) })!
        return String(self[first...last])
    }
}

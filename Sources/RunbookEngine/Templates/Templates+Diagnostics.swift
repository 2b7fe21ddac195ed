import RunbookCore
import RunbookSteps
import Stencil

// Stencil's errors become diagnostics with the user's file and line.
//
// Stencil reports an error with the token of the node being rendered (and, through `include`,
// a stack of the including tags). Its own line numbers are not used: they are wrong for a line
// whose text also appears earlier in the file, and errors in a `for` loop's list carry the
// `{% endfor %}` token. Tokens are mapped to our scan instead (see `TemplateSource`).

extension TemplateEngine {
    /// Filters known to every template, for "did you mean" hints.
    static let filterNames = ["capitalize", "default", "filter", "indent", "join", "length", "lower", "lowercase",
                              "quote", "split", "trim", "upper", "uppercase"]
    /// Tags known to every template, for hints.
    static let tagNames = ["block", "break", "continue", "elif", "else", "empty", "endblock", "endfilter", "endfor",
                           "endif", "extends", "filter", "for", "if", "ifnot", "include"]

    /// `problem` as a diagnostic, at its own location or else at `fallback`.
    static func diagnostic(_ problem: TemplateProblem, at fallback: SourceLocation) -> Diagnostic {
        .error(problem.summary, detail: problem.detail, at: problem.location ?? fallback, hint: problem.hint)
    }

    /// The diagnostic for an error thrown by Stencil while parsing or rendering.
    static func diagnostic(for error: any Error, session: RenderSession, fallback: SourceLocation) -> Diagnostic {
        guard let syntaxError = error as? TemplateSyntaxError else {
            return .error((session.secrets?.masker ?? SecretMasker(secrets: [])).mask("\(error)"), at: fallback)
        }
        let problem = session.problem.flatMap { $0.summary == syntaxError.reason ? $0 : nil }
        // Innermost first: the tag that failed, then the tags that included its template.
        let tokens = syntaxError.stackTrace + (syntaxError.token.map { [$0] } ?? [])
        let located = tokens.compactMap { locate($0, session: session, path: problem?.path) }
        var primary = problem?.location ?? located.first ?? fallback
        if primary.line == 0 { primary = fallback }
        let outer = problem?.location == nil ? Array(located.dropFirst()) : located
        var detailLines = outer.prefix(8).map { "included from \($0)" }
        if outer.count > 8 { detailLines.append("… and \(outer.count - 8) more") }
        if let detail = problem?.detail { detailLines.insert(detail, at: 0) }
        let detail = detailLines.isEmpty ? nil : detailLines.joined(separator: "\n")
        if let problem {
            return .error(problem.summary, detail: detail, at: primary, hint: problem.hint)
        }
        // Stencil's own messages can quote resolved values (a range's bounds, say): mask secrets.
        let masker = session.secrets?.masker ?? SecretMasker(secrets: [])
        let (summary, hint) = describe(masker.mask(syntaxError.reason))
        return .error(summary, detail: detail, at: primary, hint: hint)
    }

    /// Where the Stencil token `token` is in the user's text.
    private static func locate(_ token: Token, session: RenderSession, path: String?) -> SourceLocation? {
        guard let source = session.source(named: token.sourceMap.filename),
              var index = source.tokenIndex(of: ObjectIdentifier(token), contents: token.contents)
        else { return nil }
        // A `for` node carries its `endfor` (or `empty`) token, an `ifnot` node its `else`/`endif`.
        if ["endfor", "empty", "else", "endif"].contains(source.tokens[index].tagName), let opener = source.opener(of: index) {
            index = opener
        }
        // An `if` node carries the `if` token for errors in its `elif` conditions too.
        if let path, source.tokens[index].tagName == "if", !mentions(source.contents(of: index), path) {
            if let elif = source.conditionChain(openedAt: index).first(where: { mentions(source.contents(of: $0), path) }) {
                index = elif
            }
        }
        return source.location(ofPreparedOffset: source.tokens[index].start)
    }

    private static func mentions(_ contents: String, _ path: String) -> Bool {
        contents.replacingOccurrences(of: "?", with: "").contains(path)
    }

    /// A summary and hint for one of Stencil's messages.
    static func describe(_ reason: String) -> (summary: String, hint: String?) {
        var message = reason
        while message.hasSuffix(".") { message.removeLast() }
        if let name = quoted(in: message, after: "Unknown filter '") {
            let hint = closestMatch(name, in: filterNames).map { "did you mean `\($0)`?" }
                ?? "filters: " + filterNames.joined(separator: ", ")
            return ("unknown filter `\(name)`", hint)
        }
        if let name = quoted(in: message, after: "Unknown template tag '") {
            let hint = closestMatch(name, in: tagNames).map { "did you mean `\($0)`?" }
                ?? "tags: " + tagNames.joined(separator: ", ")
            return ("unknown tag `\(name)`", hint)
        }
        if message.hasSuffix("was not found") {
            return ("template syntax error: \(message)", "every `{% if %}` needs `{% endif %}`, every `{% for %}` `{% endfor %}`")
        }
        return ("template syntax error: \(message)", nil)
    }

    private static func quoted(in message: String, after prefix: String) -> String? {
        guard message.hasPrefix(prefix) else { return nil }
        let rest = message.dropFirst(prefix.count)
        guard let end = rest.firstIndex(of: "'") else { return nil }
        return String(rest[..<end])
    }
}

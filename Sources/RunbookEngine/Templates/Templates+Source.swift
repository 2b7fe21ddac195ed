import RunbookCore
import RunbookSteps

/// A template's text prepared for Stencil, and the maps back to the text the user wrote.
final class TemplateSource {
    /// Names visible in every template besides the context's: Stencil's loop and block helpers.
    static let builtinNames: Set<String> = ["forloop", "block"]
    /// The tag that a `{# comment #}` becomes, so that comments on their own line vanish like block tags.
    static let commentTag = "__runbook_comment__"
    /// The tag that a `{% raw %}…{% endraw %}` section becomes: it prints the section's text.
    static let rawTag = "__runbook_raw__"
    /// The most words one tag may hold, and the deepest tags may nest.
    static let maximumWords = 256
    static let maximumNesting = 64

    /// The filter added to every `{{ }}` of a shell command (see `prepare(shell:)`); its argument
    /// names the quoting the value lands in: `none`, `single` or `double`.
    static let shellFilter = "__runbook_shell__"
    /// The filter added to the list of a `for` loop: looping over a string or number is an error.
    static let iterableFilter = "__runbook_iterable__"
    /// The private filter that hands an expression's value back as a `Value` (a step's `loop:`).
    static let captureFilter = "__runbook_capture__"

    /// The Stencil template name (the path under templates/); nil for an inline string.
    let name: String?
    /// The file named in diagnostics.
    let file: String
    /// The line of the first line of the text (1 for files; the location's line for inline strings).
    let firstLine: Int
    /// The column of the first character of the text.
    let firstColumn: Int
    /// Characters added before the user's text on its first line (for conditions).
    let prefixLength: Int
    /// The text given to Stencil.
    let text: String
    /// The scalars of `text`.
    let scalars: [Unicode.Scalar]
    /// For each scalar of `text`, its offset in the user's text.
    let originalOffsets: [Int]
    /// Offsets in the user's text where each line starts.
    let lineStarts: [Int]
    /// The tokens of `text`, in Stencil's order.
    let tokens: [ScannedToken]
    /// Text without template syntax: it renders as written and has nothing to check.
    var isPlainText: Bool { tokens.allSatisfy { $0.kind == .text } }
    /// What the template reads and binds.
    let analysis: TemplateAnalysis
    /// The texts of its `raw` sections, in order.
    let rawTexts: [String]
    /// Stencil's token objects mapped to indexes in `tokens`, once the Stencil template exists.
    var tokenIndexes: [ObjectIdentifier: Int] = [:]

    private init(name: String?, file: String, firstLine: Int, firstColumn: Int, prefixLength: Int,
                 text: [Unicode.Scalar], originalOffsets: [Int], lineStarts: [Int], tokens: [ScannedToken],
                 rawTexts: [String])
    {
        self.rawTexts = rawTexts
        self.name = name
        self.file = file
        self.firstLine = firstLine
        self.firstColumn = firstColumn
        self.prefixLength = prefixLength
        self.scalars = text
        self.text = String(String.UnicodeScalarView(text))
        self.originalOffsets = originalOffsets
        self.lineStarts = lineStarts
        self.tokens = tokens
        self.analysis = TemplateScanner.analyze(text, tokens: tokens)
    }

    /// Prepares `original` for Stencil; a tag that is never closed is an error.
    ///
    /// Rewrites (lines and columns still map back to `original`):
    /// - a line holding nothing but block tags and comments vanishes, indentation and newline
    ///   included (Jinja's `trim_blocks` plus `lstrip_blocks`, limited to such lines, so a tag
    ///   inside a line of text keeps the spaces around it); `{%+` keeps the indentation and `+%}`
    ///   the newline;
    /// - `{# … #}` becomes an empty block tag, `{% raw %}…{% endraw %}` a tag printing the text;
    /// - `a.b|default:x` becomes `a.b?|default:x`: the last member may be missing (so `default`
    ///   applies) while every other undefined name stays an error;
    /// - `for x in a.b` becomes `for x in a.b|__runbook_iterable__:"a.b"`, so that looping over a
    ///   string or number is an error instead of no iteration;
    /// - with `shell` (a command), every `{{ x }}` becomes `{{ x|__runbook_shell__:"CONTEXT" }}`,
    ///   where CONTEXT is the shell quoting the author's text puts the tag in (`none`, `single`
    ///   or `double`, read from the literal text before it): the value renders as data in that
    ///   place, one word outside quotes, escaped inside them, and can never become code. A tag
    ///   whose last filter is `raw` is left as written (the author's opt-out); one ending in
    ///   `quote` outside quotes is a shell word already.
    static func prepare(_ original: String, name: String?, file: String, firstLine: Int, firstColumn: Int,
                        prefixLength: Int = 0, shell: Bool = false) -> Result<TemplateSource, TemplateProblem>
    {
        let source = Array(original.unicodeScalars)
        var lineStarts = [0]
        for (offset, scalar) in source.enumerated() where scalar == "\n" { lineStarts.append(offset + 1) }
        let (tokens, unclosed) = TemplateScanner.scan(source)
        if let unclosed {
            let opener = unclosed.closer == "{% endraw %}" ? "{% raw %}"
                : TemplateScanner.string(source, unclosed.offset..<min(unclosed.offset + 2, source.count))
            var problem = TemplateProblem(summary: "`\(opener)` is never closed", hint: "close it with `\(unclosed.closer)`")
            if opener.hasPrefix("{{") || opener == "{%" {
                problem.detail = "to write `{{` or `{%` as text, put it between `{% raw %}` and `{% endraw %}`"
            }
            problem.location = location(ofOriginalOffset: unclosed.offset, lineStarts: lineStarts, file: file, firstLine: firstLine,
                                        firstColumn: firstColumn, prefixLength: prefixLength)
            return .failure(problem)
        }
        let kept = keptRanges(source, tokens: tokens)

        var text: [Unicode.Scalar] = []
        var offsets: [Int] = []
        var rawTexts: [String] = []
        text.reserveCapacity(source.count + 16)
        offsets.reserveCapacity(source.count + 16)
        func copy(_ range: Range<Int>) {
            for offset in range {
                text.append(source[offset])
                offsets.append(offset)
            }
        }
        func add(_ string: String, at offset: Int) {
            for scalar in string.unicodeScalars {
                text.append(scalar)
                offsets.append(offset)
            }
        }
        var quoting = ShellQuoting.none
        var nesting = 0
        func limitProblem(_ summary: String, at offset: Int) -> TemplateProblem {
            var problem = TemplateProblem(summary: summary, hint: "split it into smaller steps or templates")
            problem.location = location(ofOriginalOffset: offset, lineStarts: lineStarts, file: file, firstLine: firstLine,
                                        firstColumn: firstColumn, prefixLength: prefixLength)
            return problem
        }
        for (index, token) in tokens.enumerated() {
            switch token.kind {
            case .text:
                let range = kept[index] ?? token.start..<token.end
                if shell { quoting.advance(over: source[range]) }
                copy(range)
            case .comment, .raw:
                // An empty tag (a comment) or one that prints a stored text; either keeps the newlines.
                if token.kind == .raw {
                    add("{%" + rawTag + " \(rawTexts.count) ", at: token.start)
                    rawTexts.append(TemplateScanner.string(source, token.inner))
                } else {
                    add("{%" + commentTag, at: token.start)
                }
                for offset in token.start..<token.end where source[offset] == "\n" {
                    text.append("\n")
                    offsets.append(offset)
                }
                add("%}", at: token.end - 1)
            case .variable, .block:
                let words = TemplateScanner.words(source, in: token.inner)
                // Bounds that keep a hostile expression from exhausting the stack when Stencil
                // parses or evaluates it (both recurse once per operator and per nested tag).
                if words.count > maximumWords {
                    return .failure(limitProblem("an expression of \(words.count) words is more than a template needs (\(maximumWords) at most)",
                                                 at: token.start))
                }
                if token.kind == .block {
                    switch token.tagName {
                    case "for", "if", "ifnot", "block", "filter": nesting += 1
                    case "endfor", "endif", "endblock", "endfilter": nesting -= 1
                    default: break
                    }
                    if nesting > maximumNesting {
                        return .failure(limitProblem("tags nest more than \(maximumNesting) levels deep", at: token.start))
                    }
                    // Stencil builds `a...b` whole before the loop starts (1...1000000000 is
                    // 8 GB); `range` is bounded.
                    if token.tagName == "for", words.contains(where: { $0.text.contains("...") }) {
                        var problem = limitProblem("`a...b` ranges are not supported in templates", at: token.start)
                        problem.hint = "write `{% for i in a|range:b %}` (a, a+1, … b-1; 100000 numbers at most)"
                        return .failure(problem)
                    }
                }
                var insertions: [(offset: Int, text: String)] = []
                for (position, word) in words.enumerated() where word.kind == .path && position + 2 < words.count {
                    guard words[position + 1].text == "|", words[position + 2].kind == .filter,
                          words[position + 2].text == "default", isDottedPath(word.text)
                    else { continue }
                    insertions.append((word.end, "?"))
                }
                if token.kind == .block, token.tagName == "for",
                   let inIndex = words.firstIndex(where: { $0.kind == .keyword && $0.text == "in" }),
                   inIndex + 1 < words.count, words[inIndex + 1].kind == .path,
                   inIndex + 2 == words.count || words[inIndex + 2].text == "where",
                   !words[inIndex + 1].text.contains("\""), !words[inIndex + 1].text.contains("...")
                {
                    let list = words[inIndex + 1]
                    insertions.append((list.end, "|\(iterableFilter):\"\(list.text)\""))
                }
                if shell, token.kind == .variable {
                    let pipes = words.indices.filter { words[$0].text == "|" }
                    let lastFilter = pipes.last.flatMap { $0 + 1 < words.count ? words[$0 + 1].text : nil }
                    if lastFilter != "raw" && !(lastFilter == "quote" && quoting == .none),
                       let end = token.inner.last(where: { !source[$0].properties.isWhitespace }) {
                        insertions.append((end + 1, "|\(shellFilter):\"\(quoting.rawValue)\""))
                    }
                }
                insertions.sort { $0.offset < $1.offset }
                var cursor = token.start
                for (insertion, added) in insertions {
                    copy(cursor..<insertion)
                    add(added, at: insertion)
                    cursor = insertion
                }
                copy(cursor..<token.end)
            }
        }
        let (rescanned, _) = TemplateScanner.scan(text)
        return .success(TemplateSource(
            name: name, file: file, firstLine: firstLine, firstColumn: firstColumn, prefixLength: prefixLength,
            text: text, originalOffsets: offsets, lineStarts: lineStarts, tokens: rescanned, rawTexts: rawTexts))
    }

    /// For text tokens cut because they touch a line of nothing but block tags and comments, the part kept.
    private static func keptRanges(_ source: [Unicode.Scalar], tokens: [ScannedToken]) -> [Int: Range<Int>] {
        func isTag(_ token: ScannedToken) -> Bool { token.kind == .block || token.kind == .comment || token.kind == .raw }
        func isBlank(_ range: Range<Int>) -> Bool { range.allSatisfy { source[$0] == " " || source[$0] == "\t" } }
        var kept: [Int: Range<Int>] = [:]
        func range(_ index: Int) -> Range<Int> { kept[index] ?? tokens[index].start..<tokens[index].end }
        var index = 0
        while index < tokens.count {
            guard isTag(tokens[index]) else {
                index += 1
                continue
            }
            // Only blanks between the start of the line and the first tag.
            var indentation: Int?
            if index == 0 {
                indentation = tokens[index].start
            } else if tokens[index - 1].kind == .text {
                let before = tokens[index - 1]
                var lineStart = before.end
                while lineStart > before.start, source[lineStart - 1] != "\n" { lineStart -= 1 }
                if isBlank(lineStart..<before.end), lineStart > before.start || before.start == 0 {
                    indentation = lineStart
                }
            }
            guard let indentationStart = indentation else {
                index += 1
                continue
            }
            // Tags (with blanks between them) up to the end of the line.
            var last = index
            var next = index + 1
            while next < tokens.count {
                if isTag(tokens[next]) {
                    last = next
                    next += 1
                } else if tokens[next].kind == .text, isBlank(tokens[next].start..<tokens[next].end),
                          next + 1 < tokens.count, isTag(tokens[next + 1])
                {
                    next += 1
                } else {
                    break
                }
            }
            // Only blanks between the last tag and the end of the line.
            var lineEnd: Int?
            if last + 1 == tokens.count {
                lineEnd = tokens[last].end
            } else if tokens[last + 1].kind == .text {
                let after = tokens[last + 1]
                var position = after.start
                while position < after.end, source[position] == " " || source[position] == "\t" || source[position] == "\r" {
                    position += 1
                }
                if position < after.end, source[position] == "\n" {
                    lineEnd = position + 1
                } else if position == after.end, last + 2 == tokens.count {
                    lineEnd = after.end
                }
            }
            if let lineEnd {
                if index > 0, tokens[index].leadingMarker != "+" {
                    kept[index - 1] = range(index - 1).lowerBound..<indentationStart
                }
                for between in index...last where tokens[between].kind == .text {
                    kept[between] = tokens[between].start..<tokens[between].start
                }
                if last + 1 < tokens.count, tokens[last].trailingMarker != "+" {
                    kept[last + 1] = lineEnd..<range(last + 1).upperBound
                }
            }
            index = last + 1
        }
        return kept
    }

    /// Whether `text` is `name.member…` made only of names and numbers (the form `?` can follow).
    static func isDottedPath(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, let first = parts[0].unicodeScalars.first, !(first.value >= 0x30 && first.value <= 0x39) else {
            return false
        }
        return parts.allSatisfy { part in
            !part.isEmpty && part.unicodeScalars.allSatisfy { scalar in
                let v = scalar.value
                return (v >= 0x30 && v <= 0x39) || (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A)
                    || scalar == "_" || scalar == "-"
            }
        }
    }

    /// The user's location of offset `offset` of the text given to Stencil.
    func location(ofPreparedOffset offset: Int) -> SourceLocation {
        let original = offset < originalOffsets.count ? originalOffsets[offset] : (originalOffsets.last.map { $0 + 1 } ?? 0)
        return location(ofOriginalOffset: original)
    }

    /// The user's location of offset `offset` of the text they wrote.
    func location(ofOriginalOffset offset: Int) -> SourceLocation {
        TemplateSource.location(ofOriginalOffset: offset, lineStarts: lineStarts, file: file, firstLine: firstLine,
                                firstColumn: firstColumn, prefixLength: prefixLength)
    }

    private static func location(ofOriginalOffset offset: Int, lineStarts: [Int], file: String, firstLine: Int,
                                 firstColumn: Int, prefixLength: Int) -> SourceLocation
    {
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if lineStarts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        let column = offset - lineStarts[low] + 1
        if low == 0 {
            return SourceLocation(file: file, line: firstLine, column: firstColumn + max(0, column - 1 - prefixLength))
        }
        return SourceLocation(file: file, line: firstLine + low, column: column)
    }

    /// The index in `tokens` of a Stencil token: by identity, else (for tokens Stencil made up
    /// while reporting a filter error) the first tag whose inside contains its text.
    func tokenIndex(of token: ObjectIdentifier?, contents: String) -> Int? {
        if let token, let index = tokenIndexes[token] { return index }
        guard !contents.isEmpty else { return nil }
        let needle = contents.replacingOccurrences(of: "?", with: "")
        return tokens.firstIndex { token in
            token.kind != .text
                && TemplateScanner.string(scalars, token.inner).replacingOccurrences(of: "?", with: "").contains(needle)
        }
    }

    /// The opening tag (`for`, `if`…) of the closing or middle tag at `index`, if it has one.
    func opener(of index: Int) -> Int? {
        let closers: Set<String> = ["endfor", "empty", "endif", "else", "elif", "endblock", "endfilter"]
        guard tokens[index].kind == .block, closers.contains(tokens[index].tagName) else { return nil }
        var depth = 0
        var position = index - 1
        while position >= 0 {
            let token = tokens[position]
            if token.kind == .block {
                switch token.tagName {
                case "endfor", "endif", "endblock", "endfilter": depth += 1
                case "for", "if", "ifnot", "block", "filter":
                    if depth == 0 { return position }
                    depth -= 1
                default: break
                }
            }
            position -= 1
        }
        return nil
    }

    /// The `if`/`elif` tags of the chain opened at `index`, in order.
    func conditionChain(openedAt index: Int) -> [Int] {
        var chain = [index]
        var depth = 0
        var position = index + 1
        while position < tokens.count {
            let token = tokens[position]
            if token.kind == .block {
                switch token.tagName {
                case "if", "ifnot", "for", "block", "filter": depth += 1
                case "endif", "endfor", "endblock", "endfilter":
                    if depth == 0 { return chain }
                    depth -= 1
                case "elif" where depth == 0: chain.append(position)
                default: break
                }
            }
            position += 1
        }
        return chain
    }

    /// The inside of the tag at `index`.
    func contents(of index: Int) -> String {
        TemplateScanner.string(scalars, tokens[index].inner)
    }
}

/// Where the author's shell text puts a `{{ }}`: outside quotes, or inside single or double
/// quotes. Read from the literal text only, as POSIX sh reads it (a backslash escapes the
/// next character outside single quotes).
enum ShellQuoting: String, Sendable {
    case none, single, double

    /// The quoting after `text`.
    mutating func advance<C: Collection>(over text: C) where C.Element == Unicode.Scalar {
        var escaped = false
        for scalar in text {
            if escaped { escaped = false; continue }
            switch (self, scalar) {
            case (.none, "\\"), (.double, "\\"): escaped = true
            case (.none, "'"): self = .single
            case (.none, "\""): self = .double
            case (.single, "'"): self = .none
            case (.double, "\""): self = .none
            default: break
            }
        }
    }
}

import RunbookCore
import RunbookSteps

// Our own reading of a template's text, independent of Stencil's lexer:
// - exact line and column of every tag (Stencil finds a token's line by searching for the
//   first line with the same text, so repeated lines get the wrong number or none);
// - the small rewrites applied before Stencil sees the text (see `TemplateSource.prepare`);
// - the names an expression reads, for the static check of top-level names.

/// One token of a template, found the way Stencil's lexer finds them.
struct ScannedToken {
    /// What kind of token.
    enum Kind: Equatable {
        case text, variable, block, comment
        /// `{% raw %}…{% endraw %}`, whole; `inner` is the text kept verbatim.
        case raw
    }

    /// What kind of token.
    var kind: Kind
    /// Offset (in Unicode scalars) of the first character, `{` for tags.
    var start: Int
    /// Offset just past the last character.
    var end: Int
    /// For tags, the offsets of the inside, without the delimiters and the `-`/`+` markers.
    var inner: Range<Int>
    /// For block tags: the marker after `{%` (`-` or `+`), if any.
    var leadingMarker: Unicode.Scalar?
    /// For block tags: the marker before `%}` (`-` or `+`), if any.
    var trailingMarker: Unicode.Scalar?
    /// For block tags, the tag's name (`if`, `for`, `endfor`…); for labelled loops, `for`.
    var tagName: String
}

/// A word of a tag's inside, with its offset.
struct ExpressionWord {
    /// What the word is.
    enum Kind: Equatable {
        /// A name or dotted path (`params.workers`, `s`, `x.0`).
        case path
        /// A filter name, after `|`.
        case filter
        /// A string, number or boolean literal.
        case literal
        /// An operator or keyword (`and`, `==`, `in`…).
        case keyword
        /// Punctuation: `|`, `:`, `,`, `(`, `)`, `[`, `]`.
        case punctuation
    }

    /// What the word is.
    var kind: Kind
    /// The text.
    var text: String
    /// Offset (in Unicode scalars) in the template text.
    var start: Int
    /// Offset just past the word.
    var end: Int

    /// The first name of a path: `params` for `params.workers`, `x` for `x[0]`.
    var root: String {
        var root = ""
        for character in text {
            if character == "." || character == "[" || character == "?" { break }
            root.append(character)
        }
        return root
    }
}

/// A name read by a template, with where it is.
struct NameReference {
    /// The path as written (`params.workers`), without the optional marker.
    var path: String
    /// Whether the last member may be missing (`params.workers|default:4`).
    var optional: Bool
    /// The first name of the path.
    var root: String
    /// Offset of the path in the text given to Stencil.
    var offset: Int
}

/// What a template reads and binds, found without rendering it.
struct TemplateAnalysis {
    /// Every name path read, in order.
    var references: [NameReference] = []
    /// Names bound by `for` loops (`s` in `for s in vars.servers`).
    var loopVariables: Set<String> = []
    /// Templates named literally by `include` and `extends`, with the offset of the tag.
    var includes: [(name: String, offset: Int)] = []
}

enum TemplateScanner {
    static let openBrace: Unicode.Scalar = "{"
    static let closeBrace: Unicode.Scalar = "}"

    /// The tokens of `scalars`, as Stencil's lexer splits them (plus `raw` sections); the second
    /// value is the offset of a tag that is never closed (Stencil silently drops the rest of the
    /// template there) and what closes it.
    static func scan(_ scalars: [Unicode.Scalar]) -> (tokens: [ScannedToken], unclosed: (offset: Int, closer: String)?) {
        var tokens: [ScannedToken] = []
        var position = 0
        let count = scalars.count
        func text(_ start: Int, _ end: Int) -> ScannedToken {
            ScannedToken(kind: .text, start: start, end: end, inner: start..<end, leadingMarker: nil, trailingMarker: nil,
                         tagName: "")
        }
        while position < count {
            var found: Int?
            var previousWasBrace = false
            var index = position
            while index < count {
                let scalar = scalars[index]
                if previousWasBrace && (scalar == "{" || scalar == "%" || scalar == "#") {
                    found = index
                    break
                }
                previousWasBrace = scalar == openBrace
                index += 1
            }
            guard let opener = found else {
                tokens.append(text(position, count))
                break
            }
            let start = opener - 1
            if start > position { tokens.append(text(position, start)) }
            let closer: Unicode.Scalar = scalars[opener] == "{" ? "}" : scalars[opener]
            var end: Int?
            var previousWasCloser = false
            index = start
            while index < count {
                let scalar = scalars[index]
                if previousWasCloser && scalar == closeBrace {
                    end = index + 1
                    break
                }
                previousWasCloser = scalar == closer
                index += 1
            }
            guard let tokenEnd = end else {
                let opener = string(scalars, start..<start + 2)
                return (tokens, (start, opener == "{{" ? "}}" : opener == "{%" ? "%}" : "#}"))
            }
            let token = tag(scalars, start: start, end: tokenEnd)
            if token.kind == .block, string(scalars, token.inner).trimmingCharacters(in: .whitespacesAndNewlines) == "raw" {
                guard let raw = rawSection(scalars, opening: token) else {
                    return (tokens, (start, "{% endraw %}"))
                }
                tokens.append(raw)
                position = raw.end
                continue
            }
            tokens.append(token)
            position = tokenEnd
        }
        return (tokens, nil)
    }

    /// The `raw` section opened by `opening`, up to its `{% endraw %}`. The newline right after
    /// `{% raw %}` and the indentation before an `{% endraw %}` that starts its line are not part
    /// of the text.
    private static func rawSection(_ scalars: [Unicode.Scalar], opening: ScannedToken) -> ScannedToken? {
        var search = opening.end
        while search + 1 < scalars.count {
            guard scalars[search] == "{", scalars[search + 1] == "%" else {
                search += 1
                continue
            }
            // `{%`, an optional marker, blanks, `endraw`, blanks, an optional marker, `%}`.
            var close = search + 2
            func skipBlanks() {
                while close < scalars.count, scalars[close] == " " || scalars[close] == "\t" || scalars[close] == "\n" { close += 1 }
            }
            if close < scalars.count, scalars[close] == "-" || scalars[close] == "+" { close += 1 }
            skipBlanks()
            let word = Array("endraw".unicodeScalars)
            guard close + word.count <= scalars.count, Array(scalars[close..<close + word.count]) == word else {
                search += 2
                continue
            }
            close += word.count
            skipBlanks()
            if close < scalars.count, scalars[close] == "-" || scalars[close] == "+" { close += 1 }
            guard close + 1 < scalars.count, scalars[close] == "%", scalars[close + 1] == "}" else {
                search += 2
                continue
            }
            let closing = tag(scalars, start: search, end: close + 2)
            var textStart = opening.end
            var position = textStart
            while position < search, scalars[position] == " " || scalars[position] == "\t" || scalars[position] == "\r" {
                position += 1
            }
            if position < search, scalars[position] == "\n" { textStart = position + 1 }
            var textEnd = search
            while textEnd > textStart, scalars[textEnd - 1] == " " || scalars[textEnd - 1] == "\t" { textEnd -= 1 }
            if !(textEnd == textStart || scalars[textEnd - 1] == "\n") { textEnd = search }
            return ScannedToken(kind: .raw, start: opening.start, end: closing.end, inner: textStart..<textEnd,
                                leadingMarker: opening.leadingMarker, trailingMarker: closing.trailingMarker, tagName: "raw")
        }
        return nil
    }

    private static func tag(_ scalars: [Unicode.Scalar], start: Int, end: Int) -> ScannedToken {
        let kind: ScannedToken.Kind
        switch scalars[start + 1] {
        case "{": kind = .variable
        case "%": kind = .block
        default: kind = .comment
        }
        var innerStart = start + 2
        var innerEnd = end - 2
        var leading: Unicode.Scalar?
        var trailing: Unicode.Scalar?
        if kind == .block, innerStart < innerEnd {
            if scalars[innerStart] == "-" || scalars[innerStart] == "+" {
                leading = scalars[innerStart]
                innerStart += 1
            }
            if innerEnd - 1 >= innerStart, scalars[innerEnd - 1] == "-" || scalars[innerEnd - 1] == "+" {
                trailing = scalars[innerEnd - 1]
                innerEnd -= 1
            }
        }
        innerEnd = max(innerStart, innerEnd)
        var token = ScannedToken(kind: kind, start: start, end: end, inner: innerStart..<innerEnd,
                                 leadingMarker: leading, trailingMarker: trailing, tagName: "")
        if kind == .block {
            let words = String(String.UnicodeScalarView(scalars[innerStart..<innerEnd]))
                .split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" })
            if let first = words.first {
                token.tagName = first.hasSuffix(":") && words.count > 1 ? String(words[1]) : String(first)
            }
        }
        return token
    }

    /// The words of a tag's inside (`scalars[range]`), classified.
    static func words(_ scalars: [Unicode.Scalar], in range: Range<Int>) -> [ExpressionWord] {
        var words: [ExpressionWord] = []
        var index = range.lowerBound
        var afterBar = false
        while index < range.upperBound {
            let scalar = scalars[index]
            if scalar == " " || scalar == "\n" || scalar == "\t" || scalar == "\r" {
                index += 1
                continue
            }
            if scalar == "'" || scalar == "\"" {
                var end = index + 1
                while end < range.upperBound, scalars[end] != scalar { end += 1 }
                end = min(end + 1, range.upperBound)
                words.append(ExpressionWord(kind: .literal, text: string(scalars, index..<end), start: index, end: end))
                index = end
                afterBar = false
                continue
            }
            if "|:,()[]".unicodeScalars.contains(scalar) {
                words.append(ExpressionWord(kind: .punctuation, text: String(Character(scalar)), start: index, end: index + 1))
                afterBar = scalar == "|"
                index += 1
                continue
            }
            var end = index
            while end < range.upperBound {
                let s = scalars[end]
                if s == " " || s == "\n" || s == "\t" || s == "\r" || s == "'" || s == "\"" || "|:,()[]".unicodeScalars.contains(s) {
                    break
                }
                end += 1
            }
            let text = string(scalars, index..<end)
            let kind: ExpressionWord.Kind
            if afterBar {
                kind = .filter
            } else if keywords.contains(text) {
                kind = .keyword
            } else if text == "true" || text == "false" || Double(text) != nil || text.first == "."
                        || text.first?.isNumber == true || text.first == "-"
            {
                kind = .literal
            } else {
                kind = .path
            }
            words.append(ExpressionWord(kind: kind, text: text, start: index, end: end))
            afterBar = false
            index = end
        }
        return words
    }

    static let keywords: Set<String> = ["and", "or", "not", "in", "if", "else", "where", "==", "!=", "<", ">", "<=", ">="]

    static func string(_ scalars: [Unicode.Scalar], _ range: Range<Int>) -> String {
        String(String.UnicodeScalarView(scalars[range]))
    }

    /// What the tags of `tokens` read and bind.
    static func analyze(_ scalars: [Unicode.Scalar], tokens: [ScannedToken]) -> TemplateAnalysis {
        var analysis = TemplateAnalysis()
        func read(_ words: ArraySlice<ExpressionWord>) {
            for word in words where word.kind == .path {
                let optional = word.text.hasSuffix("?")
                let path = optional ? String(word.text.dropLast()) : word.text
                analysis.references.append(NameReference(path: path, optional: optional, root: word.root, offset: word.start))
            }
        }
        for token in tokens {
            switch token.kind {
            case .variable:
                read(words(scalars, in: token.inner)[...])
            case .block:
                var all = words(scalars, in: token.inner)
                if all.count > 2, all[1].text == ":", all[2].text == "for" {
                    all.removeFirst(2)  // a loop label: `outer: for x in …`
                }
                guard let name = all.first?.text else { continue }
                let rest = all.dropFirst()
                switch name {
                case "if", "elif", "ifnot":
                    read(rest)
                case "for":
                    guard let inIndex = rest.firstIndex(where: { $0.kind == .keyword && $0.text == "in" }) else { continue }
                    for word in rest[..<inIndex] where word.kind == .path {
                        analysis.loopVariables.insert(word.text)
                    }
                    read(rest[(inIndex + 1)...])
                case "include", "extends":
                    if let target = rest.first, target.kind == .literal, target.text.count >= 2,
                       target.text.first == "\"" || target.text.first == "'"
                    {
                        analysis.includes.append((String(target.text.dropFirst().dropLast()), token.start))
                    }
                    read(rest)
                default:
                    continue
                }
            case .text, .comment, .raw:
                continue
            }
        }
        return analysis
    }
}

/// A template's text prepared for Stencil, and the maps back to the text the user wrote.
final class TemplateSource {
    /// Names visible in every template besides the context's: Stencil's loop and block helpers.
    static let builtinNames: Set<String> = ["forloop", "block"]
    /// The tag that a `{# comment #}` becomes, so that comments on their own line vanish like block tags.
    static let commentTag = "__runbook_comment__"
    /// The tag that a `{% raw %}…{% endraw %}` section becomes: it prints the section's text.
    static let rawTag = "__runbook_raw__"
    /// The filter added to the list of a `for` loop: looping over a string or number is an error.
    static let iterableFilter = "__runbook_iterable__"

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
    ///   string or number is an error instead of no iteration.
    static func prepare(_ original: String, name: String?, file: String, firstLine: Int, firstColumn: Int,
                        prefixLength: Int = 0) -> Result<TemplateSource, TemplateProblem>
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
        for (index, token) in tokens.enumerated() {
            switch token.kind {
            case .text:
                copy(kept[index] ?? token.start..<token.end)
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

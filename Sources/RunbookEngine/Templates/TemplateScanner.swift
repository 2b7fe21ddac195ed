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

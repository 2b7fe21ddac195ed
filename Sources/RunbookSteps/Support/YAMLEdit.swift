import Foundation
import RunbookCore

/// One in-place edit of a YAML file (`yaml_set`): the new text is spliced into the original
/// where the edited node is written, so every byte outside that node stays as it was. The
/// result is parsed again and must read back as intended, or the edit is refused.
struct YAMLEdit {
    /// What to do at the path.
    enum Operation {
        /// Set the node to a value (scalar, list or mapping); `.null` removes the key.
        case set(Value)
        /// Set (or, with nil, remove) one option of the command held at the path.
        case flag(Flag)
    }

    /// An option inside a command: `--workers 4`, `--workers=4`, `-w 4`, `-w4`.
    struct Flag {
        var name: String
        var aliases: [String] = []
        /// The new value; nil removes the option.
        var value: String?
        /// Where an absent option goes: right after the first word that is this program
        /// (or ends in `/` + it); nil: after the command's first word.
        var after: String?

        var spellings: [String] { [name] + aliases }
    }

    /// Why an edit cannot be made, for the operator: names the path and the file's line.
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ message: String) { description = message }
    }

    let path: [String]
    let operation: Operation
    /// Add missing keys (the last ones of the path) instead of failing.
    var create = false

    /// Splits a dotted path: `services.web.command`, `services.web.command.0`; a key holding
    /// dots is written in double quotes (`labels."traefik.enable"`).
    static func parsePath(_ text: String) throws(Failure) -> [String] {
        var segments: [String] = []
        var current = ""
        var quoted = false
        var wasQuoted = false
        for character in text {
            if character == "\"" { quoted.toggle(); wasQuoted = true; continue }
            if character == "." && !quoted {
                guard !current.isEmpty || wasQuoted else { throw Failure("path \(text.debugDescription) has an empty key") }
                segments.append(current)
                current = ""
                wasQuoted = false
                continue
            }
            current.append(character)
        }
        guard !quoted else { throw Failure("path \(text.debugDescription) has an unclosed quote") }
        guard !current.isEmpty || wasQuoted else { throw Failure("path \(text.debugDescription) has an empty key") }
        segments.append(current)
        return segments
    }

    var pathText: String { path.map { $0.contains(".") ? "\"\($0)\"" : $0 }.joined(separator: ".") }

    // MARK: Applying

    /// The file's bytes with the edit made; the same bytes when nothing needs to change.
    func apply(to bytes: [UInt8]) throws(Failure) -> [UInt8] {
        let source: YAMLSource
        do { source = try YAMLSource(bytes) } catch let error as YAMLSource.ParseError {
            throw Failure("the file is not valid YAML" + (error.line > 0 ? " (line \(error.line))" : "") + ": \(error.message)")
        } catch { throw Failure("the file is not valid YAML: \(error)") }
        let replacements = try self.replacements(in: source)
        if replacements.isEmpty { return bytes }
        var text = source.text
        for replacement in replacements.sorted(by: { $0.range.lowerBound > $1.range.lowerBound }) {
            text.replaceSubrange(replacement.range, with: Array(replacement.text.unicodeScalars))
        }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: text)
        let result = Array(String(view).utf8)
        try verify(result)
        return result
    }

    struct Replacement {
        var range: Range<Int>
        var text: String
    }

    /// Where the path leads in a file.
    enum Target {
        /// The node itself, with its key (in a mapping) and the collection holding it.
        case node(YAMLSourceNode, key: YAMLSourceNode?, parent: YAMLSourceNode?)
        /// The last key is not in the mapping but comes from a merged anchor (`<<: *app`):
        /// the node there, and the mapping the edit lands on.
        case inherited(YAMLSourceNode, into: YAMLSourceNode, anchor: String)
        /// The keys from `missing` on are not there; `mapping` is the deepest one that is.
        case missing(mapping: YAMLSourceNode, keys: [String], at: Int)
    }

    func resolve(_ source: YAMLSource) throws(Failure) -> Target {
        var current = source.root
        var key: YAMLSourceNode?
        var parent: YAMLSourceNode?
        for (index, segment) in path.enumerated() {
            let here = path[..<index].joined(separator: ".")
            let place = here.isEmpty ? "the document" : here
            switch current.kind {
            case .alias(let name):
                throw Failure("\(place) (line \(source.line(of: current.start))) is the alias *\(name): an edit below it would change &\(name) and every node that uses it; edit the anchor's own path")
            case .mapping(let entries, _):
                if let entry = entries.first(where: { $0.key.scalar == segment && segment != "<<" }) {
                    parent = current
                    key = entry.key
                    current = entry.value
                    continue
                }
                if let (found, anchor) = merged(segment, in: current, source: source, depth: 0) {
                    if index == path.count - 1 { return .inherited(found, into: current, anchor: anchor) }
                    throw Failure("\(here.isEmpty ? "" : here + ".")\(segment) comes from the anchor &\(anchor) through `<<` (line \(source.line(of: found.start))): yaml_set does not copy a merged mapping; edit x.\(path[(index + 1)...].joined(separator: ".")) under the anchor, or write \(segment) in \(place) first")
                }
                return .missing(mapping: current, keys: Array(path[index...]), at: key?.start ?? current.start)
            case .sequence(let items, _):
                guard let position = Int(segment), position >= 0, position < items.count else {
                    throw Failure("\(place) (line \(source.line(of: current.start))) is a list of \(items.count) item(s); \(segment.debugDescription) is not an index in it (0 to \(items.count - 1))")
                }
                parent = current
                key = nil
                current = items[position]
            case .scalar(let value, _):
                throw Failure("\(place) (line \(source.line(of: current.start))) is the scalar \(cut(value).debugDescription); it has no key \(segment.debugDescription)")
            }
        }
        return .node(current, key: key, parent: parent)
    }

    /// A key found through the mapping's merge keys (`<<: *a` or `<<: [*a, *b]`), depth first
    /// in order, as YAML resolves them; with the anchor it came from.
    private func merged(_ key: String, in mapping: YAMLSourceNode, source: YAMLSource, depth: Int) -> (YAMLSourceNode, String)? {
        guard depth < 32, case .mapping(let entries, _) = mapping.kind else { return nil }
        for entry in entries where entry.key.scalar == "<<" {
            var sources: [YAMLSourceNode] = []
            switch entry.value.kind {
            case .alias: sources = [entry.value]
            case .sequence(let items, _): sources = items
            default: continue
            }
            for alias in sources {
                guard case .alias(let name) = alias.kind, let target = source.anchors[name],
                      case .mapping(let targetEntries, _) = target.kind else { continue }
                if let found = targetEntries.first(where: { $0.key.scalar == key }) { return (found.value, name) }
                if let deeper = merged(key, in: target, source: source, depth: depth + 1) { return (deeper.0, name) }
            }
        }
        return nil
    }

    private func replacements(in source: YAMLSource) throws(Failure) -> [Replacement] {
        let target = try resolve(source)
        switch (operation, target) {
        case (.set(.null), .missing):
            return []
        case (.set(let value), .missing(let mapping, let keys, let at)):
            guard create else {
                let found = path.count - keys.count
                throw Failure("\(pathText): \(keys[0].debugDescription) is not in \(found == 0 ? "the document" : path[..<found].joined(separator: ".")) (line \(source.line(of: at))); add `create: true` to add it")
            }
            return [try insert(keys: keys, value: .value(value), into: mapping, source: source)]
        case (.flag(let flag), .missing):
            if flag.value == nil { return [] }
            throw Failure("\(pathText) is not in the file: there is no command there to set an option in")
        case (.set(.null), .inherited):
            throw Failure("\(pathText) comes from an anchor through `<<`; removing it would change every node that uses the anchor")
        case (.set(let value), .inherited(_, let mapping, _)):
            return [try insert(keys: [path.last!], value: .value(value), into: mapping, source: source)]
        case (.flag(let flag), .inherited(let node, let mapping, let anchor)):
            let text = try editedCopy(of: node, flag: flag, source: source, origin: "the anchor &\(anchor)")
            guard let text else { return [] }
            return [try insert(keys: [path.last!], value: .text(text), into: mapping, source: source)]
        case (.set(let value), .node(let node, let key, let parent)):
            try refuseShared(node, source: source)
            if value.isNull { return [try removal(of: node, key: key, parent: parent, source: source)] }
            return try setReplacement(node, value: value, source: source).map { [$0] } ?? []
        case (.flag(let flag), .node(let node, _, _)):
            try refuseShared(node, source: source)
            if case .alias(let name) = node.kind, let target = source.anchors[name] {
                guard let text = try editedCopy(of: target, flag: flag, source: source, origin: "the anchor &\(name)") else { return [] }
                return [Replacement(range: node.start..<node.end, text: text)]
            }
            return try flagReplacements(node, flag: flag, source: source)
        }
    }

    /// An anchored node that aliases use would change them all.
    private func refuseShared(_ node: YAMLSourceNode, source: YAMLSource) throws(Failure) {
        if let anchor = node.anchor, source.aliased.contains(anchor) {
            throw Failure("\(pathText) (line \(source.line(of: node.start))) carries the anchor &\(anchor), which *\(anchor) uses elsewhere: editing it would change those too")
        }
    }

    // MARK: Setting a value

    private func setReplacement(_ node: YAMLSourceNode, value: Value, source: YAMLSource) throws(Failure) -> Replacement? {
        let range = extent(of: node, source: source)
        switch value {
        case .list, .map:
            if same(node, value, source: source) { return nil }
            if !node.isFlow, !isScalarLike(node) {
                let indent = source.column(node.start)
                return Replacement(range: range, text: YAMLWriter.block(value, indent: indent, newline: source.newline, firstLineIndented: false))
            }
            return Replacement(range: range, text: YAMLWriter.flow(value))
        default:
            let text = YAMLWriter.scalarText(value)
            if node.scalar == text, sameType(node, value) { return nil }
            var style: YAMLSourceNode.ScalarStyle?
            if case .scalar(_, let old) = node.kind { style = old }
            var written = YAMLWriter.scalar(value, like: style, flow: inFlow(node, source: source))
            // An empty value (`key:`) gets a space after its colon or dash.
            if range.isEmpty, range.lowerBound > 0, [":", "-"].contains(source.text[range.lowerBound - 1]) { written = " " + written }
            return Replacement(range: range, text: written)
        }
    }

    private func isScalarLike(_ node: YAMLSourceNode) -> Bool {
        switch node.kind {
        case .scalar, .alias: return true
        default: return false
        }
    }

    /// Whether a plain scalar already holds a value of that type (`8` for the int 8, not `"8"`).
    private func sameType(_ node: YAMLSourceNode, _ value: Value) -> Bool {
        guard case .scalar(let text, let style) = node.kind else { return false }
        switch value {
        case .string: return style != .plain || !YAMLWriter.readsAsOther(text)
        default: return style == .plain
        }
    }

    private func same(_ node: YAMLSourceNode, _ value: Value, source: YAMLSource) -> Bool {
        YAMLWriter.plainValue(of: node, source: source) == YAMLWriter.normalized(value)
    }

    /// The range a node's text occupies. A block scalar (`|`, `>`) ends before its final line
    /// breaks, which belong to the lines after it.
    private func extent(of node: YAMLSourceNode, source: YAMLSource) -> Range<Int> {
        var end = node.end
        if case .scalar(_, let style) = node.kind, style == .literal || style == .folded {
            while end > node.start, source.text[end - 1] == "\n" || source.text[end - 1] == "\r" || source.text[end - 1] == " " { end -= 1 }
        }
        return node.start..<max(node.start, end)
    }

    /// Whether the node sits inside a flow collection (`[...]`, `{...}`), where `,` and
    /// brackets end a plain scalar.
    private func inFlow(_ node: YAMLSourceNode, source: YAMLSource) -> Bool {
        var depth = 0
        var index = node.start - 1
        let lineStart = source.lineStart(node.start)
        while index >= lineStart {
            switch source.text[index] {
            case "]", "}": depth += 1
            case "[", "{": if depth == 0 { return true } else { depth -= 1 }
            default: break
            }
            index -= 1
        }
        return false
    }

    /// Removing a key (or a list item) with its value: whole lines in block style, the entry
    /// and one comma in flow style.
    private func removal(of node: YAMLSourceNode, key: YAMLSourceNode?, parent: YAMLSourceNode?, source: YAMLSource) throws(Failure) -> Replacement {
        guard let parent else { throw Failure("\(pathText) is the whole document; it cannot be removed") }
        let first = key ?? node
        let end = extent(of: node, source: source).upperBound
        if !parent.isFlow {
            let start = source.lineStart(first.start)
            guard source.slice(start..<first.start).allSatisfy({ $0 == " " || $0 == "-" || $0 == "\t" }) else {
                throw Failure("\(pathText) (line \(source.line(of: first.start))) shares its line with other keys; remove it by hand")
            }
            if source.slice(start..<first.start).contains("-") && key != nil {
                throw Failure("\(pathText) (line \(source.line(of: first.start))) is the first key of a list item; remove the item instead")
            }
            return Replacement(range: start..<lineEndAfter(end, source: source), text: "")
        }
        let siblings: [(start: Int, end: Int)]
        switch parent.kind {
        case .mapping(let entries, _): siblings = entries.map { ($0.key.start, $0.value.end) }
        case .sequence(let items, _): siblings = items.map { ($0.start, $0.end) }
        default: siblings = []
        }
        guard let position = siblings.firstIndex(where: { $0.start == first.start }) else {
            throw Failure("\(pathText): could not find it in its collection")
        }
        if position > 0 { return Replacement(range: siblings[position - 1].end..<end, text: "") }
        if siblings.count > 1 { return Replacement(range: first.start..<siblings[1].start, text: "") }
        return Replacement(range: first.start..<end, text: "")
    }

    /// Past the line end of the line holding `offset`, unless `offset` already starts a line.
    private func lineEndAfter(_ offset: Int, source: YAMLSource) -> Int {
        if offset > 0, source.text[offset - 1] == "\n" { return offset }
        return source.lineEnd(offset)
    }

    // MARK: Inserting keys

    enum Inserted {
        case value(Value)
        /// YAML text written as is (a scalar or flow collection on one line).
        case text(String)
    }

    /// New `keys` (nested, the last holding the value) at the end of `mapping`.
    private func insert(keys: [String], value: Inserted, into mapping: YAMLSourceNode, source: YAMLSource) throws(Failure) -> Replacement {
        guard case .mapping(let entries, let flow) = mapping.kind else { throw Failure("\(pathText): not a mapping") }
        if flow {
            let inner: String
            switch value {
            case .value(let value): inner = YAMLWriter.flowItem(value)
            case .text(let written): inner = written
            }
            var body = inner
            for key in keys.dropFirst().reversed() { body = "{" + YAMLWriter.scalar(.string(key), like: nil, flow: true) + ": " + body + "}" }
            body = YAMLWriter.scalar(.string(keys[0]), like: nil, flow: true) + ": " + body
            if let last = entries.last { return Replacement(range: last.value.end..<last.value.end, text: ", " + body) }
            return Replacement(range: (mapping.end - 1)..<(mapping.end - 1), text: body)
        }
        let column = source.column(mapping.start)
        let step = indentStep(source)
        let newline = source.newline
        var lines: [String] = []
        for (depth, key) in keys.enumerated() {
            let indent = String(repeating: " ", count: column + depth * step)
            let keyText = YAMLWriter.scalar(.string(key), like: nil, flow: false)
            if depth < keys.count - 1 { lines.append(indent + keyText + ":"); continue }
            switch value {
            case .text(let written): lines.append(indent + keyText + ": " + written)
            case .value(let value):
                switch value {
                case .list(let items) where !items.isEmpty:
                    lines.append(indent + keyText + ":")
                    lines.append(YAMLWriter.block(value, indent: column + depth * step + step, newline: newline, firstLineIndented: true))
                case .map(let entries) where !entries.isEmpty:
                    lines.append(indent + keyText + ":")
                    lines.append(YAMLWriter.block(value, indent: column + depth * step + step, newline: newline, firstLineIndented: true))
                default:
                    lines.append(indent + keyText + ": " + YAMLWriter.scalar(value, like: nil, flow: false))
                }
            }
        }
        let end = entries.last.map { extent(of: $0.value, source: source).upperBound } ?? mapping.end
        let at = lineEndAfter(end, source: source)
        let needsBreak = at > 0 && source.text[at - 1] != "\n"
        return Replacement(range: at..<at, text: (needsBreak ? newline : "") + lines.joined(separator: newline) + newline)
    }

    /// The file's indentation step: how much deeper a nested block mapping's keys sit (2 if none).
    private func indentStep(_ source: YAMLSource) -> Int {
        func find(_ node: YAMLSourceNode) -> Int? {
            guard case .mapping(let entries, false) = node.kind else { return nil }
            for entry in entries {
                if case .mapping(_, false) = entry.value.kind {
                    let step = source.column(entry.value.start) - source.column(entry.key.start)
                    if step > 0 { return step }
                }
                if let deeper = find(entry.value) { return deeper }
            }
            return nil
        }
        return find(source.root) ?? 2
    }

    // MARK: Options in a command

    /// A word of a command written as a scalar: its range in the file and its text.
    struct Word {
        var range: Range<Int>
        var text: String
    }

    /// The words of a scalar command as written: runs of non-blank characters of its content.
    private func words(of node: YAMLSourceNode, source: YAMLSource) throws(Failure) -> [Word] {
        guard case .scalar(_, let style) = node.kind else { return [] }
        var range = extent(of: node, source: source)
        switch style {
        case .single, .double: range = (range.lowerBound + 1)..<max(range.lowerBound + 1, range.upperBound - 1)
        case .literal, .folded: range = source.lineEnd(range.lowerBound)..<max(source.lineEnd(range.lowerBound), range.upperBound)
        case .plain: break
        }
        var result: [Word] = []
        var start: Int?
        for index in range.lowerBound...range.upperBound {
            let blank = index == range.upperBound || [" ", "\t", "\n", "\r"].contains(source.text[index])
            if blank, let begin = start {
                result.append(Word(range: begin..<index, text: source.slice(begin..<index)))
                start = nil
            } else if !blank && start == nil {
                start = index
            }
        }
        if style == .double, result.contains(where: { $0.text.contains("\\") }) {
            throw Failure("\(pathText) (line \(source.line(of: node.start))) is a double-quoted command with escapes; set the option by hand or write the command without them")
        }
        if style == .single, result.contains(where: { $0.text.contains("''") }) {
            throw Failure("\(pathText) (line \(source.line(of: node.start))) is a single-quoted command with quotes inside; set the option by hand")
        }
        return result
    }

    /// How the option appears in a word list: the word naming it and the word of its value,
    /// or one word holding both (`--workers=4`, `-w4`), with where the value starts in it.
    enum Occurrence {
        case separate(flag: Int, value: Int)
        case joined(word: Int, valueOffset: Int)
    }

    static func occurrences(_ texts: [String], flag: Flag) -> [Occurrence] {
        var found: [Occurrence] = []
        var index = 0
        while index < texts.count {
            let word = texts[index]
            if flag.spellings.contains(word), index + 1 < texts.count {
                found.append(.separate(flag: index, value: index + 1))
                index += 2
                continue
            }
            if let spelling = flag.spellings.first(where: { word.hasPrefix($0 + "=") }) {
                found.append(.joined(word: index, valueOffset: spelling.unicodeScalars.count + 1))
            } else if let spelling = flag.spellings.first(where: { $0.count == 2 && $0.hasPrefix("-") && $0 != "--" && word.hasPrefix($0) && word.count > 2 && !word.hasPrefix("--") }) {
                found.append(.joined(word: index, valueOffset: spelling.unicodeScalars.count))
            }
            index += 1
        }
        return found
    }

    /// The word after which an absent option goes.
    static func anchorIndex(_ texts: [String], flag: Flag) -> Int? {
        guard let after = flag.after else { return texts.isEmpty ? nil : 0 }
        return texts.firstIndex { $0 == after || $0.hasSuffix("/" + after) }
    }

    private func flagReplacements(_ node: YAMLSourceNode, flag: Flag, source: YAMLSource) throws(Failure) -> [Replacement] {
        switch node.kind {
        case .scalar:
            return try scalarFlagReplacements(try words(of: node, source: source), flag: flag, node: node, source: source)
        case .sequence(let items, let flow):
            return try listFlagReplacements(items, flow: flow, flag: flag, node: node, source: source)
        case .mapping:
            throw Failure("\(pathText) (line \(source.line(of: node.start))) is a mapping, not a command (a string or a list of words)")
        case .alias:
            return []
        }
    }

    private func scalarFlagReplacements(_ words: [Word], flag: Flag, node: YAMLSourceNode, source: YAMLSource) throws(Failure) -> [Replacement] {
        let texts = words.map(\.text)
        let found = Self.occurrences(texts, flag: flag)
        var replacements: [Replacement] = []
        if found.isEmpty {
            guard let value = flag.value else { return [] }
            guard let anchor = Self.anchorIndex(texts, flag: flag) else {
                throw Failure("\(pathText) (line \(source.line(of: node.start))): \(flag.after.map { "no word \($0.debugDescription) in the command" } ?? "the command is empty"); there is nowhere to add \(flag.name)")
            }
            let at = words[anchor].range.upperBound
            return [Replacement(range: at..<at, text: " \(flag.name) \(value)")]
        }
        for occurrence in found {
            switch (occurrence, flag.value) {
            case (.separate(_, let value), let new?):
                if words[value].text != new { replacements.append(Replacement(range: words[value].range, text: new)) }
            case (.joined(let word, let offset), let new?):
                let range = (words[word].range.lowerBound + offset)..<words[word].range.upperBound
                if source.slice(range) != new { replacements.append(Replacement(range: range, text: new)) }
            case (.separate(let flagIndex, let value), nil):
                replacements.append(Replacement(range: removalStart(words, flagIndex)..<words[value].range.upperBound, text: ""))
            case (.joined(let word, _), nil):
                replacements.append(Replacement(range: removalStart(words, word)..<words[word].range.upperBound, text: ""))
            }
        }
        return replacements
    }

    /// A removed option takes the blanks before it (after the previous word) with it.
    private func removalStart(_ words: [Word], _ index: Int) -> Int {
        index > 0 ? words[index - 1].range.upperBound : words[index].range.lowerBound
    }

    private func listFlagReplacements(_ items: [YAMLSourceNode], flow: Bool, flag: Flag, node: YAMLSourceNode, source: YAMLSource) throws(Failure) -> [Replacement] {
        var texts: [String] = []
        for item in items {
            guard case .scalar(let text, _) = item.kind else {
                throw Failure("\(pathText) (line \(source.line(of: item.start))): the command list holds \(item.what); every word must be a string")
            }
            texts.append(text)
        }
        let found = Self.occurrences(texts, flag: flag)
        func style(_ item: YAMLSourceNode) -> YAMLSourceNode.ScalarStyle? {
            if case .scalar(_, let style) = item.kind { return style }
            return nil
        }
        /// A word as a list item: in its neighbour's quotes, and quoted where a plain word
        /// would read as a number or bool (compose wants strings).
        func word(_ text: String, like item: YAMLSourceNode) -> String {
            YAMLWriter.scalar(.string(text), like: style(item), flow: flow, stringsOnly: true)
        }
        if found.isEmpty {
            guard let value = flag.value else { return [] }
            guard let anchor = Self.anchorIndex(texts, flag: flag) else {
                throw Failure("\(pathText) (line \(source.line(of: node.start))): \(flag.after.map { "no word \($0.debugDescription) in the command" } ?? "the command is empty"); there is nowhere to add \(flag.name)")
            }
            let item = items[anchor]
            if flow {
                return [Replacement(range: item.end..<item.end, text: ", " + word(flag.name, like: item) + ", " + word(value, like: item))]
            }
            let lineStart = source.lineStart(item.start)
            let prefix = source.slice(lineStart..<item.start)
            guard prefix.contains("-"), prefix.allSatisfy({ $0 == " " || $0 == "-" || $0 == "\t" }) else {
                throw Failure("\(pathText) (line \(source.line(of: item.start))): the list item does not start its line; set the option by hand")
            }
            let at = lineEndAfter(extent(of: item, source: source).upperBound, source: source)
            let needsBreak = at > 0 && source.text[at - 1] != "\n"
            let text = (needsBreak ? source.newline : "") + prefix + word(flag.name, like: item) + source.newline + prefix + word(value, like: item) + source.newline
            return [Replacement(range: at..<at, text: text)]
        }
        var replacements: [Replacement] = []
        for occurrence in found {
            switch (occurrence, flag.value) {
            case (.separate(_, let value), let new?):
                if texts[value] != new { replacements.append(Replacement(range: extent(of: items[value], source: source), text: word(new, like: items[value]))) }
            case (.joined(let index, let offset), let new?):
                let prefix = String(String.UnicodeScalarView(texts[index].unicodeScalars.prefix(offset)))
                if texts[index] != prefix + new {
                    replacements.append(Replacement(range: extent(of: items[index], source: source), text: word(prefix + new, like: items[index])))
                }
            case (.separate(let first, let last), nil):
                replacements.append(itemsRemoval(items, first...last, flow: flow, source: source))
            case (.joined(let index, _), nil):
                replacements.append(itemsRemoval(items, index...index, flow: flow, source: source))
            }
        }
        return replacements
    }

    /// Removing consecutive list items: their lines in block style; in flow style, with the
    /// comma before them (after them for the first item).
    private func itemsRemoval(_ items: [YAMLSourceNode], _ indices: ClosedRange<Int>, flow: Bool, source: YAMLSource) -> Replacement {
        let last = extent(of: items[indices.upperBound], source: source).upperBound
        if !flow {
            return Replacement(range: source.lineStart(items[indices.lowerBound].start)..<lineEndAfter(last, source: source), text: "")
        }
        if indices.lowerBound > 0 { return Replacement(range: items[indices.lowerBound - 1].end..<last, text: "") }
        if indices.upperBound + 1 < items.count { return Replacement(range: items[0].start..<items[indices.upperBound + 1].start, text: "") }
        return Replacement(range: items[0].start..<last, text: "")
    }

    /// The command of an anchor with the option set, written as one line for a new key in
    /// the mapping that merges it (the anchor itself is never changed). Nil: nothing to change.
    private func editedCopy(of node: YAMLSourceNode, flag: Flag, source: YAMLSource, origin: String) throws(Failure) -> String? {
        switch node.kind {
        case .scalar(_, let style):
            let words = try words(of: node, source: source)
            let changes = try scalarFlagReplacements(words, flag: flag, node: node, source: source)
            if changes.isEmpty { return nil }
            var text = Array(source.text[node.start..<extent(of: node, source: source).upperBound])
            for change in changes.sorted(by: { $0.range.lowerBound > $1.range.lowerBound }) {
                text.replaceSubrange((change.range.lowerBound - node.start)..<(change.range.upperBound - node.start), with: Array(change.text.unicodeScalars))
            }
            var view = String.UnicodeScalarView()
            view.append(contentsOf: text)
            let written = String(view)
            if style == .literal || style == .folded || written.contains("\n") {
                // A multi-line command is written again as one double-quoted line of its words.
                var texts = words.map(\.text)
                Self.apply(flag, to: &texts)
                return YAMLWriter.scalar(.string(texts.joined(separator: " ")), like: .double, flow: false)
            }
            return written
        case .sequence(let items, _):
            var texts: [String] = []
            for item in items {
                guard let text = item.scalar else { throw Failure("\(origin): the command list holds \(item.what); every word must be a string") }
                texts.append(text)
            }
            let before = texts
            Self.apply(flag, to: &texts)
            if texts == before { return nil }
            let quoted = items.contains { if case .scalar(_, let style) = $0.kind { return style != .plain } else { return false } }
            return "[" + texts.map { YAMLWriter.scalar(.string($0), like: quoted ? .double : .plain, flow: true, stringsOnly: true) }.joined(separator: ", ") + "]"
        default:
            throw Failure("\(pathText) comes from \(origin) and is \(node.what), not a command")
        }
    }

    /// The option set in a list of words (for commands rewritten whole, and for checking).
    static func apply(_ flag: Flag, to texts: inout [String]) {
        let found = occurrences(texts, flag: flag)
        if found.isEmpty {
            guard let value = flag.value, let anchor = anchorIndex(texts, flag: flag) else { return }
            texts.insert(contentsOf: [flag.name, value], at: anchor + 1)
            return
        }
        for occurrence in found.reversed() {
            switch (occurrence, flag.value) {
            case (.separate(_, let value), let new?): texts[value] = new
            case (.joined(let index, let offset), let new?):
                texts[index] = String(String.UnicodeScalarView(texts[index].unicodeScalars.prefix(offset))) + new
            case (.separate(let first, let last), nil): texts.removeSubrange(first...last)
            case (.joined(let index, _), nil): texts.remove(at: index)
            }
        }
    }

    // MARK: Checking the result

    /// Parses the edited text again: the path must now hold what was asked.
    private func verify(_ bytes: [UInt8]) throws(Failure) {
        let source: YAMLSource
        do { source = try YAMLSource(bytes) } catch {
            throw Failure("the edit of \(pathText) would leave the file unreadable as YAML (\(error)); the file was not changed")
        }
        let target = try resolve(source)
        let fail = Failure("the edit of \(pathText) did not read back as intended; the file was not changed (edit it by hand)")
        switch (operation, target) {
        case (.set(.null), .missing): return
        case (.set(let value), .node(let node, _, _)):
            guard !value.isNull, YAMLWriter.plainValue(of: node, source: source) == YAMLWriter.normalized(value) else { throw fail }
        case (.flag(let flag), .node(let node, _, _)):
            let resolved = source.resolved(node)
            var texts: [String]
            switch resolved.kind {
            case .scalar(let text, _): texts = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }).map(String.init)
            case .sequence(let items, _): texts = items.compactMap(\.scalar)
            default: throw fail
            }
            let found = Self.occurrences(texts, flag: flag)
            if let value = flag.value {
                guard !found.isEmpty else { throw fail }
                for occurrence in found {
                    switch occurrence {
                    case .separate(_, let index): if texts[index] != value { throw fail }
                    case .joined(let index, let offset):
                        if String(String.UnicodeScalarView(texts[index].unicodeScalars.dropFirst(offset))) != value { throw fail }
                    }
                }
            } else if !found.isEmpty {
                throw fail
            }
        default:
            throw fail
        }
    }

    private func cut(_ text: String) -> String { text.count > 40 ? String(text.prefix(40)) + "…" : text }
}

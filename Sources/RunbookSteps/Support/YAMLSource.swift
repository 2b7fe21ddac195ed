import CYaml
import Foundation

/// A YAML file as written, parsed with libyaml into nodes that know their exact extent in the
/// text, so that one node can be replaced and every other byte kept: comments, anchors,
/// quoting styles, key order, blank lines, line ends. Offsets count Unicode scalars, as
/// libyaml's marks do (a CRLF is two).
struct YAMLSource {
    /// The text, one element per Unicode scalar.
    let text: [Unicode.Scalar]
    /// The document's root node.
    let root: YAMLSourceNode
    /// Anchor name → the node that carries it.
    let anchors: [String: YAMLSourceNode]
    /// Anchor names that some alias refers to.
    let aliased: Set<String>
    /// The line end the file uses ("\r\n" when any line ends so).
    let newline: String

    /// A parse failure, with the 1-based line where libyaml stopped.
    struct ParseError: Error {
        let message: String
        let line: Int
    }

    init(_ bytes: [UInt8]) throws {
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw ParseError(message: "the file is not UTF-8 text", line: 0)
        }
        let scalars = Array(decoded.unicodeScalars)
        // libyaml's marks start after a byte order mark.
        let bom = scalars.first == "\u{FEFF}" ? 1 : 0
        let tree = try Self.parse(bytes, offset: bom)
        text = scalars
        root = tree.root
        anchors = tree.anchors
        aliased = tree.aliased
        newline = decoded.utf8.indices.contains { index in
            decoded.utf8[index] == UInt8(ascii: "\n") && index > decoded.utf8.startIndex
                && decoded.utf8[decoded.utf8.index(before: index)] == UInt8(ascii: "\r")
        } ? "\r\n" : "\n"
    }

    /// The text of `range`.
    func slice(_ range: Range<Int>) -> String {
        var out = String.UnicodeScalarView()
        out.append(contentsOf: text[range])
        return String(out)
    }

    /// The 1-based line of `offset`.
    func line(of offset: Int) -> Int {
        1 + text[..<min(offset, text.count)].reduce(0) { $0 + ($1 == "\n" ? 1 : 0) }
    }

    /// The offset where the line holding `offset` starts.
    func lineStart(_ offset: Int) -> Int {
        var index = min(offset, text.count)
        while index > 0, text[index - 1] != "\n" { index -= 1 }
        return index
    }

    /// The offset just past the line end of the line holding `offset` (the text's end on a
    /// last line without one).
    func lineEnd(_ offset: Int) -> Int {
        var index = offset
        while index < text.count, text[index] != "\n" { index += 1 }
        return min(index + 1, text.count)
    }

    /// The column of `offset` (0-based, in scalars).
    func column(_ offset: Int) -> Int { offset - lineStart(offset) }

    /// Follows an alias to the node its anchor names.
    func resolved(_ node: YAMLSourceNode) -> YAMLSourceNode {
        if case .alias(let name) = node.kind, let target = anchors[name] { return target }
        return node
    }

    // MARK: Parsing

    private struct Tree {
        var root: YAMLSourceNode
        var anchors: [String: YAMLSourceNode]
        var aliased: Set<String>
    }

    private static func parse(_ bytes: [UInt8], offset: Int) throws -> Tree {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw ParseError(message: "libyaml could not start", line: 0) }
        defer { yaml_parser_delete(&parser) }
        return try bytes.withUnsafeBufferPointer { buffer throws -> Tree in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            /// Open collections: the node and, for mappings, a key waiting for its value.
            var stack: [(node: YAMLSourceNode, pendingKey: YAMLSourceNode?)] = []
            var root: YAMLSourceNode?
            var anchors: [String: YAMLSourceNode] = [:]
            var aliased: Set<String> = []
            var documents = 0
            var events = 0

            func add(_ node: YAMLSourceNode) throws {
                guard var top = stack.popLast() else {
                    if root != nil { throw ParseError(message: "more than one root node", line: 0) }
                    root = node
                    return
                }
                switch top.node.kind {
                case .sequence(var items, let flow):
                    items.append(node)
                    top.node.kind = .sequence(items, flow: flow)
                case .mapping(var entries, let flow):
                    if let key = top.pendingKey {
                        entries.append((key, node))
                        top.pendingKey = nil
                        top.node.kind = .mapping(entries, flow: flow)
                    } else {
                        top.pendingKey = node
                    }
                default: break
                }
                stack.append(top)
            }
            func string(_ pointer: UnsafeMutablePointer<UInt8>?) -> String? {
                pointer.map { String(cString: $0) }
            }

            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    let problem = parser.problem.map { String(cString: $0) } ?? "not valid YAML"
                    throw ParseError(message: problem, line: Int(parser.problem_mark.line) + 1)
                }
                defer { yaml_event_delete(&event) }
                events += 1
                if events > 1_000_000 { throw ParseError(message: "more than a million YAML events", line: 0) }
                let start = Int(event.start_mark.index) + offset
                let end = Int(event.end_mark.index) + offset
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    guard let root else { throw ParseError(message: "the file holds no YAML document", line: 1) }
                    return Tree(root: root, anchors: anchors, aliased: aliased)
                case YAML_DOCUMENT_START_EVENT:
                    documents += 1
                    if documents > 1 {
                        throw ParseError(message: "the file holds more than one YAML document", line: Int(event.start_mark.line) + 1)
                    }
                case YAML_SCALAR_EVENT:
                    let scalar = event.data.scalar
                    let value = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
                    let style: YAMLSourceNode.ScalarStyle
                    switch scalar.style {
                    case YAML_SINGLE_QUOTED_SCALAR_STYLE: style = .single
                    case YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = .double
                    case YAML_LITERAL_SCALAR_STYLE: style = .literal
                    case YAML_FOLDED_SCALAR_STYLE: style = .folded
                    default: style = .plain
                    }
                    let node = YAMLSourceNode(kind: .scalar(value, style), start: start, end: end,
                                              anchor: string(scalar.anchor), tag: string(scalar.tag))
                    if let anchor = node.anchor { anchors[anchor] = node }
                    try add(node)
                case YAML_ALIAS_EVENT:
                    let name = string(event.data.alias.anchor) ?? ""
                    aliased.insert(name)
                    try add(YAMLSourceNode(kind: .alias(name), start: start, end: end, anchor: nil, tag: nil))
                case YAML_SEQUENCE_START_EVENT:
                    let data = event.data.sequence_start
                    let node = YAMLSourceNode(kind: .sequence([], flow: data.style == YAML_FLOW_SEQUENCE_STYLE), start: start, end: end,
                                              anchor: string(data.anchor), tag: string(data.tag))
                    if let anchor = node.anchor { anchors[anchor] = node }
                    stack.append((node, nil))
                case YAML_MAPPING_START_EVENT:
                    let data = event.data.mapping_start
                    let node = YAMLSourceNode(kind: .mapping([], flow: data.style == YAML_FLOW_MAPPING_STYLE), start: start, end: end,
                                              anchor: string(data.anchor), tag: string(data.tag))
                    if let anchor = node.anchor { anchors[anchor] = node }
                    stack.append((node, nil))
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let closed = stack.popLast() else { break }
                    // A flow collection ends after its bracket; a block one where its last
                    // node ends (the end event sits at the next token, past comments).
                    closed.node.end = closed.node.isFlow ? end : (closed.node.lastChild?.end ?? closed.node.end)
                    try add(closed.node)
                default:
                    break
                }
            }
        }
    }
}

/// One node of a `YAMLSource`: what it holds and where it is written.
final class YAMLSourceNode {
    enum ScalarStyle: Equatable {
        case plain, single, double, literal, folded
    }

    enum Kind {
        case scalar(String, ScalarStyle)
        case sequence([YAMLSourceNode], flow: Bool)
        case mapping([(key: YAMLSourceNode, value: YAMLSourceNode)], flow: Bool)
        case alias(String)
    }

    var kind: Kind
    /// Offsets of the node's first scalar and just past its last (for a block collection, its
    /// last descendant's end; for a scalar, its closing quote or last character).
    var start: Int
    var end: Int
    let anchor: String?
    let tag: String?

    init(kind: Kind, start: Int, end: Int, anchor: String?, tag: String?) {
        self.kind = kind
        self.start = start
        self.end = end
        self.anchor = anchor
        self.tag = tag
    }

    var isFlow: Bool {
        switch kind {
        case .sequence(_, let flow), .mapping(_, let flow): return flow
        default: return false
        }
    }

    /// The scalar's value, for a scalar.
    var scalar: String? {
        if case .scalar(let value, _) = kind { return value }
        return nil
    }

    /// The last item or value, for a collection.
    var lastChild: YAMLSourceNode? {
        switch kind {
        case .sequence(let items, _): return items.last
        case .mapping(let entries, _): return entries.last?.value
        default: return nil
        }
    }

    /// What the node is, for messages.
    var what: String {
        switch kind {
        case .scalar: return "a scalar"
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        case .alias(let name): return "the alias *\(name)"
        }
    }
}

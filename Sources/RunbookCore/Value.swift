/// A loosely typed value from YAML or JSON: inventory vars, params, facts.
public enum Value: Sendable, Hashable {
    /// Text.
    case string(String)
    /// A whole number.
    case int(Int)
    /// A floating-point number.
    case double(Double)
    /// true or false.
    case bool(Bool)
    /// An ordered list.
    case list([Value])
    /// Named values.
    case map([String: Value])
    /// No value.
    case null
}

extension Value {
    /// The text, when this is a string.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The number, when this is an int (or a double with no fractional part that fits an Int).
    public var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d):
            guard d.rounded() == d, d >= -9.2e18, d <= 9.2e18 else { return nil }
            return Int(d)
        default: return nil
        }
    }

    /// The number, when this is a double or an int.
    public var doubleValue: Double? {
        switch self {
        case .double(let d): return d
        case .int(let i): return Double(i)
        default: return nil
        }
    }

    /// The truth value, when this is a bool.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The elements, when this is a list.
    public var listValue: [Value]? {
        if case .list(let l) = self { return l }
        return nil
    }

    /// The entries, when this is a map.
    public var mapValue: [String: Value]? {
        if case .map(let m) = self { return m }
        return nil
    }

    /// Every string in the value, its map keys included, depth first.
    public var strings: [String] {
        switch self {
        case .string(let text): return [text]
        case .list(let items): return items.flatMap(\.strings)
        case .map(let entries): return entries.flatMap { [$0.key] + $0.value.strings }
        default: return []
        }
    }

    /// Whether this is null.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The value under `key` when this is a map.
    public subscript(key: String) -> Value? {
        mapValue?[key]
    }

    /// The kind of value with an article, for messages: "a string", "an integer", "a map"…
    public var kindDescription: String {
        switch self {
        case .string: return "a string"
        case .int: return "an integer"
        case .double: return "a number"
        case .bool: return "a boolean"
        case .list: return "a list"
        case .map: return "a map"
        case .null: return "null"
        }
    }

    /// `other` laid over this value: maps merge key by key, recursively; anything else is replaced by `other`.
    public func merging(_ other: Value) -> Value {
        guard case .map(let base) = self, case .map(let over) = other else { return other }
        return .map(Value.merge(base, over))
    }

    /// `over` laid over `base`: keys of `over` win, nested maps merge recursively.
    public static func merge(_ base: [String: Value], _ over: [String: Value]) -> [String: Value] {
        var result = base
        for (key, value) in over {
            if let existing = result[key] {
                result[key] = existing.merging(value)
            } else {
                result[key] = value
            }
        }
        return result
    }
}

extension Value: CustomStringConvertible {
    /// The value for display: strings bare at top level, lists and maps in a compact JSON-like form with sorted keys.
    public var description: String {
        switch self {
        case .string(let s): return s
        default: return nestedDescription
        }
    }

    private var nestedDescription: String {
        switch self {
        case .string(let s): return s.debugDescription
        case .int(let i): return String(i)
        case .double(let d): return Value.format(d)
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .list(let l): return "[" + l.map(\.nestedDescription).joined(separator: ", ") + "]"
        case .map(let m):
            let entries = m.keys.sorted().map { "\($0.debugDescription): \(m[$0]!.nestedDescription)" }
            return "{" + entries.joined(separator: ", ") + "}"
        }
    }

    /// A double as people write it: `2` for 2.0, `0.5`, `1e+20`.
    static func format(_ d: Double) -> String {
        if d.isFinite, d.rounded() == d, abs(d) < 1e15 {
            return String(Int(d))
        }
        return String(d)
    }
}

extension Value: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral,
    ExpressibleByNilLiteral
{
    /// A string value.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An int value.
    public init(integerLiteral value: Int) { self = .int(value) }
    /// A double value.
    public init(floatLiteral value: Double) { self = .double(value) }
    /// A bool value.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// A list value.
    public init(arrayLiteral elements: Value...) { self = .list(elements) }
    /// A map value; a repeated key keeps its last value.
    public init(dictionaryLiteral elements: (String, Value)...) {
        self = .map(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    /// The null value.
    public init(nilLiteral: ()) { self = .null }
}

extension Value: Codable {
    /// Decodes from the natural JSON form (null, bool, number, string, array, object).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? container.decode(Int.self) {
            self = .int(i)
        } else if let d = try? container.decode(Double.self) {
            self = .double(d)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let l = try? container.decode([Value].self) {
            self = .list(l)
        } else {
            self = .map(try container.decode([String: Value].self))
        }
    }

    /// Encodes in the natural JSON form.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let s): try container.encode(s)
        case .int(let i): try container.encode(i)
        case .double(let d): try container.encode(d)
        case .bool(let b): try container.encode(b)
        case .list(let l): try container.encode(l)
        case .map(let m): try container.encode(m)
        case .null: try container.encodeNil()
        }
    }
}

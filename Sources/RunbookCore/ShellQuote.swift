/// POSIX shell quoting: the one place where text becomes a shell word.
public enum Shell {
    /// Quotes `s` as one POSIX shell word: unchanged when it is non-empty and made only of
    /// `[A-Za-z0-9_./:=@%+,-]`, otherwise wrapped in single quotes with each `'` written `'\''`.
    public static func quote(_ s: String) -> String {
        if !s.isEmpty, s.utf8.allSatisfy(isSafe) {
            return s
        }
        var quoted = "'"
        quoted.reserveCapacity(s.utf8.count + 2)
        for character in s.unicodeScalars {
            if character == "'" {
                quoted += "'\\''"
            } else {
                quoted.unicodeScalars.append(character)
            }
        }
        quoted += "'"
        return quoted
    }

    /// Quotes each word and joins them with single spaces.
    public static func join(_ words: [String]) -> String {
        words.map(quote).joined(separator: " ")
    }

    /// `text` as it goes between double quotes: `\`, `"`, `$` and `` ` `` escaped.
    public static func escapeForDoubleQuotes(_ text: String) -> String {
        var escaped = ""
        for character in text.unicodeScalars {
            if character == "\\" || character == "\"" || character == "$" || character == "`" { escaped.append("\\") }
            escaped.unicodeScalars.append(character)
        }
        return escaped
    }

    /// The name of the environment variable that carries the secret `name` to a command.
    public static func secretVariable(_ name: String) -> String {
        var variable = "RUNBOOK_SECRET_"
        for scalar in name.uppercased().unicodeScalars {
            let v = scalar.value
            let alnum = (v >= 0x30 && v <= 0x39) || (v >= 0x41 && v <= 0x5A)
            variable.unicodeScalars.append(alnum ? scalar : "_")
        }
        return variable
    }

    private static func isSafe(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "/"), UInt8(ascii: ":"),
             UInt8(ascii: "="), UInt8(ascii: "@"), UInt8(ascii: "%"), UInt8(ascii: "+"),
             UInt8(ascii: ","), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}

/// A named secret value; it prints as `********` and enters commands only by reference.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// What a secret looks like in any output meant for people.
    public static let placeholder = "********"

    /// The secret's name (as in `{{ secrets.NAME }}` and `RUNBOOK_SECRET_NAME`).
    public let name: String
    /// The secret itself; never print it.
    public let value: String

    /// A secret called `name` holding `value`.
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// Always `********`.
    public var description: String { Secret.placeholder }
    /// The name only, never the value.
    public var debugDescription: String { "Secret(\(name): \(Secret.placeholder))" }
    /// Hides the value from `dump` and debuggers.
    public var customMirror: Mirror { Mirror(self, children: ["name": name]) }
}

/// A shell command line built from parts, so that quoting and secret handling happen in one place.
///
/// Build one from parts, from an argument vector, or by interpolation, where interpolated
/// strings are quoted and secrets become references:
/// `let c: ShellCommand = "mv -f -- \(tmp) \(dest)"`.
public struct ShellCommand: Sendable, Hashable, ExpressibleByStringInterpolation,
    CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable
{
    /// One piece of a command line.
    public enum Part: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
        /// Trusted shell text, inserted as is.
        case literal(String)
        /// A value, inserted as one quoted shell word.
        case value(String)
        /// A secret, inserted as `"${RUNBOOK_SECRET_NAME}"` and delivered through the environment.
        case secret(name: String, value: String)
        /// A secret put in the environment only: the command text already refers to
        /// `${RUNBOOK_SECRET_NAME}` itself (a rendered template). Adds nothing to the text.
        case binding(name: String, value: String)

        /// The part as shown to people (secrets masked).
        public var description: String {
            switch self {
            case .literal(let text): return text
            case .value(let value): return Shell.quote(value)
            case .secret: return Secret.placeholder
            case .binding: return ""
            }
        }

        /// The part as shown to developers (secrets masked).
        public var debugDescription: String {
            switch self {
            case .literal(let text): return ".literal(\(text.debugDescription))"
            case .value(let value): return ".value(\(value.debugDescription))"
            case .secret(let name, _): return ".secret(\(name))"
            case .binding(let name, _): return ".binding(\(name))"
            }
        }
    }

    /// The parts, in order.
    public var parts: [Part]

    /// A command made of `parts`.
    public init(parts: [Part]) {
        self.parts = parts
    }

    /// A command from trusted shell text, inserted as is.
    public init(_ literal: String) {
        self.parts = [.literal(literal)]
    }

    /// A copy of `command`; this is what `ShellCommand("mv \(a) \(b)")` picks, so the interpolations are quoted.
    public init(_ command: ShellCommand) {
        self = command
    }

    /// A command from an argument vector; every word is quoted.
    public init(argv: [String]) {
        var parts: [Part] = []
        for (index, word) in argv.enumerated() {
            if index > 0 { parts.append(.literal(" ")) }
            parts.append(.value(word))
        }
        self.parts = parts
    }

    /// A command from a string literal (trusted shell text).
    public init(stringLiteral value: String) {
        self.init(value)
    }

    /// A command from an interpolated string: literal text is trusted, interpolations are quoted.
    public init(stringInterpolation: StringInterpolation) {
        self.parts = stringInterpolation.parts
    }

    /// What is executed: values quoted, each secret replaced by a reference to its environment variable.
    public var commandLine: String {
        var line = ""
        for part in parts {
            switch part {
            case .literal(let text): line += text
            case .value(let value): line += Shell.quote(value)
            case .secret(let name, _): line += "\"${\(Shell.secretVariable(name))}\""
            case .binding: break
            }
        }
        return line
    }

    /// The environment the command needs: `RUNBOOK_SECRET_<NAME>` to the secret's value, to be delivered out of band.
    public var environment: [String: String] {
        var environment: [String: String] = [:]
        for part in parts {
            switch part {
            case .secret(let name, let value), .binding(let name, let value):
                environment[Shell.secretVariable(name)] = value
            default: break
            }
        }
        return environment
    }

    /// The values of the secrets this command uses.
    public var secretValues: [String] {
        parts.compactMap { part in
            switch part {
            case .secret(_, let value), .binding(_, let value): return value
            default: return nil
            }
        }
    }

    /// The command for people, plans and logs: like `commandLine` with each secret shown as `********`.
    public var display: String {
        parts.map(\.description).joined()
    }

    /// Same as `display`: printing a command never reveals a secret.
    public var description: String { display }
    /// The display form, marked as a command.
    public var debugDescription: String { "ShellCommand(\(display.debugDescription))" }
    /// Hides secret values from `dump` and debuggers.
    public var customMirror: Mirror { Mirror(self, children: ["display": display]) }

    /// This command followed by `other`, with nothing in between.
    public static func + (lhs: ShellCommand, rhs: ShellCommand) -> ShellCommand {
        ShellCommand(parts: lhs.parts + rhs.parts)
    }

    /// Commands joined with a literal separator such as `" && "` or `"; "`.
    public static func joined(_ commands: [ShellCommand], separator: String) -> ShellCommand {
        var parts: [Part] = []
        for (index, command) in commands.enumerated() {
            if index > 0 { parts.append(.literal(separator)) }
            parts += command.parts
        }
        return ShellCommand(parts: parts)
    }

    /// Builds the parts of an interpolated command.
    public struct StringInterpolation: StringInterpolationProtocol {
        /// The parts so far.
        public var parts: [Part] = []

        /// Starts an interpolation.
        public init(literalCapacity: Int, interpolationCount: Int) {
            parts.reserveCapacity(interpolationCount * 2 + 1)
        }

        /// Literal text of the template: trusted, inserted as is.
        public mutating func appendLiteral(_ literal: String) {
            if !literal.isEmpty { parts.append(.literal(literal)) }
        }

        /// A string value: quoted as one word.
        public mutating func appendInterpolation(_ value: String) {
            parts.append(.value(value))
        }

        /// A substring value: quoted as one word.
        public mutating func appendInterpolation(_ value: Substring) {
            parts.append(.value(String(value)))
        }

        /// A number: inserted as one word.
        public mutating func appendInterpolation<T: BinaryInteger>(_ value: T) {
            parts.append(.value(String(value)))
        }

        /// A secret: inserted by reference to its environment variable.
        public mutating func appendInterpolation(_ secret: Secret) {
            parts.append(.secret(name: secret.name, value: secret.value))
        }

        /// Several words, each quoted, separated by spaces.
        public mutating func appendInterpolation(words: [String]) {
            for (index, word) in words.enumerated() {
                if index > 0 { parts.append(.literal(" ")) }
                parts.append(.value(word))
            }
        }

        /// Another command, inserted with its own quoting and secrets.
        public mutating func appendInterpolation(_ command: ShellCommand) {
            parts += command.parts
        }

        /// Trusted shell text, inserted as is (for text that is code, not data).
        public mutating func appendInterpolation(literal text: String) {
            parts.append(.literal(text))
        }
    }
}

/// Replaces every occurrence of known secret values with `********`, in text or bytes.
public struct SecretMasker: Sendable {
    private let secrets: [[UInt8]]

    /// A masker for `secrets`; empty values are ignored, longer values are replaced first.
    ///
    /// A value is also masked in the forms it takes on its way: without surrounding blanks (a
    /// file's trailing newline), each line of a multi-line value (a PEM key in a diff, where
    /// every line gets a prefix) and each blank-separated piece (a value the shell split),
    /// upper- and lower-cased (filters), when such a form has at least `minimumPiece` characters.
    public init(secrets: [String]) {
        var forms = Set<String>()
        for secret in secrets where !secret.isEmpty {
            forms.insert(secret)
            let trimmed = secret.trimmingWhitespace()
            var derived = [trimmed]
            derived += trimmed.split(whereSeparator: { $0.isNewline }).map { String($0).trimmingWhitespace() }
            derived += trimmed.split(whereSeparator: { $0.isWhitespace })
                .map(String.init)
            derived += [trimmed.uppercased(), trimmed.lowercased()]
            for form in derived where form.count >= Self.minimumPiece || form == trimmed && !form.isEmpty { forms.insert(form) }
        }
        self.secrets = forms.map { Array($0.utf8) }.sorted { $0.count > $1.count }
    }

    /// The shortest piece of a secret masked on its own (shorter pieces would mask ordinary words).
    public static let minimumPiece = 4

    /// Whether there is nothing to mask.
    public var isEmpty: Bool { secrets.isEmpty }

    /// `text` with each secret value replaced by `********`.
    public func mask(_ text: String) -> String {
        if secrets.isEmpty { return text }
        return String(decoding: mask(Array(text.utf8)), as: UTF8.self)
    }

    /// A unified diff with each secret value masked, and the old value of a line that now
    /// holds a secret masked too: a rotated password's `-` line would otherwise show the old
    /// one. Within a hunk, a removed line shaped like an added line that holds a secret (the
    /// same text before the first secret and after the last) keeps that text and loses the
    /// rest; when an added line is nothing but a secret (a key file), every removed line of
    /// the hunk is masked.
    public func maskDiff(_ diff: String) -> String {
        if secrets.isEmpty { return diff }
        let placeholder = Secret.placeholder
        var lines = mask(diff).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var hunkStart = 0
        func finishHunk(_ end: Int) {
            var shapes: [(prefix: String, suffix: String)] = []
            var all = false
            for line in lines[hunkStart..<end] where line.hasPrefix("+") && line.contains(placeholder) {
                let pieces = line.dropFirst().split(separator: placeholder, omittingEmptySubsequences: false)
                let shape = (String(pieces.first ?? ""), String(pieces.last ?? ""))
                if shape.0.trimmingWhitespace().isEmpty && shape.1.trimmingWhitespace().isEmpty { all = true }
                shapes.append(shape)
            }
            guard !shapes.isEmpty else { return }
            for index in hunkStart..<end where lines[index].hasPrefix("-") {
                let body = lines[index].dropFirst()
                if all {
                    lines[index] = "-" + placeholder
                    continue
                }
                for (prefix, suffix) in shapes where body.count >= prefix.count + suffix.count
                    && body.hasPrefix(prefix) && body.hasSuffix(suffix)
                {
                    lines[index] = "-" + prefix + placeholder + suffix
                    break
                }
            }
        }
        for (index, line) in lines.enumerated() {
            if line.hasPrefix("@@") || line.hasPrefix("--- ") && index + 1 < lines.count && lines[index + 1].hasPrefix("+++ ") {
                finishHunk(index)
                hunkStart = index + 1
            }
        }
        finishHunk(lines.count)
        return lines.joined(separator: "\n")
    }

    /// `bytes` with each secret value replaced by `********`.
    public func mask(_ bytes: [UInt8]) -> [UInt8] {
        if secrets.isEmpty { return bytes }
        let placeholder = Array(Secret.placeholder.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        outer: while index < bytes.count {
            let byte = bytes[index]
            for secret in secrets where secret[0] == byte && secret.count <= bytes.count - index {
                var matches = true
                for offset in 1..<secret.count where bytes[index + offset] != secret[offset] {
                    matches = false
                    break
                }
                if matches {
                    output += placeholder
                    index += secret.count
                    continue outer
                }
            }
            output.append(byte)
            index += 1
        }
        return output
    }
}

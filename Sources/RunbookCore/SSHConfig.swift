/// The settings an OpenSSH client config gives one host, for the keywords runbook honours.
public struct SSHConfigEntry: Sendable, Hashable {
    /// `HostName`, with `%h` replaced by the host asked for.
    public var hostName: String?
    /// `User`.
    public var user: String?
    /// `Port`.
    public var port: Int?
    /// Every `IdentityFile`, in order, as written (`~` not expanded; `%h` and `%%` replaced).
    public var identityFiles: [String]
    /// `ProxyJump` as written; nil when absent or `none`.
    public var proxyJump: String?
    /// `ConnectTimeout`, in seconds.
    public var connectTimeout: Int?
    /// `ServerAliveInterval`, in seconds.
    public var serverAliveInterval: Int?
    /// `ServerAliveCountMax`.
    public var serverAliveCountMax: Int?

    /// An entry with the given settings (all absent by default).
    public init(
        hostName: String? = nil, user: String? = nil, port: Int? = nil,
        identityFiles: [String] = [], proxyJump: String? = nil, connectTimeout: Int? = nil,
        serverAliveInterval: Int? = nil, serverAliveCountMax: Int? = nil
    ) {
        self.hostName = hostName
        self.user = user
        self.port = port
        self.identityFiles = identityFiles
        self.proxyJump = proxyJump
        self.connectTimeout = connectTimeout
        self.serverAliveInterval = serverAliveInterval
        self.serverAliveCountMax = serverAliveCountMax
    }
}

/// A parsed `~/.ssh/config`: the subset runbook honours, with OpenSSH's rules.
///
/// Keywords are case-insensitive and written `Key value` or `Key=value`; values may be in double
/// quotes; `#` starts a comment. `Host` lines take several patterns with `*`, `?` and `!negation`
/// (matched case-insensitively); for each keyword the first value obtained wins, except
/// `IdentityFile`, which accumulates. `Match` blocks are skipped up to the next `Host` or `Match`.
/// `Include` and unknown keywords are ignored. Parsing never fails: lines it cannot read are skipped.
public struct SSHConfig: Sendable, Hashable {
    /// One `Key value…` line.
    struct Option: Sendable, Hashable {
        var keyword: String
        var arguments: [String]
    }

    /// Options under one `Host` line (or before the first, with no patterns, for every host).
    struct Block: Sendable, Hashable {
        var patterns: [String]?
        var options: [Option]
    }

    var blocks: [Block]

    /// An empty config.
    public init() {
        blocks = []
    }

    /// Parses the text of an ssh_config file.
    public static func parse(_ text: String) -> SSHConfig {
        var config = SSHConfig()
        var current = Block(patterns: nil, options: [])
        var skipping = false
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            guard let (keyword, arguments) = splitLine(rawLine) else { continue }
            switch keyword {
            case "host":
                config.blocks.append(current)
                current = Block(patterns: arguments, options: [])
                skipping = false
            case "match":
                config.blocks.append(current)
                current = Block(patterns: [], options: [])
                skipping = true
            default:
                if !skipping {
                    current.options.append(Option(keyword: keyword, arguments: arguments))
                }
            }
        }
        config.blocks.append(current)
        config.blocks.removeAll { $0.options.isEmpty }
        return config
    }

    /// The settings for `host`, the name as the user wrote it (for runbook, the inventory name).
    public func resolve(host: String) -> SSHConfigEntry {
        var entry = SSHConfigEntry()
        var seen = Set<String>()
        let lowered = host.lowercased()
        for block in blocks where SSHConfig.matches(lowered, block.patterns) {
            for option in block.options {
                guard let first = option.arguments.first else { continue }
                if option.keyword == "identityfile" {
                    entry.identityFiles.append(SSHConfig.expandTokens(first, host: host))
                    continue
                }
                guard !seen.contains(option.keyword) else { continue }
                switch option.keyword {
                case "hostname":
                    entry.hostName = SSHConfig.expandTokens(first, host: host)
                case "user":
                    entry.user = first
                case "port":
                    guard let port = Int(first), (1...65535).contains(port) else { continue }
                    entry.port = port
                case "proxyjump":
                    entry.proxyJump = first.lowercased() == "none" ? nil : first
                case "connecttimeout":
                    // 0 means the system's TCP timeout to OpenSSH; runbook keeps its own default then.
                    guard let seconds = Int(first), seconds > 0 else { continue }
                    entry.connectTimeout = seconds
                case "serveraliveinterval":
                    guard let seconds = Int(first), seconds >= 0 else { continue }
                    entry.serverAliveInterval = seconds
                case "serveralivecountmax":
                    guard let count = Int(first), count >= 0 else { continue }
                    entry.serverAliveCountMax = count
                default:
                    continue
                }
                seen.insert(option.keyword)
            }
        }
        return entry
    }

    /// Whether a block's patterns select `host` (already lowercased): some positive pattern matches and no negated one does.
    static func matches(_ host: String, _ patterns: [String]?) -> Bool {
        guard let patterns else { return true }
        var matched = false
        for pattern in patterns {
            let lowered = pattern.lowercased()
            if lowered.hasPrefix("!") {
                if globMatch(String(lowered.dropFirst()), host) { return false }
            } else if globMatch(lowered, host) {
                matched = true
            }
        }
        return matched
    }

    /// Replaces `%h` with the host and `%%` with `%`; other tokens are kept as written.
    static func expandTokens(_ text: String, host: String) -> String {
        guard text.contains("%") else { return text }
        var result = ""
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            guard character == "%" else {
                result.append(character)
                continue
            }
            switch iterator.next() {
            case "h": result += host
            case "%": result += "%"
            case let other?: result += "%" + String(other)
            case nil: result += "%"
            }
        }
        return result
    }

    /// The lowercased keyword and the arguments of a line; nil for blank and comment lines.
    static func splitLine(_ line: Substring) -> (String, [String])? {
        var words: [String] = []
        var index = line.startIndex
        var keywordDone = false
        var keyword = ""
        while index < line.endIndex {
            let character = line[index]
            if character == " " || character == "\t" || character == "\r" {
                index = line.index(after: index)
                continue
            }
            if character == "=" && keywordDone && words.isEmpty {
                // The `=` of `Key = value`, after the keyword and spaces.
                index = line.index(after: index)
                keywordDone = true
                continue
            }
            if character == "#" {
                break
            }
            var word = ""
            if character == "\"" {
                index = line.index(after: index)
                while index < line.endIndex, line[index] != "\"" {
                    word.append(line[index])
                    index = line.index(after: index)
                }
                if index < line.endIndex { index = line.index(after: index) }
            } else {
                while index < line.endIndex {
                    let c = line[index]
                    if c == " " || c == "\t" || c == "\r" { break }
                    if c == "=" && !keywordDone { break }
                    word.append(c)
                    index = line.index(after: index)
                }
            }
            if !keywordDone {
                keyword = word.lowercased()
                keywordDone = true
                // `Key=value`: step over the `=` that ended the keyword.
                if index < line.endIndex, line[index] == "=" {
                    index = line.index(after: index)
                }
                if keyword.isEmpty { return nil }
            } else {
                words.append(word)
            }
        }
        guard keywordDone, !keyword.isEmpty else { return nil }
        return (keyword, words)
    }
}

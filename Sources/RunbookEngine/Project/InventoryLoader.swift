import Foundation
import RunbookCore
import RunbookSteps

/// Foundation also has a `Host` class; inside this module `Host` means the inventory host.
typealias Host = RunbookCore.Host

/// Loads `inventory/hosts.yml` (SPEC §3) into a resolved `Inventory`, reporting every problem with its location.
///
/// Connection settings are layered, later wins: built-in defaults (user `defaultUser`, port 22,
/// `~/.ssh/id_ed25519` and `~/.ssh/id_ecdsa`, `~/.ssh/known_hosts`, strict checking, 10 s connect
/// timeout, keepalive every 15 s, 3 missed) → the inventory's `defaults:` → the ssh_config entry
/// for the host's inventory name → the host's own entry. So the inventory wins where it speaks
/// about a host, and ssh_config fills in what the host entry leaves out (including `HostName`,
/// used as the address when the host has none, and `ProxyJump`).
///
/// Variables merge `defaults.vars` → top-level `vars` → the vars of each group the host is in,
/// in the order the groups are written → the host's `vars`; maps merge deeply.
///
/// Relative `identity_file` and `known_hosts` paths are relative to the inventory file's folder;
/// `~` is the given home directory.
public struct InventoryLoader: Sendable {
    /// The home directory `~` expands to.
    public var homeDirectory: String
    /// The login user when neither the inventory nor ssh_config names one (the controller's `USER`).
    public var defaultUser: String
    /// The parsed `~/.ssh/config`, if it is to be honoured.
    public var sshConfig: SSHConfig?

    /// A loader expanding `~` to `homeDirectory`, logging in as `defaultUser` unless told otherwise.
    public init(homeDirectory: String, defaultUser: String, sshConfig: SSHConfig? = nil) {
        self.homeDirectory = homeDirectory
        self.defaultUser = defaultUser
        self.sshConfig = sshConfig
    }

    /// A loader for the user running the process: `HOME`, `USER` and `~/.ssh/config` when it can be read.
    public static func forCurrentUser(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> InventoryLoader {
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        let user = environment["USER"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["LOGNAME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? NSUserName()
        let configPath = home + "/.ssh/config"
        let sshConfig = (try? String(contentsOfFile: configPath, encoding: .utf8)).map(SSHConfig.parse)
        return InventoryLoader(homeDirectory: home, defaultUser: user, sshConfig: sshConfig)
    }

    /// Reads and resolves the inventory file at `path` (diagnostics name the file as `path`).
    public func load(path: String) throws(DiagnosticError) -> Inventory {
        let document = try YAMLDocument.load(path: path)
        return try resolve(document)
    }

    /// Resolves inventory `text`; `file` names it in diagnostics and anchors relative paths.
    public func load(text: String, file: String) throws(DiagnosticError) -> Inventory {
        let document = try YAMLDocument.parse(text: text, file: file)
        return try resolve(document)
    }

    /// Resolves a parsed inventory document.
    public func resolve(_ document: YAMLDocument) throws(DiagnosticError) -> Inventory {
        var resolver = Resolver(loader: self, file: document.file)
        let inventory = resolver.run(document.root)
        let sorted = resolver.diagnostics.sortedByLocation()
        try sorted.throwIfErrors()
        var result = inventory
        result.warnings = sorted.warnings
        return result
    }
}

// MARK: - Keys

extension InventoryLoader {
    static let topLevelKeys = ["defaults", "vars", "groups", "hosts"]
    static let settingKeys = [
        "user", "port", "identity_file", "known_hosts", "host_key_checking", "connect_timeout",
        "server_alive_interval", "server_alive_count_max", "password_secret", "connection",
    ]
    static let defaultsKeys = settingKeys + ["vars", "notify"]
    static let hostKeys = ["address"] + settingKeys + ["proxy_jump", "vars"]
    static let groupKeys = ["hosts", "vars"]
}

// MARK: - Resolution

/// Connection settings as written in `defaults:` or a host entry; nil where silent.
private struct Settings {
    var user: String?
    var port: Int?
    var identityFiles: [String]?
    var knownHosts: String?
    var hostKeyChecking: HostKeyChecking?
    var connectTimeout: Double?
    var serverAliveInterval: Int?
    var serverAliveCountMax: Int?
    var password: String?
    var connection: ConnectionKind?
}

/// One proxy_jump hop as written: `[user@]host[:port]`.
private struct JumpSpec {
    var user: String?
    var host: String
    var port: Int?
    /// The node it was written in, or nil when it came from ssh_config.
    var node: YAMLNode?
}

/// A host entry before resolution.
private struct RawHost {
    var name: String
    /// The `name:` key of the entry, or the group list item that named it.
    var location: SourceLocation
    var path: String
    var address: String?
    var settings = Settings()
    /// nil when not written; empty for `none`.
    var proxyJump: [JumpSpec]?
    var proxyJumpNode: YAMLNode?
    var vars: [String: Value] = [:]
}

/// The state of one `load`: diagnostics and the pieces read so far.
private struct Resolver {
    let loader: InventoryLoader
    let file: String
    let baseDirectory: String
    var diagnostics = Diagnostics()

    var defaults = Settings()
    var globalVars: [String: Value] = [:]
    var rawHosts: [RawHost] = []
    var hostIndex: [String: Int] = [:]
    var groupNames: [String] = []
    var groupMembers: [String: [String]] = [:]
    var groupVars: [String: [String: Value]] = [:]
    var notify: [NotifyTarget] = []

    var hosts: [Host] = []
    var chains: [String: [JumpHost]?] = [:]

    init(loader: InventoryLoader, file: String) {
        self.loader = loader
        self.file = file
        self.baseDirectory = URL(fileURLWithPath: file).deletingLastPathComponent().standardizedFileURL.path
    }

    mutating func run(_ root: YAMLNode?) -> Inventory {
        guard let root else { return Inventory(hosts: [], groups: [:], groupNames: []) }
        guard let top = root.mapping(
            &diagnostics, allowedKeys: InventoryLoader.topLevelKeys,
            what: "a mapping with defaults, vars, groups and hosts")
        else { return Inventory(hosts: [], groups: [:], groupNames: []) }

        if let node = top["defaults"] { readDefaults(node) }
        if let node = top["vars"] { globalVars = Value.merge(globalVars, readVars(node)) }
        if let node = top["hosts"] { readHosts(node) }
        if let node = top["groups"] { readGroups(node) }

        hosts = rawHosts.map(resolveSettings)
        for index in hosts.indices where hosts[index].connection == .ssh {
            var stack: [String] = []
            hosts[index].proxyJump = chain(for: hosts[index].name, stack: &stack) ?? []
        }
        for index in hosts.indices {
            hosts[index].groups = groupNames.filter { groupMembers[$0]?.contains(hosts[index].name) == true }
            var vars = globalVars
            for group in hosts[index].groups {
                vars = Value.merge(vars, groupVars[group] ?? [:])
            }
            hosts[index].vars = Value.merge(vars, rawHosts[index].vars)
        }
        var inventory = Inventory(hosts: hosts, groups: groupMembers, groupNames: groupNames)
        inventory.notify = notify
        return inventory
    }

    // MARK: Reading

    mutating func readDefaults(_ node: YAMLNode) {
        guard let map = node.mapping(&diagnostics, allowedKeys: InventoryLoader.defaultsKeys) else { return }
        defaults = readSettings(map)
        if let vars = map["vars"] { globalVars = readVars(vars) }
        if let node = map["notify"] { notify = NotifyReader.read(node, &diagnostics) }
    }

    mutating func readVars(_ node: YAMLNode) -> [String: Value] {
        guard let map = node.mapping(&diagnostics, what: "a mapping of variable names to values") else { return [:] }
        return map.values
    }

    mutating func readSettings(_ map: YAMLMapping) -> Settings {
        var settings = Settings()
        if let node = map["user"] { settings.user = node.nonEmptyString(&diagnostics) }
        if let node = map["port"] { settings.port = node.int(&diagnostics, in: 1...65535) }
        if let node = map["identity_file"] {
            settings.identityFiles = node.stringList(&diagnostics)?.map { expandPath($0) }
        }
        if let node = map["known_hosts"] {
            settings.knownHosts = node.nonEmptyString(&diagnostics).map { expandPath($0) }
        }
        if let node = map["host_key_checking"] {
            settings.hostKeyChecking = node.oneOf(HostKeyChecking.self, &diagnostics)
        }
        if let node = map["connect_timeout"], let seconds = node.duration(&diagnostics) {
            if seconds > 0 {
                settings.connectTimeout = seconds
            } else {
                node.error("connect_timeout must be more than 0", in: &diagnostics)
            }
        }
        if let node = map["server_alive_interval"], let seconds = node.duration(&diagnostics) {
            settings.serverAliveInterval = Int(seconds.rounded(.up))
        }
        if let node = map["server_alive_count_max"] {
            settings.serverAliveCountMax = node.int(&diagnostics, in: 1...1000)
        }
        if let node = map["password_secret"], let name = node.nonEmptyString(&diagnostics) {
            if isSecretName(name) {
                settings.password = name
            } else {
                node.error(
                    "invalid secret name \(name.debugDescription)",
                    hint: "use letters, digits and underscores; the value comes from RUNBOOK_SECRET_\(name.uppercased()) or .runbook/secrets.env",
                    in: &diagnostics)
            }
        }
        if let node = map["connection"] {
            settings.connection = node.oneOf(ConnectionKind.self, &diagnostics)
        }
        return settings
    }

    mutating func readHosts(_ node: YAMLNode) {
        guard let map = node.mapping(
            &diagnostics, what: "a mapping of host names to their settings",
            hint: "write each host as `name: { address: … }`")
        else { return }
        for entry in map.entries {
            guard checkName(entry.key, kind: "host", node: entry.keyNode) else { continue }
            var raw = RawHost(name: entry.key, location: entry.keyNode.location, path: entry.value.path)
            let example = entry.value.scalarText.map { "\(entry.key): { address: \($0) }" }
                ?? "\(entry.key): { address: … }"
            if let body = entry.value.mapping(
                &diagnostics, allowedKeys: InventoryLoader.hostKeys, what: "a mapping of host settings",
                hint: "write `\(example)`")
            {
                if let node = body["address"] { raw.address = node.nonEmptyString(&diagnostics) }
                raw.settings = readSettings(body)
                if let node = body.entry("proxy_jump")?.value {
                    raw.proxyJumpNode = node
                    raw.proxyJump = readJumps(node)
                    if raw.settings.connection == .local, !(raw.proxyJump ?? []).isEmpty {
                        node.error("a host with connection: local cannot have a proxy_jump", in: &diagnostics)
                    }
                }
                if let node = body["vars"] { raw.vars = readVars(node) }
            }
            hostIndex[raw.name] = rawHosts.count
            rawHosts.append(raw)
        }
    }

    mutating func readGroups(_ node: YAMLNode) {
        guard let map = node.mapping(&diagnostics, what: "a mapping of group names to their hosts and vars") else {
            return
        }
        let explicitHosts = rawHosts.map(\.name)
        for entry in map.entries {
            guard checkName(entry.key, kind: "group", node: entry.keyNode) else { continue }
            let name = entry.key
            var memberNodes: [YAMLNode] = []
            if entry.value.isSequence {
                // Shorthand: `web: [app1, app2]`.
                memberNodes = entry.value.list(&diagnostics) ?? []
            } else if let body = entry.value.mapping(
                &diagnostics, allowedKeys: InventoryLoader.groupKeys,
                what: "a mapping with hosts and vars (or a list of host names)")
            {
                if let hostsNode = body["hosts"] { memberNodes = hostsNode.list(&diagnostics) ?? [] }
                if let varsNode = body["vars"] { groupVars[name] = readVars(varsNode) }
            }
            if hostIndex[name] != nil {
                entry.keyNode.warning(
                    "group \(name.debugDescription) has the same name as a host",
                    hint: "a pattern \(name.debugDescription) selects both; rename one of them",
                    in: &diagnostics)
            }
            groupNames.append(name)
            var members: [String] = []
            for memberNode in memberNodes {
                guard let member = memberNode.nonEmptyString(&diagnostics) else { continue }
                if members.contains(member) {
                    memberNode.warning("host \(member.debugDescription) is listed twice in group \(name.debugDescription)", in: &diagnostics)
                    continue
                }
                if hostIndex[member] == nil {
                    guard checkName(member, kind: "host", node: memberNode) else { continue }
                    // A host named only by a group is defined implicitly (as in Ansible), with the
                    // built-in and `defaults:` settings and its name as the address (or ssh_config's
                    // HostName). A name close to a host under `hosts:` is probably a typo: warn.
                    if let suggestion = closestMatch(member, in: explicitHosts) {
                        memberNode.warning(
                            "host \(member.debugDescription) is not under hosts:, so it is defined here with its name as the address",
                            hint: "did you mean \(suggestion.debugDescription)?", in: &diagnostics)
                    }
                    hostIndex[member] = rawHosts.count
                    rawHosts.append(RawHost(name: member, location: memberNode.location, path: memberNode.path))
                }
                members.append(member)
            }
            groupMembers[name] = members
        }
    }

    /// proxy_jump: a string (`a,b` for a chain), a list, or `none`/empty for no jump.
    mutating func readJumps(_ node: YAMLNode) -> [JumpSpec]? {
        if node.isNull { return [] }
        var texts: [(String, YAMLNode)] = []
        if node.isSequence {
            for item in node.list(&diagnostics) ?? [] {
                guard let text = item.nonEmptyString(&diagnostics) else { return nil }
                texts += splitChain(text).map { ($0, item) }
            }
        } else {
            guard let text = node.nonEmptyString(&diagnostics) else { return nil }
            if text.lowercased() == "none" { return [] }
            texts = splitChain(text).map { ($0, node) }
        }
        var specs: [JumpSpec] = []
        for (text, item) in texts {
            guard let spec = parseJump(text, node: item) else { return nil }
            specs.append(spec)
        }
        return specs
    }

    func splitChain(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Parses `[user@]host[:port]` (IPv6 as `[addr]:port`); reports a malformed hop at `node`.
    mutating func parseJump(_ text: String, node: YAMLNode?) -> JumpSpec? {
        var rest = Substring(text)
        var user: String?
        if let at = rest.lastIndex(of: "@") {
            user = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
        }
        var host = String(rest)
        var port: Int?
        var portText: Substring?
        if rest.hasPrefix("[") {
            if let close = rest.firstIndex(of: "]") {
                host = String(rest[rest.index(after: rest.startIndex)..<close])
                let after = rest[rest.index(after: close)...]
                if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { host = "" }
            } else {
                host = ""
            }
        } else if rest.filter({ $0 == ":" }).count == 1, let colon = rest.firstIndex(of: ":") {
            host = String(rest[..<colon])
            portText = rest[rest.index(after: colon)...]
        }
        if let portText {
            guard let number = Int(portText), (1...65535).contains(number) else {
                if let node {
                    node.error("invalid port in proxy_jump \(text.debugDescription)", hint: "write [user@]host[:port]", in: &diagnostics)
                }
                return nil
            }
            port = number
        }
        if host.isEmpty || user?.isEmpty == true || host.contains(where: \.isWhitespace) {
            if let node {
                node.error("invalid proxy_jump \(text.debugDescription)", hint: "write an inventory host name or [user@]host[:port]", in: &diagnostics)
            }
            return nil
        }
        return JumpSpec(user: user, host: host, port: port, node: node)
    }

    // MARK: Settings

    func resolveSettings(_ raw: RawHost) -> Host {
        let connection = raw.settings.connection ?? defaults.connection ?? .ssh
        let ssh = connection == .ssh ? loader.sshConfig?.resolve(host: raw.name) : nil
        let home = loader.homeDirectory
        let builtinIdentities = ["\(home)/.ssh/id_ed25519", "\(home)/.ssh/id_ecdsa"]
        let local = raw.settings
        // SPEC §3: ~/.ssh/config is honoured, but the inventory (its defaults included) wins
        // wherever both speak.
        let user = local.user ?? defaults.user ?? ssh?.user ?? loader.defaultUser
        let sshIdentities = ssh.flatMap { $0.identityFiles.isEmpty ? nil : $0.identityFiles }?
            .map { expandSSHConfigPath($0, user: user) }
        return Host(
            name: raw.name,
            connection: connection,
            address: raw.address ?? ssh?.hostName ?? raw.name,
            port: local.port ?? defaults.port ?? ssh?.port ?? 22,
            user: user,
            identityFiles: local.identityFiles ?? defaults.identityFiles ?? sshIdentities ?? builtinIdentities,
            knownHosts: local.knownHosts ?? defaults.knownHosts ?? "\(home)/.ssh/known_hosts",
            hostKeyChecking: local.hostKeyChecking ?? defaults.hostKeyChecking ?? .strict,
            proxyJump: [],
            password: local.password ?? defaults.password,
            connectTimeout: local.connectTimeout ?? defaults.connectTimeout
                ?? ssh?.connectTimeout.map(Double.init) ?? 10,
            serverAliveInterval: local.serverAliveInterval ?? defaults.serverAliveInterval
                ?? ssh?.serverAliveInterval ?? 15,
            serverAliveCountMax: local.serverAliveCountMax ?? defaults.serverAliveCountMax
                ?? ssh?.serverAliveCountMax ?? 3)
    }

    // MARK: Proxy jumps

    /// The full chain of hops for host `name` (its jumps' own chains first); nil after an error.
    mutating func chain(for name: String, stack: inout [String]) -> [JumpHost]? {
        if let known = chains[name] { return known }
        guard let index = hostIndex[name] else { return nil }
        let raw = rawHosts[index]
        let host = hosts[index]
        var specs = raw.proxyJump
        if specs == nil, host.connection == .ssh, let text = loader.sshConfig?.resolve(host: name).proxyJump {
            specs = splitChain(text).compactMap { parseJump($0, node: nil) }
        }
        guard let specs, !specs.isEmpty else {
            chains[name] = []
            return []
        }
        stack.append(name)
        defer { stack.removeLast() }
        var result: [JumpHost] = []
        var failed = false
        for spec in specs {
            if let target = hostIndex[spec.host] {
                let targetHost = hosts[target]
                if let start = stack.firstIndex(of: spec.host) {
                    let cycle = (stack[start...] + [spec.host]).joined(separator: " -> ")
                    let site = spec.node ?? raw.proxyJumpNode
                    diagnostics.error(
                        "proxy_jump cycle: \(cycle)",
                        at: site?.location ?? raw.location,
                        field: site?.path ?? YAMLNode.childPath(raw.path, key: "proxy_jump"),
                        hint: spec.node == nil
                            ? "this ProxyJump comes from ssh_config: exclude the jump host there (Host !\(spec.host) *) or set proxy_jump: none for it"
                            : "a host cannot be reached through itself; break the loop")
                    failed = true
                    continue
                }
                if targetHost.connection == .local {
                    diagnostics.error(
                        "proxy_jump host \(spec.host.debugDescription) has connection: local and cannot be a jump host",
                        at: spec.node?.location ?? raw.location,
                        field: spec.node?.path ?? YAMLNode.childPath(raw.path, key: "proxy_jump"))
                    failed = true
                    continue
                }
                guard let before = chain(for: spec.host, stack: &stack) else {
                    failed = true
                    continue
                }
                var hop = targetHost.asJumpHost
                if let user = spec.user { hop.user = user }
                if let port = spec.port { hop.port = port }
                result += before + [hop]
            } else {
                guard let hop = addressJump(spec, from: host, raw: raw) else {
                    failed = true
                    continue
                }
                result.append(hop)
            }
        }
        let final: [JumpHost]? = failed ? nil : result
        chains[name] = .some(final)
        return final
    }

    /// A hop that is not an inventory host: it takes the referring host's user, keys and
    /// known_hosts settings, then ssh_config's entry for its name, then what the spec says.
    mutating func addressJump(_ spec: JumpSpec, from host: Host, raw: RawHost) -> JumpHost? {
        let ssh = loader.sshConfig?.resolve(host: spec.host)
        let looksLikeAddress = spec.user != nil || spec.port != nil || spec.host.contains(".")
            || spec.host.contains(":") || spec.host == "localhost" || ssh?.hostName != nil
        if !looksLikeAddress, let node = spec.node {
            let candidates = rawHosts.map(\.name)
            var hint = "name a host under hosts:, or write an address as [user@]host[:port]"
            if let suggestion = closestMatch(spec.host, in: candidates) {
                hint = "did you mean \(suggestion.debugDescription)?"
            }
            node.error("unknown proxy_jump host \(spec.host.debugDescription)", hint: hint, in: &diagnostics)
            return nil
        }
        let user = spec.user ?? ssh?.user ?? host.user
        let identities = ssh.flatMap { $0.identityFiles.isEmpty ? nil : $0.identityFiles }?
            .map { expandSSHConfigPath($0, user: user) }
        return JumpHost(
            name: nil,
            address: ssh?.hostName ?? spec.host,
            port: spec.port ?? ssh?.port ?? 22,
            user: user,
            identityFiles: identities ?? host.identityFiles,
            knownHosts: host.knownHosts,
            hostKeyChecking: host.hostKeyChecking)
    }

    // MARK: Names and paths

    /// Host and group names must be usable in patterns: no spaces, commas, `*`, `?` or leading `!`, and not `all`.
    mutating func checkName(_ name: String, kind: String, node: YAMLNode) -> Bool {
        let hint = "\(kind) names are used in host patterns: avoid spaces, commas, '*', '?' and a leading '!'"
        if name.isEmpty {
            node.error("empty \(kind) name", in: &diagnostics)
            return false
        }
        if name == "all" {
            node.error("\(kind) name \"all\" is reserved", hint: "\"all\" already selects every host", in: &diagnostics)
            return false
        }
        if name.hasPrefix("!") || name.contains(where: { $0.isWhitespace || $0 == "," || $0 == "*" || $0 == "?" }) {
            node.error("invalid \(kind) name \(name.debugDescription)", hint: hint, in: &diagnostics)
            return false
        }
        return true
    }

    func isSecretName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    /// `~` → home; a relative path → relative to the inventory's folder.
    func expandPath(_ path: String) -> String {
        if path == "~" { return loader.homeDirectory }
        if path.hasPrefix("~/") { return loader.homeDirectory + path.dropFirst() }
        if path.hasPrefix("/") || path.hasPrefix("~") { return path }
        return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: baseDirectory, isDirectory: true))
            .standardizedFileURL.path
    }

    /// An ssh_config IdentityFile: `~`, `%d` (home), `%u` (local user), `%r` (remote user); relative to the current folder, as OpenSSH does.
    func expandSSHConfigPath(_ path: String, user: String) -> String {
        var expanded = path
            .replacingOccurrences(of: "%d", with: loader.homeDirectory)
            .replacingOccurrences(of: "%u", with: loader.defaultUser)
            .replacingOccurrences(of: "%r", with: user)
        if expanded == "~" { expanded = loader.homeDirectory }
        if expanded.hasPrefix("~/") { expanded = loader.homeDirectory + expanded.dropFirst() }
        if expanded.hasPrefix("/") || expanded.hasPrefix("~") { return expanded }
        return URL(fileURLWithPath: expanded).standardizedFileURL.path
    }
}

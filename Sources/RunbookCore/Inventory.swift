/// How a host's SSH key is checked against known_hosts.
public enum HostKeyChecking: String, Sendable, Hashable, Codable, CaseIterable {
    /// Unknown and changed keys are refused.
    case strict
    /// Unknown keys are recorded; changed keys are refused.
    case acceptNew = "accept-new"
    /// No check at all (tests and throwaway hosts only).
    case off
}

/// How the controller reaches a host.
public enum ConnectionKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// Over SSH.
    case ssh
    /// On the controller itself, no SSH.
    case local
}

/// One hop of a host's proxy-jump chain, with the settings to connect to it.
public struct JumpHost: Sendable, Hashable, Codable {
    /// The inventory host this hop is, when it is one.
    public var name: String?
    /// Address to connect to.
    public var address: String
    /// SSH port.
    public var port: Int
    /// Login user.
    public var user: String
    /// Private key files to try, absolute.
    public var identityFiles: [String]
    /// known_hosts file, absolute.
    public var knownHosts: String
    /// How this hop's host key is checked.
    public var hostKeyChecking: HostKeyChecking
    /// Name of the secret holding the password, when this hop uses password authentication.
    public var password: String?

    /// A hop with every setting given.
    public init(
        name: String?, address: String, port: Int, user: String, identityFiles: [String],
        knownHosts: String, hostKeyChecking: HostKeyChecking, password: String? = nil
    ) {
        self.name = name
        self.address = address
        self.port = port
        self.user = user
        self.identityFiles = identityFiles
        self.knownHosts = knownHosts
        self.hostKeyChecking = hostKeyChecking
        self.password = password
    }

    /// `user@address:port`, for display.
    public var destination: String { "\(user)@\(formatAddress(address, port: port))" }
}

/// A host of the inventory with every connection setting resolved and its variables merged.
public struct Host: Sendable, Hashable, Codable {
    /// The inventory name.
    public var name: String
    /// SSH or local.
    public var connection: ConnectionKind
    /// Address to connect to: the inventory's, else ssh_config's HostName, else the name.
    public var address: String
    /// SSH port.
    public var port: Int
    /// Login user.
    public var user: String
    /// Private key files to try, in order, absolute.
    public var identityFiles: [String]
    /// known_hosts file, absolute.
    public var knownHosts: String
    /// How the host key is checked.
    public var hostKeyChecking: HostKeyChecking
    /// Hops to go through, first hop first; empty for a direct connection.
    public var proxyJump: [JumpHost]
    /// Name of the secret holding the password, when the inventory asks for password authentication.
    public var password: String?
    /// Seconds to wait for the connection to be established.
    public var connectTimeout: Double
    /// Seconds between keepalive messages; 0 turns them off.
    public var serverAliveInterval: Int
    /// Keepalives left unanswered before the connection is considered dead.
    public var serverAliveCountMax: Int
    /// Groups the host belongs to, in inventory order.
    public var groups: [String]
    /// Variables merged from top-level, group and host vars.
    public var vars: [String: Value]

    /// A host with every setting given; the defaults are the built-in ones.
    public init(
        name: String, connection: ConnectionKind = .ssh, address: String? = nil, port: Int = 22,
        user: String, identityFiles: [String] = [], knownHosts: String,
        hostKeyChecking: HostKeyChecking = .strict, proxyJump: [JumpHost] = [],
        password: String? = nil, connectTimeout: Double = 10, serverAliveInterval: Int = 15,
        serverAliveCountMax: Int = 3, groups: [String] = [], vars: [String: Value] = [:]
    ) {
        self.name = name
        self.connection = connection
        self.address = address ?? name
        self.port = port
        self.user = user
        self.identityFiles = identityFiles
        self.knownHosts = knownHosts
        self.hostKeyChecking = hostKeyChecking
        self.proxyJump = proxyJump
        self.password = password
        self.connectTimeout = connectTimeout
        self.serverAliveInterval = serverAliveInterval
        self.serverAliveCountMax = serverAliveCountMax
        self.groups = groups
        self.vars = vars
    }

    /// `user@address:port` (or `local`), for display.
    public var destination: String {
        connection == .local ? "local" : "\(user)@\(formatAddress(address, port: port))"
    }

    /// This host as a hop for another host's proxy jump.
    public var asJumpHost: JumpHost {
        JumpHost(
            name: name, address: address, port: port, user: user, identityFiles: identityFiles,
            knownHosts: knownHosts, hostKeyChecking: hostKeyChecking, password: password)
    }
}

/// The resolved inventory: hosts with their settings, and groups.
public struct Inventory: Sendable, Hashable, Codable {
    /// Every host, in file order (hosts only named by a group come last).
    public var hosts: [Host]
    /// Group name to its host names, in file order.
    public var groups: [String: [String]]
    /// Group names in file order.
    public var groupNames: [String]
    /// `defaults.notify:`: where every runbook's outcome is sent.
    public var notify: [NotifyTarget] = []
    /// Problems found that did not stop loading.
    public var warnings: [Diagnostic]

    /// An inventory of `hosts` and `groups`; `groupNames` defaults to the groups sorted by name.
    public init(
        hosts: [Host], groups: [String: [String]] = [:], groupNames: [String]? = nil,
        warnings: [Diagnostic] = []
    ) {
        self.hosts = hosts
        self.groups = groups
        self.groupNames = groupNames ?? groups.keys.sorted()
        self.warnings = warnings
    }

    /// The host called `name`, if any.
    public func host(named name: String) -> Host? {
        hosts.first { $0.name == name }
    }

    /// The hosts of group `name`, in inventory order; empty for an unknown group.
    public func hosts(inGroup name: String) -> [Host] {
        guard let members = groups[name] else { return [] }
        let set = Set(members)
        return hosts.filter { set.contains($0.name) }
    }
}

/// `address:port`, with IPv6 addresses in brackets; the port is left out when it is 22.
func formatAddress(_ address: String, port: Int) -> String {
    let host = address.contains(":") ? "[\(address)]" : address
    return port == 22 ? host : "\(host):\(port)"
}

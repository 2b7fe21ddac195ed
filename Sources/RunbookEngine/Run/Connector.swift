import Logging
import RunbookCore
import RunbookSteps
import RunbookTransport

/// A transport for a host other than over SSH (an in-memory host in tests); nil: connect as usual.
public typealias HostOpener = @Sendable (RunbookCore.Host) -> (any Transport)?

/// Opens the right transport for a host: SSH, or local for `connection: local`.
public struct Connector: Sendable {
    /// Where secrets named by the inventory come from.
    public let secrets: SecretStore
    /// For connection-level warnings (accept-new, host key checking off).
    public let logger: Logger

    /// Opens a host's transport instead of SSH or local, when it returns one (an in-memory host in tests).
    public let opener: HostOpener?

    /// Creates a connector.
    public init(secrets: SecretStore, logger: Logger, opener: HostOpener? = nil) {
        self.secrets = secrets
        self.logger = logger
        self.opener = opener
    }

    /// Connects to `host`.
    public func connect(_ host: RunbookCore.Host) async throws(TransportError) -> any Transport {
        if let transport = opener?(host) { return transport }
        switch host.connection {
        case .local:
            return LocalTransport(hostName: host.name)
        case .ssh:
            let store = secrets
            return try await SSHTransport.connect(host, secret: { store.value($0) }, logger: logger)
        }
    }
}

/// Runs `body` for each element with at most `limit` running at once; results keep input order.
public func boundedMap<Element: Sendable, Result: Sendable>(
    _ elements: [Element], limit: Int, _ body: @escaping @Sendable (Element) async -> Result
) async -> [Result] {
    await withTaskGroup(of: (Int, Result).self) { group in
        var results = [Result?](repeating: nil, count: elements.count)
        var next = 0
        let width = max(1, limit)
        while next < min(width, elements.count) {
            let index = next
            group.addTask { (index, await body(elements[index])) }
            next += 1
        }
        for await (index, result) in group {
            results[index] = result
            if next < elements.count {
                let index = next
                group.addTask { (index, await body(elements[index])) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}

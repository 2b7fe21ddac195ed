import Logging
import RunbookCore
import RunbookSteps
import RunbookTransport

/// Opens the right transport for a host: SSH, or local for `connection: local`.
public struct Connector: Sendable {
    /// Where secrets named by the inventory come from.
    public let secrets: SecretStore
    /// For connection-level warnings (accept-new, host key checking off).
    public let logger: Logger

    /// Creates a connector.
    public init(secrets: SecretStore, logger: Logger) {
        self.secrets = secrets
        self.logger = logger
    }

    /// Connects to `host`.
    public func connect(_ host: RunbookCore.Host) async throws(TransportError) -> any Transport {
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

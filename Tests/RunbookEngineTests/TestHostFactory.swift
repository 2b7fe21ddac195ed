import Logging
import RunbookCore
import RunbookTransport
import TestSupport

extension TestHosts {
    /// The inventory host for test host `name` (`h1`, `h2`, `h3`), as root with the test key.
    func inventoryHost(_ name: String) -> RunbookCore.Host {
        RunbookCore.Host(name: name, connection: .ssh, address: self["RBT_\(name.uppercased())"], port: 22, user: "root",
                         identityFiles: [self["RBT_KEY"]], knownHosts: self["RBT_KNOWN_HOSTS"], hostKeyChecking: .strict,
                         proxyJump: [], password: nil, connectTimeout: 5, serverAliveInterval: 15, serverAliveCountMax: 3,
                         groups: [], vars: [:])
    }

    /// An SSH transport to that host, and the local transport: the two real implementations.
    func bothTransports(_ name: String) async throws -> [any Transport] {
        [try await SSHTransport.connect(inventoryHost(name), logger: Logger(label: "test")), LocalTransport(hostName: "local")]
    }
}

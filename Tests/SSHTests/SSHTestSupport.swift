import Foundation
import SSH
import TestSupport

/// Builds targets for the harness's hosts.
struct Hosts {
    let env: TestHosts

    init() throws { env = try TestHosts.load() }

    func target(_ address: String? = nil, port: Int = 22, user: String = "root", key: String? = nil,
                knownHosts: String? = nil, policy: HostKeyPolicy = .strict, timeout: Duration = .seconds(5),
                keepalive: Int = 15, countMax: Int = 3) -> SSHTarget {
        SSHTarget(host: address ?? env["RBT_H1"], port: port, user: user, identityFiles: [key ?? env["RBT_KEY"]],
                  useAgent: false, knownHostsFile: knownHosts ?? env["RBT_KNOWN_HOSTS"], hostKeyPolicy: policy,
                  connectTimeout: timeout, keepaliveInterval: keepalive, keepaliveCountMax: countMax)
    }

    func connect(_ target: SSHTarget, via: [SSHTarget] = []) async throws -> SSHConnection {
        try await SSHConnection.connect(to: target, via: via)
    }

    /// A fresh temporary file path (not created) inside a fresh directory.
    func temporaryPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rbtest-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name).path
    }

    /// The OpenSSH fingerprint of a host's ed25519 key, as `ssh-keygen -l` prints it.
    func fingerprint(host: String) throws -> String {
        let out = try runProcess("/usr/bin/ssh-keygen", ["-l", "-f", "\(env["RBT_DIR"])/\(host)/ssh_host_ed25519_key.pub"]).stdout
        return String(out.split(separator: " ")[1])
    }
}

/// Records output chunks from the loop thread.
final class ChunkRecorder: Sendable {
    private let lock = NSLock()
    nonisolated(unsafe) private var chunks: [OutputChunk] = []
    func append(_ chunk: OutputChunk) { lock.withLock { chunks.append(chunk) } }
    var all: [OutputChunk] { lock.withLock { chunks } }
}

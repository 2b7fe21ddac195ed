import Foundation
import SSH
import Testing
import TestSupport

@Suite("Connecting, host keys and authentication")
struct ConnectTests {
    let hosts: Hosts
    init() throws { hosts = try Hosts() }

    @Test("strict refuses an unknown host before anything runs")
    func strictUnknown() async throws {
        let empty = hosts.temporaryPath("known_hosts")
        _ = FileManager.default.createFile(atPath: empty, contents: nil)
        let error = await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(knownHosts: empty))
        }
        #expect(error?.kind == .hostKeyUnknown)
        #expect(error?.message.contains(try hosts.fingerprint(host: "h1")) == true)
        #expect(try String(contentsOfFile: empty, encoding: .utf8).isEmpty)
    }

    @Test("accept-new records an unknown host, then strict accepts it")
    func acceptNew() async throws {
        let file = hosts.temporaryPath("known_hosts")
        let c = try await hosts.connect(hosts.target(port: 2222, knownHosts: file, policy: .acceptNew))
        await c.close()
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.hasPrefix("[\(hosts.env["RBT_H1"])]:2222 ssh-ed25519 "))
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let again = try await hosts.connect(hosts.target(port: 2222, knownHosts: file, policy: .strict))
        #expect(try await again.run("hostname").stdoutText == "h1\n")
        await again.close()
    }

    @Test("a changed host key is refused in every mode but off", arguments: [HostKeyPolicy.strict, .acceptNew])
    func changedKey(policy: HostKeyPolicy) async throws {
        // File h2's key under h1's address: h1 then offers a different key.
        let file = hosts.temporaryPath("known_hosts")
        let h2Key = try String(contentsOfFile: "\(hosts.env["RBT_DIR"])/h2/ssh_host_ed25519_key.pub", encoding: .utf8)
        let fields = h2Key.split(separator: " ")
        try "\(hosts.env["RBT_H1"]) \(fields[0]) \(fields[1])\n".write(toFile: file, atomically: true, encoding: .utf8)
        let error = await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(knownHosts: file, policy: policy))
        }
        #expect(error?.kind == .hostKeyChanged)
        #expect(error?.message.contains(try hosts.fingerprint(host: "h2")) == true, "expected fingerprint shown")
        #expect(error?.message.contains(try hosts.fingerprint(host: "h1")) == true, "offered fingerprint shown")
        #expect(try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").count == 1)
        let off = try await hosts.connect(hosts.target(knownHosts: file, policy: .off))
        #expect(try await off.run("hostname").stdoutText == "h1\n")
        await off.close()
    }

    @Test("hashed known_hosts entries match")
    func hashedKnownHosts() async throws {
        let c = try await hosts.connect(hosts.target(hosts.env["RBT_H3"], knownHosts: hosts.env["RBT_KNOWN_HOSTS_HASHED"]))
        #expect(try await c.run("hostname").stdoutText == "h3\n")
        await c.close()
    }

    @Test("a key the host does not accept is refused with a clear message")
    func wrongKey() async throws {
        let error = await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(key: hosts.env["RBT_KEY_WRONG"]))
        }
        #expect(error?.kind == .authentication)
        #expect(error?.message.contains("id_wrong (rejected by the server)") == true)
    }

    @Test("an identity file that is a FIFO, a device or a huge file is skipped with its reason, never read")
    func keyFilesThatAreNotKeys() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rb-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        try Data(count: 200_000).write(to: URL(fileURLWithPath: dir + "/huge"))
        for (path, reason) in [(dir + "/fifo", "not a regular file"), ("/dev/zero", "not a regular file"),
                               (dir + "/huge", "200000 bytes: too large for a private key"), (dir + "/missing", "not found")] {
            let error = await #expect(throws: SSHError.self) {
                _ = try await hosts.connect(hosts.target(key: path))
            }
            #expect(error?.kind == .authentication, "\(path)")
            #expect(error?.message.contains("\(path) (\(reason))") == true, "\(error?.message ?? "")")
        }
    }

    @Test("ECDSA key, passphrase-protected key, and password")
    func otherAuthMethods() async throws {
        let ecdsa = try await hosts.connect(hosts.target(key: hosts.env["RBT_KEY_ECDSA"]))
        #expect(try await ecdsa.run("whoami").stdoutText == "root\n")
        await ecdsa.close()

        var withPassphrase = hosts.target(key: hosts.env["RBT_KEY_PASS"])
        withPassphrase.passphrase = hosts.env["RBT_KEY_PASSPHRASE"]
        let pass = try await hosts.connect(withPassphrase)
        #expect(try await pass.run("whoami").stdoutText == "root\n")
        await pass.close()

        withPassphrase.passphrase = "wrong"
        let error = await #expect(throws: SSHError.self) { _ = try await hosts.connect(withPassphrase) }
        #expect(error?.message.contains("wrong passphrase") == true)

        var password = hosts.target(user: hosts.env["RBT_PASSWORD_USER"], key: "/nonexistent/key")
        password.password = hosts.env["RBT_PASSWORD"]
        let pw = try await hosts.connect(password)
        #expect(try await pw.run("whoami").stdoutText == "\(hosts.env["RBT_PASSWORD_USER"])\n")
        await pw.close()
    }

    @Test("a key held by ssh-agent logs in, with no identity file")
    func agent() async throws {
        // scripts/testhosts runs two agents: one holds the hosts' key, one a key they refuse.
        var target = hosts.target(key: "/nonexistent/key")
        target.identityFiles = []
        target.useAgent = true
        target.agentSocket = hosts.env["RBT_AGENT_SOCK"]
        let c = try await hosts.connect(target)
        #expect(try await c.run("whoami").stdoutText == "root\n")
        await c.close()

        target.agentSocket = hosts.env["RBT_AGENT_SOCK_WRONG"]
        let error = await #expect(throws: SSHError.self) { _ = try await hosts.connect(target) }
        #expect(error?.kind == .authentication)
        #expect(error?.message.contains("ssh-agent (1 key rejected)") == true, "\(String(describing: error))")
    }

    @Test("RSA keys fail with an explanation (libssh2 1.10 signs with SHA-1)")
    func rsaKey() async throws {
        do {
            let c = try await hosts.connect(hosts.target(key: hosts.env["RBT_KEY_RSA"]))
            await c.close()  // a newer libssh2 signs with rsa-sha2: then this simply works
        } catch let error as SSHError {
            #expect(error.kind == .authentication)
            #expect(error.message.contains("SHA-1"))
        }
    }

    @Test("a closed port is refused at once")
    func closedPort() async throws {
        let error = await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(port: 2))
        }
        #expect(error?.kind == .connect)
        #expect(error?.message.contains("Connection refused") == true)
    }

    @Test("ProxyJump through one and two jump hosts")
    func proxyJump() async throws {
        // Generous keepalive limits: on a loaded machine this test's own tasks can wait long
        // between operations; dead peers are tested by the Unreachable suites.
        let inner = hosts.target(hosts.env["RBT_INNER"], countMax: 8)
        let one = try await hosts.connect(inner, via: [hosts.target(hosts.env["RBT_H3"], countMax: 8)])
        #expect(try await one.run("hostname").stdoutText == "inner\n")
        let data = (0..<300_000).map { UInt8($0 % 199) }
        let path = "/tmp/rbtest-jump-\(UUID().uuidString)"
        try await one.writeFile(path, contents: data)
        #expect(try await one.readFile(path) == data)
        try await one.removeFile(path)
        await one.close()

        let two = try await hosts.connect(inner, via: [hosts.target(hosts.env["RBT_H2"], countMax: 8), hosts.target(hosts.env["RBT_H3"], countMax: 8)])
        #expect(try await two.run("hostname").stdoutText == "inner\n")
        await two.close()
    }

    @Test("a jump host that cannot reach the target says so")
    func proxyJumpUnreachable() async throws {
        let error = await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(hosts.env["RBT_INNER"]), via: [hosts.target(hosts.env["RBT_H1"])])
        }
        #expect(error?.kind == .connect)
        #expect(error?.message.contains("could not open a connection to \(hosts.env["RBT_INNER"]):22") == true)
    }

    @Test("the inner host is not reachable directly")
    func innerNotDirect() async throws {
        await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(hosts.env["RBT_INNER"], timeout: .seconds(1)))
        }
    }
}

/// These cut h2 off the network, so they run one at a time, and apart from the other
/// suites (scripts/test runs every suite named Unreachable… in a second phase).
@Suite("Unreachable hosts", .serialized)
struct UnreachableTests {
    let hosts: Hosts
    init() throws { hosts = try Hosts() }

    @Test("a host that does not answer times out on connect")
    func connectTimeout() async throws {
        try hosts.env.harness("cut", "h2")
        defer { _ = try? hosts.env.harness("restore", "h2") }
        let error = await #expect(throws: SSHError.self) {
            _ = try await hosts.connect(hosts.target(hosts.env["RBT_H2"], timeout: .seconds(2)))
        }
        #expect(error?.kind == .connect)
        #expect(error?.message.contains("timed out after 2 s") == true)
    }

    @Test("a host cut off mid-session is detected by keepalive")
    func cutMidSession() async throws {
        let c = try await hosts.connect(hosts.target(hosts.env["RBT_H2"], keepalive: 1, countMax: 2))
        #expect(try await c.run("hostname").stdoutText == "h2\n")
        let running = Task { try await c.run("sleep 30") }
        try await Task.sleep(for: .milliseconds(300))
        try hosts.env.harness("cut", "h2")
        defer { _ = try? hosts.env.harness("restore", "h2") }
        let error = await #expect(throws: SSHError.self) { _ = try await running.value }
        #expect(error?.kind == .disconnected)
        #expect(error?.message.contains("no answer from") == true)
        // The dead connection refuses further work with the same clear error.
        await #expect(throws: SSHError.self) { _ = try await c.run("true") }
        await c.close()
    }
}

/// Peers that are not SSH servers: each connection ends within its `connect_timeout`, with a
/// clear error, however the peer misbehaves. No test host needed: the peer is a small server
/// on the loopback interface, started and stopped here.
@Suite("Hostile peers", .serialized)
struct HostilePeerTests {
    /// A loopback server that answers each connection with `preamble`, then sends bytes
    /// without a newline until the client goes away.
    final class FloodServer {
        let process = Process()
        let port: Int

        init(preamble: String) throws {
            let script = """
                import socket, sys, threading
                s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
                print(s.getsockname()[1], flush=True)
                def serve(c):
                    try:
                        c.sendall(sys.argv[1].encode())
                        chunk = b"A" * 65536
                        while True: c.sendall(chunk)
                    except OSError: pass
                    finally: c.close()
                while True:
                    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
                """
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-c", script, preamble]
            let out = Pipe()
            process.standardOutput = out
            try process.run()
            var line: [UInt8] = []
            while let byte = try out.fileHandleForReading.read(upToCount: 1)?.first, byte != UInt8(ascii: "\n") { line.append(byte) }
            port = Int(String(decoding: line, as: UTF8.self)) ?? 0
        }

        /// SIGKILL: a child of the test process inherits its blocked SIGTERM.
        func stop() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Without a version line, libssh2 would read the flood forever: the session's read
    /// deadline ends it. After one, the flood is a malformed packet, refused at once.
    @Test("a peer that floods bytes without a newline, before or after its version line, is given up on",
          .timeLimit(.minutes(1)), arguments: [("", "timed out after 2 s waiting for the SSH handshake"),
                                               ("SSH-2.0-OpenSSH_9.2\r\n", "Unable to exchange encryption keys")])
    func floodingPeer(_ preamble: String, _ expected: String) async throws {
        let server = try FloodServer(preamble: preamble)
        defer { server.stop() }
        #expect(server.port > 0)
        let knownHosts = FileManager.default.temporaryDirectory.appendingPathComponent("rb-flood-\(UUID().uuidString)").path
        FileManager.default.createFile(atPath: knownHosts, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: knownHosts) }
        let target = SSHTarget(host: "127.0.0.1", port: server.port, user: "root", identityFiles: [], useAgent: false,
                               knownHostsFile: knownHosts, hostKeyPolicy: .strict, connectTimeout: .seconds(2),
                               keepaliveInterval: 15, keepaliveCountMax: 3)
        let error = await #expect(throws: SSHError.self) {
            _ = try await SSHConnection.connect(to: target)
        }
        #expect(String(describing: error).contains(expected), "\(String(describing: error))")
    }
}

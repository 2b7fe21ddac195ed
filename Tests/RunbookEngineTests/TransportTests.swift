import Foundation
import Logging
import RunbookCore
import RunbookEngine
import RunbookTransport
import Testing
import TestSupport

/// The transports against a real sshd host (h1) and the controller itself.
@Suite("Transports")
struct TransportTests {
    let env: TestHosts
    let host: RunbookCore.Host

    init() throws {
        env = try TestHosts.load()
        host = env.inventoryHost("h1")
    }

    func transports() async throws -> [any Transport] {
        try await env.bothTransports(host.name)
    }

    @Test("a started command waits for its gate, and its output comes back once, however late it is asked for")
    func startedCommand() async throws {
        for t in try await transports() {
            let mark = "/var/tmp/rbtest-start-\(UUID().uuidString)"
            let gate = CommandGate()
            let pending = t.start("echo ran > \(mark); echo out; echo err >&2; exit 3", stdin: [], timeout: .seconds(30),
                                  onOutput: nil, startingAfter: gate)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await t.stat(mark) == nil, "the command started before its gate opened on \(t.hostName)")
            gate.open()
            let output = try await pending.output()
            #expect(output.stdoutText == "out\n" && output.stderrText == "err\n" && output.exitStatus == 3, "\(t.hostName)")
            #expect(try await t.readFile(mark) == Array("ran\n".utf8), "\(t.hostName)")
            // Asked again after it finished: the same output, at once.
            #expect(try await pending.output().stdoutText == "out\n")

            _ = try await t.run("rm -f \(mark)")
            let refused = CommandGate()
            let never = t.start("echo ran > \(mark)", stdin: [], timeout: nil, onOutput: nil, startingAfter: refused)
            refused.cancel()
            await #expect(throws: TransportError.self, "a cancelled gate on \(t.hostName)") { _ = try await never.output() }
            #expect(try await t.stat(mark) == nil, "a cancelled gate ran the command on \(t.hostName)")
            #expect(try await t.run("echo still").stdoutText == "still\n", "the connection still works on \(t.hostName)")
            await t.close()
        }
    }

    @Test("an atomic write replaces the file with the final mode and leaves no temp file")
    func atomicWrite() async throws {
        for t in try await transports() {
            let dir = "/tmp/rbtest-atomic-\(UUID().uuidString)"
            _ = try await t.run("mkdir -p \(dir)")
            let path = dir + "/app.conf"
            try await t.writeFileAtomically(path, contents: Array("old\n".utf8), mode: 0o644)
            try await t.writeFileAtomically(path, contents: Array("new\n".utf8), mode: 0o640)
            #expect(try await t.readFile(path) == Array("new\n".utf8), "\(t.hostName)")
            #expect(try await t.stat(path)?.permissions == 0o640, "\(t.hostName)")
            #expect(try await t.run("ls -A \(dir)").stdoutText == "app.conf\n", "\(t.hostName)")
            _ = try await t.run("rm -rf \(dir)")
            await t.close()
        }
    }

    @Test("stat follows a symbolic link and says where it leads; a dangling link is a link to nothing")
    func statOfSymlinks() async throws {
        for t in try await transports() {
            let dir = "/tmp/rbtest-link-\(UUID().uuidString)"
            _ = try await t.run("mkdir -p \(dir)/a && printf hello > \(dir)/a/file && chmod 640 \(dir)/a/file && ln -s a/file \(dir)/link && ln -s missing \(dir)/dangling")
            let plain = try #require(try await t.stat(dir + "/a/file"))
            #expect(!plain.isSymlink && plain.symlinkTarget == nil && plain.isRegularFile, "\(t.hostName)")
            let link = try #require(try await t.stat(dir + "/link"))
            #expect(link.isSymlink && link.symlinkTarget == dir + "/a/file", "\(t.hostName): \(link)")
            #expect(link.isRegularFile && link.size == 5 && link.permissions == 0o640, "\(t.hostName): \(link)")
            let dangling = try #require(try await t.stat(dir + "/dangling"))
            #expect(dangling.isSymlink && dangling.symlinkTarget == nil && !dangling.isRegularFile, "\(t.hostName): \(dangling)")
            _ = try await t.run("rm -rf \(dir)")
            await t.close()
        }
    }

    @Test("an atomic write that cannot be put in place leaves the old file intact")
    func atomicWriteFailure() async throws {
        for t in try await transports() {
            let dir = "/tmp/rbtest-atomic-\(UUID().uuidString)"
            _ = try await t.run("mkdir -p \(dir)/adir && touch \(dir)/adir/keep")
            let path = dir + "/app.conf"
            let original: [UInt8] = [0xFF, 0x00] + Array("original\n".utf8)
            try await t.writeFileAtomically(path, contents: original, mode: 0o600)
            // The temp file is written, then chown fails: the rename never happens.
            await #expect(throws: TransportError.self) {
                try await t.writeFileAtomically(path, contents: Array("replacement\n".utf8), owner: "no-such-user-rb")
            }
            #expect(try await t.readFile(path) == original, "\(t.hostName)")
            #expect(try await t.stat(path)?.permissions == 0o600)
            // The target is a directory: mv -T refuses to replace it.
            await #expect(throws: TransportError.self) {
                try await t.writeFileAtomically(dir + "/adir", contents: Array("x".utf8))
            }
            #expect(try await t.run("ls -A \(dir)/adir").stdoutText == "keep\n")
            #expect(try await t.run("ls -A \(dir)").stdoutText == "adir\napp.conf\n", "no temp file left on \(t.hostName)")
            _ = try await t.run("rm -rf \(dir)")
            await t.close()
        }
    }

    @Test("a secret reaches the command but never a command line on the host")
    func secretsStayOffCommandLines() async throws {
        let value = "s3cr3t-\(UUID().uuidString)"
        for t in try await transports() {
            let secret = Secret(name: "db_password", value: value)
            let marker = "rbtest-\(UUID().uuidString)"
            let command: ShellCommand = "sleep 1.5; echo \(marker) >/dev/null; printf '%s' \(secret)"
            async let running = t.run(command, stdin: [], timeout: .seconds(30), onOutput: nil)
            try await Task.sleep(for: .milliseconds(700))
            let ps = try await t.run("ps -eo args")
            let result = try await running
            #expect(ps.stdoutText.contains(marker) == false || !ps.stdoutText.contains(value))
            #expect(!ps.stdoutText.contains(value), "secret visible in ps on \(t.hostName)")
            #expect(result.stdoutText == value, "the command got the secret on \(t.hostName)")
            #expect(!command.commandLine.contains(value))
            await t.close()
        }
    }

    @Test("the local transport reports status, streams and timeouts like SSH")
    func localRun() async throws {
        let t = LocalTransport(hostName: "local")
        let r = try await t.run("printf out; printf err >&2; exit 4")
        #expect(r.stdoutText == "out" && r.stderrText == "err" && r.exitStatus == 4)
        let slow = try await t.run("sleep 30 & echo $! > /tmp/rbtest-local-\(getpid()); wait", stdin: [], timeout: .milliseconds(500), onOutput: nil)
        #expect(slow.timedOut)
        let pid = try String(contentsOfFile: "/tmp/rbtest-local-\(getpid())", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try? await Task.sleep(for: .milliseconds(200))
        let state = try await t.run("ps -o stat= -p \(pid) || true").stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(state.isEmpty || state.hasPrefix("Z"), "sleep still running: \(state)")
    }
}

@Suite("TCP exchanges through a host")
struct ExchangeTests {
    @Test("an exchange starts on the host: its own sshd answers on 127.0.0.1, a closed port is refused")
    func exchangeFromHost() async throws {
        let env = try TestHosts.load()
        let transports = try await env.bothTransports("h2")
        for t in transports {
            let address = t is LocalTransport ? env["RBT_H2"] : "127.0.0.1"
            // sshd sends its banner once its child for this connection runs: on a machine busy
            // with the other suites that has taken over 3 s.
            let banner = try #require(try await t.exchange(address: address, port: 22, send: [], timeout: .seconds(15)))
            #expect(String(decoding: banner.bytes, as: UTF8.self).hasPrefix("SSH-2.0-OpenSSH"), "\(t.hostName)")
            #expect(banner.complete == false)
            // Sending garbage makes sshd hang up: the exchange is complete.
            let closed = try #require(try await t.exchange(address: address, port: 22, send: Array("nonsense\r\n\r\n".utf8), timeout: .seconds(15)))
            #expect(closed.complete, "\(t.hostName)")
            #expect(try await t.exchange(address: address, port: 1, send: [], timeout: .seconds(2)) == nil, "\(t.hostName)")
            await t.close()
        }
    }
}

import Foundation
import SSH
import Testing
import TestSupport

@Suite("Commands on a real sshd")
struct ExecTests {
    let hosts: Hosts
    init() throws { hosts = try Hosts() }

    @Test("stdout, stderr and exit status come back separately and exactly")
    func separateStreams() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let r = try await c.run("printf 'to out\\n'; printf 'to err' >&2; exit 3")
        #expect(r.stdoutText == "to out\n")
        #expect(r.stderrText == "to err")
        #expect(r.exitStatus == 3)
        #expect(r.exitSignal == nil)
        #expect(r.timedOut == false)
        let ok = try await c.run("true")
        #expect(ok.exitStatus == 0 && ok.stdout.isEmpty && ok.stderr.isEmpty)
    }

    @Test("a gated command starts only when its gate opens; a cancelled gate runs nothing")
    func gate() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let mark = "/var/tmp/rbtest-gate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: mark) }
        // /var/tmp is shared with the test hosts.
        let gate = ExecGate()
        let running = Task { try await c.run("echo ran > \(mark); echo started", gate: gate) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!FileManager.default.fileExists(atPath: mark), "the command started before its gate opened")
        gate.open()
        let r = try await running.value
        #expect(r.exitStatus == 0 && r.stdoutText == "started\n")
        #expect(FileManager.default.fileExists(atPath: mark))
        try FileManager.default.removeItem(atPath: mark)

        let refused = ExecGate()
        let never = Task { try await c.run("echo ran > \(mark)", gate: refused) }
        try await Task.sleep(for: .milliseconds(100))
        refused.cancel()
        do {
            _ = try await never.value
            Issue.record("a cancelled gate still returned a result")
        } catch let error as SSHError {
            #expect(error.kind == .cancelled, "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: mark), "a cancelled gate ran the command")
        // The session is still good, and a gate opened before the run starts lets it go at once.
        let early = ExecGate()
        early.open()
        #expect(try await c.run("echo again", gate: early).stdoutText == "again\n")
    }

    @Test("a gate held longer than the keepalive limit leaves the session alive, and its command runs when it opens")
    func longGateKeepsSession() async throws {
        let c = try await hosts.connect(hosts.target(keepalive: 1, countMax: 2))
        defer { Task { await c.close() } }
        let gate = ExecGate()
        let held = Task { try await c.run("echo released", gate: gate) }
        // Four seconds: twice the two seconds of silence after which a peer counts as dead.
        try await Task.sleep(for: .seconds(4))
        gate.open()
        let r = try await held.value
        #expect(r.exitStatus == 0 && r.stdoutText == "released\n", "\(r)")
        #expect(try await c.run("echo still").stdoutText == "still\n")
    }

    @Test("non-UTF-8 bytes survive")
    func rawBytes() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let r = try await c.run("printf '\\377\\376\\000abc\\200'; printf '\\351t\\351' >&2")
        #expect(r.stdout == [0xFF, 0xFE, 0x00, 0x61, 0x62, 0x63, 0x80])
        #expect(r.stderr == [0xE9, 0x74, 0xE9])
    }

    @Test("10 MB on stdout and stderr at once arrives whole")
    func bigBothStreams() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let size = 10 * 1024 * 1024
        let r = try await c.run("yes out | head -c \(size) & yes err | head -c \(size) >&2; wait", timeout: .seconds(120))
        #expect(r.timedOut == false)
        #expect(r.exitStatus == 0)
        #expect(r.stdout.count == size)
        #expect(r.stderr.count == size)
        #expect(r.stdout.starts(with: Array("out\nout\n".utf8)))
        #expect(r.stderr.starts(with: Array("err\nerr\n".utf8)))
        #expect(!r.stdout.contains(UInt8(ascii: "e")))
        #expect(!r.stderr.contains(UInt8(ascii: "o")))
    }

    @Test("a timeout ends the remote process group")
    func timeoutKillsRemoteProcess() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let pidFile = "/tmp/rbtest-timeout-\(UUID().uuidString)"
        let r = try await c.run("sleep 600 & echo $! > \(pidFile); echo started; wait", timeout: .seconds(1))
        #expect(r.timedOut)
        #expect(r.stdoutText == "started\n")
        // A killed orphan may linger as a zombie until init reaps it: that counts as gone.
        let check = try await c.run("pid=$(cat \(pidFile)); rm -f \(pidFile); state=$(ps -o stat= -p $pid); case \"$state\" in ''|Z*) echo gone;; *) echo \"alive: $state\";; esac")
        #expect(check.stdoutText == "gone\n")
    }

    @Test("output streams to a callback while the command runs")
    func streaming() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        // The command only finishes once the test saw its first line and created the flag file
        // (the hosts share this machine's filesystem), so output must arrive while it runs.
        let flag = "/var/tmp/rbtest-stream-\(UUID().uuidString)"
        let recorder = ChunkRecorder()
        let r = try await c.run("echo first; while [ ! -e \(flag) ]; do sleep 0.05; done; rm -f \(flag); echo second >&2",
                                timeout: .seconds(30)) { chunk in
            recorder.append(chunk)
            if chunk.stream == .stdout, String(decoding: chunk.bytes, as: UTF8.self).contains("first") {
                _ = FileManager.default.createFile(atPath: flag, contents: nil)
            }
        }
        #expect(r.timedOut == false)
        #expect(r.stderrText == "second\n")
        #expect(recorder.all.first?.stream == .stdout)
        #expect(recorder.all.contains { $0.stream == .stderr })
    }

    @Test("many commands at once on one session")
    func concurrentChannels() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let outputs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<20 {
                group.addTask { (i, try await c.run("echo \(i)").stdoutText) }
            }
            var all: [Int: String] = [:]
            for try await (i, out) in group { all[i] = out }
            return all
        }
        #expect(outputs.count == 20)
        for i in 0..<20 { #expect(outputs[i] == "\(i)\n") }
    }

    @Test("every command reuses the one TCP connection, which has TCP_NODELAY set")
    func sessionReuse() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        // sshd puts the client's address and port in SSH_CLIENT: one connection, one port.
        var clients: Set<String> = []
        for _ in 0..<5 { clients.insert(try await c.run("echo $SSH_CLIENT").stdoutText) }
        async let a = c.run("echo $SSH_CLIENT")
        async let b = c.run("echo $SSH_CLIENT")
        clients.insert(try await a.stdoutText)
        clients.insert(try await b.stdoutText)
        #expect(clients.count == 1, "\(clients)")
        let fields = clients.first?.split(separator: " ") ?? []
        let port = try #require(fields.count == 3 ? UInt16(fields[1]) : nil)
        // This process's socket with that local port is the session's: ask it for TCP_NODELAY.
        let socket = try #require(openTCPSocket(localPort: port), "no socket of this process has local port \(port)")
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        #expect(getsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length) == 0)
        #expect(value != 0, "TCP_NODELAY is not set on the session's socket")
    }

    @Test("after a command ends, the next one on the connection runs on a channel already opened for it")
    func channelOpenedAhead() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let first = try await c.run("echo 1")
        #expect(first.stdoutText == "1\n")
        #expect(first.openedAhead == false)
        // A failed command leaves a spare behind it too, and each spare serves one command.
        let failed = try await c.run("echo 2; exit 3")
        #expect(failed.exitStatus == 3 && failed.openedAhead)
        for i in 3...5 {
            let r = try await c.run("echo \(i)")
            #expect(r.stdoutText == "\(i)\n")
            #expect(r.openedAhead, "command \(i) opened its own channel")
        }
        // Commands at once: the first to open takes the spare, the others open their own (or a
        // spare left by one that ended first); all run.
        async let a = c.run("echo a")
        async let b = c.run("echo b")
        async let d = c.run("echo d")
        let together = try await [a, b, d]
        #expect(together.map(\.stdoutText) == ["a\n", "b\n", "d\n"])
        #expect(together.filter(\.openedAhead).count >= 1)
        // SFTP shares the connection with the spare.
        try await c.writeFile("/tmp/rb-spare-\(getpid())", contents: Array("x".utf8))
        #expect(try await c.readFile("/tmp/rb-spare-\(getpid())") == Array("x".utf8))
        try await c.removeFile("/tmp/rb-spare-\(getpid())")
    }

    @Test("a task that prefers the connection's executor resumes on the loop thread that drives it")
    func loopExecutor() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let threads = await withTaskExecutorPreference(c.taskExecutor) { () async -> [String] in
            var names: [String] = []
            for _ in 0..<3 {
                _ = try? await c.run("true")
                names.append(currentThreadName())
            }
            return names
        }
        #expect(threads.count == 3 && Set(threads).count == 1, "\(threads)")
        #expect(threads.allSatisfy { $0.hasPrefix("ssh-loop-") }, "\(threads)")
    }

    @Test("a command killed by a signal reports the signal, not an exit status")
    func exitSignal() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let r = try await c.run("echo before; kill -TERM $$; echo after")
        #expect(r.stdoutText == "before\n")
        #expect(r.exitSignal == "TERM")
        #expect(r.timedOut == false)
        // The session is still good afterwards.
        #expect(try await c.run("echo still").stdoutText == "still\n")
    }

    @Test("stdin reaches the command")
    func stdin() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let r = try await c.run("wc -c; cat >/dev/null", stdin: Array(repeating: 65, count: 100_000))
        #expect(r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "100000")
    }

    @Test("SFTP write, read, stat and remove")
    func sftp() async throws {
        let c = try await hosts.connect(hosts.target())
        defer { Task { await c.close() } }
        let path = "/tmp/rbtest-sftp-\(UUID().uuidString)"
        #expect(try await c.readFile(path) == nil)
        #expect(try await c.stat(path) == nil)
        let data = (0..<200_000).map { UInt8($0 % 251) }
        try await c.writeFile(path, contents: data, mode: 0o640)
        #expect(try await c.readFile(path) == data)
        let attrs = try #require(try await c.stat(path))
        #expect(attrs.size == 200_000)
        #expect(attrs.permissions == 0o640)
        #expect(attrs.isRegularFile)
        await #expect(throws: SSHError.self) { try await c.writeFile(path, contents: [1], exclusive: true) }
        try await c.removeFile(path)
        #expect(try await c.stat(path) == nil)
        try await c.removeFile(path)  // already gone: fine
        // Reads start small and grow: sizes around the first read's come back whole.
        for size in [0, 1, 4095, 4096, 4097, 16_384, 70_000] {
            let bytes = (0..<size).map { UInt8(($0 * 7) % 256) }
            try await c.writeFile(path, contents: bytes)
            #expect(try await c.readFile(path) == bytes, "a file of \(size) bytes")
        }
        try await c.removeFile(path)
    }

    @Test("IPv6 and a second port")
    func ipv6AndPort() async throws {
        let c = try await hosts.connect(hosts.target(hosts.env["RBT_H1_V6"], port: 2222))
        defer { Task { await c.close() } }
        #expect(try await c.run("hostname").stdoutText == "h1\n")
    }
}

/// The file descriptor of this process's TCP socket bound to `localPort`, found through
/// /proc/self/fd, or nil.
func openTCPSocket(localPort: UInt16) -> Int32? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
    for entry in entries {
        guard let fd = Int32(entry),
              let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)"),
              link.hasPrefix("socket:") else { continue }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { continue }
        let port: UInt16
        switch Int32(storage.ss_family) {
        case AF_INET:
            port = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
        case AF_INET6:
            port = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
        default:
            continue
        }
        if port == localPort { return fd }
    }
    return nil
}

/// The name of the thread this runs on, as the kernel has it.
private func currentThreadName() -> String {
    ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "")
        .trimmingCharacters(in: .newlines)
}

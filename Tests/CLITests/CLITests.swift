import Foundation
import Testing
import TestSupport

/// The built `runbook` binary against the test hosts, as an operator runs it.
@Suite("runbook CLI", .serialized)
struct CLITests {
    let env: TestHosts

    init() throws { env = try TestHosts.load() }

    func runbook(_ arguments: String...) throws -> ProcessOutput {
        try runBuiltRunbook(arguments)
    }

    @Test("--version is fast to answer and prints the version")
    func version() throws {
        let r = try runbook("--version")
        #expect(r.status == 0)
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test("hosts lists resolved settings, in JSON too")
    func hosts() throws {
        let r = try runbook("hosts", "-i", env["RBT_INVENTORY"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("inner  ssh         root@\(env["RBT_INNER"])"))
        #expect(r.stdout.contains("h3"))
        let json = try runbook("hosts", "-l", "web", "-i", env["RBT_INVENTORY"], "--json")
        let lines = json.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(first?["name"] as? String == "h1")
        #expect(first?["address"] as? String == env["RBT_H1"])
    }

    @Test("exec shows each host's output and exit status; any failure exits 1")
    func exec() throws {
        let ok = try runbook("exec", "web,inner", "-i", env["RBT_INVENTORY"], "--", "hostname")
        #expect(ok.status == 0)
        for name in ["h1", "h2", "inner"] { #expect(ok.stdout.contains("\(name) | ok | exit 0")) }
        #expect(ok.stdout.contains("3 hosts: 3 ok"))

        let mixed = try runbook("exec", "all", "-i", env["RBT_INVENTORY"], "--json", "--", "echo done; test \"$(hostname)\" = h2")
        #expect(mixed.status == 1)
        let events = mixed.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let h2 = events.first { $0["host"] as? String == "h2" }
        #expect(h2?["exit_status"] as? Int == 0)
        #expect(h2?["stdout"] as? String == "done\n")
        let h1 = events.first { $0["host"] as? String == "h1" }
        #expect(h1?["exit_status"] as? Int == 1)
        let summary = events.last
        #expect(summary?["event"] as? String == "summary")
        #expect(summary?["hosts"] as? Int == 5)
    }

    @Test("exec runs hosts in parallel, at most --forks at a time")
    func execForks() throws {
        let dir = "/var/tmp/rbtest-forks-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Each host notes when its command starts and ends (the hosts share this machine's clock).
        func intervals(forks: String) throws -> [(start: Int, end: Int)] {
            let command = "date +%s%N > \(dir)/$(hostname).\(forks).start; sleep 0.6; date +%s%N > \(dir)/$(hostname).\(forks).end"
            let r = try runbook("exec", "h1,h2,h3", "--forks", forks, "-i", env["RBT_INVENTORY"], "--", command)
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            return try ["h1", "h2", "h3"].map { host in
                func read(_ suffix: String) throws -> Int {
                    Int(try String(contentsOfFile: "\(dir)/\(host).\(forks).\(suffix)", encoding: .utf8)
                        .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
                }
                return (try read("start"), try read("end"))
            }
        }
        let together = try intervals(forks: "3")
        #expect(together.map(\.start).max()! < together.map(\.end).min()!, "with --forks 3 all three commands overlap")
        let oneByOne = try intervals(forks: "1").sorted { $0.start < $1.start }
        for (earlier, later) in zip(oneByOne, oneByOne.dropFirst()) {
            #expect(earlier.end <= later.start, "with --forks 1 no two commands overlap")
        }
    }

    @Test("host_key_checking: off connects to an unknown host, with a loud warning")
    func hostKeyCheckingOff() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rb-off-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "".write(toFile: dir + "/known_hosts", atomically: true, encoding: .utf8)
        let inventory = dir + "/inventory.yml"
        try """
        defaults: { user: root, identity_file: \(env["RBT_KEY"]), known_hosts: \(dir)/known_hosts }
        hosts:
          h1: { address: \(env["RBT_H1"]), host_key_checking: off }
          h2: { address: \(env["RBT_H2"]) }
        """.write(toFile: inventory, atomically: true, encoding: .utf8)
        let off = try runbook("exec", "h1", "-i", inventory, "--", "hostname")
        #expect(off.status == 0)
        #expect(off.stdout.contains("h1 | ok | exit 0"))
        #expect(off.stderr.contains("host key checking is OFF for root@\(env["RBT_H1"]):22"), "\(off.stderr)")
        #expect(try String(contentsOfFile: dir + "/known_hosts", encoding: .utf8).isEmpty, "off records nothing")
        // The same unknown host under the default (strict) is refused.
        let strict = try runbook("exec", "h2", "-i", inventory, "--", "hostname")
        #expect(strict.status == 1)
        #expect(strict.stdout.contains("h2 | UNREACHABLE"))
        #expect(!strict.stderr.contains("host key checking is OFF"))
    }

    @Test("a failing command exits 1 and shows stderr")
    func execFailure() throws {
        let r = try runbook("exec", "h1", "-i", env["RBT_INVENTORY"], "--", "echo broken >&2; exit 7")
        #expect(r.status == 1)
        #expect(r.stdout.contains("h1 | FAILED | exit 7"))
        #expect(r.stdout.contains("stderr:\nbroken\n"))
    }

    @Test("bad input exits 2 naming file and line, and contacts no host")
    func badInput() throws {
        let inventory = FileManager.default.temporaryDirectory.appendingPathComponent("rb-bad-\(UUID().uuidString).yml").path
        try "hosts:\n  h1: { address: 10.231.0.11, port: abc }\n".write(toFile: inventory, atomically: true, encoding: .utf8)
        // /var/tmp is shared with the test hosts: a command that ran would leave the mark.
        let mark = "/var/tmp/rbtest-bad-input-\(UUID().uuidString)"
        let r = try runbook("exec", "all", "-i", inventory, "--", "touch \(mark)")
        #expect(r.status == 2)
        #expect(r.stderr.contains("\(inventory):2:"))
        #expect(r.stderr.contains("port"))
        #expect(!FileManager.default.fileExists(atPath: mark), "a host ran the command despite the bad inventory")
        let good = try runbook("exec", "h1", "-i", env["RBT_INVENTORY"], "--", "touch \(mark)")
        #expect(good.status == 0 && FileManager.default.fileExists(atPath: mark), "the mark itself works")
        try? FileManager.default.removeItem(atPath: mark)
        let unknown = try runbook("exec", "nosuchhost", "-i", env["RBT_INVENTORY"], "--", "true")
        #expect(unknown.status == 2)
        let noCommand = try runbook("exec", "all", "-i", env["RBT_INVENTORY"])
        #expect(noCommand.status == 2)
        let badForks = try runbook("hosts", "--forks", "0", "-i", env["RBT_INVENTORY"])
        #expect(badForks.status == 2)
    }
}

/// Cuts h2 off the network: run apart from the other suites (scripts/test runs every suite
/// named Unreachable… in a second phase).
@Suite("runbook CLI with a host cut off", .serialized)
struct UnreachableCLITests {
    let env: TestHosts

    init() throws { env = try TestHosts.load() }

    func runbook(_ arguments: String...) throws -> ProcessOutput {
        try runBuiltRunbook(arguments)
    }

    @Test("an unreachable host is reported and exits 1; the others still run")
    func unreachable() throws {
        try env.harness("cut", "h2")
        defer { _ = try? env.harness("restore", "h2") }
        let inventory = FileManager.default.temporaryDirectory.appendingPathComponent("rb-inv-\(UUID().uuidString).yml").path
        let text = try String(contentsOfFile: env["RBT_INVENTORY"], encoding: .utf8)
            .replacingOccurrences(of: "host_key_checking: strict }", with: "host_key_checking: strict, connect_timeout: 2 }")
        try text.write(toFile: inventory, atomically: true, encoding: .utf8)
        let r = try runbook("exec", "web", "-i", inventory, "--", "hostname")
        #expect(r.status == 1)
        #expect(r.stdout.contains("h1 | ok | exit 0"))
        #expect(r.stdout.contains("h2 | UNREACHABLE | "))
        #expect(r.stdout.contains("timed out"))
    }
}

/// Runs the built binary (no colour) and captures its output.
/// The built binary started with `arguments` in `directory` (NO_COLOR set), not waited for:
/// its stdout and stderr together in the pipe returned.
func startBuiltRunbook(_ arguments: [String], in directory: String? = nil) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: repositoryRoot + "/.build/debug/runbook")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    var environment = ProcessInfo.processInfo.environment
    environment["NO_COLOR"] = "1"
    process.environment = environment
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    try process.run()
    return (process, out)
}

func runBuiltRunbook(_ arguments: [String], environment extra: [String: String] = [:]) throws -> ProcessOutput {
    var environment = ProcessInfo.processInfo.environment
    environment["NO_COLOR"] = "1"
    environment.merge(extra) { _, new in new }
    return try runProcessFull(repositoryRoot + "/.build/debug/runbook", arguments, environment: environment)
}

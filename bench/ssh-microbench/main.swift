// ssh-microbench: what our SSH layer costs for trivial commands, measured from inside one process.
//
// Workloads (see bench/README.md):
//   connect     (a) TCP connect + handshake + host key check + public key auth, then close
//   latency     (b) one command on an already open session, many times in a row
//   sequence    (c) connect + N sequential commands + close, as a whole run would see it
//   concurrent  (d) N commands issued at once on one open session
//
// Usage:
//   ssh-microbench HOST PORT USER KEYFILE KNOWN_HOSTS N_COMMANDS [options]
//   ssh-microbench --host H --port P --user U --key K --known-hosts F --commands N [options]
// Options:
//   --repeat R          rounds for connect, sequence and concurrent (default 5)
//   --samples S         commands timed for the latency workload (default 200)
//   --workload LIST     comma-separated subset of connect,latency,sequence,concurrent (default all)
//   --command CMD       the remote command (default `true`)
//   --no-warmup         skip the untimed warm-up connection (what a fresh process pays)
//   --json              print one JSON object instead of the table
//   --quiet             print nothing (for timing the whole process from outside)
//   --samples-out FILE  also write every raw sample (ms), one `workload index value` per line
// Unset connection settings default to RBT_H1, RBT_KEY and RBT_KNOWN_HOSTS (scripts/testhosts).

import Foundation
import SSH

let processStart = ContinuousClock.now

struct Options {
    var host = ProcessInfo.processInfo.environment["RBT_H1"] ?? ""
    var port = 22
    var user = "root"
    var key = ProcessInfo.processInfo.environment["RBT_KEY"] ?? ""
    var knownHosts = ProcessInfo.processInfo.environment["RBT_KNOWN_HOSTS"] ?? ""
    var commands = 20
    var repeats = 5
    var samples = 200
    var workloads: [String] = ["connect", "latency", "sequence", "concurrent"]
    var command = "true"
    var warmup = true
    var json = false
    var quiet = false
    var samplesOut: String? = nil
}

func usage(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ssh-microbench: \(message)\nusage: ssh-microbench HOST PORT USER KEYFILE KNOWN_HOSTS N_COMMANDS [--repeat R] [--samples S] [--workload LIST] [--command CMD] [--no-warmup] [--json] [--quiet]\n".utf8))
    exit(2)
}

func parseOptions(_ arguments: [String]) -> Options {
    var options = Options()
    var positional: [String] = []
    var index = 0
    func value(_ flag: String) -> String {
        index += 1
        guard index < arguments.count else { usage("\(flag) needs a value") }
        return arguments[index]
    }
    func number(_ flag: String) -> Int {
        let text = value(flag)
        guard let n = Int(text), n >= 0 else { usage("\(flag) needs a number, not \(text)") }
        return n
    }
    while index < arguments.count {
        let argument = arguments[index]
        switch argument {
        case "--host": options.host = value(argument)
        case "--port": options.port = number(argument)
        case "--user": options.user = value(argument)
        case "--key": options.key = value(argument)
        case "--known-hosts": options.knownHosts = value(argument)
        case "--commands": options.commands = number(argument)
        case "--repeat": options.repeats = max(1, number(argument))
        case "--samples": options.samples = max(1, number(argument))
        case "--workload":
            let list = value(argument).split(separator: ",").map(String.init)
            let known = Set(["connect", "latency", "sequence", "concurrent"])
            for name in list where !known.contains(name) { usage("unknown workload \(name)") }
            options.workloads = list
        case "--command": options.command = value(argument)
        case "--no-warmup": options.warmup = false
        case "--json": options.json = true
        case "--quiet": options.quiet = true
        case "--samples-out": options.samplesOut = value(argument)
        case "-h", "--help": usage("measures the SSH layer against one host")
        default:
            if argument.hasPrefix("--") { usage("unknown option \(argument)") }
            positional.append(argument)
        }
        index += 1
    }
    if positional.count > 6 { usage("too many arguments") }
    for (i, text) in positional.enumerated() {
        switch i {
        case 0: options.host = text
        case 1: options.port = Int(text) ?? { usage("PORT must be a number") }()
        case 2: options.user = text
        case 3: options.key = text
        case 4: options.knownHosts = text
        default: options.commands = Int(text) ?? { usage("N_COMMANDS must be a number") }()
        }
    }
    if options.host.isEmpty || options.key.isEmpty || options.knownHosts.isEmpty {
        usage("HOST, KEYFILE and KNOWN_HOSTS are required (or RBT_H1, RBT_KEY, RBT_KNOWN_HOSTS)")
    }
    return options
}

// MARK: Statistics

extension Duration {
    var ms: Double {
        let c = components
        return Double(c.seconds) * 1e3 + Double(c.attoseconds) / 1e15
    }
}

struct Summary {
    let count: Int
    let median: Double
    let p95: Double
    let min: Double
    let max: Double
    let mean: Double

    init(_ values: [Double]) {
        let sorted = values.sorted()
        count = sorted.count
        guard !sorted.isEmpty else {
            median = 0; p95 = 0; min = 0; max = 0; mean = 0
            return
        }
        let n = sorted.count
        median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        // Nearest rank.
        p95 = sorted[Swift.min(n - 1, Swift.max(0, Int((0.95 * Double(n)).rounded(.up)) - 1))]
        min = sorted[0]
        max = sorted[n - 1]
        mean = sorted.reduce(0, +) / Double(n)
    }

    var json: String {
        "{\"median\":\(f(median)),\"p95\":\(f(p95)),\"min\":\(f(min)),\"max\":\(f(max)),\"mean\":\(f(mean)),\"n\":\(count)}"
    }
}

func f(_ value: Double) -> String { String(format: "%.3f", value) }

// MARK: Workloads

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
}

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
let target = SSHTarget(
    host: options.host, port: options.port, user: options.user, identityFiles: [options.key],
    useAgent: false, knownHostsFile: options.knownHosts, hostKeyPolicy: .strict)

func connect() async throws -> (SSHConnection, Double) {
    let clock = ContinuousClock()
    var connection: SSHConnection? = nil
    let elapsed = try await clock.measure {
        connection = try await SSHConnection.connect(to: target)
    }
    return (connection!, elapsed.ms)
}

/// Runs the command once and returns its latency; a non-zero exit is an error.
func runOnce(_ connection: SSHConnection) async throws -> Double {
    try await runTimed(connection).total
}

/// Runs the command once: its latency as the caller sees it, and the part the event loop
/// reports (`CommandResult.duration`, from the loop taking the command to the channel closing).
func runTimed(_ connection: SSHConnection) async throws -> (total: Double, inLoop: Double) {
    let started = ContinuousClock.now
    let result = try await connection.run(options.command)
    let elapsed = (ContinuousClock.now - started).ms
    guard result.exitStatus == 0 else {
        throw BenchFailure(description: "`\(options.command)` exited \(result.exitStatus.map(String.init) ?? result.exitSignal ?? "?"): \(result.stderrText)")
    }
    return (elapsed, result.duration.ms)
}

struct Results {
    /// Every sample, by workload, in the order taken.
    var raw: [(String, [Double])] = []
    var coldConnect: Double?
    var connect: Summary?
    var close: Summary?
    var latency: Summary?
    var latencyInLoop: Summary?
    var latencyHandoff: Summary?
    var sequenceTotal: Summary?
    var sequenceConnect: Summary?
    var sequenceCommand: Summary?
    var concurrentTotal: Summary?
}

func measure() async throws -> Results {
    var results = Results()
    let n = options.commands
    let rounds = options.repeats

    if options.warmup {
        // The first connection of a process also starts the event loops and loads libssh2's
        // crypto; report it, then keep it out of the steady-state figures.
        let (connection, elapsed) = try await connect()
        results.coldConnect = elapsed
        _ = try await runOnce(connection)
        await connection.close()
    }

    if options.workloads.contains("connect") {
        var connects: [Double] = []
        var closes: [Double] = []
        for _ in 0..<rounds {
            let (connection, elapsed) = try await connect()
            connects.append(elapsed)
            let started = ContinuousClock.now
            await connection.close()
            closes.append((ContinuousClock.now - started).ms)
        }
        results.connect = Summary(connects)
        results.close = Summary(closes)
        results.raw += [("connect", connects), ("close", closes)]
    }

    if options.workloads.contains("latency") {
        let (connection, _) = try await connect()
        for _ in 0..<5 { _ = try await runOnce(connection) }
        var samples: [Double] = []
        var inLoop: [Double] = []
        samples.reserveCapacity(options.samples)
        for _ in 0..<options.samples {
            let (total, loop) = try await runTimed(connection)
            samples.append(total)
            inLoop.append(loop)
        }
        await connection.close()
        results.latency = Summary(samples)
        results.latencyInLoop = Summary(inLoop)
        // Per command: caller's latency minus the loop's own figure = handing the command to the
        // loop thread and the result back to the task.
        results.latencyHandoff = Summary(zip(samples, inLoop).map { $0 - $1 })
        results.raw += [("latency", samples), ("latency-in-loop", inLoop)]
    }

    if options.workloads.contains("sequence") {
        var totals: [Double] = []
        var connects: [Double] = []
        var commands: [Double] = []
        for _ in 0..<rounds {
            let started = ContinuousClock.now
            let (connection, elapsed) = try await connect()
            connects.append(elapsed)
            for _ in 0..<n { commands.append(try await runOnce(connection)) }
            await connection.close()
            totals.append((ContinuousClock.now - started).ms)
        }
        results.sequenceTotal = Summary(totals)
        results.sequenceConnect = Summary(connects)
        results.sequenceCommand = Summary(commands)
        results.raw += [("sequence-total", totals), ("sequence-connect", connects), ("sequence-command", commands)]
    }

    if options.workloads.contains("concurrent") {
        let (connection, _) = try await connect()
        _ = try await runOnce(connection)
        var totals: [Double] = []
        for _ in 0..<rounds {
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Double.self) { group in
                for _ in 0..<n { group.addTask { try await runOnce(connection) } }
                for try await _ in group {}
            }
            totals.append((ContinuousClock.now - started).ms)
        }
        await connection.close()
        results.concurrentTotal = Summary(totals)
        results.raw.append(("concurrent-total", totals))
    }
    return results
}

// MARK: Output

func printTable(_ r: Results, wall: Double) {
    let n = options.commands
    print("ssh-microbench: \(target.label), command `\(options.command)`, \(n) commands, \(options.repeats) rounds")
    print("")
    func row(_ name: String, _ s: Summary?) {
        guard let s else { return }
        let cells = [s.median, s.p95, s.min, s.max].map { String(format: "%9.2f", $0) }.joined(separator: " ")
        print(name.padding(toLength: 44, withPad: " ", startingAt: 0) + cells + String(format: " %7d", s.count))
    }
    print("workload".padding(toLength: 44, withPad: " ", startingAt: 0) + "   median       p95       min       max       n   (ms)")
    if let cold = r.coldConnect {
        print("cold connect+auth (first in process)".padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%9.2f", cold))
    }
    row("(a) connect+auth", r.connect)
    row("    close", r.close)
    row("(b) per command, open session", r.latency)
    row("    of which in the event loop", r.latencyInLoop)
    row("    of which handing over between threads", r.latencyHandoff)
    row("(c) connect + \(n) commands + close", r.sequenceTotal)
    row("    of which connect+auth", r.sequenceConnect)
    row("    of which per command", r.sequenceCommand)
    row("(d) \(n) concurrent commands, one session", r.concurrentTotal)
    print("")
    print(String(format: "process wall time so far: %.1f ms", wall))
}

func printJSON(_ r: Results, wall: Double) {
    var fields: [String] = [
        "\"tool\":\"ssh-microbench\"",
        "\"host\":\"\(options.host)\"",
        "\"port\":\(options.port)",
        "\"commands\":\(options.commands)",
        "\"repeat\":\(options.repeats)",
    ]
    if let cold = r.coldConnect { fields.append("\"cold_connect_auth_ms\":\(f(cold))") }
    let summaries: [(String, Summary?)] = [
        ("connect_auth_ms", r.connect), ("close_ms", r.close), ("cmd_latency_ms", r.latency),
        ("cmd_in_loop_ms", r.latencyInLoop), ("cmd_handoff_ms", r.latencyHandoff),
        ("sequence_total_ms", r.sequenceTotal), ("sequence_connect_auth_ms", r.sequenceConnect),
        ("sequence_cmd_ms", r.sequenceCommand), ("concurrent_total_ms", r.concurrentTotal),
    ]
    for (name, summary) in summaries {
        if let summary { fields.append("\"\(name)\":\(summary.json)") }
    }
    fields.append("\"wall_ms\":\(f(wall))")
    print("{" + fields.joined(separator: ",") + "}")
}

do {
    let results = try await measure()
    let wall = (ContinuousClock.now - processStart).ms
    if let path = options.samplesOut {
        var text = ""
        for (name, values) in results.raw {
            for (i, value) in values.enumerated() { text += "\(name) \(i) \(f(value))\n" }
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw BenchFailure(description: "cannot write \(path)")
        }
    }
    if options.quiet {
        // Timed from outside: nothing to print.
    } else if options.json {
        printJSON(results, wall: wall)
    } else {
        printTable(results, wall: wall)
    }
} catch {
    FileHandle.standardError.write(Data("ssh-microbench: \(error)\n".utf8))
    exit(1)
}

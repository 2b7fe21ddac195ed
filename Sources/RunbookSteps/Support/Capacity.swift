import Foundation
import RunbookCore

/// One measurement of `runbook diagnose` against the seeds' warning and critical levels.
package struct CapacityMetric: Sendable, Codable, Equatable {
    package enum State: String, Sendable, Codable, Comparable {
        case ok, warning, critical, unknown
        private var rank: Int { [.unknown: 0, .ok: 1, .warning: 2, .critical: 3][self]! }
        package static func < (a: State, b: State) -> Bool { a.rank < b.rank }
    }

    /// `cpu_percent`, `disk_percent:/`, `p95_ms`, …
    package var name: String
    /// How the table shows it: `CPU (60s)`, `disk /`.
    package var label: String
    package var value: Double?
    package var unit: String
    package var warning: Double
    package var critical: Double
    /// False for a value that is bad when low (the cache hit ratio).
    package var higherIsWorse: Bool
    package var state: State

    package init(name: String, label: String, value: Double?, unit: String, warning: Double, critical: Double, higherIsWorse: Bool = true) {
        self.name = name
        self.label = label
        self.value = value
        self.unit = unit
        self.warning = warning
        self.critical = critical
        self.higherIsWorse = higherIsWorse
        if let value {
            let over = { (limit: Double) in higherIsWorse ? value > limit : value < limit }
            state = over(critical) ? .critical : over(warning) ? .warning : .ok
        } else {
            state = .unknown
        }
    }
}

/// What `runbook diagnose` reads on one host, and what it makes of it: the seeds' metrics
/// (seed 000's table: CPU sustained 70/85 %, memory 75/90 %, disk 75/90 %, p95 500/1000 ms,
/// DB connections 75/95; its alerts: error rate 1 %; seed 004's queue: 100/1000 pending) and
/// a few of ours, documented in the README (swap 10/50 %, load per core 1/2, long queries
/// 1/5, cache hit under 99/95 %).
package enum Capacity {
    /// Measures `host` through its transport over `window` (CPU sampled across it). The
    /// database is read when the host has `db_name` or `db_via` in its vars or is in the
    /// `db` group; latency and errors through `latency_url` (or `health_url`); the queue
    /// through `queue_url` (a JSON `pending` count).
    package static func measure(_ host: RunbookCore.Host, transport: any Transport, controller: any Transport, window: Duration,
                                password: String?) async throws -> (metrics: [CapacityMetric], cpuCount: Int?) {
        let seconds = max(1, Int(window.components.seconds))
        var command = GatherStep.command(mounts: [], cpuSeconds: seconds)
        if let client = try postgresClient(host, password: password) {
            command = command + "\n{ " + client.command(client.psql(GatherStep.postgresSQL, tuples: true)) + "\n} || true"
        }
        // The latency sample runs while CPU is being sampled, as the traffic that loads it would.
        async let latency = latencySample(host, transport: transport)
        async let queue = queueDepth(host, transport: transport)
        let output = try await transport.run(command, stdin: [], timeout: window + .seconds(60), onOutput: nil)
        guard output.succeeded else { throw StepFailure.onHost("measuring \(host.name) failed (\(output.statusText)): \(output.stderrText)") }
        let facts = GatherStep.parse(output.stdoutText)
        return (metrics(facts: facts, window: seconds, latency: await latency, queue: await queue), facts["cpu_count"]?.intValue)
    }

    /// The metrics of gathered facts (and an optional load sample and queue depth).
    package static func metrics(facts: [String: Value], window: Int, latency: (p95: Double, errorRate: Double)?, queue: Int?) -> [CapacityMetric] {
        func number(_ key: String) -> Double? { facts[key]?.doubleValue }
        var metrics = [
            CapacityMetric(name: "cpu_percent", label: "CPU (\(window)s)", value: number("cpu_percent"), unit: "%", warning: 70, critical: 85),
            CapacityMetric(name: "memory_percent", label: "memory", value: number("memory_percent"), unit: "%", warning: 75, critical: 90),
            CapacityMetric(name: "swap_percent", label: "swap used", value: number("swap_percent"), unit: "%", warning: 10, critical: 50),
        ]
        if let load = number("load5"), let cores = number("cpu_count"), cores > 0 {
            metrics.append(CapacityMetric(name: "load_per_core", label: "load (5 min) per core", value: (load / cores * 100).rounded() / 100,
                                          unit: "", warning: 1, critical: 2))
        }
        if case .map(let disks)? = facts["disk"] {
            for mount in disks.keys.sorted() {
                metrics.append(CapacityMetric(name: "disk_percent:\(mount)", label: "disk \(mount)", value: disks[mount]?.doubleValue,
                                              unit: "%", warning: 75, critical: 90))
            }
        }
        if facts["pg_connections"] != nil {
            metrics.append(CapacityMetric(name: "pg_connections", label: "DB connections", value: number("pg_connections"), unit: "",
                                          warning: 75, critical: 95))
            metrics.append(CapacityMetric(name: "pg_long_queries", label: "DB queries over 1 min", value: number("pg_long_queries"), unit: "",
                                          warning: 0.5, critical: 4.5))
            metrics.append(CapacityMetric(name: "pg_cache_hit_percent", label: "DB cache hit", value: number("pg_cache_hit_percent"), unit: "%",
                                          warning: 99, critical: 95, higherIsWorse: false))
        }
        if let latency {
            metrics.append(CapacityMetric(name: "p95_ms", label: "p95 latency", value: latency.p95.rounded(), unit: "ms", warning: 500, critical: 1000))
            metrics.append(CapacityMetric(name: "error_percent", label: "error rate", value: (latency.errorRate * 1000).rounded() / 10, unit: "%",
                                          warning: 1, critical: 5))
        }
        if let queue {
            metrics.append(CapacityMetric(name: "queue_pending", label: "queue pending", value: Double(queue), unit: "", warning: 100, critical: 1000))
        }
        return metrics
    }

    /// The seeds' decision tree: what to run next, with params, for one host's metrics.
    package static func recommendations(host: String, metrics: [CapacityMetric], cpuCount: Int?) -> [String] {
        func state(_ prefix: String) -> CapacityMetric.State {
            metrics.filter { $0.name.hasPrefix(prefix) }.map(\.state).max() ?? .unknown
        }
        func bad(_ prefix: String) -> Bool { state(prefix) >= .warning }
        func shown(_ prefixes: String...) -> String {
            metrics.filter { metric in prefixes.contains { metric.name.hasPrefix($0) } && metric.state >= .warning }
                .map { "\($0.label) \(format($0.value, $0.unit)) (\($0.state.rawValue))" }.joined(separator: ", ")
        }
        var out: [String] = []
        if bad("queue_pending") {
            out.append("\(host): \(shown("queue_pending")): add queue workers: runbook plan scale-workers -p replicas=4 -l \(host)")
        }
        if bad("cpu_percent") || bad("load_per_core") {
            let workers = max(2, 2 * (cpuCount ?? 2) + 1)
            out.append("\(host): \(shown("cpu_percent", "load_per_core")): resize the VPS (more vCPU), then raise gunicorn workers: "
                + "runbook plan vertical-scale -p workers=\(workers) -l \(host); or, for queue work, runbook plan scale-workers -l \(host)")
        }
        if bad("memory_percent") || bad("swap_percent") {
            out.append("\(host): \(shown("memory_percent", "swap_percent")): resize the VPS (more RAM), then runbook plan vertical-scale -l \(host); or lower the workers: runbook plan site-slow -l \(host)")
        }
        if bad("disk_percent") {
            out.append("\(host): \(shown("disk_percent")): clean up: runbook exec \(host) -- docker system prune -f (and old dumps in the backup directory), or grow the disk")
        }
        if bad("pg_") {
            out.append("\(host): \(shown("pg_")): optimize the database: runbook plan db-optimize -l \(host)")
        }
        if out.isEmpty && (bad("p95_ms") || bad("error_percent")) {
            out.append("\(host): \(shown("p95_ms", "error_percent")) with CPU, memory, disk and the database fine: scale out: runbook plan horizontal-scale -p replicas=3 -l \(host)")
        }
        return out
    }

    /// `97%`, `420ms`, `1.5`, `?`.
    package static func format(_ value: Double?, _ unit: String) -> String {
        guard let value else { return "?" }
        let text = value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
        return text + unit
    }

    private static func postgresClient(_ host: RunbookCore.Host, password: String?) throws -> PostgresClient? {
        let vars = host.vars
        guard vars["db_name"] != nil || vars["db_via"] != nil || host.groups.contains("db") else { return nil }
        var arguments = RenderedArguments()
        func set(_ key: String, _ variable: String, _ fallback: String?) {
            if let value = vars[variable]?.plainText ?? fallback, !value.isEmpty { arguments.strings[key] = value; arguments.raw[key] = .string(value) }
        }
        set("database", "db_name", "app")
        set("user", "db_user", "app")
        set("host", "db_host", nil)
        set("port", "db_port", nil)
        set("via", "db_via", "compose")
        set("service", "db_service", "db")
        set("container", "db_container", nil)
        let appDir = vars["app_dir"]?.plainText ?? "/srv/app"
        set("compose_file", "compose_file", appDir + "/docker-compose.prod.yml")
        if let password, !password.isEmpty { arguments.strings["password"] = password; arguments.raw["password"] = .string(password) }
        return try PostgresClient(arguments)
    }

    private static func latencySample(_ host: RunbookCore.Host, transport: any Transport) async -> (p95: Double, errorRate: Double)? {
        guard let text = host.vars["latency_url"]?.plainText ?? host.vars["health_url"]?.plainText, !text.isEmpty,
              let url = try? HTTPURL.parse(text), !url.secure else { return nil }
        let action = LoadTestAction(url: url, origin: .host, hostName: host.name, requests: 50, duration: nil, concurrency: 5,
                                    expectStatus: 200, timeout: .seconds(10), p95Under: nil, p99Under: nil, maxErrorRate: 1, stepTimeout: .seconds(120))
        let measured = await action.measure(through: transport)
        return (Durations.milliseconds(measured.percentile(0.95) ?? .zero), measured.errorRate)
    }

    private static func queueDepth(_ host: RunbookCore.Host, transport: any Transport) async -> Int? {
        guard let text = host.vars["queue_url"]?.plainText, !text.isEmpty, let url = try? HTTPURL.parse(text) else { return nil }
        guard case .response(let response, _) = await HTTPClient.get(url, through: transport, timeout: .seconds(10)),
              let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
              let pending = object["pending"] as? Int else { return nil }
        return pending
    }
}

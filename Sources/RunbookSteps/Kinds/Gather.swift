import Foundation
import RunbookCore

/// `gather`: capacity facts into `facts` — CPU %, load, memory %, swap, disk % per mount —
/// read in one remote command (two /proc/stat samples 0.5 s apart for CPU). Read-only: it
/// runs at plan time, so later steps' `when`/`assert` can use the facts in the plan, and
/// again at apply time for fresh values.
package struct GatherStep: StepKind {
    package static let schema = StepKindSchema(
        name: "gather", summary: "capacity facts into facts: cpu, load, memory, swap, disk, PostgreSQL, docker",
        arguments: pgConnection + [
            ArgumentSpec("mounts", .stringOrList, "mount points for disk usage (default: every real filesystem)"),
            ArgumentSpec("replicas_of", .string, "a compose service (of compose_file) whose running containers are counted into facts.replicas"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static let outputsAreFacts = true
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let mounts: [String]
        switch arguments.raw["mounts"] {
        case .string(let s): mounts = [arguments.strings["mounts"] ?? s]
        case .list(let items): mounts = items.compactMap(\.stringValue)
        default: mounts = []
        }
        var command = Self.command(mounts: mounts)
        // PostgreSQL facts when a connection is described (any pg connection argument).
        if ["database", "user", "host", "port", "via", "password", "container", "service"].contains(where: { arguments.raw[$0] != nil }) {
            let client = try PostgresClient(arguments)
            // A brace group: the psql heredoc's delimiter must end its own line.
            command = command + "\n{ " + client.command(client.psql(Self.postgresSQL, tuples: true)) + "\n} || exit $?"
        }
        if let service = arguments.string("replicas_of") {
            command = command + "\n" + ComposeCommand(file: arguments.string("compose_file")).runningCount(of: service, as: "replicas")
        }
        command = command + "\n" + ShellCommand(Self.dockerStats)
        let output = try await facts.check(command, timeout: step.timeout ?? .seconds(30))
        guard output.succeeded else {
            throw StepFailure.onHost("gather failed on \(host.name) (\(output.statusText)): \(output.stderrText)")
        }
        let gathered = Self.parse(output.stdoutText)
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true,
                                        summary: Self.summary(gathered))
        var plan = HostStepPlan(change: change, operation: .action(GatherAction(command: command)), deferredUntilApply: false)
        plan.facts = gathered
        return plan
    }

    /// One POSIX shell command printing `key=value` lines; CPU is sampled over `cpuSeconds`.
    static func command(mounts: [String], cpuSeconds: Int? = nil) -> ShellCommand {
        var script = #"""
        read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ < /proc/stat
        sleep 0.5
        read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ < /proc/stat
        total=$(( (u2+n2+s2+i2+w2+q2+sq2+st2) - (u1+n1+s1+i1+w1+q1+sq1+st1) ))
        idle=$(( (i2+w2) - (i1+w1) ))
        echo "cpu_percent=$(( total > 0 ? (100 * (total - idle) + total / 2) / total : 0 ))"
        echo "cpu_count=$(grep -c '^processor' /proc/cpuinfo)"
        read -r l1 l5 l15 _ < /proc/loadavg
        echo "load1=$l1"; echo "load5=$l5"; echo "load15=$l15"
        awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} /^SwapTotal:/{st=$2} /^SwapFree:/{sf=$2}
             END { printf "memory_total_mb=%d\nmemory_percent=%.1f\nswap_total_mb=%d\nswap_used_mb=%d\nswap_percent=%.1f\n",
                   t/1024, (t>0 ? 100*(t-a)/t : 0), st/1024, (st-sf)/1024, (st>0 ? 100*(st-sf)/st : 0) }' /proc/meminfo
        """#
        if let cpuSeconds { script = script.replacingOccurrences(of: "sleep 0.5", with: "sleep \(max(1, cpuSeconds))") }
        let disks: ShellCommand
        if mounts.isEmpty {
            disks = "df -P -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null | awk 'NR>1 { sub(\"%\", \"\", $5); print \"disk:\" $6 \"=\" $5 }'"
        } else {
            disks = "df -P -- \(words: mounts) | awk 'NR>1 { sub(\"%\", \"\", $5); print \"disk:\" $6 \"=\" $5 }'"
        }
        return ShellCommand(script + "\n") + disks
    }

    /// Client connections by state, long-running queries (active over a minute, the seeds'
    /// threshold for killing), the total and the server's limit.
    static let postgresSQL = """
        SELECT 'pg_conn:' || coalesce(state, 'unknown') || '=' || count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' GROUP BY state
        UNION ALL
        SELECT 'pg_connections=' || count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
        UNION ALL
        SELECT 'pg_long_queries=' || count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND state = 'active' AND now() - query_start > interval '1 minute'
        UNION ALL
        SELECT 'pg_max_connections=' || setting FROM pg_settings WHERE name = 'max_connections'
        UNION ALL
        SELECT 'pg_cache_hit_percent=' || coalesce(round(100.0 * sum(blks_hit) / nullif(sum(blks_hit) + sum(blks_read), 0), 2)::text, '100')
          FROM pg_stat_database;
        """

    /// Per-container CPU and memory, when docker answers on the host (silently nothing otherwise).
    static let dockerStats = #"if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then docker stats --no-stream --format 'docker:{{.Name}}={{.CPUPerc}}|{{.MemPerc}}' 2>/dev/null | tr -d '%'; fi; true"#

    /// Parses `key=value` lines; `disk:MOUNT=N` lines become `disk` (mount → percent),
    /// `disk_max_percent` and `disk_root_percent`.
    static func parse(_ text: String) -> [String: Value] {
        var facts: [String: Value] = [:]
        var disks: [String: Value] = [:]
        var connections: [String: Value] = [:]
        var containers: [String: Value] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.lastIndex(of: "=") else { continue }
            let key = String(line[..<eq])
            let raw = String(line[line.index(after: eq)...])
            let value: Value = Int(raw).map(Value.int) ?? Double(raw).map(Value.double) ?? .string(raw)
            if key.hasPrefix("disk:") {
                disks[String(key.dropFirst(5))] = value
            } else if key.hasPrefix("pg_conn:") {
                connections[String(key.dropFirst(8)).replacingOccurrences(of: " ", with: "_")] = value
            } else if key.hasPrefix("docker:") {
                // A container removed while `docker stats` ran is listed as `--`: not a container.
                let name = String(key.dropFirst(7))
                if name.isEmpty || name == "--" { continue }
                let parts = raw.split(separator: "|").map { Double($0.trimmingCharacters(in: .whitespaces)) ?? 0 }
                containers[name] = .map(["cpu_percent": .double(parts.first ?? 0),
                                                             "memory_percent": .double(parts.count > 1 ? parts[1] : 0)])
            } else {
                facts[key] = value
            }
        }
        facts["disk"] = .map(disks)
        if facts["pg_connections"] != nil { facts["pg_connections_by_state"] = .map(connections) }
        facts["docker"] = .map(containers)
        let percents = disks.values.compactMap(\.intValue)
        facts["disk_max_percent"] = .int(percents.max() ?? 0)
        if let root = disks["/"] { facts["disk_root_percent"] = root }
        return facts
    }

    static func summary(_ facts: [String: Value]) -> String {
        func show(_ key: String) -> String { facts[key].map { "\($0.plainText)" } ?? "?" }
        let replicas = facts["replicas"].map { "\($0.plainText) replica(s) running, " } ?? ""
        return replicas + "cpu \(show("cpu_percent"))%, load \(show("load1")), memory \(show("memory_percent"))%, swap \(show("swap_percent"))%, disk max \(show("disk_max_percent"))%"
    }
}

/// Gathers again at apply time; the facts become `facts.*` (and `steps.<id>.*`).
struct GatherAction: StepAction {
    let command: ShellCommand
    var canonical: String { command.commandLine }
    var commands: [ShellCommand] { [command] }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
        do throws(TransportError) {
            let output = try await transport.run(command, stdin: [], timeout: step.timeout ?? .seconds(30), onOutput: nil)
            guard output.succeeded else { return .failure("gather failed (\(output.statusText)): \(output.stderrText)") }
            var facts = GatherStep.parse(output.stdoutText)
            facts["changed"] = false
            return .success(facts)
        } catch {
            return .failure(error.message)
        }
    }
}

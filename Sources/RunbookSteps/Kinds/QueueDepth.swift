import Foundation
import RunbookCore

/// `queue_depth`: how many jobs wait, and how many workers that calls for (seed 004: under
/// `target` pending is the goal, over `high` means add workers). Read at plan time, so the
/// plan shows the depth it read and why it chose N; later steps use `facts.queue_depth`,
/// `facts.workers_now` and `facts.workers_wanted`. The depth comes from one of: a Redis list
/// (`redis_key`: `redis-cli LLEN`, on the host or in a compose service), a SQL count (`sql`
/// with the `pg_*` connection arguments), or an HTTP endpoint answering JSON (`url` and
/// `field`). Read-only; apply reports the same facts the plan used.
package struct QueueDepthStep: StepKind {
    package static let schema = StepKindSchema(
        name: "queue_depth", summary: "read a queue's depth and choose a worker count within min/max",
        arguments: pgConnection + [
            ArgumentSpec("redis_key", .string, "a Redis list whose length is the depth (redis-cli LLEN)"),
            ArgumentSpec("redis_service", .string, "the compose service running Redis (else redis-cli on the host)"),
            ArgumentSpec("redis_host", .string, "redis-cli -h"),
            ArgumentSpec("sql", .string, "a query returning the depth as one number (with the connection arguments)"),
            ArgumentSpec("url", .string, "an http:// endpoint answering JSON, read with curl on the host"),
            ArgumentSpec("field", .string, default: "pending", "the JSON field holding the depth (with url)"),
            ArgumentSpec("workers_of", .string, "the compose service of the workers, whose running containers are counted"),
            ArgumentSpec("min", .int, default: 1, "the fewest workers"),
            ArgumentSpec("max", .int, default: 8, "the most workers"),
            ArgumentSpec("target", .int, default: 100, "pending jobs per worker that are fine (the seeds' target: under 100)"),
            ArgumentSpec("high", .int, default: 1000, "from this depth on, the most workers (the seeds' alarm)"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static let outputsAreFacts = true
    package static func defaultName(_ arguments: [String: Value]) -> String { "queue_depth" }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let minimum = try arguments.int("min") ?? 1
        let maximum = try arguments.int("max") ?? 8
        let target = try arguments.int("target") ?? 100
        let high = try arguments.int("high") ?? 1000
        guard minimum >= 0, maximum >= max(1, minimum) else { throw StepFailure("queue_depth: need 0 <= min <= max and max >= 1, got min \(minimum), max \(maximum)") }
        guard target >= 1, high > target else { throw StepFailure("queue_depth: need 1 <= target < high, got target \(target), high \(high)") }
        let sources = ["redis_key", "sql", "url"].filter { arguments.string($0).map { !$0.isEmpty } ?? false }
        guard sources.count == 1 else {
            throw StepFailure("queue_depth reads the depth from exactly one of redis_key, sql or url" + (sources.isEmpty ? "" : " (got \(sources.joined(separator: ", ")))"))
        }
        let compose = ComposeCommand(file: arguments.string("compose_file"))
        var command: ShellCommand
        var source: String
        switch sources[0] {
        case "redis_key":
            let key = arguments.string("redis_key")!
            var cli = ["redis-cli"]
            if let h = arguments.string("redis_host"), !h.isEmpty { cli += ["-h", h] }
            cli += ["LLEN", key]
            if let service = arguments.string("redis_service"), !service.isEmpty {
                command = "echo \"depth=$(" + compose(["exec", "-T", service] + cli) + ")\""
                source = "LLEN \(key) (compose service \(service))"
            } else {
                command = "echo \"depth=$(" + ShellCommand(argv: cli) + ")\""
                source = "LLEN \(key)"
            }
        case "sql":
            let client = try PostgresClient(arguments)
            command = "echo \"depth=$(" + client.command(client.psql(arguments.string("sql")!, tuples: true)) + "\n)\""
            source = "SQL on \(client.label)"
        default:
            let url = arguments.string("url")!
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else { throw StepFailure("queue_depth: url must be http:// or https://, got \(url)") }
            command = "printf 'json='; curl -fsS -m 10 -- " + ShellCommand(argv: [url]) + " | tr -d '\\n'; echo"
            source = url
        }
        if let service = arguments.string("workers_of"), !service.isEmpty {
            command = command + "\n" + compose.runningCount(of: service, as: "workers")
        }
        let output = try await facts.check(command, timeout: step.timeout ?? .seconds(30))
        guard output.succeeded else {
            throw StepFailure.onHost("cannot read the queue depth on \(host.name) (\(output.statusText)): \(output.stderrText.split(separator: "\n").suffix(3).joined(separator: " | "))")
        }
        var depth: Int? = nil
        var workers: Int? = nil
        for line in output.stdoutText.split(separator: "\n") {
            if line.hasPrefix("depth=") { depth = Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces)) }
            if line.hasPrefix("workers=") { workers = Int(line.dropFirst(8)) }
            if line.hasPrefix("json=") {
                let field = arguments.string("field") ?? "pending"
                let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(5).utf8)) as? [String: Any]
                if let number = object?[field] as? NSNumber { depth = number.intValue }
                if depth == nil { throw StepFailure("\(source) answered without a number in \"\(field)\": \(line.dropFirst(5).prefix(200))") }
            }
        }
        guard let depth, depth >= 0 else {
            throw StepFailure.onHost("\(source) on \(host.name) gave no depth: \(output.stdoutText.prefix(200))")
        }
        let (wanted, reason) = Self.choose(depth: depth, min: minimum, max: maximum, target: target, high: high)
        var gathered: [String: Value] = ["queue_depth": .int(depth), "workers_wanted": .int(wanted), "workers_reason": .string(reason)]
        if let workers { gathered["workers_now"] = .int(workers) }
        let now = workers.map { ", \($0) running" } ?? ""
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true,
                                        summary: "\(source): \(depth) pending\(now) → \(wanted) worker\(wanted == 1 ? "" : "s") (\(reason))")
        var plan = HostStepPlan(change: change, operation: .action(QueueDepthAction(facts: gathered)), deferredUntilApply: false)
        plan.facts = gathered
        return plan
    }

    /// The worker count for a depth, and why: `high` or more pending → `max`; else enough
    /// workers that each has at most `target` pending, within `min` and `max`.
    static func choose(depth: Int, min minimum: Int, max maximum: Int, target: Int, high: Int) -> (Int, String) {
        if depth >= high { return (maximum, "\(depth) ≥ \(high): the most workers, max \(maximum)") }
        let needed = (depth + target - 1) / target
        if needed <= minimum { return (minimum, depth == 0 ? "an empty queue: the fewest workers, min \(minimum)" : "\(depth) pending is within \(minimum) × \(target): min \(minimum)") }
        if needed >= maximum { return (maximum, "\(depth) pending needs \(needed) workers at \(target) each: max \(maximum)") }
        return (needed, "\(depth) pending at \(target) per worker")
    }
}

/// Apply reports the facts the plan read and chose by, so later steps run as planned.
struct QueueDepthAction: StepAction {
    let facts: [String: Value]
    var canonical: String { facts.keys.sorted().map { "\($0)=\(facts[$0]!.plainText)" }.joined(separator: "\n") }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
        var outputs = facts
        outputs["changed"] = false
        return .success(outputs, message: facts["workers_reason"]?.plainText)
    }
}

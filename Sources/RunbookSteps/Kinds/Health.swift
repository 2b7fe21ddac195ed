import Foundation
import RunbookCore

// MARK: - health

/// `health`: GET a URL until it answers `expect_status` (and `contains`), with `retries`
/// extra attempts `delay` apart; with `samples` and/or `p95_under`, each attempt times that
/// many requests and the 95th percentile latency must be under the limit. Read-only: a
/// check in the plan, re-run in rollback phase 3.
package struct HealthStep: StepKind {
    package static let schema = StepKindSchema(
        name: "health", summary: "check an HTTP endpoint, optionally with a latency gate",
        arguments: [
            ArgumentSpec("url", .string, required: true, "the URL"),
            ArgumentSpec("from", .enumeration(["host", "controller"]), default: "host",
                         "where the request starts: on the host, or on the controller"),
            ArgumentSpec("expect_status", .int, default: 200, "HTTP status expected"),
            ArgumentSpec("contains", .string, "text the body must contain"),
            ArgumentSpec("retries", .int, default: 0, "extra attempts before failing"),
            ArgumentSpec("delay", .duration, default: "1s", "pause between attempts"),
            ArgumentSpec("timeout", .duration, default: "10s", "per request"),
            ArgumentSpec("samples", .int, "requests to time for the latency gate"),
            ArgumentSpec("p95_under", .duration, "the 95th percentile latency must be under this"),
            ArgumentSpec("recheck", .bool, default: true,
                         "run again in rollback phase 3 (false for a check of the new state, e.g. a worker count)"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static let replay = ReplayPhase.recheck
    package static func defaultName(_ arguments: [String: Value]) -> String { "health \(arguments["url"]?.description ?? "")" }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let urlText = arguments.string("url") else { throw StepFailure("health needs url") }
        let url = try HTTPURL.parse(urlText)
        let fromText = arguments.string("from") ?? "host"
        guard let origin = ProbeOrigin(rawValue: fromText) else {
            throw StepFailure("from: \(fromText) must be host or controller")
        }
        let expect = try arguments.int("expect_status") ?? 200
        guard (100...599).contains(expect) else { throw StepFailure("expect_status: \(expect) is not an HTTP status") }
        let retries = try arguments.int("retries") ?? 0
        guard retries >= 0 else { throw StepFailure("retries: \(retries) must not be negative") }
        let delay = try arguments.duration("delay") ?? .seconds(1)
        let timeout = try arguments.duration("timeout") ?? .seconds(10)
        guard timeout > .zero else { throw StepFailure("timeout must be longer than 0s") }
        let p95Under = try arguments.duration("p95_under")
        var samples = try arguments.int("samples")
        if let n = samples, n < 1 { throw StepFailure("samples: \(n) must be at least 1") }
        if let p95Under, p95Under <= .zero { throw StepFailure("p95_under must be longer than 0s") }
        if p95Under != nil && samples == nil { samples = HealthAction.defaultSamples }
        let action = HealthAction(url: url, origin: origin, hostName: host.name, expectStatus: expect,
                                  contains: arguments.strings["contains"], retries: retries, delay: delay, timeout: timeout,
                                  samples: samples ?? 1, p95Under: p95Under, stepTimeout: step.timeout)
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: action.summary)
        return HostStepPlan(change: change, operation: .action(action), deferredUntilApply: false)
    }
}

/// The probe behind `health`, run at apply time and again in rollback phase 3.
struct HealthAction: StepAction {
    /// Samples timed when `p95_under` is given without `samples`.
    static let defaultSamples = 10

    let url: HTTPURL
    let origin: ProbeOrigin
    let hostName: String
    let expectStatus: Int
    let contains: String?
    let retries: Int
    let delay: Duration
    let timeout: Duration
    let samples: Int
    let p95Under: Duration?
    /// The step's own `timeout:`, bounding all attempts together.
    let stepTimeout: Duration?

    /// `GET http://… from h1` or `… from the controller`.
    var target: String { "GET \(url.text) from \(origin == .host ? hostName : "the controller")" }

    /// One line for the plan.
    var summary: String {
        var parts = ["\(target): expect \(expectStatus)"]
        if let contains { parts[0] += ", body contains \"\(contains)\"" }
        if let p95Under {
            parts.append("p95 under \(Durations.text(p95Under)) over \(samples) requests")
        } else if samples > 1 {
            parts.append("\(samples) requests")
        }
        if retries > 0 { parts.append("\(retries) retr\(retries == 1 ? "y" : "ies") \(Durations.text(delay)) apart") }
        parts.append("timeout \(Durations.text(timeout)) per request")
        return parts.joined(separator: "; ")
    }

    /// Everything that decides what the probe does, for the plan's operations digest.
    var canonical: String {
        [url.text, origin.rawValue, String(expectStatus), contains ?? "\u{1}", String(retries), Durations.text(delay),
         Durations.text(timeout), String(samples), p95Under.map(Durations.text) ?? "-"].joined(separator: "\u{0}")
    }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
        let through: any Transport = origin == .host ? transport : controller
        let deadline = stepTimeout.map { ContinuousClock.now + $0 }
        var last = ""
        var attempts = 0
        for attempt in 0...retries {
            if attempt > 0 {
                if let deadline, ContinuousClock.now + delay >= deadline { break }
                try? await Task.sleep(for: delay)
            }
            attempts += 1
            switch await check(through) {
            case .success(let outputs):
                var all = outputs
                all["attempts"] = .int(attempts)
                return .success(all)
            case .failure(let message):
                last = message
            }
        }
        let tries = attempts == 1 ? "1 attempt" : "\(attempts) attempts, \(Durations.text(delay)) apart"
        return .failure("\(target) failed (\(tries)): \(last)")
    }

    /// One attempt: `samples` requests, each checked, then the latency gate.
    func check(_ transport: any Transport) async -> StepActionResult {
        var latencies: [Duration] = []
        var lastResponse: HTTPResponse? = nil
        for index in 1...samples {
            let outcome = await HTTPClient.get(url, through: transport, timeout: timeout)
            let prefix = samples > 1 ? "request \(index) of \(samples): " : ""
            let took = DurationText.format(outcome.latency)
            switch outcome {
            case .unreachable:
                return .failure(prefix + "cannot connect to \(url.endpoint) (refused or unreachable, \(took))")
            case .failed(let why, _):
                return .failure(prefix + why)
            case .response(let response, let latency):
                let body = HTTPResponse.excerpt(response.body, limit: 120)
                if response.status != expectStatus {
                    return .failure(prefix + "status \(response.status) (expected \(expectStatus)), body \(body), \(took)")
                }
                if let contains, !response.bodyText.contains(contains) {
                    return .failure(prefix + "the body does not contain \"\(contains)\" (status \(response.status), body \(body), \(took))")
                }
                latencies.append(latency)
                lastResponse = response
            }
        }
        let p95 = Self.percentile95(latencies)
        if let p95Under, p95 >= p95Under {
            let sorted = latencies.sorted()
            return .failure("p95 latency \(DurationText.format(p95)) is not under \(Durations.text(p95Under))"
                + " (\(latencies.count) requests, min \(DurationText.format(sorted.first ?? .zero)), max \(DurationText.format(sorted.last ?? .zero)),"
                + " status \(lastResponse?.status ?? 0))")
        }
        let response = lastResponse!
        var body = response.bodyText
        if body.count > 4096 { body = String(body.prefix(4096)) }
        return .success([
            "changed": false,
            "status": .int(response.status),
            "body": .string(body),
            "latency_ms": .double(Durations.milliseconds(latencies.last ?? .zero)),
            "p95_ms": .double(Durations.milliseconds(p95)),
            "samples": .int(latencies.count),
        ])
    }

    /// The 95th percentile by the nearest-rank method (the smallest value with at least 95%
    /// of the values at or below it).
    static func percentile95(_ values: [Duration]) -> Duration {
        guard !values.isEmpty else { return .zero }
        let sorted = values.sorted()
        let rank = Int((0.95 * Double(sorted.count)).rounded(.up))
        return sorted[max(0, min(sorted.count - 1, rank - 1))]
    }
}


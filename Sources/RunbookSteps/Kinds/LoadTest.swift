import Foundation
import RunbookCore
import Synchronization

// MARK: - load_test

/// `load_test`: the seeds' "load test before onboarding" (`ab -n 1000 -c 10`) as a gate.
/// `requests` GETs of `url` (or as many as `duration` allows, whichever ends first), at most
/// `concurrency` at a time, from the host (SSH direct-tcpip channels on the run's session) or
/// from the controller; then the gates: `p95_under`, `p99_under`, `max_error_rate`. A request
/// that cannot connect, times out or answers another status than `expect_status` is an error.
///
/// Read-only, like `health`: a check in the plan, run at apply; heavy, so it runs again in
/// rollback phase 3 only with `recheck: true`. Its table (requests, errors, p50/p95/p99, rate)
/// is the step's message, shown under the step and journaled, and its numbers are the
/// step's outputs.
package struct LoadTestStep: StepKind {
    /// The most requests one load test makes.
    static let maximumRequests = 100_000
    /// The most requests in flight at once.
    static let maximumConcurrency = 256
    /// The longest a load test runs (with or without `duration`).
    static let maximumDuration: Duration = .seconds(600)

    package static let schema = StepKindSchema(
        name: "load_test", summary: "send many concurrent requests to an HTTP endpoint and gate on latency and errors",
        arguments: [
            ArgumentSpec("url", .string, required: true, "the http:// URL to GET"),
            ArgumentSpec("from", .enumeration(["host", "controller"]), default: "host",
                         "where the requests start: on the host, or on the controller"),
            ArgumentSpec("requests", .int, "how many requests to make (at most 100000); with duration, whichever ends first"),
            ArgumentSpec("duration", .duration, "how long to keep sending (at most 10m); with requests, whichever ends first"),
            ArgumentSpec("concurrency", .int, default: 10, "requests in flight at once (1 to 256)"),
            ArgumentSpec("expect_status", .int, default: 200, "the status a request must answer; any other is an error"),
            ArgumentSpec("timeout", .duration, default: "10s", "per request; a request that takes longer is an error"),
            ArgumentSpec("p95_under", .duration, "the 95th percentile latency of the answered requests must be under this"),
            ArgumentSpec("p99_under", .duration, "the 99th percentile latency of the answered requests must be under this"),
            ArgumentSpec("max_error_rate", .string, default: "0%",
                         "the most errors allowed, as a percentage (1%) or a fraction (0.01) of the requests"),
            ArgumentSpec("recheck", .bool, default: false, "run again in rollback phase 3 (off by default: it is heavy)"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static let replay = ReplayPhase.recheck
    package static func defaultName(_ arguments: [String: Value]) -> String {
        "load test \(arguments["url"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let fromText = arguments.string("from") ?? "host"
        guard let origin = ProbeOrigin(rawValue: fromText) else {
            throw StepFailure("from: \(fromText) must be host or controller")
        }
        guard let urlText = arguments.string("url") else { throw StepFailure("load_test needs url: the http:// URL to GET") }
        if urlText.trimmingCharacters(in: .whitespaces).lowercased().hasPrefix("https://") {
            throw StepFailure("url: \(urlText): load_test sends plain HTTP only (a TLS handshake per request would go through curl, one process each, "
                + "and measure curl); test the plain-HTTP listener behind the TLS terminator, e.g. http://127.0.0.1:8080/health")
        }
        let url: HTTPURL
        do {
            url = try HTTPURL.parse(urlText)
        } catch {
            throw StepFailure("url: \(error)")
        }
        let requests = try arguments.int("requests")
        let duration = try arguments.duration("duration")
        if requests == nil && duration == nil {
            throw StepFailure("load_test needs requests (how many, e.g. 1000) or duration (how long, e.g. 30s), or both")
        }
        if let requests, !(1...Self.maximumRequests).contains(requests) {
            throw StepFailure("requests: \(requests) must be from 1 to \(Self.maximumRequests)")
        }
        if let duration, duration <= .zero || duration > Self.maximumDuration {
            throw StepFailure("duration: \(Durations.text(duration)) must be longer than 0s and at most \(Durations.text(Self.maximumDuration))")
        }
        let concurrency = try arguments.int("concurrency") ?? 10
        guard (1...Self.maximumConcurrency).contains(concurrency) else {
            throw StepFailure("concurrency: \(concurrency) must be from 1 to \(Self.maximumConcurrency)")
        }
        let expect = try arguments.int("expect_status") ?? 200
        guard (100...599).contains(expect) else { throw StepFailure("expect_status: \(expect) is not an HTTP status") }
        let timeout = try arguments.duration("timeout") ?? .seconds(10)
        guard timeout > .zero else { throw StepFailure("timeout must be longer than 0s") }
        let p95Under = try arguments.duration("p95_under")
        if let p95Under, p95Under <= .zero { throw StepFailure("p95_under must be longer than 0s") }
        let p99Under = try arguments.duration("p99_under")
        if let p99Under, p99Under <= .zero { throw StepFailure("p99_under must be longer than 0s") }
        let maxErrorRate = try arguments.string("max_error_rate").map { (text) throws(StepFailure) in
            try Self.parseErrorRate(text)
        } ?? 0
        if let stepTimeout = step.timeout, let duration, stepTimeout <= duration {
            throw StepFailure("the step's timeout: \(Durations.text(stepTimeout)) ends the test before duration \(Durations.text(duration)); "
                + "make the step's timeout longer or the duration shorter")
        }
        let action = LoadTestAction(url: url, origin: origin, hostName: host.name, requests: requests, duration: duration,
                                    concurrency: concurrency, expectStatus: expect, timeout: timeout, p95Under: p95Under,
                                    p99Under: p99Under, maxErrorRate: maxErrorRate, stepTimeout: step.timeout)
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: action.summary)
        return HostStepPlan(change: change, operation: .action(action), deferredUntilApply: false)
    }

    /// `max_error_rate` as a fraction from 0 to 1: a percentage (`1%`, `0.5%`) or a fraction
    /// (`0.01`). A bare number of 1 or more is refused: `1` is far more likely to mean 1% than
    /// "every request may fail".
    static func parseErrorRate(_ text: String) throws(StepFailure) -> Double {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let hint = "write a percentage (1%, 0.5%) or a fraction below 1 (0.01)"
        if trimmed.hasSuffix("%") {
            let number = trimmed.dropLast().trimmingCharacters(in: .whitespaces)
            guard let percent = Double(number), percent.isFinite, percent >= 0, percent <= 100 else {
                throw StepFailure("max_error_rate: \(trimmed) is not a percentage from 0% to 100%; \(hint)")
            }
            return percent / 100
        }
        guard let fraction = Double(trimmed), fraction.isFinite, fraction >= 0 else {
            throw StepFailure("max_error_rate: \(trimmed) is not an error rate; \(hint)")
        }
        guard fraction < 1 else {
            throw StepFailure("max_error_rate: \(trimmed) is a fraction of 1 or more (every request may fail); \(hint)")
        }
        return fraction
    }
}

/// What a load test measured: the latencies of the requests that answered `expect_status`,
/// the errors by cause, and how long it all took.
struct LoadTestMeasurement: Sendable, Equatable {
    /// Latencies of the successful requests, shortest first.
    let latencies: [Duration]
    /// Why requests failed (`status 500 (expected 200)`, `cannot connect …`) → how many did.
    let errorCauses: [String: Int]
    /// Wall time from the first request's start to the last one's end.
    let elapsed: Duration
    /// Set when a limit (the step's timeout, the 10m bound) ended the test before its
    /// `requests` were made: which one.
    let cutShort: String?

    /// A measurement; `latencies` in any order.
    init(latencies: [Duration], errorCauses: [String: Int], elapsed: Duration, cutShort: String? = nil) {
        self.latencies = latencies.sorted()
        self.errorCauses = errorCauses.filter { $0.value > 0 }
        self.elapsed = elapsed
        self.cutShort = cutShort
    }

    /// Requests made (answered or failed).
    var requests: Int { latencies.count + errors }
    /// Requests that failed.
    var errors: Int { errorCauses.values.reduce(0, +) }
    /// Errors as a fraction of the requests (0 when none was made).
    var errorRate: Double { requests == 0 ? 0 : Double(errors) / Double(requests) }
    /// Requests per second over the whole test.
    var rate: Double {
        let seconds = DurationText.milliseconds(elapsed) / 1000
        return seconds > 0 ? Double(requests) / seconds : 0
    }

    /// The `p`th percentile of the successful requests' latencies by the nearest-rank method
    /// (the smallest latency with at least p% of them at or below it); nil when none succeeded.
    func percentile(_ p: Double) -> Duration? {
        guard !latencies.isEmpty else { return nil }
        let rank = Int((p / 100 * Double(latencies.count)).rounded(.up))
        return latencies[max(0, min(latencies.count - 1, rank - 1))]
    }

    /// The table: a header line, the numbers, and the commonest causes of errors.
    var table: String {
        let cells = [
            ("requests", String(requests)),
            ("errors", errors == 0 ? "0" : "\(errors) (\(LoadTestAction.percentText(errorRate)))"),
            ("p50", percentile(50).map(LoadTestAction.latencyText) ?? "-"),
            ("p95", percentile(95).map(LoadTestAction.latencyText) ?? "-"),
            ("p99", percentile(99).map(LoadTestAction.latencyText) ?? "-"),
            ("rate", "\(LoadTestAction.rateText(rate)) req/s"),
        ]
        let widths = cells.map { max($0.0.count, $0.1.count) }
        func line(_ texts: [String]) -> String {
            zip(texts, widths).enumerated().map { index, pair in
                index == texts.count - 1 ? pair.0 : pair.0.padding(toLength: pair.1, withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        var lines = [line(cells.map(\.0)), line(cells.map(\.1))]
        let causes = errorCauses.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        if !causes.isEmpty {
            var text = "errors: " + causes.prefix(3).map { "\($0.value) × \($0.key)" }.joined(separator: "; ")
            if causes.count > 3 { text += "; \(causes.dropFirst(3).reduce(0) { $0 + $1.value }) of \(causes.count - 3) other kinds" }
            lines.append(text)
        }
        return lines.joined(separator: "\n")
    }
}

/// The load behind `load_test`, generated in process at apply (and in rollback phase 3 with
/// `recheck: true`): `concurrency` tasks each make one request after another through the
/// transport's `exchange` until the requests are made or the time is up.
///
/// From the host, every request is a direct-tcpip channel on the run's one SSH session: the
/// exchanges of open channels overlap, but libssh2 opens one channel at a time per session,
/// so each request's channel-open round trip to sshd (which connects to the URL's address
/// before it answers) is serialized. A slow endpoint gets the full concurrency; a fast one is
/// bounded near one request per open round trip. The measured rate shows what was achieved.
struct LoadTestAction: StepAction {
    let url: HTTPURL
    let origin: ProbeOrigin
    let hostName: String
    /// How many requests; nil: as many as `duration` allows (at most `maximumRequests`).
    let requests: Int?
    /// How long to keep sending; nil: until `requests` are made.
    let duration: Duration?
    let concurrency: Int
    let expectStatus: Int
    let timeout: Duration
    let p95Under: Duration?
    let p99Under: Duration?
    /// A fraction from 0 to 1.
    let maxErrorRate: Double
    /// The step's own `timeout:`, bounding the whole test.
    let stepTimeout: Duration?

    /// `GET http://… from h1` or `… from the controller`.
    var target: String { "GET \(url.text) from \(origin == .host ? hostName : "the controller")" }

    /// The load as the plan states it: `300 requests`, `for 30s`, or both.
    var load: String {
        switch (requests, duration) {
        case (let n?, let d?): return "\(n) requests or \(Durations.text(d)), whichever ends first"
        case (let n?, nil): return "\(n) requests"
        case (nil, let d?): return "for \(Durations.text(d))"
        case (nil, nil): return ""
        }
    }

    /// The gates, as the plan and the report state them.
    var gates: [String] {
        var gates: [String] = []
        if let p95Under { gates.append("p95 under \(Durations.text(p95Under))") }
        if let p99Under { gates.append("p99 under \(Durations.text(p99Under))") }
        gates.append("error rate at most \(Self.percentText(maxErrorRate))")
        return gates
    }

    /// One line for the plan.
    var summary: String {
        "\(target): \(load), concurrency \(concurrency); gates: \(gates.joined(separator: ", ")); "
            + "an error is no connection, no answer within \(Durations.text(timeout)) or a status other than \(expectStatus)"
    }

    /// Everything that decides what the test does, for the plan's operations digest.
    var canonical: String {
        [url.text, origin.rawValue, requests.map(String.init) ?? "-", duration.map(Durations.text) ?? "-", String(concurrency),
         String(expectStatus), Durations.text(timeout), p95Under.map(Durations.text) ?? "-", p99Under.map(Durations.text) ?? "-",
         String(maxErrorRate)].joined(separator: "\u{0}")
    }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
        verdict(await measure(through: origin == .host ? transport : controller))
    }

    /// Makes the requests through `transport`, `concurrency` at a time.
    func measure(through transport: any Transport) async -> LoadTestMeasurement {
        let started = ContinuousClock.now
        let limit = requests ?? LoadTestStep.maximumRequests
        // Sending stops at `duration`; the test as a whole at the step's timeout or the bound.
        let sendUntil = started + min(duration ?? LoadTestStep.maximumDuration, LoadTestStep.maximumDuration)
        let hardStop = stepTimeout.map { started + $0 }
        let tickets = RequestTickets(limit: limit)
        let tallies = await withTaskGroup(of: Tally.self) { group in
            for _ in 0..<min(concurrency, limit) {
                group.addTask {
                    var tally = Tally()
                    while !Task.isCancelled {
                        let now = ContinuousClock.now
                        // Each task makes its first request even when it started late (a busy
                        // controller): a test of a duration measures its concurrency, never nothing.
                        if now >= sendUntil && tally.count > 0 { break }
                        if let hardStop, now >= hardStop { break }
                        guard tickets.take() else { break }
                        // A request started just before the step's timeout ends with it.
                        let wait = hardStop.map { min(timeout, max(.milliseconds(1), $0 - now)) } ?? timeout
                        tally.add(await HTTPClient.get(url, through: transport, timeout: wait), expecting: expectStatus, endpoint: url.endpoint)
                    }
                    return tally
                }
            }
            var all = Tally()
            for await tally in group { all.merge(tally) }
            return all
        }
        let elapsed = ContinuousClock.now - started
        var cutShort: String? = nil
        // Fewer requests than asked before `duration` ended: a limit cut the test short.
        if let requests, tallies.count < requests, duration.map({ elapsed < $0 }) ?? true {
            if let stepTimeout, let hardStop, ContinuousClock.now >= hardStop {
                cutShort = "the step's timeout: \(Durations.text(stepTimeout))"
            } else if elapsed >= LoadTestStep.maximumDuration {
                cutShort = "the \(Durations.text(LoadTestStep.maximumDuration)) a load test may run"
            }
        }
        return LoadTestMeasurement(latencies: tallies.latencies, errorCauses: tallies.errors, elapsed: elapsed, cutShort: cutShort)
    }

    /// The gates applied to a measurement: success with the numbers as outputs, or failure
    /// naming each gate missed with its measured value and limit. Either way the message
    /// carries the table.
    func verdict(_ measured: LoadTestMeasurement) -> StepActionResult {
        var missed: [String] = []
        let n = measured.requests
        if let cut = measured.cutShort, let requests {
            missed.append("\(cut) ended the test after \(n) of \(requests) requests")
        }
        if n == 0 {
            missed.append("no request was made")
        } else if Double(measured.errors) > maxErrorRate * Double(n) + 1e-9 {
            missed.append("error rate \(Self.percentText(measured.errorRate)) over \(n) requests is over max_error_rate \(Self.percentText(maxErrorRate))")
        }
        for (p, limit) in [(95.0, p95Under), (99.0, p99Under)] {
            guard let limit else { continue }
            let name = "p\(Int(p))"
            guard let value = measured.percentile(p) else {
                if n > 0 { missed.append("\(name) cannot be measured: no request answered \(expectStatus)") }
                continue
            }
            if value >= limit {
                missed.append("\(name) latency \(Self.latencyText(value)) over \(measured.latencies.count) answered requests is not under \(name)_under \(Durations.text(limit))")
            }
        }
        let load = "\(n) request\(n == 1 ? "" : "s"), concurrency \(concurrency), in \(DurationText.format(measured.elapsed))"
        guard missed.isEmpty else {
            return .failure(missed.joined(separator: "; ") + "\n\(target): \(load)\n" + measured.table)
        }
        func milliseconds(_ value: Duration?) -> Value { value.map { .double(Durations.milliseconds($0)) } ?? .null }
        let outputs: [String: Value] = [
            "changed": false,
            "requests": .int(n),
            "errors": .int(measured.errors),
            "error_rate": .double((measured.errorRate * 10_000).rounded() / 10_000),
            "p50_ms": milliseconds(measured.percentile(50)),
            "p95_ms": milliseconds(measured.percentile(95)),
            "p99_ms": milliseconds(measured.percentile(99)),
            "rate": .double((measured.rate * 10).rounded() / 10),
        ]
        return .success(outputs, message: "\(target): \(load); passed: \(gates.joined(separator: ", "))\n" + measured.table)
    }

    /// `20.3%`, `1%`, `0.25%`, `0.001%`: a fraction as a percentage, as precise as it needs.
    static func percentText(_ fraction: Double) -> String {
        let percent = fraction * 100
        let decimals = percent >= 1 ? 1 : (percent >= 0.1 ? 2 : 3)
        var text = String(format: "%.\(decimals)f", percent)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text + "%"
    }

    /// `0.4ms`, `12ms`, `1.3s`: a latency for the table, a tenth of a millisecond below 10ms.
    static func latencyText(_ duration: Duration) -> String {
        let ms = DurationText.milliseconds(duration)
        if ms < 10 { return String(format: "%.1fms", ms) }
        if ms < 1000 { return "\(Int(ms.rounded()))ms" }
        return String(format: "%.1fs", ms / 1000)
    }

    /// `812.4`, `3.1`: requests per second to a tenth.
    static func rateText(_ rate: Double) -> String { String(format: "%.1f", rate) }
}

/// The requests of a load test, handed out one at a time to its tasks, up to `limit`.
private final class RequestTickets: Sendable {
    private let limit: Int
    private let issued = Mutex(0)

    init(limit: Int) { self.limit = limit }

    /// True when another request may be made (and counts it).
    func take() -> Bool {
        issued.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }
}

/// What one task of a load test saw.
private struct Tally: Sendable {
    var latencies: [Duration] = []
    var errors: [String: Int] = [:]
    var count: Int { latencies.count + errors.values.reduce(0, +) }

    /// Counts one request: a success when it answered `expecting`, else an error by its cause.
    mutating func add(_ outcome: HTTPClient.Outcome, expecting: Int, endpoint: String) {
        switch outcome {
        case .response(let response, let latency) where response.status == expecting:
            latencies.append(latency)
        case .response(let response, _):
            errors["status \(response.status) (expected \(expecting))", default: 0] += 1
        case .unreachable:
            errors["cannot connect to \(endpoint) (refused, unreachable or not within the timeout)", default: 0] += 1
        case .failed(let why, _):
            errors[why, default: 0] += 1
        }
    }

    mutating func merge(_ other: Tally) {
        latencies += other.latencies
        errors.merge(other.errors, uniquingKeysWith: +)
    }
}

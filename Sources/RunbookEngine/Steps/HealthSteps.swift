import Foundation
import RunbookCore
import RunbookTransport

/// Reading the typed arguments of the web step kinds (`health`, `wait_for`, `service`,
/// `nginx_reload`) after rendering.
enum WebStepArguments {
    /// An integer argument, written as a number or rendered from `{{ }}`.
    static func int(_ arguments: RenderedArguments, _ key: String) throws(StepFailure) -> Int? {
        if case .int(let value) = arguments.raw[key] { return value }
        if let value = arguments.raw[key]?.intValue { return value }
        guard let text = arguments.strings[key]?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { return nil }
        guard let value = Int(text) else { throw StepFailure("\(key): \(text) is not a whole number") }
        return value
    }

    /// A duration argument (`500ms`, `2s`, a number of seconds), rendered when it is text.
    static func duration(_ arguments: RenderedArguments, _ key: String) throws(StepFailure) -> Duration? {
        if let text = arguments.strings[key] {
            guard let value = DurationText.parse(text) else { throw StepFailure("\(key): \(text) is not a duration (e.g. 500ms, 2s, 1m)") }
            return value
        }
        guard let raw = arguments.raw[key], !raw.isNull else { return nil }
        guard let value = ArgumentType.duration(raw) else { throw StepFailure("\(key): \(raw) is not a duration (e.g. 500ms, 2s, 1m)") }
        return value
    }

    /// A string argument that is present and not blank.
    static func string(_ arguments: RenderedArguments, _ key: String) -> String? {
        guard let text = arguments.strings[key], !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return nil }
        return text
    }

    /// `2s`, `500ms`: a duration as an operator writes it.
    static func text(_ duration: Duration) -> String {
        let ms = Int(DurationText.milliseconds(duration).rounded())
        if ms == 0 { return "0s" }
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// Milliseconds rounded to a tenth, for outputs.
    static func milliseconds(_ duration: Duration) -> Double {
        (DurationText.milliseconds(duration) * 10).rounded() / 10
    }
}

/// Where a request starts.
enum ProbeOrigin: String, Sendable {
    /// On the host (over SSH, a direct-tcpip channel, as `ssh -L` does).
    case host
    /// On the controller, a plain socket.
    case controller
}

// MARK: - health

/// `health`: GET a URL until it answers `expect_status` (and `contains`), with `retries`
/// extra attempts `delay` apart; with `samples` and/or `p95_under`, each attempt times that
/// many requests and the 95th percentile latency must be under the limit. Read-only: a
/// check in the plan, re-run in rollback phase 3.
struct HealthStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let urlText = WebStepArguments.string(arguments, "url") else { throw StepFailure("health needs url") }
        let url = try HTTPURL.parse(urlText)
        let fromText = WebStepArguments.string(arguments, "from") ?? "host"
        guard let origin = ProbeOrigin(rawValue: fromText) else {
            throw StepFailure("from: \(fromText) must be host or controller")
        }
        let expect = try WebStepArguments.int(arguments, "expect_status") ?? 200
        guard (100...599).contains(expect) else { throw StepFailure("expect_status: \(expect) is not an HTTP status") }
        let retries = try WebStepArguments.int(arguments, "retries") ?? 0
        guard retries >= 0 else { throw StepFailure("retries: \(retries) must not be negative") }
        let delay = try WebStepArguments.duration(arguments, "delay") ?? .seconds(1)
        let timeout = try WebStepArguments.duration(arguments, "timeout") ?? .seconds(10)
        guard timeout > .zero else { throw StepFailure("timeout must be longer than 0s") }
        let p95Under = try WebStepArguments.duration(arguments, "p95_under")
        var samples = try WebStepArguments.int(arguments, "samples")
        if let n = samples, n < 1 { throw StepFailure("samples: \(n) must be at least 1") }
        if let p95Under, p95Under <= .zero { throw StepFailure("p95_under must be longer than 0s") }
        if p95Under != nil && samples == nil { samples = HealthAction.defaultSamples }
        let action = HealthAction(url: url, origin: origin, hostName: host.name, expectStatus: expect,
                                  contains: arguments.strings["contains"], retries: retries, delay: delay, timeout: timeout,
                                  samples: samples ?? 1, p95Under: p95Under, stepTimeout: step.timeout)
        var change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: action.summary)
        change.operationsDigest = sha256Hex("health\u{0}" + action.canonical)
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
            parts.append("p95 under \(WebStepArguments.text(p95Under)) over \(samples) requests")
        } else if samples > 1 {
            parts.append("\(samples) requests")
        }
        if retries > 0 { parts.append("\(retries) retr\(retries == 1 ? "y" : "ies") \(WebStepArguments.text(delay)) apart") }
        parts.append("timeout \(WebStepArguments.text(timeout)) per request")
        return parts.joined(separator: "; ")
    }

    /// Everything that decides what the probe does, for the plan's operations digest.
    var canonical: String {
        [url.text, origin.rawValue, String(expectStatus), contains ?? "\u{1}", String(retries), WebStepArguments.text(delay),
         WebStepArguments.text(timeout), String(samples), p95Under.map(WebStepArguments.text) ?? "-"].joined(separator: "\u{0}")
    }

    func perform(on transport: any Transport, step: Step) async -> StepActionResult {
        let through: any Transport = origin == .host ? transport : LocalTransport(hostName: "controller")
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
        let tries = attempts == 1 ? "1 attempt" : "\(attempts) attempts, \(WebStepArguments.text(delay)) apart"
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
            return .failure("p95 latency \(DurationText.format(p95)) is not under \(WebStepArguments.text(p95Under))"
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
            "latency_ms": .double(WebStepArguments.milliseconds(latencies.last ?? .zero)),
            "p95_ms": .double(WebStepArguments.milliseconds(p95)),
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

// MARK: - wait_for

/// `wait_for`: a TCP port (`port`, `host`) or a URL (`url`, any HTTP status) until it is `up`
/// (or `down`), checking every `delay`, for at most `timeout`. Read-only, like `health`.
struct WaitForStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let port = try WebStepArguments.int(arguments, "port")
        let urlText = WebStepArguments.string(arguments, "url")
        let target: WaitForAction.Target
        switch (port, urlText) {
        case (let port?, nil):
            guard (1...65535).contains(port) else { throw StepFailure("port: \(port) must be from 1 to 65535") }
            var address = WebStepArguments.string(arguments, "host") ?? "127.0.0.1"
            if address.hasPrefix("[") && address.hasSuffix("]") { address = String(address.dropFirst().dropLast()) }
            target = .port(address: address, port: port)
        case (nil, let text?):
            target = .url(try HTTPURL.parse(text))
        default:
            throw StepFailure("wait_for takes either port or url")
        }
        let stateText = WebStepArguments.string(arguments, "state") ?? "up"
        guard stateText == "up" || stateText == "down" else { throw StepFailure("state: \(stateText) must be up or down") }
        let timeout = try WebStepArguments.duration(arguments, "timeout") ?? .seconds(60)
        let delay = try WebStepArguments.duration(arguments, "delay") ?? .seconds(1)
        let action = WaitForAction(target: target, up: stateText == "up", hostName: host.name, timeout: timeout, delay: delay)
        var change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: action.summary)
        change.operationsDigest = sha256Hex("wait_for\u{0}" + action.canonical)
        return HostStepPlan(change: change, operation: .action(action), deferredUntilApply: false)
    }
}

/// The waiting behind `wait_for`.
struct WaitForAction: StepAction {
    /// What is waited for.
    enum Target: Sendable, Hashable {
        case port(address: String, port: Int)
        case url(HTTPURL)
    }

    /// How long one port check waits for the connection to be made.
    static let connectTimeout: Duration = .seconds(1)
    /// How long one URL check waits for an answer at most.
    static let requestTimeout: Duration = .seconds(5)

    let target: Target
    let up: Bool
    let hostName: String
    let timeout: Duration
    let delay: Duration

    /// `127.0.0.1:5000 on h1`, `http://…/health from h1`.
    var what: String {
        switch target {
        case .port(let address, let port):
            return (address.contains(":") ? "[\(address)]" : address) + ":\(port) (from \(hostName))"
        case .url(let url):
            return "\(url.text) (from \(hostName))"
        }
    }

    var summary: String {
        "wait until \(what) is \(up ? "up" : "down"): every \(WebStepArguments.text(delay)), at most \(WebStepArguments.text(timeout))"
    }

    var canonical: String {
        let target: String
        switch self.target {
        case .port(let address, let port): target = "port \(address) \(port)"
        case .url(let url): target = "url \(url.text)"
        }
        return [target, up ? "up" : "down", WebStepArguments.text(timeout), WebStepArguments.text(delay)].joined(separator: "\u{0}")
    }

    func perform(on transport: any Transport, step: Step) async -> StepActionResult {
        let started = ContinuousClock.now
        let deadline = started + timeout
        let wanted: Observed = up ? .up : .down
        var checks = 0
        var last = ""
        while true {
            checks += 1
            let (observed, detail, status) = await probe(transport, within: deadline - .now)
            last = detail
            if observed == wanted {
                var outputs: [String: Value] = [
                    "changed": false, "checks": .int(checks),
                    "elapsed_ms": .double(WebStepArguments.milliseconds(.now - started)),
                ]
                if let status { outputs["status"] = .int(status) }
                return .success(outputs)
            }
            // The last check is made at the deadline.
            let left = deadline - .now
            if left <= .zero { break }
            try? await Task.sleep(for: min(delay, left))
        }
        let elapsed = DurationText.format(.now - started)
        let checked = "\(checks) check\(checks == 1 ? "" : "s") in \(elapsed)"
        if up {
            return .failure("\(what) did not come up within \(WebStepArguments.text(timeout)) (\(checked); last: \(last))")
        }
        return .failure("\(what) was still up after \(WebStepArguments.text(timeout)) (\(checked); last: \(last))")
    }

    /// What one check saw.
    enum Observed: Sendable {
        /// Connected (port), or an HTTP answer of any status (url).
        case up
        /// The connection could not be made.
        case down
        /// Neither for sure: connected but no HTTP answer, or the host's connection failed.
        case unknown
    }

    /// One check: what was seen, in words, and the HTTP status if any.
    func probe(_ transport: any Transport, within remaining: Duration) async -> (Observed, String, Int?) {
        let floor: Duration = .milliseconds(100)
        switch target {
        case .port(let address, let port):
            let wait = max(floor, min(Self.connectTimeout, remaining))
            do {
                // Connected is enough: nothing is sent, and the wait for an answer is cut short.
                if try await transport.exchange(address: address, port: port, send: [], timeout: wait) != nil {
                    return (.up, "connected", nil)
                }
                return (.down, "connection refused or unreachable", nil)
            } catch {
                return (.unknown, error.message, nil)
            }
        case .url(let url):
            let wait = max(floor, min(Self.requestTimeout, remaining))
            switch await HTTPClient.get(url, through: transport, timeout: wait) {
            case .response(let response, _):
                return (.up, "status \(response.status)", response.status)
            case .unreachable:
                return (.down, "cannot connect to \(url.endpoint)", nil)
            case .failed(let why, _):
                return (.unknown, why, nil)
            }
        }
    }
}

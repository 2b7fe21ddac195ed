import Foundation
import RunbookCore

// MARK: - health

/// `health`: GET a URL until it answers `expect_status` (and `contains`), with `retries`
/// extra attempts `delay` apart; with `samples` and/or `p95_under`, each attempt times that
/// many requests and the 95th percentile latency must be under the limit. Read-only: a
/// check in the plan, re-run in rollback phase 3.
///
/// `https://` URLs are requested with curl where the check starts (the host's CA store, or
/// `ca_file`; `insecure` is a warning in the plan; `resolve` sends the URL's name to an
/// address). With `service` + `port` instead of `url`, every replica of a compose service is
/// checked directly on the host, so a dead one behind a retrying load balancer cannot pass.
package struct HealthStep: StepKind {
    package static let schema = StepKindSchema(
        name: "health", summary: "check an HTTP endpoint, optionally with a latency gate",
        arguments: [
            ArgumentSpec("url", .string, "the URL (http:// or https://); or service + port"),
            ArgumentSpec("service", .string, "check every replica of this compose service directly (with port)"),
            ArgumentSpec("port", .int, "the replicas' port (with service)"),
            ArgumentSpec("path", .string, default: "/health", "the path requested on each replica (with service)"),
            ArgumentSpec("compose_file", .string, "the compose file of the service (with service)"),
            ArgumentSpec("replicas", .int, "how many replicas must answer (with service; default: every one running, at least one)"),
            ArgumentSpec("ca_file", .string, "CA bundle to verify an https:// certificate against, where the check starts"),
            ArgumentSpec("insecure", .bool, default: false, "do not verify the https:// certificate (a warning in the plan)"),
            ArgumentSpec("resolve", .string, "connect to this address for the https:// URL's name (SNI and Host stay the URL's)"),
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
    package static func defaultName(_ arguments: [String: Value]) -> String {
        if let service = arguments["service"]?.description, arguments["url"] == nil { return "health of every \(service) replica" }
        return "health \(arguments["url"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let fromText = arguments.string("from") ?? "host"
        guard let origin = ProbeOrigin(rawValue: fromText) else {
            throw StepFailure("from: \(fromText) must be host or controller")
        }
        var url: HTTPURL
        var replicas: ReplicaProbe?
        switch (arguments.string("url"), arguments.string("service")) {
        case (_?, _?): throw StepFailure("give url or service (with port), not both")
        case (nil, nil): throw StepFailure("health needs url, or service and port to check every replica")
        case (let text?, nil):
            url = try HTTPURL.parse(text, allowHTTPS: true)
        case (nil, let service?):
            guard let port = try arguments.int("port"), (1...65535).contains(port) else {
                throw StepFailure("service needs port: the port each replica listens on (1 to 65535)")
            }
            guard origin == .host else { throw StepFailure("the replicas of a compose service are checked from the host; drop from: controller") }
            let path = arguments.string("path") ?? "/health"
            guard path.hasPrefix("/") else { throw StepFailure("path must start with /, got \(path)") }
            let expected = try arguments.int("replicas")
            if let expected, expected < 1 { throw StepFailure("replicas: \(expected) must be at least 1") }
            replicas = ReplicaProbe(compose: ComposeCommand(file: arguments.string("compose_file")), service: service, port: port,
                                    path: path, expected: expected)
            url = try HTTPURL.parse("http://127.0.0.1:\(port)\(path)")
        }
        let curl = CurlProbe(caFile: arguments.string("ca_file"), insecure: try arguments.bool("insecure", default: false),
                             resolve: arguments.string("resolve"))
        if !url.secure, curl != CurlProbe() { throw StepFailure("ca_file, insecure and resolve apply to https:// URLs only") }
        if let resolve = curl.resolve, resolve.contains(where: { $0 == " " || $0 == "/" }) {
            throw StepFailure("resolve: \(resolve) is not an address")
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
        let action = HealthAction(url: url, curl: url.secure ? curl : nil, replicas: replicas, origin: origin, hostName: host.name, expectStatus: expect,
                                  contains: arguments.strings["contains"], retries: retries, delay: delay, timeout: timeout,
                                  samples: samples ?? 1, p95Under: p95Under, stepTimeout: step.timeout)
        var change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: action.summary)
        if curl.insecure { change.reason = "warning: insecure: the certificate of \(url.host) is not verified" }
        return HostStepPlan(change: change, operation: .action(action), deferredUntilApply: false)
    }
}

/// The probe behind `health`, run at apply time and again in rollback phase 3.
struct HealthAction: StepAction {
    /// Samples timed when `p95_under` is given without `samples`.
    static let defaultSamples = 10

    let url: HTTPURL
    /// For https:// URLs: how curl verifies and where it connects.
    let curl: CurlProbe?
    /// With `service`: every replica is checked, `url` is only the path and port.
    let replicas: ReplicaProbe?
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
    var target: String {
        if let replicas { return replicas.summary + " from \(hostName)" }
        return "GET \(url.text) from \(origin == .host ? hostName : "the controller")"
    }

    /// One line for the plan.
    var summary: String {
        var parts = ["\(target): expect \(expectStatus)"]
        // Quoted so that quotes inside read right: 'the "workers": 8' rather than ""workers": 8".
        if let contains { parts[0] += ", body contains " + (contains.contains("\"") && !contains.contains("'") ? "'\(contains)'" : "\"\(contains)\"") }
        if let p95Under {
            parts.append("p95 under \(Durations.text(p95Under)) over \(samples) requests")
        } else if samples > 1 {
            parts.append("\(samples) requests")
        }
        if let curl {
            if curl.insecure { parts.append("INSECURE: certificate not verified") } else { parts.append("certificate verified" + (curl.caFile.map { " against \($0)" } ?? "")) }
            if let resolve = curl.resolve { parts.append("\(url.host) resolved to \(resolve)") }
        }
        if retries > 0 { parts.append("\(retries) retr\(retries == 1 ? "y" : "ies") \(Durations.text(delay)) apart") }
        parts.append("timeout \(Durations.text(timeout)) per request")
        return parts.joined(separator: "; ")
    }

    /// Everything that decides what the probe does, for the plan's operations digest.
    var canonical: String {
        [url.text, curl.map { "\($0.caFile ?? "-") \($0.insecure) \($0.resolve ?? "-")" } ?? "plain",
         replicas.map { "\($0.listing.display) \($0.port) \($0.path) \($0.expected ?? 0)" } ?? "one",
         origin.rawValue, String(expectStatus), contains ?? "\u{1}", String(retries), Durations.text(delay),
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
            case .success(let outputs, _):
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

    /// One attempt: with `replicas`, each replica in turn; else the URL.
    func check(_ transport: any Transport) async -> StepActionResult {
        guard let replicas else { return await check(url, through: transport, label: "") }
        let listed: CommandOutput
        do {
            listed = try await transport.run(replicas.listing, stdin: [], timeout: timeout + .seconds(20), onOutput: nil)
        } catch {
            return .failure("cannot list the replicas of \(replicas.service): \(error)")
        }
        guard listed.succeeded else {
            return .failure("cannot list the replicas of \(replicas.service) (\(listed.statusText)): \(listed.stderrText.split(whereSeparator: \.isNewline).joined(separator: " "))")
        }
        let found = ReplicaProbe.parse(listed.stdoutText)
        if found.isEmpty { return .failure("no replica of \(replicas.service) is running") }
        if let expected = replicas.expected, found.count != expected {
            return .failure("\(found.count) replica(s) of \(replicas.service) run, \(expected) expected: \(found.map(\.name).joined(separator: ", "))")
        }
        var outputs: [String: Value] = [:]
        for replica in found.sorted(by: { $0.name < $1.name }) {
            guard let direct = try? HTTPURL.parse("http://\(replica.address.contains(":") ? "[\(replica.address)]" : replica.address):\(replicas.port)\(replicas.path)") else {
                return .failure("replica \(replica.name) has no usable address (\(replica.address))")
            }
            switch await check(direct, through: transport, label: "replica \(replica.name) (\(direct.endpoint)): ") {
            case .success(let result, _): outputs = result
            case .failure(let message): return .failure(message)
            }
        }
        outputs["replicas"] = .int(found.count)
        return .success(outputs)
    }

    /// `samples` requests to one URL, each checked, then the latency gate.
    func check(_ url: HTTPURL, through transport: any Transport, label: String) async -> StepActionResult {
        var latencies: [Duration] = []
        var lastResponse: HTTPResponse? = nil
        for index in 1...samples {
            let outcome = url.secure ? await (curl ?? CurlProbe()).get(url, through: transport, timeout: timeout)
                : await HTTPClient.get(url, through: transport, timeout: timeout)
            let prefix = label + (samples > 1 ? "request \(index) of \(samples): " : "")
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
            return .failure(label + "p95 latency \(DurationText.format(p95)) is not under \(Durations.text(p95Under))"
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


import Foundation
import RunbookCore

// MARK: - wait_for

/// `wait_for`: a TCP port (`port`, `host`) or a URL (`url`, any HTTP status) until it is `up`
/// (or `down`), checking every `delay`, for at most `timeout`. Read-only, like `health`.
package struct WaitForStep: StepKind {
    package static let schema = StepKindSchema(
        name: "wait_for", summary: "wait until a TCP port or URL is up (or down)",
        arguments: [
            ArgumentSpec("port", .int, "TCP port"),
            ArgumentSpec("host", .string, default: "127.0.0.1", "address of the port, as seen from the host"),
            ArgumentSpec("url", .string, "URL answering any HTTP status"),
            ArgumentSpec("state", .enumeration(["up", "down"]), default: "up", "what to wait for"),
            ArgumentSpec("timeout", .duration, default: "60s", "give up after this long"),
            ArgumentSpec("delay", .duration, default: "1s", "pause between checks"),
            ArgumentSpec("recheck", .bool, default: true, "run again in rollback phase 3"),
        ],
        exactlyOneOf: [["port", "url"]])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static let replay = ReplayPhase.recheck
    package static func defaultName(_ arguments: [String: Value]) -> String {
        if let url = arguments["url"] { return "wait_for \(url.description)" }
        return "wait_for \(arguments["host"]?.description ?? "127.0.0.1"):\(arguments["port"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let port = try arguments.int("port")
        let urlText = arguments.string("url")
        let target: WaitForAction.Target
        switch (port, urlText) {
        case (let port?, nil):
            guard (1...65535).contains(port) else { throw StepFailure("port: \(port) must be from 1 to 65535") }
            var address = arguments.string("host") ?? "127.0.0.1"
            if address.hasPrefix("[") && address.hasSuffix("]") { address = String(address.dropFirst().dropLast()) }
            target = .port(address: address, port: port)
        case (nil, let text?):
            target = .url(try HTTPURL.parse(text))
        default:
            throw StepFailure("wait_for takes either port or url")
        }
        let stateText = arguments.string("state") ?? "up"
        guard stateText == "up" || stateText == "down" else { throw StepFailure("state: \(stateText) must be up or down") }
        let timeout = try arguments.duration("timeout") ?? .seconds(60)
        let delay = try arguments.duration("delay") ?? .seconds(1)
        let action = WaitForAction(target: target, up: stateText == "up", hostName: host.name, timeout: timeout, delay: delay)
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: action.summary)
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
        "wait until \(what) is \(up ? "up" : "down"): every \(Durations.text(delay)), at most \(Durations.text(timeout))"
    }

    var canonical: String {
        let target: String
        switch self.target {
        case .port(let address, let port): target = "port \(address) \(port)"
        case .url(let url): target = "url \(url.text)"
        }
        return [target, up ? "up" : "down", Durations.text(timeout), Durations.text(delay)].joined(separator: "\u{0}")
    }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
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
                    "elapsed_ms": .double(Durations.milliseconds(.now - started)),
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
            return .failure("\(what) did not come up within \(Durations.text(timeout)) (\(checked); last: \(last))")
        }
        return .failure("\(what) was still up after \(Durations.text(timeout)) (\(checked); last: \(last))")
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

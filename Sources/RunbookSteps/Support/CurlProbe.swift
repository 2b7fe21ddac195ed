import Foundation
import RunbookCore

/// An HTTPS request made by `curl` where the check starts (on the host over SSH, or on the
/// controller): certificates verified against that machine's CA store or `ca_file`, SNI from
/// the URL's name, `resolve` to send that name to a chosen address. The answer comes back as
/// the same `HTTPClient.Outcome` as a plain-HTTP request, timed by curl itself.
struct CurlProbe: Sendable, Hashable {
    /// Verify against this CA bundle (a path where curl runs) instead of the default store.
    var caFile: String?
    /// Skip certificate verification (shown as a warning in the plan).
    var insecure = false
    /// Connect to this address for the URL's name and port (`curl --resolve`).
    var resolve: String?

    /// What ends curl's output: the status and total time.
    static let marker = "\n__runbook_http__ "

    /// The command that makes the request.
    func command(_ url: HTTPURL, timeout: Duration) -> ShellCommand {
        let seconds = max(1, Int((Durations.milliseconds(timeout) / 1000).rounded(.up)))
        var command: ShellCommand = "curl --silent --show-error --proto =https --max-time \(seconds) --max-filesize 10485760 --output - --user-agent runbook-health/1"
        command = command + " --write-out \(Self.marker + "%{http_code} %{time_total}")"
        if let caFile { command = command + " --cacert \(caFile)" }
        if insecure { command = command + " --insecure" }
        if let resolve {
            let address = resolve.contains(":") && !resolve.hasPrefix("[") ? "[\(resolve)]" : resolve
            command = command + " --resolve \(url.host + ":" + String(url.port) + ":" + address)"
        }
        return command + " -- \(url.text)"
    }

    /// Makes the request through `transport` (the machine the check starts on).
    func get(_ url: HTTPURL, through transport: any Transport, timeout: Duration) async -> HTTPClient.Outcome {
        let started = ContinuousClock.now
        let output: CommandOutput
        do {
            output = try await transport.run(command(url, timeout: timeout), stdin: [], timeout: timeout + .seconds(5), onOutput: nil)
        } catch {
            return .failed("\(error)", latency: .now - started)
        }
        let elapsed = ContinuousClock.now - started
        let stderr = output.stderrText.split(whereSeparator: \.isNewline).joined(separator: " ")
        switch output.exitStatus {
        case 0: break
        case 127: return .failed("curl is not installed on \(transport.hostName) (it makes the HTTPS request)", latency: elapsed)
        case 6, 7: return .unreachable(latency: elapsed)
        case 28: return .failed("no answer within \(Durations.text(timeout)) (curl: \(stderr))", latency: elapsed)
        case 35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91:
            return .failed("TLS failed, the certificate was not accepted (curl: \(stderr))", latency: elapsed)
        default: return .failed("curl exited \(output.statusText): \(stderr)", latency: elapsed)
        }
        let bytes = output.stdout
        let marker = Array(Self.marker.utf8)
        guard bytes.count >= marker.count,
              let at = (0...(bytes.count - marker.count)).reversed().first(where: { Array(bytes[$0..<($0 + marker.count)]) == marker })
        else { return .failed("curl printed no status", latency: elapsed) }
        let tail = String(decoding: bytes[(at + marker.count)...], as: UTF8.self).split(separator: " ")
        guard tail.count == 2, let status = Int(tail[0]), let seconds = Double(tail[1]) else {
            return .failed("curl printed no status", latency: elapsed)
        }
        if status == 0 { return .unreachable(latency: elapsed) }
        let response = HTTPResponse(status: status, reason: "", headers: [], body: Array(bytes[..<at]))
        return .response(response, latency: .milliseconds(Int((seconds * 1000).rounded())))
    }
}

/// The replicas of a compose service, each checked directly (not through a load balancer,
/// which would retry a dead one on the next and hide it): their names and addresses, read
/// on the host when the check runs.
struct ReplicaProbe: Sendable, Hashable {
    var compose: ComposeCommand
    var service: String
    var port: Int
    var path: String
    /// How many replicas must answer; nil: as many as run (at least one).
    var expected: Int?

    /// Lists `NAME ADDRESS` for each container of the service.
    var listing: ShellCommand {
        let format = "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        return "ids=$(\(compose(["ps", "-q", service]))) || exit 1; for id in $ids; do docker inspect -f \(format) \"$id\" || exit 1; done"
    }

    /// The replicas as listed: name and first address.
    static func parse(_ text: String) -> [(name: String, address: String)] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let words = line.split(separator: " ")
            guard words.count >= 2 else { return nil }
            return (String(words[0].drop { $0 == "/" }), String(words[1]))
        }
    }

    var summary: String {
        "GET \(path) on " + (expected.map { "each of \($0) replica\($0 == 1 ? "" : "s")" } ?? "every replica") + " of \(service) (port \(port)), directly"
    }
}

import Foundation
import RunbookCore

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


/// Where a run's outcome is sent (SPEC §12): a runbook's `notify:` list and the inventory's
/// `defaults.notify:` together.
public struct NotifyTarget: Sendable, Hashable, Codable {
    /// How the event is delivered.
    public enum Kind: String, Sendable, Hashable, CaseIterable, Codable {
        /// An HTTP(S) POST of the event as JSON, with a Slack-compatible `text`.
        case webhook
        /// An HTTP(S) POST of the text to an ntfy-style topic URL (title, priority and tags in headers).
        case ntfy
        /// A command run on the controller (`sh -c`) with the event as JSON on stdin.
        case command
    }

    /// Which outcomes are sent.
    public enum When: String, Sendable, Hashable, CaseIterable, Codable {
        case failure, success, always

        /// Whether a run that ended `succeeded` (or not) is sent.
        public func matches(succeeded: Bool) -> Bool {
            switch self {
            case .always: return true
            case .success: return succeeded
            case .failure: return !succeeded
            }
        }
    }

    public var kind: Kind
    /// The URL or the command as written; `{{ secrets.NAME }}` is rendered on the controller.
    public var target: String
    public var on: When
    /// Per attempt.
    public var timeout: Duration
    /// Attempts after the first, 1 s, 2 s, … apart.
    public var retries: Int
    /// Where it is written, for messages.
    public var location: SourceLocation

    public init(kind: Kind, target: String, on: When = .failure, timeout: Duration = .seconds(10), retries: Int = 2,
                location: SourceLocation) {
        self.kind = kind
        self.target = target
        self.on = on
        self.timeout = timeout
        self.retries = retries
        self.location = location
    }

    public static func == (a: NotifyTarget, b: NotifyTarget) -> Bool {
        a.kind == b.kind && a.target == b.target && a.on == b.on && a.timeout == b.timeout && a.retries == b.retries
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(kind)
        hasher.combine(target)
        hasher.combine(on)
    }
}

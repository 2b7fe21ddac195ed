import RunbookCore

/// Reads `notify:` (a runbook's, or the inventory's `defaults.notify:`): a list of targets,
/// each `webhook: URL`, `ntfy: URL` or `command: CMD`, with `on` (failure, success, always;
/// default failure), `timeout` (10s) and `retries` (2).
enum NotifyReader {
    static let keys = NotifyTarget.Kind.allCases.map(\.rawValue) + ["on", "timeout", "retries"]

    static func read(_ node: YAMLNode, _ diagnostics: inout Diagnostics) -> [NotifyTarget] {
        guard let items = node.list(&diagnostics) else { return [] }
        var targets: [NotifyTarget] = []
        for item in items {
            guard let map = item.mapping(&diagnostics, allowedKeys: keys, what: "a mapping like {webhook: URL, on: failure}") else { continue }
            let kinds = NotifyTarget.Kind.allCases.filter { map[$0.rawValue] != nil }
            guard kinds.count == 1, let kind = kinds.first, let targetNode = map[kind.rawValue] else {
                item.error(kinds.isEmpty ? "a notify target needs one of webhook, ntfy or command"
                                         : "a notify target has one of webhook, ntfy or command, not \(kinds.map(\.rawValue).joined(separator: " and "))",
                           hint: "e.g. - { webhook: \"{{ secrets.SLACK_WEBHOOK }}\", on: failure }", in: &diagnostics)
                continue
            }
            guard let target = targetNode.nonEmptyString(&diagnostics) else { continue }
            if kind != .command, !target.contains("{{") {
                let lower = target.lowercased()
                if !(lower.hasPrefix("http://") || lower.hasPrefix("https://")) {
                    targetNode.error("\(kind.rawValue) needs an http:// or https:// URL, got \(targetNode.gotDescription)", in: &diagnostics)
                    continue
                }
            }
            var on = NotifyTarget.When.failure
            if let node = map["on"] { on = node.oneOf(NotifyTarget.When.self, &diagnostics) ?? on }
            var timeout = Duration.seconds(10)
            if let node = map["timeout"], let seconds = node.duration(&diagnostics) {
                if seconds <= 0 || seconds > 300 {
                    node.error("timeout must be more than 0s and at most 5m", in: &diagnostics)
                } else {
                    timeout = .milliseconds(Int(seconds * 1000))
                }
            }
            var retries = 2
            if let node = map["retries"], let value = node.int(&diagnostics, in: 0...10) { retries = value }
            targets.append(NotifyTarget(kind: kind, target: target, on: on, timeout: timeout, retries: retries, location: item.location))
        }
        return targets
    }
}

/// Durations as operators write them: `90s`, `5m`, `500ms`, `1h30m`, `2.5s`; a bare number is seconds.
public enum DurationText {
    /// The longest duration a runbook may write (30 days): every timeout, delay and age is far
    /// shorter, and a bound keeps deadline arithmetic from overflowing.
    public static let maximumSeconds: Double = 30 * 86_400

    /// Parses `text`, or nil when it is not a duration (or longer than `maximumSeconds`).
    public static func parse(_ text: String) -> Duration? {
        let s = text.trimmingWhitespace()
        guard !s.isEmpty else { return nil }
        if let seconds = Double(s) {
            guard seconds >= 0, seconds.isFinite, seconds <= maximumSeconds else { return nil }
            return .milliseconds(Int((seconds * 1000).rounded()))
        }
        var total = 0.0
        var number = ""
        var unit = ""
        var sawUnit = false
        func flush() -> Bool {
            guard let value = Double(number) else { return false }
            let factor: Double
            switch unit {
            case "ms": factor = 0.001
            case "s": factor = 1
            case "m": factor = 60
            case "h": factor = 3600
            case "d": factor = 86_400
            default: return false
            }
            total += value * factor
            number = ""
            unit = ""
            sawUnit = true
            return true
        }
        for ch in s {
            if ch.isNumber || ch == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.append(ch)
            } else if ch.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(ch)
            } else {
                return nil
            }
        }
        guard flush(), sawUnit, total.isFinite, total <= maximumSeconds else { return nil }
        return .milliseconds(Int((total * 1000).rounded()))
    }

    /// `1.2 s`, `340 ms`, `2m05s`: a duration for people.
    public static func format(_ duration: Duration) -> String {
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        if ms < 1000 { return "\(Int(ms.rounded())) ms" }
        if ms < 60_000 { return "\((ms / 100).rounded() / 10) s" }
        let seconds = Int((ms / 1000).rounded())
        let rest = seconds % 60
        return "\(seconds / 60)m\(rest < 10 ? "0" : "")\(rest)s"
    }

    /// Milliseconds as a Double, for JSON.
    public static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines.
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}

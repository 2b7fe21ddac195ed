import Foundation
import RunbookCore
import Synchronization

/// Writes whole lines to stdout or stderr, with ANSI colour when enabled. Thread-safe.
final class Terminal: Sendable {
    /// stderr, for errors raised before a context exists.
    static let standardError = Terminal(fd: 2, color: isatty(2) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil)

    private let fd: Int32
    let colorEnabled: Bool
    /// Whether a status line (`status`) is on screen, to be cleared before the next write.
    private let lock = Mutex(false)

    init(fd: Int32, color: Bool) {
        self.fd = fd
        self.colorEnabled = color
    }

    /// How many columns the output has when it is a terminal (its width, or `COLUMNS` when the
    /// terminal does not say); nil (no limit) for a pipe or a file, which scripts and logs read.
    var columns: Int? {
        guard isatty(fd) == 1 else { return nil }
        var size = winsize()
        if ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let text = ProcessInfo.processInfo.environment["COLUMNS"], let n = Int(text), n > 0 { return n }
        return nil
    }

    /// Writes `text` in one piece, made safe for a terminal: every control character (but
    /// newline and tab, and a carriage return before a newline) is shown escaped as `\u001b`,
    /// so nothing a host, a file or an argument holds can move the cursor, recolour or forge
    /// lines; only this program's own colours (`paint`) become escape sequences.
    func write(_ text: String) {
        let safe = Terminal.visible(text, color: colorEnabled)
        lock.withLock { statusShown in
            var bytes = Array(((statusShown ? Self.clearLine : "") + safe).utf8)
            statusShown = false
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeMutableBytes { Foundation.write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n <= 0 { break }
                offset += n
            }
            bytes.removeAll()
        }
    }

    /// Carriage return and erase the line: where a status line was.
    private static let clearLine = "\r\u{1B}[2K"

    /// Shows `text` as the status line: one line without a newline, cut to the terminal's
    /// width, replaced by the next status and cleared before the next `write`. Only on a
    /// terminal (nothing otherwise: a pipe or a log gets whole lines only); nil clears it.
    func status(_ text: String?) {
        guard let columns else { return }
        var line = ""
        if let text {
            let plain = Terminal.oneLine(text)
            line = Terminal.visible(paint(String(plain.prefix(max(columns - 1, 1))), .dim), color: colorEnabled)
        }
        lock.withLock { statusShown in
            guard statusShown || !line.isEmpty else { return }
            let bytes = Array((Self.clearLine + line).utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n <= 0 { break }
                offset += n
            }
            statusShown = !line.isEmpty
        }
    }

    enum Style: String {
        case bold = "1", dim = "2", red = "31", green = "32", yellow = "33", blue = "34", magenta = "35", cyan = "36"
    }

    /// `text` in `style` when colour is on: marked with private-use characters that `write`
    /// turns into the escape sequences (no escape character leaves this program otherwise).
    func paint(_ text: String, _ style: Style) -> String {
        colorEnabled ? Self.mark(style.rawValue) + text + Self.mark("0") : text
    }

    static let markStart: Unicode.Scalar = "\u{E000}"
    static let markEnd: Unicode.Scalar = "\u{E001}"

    static func mark(_ code: String) -> String { "\u{E000}\(code)\u{E001}" }

    /// `text` with control characters escaped visibly and, with `color`, colour marks made
    /// escape sequences (without it, marks are dropped).
    static func visible(_ text: String, color: Bool) -> String {
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            let value = scalar.value
            if scalar == markStart, let end = scalars[index...].firstIndex(of: markEnd),
               end - index <= 3, scalars[(index + 1)..<end].allSatisfy({ ("0"..."9").contains($0) }) {
                if color {
                    out.append("\u{1B}")
                    out.append("[")
                    out.append(contentsOf: scalars[(index + 1)..<end])
                    out.append("m")
                }
                index = end + 1
                continue
            }
            let isControl = value < 0x20 || value == 0x7F || (0x80...0x9F).contains(value)
            let allowed = scalar == "\n" || scalar == "\t" || (scalar == "\r" && index + 1 < scalars.count && scalars[index + 1] == "\n")
            if isControl && !allowed {
                let hex = String(value, radix: 16)
                out.append(contentsOf: ("\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex).unicodeScalars)
            } else {
                out.append(scalar)
            }
            index += 1
        }
        return String(out)
    }

    /// `text` on one line: a newline (or any control character) in a name, a summary or a
    /// value is shown escaped, so it cannot start a line of its own.
    static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\t" }) else { return text }
        return text.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
            .replacingOccurrences(of: "\t", with: "\\t")
    }
}

extension DiagnosticError {
    /// All diagnostics, one block each, with the severity coloured.
    func rendered(color: Bool) -> String {
        diagnostics.map { d in
            guard color else { return d.rendered }
            return d.rendered.replacingOccurrences(of: " error: ", with: " " + Terminal.mark("31") + "error:" + Terminal.mark("0") + " ")
        }.joined(separator: "\n")
    }
}

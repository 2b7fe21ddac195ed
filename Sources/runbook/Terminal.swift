import Foundation
import RunbookCore
import Synchronization

/// Writes whole lines to stdout or stderr, with ANSI colour when enabled. Thread-safe.
final class Terminal: Sendable {
    /// stderr, for errors raised before a context exists.
    static let standardError = Terminal(fd: 2, color: isatty(2) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil)

    private let fd: Int32
    let colorEnabled: Bool
    private let lock = Mutex(())

    init(fd: Int32, color: Bool) {
        self.fd = fd
        self.colorEnabled = color
    }

    /// Writes `text` as is, in one piece.
    func write(_ text: String) {
        lock.withLock { _ in
            var bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeMutableBytes { Foundation.write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n <= 0 { break }
                offset += n
            }
            bytes.removeAll()
        }
    }

    enum Style: String {
        case bold = "1", dim = "2", red = "31", green = "32", yellow = "33", blue = "34", magenta = "35", cyan = "36"
    }

    /// `text` in `style` when colour is on.
    func paint(_ text: String, _ style: Style) -> String {
        colorEnabled ? "\u{1B}[\(style.rawValue)m\(text)\u{1B}[0m" : text
    }
}

extension DiagnosticError {
    /// All diagnostics, one block each, with the severity coloured.
    func rendered(color: Bool) -> String {
        diagnostics.map { d in
            guard color else { return d.rendered }
            return d.rendered.replacingOccurrences(of: " error: ", with: " \u{1B}[31merror:\u{1B}[0m ")
        }.joined(separator: "\n")
    }
}

import Foundation

/// `apply --log FILE`: the run's output appended to FILE (0600), which is rotated first when
/// it has grown past `maximumBytes` (FILE.1 … FILE.`kept` are kept, the oldest dropped). What
/// scheduled runs use, so that their logs never grow without bound.
enum LogFile {
    static let maximumBytes = 1_048_576
    static let kept = 5

    /// Rotates `path` if needed, then points stdout and stderr at it after a header line.
    static func redirect(to path: String, header: String) throws {
        let manager = FileManager.default
        if let size = (try? manager.attributesOfItem(atPath: path))?[.size] as? Int, size > maximumBytes {
            try? manager.removeItem(atPath: "\(path).\(kept)")
            for index in stride(from: kept - 1, through: 1, by: -1) where manager.fileExists(atPath: "\(path).\(index)") {
                try? manager.moveItem(atPath: "\(path).\(index)", toPath: "\(path).\(index + 1)")
            }
            try? manager.moveItem(atPath: path, toPath: "\(path).1")
        }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LogFileError(message: "cannot open the log \(path): \(String(cString: strerror(errno)))") }
        _ = fchmod(fd, 0o600)
        let line = Array((header + "\n").utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        dup2(fd, STDOUT_FILENO)
        dup2(fd, STDERR_FILENO)
        close(fd)
    }
}

struct LogFileError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

import Crypto
import Foundation
import Synchronization

/// How host keys are checked against known_hosts.
public enum HostKeyPolicy: String, Sendable {
    /// Unknown and changed keys are refused.
    case strict
    /// Unknown keys are recorded in known_hosts; changed keys are refused.
    case acceptNew = "accept-new"
    /// No checking at all (loudly warned about by callers).
    case off
}

/// A host key as the server offered it.
public struct HostKey: Sendable, Equatable {
    /// The key blob in SSH wire format.
    public let blob: [UInt8]

    /// The key type named inside the blob, e.g. `ssh-ed25519`.
    public var type: String {
        guard blob.count >= 4 else { return "unknown" }
        let length = Int(blob[0]) << 24 | Int(blob[1]) << 16 | Int(blob[2]) << 8 | Int(blob[3])
        guard length > 0, blob.count >= 4 + length else { return "unknown" }
        return String(decoding: blob[4..<(4 + length)], as: UTF8.self)
    }

    /// The fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64.
    public var fingerprint: String {
        let digest = Data(SHA256.hash(data: blob)).base64EncodedString()
        return "SHA256:" + digest.replacingOccurrences(of: "=", with: "")
    }

    /// The key type as OpenSSH names it in messages (ED25519, ECDSA, RSA).
    public var displayType: String {
        switch type {
        case "ssh-ed25519": return "ED25519"
        case let t where t.hasPrefix("ecdsa-"): return "ECDSA"
        case "ssh-rsa": return "RSA"
        case "ssh-dss": return "DSA"
        default: return type
        }
    }
}

/// A parsed known_hosts file (OpenSSH format: plain and hashed names, patterns, markers).
///
/// Parsing splits the file into lines and fields on bytes; a key is only decoded from base64
/// when its line applies to the host being checked. `cached(path:)` keeps one parse per file
/// for the whole process, so twenty connections to twenty hosts read a long known_hosts once.
public struct KnownHostsFile: Sendable {
    /// One key line.
    public struct Entry: Sendable {
        /// 1-based line number in the file.
        public let line: Int
        /// `@revoked` or `@cert-authority`, if present.
        public let marker: String?
        /// The host field (comma-separated patterns, or a `|1|salt|hash` hashed name).
        public let hosts: String
        /// The key.
        public let key: HostKey
    }

    /// A key line as read: its key still in base64.
    struct Line: Sendable {
        let number: Int
        let marker: String?
        let hosts: String
        let keyBase64: String

        var entry: Entry? {
            guard let blob = Data(base64Encoded: keyBase64) else { return nil }
            return Entry(line: number, marker: marker, hosts: hosts, key: HostKey(blob: Array(blob)))
        }
    }

    /// The file the entries came from.
    public let path: String
    let lines: [Line]

    /// Every parseable key line, in file order.
    public var entries: [Entry] { lines.compactMap(\.entry) }

    /// Reads `path`; a missing file is an empty list.
    public static func load(path: String) throws(SSHError) -> KnownHostsFile {
        guard FileManager.default.fileExists(atPath: path) else { return KnownHostsFile(path: path, lines: []) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SSHError(.knownHosts, "cannot read known_hosts file \(path)")
        }
        return data.withUnsafeBytes { parse(bytes: $0, path: path) }
    }

    /// What `cached(path:)` keeps: a parse and the file's identity when it was read.
    private struct Stamp: Equatable {
        var device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    }

    private static let cache = Mutex<[String: (stamp: Stamp?, file: KnownHostsFile)]>([:])

    /// `load(path:)`, read once per process while the file stays the same (device, inode, size
    /// and modification time); a key recorded by accept-new changes the file and so the parse.
    public static func cached(path: String) throws(SSHError) -> KnownHostsFile {
        var info = stat()
        let stamp: Stamp? = stat(path, &info) == 0
            ? Stamp(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                    seconds: info.st_mtim.tv_sec, nanoseconds: info.st_mtim.tv_nsec)
            : nil
        let result: Result<KnownHostsFile, SSHError> = cache.withLock { cache in
            if let hit = cache[path], hit.stamp == stamp { return .success(hit.file) }
            do throws(SSHError) {
                let file = try load(path: path)
                cache[path] = (stamp, file)
                return .success(file)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Parses known_hosts text.
    public static func parse(_ text: String, path: String) -> KnownHostsFile {
        var text = text
        return text.withUTF8 { parse(bytes: UnsafeRawBufferPointer($0), path: path) }
    }

    static func parse(bytes: UnsafeRawBufferPointer, path: String) -> KnownHostsFile {
        var lines: [Line] = []
        var number = 0
        var start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 10 { end += 1 }
            number += 1
            if let line = parseLine(bytes, start..<end, number: number) { lines.append(line) }
            start = end + 1
        }
        return KnownHostsFile(path: path, lines: lines)
    }

    /// One line's fields, split on spaces and tabs; nil for blank lines, comments and lines
    /// with fewer than three fields (after a marker).
    private static func parseLine(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, number: Int) -> Line? {
        var fields: [Range<Int>] = []
        var index = range.lowerBound
        while index < range.upperBound && fields.count < 4 {
            while index < range.upperBound && (bytes[index] == 32 || bytes[index] == 9 || bytes[index] == 13) { index += 1 }
            guard index < range.upperBound else { break }
            let fieldStart = index
            while index < range.upperBound && bytes[index] != 32 && bytes[index] != 9 && bytes[index] != 13 { index += 1 }
            fields.append(fieldStart..<index)
        }
        guard let first = fields.first, bytes[first.lowerBound] != UInt8(ascii: "#") else { return nil }
        func string(_ field: Range<Int>) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field]), as: UTF8.self)
        }
        var marker: String? = nil
        if bytes[first.lowerBound] == UInt8(ascii: "@") {
            marker = string(first)
            fields.removeFirst()
        }
        guard fields.count >= 3 else { return nil }
        return Line(number: number, marker: marker, hosts: string(fields[0]), keyBase64: string(fields[2]))
    }

    /// The name a host is filed under: `host`, or `[host]:port` off port 22.
    public static func lookupName(host: String, port: Int) -> String {
        port == 22 ? host : "[\(host)]:\(port)"
    }

    /// The entries that apply to `name` (as made by `lookupName`), cert authorities left out.
    public func entries(for name: String) -> [Entry] {
        lines.lazy.filter { $0.marker != "@cert-authority" && Self.hostField($0.hosts, matches: name) }.compactMap(\.entry)
    }

    /// What known_hosts says about an offered key.
    public enum Verdict: Sendable {
        /// The key is known for this host (line number).
        case known(line: Int)
        /// The host has no key of this type in the file.
        case unknown
        /// The host has a different key of the same type: the listed entries.
        case changed([Entry])
        /// The key is marked `@revoked`.
        case revoked(line: Int)
    }

    /// Checks an offered key for `name`.
    public func verify(_ key: HostKey, name: String) -> Verdict {
        let candidates = entries(for: name)
        if let revoked = lines.lazy.filter({ $0.marker == "@revoked" }).compactMap(\.entry).first(where: { $0.key == key }) {
            return .revoked(line: revoked.line)
        }
        if let match = candidates.first(where: { $0.marker == nil && $0.key == key }) {
            return .known(line: match.line)
        }
        let sameType = candidates.filter { $0.marker == nil && $0.key.type == key.type }
        return sameType.isEmpty ? .unknown : .changed(sameType)
    }

    /// The key types on file for `name`, in file order (for the host key algorithm preference).
    public func knownTypes(for name: String) -> [String] {
        var seen: [String] = []
        for entry in entries(for: name) where entry.marker == nil && !seen.contains(entry.key.type) {
            seen.append(entry.key.type)
        }
        return seen
    }

    /// Appends `key` for `name`, creating the file (0600) and its directory (0700) if needed.
    public static func append(_ key: HostKey, name: String, to path: String) throws(SSHError) {
        let line = "\(name) \(key.type) \(Data(key.blob).base64EncodedString())\n"
        let directory = (path as NSString).deletingLastPathComponent
        do {
            if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            }
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                    throw SSHError(.knownHosts, "cannot create \(path)")
                }
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            try handle.seekToEnd()
            // Keep the new entry on its own line when the file does not end with a newline.
            if let size = try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, size > 0,
               let last = try? Data(contentsOf: URL(fileURLWithPath: path)).last, last != 10 {
                try handle.write(contentsOf: Data([10]))
            }
            try handle.write(contentsOf: Data(line.utf8))
        } catch let error as SSHError {
            throw error
        } catch {
            throw SSHError(.knownHosts, "cannot record the host key in \(path): \(error)")
        }
    }

    /// True when a host field (plain patterns or a hashed name) matches `name`.
    static func hostField(_ field: String, matches name: String) -> Bool {
        if field.hasPrefix("|1|") {
            let parts = field.split(separator: "|", omittingEmptySubsequences: true)
            guard parts.count == 3, let salt = Data(base64Encoded: String(parts[1])),
                  let hash = Data(base64Encoded: String(parts[2])) else { return false }
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(name.utf8), using: SymmetricKey(data: salt))
            return Data(mac) == hash
        }
        var field = field, name = name
        return field.withUTF8 { field in
            name.withUTF8 { name in
                var matched = false
                var start = 0
                while start <= field.count {
                    var end = start
                    while end < field.count && field[end] != UInt8(ascii: ",") { end += 1 }
                    let negated = end > start && field[start] == UInt8(ascii: "!")
                    let pattern = UnsafeBufferPointer(rebasing: field[(negated ? start + 1 : start)..<end])
                    if glob(pattern, matches: name) {
                        if negated { return false }
                        matched = true
                    }
                    start = end + 1
                }
                return matched
            }
        }
    }

    /// OpenSSH's `*` and `?` wildcard match, case-insensitive.
    static func glob(_ pattern: String, matches text: String) -> Bool {
        var pattern = pattern, text = text
        return pattern.withUTF8 { p in text.withUTF8 { t in glob(p, matches: t) } }
    }

    /// The match on bytes, ASCII letters folded as OpenSSH's `match_pattern` folds them.
    static func glob(_ p: UnsafeBufferPointer<UInt8>, matches t: UnsafeBufferPointer<UInt8>) -> Bool {
        func lower(_ byte: UInt8) -> UInt8 { byte >= 65 && byte <= 90 ? byte + 32 : byte }
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count && (p[pi] == UInt8(ascii: "?") || lower(p[pi]) == lower(t[ti])) {
                pi += 1; ti += 1
            } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
                star = pi; mark = ti; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

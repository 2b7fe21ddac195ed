import Crypto
import Foundation

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

    /// The file the entries came from.
    public let path: String
    /// Every parseable key line, in file order.
    public let entries: [Entry]

    /// Reads `path`; a missing file is an empty list.
    public static func load(path: String) throws(SSHError) -> KnownHostsFile {
        guard FileManager.default.fileExists(atPath: path) else { return KnownHostsFile(path: path, entries: []) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SSHError(.knownHosts, "cannot read known_hosts file \(path)")
        }
        return parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// Parses known_hosts text.
    public static func parse(_ text: String, path: String) -> KnownHostsFile {
        var entries: [Entry] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var fields = rawLine.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = fields.first, !first.hasPrefix("#") else { continue }
            var marker: String? = nil
            if first.hasPrefix("@") {
                marker = first
                fields.removeFirst()
            }
            guard fields.count >= 3, let blob = Data(base64Encoded: fields[2]) else { continue }
            entries.append(Entry(line: index + 1, marker: marker, hosts: fields[0], key: HostKey(blob: Array(blob))))
        }
        return KnownHostsFile(path: path, entries: entries)
    }

    /// The name a host is filed under: `host`, or `[host]:port` off port 22.
    public static func lookupName(host: String, port: Int) -> String {
        port == 22 ? host : "[\(host)]:\(port)"
    }

    /// The entries that apply to `name` (as made by `lookupName`), cert authorities left out.
    public func entries(for name: String) -> [Entry] {
        entries.filter { $0.marker != "@cert-authority" && Self.hostField($0.hosts, matches: name) }
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
        if let revoked = entries.first(where: { $0.marker == "@revoked" && $0.key == key }) {
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
        var matched = false
        for pattern in field.split(separator: ",") {
            if pattern.hasPrefix("!") {
                if glob(String(pattern.dropFirst()), matches: name) { return false }
            } else if glob(String(pattern), matches: name) {
                matched = true
            }
        }
        return matched
    }

    /// OpenSSH's `*` and `?` wildcard match, case-insensitive.
    static func glob(_ pattern: String, matches text: String) -> Bool {
        let p = Array(pattern.lowercased()), t = Array(text.lowercased())
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count && (p[pi] == "?" || p[pi] == t[ti]) {
                pi += 1; ti += 1
            } else if pi < p.count && p[pi] == "*" {
                star = pi; mark = ti; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}

import Foundation
@testable import SSH
import Testing

@Suite("known_hosts parsing and matching")
struct KnownHostsTests {
    static let ed25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    static let third = "AAAAC3NzaC1lZDI1NTE5AAAAIBfpcoujeM+Wpx+7nS+SGjghg8KvRC0cZC1Sh+F6IoHo"
    static let other = "AAAAC3NzaC1lZDI1NTE5AAAAIKpR1p0w3nKyBKQCTpb8erezoBjjFDpF6/8h7ZuqzKzx"

    @Test("lines, comments, markers, CRLF and broken keys")
    func parse() throws {
        let text = """
            # a comment
            
            web1,10.0.0.1 ssh-ed25519 \(Self.ed25519) root@web1\r
            \t[db.example]:2222  ssh-ed25519\t\(Self.other)
            @revoked old.example ssh-ed25519 \(Self.other)
            @cert-authority *.example ssh-ed25519 \(Self.ed25519)
            short-line ssh-ed25519
            bad.example ssh-ed25519 not*base64
            last.example ssh-ed25519 \(Self.ed25519)
            """
        let file = KnownHostsFile.parse(text, path: "known_hosts")
        #expect(file.entries.map(\.line) == [3, 4, 5, 6, 9])
        #expect(file.entries.map(\.hosts) == ["web1,10.0.0.1", "[db.example]:2222", "old.example", "*.example", "last.example"])
        #expect(file.entries.map(\.marker) == [nil, nil, "@revoked", "@cert-authority", nil])
        #expect(file.entries[0].key.type == "ssh-ed25519")
        #expect(file.entries[0].key.fingerprint == HostKey(blob: Array(Data(base64Encoded: Self.ed25519)!)).fingerprint)
        #expect(file.knownTypes(for: "10.0.0.1") == ["ssh-ed25519"])
        #expect(file.knownTypes(for: "[db.example]:2222") == ["ssh-ed25519"])
        #expect(file.knownTypes(for: "db.example").isEmpty)
        // A certificate authority line is not a host key of the hosts it names.
        #expect(file.entries(for: "a.example").isEmpty)

        let key = HostKey(blob: Array(Data(base64Encoded: Self.ed25519)!))
        let otherKey = HostKey(blob: Array(Data(base64Encoded: Self.other)!))
        guard case .known(line: 3) = file.verify(key, name: "WEB1") else { Issue.record("web1 not known"); return }
        let thirdKey = HostKey(blob: Array(Data(base64Encoded: Self.third)!))
        guard case .changed(let entries) = file.verify(thirdKey, name: "web1") else { Issue.record("not changed"); return }
        #expect(entries.map(\.line) == [3])
        // A revoked key is refused for every host, even one that lists it.
        guard case .revoked(line: 5) = file.verify(otherKey, name: "[db.example]:2222") else { Issue.record("not revoked"); return }
        guard case .unknown = file.verify(key, name: "bad.example") else { Issue.record("broken key matched"); return }
    }

    @Test("patterns: wildcards, negation, case and hashed names")
    func patterns() {
        #expect(KnownHostsFile.hostField("*.example.com,!bad.example.com", matches: "Web.EXAMPLE.com"))
        #expect(!KnownHostsFile.hostField("*.example.com,!bad.example.com", matches: "bad.example.com"))
        #expect(KnownHostsFile.hostField("10.0.0.?", matches: "10.0.0.7"))
        #expect(!KnownHostsFile.hostField("10.0.0.?", matches: "10.0.0.17"))
        #expect(KnownHostsFile.hostField("[h*]:2222", matches: "[h1]:2222"))
        #expect(!KnownHostsFile.hostField("[h*]:2222", matches: "h1"))
        #expect(!KnownHostsFile.hostField("", matches: "h1"))
        #expect(KnownHostsFile.glob("a*b*c", matches: "aXXbYYc"))
        #expect(!KnownHostsFile.glob("a*b*c", matches: "aXXbYY"))
        // "web1" hashed as `ssh-keygen -H` does: HMAC-SHA1 keyed with the salt "salt-salt-salt-salt!".
        let field = "|1|c2FsdC1zYWx0LXNhbHQtc2FsdCE=|mvPriK8f8mbY3jveNUZzVVwe8uU="
        #expect(KnownHostsFile.hostField(field, matches: "web1"))
        #expect(!KnownHostsFile.hostField(field, matches: "web2"))
    }

    @Test("cached(path:) reads a file once and again after it changes")
    func cache() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kh-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/known_hosts"
        #expect(try KnownHostsFile.cached(path: path).entries.isEmpty)
        let key = HostKey(blob: Array(Data(base64Encoded: Self.ed25519)!))
        try KnownHostsFile.append(key, name: "[h1]:2222", to: path)
        #expect(try KnownHostsFile.cached(path: path).knownTypes(for: "[h1]:2222") == ["ssh-ed25519"])
        try KnownHostsFile.append(key, name: "h2", to: path)
        let file = try KnownHostsFile.cached(path: path)
        #expect(file.entries.map(\.hosts) == ["[h1]:2222", "h2"])
        try FileManager.default.removeItem(atPath: path)
        #expect(try KnownHostsFile.cached(path: path).entries.isEmpty)
    }
}

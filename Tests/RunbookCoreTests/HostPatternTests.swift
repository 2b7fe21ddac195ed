import RunbookCore
import Testing

private func host(_ name: String, groups: [String] = []) -> Host {
    Host(name: name, user: "deploy", knownHosts: "/root/.ssh/known_hosts", groups: groups)
}

private let inventory = Inventory(
    hosts: [
        host("app1", groups: ["web"]), host("app2", groups: ["web"]), host("db1", groups: ["db"]),
        host("bastion"), host("local"), host("worker-1", groups: ["workers"]),
    ],
    groups: ["web": ["app1", "app2"], "db": ["db1"], "workers": ["worker-1"]],
    groupNames: ["web", "db", "workers"])

private func names(_ pattern: String) throws -> [String] {
    try HostPattern(pattern).select(from: inventory).map(\.name)
}

@Suite struct HostPatternTests {
    @Test func hostsGroupsAndAll() throws {
        #expect(try names("app2") == ["app2"])
        #expect(try names("web") == ["app1", "app2"])
        #expect(try names("all") == ["app1", "app2", "db1", "bastion", "local", "worker-1"])
    }

    @Test func commaListsAreInInventoryOrderWithoutDuplicates() throws {
        #expect(try names("db1, web ,app1") == ["app1", "app2", "db1"])
    }

    @Test func globsMatchHostsAndGroups() throws {
        #expect(try names("app*") == ["app1", "app2"])
        #expect(try names("d?") == ["db1"])  // the group "db"
        #expect(try names("work*") == ["worker-1"])
        #expect(try names("*") == ["app1", "app2", "db1", "bastion", "local", "worker-1"])
    }

    @Test func exclusionsApplyAfterInclusions() throws {
        #expect(try names("!app1,web") == ["app2"])
        #expect(try names("all,!web,!local") == ["db1", "bastion", "worker-1"])
        #expect(try names("!db") == ["app1", "app2", "bastion", "local", "worker-1"])
    }

    @Test func unknownTermIsAnErrorWithSuggestion() throws {
        let error = #expect(throws: DiagnosticError.self) { try names("wbe,db1") }
        let diagnostic = try #require(error?.diagnostics.first)
        #expect(diagnostic.summary.contains("\"wbe\""))
        #expect(diagnostic.hint == "did you mean \"web\"?")
    }

    @Test func everyUnknownTermIsReported() throws {
        let error = #expect(throws: DiagnosticError.self) { try names("nope*,!wb,app1") }
        #expect(error?.diagnostics.count == 2)
        #expect(error?.diagnostics.last?.hint == "did you mean \"web\"?")
    }

    @Test func emptyTermsAreErrors() {
        #expect(throws: DiagnosticError.self) { try HostPattern("") }
        #expect(throws: DiagnosticError.self) { try HostPattern("web,,db") }
        #expect(throws: DiagnosticError.self) { try HostPattern("!") }
    }
}

@Suite struct DiagnosticTests {
    @Test func rendersLikeACompiler() {
        let d = Diagnostic.error(
            "expected an integer, got \"abc\"",
            at: SourceLocation(file: "inventory/hosts.yml", line: 4, column: 12),
            field: "hosts.app2.port", hint: "write a port number such as 22")
        #expect(d.rendered == """
            inventory/hosts.yml:4:12: error: hosts.app2.port: expected an integer, got "abc"
              hint: write a port number such as 22
            """)
        let bare = Diagnostic.warning("something odd")
        #expect(bare.rendered == "warning: something odd")
        let error = DiagnosticError([d, bare])
        #expect(error.description.split(separator: "\n").count == 3)
        #expect(error.errors.count == 1)
    }

    @Test func closestMatchSuggestsNearNamesOnly() {
        #expect(closestMatch("adress", in: ["address", "port", "user"]) == "address")
        #expect(closestMatch("prot", in: ["address", "port", "user"]) == "port")
        #expect(closestMatch("Web", in: ["web", "db"]) == "web")
        #expect(closestMatch("zzzzzz", in: ["address", "port"]) == nil)
        #expect(closestMatch("ab", in: ["xy"]) == nil)
        #expect(closestMatch("host_key_cheking", in: ["host_key_checking", "hosts"]) == "host_key_checking")
    }

    @Test func collectorThrowsOnlyWithErrors() throws {
        var diagnostics = Diagnostics()
        diagnostics.warning("w", at: nil)
        try diagnostics.throwIfErrors()
        diagnostics.error("e", at: nil)
        #expect(throws: DiagnosticError.self) { try diagnostics.throwIfErrors() }
    }
}

@Suite struct ValueTests {
    @Test func deepMerge() {
        let base: Value = ["a": 1, "nested": ["x": 1, "y": 2], "list": [1, 2]]
        let over: Value = ["b": "two", "nested": ["y": 3], "list": [3]]
        #expect(base.merging(over) == ["a": 1, "b": "two", "nested": ["x": 1, "y": 3], "list": [3]])
        #expect(Value.int(1).merging("x") == "x")
    }

    @Test func accessorsAndDescription() {
        let v: Value = ["name": "web", "n": 4, "ratio": 0.5, "on": true, "none": nil, "l": [1, "a"]]
        #expect(v["name"]?.stringValue == "web")
        #expect(v["n"]?.intValue == 4)
        #expect(v["ratio"]?.doubleValue == 0.5)
        #expect(v["on"]?.boolValue == true)
        #expect(v["none"]?.isNull == true)
        #expect(Value.string("plain").description == "plain")
        #expect(v["l"]?.description == "[1, \"a\"]")
        #expect(Value.double(2).description == "2")
    }
}

import RunbookCore
import RunbookEngine
import Testing

/// The YAML layer the inventory loader (and the runbook loader) reads through.
@Suite struct InventoryYAMLNodeTests {
    private func root(_ text: String) throws -> YAMLNode {
        try #require(try YAMLDocument.parse(text: text, file: "f.yml").root)
    }

    @Test func scalarsResolveToValues() throws {
        let node = try root("""
            i: 42
            neg: -7
            hex: 0x1F
            f: 2.5
            exp: 1e3
            t: true
            F: False
            n: null
            tilde: ~
            empty:
            yes: yes
            off: off
            mode: 0644
            quoted_int: "42"
            single: 'true'
            version: 1.10.2
            block: |
              line
            tagged_str: !!str 12
            tagged_int: !!int "12"
            list: [1, a, {k: v}]
            """)
        let value = node.value
        #expect(value["i"] == .int(42))
        #expect(value["neg"] == .int(-7))
        #expect(value["hex"] == .int(31))
        #expect(value["f"] == .double(2.5))
        #expect(value["exp"] == .double(1000))
        #expect(value["t"] == .bool(true))
        #expect(value["F"] == .bool(false))
        #expect(value["n"] == .null)
        #expect(value["tilde"] == .null)
        #expect(value["empty"] == .null)
        #expect(value["yes"] == .string("yes"))
        #expect(value["off"] == .string("off"))
        #expect(value["mode"] == .string("0644"))
        #expect(value["quoted_int"] == .string("42"))
        #expect(value["single"] == .string("true"))
        #expect(value["version"] == .string("1.10.2"))
        #expect(value["block"] == .string("line\n"))
        #expect(value["tagged_str"] == .string("12"))
        #expect(value["tagged_int"] == .int(12))
        #expect(value["list"] == [1, "a", ["k": "v"]])
    }

    @Test func nodesKnowTheirLocationAndPath() throws {
        let node = try root("""
            hosts:
              app2:
                identity_file: [a, b]
            """)
        var diagnostics = Diagnostics()
        let hosts = try #require(node.mapping(&diagnostics)?["hosts"]?.mapping(&diagnostics))
        let app2 = try #require(hosts["app2"]?.mapping(&diagnostics))
        let files = try #require(app2["identity_file"]?.list(&diagnostics))
        #expect(files[1].path == "hosts.app2.identity_file[1]")
        #expect(files[1].location == SourceLocation(file: "f.yml", line: 3, column: 24))
        #expect(app2.entries[0].keyNode.location.column == 5)
        #expect(diagnostics.all.isEmpty)
    }

    @Test func typedReadersReportTypeErrors() throws {
        let node = try root("""
            port: abc
            flag: maybe
            when: 1m30s
            half: 500ms
            list: just-one
            quoted: "22"
            """)
        var diagnostics = Diagnostics()
        let map = try #require(node.mapping(&diagnostics))
        #expect(map["port"]?.int(&diagnostics) == nil)
        #expect(map["flag"]?.bool(&diagnostics) == nil)
        #expect(map["when"]?.duration(&diagnostics) == 90)
        #expect(map["half"]?.duration(&diagnostics) == 0.5)
        #expect(map["list"]?.stringList(&diagnostics) == ["just-one"])
        #expect(map["list"]?.list(&diagnostics) == nil)
        #expect(map["quoted"]?.int(&diagnostics) == nil)
        #expect(map.required("missing", &diagnostics) == nil)
        let summaries = diagnostics.all.map(\.summary)
        #expect(summaries == [
            "expected an integer, got \"abc\"", "expected true or false, got \"maybe\"",
            "expected a list, got \"just-one\"", "expected an integer, got \"22\"",
            "missing required key \"missing\"",
        ])
        #expect(diagnostics.all[3].hint == "remove the quotes to write a number")
        #expect(diagnostics.all.map(\.field) == ["port", "flag", "list", "quoted", "missing"])
    }

    @Test func mergeKeysBringInEntries() throws {
        let node = try root("""
            common: &common { user: deploy, port: 2222 }
            app1:
              <<: *common
              port: 22
            """)
        var diagnostics = Diagnostics()
        let app1 = try #require(node.mapping(&diagnostics)?["app1"]?.mapping(&diagnostics))
        #expect(app1.keys == ["port", "user"])
        #expect(app1.values == ["port": 22, "user": "deploy"])
    }

    @Test func durations() {
        #expect(YAMLNode.parseDuration("90s") == 90)
        #expect(YAMLNode.parseDuration("5m") == 300)
        #expect(YAMLNode.parseDuration("1h30m") == 5400)
        #expect(YAMLNode.parseDuration("2.5") == 2.5)
        #expect(YAMLNode.parseDuration("5 parsecs") == nil)
        #expect(YAMLNode.parseDuration("-1s") == nil)
        #expect(YAMLNode.parseDuration("s") == nil)
    }
}

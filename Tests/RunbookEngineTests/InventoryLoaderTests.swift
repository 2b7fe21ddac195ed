import Foundation
import RunbookCore
import RunbookEngine
import Testing

private let home = "/home/op"

private func loader(sshConfig: String? = nil, user: String = "op") -> InventoryLoader {
    InventoryLoader(homeDirectory: home, defaultUser: user, sshConfig: sshConfig.map(SSHConfig.parse))
}

/// The diagnostics of loading `text`, which must fail.
private func diagnostics(
    _ text: String, sshConfig: String? = nil, sourceLocation: Testing.SourceLocation = #_sourceLocation
) -> [Diagnostic] {
    do {
        _ = try loader(sshConfig: sshConfig).load(text: text, file: "inventory/hosts.yml")
        Issue.record("expected the inventory to be rejected", sourceLocation: sourceLocation)
        return []
    } catch {
        return error.diagnostics
    }
}

private let specExample = """
    defaults: { user: deploy, port: 22, identity_file: ~/.ssh/id_ed25519,
                known_hosts: ~/.ssh/known_hosts, host_key_checking: strict }   # strict | accept-new | off
    vars: { app_dir: /srv/app }                       # for every host
    groups:
      web: { hosts: [app1, app2], vars: { compose_file: /srv/app/docker-compose.prod.yml } }
      db:  { hosts: [db1] }
    hosts:
      app1: { address: 203.0.113.10 }
      app2: { address: 203.0.113.11, port: 2222, vars: { workers: 4 } }
      db1:  { address: 10.0.0.5, proxy_jump: bastion }
      bastion: { address: 198.51.100.7 }
      local: { connection: local }                    # runs on the controller, no SSH
    """

@Suite struct InventoryLoaderTests {
    @Test func specExampleLoads() throws {
        let inventory = try loader().load(text: specExample, file: "inventory/hosts.yml")
        #expect(inventory.hosts.map(\.name) == ["app1", "app2", "db1", "bastion", "local"])
        #expect(inventory.groups == ["web": ["app1", "app2"], "db": ["db1"]])
        #expect(inventory.groupNames == ["web", "db"])
        #expect(inventory.warnings.isEmpty)

        let app2 = try #require(inventory.host(named: "app2"))
        #expect(app2.address == "203.0.113.11")
        #expect(app2.port == 2222)
        #expect(app2.user == "deploy")
        #expect(app2.identityFiles == ["/home/op/.ssh/id_ed25519"])
        #expect(app2.knownHosts == "/home/op/.ssh/known_hosts")
        #expect(app2.hostKeyChecking == .strict)
        #expect(app2.groups == ["web"])
        #expect(app2.vars == [
            "app_dir": "/srv/app", "compose_file": "/srv/app/docker-compose.prod.yml", "workers": 4,
        ])
        #expect(app2.connectTimeout == 10)
        #expect(app2.serverAliveInterval == 15)
        #expect(app2.serverAliveCountMax == 3)
        #expect(app2.password == nil)
        #expect(app2.proxyJump.isEmpty)

        let app1 = try #require(inventory.host(named: "app1"))
        #expect(app1.port == 22)
        #expect(app1.vars == ["app_dir": "/srv/app", "compose_file": "/srv/app/docker-compose.prod.yml"])

        let db1 = try #require(inventory.host(named: "db1"))
        #expect(db1.groups == ["db"])
        #expect(db1.vars == ["app_dir": "/srv/app"])
        #expect(db1.proxyJump == [
            JumpHost(
                name: "bastion", address: "198.51.100.7", port: 22, user: "deploy",
                identityFiles: ["/home/op/.ssh/id_ed25519"], knownHosts: "/home/op/.ssh/known_hosts",
                hostKeyChecking: .strict),
        ])

        let local = try #require(inventory.host(named: "local"))
        #expect(local.connection == .local)
        #expect(local.groups.isEmpty)
        #expect(local.vars == ["app_dir": "/srv/app"])

        let selected = try HostPattern("web,!app1,db*").select(from: inventory)
        #expect(selected.map(\.name) == ["app2", "db1"])
    }

    @Test func builtInDefaults() throws {
        let inventory = try loader(user: "alice").load(text: "hosts:\n  h1:\n", file: "inv.yml")
        let h1 = try #require(inventory.hosts.first)
        #expect(h1.address == "h1")
        #expect(h1.user == "alice")
        #expect(h1.port == 22)
        #expect(h1.identityFiles == ["/home/op/.ssh/id_ed25519", "/home/op/.ssh/id_ecdsa"])
        #expect(h1.knownHosts == "/home/op/.ssh/known_hosts")
        #expect(h1.hostKeyChecking == .strict)
        #expect(h1.connection == .ssh)
    }

    @Test func emptyInventoryIsValid() throws {
        #expect(try loader().load(text: "", file: "inv.yml").hosts.isEmpty)
        #expect(try loader().load(text: "# nothing yet\n", file: "inv.yml").hosts.isEmpty)
    }

    @Test func sshConfigFillsInAndTheInventoryWins() throws {
        let sshConfig = """
            Host app1
              HostName app1.example.com
              User cfguser
              Port 2201
              IdentityFile ~/.ssh/app1_key
              ConnectTimeout 3
            Host app2
              HostName app2.example.com
              User cfguser
              Port 2202
              ProxyJump jumper@gw.example.com:2022
            Host *
              ServerAliveInterval 60
            Host app3
              User cfguser
              Port 2203
              IdentityFile ~/.ssh/app3_key
            """
        let text = """
            defaults: { user: deploy, port: 2000, identity_file: [~/.ssh/deploy_key] }
            hosts:
              app1: {}
              app2: { address: 203.0.113.11, user: admin, port: 22, identity_file: keys/app2 }
            """
        let inventory = try loader(sshConfig: sshConfig).load(text: text, file: "/project/inventory/hosts.yml")
        // Where the inventory is silent, ssh_config fills in.
        let bare = try loader(sshConfig: sshConfig).load(text: "hosts:\n  app3: {}\n", file: "/p/hosts.yml")
        let app3 = try #require(bare.host(named: "app3"))
        #expect(app3.user == "cfguser")
        #expect(app3.port == 2203)
        #expect(app3.identityFiles == ["/home/op/.ssh/app3_key"])
        let app1 = try #require(inventory.host(named: "app1"))
        #expect(app1.address == "app1.example.com")
        // The inventory's defaults speak too, and the inventory wins (SPEC §3).
        #expect(app1.user == "deploy")
        #expect(app1.port == 2000)
        #expect(app1.identityFiles == ["/home/op/.ssh/deploy_key"])
        #expect(app1.connectTimeout == 3)
        #expect(app1.serverAliveInterval == 60)
        #expect(app1.proxyJump.isEmpty)

        let app2 = try #require(inventory.host(named: "app2"))
        #expect(app2.address == "203.0.113.11")
        #expect(app2.user == "admin")
        #expect(app2.port == 22)
        #expect(app2.identityFiles == ["/project/inventory/keys/app2"])
        #expect(app2.proxyJump.count == 1)
        let hop = try #require(app2.proxyJump.first)
        #expect(hop.name == nil)
        #expect(hop.address == "gw.example.com")
        #expect(hop.port == 2022)
        #expect(hop.user == "jumper")
        #expect(hop.identityFiles == ["/project/inventory/keys/app2"])
    }

    @Test func proxyJumpChainsAndAddressHops() throws {
        let text = """
            defaults: { user: deploy, host_key_checking: accept-new }
            hosts:
              outer: { address: 198.51.100.1, port: 2022, user: gate }
              bastion: { address: 10.0.0.1, proxy_jump: outer }
              db1: { address: 10.0.0.5, proxy_jump: "root@bastion" }
              db2: { address: 10.0.0.6, proxy_jump: [ops@jump.example.com:2200, bastion] }
              db3: { proxy_jump: "outer, [2001:db8::1]:2222" }
            """
        let inventory = try loader().load(text: text, file: "inv.yml")
        let db1 = try #require(inventory.host(named: "db1"))
        #expect(db1.proxyJump.map(\.name) == ["outer", "bastion"])
        #expect(db1.proxyJump.map(\.user) == ["gate", "root"])
        #expect(db1.proxyJump.map(\.port) == [2022, 22])
        let db2 = try #require(inventory.host(named: "db2"))
        #expect(db2.proxyJump.map(\.address) == ["jump.example.com", "198.51.100.1", "10.0.0.1"])
        #expect(db2.proxyJump.first?.user == "ops")
        #expect(db2.proxyJump.first?.port == 2200)
        #expect(db2.proxyJump.first?.hostKeyChecking == .acceptNew)
        let db3 = try #require(inventory.host(named: "db3"))
        #expect(db3.proxyJump.map(\.address) == ["198.51.100.1", "2001:db8::1"])
        #expect(db3.proxyJump.last?.port == 2222)
        #expect(db3.proxyJump.last?.user == "deploy")
    }

    @Test func groupsDefineHostsImplicitlyAndMergeVarsInFileOrder() throws {
        let text = """
            defaults:
              vars: { tier: none, deep: { a: 1, b: 1 } }
            vars: { tier: base }
            groups:
              web: { hosts: [app1, app3], vars: { tier: web, deep: { b: 2 } } }
              canary: { hosts: [app3], vars: { tier: canary, deep: { c: 3 } } }
              db: [db9]
            hosts:
              app1: { vars: { own: yes } }
            """
        let inventory = try loader().load(text: text, file: "inv.yml")
        #expect(inventory.hosts.map(\.name) == ["app1", "app3", "db9"])
        let app3 = try #require(inventory.host(named: "app3"))
        #expect(app3.address == "app3")
        #expect(app3.groups == ["web", "canary"])
        #expect(app3.vars == ["tier": "canary", "deep": ["a": 1, "b": 2, "c": 3]])
        let app1 = try #require(inventory.host(named: "app1"))
        #expect(app1.vars == ["tier": "web", "deep": ["a": 1, "b": 2], "own": "yes"])
        #expect(inventory.host(named: "db9")?.groups == ["db"])
        // app3 is close to nothing under hosts: except app1, so it is flagged as a possible typo.
        #expect(inventory.warnings.count == 1)
        #expect(inventory.warnings.first?.field == "groups.web.hosts[1]")
    }

    @Test func settingsReadFromEveryKey() throws {
        let text = """
            defaults: { password_secret: deploy_pw, connect_timeout: 2.5s, server_alive_interval: 0 }
            hosts:
              a: { known_hosts: /etc/ssh/known, host_key_checking: off, server_alive_count_max: 7, connect_timeout: 30 }
              b: { connection: local }
            """
        let inventory = try loader().load(text: text, file: "inv.yml")
        let a = try #require(inventory.host(named: "a"))
        #expect(a.password == "deploy_pw")
        #expect(a.connectTimeout == 30)
        #expect(a.serverAliveInterval == 0)
        #expect(a.serverAliveCountMax == 7)
        #expect(a.knownHosts == "/etc/ssh/known")
        #expect(a.hostKeyChecking == .off)
        let b = try #require(inventory.host(named: "b"))
        #expect(b.connection == .local)
        #expect(b.connectTimeout == 2.5)
    }

    @Test func loadsFromAFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("inv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("hosts.yml").path
        try "hosts:\n  h: { identity_file: k }\n".write(toFile: path, atomically: true, encoding: .utf8)
        let inventory = try loader().load(path: path)
        #expect(inventory.hosts.first?.identityFiles == [dir.appendingPathComponent("k").standardizedFileURL.path])

        let missing = dir.appendingPathComponent("nope.yml").path
        let error = #expect(throws: DiagnosticError.self) { try loader().load(path: missing) }
        #expect(error?.diagnostics.first?.location?.file == missing)
    }
}

@Suite struct InventoryDiagnosticTests {
    @Test func yamlSyntaxError() throws {
        let found = diagnostics("""
            hosts:
              app1: { address: 10.0.0.1
              app2: {}
            """)
        let d = try #require(found.first)
        #expect(found.count == 1)
        #expect(d.location?.file == "inventory/hosts.yml")
        #expect(d.location?.line == 3)
        #expect(d.summary.hasPrefix("invalid YAML"))
    }

    @Test func tabIndentationError() throws {
        let d = try #require(diagnostics("hosts:\n\tapp1: {}\n").first)
        #expect(d.location?.line == 2)
        #expect(d.hint == "indent with spaces, not tabs")
    }

    @Test func duplicateKey() throws {
        let d = try #require(diagnostics("hosts:\n  a: {}\n  a: {}\n").first)
        #expect(d.summary.contains("duplicate key \"a\""))
        #expect(d.location?.line == 2)
    }

    @Test func unknownKeysWithDidYouMean() throws {
        let found = diagnostics("""
            defaults: { usr: deploy }
            hosts:
              app1: { adress: 10.0.0.1 }
            host_vars: {}
            """)
        #expect(found.count == 3)
        #expect(found.map(\.field) == ["defaults.usr", "hosts.app1.adress", "host_vars"])
        #expect(found.map { $0.location?.line } == [1, 3, 4])
        #expect(found.map { $0.location?.column } == [13, 11, 1])
        #expect(found[0].hint == "did you mean \"user\"?")
        #expect(found[1].hint == "did you mean \"address\"?")
        #expect(found[2].hint == "allowed keys here: defaults, vars, groups, hosts")
        #expect(found[1].rendered == """
            inventory/hosts.yml:3:11: error: hosts.app1.adress: unknown key "adress"
              hint: did you mean "address"?
            """)
    }

    @Test func wrongTypeForPort() throws {
        let found = diagnostics("""
            hosts:
              app1: { address: 10.0.0.1 }
              app2:
                address: 10.0.0.2
                port: abc
              app3: { port: 70000 }
            """)
        #expect(found.count == 2)
        #expect(found[0].field == "hosts.app2.port")
        #expect(found[0].location?.line == 5)
        #expect(found[0].location?.column == 11)
        #expect(found[0].summary == "expected an integer, got \"abc\"")
        #expect(found[0].rendered.hasPrefix(
            "inventory/hosts.yml:5:11: error: hosts.app2.port: expected an integer, got \"abc\""))
        #expect(found[1].field == "hosts.app3.port")
        #expect(found[1].location?.line == 6)
        #expect(found[1].summary == "expected an integer from 1 to 65535, got 70000")
    }

    @Test func badHostKeyChecking() throws {
        let found = diagnostics("""
            defaults:
              host_key_checking: accept_new
            hosts:
              a: { host_key_checking: false }
            """)
        #expect(found.count == 2)
        #expect(found[0].field == "defaults.host_key_checking")
        #expect(found[0].location?.line == 2)
        #expect(found[0].summary == "expected one of strict, accept-new, off, got \"accept_new\"")
        #expect(found[0].hint == "did you mean \"accept-new\"?")
        #expect(found[1].field == "hosts.a.host_key_checking")
        #expect(found[1].location?.line == 4)
    }

    @Test func unknownProxyJumpHost() throws {
        let found = diagnostics("""
            hosts:
              bastion: { address: 198.51.100.7 }
              db1:
                address: 10.0.0.5
                proxy_jump: bastoin
            """)
        #expect(found.count == 1)
        let d = try #require(found.first)
        #expect(d.field == "hosts.db1.proxy_jump")
        #expect(d.location?.line == 5)
        #expect(d.location?.column == 17)
        #expect(d.summary == "unknown proxy_jump host \"bastoin\"")
        #expect(d.hint == "did you mean \"bastion\"?")
    }

    @Test func proxyJumpInListNamesTheItem() throws {
        let found = diagnostics("""
            hosts:
              db1: { proxy_jump: [gw.example.com, nowhere] }
            """)
        #expect(found.map(\.field) == ["hosts.db1.proxy_jump[1]"])
    }

    @Test func proxyJumpCycle() throws {
        let found = diagnostics("""
            hosts:
              db1: { proxy_jump: bastion }
              bastion: { proxy_jump: outer }
              outer: { proxy_jump: db1 }
              solo: { proxy_jump: solo }
            """)
        #expect(found.count == 2)
        #expect(found[0].summary == "proxy_jump cycle: db1 -> bastion -> outer -> db1")
        #expect(found[0].field == "hosts.outer.proxy_jump")
        #expect(found[0].location?.line == 4)
        #expect(found[1].summary == "proxy_jump cycle: solo -> solo")
        #expect(found[1].location?.line == 5)
    }

    @Test func sshConfigProxyJumpLoopIsReportedAtTheHost() throws {
        let found = diagnostics("""
            hosts:
              bastion: { address: 198.51.100.7 }
              db1: {}
            """, sshConfig: "Host *\n  ProxyJump bastion\n")
        #expect(found.count == 1)
        #expect(found.first?.summary == "proxy_jump cycle: bastion -> bastion")
        #expect(found.first?.field == "hosts.bastion.proxy_jump")
        #expect(found.first?.location?.line == 2)
        #expect(found.first?.hint?.contains("Host !bastion *") == true)
        let fixed = try loader(sshConfig: "Host !bastion *\n  ProxyJump bastion\n")
            .load(text: "hosts:\n  bastion: {}\n  db1: {}\n", file: "inv.yml")
        #expect(fixed.host(named: "db1")?.proxyJump.map(\.name) == ["bastion"])
        #expect(fixed.host(named: "bastion")?.proxyJump.isEmpty == true)
    }

    @Test func severalErrorsAreAllReported() throws {
        let found = diagnostics("""
            defaults:
              port: twenty-two
              connection: telnet
            vars: [not, a, map]
            groups:
              web: { hosts: [app1, "bad name"], var: {} }
            hosts:
              app1: { password_secret: "db-pw!", connect_timeout: soon, proxy_jump: "a@:22" }
              all: {}
            """)
        // Reported in file order.
        #expect(found.map(\.field) == [
            "defaults.port", "defaults.connection", "vars", "groups.web.hosts[1]", "groups.web.var",
            "hosts.app1.password_secret", "hosts.app1.connect_timeout", "hosts.app1.proxy_jump",
            "hosts.all",
        ])
        #expect(found.map { $0.location?.line ?? 0 } == [2, 3, 4, 6, 6, 8, 8, 8, 9])
        #expect(found.allSatisfy { $0.severity == .error })
        #expect(found.allSatisfy { $0.location?.file == "inventory/hosts.yml" })
    }

    @Test func topLevelMustBeAMapping() throws {
        let d = try #require(diagnostics("- app1\n- app2\n").first)
        #expect(d.location?.line == 1)
        #expect(d.summary.hasPrefix("expected a mapping with defaults"))
    }
}

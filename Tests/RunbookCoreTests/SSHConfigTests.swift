import RunbookCore
import Testing

@Suite struct SSHConfigTests {
    @Test func firstObtainedValueWins() {
        let config = SSHConfig.parse("""
            Host app1
              User alice
              Port 2200
            Host app*
              User bob
              Port 2300
              ConnectTimeout 7
            Host *
              User carol
              ServerAliveInterval 30
              ServerAliveCountMax 5
            """)
        let app1 = config.resolve(host: "app1")
        #expect(app1.user == "alice")
        #expect(app1.port == 2200)
        #expect(app1.connectTimeout == 7)
        #expect(app1.serverAliveInterval == 30)
        #expect(app1.serverAliveCountMax == 5)
        let app2 = config.resolve(host: "app2")
        #expect(app2.user == "bob")
        #expect(app2.port == 2300)
        let db = config.resolve(host: "db1")
        #expect(db.user == "carol")
        #expect(db.port == nil)
    }

    @Test func globalOptionsBeforeTheFirstHostApplyToAll() {
        let config = SSHConfig.parse("""
            User early
            Host x
              User late
            """)
        #expect(config.resolve(host: "x").user == "early")
    }

    @Test func negationExcludesAndWildcardsMatch() {
        let config = SSHConfig.parse("""
            Host !bastion *.internal db?
              ProxyJump bastion
            Host bastion
              HostName 198.51.100.7
            """)
        #expect(config.resolve(host: "api.internal").proxyJump == "bastion")
        #expect(config.resolve(host: "db1").proxyJump == "bastion")
        #expect(config.resolve(host: "db12").proxyJump == nil)
        #expect(config.resolve(host: "bastion").proxyJump == nil)
        #expect(config.resolve(host: "bastion").hostName == "198.51.100.7")
        #expect(config.resolve(host: "DB1").proxyJump == "bastion")  // matched case-insensitively
    }

    @Test func onlyNegatedPatternsNeverMatch() {
        let config = SSHConfig.parse("Host !foo\n  User x\n")
        #expect(config.resolve(host: "bar").user == nil)
    }

    @Test func matchBlocksAreSkipped() {
        let config = SSHConfig.parse("""
            Match host app1 exec "true"
              User matched
              IdentityFile ~/.ssh/match_key
            Host app1
              User hosted
            Match all
              Port 9999
            Host *
              Port 2222
            """)
        let entry = config.resolve(host: "app1")
        #expect(entry.user == "hosted")
        #expect(entry.port == 2222)
        #expect(entry.identityFiles.isEmpty)
    }

    @Test func identityFilesAccumulate() {
        let config = SSHConfig.parse("""
            Host app1
              IdentityFile ~/.ssh/app1_key
            Host *
              IdentityFile ~/.ssh/id_ed25519
              IdentityFile "/keys/with space/%h_key"
            """)
        #expect(config.resolve(host: "app1").identityFiles == [
            "~/.ssh/app1_key", "~/.ssh/id_ed25519", "/keys/with space/app1_key",
        ])
    }

    @Test func equalsSyntaxQuotesCommentsAndCase() {
        let config = SSHConfig.parse("""
            # a comment
            HOST=web
              hostname=%h.example.com
              USER = "deploy user"
              port =2201   # trailing comment
              connecttimeout= 4
            \tServerAliveInterval\t9
            """)
        let entry = config.resolve(host: "web")
        #expect(entry.hostName == "web.example.com")
        #expect(entry.user == "deploy user")
        #expect(entry.port == 2201)
        #expect(entry.connectTimeout == 4)
        #expect(entry.serverAliveInterval == 9)
    }

    @Test func proxyJumpNoneCountsAsTheFirstValue() {
        let config = SSHConfig.parse("""
            Host bastion
              ProxyJump none
            Host *
              ProxyJump jump.example.com
            """)
        #expect(config.resolve(host: "bastion").proxyJump == nil)
        #expect(config.resolve(host: "other").proxyJump == "jump.example.com")
    }

    @Test func unknownKeywordsAndBadValuesAreIgnored() {
        let config = SSHConfig.parse("""
            Host a
              ForwardAgent yes
              Include other.conf
              Port notanumber
              Port 2022
            """)
        #expect(config.resolve(host: "a").port == 2022)
        #expect(config.resolve(host: "a") == SSHConfigEntry(port: 2022))
    }
}

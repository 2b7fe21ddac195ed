import Foundation
import RunbookCore
import Testing

/// Runs `/bin/sh -c SCRIPT` and returns its standard output.
private func sh(_ script: String, environment: [String: String] = [:]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { _, new in new }
    process.environment = env
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

@Suite struct ShellQuoteTests {
    @Test func safeWordsStayBare() {
        #expect(Shell.quote("abc") == "abc")
        #expect(Shell.quote("/srv/app/docker-compose.prod.yml") == "/srv/app/docker-compose.prod.yml")
        #expect(Shell.quote("user@host:22") == "user@host:22")
        #expect(Shell.quote("a=b,c+d%e_f-g") == "a=b,c+d%e_f-g")
    }

    @Test func unsafeWordsAreSingleQuoted() {
        #expect(Shell.quote("") == "''")
        #expect(Shell.quote("a b") == "'a b'")
        #expect(Shell.quote("it's") == "'it'\\''s'")
        #expect(Shell.quote("~") == "'~'")
        #expect(Shell.quote("$HOME") == "'$HOME'")
        #expect(Shell.quote("*") == "'*'")
    }

    static let nasty: [String] = [
        "", " ", "'", "''", "\"", "a'b\"c", "line1\nline2", "\n", "$(rm -rf /tmp/nope)", "`id`",
        "${HOME}", "a\\b", "\\", "tab\there", "héllo wörld ✓", "日本語", "-n", "--", "!", "a;b|c&d",
        "<>", "#comment", "*?[a]", "~root", "%s", "a\r\nb", "'; echo pwned; '",
    ]

    @Test(arguments: nasty)
    func roundTripsThroughTheShell(_ word: String) throws {
        let output = try sh("printf %s \(Shell.quote(word))")
        #expect(output == word)
    }

    @Test func joinQuotesEachWord() throws {
        let words = ["printf", "%s|", "a b", "it's", ""]
        #expect(try sh(Shell.join(words)) == "a b|it's||")
    }

    @Test func secretVariableNames() {
        #expect(Shell.secretVariable("db_password") == "RUNBOOK_SECRET_DB_PASSWORD")
        #expect(Shell.secretVariable("api-key.v2") == "RUNBOOK_SECRET_API_KEY_V2")
    }
}

@Suite struct ShellCommandTests {
    let password = Secret(name: "db_password", value: "s3cr3t 'pa$$' `x`")

    @Test func interpolationQuotesValues() {
        let tmp = "/srv/app/.tmp file"
        let dest = "/srv/app/it's.yml"
        let command: ShellCommand = "mv -f -- \(tmp) \(dest)"
        #expect(command.commandLine == "mv -f -- '/srv/app/.tmp file' '/srv/app/it'\\''s.yml'")
        #expect(command.environment.isEmpty)
        #expect(command.display == command.commandLine)
    }

    @Test func initialiserWithInterpolationQuotesToo() {
        let path = "a b"
        #expect(ShellCommand("rm -- \(path)").commandLine == "rm -- 'a b'")
        let literal = "echo hi | tr a-z A-Z"
        #expect(ShellCommand(literal).commandLine == literal)
    }

    @Test func argvQuotesEveryWord() {
        #expect(ShellCommand(argv: ["echo", "a b", "$x"]).commandLine == "echo 'a b' '$x'")
    }

    @Test func secretsAreReferencedNeverInlined() {
        let command: ShellCommand = "PGPASSWORD=\(password) pg_dump -d \("app db")"
        #expect(command.commandLine == "PGPASSWORD=\"${RUNBOOK_SECRET_DB_PASSWORD}\" pg_dump -d 'app db'")
        #expect(command.environment == ["RUNBOOK_SECRET_DB_PASSWORD": password.value])
        #expect(command.display == "PGPASSWORD=******** pg_dump -d 'app db'")
        for text in [command.commandLine, command.display, command.description, command.debugDescription,
                     String(describing: command), String(reflecting: command), "\(command.parts)"] {
            #expect(!text.contains(password.value))
            #expect(!text.contains("s3cr3t"))
        }
        var dumped = ""
        dump(command, to: &dumped)
        #expect(!dumped.contains("s3cr3t"))
        #expect(!"\(password)".contains("s3cr3t"))
        #expect(!String(reflecting: password).contains("s3cr3t"))
    }

    @Test func secretReachesTheCommandThroughTheEnvironment() throws {
        let command: ShellCommand = "printf %s \(password)"
        #expect(try sh(command.commandLine, environment: command.environment) == password.value)
    }

    @Test func composition() {
        let a: ShellCommand = "cd \("/srv/my app")"
        let b = ShellCommand(argv: ["ls", "-l"])
        #expect(ShellCommand.joined([a, b], separator: " && ").commandLine == "cd '/srv/my app' && ls -l")
        let c: ShellCommand = "sudo -n sh -c \(b.commandLine) \(words: ["x y", "z"]) \(3)"
        #expect(c.commandLine == "sudo -n sh -c 'ls -l' 'x y' z 3")
        let d: ShellCommand = "( \(a) ) 2>&1"
        #expect(d.commandLine == "( cd '/srv/my app' ) 2>&1")
    }
}

@Suite struct SecretMaskerTests {
    @Test func masksEveryOccurrenceLongestFirst() {
        let masker = SecretMasker(secrets: ["abc", "abcdef", ""])
        #expect(masker.mask("x abcdef y abc z abcabc") == "x ******** y ******** z ****************")
    }

    @Test func emptySecretsAreIgnored() {
        let masker = SecretMasker(secrets: ["", ""])
        #expect(masker.isEmpty)
        #expect(masker.mask("hello") == "hello")
    }

    @Test func masksBytesAndUnicode() {
        let masker = SecretMasker(secrets: ["pässwörd"])
        let bytes = Array("login pässwörd ok\n".utf8) + [0xFF]
        let masked = masker.mask(bytes)
        #expect(masked == Array("login ******** ok\n".utf8) + [0xFF])
        #expect(masker.mask("pässwördpässwörd") == "****************")
    }

    @Test func secretsAreMaskedInTheFormsTheyTravelIn() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"
        let masker = SecretMasker(secrets: [pem, "tok-123\n", "pa ss * word"])
        // A diff prefixes every line of a multi-line value.
        let diff = "+key: |\n+  MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n+  BKcwggSjAgEAAoIBAQC7\n"
        #expect(!masker.mask(diff).contains("MIIE") && !masker.mask(diff).contains("BKcw"), "\(masker.mask(diff))")
        // A trailing newline in the stored value, none where it is used.
        #expect(masker.mask("token=tok-123;") == "token=********;")
        // Pieces a shell split, and a filter's upper-casing.
        #expect(masker.mask("pieces: pa, ss, word") == "pieces: pa, ss, ********")
        #expect(masker.mask("TOK-123") == "********")
        // Short pieces of an ordinary word are left alone.
        #expect(masker.mask("a pass") == "a pass")
    }

    /// A rotated secret: the removed line held the old value, which no masker knows. It is
    /// masked because the added line of the same shape holds the new one.
    @Test func oldValueOfARotatedSecretIsMaskedInADiff() {
        let masker = SecretMasker(secrets: ["n3w-pass"])
        let diff = """
            --- a/srv/app/.env
            +++ b/srv/app/.env
            @@ -1,3 +1,3 @@
             # app settings
            -DATABASE_URL=postgresql://app:0ld-pass@db:5432/app
            +DATABASE_URL=postgresql://app:n3w-pass@db:5432/app
             WORKERS=4
            @@ -9,2 +9,2 @@
            -WORKERS_MAX=8
            +WORKERS_MAX=9
            """
        let masked = masker.maskDiff(diff)
        #expect(!masked.contains("0ld-pass") && !masked.contains("n3w-pass"), "\(masked)")
        #expect(masked.contains("-DATABASE_URL=postgresql://app:********@db:5432/app\n"), "\(masked)")
        // Lines of another shape, and hunks without a secret, are shown as they are.
        #expect(masked.contains(" # app settings\n") && masked.contains("-WORKERS_MAX=8\n+WORKERS_MAX=9"), "\(masked)")
        // A line that is all secret (a key file) masks every removed line of its hunk.
        let key = SecretMasker(secrets: ["NEWKEYMATERIAL"]).maskDiff("@@ -1,2 +1,2 @@\n BEGIN\n-OLDKEYMATERIAL\n+NEWKEYMATERIAL\n")
        #expect(key == "@@ -1,2 +1,2 @@\n BEGIN\n-********\n+********\n", "\(key)")
    }

    @Test func singleCharacterSecretsAreMasked() {
        #expect(SecretMasker(secrets: ["x"]).mask("axbx") == "a********b********")
    }
}

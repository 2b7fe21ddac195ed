import Foundation
import RunbookCore
import Testing

@testable import RunbookEngine

/// A value in a command is data: `{{ }}` renders quoted for the place the author's text puts it,
/// and a real `sh` given the rendered command sees the value, byte for byte, as one argument.
@Suite struct ShellQuotingTests {
    static let hostile = [
        "$(touch /tmp/rb-pwned)", "`touch /tmp/rb-pwned`", "a; touch /tmp/rb-pwned", "a\ntouch /tmp/rb-pwned",
        "a && b || c", "x' ; touch /tmp/rb-pwned; echo '", "x\" ; touch /tmp/rb-pwned; echo \"", "$HOME", "*", "a b  c",
        "-rf", "", "back\\slash", "tab\there", "ünï©ødé", "'", "\"", "$(", "${IFS}", "\\",
    ]

    let engine = TemplateEngine(templatesDirectory: "/nonexistent")
    let here = SourceLocation(file: "runbooks/t.yml", line: 1, column: 1)

    func command(_ text: String, x: String) throws -> String {
        let context = TemplateContext(params: ["x": .string(x)], secrets: try SecretStore(file: "/nonexistent/secrets.env"))
        return try engine.render(string: text, at: here, context: context, secrets: .references).text
    }

    /// What `sh -c COMMAND` prints with `printf '[%s]\n'` around the value's words.
    func shell(_ command: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test(arguments: hostile) func valueIsOneWordOutsideQuotes(_ value: String) throws {
        let rendered = try command("printf '[%s]\\n' {{ params.x }}", x: value)
        #expect(try shell(rendered) == "[\(value)]\n", "\(rendered)")
    }

    @Test(arguments: hostile) func valueIsDataInsideSingleQuotes(_ value: String) throws {
        let rendered = try command("printf '[%s]\\n' 'pre {{ params.x }} post'", x: value)
        #expect(try shell(rendered) == "[pre \(value) post]\n", "\(rendered)")
    }

    @Test(arguments: hostile) func valueIsDataInsideDoubleQuotes(_ value: String) throws {
        let rendered = try command("printf '[%s]\\n' \"pre {{ params.x }} post\"", x: value)
        #expect(try shell(rendered) == "[pre \(value) post]\n", "\(rendered)")
    }

    @Test func rawPastesCodeAndQuoteStaysOneWord() throws {
        #expect(try command("echo {{ params.x|raw }}", x: "a; echo b") == "echo a; echo b")
        #expect(try command("echo {{ params.x|quote }}", x: "a b") == "echo 'a b'")
        #expect(try command("echo {{ params.x|upper }}", x: "a b") == "echo 'A B'")
        // An escaped quote in the author's text does not open a quoted section.
        #expect(try command("echo \\' {{ params.x }}", x: "a b") == "echo \\' 'a b'")
        // Files (secrets as values) are not shell: nothing is quoted.
        let context = TemplateContext(params: ["x": .string("a b")], secrets: try SecretStore(file: "/nonexistent/secrets.env"))
        #expect(try engine.render(string: "x = {{ params.x }}", at: here, context: context, secrets: .values).text == "x = a b")
    }

    @Test func sqlFilters() throws {
        #expect(try command("psql -c \"DROP INDEX {{ params.x|sql_ident }}\"", x: "idx\"; DROP TABLE t; --")
                == "psql -c \"DROP INDEX \\\"idx\\\"\\\"; DROP TABLE t; --\\\"\"")
        let rendered = try command("printf '%s\\n' {{ params.x|sql_literal }}", x: "it's")
        #expect(try shell(rendered) == "'it''s'\n")
    }

    @Test func validateListsRaw() throws {
        let runbook = try RunbookLoader(root: "/nonexistent").load(text: """
            hosts: all
            params: { flags: { type: string, default: "-v" } }
            steps:
              - command: { run: "ls {{ params.flags|raw }} {{ params.flags }}" }
            """, file: "runbooks/t.yml", name: "t")
        let warnings = Engine.rawWarnings(runbook)
        #expect(warnings.count == 1)
        #expect(warnings.first?.severity == .warning)
        #expect(warnings.first?.field == "steps[0].command.run")
        #expect(warnings.first?.location?.line == 4)
    }
}

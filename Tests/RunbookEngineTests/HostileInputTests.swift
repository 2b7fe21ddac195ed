import Foundation
import RunbookCore
import Testing
import TestSupport

@testable import RunbookEngine
@testable import RunbookSteps

/// Hostile and careless input is refused with a diagnostic (exit 2 at the CLI), quickly and
/// without exhausting the stack or memory, before any host is contacted.
@Suite struct HostileInputTests {
    let templates = TemplateEngine(templatesDirectory: "/nonexistent")

    func load(_ text: String) throws(DiagnosticError) -> Runbook {
        try RunbookLoader(root: "/nonexistent").load(text: text, file: "runbooks/t.yml", name: "t")
    }

    /// Loads, then runs the template checks `plan` and `validate` run; the diagnostics' text.
    func problems(_ text: String) -> String? {
        do {
            let runbook = try load(text)
            try Engine.checkTemplates(runbook, templates: templates)
            return nil
        } catch {
            return error.diagnostics.map(\.rendered).joined(separator: "\n")
        }
    }

    @Test func deepExpressionsAreRefused() {
        let nots = String(repeating: "not ", count: 10_000) + "true"
        let when = problems("hosts: all\nsteps:\n  - command: echo\n    when: \"\(nots)\"\n")
        #expect(when?.contains("at most") == true, "\(when ?? "accepted")")
        let ands = (0..<20_000).map { _ in "true" }.joined(separator: " and ")
        let assert = problems("hosts: all\nsteps:\n  - assert: \"\(ands)\"\n")
        #expect(assert?.contains("at most") == true)
        let ifs = String(repeating: "{% if true %}", count: 30_000) + String(repeating: "{% endif %}", count: 30_000)
        let nested = problems("hosts: all\nsteps:\n  - command: \"echo \(ifs)\"\n")
        #expect(nested?.contains("nest more than") == true, "\(nested ?? "accepted")")
    }

    /// A template cannot make Stencil build a huge range, loop without end, or render
    /// without bound: each is an error naming the template's line, and nothing is allocated first.
    @Test func runawayTemplatesAreRefused() throws {
        let here = SourceLocation(file: "templates/t.j2", line: 1, column: 1)
        let context = TemplateContext(params: ["big": .string(String(repeating: "x", count: 200_000))],
                                      secrets: try SecretStore(environment: [:], file: nil))
        func problem(_ text: String) -> String? {
            do {
                _ = try templates.render(string: text, at: here, context: context, secrets: .values)
                return nil
            } catch {
                return error.diagnostics.map(\.rendered).joined(separator: "\n")
            }
        }
        let range = problem("a\n{% for i in 1...1000000000 %}x{% endfor %}")
        #expect(range?.contains("templates/t.j2:2:") == true && range?.contains("ranges are not supported") == true, "\(range ?? "accepted")")
        let nested = problem("{% for i in 100000|range %}{% for j in 100000|range %}x{% endfor %}{% endfor %}")
        #expect(nested?.contains("loops more than 200000 times") == true, "\(nested ?? "accepted")")
        let huge = problem("{% for i in 200|range %}{{ params.big }}{% endfor %}")
        #expect(huge?.contains("MiB, more than 32 MiB") == true, "\(huge ?? "accepted")")
        // Within the bounds, loops work as before.
        #expect(problem("{% for i in 3|range %}{{ i }}{% endfor %}") == nil)
    }

    /// A file that is not UTF-8 is refused naming the line and column of the first bad byte.
    @Test func nonUTF8NamesItsLine() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rb-latin1-\(UUID().uuidString).yml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(Array("hosts: all\nsteps:\n  - command: \"echo caf".utf8) + [0xE9] + Array("\"\n".utf8)).write(to: URL(fileURLWithPath: path))
        do {
            _ = try YAMLDocument.load(path: path, file: "runbooks/t.yml")
            Issue.record("no error")
        } catch {
            let text = error.diagnostics.map(\.rendered).joined(separator: "\n")
            #expect(text.contains("runbooks/t.yml:3:23: error: cannot read runbooks/t.yml: not valid UTF-8 text (byte 0xe9 at line 3, column 23)"), "\(text)")
        }
    }

    @Test func aliasBombIsRefused() {
        var yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 {
            let refs = Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ", ")
            yaml += "a\(level): &a\(level) [\(refs)]\n"
        }
        yaml += "hosts: all\nsteps: []\n"
        #expect(throws: DiagnosticError.self) { _ = try YAMLDocument.parse(text: yaml, file: "runbooks/t.yml") }
        do { _ = try YAMLDocument.parse(text: yaml, file: "runbooks/t.yml") } catch {
            #expect(error.diagnostics.map(\.rendered).joined(separator: "\n").contains("more than 100000 nodes"))
        }
    }

    @Test func deepNestingIsRefused() {
        let yaml = "hosts: all\nsteps: " + String(repeating: "[", count: 500) + String(repeating: "]", count: 500) + "\n"
        #expect(throws: DiagnosticError.self) { _ = try YAMLDocument.parse(text: yaml, file: "runbooks/t.yml") }
    }

    @Test(arguments: ["1e300", "99999999999999999999", "-5", "31d", "1e12s"]) func hugeDurationsAreRefused(_ value: String) {
        let problem = problems("hosts: all\nsteps:\n  - command: echo\n    timeout: \(value)\n")
        #expect(problem?.contains("steps[0].timeout") == true, "\(problem ?? "accepted")")
    }

    @Test func zeroTimeoutIsRefused() {
        let problem = problems("hosts: all\nsteps:\n  - command: echo\n    timeout: 0s\n")
        #expect(problem?.contains("timeout: 0s") == true, "\(problem ?? "accepted")")
    }

    @Test func sleepOfAYearIsRefused() {
        #expect(problems("hosts: all\nsteps:\n  - sleep: 366d\n") != nil)
    }

    /// `pg_index` names from params are data: a table or column name carrying SQL is quoted as
    /// one identifier in the command (and as a literal in the plan's query), and a `where`
    /// that could end the statement is refused, naming the field, before anything runs.
    @Test func pgIndexNamesAreIdentifiersAndWhereCannotEndTheStatement() async throws {
        let project = try ScriptedProject()
        project.host.reply(to: "pg_attribute", stdout: "r|7075626c6963||absent|||\n")
        try project.write("runbooks/t.yml", """
            hosts: web
            params:
              table: { type: string, default: "product; DROP TABLE x" }
              column: { type: string, default: "id; DROP TABLE y; --" }
              where: { type: string, default: "true" }
            steps:
              - name: index
                pg_index: { database: app, name: "idx; DROP TABLE z", table: "{{ params.table }}", columns: "{{ params.column }}",
                            where: "{{ params.where }}" }
            """)
        let (engine, log) = project.engine()
        _ = try await engine.plan(RunRequest(runbook: "t"), saveTo: nil)
        let change = try #require(log.plan?.changes.first)
        #expect(change.action == .create)
        let command = change.commands.first ?? ""
        #expect(command.contains(#"CREATE INDEX CONCURRENTLY "idx; DROP TABLE z" ON "product; DROP TABLE x" ("id; DROP TABLE y; --") WHERE ("#),
                "\(command)")
        #expect(change.commands.last?.contains(#"DROP INDEX CONCURRENTLY IF EXISTS "public"."idx; DROP TABLE z";"#) == true)
        // The facts query names them as string literals.
        let query = project.host.ranLines.first { $0.contains("pg_attribute") } ?? ""
        #expect(query.contains(#"to_regclass('"product; DROP TABLE x"')"#), "\(query)")
        #expect(query.contains("ARRAY['id; DROP TABLE y; --']::text[]"), "\(query)")

        for hostile in ["true; DROP TABLE x", "true \\! rm -rf /"] {
            let (again, _) = project.engine()
            let ran = project.host.ran.count
            await #expect {
                _ = try await again.plan(RunRequest(runbook: "t", params: ["where": hostile]), saveTo: nil)
            } throws: { error in
                "\(error)".contains("where: ") && ("\(error)".contains("';'") || "\(error)".contains("backslash"))
            }
            // Refused before the host was asked anything.
            #expect(!project.host.ranLines.dropFirst(ran).contains { $0.contains("psql") })
        }
    }
}

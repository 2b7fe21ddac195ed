import Testing

@testable import RunbookSteps

/// `env_set`'s edit over dotenv files as operators write them; each case asserts the exact bytes.
@Suite struct EnvSetTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var before: String
        var set: [(String, String?)]
        var after: String
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "one value, the rest untouched",
             before: "# production\nDATABASE_URL=postgres://db/app\n\nWEB_CONCURRENCY=4  # gunicorn workers\nSECRET_KEY='s3cr3t'\n",
             set: [("WEB_CONCURRENCY", "8")],
             after: "# production\nDATABASE_URL=postgres://db/app\n\nWEB_CONCURRENCY=8  # gunicorn workers\nSECRET_KEY='s3cr3t'\n"),
        Case(name: "CRLF kept", before: "A=1\r\nB=2\r\n", set: [("B", "3"), ("C", "4")], after: "A=1\r\nB=3\r\nC=4\r\n"),
        Case(name: "export and spaces kept", before: "export  PORT = 5000\n", set: [("PORT", "8000")], after: "export  PORT = 8000\n"),
        Case(name: "double quotes kept and escaped", before: "MOTD=\"hi\" # shown\n", set: [("MOTD", "say \"hi\" $USER")],
             after: "MOTD=\"say \\\"hi\\\" \\$USER\" # shown\n"),
        Case(name: "single quotes kept", before: "NAME='a b'\n", set: [("NAME", "c d")], after: "NAME='c d'\n"),
        Case(name: "a value that needs quotes gets them", before: "", set: [("GREETING", "hello world")],
             after: "GREETING=\"hello world\"\n"),
        Case(name: "appended at the end", before: "A=1\n", set: [("DATABASE_URL", "postgres://u@db:5432/app")],
             after: "A=1\nDATABASE_URL=postgres://u@db:5432/app\n"),
        Case(name: "null removes every line", before: "A=1\nDEBUG=1\nB=2\nDEBUG=0\n", set: [("DEBUG", nil)], after: "A=1\nB=2\n"),
        Case(name: "commented-out line left alone", before: "# WEB_CONCURRENCY=2\nWEB_CONCURRENCY=4\n", set: [("WEB_CONCURRENCY", "6")],
             after: "# WEB_CONCURRENCY=2\nWEB_CONCURRENCY=6\n"),
        Case(name: "no final newline stays so", before: "A=1\nB=2", set: [("A", "5")], after: "A=5\nB=2"),
        Case(name: "multi-line value escaped", before: "", set: [("KEY", "line1\nline2")], after: "KEY=\"line1\\nline2\"\n"),
        Case(name: "removing the only line empties the file", before: "A=1\n", set: [("A", nil)], after: ""),
    ]

    @Test(arguments: cases) func edits(_ testCase: Case) {
        let out = EnvSetStep.edit(Array(testCase.before.utf8), set: testCase.set.map { (key: $0.0, value: $0.1) })
        #expect(String(decoding: out, as: UTF8.self) == testCase.after)
    }

    @Test func keys() {
        #expect(EnvSetStep.isKey("WEB_CONCURRENCY"))
        #expect(EnvSetStep.isKey("_x.y"))
        #expect(!EnvSetStep.isKey("1A"))
        #expect(!EnvSetStep.isKey("A B"))
        #expect(!EnvSetStep.isKey("A;rm"))
    }
}

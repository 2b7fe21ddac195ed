import RunbookCore
import Testing

@testable import RunbookSteps

/// `yaml_set` over compose files as operators write them; each case asserts the exact bytes
/// of the result (everything outside the edited node unchanged).
@Suite struct YamlSetTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var before: String
        var path: String
        var operation: YAMLEdit.Operation
        var create = false
        var after: String
        var description: String { name }
    }

    static func workers(_ value: String?, aliases: [String] = ["-w"], after: String? = nil) -> YAMLEdit.Operation {
        .flag(YAMLEdit.Flag(name: "--workers", aliases: aliases, value: value, after: after))
    }

    /// A compose file of the shape operators write: comments, an `x-` anchor merged into two
    /// services, build sections, list-form and string-form commands, quoted ports.
    static let operatorCompose = """
        # Production stack — edit with care
        version: "3.8"

        x-app: &app
          build:
            context: .
            dockerfile: Dockerfile.prod
          env_file: .env.prod   # secrets live here
          restart: unless-stopped

        services:
          web:
            <<: *app
            command: gunicorn app.wsgi:application --bind 0.0.0.0:8000 --workers 4 --timeout 30  # tuned 2026-03
            ports:
              - "127.0.0.1:8000:8000"

          worker:
            <<: *app
            command: ["celery", "-A", "app", "worker", "--concurrency", "2"]

          db:
            image: postgres:15
            volumes:
              - pgdata:/var/lib/postgresql/data

        volumes:
          pgdata: {}

        """

    static func replacing(_ text: String, _ old: String, _ new: String) -> String {
        precondition(text.contains(old), "fixture lacks \(old)")
        return text.replacingOccurrences(of: old, with: new)
    }

    static let cases: [Case] = [
        Case(name: "string command, --workers N: one word changes, the comment stays",
             before: operatorCompose, path: "services.web.command", operation: workers("8"),
             after: replacing(operatorCompose, "--workers 4 --timeout", "--workers 8 --timeout")),
        Case(name: "list command in flow style: the item keeps its quotes",
             before: operatorCompose, path: "services.worker.command",
             operation: .flag(YAMLEdit.Flag(name: "--concurrency", aliases: ["-c"], value: "6")),
             after: replacing(operatorCompose, "\"--concurrency\", \"2\"]", "\"--concurrency\", \"6\"]")),
        Case(name: "--workers=N", before: "services:\n  web:\n    command: gunicorn --workers=4 app:app\n",
             path: "services.web.command", operation: workers("8"),
             after: "services:\n  web:\n    command: gunicorn --workers=8 app:app\n"),
        Case(name: "-w N through an alias", before: "services:\n  web:\n    command: gunicorn -w 4 -b :80 app:app\n",
             path: "services.web.command", operation: workers("2"),
             after: "services:\n  web:\n    command: gunicorn -w 2 -b :80 app:app\n"),
        Case(name: "-wN glued", before: "services:\n  web:\n    command: gunicorn -w4 app:app\n",
             path: "services.web.command", operation: workers("6"),
             after: "services:\n  web:\n    command: gunicorn -w6 app:app\n"),
        Case(name: "absent flag: inserted after the program name",
             before: "services:\n  web:\n    command: gunicorn --bind 0.0.0.0:8000 app:app\n",
             path: "services.web.command", operation: workers("6"),
             after: "services:\n  web:\n    command: gunicorn --workers 6 --bind 0.0.0.0:8000 app:app\n"),
        Case(name: "absent flag after a named program (python -m gunicorn)",
             before: "services:\n  web:\n    command: python -m gunicorn app:app\n",
             path: "services.web.command", operation: workers("3", after: "gunicorn"),
             after: "services:\n  web:\n    command: python -m gunicorn --workers 3 app:app\n"),
        Case(name: "absent flag in a block list: new items with the same dash and quotes",
             before: "services:\n  web:\n    command:\n      - \"gunicorn\"\n      - \"app:app\"\n",
             path: "services.web.command", operation: workers("5"),
             after: "services:\n  web:\n    command:\n      - \"gunicorn\"\n      - \"--workers\"\n      - \"5\"\n      - \"app:app\"\n"),
        Case(name: "block list with a plain number value: the number is quoted (compose wants strings)",
             before: "command:\n  - gunicorn\n  - --workers\n  - 4\n",
             path: "command", operation: workers("8"),
             after: "command:\n  - gunicorn\n  - --workers\n  - \"8\"\n"),
        Case(name: "flow list, absent flag", before: "command: [gunicorn, app:app]\n",
             path: "command", operation: workers("2"),
             after: "command: [gunicorn, --workers, \"2\", app:app]\n"),
        Case(name: "null removes the option and its value", before: operatorCompose, path: "services.web.command", operation: workers(nil),
             after: replacing(operatorCompose, " --workers 4 --timeout", " --timeout")),
        Case(name: "null removes list items", before: "command: [\"gunicorn\", \"--workers\", \"4\", \"app:app\"]\n",
             path: "command", operation: workers(nil), after: "command: [\"gunicorn\", \"app:app\"]\n"),
        Case(name: "comment on the edited line kept", before: "web:\n  command: gunicorn --workers 4 app:app # 2 x cores\n",
             path: "web.command", operation: workers("8"), after: "web:\n  command: gunicorn --workers 8 app:app # 2 x cores\n"),
        Case(name: "CRLF file stays CRLF", before: "services:\r\n  web:\r\n    command: gunicorn --workers 4 app:app\r\n    ports: [\"80:80\"]\r\n",
             path: "services.web.command", operation: workers("8"),
             after: "services:\r\n  web:\r\n    command: gunicorn --workers 8 app:app\r\n    ports: [\"80:80\"]\r\n"),
        Case(name: "CRLF block list insertion uses CRLF", before: "command:\r\n  - gunicorn\r\n  - app:app\r\n",
             path: "command", operation: workers("3"), after: "command:\r\n  - gunicorn\r\n  - --workers\r\n  - \"3\"\r\n  - app:app\r\n"),
        Case(name: "single-quoted command keeps its quotes", before: "command: 'gunicorn --workers 4 app:app'\n",
             path: "command", operation: workers("7"), after: "command: 'gunicorn --workers 7 app:app'\n"),
        Case(name: "folded block command", before: "command: >\n  gunicorn app:app\n  --workers 4\n  --timeout 30\nports: []\n",
             path: "command", operation: workers("9"), after: "command: >\n  gunicorn app:app\n  --workers 9\n  --timeout 30\nports: []\n"),
        Case(name: "command inherited from an anchor: written on the service, the anchor untouched",
             before: "x-web: &web\n  image: app:1\n  command: gunicorn --workers 4 app:app\nservices:\n  web:\n    <<: *web\n    ports: [\"80:80\"]\n  web2:\n    <<: *web\n",
             path: "services.web.command", operation: workers("8"),
             after: "x-web: &web\n  image: app:1\n  command: gunicorn --workers 4 app:app\nservices:\n  web:\n    <<: *web\n    ports: [\"80:80\"]\n    command: gunicorn --workers 8 app:app\n  web2:\n    <<: *web\n"),
        Case(name: "value: a scalar in an environment mapping keeps its quotes",
             before: "services:\n  web:\n    environment:\n      WEB_CONCURRENCY: \"4\"   # per container\n      LOG_LEVEL: info\n",
             path: "services.web.environment.WEB_CONCURRENCY", operation: .set(.string("8")),
             after: "services:\n  web:\n    environment:\n      WEB_CONCURRENCY: \"8\"   # per container\n      LOG_LEVEL: info\n"),
        Case(name: "value: a list-form environment item by index", before: "environment:\n  - WEB_CONCURRENCY=4\n  - DEBUG=0\n",
             path: "environment.0", operation: .set(.string("WEB_CONCURRENCY=8")), after: "environment:\n  - WEB_CONCURRENCY=8\n  - DEBUG=0\n"),
        Case(name: "value: create a missing key at the end of its mapping, indented as the file is",
             before: "services:\n    web:\n        image: app:1\n\n    db:\n        image: postgres:15\n",
             path: "services.web.scale", operation: .set(.int(3)), create: true,
             after: "services:\n    web:\n        image: app:1\n        scale: 3\n\n    db:\n        image: postgres:15\n"),
        Case(name: "value: create nested keys", before: "services:\n  web:\n    image: app:1\n",
             path: "services.web.deploy.replicas", operation: .set(.string("3")), create: true,
             after: "services:\n  web:\n    image: app:1\n    deploy:\n      replicas: 3\n"),
        Case(name: "value: create in a flow mapping", before: "web: {image: app:1}\n", path: "web.scale", operation: .set(.int(2)), create: true,
             after: "web: {image: app:1, scale: 2}\n"),
        Case(name: "value: an existing plain number", before: "web:\n  scale: 2 # replicas\n", path: "web.scale", operation: .set(.string("4")),
             after: "web:\n  scale: 4 # replicas\n"),
        Case(name: "value: text that would read as a bool is quoted", before: "a:\n  b: x\n", path: "a.b", operation: .set(.string("yes")),
             after: "a:\n  b: \"yes\"\n"),
        Case(name: "value: a list replaces a block list at its indentation",
             before: "web:\n  ports:\n    - \"80:80\"\n  image: x\n", path: "web.ports", operation: .set(.list([.string("8080:80"), .string("443:443")])),
             after: "web:\n  ports:\n    - \"8080:80\"\n    - \"443:443\"\n  image: x\n"),
        Case(name: "value null removes the key's lines", before: "web:\n  image: x\n  scale: 3\n  ports: []\n", path: "web.scale", operation: .set(.null),
             after: "web:\n  image: x\n  ports: []\n"),
        Case(name: "unchanged value: the same bytes", before: operatorCompose, path: "services.web.command", operation: workers("4"),
             after: operatorCompose),
        Case(name: "an empty value gets one", before: "web:\n  scale:\n  image: x\n", path: "web.scale", operation: .set(.int(2)),
             after: "web:\n  scale: 2\n  image: x\n"),
    ]

    @Test(arguments: cases) func edits(_ testCase: Case) throws {
        let edit = YAMLEdit(path: try YAMLEdit.parsePath(testCase.path), operation: testCase.operation, create: testCase.create)
        let out = try edit.apply(to: Array(testCase.before.utf8))
        #expect(String(decoding: out, as: UTF8.self) == testCase.after)
    }

    struct Refusal: Sendable, CustomStringConvertible {
        var name: String
        var before: String
        var path: String
        var operation: YAMLEdit.Operation
        var message: String
        var description: String { name }
    }

    static let refusals: [Refusal] = [
        Refusal(name: "a missing path names the last key found and its line", before: "services:\n  web:\n    image: x\n",
                path: "services.api.command", operation: workers("4"), message: "services.api.command is not in the file"),
        Refusal(name: "a missing key without create", before: "services:\n  web:\n    image: x\n",
                path: "services.web.scale", operation: .set(.int(2)), message: "\"scale\" is not in services.web (line 2); add `create: true`"),
        Refusal(name: "an index past the list's end", before: "a: [1, 2]\n", path: "a.5", operation: .set(.int(1)),
                message: "a (line 1) is a list of 2 item(s)"),
        Refusal(name: "a key below a scalar", before: "a: b\n", path: "a.c", operation: .set(.int(1)), message: "a (line 1) is the scalar \"b\""),
        Refusal(name: "a shared anchor is never edited", before: "x: &cmd gunicorn --workers 4\ny: *cmd\n", path: "x",
                operation: workers("8"), message: "carries the anchor &cmd"),
        Refusal(name: "a mapping below a merge is not copied", before: "x: &a\n  env:\n    A: 1\nweb:\n  <<: *a\n", path: "web.env.A",
                operation: .set(.int(2)), message: "comes from the anchor &a"),
        Refusal(name: "not YAML", before: "a: [1, 2\n", path: "a", operation: .set(.int(1)), message: "not valid YAML"),
        Refusal(name: "a command that is a mapping", before: "command: {a: 1}\n", path: "command", operation: workers("2"), message: "is a mapping, not a command"),
    ]

    @Test(arguments: refusals) func refuses(_ refusal: Refusal) throws {
        let edit = YAMLEdit(path: try YAMLEdit.parsePath(refusal.path), operation: refusal.operation)
        do {
            _ = try edit.apply(to: Array(refusal.before.utf8))
            Issue.record("expected a refusal containing \(refusal.message)")
        } catch {
            #expect(error.description.contains(refusal.message), "\(error.description)")
        }
    }

    @Test func pathsWithQuotedDots() throws {
        #expect(try YAMLEdit.parsePath("services.web.labels.\"traefik.enable\"") == ["services", "web", "labels", "traefik.enable"])
        #expect(try YAMLEdit.parsePath("a.0.b") == ["a", "0", "b"])
        #expect(throws: YAMLEdit.Failure.self) { try YAMLEdit.parsePath("a..b") }
    }
}

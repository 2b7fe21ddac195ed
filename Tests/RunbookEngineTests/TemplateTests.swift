import Foundation
import RunbookCore
import Testing

@testable import RunbookEngine
@testable import RunbookSteps

/// A project directory with a `templates/` folder, removed when the test ends.
private final class TemplateDirectory {
    let root: String
    var templates: String { root + "/templates" }
    var engine: TemplateEngine { TemplateEngine(templatesDirectory: templates) }

    init() throws {
        root = NSTemporaryDirectory() + "runbook-templates-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root + "/templates", withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func write(_ name: String, _ text: String) throws {
        let path = templates + "/" + name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func link(_ name: String, to destination: String) throws {
        try FileManager.default.createSymbolicLink(atPath: templates + "/" + name, withDestinationPath: destination)
    }
}

private func secrets() throws -> SecretStore {
    try SecretStore(environment: ["RUNBOOK_SECRET_DB_PASSWORD": "s3cr3t pass", "RUNBOOK_SECRET_API_TOKEN": "tok-123",
                                  "HOME": "/root"],
                    file: nil)
}

private func context() throws -> TemplateContext {
    TemplateContext(
        params: ["workers": 8, "name": "web", "ratio": 0.5, "memory": 2.0, "dry": false],
        vars: [
            "compose_file": "/srv/app/docker-compose.prod.yml",
            "servers": [["name": "app1", "port": 8001], ["name": "app2", "port": 8002]],
            "limits": ["web": 2, "celery": 4],
            "tables": ["users", "order items"],
            "nothing": nil,
            "script": "set -e\nrun",
        ],
        host: ["name": "app1", "address": "203.0.113.10", "port": 22, "user": "deploy", "groups": ["web", "all"],
               "app_dir": "/srv/app"],
        facts: ["cpu_percent": 37.5, "load": 1.0],
        steps: ["render": ["changed": true, "rc": 0, "stdout": "ok"], "backup": ["changed": false, "rc": 0, "path": "/b/x.dump"]],
        secrets: try secrets())
}

private let here = SourceLocation(file: "runbooks/deploy.yml", line: 10, column: 5)

/// Renders an inline string at `here` with the test context.
private func render(_ text: String, secrets mode: SecretRendering = .values,
                    engine: TemplateEngine = TemplateEngine(templatesDirectory: "/nonexistent/templates")) throws -> String {
    try engine.render(string: text, at: here, context: context(), secrets: mode).text
}

/// The single diagnostic thrown by `body`.
private func failure(_ body: () throws -> Any) -> Diagnostic? {
    do {
        _ = try body()
        Issue.record("expected an error")
        return nil
    } catch let error as DiagnosticError {
        #expect(error.diagnostics.count == 1)
        return error.diagnostics.first
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite("Templates: rendering")
struct TemplateRenderingTests {
    @Test("each namespace renders")
    func namespaces() throws {
        #expect(try render("{{ params.name }} {{ vars.compose_file }}") == "web /srv/app/docker-compose.prod.yml")
        #expect(try render("{{ host.name }}@{{ host.address }}:{{ host.port }} {{ host.user }} {{ host.app_dir }}")
                == "app1@203.0.113.10:22 deploy /srv/app")
        #expect(try render("{{ facts.cpu_percent }} {{ steps.render.rc }} {{ steps.render.stdout }} {{ steps.backup.path }}")
                == "37.5 0 ok /b/x.dump")
    }

    @Test("numbers and bools render as people write them")
    func numbersAndBools() throws {
        #expect(try render("{{ params.workers }}") == "8")
        #expect(try render("{{ params.ratio }} {{ params.memory }} {{ facts.load }}") == "0.5 2 1")
        #expect(try render("{{ params.dry }} {{ steps.render.changed }}") == "false true")
        #expect(try render("{{ vars.nothing }}") == "")
    }

    @Test("loops over a list of maps, with forloop")
    func loopOverListOfMaps() throws {
        let template = """
            upstream app {
              {% for s in vars.servers %}
              server 127.0.0.1:{{ s.port }}; # {{ s.name }}{% if not forloop.last %},{% endif %}
              {% endfor %}
            }

            """
        #expect(try render(template) == """
            upstream app {
              server 127.0.0.1:8001; # app1,
              server 127.0.0.1:8002; # app2
            }

            """)
        #expect(try render("{% for s in vars.servers %}{{ forloop.counter }}={{ s.name }} {% endfor %}") == "1=app1 2=app2 ")
        #expect(try render("{% for g in host.groups %}[{{ g }}]{% endfor %}") == "[web][all]")
        #expect(try render("{{ vars.servers.0.name }} {{ vars.servers.last.port }} {{ vars.servers.count }}") == "app1 8002 2")
    }

    @Test("loops over a map, sorted by key")
    func loopOverMap() throws {
        #expect(try render("{% for name, n in vars.limits %}{{ name }}={{ n }};{% endfor %}") == "celery=4;web=2;")
        #expect(try render("{% for name in vars.limits %}{{ name }} {% endfor %}") == "celery web ")
        #expect(try render("{% for k, v in steps.render %}{{ k }}:{{ v }} {% endfor %}") == "changed:true rc:0 stdout:ok ")
        #expect(try render("{% for x in vars.servers %}{% empty %}none{% endfor %}") == "")
        #expect(try render("{% outer: for g in host.groups %}{% for s in vars.servers %}{{ g }}-{{ s.name }} {% continue outer %}{% endfor %}{% endfor %}")
                == "web-app1 all-app1 ")
    }

    @Test("lists and maps print deterministically")
    func deterministic() throws {
        let first = try render("{{ vars.limits }} {{ host.groups }} {{ vars.servers }}")
        for _ in 0..<5 { #expect(try render("{{ vars.limits }} {{ host.groups }} {{ vars.servers }}") == first) }
        #expect(first.hasPrefix(#"["celery": 4, "web": 2] ["web", "all"]"#))
    }

    @Test("filters: default, join, upper, lower, capitalize, indent, quote, range")
    func filters() throws {
        #expect(try render("{{ host.workers|default:4 }}") == "4")
        #expect(try render("{{ params.workers|default:4 }}") == "8")
        #expect(try render("{{ vars.nothing|default:\"none\" }}") == "none")
        #expect(try render("{{ host.groups|join:\", \" }}") == "web, all")
        #expect(try render("{{ params.name|upper }} {{ host.name|lower }} {{ params.name|uppercase }}") == "WEB app1 WEB")
        #expect(try render("{{ \"hELLO world\"|capitalize }}") == "Hello world")
        #expect(try render("script: |\n  {{ vars.script|indent:2 }}") == "script: |\n  set -e\n  run")
        #expect(try render("{{ host.groups|upper|join:\"+\" }}") == "WEB+ALL")
        #expect(try render("psql -c {{ \"it's\"|quote }} {{ host.name|quote }}") == "psql -c 'it'\\''s' app1")
        #expect(try render("vacuum {{ vars.tables|quote }}") == "vacuum users 'order items'")
        #expect(try render("{{ vars.tables|length }} {{ \"  x \"|trim }}") == "2 x")
        #expect(try render("{% for i in params.workers|range %}{{ i }}{% endfor %}") == "01234567")
        #expect(try render("{% for i in 2|range:params.workers %}{{ forloop.counter }}:{{ i }} {% endfor %}") == "1:2 2:3 3:4 4:5 5:6 6:7 ")
        #expect(try render("[{% for i in 0|range %}x{% endfor %}]") == "[]")
    }

    @Test("a block tag or comment alone on its line leaves nothing; inline tags keep their spaces")
    func whitespace() throws {
        let template = """
            a
              {# a comment #}
              {% if params.workers > 4 %}
            b
              {% endif %}
            c
            """
        #expect(try render(template) == "a\nb\nc")
        #expect(try render("echo {% if params.dry %}--dry-run{% else %}--apply{% endif %} now") == "echo --apply now")
        #expect(try render("a\r\n  {% if params.workers %}\r\nb\r\n{% endif %}\r\n") == "a\r\nb\r\n")
        #expect(try render("plain {text} without tags\n") == "plain {text} without tags\n")
    }

    @Test("raw sections are copied as they are")
    func raw() throws {
        #expect(try render("docker inspect -f '{% raw %}{{.State.Status}}{% endraw %}' {{ host.name }}")
                == "docker inspect -f '{{.State.Status}}' app1")
        let block = """
            a
              {% raw %}
            {% if x %}{{ y }}
              {% endraw %}
            b {{ params.name }}

            """
        #expect(try render(block) == "a\n{% if x %}{{ y }}\nb web\n")
        let after = try #require(failure { try render(block.replacingOccurrences(of: "params.name", with: "params.nope")) })
        #expect(after.location?.line == 14)
        let unclosed = try #require(failure { try render("a\n{% raw %}{{ x }}") })
        #expect(unclosed.summary == "`{% raw %}` is never closed")
        #expect(unclosed.location?.line == 11)
    }

    @Test("rendering from many tasks at once gives the same text")
    func concurrent() async throws {
        let directory = try TemplateDirectory()
        try directory.write("site.conf", "{% for s in vars.servers %}{% include \"line.j2\" %}{% endfor %}")
        try directory.write("line.j2", "server {{ s.name }}:{{ s.port }} {{ vars.limits }};\n")
        let engine = directory.engine
        let context = try context()
        let expected = try engine.renderFile("site.conf", context: context, secrets: .values).text
        let texts = await withTaskGroup(of: String?.self) { group in
            for _ in 0..<32 {
                group.addTask { try? engine.renderFile("site.conf", context: context, secrets: .values).text }
            }
            var texts: [String?] = []
            for await text in group { texts.append(text) }
            return texts
        }
        #expect(texts.count == 32 && texts.allSatisfy { $0 == expected })
    }

    @Test("the trailing newline of a file is kept exactly")
    func trailingNewline() throws {
        let directory = try TemplateDirectory()
        let context = try context()
        try directory.write("with.conf", "workers={{ params.workers }}\n")
        try directory.write("without.conf", "workers={{ params.workers }}")
        try directory.write("block.conf", "{% for s in vars.servers %}{{ s.name }} {% endfor %}\n")
        try directory.write("blank.conf", "x\n\n")
        #expect(try directory.engine.renderFile("with.conf", context: context, secrets: .values).text == "workers=8\n")
        #expect(try directory.engine.renderFile("without.conf", context: context, secrets: .values).text == "workers=8")
        #expect(try directory.engine.renderFile("block.conf", context: context, secrets: .values).text == "app1 app2 \n")
        #expect(try directory.engine.renderFile("blank.conf", context: context, secrets: .values).text == "x\n\n")
    }
}

@Suite("Templates: strict names")
struct TemplateStrictTests {
    @Test("an undefined top-level name is an error with the runbook's line")
    func topLevel() throws {
        let diagnostic = try #require(failure { try render("ok\nnext {{ nope }}") })
        #expect(diagnostic.location == SourceLocation(file: "runbooks/deploy.yml", line: 11, column: 9))
        #expect(diagnostic.summary.contains("`nope`"))
        let hint = failure { try render("{{ workers }}") }?.hint
        #expect(hint == "did you mean `params.workers`?")
        let close = try #require(failure { try render("{{ parms.workers }}") })
        #expect(close.hint == "did you mean `params`?")
        #expect(close.location?.line == 10 && close.location?.column == 8)
    }

    @Test("an undefined member is an error naming the full path, the line and close names")
    func members() throws {
        let nested = try #require(failure { try render("a\nb\n  {{ params.nmae }}") })
        #expect(nested.summary == "undefined variable `params.nmae`")
        #expect(nested.location?.line == 12)
        #expect(nested.hint == "did you mean `params.name`?")

        let host = try #require(failure { try render("{{ host.missing_var }}") })
        #expect(host.summary == "undefined variable `host.missing_var`")
        #expect(host.hint?.contains("app_dir") == true)

        let deep = try #require(failure { try render("{{ steps.x.changed }}") })
        #expect(deep.summary == "undefined variable `steps.x`")
        #expect(deep.hint?.contains("backup") == true && deep.hint?.contains("render") == true)

        let scalar = try #require(failure { try render("{{ params.workers.max }}") })
        #expect(scalar.summary.contains("`params.workers.max`"))
        let index = try #require(failure { try render("{{ vars.servers.5.name }}") })
        #expect(index.summary.contains("`vars.servers` has no element `5`"))
        let null = try #require(failure { try render("{{ vars.nothing.x }}") })
        #expect(null.summary.contains("is null"))
        let loopString = try #require(failure { try render("{% for g in host.groups %}{{ g.name }}{% endfor %}") })
        #expect(loopString.summary == "undefined variable `host.groups.0.name`: `host.groups.0` is a string, not a map")
        let scalarLoop = try #require(failure { try render("a\n{% for c in host.name %}{{ c }}{% endfor %}") })
        #expect(scalarLoop.summary == "cannot loop over `host.name`: it is a string, not a list or a map")
        #expect(scalarLoop.location?.line == 11)
        #expect(try render("{% for x in vars.nothing %}x{% empty %}none{% endfor %}") == "none")
        let quoteMap = try #require(failure { try render("{{ vars.limits|quote }}") })
        #expect(quoteMap.summary.contains("not of a map"))
        let loopVariable = try #require(failure { try render("{% for s in vars.servers %}{{ s.address }}{% endfor %}") })
        #expect(loopVariable.summary == "undefined variable `vars.servers.0.address`")
        #expect(loopVariable.hint == "`vars.servers.0` has: name, port")
    }

    @Test("undefined names in if, elif and for report their own tag's line")
    func inTags() throws {
        let template = """
            start
            {% if steps.render.changed %}
              r
            {% endif %}
            {% if params.dry %}
              d
            {% elif steps.x.changed %}
              x
            {% endif %}
            """
        let elif = try #require(failure { try render(template) })
        #expect(elif.summary == "undefined variable `steps.x`")
        #expect(elif.location?.line == 16)

        let loop = """
            a
            {% for s in vars.nope %}
              {{ s }}
            {% endfor %}
            """
        let forTag = try #require(failure { try render(loop) })
        #expect(forTag.summary == "undefined variable `vars.nope`")
        #expect(forTag.location?.line == 11)
        #expect(forTag.location?.column == 1)

        let ifTag = try #require(failure { try render("x {% if steps.x.changed %}y{% endif %}") })
        #expect(ifTag.location == SourceLocation(file: "runbooks/deploy.yml", line: 10, column: 7))
    }

    @Test("a multi-line template file reports its own file and line, even for repeated lines")
    func fileLines() throws {
        let directory = try TemplateDirectory()
        try directory.write("nginx/site.conf.j2", """
            server {
              {% for s in vars.servers %}
              listen {{ s.port }};
              {% endfor %}
              {% for s in host.groups %}
              listen {{ s.port }};
              {% endfor %}
            }

            """)
        let diagnostic = try #require(failure {
            try directory.engine.renderFile("nginx/site.conf.j2", context: context(), secrets: .values)
        })
        #expect(diagnostic.location?.file.hasSuffix("templates/nginx/site.conf.j2") == true)
        #expect(diagnostic.location?.line == 6)
        #expect(diagnostic.location?.column == 10)
        #expect(diagnostic.summary.contains("`host.groups.0.port`"))
        #expect(diagnostic.summary.contains("is a string"))
    }

    @Test("Stencil's syntax errors carry the line")
    func syntaxErrors() throws {
        let filter = try #require(failure { try render("a\nb\n{{ params.name|uper }}") })
        #expect(filter.summary == "unknown filter `uper`")
        #expect(filter.hint == "did you mean `upper`?")
        #expect(filter.location?.line == 12)

        let tag = try #require(failure { try render("a\n{% iff x %}") })
        #expect(tag.summary == "unknown tag `iff`")
        #expect(tag.location?.line == 11)

        let unclosedIf = try #require(failure { try render("a\n\n{% if params.dry %}\nx\n") })
        #expect(unclosedIf.summary.contains("endif"))
        #expect(unclosedIf.location?.line == 12)

        let unclosedVariable = try #require(failure { try render("a\nb {{ params.name\n") })
        #expect(unclosedVariable.summary == "`{{` is never closed")
        #expect(unclosedVariable.location?.line == 11)

        let directory = try TemplateDirectory()
        try directory.write("bad.j2", "one\ntwo\n{% for x in %}\n{% endfor %}\n")
        let file = try #require(failure { try directory.engine.renderFile("bad.j2", context: context(), secrets: .values) })
        #expect(file.location?.line == 3)
        #expect(file.location?.file.hasSuffix("templates/bad.j2") == true)
    }
}

@Suite("Templates: conditions")
struct TemplateConditionTests {
    func holds(_ condition: String) throws -> Bool {
        try TemplateEngine(templatesDirectory: "/nonexistent").evaluate(condition: condition, at: here, context: context())
    }

    @Test("comparisons are numeric, and and/or/not/in work")
    func expressions() throws {
        #expect(try holds("params.workers > 4"))
        #expect(try !holds("params.workers > 10"))
        #expect(try holds("params.workers >= 8 and params.workers <= 8"))
        #expect(try holds("params.ratio < 1"))
        #expect(try holds("steps.render.changed"))
        #expect(try !holds("steps.backup.changed"))
        #expect(try holds("not steps.backup.changed"))
        #expect(try holds("steps.backup.changed or steps.render.changed"))
        #expect(try !holds("steps.backup.changed and steps.render.changed"))
        #expect(try holds("\"web\" in host.groups"))
        #expect(try !holds("\"db\" in host.groups"))
        #expect(try holds("\"web\" in vars.limits.keys"))
        #expect(try holds("host.name == \"app1\" and params.name != \"db\""))
        #expect(try holds("host.workers|default:4 == 4"))
        #expect(try !holds("params.dry"))
    }

    @Test("an undefined name in a condition is an error")
    func undefined() throws {
        let member = try #require(failure { try holds("steps.restart.changed") })
        #expect(member.summary == "undefined variable `steps.restart`")
        #expect(member.location == SourceLocation(file: "runbooks/deploy.yml", line: 10, column: 5))
        let top = try #require(failure { try holds("not chnaged") })
        #expect(top.summary == "undefined variable `chnaged`")
        #expect(top.location == SourceLocation(file: "runbooks/deploy.yml", line: 10, column: 9))
        let braces = try #require(failure { try holds("{{ steps.render.changed }}") })
        #expect(braces.summary.contains("without `{{ }}`"))
    }
}

@Suite("Templates: sandbox and include")
struct TemplateSandboxTests {
    @Test("paths outside templates/ are refused: .., absolute, symlink out")
    func escapes() throws {
        let directory = try TemplateDirectory()
        try "secret".write(toFile: directory.root + "/x", atomically: true, encoding: .utf8)
        try directory.link("passwd", to: "/etc/passwd")
        try directory.link("up", to: "..")
        let context = try context()
        for (path, words) in [("../x", "outside"), ("sub/../../x", "outside"), ("/etc/passwd", "absolute"),
                              ("passwd", "outside"), ("up/x", "outside")] {
            let diagnostic = try #require(failure { try directory.engine.renderFile(path, context: context, secrets: .values) })
            #expect(diagnostic.summary.contains(words), "\(path): \(diagnostic.summary)")
            #expect(failure { try directory.engine.readFile(path) } != nil)
        }
        let include = try #require(failure {
            try directory.engine.render(string: "a\n{% include \"passwd\" %}", at: here, context: context, secrets: .values)
        })
        #expect(include.summary.contains("outside"))
        #expect(include.location?.line == 11)
        let parent = try #require(failure {
            try directory.engine.render(string: "{% include \"../x\" %}", at: here, context: context, secrets: .values)
        })
        #expect(parent.summary.contains("outside"))
        let missing = try #require(failure { try directory.engine.renderFile("nope.j2", context: context, secrets: .values) })
        #expect(missing.summary.contains("not found"))
    }

    @Test("include and extends inside templates/ work; errors name the included file")
    func include() throws {
        let directory = try TemplateDirectory()
        try directory.write("partials/upstream.j2", "{% for s in vars.servers %}server {{ s.name }}:{{ s.port }};\n{% endfor %}")
        try directory.write("site.conf", "upstream app {\n{% include \"partials/upstream.j2\" %}}\n")
        try directory.write("base.j2", "# {{ host.name }}\n{% block body %}default{% endblock %}\n")
        try directory.write("child.j2", "{% extends \"base.j2\" %}{% block body %}workers={{ params.workers }}{% endblock %}")
        try directory.write("broken.j2", "one\ntwo {{ params.nope }}\n")
        try directory.write("uses-broken.j2", "a\nb\n{% include \"broken.j2\" %}\n")
        try directory.write("names.j2", "{{ s.name }} {{ zzz }}\n")
        try directory.write("loop-include.j2", "{% for s in vars.servers %}{% include \"names.j2\" %}{% endfor %}")
        try directory.write("ok.conf", "{{ host.name }}\n")
        try directory.link("alias.conf", to: "ok.conf")
        let context = try context()

        #expect(try directory.engine.renderFile("site.conf", context: context, secrets: .values).text
                == "upstream app {\nserver app1:8001;\nserver app2:8002;\n}\n")
        #expect(try directory.engine.renderFile("child.j2", context: context, secrets: .values).text == "# app1\nworkers=8\n")
        #expect(try directory.engine.renderFile("alias.conf", context: context, secrets: .values).text == "app1\n")
        #expect(try directory.engine.renderFile("./sub/../ok.conf", context: context, secrets: .values).text == "app1\n")
        #expect(try directory.engine.readFile("ok.conf") == Array("{{ host.name }}\n".utf8))

        let inner = try #require(failure { try directory.engine.renderFile("uses-broken.j2", context: context, secrets: .values) })
        #expect(inner.location?.file.hasSuffix("templates/broken.j2") == true)
        #expect(inner.location?.line == 2)
        #expect(inner.detail?.contains("included from") == true && inner.detail?.contains("uses-broken.j2:3") == true)

        try directory.write("self.j2", "x{% include \"self.j2\" %}\n")
        try directory.write("a.j2", "a\n{% include \"b.j2\" %}")
        try directory.write("b.j2", "b\n{% include \"a.j2\" %}")
        let selfInclude = try #require(failure { try directory.engine.renderFile("self.j2", context: context, secrets: .values) })
        #expect(selfInclude.summary == "`self.j2` includes itself: self.j2 → self.j2")
        let cycle = try #require(failure { try directory.engine.renderFile("a.j2", context: context, secrets: .values) })
        #expect(cycle.summary == "`b.j2` includes itself: b.j2 → a.j2 → b.j2")
        #expect(cycle.location?.line == 2 && cycle.location?.file.hasSuffix("templates/a.j2") == true)

        let unknown = try #require(failure { try directory.engine.renderFile("loop-include.j2", context: context, secrets: .values) })
        #expect(unknown.summary == "undefined variable `zzz`")
        #expect(unknown.location?.file.hasSuffix("templates/names.j2") == true)
    }
}

@Suite("Templates: secrets")
struct TemplateSecretTests {
    @Test("values for files, references for commands, names recorded")
    func modes() throws {
        let engine = TemplateEngine(templatesDirectory: "/nonexistent")
        let context = try context()
        let text = "password={{ secrets.DB_PASSWORD }} token={{ secrets.API_TOKEN }} again={{ secrets.DB_PASSWORD }}"
        let values = try engine.render(string: text, at: here, context: context, secrets: .values)
        #expect(values.text == "password=s3cr3t pass token=tok-123 again=s3cr3t pass")
        #expect(values.secretsUsed == ["API_TOKEN", "DB_PASSWORD"])
        let references = try engine.render(string: text, at: here, context: context, secrets: .references)
        // In a command each reference is double-quoted: a secret is never split or globbed.
        #expect(references.text
                == "password=\"${RUNBOOK_SECRET_DB_PASSWORD}\" token=\"${RUNBOOK_SECRET_API_TOKEN}\" again=\"${RUNBOOK_SECRET_DB_PASSWORD}\"")
        #expect(references.secretsUsed == ["API_TOKEN", "DB_PASSWORD"])
        let quoted = try engine.render(string: "psql -W {{ secrets.db_password|quote }}", at: here, context: context, secrets: .references)
        #expect(quoted.text == "psql -W \"${RUNBOOK_SECRET_DB_PASSWORD}\"")
        #expect(quoted.secretsUsed == ["DB_PASSWORD"])
        let quotedValue = try engine.render(string: "{{ secrets.DB_PASSWORD|quote }}", at: here, context: context, secrets: .values)
        #expect(quotedValue.text == "'s3cr3t pass'")
        #expect(try engine.render(string: "{{ host.name }}", at: here, context: context, secrets: .values).secretsUsed.isEmpty)
    }

    @Test("an unknown secret says how to define it")
    func unknown() throws {
        let diagnostic = try #require(failure { try render("a\n{{ secrets.REDIS_PASSWORD }}") })
        #expect(diagnostic.summary == "undefined secret `secrets.REDIS_PASSWORD`")
        #expect(diagnostic.hint?.contains("RUNBOOK_SECRET_REDIS_PASSWORD") == true)
        #expect(diagnostic.hint?.contains(".runbook/secrets.env") == true)
        #expect(diagnostic.location?.line == 11)
        let close = try #require(failure { try render("{{ secrets.DB_PASWORD }}") })
        #expect(close.hint?.contains("did you mean `secrets.DB_PASSWORD`?") == true)
        let whole = try #require(failure { try render("{{ secrets }}") })
        #expect(whole.summary.contains("one secret at a time"))
    }
}

@Suite("Templates: static check")
struct TemplateCheckTests {
    @Test("syntax errors and unknown names, without a host")
    func check() throws {
        let engine = TemplateEngine(templatesDirectory: "/nonexistent")
        #expect(engine.check(string: "{{ params.x }} {% for s in vars.list %}{{ s.y }}{% endfor %}", at: here).isEmpty)
        // Text without template syntax (braces of shell and JSON included) has nothing to report.
        #expect(engine.check(string: "echo '}}' {a,b} %} ${X} {\"k\": 1}", at: here).isEmpty)
        #expect(engine.check(string: "{# unclosed", at: here).count == 1)
        let unknown = engine.check(string: "{{ nope }}\n{{ host.name }} {{ other.x }}", at: here)
        #expect(unknown.map(\.summary) == ["undefined variable `nope`", "undefined variable `other`"])
        #expect(unknown.map { $0.location?.line ?? 0 } == [10, 11])
        let syntax = engine.check(string: "a\n{{ x|nofilter }}", at: here)
        #expect(syntax.first?.summary == "unknown filter `nofilter`")
        #expect(syntax.first?.location?.line == 11)
        let members = engine.check(string: "{{ params.workers }} {{ params.wrokers }} {{ params.extra|default:1 }} {{ steps.render.rc }}",
                                   at: here,
                                   knownNames: ["params", "params.workers", "steps", "steps.render", "vars", "host"])
        #expect(members.map(\.summary) == ["undefined variable `params.wrokers`"])
        #expect(members.first?.hint == "did you mean `params.workers`?")
        #expect(engine.check(condition: "steps.render.changed and not params.dry", at: here).isEmpty)
        #expect(engine.check(condition: "steps.render.changed and not dry", at: here).first?.location?.column == 34)
    }

    @Test("checkFile follows includes and reports missing ones")
    func checkFile() throws {
        let directory = try TemplateDirectory()
        try directory.write("main.j2", "{% for s in vars.servers %}\n{% include \"part.j2\" %}\n{% endfor %}\n{% include \"gone.j2\" %}\n")
        try directory.write("part.j2", "{{ s.name }}\n{{ typo.x }}\n")
        let diagnostics = directory.engine.checkFile("main.j2")
        #expect(diagnostics.count == 2)
        #expect(diagnostics.contains { $0.summary.contains("gone.j2") && $0.location?.line == 4 })
        #expect(diagnostics.contains { $0.summary == "undefined variable `typo`" && $0.location?.line == 2
                && $0.location?.file.hasSuffix("part.j2") == true })
        #expect(directory.engine.checkFile("../x").first?.summary.contains("outside") == true)
    }
}

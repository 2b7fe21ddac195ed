import RunbookCore

/// One row of the step-case table: a kind, its arguments as the loader stores them, the facts
/// the host holds (files, scripted command replies) → the action, summary, commands and undo
/// the planner must produce. Runs in memory against `ScriptedTransport`, without root.
public struct StepCase: CustomStringConvertible, Sendable {
    public var name: String
    public var kind: String
    public var arguments: [String: Value]
    public var files: [String: ScriptedTransport.File] = [:]
    public var replies: [(String, ScriptedTransport.Reply)] = []
    public var become = false
    public var fileContents: String? = nil
    /// Expected.
    public var action: ChangeAction
    public var summary: String? = nil
    /// Each shown command must contain the matching string (same count).
    public var commands: [String] = []
    public var undo: UndoBehavior
    public var reversible = true

    public var description: String { "\(kind): \(name)" }

    /// A row.
    public init(name: String, kind: String, arguments: [String: Value], files: [String: ScriptedTransport.File] = [:],
                replies: [(String, ScriptedTransport.Reply)] = [], become: Bool = false, fileContents: String? = nil,
                action: ChangeAction, summary: String? = nil, commands: [String] = [], undo: UndoBehavior, reversible: Bool = true) {
        self.name = name
        self.kind = kind
        self.arguments = arguments
        self.files = files
        self.replies = replies
        self.become = become
        self.fileContents = fileContents
        self.action = action
        self.summary = summary
        self.commands = commands
        self.undo = undo
        self.reversible = reversible
    }
}

let hourDump = "app-20261201-030000.dump"
/// `public` as the pg_index facts query returns a schema name: hex of its UTF-8 bytes.
let hexPublic = "7075626c6963"

/// Every kind's plan (noop, change, run) and undo.
public let stepCases: [StepCase] = [
    // command
    StepCase(name: "runs", kind: "command", arguments: ["run": "echo hi"], action: .run, summary: "echo hi",
             commands: ["echo hi"], undo: .irreversible, reversible: false),
    StepCase(name: "with undo", kind: "command", arguments: ["run": "touch /x", "undo": "rm -f /x"], action: .run,
             commands: ["touch /x", "undo: rm -f /x"], undo: .restore),
    StepCase(name: "creates exists", kind: "command", arguments: ["run": "make", "creates": "/built"],
             files: ["/built": .init("x")], action: .noop, summary: "skip: /built exists", undo: .irreversible, reversible: false),
    StepCase(name: "unless passes", kind: "command", arguments: ["run": "make", "unless": "test -e /built"],
             replies: [("test -e /built", .init(status: 0))], action: .noop, summary: "unless", undo: .irreversible, reversible: false),
    StepCase(name: "unless fails", kind: "command", arguments: ["run": "make", "unless": "test -e /built"],
             replies: [("test -e /built", .init(status: 1))], action: .run, commands: ["make"], undo: .irreversible, reversible: false),
    StepCase(name: "become shows sudo", kind: "command", arguments: ["run": "id -u", "undo": "true"], become: true, action: .run,
             commands: ["sudo -n -E -- sh -c 'id -u'", "undo: sudo -n -E -- sh -c true"], undo: .restore),
    // template
    StepCase(name: "creates a file", kind: "template", arguments: ["src": "a.j2", "dest": "/etc/a.conf"], fileContents: "a=1\n",
             action: .create, summary: "/etc/a.conf: create (mode 644)", undo: .restore),
    StepCase(name: "same content", kind: "template", arguments: ["src": "a.j2", "dest": "/etc/a.conf"],
             files: ["/etc/a.conf": .init("a=1\n")], fileContents: "a=1\n", action: .noop, summary: "up to date", undo: .restore),
    StepCase(name: "content and validate", kind: "template",
             arguments: ["src": "a.j2", "dest": "/etc/a.conf", "validate": "nginx -t -c %s"],
             files: ["/etc/a.conf": .init("a=0\n")], fileContents: "a=1\n", action: .update, summary: "/etc/a.conf: content",
             commands: ["validate: nginx -t -c %s"], undo: .restore),
    StepCase(name: "mode only", kind: "template", arguments: ["src": "a.j2", "dest": "/etc/a.conf", "mode": "0600"],
             files: ["/etc/a.conf": .init("a=1\n")], fileContents: "a=1\n", action: .update, summary: "mode 644 → 600", undo: .restore),
    // copy
    StepCase(name: "inline content", kind: "copy", arguments: ["content": "x\n", "dest": "/etc/x"], action: .create,
             summary: "/etc/x: create", undo: .restore),
    StepCase(name: "unchanged", kind: "copy", arguments: ["content": "x\n", "dest": "/etc/x"], files: ["/etc/x": .init("x\n")],
             action: .noop, undo: .restore),
    // env_set
    StepCase(name: "one variable in place", kind: "env_set",
             arguments: ["file": "/srv/app/.env.prod", "vars": .map(["WEB_CONCURRENCY": .int(8)])],
             files: ["/srv/app/.env.prod": .init("# app\nWEB_CONCURRENCY=4\nSECRET_KEY=x\n", mode: 0o600)],
             action: .update, summary: "/srv/app/.env.prod: content", undo: .restore),
    StepCase(name: "already set", kind: "env_set", arguments: ["file": "/srv/app/.env.prod", "vars": .map(["A": "1"])],
             files: ["/srv/app/.env.prod": .init("A=1\n")], action: .noop, undo: .restore),
    StepCase(name: "new file", kind: "env_set", arguments: ["file": "/srv/app/.env", "vars": .map(["A": "1"])],
             action: .create, summary: "create (mode 600)", undo: .restore),
    // nginx_upstream
    StepCase(name: "drain one server", kind: "nginx_upstream",
             arguments: ["file": "/etc/nginx/conf.d/app.conf", "server": "10.0.0.11:8000", "state": "drained"],
             files: ["/etc/nginx/conf.d/app.conf": .init("upstream app {\n    server 10.0.0.11:8000 max_fails=3;\n    server 10.0.0.12:8000;\n}\n")],
             action: .update, summary: "/etc/nginx/conf.d/app.conf: content", undo: .restore),
    StepCase(name: "already active", kind: "nginx_upstream",
             arguments: ["file": "/etc/nginx/conf.d/app.conf", "server": "10.0.0.12:8000"],
             files: ["/etc/nginx/conf.d/app.conf": .init("upstream app {\n    server 10.0.0.11:8000 down;\n    server 10.0.0.12:8000;\n}\n")],
             action: .noop, undo: .restore),
    // yaml_set
    StepCase(name: "flag in place, validated by the host's compose", kind: "yaml_set",
             arguments: ["file": "/srv/app/docker-compose.yml", "path": "services.web.command",
                         "flag": .map(["name": "--workers", "value": "8"]), "validate": "compose"],
             files: ["/srv/app/docker-compose.yml": .init("services:\n  web:\n    command: gunicorn --workers 4 app:app # tuned\n")],
             replies: [("docker compose version", .init(status: 0))],
             action: .update, summary: "/srv/app/docker-compose.yml: content",
             commands: ["validate: cd /srv/app && docker compose -f %s config -q"], undo: .restore),
    StepCase(name: "value already set", kind: "yaml_set",
             arguments: ["file": "/srv/c.yml", "path": "services.web.scale", "value": 3],
             files: ["/srv/c.yml": .init("services:\n  web:\n    scale: 3\n")], action: .noop, undo: .restore),
    StepCase(name: "value created, file mode kept", kind: "yaml_set",
             arguments: ["file": "/srv/c.yml", "path": "services.web.scale", "value": 2, "create": true],
             files: ["/srv/c.yml": .init("services:\n  web:\n    image: a\n", mode: 0o640)], action: .update,
             summary: "/srv/c.yml: content", undo: .restore),
    // service
    StepCase(name: "systemd", kind: "service", arguments: ["name": "nginx", "action": "reload", "manager": "systemd"],
             action: .run, summary: "reload nginx (systemd)", commands: ["systemctl reload nginx"], undo: .rerun),
    StepCase(name: "compose v2", kind: "service", arguments: ["name": "web", "action": "restart", "compose_file": "/srv/app/c.yml"],
             replies: [("docker compose version", .init(status: 0)), ("ps -q web", .init(stdout: "abc\n"))],
             action: .run, summary: "(docker compose)", commands: ["docker compose -f /srv/app/c.yml"], undo: .rerun),
    StepCase(name: "signal stop, not running", kind: "service",
             arguments: ["name": "gunicorn", "action": "stop", "manager": "signal", "pidfile": "/run/g.pid"],
             action: .noop, summary: "skip: gunicorn is not running", undo: .rerun),
    StepCase(name: "signal TTIN undone by TTOU", kind: "service",
             arguments: ["name": "gunicorn", "action": "reload", "manager": "signal", "pidfile": "/run/g.pid", "signal": "TTIN"],
             files: ["/run/g.pid": .init("42\n")], replies: [("kill -0 42", .init(stdout: "gunicorn\n"))],
             action: .run, summary: "send TTIN to pid 42", commands: ["kill -s TTIN", "undo: "], undo: .rerun),
    // compose_scale
    StepCase(name: "scale up", kind: "compose_scale", arguments: ["service": "web", "replicas": 3, "compose_file": "/srv/c.yml"],
             replies: [("running=", .init(stdout: "flavor=v2\nrunning=1\n"))], action: .update, summary: "1 → 3", commands: ["--scale web=3", "undo: "],
             undo: .restore),
    StepCase(name: "already scaled", kind: "compose_scale", arguments: ["service": "web", "replicas": 1, "compose_file": "/srv/c.yml"],
             replies: [("running=", .init(stdout: "flavor=v1\nrunning=1\n"))], action: .noop, undo: .restore),
    // fetch
    StepCase(name: "a dump to the controller", kind: "fetch",
             arguments: ["src": "/srv/backups/app-20261205-030000.dump", "dest": "/var/backups/offsite", "keep": 3, "prefix": "app-"],
             files: ["/srv/backups/app-20261205-030000.dump": .init("dump")],
             action: .create, summary: "(4 bytes) from h1 to /var/backups/offsite/app-20261205-030000.dump on the controller, SHA-256 checked; keep 3 of app-*",
             commands: ["sha256sum -- /srv/backups/app-20261205-030000.dump"], undo: .kept),
    // nginx_reload
    StepCase(name: "direct", kind: "nginx_reload", arguments: ["config": "/etc/nginx/nginx.conf"],
             action: .run, summary: "then reload", commands: ["nginx -c /etc/nginx/nginx.conf -q -t && sh -c 'n=$1; shift; live() {"],
             undo: .rerun),
    // pg_backup
    StepCase(name: "dump with retention", kind: "pg_backup", arguments: ["database": "app", "dir": "/var/backups/pg", "keep": 2],
             replies: [("pg_size_pretty", .init(stdout: "12 MB|12582912\n")), ("df -Pk", .init(stdout: "5242880\n")),
                       ("if [ -d /var/backups/pg ]", .init(stdout: "dir\napp-20261130-030000.dump\n\(hourDump)\n"))],
             action: .run, summary: "5120 MiB free, 268 MiB needed; keep 2: removes 1", commands: ["pg_dump"], undo: .kept),
    StepCase(name: "own prefix, own retention", kind: "pg_backup",
             arguments: ["database": "app", "dir": "/var/backups/pg", "keep": 3, "prefix": "app-pre-vertical-scale"],
             replies: [("pg_size_pretty", .init(stdout: "12 MB|12582912\n")), ("df -Pk", .init(stdout: "5242880\n")),
                       ("for f in /var/backups/pg/app-pre-vertical-scale-", .init(stdout: "dir\n"))],
             action: .run, summary: "/var/backups/pg/app-pre-vertical-scale-YYYYmmdd-HHMMSS.dump", commands: ["pg_dump"], undo: .kept),
    // pg_restore
    StepCase(name: "latest dump into a new database", kind: "pg_restore",
             arguments: ["database": "app_restore", "dir": "/var/backups/pg", "prefix": "app", "owner": "app"],
             files: ["/var/backups/pg/app-20261204-030000.dump": .init("PGDMP")],
             replies: [("ls -1t", .init(stdout: "app-20261204-030000.dump\n")), ("FROM pg_database", .init(stdout: "0\n"))],
             action: .run, summary: "restore /var/backups/pg/app-20261204-030000.dump (0 KiB) into app_restore, a new database; count every table",
             commands: ["pg_restore", "DROP DATABASE IF EXISTS"], undo: .restore),
    // pg_vacuum
    StepCase(name: "tables", kind: "pg_vacuum", arguments: ["database": "app", "tables": .list(["products"])],
             replies: [("pg_class", .init(stdout: "products\n"))],
             action: .run, commands: ["psql"], undo: .irreversible, reversible: false),
    // pg_kill_queries
    StepCase(name: "nothing to kill", kind: "pg_kill_queries", arguments: ["database": "app", "older_than": "1m"],
             replies: [("pg_stat_activity", .init(stdout: "150004|||||\n"))], action: .noop, undo: .irreversible, reversible: false),
    StepCase(name: "one long query", kind: "pg_kill_queries", arguments: ["database": "app", "older_than": "1m"],
             replies: [("pg_stat_activity", .init(stdout: "150004|||||\n4242|2026-12-04 03:00:00+00|app|psql|125|select pg_sleep(600)\n"))],
             action: .run, summary: "terminate 1 backends", commands: ["pg_terminate_backend"], undo: .irreversible, reversible: false),
    // pg_sql
    StepCase(name: "irreversible", kind: "pg_sql", arguments: ["database": "app", "sql": "ANALYZE products"], action: .run,
             summary: "ANALYZE products", commands: ["psql"], undo: .irreversible, reversible: false),
    StepCase(name: "with undo_sql", kind: "pg_sql", arguments: ["database": "app", "sql": "CREATE TABLE t (i int)", "undo_sql": "DROP TABLE t"],
             action: .run, commands: ["CREATE TABLE t", "undo: "], undo: .restore),
    // pg_slow_queries
    StepCase(name: "report", kind: "pg_slow_queries", arguments: ["database": "app"],
             replies: [("shared_preload_libraries", .init(stdout: "150004|app|1.10|pg_stat_statements\n"))],
             action: .check, commands: ["psql"], undo: .readOnly),
    // pg_index (the facts query's row: relkind|schema in hex|missing columns|state|differences|md5|definition)
    StepCase(name: "absent: built concurrently", kind: "pg_index",
             arguments: ["database": "app", "name": "idx_product_tenant", "table": "product", "columns": "tenant_id, active"],
             replies: [("pg_attribute", .init(stdout: "r|\(hexPublic)||absent|||\n"))],
             action: .create, summary: "create index idx_product_tenant on product (tenant_id, active), concurrently",
             commands: ["CREATE INDEX CONCURRENTLY \"idx_product_tenant\" ON \"product\" (\"tenant_id\", \"active\");\n"
                        + "COMMENT ON INDEX \"public\".\"idx_product_tenant\" IS 'created by runbook: absent: built concurrently';",
                        "undo: "], undo: .restore),
    StepCase(name: "valid: nothing to do", kind: "pg_index",
             arguments: ["database": "app", "name": "idx_product_tenant", "table": "product", "columns": .list(["tenant_id", "active"])],
             replies: [("pg_attribute", .init(stdout: "r|\(hexPublic)||valid||0cc175b9c0f1b6a831c399e269772661|"
                                                  + "CREATE INDEX idx_product_tenant ON public.product USING btree (tenant_id, active)\n"))],
             action: .noop, summary: "index idx_product_tenant exists and is valid", undo: .restore),
    StepCase(name: "invalid: dropped and built again", kind: "pg_index",
             arguments: ["database": "app", "name": "idx_product_tenant", "on": "product(tenant_id, active)"],
             replies: [("pg_attribute", .init(stdout: "r|\(hexPublic)||invalid||0cc175b9c0f1b6a831c399e269772661|"
                                                  + "CREATE INDEX idx_product_tenant ON public.product USING btree (tenant_id, active)\n"))],
             action: .update, summary: "index idx_product_tenant is invalid (a failed concurrent build): drop it and build it again",
             commands: ["DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"idx_product_tenant\";\n"
                        + "CREATE INDEX CONCURRENTLY \"idx_product_tenant\" ON \"product\" (\"tenant_id\", \"active\");",
                        "undo: "], undo: .restore),
    StepCase(name: "unique, partial, schema-qualified", kind: "pg_index",
             arguments: ["database": "app", "name": "Idx_Product_SKU", "table": "Shop.\"Product Items\"", "columns": .list(["sku"]),
                         "unique": true, "where": "active AND deleted_at IS NULL"],
             replies: [("pg_attribute", .init(stdout: "r|73686f70||absent|||\n"))],
             action: .create, summary: "WHERE active AND deleted_at IS NULL",
             commands: ["CREATE UNIQUE INDEX CONCURRENTLY \"idx_product_sku\" ON \"shop\".\"Product Items\" (\"sku\") WHERE (\n"
                        + "active AND deleted_at IS NULL\n);",
                        "undo: "], undo: .restore),
    // health
    StepCase(name: "get", kind: "health", arguments: ["url": "http://127.0.0.1/health", "contains": "ok"], action: .check,
             summary: "GET http://127.0.0.1/health from h1: expect 200, body contains \"ok\"", undo: .readOnly),
    // load_test
    StepCase(name: "requests and gates", kind: "load_test",
             arguments: ["url": "http://127.0.0.1/health", "requests": 20, "concurrency": 4, "p95_under": "500ms", "max_error_rate": "1%"],
             action: .check,
             summary: "GET http://127.0.0.1/health from h1: 20 requests, concurrency 4; gates: p95 under 500ms, error rate at most 1%",
             undo: .readOnly),
    StepCase(name: "requests or duration, fraction", kind: "load_test",
             arguments: ["url": "http://127.0.0.1/health", "requests": 50, "duration": "2s", "p99_under": "1s", "max_error_rate": .double(0.005)],
             action: .check,
             summary: "50 requests or 2s, whichever ends first, concurrency 10; gates: p99 under 1s, error rate at most 0.5%",
             undo: .readOnly),
    // wait_for
    StepCase(name: "port", kind: "wait_for", arguments: ["port": 5432], action: .check, summary: "127.0.0.1:5432", undo: .readOnly),
    // docker_prune
    StepCase(name: "stopped containers", kind: "docker_prune", arguments: [:],
             replies: [("docker system df", .init(stdout: "Images|5|2|1.2GB|800MB (66%)\nContainers|3|1|10kB|0B (0%)\nUnused networks|0\n"))],
             action: .run, summary: "removes 2 stopped containers", commands: ["docker system prune -f"], undo: .irreversible, reversible: false),
    StepCase(name: "nothing to prune", kind: "docker_prune", arguments: [:],
             replies: [("docker system df", .init(stdout: "Images|5|5|1.2GB|0B (0%)\nContainers|3|3|10kB|0B (0%)\nUnused networks|0\n"))],
             action: .noop, summary: "nothing to prune", undo: .irreversible, reversible: false),
    // gather
    StepCase(name: "facts", kind: "gather", arguments: [:], action: .check, commands: ["/proc"], undo: .readOnly),
    // queue_depth
    StepCase(name: "deep queue: the most workers", kind: "queue_depth",
             arguments: ["url": "http://127.0.0.1/queue", "workers_of": "worker", "max": 4],
             replies: [("curl -fsS", .init(stdout: "json={\"workers\": 1, \"pending\": 2000}\nworkers=1\n"))],
             action: .check, summary: "http://127.0.0.1/queue: 2000 pending, 1 running → 4 workers (2000 ≥ 1000: the most workers, max 4)",
             undo: .readOnly),
    // assert
    StepCase(name: "expressions", kind: "assert", arguments: ["that": .list(["facts.cpu_percent < 90"])], action: .check,
             summary: "assert facts.cpu_percent < 90", undo: .readOnly),
    // sleep
    StepCase(name: "pause", kind: "sleep", arguments: ["duration": "2s"], action: .check, summary: "sleep 2s", undo: .readOnly),
]


import Foundation
import Testing
import TestSupport

/// The sandbox of `scripts/sandbox` (an SSH host in a network namespace running the
/// seeds' stack with docker compose), and the shipped runbooks run against it with the
/// repository's own runbooks/, templates/ and inventory/sandbox.yml.
struct Sandbox {
    static let script = repositoryRoot + "/scripts/sandbox"
    static let inventory = repositoryRoot + "/inventory/sandbox.yml"
    static let url = "http://10.233.0.2"

    /// `scripts/sandbox up`, once per test process (idempotent: quick when it is already up).
    private static let started: Result<Void, SandboxError> = {
        do {
            let up = try runProcessFull(script, ["up"])
            guard up.status == 0 else { return .failure(SandboxError("scripts/sandbox up failed:\n\(up.stderr)")) }
            return .success(())
        } catch {
            return .failure(SandboxError("cannot run scripts/sandbox: \(error)"))
        }
    }()

    /// The journal and saved plans of this test (the repository's .runbook stays untouched).
    let stateDir: String

    /// The sandbox, up, with its app put back to the starting point.
    static func ready() throws -> Sandbox {
        try started.get()
        let reset = try runProcessFull(script, ["reset-app"])
        guard reset.status == 0 else { throw SandboxError("scripts/sandbox reset-app failed:\n\(reset.stderr)") }
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("rbsandbox-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        return Sandbox(stateDir: state)
    }

    /// Runs the built `runbook` on the shipped project against the sandbox.
    func runbook(_ arguments: [String], root: String = repositoryRoot, inventory: String = Sandbox.inventory,
                 environment: [String: String] = [:]) throws -> ProcessOutput {
        try runBuiltRunbook(arguments + ["-i", inventory, "--root", root, "--state-dir", stateDir], environment: environment)
    }

    /// inventory/sandbox.yml with some vars set differently (`key: value` lines replacing the
    /// sandbox's own), written beside the sandbox's state so its relative paths still hold.
    static func inventoryVariant(_ name: String, vars: [String: String]) throws -> String {
        var lines = try String(contentsOfFile: inventory, encoding: .utf8).components(separatedBy: "\n")
        lines.removeAll { line in vars.keys.contains { line.hasPrefix("  \($0):") || line.hasPrefix("  # \($0):") } }
        let at = try #require(lines.firstIndex(of: "vars:")) + 1
        lines.insert(contentsOf: vars.keys.sorted().map { "  \($0): \(vars[$0]!)" }, at: at)
        let path = repositoryRoot + "/.sandbox/inventory-\(name).yml"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The bytes of a file of the sandbox host (its /srv is the sandbox's state folder).
    static func file(_ path: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: repositoryRoot + "/.sandbox" + path))
    }

    /// The lines a plan's diff removes and adds (without the ---/+++ headers).
    static func diffLines(_ plan: String) -> (removed: [String], added: [String]) {
        let lines = plan.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        return (lines.filter { $0.hasPrefix("-") && !$0.hasPrefix("---") }, lines.filter { $0.hasPrefix("+") && !$0.hasPrefix("+++") })
    }

    /// Runs a shell command on the sandbox host, as root.
    func onHost(_ command: String) throws -> ProcessOutput {
        try runProcessFull(Self.script, ["exec", "--", "sh", "-c", command])
    }

    /// A query's unaligned output, run with psql in the db service.
    func psql(_ sql: String, user: String = "app", database: String = "app") throws -> String {
        let r = try onHost("cd /srv/app && docker-compose -f docker-compose.prod.yml exec -T db psql -X -q -tA -U \(user) -d \(database) -v ON_ERROR_STOP=1 -f - <<'SQL'\n\(sql)\nSQL")
        guard r.status == 0 else { throw SandboxError("psql failed: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// GET through nginx from the controller: (HTTP status, body); status 0 when the
    /// request failed (refused, reset, timed out).
    static func get(_ path: String, timeout: Int = 10) throws -> (status: Int, body: String) {
        let r = try runProcessFull("/usr/bin/curl", ["-sS", "-m", String(timeout), "-o", "-", "-w", "\n%{http_code}", url + path])
        var lines = r.stdout.components(separatedBy: "\n")
        let status = Int(lines.popLast() ?? "") ?? 0
        return (r.status == 0 ? status : 0, lines.joined(separator: "\n"))
    }

    /// The gunicorn worker count of the replica answering /info, once it is stable: polls
    /// until `expected` (or the timeout), since freshly started masters boot workers one by one.
    static func workers(expecting expected: Int, within seconds: Double = 30) throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var last = -1
        repeat {
            let info = try get("/info")
            if info.status == 200, let data = info.body.data(using: .utf8),
               let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let n = json["workers"] as? Int {
                last = n
                if n == expected { return n }
            }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < deadline
        return last
    }

    /// Names of the running containers of a compose service.
    func containers(_ service: String) throws -> [String] {
        let r = try onHost("docker ps --filter label=com.docker.compose.project=app --filter label=com.docker.compose.service=\(service) --format '{{.Names}}' | sort")
        return r.stdout.split(separator: "\n").map(String.init)
    }

    /// The run id printed by apply (`run 2026…-xxxx: applying …`).
    static func runID(_ output: String) -> String? {
        guard let range = output.range(of: #"run (\d{8}-\d{6}-[0-9a-f]{4})"#, options: .regularExpression) else { return nil }
        return String(output[range].dropFirst(4))
    }

    /// A copy of the shipped project (runbooks, templates, inventory) to break on purpose.
    static func copyOfProject() throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rbshipped-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for dir in ["runbooks", "templates"] {
            try FileManager.default.copyItem(atPath: repositoryRoot + "/" + dir, toPath: root + "/" + dir)
        }
        return root
    }
}

struct SandboxError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("shipped runbooks against the sandbox", .serialized)
struct ShippedRunbookTests {
    @Test("every shipped runbook validates, with a description and typed params")
    func validate() throws {
        let sandbox = try Sandbox.ready()
        let r = try sandbox.runbook(["validate"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("15 runbooks: 15 ok"), "\(r.stdout)")
        let list = try sandbox.runbook(["list"])
        for name in ["vertical-scale", "site-slow", "nightly-maintenance", "horizontal-scale", "rolling-restart",
                     "db-optimize", "capacity-check", "scale-workers", "rolling-update", "add-web-host", "blue-green", "canary",
                     "migrate-db", "restore-db", "autoscale-workers"] {
            #expect(list.stdout.contains(name), "\(name) missing from runbook list")
        }
    }

    @Test("the sandbox's files are what the templates render: planning the starting point changes no file")
    func templatesMatchTheSandbox() throws {
        let sandbox = try Sandbox.ready()
        let plan = try sandbox.runbook(["plan", "vertical-scale", "-p", "workers=4"])
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("/srv/app/docker-compose.prod.yml is up to date"), "\(plan.stdout)")
        #expect(plan.stdout.contains("/srv/app/gunicorn.conf.py is up to date"), "\(plan.stdout)")
        // The operator's own compose template renders the file as it is, too.
        let templated = try Sandbox.inventoryVariant("template", vars: ["compose_template": "docker-compose.prod.yml.j2"])
        let fromTemplate = try sandbox.runbook(["plan", "vertical-scale", "-p", "workers=4"], inventory: templated)
        #expect(fromTemplate.status == 0, "\(fromTemplate.stderr)")
        #expect(fromTemplate.stdout.contains("Render the compose file from the host's template  /srv/app/docker-compose.prod.yml is up to date"),
                "\(fromTemplate.stdout)")
        let upstream = try sandbox.runbook(["plan", "horizontal-scale", "-p", "replicas=1"])
        #expect(upstream.stdout.contains("/srv/app/nginx/upstream.conf is up to date"), "\(upstream.stdout)")
    }

    @Test("vertical-scale: web runs the requested gunicorn workers and is healthy; its backup restores")
    func verticalScale() throws {
        let sandbox = try Sandbox.ready()
        #expect(try Sandbox.workers(expecting: 4) == 4)
        let before = try Sandbox.file("/srv/app/docker-compose.prod.yml")
        let plan = try sandbox.runbook(["plan", "vertical-scale", "-p", "workers=6"])
        // In place: exactly one line of the operator's compose file changes.
        let diff = Sandbox.diffLines(plan.stdout)
        #expect(diff.removed == ["-    command: gunicorn --config /etc/gunicorn/gunicorn.conf.py --bind 0.0.0.0:5000 --workers 4 app:app"], "\(plan.stdout)")
        #expect(diff.added == ["+    command: gunicorn --config /etc/gunicorn/gunicorn.conf.py --bind 0.0.0.0:5000 --workers 6 app:app"], "\(plan.stdout)")
        #expect(plan.stdout.contains("validate: cd /srv/app && docker-compose -f %s config -q"), "\(plan.stdout)")
        let apply = try sandbox.runbook(["apply", "vertical-scale", "-p", "workers=6", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try Sandbox.workers(expecting: 6) == 6)
        let health = try Sandbox.get("/health")
        #expect(health.status == 200 && health.body.contains("ok"))
        let compose = try String(contentsOfFile: repositoryRoot + "/.sandbox/srv/app/docker-compose.prod.yml", encoding: .utf8)
        #expect(compose.contains("--workers 6 app:app"))
        #expect(compose.contains("# 2 x cores + 1 would be 5 on this box") && compose.contains("context: ./build          # CI builds"))

        // The dump restores into an empty database with every product; it has its own prefix
        // (and retention), apart from the nightly dumps.
        let dumps = try sandbox.onHost("ls /srv/backups/app-pre-vertical-scale-*.dump").stdout.split(separator: "\n")
        #expect(dumps.count == 1, "\(dumps)")
        let dump = try #require(dumps.first.map(String.init))
        _ = try sandbox.psql("DROP DATABASE IF EXISTS restore_check", user: "postgres", database: "postgres")
        _ = try sandbox.psql("CREATE DATABASE restore_check", user: "postgres", database: "postgres")
        let restore = try sandbox.onHost("cd /srv/app && docker-compose -f docker-compose.prod.yml exec -T db pg_restore -U postgres -d restore_check --no-owner < \(dump)")
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM product", user: "postgres", database: "restore_check") == "50000")
        _ = try sandbox.psql("DROP DATABASE restore_check", user: "postgres", database: "postgres")

        // Rolled back later from the journal, web restarts with the old file: its restart step
        // (`when: steps.compose.changed or …`) runs again although no step results are left.
        let runID = try #require(Sandbox.runID(apply.stdout))
        let rollback = try sandbox.runbook(["rollback", runID, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(rollback.stdout.contains("Restart web  ok  ran again (rollback phase 2)"), "\(rollback.stdout)")
        #expect(try Sandbox.workers(expecting: 4) == 4)
        #expect(try Sandbox.file("/srv/app/docker-compose.prod.yml") == before, "rollback restores the file byte for byte")
    }

    @Test("vertical-scale from the host's compose template: renders it, runs the new count, rollback restores the bytes")
    func verticalScaleFromTemplate() throws {
        let sandbox = try Sandbox.ready()
        let inventory = try Sandbox.inventoryVariant("template", vars: ["compose_template": "docker-compose.prod.yml.j2"])
        let before = try Sandbox.file("/srv/app/docker-compose.prod.yml")
        let plan = try sandbox.runbook(["plan", "vertical-scale", "-p", "workers=5"], inventory: inventory)
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("Render the compose file from the host's template  /srv/app/docker-compose.prod.yml: content"), "\(plan.stdout)")
        #expect(plan.stdout.contains("Set gunicorn --workers in the compose file  skip: when is false"), "\(plan.stdout)")
        #expect(Sandbox.diffLines(plan.stdout).added.contains { $0.contains("--workers 5 app:app") }, "\(plan.stdout)")
        let apply = try sandbox.runbook(["apply", "vertical-scale", "-p", "workers=5", "--yes"], inventory: inventory)
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try Sandbox.workers(expecting: 5) == 5)
        let runID = try #require(Sandbox.runID(apply.stdout))
        let rollback = try sandbox.runbook(["rollback", runID, "--yes"], inventory: inventory)
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(try Sandbox.file("/srv/app/docker-compose.prod.yml") == before)
        #expect(try Sandbox.workers(expecting: 4) == 4)
    }

    @Test("vertical-scale on a compose-v2-only host: docker compose runs it end to end")
    func verticalScaleComposeV2() throws {
        let sandbox = try Sandbox.ready()
        // compose v2 as a CLI plugin (it runs a copy of v1 and logs its arguments), and
        // `docker-compose` itself made to fail, in the sandbox host's own mount namespace only.
        let setup = """
            set -e
            d=/run/runbook-v2; mkdir -p $d/cli-plugins
            cp "$(command -v docker-compose)" $d/real-docker-compose
            printf '#!/bin/sh\nexit 127\n' > $d/no-docker-compose; chmod 755 $d/no-docker-compose
            cat > $d/cli-plugins/docker-compose <<'EOF'
            #!/bin/sh
            if [ "$1" = docker-cli-plugin-metadata ]; then
              echo '{"SchemaVersion":"0.1.0","Vendor":"runbook tests","Version":"v2.0.0","ShortDescription":"compose v2 stand-in"}'; exit 0
            fi
            shift; echo "$*" >> /run/runbook-v2/calls.log
            exec /run/runbook-v2/real-docker-compose "$@"
            EOF
            chmod 755 $d/cli-plugins/docker-compose
            mkdir -p /root/.docker && mount --bind $d /root/.docker
            mount --bind $d/no-docker-compose "$(command -v docker-compose)"
            """
        let up = try sandbox.onHost(setup)
        defer {
            _ = try? sandbox.onHost("umount \"$(command -v docker-compose)\"; umount /root/.docker; rm -rf /run/runbook-v2")
        }
        #expect(up.status == 0, "\(up.stderr)")
        #expect(try sandbox.onHost("docker compose version >/dev/null 2>&1 && ! docker-compose version >/dev/null 2>&1 && echo v2-only").stdout == "v2-only\n")
        let plan = try sandbox.runbook(["plan", "vertical-scale", "-p", "workers=3"])
        #expect(plan.stdout.contains("validate: cd /srv/app && docker compose -f %s config -q"), "\(plan.stdout)")
        let apply = try sandbox.runbook(["apply", "vertical-scale", "-p", "workers=3", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try Sandbox.workers(expecting: 3) == 3)
        let calls = try sandbox.onHost("cat /run/runbook-v2/calls.log").stdout
        #expect(calls.contains("config -q") && calls.contains("up -d"), "\(calls)")
    }

    @Test("site-slow: kills the long query, drops to 2 workers, healthy; rollback brings the workers back")
    func siteSlow() async throws {
        let sandbox = try Sandbox.ready()
        #expect(try Sandbox.workers(expecting: 4) == 4)
        // A two-minute query as the app's user, the kind a stuck request leaves running. It runs
        // through psql in the db container, not through the app: gunicorn's 30 s worker timeout
        // would end the request first whenever a loaded machine is slow to reach the kill.
        let slow = onOwnThread {
            try sandbox.onHost("cd /srv/app && docker-compose -f docker-compose.prod.yml exec -T db psql -X -U app -d app -c 'SELECT pg_sleep(120)'")
        }
        var running = ""
        for _ in 0..<40 {
            running = try sandbox.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active' AND now() - query_start > interval '3 seconds'")
            if running == "1" { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(running == "1", "the long query did not start")
        let apply = try sandbox.runbook(["apply", "site-slow", "-p", "older_than=3s", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("SELECT pg_sleep"), "the plan lists the query it kills")
        let ended = try await slow.value
        #expect(ended.status != 0 && ended.stderr.contains("terminating connection due to administrator command"),
                "\(ended.stdout)\(ended.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'") == "0")
        #expect(try Sandbox.workers(expecting: 2) == 2)
        #expect(try Sandbox.get("/health").status == 200)

        let runID = try #require(Sandbox.runID(apply.stdout))
        let rollback = try sandbox.runbook(["rollback", runID, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(rollback.stdout.contains("ran again (rollback phase 2)"), "\(rollback.stdout)")
        #expect(try Sandbox.workers(expecting: 4) == 4)
        #expect(try Sandbox.get("/health").status == 200)
    }

    // The horizontal-scale tests below are about replicas, upstreams and rollback: their
    // latency gate is set far above the sandbox's latency on a machine busy with the other
    // suites (the gate itself is tested in LoadTestTests and WebStepTests).
    @Test("horizontal-scale: N replicas behind an upstream of N servers, each answering; a bad template rolls back")
    func horizontalScale() throws {
        let sandbox = try Sandbox.ready()
        let apply = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=3", "-p", "p95_under=5s", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try sandbox.containers("web") == ["app_web_1", "app_web_2", "app_web_3"])
        let upstreamPath = repositoryRoot + "/.sandbox/srv/app/nginx/upstream.conf"
        let upstream = try String(contentsOfFile: upstreamPath, encoding: .utf8)
        let servers = upstream.split(separator: "\n").filter { $0.trimmingCharacters(in: .whitespaces).hasPrefix("server ") }
        #expect(servers.count == 3)
        #expect(upstream.contains("least_conn;") && upstream.contains("keepalive 32;"))
        #expect(servers.allSatisfy { $0.contains("max_fails=3 fail_timeout=30s") })
        var replicas = Set<String>()
        for _ in 0..<60 where replicas.count < 3 {
            let r = try Sandbox.get("/whoami")
            #expect(r.status == 200)
            if let id = r.body.split(separator: " ").first { replicas.insert(String(id)) }
        }
        #expect(replicas.count == 3, "answered by \(replicas)")

        // A template nginx rejects: the reload fails, the upstream and the count come back.
        let broken = try Sandbox.copyOfProject()
        let template = broken + "/templates/nginx-upstream.conf.j2"
        try String(contentsOfFile: template, encoding: .utf8).replacingOccurrences(of: "least_conn;", with: "least_conn_typo;")
            .write(toFile: template, atomically: true, encoding: .utf8)
        let failed = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=2", "-p", "p95_under=5s", "--yes"], root: broken)
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("rolled back"), "\(failed.stdout)")
        #expect(try String(contentsOfFile: upstreamPath, encoding: .utf8) == upstream)
        #expect(try sandbox.containers("web").count == 3)
        #expect(try Sandbox.get("/health").status == 200)
    }

    @Test("horizontal-scale records the count in the compose file and scales down upstream first, then containers")
    func horizontalScalePersistsAndScalesDownSafely() throws {
        let sandbox = try Sandbox.ready()
        let up = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=3", "-p", "p95_under=5s", "--yes"])
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        var compose = try String(contentsOfFile: repositoryRoot + "/.sandbox/srv/app/docker-compose.prod.yml", encoding: .utf8)
        #expect(compose.contains("    depends_on: [db]\n    scale: 3\n"), "\(compose)")
        // A routine `up -d` keeps the three replicas the upstream names.
        let routine = try sandbox.onHost("cd /srv/app && docker-compose -f docker-compose.prod.yml up -d >/dev/null 2>&1 && echo done")
        #expect(routine.stdout == "done\n", "\(routine.stderr)")
        #expect(try sandbox.containers("web").count == 3)

        let plan = try sandbox.runbook(["plan", "horizontal-scale", "-p", "replicas=2"])
        #expect(plan.stdout.contains("Take the extra replicas out of the upstream first (scaling down)  /srv/app/nginx/upstream.conf: content"),
                "\(plan.stdout)")
        let down = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=2", "-p", "p95_under=5s", "--yes"])
        #expect(down.status == 0, "\(down.stdout)\(down.stderr)")
        let lines = down.stdout.split(separator: "\n").map(String.init)
        let reload = lines.firstIndex { $0.contains("Reload nginx before their containers stop") && $0.contains("changed") }
        let scale = lines.firstIndex { $0.contains("Scale web") && $0.contains("changed") }
        #expect(reload != nil && scale != nil && reload! < scale!, "\(down.stdout)")
        #expect(try sandbox.containers("web") == ["app_web_1", "app_web_2"])
        compose = try String(contentsOfFile: repositoryRoot + "/.sandbox/srv/app/docker-compose.prod.yml", encoding: .utf8)
        #expect(compose.contains("    scale: 2\n"))
        #expect(try Sandbox.get("/health").status == 200)
    }

    @Test("horizontal-scale with one replica broken fails its per-replica check and rolls back, though nginx still answers")
    func horizontalScaleCatchesABrokenReplica() throws {
        let sandbox = try Sandbox.ready()
        let two = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=2", "-p", "p95_under=5s", "--yes"])
        #expect(two.status == 0, "\(two.stdout)\(two.stderr)")
        let upstream = try Sandbox.file("/srv/app/nginx/upstream.conf")
        let compose = try Sandbox.file("/srv/app/docker-compose.prod.yml")
        // app_web_2 answers /health with 503 from now on; nginx retries it on the next replica.
        let broke = try sandbox.onHost("docker exec -u root app_web_2 touch /tmp/unhealthy && echo broken")
        #expect(broke.stdout == "broken\n", "\(broke.stderr)")
        for _ in 0..<10 { #expect(try Sandbox.get("/health").status == 200) }

        let failed = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=3", "-p", "p95_under=5s", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("replica app_web_2"), "\(failed.stdout)")
        #expect(failed.stdout.contains("rolled back"), "\(failed.stdout)")
        #expect(try sandbox.containers("web") == ["app_web_1", "app_web_2"])
        #expect(try Sandbox.file("/srv/app/nginx/upstream.conf") == upstream)
        #expect(try Sandbox.file("/srv/app/docker-compose.prod.yml") == compose)
        for _ in 0..<10 { #expect(try Sandbox.get("/health").status == 200) }
    }

    @Test("the sandbox comes back from down as it was left: scaled web replicas, nginx healthy")
    func downAndUpKeepsTheStack() throws {
        let sandbox = try Sandbox.ready()
        let scale = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=2", "-p", "p95_under=5s", "--yes"])
        #expect(scale.status == 0, "\(scale.stdout)\(scale.stderr)")
        let down = try runProcessFull(Sandbox.script, ["down"])
        #expect(down.status == 0, "\(down.stderr)")
        // Down means no namespace left (nothing is probed over the network meanwhile: without
        // the namespace, 10.233.0.2 is not on this machine).
        #expect(!FileManager.default.fileExists(atPath: "/run/netns/rb-sandbox"), "down left the namespace")
        #expect(try runProcessFull(Sandbox.script, ["status"]).stdout.contains("host:    down"))
        let up = try runProcessFull(Sandbox.script, ["up"])
        #expect(up.status == 0, "\(up.stderr)")
        #expect(try sandbox.containers("web") == ["app_web_1", "app_web_2"])
        #expect(try Sandbox.get("/health").status == 200)
    }

    @Test("rolling-restart: every replica restarts while a client sees no failed request")
    func rollingRestart() async throws {
        let sandbox = try Sandbox.ready()
        let scale = try sandbox.runbook(["apply", "horizontal-scale", "-p", "replicas=2", "-p", "p95_under=5s", "--yes"])
        #expect(scale.status == 0, "\(scale.stdout)\(scale.stderr)")
        let startedAt = { () throws -> String in
            try sandbox.onHost("docker inspect -f '{{.State.StartedAt}}' app_web_1 app_web_2").stdout
        }
        let before = try startedAt()
        let stop = ManagedFlag()
        let client = onOwnThread { () -> (ok: Int, failed: [String]) in
            var ok = 0
            var failed: [String] = []
            while !stop.isSet {
                let r = try Sandbox.get("/whoami")
                if r.status == 200 { ok += 1 } else { failed.append("status \(r.status): \(r.body.prefix(200))") }
            }
            return (ok, failed)
        }
        let apply = try sandbox.runbook(["apply", "rolling-restart", "-p", "drain=1", "--yes"])
        stop.set()
        let seen = try await client.value
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(seen.failed.isEmpty, "failed requests during the restart: \(seen.failed.prefix(5))")
        #expect(seen.ok > 20, "the client made only \(seen.ok) requests")
        let after = try startedAt()
        let (b, a) = (before.split(separator: "\n"), after.split(separator: "\n"))
        #expect(b.count == 2 && a.count == 2 && b[0] != a[0] && b[1] != a[1], "not every replica restarted: \(before) → \(after)")
        let upstream = try String(contentsOfFile: repositoryRoot + "/.sandbox/srv/app/nginx/upstream.conf", encoding: .utf8)
        #expect(!upstream.contains(" down;"), "a replica was left drained")
    }

    @Test("rolling-restart refuses a single replica: a restart would be an outage")
    func rollingRestartNeedsTwo() throws {
        let sandbox = try Sandbox.ready()
        let apply = try sandbox.runbook(["apply", "rolling-restart", "--yes"])
        #expect(apply.status == 1)
        #expect((apply.stdout + apply.stderr).contains("needs at least 2 running replicas"), "\(apply.stdout)")
        #expect(try sandbox.containers("web") == ["app_web_1"])
    }

    @Test("restore-db: the latest dump restored beside the live database and counted; swap=true puts it in place; rollback puts the live one back")
    func restoreDB() throws {
        let sandbox = try Sandbox.ready()
        _ = try? sandbox.psql("DROP DATABASE IF EXISTS app_restore WITH (FORCE)", database: "postgres")
        _ = try? sandbox.psql("DROP DATABASE IF EXISTS app_before_restore WITH (FORCE)", database: "postgres")
        // The row of an earlier run of this test that stopped half-way, if any.
        _ = try sandbox.psql("DELETE FROM tenant WHERE name = 'after the backup'")
        let backup = try sandbox.runbook(["apply", "nightly-maintenance", "--yes"])
        #expect(backup.status == 0, "\(backup.stdout)\(backup.stderr)")
        // A row written after the backup: the restored database must not have it.
        _ = try sandbox.psql("INSERT INTO tenant (name) VALUES ('after the backup')")
        let live = try sandbox.psql("SELECT count(*) FROM product")

        let plan = try sandbox.runbook(["plan", "restore-db"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("restore /srv/backups/app-") && plan.stdout.contains("into app_restore"), "\(plan.stdout)")
        #expect(plan.stdout.contains("skip: when is false"), "\(plan.stdout)")

        let drill = try sandbox.runbook(["apply", "restore-db", "--yes"])
        #expect(drill.status == 0, "\(drill.stdout)\(drill.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM product", database: "app_restore") == live)
        #expect(try sandbox.psql("SELECT count(*) FROM tenant WHERE name = 'after the backup'", database: "app_restore") == "0")
        // A second drill refuses: the scratch database is there.
        let again = try sandbox.runbook(["plan", "restore-db"])
        #expect(again.status == 1 && (again.stdout + again.stderr).contains("the database app_restore already exists"), "\(again.stdout)\(again.stderr)")
        let dropped = try sandbox.runbook(["rollback", try #require(Sandbox.runID(drill.stdout)), "--yes"])
        #expect(dropped.status == 0, "\(dropped.stdout)\(dropped.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM pg_database WHERE datname = 'app_restore'", database: "postgres") == "0")

        let swap = try sandbox.runbook(["apply", "restore-db", "-p", "swap=true", "--yes"])
        #expect(swap.status == 0, "\(swap.stdout)\(swap.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM tenant WHERE name = 'after the backup'") == "0")
        #expect(try sandbox.psql("SELECT count(*) FROM tenant WHERE name = 'after the backup'", database: "app_before_restore") == "1")
        #expect(try Sandbox.get("/products").status == 200)
        let back = try sandbox.runbook(["rollback", try #require(Sandbox.runID(swap.stdout)), "--yes"])
        #expect(back.status == 0, "\(back.stdout)\(back.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM tenant WHERE name = 'after the backup'") == "1")
        #expect(try sandbox.psql("SELECT count(*) FROM pg_database WHERE datname IN ('app_restore', 'app_before_restore')", database: "postgres") == "0")
        #expect(try Sandbox.get("/health").status == 200)
        _ = try sandbox.psql("DELETE FROM tenant WHERE name = 'after the backup'")
    }

    @Test("restore drill: nightly-maintenance with drill=true restores its new dump and finds every row count equal; a corrupted dump fails restore-db's drill")
    func restoreDrill() throws {
        let sandbox = try Sandbox.ready()
        let r = try sandbox.runbook(["apply", "nightly-maintenance", "-p", "drill=true", "--yes"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("product: 50000 rows"), "\(r.stdout)")
        #expect(r.stdout.contains("every table's row count equals app's"), "\(r.stdout)")
        #expect(try sandbox.psql("SELECT count(*) FROM pg_database WHERE datname = 'app_drill'", database: "postgres") == "0")

        let newest = try sandbox.onHost("ls -1t /srv/backups/app-*.dump | head -n 1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(newest.hasPrefix("/srv/backups/app-"), "\(newest)")
        #expect(try sandbox.onHost("truncate -s 3000 \(newest)").status == 0)
        let drill = try sandbox.runbook(["apply", "restore-db", "-p", "drill=true", "--yes"])
        #expect(drill.status == 1, "\(drill.stdout)\(drill.stderr)")
        #expect(drill.stdout.contains("Drill: restore") && drill.stdout.contains("FAILED"), "\(drill.stdout)")
        #expect(try sandbox.psql("SELECT count(*) FROM pg_database WHERE datname = 'app_drill'", database: "postgres") == "0")
    }

    @Test("nightly-maintenance: a restorable backup, old ones pruned, last_vacuum set")
    func nightlyMaintenance() throws {
        let sandbox = try Sandbox.ready()
        let old = (1...5).map { "/srv/backups/app-2020010\($0)-030000.dump" }
        #expect(try sandbox.onHost("touch \(old.joined(separator: " "))").status == 0)
        _ = try sandbox.psql("SELECT 1") // the vacuum below must set last_vacuum afresh
        let before = try sandbox.psql("SELECT coalesce(max(last_vacuum)::text, 'never') FROM pg_stat_user_tables WHERE relname = 'product'")
        let apply = try sandbox.runbook(["apply", "nightly-maintenance", "-p", "keep=3", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let dumps = try sandbox.onHost("ls /srv/backups/").stdout.split(separator: "\n").map(String.init)
        #expect(dumps.count == 3, "\(dumps)")
        #expect(dumps.contains("app-20200104-030000.dump") && dumps.contains("app-20200105-030000.dump"))
        let fresh = try #require(dumps.first { !$0.hasPrefix("app-2020") })
        let list = try sandbox.onHost("cd /srv/app && docker-compose -f docker-compose.prod.yml exec -T db pg_restore --list < /srv/backups/\(fresh) | grep -c 'TABLE DATA'")
        #expect(Int(list.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 >= 4, "\(list.stdout)")
        let after = try sandbox.psql("SELECT coalesce(max(last_vacuum)::text, 'never') FROM pg_stat_user_tables WHERE relname = 'product'")
        #expect(after != "never" && after != before, "last_vacuum \(before) → \(after)")
        // The new dump is also off the host: on the controller, the same bytes.
        let offsite = repositoryRoot + "/.sandbox/offsite/sandbox"
        #expect(try FileManager.default.contentsOfDirectory(atPath: offsite) == [fresh])
        #expect(try FileManager.default.attributesOfItem(atPath: offsite)[.posixPermissions] as? Int == 0o700)
        #expect(try Data(contentsOf: URL(fileURLWithPath: offsite + "/" + fresh)) == (try Sandbox.file("/srv/backups/" + fresh)))
        #expect(apply.stdout.contains("Off-host copy: the new dump to the controller, checksummed"), "\(apply.stdout)")
    }

    @Test("nightly-maintenance from cron: the installed crontab line runs it and logs the run")
    func nightlyMaintenanceFromCron() throws {
        let sandbox = try Sandbox.ready()
        let (program, crontabFile) = try StandInCrontab.make()
        let dir = (crontabFile as NSString).deletingLastPathComponent
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var environment = ProcessInfo.processInfo.environment
        environment["RUNBOOK_CRONTAB"] = program
        environment["NO_COLOR"] = "1"
        let install = try runProcessFull(repositoryRoot + "/.build/debug/runbook",
                                         ["schedule", "--install", "--yes", "-i", Sandbox.inventory, "--root", repositoryRoot,
                                          "--state-dir", sandbox.stateDir], environment: environment)
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        let crontab = try String(contentsOfFile: crontabFile, encoding: .utf8)
        let line = try #require(crontab.split(separator: "\n").first { $0.hasPrefix("0 3 * * * ") && $0.contains("nightly-maintenance") })
        // What cron hands to /bin/sh: everything after the five time fields, `\%` read as `%`.
        let command = String(line.dropFirst("0 3 * * * ".count)).replacingOccurrences(of: "\\%", with: "%")
        let run = try runProcessFull("/bin/sh", ["-c", command],
                                     environment: ["PATH": "/usr/bin:/bin", "HOME": dir, "SHELL": "/bin/sh", "LOGNAME": "root"],
                                     currentDirectory: "/")
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        let log = try String(contentsOfFile: sandbox.stateDir + "/logs/nightly-maintenance.log", encoding: .utf8)
        #expect(log.contains("== ") && log.contains("runbook apply nightly-maintenance"), "\(log)")
        #expect(log.contains("applying nightly-maintenance to sandbox") && log.contains("succeeded"), "\(log)")
        let dumps = try sandbox.onHost("ls /srv/backups/").stdout.split(separator: "\n")
        #expect(dumps.count == 1, "the cron run made one dump: \(dumps)")
    }

    @Test("a scheduled nightly-maintenance whose backup fails posts one notification; with the receiver down the exit code is the same")
    func scheduledFailureNotifies() throws {
        let sandbox = try Sandbox.ready()
        let hook = try WebhookReceiver()
        defer { hook.stop() }
        // The backup directory's parent is a file: mkdir fails when the dump starts.
        #expect(try sandbox.onHost("rm -rf /srv/backups-broken && touch /srv/backups-broken && echo ok").stdout == "ok\n")
        defer { _ = try? sandbox.onHost("rm -f /srv/backups-broken") }
        var inventory = try String(contentsOfFile: try Sandbox.inventoryVariant("notify", vars: ["backup_dir": "/srv/backups-broken/db"]),
                                   encoding: .utf8)
        inventory = inventory.replacingOccurrences(of: "\ndefaults:\n", with: "\ndefaults:\n  notify:\n    - { webhook: \"http://127.0.0.1:\(hook.port)/ops\", retries: 0, timeout: 3s }\n")
        let inventoryPath = repositoryRoot + "/.sandbox/inventory-notify.yml"
        try inventory.write(toFile: inventoryPath, atomically: true, encoding: .utf8)

        let (program, crontabFile) = try StandInCrontab.make()
        let dir = (crontabFile as NSString).deletingLastPathComponent
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var environment = ProcessInfo.processInfo.environment
        environment["RUNBOOK_CRONTAB"] = program
        environment["NO_COLOR"] = "1"
        let install = try runProcessFull(repositoryRoot + "/.build/debug/runbook",
                                         ["schedule", "--install", "--yes", "-i", inventoryPath, "--root", repositoryRoot,
                                          "--state-dir", sandbox.stateDir], environment: environment)
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        let crontab = try String(contentsOfFile: crontabFile, encoding: .utf8)
        let line = try #require(crontab.split(separator: "\n").first { $0.hasPrefix("0 3 * * * ") && $0.contains("nightly-maintenance") })
        let command = String(line.dropFirst("0 3 * * * ".count)).replacingOccurrences(of: "\\%", with: "%")
        func cron() throws -> ProcessOutput {
            try runProcessFull("/bin/sh", ["-c", command], environment: ["PATH": "/usr/bin:/bin", "HOME": dir, "SHELL": "/bin/sh", "LOGNAME": "root"],
                               currentDirectory: "/")
        }
        let run = try cron()
        #expect(run.status == 1, "\(run.stdout)\(run.stderr)")
        #expect(hook.received.count == 1, "\(hook.received)")
        let event = try #require(hook.body(0))
        let log = try String(contentsOfFile: sandbox.stateDir + "/logs/nightly-maintenance.log", encoding: .utf8)
        let runID = try #require(Sandbox.runID(log))
        #expect(event["run_id"] as? String == runID, "\(event)")
        #expect(event["runbook"] as? String == "nightly-maintenance")
        #expect(event["hosts"] as? [String] == ["sandbox"])
        let failed = try #require((event["failed_steps"] as? [[String: Any]])?.first)
        #expect(failed["host"] as? String == "sandbox" && failed["step"] as? String == "Back up the database", "\(failed)")
        #expect(log.contains("notified webhook"), "\(log)")

        hook.stop()
        let unnotified = try cron()
        #expect(unnotified.status == 1, "\(unnotified.stdout)\(unnotified.stderr)")
        let after = try String(contentsOfFile: sandbox.stateDir + "/logs/nightly-maintenance.log", encoding: .utf8)
        #expect(after.contains("warning: notification to webhook http://127.0.0.1:\(hook.port)/ops failed"), "\(after)")
    }

    @Test("diagnose: every metric with the guide's levels; under a CPU load, CPU critical and vertical-scale or scale-workers next")
    func diagnose() throws {
        let sandbox = try Sandbox.ready()
        func metrics(_ r: ProcessOutput) throws -> [String: [String: Any]] {
            let line = try #require(r.stdout.split(separator: "\n").first)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let list = report["metrics"] as? [[String: Any]] ?? []
            return Dictionary(uniqueKeysWithValues: list.map { ($0["name"] as? String ?? "", $0) })
        }
        let calm = try sandbox.runbook(["diagnose", "--window", "2s", "--json"])
        let seen = try metrics(calm)
        // Every metric the guide names is read, with its levels; the database through the
        // compose service, latency through nginx, the queue from the app.
        for name in ["cpu_percent", "memory_percent", "swap_percent", "disk_percent:/", "pg_connections", "pg_long_queries",
                     "pg_cache_hit_percent", "p95_ms", "error_percent", "queue_pending"] {
            #expect(seen[name] != nil, "\(name) missing: \(calm.stdout)")
        }
        #expect(seen["cpu_percent"]?["warning"] as? Double == 70 && seen["cpu_percent"]?["critical"] as? Double == 85)
        #expect(seen["p95_ms"]?["warning"] as? Double == 500 && seen["pg_connections"]?["critical"] as? Double == 95)
        // Other suites may be loading this machine's CPU meanwhile: what is not CPU is ok.
        for name in ["memory_percent", "disk_percent:/", "pg_connections", "pg_long_queries", "error_percent", "queue_pending"] {
            #expect(seen[name]?["state"] as? String == "ok", "\(name): \(seen[name] ?? [:])")
        }
        if seen.values.allSatisfy({ $0["state"] as? String == "ok" }) { #expect(calm.status == 0) } else { #expect(calm.status == 1) }

        // A CPU load on every core of the host, bounded to 40 s, its pipes closed so the call returns at once.
        let cores = Int(try sandbox.onHost("nproc").stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 2
        let burn = "for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done 2>/dev/null; "
            + "for i in $(seq \(cores)); do setsid timeout 40 sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & echo $!; done"
        let pids = try sandbox.onHost("bash -c \(shellQuote(burn))").stdout.split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count == cores)
        defer { for pid in pids { kill(-pid, SIGKILL); kill(pid, SIGKILL) } }
        let loaded = try sandbox.runbook(["diagnose", "--window", "4s"])
        #expect(loaded.status == 1, "\(loaded.stdout)\(loaded.stderr)")
        let cpuLine = try #require(loaded.stdout.split(separator: "\n").first { $0.contains("CPU (4s)") })
        #expect(cpuLine.hasSuffix("critical"), "\(loaded.stdout)")
        #expect(loaded.stdout.contains("runbook plan vertical-scale -p workers=") || loaded.stdout.contains("runbook plan scale-workers"), "\(loaded.stdout)")
    }

    @Test("with PostgreSQL reached by host and port (no compose service): nightly-maintenance, capacity-check and site-slow")
    func databaseByHostAndPort() throws {
        let sandbox = try Sandbox.ready()
        // The database as a managed server would be: an address, a port and a password (the
        // app's, from .env.prod, given as the secret DB_PASSWORD); psql and pg_dump run on the host.
        let address = try sandbox.onHost("docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' app_db_1")
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!address.isEmpty)
        let env = try String(contentsOfFile: repositoryRoot + "/.sandbox/srv/app/.env.prod", encoding: .utf8)
        let password = try #require(env.split(separator: "\n").first { $0.hasPrefix("POSTGRES_PASSWORD=") }).dropFirst("POSTGRES_PASSWORD=".count)
        let inventory = try Sandbox.inventoryVariant("managed-db", vars: ["db_via": "direct", "db_host": address, "db_port": "5432"])
        let secrets = ["RUNBOOK_SECRET_DB_PASSWORD": String(password)]

        let plan = try sandbox.runbook(["plan", "nightly-maintenance", "-v"], inventory: inventory, environment: secrets)
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("-h \(address)") && !plan.stdout.contains("exec -T"), "\(plan.stdout)")
        #expect(!plan.stdout.contains(String(password)) && !plan.stderr.contains(String(password)), "the password is never shown")
        let apply = try sandbox.runbook(["apply", "nightly-maintenance", "--yes"], inventory: inventory, environment: secrets)
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let dumps = try sandbox.onHost("ls /srv/backups/").stdout.split(separator: "\n").map(String.init)
        let dump = try #require(dumps.first)
        let list = try sandbox.onHost("pg_restore --list /srv/backups/\(dump) | grep -c 'TABLE DATA'")
        #expect(Int(list.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 >= 4, "\(list.stdout)\(list.stderr)")

        let capacity = try sandbox.runbook(["apply", "capacity-check", "-p", "cpu_critical=100", "--yes"], inventory: inventory, environment: secrets)
        #expect(capacity.status == 0, "\(capacity.stdout)\(capacity.stderr)")

        let slow = try sandbox.runbook(["apply", "site-slow", "-p", "older_than=1m", "-p", "prune=false", "--yes"],
                                       inventory: inventory, environment: secrets)
        #expect(slow.status == 0, "\(slow.stdout)\(slow.stderr)")
        #expect(try Sandbox.workers(expecting: 2) == 2)
    }

    @Test("capacity-check exits 1 when a critical threshold is exceeded and 0 when none is")
    func capacityCheck() throws {
        let sandbox = try Sandbox.ready()
        let exceeded = try sandbox.runbook(["apply", "capacity-check", "-p", "disk_critical=1", "--yes"])
        #expect(exceeded.status == 1)
        #expect(exceeded.stdout.contains("a critical threshold is exceeded"), "\(exceeded.stdout)")
        #expect(exceeded.stdout.contains("(limit 1)"))
        // CPU is sampled over half a second while other suites build and test on this
        // machine: the passing case allows any CPU load.
        let fine = try sandbox.runbook(["apply", "capacity-check", "-p", "cpu_critical=100", "--yes"])
        #expect(fine.status == 0, "\(fine.stdout)\(fine.stderr)")
        #expect(fine.stdout.contains("disk_max_percent") || fine.stdout.contains("disk"), "the plan shows the gathered facts")
    }

    @Test("db-optimize: reports slow queries, creates the index concurrently, analyzes; rollback drops only the index its run built")
    func dbOptimize() throws {
        let sandbox = try Sandbox.ready()
        let before = try sandbox.psql("SELECT coalesce(max(last_analyze)::text, 'never') FROM pg_stat_user_tables WHERE relname = 'product'")
        let apply = try sandbox.runbook(["apply", "db-optimize", "-p", "index_name=idx_product_tenant_active",
                                         "-p", "index_on=product(tenant_id, active)", "-p", "index_where=active = true", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("pg_stat_statements"))
        #expect(apply.stdout.contains("CREATE INDEX CONCURRENTLY \"idx_product_tenant_active\" ON \"product\" (\"tenant_id\", \"active\")"),
                "\(apply.stdout)")
        let index = try sandbox.psql("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_product_tenant_active'")
        #expect(index.contains("(tenant_id, active) WHERE (active = true)"), "\(index)")
        #expect(try sandbox.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_product_tenant_active'::regclass") == "t")
        let after = try sandbox.psql("SELECT coalesce(max(last_analyze)::text, 'never') FROM pg_stat_user_tables WHERE relname = 'product'")
        #expect(after != "never" && after != before)
        let runID = try #require(Sandbox.runID(apply.stdout))

        // The index exists now: the same request, given as table and columns, leaves it as it
        // is, and rolling back that run leaves it too.
        let again = try sandbox.runbook(["apply", "db-optimize", "-p", "index_name=idx_product_tenant_active", "-p", "index_table=product",
                                         "-p", "index_columns=tenant_id, active", "-p", "index_where=active = true", "--yes"])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("= Create the index concurrently  index idx_product_tenant_active exists and is valid"), "\(again.stdout)")
        let againID = try #require(Sandbox.runID(again.stdout))
        let keep = try sandbox.runbook(["rollback", againID, "--yes"])
        #expect(keep.status == 0, "\(keep.stdout)\(keep.stderr)")
        #expect(try sandbox.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_product_tenant_active'::regclass") == "t")

        // Rolling back the run that built it drops it.
        let rollback = try sandbox.runbook(["rollback", runID, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(try sandbox.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_product_tenant_active'") == "0")

        let missing = try sandbox.runbook(["apply", "db-optimize", "-p", "index_name=idx_x", "--yes"])
        #expect(missing.status == 1 && missing.stdout.contains("index_name needs index_on"), "\(missing.stdout)")
    }

    @Test("pg_sql via docker: psql runs in the db container over TCP, the password only in its environment")
    func pgSQLViaDocker() throws {
        let sandbox = try Sandbox.ready()
        let root = try Sandbox.copyOfProject()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let password = try sandbox.onHost("sed -n 's/^POSTGRES_PASSWORD=//p' /srv/app/.env.prod").stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!password.isEmpty)
        let result = "/var/tmp/rbtest-via-docker-\(UUID().uuidString)"
        defer { _ = try? sandbox.onHost("rm -f \(result)") }
        // host: db is the container's own address on the compose network, not loopback:
        // the official image asks for the password there (scram-sha-256), so a wrong one fails.
        try """
            name: via-docker
            description: count the products from inside the db container
            hosts: sandbox
            steps:
              - id: count
                name: Count products
                pg_sql: { database: app, user: app, host: db, password: "{{ secrets.db_password }}", via: docker, container: app_db_1, sql: "SELECT count(*) FROM product;" }
              - name: Record the count
                command: { run: "echo {{ steps.count.stdout | trim | quote }} > \(result)" }
            """.write(toFile: root + "/runbooks/via-docker.yml", atomically: true, encoding: .utf8)
        func secret(_ value: String) throws {
            let secrets = sandbox.stateDir + "/secrets.env"
            try "db_password=\(value)\n".write(toFile: secrets, atomically: true, encoding: .utf8)
            chmod(secrets, 0o600)
        }
        try secret(password)
        let plan = try sandbox.runbook(["plan", "via-docker", "-v"], root: root)
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("docker exec -i -e PGPASSWORD -e PGAPPNAME -e PGCONNECT_TIMEOUT app_db_1 psql -h db -U app -d app -w"), "\(plan.stdout)")
        let apply = try sandbox.runbook(["apply", "via-docker", "--yes"], root: root)
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let count = try sandbox.onHost("cat \(result)").stdout
        #expect(count.contains(" 50000\n(1 row)"), "\(count) \(apply.stdout)")
        #expect(!(plan.stdout + apply.stdout + apply.stderr).contains(password))

        try secret("wrong-" + password)
        let wrong = try sandbox.runbook(["apply", "via-docker", "--yes"], root: root)
        #expect(wrong.status == 1, "\(wrong.stdout)\(wrong.stderr)")
        #expect(wrong.stdout.contains("password authentication failed for user \"app\""), "\(wrong.stdout)")
    }

    @Test("scale-workers: N queue workers run and are alive, up and down")
    func scaleWorkers() throws {
        let sandbox = try Sandbox.ready()
        let up = try sandbox.runbook(["apply", "scale-workers", "-p", "replicas=3", "--yes"])
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        #expect(try sandbox.containers("worker").count == 3)
        #expect(try Sandbox.get("/queue").body.contains("\"workers\": 3,"))
        let down = try sandbox.runbook(["apply", "scale-workers", "-p", "replicas=1", "--yes"])
        #expect(down.status == 0, "\(down.stdout)\(down.stderr)")
        #expect(try sandbox.containers("worker") == ["app_worker_1"])
        #expect(try Sandbox.get("/queue").body.contains("\"workers\": 1,"))
    }

    @Test("autoscale-workers: 2000 pending jobs raise the workers to max and the queue drains; an empty queue lowers them to min")
    func autoscaleWorkers() throws {
        let sandbox = try Sandbox.ready()
        _ = try sandbox.psql("DELETE FROM job")
        _ = try sandbox.psql("INSERT INTO job (payload) SELECT 'job ' || i FROM generate_series(1, 2000) AS i")
        let plan = try sandbox.runbook(["plan", "autoscale-workers", "-p", "max=4"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        // The plan shows the depth it read and why it chose N (a worker may already have taken a few).
        #expect(plan.stdout.contains(" pending, 1 running → 4 workers (") && plan.stdout.contains("≥ 1000: the most workers, max 4)"), "\(plan.stdout)")
        let up = try sandbox.runbook(["apply", "autoscale-workers", "-p", "max=4", "--yes"])
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        #expect(try sandbox.containers("worker").count == 4)
        // The queue drains.
        var pending = -1
        for _ in 0..<240 {
            let queue = try Sandbox.get("/queue")
            if let data = queue.body.data(using: .utf8), let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
               let n = json["pending"] as? Int {
                pending = n
                if n == 0 { break }
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        #expect(pending == 0, "\(pending) jobs still pending")
        let down = try sandbox.runbook(["apply", "autoscale-workers", "-p", "max=4", "--yes"])
        #expect(down.status == 0, "\(down.stdout)\(down.stderr)")
        #expect(down.stdout.contains("an empty queue: the fewest workers, min 1"), "\(down.stdout)")
        #expect(try sandbox.containers("worker") == ["app_worker_1"])
        let compose = try String(decoding: Sandbox.file("/srv/app/docker-compose.prod.yml"), as: UTF8.self)
        #expect(compose.contains("scale: 1"), "\(compose)")
    }
}

/// A flag set once from one task and read from another.
final class ManagedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

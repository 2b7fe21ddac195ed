import Foundation
import Testing
import TestSupport

/// The web stack of `scripts/web-test` in a test host: paths and ports from `web-test env`.
struct WebStack {
    let values: [String: String]

    subscript(_ key: String) -> String {
        guard let value = values[key] else { fatalError("scripts/web-test env has no \(key)") }
        return value
    }

    /// Starts the stack in `host` unless it runs (idempotent), and reads its paths.
    static func up(_ host: String = "h1") throws -> WebStack {
        let script = repositoryRoot + "/scripts/web-test"
        let up = try runProcessFull(script, ["up", host])
        guard up.status == 0 else { throw WebStackFailed(message: "scripts/web-test up \(host) failed:\n\(up.stderr)") }
        let env = try runProcessFull(script, ["env", host])
        var values: [String: String] = [:]
        for line in env.stdout.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return WebStack(values: values)
    }
}

struct WebStackFailed: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// `service`, `nginx_reload`, `health`, `load_test` and `wait_for` against a real nginx and
/// gunicorn running in test host h1 (`scripts/web-test`), through the built binary.
@Suite("web steps: service, nginx_reload, health, load_test, wait_for", .serialized)
struct WebStepTests {
    let env: TestHosts
    let web: WebStack

    init() throws {
        env = try TestHosts.load()
        web = try WebStack.up("h1")
    }

    // MARK: Helpers

    /// `runbook apply …`, waiting while another test's run holds h1's lock.
    func apply(_ p: RunbookProject, _ arguments: [String]) throws -> ProcessOutput {
        let deadline = Date().addingTimeInterval(90)
        while true {
            let r = try p.run(["apply"] + arguments)
            if r.status == 3, (r.stdout + r.stderr).contains("is locked by run"), Date() < deadline {
                Thread.sleep(forTimeInterval: 0.5)
                continue
            }
            return r
        }
    }

    /// A command's stdout on h1, trimmed.
    func onHost(_ command: String) throws -> String {
        try env.inHost("h1", command).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// GET `url` from inside h1: the status and body (status 0: no answer).
    func get(_ url: String) throws -> (status: Int, body: String) {
        let script = """
            import sys, urllib.request, urllib.error
            try:
                r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode(), end="")
            except urllib.error.HTTPError as e:
                print(e.code); print(e.read().decode(), end="")
            except Exception as e:
                print(0); print(e)
            """
        let out = try env.inHost("h1", "\(web["WEB_PYTHON"]) -c '\(script)' '\(url)'").stdout
        let lines = out.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        return (Int(lines.first ?? "") ?? -1, lines.count > 1 ? String(lines[1]) : "")
    }

    /// The pid in a pidfile.
    func pid(_ file: String) throws -> Int {
        try #require(Int(try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    /// The children of `pid` on h1, as `PID START-TIME` lines.
    func children(_ pid: Int) throws -> [String] {
        try onHost("ps -o pid=,lstart= --ppid \(pid)").split(separator: "\n").map {
            $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        }.sorted()
    }

    /// Polls until `count()` equals `wanted` (gunicorn changes its workers asynchronously).
    func waitFor(_ wanted: Int, seconds: Double = 15, _ count: () throws -> Int) rethrows -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var last = try count()
        while last != wanted && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            last = try count()
        }
        return last
    }

    // MARK: nginx_reload

    /// A runbook that renders the stack's upstream.conf (broken on request: a missing `;`),
    /// then tests and reloads nginx, then checks the site.
    func upstreamRunbook(_ p: RunbookProject) throws {
        try p.write("templates/upstream.conf.j2", """
            # rendered by runbook
            upstream app {
                least_conn;
                server 127.0.0.1:{{ params.port }} max_fails=3 fail_timeout=30s{% if params.broken %}{% else %};{% endif %}
                keepalive 16;
            }

            """)
        try p.write("runbooks/upstream.yml", """
            name: upstream
            description: Render the nginx upstream and reload nginx
            hosts: h1
            params:
              broken: { type: bool, default: false }
              port: { type: int, default: 5000 }
            steps:
              - id: upstream
                name: Render the upstream
                template: { src: upstream.conf.j2, dest: "\(web["WEB_UPSTREAM_CONF"])" }
              - name: Reload nginx
                nginx_reload: { config: "\(web["WEB_NGINX_CONF"])" }
              - name: Check the site
                health: { url: "http://127.0.0.1:8080/health", contains: ok, retries: 5, delay: 200ms }
            """)
    }

    @Test("nginx_reload never reloads a broken upstream; rollback restores the file byte for byte")
    func nginxReloadRefusesBrokenConfig() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try upstreamRunbook(p)
        let upstreamPath = web["WEB_UPSTREAM_CONF"]
        let original = try Data(contentsOf: URL(fileURLWithPath: upstreamPath))
        defer { try? original.write(to: URL(fileURLWithPath: upstreamPath)) }
        // A valid previous version with content of its own (a comment nginx ignores).
        let previous = Data("# hand-written \(UUID().uuidString)\r\n".utf8) + original
        try previous.write(to: URL(fileURLWithPath: upstreamPath))
        let master = try pid(web["WEB_NGINX_PID"])
        let workers = try children(master)
        #expect(!workers.isEmpty)
        let errorLogBefore = try Data(contentsOf: URL(fileURLWithPath: web["WEB_NGINX_ERROR_LOG"])).count

        // The plan shows the one command: the test, and the reload only when it passes.
        let plan = try p.run(["plan", "upstream", "-p", "broken=true"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("$ nginx -c \(web["WEB_NGINX_CONF"]) -q -t && sh -c 'n=$1; shift; "), "\(plan.stdout)")
        #expect(plan.stdout.contains(" \(web["WEB_NGINX_CONF"])   (-v: whole)\n"), "\(plan.stdout)")
        // -v shows the generated wait whole, as apply runs it.
        let whole = try p.run(["plan", "upstream", "-p", "broken=true", "-v"])
        #expect(whole.stdout.contains("while [ $i -lt 300 ]; do now=$(live);") && whole.stdout.contains("' reload nginx -c \(web["WEB_NGINX_CONF"])\n"),
                "\(whole.stdout)")

        // Without rollback: the step fails with nginx's message and nothing is reloaded.
        let kept = try apply(p, ["upstream", "-p", "broken=true", "--yes", "--no-rollback"])
        #expect(kept.status == 1, "\(kept.stdout)\(kept.stderr)")
        #expect(kept.stdout.contains("Reload nginx  FAILED"), "\(kept.stdout)")
        #expect(kept.stdout.contains("[emerg]") && kept.stdout.contains("invalid parameter \"keepalive\""), "\(kept.stdout)")
        #expect(kept.stdout.contains("test failed"), "\(kept.stdout)")
        #expect(try String(contentsOfFile: upstreamPath, encoding: .utf8).contains("fail_timeout=30s\n"))
        #expect(try pid(web["WEB_NGINX_PID"]) == master)
        #expect(try children(master) == workers, "nginx started new workers: it was reloaded")
        let served = try get("http://127.0.0.1:8080/health")
        #expect(served.status == 200 && served.body == "ok\n", "\(served)")
        try previous.write(to: URL(fileURLWithPath: upstreamPath))

        // With rollback: the same failure, and the previous file is back byte for byte.
        let failed = try apply(p, ["upstream", "-p", "broken=true", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("[emerg]"), "\(failed.stdout)")
        #expect(failed.stdout.contains("rolled back"), "\(failed.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: upstreamPath)) == previous)
        #expect(try pid(web["WEB_NGINX_PID"]) == master)
        let after = try get("http://127.0.0.1:8080/whoami")
        #expect(after.status == 200 && after.body.hasPrefix("web-h1 "), "\(after)")
        // nginx's master never read the broken file: a reload of it would have logged [emerg].
        let errorLog = try Data(contentsOf: URL(fileURLWithPath: web["WEB_NGINX_ERROR_LOG"]))
        let newLines = String(decoding: errorLog.dropFirst(errorLogBefore), as: UTF8.self)
        #expect(!newLines.contains("[emerg]"), "\(newLines)")

        // A good upstream is tested, reloaded (new workers) and served.
        let ok = try apply(p, ["upstream", "--yes"])
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        #expect(try String(contentsOfFile: upstreamPath, encoding: .utf8).hasPrefix("# rendered by runbook\n"))
        #expect(try pid(web["WEB_NGINX_PID"]) == master)
        // The step returned once the reload was in effect: new workers serve, and every old one
        // still there is shutting down (its listening sockets closed).
        let serving = try onHost("ps -o pid=,lstart= --ppid \(master) -o args= | grep 'nginx: worker process$' || true")
            .split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).dropLast(3).joined(separator: " ") }
        #expect(!serving.isEmpty && serving.allSatisfy { !workers.contains($0) }, "old workers still serve: \(serving), before: \(workers)")
        #expect(try get("http://127.0.0.1:8080/health").status == 200)
    }

    // MARK: service

    @Test("service with the signal manager changes a real gunicorn's worker count")
    func serviceSignalChangesWorkers() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let pidfile = web["WEB_GUNICORN_PID"]
        try p.write("runbooks/workers.yml", """
            name: workers
            description: One gunicorn worker more or less
            hosts: h1
            params:
              signal: { type: enum, values: [TTIN, TTOU], default: TTIN }
            steps:
              - name: Signal gunicorn
                service: { name: web, action: reload, manager: signal, pidfile: "\(pidfile)", signal: "{{ params.signal }}" }
            """)
        let master = try pid(pidfile)
        let count = { try Int(self.onHost("ps --no-headers --ppid \(master) | wc -l")) ?? -1 }
        let before = try count()
        #expect(before >= 1)

        let plan = try p.run(["plan", "workers"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("reload web: send TTIN to pid \(master) (gunicorn) from \(pidfile)"), "\(plan.stdout)")
        #expect(plan.stdout.contains("kill -s TTIN \"$pid\""), "\(plan.stdout)")
        #expect(plan.stdout.contains("undo: pid=$(head -n 1 -- \(pidfile))"), "\(plan.stdout)")

        let more = try apply(p, ["workers", "--yes"])
        #expect(more.status == 0, "\(more.stdout)\(more.stderr)")
        #expect(try waitFor(before + 1, count) == before + 1)
        if before == 2 { #expect(try count() == 3) }
        #expect(try pid(pidfile) == master)

        let fewer = try apply(p, ["workers", "-p", "signal=TTOU", "--yes"])
        #expect(fewer.status == 0, "\(fewer.stdout)\(fewer.stderr)")
        #expect(try waitFor(before, count) == before)
        #expect(try get("http://127.0.0.1:5000/health").status == 200)
    }

    @Test("service stop sends TERM and waits until gunicorn has exited; stopping it again changes nothing")
    func serviceSignalStop() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        defer { _ = try? WebStack.up("h1") }
        let pidfile = web["WEB_GUNICORN_PID"]
        try p.write("runbooks/stop.yml", """
            name: stop
            description: Stop gunicorn
            hosts: h1
            steps:
              - name: Stop web
                service: { name: web, action: stop, manager: signal, pidfile: "\(pidfile)" }
              - name: Nothing answers
                wait_for: { port: 5000, state: down, timeout: 5s, delay: 100ms }
            """)
        let master = try pid(pidfile)
        let stopped = try apply(p, ["stop", "--yes"])
        #expect(stopped.status == 0, "\(stopped.stdout)\(stopped.stderr)")
        #expect(stopped.stdout.contains("Stop web  changed"), "\(stopped.stdout)")
        let state = try onHost("grep '^State:' /proc/\(master)/status 2>/dev/null || echo gone")
        #expect(state == "gone" || state.contains("Z"), "\(state)")
        #expect(!FileManager.default.fileExists(atPath: pidfile))
        let again = try p.run(["plan", "stop"])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("= Stop web  skip: web is not running"), "\(again.stdout)")
    }

    @Test("service: a missing pidfile fails the plan, except for stop; start cannot be a signal")
    func serviceSignalPlanning() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let missing = p.remoteDir + "/absent.pid"
        try p.write("runbooks/svc.yml", """
            name: svc
            description: Signals to a service that does not run
            hosts: h1
            params:
              action: { type: enum, values: [restart, reload, start, stop], default: reload }
            steps:
              - name: Signal it
                service: { name: ghost, action: "{{ params.action }}", manager: signal, pidfile: "\(missing)" }
            """)
        let reload = try p.run(["plan", "svc"])
        #expect(reload.status == 1, "\(reload.stdout)\(reload.stderr)")
        #expect(reload.stderr.contains("cannot reload ghost on h1: \(missing) does not exist"), "\(reload.stderr)")
        let stop = try p.run(["plan", "svc", "-p", "action=stop"])
        #expect(stop.status == 0, "\(stop.stdout)\(stop.stderr)")
        #expect(stop.stdout.contains("= Signal it  skip: ghost is not running"), "\(stop.stdout)")
        let start = try p.run(["plan", "svc", "-p", "action=start"])
        #expect(start.status == 2)
        #expect(start.stderr.contains("manager: signal cannot start ghost"), "\(start.stderr)")
        // A pidfile naming a process that is gone.
        try "999999\n".write(toFile: missing, atomically: true, encoding: .utf8)
        let gone = try p.run(["plan", "svc", "-p", "action=restart"])
        #expect(gone.status == 1)
        #expect(gone.stderr.contains("pid 999999 from \(missing) is not running"), "\(gone.stderr)")
    }

    // MARK: health

    @Test("health: a closed port fails after its retries")
    func healthClosedPort() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("runbooks/closed.yml", """
            name: closed
            description: Nothing listens there
            hosts: h1
            rollback: off
            steps:
              - name: Check a closed port
                health: { url: "http://127.0.0.1:5999/health", retries: 2, delay: 300ms, timeout: 2s }
            """)
        let plan = try p.run(["plan", "closed"])
        #expect(plan.stdout.contains("· Check a closed port  GET http://127.0.0.1:5999/health from h1: expect 200; 2 retries 300ms apart"), "\(plan.stdout)")
        let started = Date()
        let r = try apply(p, ["closed", "--yes"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(Date().timeIntervalSince(started) >= 0.6)
        #expect(r.stdout.contains("GET http://127.0.0.1:5999/health from h1 failed (3 attempts, 300ms apart): cannot connect to 127.0.0.1:5999"),
                "\(r.stdout)")
    }

    @Test("health over HTTPS: verified against ca_file with SNI, refused without it, insecure is a warning")
    func healthHTTPS() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let url = "https://\(web["WEB_TLS_NAME"]):\(web["WEB_TLS_PORT"])/health"
        try p.write("runbooks/tls.yml", """
            name: tls
            description: The site over HTTPS
            hosts: h1
            rollback: off
            params:
              mode: { type: enum, values: [ca, store, insecure], default: ca }
            steps:
              - name: Verified against the CA file
                when: params.mode == "ca"
                health: { url: "\(url)", resolve: 127.0.0.1, ca_file: "\(web["WEB_TLS_CA"])", contains: ok, timeout: 5s }
              - name: Verified against the host's store
                when: params.mode == "store"
                health: { url: "\(url)", resolve: 127.0.0.1, timeout: 5s }
              - name: Not verified
                when: params.mode == "insecure"
                health: { url: "\(url)", resolve: 127.0.0.1, insecure: true, contains: ok, timeout: 5s }
            """)
        let plan = try p.run(["plan", "tls"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("GET \(url) from h1: expect 200, body contains \"ok\"; certificate verified against \(web["WEB_TLS_CA"]); shop.test resolved to 127.0.0.1"),
                "\(plan.stdout)")
        let verified = try apply(p, ["tls", "--yes"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")

        // The test CA is not in the host's store: the certificate is refused.
        let refused = try apply(p, ["tls", "-p", "mode=store", "--yes"])
        #expect(refused.status == 1, "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stdout.contains("TLS failed, the certificate was not accepted"), "\(refused.stdout)")

        let insecurePlan = try p.run(["plan", "tls", "-p", "mode=insecure"])
        #expect(insecurePlan.stdout.contains("warning: insecure: the certificate of shop.test is not verified"), "\(insecurePlan.stdout)")
        #expect(insecurePlan.stdout.contains("INSECURE: certificate not verified"), "\(insecurePlan.stdout)")
        let insecure = try apply(p, ["tls", "-p", "mode=insecure", "--yes"])
        #expect(insecure.status == 0, "\(insecure.stdout)\(insecure.stderr)")

        // ca_file on a plain-HTTP URL is a mistake, said at plan time.
        try p.write("runbooks/mixed.yml", """
            name: mixed
            description: ca_file on http
            hosts: h1
            steps:
              - name: Wrong
                health: { url: "http://127.0.0.1:8080/health", ca_file: /etc/ssl/x.pem }
            """)
        let mixed = try p.run(["plan", "mixed"])
        #expect(mixed.status == 2 && mixed.stderr.contains("ca_file, insecure and resolve apply to https:// URLs only"), "\(mixed.stderr)")
    }

    @Test("health: the p95 latency gate fails on a slow endpoint and passes on a fast one")
    func healthLatencyGate() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("runbooks/latency.yml", """
            name: latency
            description: p95 under 500 ms
            hosts: h1
            rollback: off
            params:
              path: { type: string, default: /health }
            steps:
              - id: gate
                name: Latency gate
                health: { url: "http://127.0.0.1:5000{{ params.path }}", samples: 3, p95_under: 500ms, timeout: 5s, retries: 1, delay: 100ms }
              - name: Record it
                command: { run: "echo '{{ steps.gate.status }} {{ steps.gate.samples }} {{ steps.gate.p95_ms }}' > \(p.remoteDir)/gate" }
            """)
        let slow = try apply(p, ["latency", "-p", "path=/slow?ms=700", "--yes"])
        #expect(slow.status == 1, "\(slow.stdout)\(slow.stderr)")
        #expect(slow.stdout.contains("Latency gate  FAILED"), "\(slow.stdout)")
        #expect(slow.stdout.contains("p95 latency 7") && slow.stdout.contains("is not under 500ms (3 requests"), "\(slow.stdout)")
        #expect(slow.stdout.contains("(2 attempts, 100ms apart)"), "the gate was tried again: \(slow.stdout)")
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/gate"))

        let fast = try apply(p, ["latency", "--yes"])
        #expect(fast.status == 0, "\(fast.stdout)\(fast.stderr)")
        let fields = try String(contentsOfFile: p.remoteDir + "/gate", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
        #expect(fields.count == 3)
        #expect(fields.first == "200" && fields.dropFirst().first == "3")
        let p95 = try #require(Double(fields.last ?? ""))
        #expect(p95 > 0 && p95 < 500)
    }

    @Test("health passes from the host and from the controller, checks status and body")
    func healthPasses() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("runbooks/healthy.yml", """
            name: healthy
            description: The site answers
            hosts: h1
            rollback: off
            params:
              expect: { type: int, default: 200 }
            steps:
              - id: via_host
                name: From the host, through nginx
                health: { url: "http://127.0.0.1:8080/health", contains: ok }
              - id: via_controller
                name: From the controller
                health: { url: "http://{{ host.address }}:8080/chunked", from: controller, contains: ok, samples: 5, p95_under: 500ms }
              - name: A status page
                health: { url: "http://127.0.0.1:5000/status/503", expect_status: "{{ params.expect }}" }
              - name: Record what they saw
                command: { run: "echo '{{ steps.via_host.status }} {{ steps.via_host.body | trim }} {{ steps.via_controller.body | trim }}' > \(p.remoteDir)/seen" }
            """)
        let plan = try p.run(["plan", "healthy", "-p", "expect=503"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("GET http://\(env["RBT_H1"]):8080/chunked from the controller: expect 200, body contains \"ok\"; p95 under 500ms over 5 requests"),
                "\(plan.stdout)")
        let ok = try apply(p, ["healthy", "-p", "expect=503", "--yes"])
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/seen", encoding: .utf8) == "200 ok ok\n")

        let wrong = try apply(p, ["healthy", "--yes"])
        #expect(wrong.status == 1, "\(wrong.stdout)\(wrong.stderr)")
        #expect(wrong.stdout.contains("status 503 (expected 200), body \"status 503\""), "\(wrong.stdout)")
    }

    @Test("health from: controller reaches what only the controller can; from: host does not")
    func healthFromController() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        // An HTTP server on the controller's loopback, which the test hosts (own network
        // namespaces) cannot reach.
        let dir = p.root + "/www"
        try FileManager.default.createDirectory(atPath: dir + "/health", withIntermediateDirectories: true)
        try "controller-ok\n".write(toFile: dir + "/health/index.html", atomically: true, encoding: .utf8)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", dir]
        let pipe = Pipe()
        server.standardOutput = pipe
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { kill(server.processIdentifier, SIGKILL) }
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let banner = String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self)
        let port = try #require(banner.firstMatch(of: /port (\d+)/).map { String($0.1) }, "\(banner)")
        try p.write("runbooks/ctl.yml", """
            name: ctl
            description: Health from either side
            hosts: h1
            rollback: off
            params:
              from: { type: enum, values: [host, controller], default: controller }
            steps:
              - name: Controller-only endpoint
                health: { url: "http://127.0.0.1:\(port)/health/", from: "{{ params.from }}", contains: controller-ok, retries: 1, delay: 100ms, timeout: 2s }
            """)
        let controller = try apply(p, ["ctl", "--yes"])
        #expect(controller.status == 0, "\(controller.stdout)\(controller.stderr)")
        let host = try apply(p, ["ctl", "-p", "from=host", "--yes"])
        #expect(host.status == 1, "\(host.stdout)\(host.stderr)")
        #expect(host.stdout.contains("from h1 failed (2 attempts, 100ms apart): cannot connect to 127.0.0.1:\(port)"), "\(host.stdout)")
    }

    // MARK: service: systemd and command

    @Test("service with the systemd and command managers runs their commands, and again after a rollback")
    func serviceSystemdAndCommand() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        // A stand-in systemctl that logs its arguments, one bracketed word each, visible in h1
        // only: its directory is bind-mounted over /usr/local/sbin (first on root's PATH) in
        // h1's mount namespace for the duration of the test.
        let bin = p.remoteDir + "/sbin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try """
            #!/bin/sh
            for word in "$@"; do printf '[%s]' "$word"; done >>\(p.remoteDir)/systemctl.log
            echo >>\(p.remoteDir)/systemctl.log

            """.write(toFile: bin + "/systemctl", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin + "/systemctl")
        #expect(try env.inHost("h1", "mount --bind \(bin) /usr/local/sbin").status == 0)
        defer { _ = try? env.inHost("h1", "umount /usr/local/sbin") }

        try p.write("templates/unit.conf.j2", "version = {{ params.version }}\n")
        try p.write("runbooks/managers.yml", """
            name: managers
            description: systemd and command managers
            hosts: h1
            params:
              version: { type: int, default: 1 }
              fail: { type: bool, default: false }
            steps:
              - name: Render the unit's config
                template: { src: unit.conf.j2, dest: "\(p.remoteDir)/unit.conf" }
              - name: Restart by systemd
                service: { name: "web app", action: restart, manager: systemd }
              - name: Reload by command
                service: { name: web, action: reload, manager: command, run: "echo reload >> \(p.remoteDir)/command.log" }
              - name: Maybe fail
                command: { run: "test {{ params.fail }} = false" }
            """)
        let plan = try p.run(["plan", "managers"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("restart web app (systemd)"), "\(plan.stdout)")
        #expect(plan.stdout.contains("$ systemctl restart 'web app'"), "\(plan.stdout)")
        #expect(plan.stdout.contains("$ echo reload >> \(p.remoteDir)/command.log"), "\(plan.stdout)")

        let ok = try apply(p, ["managers", "--yes"])
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        let log = { (name: String) in (try? String(contentsOfFile: "\(p.remoteDir)/\(name)", encoding: .utf8)) ?? "" }
        #expect(log("systemctl.log") == "[restart][web app]\n")
        #expect(log("command.log") == "reload\n")

        // A failed run restores the config, then runs both actions again (rollback phase 2).
        let failed = try apply(p, ["managers", "-p", "version=2", "-p", "fail=true", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(log("unit.conf") == "version = 1\n")
        #expect(log("systemctl.log") == String(repeating: "[restart][web app]\n", count: 3), "\(log("systemctl.log"))")
        #expect(log("command.log") == "reload\nreload\nreload\n")
    }

    // MARK: load_test

    @Test("load_test: 300 requests through nginx pass its gates; an endpoint failing 20% of the time fails with the measured rate")
    func loadTestGates() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("runbooks/load.yml", """
            name: load
            description: A load test through nginx
            hosts: h1
            rollback: off
            params:
              path: { type: string, default: /health }
            steps:
              - id: load
                name: Load test
                load_test: { url: "http://127.0.0.1:8080{{ params.path }}", requests: 300, concurrency: 10, p95_under: 500ms, max_error_rate: 1% }
              - id: outside
                name: From the controller
                load_test: { url: "http://{{ host.address }}:8080/health", from: controller, duration: 1s, concurrency: 4, max_error_rate: 1% }
              - name: Record the numbers
                command:
                  run: >-
                    echo '{{ steps.load.requests }} {{ steps.load.errors }} {{ steps.load.error_rate }} {{ steps.load.p50_ms }}
                    {{ steps.load.p95_ms }} {{ steps.load.p99_ms }} {{ steps.load.rate }} {{ steps.outside.requests }}
                    {{ steps.outside.errors }}' > \(p.remoteDir)/load
            """)
        let plan = try p.run(["plan", "load"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("Load test  GET http://127.0.0.1:8080/health from h1: 300 requests, concurrency 10; gates: p95 under 500ms, error rate at most 1%"),
                "\(plan.stdout)")
        #expect(plan.stdout.contains("From the controller  GET http://\(env["RBT_H1"]):8080/health from the controller: for 1s, concurrency 4"), "\(plan.stdout)")

        let ok = try apply(p, ["load", "--yes"])
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        // The table is printed under the step.
        let lines = ok.stdout.split(separator: "\n").map(String.init)
        let step = try #require(lines.firstIndex { $0.contains("Load test  ok") }, "\(ok.stdout)")
        #expect(lines.count > step + 3 && lines[step + 1].contains("GET http://127.0.0.1:8080/health from h1: 300 requests, concurrency 10, in "),
                "\(ok.stdout)")
        #expect(lines.count > step + 3 && lines[step + 2].split(separator: " ") == ["requests", "errors", "p50", "p95", "p99", "rate"], "\(ok.stdout)")
        #expect(lines.count > step + 3 && lines[step + 3].hasPrefix("    300       0  "), "\(ok.stdout)")
        // The numbers are the step's outputs.
        let fields = try String(contentsOfFile: p.remoteDir + "/load", encoding: .utf8).split(whereSeparator: \.isWhitespace).map(String.init)
        try #require(fields.count == 9, "\(fields)")
        #expect(fields[0] == "300" && fields[1] == "0" && Double(fields[2]) == 0, "\(fields)")
        let (p50, p95, p99, rate) = (Double(fields[3]) ?? -1, Double(fields[4]) ?? -1, Double(fields[5]) ?? -1, Double(fields[6]) ?? -1)
        #expect(p50 > 0 && p50 <= p95 && p95 <= p99 && p95 < 500, "p50 \(p50) p95 \(p95) p99 \(p99)")
        #expect(rate > 0, "rate \(rate)")
        let outside = try #require(Int(fields[7]))
        #expect(outside >= 4 && (Int(fields[8]) ?? outside) * 100 <= outside, "\(fields)")
        // The journal keeps the table with the step.
        let history = try p.run(["history", "--json"])
        let run = try #require(history.stdout.split(separator: "\n").first)
        let id = try #require((try JSONSerialization.jsonObject(with: Data(run.utf8)) as? [String: Any])?["id"] as? String)
        let shown = try p.run(["show", id])
        #expect(shown.stdout.contains("requests  errors  p50"), "\(shown.stdout)")

        // Every fifth request of each gunicorn worker answers 500.
        try FileManager.default.removeItem(atPath: p.remoteDir + "/load")
        let flaky = try apply(p, ["load", "-p", "path=/flaky?percent=20", "--yes"])
        #expect(flaky.status == 1, "\(flaky.stdout)\(flaky.stderr)")
        #expect(flaky.stdout.contains("Load test  FAILED"), "\(flaky.stdout)")
        let measured = flaky.stdout.firstMatch(of: /error rate ([0-9.]+)% over 300 requests is over max_error_rate 1%/).flatMap { Double($0.1) }
        let errorRate = try #require(measured, "no measured error rate in: \(flaky.stdout)")
        #expect(errorRate >= 18 && errorRate <= 22, "\(flaky.stdout)")
        #expect(flaky.stdout.contains(" × status 500 (expected 200)"), "\(flaky.stdout)")
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/load"))
    }

    @Test("load_test from the host makes its requests concurrently over the one SSH session")
    func loadTestConcurrency() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        // A server in h1 that answers each request after 200 ms, many at once (gunicorn's two
        // sync workers would serialize the requests themselves). It writes "PID PORT" when it listens.
        try """
            import http.server, os, sys, time
            class Slow(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    time.sleep(0.2)
                    body = b"ok\\n"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            class Server(http.server.ThreadingHTTPServer):
                request_queue_size = 128
                daemon_threads = True
            server = Server(("127.0.0.1", 0), Slow)
            with open(sys.argv[1] + ".tmp", "w") as f:
                f.write("%d %d\\n" % (os.getpid(), server.server_address[1]))
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])
            server.serve_forever()

            """.write(toFile: p.remoteDir + "/slow.py", atomically: true, encoding: .utf8)
        let address = p.remoteDir + "/slow.addr"
        // Every descriptor but 0-2 is closed first (by bash: dash takes no fd above 9): an
        // inherited pipe would keep this call waiting for end of file while the server runs.
        let script = "for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done 2>/dev/null; "
            + "exec setsid \(web["WEB_PYTHON"]) \(p.remoteDir)/slow.py \(address)"
        _ = try env.inHost("h1", "bash -c \(shellQuote(script)) </dev/null >/dev/null 2>&1 &")
        let deadline = Date().addingTimeInterval(15)
        while !FileManager.default.fileExists(atPath: address) && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        let started = try String(contentsOfFile: address, encoding: .utf8).split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        try #require(started.count == 2, "\(started)")
        // The test hosts share the controller's pid namespace; KILL, as the server may have been
        // started with signals blocked.
        defer { kill(pid_t(started[0]), SIGKILL) }
        try p.write("runbooks/concurrent.yml", """
            name: concurrent
            description: The same slow endpoint one and ten at a time
            hosts: h1
            rollback: off
            steps:
              - id: serial
                name: One at a time
                load_test: { url: "http://127.0.0.1:\(started[1])/", requests: 10, concurrency: 1, p95_under: 5s }
              - id: parallel
                name: Ten at a time
                load_test: { url: "http://127.0.0.1:\(started[1])/", requests: 60, concurrency: 10, p95_under: 5s }
              - name: Record the rates
                command: { run: "echo '{{ steps.serial.rate }} {{ steps.parallel.rate }} {{ steps.parallel.p50_ms }}' > \(p.remoteDir)/rates" }
            """)
        let r = try apply(p, ["concurrent", "--yes"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let rates = try String(contentsOfFile: p.remoteDir + "/rates", encoding: .utf8).split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        try #require(rates.count == 3, "\(rates)")
        // One at a time, 200 ms each: at most 5 requests a second. Ten at a time: ideally 50
        // (48.5 measured through a local sshd); 20 proves the channels overlap.
        #expect(rates[0] <= 5.05, "serial: \(rates[0]) req/s")
        #expect(rates[1] >= 20, "ten at a time: \(rates[1]) req/s\n\(r.stdout)")
        #expect(rates[2] >= 200 && rates[2] < 1000, "p50 \(rates[2]) ms with ten at a time")
    }

    // MARK: wait_for

    @Test("wait_for: a port that is up passes; one that never comes up fails after its timeout")
    func waitForPorts() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("runbooks/wait.yml", """
            name: wait
            description: Wait for ports
            hosts: h1
            rollback: off
            params:
              port: { type: int, default: 5000 }
              state: { type: enum, values: [up, down], default: up }
            steps:
              - id: w
                name: Wait for the port
                wait_for: { port: "{{ params.port }}", state: "{{ params.state }}", timeout: 2s, delay: 300ms }
              - name: Wait for nginx to answer
                wait_for: { url: "http://127.0.0.1:8080/status/503", timeout: 5s }
            """)
        let up = try apply(p, ["wait", "--yes"])
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")

        let started = Date()
        let never = try apply(p, ["wait", "-p", "port=5999", "--yes"])
        let elapsed = Date().timeIntervalSince(started)
        #expect(never.status == 1, "\(never.stdout)\(never.stderr)")
        #expect(elapsed >= 1.5, "gave up after \(elapsed) s")
        #expect(never.stdout.contains("127.0.0.1:5999 (from h1) did not come up within 2s ("), "\(never.stdout)")
        #expect(never.stdout.contains("last: connection refused or unreachable)"), "\(never.stdout)")

        let down = try apply(p, ["wait", "-p", "port=5999", "-p", "state=down", "--yes"])
        #expect(down.status == 0, "\(down.stdout)\(down.stderr)")
        let stillUp = try apply(p, ["wait", "-p", "state=down", "--yes"])
        #expect(stillUp.status == 1)
        #expect(stillUp.stdout.contains("127.0.0.1:5000 (from h1) was still up after 2s"), "\(stillUp.stdout)")
    }
}

import Foundation
import Testing
import TestSupport

/// Plan, apply, rollback, journal and locks end to end: the built binary against real sshd hosts.
@Suite("plan, apply and rollback", .serialized)
struct PlanApplyTests {
    let env: TestHosts
    init() throws { env = try TestHosts.load() }

    /// A runbook that renders a config file on h1, then runs a command that may fail.
    func configRunbook(_ p: RunbookProject, failAfter: Bool = false, extraSteps: String = "") throws {
        try p.write("templates/app.conf.j2", """
            # managed by runbook
            workers = {{ params.workers }}
            host = {{ host.name }}

            """)
        try p.write("runbooks/config.yml", """
            name: config
            description: Render app.conf and check it
            hosts: h1
            params:
              workers: { type: int, default: 4, min: 1, max: 64 }
              fail: { type: bool, default: \(failAfter) }
            steps:
              - id: render
                name: Render app.conf
                template: { src: app.conf.j2, dest: "\(p.remoteDir)/app.conf", mode: "0640" }
              - name: Check the result
                command:
                  run: "grep -q 'workers = {{ params.workers }}' \(p.remoteDir)/app.conf && cp \(p.remoteDir)/app.conf \(p.remoteDir)/seen.conf && test {{ params.fail }} = false"
            \(extraSteps)
            """)
    }

    /// configRunbook with a last step that holds the run (and its locks) until the returned
    /// file exists (in the shared /var/tmp), however long the test takes on a loaded machine.
    func holdingRunbook(_ p: RunbookProject) throws -> String {
        let release = p.remoteDir + "/release"
        try configRunbook(p, extraSteps: """
              - name: Hold the lock until released
                command: { run: "i=0; while [ ! -e \(release) ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done" }
            """)
        return release
    }

    /// The built binary started in the project root, output discarded, not waited for.
    func startInBackground(_ p: RunbookProject, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: p.binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: p.root)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test("plan shows the unified diff and changes nothing")
    func planShowsDiff() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        try "# managed by runbook\nworkers = 2\nhost = h1\n".write(toFile: p.remoteDir + "/app.conf", atomically: true, encoding: .utf8)
        let before = try p.remote("h1", "sha256sum \(p.remoteDir)/app.conf; stat -c %a \(p.remoteDir)/app.conf")
        let r = try p.run(["plan", "config", "-p", "workers=8"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("-workers = 2"))
        #expect(r.stdout.contains("+workers = 8"))
        #expect(r.stdout.contains("@@ -1,3 +1,3 @@"))
        #expect(r.stdout.contains("~ Render app.conf"))
        #expect(try p.remote("h1", "sha256sum \(p.remoteDir)/app.conf; stat -c %a \(p.remoteDir)/app.conf") == before)
        // Nothing else was left behind: no temp file, no backup, no command's mark.
        #expect(try p.remote("h1", "ls -A \(p.remoteDir)") == "app.conf\n")
    }

    @Test("apply writes the file; a later failing step restores it byte for byte")
    func failureRestoresFile() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        let original: [UInt8] = Array("old contents\n".utf8) + [0xFF, 0x00, 0x0A]
        _ = FileManager.default.createFile(atPath: p.remoteDir + "/app.conf", contents: Data(original), attributes: [.posixPermissions: 0o600])
        let ok = try p.run(["apply", "config", "-p", "workers=6", "--yes"])
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        #expect(try p.remote("h1", "cat \(p.remoteDir)/app.conf").contains("workers = 6"))
        #expect(try p.remote("h1", "stat -c %a \(p.remoteDir)/app.conf") == "640\n")

        // Back to the original, then a run that fails after the template step.
        _ = FileManager.default.createFile(atPath: p.remoteDir + "/app.conf", contents: Data(original), attributes: [.posixPermissions: 0o600])
        let failed = try p.run(["apply", "config", "-p", "workers=9", "-p", "fail=true", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("rolled back"))
        let restored = try Data(contentsOf: URL(fileURLWithPath: p.remoteDir + "/app.conf"))
        #expect(Array(restored) == original)
        #expect(try p.remote("h1", "stat -c %a \(p.remoteDir)/app.conf") == "600\n")
    }

    @Test("a plain apply loads and connects while its arguments are parsed; any other shape is parsed first, to the same effect")
    func headStart() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        let taken = "the project was loaded and the hosts connected while the arguments were parsed"
        let plain = try p.run(["apply", "config", "-p", "workers=5", "--yes", "-vv"])
        #expect(plain.status == 0, "\(plain.stdout)\(plain.stderr)")
        #expect(plain.stderr.contains(taken), "\(plain.stderr)")
        #expect(try p.remote("h1", "cat \(p.remoteDir)/app.conf").contains("workers = 5"))
        // --log is not part of the shape recognised early: parsed first, then loaded.
        let log = p.root + "/apply.log"
        let logged = try p.run(["apply", "config", "--param=workers=7", "--yes", "-vv", "--log", log])
        #expect(logged.status == 0, "\(logged.stdout)\(logged.stderr)")
        let written = try String(contentsOfFile: log, encoding: .utf8)
        #expect(written.contains("applied: 1 of 1 host changed"), "\(written)")
        #expect(!written.contains(taken) && !logged.stderr.contains(taken))
        #expect(try p.remote("h1", "cat \(p.remoteDir)/app.conf").contains("workers = 7"))
    }

    @Test("a file that did not exist is removed again by rollback")
    func failureRemovesNewFile() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        let failed = try p.run(["apply", "config", "-p", "fail=true", "--yes"])
        #expect(failed.status == 1)
        // The failing step saw the rendered file (it copied it), and rollback removed it again.
        #expect(try String(contentsOfFile: p.remoteDir + "/seen.conf", encoding: .utf8).contains("workers = 4"))
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/app.conf"))
        let history = try p.run(["history"])
        #expect(history.stdout.contains("rolled_back"))
    }

    @Test("a saved plan whose remote file changed is refused with exit 3")
    func stalePlan() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        try "workers = 1\n".write(toFile: p.remoteDir + "/app.conf", atomically: true, encoding: .utf8)
        let plan = try p.run(["plan", "config", "-p", "workers=5", "--out", "saved.json"])
        #expect(plan.status == 0, "\(plan.stderr)")
        let mode = try FileManager.default.attributesOfItem(atPath: p.root + "/saved.json")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // Someone edits the file after the plan was made.
        try "workers = 3 # hand edit\n".write(toFile: p.remoteDir + "/app.conf", atomically: true, encoding: .utf8)
        let apply = try p.run(["apply", "--plan", "saved.json"])
        #expect(apply.status == 3, "\(apply.stdout)\(apply.stderr)")
        #expect((apply.stdout + apply.stderr).contains("h1/render: file:\(p.remoteDir)/app.conf changed since the plan was made"))
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8) == "workers = 3 # hand edit\n")

        // An unchanged saved plan applies.
        let fresh = try p.run(["plan", "config", "-p", "workers=5", "--out", "fresh.json"])
        #expect(fresh.status == 0)
        let applied = try p.run(["apply", "--plan", "fresh.json"])
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8).contains("workers = 5"))

        // A saved plan records digests of the project's files: editing the template, the
        // runbook or the inventory after planning makes it stale too, and nothing changes.
        let edits: [(file: String, edit: (String) -> String)] = [
            ("templates/app.conf.j2", { $0 + "# added after the plan\n" }),
            ("runbooks/config.yml", { $0.replacingOccurrences(of: "Render app.conf and check it", with: "Edited") }),
            ("inventory/hosts.yml", { $0 + "# edited\n" }),
        ]
        for (file, edit) in edits {
            let saved = try p.run(["plan", "config", "-p", "workers=6", "--out", "digest.json"])
            #expect(saved.status == 0, "\(saved.stderr)")
            let original = try String(contentsOfFile: p.root + "/" + file, encoding: .utf8)
            try p.write(file, edit(original))
            let refused = try p.run(["apply", "--plan", "digest.json"])
            #expect(refused.status == 3, "\(file): \(refused.stdout)\(refused.stderr)")
            #expect((refused.stdout + refused.stderr).contains(file), "\(file) is named: \(refused.stdout)\(refused.stderr)")
            #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8).contains("workers = 5"))
            try p.write(file, original)
        }
    }

    @Test("apply without a terminal and without --yes refuses")
    func refusesWithoutConfirmation() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        let r = try p.run(["apply", "config"])
        #expect(r.status == 3)
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/app.conf"))
    }

    @Test("on a terminal, apply asks: anything but yes refuses, yes applies")
    func asksOnTerminal() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p)
        // script(1) gives the command a pseudo-terminal, as an operator's shell would.
        let command = "\(p.binary) apply config -p workers=3 --color never"
        let no = try runProcessFull("/usr/bin/script", ["-qec", command, "/dev/null"], stdin: "no\n", currentDirectory: p.root)
        #expect(no.status == 3, "\(no.stdout)")
        #expect(no.stdout.contains("Apply these changes to 1 host? Only 'yes' will be accepted:"))
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/app.conf"))
        let yes = try runProcessFull("/usr/bin/script", ["-qec", command, "/dev/null"], stdin: "yes\n", currentDirectory: p.root)
        #expect(yes.status == 0, "\(yes.stdout)")
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8).contains("workers = 3"))
    }

    @Test("a second apply on the same host is refused, naming the holder")
    func concurrentApplies() async throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        // The first run holds its locks until the test lets it go.
        let release = try holdingRunbook(p)
        let second = try RunbookProject(env)
        defer { second.cleanUp() }
        try configRunbook(second)
        // Both controllers lock h1 at the same path, as two operators' would.
        try second.write("inventory/hosts.yml", try String(contentsOfFile: p.root + "/inventory/hosts.yml", encoding: .utf8))
        let first = onOwnThread { try p.run(["apply", "config", "--yes"]) }
        // Wait until the first run holds h1's lock.
        var locked = false
        for _ in 0..<100 {
            if FileManager.default.fileExists(atPath: p.remoteDir + "/app.conf") { locked = true; break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(locked)
        let holder = try #require(runIDs(p).first, "the first run is in the journal")
        let r = try second.run(["apply", "config", "--yes"])
        #expect(r.status == 3, "\(r.stdout)\(r.stderr)")
        #expect((r.stdout + r.stderr).contains("h1 is locked by run \(holder) (runbook config) from controller "), "\(r.stdout)\(r.stderr)")
        #expect(!(r.stdout + r.stderr).contains("stale"), "a live holder is not called stale")
        #expect(!FileManager.default.fileExists(atPath: second.remoteDir + "/app.conf"))
        _ = FileManager.default.createFile(atPath: release, contents: nil)
        let done = try await first.value
        #expect(done.status == 0, "\(done.stdout)\(done.stderr)")
    }

    @Test("a host that cannot be reached stops the apply before any step, and the reachable host's lock is released")
    func unreachableHostLocksNothing() async throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        // Each host's lock is taken as soon as it is connected, so h1 is locked before the
        // refused connection is known; the apply must give that lock back.
        let inventory = try String(contentsOfFile: p.root + "/inventory/hosts.yml", encoding: .utf8)
        try p.write("inventory/hosts.yml", inventory.replacingOccurrences(
            of: "hosts:\n", with: "hosts:\n  refusing: { address: 127.0.0.1, port: 1 }\n"))
        try p.write("runbooks/both.yml", """
            name: both
            hosts: h1,refusing
            steps:
              - name: Leave a mark
                command: { run: "touch \(p.remoteDir)/ran-$(hostname)" }
            """)
        let r = try p.run(["apply", "both", "--yes"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect((r.stdout + r.stderr).contains("cannot reach every host; nothing was changed"), "\(r.stdout)\(r.stderr)")
        #expect((r.stdout + r.stderr).contains("refusing"), "\(r.stdout)\(r.stderr)")
        #expect(try p.remote("h1", "ls \(p.remoteDir)") == "", "no step ran")
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "free\n")
    }

    @Test("a controller killed mid-apply leaves an interrupted run that rollback finishes")
    func killedController() async throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try configRunbook(p, extraSteps: """
              - name: Long step
                command: { run: "sleep 300" }
            """)
        let original = "original\n"
        try original.write(toFile: p.remoteDir + "/app.conf", atomically: true, encoding: .utf8)
        let process = try startInBackground(p, ["apply", "config", "-p", "workers=7", "--yes"])
        // Wait for the long step to start (the check step copied the rewritten file), then SIGKILL.
        var reached = false
        for _ in 0..<400 {
            if (try? String(contentsOfFile: p.remoteDir + "/seen.conf", encoding: .utf8))?.contains("workers = 7") == true { reached = true; break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(reached, "the apply never got past the template step")
        try await Task.sleep(for: .milliseconds(500))
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8).contains("workers = 7"))
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let history = try p.run(["history", "--json"])
        let run = try #require(history.stdout.split(separator: "\n").first)
        let object = try JSONSerialization.jsonObject(with: Data(run.utf8)) as? [String: Any]
        #expect(object?["status"] as? String == "interrupted")
        let id = try #require(object?["id"] as? String)
        let rollback = try p.run(["rollback", id, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8) == original)
        let after = try p.run(["show", id])
        #expect(after.stdout.contains("rolled_back"))
        // The dead run's host lock was taken over and released.
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "free\n")
    }

    /// SIGTERM over SSH: a run on a real host stops between steps, rolls back what ran and
    /// releases both locks (exit 1). A second signal exits at once, says the locks stay, and
    /// leaves them; `rollback RUN_ID` then takes them over and finishes the job.
    @Test("SIGTERM during an apply over SSH rolls back and unlocks; a second signal exits at once and leaves the locks")
    func terminatedOverSSH() async throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let dir = p.remoteDir
        try p.write("runbooks/term.yml", """
            name: term
            hosts: h1
            steps:
              - name: first
                command: { run: "touch \(dir)/first", undo: "rm -f \(dir)/first" }
              - name: slow
                command: { run: "touch \(dir)/slow-started; i=0; while [ ! -e \(dir)/release ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done; touch \(dir)/slow-done", undo: "rm -f \(dir)/slow-started \(dir)/slow-done" }
              - name: third
                command: "touch \(dir)/third"
            """)
        func start() async throws -> (Process, Pipe) {
            let (process, out) = try startBuiltRunbook(["apply", "term", "--yes"], in: p.root)
            for _ in 0..<600 where !FileManager.default.fileExists(atPath: dir + "/slow-started") {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(FileManager.default.fileExists(atPath: dir + "/slow-started"), "the slow step never started")
            return (process, out)
        }

        // The slow step holds until the test releases it, after the signal: the signal always
        // arrives while it runs, however late this test's tasks get to run.
        let (once, onceOut) = try await start()
        kill(once.processIdentifier, SIGTERM)
        try await Task.sleep(for: .milliseconds(300))
        FileManager.default.createFile(atPath: dir + "/release", contents: Data())
        let text = String(decoding: onceOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        once.waitUntilExit()
        #expect(once.terminationStatus == 1, "\(text)")
        #expect(text.contains("interrupted"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/first"), "not rolled back: \(text)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/third"), "a step started after the signal: \(text)")
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "free\n", "\(text)")
        #expect(!FileManager.default.fileExists(atPath: p.root + "/.runbook/lock"), "controller lock left")

        for name in ["first", "slow-started", "slow-done", "release"] { try? FileManager.default.removeItem(atPath: dir + "/" + name) }
        let (twice, twiceOut) = try await start()
        kill(twice.processIdentifier, SIGTERM)
        try await Task.sleep(for: .milliseconds(300))
        kill(twice.processIdentifier, SIGTERM)
        let second = String(decoding: twiceOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        twice.waitUntilExit()
        FileManager.default.createFile(atPath: dir + "/release", contents: Data())
        #expect(twice.terminationStatus == 130, "\(second)")
        #expect(second.contains("the run's locks stay in place"), "\(second)")
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "held\n", "\(second)")
        let history = try p.run(["history", "--json"])
        let run = try #require(history.stdout.split(separator: "\n").first)
        let id = try #require((try JSONSerialization.jsonObject(with: Data(run.utf8)) as? [String: Any])?["id"] as? String)
        let rollback = try p.run(["rollback", id, "--yes"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/first"))
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "free\n")
    }

    @Test("serial runs hosts one batch at a time, and max_fail decides whether a failure stops the rest")
    func serialAndMaxFail() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        func write(maxFail: Int) throws {
            try p.write("runbooks/rolling.yml", """
                name: rolling
                hosts: h1,h2,h3
                serial: 1
                max_fail: \(maxFail)
                steps:
                  - name: Mark
                    command:
                      run: "date +%s%N > \(p.remoteDir)/start-$(hostname); sleep 0.3; date +%s%N > \(p.remoteDir)/end-$(hostname)"
                      undo: "rm -f \(p.remoteDir)/start-$(hostname) \(p.remoteDir)/end-$(hostname)"
                  - name: Fail on h2
                    command: { run: "test $(hostname) != h2" }
                """)
        }
        func stamp(_ name: String) -> Int? {
            (try? String(contentsOfFile: "\(p.remoteDir)/\(name)", encoding: .utf8)).flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        // max_fail 0: h2's failure stops the run before h3's batch; h1 and h2 are rolled back.
        try write(maxFail: 0)
        let stopped = try p.run(["apply", "rolling", "--yes"])
        #expect(stopped.status == 1, "\(stopped.stdout)\(stopped.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: p.remoteDir)
        #expect(left.isEmpty, "h3 never ran and h1, h2 were undone: \(left)")

        // max_fail 1: the run goes on to h3 one batch at a time; only the failed h2 is rolled back.
        try write(maxFail: 1)
        let goesOn = try p.run(["apply", "rolling", "--yes"])
        #expect(goesOn.status == 1, "\(goesOn.stdout)\(goesOn.stderr)")
        let h1End = try #require(stamp("end-h1"))
        let h3Start = try #require(stamp("start-h3"))
        #expect(h1End <= h3Start, "batches of one never overlap")
        #expect(stamp("start-h2") == nil, "the failed h2 was rolled back")
    }

    @Test("run_once runs on the first host only; retries try again; a step timeout ends the command")
    func runOnceRetriesTimeout() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("runbooks/once.yml", """
            name: once
            hosts: h1,h2,h3
            steps:
              - name: Once
                run_once: true
                command: { run: "hostname >> \(p.remoteDir)/once" }
              - name: Flaky
                retries: 2
                delay: 100ms
                command: { run: "echo x >> \(p.remoteDir)/tries-$(hostname); test $(wc -l < \(p.remoteDir)/tries-$(hostname)) -ge 3" }
            """)
        let r = try p.run(["apply", "once", "--yes"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/once", encoding: .utf8) == "h1\n")
        for host in ["h1", "h2", "h3"] {
            #expect(try String(contentsOfFile: "\(p.remoteDir)/tries-\(host)", encoding: .utf8) == "x\nx\nx\n", "\(host): three attempts")
        }

        // One retry is not enough for a command that needs a third attempt.
        try p.write("runbooks/short.yml", """
            name: short
            hosts: h1
            steps:
              - name: Flaky
                retries: 1
                delay: 100ms
                command: { run: "echo x >> \(p.remoteDir)/short; test $(wc -l < \(p.remoteDir)/short) -ge 3" }
            """)
        let short = try p.run(["apply", "short", "--yes"])
        #expect(short.status == 1, "\(short.stdout)\(short.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/short", encoding: .utf8) == "x\nx\n")

        // A step's timeout ends its command on the host: the sleep is gone afterwards.
        let token = UUID().uuidString.prefix(8)
        try p.write("runbooks/slow.yml", """
            name: slow
            hosts: h1
            steps:
              - name: Too slow
                timeout: 1s
                command: { run: "sleep 3\(token.filter(\.isNumber).prefix(2))7 ; touch \(p.remoteDir)/finished" }
            """)
        let slow = try p.run(["apply", "slow", "--yes"])
        #expect(slow.status == 1, "\(slow.stdout)\(slow.stderr)")
        #expect((slow.stdout + slow.stderr).contains("timed out"), "\(slow.stdout)\(slow.stderr)")
        let sleeping = "sleep 3\(token.filter(\.isNumber).prefix(2))7"
        #expect(!(try p.remote("h1", "ps -eo args")).contains(sleeping), "the timed-out command still runs")
    }

    @Test("unlock removes a dead run's lock after confirming, and refuses while the run lives")
    func unlock() async throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let release = try holdingRunbook(p)
        let process = try startInBackground(p, ["apply", "config", "--yes"])
        var held = false
        for _ in 0..<400 {
            if FileManager.default.fileExists(atPath: p.remoteDir + "/seen.conf") { held = true; break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(held, "the apply never reached its holding step")
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held") == "held\n")

        // While the run lives, unlock refuses even with --yes.
        let alive = try p.run(["unlock", "h1", "--yes"])
        #expect(alive.status == 3, "\(alive.stdout)\(alive.stderr)")
        #expect(alive.stderr.contains("still alive"))
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held") == "held\n")

        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        _ = FileManager.default.createFile(atPath: release, contents: nil)

        // The dead run's locks are now stale, the controller's own first: another apply says
        // so and points at unlock.
        let local = try p.run(["apply", "config", "--yes", "-p", "workers=2"])
        #expect(local.status == 3, "\(local.stdout)\(local.stderr)")
        #expect((local.stdout + local.stderr).contains("runbook unlock local"), "\(local.stdout)\(local.stderr)")
        let unlockedLocal = try p.run(["unlock", "local", "--yes"])
        #expect(unlockedLocal.status == 0 && unlockedLocal.stdout.contains("unlocked local"), "\(unlockedLocal.stdout)\(unlockedLocal.stderr)")
        let refused = try p.run(["apply", "config", "--yes", "-p", "workers=2"])
        #expect(refused.status == 3, "\(refused.stdout)\(refused.stderr)")
        #expect((refused.stdout + refused.stderr).contains("lock is stale"), "\(refused.stdout)\(refused.stderr)")
        #expect((refused.stdout + refused.stderr).contains("runbook unlock h1"))

        // Without a terminal and without --yes, unlock asks nobody and removes nothing.
        let unconfirmed = try p.run(["unlock", "h1"])
        #expect(unconfirmed.status == 3, "\(unconfirmed.stdout)\(unconfirmed.stderr)")
        #expect(unconfirmed.stdout.contains("h1 is locked by run "))
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held") == "held\n")

        let removed = try p.run(["unlock", "h1", "--yes"])
        #expect(removed.status == 0, "\(removed.stdout)\(removed.stderr)")
        #expect(removed.stdout.contains("unlocked h1"))
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "free\n")
        let again = try p.run(["unlock", "h1"])
        #expect(again.status == 0 && again.stdout.contains("h1 is not locked"))

        // A lock that names no run (its taker was killed before writing it) is shown as such
        // and removed once confirmed, on a host and on the controller.
        _ = try p.remote("h1", ": > \(p.lockPath)")
        let empty = try p.run(["unlock", "h1"])
        #expect(empty.status == 3 && empty.stdout.contains("h1 has a lock at \(p.lockPath) that names no run"), "\(empty.stdout)\(empty.stderr)")
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held") == "held\n")
        let emptyRemoved = try p.run(["unlock", "h1", "--yes"])
        #expect(emptyRemoved.status == 0 && emptyRemoved.stdout.contains("unlocked h1"), "\(emptyRemoved.stdout)\(emptyRemoved.stderr)")
        #expect(try p.remote("h1", "test -e \(p.lockPath) && echo held || echo free") == "free\n")
        let localPath = p.root + "/.runbook/lock"
        #expect(FileManager.default.createFile(atPath: localPath, contents: Data()))
        let localEmpty = try p.run(["unlock", "local", "--yes"])
        #expect(localEmpty.status == 0 && localEmpty.stdout.contains("names no run"), "\(localEmpty.stdout)\(localEmpty.stderr)")
        #expect(!FileManager.default.fileExists(atPath: localPath))
    }

    @Test("rollback RUN_ID restores files and runs the service action again; without the step it is incomplete (exit 4)")
    func rollbackReplays() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let restarts = p.remoteDir + "/restarts"
        try configRunbook(p, extraSteps: """
              - name: Restart the app
                service: { name: app, action: restart, manager: command, run: "echo restart >> \(restarts)" }
            """)
        try "workers = 1\n".write(toFile: p.remoteDir + "/app.conf", atomically: true, encoding: .utf8)
        func applied() throws -> String {
            try "workers = 1\n".write(toFile: p.remoteDir + "/app.conf", atomically: true, encoding: .utf8)
            let r = try p.run(["apply", "config", "-p", "workers=5", "--yes"])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            return try #require(runIDs(p).first)
        }
        let first = try applied()
        let back = try p.run(["rollback", first, "--yes"])
        #expect(back.status == 0, "\(back.stdout)\(back.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8) == "workers = 1\n")
        #expect(try String(contentsOfFile: restarts, encoding: .utf8) == "restart\nrestart\n", "the restart ran again after the restore")

        // The runbook lost its restart step since the run: the file is still restored, but the
        // app may still run the new config, so the rollback is incomplete and says why.
        let second = try applied()
        let text = try String(contentsOfFile: p.root + "/runbooks/config.yml", encoding: .utf8)
        try p.write("runbooks/config.yml", String(text[..<text.range(of: "  - name: Restart the app")!.lowerBound]))
        let incomplete = try p.run(["rollback", second, "--yes"])
        #expect(incomplete.status == 4, "\(incomplete.stdout)\(incomplete.stderr)")
        #expect((incomplete.stdout + incomplete.stderr).contains("Restart the app: not run again after the restore: the runbook no longer has this step at #3"),
                "\(incomplete.stdout)\(incomplete.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/app.conf", encoding: .utf8) == "workers = 1\n")
        #expect(try String(contentsOfFile: restarts, encoding: .utf8) == "restart\nrestart\nrestart\n")
        let history = try p.run(["history"])
        #expect(history.stdout.contains("rollback_failed"), "\(history.stdout)")
    }

    @Test("become runs a step's command, and its undo, as root through sudo, secrets included; file steps refuse it")
    func become() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        // A sudoers rule for the test's unprivileged user, visible in h1 only: its directory is
        // bind-mounted over /etc/sudoers.d in h1's mount namespace for the duration of the test.
        let user = env["RBT_PASSWORD_USER"]
        let sudoers = p.remoteDir + "/sudoers.d"
        try FileManager.default.createDirectory(atPath: sudoers, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try "\(user) ALL=(root) NOPASSWD: ALL\n".write(toFile: sudoers + "/runbook-test", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o440], ofItemAtPath: sudoers + "/runbook-test")
        #expect(try env.inHost("h1", "mount --bind \(sudoers) /etc/sudoers.d").status == 0)
        defer { _ = try? env.inHost("h1", "umount /etc/sudoers.d") }
        chmod(p.remoteDir, 0o777)

        // h1 reached as that user, with its password (a secret).
        try p.write("inventory/hosts.yml", """
            defaults: { port: 22, known_hosts: \(env["RBT_KNOWN_HOSTS"]), host_key_checking: strict }
            vars: { runbook_lock_path: /var/tmp/rb-become-\(UUID().uuidString).lock }
            hosts:
              h1: { address: \(env["RBT_H1"]), user: \(user), password_secret: login }
            """)
        let token = "tok-\(UUID().uuidString)"
        try p.write("runbooks/root.yml", """
            name: root
            hosts: h1
            params:
              fail: { type: bool, default: false }
            steps:
              - name: As the login user
                command: { run: "id -un > \(p.remoteDir)/plain" }
              - name: As root
                become: true
                command:
                  run: "id -un > \(p.remoteDir)/root && printf %s {{ secrets.token }} > \(p.remoteDir)/token"
                  undo: "id -un > \(p.remoteDir)/undone-by && rm -f \(p.remoteDir)/root"
              - name: Maybe fail
                command: { run: "test {{ params.fail }} = false" }
            """)
        let secrets = ["RUNBOOK_SECRET_login": env["RBT_PASSWORD"], "RUNBOOK_SECRET_token": token]
        let ok = try p.run(["apply", "root", "--yes"], environment: secrets)
        #expect(ok.status == 0, "\(ok.stdout)\(ok.stderr)")
        let read = { (name: String) in (try? String(contentsOfFile: "\(p.remoteDir)/\(name)", encoding: .utf8)) ?? "" }
        #expect(read("plain") == "\(user)\n")
        #expect(read("root") == "root\n")
        #expect(read("token") == token)
        #expect(try p.remote("h1", "stat -c %U \(p.remoteDir)/root") == "root\n")
        #expect(!(ok.stdout + ok.stderr).contains(token))

        // A failure later rolls the step back with its undo, run as root too.
        let failed = try p.run(["apply", "root", "-p", "fail=true", "--yes"], environment: secrets)
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(read("undone-by") == "root\n")
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/root"))

        // A template cannot become root: it is refused before any host is contacted.
        try p.write("templates/t.j2", "x\n")
        try p.write("runbooks/file.yml", """
            name: file
            hosts: h1
            steps:
              - template: { src: t.j2, dest: /etc/rbtest-never }
                become: true
            """)
        let refused = try p.run(["apply", "file", "--yes"], environment: secrets)
        #expect(refused.status == 2, "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stderr.contains("file.yml:5"), "\(refused.stderr)")
        #expect(refused.stderr.contains("become: template reads or writes its file over SFTP as the login user"), "\(refused.stderr)")
    }

    @Test("a secret never appears in output, plan file, journal, or ps on the host")
    func secretsStayHidden() async throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let secret = "pw-\(UUID().uuidString)"
        try p.write("templates/db.conf.j2", "password = {{ secrets.db_password }}\n")
        try p.write("runbooks/secret.yml", """
            name: secret
            description: Uses a secret in a template and a command
            hosts: h1
            steps:
              - name: Render db.conf
                template: { src: db.conf.j2, dest: "\(p.remoteDir)/db.conf", mode: "0600" }
              - name: Use it
                command: { run: "sleep 3; test \\"{{ secrets.db_password }}\\" = \\"$(sed 's/password = //' \(p.remoteDir)/db.conf)\\" && echo match {{ secrets.db_password }}" }
            """)
        let environment = ["RUNBOOK_SECRET_db_password": secret]
        let plan = try p.run(["plan", "secret", "--out", "plan.json"], environment: environment)
        #expect(plan.status == 0, "\(plan.stderr)")
        let applying = onOwnThread { try p.run(["apply", "secret", "--yes", "-v"], environment: environment) }
        // Look at ps while the command runs: its `sleep 3` is in the snapshot. A loaded machine
        // may take many seconds to plan and connect first, so the watch lasts up to a minute.
        var ps = ""
        for _ in 0..<2400 {
            ps = try p.remote("h1", "ps -eo args")
            if ps.contains("sleep 3") { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(ps.contains("sleep 3"), "ps never showed the running command")
        let apply = try await applying.value
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try String(contentsOfFile: p.remoteDir + "/db.conf", encoding: .utf8) == "password = \(secret)\n")
        let json = try p.run(["history", "--json"], environment: environment)
        var haystacks = [plan.stdout, plan.stderr, apply.stdout, apply.stderr, ps, json.stdout,
                         try String(contentsOfFile: p.root + "/plan.json", encoding: .utf8)]
        for file in try FileManager.default.contentsOfDirectory(atPath: p.root + "/.runbook") {
            if let data = FileManager.default.contents(atPath: p.root + "/.runbook/" + file) {
                haystacks.append(String(decoding: data, as: UTF8.self))
            }
        }
        for (index, text) in haystacks.enumerated() {
            #expect(!text.contains(secret), "secret found in haystack \(index)")
        }
        #expect(plan.stdout.contains("+password = ********"))
    }

    @Test("bad runbooks exit 2 with file and line, and contact no host")
    func badRunbooks() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("templates/t.j2", "{{ nope.value }}\n")
        let cases: [(String, String, String)] = [
            ("unknown-kind", "name: unknown-kind\nhosts: h1\nsteps:\n  - shell: { run: \"touch \(p.remoteDir)/ran\" }\n", "unknown-kind.yml:4"),
            ("wrong-type", "name: wrong-type\nhosts: h1\nsteps:\n  - command: { run: \"touch \(p.remoteDir)/ran\" }\n    retries: many\n", "wrong-type.yml:5"),
            ("missing-param", "name: missing-param\nhosts: h1\nparams:\n  n: { type: int }\nsteps:\n  - command: { run: \"touch \(p.remoteDir)/ran\" }\n", "missing-param.yml:4"),
            ("syntax", "name: syntax\nhosts: h1\nsteps:\n  - command: { run: ls\n", "syntax.yml:5:1: error: invalid YAML"),
            ("undefined", "name: undefined\nhosts: h1\nsteps:\n  - template: { src: t.j2, dest: \(p.remoteDir)/t }\n", "t.j2:1"),
        ]
        for (name, text, location) in cases {
            try p.write("runbooks/\(name).yml", text)
            let r = try p.run(["apply", name, "--yes"])
            #expect(r.status == 2, "\(name): \(r.stdout)\(r.stderr)")
            #expect(r.stderr.contains(location), "\(name): \(r.stderr)")
        }
        try p.write("runbooks/param.yml", "name: param\nhosts: h1\nparams:\n  n: { type: int, max: 5 }\nsteps:\n  - command: { run: \"touch \(p.remoteDir)/ran\" }\n")
        let badValue = try p.run(["apply", "param", "-p", "n=9", "--yes"])
        #expect(badValue.status == 2)
        #expect(badValue.stderr.contains("param.yml:4"))
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/ran"))
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/t"))
        #expect(!FileManager.default.fileExists(atPath: p.root + "/.runbook/journal.sqlite"))
    }
}

/// The run ids in a project's journal, newest first.
func runIDs(_ p: RunbookProject) throws -> [String] {
    let history = try p.run(["history", "--json"])
    return history.stdout.split(separator: "\n").compactMap {
        (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
    }
}

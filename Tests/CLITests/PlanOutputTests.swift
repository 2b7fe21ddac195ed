import Foundation
import Testing
import TestSupport

/// The human plan and rollback preview as printed, against a `connection: local` host (the
/// controller itself), so no test host is needed.
@Suite("plan output", .serialized)
struct PlanOutputTests {
    /// The id of the run that `apply` printed as succeeded.
    static func succeededRunID(_ stdout: String) -> String? {
        stdout.split(separator: "\n").first { $0.hasPrefix("run ") && $0.contains("succeeded") }.map { String($0.split(separator: " ")[1]) }
    }

    /// A project in a temporary folder whose one host is the controller; files go under `work`.
    struct LocalProject {
        let root: String
        var work: String { root + "/work" }

        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("rb-plan-out-\(UUID().uuidString)").path
            for dir in ["runbooks", "templates", "inventory", "work"] {
                try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
            }
            // The host lock in the project, not the controller's shared /tmp.
            try "hosts:\n  ctl: { connection: local, vars: { runbook_lock_path: \(root)/host.lock } }\n"
                .write(toFile: root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
        }

        func write(_ path: String, _ text: String) throws {
            try text.write(toFile: root + "/" + path, atomically: true, encoding: .utf8)
        }

        func runbook(_ arguments: String...) throws -> ProcessOutput {
            try runBuiltRunbook(Array(arguments) + ["--root", root, "-i", root + "/inventory/hosts.yml"])
        }

        func cleanUp() { try? FileManager.default.removeItem(atPath: root) }

        /// `work/app.conf` with 2 workers on the "host", and a template of it with 8.
        func writeAppConf() throws {
            try write("work/app.conf", "workers = 2\n")
            try write("templates/app.conf.j2", "workers = 8\n")
        }
    }

    @Test("yaml_set: an operator's compose file edited in place, applied and rolled back byte for byte; a missing path is exit 2")
    func yamlSetInPlace() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        let compose = "# prod\r\nx-app: &app\r\n  image: shop:1\r\nservices:\r\n  web:\r\n    <<: *app\r\n"
            + "    command: [\"gunicorn\", \"-w\", \"4\", \"app:app\"]  # tuned\r\n"
        try project.write("work/docker-compose.yml", compose)
        try project.write("runbooks/w.yml", """
            hosts: ctl
            params:
              workers: { type: int, default: 8 }
              path: { type: string, default: services.web.command }
            steps:
              - name: Set workers
                yaml_set:
                  file: \(project.work)/docker-compose.yml
                  path: "{{ params.path }}"
                  flag: { name: --workers, aliases: [-w], value: "{{ params.workers }}" }
            """)
        let plan = try project.runbook("plan", "w")
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("+    command: [\"gunicorn\", \"-w\", \"8\", \"app:app\"]  # tuned"), "\(plan.stdout)")
        let apply = try project.runbook("apply", "w", "--yes")
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let after = try String(contentsOfFile: project.work + "/docker-compose.yml", encoding: .utf8)
        #expect(after == compose.replacingOccurrences(of: "\"-w\", \"4\"", with: "\"-w\", \"8\""))
        let runID = try #require(apply.stdout.range(of: #"run (\d{8}-\d{6}-[0-9a-f]{4})"#, options: .regularExpression)
            .map { String(apply.stdout[$0].dropFirst(4)) })
        let rollback = try project.runbook("rollback", runID, "--yes")
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(try String(contentsOfFile: project.work + "/docker-compose.yml", encoding: .utf8) == compose)

        let missing = try project.runbook("plan", "w", "-p", "path=services.api.command")
        #expect(missing.status == 2, "\(missing.stdout)\(missing.stderr)")
        #expect(missing.stderr.contains("runbooks/w.yml:") && missing.stderr.contains("services.api.command is not in the file"), "\(missing.stderr)")
        #expect(try String(contentsOfFile: project.work + "/docker-compose.yml", encoding: .utf8) == compose)
    }

    @Test("a template's validate and a become step's sudo are in the printed plan")
    func validateAndSudoShown() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try project.writeAppConf()
        try project.write("runbooks/t.yml", """
            hosts: ctl
            steps:
              - name: Render app.conf
                template: { src: app.conf.j2, dest: \(project.work)/app.conf, validate: "grep -q workers %s" }
              - name: As root
                become: true
                command: { run: "id -u", undo: "true" }
            """)
        let r = try project.runbook("plan", "t")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("+workers = 8"), "\(r.stdout)")
        #expect(r.stdout.contains("$ validate: grep -q workers %s"), "\(r.stdout)")
        #expect(r.stdout.contains("$ sudo -n -E -- sh -c 'id -u'"), "\(r.stdout)")
        #expect(r.stdout.contains("$ undo: sudo -n -E -- sh -c true"), "\(r.stdout)")
        // The printed plan changed nothing.
        #expect(try String(contentsOfFile: project.work + "/app.conf", encoding: .utf8) == "workers = 2\n")
    }

    @Test("rollback --dry-run prints the restore and changes nothing; the real rollback then restores")
    func rollbackDryRun() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try project.writeAppConf()
        try project.write("runbooks/t.yml", """
            hosts: ctl
            steps:
              - name: Render app.conf
                template: { src: app.conf.j2, dest: \(project.work)/app.conf }
              - name: Mark
                command: { run: "touch \(project.work)/mark", undo: "rm -f \(project.work)/mark" }
            """)
        let apply = try project.runbook("apply", "t", "--yes")
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let runID = try #require(Self.succeededRunID(apply.stdout))
        let dry = try project.runbook("rollback", runID, "--dry-run")
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("dry run: nothing is changed"), "\(dry.stdout)")
        #expect(dry.stdout.contains("restore \(project.work)/app.conf from \(project.work)/.app.conf.runbook-bak-\(runID)"), "\(dry.stdout)")
        #expect(dry.stdout.contains("$ rm -f \(project.work)/mark"), "\(dry.stdout)")
        #expect(try String(contentsOfFile: project.work + "/app.conf", encoding: .utf8) == "workers = 8\n")
        #expect(FileManager.default.fileExists(atPath: project.work + "/mark"))
        let real = try project.runbook("rollback", runID, "--yes")
        #expect(real.status == 0, "\(real.stdout)\(real.stderr)")
        #expect(try String(contentsOfFile: project.work + "/app.conf", encoding: .utf8) == "workers = 2\n")
        #expect(!FileManager.default.fileExists(atPath: project.work + "/mark"))
    }

    @Test("a step that changes only a file's mode is undone: rollback puts the mode back, the bytes untouched")
    func modeOnlyChangeRolledBack() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try project.write("work/app.conf", "workers = 8\n")
        try project.write("templates/app.conf.j2", "workers = 8\n")
        let path = project.work + "/app.conf"
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        try project.write("runbooks/m.yml", """
            hosts: ctl
            steps:
              - name: Tighten app.conf
                template: { src: app.conf.j2, dest: \(path), mode: "0600" }
            """)
        let apply = try project.runbook("apply", "m", "--yes")
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        let runID = try #require(Self.succeededRunID(apply.stdout))
        let dry = try project.runbook("rollback", runID, "--dry-run")
        #expect(dry.stdout.contains("restore the mode and owner of \(path) from \(project.work)/.app.conf.runbook-bak-\(runID)"), "\(dry.stdout)")
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        let real = try project.runbook("rollback", runID, "--yes")
        #expect(real.status == 0, "\(real.stdout)\(real.stderr)")
        #expect(real.stdout.contains("restored the mode and owner of \(path)"), "\(real.stdout)")
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o644)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "workers = 8\n")
        // No backup is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: project.work).filter { $0.contains("runbook-bak") }.isEmpty)
    }

    @Test("rollback RUN_ID refuses, changing nothing, when a file the run wrote was edited since; --force restores it")
    func rollbackOverLaterEditsNeedsForce() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        let path = project.work + "/app.conf"
        let other = project.work + "/other.conf"
        try project.write("work/app.conf", "workers = 2\n")
        try project.write("work/other.conf", "a = 1\n")
        try project.write("templates/app.conf.j2", "workers = 8\n")
        try project.write("templates/other.j2", "a = 2\n")
        // The same file written twice by the run: only what the run left at the end counts.
        try project.write("runbooks/e.yml", """
            hosts: ctl
            steps:
              - name: Render app.conf
                template: { src: app.conf.j2, dest: \(path) }
              - name: Set workers again
                env_set: { file: \(path), vars: { threads: 4 } }
              - name: Render other.conf
                template: { src: other.j2, dest: \(other) }
            """)
        func run() throws -> String {
            let apply = try project.runbook("apply", "e", "--yes")
            #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
            return try #require(Self.succeededRunID(apply.stdout))
        }
        // Untouched since the run: rolls back without --force.
        let first = try run()
        let clean = try project.runbook("rollback", first, "--yes")
        #expect(clean.status == 0, "\(clean.stdout)\(clean.stderr)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "workers = 2\n")

        let second = try run()
        try "workers = 8\nthreads=4\n# tuned by hand\n".write(toFile: path, atomically: true, encoding: .utf8)
        let dry = try project.runbook("rollback", second, "--dry-run")
        #expect(dry.stdout.contains("rollback needs --force"), "\(dry.stdout)")
        let refused = try project.runbook("rollback", second, "--yes")
        #expect(refused.status == 3, "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stderr.contains("\(path) changed since the run") && refused.stderr.contains("--force"), "\(refused.stderr)")
        // Nothing changed: not the edited file, nor the other one.
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "workers = 8\nthreads=4\n# tuned by hand\n")
        #expect(try String(contentsOfFile: other, encoding: .utf8) == "a = 2\n")
        let forced = try project.runbook("rollback", second, "--yes", "--force")
        #expect(forced.status == 0, "\(forced.stdout)\(forced.stderr)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "workers = 2\n")
        #expect(try String(contentsOfFile: other, encoding: .utf8) == "a = 1\n")
    }

    @Test("a symlinked dest stays a link: the file it points to is changed, and rollback restores that file's bytes")
    func symlinkedDestKeepsTheLink() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        // nginx's layout: sites-enabled/app links to ../sites-available/app.
        try FileManager.default.createDirectory(atPath: project.work + "/sites-available", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: project.work + "/sites-enabled", withIntermediateDirectories: true)
        let target = project.work + "/sites-available/app"
        let link = project.work + "/sites-enabled/app"
        try project.write("work/sites-available/app", "server { listen 80; }\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: target)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "../sites-available/app")
        try project.write("templates/app.j2", "server { listen 8080; }\n")
        try project.write("runbooks/s.yml", """
            hosts: ctl
            steps:
              - name: Render the site
                template: { src: app.j2, dest: \(link) }
            """)
        let plan = try project.runbook("plan", "s")
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("\(link) → \(target): content"), "\(plan.stdout)")
        #expect(plan.stdout.contains("+server { listen 8080; }"), "\(plan.stdout)")
        let apply = try project.runbook("apply", "s", "--yes")
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == "../sites-available/app")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "server { listen 8080; }\n")
        #expect(try FileManager.default.attributesOfItem(atPath: target)[.posixPermissions] as? Int == 0o640)
        let again = try project.runbook("plan", "s")
        #expect(again.stdout.contains("\(link) → \(target) is up to date"), "\(again.stdout)")
        let runID = try #require(Self.succeededRunID(apply.stdout))
        let rollback = try project.runbook("rollback", runID, "--yes")
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == "../sites-available/app")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "server { listen 80; }\n")
        #expect(try FileManager.default.attributesOfItem(atPath: target)[.posixPermissions] as? Int == 0o640)
        // A link to nothing is refused, and stays as it was.
        try FileManager.default.removeItem(atPath: target)
        let dangling = try project.runbook("plan", "s")
        #expect(dangling.status == 1, "\(dangling.stdout)\(dangling.stderr)")
        #expect(dangling.stderr.contains("\(link) is a symbolic link to a file that does not exist"), "\(dangling.stderr)")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == "../sites-available/app")
    }

    @Test("backups of a file are kept for the newest runbook_keep_backups runs; the newest run still rolls back")
    func oldBackupsArePruned() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try "hosts:\n  ctl: { connection: local, vars: { runbook_lock_path: \(project.root)/host.lock, runbook_keep_backups: 3 } }\n"
            .write(toFile: project.root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
        try project.write("work/app.conf", "workers = 0\n")
        try project.write("templates/app.conf.j2", "workers = {{ params.n }}\n")
        // Another file's backup, and a file whose name only starts the same: never touched.
        try project.write("work/.other.conf.runbook-bak-20200101-000000-abcd.1", "other\n")
        try project.write("work/.app.conf.runbook-bak-notes", "mine\n")
        try project.write("runbooks/b.yml", """
            hosts: ctl
            params:
              n: { type: int }
            steps:
              - name: Render app.conf
                template: { src: app.conf.j2, dest: \(project.work)/app.conf }
            """)
        var runs: [String] = []
        for n in 1...5 {
            let apply = try project.runbook("apply", "b", "-p", "n=\(n)", "--yes")
            #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
            runs.append(try #require(Self.succeededRunID(apply.stdout)))
            Thread.sleep(forTimeInterval: 1.1) // run IDs of different seconds
        }
        let backups = try FileManager.default.contentsOfDirectory(atPath: project.work).filter { $0.hasPrefix(".app.conf.runbook-bak-2") }.sorted()
        #expect(backups == runs.suffix(3).map { ".app.conf.runbook-bak-\($0).1" }, "\(backups)")
        #expect(FileManager.default.fileExists(atPath: project.work + "/.other.conf.runbook-bak-20200101-000000-abcd.1"))
        #expect(FileManager.default.fileExists(atPath: project.work + "/.app.conf.runbook-bak-notes"))
        let back = try project.runbook("rollback", runs[4], "--yes")
        #expect(back.status == 0, "\(back.stdout)\(back.stderr)")
        #expect(try String(contentsOfFile: project.work + "/app.conf", encoding: .utf8) == "workers = 4\n")
        // The oldest run's file was changed by the runs after it: refused without --force;
        // with it, its backup is gone.
        let refused = try project.runbook("rollback", runs[0], "--yes")
        #expect(refused.status == 3 && refused.stderr.contains("changed since the run"), "\(refused.stdout)\(refused.stderr)")
        let gone = try project.runbook("rollback", runs[0], "--yes", "--force")
        #expect(gone.status == 4 && (gone.stdout + gone.stderr).contains("its backup is gone"), "\(gone.stdout)\(gone.stderr)")
    }

    @Test("control characters from names, params and host output are shown escaped, never forged lines")
    func terminalIsNotGivenAway() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try project.write("runbooks/t.yml", """
            hosts: ctl
            params: { x: { type: string, default: "" } }
            steps:
              - name: loud
                command:
                  run: |
                    printf '\\033[2J\\033]0;pwned\\007 boom\\n' >&2; exit 3
            """)
        try project.write("runbooks/forged.yml", """
            hosts: ctl
            steps:
              - name: "step\\nPlan: 99 to create, 0 to update."
                command: "true"
            """)
        let forged = try project.runbook("plan", "forged")
        #expect(forged.status == 2, "\(forged.stdout)")
        #expect(forged.stderr.contains("one line"), "\(forged.stderr)")
        let plan = try project.runbook("plan", "t", "-p", "x=a\u{1B}[31mred\nPlan: 42 to create")
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(!plan.stdout.contains("\u{1B}"), "\(plan.stdout)")
        let lines = plan.stdout.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("Plan: 99") || $0.hasPrefix("Plan: 42") }, "\(plan.stdout)")
        #expect(plan.stdout.contains("\\u001b[31mred"), "\(plan.stdout)")
        let apply = try project.runbook("apply", "t", "--yes")
        #expect(apply.status == 1)
        #expect(!apply.stdout.contains("\u{1B}") && !apply.stdout.contains("\u{07}"), "\(apply.stdout)")
        #expect(apply.stdout.contains("\\u001b[2J"), "\(apply.stdout)")
    }

    @Test("apply --plan refuses -p, a plan of another format, and plan --out replaces a symlink instead of following it")
    func savedPlanEdges() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try project.write("runbooks/t.yml", "hosts: ctl\nsteps:\n  - command: \"true\"\n")
        let victim = project.root + "/victim"
        try project.write("victim", "keep me\n")
        let out = project.root + "/plan.json"
        try FileManager.default.createSymbolicLink(atPath: out, withDestinationPath: victim)
        let plan = try project.runbook("plan", "t", "--out", out)
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me\n")
        let attributes = try FileManager.default.attributesOfItem(atPath: out)
        #expect(attributes[.type] as? FileAttributeType == .typeRegular)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let withParam = try project.runbook("apply", "--plan", out, "-p", "x=1")
        #expect(withParam.status == 2, "\(withParam.stderr)")
        var json = try String(contentsOfFile: out, encoding: .utf8)
        json = json.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 999")
        try json.write(toFile: out, atomically: true, encoding: .utf8)
        let future = try project.runbook("apply", "--plan", out, "--yes")
        #expect(future.status == 2, "\(future.stdout)\(future.stderr)")
        #expect(future.stderr.contains("format 999"), "\(future.stderr)")
    }

    @Test("a runbook whose hosts match no host is refused, not a success on 0 hosts")
    func noHosts() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        try project.write("inventory/hosts.yml", "hosts: {}\n")
        try project.write("runbooks/t.yml", "hosts: all\nsteps:\n  - command: \"true\"\n")
        let r = try project.runbook("apply", "t", "--yes")
        #expect(r.status == 2, "\(r.stdout)\(r.stderr)")
    }

    @Test("SIGINT during apply: no further step starts, what ran is rolled back, the locks are released, exit 1")
    func interrupted() throws {
        let project = try LocalProject()
        defer { project.cleanUp() }
        let work = project.work
        try project.write("runbooks/t.yml", """
            hosts: ctl
            steps:
              - name: first
                command: { run: "touch \(work)/first", undo: "rm -f \(work)/first" }
              - name: slow
                command: "touch \(work)/slow-started; sleep 3"
              - name: third
                command: "touch \(work)/third"
            """)
        let (process, out) = try startBuiltRunbook(["apply", "t", "--yes", "--root", project.root, "-i", project.root + "/inventory/hosts.yml"])
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: work + "/slow-started") && Date() < deadline { usleep(20_000) }
        #expect(FileManager.default.fileExists(atPath: work + "/slow-started"))
        kill(process.processIdentifier, SIGINT)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 1, "\(text)")
        #expect(text.contains("interrupted"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: work + "/first"), "not rolled back: \(text)")
        #expect(!FileManager.default.fileExists(atPath: work + "/third"), "a step started after the interrupt")
        #expect(!FileManager.default.fileExists(atPath: project.root + "/host.lock"), "host lock left")
        #expect(!FileManager.default.fileExists(atPath: project.root + "/.runbook/lock"), "controller lock left")
    }
}

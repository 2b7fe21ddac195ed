import Foundation
import Testing
import TestSupport

/// `runbook schedule`: the built binary against a stand-in `crontab` (RUNBOOK_CRONTAB) that
/// keeps the crontab in a file, and one installed line run as cron would run it.
@Suite("Schedule", .serialized)
struct ScheduleTests {
    let env: TestHosts
    init() throws { env = try TestHosts.load() }

    /// A project with a scheduled runbook on the controller (`local` in the test inventory),
    /// one unscheduled runbook, and a stand-in crontab program.
    struct Setup {
        let project: RunbookProject
        /// The file the stand-in keeps the crontab in; absent until something is installed.
        let crontab: String
        /// The stand-in program, for RUNBOOK_CRONTAB.
        let program: String

        func run(_ arguments: [String], stdin: String? = nil) throws -> ProcessOutput {
            try project.run(["schedule"] + arguments, environment: ["RUNBOOK_CRONTAB": program], stdin: stdin)
        }

        func crontabText() -> String? { try? String(contentsOfFile: crontab, encoding: .utf8) }

        func cleanUp() {
            project.cleanUp()
            try? FileManager.default.removeItem(atPath: (crontab as NSString).deletingLastPathComponent)
        }
    }

    func setUp(steps: String? = nil) throws -> Setup {
        let p = try RunbookProject(env)
        try p.write("runbooks/nightly.yml", """
            description: Nightly maintenance
            hosts: local
            schedule: "0 3 * * *"
            steps:
            \(steps ?? "  - command: { run: \"true\" }")

            """)
        try p.write("runbooks/by-hand.yml", "hosts: local\nsteps:\n  - command: { run: \"true\" }\n")
        let (program, crontab) = try StandInCrontab.make()
        return Setup(project: p, crontab: crontab, program: program)
    }

    /// The executable the lines name: the built binary, symlinks resolved.
    var executable: String {
        URL(fileURLWithPath: repositoryRoot + "/.build/debug/runbook").resolvingSymlinksInPath().path
    }

    @Test("--print shows the block for the scheduled runbooks and changes nothing")
    func printBlock() throws {
        let s = try setUp()
        defer { s.cleanUp() }
        let r = try s.run([])
        #expect(r.status == 0, "\(r.stderr)")
        let root = s.project.root
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(r.stdout)")
        #expect(lines.first == "# BEGIN runbook \(root) (managed by runbook schedule; do not edit)")
        #expect(lines.last == "# END runbook \(root)")
        let log = "\(root)/.runbook/logs/nightly.log"
        #expect(lines.dropFirst().first == "0 3 * * * cd \(root)"
            + " && \(executable) apply nightly --yes --color never -i \(root)/inventory/hosts.yml --state-dir \(root)/.runbook --log \(log) >> \(log) 2>&1")
        #expect(!r.stdout.contains("by-hand"))
        #expect(try s.run(["--print"]).stdout == r.stdout)
        #expect(s.crontabText() == nil, "--print installs nothing")
        #expect(!FileManager.default.fileExists(atPath: root + "/.runbook/logs"))

        let json = try s.run(["--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(object?["runbook"] as? String == "nightly")
        #expect(object?["line"] as? String == lines[1])
    }

    @Test("--install keeps other lines, is idempotent, replaces a changed block; --remove takes it out")
    func installAndRemove() throws {
        let s = try setUp()
        defer { s.cleanUp() }
        let mine = "MAILTO=\"\"\n# my own jobs\n\n*/5 *  * * *   /usr/bin/true  # keep me\n"
        try mine.write(toFile: s.crontab, atomically: true, encoding: .utf8)

        let first = try s.run(["--install", "--yes"])
        #expect(first.status == 0, "\(first.stdout)\(first.stderr)")
        #expect(first.stdout.contains("+# BEGIN runbook \(s.project.root)"), "the change is shown")
        #expect(first.stdout.contains("installed 1 scheduled runbook"))
        // The debug binary lives in .build/: the crontab would lose it at the next clean.
        #expect(first.stderr.contains("inside a build folder that the next clean or rebuild removes"), "\(first.stderr)")
        let installed = try #require(s.crontabText())
        let block = try s.run(["--print"]).stdout
        #expect(installed == mine + block)
        var info = stat()
        #expect(stat(s.project.root + "/.runbook/logs", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)

        let again = try s.run(["--install", "--yes"])
        #expect(again.status == 0)
        #expect(again.stdout.contains("crontab unchanged"), "\(again.stdout)")
        #expect(s.crontabText() == installed)

        try s.project.write("runbooks/by-hand.yml", "hosts: local\nschedule: \"30 4 * * 1-5\"\nsteps:\n  - command: { run: \"true\" }\n")
        let replaced = try s.run(["--install", "--yes"])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        let text = try #require(s.crontabText())
        #expect(text.hasPrefix(mine))
        #expect(text.components(separatedBy: "# BEGIN runbook").count == 2, "one block, replaced")
        #expect(text.contains("\n30 4 * * 1-5 cd \(s.project.root) && "))
        #expect(text.contains(" apply by-hand --yes "))

        let removed = try s.run(["--remove", "--yes"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stdout.contains("removed the entries for \(s.project.root)"))
        #expect(s.crontabText() == mine)
        let nothing = try s.run(["--remove", "--yes"])
        #expect(nothing.status == 0)
        #expect(nothing.stdout.contains("nothing to remove"))
        #expect(s.crontabText() == mine)
    }

    @Test("with no schedules left, --install removes the old block; from no crontab at all it creates one")
    func noSchedulesLeft() throws {
        let s = try setUp()
        defer { s.cleanUp() }
        #expect(try s.run(["--install", "--yes"]).status == 0)
        #expect(s.crontabText()?.hasPrefix("# BEGIN runbook ") == true)
        try FileManager.default.removeItem(atPath: s.project.root + "/runbooks/nightly.yml")
        let r = try s.run(["--install", "--yes"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("removed the old entries"))
        #expect(s.crontabText() == "")
    }

    @Test("without a terminal and without --yes, nothing changes (exit 3)")
    func refusedWithoutTerminal() throws {
        let s = try setUp()
        defer { s.cleanUp() }
        let mine = "# mine\n"
        try mine.write(toFile: s.crontab, atomically: true, encoding: .utf8)
        let install = try s.run(["--install"], stdin: "yes\n")
        #expect(install.status == 3)
        #expect(install.stderr.contains("pass --yes"))
        #expect(s.crontabText() == mine)
        #expect(!FileManager.default.fileExists(atPath: s.project.root + "/.runbook/logs"))

        #expect(try s.run(["--install", "--yes"]).status == 0)
        let installed = s.crontabText()
        let remove = try s.run(["--remove"])
        #expect(remove.status == 3)
        #expect(s.crontabText() == installed)
    }

    @Test("an invalid schedule exits 2 naming the file and line; nothing is installed")
    func invalidSchedule() throws {
        let s = try setUp()
        defer { s.cleanUp() }
        try s.project.write("runbooks/broken.yml", "hosts: local\nschedule: \"0 25 * * *\"\nsteps:\n  - command: { run: \"true\" }\n")
        for arguments in [["--print"], ["--install", "--yes"]] {
            let r = try s.run(arguments)
            #expect(r.status == 2, "\(r.stdout)\(r.stderr)")
            #expect(r.stderr.contains("runbooks/broken.yml:2:"), "\(r.stderr)")
            #expect(r.stderr.contains("schedule: invalid cron schedule: hour field \"25\""), "\(r.stderr)")
            #expect(r.stdout.isEmpty)
        }
        #expect(s.crontabText() == nil)

        // A schedule that cron could never run: a param without a default.
        try FileManager.default.removeItem(atPath: s.project.root + "/runbooks/broken.yml")
        try s.project.write("runbooks/needs-input.yml", "hosts: local\nparams:\n  target: { type: string }\nschedule: \"@daily\"\nsteps:\n  - command: { run: \"true\" }\n")
        let r = try s.run(["--install", "--yes"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("runbooks/needs-input.yml:4:"), "\(r.stderr)")
        #expect(r.stderr.contains("no default: target"), "\(r.stderr)")
        #expect(s.crontabText() == nil)
        #expect(try s.project.run(["validate", "needs-input"]).status == 2, "validate reports it too")
    }

    @Test("a missing crontab program is an error naming the cron package")
    func missingCrontab() throws {
        let s = try setUp()
        defer { s.cleanUp() }
        let r = try s.project.run(["schedule", "--install", "--yes"], environment: ["RUNBOOK_CRONTAB": "", "PATH": "/nonexistent"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("cron package"), "\(r.stderr)")
    }

    @Test("the installed line, run as cron runs it, applies the runbook and logs it; an overlapping run is refused and logged")
    func installedLineRuns() throws {
        let effect = "/var/tmp/rbcron-effect-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: effect) }
        let p = try setUp(steps: """
              - command: { run: "echo scheduled >> \(effect)" }
              - sleep: 4s
            """)
        defer { p.cleanUp() }
        #expect(try p.run(["--install", "--yes"]).status == 0)
        let text = try #require(p.crontabText())
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("0 3 * * * ") })
        // What cron hands to /bin/sh: the fields after the five time fields, `\%` read as `%`.
        let command = String(line.dropFirst("0 3 * * * ".count)).replacingOccurrences(of: "\\%", with: "%")
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("rbcron-home-\(UUID().uuidString)").path
        let cronEnvironment = ["PATH": "/usr/bin:/bin", "HOME": home, "SHELL": "/bin/sh", "LOGNAME": "root"]
        let log = p.project.root + "/.runbook/logs/nightly.log"

        // The first run holds the locks during its sleep; a second one meanwhile is refused.
        let first = Process()
        first.executableURL = URL(fileURLWithPath: "/bin/sh")
        first.arguments = ["-c", command]
        first.environment = cronEnvironment
        first.currentDirectoryURL = URL(fileURLWithPath: "/")
        try first.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("[1/2]") {
            Thread.sleep(forTimeInterval: 0.1)
        }
        let second = try runProcessFull("/bin/sh", ["-c", command], environment: cronEnvironment, currentDirectory: "/")
        #expect(second.status == 3, "\(second.stdout)\(second.stderr)")
        first.waitUntilExit()
        #expect(first.terminationStatus == 0)

        #expect((try? String(contentsOfFile: effect, encoding: .utf8)) == "scheduled\n", "the step ran once")
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        let stamps = logged.split(separator: "\n").filter { $0.hasPrefix("== ") }
        #expect(stamps.count == 2, "\(logged)")
        #expect(stamps.allSatisfy { $0.wholeMatch(of: /== \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ runbook apply nightly/) != nil }, "\(stamps)")
        #expect(logged.contains("applying nightly to local"))
        #expect(logged.contains("succeeded"))
        #expect(logged.contains("refused"), "the overlapping run's refusal is in the log")
        #expect(!logged.contains("\u{1B}["), "no colour in the log")
    }
}

/// A stand-in for crontab(1) that keeps the crontab in a file of a new temporary folder:
/// `-l` prints it (or exits 1 with "no crontab for root"), `-` replaces it with stdin.
/// For RUNBOOK_CRONTAB, so no test touches the machine's own crontab.
enum StandInCrontab {
    /// The program and the file it keeps the crontab in (absent until something is installed).
    static func make() throws -> (program: String, crontab: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rbcron-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let crontab = dir + "/crontab"
        let program = dir + "/crontab.sh"
        try """
            #!/bin/sh
            tab='\(crontab)'
            case "$1" in
              -l) [ -f "$tab" ] || { echo "no crontab for root" >&2; exit 1; }; cat "$tab" ;;
              -) cat > "$tab" ;;
              *) echo "usage: crontab -l | crontab -" >&2; exit 2 ;;
            esac

            """.write(toFile: program, atomically: true, encoding: .utf8)
        chmod(program, 0o755)
        return (program, crontab)
    }
}

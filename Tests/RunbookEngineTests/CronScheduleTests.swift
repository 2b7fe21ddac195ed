import Foundation
import RunbookCore
import RunbookEngine
import Testing

/// The crontab block of `runbook schedule`: rendering, and putting it into (or taking it out
/// of) a crontab without disturbing anything else in it.
@Suite("Schedule block")
struct CronScheduleTests {
    let schedule = CronSchedule(root: "/srv/ops", executable: "/usr/local/bin/runbook",
                                inventoryPath: "/srv/ops/inventory/hosts.yml", stateDir: "/srv/ops/.runbook")
    let nightly = CronSchedule.Entry(runbook: "nightly", schedule: "0 3 * * *")
    let hourly = CronSchedule.Entry(runbook: "gather", schedule: "@hourly")

    /// Someone's own crontab: a variable, comments, a blank line, odd spacing, no block.
    let userCrontab = "MAILTO=ops@example.com\n# backups\n\n*/5 *  * * *   /usr/bin/backup --fast  \n@reboot /bin/true\n"

    @Test("a line runs apply from the root with absolute paths, logging (and rotating) through --log")
    func line() throws {
        let line = try schedule.line(for: nightly)
        #expect(line == "0 3 * * * cd /srv/ops"
            + " && /usr/local/bin/runbook apply nightly --yes --color never -i /srv/ops/inventory/hosts.yml --state-dir /srv/ops/.runbook"
            + " --log /srv/ops/.runbook/logs/nightly.log >> /srv/ops/.runbook/logs/nightly.log 2>&1")
        #expect(try schedule.line(for: hourly).hasPrefix("@hourly cd /srv/ops && "))
        // Extra spaces in the expression are not carried into the crontab.
        #expect(try schedule.line(for: .init(runbook: "x", schedule: " */15  2-4 * *\tmon-fri ")).hasPrefix("*/15 2-4 * * mon-fri cd "))
    }

    @Test("every % is escaped in the line, and cron's reading gives back the command")
    func percentEscaped() throws {
        let percent = CronSchedule(root: "/srv/100%ops", executable: "/usr/local/bin/runbook",
                                   inventoryPath: "/srv/100%ops/inventory/hosts.yml", stateDir: "/srv/100%ops/.runbook")
        let line = try percent.line(for: nightly)
        let field = line.split(separator: " ", maxSplits: 5).last.map(String.init) ?? ""
        #expect(field.contains("\\%"))
        #expect(!field.replacingOccurrences(of: "\\%", with: "").contains("%"))
        #expect(CronSchedule.commandCronRuns(field) == percent.command(for: "nightly"))
        #expect(CronSchedule.commandCronRuns(#"echo a\%b\c % stdin"#) == #"echo a%b\c "#)
    }

    @Test("a root with a space and a quote is one shell word everywhere, and named as is in the markers")
    func quotedRoot() throws {
        let odd = CronSchedule(root: "/srv/my ops's", executable: "/opt/run book/runbook",
                               inventoryPath: "/srv/my ops's/inventory/hosts.yml", stateDir: "/srv/my ops's/.runbook")
        let block = try odd.block([nightly])
        #expect(block.hasPrefix("# BEGIN runbook /srv/my ops's (managed by runbook schedule; do not edit)\n"))
        #expect(block.hasSuffix("\n# END runbook /srv/my ops's\n"))
        let command = odd.command(for: "nightly")
        #expect(command.hasPrefix("cd '/srv/my ops'\\''s' && "))
        #expect(command.contains(" && '/opt/run book/runbook' apply nightly --yes --color never -i '/srv/my ops'\\''s/inventory/hosts.yml' --state-dir '/srv/my ops'\\''s/.runbook' --log '/srv/my ops'\\''s/.runbook/logs/nightly.log' >> '/srv/my ops'\\''s/.runbook/logs/nightly.log' 2>&1"))
        // The shell reads the quoted words back as the original paths.
        let words = try shellWords("for w in \(Shell.quote(odd.root)) \(Shell.quote(odd.logPath(for: "nightly"))); do printf '%s\\n' \"$w\"; done")
        #expect(words == ["/srv/my ops's", "/srv/my ops's/.runbook/logs/nightly.log"])
    }

    @Test("a value a crontab line cannot carry is refused")
    func unrepresentable() {
        let broken = CronSchedule(root: "/srv/a\nb", executable: "/bin/runbook", inventoryPath: "/i.yml", stateDir: "/s")
        #expect(throws: DiagnosticError.self) { try broken.line(for: nightly) }
        let backslash = CronSchedule(root: "/srv/a\\%b", executable: "/bin/runbook", inventoryPath: "/i.yml", stateDir: "/s")
        #expect(throws: DiagnosticError.self) { try backslash.line(for: nightly) }
    }

    @Test("installing keeps every other line byte for byte and appends the block")
    func installKeepsLines() throws {
        let installed = try schedule.installing([hourly, nightly], into: userCrontab)
        let block = try schedule.block([hourly, nightly])
        #expect(installed == userCrontab + block)
        #expect(block.split(separator: "\n").count == 4)
        // From nothing, and onto a crontab whose last line lacks its newline.
        #expect(try schedule.installing([nightly], into: "") == (try schedule.block([nightly])))
        #expect(try schedule.installing([nightly], into: "A=1") == "A=1\n" + (try schedule.block([nightly])))
    }

    @Test("installing twice gives the same crontab")
    func idempotent() throws {
        let once = try schedule.installing([nightly], into: userCrontab)
        #expect(try schedule.installing([nightly], into: once) == once)
        let bytes: [UInt8] = Array("A=1\n".utf8) + [0xFF, 0xFE, 0x0A]
        let installed = try schedule.installing([nightly], into: bytes)
        #expect(Array(installed.prefix(bytes.count)) == bytes, "invalid UTF-8 outside the block is kept")
        #expect(try schedule.installing([nightly], into: installed) == installed)
        #expect(try schedule.removing(from: installed) == bytes)
    }

    @Test("a changed set of runbooks replaces the block where it was")
    func replace() throws {
        let before = "A=1\n" + (try schedule.block([nightly])) + "# after\n* * * * * date\n"
        let after = try schedule.installing([hourly, nightly], into: before)
        #expect(after == "A=1\n" + (try schedule.block([hourly, nightly])) + "# after\n* * * * * date\n")
        // A block written with other wording after the root is still this project's.
        let old = before.replacingOccurrences(of: schedule.beginMarker, with: "# BEGIN runbook /srv/ops (old wording)")
        #expect(try schedule.installing([hourly, nightly], into: old) == after)
    }

    @Test("removing takes out only this project's block; no entries removes it too")
    func remove() throws {
        let other = CronSchedule(root: "/srv/ops2", executable: "/usr/local/bin/runbook",
                                 inventoryPath: "/srv/ops2/inventory/hosts.yml", stateDir: "/srv/ops2/.runbook")
        let both = try other.installing([nightly], into: try schedule.installing([nightly], into: userCrontab))
        let removed = try schedule.removing(from: both)
        #expect(removed == userCrontab + (try other.block([nightly])))
        #expect(try schedule.installing([], into: both) == removed)
        #expect(try schedule.removing(from: removed) == removed)
        #expect(try schedule.removing(from: try schedule.installing([nightly], into: "")) == "")
        #expect(try schedule.block([]) == "")
    }

    @Test("a block without its END line is refused rather than guessed at")
    func unterminated() {
        let broken = userCrontab + schedule.beginMarker + "\n0 3 * * * true\n"
        #expect(throws: DiagnosticError.self) { try schedule.installing([nightly], into: broken) }
        #expect(throws: DiagnosticError.self) { try schedule.removing(from: broken) }
    }

    @Test("a scheduled runbook needs a default for every param, reported at its schedule: line")
    func scheduledParamsNeedDefaults() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rbsched-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/runbooks", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let loader = RunbookLoader(root: root)
        let text = """
            hosts: web
            params:
              workers: { type: int }
              mode: { type: string, default: fast }
            schedule: "@daily"
            steps:
              - sleep: 1s
            """
        try text.write(toFile: root + "/runbooks/scale.yml", atomically: true, encoding: .utf8)
        let problems = loader.checkSchedule(try loader.load(name: "scale"))
        #expect(problems.count == 1)
        #expect(problems.first?.field == "schedule")
        #expect(problems.first?.location?.line == 5)
        #expect(problems.first?.location?.file.hasSuffix("runbooks/scale.yml") == true)
        #expect(problems.first?.summary.contains("no default: workers") == true, "\(problems)")

        try text.replacingOccurrences(of: "{ type: int }", with: "{ type: int, default: 4 }")
            .write(toFile: root + "/runbooks/scale.yml", atomically: true, encoding: .utf8)
        #expect(loader.checkSchedule(try loader.load(name: "scale")).isEmpty)
        try text.replacingOccurrences(of: "schedule: \"@daily\"\n", with: "")
            .write(toFile: root + "/runbooks/scale.yml", atomically: true, encoding: .utf8)
        #expect(loader.checkSchedule(try loader.load(name: "scale")).isEmpty, "unscheduled runbooks may require params")
    }

    /// The lines `/bin/sh -c script` prints.
    private func shellWords(_ script: String) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}

import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine
import RunbookTransport

extension Runbook {
    /// `runbook schedule [--print|--install|--remove]`: crontab entries for the runbooks that
    /// have `schedule:`, kept in one marked block of the user's crontab.
    struct Schedule: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "schedule",
            abstract: "Crontab entries for the runbooks that have `schedule:` (print, install or remove them).",
            discussion: """
                Each entry runs `runbook apply NAME --yes` from the project root with absolute paths, \
                appending to STATE/logs/NAME.log. The entries sit between `# BEGIN runbook ROOT` and \
                `# END runbook ROOT` comments; the rest of the crontab is left as it is. \
                RUNBOOK_CRONTAB names the program used instead of `crontab` (it must take -l and -).
                """)

        /// What to do with the block.
        enum Action: String, EnumerableFlag {
            case print, install, remove

            static func help(for value: Action) -> ArgumentHelp? {
                switch value {
                case .print: return "Print the block; change nothing."
                case .install: return "Put the block in the crontab, replacing this project's old one."
                case .remove: return "Take this project's block out of the crontab."
                }
            }
        }

        @Flag var action: Action = .print

        @Flag(help: "Change the crontab without asking.")
        var yes = false

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let schedule = CronSchedule(root: context.root, executable: Self.executablePath(),
                                        inventoryPath: context.inventoryPath, stateDir: context.stateDir)
            switch action {
            case .print:
                let entries = try scheduledRunbooks(context)
                let block = try schedule.block(entries)
                if context.json {
                    for entry in entries {
                        context.out.write(List.jsonLine(["runbook": entry.runbook, "schedule": entry.schedule,
                                                         "line": try schedule.line(for: entry), "log": schedule.logPath(for: entry.runbook)]))
                    }
                } else if entries.isEmpty {
                    context.err.write("no runbook in \(RunbookLoader.displayPath(context.root + "/runbooks"))/ has schedule:\n")
                } else {
                    context.out.write(block)
                }
            case .install:
                let entries = try scheduledRunbooks(context)
                if let warning = Self.buildFolderWarning(schedule.executable) { context.err.write(context.err.paint(warning, .yellow) + "\n") }
                let crontab = try Crontab(context: context)
                let current = try await crontab.read()
                let updated = try schedule.installing(entries, into: current)
                if updated == current {
                    if !entries.isEmpty { try Self.createLogDirectory(schedule.logDirectory, context) }
                    report(context, "crontab unchanged (\(Self.count(entries)) for \(context.root))", action: "unchanged", entries: entries)
                    return
                }
                showDiff(context, old: current, new: updated)
                let question = entries.isEmpty
                    ? "No runbook has schedule: any more; remove the old entries from the crontab of \(crontab.user)?"
                    : "Install \(Self.count(entries)) in the crontab of \(crontab.user)?"
                try context.confirmOrRefuse(question, yes: yes, what: "change the crontab")
                if !entries.isEmpty { try Self.createLogDirectory(schedule.logDirectory, context) }
                try await crontab.write(updated)
                if entries.isEmpty {
                    report(context, "removed the old entries for \(context.root) from the crontab of \(crontab.user)", action: "removed", entries: entries)
                } else {
                    report(context, "installed \(Self.count(entries)) in the crontab of \(crontab.user); logs in \(schedule.logDirectory)/",
                           action: "installed", entries: entries)
                }
            case .remove:
                let crontab = try Crontab(context: context)
                let current = try await crontab.read()
                let updated = try schedule.removing(from: current)
                if updated == current {
                    report(context, "nothing to remove: the crontab of \(crontab.user) has no entries for \(context.root)", action: "unchanged", entries: [])
                    return
                }
                showDiff(context, old: current, new: updated)
                try context.confirmOrRefuse("Remove these entries from the crontab of \(crontab.user)?", yes: yes, what: "change the crontab")
                try await crontab.write(updated)
                report(context, "removed the entries for \(context.root) from the crontab of \(crontab.user)", action: "removed", entries: [])
            }
        }

        /// The runbooks with `schedule:`, sorted by name. Any invalid runbook stops everything
        /// (exit 2): a block is only ever made from a project that fully loads, and a scheduled
        /// runbook must be runnable unattended (params all defaulted, hosts in the inventory),
        /// or it would fail at every run.
        func scheduledRunbooks(_ context: Context) throws -> [CronSchedule.Entry] {
            let loader = RunbookLoader(root: context.root)
            var problems: [Diagnostic] = []
            var scheduled: [RunbookCore.Runbook] = []
            for entry in loader.list() {
                switch entry.result {
                case .success(let runbook): if runbook.schedule != nil { scheduled.append(runbook) }
                case .failure(let error): problems += error.diagnostics
                }
            }
            problems += scheduled.flatMap(loader.checkSchedule)
            if !problems.isEmpty { throw DiagnosticError(problems) }
            if !scheduled.isEmpty {
                let inventory = try context.loadInventory()
                problems = scheduled.flatMap { loader.checkHosts($0, against: inventory) }
                if !problems.isEmpty { throw DiagnosticError(problems) }
            }
            return scheduled.map { CronSchedule.Entry(runbook: $0.name, schedule: $0.schedule ?? "") }
        }

        /// The crontab change as a unified diff, shown before asking (not in JSON mode).
        func showDiff(_ context: Context, old: [UInt8], new: [UInt8]) {
            guard !context.json else { return }
            let diff = CronSchedule.diff(old: old, new: new)
            context.out.write(diff.split(separator: "\n", omittingEmptySubsequences: false).map { line in
                if line.hasPrefix("+"), !line.hasPrefix("+++") { return context.out.paint(String(line), .green) }
                if line.hasPrefix("-"), !line.hasPrefix("---") { return context.out.paint(String(line), .red) }
                return String(line)
            }.joined(separator: "\n"))
        }

        /// The outcome: `message` for people, or one JSON object with the result and the runbooks.
        func report(_ context: Context, _ message: String, action: String, entries: [CronSchedule.Entry]) {
            if context.json {
                context.out.write(List.jsonLine(["event": "schedule", "result": action, "runbooks": entries.map(\.runbook)]))
            } else {
                context.out.write(message + "\n")
            }
        }

        /// `1 scheduled runbook`, `2 scheduled runbooks`.
        static func count(_ entries: [CronSchedule.Entry]) -> String {
            "\(entries.count) scheduled runbook\(entries.count == 1 ? "" : "s")"
        }

        /// A warning when the binary cron would run lives in a build folder (`.build/`), which
        /// the next clean or rebuild removes or replaces; nil otherwise.
        static func buildFolderWarning(_ executable: String) -> String? {
            guard executable.contains("/.build/") else { return nil }
            return "warning: the crontab would run \(executable), inside a build folder that the next clean or rebuild removes; "
                + "install the release binary first (scripts/install puts it in /usr/local/bin) and run schedule --install from it"
        }

        /// The running executable, absolute, so cron runs this very binary whatever its PATH.
        static func executablePath() -> String {
            if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
            let argument = CommandLine.arguments.first ?? "runbook"
            let cwd = FileManager.default.currentDirectoryPath
            if argument.contains("/") {
                return URL(fileURLWithPath: Context.absolute(argument, base: cwd)).standardizedFileURL.path
            }
            return findOnPath(argument) ?? argument
        }

        /// `STATE/logs`, 0700 (the logs show what ran where), so cron's `>>` finds it.
        static func createLogDirectory(_ path: String, _ context: Context) throws {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                context.err.write("error: cannot create the log directory \(path): \(error.localizedDescription)\n")
                throw ExitCode(1)
            }
        }
    }
}

/// The user's crontab, through `crontab -l` and `crontab -` (or the program `RUNBOOK_CRONTAB`
/// names, which must take the same arguments), run like any local command.
struct Crontab {
    let program: String
    let user = ControllerIdentity.user
    let context: Context
    private let transport = LocalTransport(hostName: "crontab")

    /// Finds the program, or explains what to install (exit 1).
    init(context: Context) throws {
        self.context = context
        if let override = ProcessInfo.processInfo.environment["RUNBOOK_CRONTAB"], !override.isEmpty {
            let path = override.contains("/") ? Context.absolute(override, base: FileManager.default.currentDirectoryPath) : findOnPath(override)
            guard let path, FileManager.default.isExecutableFile(atPath: path) else {
                context.err.write("error: RUNBOOK_CRONTAB=\(override) is not an executable program\n")
                throw ExitCode(1)
            }
            program = path
        } else {
            guard let path = findOnPath("crontab") else {
                context.err.write("error: the crontab program was not found on PATH; install the cron package (apt-get install cron), or set RUNBOOK_CRONTAB\n")
                throw ExitCode(1)
            }
            program = path
        }
    }

    /// The current crontab; empty when the user has none (`crontab -l` exits 1 saying "no crontab for USER").
    func read() async throws -> [UInt8] {
        let output = try await run(["-l"], stdin: [])
        if output.succeeded { return output.stdout }
        if output.stderrText.contains("no crontab for") { return [] }
        throw failure("\(program) -l", output)
    }

    /// Installs `text` as the whole crontab.
    func write(_ text: [UInt8]) async throws {
        let output = try await run(["-"], stdin: text)
        if !output.succeeded { throw failure("\(program) -", output) }
    }

    private func run(_ arguments: [String], stdin: [UInt8]) async throws -> CommandOutput {
        do {
            return try await transport.run(ShellCommand(argv: [program] + arguments), stdin: stdin, timeout: .seconds(60), onOutput: nil)
        } catch {
            context.err.write("error: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// Reports a failed crontab command with its stderr; the caller throws the exit code (1).
    private func failure(_ what: String, _ output: CommandOutput) -> ExitCode {
        let detail = output.stderrText.trimmingCharacters(in: .whitespacesAndNewlines)
        context.err.write("error: \(what) failed (\(output.statusText))\(detail.isEmpty ? "" : ": " + detail)\n")
        return ExitCode(1)
    }
}

/// `name` looked up on PATH, as the shell would, so a missing program is named before anything runs.
private func findOnPath(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") where !directory.isEmpty {
        let candidate = directory + "/" + name
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

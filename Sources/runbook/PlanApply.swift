import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine

/// `-p k=v` options shared by plan and apply.
struct ParamOptions: ParsableArguments {
    @Option(name: [.customShort("p"), .customLong("param")], help: "A parameter, NAME=VALUE (repeatable).")
    var params: [String] = []

    @Option(name: [.customShort("l"), .long], help: "Only these of the runbook's hosts (host, group, glob, comma list).")
    var limit: String?

    func parsed() throws -> [String: String] {
        var result: [String: String] = [:]
        for text in params {
            guard let (key, value) = ParamValues.parseAssignment(text) else {
                throw ValidationError("-p \(text): expected NAME=VALUE")
            }
            result[key] = value
        }
        return result
    }
}

extension Context {
    func engine() -> Engine {
        Engine(settings: EngineSettings(root: root, stateDir: stateDir, inventoryPath: inventoryPath, forks: forks, logger: logger),
               events: Printer(out: out, json: json, verbose: verbose))
    }
}

extension Runbook {
    /// `runbook plan NAME`: what would change, file diffs included; nothing changes.
    struct Plan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "plan",
            abstract: "Show what a runbook would change on each host (a dry run); nothing is changed.")

        @Argument(help: "The runbook (runbooks/NAME.yml).")
        var name: String

        @OptionGroup var paramOptions: ParamOptions

        @Option(help: "Save the plan (JSON, mode 0600) for `runbook apply --plan FILE`.")
        var out: String?

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let request = RunRequest(runbook: name, params: try paramOptions.parsed(), limit: paramOptions.limit)
            do {
                _ = try await context.engine().plan(request, saveTo: out.map { Context.absolute($0, base: FileManager.default.currentDirectoryPath) })
            } catch let error as EngineError {
                context.err.write(context.err.paint("error: ", .red) + error.message + "\n")
                throw ExitCode(error.exitCode)
            }
            if let out, !context.json { context.out.write("Saved the plan to \(out); apply it with `runbook apply --plan \(out)`.\n") }
        }
    }

    /// `runbook apply NAME` or `runbook apply --plan FILE`.
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "apply",
            abstract: "Apply a runbook (or exactly a saved plan), rolling back on failure.",
            discussion: "Without --yes the plan is shown and you are asked; with no terminal and no --yes, apply refuses (exit 3).")

        @Argument(help: "The runbook (runbooks/NAME.yml); omit with --plan.")
        var name: String?

        @OptionGroup var paramOptions: ParamOptions

        @Option(help: "Apply exactly this saved plan, or refuse (exit 3) if anything it relied on changed.")
        var plan: String?

        @Flag(help: "Apply without asking.")
        var yes = false

        @Flag(help: "On failure, leave the hosts as they are instead of rolling back.")
        var noRollback = false

        @Option(help: "Append the output to this file (0600), rotated first when it is over 1 MiB (FILE.1 … FILE.5 kept). Scheduled runs use it.")
        var log: String?

        @OptionGroup var options: GlobalOptions

        func validate() throws {
            if name == nil && plan == nil { throw ValidationError("give a runbook name or --plan FILE") }
            if name != nil && plan != nil { throw ValidationError("give either a runbook name or --plan FILE, not both") }
            if plan != nil && (!paramOptions.params.isEmpty || paramOptions.limit != nil) {
                throw ValidationError("--plan applies the saved plan exactly: its params and hosts are in it; -p and -l cannot change them")
            }
        }

        func run() async throws {
            if let log {
                let stamp = ISO8601DateFormatter().string(from: Date())
                try LogFile.redirect(to: Context.absolute(log, base: FileManager.default.currentDirectoryPath),
                                     header: "== \(stamp) runbook apply \(name ?? plan ?? "")")
            }
            let context = Context(options)
            let request = try name.map { RunRequest(runbook: $0, params: try paramOptions.parsed(), limit: paramOptions.limit) }
            let interactive = isatty(0) == 1 && !context.json
            let out = context.out
            var confirm: (@Sendable (RunbookCore.Plan) -> Bool)? = nil
            if interactive {
                confirm = { @Sendable (plan: RunbookCore.Plan) -> Bool in
                    let hosts = plan.hosts.count
                    return Context.ask("\nApply these changes to \(hosts) host\(hosts == 1 ? "" : "s")?", out: out, interactive: true) ?? false
                }
            }
            let interruption = Interruption()
            let err = context.err
            let watch = SignalWatch(signals: [SIGINT, SIGTERM]) { signal in
                if interruption.request(signal) {
                    err.write(err.paint("interrupted: no further step starts; what ran is rolled back and the locks released. "
                                        + "Interrupt again to exit at once (the locks then stay: runbook unlock)", .yellow) + "\n")
                } else {
                    err.write(err.paint("exiting now: the run's locks stay in place; see runbook history, then runbook unlock and runbook rollback RUN_ID", .red) + "\n")
                    _exit(130)
                }
            }
            defer { watch.cancel() }
            let options = ApplyOptions(yes: yes, rollback: !noRollback,
                                       planFile: plan.map { Context.absolute($0, base: FileManager.default.currentDirectoryPath) },
                                       confirm: confirm, interruption: interruption, headStart: EarlyApply.headStart)
            let outcome = try await context.engine().apply(request, options: options)
            if outcome.runID == nil { context.err.write(context.err.paint("refused: ", .yellow) + outcome.message + "\n") }
            if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
        }
    }

    /// `runbook rollback RUN_ID`.
    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rollback",
            abstract: "Undo a finished or interrupted run from the journal.")

        @Argument(help: "The run id (or a unique prefix), from `runbook history`.")
        var runID: String

        @Flag(help: "Roll back without asking.")
        var yes = false

        @Flag(help: "Show what the rollback would do, and change nothing.")
        var dryRun = false

        @Flag(help: "Restore files even where they changed since the run (those edits are lost).")
        var force = false

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            if !dryRun { try context.confirmOrRefuse("Roll back run \(runID)?", yes: yes, what: "roll back") }
            let outcome = await context.engine().rollback(runID: runID, dryRun: dryRun, force: force)
            if outcome.exitCode != 0 {
                context.err.write(context.err.paint("error: ", .red) + outcome.message + "\n")
                throw ExitCode(outcome.exitCode)
            }
            // A rollback's own events end with its outcome; a dry run's preview does not.
            if !context.json && dryRun { context.out.write(outcome.message + "\n") }
        }
    }
}

/// Runs `handler` on a dispatch queue for each of `signals` instead of the default action
/// (which would kill the process with its locks held).
final class SignalWatch: @unchecked Sendable {  // immutable after init; DispatchSource is thread-safe
    private let sources: [any DispatchSourceSignal]
    private let signals: [Int32]

    init(signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) {
        let queue = DispatchQueue(label: "runbook.signals")
        self.signals = signals
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { handler(number) }
            source.resume()
            return source
        }
    }

    /// Stops watching; the signals get their default action again.
    func cancel() {
        for source in sources { source.cancel() }
        for number in signals { signal(number, SIG_DFL) }
    }
}

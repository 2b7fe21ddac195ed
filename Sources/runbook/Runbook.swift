import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine
import RunbookTransport

/// The `runbook` command: plan, apply and roll back operational procedures over SSH.
@main
struct Runbook: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runbook",
        abstract: "Plan, apply and roll back operational runbooks on your hosts over SSH.",
        discussion: "Exit codes: 0 success, 1 a step or command failed, 2 invalid input, 3 refused with nothing changed, 4 rollback incomplete.",
        version: runbookVersion,
        subcommands: [List.self, Validate.self, Plan.self, Apply.self, Rollback.self, History.self, Show.self, Unlock.self, Hosts.self, Exec.self, Schedule.self, Diagnose.self]
    )

    /// The subcommands that open SSH connections.
    static let connectingCommands = ["plan", "apply", "rollback", "exec", "unlock", "diagnose"]
    /// The connecting subcommands that load a project and run its steps.
    static let projectCommands = ["plan", "apply", "rollback"]

    /// Parses, runs, and maps every outcome to SPEC §2's exit codes.
    static func main() async {
        // Output into a closed pipe (`runbook apply … | head`) must not kill the process
        // mid-run with its locks held: writes fail with EPIPE instead, and the run finishes
        // (and releases its locks) as it would have.
        signal(SIGPIPE, SIG_IGN)
        // Commands that connect to hosts start the SSH layer's set-up now, on other
        // threads, while the arguments are parsed and the project is loaded. A plain apply
        // loads its project and connects meanwhile (`EarlyApply`), which warms up what the
        // engine's warm-up would; other project commands get the warm-up.
        if CommandLine.arguments.count > 1, connectingCommands.contains(CommandLine.arguments[1]) {
            SSHTransport.warmUp()
            EarlyApply.begin(Array(CommandLine.arguments.dropFirst()))
            if projectCommands.contains(CommandLine.arguments[1]) && EarlyApply.headStart == nil { Engine.warmUp() }
        }
        await execute()
    }

    /// Everything after the set-up, off the main actor: it ends the process itself, so the run
    /// never hops back to the main queue (which costs a new thread) just to exit.
    nonisolated static func execute() async -> Never {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            terminate(0)
        } catch let error as DiagnosticError {
            Terminal.standardError.write(error.rendered(color: Terminal.standardError.colorEnabled) + "\n")
            terminate(2)
        } catch let error as ExitCode {
            terminate(error.rawValue)
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                print(message)
                terminate(0)
            }
            if !message.isEmpty { Terminal.standardError.write(message + "\n") }
            // Argument errors are invalid input: exit 2, as for a bad runbook or inventory.
            terminate(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

/// Ends the process with `code` without running exit-time destructors: libssh2's event-loop
/// threads may still be freeing a dropped session, and OpenSSL's cleanup under them crashes.
/// Everything that matters is already written (journal commits are synchronous; output goes
/// through write(2)), so only stdio buffers need flushing.
func terminate(_ code: Int32) -> Never {
    fflush(nil)  // every stdio stream
    _exit(code)
}

/// The version printed by `--version`.
let runbookVersion = "0.1.0"

import Foundation
import RunbookCore

/// `service`: restart, reload, start or stop a service through its manager.
///
/// - `compose`: `docker compose` (v2) or `docker-compose` (v1), whichever works on the host
///   at plan time: `start`/`stop SERVICE`, and `kill -s HUP SERVICE` for reload. `restart`
///   recreates the service's containers from the compose file as it is now, keeping their
///   number (`up -d --no-deps --force-recreate --scale SERVICE=N SERVICE`): a changed
///   `command:` or image takes effect, which a bare `compose restart` would silently ignore.
/// - `systemd`: `systemctl ACTION NAME`.
/// - `signal`: `kill -s SIGNAL` to the process in `pidfile` (read again when the step runs).
///   The plan reads the pidfile and checks the process is alive. Default signals: HUP for
///   restart and reload, TERM for stop (which then waits up to 30 s for the process to
///   exit); start is impossible. Signals of the same kind sent within a few milliseconds may
///   reach a process as one (gunicorn counts two quick TTOU as one).
/// - `command`: `run`.
///
/// Nothing to undo: the state a service runs with is restored by the steps that changed
/// it, and rollback phase 2 runs the action again afterwards. The exception is TTIN and
/// TTOU, which change a worker count by one: each is undone by the other.
package struct ServiceStep: StepKind {
    package static let schema = StepKindSchema(
        name: "service", summary: "restart, reload, start or stop a service",
        arguments: [
            ArgumentSpec("name", .string, required: true, "the service (compose service, systemd unit, or a label)"),
            ArgumentSpec("action", .enumeration(["restart", "reload", "start", "stop"]), required: true, "what to do"),
            ArgumentSpec("manager", .enumeration(["compose", "systemd", "signal", "command"]), default: "compose", "how the service is run"),
            ArgumentSpec("compose_file", .string, "compose file (manager: compose)"),
            ArgumentSpec("project_directory", .string, "compose project directory (manager: compose)"),
            ArgumentSpec("pidfile", .string, "file holding the process id (manager: signal)"),
            ArgumentSpec("signal", .string, "signal to send, e.g. HUP (manager: signal; default per action)"),
            ArgumentSpec("run", .command, "command performing the action (manager: command)"),
        ],
        requirements: [
            ArgumentRequirement(when: "manager", equals: "signal", requires: ["pidfile"]),
            ArgumentRequirement(when: "manager", equals: "command", requires: ["run"]),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .rerun }
    package static let replay = ReplayPhase.afterRestore
    package static func defaultName(_ arguments: [String: Value]) -> String {
        ["service", arguments["name"]?.description, arguments["action"]?.description].compactMap { $0 }.joined(separator: " ")
    }
    package init() {}

    static let actions = ["restart", "reload", "start", "stop"]

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let name = arguments.string("name") else { throw StepFailure("service needs name") }
        guard let action = arguments.string("action"), Self.actions.contains(action) else {
            throw StepFailure("action: must be one of \(Self.actions.joined(separator: ", "))")
        }
        let manager = arguments.string("manager") ?? "compose"
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: true, summary: "\(action) \(name)")
        let command: ShellCommand
        var undo: ShellCommand? = nil
        switch manager {
        case "systemd":
            command = "systemctl \(action) \(name)"
            change.summary += " (systemd)"
        case "command":
            guard let run = arguments.commands["run"] else { throw StepFailure("manager: command needs run") }
            command = run
        case "compose":
            command = try await composeCommand(name: name, action: action, arguments: arguments, facts: facts, change: &change)
        case "signal":
            guard let planned = try await signalCommand(name: name, action: action, arguments: arguments, facts: facts,
                                                        change: &change) else {
                return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
            }
            (command, undo) = planned
        default:
            throw StepFailure("manager: \(manager) must be one of compose, systemd, signal, command")
        }
        return HostStepPlan(change: change, operation: .run(command, undo: undo), deferredUntilApply: false)
    }

    // MARK: compose

    @inline(never)  // inlined into `plan`, it crashed Swift 6.3's release build (coroutine splitting)
    private func composeCommand(name: String, action: String, arguments: RenderedArguments, facts: FactReader,
                                change: inout PlannedChange) async throws -> ShellCommand {
        let detected = try await ComposeCommand.detect(facts: facts)
        change.fingerprints.append(detected.fingerprint)
        let flavor = detected.flavor
        let compose = ComposeCommand(file: arguments.string("compose_file"),
                                     projectDirectory: arguments.string("project_directory"),
                                     flavor: flavor)
        let command = try compose.serviceAction(action, service: name, signal: arguments.string("signal"))
        change.summary += " (\(flavor.program))"
        return command
    }

    // MARK: signal

    /// The signals `kill -s` takes by name on Linux.
    static let signalNames: Set<String> = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
        "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF",
        "WINCH", "IO", "PWR", "SYS",
    ]

    /// `TTIN` for `ttin`, `SIGTTIN` or `TTIN`; a number stays a number.
    static func signalName(_ text: String) throws(StepFailure) -> String {
        var name = text.trimmingCharacters(in: .whitespacesAndNewlines).uppercased()
        if let number = Int(name) {
            guard (1...64).contains(number) else { throw StepFailure("signal: \(text) is not a signal number") }
            return name
        }
        if name.hasPrefix("SIG") { name = String(name.dropFirst(3)) }
        guard signalNames.contains(name) else {
            throw StepFailure("signal: \(text) is not a signal (e.g. HUP, TERM, USR1, TTIN, TTOU)")
        }
        return name
    }

    /// Signals that change a worker count by one, and the signal that takes it back (gunicorn).
    static let inverseSignals = ["TTIN": "TTOU", "TTOU": "TTIN"]

    /// The `kill` command and its undo (TTIN and TTOU undo each other; other signals have
    /// nothing to undo), or nil when the step has nothing to do (stopping what is not running).
    private func signalCommand(name: String, action: String, arguments: RenderedArguments, facts: FactReader,
                               change: inout PlannedChange) async throws -> (ShellCommand, ShellCommand?)? {
        let host = facts.transport.hostName
        guard let pidfile = arguments.string("pidfile") else { throw StepFailure("manager: signal needs pidfile") }
        if action == "start" {
            throw StepFailure("manager: signal cannot start \(name): there is no process to signal yet; use manager: command with the command that starts it")
        }
        let signal = try Self.signalName(arguments.string("signal") ?? (action == "stop" ? "TERM" : "HUP"))
        let fact = "pidfile:\(pidfile)"
        func notRunning(_ why: String) throws -> (ShellCommand, ShellCommand?)? {
            guard action == "stop" else { throw StepFailure.onHost("cannot \(action) \(name) on \(host): \(why)") }
            change.action = .noop
            change.reason = why
            change.summary = "skip: \(name) is not running"
            return nil
        }
        guard let file = try await facts.file(pidfile) else {
            change.fingerprints.append(FactFingerprint(fact: fact, digest: "absent"))
            return try notRunning("\(pidfile) does not exist")
        }
        let text = String(decoding: file.contents, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let pid = Int(text.split(whereSeparator: { $0.isWhitespace }).first ?? ""), pid > 0 else {
            throw StepFailure.onHost("cannot \(action) \(name) on \(host): \(pidfile) does not hold a process id (\(HTTPResponse.excerpt(file.contents, limit: 40)))")
        }
        let probe = ShellCommand(
            "if kill -0 \(pid) 2>/dev/null || [ -d /proc/\(pid) ]; then cat /proc/\(pid)/comm 2>/dev/null; exit 0; fi; exit 1")
        let alive = try await facts.check(probe, timeout: .seconds(30))
        change.fingerprints.append(FactFingerprint(fact: fact, digest: "pid \(pid) \(alive.succeeded ? "alive" : "gone")"))
        guard alive.succeeded else { return try notRunning("pid \(pid) from \(pidfile) is not running") }
        let process = alive.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        change.summary = "\(action) \(name): send \(signal) to pid \(pid)\(process.isEmpty ? "" : " (\(process))") from \(pidfile)"
        // The pid is read again when the step runs (rollback may run it much later), and
        // must be a plain positive number: `kill -s TERM -1` would reach every process.
        func kill(_ signal: String) -> ShellCommand {
            """
            pid=$(head -n 1 -- \(pidfile)) && case "$pid" in ''|0*|*[!0-9]*) echo \("\(pidfile) does not hold a process id") >&2; exit 1;; esac \
            && kill \(literal: Int(signal) == nil ? "-s \(signal)" : "-\(signal)") "$pid"
            """
        }
        var command = kill(signal)
        if action == "stop" {
            command = """
                \(command) && i=0 && while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' /proc/"$pid"/status 2>/dev/null; do i=$((i+1)); \
                if [ "$i" -gt 300 ]; then echo "pid $pid still runs 30 s after \(literal: signal)" >&2; exit 1; fi; sleep 0.1; done
                """
        }
        return (command, Self.inverseSignals[signal].map(kill))
    }
}


import Foundation
import RunbookCore

// MARK: - Compose invocation

/// Which compose program a command runs on the host.
enum ComposeFlavor: String, Sendable, Hashable {
    /// The Docker CLI plugin: `docker compose`.
    case v2
    /// The standalone Python program: `docker-compose` (1.x).
    case v1
    /// Whichever the host has, decided by the shell when the command runs: `docker compose`
    /// when `docker compose version` succeeds, else `docker-compose`. No extra round trip.
    case detect

    /// The program words for a concrete flavor (`.detect` chooses in the shell; see `ComposeCommand`).
    var program: String {
        switch self {
        case .v2: return "docker compose"
        case .v1, .detect: return "docker-compose"
        }
    }
}

/// Builds compose command lines for one project: `docker compose -f FILE ARGS`, or
/// `docker-compose -f FILE ARGS` on hosts with only compose v1 — both take the same options
/// for everything used here.
///
/// With `.detect` the command carries its own test, e.g.
/// `if docker compose version >/dev/null 2>&1; then docker compose -f F restart web; else docker-compose -f F restart web; fi`,
/// so it works on either kind of host, also when replayed later by a rollback.
struct ComposeCommand: Sendable, Hashable {
    /// The compose file (`-f`); nil: compose's own lookup in the working directory.
    var file: String?
    /// The project directory (`--project-directory`); without `file` the command also runs
    /// in it, so the compose file there is found by both versions.
    var projectDirectory: String?
    /// Which program runs.
    var flavor: ComposeFlavor

    /// A compose project; `flavor` defaults to detecting v2 or v1 on the host.
    init(file: String?, projectDirectory: String? = nil, flavor: ComposeFlavor = .detect) {
        self.file = file?.isEmpty == true ? nil : file
        self.projectDirectory = projectDirectory?.isEmpty == true ? nil : projectDirectory
        self.flavor = flavor
    }

    /// The shell test that succeeds when the host has compose v2. Every kind and every
    /// generated command asks this one test (v2 preferred, else v1), here or in the shell.
    static let v2Probe: ShellCommand = "docker compose version >/dev/null 2>&1"
    /// The shell test that succeeds when the host has compose v1.
    static let v1Probe: ShellCommand = "docker-compose version >/dev/null 2>&1"

    /// Which compose the host has (v2 preferred), read at plan time and fingerprinted, so a
    /// saved plan is refused if it changes.
    struct Detected: Sendable {
        let flavor: ComposeFlavor
        let fingerprint: FactFingerprint
    }

    /// Reads which compose the host has; neither is a `StepFailure`.
    static func detect(facts: FactReader) async throws -> Detected {
        try await facts.fact("compose:cli") { try await probe(facts) }
    }

    private static func probe(_ facts: FactReader) async throws -> Detected {
        let v2 = try await facts.check(v2Probe, timeout: .seconds(30)).succeeded
        var v1 = false
        if !v2 { v1 = try await facts.check(v1Probe, timeout: .seconds(30)).succeeded }
        guard v2 || v1 else {
            throw StepFailure.onHost("neither `docker compose` (v2) nor `docker-compose` (v1) works on \(facts.transport.hostName)")
        }
        return Detected(flavor: v2 ? .v2 : .v1,
                        fingerprint: FactFingerprint(fact: "compose:cli", digest: v2 ? "docker compose" : "docker-compose"))
    }

    /// Whether a `validate:` is the keyword `compose`: check the candidate as a compose file.
    static func isValidationKeyword(_ command: ShellCommand) -> Bool {
        command.parts.count == 1 && command.display.trimmingCharacters(in: .whitespaces) == "compose"
    }

    /// `validate: compose` for a file written to `dest`: the candidate (`%s`, a temp file
    /// beside `dest`) checked by the host's compose, in `dest`'s directory so that relative
    /// paths (`env_file`, `build`) resolve as they will: `cd /srv/app && docker compose -f %s
    /// config -q`, or `docker-compose` on a v1 host.
    static func validation(of dest: String, flavor: ComposeFlavor) -> ShellCommand {
        let directory = dest.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return "cd \(directory.isEmpty ? "/" : directory) && \(literal: flavor.program) -f %s config -q"
    }

    /// The same project with a concrete flavor.
    func with(_ flavor: ComposeFlavor) -> ComposeCommand {
        ComposeCommand(file: file, projectDirectory: projectDirectory, flavor: flavor)
    }

    /// The global options: `-f FILE --project-directory DIR`.
    var globalOptions: ShellCommand {
        var command = ShellCommand(parts: [])
        if let file { command = command + " -f \(file)" }
        if let projectDirectory { command = command + " --project-directory \(projectDirectory)" }
        return command
    }

    /// `cd DIR && ` when the project is found through its directory only, else nothing.
    var directoryPrefix: ShellCommand {
        (file == nil ? projectDirectory : nil).map { "cd \($0) && " } ?? ShellCommand(parts: [])
    }

    /// One program's invocation, without the directory prefix.
    private func invocation(_ flavor: ComposeFlavor, _ arguments: ShellCommand) -> ShellCommand {
        ShellCommand(flavor.program) + globalOptions + " " + arguments
    }

    /// Runs compose with `arguments` (a command fragment: quote data with interpolation).
    func callAsFunction(_ arguments: ShellCommand) -> ShellCommand {
        switch flavor {
        case .v2, .v1:
            return directoryPrefix + invocation(flavor, arguments)
        case .detect:
            return directoryPrefix + "if \(Self.v2Probe); then \(invocation(.v2, arguments)); else \(invocation(.v1, arguments)); fi"
        }
    }

    /// Runs compose with `words` as arguments, each quoted.
    /// Prints `KEY=N`, N the running containers of `service` (a step's fact: `replicas`, `workers`).
    func runningCount(of service: String, as key: String) -> ShellCommand {
        let format = "{{.State.Running}}"
        return "ids=$(" + self(["ps", "-q", service]) + ") || exit 1; n=0; for id in $ids; do "
            + "[ \"$(docker inspect -f \(format) \"$id\")\" = true ] && n=$((n + 1)); done; echo \"\(literal: key)=$n\""
    }

    func callAsFunction(_ words: [String]) -> ShellCommand {
        self(ShellCommand(argv: words))
    }

    /// The command of a `service` step with `manager: compose`: `start SERVICE`, `stop
    /// SERVICE`, or for `reload` `kill -s HUP SERVICE` (`signal` replaces HUP). `start`
    /// starts the service's existing containers (it creates none, so it never changes the
    /// replica count). `restart` recreates the containers from the compose file as it is now
    /// with as many containers as the service has (at least one): after a changed `command:`
    /// (more gunicorn workers) the new setting runs, which `compose restart` would ignore.
    func serviceAction(_ action: String, service: String, signal: String? = nil) throws(StepFailure) -> ShellCommand {
        guard !service.isEmpty else { throw StepFailure("service needs name: the compose service") }
        switch action {
        case "restart":
            let count = self(["ps", "-q", service])
            let up = self("up -d --no-deps --force-recreate --scale \(service)=\"$n\" \(service)")
            return "n=$(\(count) | grep -c .) || n=1; [ \"$n\" -gt 0 ] || n=1; " + up
        case "start", "stop":
            return self([action, service])
        case "reload":
            let name = (signal?.isEmpty == false ? signal! : "HUP")
            return self(["kill", "-s", name, service])
        default:
            throw StepFailure("service action must be restart, reload, start or stop (got \(action))")
        }
    }

    /// A read-only command printing `flavor=v2|v1`, then `running=N`: how many containers of
    /// `service` are running (stopped ones are not counted; v1's `ps -q` lists them too).
    /// Fails when neither compose is installed or compose rejects the project.
    func runningCountProbe(service: String) -> ShellCommand {
        let ps = ShellCommand(argv: ["ps", "-q", service])
        let v2 = invocation(.v2, ps)
        let v1 = invocation(.v1, ps)
        let prefix = directoryPrefix
        let body: ShellCommand = """
            if \(Self.v2Probe); then echo flavor=v2; ids=$(\(v2)) || exit 1; \
            elif command -v docker-compose >/dev/null 2>&1; then echo flavor=v1; ids=$(\(v1)) || exit 1; \
            else echo 'neither docker compose (v2) nor docker-compose (v1) is installed' >&2; exit 127; fi; \
            running=0; \
            if [ -n "$ids" ]; then running=$(docker inspect -f '{{.State.Running}}' $ids | grep -c '^true$'); fi; \
            echo running=$running
            """
        return prefix.parts.isEmpty ? body : prefix + "{ " + body + "; }"
    }

    /// Parses the output of `runningCountProbe`.
    static func parseRunningCount(_ text: String) -> (flavor: ComposeFlavor, running: Int)? {
        var flavor: ComposeFlavor?
        var running: Int?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("flavor=") { flavor = ComposeFlavor(rawValue: String(line.dropFirst(7))) }
            if line.hasPrefix("running=") { running = Int(line.dropFirst(8).trimmingCharacters(in: .whitespaces)) }
        }
        guard let flavor, let running else { return nil }
        return (flavor, running)
    }
}


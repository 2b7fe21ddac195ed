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

    /// The shell test that succeeds when the host has compose v2.
    static let v2Probe: ShellCommand = "docker compose version >/dev/null 2>&1"

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

// MARK: - compose_scale

/// `compose_scale`: sets the number of running containers of a compose service.
///
/// Plan reads the running count (and whether the host has compose v2 or v1) in one command;
/// equal counts are a no-op. Apply runs `up -d --no-recreate --no-deps --scale SERVICE=N SERVICE` with
/// the compose found at plan time; the undo is the same command with the previous count.
/// The fingerprint is that count and flavor, so a saved plan is stale once either changed.
struct ComposeScaleStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let service = arguments.string("service"), !service.isEmpty else {
            throw StepFailure("compose_scale needs service")
        }
        let wanted: Int
        switch arguments.raw["replicas"] {
        case .int(let n): wanted = n
        case .string:
            guard let n = arguments.string("replicas").flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw StepFailure("compose_scale: replicas must be a whole number (got \(arguments.string("replicas") ?? ""))")
            }
            wanted = n
        default: throw StepFailure("compose_scale needs replicas: a whole number")
        }
        guard wanted >= 0 else { throw StepFailure("compose_scale: replicas must not be negative (got \(wanted))") }
        let file = arguments.string("compose_file")
        let compose = ComposeCommand(file: file)

        let probe = compose.runningCountProbe(service: service)
        let output = try await facts.check(probe, timeout: step.timeout)
        guard output.succeeded, let counted = ComposeCommand.parseRunningCount(output.stdoutText) else {
            let reason = output.stderrText.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw StepFailure("compose_scale: cannot count the containers of \(service) on \(host.name) (\(output.statusText))"
                              + (reason.isEmpty ? "" : ": \(reason)"))
        }
        let (flavor, current) = counted
        let project = compose.with(flavor)
        let location = file.map { " in \($0)" } ?? ""
        var change = PlannedChange.make(step: step, host: host.name, action: .update, reversible: true,
                                        summary: "\(service): \(current) → \(wanted) replicas\(location) (\(flavor.program))")
        change.fingerprints = [FactFingerprint(fact: "compose:\(file ?? "(default)")#\(service)",
                                               digest: "\(flavor.program): \(current) running")]
        if current == wanted {
            change.action = .noop
            change.summary = "\(service): \(current) replicas, as wanted"
            change.reason = "\(service) already runs \(current) replicas"
            change.operationsDigest = sha256Hex("noop")
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
        let apply = Self.scale(project, service: service, to: wanted)
        let undo = Self.scale(project, service: service, to: current)
        change.commands = [apply.display, "undo: " + undo.display]
        change.operationsDigest = sha256Hex(apply.commandLine + "\u{0}" + undo.commandLine)
        return HostStepPlan(change: change, operation: .run(apply, undo: undo), deferredUntilApply: false)
    }

    /// `up -d --no-recreate --no-deps --scale SERVICE=N SERVICE`: creates or removes
    /// containers of that service only, leaving its running containers and the services it
    /// depends on alone (starting those would be a change the plan does not show and the
    /// undo would not take back).
    static func scale(_ compose: ComposeCommand, service: String, to replicas: Int) -> ShellCommand {
        compose(["up", "-d", "--no-recreate", "--no-deps", "--scale", "\(service)=\(replicas)", service])
    }
}

// MARK: - docker_prune

/// `docker_prune`: `docker system prune -f`, with `-a` (`all`) and `--volumes` (`volumes`)
/// only when asked. Irreversible.
///
/// Plan reads `docker system df` plus the dangling images and networks, and shows what the
/// prune would remove and the reclaimable sizes; with nothing to remove it is a no-op. The
/// fingerprint is only whether there is something to remove (the amounts change all the
/// time and prune takes what is unused when it runs).
struct DockerPruneStep: StepKind {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let all = try Self.flag(arguments, "all")
        let volumes = try Self.flag(arguments, "volumes")
        let output = try await facts.check(Self.factsCommand, timeout: step.timeout)
        guard output.succeeded, let usage = DockerUsage.parse(output.stdoutText) else {
            let reason = output.stderrText.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw StepFailure("docker_prune: cannot read docker system df on \(host.name) (\(output.statusText))"
                              + (reason.isEmpty ? "" : ": \(reason)"))
        }
        let command = Self.command(all: all, volumes: volumes)
        let removes = usage.removals(all: all, volumes: volumes)
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: false,
                                        summary: usage.summary(all: all, volumes: volumes))
        change.fingerprints = [FactFingerprint(fact: "docker:prunable\(all ? " -a" : "")\(volumes ? " --volumes" : "")",
                                               digest: removes.isEmpty ? "nothing" : "something")]
        if removes.isEmpty {
            change.action = .noop
            change.reason = "nothing to prune"
            change.operationsDigest = sha256Hex("noop")
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
        change.commands = [command.display]
        change.operationsDigest = sha256Hex(command.commandLine)
        return HostStepPlan(change: change, operation: .run(command, undo: nil), deferredUntilApply: false)
    }

    /// `docker system prune -f [-a] [--volumes]`.
    static func command(all: Bool, volumes: Bool) -> ShellCommand {
        var words = ["docker", "system", "prune", "-f"]
        if all { words.append("-a") }
        if volumes { words.append("--volumes") }
        return ShellCommand(argv: words)
    }

    /// One read-only command: `docker system df` as `Type|Total|Active|Size|Reclaimable`
    /// lines, then `Dangling image|ID|SIZE` per dangling image and the number of unused
    /// networks.
    static let factsCommand: ShellCommand = """
        docker system df --format '{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|{{.Reclaimable}}' && \
        docker images -f dangling=true --format 'Dangling image|{{.ID}}|{{.Size}}' && \
        printf 'Unused networks|%s\\n' "$(docker network ls -q -f dangling=true | wc -l)"
        """

    /// A boolean argument (default false), literal or rendered from a template.
    static func flag(_ arguments: RenderedArguments, _ key: String) throws(StepFailure) -> Bool {
        switch arguments.raw[key] {
        case nil, .null?: return false
        case .bool(let b)?: return b
        default:
            switch arguments.string(key)?.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "yes", "1": return true
            case "false", "no", "0", "": return false
            default: throw StepFailure("docker_prune: \(key) must be true or false")
            }
        }
    }
}

/// What `docker system df` and the dangling filters report: a pure parser and the plan text.
struct DockerUsage: Sendable, Hashable {
    /// One row of `docker system df`.
    struct Row: Sendable, Hashable {
        var total: Int
        var active: Int
        var size: String
        var reclaimable: String
    }
    var images: Row?
    var containers: Row?
    var volumes: Row?
    var buildCache: Row?
    /// Dangling (untagged, unused) image IDs and their sizes in bytes.
    var danglingImages: [String: Double] = [:]
    var unusedNetworks = 0

    /// Parses the output of `DockerPruneStep.factsCommand`; nil when it has no df rows.
    static func parse(_ text: String) -> DockerUsage? {
        var usage = DockerUsage()
        var rows = 0
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            switch fields.count {
            case 5:
                guard let total = Int(fields[1]) else { continue }
                let row = Row(total: total, active: Int(fields[2]) ?? 0, size: fields[3], reclaimable: fields[4])
                rows += 1
                switch fields[0] {
                case "Images": usage.images = row
                case "Containers": usage.containers = row
                case "Local Volumes": usage.volumes = row
                case "Build Cache": usage.buildCache = row
                default: rows -= 1
                }
            case 3 where fields[0] == "Dangling image":
                usage.danglingImages[fields[1]] = Self.bytes(fields[2]) ?? 0
            case 2 where fields[0] == "Unused networks":
                usage.unusedNetworks = Int(fields[1]) ?? 0
            default: continue
            }
        }
        return rows > 0 ? usage : nil
    }

    /// What a prune would remove, as `N thing` phrases (empty: nothing).
    func removals(all: Bool, volumes pruneVolumes: Bool) -> [String] {
        func phrase(_ n: Int, _ one: String, _ many: String) -> String? { n > 0 ? "\(n) \(n == 1 ? one : many)" : nil }
        var parts: [String?] = []
        if let containers { parts.append(phrase(containers.total - containers.active, "stopped container", "stopped containers")) }
        if all, let images {
            parts.append(phrase(images.total - images.active, "unused image", "unused images"))
        } else {
            parts.append(phrase(danglingImages.count, "dangling image", "dangling images"))
        }
        parts.append(phrase(unusedNetworks, "unused network", "unused networks"))
        if pruneVolumes, let volumes { parts.append(phrase(volumes.total - volumes.active, "unused volume", "unused volumes")) }
        if let buildCache, !Self.isZero(buildCache.reclaimable) { parts.append("build cache \(Self.amount(buildCache.reclaimable))") }
        return parts.compactMap { $0 }
    }

    /// One line for the plan: what goes, the reclaimable sizes, and whether volumes stay.
    func summary(all: Bool, volumes pruneVolumes: Bool) -> String {
        let removes = removals(all: all, volumes: pruneVolumes)
        var text = removes.isEmpty ? "nothing to prune" : "removes " + removes.joined(separator: ", ")
        var sizes: [String] = []
        if all {
            if let images { sizes.append("images \(Self.amount(images.reclaimable))") }
        } else {
            // df's image figure counts every unused image; without -a only dangling ones go.
            // Their sizes include layers shared with other images, hence "up to".
            let total = danglingImages.values.reduce(0, +)
            sizes.append("dangling images \(total > 0 ? "up to " : "")\(Self.format(bytes: total))")
        }
        if let containers { sizes.append("containers \(Self.amount(containers.reclaimable))") }
        if let buildCache { sizes.append("build cache \(Self.amount(buildCache.reclaimable))") }
        if pruneVolumes, let volumes { sizes.append("volumes \(Self.amount(volumes.reclaimable))") }
        if !sizes.isEmpty { text += "; reclaimable: " + sizes.joined(separator: ", ") }
        if !pruneVolumes, let volumes, volumes.total > 0 {
            text += "; volumes kept (\(volumes.total))"
        }
        return text
    }

    /// `1.2MB (50%)` → `1.2MB`.
    static func amount(_ text: String) -> String {
        text.split(separator: " ").first.map(String.init) ?? text
    }

    /// Bytes of a size as docker prints it (`1.98MB`, `512kB`, `0B`; decimal units).
    static func bytes(_ text: String) -> Double? {
        let text = amount(text)
        let digits = text.prefix { $0.isNumber || $0 == "." }
        guard let number = Double(digits) else { return nil }
        let units: [String: Double] = ["B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15]
        guard let scale = units[String(text.dropFirst(digits.count))] else { return nil }
        return number * scale
    }

    /// A byte count as docker prints sizes: `0B`, `512kB`, `1.98MB`.
    static func format(bytes: Double) -> String {
        var value = bytes
        var unit = "B"
        for next in ["kB", "MB", "GB", "TB", "PB"] where value >= 1000 {
            value /= 1000
            unit = next
        }
        if unit == "B" { return "\(Int(value))B" }
        let rounded = value >= 100 ? String(Int(value.rounded())) : String(format: value >= 10 ? "%.1f" : "%.2f", value)
        return rounded + unit
    }

    /// Whether a size such as `0B` is zero.
    static func isZero(_ text: String) -> Bool {
        let number = amount(text).prefix { $0.isNumber || $0 == "." }
        return Double(number) == 0
    }
}

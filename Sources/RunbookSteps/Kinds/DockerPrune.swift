import Foundation
import RunbookCore

// MARK: - docker_prune

/// `docker_prune`: `docker system prune -f`, with `-a` (`all`) and `--volumes` (`volumes`)
/// only when asked. Irreversible.
///
/// Plan reads `docker system df` plus the dangling images and networks, and shows what the
/// prune would remove and the reclaimable sizes; with nothing to remove it is a no-op. The
/// fingerprint is only whether there is something to remove (the amounts change all the
/// time and prune takes what is unused when it runs).
package struct DockerPruneStep: StepKind {
    package static let schema = StepKindSchema(
        name: "docker_prune", summary: "docker system prune -f",
        arguments: [
            ArgumentSpec("all", .bool, default: false, "also unused images (-a)"),
            ArgumentSpec("volumes", .bool, default: false, "also unused volumes (--volumes)"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .irreversible }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let all = try arguments.bool("all", default: false)
        let volumes = try arguments.bool("volumes", default: false)
        let output = try await facts.check(Self.factsCommand, timeout: step.timeout)
        guard output.succeeded, let usage = DockerUsage.parse(output.stdoutText) else {
            let reason = output.stderrText.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw StepFailure.onHost("docker_prune: cannot read docker system df on \(host.name) (\(output.statusText))"
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
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
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

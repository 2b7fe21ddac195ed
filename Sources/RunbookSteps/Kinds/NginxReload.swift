import Foundation
import RunbookCore

/// `nginx_reload`: one command that runs `nginx -t` (with `-c config`) and only when the
/// test passes `nginx -s reload`; a failing test fails the step with nginx's own message and
/// nothing is reloaded. Nothing to undo: rollback restores the files and reloads again in
/// phase 2.
package struct NginxReloadStep: StepKind {
    package static let schema = StepKindSchema(
        name: "nginx_reload", summary: "test the nginx configuration, then reload",
        arguments: [
            ArgumentSpec("config", .string, "configuration file to test (nginx -c)"),
            ArgumentSpec("binary", .string, default: "nginx", "the nginx executable"),
            ArgumentSpec("via", .enumeration(["direct", "compose", "docker"]), default: "direct",
                         "where nginx runs: on the host, in a compose service, or in a container"),
            ArgumentSpec("service", .string, "compose service running nginx (via: compose)"),
            ArgumentSpec("compose_file", .string, "compose file (via: compose)"),
            ArgumentSpec("container", .string, "container running nginx (via: docker)"),
        ],
        requirements: [
            ArgumentRequirement(when: "via", equals: "compose", requires: ["service"]),
            ArgumentRequirement(when: "via", equals: "docker", requires: ["container"]),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .rerun }
    package static let replay = ReplayPhase.afterRestore
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let config = arguments.string("config")
        let binary = arguments.string("binary") ?? "nginx"
        // nginx with these arguments, where it runs: on the host, in a compose service
        // (`exec -T`, no terminal) or in a container.
        let nginx: ([String]) -> ShellCommand
        var place = ""
        var fingerprints: [FactFingerprint] = []
        switch arguments.string("via") ?? "direct" {
        case "compose":
            guard let service = arguments.string("service") else { throw StepFailure("via: compose needs service") }
            let detected = try await ComposeCommand.detect(facts: facts)
            fingerprints.append(detected.fingerprint)
            let flavor = detected.flavor
            let compose = ComposeCommand(file: arguments.string("compose_file"), flavor: flavor)
            nginx = { compose(["exec", "-T", service, binary] + $0) }
            place = " in compose service \(service)"
        case "docker":
            guard let container = arguments.string("container") else { throw StepFailure("via: docker needs container") }
            nginx = { ShellCommand(argv: ["docker", "exec", container, binary] + $0) }
            place = " in container \(container)"
        default:
            let resolved = try await resolveBinary(binary, facts: facts)
            nginx = { ShellCommand(argv: [resolved] + $0) }
        }
        let configWords = config.map { ["-c", $0] } ?? []
        let command = nginx(configWords + ["-q", "-t"]) + " && " + nginx(configWords + ["-s", "reload"])
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: true,
                                        summary: "test the nginx configuration\(config.map { " \($0)" } ?? "")\(place), then reload")
        change.fingerprints += fingerprints
        return HostStepPlan(change: change, operation: .run(command, undo: nil), deferredUntilApply: false)
    }

    /// The binary as given when the login shell finds it; otherwise its path in an sbin
    /// directory (often missing from a non-root user's PATH).
    private func resolveBinary(_ binary: String, facts: FactReader) async throws -> String {
        let host = facts.transport.hostName
        if binary.contains("/") {
            guard try await facts.check("test -x \(binary)", timeout: .seconds(30)).succeeded else {
                throw StepFailure("\(binary) is not an executable on \(host)")
            }
            return binary
        }
        if try await facts.check("command -v \(binary) >/dev/null 2>&1", timeout: .seconds(30)).succeeded { return binary }
        for directory in ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/nginx/sbin"] {
            let path = directory + "/" + binary
            if try await facts.check("test -x \(path)", timeout: .seconds(30)).succeeded { return path }
        }
        throw StepFailure("\(binary) not found on \(host): install nginx, or set binary: to its path")
    }
}

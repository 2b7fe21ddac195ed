import Foundation
import RunbookCore

/// `nginx_reload`: one command that runs `nginx -t` (with `-c config`) and only when the
/// test passes `nginx -s reload`; a failing test fails the step with nginx's own message and
/// nothing is reloaded. `nginx -s reload` only signals the master and returns at once: the
/// step then waits until the master has replaced its workers (new ones started, the old ones
/// shutting down, which closes their listening sockets), so that the next step meets the new
/// configuration, and fails when that does not happen within 30 s (a master that could not
/// apply the file keeps its old workers and logs why). Nothing to undo: rollback restores the
/// files and reloads again in phase 2.
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
        // A command where nginx runs: on the host, in a compose service (`exec -T`, no
        // terminal) or in a container.
        let inPlace: ([String]) -> ShellCommand
        var nginx = binary
        var place = ""
        var fingerprints: [FactFingerprint] = []
        switch arguments.string("via") ?? "direct" {
        case "compose":
            guard let service = arguments.string("service") else { throw StepFailure("via: compose needs service") }
            let detected = try await ComposeCommand.detect(facts: facts)
            fingerprints.append(detected.fingerprint)
            let compose = ComposeCommand(file: arguments.string("compose_file"), flavor: detected.flavor)
            inPlace = { compose(["exec", "-T", service] + $0) }
            place = " in compose service \(service)"
        case "docker":
            guard let container = arguments.string("container") else { throw StepFailure("via: docker needs container") }
            inPlace = { ShellCommand(argv: ["docker", "exec", container] + $0) }
            place = " in container \(container)"
        default:
            nginx = try await resolveBinary(binary, facts: facts)
            inPlace = { ShellCommand(argv: $0) }
        }
        let configWords = config.map { ["-c", $0] } ?? []
        let command = inPlace([nginx] + configWords + ["-q", "-t"]) + " && "
            + inPlace(["sh", "-c", Self.reloadAndWait, "reload", nginx] + configWords)
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: true,
                                        summary: "test the nginx configuration\(config.map { " \($0)" } ?? "")\(place), then reload")
        change.fingerprints += fingerprints
        return HostStepPlan(change: change, operation: .run(command, undo: nil), deferredUntilApply: false)
    }

    /// `sh -c` text, run with the nginx binary and its `-c config` as arguments: lists the live
    /// workers (`pid:master`), signals the reload, then polls until, for some master, none of
    /// its old workers is live and it has a new one. A worker is a process titled `nginx: worker
    /// process`; one that has been told to quit is retitled `... is shutting down` and has
    /// closed its listening sockets. No single quote inside: it is shown quoted in the plan.
    static let reloadAndWait = [
        "n=$1; shift",
        "live() { s=\" \"$(echo $(grep -ls \"^nginx: worker process is\" /proc/[0-9]*/cmdline))\" \"; "
            + "for f in $(grep -ls \"^nginx: worker process\" /proc/[0-9]*/cmdline); do "
            + "case \"$s\" in *\" $f \"*) continue;; esac; "
            + "read -r p x x q x 2>/dev/null < \"${f%/cmdline}/stat\" && printf \" %s:%s\" \"$p\" \"$q\"; done; echo \" \"; }",
        "old=$(live)",
        "\"$n\" \"$@\" -s reload || exit",
        "[ \"$old\" != \" \" ] || exit 0",
        "masters=$(for w in $old; do echo \"${w#*:}\"; done | sort -u)",
        "i=0",
        "while [ $i -lt 300 ]; do now=$(live); for m in $masters; do case \"$now\" in *\":$m \"*) ;; *) continue;; esac; "
            + "left=no; for w in $old; do [ \"${w#*:}\" = \"$m\" ] || continue; case \"$now\" in *\" $w \"*) left=yes;; esac; done; "
            + "[ $left = yes ] || exit 0; done; i=$((i+1)); sleep 0.1; done",
        "echo \"nginx did not replace its workers within 30 s of the reload signal: the new configuration is not in effect (see the error log of nginx)\" >&2",
        "exit 1",
    ].joined(separator: "; ")

    /// The binary as given when the login shell finds it; otherwise its path in an sbin
    /// directory (often missing from a non-root user's PATH).
    private func resolveBinary(_ binary: String, facts: FactReader) async throws -> String {
        let host = facts.transport.hostName
        if binary.contains("/") {
            guard try await facts.check("test -x \(binary)", timeout: .seconds(30)).succeeded else {
                throw StepFailure.onHost("\(binary) is not an executable on \(host)")
            }
            return binary
        }
        if try await facts.check("command -v \(binary) >/dev/null 2>&1", timeout: .seconds(30)).succeeded { return binary }
        for directory in ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/nginx/sbin"] {
            let path = directory + "/" + binary
            if try await facts.check("test -x \(path)", timeout: .seconds(30)).succeeded { return path }
        }
        throw StepFailure.onHost("\(binary) not found on \(host): install nginx, or set binary: to its path")
    }
}

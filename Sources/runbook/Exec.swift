import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine

extension Runbook {
    /// `runbook exec PATTERN -- COMMAND`: one ad-hoc command on matching hosts.
    struct Exec: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "exec",
            abstract: "Run an ad-hoc command on the matching hosts, in parallel.",
            discussion: "Shows each host's stdout, stderr and exit status. Exits 0 when the command exited 0 on every host, else 1.")

        @Argument(help: "Hosts: a host, a group, all, a comma list, a * glob, !exclusions.")
        var pattern: String

        @Argument(parsing: .postTerminator, help: "The command, after --, run by the remote shell.")
        var command: [String] = []

        @Option(help: "End the command on a host after this long (e.g. 30s, 5m).")
        var timeout: String?

        @OptionGroup var options: GlobalOptions

        func validate() throws {
            if command.isEmpty { throw ValidationError("missing the command: runbook exec PATTERN -- COMMAND") }
            if let timeout, DurationText.parse(timeout) == nil {
                throw ValidationError("--timeout: \(timeout) is not a duration (e.g. 30s, 5m)")
            }
        }

        func run() async throws {
            let context = Context(options)
            let inventory = try context.loadInventory()
            let hosts = try context.select(pattern, in: inventory)
            let secrets = try context.loadSecrets()
            let masker = secrets.masker
            let runner = AdHocRunner(connector: Connector(secrets: secrets, logger: context.logger), forks: context.forks)
            let line = ShellCommand(command.joined(separator: " "))
            let out = context.out
            let json = context.json
            let results = await runner.run(line, on: hosts, timeout: timeout.flatMap(DurationText.parse)) { result in
                out.write(json ? Self.jsonLine(result, masker: masker) : Self.humanBlock(result, masker: masker, terminal: out))
            }
            let ok = results.filter { $0.succeeded }.count
            let unreachable = results.filter { $0.output == nil }.count
            let failed = results.count - ok - unreachable
            if json {
                out.write(#"{"event":"summary","hosts":\#(results.count),"ok":\#(ok),"failed":\#(failed),"unreachable":\#(unreachable)}"# + "\n")
            } else {
                var parts = ["\(ok) ok"]
                if failed > 0 { parts.append(out.paint("\(failed) failed", .red)) }
                if unreachable > 0 { parts.append(out.paint("\(unreachable) unreachable", .red)) }
                out.write("\(results.count) host\(results.count == 1 ? "" : "s"): " + parts.joined(separator: ", ") + "\n")
            }
            if ok != results.count { throw ExitCode(1) }
        }

        static func humanBlock(_ result: AdHocResult, masker: SecretMasker, terminal: Terminal) -> String {
            let name = terminal.paint(result.host.name, .bold)
            guard let output = result.output else {
                let message = masker.mask(result.error?.message ?? "unknown error")
                return "\(name) | \(terminal.paint("UNREACHABLE", .red)) | \(message)\n"
            }
            let status = output.succeeded ? terminal.paint("ok", .green) : terminal.paint("FAILED", .red)
            var text = "\(name) | \(status) | \(output.statusText) | \(DurationText.format(output.duration))\n"
            let stdout = masker.mask(output.stdoutText)
            let stderr = masker.mask(output.stderrText)
            if !stdout.isEmpty { text += stdout + (stdout.hasSuffix("\n") ? "" : "\n") }
            if !stderr.isEmpty {
                text += terminal.paint("stderr:", .yellow) + "\n" + stderr + (stderr.hasSuffix("\n") ? "" : "\n")
            }
            return text
        }

        struct Event: Encodable {
            let event = "exec"
            let host: String
            let exit_status: Int32?
            let signal: String?
            let timed_out: Bool
            let stdout: String
            let stderr: String
            let duration_ms: Double
            let error: String?
        }

        static func jsonLine(_ result: AdHocResult, masker: SecretMasker) -> String {
            let o = result.output
            let event = Event(host: result.host.name, exit_status: o?.exitStatus, signal: o?.exitSignal, timed_out: o?.timedOut ?? false,
                              stdout: masker.mask(o?.stdoutText ?? ""), stderr: masker.mask(o?.stderrText ?? ""),
                              duration_ms: o.map { (DurationText.milliseconds($0.duration) * 10).rounded() / 10 } ?? 0,
                              error: result.error.map { masker.mask($0.message) })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return String(decoding: (try? encoder.encode(event)) ?? Data(), as: UTF8.self) + "\n"
        }
    }
}

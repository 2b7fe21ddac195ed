import RunbookCore
import RunbookSteps

/// The outcome of `runbook exec` on one host.
public struct AdHocResult: Sendable {
    /// The host.
    public let host: RunbookCore.Host
    /// The command's output, when the host was reached.
    public let output: CommandOutput?
    /// Why the host could not be reached or the command not run.
    public let error: TransportError?

    /// True when the command exited 0.
    public var succeeded: Bool { output?.succeeded ?? false }
}

/// Runs one ad-hoc command on many hosts in parallel (SPEC §11).
public struct AdHocRunner: Sendable {
    /// Opens transports.
    public let connector: Connector
    /// Hosts at once.
    public let forks: Int

    /// Creates a runner.
    public init(connector: Connector, forks: Int) {
        self.connector = connector
        self.forks = forks
    }

    /// Runs `command` on each host, at most `forks` at once, reporting each result as it
    /// finishes through `onResult`; returns all results in inventory order.
    public func run(_ command: ShellCommand, on hosts: [RunbookCore.Host], timeout: Duration?,
                    onResult: @escaping @Sendable (AdHocResult) -> Void) async -> [AdHocResult] {
        let connector = self.connector
        return await boundedMap(hosts, limit: forks) { host in
            let result: AdHocResult
            do throws(TransportError) {
                let transport = try await connector.connect(host)
                do throws(TransportError) {
                    let output = try await transport.run(command, stdin: [], timeout: timeout, onOutput: nil)
                    result = AdHocResult(host: host, output: output, error: nil)
                } catch {
                    result = AdHocResult(host: host, output: nil, error: error)
                }
                await transport.close()
            } catch {
                result = AdHocResult(host: host, output: nil, error: error)
            }
            onResult(result)
            return result
        }
    }
}

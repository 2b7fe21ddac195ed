import RunbookCore
import RunbookSteps
import RunbookTransport

/// One host's part of `runbook diagnose`: its metrics against the seeds' levels, and what to
/// run next; or why it could not be measured.
package struct DiagnoseReport: Sendable, Codable {
    package var host: String
    package var metrics: [CapacityMetric]
    package var recommendations: [String]
    package var error: String?

    /// The worst state among the metrics (critical when the host could not be measured).
    package var state: CapacityMetric.State {
        if error != nil { return .critical }
        return metrics.map(\.state).max() ?? .unknown
    }
}

/// `runbook diagnose` (SPEC §13): samples each host over a window and compares every metric
/// with the seeds' warning and critical levels. Changes nothing.
package struct Diagnoser: Sendable {
    package let connector: Connector
    package let forks: Int
    package let window: Duration
    /// The optional secret DB_PASSWORD, for a database reached with a password.
    package let databasePassword: String?

    package init(connector: Connector, forks: Int, window: Duration, databasePassword: String?) {
        self.connector = connector
        self.forks = forks
        self.window = window
        self.databasePassword = databasePassword
    }

    /// The reports, in inventory order.
    package func run(_ hosts: [RunbookCore.Host]) async -> [DiagnoseReport] {
        let connector = self.connector, window = self.window, password = self.databasePassword
        return await boundedMap(hosts, limit: forks) { host in
            do throws(TransportError) {
                let transport = try await connector.connect(host)
                defer { Task { await transport.close() } }
                do {
                    let (metrics, cores) = try await Capacity.measure(host, transport: transport, controller: LocalTransport(hostName: "controller"),
                                                                      window: window, password: password)
                    return DiagnoseReport(host: host.name, metrics: metrics,
                                          recommendations: Capacity.recommendations(host: host.name, metrics: metrics, cpuCount: cores),
                                          error: nil)
                } catch {
                    return DiagnoseReport(host: host.name, metrics: [], recommendations: [], error: "\(error)")
                }
            } catch {
                return DiagnoseReport(host: host.name, metrics: [], recommendations: [], error: error.description)
            }
        }
    }
}

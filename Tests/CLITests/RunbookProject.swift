import Foundation
import TestSupport

/// A throwaway project (runbooks/, templates/, inventory pointing at the test hosts) and a
/// throwaway directory on the hosts, for one test.
struct RunbookProject {
    let root: String
    let remoteDir: String
    /// The host lock path this project's inventory sets (`runbook_lock_path`).
    let lockPath: String
    let env: TestHosts
    let binary = repositoryRoot + "/.build/debug/runbook"

    init(_ env: TestHosts) throws {
        self.env = env
        root = FileManager.default.temporaryDirectory.appendingPathComponent("rbproj-\(UUID().uuidString)").path
        remoteDir = "/var/tmp/rbtest-\(UUID().uuidString)"
        for dir in ["runbooks", "templates", "inventory"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        // Each project locks hosts at its own path, so suites running at once on one test
        // host do not refuse each other (a real controller shares the default path).
        lockPath = "/tmp/runbook-\(UUID().uuidString).lock"
        let inventory = try String(contentsOfFile: env["RBT_INVENTORY"], encoding: .utf8)
        try (inventory + "vars: { runbook_lock_path: \(lockPath) }\n").write(toFile: root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: remoteDir, withIntermediateDirectories: true)
    }

    /// Writes a project file (relative to the root).
    func write(_ relative: String, _ text: String) throws {
        let path = root + "/" + relative
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Runs the built binary in the project root.
    func run(_ arguments: [String], environment extra: [String: String] = [:], stdin: String? = nil) throws -> ProcessOutput {
        var environment = ProcessInfo.processInfo.environment
        environment["NO_COLOR"] = "1"
        for (k, v) in extra { environment[k] = v }
        return try runProcessFull(binary, arguments, environment: environment, stdin: stdin, currentDirectory: root)
    }

    /// Reads a file on a host (the hosts share this machine's filesystem through their
    /// namespaces, but we go through the host to be honest about where it is).
    func remote(_ host: String, _ command: String) throws -> String {
        try env.inHost(host, command).stdout
    }

    /// Removes the remote directory.
    func cleanUp() {
        try? FileManager.default.removeItem(atPath: remoteDir)
        try? FileManager.default.removeItem(atPath: root)
    }
}

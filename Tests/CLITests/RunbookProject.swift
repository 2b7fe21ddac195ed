import Foundation
import TestSupport

/// A throwaway project (runbooks/, templates/, inventory pointing at the test hosts) and a
/// throwaway directory on the hosts, for one test.
struct RunbookProject {
    let root: String
    let remoteDir: String
    let env: TestHosts
    let binary = repositoryRoot + "/.build/debug/runbook"

    init(_ env: TestHosts) throws {
        self.env = env
        root = FileManager.default.temporaryDirectory.appendingPathComponent("rbproj-\(UUID().uuidString)").path
        remoteDir = "/var/tmp/rbtest-\(UUID().uuidString)"
        for dir in ["runbooks", "templates", "inventory"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: env["RBT_INVENTORY"], toPath: root + "/inventory/hosts.yml")
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

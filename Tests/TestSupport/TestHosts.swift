import Foundation

/// The SSH test hosts started by `scripts/testhosts up`, read from `$RUNBOOK_TESTHOSTS/hosts.env`.
public struct TestHosts: Sendable {
    /// Every `KEY=value` line of hosts.env.
    public let values: [String: String]

    /// Loads hosts.env, or explains how to start the hosts.
    public static func load() throws -> TestHosts {
        let dir = ProcessInfo.processInfo.environment["RUNBOOK_TESTHOSTS"]
            ?? (repositoryRoot + "/.testhosts")
        let path = dir + "/hosts.env"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw TestHostsMissing(path: path)
        }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            values[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return TestHosts(values: values)
    }

    /// The value of `key`; a missing key is a broken harness, so it traps with the key's name.
    public subscript(_ key: String) -> String {
        guard let value = values[key] else { fatalError("hosts.env has no \(key)") }
        return value
    }

    /// Runs `scripts/testhosts ARGS…` (e.g. `cut h2`), returning its exit status.
    @discardableResult
    public func harness(_ arguments: String...) throws -> Int32 {
        try runProcess(self["RBT_SCRIPT"], arguments).status
    }

    /// Runs a command inside a test host's network namespace; returns stdout and status.
    public func inHost(_ host: String, _ command: String) throws -> (stdout: String, status: Int32) {
        try runProcess(self["RBT_SCRIPT"], ["exec", host, "--", "sh", "-c", command])
    }
}

/// The hosts file is absent: the harness was not started.
public struct TestHostsMissing: Error, CustomStringConvertible {
    public let path: String
    public var description: String {
        "test hosts are not running (\(path) missing): start them with `scripts/testhosts up`, or run the whole suite with `scripts/test`"
    }
}

/// The repository root, found from this source file's location.
public let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// Runs a program to completion, capturing stdout (stderr is passed through).
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil) throws -> (stdout: String, status: Int32) {
    let r = try runProcessFull(executable, arguments, environment: environment, stdin: stdin)
    return (r.stdout, r.status)
}

/// Set once: writing to a pipe whose reader is gone fails with EPIPE instead of killing the test process.
let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN); return () }()

/// The captured result of a finished process.
public struct ProcessOutput: Sendable {
    public let stdout: String
    public let stderr: String
    public let status: Int32
}

/// Runs blocking work (a process waited for, a polling loop) on a thread of its own, and
/// returns a task to await its result. `Task.detached` would run it on one of Swift
/// concurrency's cooperative threads, of which there are as many as cores: two long blocking
/// calls (from tests running at once) then stall every other task until one of them ends.
/// The thread starts here, before this returns: started from inside the task, it would wait
/// for a cooperative thread to run the task, and with those all blocked (by the very call
/// the caller makes next, and another test's) the work would not start until they return.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Task<T, any Error> {
    let outcome = ThreadOutcome<T>()
    Thread { outcome.finish(Result(catching: body)) }.start()
    return Task { try await outcome.value() }
}

/// The result of work on its own thread, handed to whoever awaits it (before or after it ends).
final class ThreadOutcome<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, any Error>?
    private var waiter: CheckedContinuation<T, any Error>?

    func finish(_ value: Result<T, any Error>) {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.resume(with: value)
        } else {
            result = value
            lock.unlock()
        }
    }

    func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            if let result {
                lock.unlock()
                continuation.resume(with: result)
            } else {
                waiter = continuation
                lock.unlock()
            }
        }
    }
}

/// Runs a program to completion, capturing stdout and stderr separately.
public func runProcessFull(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil, currentDirectory: String? = nil) throws -> ProcessOutput {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    // A child that exits without reading its stdin must not kill this process with SIGPIPE:
    // the write then fails with EPIPE, which is ignored.
    _ = ignoreSIGPIPE
    try process.run()
    if let stdin { try? input.fileHandleForWriting.write(contentsOf: Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    // Read both pipes concurrently so neither can fill up and stall the child.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessOutput(
        stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self),
        status: process.terminationStatus)
}

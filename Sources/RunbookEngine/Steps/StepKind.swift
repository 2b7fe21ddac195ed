import Crypto
import Foundation
import RunbookCore

/// What apply will do for one planned change: exactly what the plan showed, executed by the
/// engine (kinds never write to a host themselves).
enum Operation: Sendable {
    /// Replace a file atomically (backup first, validate the candidate, then rename).
    case putFile(path: String, contents: [UInt8], mode: UInt32, owner: String?, group: String?,
                 validate: ShellCommand?, existed: Bool, beforeDigest: String)
    /// Run a command; a non-zero exit fails the step. `undo` is recorded first when given.
    case run(ShellCommand, undo: ShellCommand?)
    /// Check expressions against the run's state at apply time.
    case assert(conditions: [String], message: String?)
    /// Wait.
    case sleep(Duration)
    /// Something other than a shell command (an HTTP health check, a port wait), done by
    /// the step's own action through the host's transport.
    case action(any StepAction)
    /// Nothing.
    case nothing
}

/// What a step does at apply time when it is not a command or a file: it may read and probe
/// through the transport; it must not change the host (changes are commands, which the plan
/// shows and the journal records).
protocol StepAction: Sendable {
    /// Performs the action; `.success` outputs become `steps.<id>.*`.
    func perform(on transport: any Transport, step: Step) async -> StepActionResult
}

/// The outcome of a `StepAction`.
enum StepActionResult: Sendable {
    /// It passed, with outputs for later steps.
    case success([String: Value])
    /// It failed, with the reason.
    case failure(String)
}

/// A step planned for one host: the public change plus the operation behind it.
struct HostStepPlan: Sendable {
    var change: PlannedChange
    var operation: Operation
    /// Set when the step must be planned again at apply time (it reads earlier steps' results).
    var deferredUntilApply: Bool
    /// Facts a `gather` step read, for the later steps of the same host.
    var facts: [String: Value]? = nil
}

/// Read-only access to a host while planning: files, stats, and check commands.
struct FactReader: Sendable {
    let transport: any Transport

    /// A file's contents and mode, or nil when absent.
    func file(_ path: String) async throws(TransportError) -> (contents: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32)? {
        guard let info = try await transport.stat(path) else { return nil }
        if info.isDirectory {
            throw TransportError(host: transport.hostName, message: "\(path) is a directory")
        }
        guard let contents = try await transport.readFile(path) else { return nil }
        return (contents, info.permissions, info.uid, info.gid)
    }

    /// Runs a read-only check (`creates`, `unless`).
    func check(_ command: ShellCommand, timeout: Duration?) async throws(TransportError) -> CommandOutput {
        try await transport.run(command, stdin: [], timeout: timeout ?? .seconds(60), onOutput: nil)
    }
}

/// Step arguments after rendering for one host.
struct RenderedArguments: Sendable {
    /// Strings rendered with secrets as values (file content, paths).
    var strings: [String: String]
    /// Commands rendered with secrets as references, with the secrets they use.
    var commands: [String: ShellCommand]
    /// Everything else as written (numbers, bools, lists).
    var raw: [String: Value]
    /// Rendered template file contents (`template` src), when the kind has one.
    var fileContents: [UInt8]?

    func string(_ key: String) -> String? { strings[key] }
}

/// A step kind: facts in, planned change out.
protocol StepKind: Sendable {
    /// Plans `step` on one host.
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan
}

/// SHA-256 in hex.
func sha256Hex(_ bytes: [UInt8]) -> String {
    hexEncoded(SHA256.hash(data: bytes))
}

/// Lower-case hex of `bytes` (a digest). Not `String(format:)`, which goes through
/// CoreFoundation's formatter for every byte.
func hexEncoded<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var text: [UInt8] = []
    text.reserveCapacity(64)
    for byte in bytes {
        text.append(digits[Int(byte >> 4)])
        text.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: text, as: UTF8.self)
}

/// SHA-256 in hex of a string.
func sha256Hex(_ text: String) -> String { sha256Hex(Array(text.utf8)) }

/// Parses a file mode written as `"0644"`, `"644"`, `0644` or `420`.
func parseMode(_ value: Value?) -> UInt32? {
    switch value {
    case .string(let s): return UInt32(s, radix: 8)
    case .int(let i): return UInt32(String(i), radix: 8)
    default: return nil
    }
}

extension PlannedChange {
    /// A change for `step` on `host` with the usual address.
    static func make(step: Step, host: String, action: ChangeAction, reversible: Bool, summary: String) -> PlannedChange {
        PlannedChange(address: "\(host)/\(step.reference)", host: host, stepIndex: step.index, stepName: step.name,
                      kind: step.kind, action: action, reversible: reversible, summary: summary)
    }
}

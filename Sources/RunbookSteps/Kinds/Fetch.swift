import Crypto
import Foundation
import RunbookCore
import Synchronization

// MARK: - fetch

/// `fetch`: copies a file from the host to the controller (an off-host copy of a backup), as
/// it streams over the run's SSH session: never whole in memory. The copy lands under a
/// temporary name (0600) in `dest`, its SHA-256 must equal the one `sha256sum` computes on the
/// host, and only then is it renamed into place; `keep` then removes the oldest copies of the
/// same `prefix` there. Kept on rollback, like the dump it copies.
package struct FetchStep: StepKind {
    package static let schema = StepKindSchema(
        name: "fetch", summary: "copy a file from the host to the controller, checksummed, with retention",
        arguments: [
            ArgumentSpec("src", .string, required: true, "the file on the host (a dump: {{ steps.backup.path }})"),
            ArgumentSpec("dest", .string, required: true, "directory on the controller (relative: to the project root); made 0700 if missing"),
            ArgumentSpec("keep", .int, "keep this many copies of prefix in dest, the newest; the older ones are removed"),
            ArgumentSpec("prefix", .string, "what the names of the copies keep counts start with (default: src's name up to its first -)"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .kept }
    /// Read over SFTP as the login user, so never through sudo.
    package static let supportsBecome = false
    package static func defaultName(_ arguments: [String: Value]) -> String {
        "fetch \(arguments["src"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let src = arguments.string("src"), src.hasPrefix("/") else {
            throw StepFailure("src: \(arguments.string("src") ?? "") must be an absolute path on \(host.name)")
        }
        let name = (src as NSString).lastPathComponent
        guard !name.isEmpty, name != ".", name != "..", !src.hasSuffix("/") else { throw StepFailure("src: \(src) names no file") }
        guard var dest = arguments.string("dest"), !dest.isEmpty else { throw StepFailure("dest: a directory on the controller is required") }
        if !dest.hasPrefix("/"), let root = arguments.projectRoot { dest = root + "/" + dest }
        dest = (dest as NSString).standardizingPath
        let keep = try arguments.int("keep")
        if let keep, keep < 1 { throw StepFailure("keep: \(keep) must be at least 1") }
        let prefix = arguments.string("prefix") ?? String(name.prefix { $0 != "-" })
        guard !prefix.isEmpty, !prefix.contains("/") else { throw StepFailure("prefix: \(prefix) must be a file name prefix") }

        guard let info = try await facts.transport.stat(src) else { throw StepFailure.onHost("\(src) does not exist on \(host.name)") }
        guard info.isRegularFile else { throw StepFailure.onHost("\(src) on \(host.name) is not a regular file") }
        let action = FetchAction(src: src, dest: dest, name: name, keep: keep, prefix: prefix, hostName: host.name)
        var summary = "copy \(src) (\(FetchAction.size(info.size))) from \(host.name) to \(dest)/\(name) on the controller, SHA-256 checked"
        if let keep { summary += "; keep \(keep) of \(prefix)*" }
        let change = PlannedChange.make(step: step, host: host.name, action: .create, reversible: true, summary: summary)
        return HostStepPlan(change: change, operation: .action(action), deferredUntilApply: false)
    }
}

/// The copy behind `fetch`.
struct FetchAction: StepAction {
    let src: String
    let dest: String
    let name: String
    let keep: Int?
    let prefix: String
    let hostName: String

    var canonical: String {
        [src, dest, name, keep.map(String.init) ?? "", prefix].joined(separator: "\u{0}")
    }

    /// The checksum on the host, read-only.
    var checksum: ShellCommand { ShellCommand(argv: ["sha256sum", "--", src]) }
    var commands: [ShellCommand] { [checksum] }

    /// `12.3 MiB`.
    static func size(_ bytes: UInt64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) bytes" : String(format: "%.1f %@", value, units[unit])
    }

    func perform(on transport: any Transport, controller: any Transport, step: Step) async -> StepActionResult {
        let started = ContinuousClock.now
        let target = dest + "/" + name
        do {
            try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            return .failure("cannot create \(dest) on the controller: \(error.localizedDescription)")
        }
        if FileManager.default.fileExists(atPath: target) {
            return .failure("\(target) already exists on the controller; nothing was copied")
        }
        let temporary = dest + "/." + name + ".part-" + UUID().uuidString.prefix(8).lowercased()
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return .failure("cannot create \(temporary) on the controller: \(String(cString: strerror(errno)))") }
        let sink = LocalSink(fd: fd)
        // The temporary name goes in every case: once linked, the copy lives on as target.
        defer {
            close(fd)
            unlink(temporary)
        }
        let size: UInt64
        do {
            guard let read = try await transport.readFile(src, chunks: { sink.take($0) }) else {
                return .failure("\(src) no longer exists on \(hostName)")
            }
            size = read
        } catch {
            return .failure(sink.failure.map { "cannot write \(temporary) on the controller: \($0)" } ?? "cannot copy \(src) from \(hostName): \(error.message)")
        }
        guard fsync(fd) == 0 else { return .failure("cannot write \(temporary) on the controller: \(String(cString: strerror(errno)))") }
        let local = sink.digest()
        let remote: String
        do {
            let out = try await transport.run(checksum, stdin: [], timeout: .seconds(3600), onOutput: nil)
            guard out.exitStatus == 0, let field = out.stdoutText.split(separator: " ").first, field.count == 64 else {
                return .failure("sha256sum of \(src) on \(hostName) failed: \(out.stderrText.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            remote = String(field)
        } catch {
            return .failure("sha256sum of \(src) on \(hostName): \(error.message)")
        }
        guard remote == local else {
            return .failure("the copy of \(src) differs from the file on \(hostName) (sha256 \(local) here, \(remote) there): it was removed; was the file still being written?")
        }
        // Into place only now, without replacing anything that appeared meanwhile.
        guard link(temporary, target) == 0 else {
            return .failure("cannot put the copy at \(target) on the controller: \(String(cString: strerror(errno)))")
        }
        let directory = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 { fsync(directory); close(directory) }

        var removed: [String] = []
        if let keep {
            let copies = Self.copies(in: dest, prefix: prefix)
            for old in copies.dropFirst(keep) where old != name {
                if unlink(dest + "/" + old) == 0 { removed.append(old) }
            }
        }
        let elapsed = ContinuousClock.now - started
        let seconds = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, 0.001)
        var message = "copied \(Self.size(size)) to \(target) in \(DurationText.format(elapsed)) (\(Self.size(UInt64(Double(size) / seconds)))/s); sha256 \(local) equals the host's"
        if let keep {
            message += removed.isEmpty ? "; keep \(keep): nothing removed" : "; keep \(keep): removed \(removed.joined(separator: ", "))"
        }
        return .success([
            "path": .string(target), "size": .int(Int(clamping: size)), "sha256": .string(local),
            "removed": .list(removed.map { .string($0) }), "changed": true,
        ], message: message)
    }

    /// The copies of `prefix` in `directory`, newest first (by modification time, then name).
    static func copies(in directory: String, prefix: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var found: [(name: String, modified: Date)] = []
        for name in names where name.hasPrefix(prefix) && !name.hasPrefix(".") {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name),
                  attributes[.type] as? FileAttributeType == .typeRegular else { continue }
            found.append((name, attributes[.modificationDate] as? Date ?? .distantPast))
        }
        return found.sorted { $0.modified != $1.modified ? $0.modified > $1.modified : $0.name > $1.name }.map(\.name)
    }
}

/// Where the chunks go: the local file and the running SHA-256. Called on the connection's
/// thread, one chunk after another.
private final class LocalSink: Sendable {
    private let fd: Int32
    private let state = Mutex<(hash: SHA256, failure: String?)>((SHA256(), nil))

    init(fd: Int32) { self.fd = fd }

    var failure: String? { state.withLock { $0.failure } }

    func take(_ chunk: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < chunk.count {
            let n = write(fd, chunk.baseAddress! + offset, chunk.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                state.withLock { $0.failure = reason }
                return false
            }
            offset += n
        }
        state.withLock { $0.hash.update(bufferPointer: chunk) }
        return true
    }

    func digest() -> String {
        state.withLock { hexEncoded($0.hash.finalize()) }
    }
}

import RunbookCore

/// `template` and `copy`: put a file in place with the wanted content, mode and owner.
/// Plan: a unified diff against the file on the host. Undo: the previous content, or removal.
struct FilePlanner {
    func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let dest = arguments.string("dest") else { throw StepFailure("\(step.kind) needs dest") }
        guard dest.hasPrefix("/") else { throw StepFailure("dest must be an absolute path, got \(dest)") }
        let wanted: [UInt8]
        if let contents = arguments.fileContents {
            wanted = contents
        } else if let content = arguments.strings["content"] {
            wanted = Array(content.utf8)
        } else {
            throw StepFailure("\(step.kind) needs src or content")
        }
        let current = try await facts.file(dest)
        // A symbolic link stays one: the file it resolves to is planned, written, backed up
        // and restored (`sites-enabled/app` → `sites-available/app`).
        let linkTarget = current?.target
        let path = linkTarget ?? dest
        let shownPath = linkTarget.map { "\(dest) → \($0)" } ?? dest
        let wantedMode = parseMode(arguments.raw["mode"]) ?? current?.mode ?? 0o644
        let owner = arguments.string("owner")
        let group = arguments.string("group")
        let beforeDigest = current.map { sha256Hex($0.contents) } ?? "absent"
        let plannedBy = facts.plannedBy(path)
        let fingerprint = FactFingerprint(fact: "file:\(path)",
                                          digest: (plannedBy.map { "written by step \($0): " } ?? "")
                                              + (current.map { "\(sha256Hex($0.contents)) mode \(String($0.mode, radix: 8)) owner \($0.uid):\($0.gid)" } ?? "absent"))
        var change = PlannedChange.make(step: step, host: host.name, action: .noop, reversible: true, summary: "")
        change.fingerprints = [fingerprint]
        let contentSame = current?.contents == wanted
        let modeSame = current?.mode == wantedMode
        // Owner/group are compared by name on the host only when asked for.
        var ownerSame = true
        if current != nil, owner != nil || group != nil {
            let probe: ShellCommand = "stat -c '%U:%G' -- \(path)"
            let result = try await facts.check(probe, timeout: step.timeout)
            let parts = result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").map(String.init)
            if parts.count == 2 {
                ownerSame = (owner == nil || owner == parts[0]) && (group == nil || group == parts[1])
            }
            change.fingerprints.append(FactFingerprint(fact: "owner:\(path)", digest: sha256Hex(result.stdoutText)))
        }
        if contentSame && modeSame && ownerSame {
            change.summary = "\(shownPath) is up to date"
            change.reason = "content, mode\(owner != nil || group != nil ? " and owner" : "") already as wanted"
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        }
        change.action = current == nil ? .create : .update
        var what: [String] = []
        if current == nil { what.append("create (mode \(String(wantedMode, radix: 8)))") }
        if current != nil && !contentSame { what.append("content") }
        if let current, !modeSame { what.append("mode \(String(current.mode, radix: 8)) → \(String(wantedMode, radix: 8))") }
        if !ownerSame { what.append("owner → \(owner ?? ""):\(group ?? "")") }
        // The file is replaced by a new one (written as the login user): without owner/group,
        // it gets the old file's owner and group back, by number, instead of the login user's.
        var keptOwner = owner
        var keptGroup = group
        if let current {
            if owner == nil { keptOwner = String(current.uid) }
            if group == nil { keptGroup = String(current.gid) }
            if owner == nil && group == nil && (current.uid != 0 || current.gid != 0) {
                what.append("owner \(current.uid):\(current.gid) kept")
            }
        }
        change.summary = "\(shownPath): " + what.joined(separator: ", ")
        if plannedBy != nil { change.summary += " (as step \(plannedBy!) leaves it)" }
        if !contentSame {
            change.diff = Self.diff(old: current?.contents, new: wanted, path: path)
        }
        var validate = arguments.commands["validate"]
        if let keyword = validate, ComposeCommand.isValidationKeyword(keyword) {
            let detected = try await ComposeCommand.detect(facts: facts)
            change.fingerprints.append(detected.fingerprint)
            validate = ComposeCommand.validation(of: path, flavor: detected.flavor)
        }
        let op = StepOperation.putFile(path: path, contents: wanted, mode: wantedMode, owner: keptOwner, group: keptGroup,
                                       validate: validate, existed: current != nil, beforeDigest: beforeDigest)
        return HostStepPlan(change: change, operation: op, deferredUntilApply: false)
    }
}

extension FilePlanner {
    /// A unified diff for text; for binary content (a NUL byte, or not UTF-8), sizes and
    /// digests instead, the same on every host and never raw bytes.
    static func diff(old: [UInt8]?, new: [UInt8], path: String) -> String {
        let binary = isBinary(new) || old.map(isBinary) == true
        // Past the cap a line diff costs more than it shows (and completely different texts
        // make it quadratic): sizes and digests instead.
        let large = new.count > maximumDiffBytes || (old?.count ?? 0) > maximumDiffBytes
        if binary || large {
            let before = old.map { "\($0.count) bytes" } ?? "absent"
            return "\(binary ? "binary file" : "large file, no line diff above \(maximumDiffBytes / 1_048_576) MiB"): \(before) → \(new.count) bytes\n"
                + "sha256 \(old.map { String(sha256Hex($0).prefix(16)) } ?? "-") → \(String(sha256Hex(new).prefix(16)))\n"
        }
        let oldText = old.map { String(decoding: $0, as: UTF8.self) }
        let newText = String(decoding: new, as: UTF8.self)
        // Myers' diff costs (N + M) × D: two texts of 16,000 lines with nothing in common take a
        // minute. At least as many lines differ as the two texts' line counts differ, so when
        // that alone makes the work too large, sizes and digests are shown instead.
        if let oldText {
            let (lines, differing) = Self.lineCounts(oldText, newText)
            if lines * differing > maximumDiffWork {
                return "\(differing) of \(lines) lines differ, too many for a line diff: \(old!.count) bytes → \(new.count) bytes\n"
                    + "sha256 \(String(sha256Hex(old!).prefix(16))) → \(String(sha256Hex(new).prefix(16)))\n"
            }
        }
        return UnifiedDiff.make(old: oldText, new: newText, path: path)
    }

    /// The lines of both texts, and how many at least differ: for each distinct line, how many
    /// more times one text has it than the other.
    static func lineCounts(_ old: String, _ new: String) -> (lines: Int, differing: Int) {
        var counts: [Substring: Int] = [:]
        var lines = 0
        for line in old.split(separator: "\n", omittingEmptySubsequences: false) { counts[line, default: 0] += 1; lines += 1 }
        for line in new.split(separator: "\n", omittingEmptySubsequences: false) { counts[line, default: 0] -= 1; lines += 1 }
        return (lines, counts.values.reduce(0) { $0 + abs($1) })
    }

    /// The most work (lines × differing lines) a plan spends on one line diff.
    static let maximumDiffWork = 20_000_000

    /// The largest file shown as a line diff.
    static let maximumDiffBytes = 1_048_576

    /// True for content that is not text.
    static func isBinary(_ bytes: [UInt8]) -> Bool {
        bytes.contains(0) || String(validating: bytes, as: UTF8.self) == nil
    }
}

/// The arguments `template` and `copy` share.
let fileArguments: [ArgumentSpec] = [
    ArgumentSpec("dest", .string, required: true, "the file on the host"),
    ArgumentSpec("mode", .fileMode, "permissions of the file, in octal (default: those of the file replaced, else 0644)"),
    ArgumentSpec("owner", .string, "owner of the file"),
    ArgumentSpec("group", .string, "group of the file"),
    ArgumentSpec("validate", .command, "command that must pass on the candidate file before it is put in place; %s is its path"),
]

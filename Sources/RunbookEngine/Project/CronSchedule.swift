import Foundation
import RunbookCore
import RunbookSteps

/// The crontab block `runbook schedule` manages for one project: one line per runbook with a
/// `schedule:`, between marker comments naming the project root.
///
/// Pure text in, text out, so that what ends up in a user's crontab is unit-tested without
/// cron. The markers name the root so several projects can share one crontab, each owning
/// only its own block; every byte outside the block is kept as it was, so a person's own
/// entries survive any number of installs and removals.
///
/// Each line runs `runbook apply NAME --yes --color never` from the project root with absolute
/// paths (cron starts with a bare environment and its own working directory), appending a
/// timestamp line and then the run's output to `STATE/logs/NAME.log`. Two runs never overlap:
/// the engine's controller and host locks refuse the second one (exit 3, logged).
public struct CronSchedule: Sendable {
    /// One scheduled runbook: its name and its cron expression (`0 3 * * *`, `@daily`).
    public struct Entry: Sendable, Hashable {
        /// The runbook name (`runbooks/NAME.yml`).
        public var runbook: String
        /// The runbook's `schedule:`, already validated by the loader.
        public var schedule: String

        /// An entry for `runbook` at `schedule`.
        public init(runbook: String, schedule: String) {
            self.runbook = runbook
            self.schedule = schedule
        }
    }

    /// The project root, absolute; `cd` target of every line and part of the markers.
    public let root: String
    /// The `runbook` executable cron runs, absolute.
    public let executable: String
    /// The inventory in effect when the block was made, absolute; passed with `-i`.
    public let inventoryPath: String
    /// The state directory, absolute; passed with `--state-dir`, and holding `logs/`.
    public let stateDir: String

    /// A schedule for the project at `root`, run by `executable` with `inventoryPath` and `stateDir`.
    public init(root: String, executable: String, inventoryPath: String, stateDir: String) {
        self.root = root
        self.executable = executable
        self.inventoryPath = inventoryPath
        self.stateDir = stateDir
    }

    /// `STATE/logs`: where scheduled runs append their output. `--install` creates it (0700).
    public var logDirectory: String { stateDir + "/logs" }

    /// `STATE/logs/NAME.log`.
    public func logPath(for runbook: String) -> String { logDirectory + "/" + runbook + ".log" }

    /// The comment opening this project's block.
    public var beginMarker: String { "# BEGIN runbook \(root) (managed by runbook schedule; do not edit)" }

    /// The comment closing this project's block.
    public var endMarker: String { "# END runbook \(root)" }

    /// The shell command for `runbook`, as `/bin/sh` should receive it (before `%` escaping):
    /// the apply with `--log`, which rotates the runbook's log and appends a timestamp line and
    /// its output to it. The shell's own `>>` catches what comes before (a binary not found).
    public func command(for runbook: String) -> String {
        let log = logPath(for: runbook)
        let apply = Shell.join([executable, "apply", runbook, "--yes", "--color", "never",
                                "-i", inventoryPath, "--state-dir", stateDir, "--log", log])
        return "cd \(Shell.quote(root)) && \(apply) >> \(Shell.quote(log)) 2>&1"
    }

    /// The crontab line for `entry`: its schedule, then the command with each `%` escaped.
    ///
    /// Throws when a value cannot be carried by a crontab line: a line break ends the line,
    /// and a `\` right before a `%` would make cron cut the command there.
    public func line(for entry: Entry) throws(DiagnosticError) -> String {
        for (what, value) in [("project root", root), ("runbook name", entry.runbook), ("runbook executable", executable),
                              ("inventory path", inventoryPath), ("state directory", stateDir)] {
            if value.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }) {
                throw DiagnosticError(.error("the \(what) \(value.debugDescription) contains a line break, which a crontab line cannot hold"))
            }
        }
        let command = command(for: entry.runbook)
        let escaped = Self.escape(command)
        guard Self.commandCronRuns(escaped) == command else {
            throw DiagnosticError(.error("a path in the crontab line for \(entry.runbook) has a \\ before a %, which cron would cut the command at",
                                         hint: "rename the directory, or pass paths without that sequence"))
        }
        let schedule = entry.schedule.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
        return schedule + " " + escaped
    }

    /// The whole block for `entries` (markers included, newline-terminated), or "" when there
    /// are none: a project without schedules owns nothing in the crontab.
    public func block(_ entries: [Entry]) throws(DiagnosticError) -> String {
        guard !entries.isEmpty else { return "" }
        var text = beginMarker + "\n"
        for entry in entries { text += try line(for: entry) + "\n" }
        return text + endMarker + "\n"
    }

    /// `crontab` with this project's block replaced by the block for `entries` (in place of the
    /// first old block, else appended), or removed when `entries` is empty.
    public func installing(_ entries: [Entry], into crontab: String) throws(DiagnosticError) -> String {
        String(decoding: try installing(entries, into: Array(crontab.utf8)), as: UTF8.self)
    }

    /// `crontab` without this project's block.
    public func removing(from crontab: String) throws(DiagnosticError) -> String {
        try installing([], into: crontab)
    }

    /// As `installing(_:into:)` on bytes, so that a crontab that is not valid UTF-8 keeps
    /// its bytes outside the block unchanged too.
    public func installing(_ entries: [Entry], into crontab: [UInt8]) throws(DiagnosticError) -> [UInt8] {
        try replacingBlock(in: crontab, with: Array(block(entries).utf8))
    }

    /// As `removing(from:)` on bytes.
    public func removing(from crontab: [UInt8]) throws(DiagnosticError) -> [UInt8] {
        try replacingBlock(in: crontab, with: [])
    }

    /// A unified diff of the crontab before and after, for the confirmation; "" when equal.
    public static func diff(old: [UInt8], new: [UInt8]) -> String {
        UnifiedDiff.make(old: String(decoding: old, as: UTF8.self), new: String(decoding: new, as: UTF8.self), path: "/crontab")
    }

    /// `command` as written in a crontab: `%` is cron's newline (the rest becomes stdin), so
    /// each one is written `\%`.
    public static func escape(_ command: String) -> String {
        command.replacingOccurrences(of: "%", with: "\\%")
    }

    /// The command cron hands to the shell for a crontab command field, following cron's
    /// own reading: `\%` becomes `%`, any other `\` stays, and the first bare `%` ends the
    /// command.
    public static func commandCronRuns(_ field: String) -> String {
        var result = ""
        var escaped = false
        for character in field {
            if escaped {
                escaped = false
                if character == "%" {
                    result.removeLast()
                    result.append("%")
                    continue
                }
                result.append(character)
                continue
            }
            if character == "\\" {
                escaped = true
                result.append(character)
                continue
            }
            if character == "%" { break }
            result.append(character)
        }
        return result
    }

    // MARK: - Block replacement

    /// A begin marker of this project: the exact line, or one with another comment after the
    /// root, so that a block written with different wording is still recognised.
    private func isBegin(_ line: ArraySlice<UInt8>) -> Bool {
        let prefix = Array("# BEGIN runbook \(root)".utf8)
        guard line.starts(with: prefix) else { return false }
        let rest = line.dropFirst(prefix.count)
        return rest.isEmpty || rest.starts(with: Array(" (".utf8))
    }

    private func isEnd(_ line: ArraySlice<UInt8>) -> Bool {
        Array(line) == Array(endMarker.utf8)
    }

    /// The lines of `text` without their newlines; a final newline does not start another line.
    private func lines(_ text: [UInt8]) -> [ArraySlice<UInt8>] {
        guard !text.isEmpty else { return [] }
        var lines = text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if text.last == UInt8(ascii: "\n") { lines.removeLast() }
        return lines
    }

    /// `crontab` with every block of this project taken out and `block` put where the first
    /// one was (or at the end). Lines outside blocks are kept byte for byte, and so is whether
    /// the text ended with a newline, unless the block now ends it.
    private func replacingBlock(in crontab: [UInt8], with block: [UInt8]) throws(DiagnosticError) -> [UInt8] {
        var kept: [ArraySlice<UInt8>] = []
        var insertAt: Int?
        var inside = false
        for line in lines(crontab) {
            if inside {
                if isEnd(line) { inside = false }
                continue
            }
            if isBegin(line) {
                inside = true
                insertAt = insertAt ?? kept.count
                continue
            }
            kept.append(line)
        }
        if inside {
            throw DiagnosticError(.error("the crontab has \"# BEGIN runbook \(root)\" without a matching \"\(endMarker)\"",
                                         hint: "fix it with `crontab -e` (add the END line or delete the block), then run this again"))
        }
        let blockLines = lines(block)
        let index = insertAt ?? kept.count
        kept.insert(contentsOf: blockLines, at: index)
        guard !kept.isEmpty else { return [] }
        var result = Array(kept.joined(separator: [UInt8(ascii: "\n")]))
        let blockIsLast = !blockLines.isEmpty && index + blockLines.count == kept.count
        if blockIsLast || crontab.last == UInt8(ascii: "\n") {
            result.append(UInt8(ascii: "\n"))
        }
        return result
    }
}

import Foundation
import RunbookCore

// MARK: - pg_backup

/// `pg_backup`: `pg_dump -Fc` into a 0600 temp file in `dir`, verified with
/// `pg_restore --list` (a dump that does not verify is removed and the step fails), renamed
/// to `DATABASE-YYYYmmdd-HHMMSS.dump` (UTC, the time apply runs), then the oldest dumps of
/// that database beyond `keep` are removed. One remote command. Its last line of stdout is
/// the new dump's path (`outputs(stdout:)`). Nothing to undo: a rollback keeps the dump.
///
/// `prefix` replaces `DATABASE` in the names: dumps taken before a change (`app-pre-scale`)
/// then have their own retention and never evict the nightly ones. Before dumping, the
/// filesystem of `dir` must have the database's size (an upper bound for a compressed dump)
/// plus `reserve_mb` free, at plan time and again in the remote command, or the step fails
/// before writing anything.
package struct PostgresBackupStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_backup", summary: "dump a PostgreSQL database (custom format), verified, with retention",
        arguments: pgConnection + [
            ArgumentSpec("dir", .string, required: true, "directory on the host for the dumps"),
            ArgumentSpec("keep", .int, "dumps to keep in dir with this prefix (older ones are removed)"),
            ArgumentSpec("prefix", .string, "dump names start with this (default: the database name); retention counts only these"),
            ArgumentSpec("reserve_mb", .int, default: 256, "MiB that must stay free on dir's filesystem besides the dump"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .kept }
    package init() {}

    /// The glob matching this kind's dump names after `DATABASE`.
    static let stampGlob = "-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9].dump"

    package func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let arguments = rendered
        let client = try PostgresClient(arguments)
        guard let database = client.database else { throw StepFailure("pg_backup needs database: the database to dump") }
        guard let dir = arguments.string("dir") else { throw StepFailure("pg_backup needs dir") }
        guard dir.hasPrefix("/") else { throw StepFailure("dir must be an absolute path, got \(dir)") }
        let keep = try arguments.int("keep")
        if let keep, keep < 1 { throw StepFailure("keep must be at least 1 (the new dump), got \(keep)") }
        let directory = dir.count > 1 && dir.hasSuffix("/") ? String(dir.dropLast()) : dir
        let base = Self.fileBase(arguments.string("prefix") ?? database)
        let reserve = try arguments.int("reserve_mb") ?? 256
        guard reserve >= 0 else { throw StepFailure("reserve_mb must not be negative, got \(reserve)") }

        // Facts: the server answers with these credentials, and the dumps already in dir.
        let sizes = try await postgresRows(client, "SELECT pg_size_pretty(pg_database_size(current_database())), pg_database_size(current_database());",
                                           columns: 2, step: step, host: host.name, facts: facts)
        let size = sizes.first?[0] ?? "?"
        let neededKB = (Int(sizes.first?[1] ?? "0") ?? 0) / 1024 + reserve * 1024
        // Free space where the dump goes (the nearest existing parent when dir is new).
        let free: ShellCommand = "d=\(directory); while [ ! -d \"$d\" ] && [ \"$d\" != / ]; do d=$(dirname \"$d\"); done; df -Pk -- \"$d\" | awk 'NR==2 { print $4 }'"
        let freeOutput = try await facts.check(free, timeout: step.timeout ?? .seconds(30))
        let freeKB = Int(freeOutput.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        if freeKB >= 0, freeKB < neededKB {
            throw StepFailure.onHost("not enough free space for the dump in \(directory) on \(host.name): \(freeKB / 1024) MiB free, \(neededKB / 1024) MiB needed (the database, \(size), plus reserve_mb \(reserve)); nothing was dumped")
        }
        let list: ShellCommand = """
            if [ -d \(directory) ]; then echo dir; for f in \(directory + "/" + base)\(literal: Self.stampGlob); do \
            [ -e "$f" ] && printf '%s\\n' "${f##*/}"; done; fi; true
            """
        let listed = try await facts.check(list, timeout: step.timeout ?? .seconds(60))
        guard listed.succeeded else { throw StepFailure.onHost("cannot list \(directory) on \(host.name): \(listed.stderrText)") }
        let lines = listed.stdoutText.split(separator: "\n").map(String.init)
        let dirExists = lines.first == "dir"
        let existing = lines.dropFirst().sorted()
        let removed = keep.map { Array(existing.prefix(max(0, existing.count - ($0 - 1)))) } ?? []

        let newName = "\(base)-YYYYmmdd-HHMMSS.dump"
        var summary = "pg_dump -Fc \(client.label) (\(size)) to \(directory)/\(newName) (UTC time of apply)"
        if !dirExists { summary += ", creating \(directory)" }
        if freeKB >= 0 { summary += "; \(freeKB / 1024) MiB free, \(neededKB / 1024) MiB needed" }
        if let keep { summary += "; keep \(keep): " + (removed.isEmpty ? "removes none" : "removes \(removed.count)") }
        var details = existing.map { "\(directory)/\($0)  " + (removed.contains($0) ? "remove (keep \(keep ?? 0))" : "keep") }
        details.append("\(directory)/\(newName)  new")

        let run = client.command(Self.script(client: client, directory: directory, base: base, keep: keep, neededKB: neededKB))
        var change = PlannedChange.make(step: step, host: host.name, action: .run, reversible: true, summary: summary)
        change.diff = listing(details)
        change.fingerprints.append(FactFingerprint(fact: "dumps:\(directory)/\(base)-*.dump",
                                                   digest: sha256Hex((dirExists ? "dir\n" : "") + existing.joined(separator: "\n"))))
        return HostStepPlan(change: change, operation: .run(run, undo: nil), deferredUntilApply: false)
    }

    /// The dump file name's prefix: the database name with anything but `[A-Za-z0-9_.-]` as `_`.
    static func fileBase(_ database: String) -> String {
        String(database.map { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) ? $0 : "_" })
    }

    /// The remote script (after the client prelude).
    static func script(client: PostgresClient, directory: String, base: String, keep: Int?, neededKB: Int) -> ShellCommand {
        var script: ShellCommand = """
            dir=\(directory); base=\(base)
            [ -d "$dir" ] || mkdir -p -m 700 -- "$dir" || exit 1
            free=$(df -Pk -- "$dir" | awk 'NR==2 { print $4 }')
            if [ -n "$free" ] && [ "$free" -lt \(neededKB) ]; then
              echo "not enough free space in $dir: $((free / 1024)) MiB free, \(neededKB / 1024) MiB needed; nothing was dumped" >&2; exit 1
            fi
            stamp=$(date -u +%Y%m%d-%H%M%S); final="$dir/$base-$stamp.dump"; n=0
            while [ -e "$final" ] && [ "$n" -lt 5 ]; do sleep 1; n=$((n + 1)); stamp=$(date -u +%Y%m%d-%H%M%S); final="$dir/$base-$stamp.dump"; done
            [ ! -e "$final" ] || { echo "$final already exists" >&2; exit 1; }
            tmp=$(mktemp "$dir/.$base-$stamp.dump.XXXXXX") || exit 1
            if ! \(client.program("pg_dump")) -Fc > "$tmp"; then rm -f -- "$tmp"; echo "pg_dump failed; nothing was kept" >&2; exit 1; fi
            if ! \(client.program("pg_restore", connect: false)) --list < "$tmp" > /dev/null; then
              rm -f -- "$tmp"; echo "the dump did not pass pg_restore --list; nothing was kept" >&2; exit 1
            fi
            mv -f -- "$tmp" "$final" || { rm -f -- "$tmp"; exit 1; }

            """
        if let keep {
            script = script + """
                for f in "$dir/$base"\(literal: stampGlob); do [ -e "$f" ] && printf '%s\\n' "$f"; done | sort \
                | awk -v keep=\(keep) '{ p[NR] = $0 } END { for (i = 1; i <= NR - keep; i++) print p[i] }' \
                | while IFS= read -r old; do rm -f -- "$old" && echo "removed $old"; done

                """
        }
        return script + #"echo "$final""#
    }

    /// The outputs of an applied backup for `steps.<id>`: `path`, the last line of stdout.
    package static func outputs(stdout: String) -> [String: Value] {
        guard let last = stdout.split(separator: "\n").last else { return [:] }
        return ["path": .string(String(last))]
    }
}


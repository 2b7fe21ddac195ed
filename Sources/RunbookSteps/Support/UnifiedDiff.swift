/// Unified diffs of text, as `diff -u` prints them, from the standard library's Myers
/// difference.
package enum UnifiedDiff {
    private enum Edit {
        case keep(String)
        case delete(String)
        case add(String)
        var isKeep: Bool { if case .keep = self { return true } else { return false } }
    }

    /// The diff from `old` to `new` (nil `old`: the file is created), with `context` lines
    /// around each change. Empty when the texts are equal.
    package static func make(old: String?, new: String, path: String, context: Int = 3) -> String {
        if old == new { return "" }
        let a = old.map(lines) ?? []
        let b = lines(new)
        var removed = Set<Int>(), inserted = Set<Int>()
        for change in b.difference(from: a) {
            switch change {
            case .remove(let offset, _, _): removed.insert(offset)
            case .insert(let offset, _, _): inserted.insert(offset)
            }
        }
        // The edit script, with each edit's 0-based line position on both sides before it.
        var script: [(edit: Edit, aPos: Int, bPos: Int)] = []
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if i < a.count, removed.contains(i) {
                script.append((.delete(a[i]), i, j)); i += 1
            } else if j < b.count, inserted.contains(j) {
                script.append((.add(b[j]), i, j)); j += 1
            } else {
                script.append((.keep(a[i]), i, j)); i += 1; j += 1
            }
        }
        var out = "--- \(old == nil ? "/dev/null" : "a" + path)\n+++ b\(path)\n"
        var index = 0
        while let start = script[index...].firstIndex(where: { !$0.edit.isKeep }) {
            // Extend the hunk while changes are within 2×context lines of each other.
            var lastChange = start
            var cursor = start + 1
            while cursor < script.count {
                if !script[cursor].edit.isKeep {
                    lastChange = cursor
                } else if cursor - lastChange > context * 2 {
                    break
                }
                cursor += 1
            }
            let hunkStart = max(index, start - context)
            let hunkEnd = min(script.count, lastChange + context + 1)
            var aCount = 0, bCount = 0
            var body = ""
            for entry in script[hunkStart..<hunkEnd] {
                switch entry.edit {
                case .keep(let line): aCount += 1; bCount += 1; body += show(" ", line)
                case .delete(let line): aCount += 1; body += show("-", line)
                case .add(let line): bCount += 1; body += show("+", line)
                }
            }
            let aStart = script[hunkStart].aPos + (aCount == 0 ? 0 : 1)
            let bStart = script[hunkStart].bPos + (bCount == 0 ? 0 : 1)
            out += "@@ -\(aStart),\(aCount) +\(bStart),\(bCount) @@\n" + body
            index = hunkEnd
            if index >= script.count { break }
        }
        return out
    }

    /// Marks a last line that has no newline, so that it differs from the same text with one
    /// (as in `diff -u`, whose output then patches onto the file).
    private static let noNewline = "\u{0}"

    /// Lines split at each LF on Unicode scalars: as Characters, a CRLF is one grapheme that
    /// "\n" would not split, and a CRLF file would diff as one line. A line keeps its CR.
    private static func lines(_ text: String) -> [String] {
        var result = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
        if result.last == "" {
            result.removeLast()
        } else if !result.isEmpty {
            result[result.count - 1] += noNewline
        }
        return result
    }

    /// One diff line. A CRLF line is shown without its CR (compared with it): a CR before
    /// the LF would make the displayed line a single "\r\n" Character to every reader of it.
    private static func show(_ prefix: String, _ line: String) -> String {
        var text = line
        let missingNewline = text.hasSuffix(noNewline)
        if missingNewline { text = String(text.unicodeScalars.dropLast().map(Character.init)) }
        if text.unicodeScalars.last == "\r" { text = String(String.UnicodeScalarView(text.unicodeScalars.dropLast())) }
        return prefix + text + (missingNewline ? "\n\\ No newline at end of file\n" : "\n")
    }
}

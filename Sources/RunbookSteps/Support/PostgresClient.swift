import RunbookCore

/// Where the PostgreSQL client programs (psql, pg_dump, pg_restore) of a `pg_*` step run,
/// how they reach the server, and how the password gets to them: the one place that builds
/// their command lines.
///
/// The password never appears on a command line. It travels as a secret binding (the
/// transport delivers `RUNBOOK_SECRET_<NAME>` through the remote shell's stdin, not its
/// arguments), and the command starts with
/// `PGPASSWORD="${RUNBOOK_SECRET_<NAME>}" …; export PGPASSWORD …`. Inside a container,
/// `docker exec -e PGPASSWORD` / `docker compose exec -e PGPASSWORD` pass the variable by
/// name, its value again taken from the environment.
struct PostgresClient: Sendable {
    /// Where the client programs run.
    enum Via: Sendable, Equatable {
        /// On the host itself.
        case direct
        /// In a compose service (`docker compose exec -T`, or `docker-compose` v1).
        case compose(file: String?, service: String)
        /// In a container (`docker exec -i`).
        case docker(container: String)
    }

    /// The password, delivered as a secret binding.
    struct Password: Sendable {
        /// The binding's name: the secret's name when the argument was `{{ secrets.NAME }}`.
        let name: String
        /// The password itself; never printed.
        let value: String
        /// True when `name` is a secret the controller defines, so a rollback can supply it again.
        let isNamedSecret: Bool
    }

    /// `psql -d`.
    var database: String?
    /// `psql -U`.
    var user: String?
    /// `psql -h`: a server address or a socket directory.
    var host: String?
    /// `psql -p`.
    var port: Int?
    /// The password, if any.
    var password: Password?
    /// Where the programs run.
    var via: Via

    /// The binding name used when the password is not a single `{{ secrets.NAME }}`.
    static let fallbackBindingName = "PG_PASSWORD"
    /// The function that runs docker compose v2, or v1 when v2 is absent.
    static let composeFunction = "runbook_compose"

    /// Reads the connection arguments every `pg_*` kind shares (SPEC §5).
    init(_ arguments: RenderedArguments) throws(StepFailure) {
        database = arguments.string("database")
        user = arguments.string("user")
        host = arguments.string("host")
        port = try arguments.int("port")
        password = try Self.password(arguments)
        switch arguments.string("via") ?? "direct" {
        case "direct":
            via = .direct
        case "compose":
            guard let service = arguments.string("service") else { throw StepFailure("via: compose needs service") }
            via = .compose(file: arguments.string("compose_file"), service: service)
        case "docker":
            guard let container = arguments.string("container") else { throw StepFailure("via: docker needs container") }
            via = .docker(container: container)
        case let other:
            throw StepFailure("via must be direct, compose or docker, got \(other)")
        }
    }

    /// The password argument as a binding. When it is exactly one `{{ secrets.NAME }}`, the
    /// binding carries the secret's own name (a rollback looks secrets up by name).
    static func password(_ arguments: RenderedArguments) throws(StepFailure) -> Password? {
        // Should the engine render `password` with secrets as references (like `run`), the
        // secret's name comes with it.
        if let command = arguments.commands["password"] {
            let bindings = command.parts.compactMap { part -> (String, String)? in
                if case .binding(let name, let value) = part { return (name, value) }
                return nil
            }
            if bindings.isEmpty {
                return command.commandLine.isEmpty ? nil
                    : Password(name: fallbackBindingName, value: command.commandLine, isNamedSecret: false)
            }
            guard bindings.count == 1, command.commandLine == "${\(Shell.secretVariable(bindings[0].0))}" else {
                throw StepFailure("password must be one {{ secrets.NAME }} (or plain text), not text around a secret")
            }
            return Password(name: bindings[0].0, value: bindings[0].1, isNamedSecret: true)
        }
        guard let value = arguments.strings["password"], !value.isEmpty else { return nil }
        if case .string(let written) = arguments.raw["password"], let name = singleSecretReference(written) {
            return Password(name: name, value: value, isNamedSecret: true)
        }
        return Password(name: fallbackBindingName, value: value, isNamedSecret: false)
    }

    /// `NAME` when `text` is exactly `{{ secrets.NAME }}`, or the optional form
    /// `{{ secrets.NAME | default('') }}` (also `default("")`, `default:''`, `default:""`),
    /// spaces allowed; else nil. The optional form renders empty when the secret is not
    /// defined, and then there is no password at all; when it is defined, the binding
    /// carries the secret's name as for the plain form.
    static func singleSecretReference(_ text: String) -> String? {
        var s = Substring(PostgresSQL.trim(text))
        guard s.hasPrefix("{{"), s.hasSuffix("}}") else { return nil }
        s = s.dropFirst(2).dropLast(2)
        var inner = PostgresSQL.trim(String(s))
        if let bar = inner.firstIndex(of: "|") {
            let filter = inner[inner.index(after: bar)...].filter { !$0.isWhitespace }
            guard ["default('')", "default(\"\")", "default:''", "default:\"\""].contains(filter) else { return nil }
            inner = PostgresSQL.trim(inner[..<bar])
        }
        guard inner.hasPrefix("secrets.") else { return nil }
        let name = inner.dropFirst("secrets.".count)
        guard let first = name.first, first.isLetter || first == "_",
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else { return nil }
        return String(name)
    }

    // MARK: Command lines

    /// What every command starts with: the password and client settings exported for the
    /// client programs (and, for compose, the function choosing docker compose v2 or v1).
    var prelude: ShellCommand {
        var parts: [ShellCommand.Part] = []
        var exported = ["PGAPPNAME", "PGCONNECT_TIMEOUT"]
        var assignments = "PGAPPNAME=runbook PGCONNECT_TIMEOUT=10"
        if let password {
            assignments = "PGPASSWORD=\"${\(Shell.secretVariable(password.name))}\" " + assignments
            exported.insert("PGPASSWORD", at: 0)
            parts.append(.binding(name: password.name, value: password.value))
        }
        parts.insert(.literal(assignments + "; export " + exported.joined(separator: " ") + "\n"), at: 0)
        if case .compose = via {
            parts.append(.literal("""
                \(Self.composeFunction)() { if \(ComposeCommand.v2Probe.commandLine); then docker compose "$@"; \
                elif command -v docker-compose >/dev/null 2>&1; then docker-compose "$@"; \
                else echo "neither docker compose nor docker-compose is installed" >&2; return 127; fi; }

                """))
        }
        return ShellCommand(parts: parts)
    }

    /// `program` with the connection options (`connect: false` for `pg_restore --list`,
    /// which reads a file and must not restore anywhere), run where `via` says. Its stdin
    /// is passed through, so it can read a heredoc or a redirected file in a container too.
    func program(_ program: String, connect: Bool = true) -> ShellCommand {
        var words = [program]
        if connect {
            if let host { words += ["-h", host] }
            if let port { words += ["-p", String(port)] }
            if let user { words += ["-U", user] }
            if let database { words += ["-d", database] }
            words.append("-w")
        }
        let environment = (password == nil ? [] : ["PGPASSWORD"]) + ["PGAPPNAME", "PGCONNECT_TIMEOUT"]
        let passEnvironment = environment.flatMap { ["-e", $0] }
        switch via {
        case .direct:
            return ShellCommand(argv: words)
        case .docker(let container):
            return ShellCommand(argv: ["docker", "exec", "-i"] + passEnvironment + [container] + words)
        case .compose(let file, let service):
            let fileWords = file.map { ["-f", $0] } ?? []
            return ShellCommand(Self.composeFunction + " ") + ShellCommand(argv: fileWords + ["exec", "-T"] + passEnvironment + [service] + words)
        }
    }

    /// psql running `sql` from its stdin (so statements run one by one, outside a
    /// transaction block, and stop at the first error). `tuples`: unaligned rows, fields
    /// separated by `|`, nothing else (for reading facts).
    ///
    /// The SQL is normally a heredoc in the command, shown as is in the plan. With
    /// `hidden` (SQL that contains secrets) it travels like a secret instead: in the
    /// environment variable `RUNBOOK_SECRET_PG_SQL`, printed into psql by the shell's
    /// builtin printf, so it is never on any command line on the host. Such a command
    /// cannot be journaled as an undo (rollback could not supply the SQL again).
    func psql(_ sql: String, tuples: Bool = false, hidden: Bool = false) -> ShellCommand {
        var options = ["-X", "-v", "ON_ERROR_STOP=1"]
        if tuples { options += ["-q", "-A", "-t", "-F", "|"] }
        options += ["-f", "-"]
        let psql = program("psql") + " " + ShellCommand(argv: options)
        guard hidden else { return psql + Self.heredoc(sql) }
        let feed = ShellCommand(parts: [
            .literal("printf '%s\\n' \"${\(Shell.secretVariable(Self.sqlBindingName))}\" | "),
            .binding(name: Self.sqlBindingName, value: sql),
        ])
        return feed + psql
    }

    /// The binding that carries hidden SQL.
    static let sqlBindingName = "PG_SQL"

    /// A whole command: the prelude, then `body`.
    func command(_ body: ShellCommand) -> ShellCommand {
        prelude + body
    }

    /// ` <<'DELIM'` + text + `DELIM` (no newline after it): the text reaches stdin verbatim, unexpanded.
    static func heredoc(_ text: String) -> ShellCommand {
        let lines = Set(text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init))
        var delimiter = "RUNBOOK_SQL"
        var n = 0
        while lines.contains(delimiter) {
            n += 1
            delimiter = "RUNBOOK_SQL_\(n)"
        }
        let body = text.hasSuffix("\n") ? text : text + "\n"
        return ShellCommand(" <<'\(delimiter)'\n" + body + delimiter)
    }

    /// Where the server is, for plan summaries: `appdb on 127.0.0.1:5432 as app (compose service db)`.
    var label: String {
        var text = database ?? "the default database"
        if host != nil || port != nil { text += " on \(host ?? "localhost")\(port.map { ":\($0)" } ?? "")" }
        if let user { text += " as \(user)" }
        switch via {
        case .direct: break
        case .compose(_, let service): text += " (compose service \(service))"
        case .docker(let container): text += " (container \(container))"
        }
        return text
    }
}

/// SQL text helpers for the `pg_*` kinds.
enum PostgresSQL {
    /// `text` without leading and trailing whitespace.
    static func trim<S: StringProtocol>(_ text: S) -> String {
        var scalars = Substring(text)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }

    /// `text` as a SQL string literal (standard_conforming_strings, on by default since 9.1).
    static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// `name` as a SQL identifier: double-quoted, a double quote inside doubled. PostgreSQL
    /// reads it as that exact name, never as a keyword, an operator or the end of a statement.
    static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes); a longer one is cut
    /// short, so a name looked up in full would never be found.
    static let maximumIdentifierBytes = 63

    /// The names a runbook's `schema.table` (or any name) stands for, as PostgreSQL would look
    /// them up, split at each dot outside double quotes, at most `maxParts` of them:
    /// - a double-quoted part is that exact name (`""` stands for one quote): `"Order Items"`;
    /// - a plain identifier (ASCII letters, digits, `_`, `$`, not starting with a digit) is
    ///   folded to lower case, as PostgreSQL folds a name written without quotes: `Product`
    ///   is `product`;
    /// - any other text is one name, exactly as written (`product; DROP TABLE x` names a
    ///   table of that name): it is quoted as an identifier wherever it goes, never SQL.
    /// `field` names the argument in errors. An empty part, a double quote inside an unquoted
    /// part, a backslash or control character, or a name longer than PostgreSQL keeps is refused.
    static func names(_ written: String, field: String, maxParts: Int) throws(StepFailure) -> [String] {
        let text = Array(trim(written))
        guard !text.isEmpty else { throw StepFailure("\(field): the name is empty") }
        var parts: [String] = []
        var index = 0
        while true {
            while index < text.count, text[index].isWhitespace { index += 1 }
            var part = ""
            if index < text.count, text[index] == "\"" {
                index += 1
                var closed = false
                while index < text.count {
                    let c = text[index]
                    index += 1
                    if c == "\"" {
                        if index < text.count, text[index] == "\"" {
                            part.append("\"")
                            index += 1
                            continue
                        }
                        closed = true
                        break
                    }
                    part.append(c)
                }
                guard closed else { throw StepFailure("\(field): \(written.debugDescription) has a double quote that is never closed") }
                while index < text.count, text[index].isWhitespace { index += 1 }
                guard index == text.count || text[index] == "." else {
                    throw StepFailure("\(field): \(written.debugDescription): text after a quoted name must be a dot and the next name")
                }
            } else {
                var raw = ""
                while index < text.count, text[index] != "." {
                    guard text[index] != "\"" else {
                        throw StepFailure("\(field): \(written.debugDescription) has a double quote inside a name; "
                                          + "quote the whole name, doubling the quotes in it: \"a\"\"b\"")
                    }
                    raw.append(text[index])
                    index += 1
                }
                part = trim(raw)
                if let first = part.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic || first == "_",
                   part.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "$") }) {
                    part = part.lowercased()
                }
            }
            guard !part.isEmpty else { throw StepFailure("\(field): \(written.debugDescription) has an empty name") }
            // Names also stand in SQL string literals and psql reads the script line by line:
            // a backslash or a line break has no business in a name.
            guard !part.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "\\" }) else {
                throw StepFailure("\(field): \(part.debugDescription) contains a backslash or a control character")
            }
            guard part.utf8.count <= maximumIdentifierBytes else {
                throw StepFailure("\(field): \(part.debugDescription) is longer than \(maximumIdentifierBytes) bytes, "
                                  + "which PostgreSQL would cut short")
            }
            parts.append(part)
            guard index < text.count else { break }
            index += 1  // the dot
            guard parts.count < maxParts else {
                throw StepFailure(maxParts == 1
                    ? "\(field): \(written.debugDescription) is not one name (a dot separates names; quote a name that has one: \"a.b\")"
                    : "\(field): \(written.debugDescription) has more than \(maxParts) dotted names; write name or schema.name")
            }
        }
        return parts
    }

    /// `text` split at each comma outside double quotes, each item trimmed, empty ones dropped:
    /// `a, "b, c"` is `a` and `"b, c"`.
    static func commaSeparated(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var quoted = false
        for c in text {
            if c == "\"" { quoted.toggle() }
            if c == ",", !quoted {
                items.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items.map { trim($0) }.filter { !$0.isEmpty }
    }

    /// `ARRAY['a', 'b']::text[]`.
    static func textArray(_ items: [String]) -> String {
        "ARRAY[" + items.map(literal).joined(separator: ", ") + "]::text[]"
    }

    /// Whether `name` is a table name safe to put in SQL as is: `name`, `schema.name`, each
    /// part a plain identifier or a double-quoted one (`"Order Items"`).
    static func isTableName(_ name: String) -> Bool {
        var rest = Substring(name)
        var parts = 0
        while true {
            guard let first = rest.first else { return false }
            if first == "\"" {
                rest = rest.dropFirst()
                var closed = false
                var length = 0
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if c == "\"" {
                        if rest.first == "\"" {
                            rest = rest.dropFirst()
                            length += 1
                            continue
                        }
                        closed = true
                        break
                    }
                    if c == "\0" { return false }
                    length += 1
                }
                guard closed, length > 0 else { return false }
            } else {
                guard first.isASCII, first.isLetter || first == "_" else { return false }
                while let c = rest.first, c.isASCII, c.isLetter || c.isNumber || c == "_" || c == "$" {
                    rest = rest.dropFirst()
                }
            }
            parts += 1
            if rest.isEmpty { return parts <= 2 }
            guard rest.first == ".", parts < 2 else { return false }
            rest = rest.dropFirst()
        }
    }

    /// `text` on one line, cut to about `limit` characters at a word or quote boundary, so a
    /// secret cut in half is left out rather than shown in part (whole secrets are masked
    /// by the engine).
    static func cut(_ text: String, limit: Int = 80) -> String {
        let line = text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
        guard line.count > limit else { return line }
        let prefix = line.prefix(limit)
        let boundaries: Set<Character> = [" ", ",", ";", "(", ")", "'", "\"", "="]
        guard let index = prefix.lastIndex(where: { boundaries.contains($0) }) else { return "…" }
        return PostgresSQL.trim(String(prefix[...index])) + " …"
    }

    /// Rows of `psql -A -t -F '|'` output with `columns` fields each (the last field may contain `|`).
    static func rows(_ output: String, columns: Int) -> [[String]] {
        output.split(separator: "\n").compactMap { line -> [String]? in
            let fields = line.split(separator: "|", maxSplits: columns - 1, omittingEmptySubsequences: false).map(String.init)
            return fields.count == columns ? fields : nil
        }
    }
}

import Foundation
import RunbookCore

// MARK: - pg_index

/// `pg_index`: an index built with `CREATE [UNIQUE] INDEX CONCURRENTLY`, so the table keeps
/// taking writes while it builds (SPEC §5).
///
/// One read-only query at plan time reads the facts: the table (it must exist, be a table or
/// a materialized view, and have the columns), and whatever bears the index's name in the
/// table's schema:
/// - a valid index on that table: a no-op ("index X exists and is valid"), with nothing to
///   undo, so a rollback never drops an index the run did not create. Its definition is
///   shown; when its columns, uniqueness or the presence of a WHERE differ from the step's,
///   the plan says so (it is not rebuilt: drop it first to change it);
/// - an invalid index (what a failed `CONCURRENTLY` build leaves behind): dropped with
///   `DROP INDEX CONCURRENTLY IF EXISTS`, then built again;
/// - nothing: built;
/// - anything else (an index of another table, a table of that name): refused.
/// The state read is fingerprinted, so a saved plan is refused once it changed.
///
/// The build also marks the index as this step's (`COMMENT ON INDEX … IS 'created by
/// runbook: STEP'`), and the undo — `DROP INDEX CONCURRENTLY IF EXISTS` — drops it only while
/// it still carries that mark or is invalid (this step's failed build). So an index someone
/// else created under that name meanwhile (say, between the plan and the build, making the
/// build fail) is left in place, as is one that replaced this run's since.
///
/// Names are data: `name`, `table` (optionally `schema.table`) and each column are quoted as
/// identifiers (see `PostgresSQL.names`); `columns` are column names, never expressions (an
/// expression index is `pg_sql`'s). `where` is SQL the runbook author writes and goes in as
/// written, inside parentheses on lines of its own; it may not hold a `;` (a second
/// statement), a backslash (a psql meta-command) or a secret (SQL is on the remote command
/// line). Both statements run from psql's stdin, one by one outside any transaction block,
/// as `CONCURRENTLY` requires. The undo uses psql's `\if` (psql 10 or later).
package struct PostgresIndexStep: StepKind {
    package static let schema = StepKindSchema(
        name: "pg_index", summary: "create an index CONCURRENTLY (drop and rebuild an invalid one)",
        arguments: pgConnection + [
            ArgumentSpec("name", .string, required: true, "index name; it is created in its table's schema"),
            ArgumentSpec("table", .string, "table: name, schema.name, or \"Quoted Name\""),
            ArgumentSpec("columns", .stringOrList, "column names: a list, or one string \"a, b\" (no expressions)"),
            ArgumentSpec("on", .string, "table and columns in one, as CREATE INDEX writes them: product(tenant_id, active) (instead of table and columns)"),
            ArgumentSpec("where", .string, "partial index condition, SQL as written (no ; and no backslash)"),
            ArgumentSpec("unique", .bool, default: false, "a unique index"),
        ],
        requirements: pgRequirements)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    package static func defaultName(_ arguments: [String: Value]) -> String {
        let target = arguments["on"] ?? arguments["table"]
        return ["pg_index", arguments["name"]?.description, target.map { "on \($0.description)" }].compactMap { $0 }.joined(separator: " ")
    }
    package init() {}

    /// What the plan found under the index's name.
    enum State: Equatable {
        /// Nothing of that name in the table's schema.
        case absent
        /// An index of that table, usable.
        case valid
        /// An index of that table that a failed concurrent build left unusable.
        case invalid
    }

    /// The step's index, read from its arguments.
    struct Definition: Equatable {
        /// The index name.
        var name: String
        /// `[table]` or `[schema, table]`, as PostgreSQL names them.
        var table: [String]
        /// The column names, in index order.
        var columns: [String]
        /// The `where` condition, as the author wrote it.
        var predicate: String?
        /// `CREATE UNIQUE INDEX`.
        var unique: Bool
    }

    package func plan(step: Step, host: RunbookCore.Host, arguments rendered: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let client = try PostgresClient(rendered)
        if let password = client.password, !password.isNamedSecret {
            throw StepFailure("give password as {{ secrets.NAME }}: the undo runs on rollback, which looks the password up by that name")
        }
        let definition = try Self.definition(rendered, written: step.arguments)
        let fact = try await Self.readFacts(definition, client: client, step: step, host: host.name, facts: facts)
        // Qualified with the schema the table was found in, so the drop reaches this index
        // whatever the search_path.
        let index = PostgresSQL.identifier(fact.schema) + "." + PostgresSQL.identifier(definition.name)
        let shownTable = definition.table.joined(separator: ".")
        let marker = Self.marker(step)

        var change = PlannedChange.make(step: step, host: host.name, action: .noop, reversible: true, summary: "")
        change.fingerprints = [FactFingerprint(
            fact: "pg_index:\(client.label):\(fact.schema).\(definition.name)",
            digest: fact.state == .absent ? "absent" : "\(fact.state == .valid ? "valid" : "invalid") \(fact.definitionDigest)")]
        var lines: [String] = []
        if let existing = fact.existingDefinition { lines.append("existing: " + existing) }
        switch fact.state {
        case .valid:
            change.summary = "index \(definition.name) exists and is valid"
            if !fact.differences.isEmpty {
                change.summary += " (it differs from this step in its \(fact.differences.joined(separator: ", ")); drop it to change it)"
            }
            change.reason = change.summary
            change.diff = listing(lines)
            return HostStepPlan(change: change, operation: .nothing, deferredUntilApply: false)
        case .invalid:
            change.action = .update
            change.summary = "index \(definition.name) is invalid (a failed concurrent build): drop it and build it again on \(client.label)"
        case .absent:
            change.action = .create
            change.summary = "create \(definition.unique ? "unique " : "")index \(definition.name) on \(shownTable) (\(definition.columns.joined(separator: ", ")))"
                + (definition.predicate.map { " WHERE " + PostgresSQL.cut($0, limit: 60) } ?? "")
                + ", concurrently, on \(client.label)"
        }
        let create = Self.createSQL(definition)
        change.diff = listing(lines)
        var sql = ""
        if fact.state == .invalid { sql += Self.dropSQL(index) + "\n" }
        sql += create + "\n" + "COMMENT ON INDEX \(index) IS \(PostgresSQL.literal(marker));"
        let run = client.command(client.psql(sql))
        let undo = client.command(client.psql(Self.undoSQL(index, marker: marker)))
        return HostStepPlan(change: change, operation: .run(run, undo: undo), deferredUntilApply: false)
    }

    // MARK: Arguments

    /// The index the step asks for; a bad argument is a `StepFailure` naming it.
    static func definition(_ arguments: RenderedArguments, written: Value) throws(StepFailure) -> Definition {
        // Anything here ends up in SQL on the remote command line, where a secret must not go.
        for key in ["name", "table", "columns", "on", "where"] where written[key].map(Self.mentionsSecrets) == true {
            throw StepFailure("\(key) cannot use secrets: it is SQL on the remote command line")
        }
        guard let nameText = arguments.string("name") else { throw StepFailure("pg_index needs name (the index name)") }
        let name = try PostgresSQL.names(nameText, field: "name", maxParts: 1)[0]

        var tableText = arguments.string("table")
        var columnTexts = try arguments.list("columns").flatMap(PostgresSQL.commaSeparated)
        if let on = arguments.string("on") {
            guard tableText == nil, columnTexts.isEmpty else {
                throw StepFailure("give either on (table(columns)) or table and columns, not both")
            }
            (tableText, columnTexts) = try Self.splitOn(on)
        }
        guard let tableText else { throw StepFailure("pg_index needs table (or on: table(columns))") }
        if Self.hasUnquoted("(", in: tableText) {
            throw StepFailure("table: \(tableText.debugDescription) is not a table name; "
                              + "to give the table and its columns in one, write on: table(columns)")
        }
        let table = try PostgresSQL.names(tableText, field: "table", maxParts: 2)
        guard !columnTexts.isEmpty else { throw StepFailure("pg_index needs columns (column names: a list, or \"a, b\")") }
        var columns: [String] = []
        for text in columnTexts {
            if Self.hasUnquoted("(", in: text) || Self.hasUnquoted(")", in: text) {
                throw StepFailure("columns: \(text.debugDescription) is an expression; pg_index takes column names only "
                                  + "(an expression index needs pg_sql)")
            }
            let column = try PostgresSQL.names(text, field: "columns", maxParts: 1)[0]
            guard !columns.contains(column) else { throw StepFailure("columns: \(column.debugDescription) is listed twice") }
            columns.append(column)
        }
        let predicate = try arguments.string("where").map { (text) throws(StepFailure) -> String in
            let condition = PostgresSQL.trim(text)
            if condition.contains(";") {
                throw StepFailure("where: \(PostgresSQL.cut(condition).debugDescription) contains ';'; a condition is one "
                                  + "expression and cannot end the statement")
            }
            if condition.contains("\\") {
                throw StepFailure("where: \(PostgresSQL.cut(condition).debugDescription) contains a backslash, which psql "
                                  + "would read as a meta-command")
            }
            return condition
        }
        return Definition(name: name, table: table, columns: columns, predicate: predicate,
                          unique: try arguments.bool("unique", default: false))
    }

    /// `on: product(tenant_id, active)` as the table text and the column texts.
    static func splitOn(_ text: String) throws(StepFailure) -> (String, [String]) {
        let trimmed = PostgresSQL.trim(text)
        var quoted = false
        var open: String.Index? = nil
        for index in trimmed.indices {
            if trimmed[index] == "\"" { quoted.toggle() }
            if trimmed[index] == "(", !quoted {
                open = index
                break
            }
        }
        guard let open, trimmed.hasSuffix(")") else {
            throw StepFailure("on: \(trimmed.debugDescription) is not table(columns), e.g. product(tenant_id, active)")
        }
        let table = String(trimmed[..<open])
        let inside = String(trimmed[trimmed.index(after: open)..<trimmed.index(before: trimmed.endIndex)])
        return (table, PostgresSQL.commaSeparated(inside))
    }

    /// Whether `character` occurs in `text` outside double quotes.
    static func hasUnquoted(_ character: Character, in text: String) -> Bool {
        var quoted = false
        for c in text {
            if c == "\"" { quoted.toggle() }
            if c == character, !quoted { return true }
        }
        return false
    }

    /// Whether a written argument refers to secrets (`{{ secrets.X }}`).
    static func mentionsSecrets(_ value: Value) -> Bool {
        switch value {
        case .string(let text): return text.contains("secrets.")
        case .list(let items): return items.contains(where: mentionsSecrets)
        default: return false
        }
    }

    // MARK: SQL

    /// The comment that marks an index as built by `step`: `created by runbook: STEP NAME`
    /// (control characters and backslashes left out of the name).
    static func marker(_ step: Step) -> String {
        "created by runbook: " + String(step.name.unicodeScalars.filter { $0.value >= 0x20 && $0 != "\\" && $0.value != 0x7f }.map(Character.init))
    }

    /// `CREATE [UNIQUE] INDEX CONCURRENTLY "name" ON "schema"."table" ("a", "b") [WHERE (…)];`.
    /// The condition stands on lines of its own, so a `--` comment at its end cannot hide
    /// the parenthesis and the semicolon.
    static func createSQL(_ definition: Definition) -> String {
        var sql = "CREATE \(definition.unique ? "UNIQUE " : "")INDEX CONCURRENTLY \(PostgresSQL.identifier(definition.name)) ON "
            + definition.table.map(PostgresSQL.identifier).joined(separator: ".")
            + " (" + definition.columns.map(PostgresSQL.identifier).joined(separator: ", ") + ")"
        if let predicate = definition.predicate { sql += " WHERE (\n" + predicate + "\n)" }
        return sql + ";"
    }

    /// `DROP INDEX CONCURRENTLY IF EXISTS index;`.
    static func dropSQL(_ index: String) -> String {
        "DROP INDEX CONCURRENTLY IF EXISTS \(index);"
    }

    /// The undo: drops the index only while it carries this step's mark, or is invalid (this
    /// step's build failed half-way). psql decides (`\gset`, `\if`), so the drop itself stays
    /// one statement outside a transaction block, as `CONCURRENTLY` requires.
    static func undoSQL(_ index: String, marker: String) -> String {
        """
        SELECT EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass(\(PostgresSQL.literal(index)))
                          AND (NOT indisvalid OR obj_description(indexrelid, 'pg_class') = \(PostgresSQL.literal(marker))))
               AS runbook_drop \\gset
        \\if :runbook_drop
        \(dropSQL(index))
        \\else
        \\echo 'not dropped: the index is gone, or this step did not build it'
        \\endif
        """
    }

    // MARK: Facts

    /// The facts the plan reads.
    struct Facts {
        /// The schema the table is in (the index goes there too).
        var schema: String
        var state: State
        /// `pg_get_indexdef` of the index there, if any.
        var existingDefinition: String?
        /// MD5 of that definition, for the fingerprint.
        var definitionDigest: String
        /// How a valid index differs from the step's: `columns`, `uniqueness`, `WHERE`.
        var differences: [String]
    }

    /// Reads the table and the index's name in one read-only query; refuses what cannot be
    /// built (no such table or columns, a partitioned table, the name taken by something else).
    static func readFacts(_ definition: Definition, client: PostgresClient, step: Step, host: String,
                          facts: FactReader) async throws -> Facts {
        let table = definition.table.map(PostgresSQL.identifier).joined(separator: ".")
        let shownTable = definition.table.joined(separator: ".")
        // Names come back hex-encoded: whatever they hold, they cannot break psql's rows.
        let rows = try await postgresRows(client, """
            SELECT coalesce(t.relkind::text, ''),
                   coalesce(encode(convert_to(n.nspname, 'UTF8'), 'hex'), ''),
                   coalesce((SELECT string_agg(c.n::text, ',' ORDER BY c.n)
                               FROM unnest(\(PostgresSQL.textArray(definition.columns))) WITH ORDINALITY AS c(name, n)
                              WHERE NOT EXISTS (SELECT FROM pg_attribute a
                                                 WHERE a.attrelid = t.oid AND a.attname = c.name
                                                   AND a.attnum > 0 AND NOT a.attisdropped)), ''),
                   CASE WHEN t.oid IS NULL OR i.oid IS NULL THEN 'absent'
                        WHEN x.indexrelid IS NULL THEN 'taken:' || i.relkind::text
                        WHEN x.indrelid <> t.oid THEN 'elsewhere'
                        WHEN x.indisvalid THEN 'valid'
                        ELSE 'invalid' END,
                   CASE WHEN x.indrelid = t.oid THEN
                        concat_ws(',',
                            CASE WHEN ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnatts) AS k ORDER BY k)
                                      <> ARRAY(SELECT quote_ident(c.name) FROM unnest(\(PostgresSQL.textArray(definition.columns)))
                                                      WITH ORDINALITY AS c(name, n) ORDER BY c.n)
                                 THEN 'columns' END,
                            CASE WHEN x.indisunique <> \(definition.unique) THEN 'uniqueness' END,
                            CASE WHEN (x.indpred IS NOT NULL) <> \(definition.predicate != nil) THEN 'WHERE' END)
                        ELSE '' END,
                   coalesce(md5(pg_get_indexdef(x.indexrelid)), ''),
                   coalesce(CASE WHEN x.indrelid IS NOT NULL THEN pg_get_indexdef(x.indexrelid) END, '')
              FROM (SELECT to_regclass(\(PostgresSQL.literal(table))) AS oid) AS r
              LEFT JOIN pg_class t ON t.oid = r.oid
              LEFT JOIN pg_namespace n ON n.oid = t.relnamespace
              LEFT JOIN pg_class i ON i.relnamespace = t.relnamespace AND i.relname = \(PostgresSQL.literal(definition.name))
              LEFT JOIN pg_index x ON x.indexrelid = i.oid;
            """, columns: 7, step: step, host: host, facts: facts)
        guard let row = rows.first else { throw StepFailure.onHost("unexpected answer from PostgreSQL on \(host)") }
        let database = client.database ?? "the database"
        switch row[0] {
        case "":
            throw StepFailure.onHost("no table \(shownTable) in \(database) on \(host)")
        case "r", "m":
            break
        case "p":
            throw StepFailure.onHost("\(shownTable) is a partitioned table: CREATE INDEX CONCURRENTLY cannot build an index on it "
                              + "(build one on each partition, or use pg_sql)")
        default:
            throw StepFailure.onHost("\(shownTable) is not a table (relkind \(row[0])) in \(database) on \(host)")
        }
        guard let schema = hexDecoded(row[1]) else { throw StepFailure.onHost("unexpected answer from PostgreSQL on \(host)") }
        guard !schema.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "\\" }) else {
            throw StepFailure("the schema of \(shownTable), \(schema.debugDescription), contains a backslash or a control character")
        }
        let missing = row[2].split(separator: ",").compactMap { Int($0) }.filter { (1...definition.columns.count).contains($0) }
        if !missing.isEmpty {
            let names = missing.map { definition.columns[$0 - 1].debugDescription }.joined(separator: ", ")
            throw StepFailure.onHost("columns: \(shownTable) has no column \(names) in \(database) on \(host)")
        }
        let state: State
        switch row[3] {
        case "absent": state = .absent
        case "valid": state = .valid
        case "invalid": state = .invalid
        case "elsewhere":
            throw StepFailure("name: an index \(definition.name) already exists on another table in schema \(schema) "
                              + "(\(row[6])); choose another name")
        default:
            throw StepFailure("name: \(definition.name) is already the name of something other than an index in schema \(schema) "
                              + "(relkind \(row[3].dropFirst("taken:".count))); choose another name")
        }
        return Facts(schema: schema, state: state, existingDefinition: row[6].isEmpty ? nil : row[6], definitionDigest: row[5],
                     differences: row[4].split(separator: ",").map(String.init))
    }

    /// Bytes from lower-case hex, as UTF-8 text; nil when it is not.
    static func hexDecoded(_ hex: String) -> String? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

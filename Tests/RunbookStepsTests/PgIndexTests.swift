import Foundation
import RunbookCore
import Testing
import TestSupport

@testable import RunbookSteps

/// `pg_index`'s arguments: names become identifiers as PostgreSQL would look them up, and
/// what cannot be an index definition is refused with an error naming the argument. The
/// plans themselves are rows of `stepCases`; the real server is in CLITests.
@Suite struct PgIndexTests {
    /// The definition read from arguments as the engine renders them.
    func definition(_ arguments: [String: Value]) throws -> PostgresIndexStep.Definition {
        var rendered = RenderedArguments(raw: arguments)
        for (key, value) in arguments { if case .string(let text) = value { rendered.strings[key] = text } }
        return try PostgresIndexStep.definition(rendered, written: .map(arguments))
    }

    /// The error text for `arguments`, or nil when they are accepted.
    func refusal(_ arguments: [String: Value]) -> String? {
        do {
            _ = try definition(arguments)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func namesFoldLikePostgreSQLAndQuotedOnesStayExact() throws {
        #expect(try PostgresSQL.names("Product", field: "table", maxParts: 2) == ["product"])
        #expect(try PostgresSQL.names("Public.Product", field: "table", maxParts: 2) == ["public", "product"])
        #expect(try PostgresSQL.names(#""Order Items""#, field: "table", maxParts: 2) == ["Order Items"])
        #expect(try PostgresSQL.names(#"sales."Order ""Items"".v2""#, field: "table", maxParts: 2) == ["sales", #"Order "Items".v2"#])
        #expect(try PostgresSQL.names("product; DROP TABLE x", field: "table", maxParts: 2) == ["product; DROP TABLE x"])
        #expect(PostgresSQL.identifier(#"a"b"#) == #""a""b""#)
        #expect(PostgresSQL.commaSeparated(#"a, "b, c" ,, d"#) == ["a", #""b, c""#, "d"])
    }

    @Test func definitionFromTableAndColumnsOrFromOn() throws {
        let split = try definition(["name": "idx", "table": "public.product", "columns": "tenant_id, Active"])
        #expect(split == .init(name: "idx", table: ["public", "product"], columns: ["tenant_id", "active"], predicate: nil, unique: false))
        let listed = try definition(["name": "idx", "table": "product", "columns": .list(["tenant_id", #""Active""#]), "unique": true])
        #expect(listed.columns == ["tenant_id", "Active"] && listed.unique)
        let on = try definition(["name": "idx", "on": "product(tenant_id, active)", "where": "active = true"])
        #expect(on == .init(name: "idx", table: ["product"], columns: ["tenant_id", "active"], predicate: "active = true", unique: false))
        #expect(PostgresIndexStep.createSQL(on) == "CREATE INDEX CONCURRENTLY \"idx\" ON \"product\" (\"tenant_id\", \"active\") WHERE (\nactive = true\n);")
    }

    @Test(arguments: [
        (["name": "idx", "table": "product", "columns": "id", "where": "true; DROP TABLE x"], "where: "),
        (["name": "idx", "table": "product", "columns": "id", "where": #"true \! sh"#], "backslash"),
        (["name": "idx", "table": "product", "columns": "lower(email)"], "columns: \"lower(email)\" is an expression"),
        (["name": "idx", "table": "product(id)"], "write on: table(columns)"),
        (["name": "idx", "on": "product", "columns": "id"], "not both"),
        (["name": "idx", "on": "product id"], "on: \"product id\" is not table(columns)"),
        (["name": "public.idx", "table": "product", "columns": "id"], "name: \"public.idx\" is not one name"),
        (["name": "idx", "table": "a.b.c", "columns": "id"], "table: \"a.b.c\" has more than 2 dotted names"),
        (["name": "idx", "table": #"pro"duct"#, "columns": "id"], "table: "),
        (["name": "idx", "table": #""product"#, "columns": "id"], "never closed"),
        (["name": .string(String(repeating: "i", count: 64)), "table": "product", "columns": "id"], "longer than 63 bytes"),
        (["name": "idx", "table": "product", "columns": "id, id"], "listed twice"),
        (["name": "idx", "table": "product"], "needs columns"),
        (["name": "idx", "columns": "id"], "needs table"),
        (["table": "product", "columns": "id"], "needs name"),
        (["name": "idx", "table": "product", "columns": "id", "where": "token = '{{ secrets.t }}'"], "where cannot use secrets"),
        (["name": "idx", "table": "prod\\uct", "columns": "id"], "backslash"),
    ] as [([String: Value], String)])
    func refused(_ arguments: [String: Value], _ expected: String) {
        let message = refusal(arguments)
        #expect(message?.contains(expected) == true, "\(arguments): \(message ?? "accepted")")
    }

    /// The undo runs on rollback, which finds the password again only by a secret's name.
    @Test func plainTextPasswordIsRefused() async throws {
        let testCase = StepCase(name: "plain password", kind: "pg_index",
                                arguments: ["database": "app", "password": "hunter2", "name": "idx", "table": "product", "columns": "id"],
                                replies: [("pg_attribute", .init(stdout: "r|7075626c6963||absent|||\n"))], action: .create, undo: .restore)
        let transport = scripted(testCase)
        await #expect { _ = try await plan(testCase, transport: transport) } throws: { "\($0)".contains("give password as {{ secrets.NAME }}") }
        #expect(transport.ranLines.isEmpty)
    }

    @Test func optionalSecretPasswordKeepsItsName() throws {
        #expect(PostgresClient.singleSecretReference("{{ secrets.DB_PASSWORD }}") == "DB_PASSWORD")
        #expect(PostgresClient.singleSecretReference("{{ secrets.DB_PASSWORD | default('') }}") == "DB_PASSWORD")
        #expect(PostgresClient.singleSecretReference("{{secrets.DB_PASSWORD|default(\"\")}}") == "DB_PASSWORD")
        #expect(PostgresClient.singleSecretReference("{{ secrets.DB_PASSWORD | default:'' }}") == "DB_PASSWORD")
        // A fallback that is itself a password is not a named secret, nor is any other filter.
        #expect(PostgresClient.singleSecretReference("{{ secrets.DB_PASSWORD | default:'hunter2' }}") == nil)
        #expect(PostgresClient.singleSecretReference("{{ secrets.DB_PASSWORD | upper }}") == nil)

        var rendered = RenderedArguments(strings: ["password": "s3cret"], raw: ["password": "{{ secrets.DB_PASSWORD | default('') }}"])
        let password = try? PostgresClient.password(rendered)
        #expect(password?.name == "DB_PASSWORD" && password?.isNamedSecret == true && password?.value == "s3cret")
        // Rendered empty (the secret is not defined): no password at all.
        rendered.strings["password"] = ""
        #expect(try PostgresClient.password(rendered) == nil)
    }
}

import Foundation
import RunbookCore
@testable import RunbookSteps
import Testing

/// `nginx_upstream` edits one server line of an operator's nginx config; every other byte stays.
@Suite struct NginxUpstreamTests {
    /// Seed 002's load balancer, as an operator writes it: comments, a second upstream, a server block.
    static let seed = """
        # nginx.conf - Load Balancer Configuration

        upstream backend_servers {
            # Load balancing method
            least_conn;  # Route to server with fewest connections

            # Application servers
            server app1.example.com:8000 weight=3 max_fails=3 fail_timeout=30s;
            server app2.example.com:8000 weight=3 max_fails=3 fail_timeout=30s;
            server app3.example.com:8000 weight=2 max_fails=3 fail_timeout=30s;  # Smaller instance

            keepalive 32;
        }

        upstream static_files {
            server 127.0.0.1:9000;
        }

        server {
            listen 80;
            location / { proxy_pass http://backend_servers; }
        }

        """

    static func edit(_ text: String, upstream: String? = "backend_servers", server: String, state: String = "active",
                     weight: Int? = nil, params: String = "") throws -> String {
        String(decoding: try NginxUpstreamStep.edit(Array(text.utf8), upstream: upstream, server: server, state: state,
                                                    weight: weight, params: params), as: UTF8.self)
    }

    @Test func drainAndRestoreTouchOnlyTheLine() throws {
        let drained = try Self.edit(Self.seed, server: "app3.example.com:8000", state: "drained")
        #expect(drained == Self.seed.replacingOccurrences(
            of: "server app3.example.com:8000 weight=2 max_fails=3 fail_timeout=30s;  # Smaller instance",
            with: "server app3.example.com:8000 weight=2 max_fails=3 fail_timeout=30s down;  # Smaller instance"))
        #expect(try Self.edit(drained, server: "app3.example.com:8000", state: "drained") == drained)
        #expect(try Self.edit(drained, server: "app3.example.com:8000") == Self.seed)
    }

    @Test func weightIsReplacedOrAdded() throws {
        let weighted = try Self.edit(Self.seed, server: "app1.example.com:8000", weight: 10)
        #expect(weighted == Self.seed.replacingOccurrences(of: "server app1.example.com:8000 weight=3 ", with: "server app1.example.com:8000 weight=10 "))
        let plain = "upstream a {\n  server 10.0.0.1:80;\n}\n"
        #expect(try Self.edit(plain, upstream: nil, server: "10.0.0.1:80", weight: 90) == "upstream a {\n  server 10.0.0.1:80 weight=90;\n}\n")
    }

    @Test func presentAddsAfterTheLastServerAndAbsentRemoves() throws {
        let added = try Self.edit(Self.seed, server: "10.0.0.14:8000", state: "present", params: "max_fails=3 fail_timeout=30s")
        #expect(added == Self.seed.replacingOccurrences(
            of: "  # Smaller instance\n",
            with: "  # Smaller instance\n    server 10.0.0.14:8000 max_fails=3 fail_timeout=30s;\n"))
        #expect(try Self.edit(added, server: "10.0.0.14:8000", state: "present") == added)
        #expect(try Self.edit(added, server: "10.0.0.14:8000", state: "absent") == Self.seed)
        #expect(try Self.edit(Self.seed, server: "10.0.0.99:1", state: "absent") == Self.seed)
    }

    @Test func crlfStaysCrlf() throws {
        let crlf = "upstream web {\r\n    server app_web_1:5000;\r\n    server app_web_2:5000;\r\n}\r\n"
        #expect(try Self.edit(crlf, upstream: nil, server: "app_web_2:5000", state: "drained")
                == "upstream web {\r\n    server app_web_1:5000;\r\n    server app_web_2:5000 down;\r\n}\r\n")
        #expect(try Self.edit(crlf, upstream: nil, server: "app_web_3:5000", state: "present")
                == "upstream web {\r\n    server app_web_1:5000;\r\n    server app_web_2:5000;\r\n    server app_web_3:5000;\r\n}\r\n")
    }

    @Test(arguments: [
        (nil as String?, "app1.example.com:8000", "drained", "2 upstream blocks (backend_servers, static_files): say which with upstream:"),
        ("nope", "app1.example.com:8000", "drained", "no `upstream nope { … }` block (upstreams: backend_servers, static_files)"),
        ("backend_servers", "10.9.9.9:1", "drained", "upstream backend_servers has no server 10.9.9.9:1"),
        ("backend_servers", "10.9.9.9:1", "active", "(state: present adds one)"),
    ])
    func refusals(_ upstream: String?, _ server: String, _ state: String, _ expected: String) {
        do {
            _ = try Self.edit(Self.seed, upstream: upstream, server: server, state: state)
            Issue.record("no refusal")
        } catch let problem as NginxUpstreamStep.EditProblem {
            #expect(problem.message.contains(expected), "\(problem.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func multiLineServerIsRefused() {
        let text = "upstream a {\n    server 10.0.0.1:80\n        weight=2;\n}\n"
        #expect(throws: NginxUpstreamStep.EditProblem.self) { _ = try Self.edit(text, upstream: nil, server: "10.0.0.1:80", state: "drained") }
    }
}

import Foundation
import RunbookCore

/// A URL taken apart: plain HTTP for a request made over `Transport.exchange`, HTTPS for
/// `CurlProbe`.
struct HTTPURL: Sendable, Hashable {
    /// The URL as written.
    var text: String
    /// `https://`: TLS, port 443 unless given.
    var secure = false
    /// The address to connect to (an IPv6 address without its brackets).
    var host: String
    /// The TCP port (80 when the URL has none).
    var port: Int
    /// The request target: the path and query, starting with `/`.
    var target: String

    /// The `Host:` header: the host as written in the URL, with the port unless it is 80.
    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
    }

    /// `127.0.0.1:5000`, `[::1]:8080`: where the request goes, for messages.
    var endpoint: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }

    /// Parses `http://host[:port][/path][?query]` (and `https://` when `allowHTTPS`); a
    /// fragment is dropped.
    static func parse(_ text: String, allowHTTPS: Bool = false) throws(StepFailure) -> HTTPURL {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let lower = trimmed.lowercased()
        let secure = lower.hasPrefix("https://")
        if secure && !allowHTTPS {
            throw StepFailure("\(trimmed): https is not supported here; probe a plain-HTTP listener (e.g. http://127.0.0.1:5000/health), or use health, which speaks HTTPS")
        }
        guard lower.hasPrefix("http://") || secure else {
            throw StepFailure("\(trimmed) is not an http:// or https:// URL")
        }
        if let bad = trimmed.unicodeScalars.first(where: { $0.value <= 0x20 || $0.value == 0x7F }) {
            let what = bad == " " ? "a space (write it as %20)" : "a control character"
            throw StepFailure("\(trimmed): the URL contains \(what)")
        }
        var rest = Substring(trimmed.dropFirst(secure ? "https://".count : "http://".count))
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if target.isEmpty { target = "/" } else if target.hasPrefix("?") { target = "/" + target }
        guard !authority.contains("@") else {
            throw StepFailure("\(trimmed): user information in the URL is not supported")
        }
        var host: Substring
        var portText: Substring? = nil
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw StepFailure("\(trimmed): unclosed [ in the host") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw StepFailure("\(trimmed): unexpected text after the host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw StepFailure("\(trimmed): the URL has no host") }
        var port = secure ? 443 : 80
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw StepFailure("\(trimmed): the port must be a number from 1 to 65535")
            }
            port = value
        }
        return HTTPURL(text: trimmed, secure: secure, host: String(host), port: port, target: target)
    }

    /// The bytes of `GET target HTTP/1.1` asking the server to close the connection after answering.
    var getRequest: [UInt8] {
        Array(("GET \(target) HTTP/1.1\r\n" + "Host: \(hostHeader)\r\n" + "User-Agent: runbook-health/1\r\n"
            + "Accept: */*\r\n" + "Connection: close\r\n\r\n").utf8)
    }
}

/// An HTTP response as parsed from the bytes of an exchange.
struct HTTPResponse: Sendable, Equatable {
    /// The status code.
    var status: Int
    /// The reason phrase.
    var reason: String
    /// Header fields in order, names as sent.
    var headers: [(name: String, value: String)]
    /// The body, with chunked transfer coding removed.
    var body: [UInt8]

    /// The first value of header `name` (case-insensitive).
    func header(_ name: String) -> String? {
        let key = name.lowercased()
        return headers.first { $0.name.lowercased() == key }?.value
    }

    /// The body decoded leniently as UTF-8.
    var bodyText: String { String(decoding: body, as: UTF8.self) }

    static func == (a: HTTPResponse, b: HTTPResponse) -> Bool {
        a.status == b.status && a.reason == b.reason && a.body == b.body
            && a.headers.map { [$0.name, $0.value] } == b.headers.map { [$0.name, $0.value] }
    }

    /// What parsing the bytes of an exchange gave.
    enum Parsed: Sendable, Equatable {
        /// A whole response.
        case response(HTTPResponse)
        /// The bytes end before the response does.
        case incomplete(String)
        /// The bytes are not an HTTP response.
        case invalid(String)
    }

    /// Parses a response from `bytes`; `complete` says whether the peer closed the connection
    /// (so a body without a length ends there). Interim 1xx responses are skipped.
    static func parse(_ bytes: [UInt8], complete: Bool) -> Parsed {
        var start = 0
        while true {
            guard let (headEnd, bodyStart) = headerEnd(bytes, from: start) else {
                if bytes.count == start {
                    return .incomplete(start == 0 ? "no answer" : "no final response after an interim one")
                }
                if !bytes[start...].starts(with: Array("HTTP/".utf8)) && bytes.count - start >= 5 {
                    return .invalid("the answer is not HTTP: \(excerpt(Array(bytes[start...]), limit: 60))")
                }
                return .incomplete("the answer ends inside its header")
            }
            // Lines split on the bytes: in a Swift String "\r\n" is one Character.
            var lines = bytes[start..<headEnd].split(separator: 0x0A, omittingEmptySubsequences: false).map {
                String(decoding: $0.last == 0x0D ? $0.dropLast() : $0, as: UTF8.self)
            }
            let statusLine = lines.removeFirst()
            let fields = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            guard fields.count >= 2, fields[0].hasPrefix("HTTP/"), fields[1].count == 3, let status = Int(fields[1]) else {
                return .invalid("the answer is not HTTP: \(excerpt(Array(statusLine.utf8), limit: 60))")
            }
            let reason = fields.count > 2 ? String(fields[2]) : ""
            var headers: [(name: String, value: String)] = []
            for line in lines where !line.isEmpty {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers.append((String(line[..<colon]).trimmingCharacters(in: .whitespacesAndNewlines), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespacesAndNewlines)))
            }
            var response = HTTPResponse(status: status, reason: reason, headers: headers, body: [])
            if (100...199).contains(status) {
                start = bodyStart
                continue
            }
            if status == 204 || status == 304 { return .response(response) }
            let rest = Array(bytes[bodyStart...])
            if let coding = response.header("Transfer-Encoding"), coding.lowercased().contains("chunked") {
                switch decodeChunked(rest) {
                case .success(let body):
                    response.body = body
                    return .response(response)
                case .failure(let problem):
                    return problem.truncated ? .incomplete("the chunked body ends early") : .invalid(problem.message)
                }
            }
            if let lengthText = response.header("Content-Length") {
                guard let length = Int(lengthText), length >= 0 else { return .invalid("bad Content-Length: \(lengthText)") }
                guard rest.count >= length else {
                    return .incomplete("the body ends after \(rest.count) of \(length) bytes")
                }
                response.body = Array(rest.prefix(length))
                return .response(response)
            }
            // No length: the body runs until the server closes the connection.
            guard complete else { return .incomplete("the body had not ended (no Content-Length, connection still open)") }
            response.body = rest
            return .response(response)
        }
    }

    /// Where the header block starting at `from` ends: (end of the header text, start of the body).
    private static func headerEnd(_ bytes: [UInt8], from: Int) -> (Int, Int)? {
        var i = from
        while i < bytes.count {
            if bytes[i] == 0x0A {
                if i + 1 < bytes.count, bytes[i + 1] == 0x0A { return (i, i + 2) }
                if i + 2 < bytes.count, bytes[i + 1] == 0x0D, bytes[i + 2] == 0x0A { return (i, i + 3) }
            }
            i += 1
        }
        return nil
    }

    struct ChunkProblem: Error {
        var message: String
        var truncated: Bool
    }

    /// Removes chunked transfer coding (chunk extensions and trailers are ignored).
    static func decodeChunked(_ bytes: [UInt8]) -> Result<[UInt8], ChunkProblem> {
        var body: [UInt8] = []
        var i = 0
        func line() -> String? {
            guard let end = bytes[i...].firstIndex(of: 0x0A) else { return nil }
            var text = String(decoding: bytes[i..<end], as: UTF8.self)
            if text.hasSuffix("\r") { text.removeLast() }
            i = end + 1
            return text
        }
        while true {
            guard let sizeLine = line() else { return .failure(ChunkProblem(message: "", truncated: true)) }
            let sizeText = sizeLine.split(separator: ";", maxSplits: 1).first.map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            guard let size = Int(sizeText, radix: 16), size >= 0 else {
                return .failure(ChunkProblem(message: "bad chunk size: \(excerpt(Array(sizeLine.utf8), limit: 40))", truncated: false))
            }
            if size == 0 {
                // Trailers until an empty line; a missing end is tolerated.
                while let trailer = line(), !trailer.isEmpty {}
                return .success(body)
            }
            guard bytes.count - i >= size else { return .failure(ChunkProblem(message: "", truncated: true)) }
            body += bytes[i..<(i + size)]
            i += size
            guard let end = line() else { return .failure(ChunkProblem(message: "", truncated: true)) }
            guard end.isEmpty else { return .failure(ChunkProblem(message: "chunk data longer than its size", truncated: false)) }
        }
    }

    /// Up to `limit` characters of `bytes` as text, on one line, quoted.
    static func excerpt(_ bytes: [UInt8], limit: Int) -> String {
        var text = String(decoding: bytes.prefix(limit * 4), as: UTF8.self)
        text = text.split(whereSeparator: \.isNewline).joined(separator: " ").trimmingCharacters(in: .whitespacesAndNewlines)
        if text.count > limit { text = String(text.prefix(limit)) + "…" }
        return "\"\(text)\""
    }
}

/// One GET over a transport's TCP exchange: from the host (SSH direct-tcpip) or, with a
/// `LocalTransport`, from the controller.
enum HTTPClient {
    /// The outcome of one request.
    enum Outcome: Sendable {
        /// A response, and how long it took from connecting to the last byte.
        case response(HTTPResponse, latency: Duration)
        /// The connection could not be made (refused, unreachable, or not within the timeout).
        case unreachable(latency: Duration)
        /// Connected, but no whole response within the timeout, or not HTTP.
        case failed(String, latency: Duration)

        /// How long it took.
        var latency: Duration {
            switch self {
            case .response(_, let latency), .unreachable(let latency), .failed(_, let latency): return latency
            }
        }
    }

    /// `GET url` through `transport`, bounded by `timeout`.
    static func get(_ url: HTTPURL, through transport: any Transport, timeout: Duration) async -> Outcome {
        let started = ContinuousClock.now
        let reply: ExchangeReply?
        do {
            reply = try await transport.exchange(address: url.host, port: url.port, send: url.getRequest, timeout: timeout)
        } catch {
            return .failed(error.message, latency: .now - started)
        }
        let latency = ContinuousClock.now - started
        guard let reply else { return .unreachable(latency: latency) }
        switch HTTPResponse.parse(reply.bytes, complete: reply.complete) {
        case .response(let response):
            return .response(response, latency: latency)
        case .incomplete(let why):
            if reply.complete {
                return .failed(reply.bytes.isEmpty ? "the server closed the connection without answering" : "the connection closed early: \(why)",
                               latency: latency)
            }
            if reply.bytes.isEmpty { return .failed("no answer within \(DurationText.format(timeout))", latency: latency) }
            return .failed("no whole answer within \(DurationText.format(timeout)) (\(why))", latency: latency)
        case .invalid(let why):
            return .failed(why, latency: latency)
        }
    }
}

import Foundation
import RunbookCore
import Synchronization

/// A `Transport` test double: scripted command replies, an in-memory filesystem, and a record
/// of everything that ran. It lets a step kind be planned and applied in a unit test, without
/// root, a network or a real service; the real-service tests stay as they are.
///
/// Replies are matched in the order they were added, by a substring of the command line; an
/// unscripted command exits 0 with no output. `atomic write`s (`Transport.writeFileAtomically`)
/// work: their `chmod … && mv -fT -- TEMP PATH` is carried out on the fake filesystem, as are
/// a file step's backup (`cp -p -- PATH BACKUP`) and a rollback's restore (`mv -fT -- BACKUP PATH`).
public final class ScriptedTransport: Transport, Sendable {
    /// A file of the fake filesystem.
    public struct File: Sendable, Equatable {
        public var contents: [UInt8]
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var isDirectory: Bool

        /// A regular file (or a directory).
        public init(_ contents: [UInt8], mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, isDirectory: Bool = false) {
            self.contents = contents
            self.mode = mode
            self.uid = uid
            self.gid = gid
            self.isDirectory = isDirectory
        }

        /// A text file.
        public init(_ text: String, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0) {
            self.init(Array(text.utf8), mode: mode, uid: uid, gid: gid)
        }

        /// A directory.
        public static var directory: File { File([], mode: 0o755, isDirectory: true) }
    }

    /// What a scripted command answers.
    public struct Reply: Sendable {
        public var stdout: String
        public var stderr: String
        public var status: Int32

        /// A reply.
        public init(stdout: String = "", stderr: String = "", status: Int32 = 0) {
            self.stdout = stdout
            self.stderr = stderr
            self.status = status
        }
    }

    /// How a TCP endpoint answers exchange after exchange (`answer(address:port:delay:_:)`).
    struct Responder: Sendable {
        var delay: Duration
        var respond: @Sendable (Int) -> String?
    }

    struct State {
        var files: [String: File]
        var replies: [(match: String, reply: Reply)]
        var exchanges: [String: ExchangeReply]
        var responders: [String: Responder] = [:]
        /// Exchanges started, by `address:port`.
        var exchangeCounts: [String: Int] = [:]
        var exchangesInFlight = 0
        var mostExchangesInFlight = 0
        var ran: [ShellCommand] = []
    }

    public let hostName: String
    private let state: Mutex<State>

    /// A host named `hostName` holding `files`.
    public init(hostName: String = "h1", files: [String: File] = [:]) {
        self.hostName = hostName
        state = Mutex(State(files: files, replies: [], exchanges: [:]))
    }

    /// Commands whose command line contains `match` answer `reply` (first added wins).
    public func reply(to match: String, _ reply: Reply) {
        state.withLock { $0.replies.append((match, reply)) }
    }

    /// Commands whose command line contains `match` answer `stdout` with `status`.
    public func reply(to match: String, stdout: String = "", stderr: String = "", status: Int32 = 0) {
        reply(to: match, Reply(stdout: stdout, stderr: stderr, status: status))
    }

    /// A TCP exchange from the host with `address:port` returns `response`.
    public func answer(address: String, port: Int, with response: String) {
        state.withLock { $0.exchanges["\(address):\(port)"] = ExchangeReply(bytes: Array(response.utf8), complete: true) }
    }

    /// TCP exchanges from the host with `address:port` are answered by `respond`, called with
    /// the exchange's number there (0, 1, 2, … in the order they start): the response's text,
    /// or nil for a refused connection. Each exchange takes `delay`; one whose timeout is
    /// shorter ends at its timeout with nothing received, as a silent server's does.
    public func answer(address: String, port: Int, delay: Duration = .zero, _ respond: @escaping @Sendable (Int) -> String?) {
        state.withLock { $0.responders["\(address):\(port)"] = Responder(delay: delay, respond: respond) }
    }

    /// How many TCP exchanges with `address:port` were started.
    public func exchangeCount(address: String, port: Int) -> Int {
        state.withLock { $0.exchangeCounts["\(address):\(port)", default: 0] }
    }

    /// The most TCP exchanges that were in progress at the same time.
    public var mostConcurrentExchanges: Int { state.withLock { $0.mostExchangesInFlight } }

    /// Every command that ran, in order.
    public var ran: [ShellCommand] { state.withLock { $0.ran } }

    /// The command lines that ran, in order (secrets by reference, as the host saw them).
    public var ranLines: [String] { ran.map(\.commandLine) }

    /// The fake filesystem now.
    public var files: [String: File] { state.withLock { $0.files } }

    /// Puts a file in place.
    public func put(_ path: String, _ file: File) { state.withLock { $0.files[path] = file } }

    public func run(_ command: ShellCommand, stdin: [UInt8], timeout: Duration?,
                    onOutput: (@Sendable (OutputEvent) -> Void)?) async throws(TransportError) -> CommandOutput {
        let line = command.commandLine
        let reply: Reply = state.withLock { state in
            state.ran.append(command)
            if let scripted = state.replies.first(where: { line.contains($0.match) })?.reply { return scripted }
            if line.hasPrefix("cp -p -- "), let (from, to) = Self.twoPaths(after: "cp -p -- ", in: line), let file = state.files[from] {
                state.files[to] = file
            }
            if let (temp, path) = Self.atomicMove(line), let file = state.files[temp] {
                state.files[path] = file
                state.files[temp] = nil
                if let mode = Self.chmodMode(line) { state.files[path]?.mode = mode }
            }
            return Reply()
        }
        return CommandOutput(stdout: Array(reply.stdout.utf8), stderr: Array(reply.stderr.utf8), exitStatus: reply.status,
                             exitSignal: nil, timedOut: false, duration: .milliseconds(1))
    }

    public func readFile(_ path: String) async throws(TransportError) -> [UInt8]? {
        state.withLock { $0.files[path].flatMap { $0.isDirectory ? nil : $0.contents } }
    }

    public func stat(_ path: String) async throws(TransportError) -> FileInfo? {
        state.withLock { state in
            state.files[path].map {
                FileInfo(size: UInt64($0.contents.count), permissions: $0.mode, isDirectory: $0.isDirectory,
                         isRegularFile: !$0.isDirectory, uid: $0.uid, gid: $0.gid)
            }
        }
    }

    public func writeFile(_ path: String, contents: [UInt8], mode: UInt32, exclusive: Bool) async throws(TransportError) {
        try state.withLock { (state) throws(TransportError) in
            if exclusive && state.files[path] != nil { throw TransportError(host: hostName, message: "\(path) exists") }
            state.files[path] = File(contents, mode: mode)
        }
    }

    public func removeFile(_ path: String) async throws(TransportError) {
        state.withLock { _ = $0.files.removeValue(forKey: path) }
    }

    public func exchange(address: String, port: Int, send: [UInt8], timeout: Duration) async throws(TransportError) -> ExchangeReply? {
        let key = "\(address):\(port)"
        let (fixed, responder, number) = state.withLock { state in
            let number = state.exchangeCounts[key, default: 0]
            state.exchangeCounts[key] = number + 1
            state.exchangesInFlight += 1
            state.mostExchangesInFlight = max(state.mostExchangesInFlight, state.exchangesInFlight)
            return (state.exchanges[key], state.responders[key], number)
        }
        defer { state.withLock { $0.exchangesInFlight -= 1 } }
        guard let responder else { return fixed }
        if responder.delay > .zero { try? await Task.sleep(for: min(responder.delay, timeout)) }
        if responder.delay > timeout { return ExchangeReply(bytes: [], complete: false) }
        return responder.respond(number).map { ExchangeReply(bytes: Array($0.utf8), complete: true) }
    }

    public func close() async {}

    public var preferredExecutor: (any TaskExecutor)? { nil }

    /// `(TEMP, PATH)` of a command ending in `mv -fT -- TEMP PATH`.
    static func atomicMove(_ line: String) -> (String, String)? { twoPaths(after: "mv -fT -- ", in: line) }

    /// The two paths after the last `prefix` in `line`, unquoted.
    static func twoPaths(after prefix: String, in line: String) -> (String, String)? {
        guard let range = line.range(of: prefix, options: .backwards) else { return nil }
        let words = line[range.upperBound...].split(separator: " ").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "'")) }
        return words.count == 2 ? (words[0], words[1]) : nil
    }

    /// The mode of a command starting with `chmod MODE -- `.
    static func chmodMode(_ line: String) -> UInt32? {
        guard line.hasPrefix("chmod ") else { return nil }
        return line.dropFirst("chmod ".count).split(separator: " ").first.flatMap { UInt32($0, radix: 8) }
    }
}

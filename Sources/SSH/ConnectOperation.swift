import CLibSSH2
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A resolved socket address, ready for `connect(2)`.
struct SocketAddress: Sendable {
    let family: Int32
    let bytes: [UInt8]
    let text: String

    /// Resolves `host` (a name or an IPv4/IPv6 literal, brackets allowed) for `port`.
    static func resolve(host: String, port: Int) throws(SSHError) -> [SocketAddress] {
        var name = host
        if name.hasPrefix("["), name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(name, String(port), &hints, &list)
        guard rc == 0, let list else {
            throw SSHError(.resolve, "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var result: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let entry = cursor?.pointee {
            if let addr = entry.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: addr, count: Int(entry.ai_addrlen)))
                var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                _ = getnameinfo(addr, entry.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST)
                let numeric = text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                let shown = entry.ai_family == AF_INET6 ? "[\(numeric)]:\(port)" : "\(numeric):\(port)"
                result.append(SocketAddress(family: entry.ai_family, bytes: bytes, text: shown))
            }
            cursor = entry.ai_next
        }
        return result
    }
}

/// Connects a session: TCP (unless a jump host supplies the socket), handshake, host key check,
/// authentication. Ends with the session ready, or with an error that says what to do.
final class ConnectOperation: LoopOperation {
    private enum State { case tcp, handshake, authList, authenticate, done }

    private let target: SSHTarget
    private let addresses: [SocketAddress]
    private let logger: Logger
    private var continuation: CheckedContinuation<Void, any Error>?
    private var state: State
    private var addressIndex = 0
    private var connecting = false
    private var tcpErrors: [String] = []
    private var knownHosts = KnownHostsFile.parse("", path: "")
    private var attempts: [AuthAttempt] = []
    private var attemptIndex = 0
    private var tried: [String] = []
    private var serverMethods = ""

    private enum AuthAttempt {
        case agent
        case file(String)
        case password(String)
        /// Ask for the accepted methods (then offer the password if configured and accepted).
        case listMethods
    }
    private var listedMethods = false
    private var passwordQueued = false

    init(session: SessionState, target: SSHTarget, addresses: [SocketAddress], logger: Logger,
         continuation: CheckedContinuation<Void, any Error>) {
        self.target = target
        self.addresses = addresses
        self.logger = logger
        self.continuation = continuation
        self.state = session.fd >= 0 ? .handshake : .tcp
        super.init(session: session)
        deadline = .now + target.connectTimeout
    }

    override func advance(now: ContinuousClock.Instant) -> Advance {
        if let deadline, now >= deadline { return timedOut() }
        switch state {
        case .tcp: return advanceTCP()
        case .handshake: return advanceHandshake()
        case .authList: return advanceAuthList()
        case .authenticate: return advanceAuthentication()
        case .done: return .finished
        }
    }

    // MARK: TCP

    private func advanceTCP() -> Advance {
        while true {
            if connecting {
                var p = pollfd(fd: session.fd, events: Int16(POLLOUT), revents: 0)
                guard poll(&p, 1, 0) > 0 else { return .blocked([.descriptor(session.fd, Int16(POLLOUT))]) }
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(session.fd, SOL_SOCKET, SO_ERROR, &error, &length)
                connecting = false
                if error == 0 { return startSession() }
                tcpErrors.append("\(addresses[addressIndex].text): \(String(cString: strerror(error)))")
                close(session.fd)
                session.fd = -1
                addressIndex += 1
            }
            guard addressIndex < addresses.count else {
                let reasons = tcpErrors.joined(separator: "; ")
                return finish(.failure(SSHError(.connect, "cannot connect to \(session.label): \(reasons)")))
            }
            let address = addresses[addressIndex]
            let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                return finish(.failure(SSHError(.connect, "cannot create a socket: \(String(cString: strerror(errno)))")))
            }
            var one: Int32 = 1
            // Without TCP_NODELAY every small exchange can wait ~40 ms for a delayed ACK.
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            session.fd = fd
            let rc = address.bytes.withUnsafeBytes {
                connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if rc == 0 { return startSession() }
            if errno == EINPROGRESS {
                connecting = true
                continue
            }
            tcpErrors.append("\(address.text): \(String(cString: strerror(errno)))")
            close(fd)
            session.fd = -1
            addressIndex += 1
        }
    }

    private func startSession() -> Advance {
        state = .handshake
        return .progressed
    }

    // MARK: Handshake and host key

    private func advanceHandshake() -> Advance {
        if session.raw == nil {
            guard let raw = rb_session_init_guarded() else {
                return finish(.failure(SSHError(.handshake, "libssh2 could not create a session")))
            }
            session.raw = raw
            libssh2_session_set_blocking(raw, 0)
            // Until authenticated, no read succeeds past connect_timeout (a flooding peer).
            if let deadline {
                let remaining = deadline - .now
                rb_session_set_deadline(raw, max(1, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000))
            }
            if target.hostKeyPolicy != .off {
                do {
                    knownHosts = try KnownHostsFile.cached(path: target.knownHostsFile)
                } catch {
                    return finish(.failure(error))
                }
                // Ask for the key types already on file first, as OpenSSH does, so a host with
                // several keys offers the one we can check.
                let preferred = knownHosts.knownTypes(for: lookupName).flatMap(Self.algorithms(for:))
                let all = preferred + Self.defaultHostKeyAlgorithms.filter { !preferred.contains($0) }
                _ = libssh2_session_method_pref(raw, LIBSSH2_METHOD_HOSTKEY, all.joined(separator: ","))
            }
        }
        let raw = session.raw!
        switch call(libssh2_session_handshake(raw, libssh2_socket_t(session.fd))) {
        case .again: return .blocked([.session(session)])
        case .failed:
            return finish(.failure(.libssh2(.handshake, "SSH handshake with \(session.label) failed", session: raw)))
        case .ok:
            break
        }
        if let error = checkHostKey(raw) { return finish(.failure(error)) }
        state = .authList
        return .progressed
    }

    private var lookupName: String { KnownHostsFile.lookupName(host: target.host, port: target.port) }

    static let defaultHostKeyAlgorithms = [
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa",
    ]

    static func algorithms(for keyType: String) -> [String] {
        keyType == "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [keyType]
    }

    private func checkHostKey(_ raw: OpaquePointer) -> SSHError? {
        var length = 0
        var type: Int32 = 0
        guard let pointer = libssh2_session_hostkey(raw, &length, &type) else {
            return .libssh2(.handshake, "\(session.label) sent no host key", session: raw)
        }
        let key = HostKey(blob: Array(UnsafeRawBufferPointer(start: pointer, count: length)))
        let file = target.knownHostsFile
        switch target.hostKeyPolicy {
        case .off:
            logger.warning("host key checking is OFF for \(session.label): accepting \(key.displayType) key \(key.fingerprint) without verification; anyone on the network path can impersonate this host")
            return nil
        case .strict, .acceptNew:
            switch knownHosts.verify(key, name: lookupName) {
            case .known:
                return nil
            case .revoked(let line):
                return SSHError(.hostKeyChanged, "the \(key.displayType) host key \(key.fingerprint) of \(lookupName) is marked @revoked in \(file) line \(line); refusing to connect")
            case .changed(let entries):
                let expected = entries.map { "\($0.key.displayType) key \($0.key.fingerprint) (\(file) line \($0.line))" }.joined(separator: ", ")
                return SSHError(.hostKeyChanged, """
                    HOST KEY CHANGED for \(lookupName): known_hosts has \(expected), but the host offered \(key.displayType) key \(key.fingerprint). \
                    Someone could be intercepting the connection, or the host was reinstalled. Refusing to connect. \
                    If the change is expected, remove the old key with `ssh-keygen -R '\(lookupName)' -f \(file)` and connect again.
                    """)
            case .unknown:
                if target.hostKeyPolicy == .strict {
                    return SSHError(.hostKeyUnknown, """
                        host key for \(lookupName) is not in \(file) (offered \(key.displayType) key \(key.fingerprint)); refusing to connect (host_key_checking: strict). \
                        Verify the fingerprint, then add it with `ssh-keyscan -p \(target.port) \(target.host) >> \(file)`, or set host_key_checking: accept-new.
                        """)
                }
                do {
                    try KnownHostsFile.append(key, name: lookupName, to: file)
                } catch {
                    return error
                }
                logger.warning("recorded new \(key.displayType) host key \(key.fingerprint) for \(lookupName) in \(file) (accept-new)")
                return nil
            }
        }
    }

    // MARK: Authentication

    /// Offers keys straight away. Asking for the method list first (`userauth_list`) sends a
    /// "none" request, and OpenSSH before 9.6 holds every failed request for several
    /// milliseconds; so the list is asked for only when a password is configured or every key
    /// failed (for the message).
    private func advanceAuthList() -> Advance {
        if !listedMethods {
            if target.useAgent, let socket = target.agentSocket, !socket.isEmpty {
                attempts.append(.agent)
            }
            for file in target.identityFiles { attempts.append(.file(file)) }
            attempts.append(.listMethods)
            listedMethods = true
        }
        state = .authenticate
        return .progressed
    }

    /// Asks the server which methods it accepts; true when that already authenticated us.
    private func listMethods(_ raw: OpaquePointer) -> Advance? {
        guard let list = libssh2_userauth_list(raw, target.user, UInt32(target.user.utf8.count)) else {
            if libssh2_userauth_authenticated(raw) != 0 { return authenticated() }
            if wouldBlock(raw) { return .blocked([.session(session)]) }
            serverMethods = "unknown"
            return nil
        }
        serverMethods = String(cString: list)
        return nil
    }

    private func advanceAuthentication() -> Advance {
        let raw = session.raw!
        while attemptIndex < attempts.count {
            switch attempts[attemptIndex] {
            case .agent:
                tried.append(agentAuthenticate(raw))
                if libssh2_userauth_authenticated(raw) != 0 { return authenticated() }
            case .file(let path):
                if let problem = keyFileProblem(path) {
                    tried.append("\(path) (\(problem))")
                    break
                }
                let rc = rb_userauth_publickey_fromfile(raw, target.user, nil, path, target.passphrase)
                switch call(rc) {
                case .again: return .blocked([.session(session)])
                case .ok: return authenticated()
                case .failed(let code):
                    tried.append("\(path) (\(describeKeyFailure(code, path: path, raw: raw)))")
                    if isFatal(code) {
                        return finish(.failure(.libssh2(.disconnected, "the connection to \(session.label) broke during authentication", session: raw)))
                    }
                }
            case .listMethods:
                if serverMethods.isEmpty {
                    if let result = listMethods(raw) { return result }
                }
                if let password = target.password, !passwordQueued {
                    passwordQueued = true
                    if serverMethods.split(separator: ",").contains("password") {
                        attempts.insert(.password(password), at: attemptIndex + 1)
                    } else {
                        tried.append("password (the server does not accept password authentication)")
                    }
                }
            case .password(let password):
                switch call(rb_userauth_password(raw, target.user, password)) {
                case .again: return .blocked([.session(session)])
                case .ok: return authenticated()
                case .failed(let code):
                    tried.append("password (rejected)")
                    if isFatal(code) {
                        return finish(.failure(.libssh2(.disconnected, "the connection to \(session.label) broke during authentication", session: raw)))
                    }
                }
            }
            attemptIndex += 1
        }
        let summary = tried.isEmpty ? "no key or password to offer" : "tried " + tried.joined(separator: ", ")
        return finish(.failure(SSHError(.authentication,
            "permission denied for \(session.label) (server accepts: \(serverMethods.isEmpty ? "nothing" : serverMethods)): \(summary)")))
    }

    private func isFatal(_ code: Int32) -> Bool {
        code == LIBSSH2_ERROR_SOCKET_SEND || code == LIBSSH2_ERROR_SOCKET_RECV || code == LIBSSH2_ERROR_SOCKET_DISCONNECT
    }

    private func describeKeyFailure(_ code: Int32, path: String, raw: OpaquePointer) -> String {
        switch code {
        case LIBSSH2_ERROR_FILE:
            return target.passphrase == nil
                ? "cannot read the key: it may need a passphrase"
                : "cannot read the key: wrong passphrase or unsupported format"
        case LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED, LIBSSH2_ERROR_AUTHENTICATION_FAILED:
            let head = (try? String(contentsOfFile: path + ".pub", encoding: .utf8)) ?? ""
            if head.hasPrefix("ssh-rsa") {
                return "rejected by the server: libssh2 \(String(cString: libssh2_version(0))) signs RSA keys with SHA-1, which OpenSSH 8.8+ refuses; use an ed25519 or ECDSA key"
            }
            return "rejected by the server"
        default:
            return lastError(raw).text
        }
    }

    /// Tries each identity the agent holds. The agent is a local socket, so the session is
    /// made blocking (with a bound) for these few round trips.
    private func agentAuthenticate(_ raw: OpaquePointer) -> String {
        guard let agent = libssh2_agent_init(raw) else { return "ssh-agent (unavailable)" }
        defer {
            libssh2_agent_disconnect(agent)
            libssh2_agent_free(agent)
            libssh2_session_set_blocking(raw, 0)
            libssh2_session_set_timeout(raw, 0)
        }
        if let socket = target.agentSocket { libssh2_agent_set_identity_path(agent, socket) }
        guard libssh2_agent_connect(agent) == 0 else { return "ssh-agent (cannot connect to \(target.agentSocket ?? "SSH_AUTH_SOCK"))" }
        guard libssh2_agent_list_identities(agent) == 0 else { return "ssh-agent (cannot list keys)" }
        libssh2_session_set_blocking(raw, 1)
        let remaining = (deadline ?? .now + .seconds(10)) - .now
        libssh2_session_set_timeout(raw, Int(max(1, remaining.components.seconds * 1000)))
        var identity: UnsafeMutablePointer<libssh2_agent_publickey>? = nil
        var previous: UnsafeMutablePointer<libssh2_agent_publickey>? = nil
        var offered = 0
        while libssh2_agent_get_identity(agent, &identity, previous) == 0 {
            offered += 1
            if libssh2_agent_userauth(agent, target.user, identity) == 0 { return "ssh-agent (accepted)" }
            previous = identity
        }
        return offered == 0 ? "ssh-agent (no keys)" : "ssh-agent (\(offered) key\(offered == 1 ? "" : "s") rejected)"
    }

    /// The connection took longer than `connect_timeout`.
    private func timedOut() -> Advance {
        let phase = state == .tcp ? "connecting" : (state == .handshake ? "waiting for the SSH handshake" : "authenticating")
        return finish(.failure(SSHError(.connect,
            "timed out after \(format(target.connectTimeout)) \(phase) to \(session.label): the host is down, filtered, or too slow (connect_timeout)")))
    }

    private func authenticated() -> Advance {
        if let raw = session.raw { rb_session_set_deadline(raw, 0) }
        if target.keepaliveInterval > 0, let raw = session.raw {
            libssh2_keepalive_config(raw, 1, UInt32(target.keepaliveInterval))
            session.keepaliveInterval = target.keepaliveInterval
            session.keepaliveCountMax = max(1, target.keepaliveCountMax)
        }
        return finish(.success(()))
    }

    private func finish(_ result: Result<Void, SSHError>) -> Advance {
        // A read failed by the session's deadline shows as a broken connection: say timeout.
        if case .failure(let error) = result, error.kind != .connect, state != .done,
           session.raw.map({ rb_session_deadline_expired($0) != 0 }) == true || deadline.map({ .now >= $0 }) == true
        {
            return timedOut()
        }
        state = .done
        if let continuation {
            self.continuation = nil
            continuation.resume(with: result.mapError { $0 as any Error })
        }
        return .finished
    }

    override func fail(_ error: SSHError) {
        state = .done
        if let continuation {
            self.continuation = nil
            continuation.resume(throwing: error)
        }
    }
}

/// `10s`, `1.5s`: a duration for messages.
func format(_ duration: Duration) -> String {
    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    return seconds == seconds.rounded() ? "\(Int(seconds)) s" : String(format: "%.1f s", seconds)
}

/// Why `path` cannot be a private key file, or nil when it can be read as one. libssh2 reads
/// the file whole and blocking: a FIFO would hang the connection and a device never end, so
/// only a readable regular file (a link to one is fine) of at most 64 KiB is handed to it.
func keyFileProblem(_ path: String) -> String? {
    var info = stat()
    guard stat(path, &info) == 0 else { return "not found" }
    guard info.st_mode & S_IFMT == S_IFREG else { return "not a regular file" }
    guard info.st_size <= 65_536 else { return "\(info.st_size) bytes: too large for a private key" }
    guard access(path, R_OK) == 0 else { return "not readable" }
    return nil
}

import CLibSSH2

/// An operational SSH failure: what kind, what happened, and what libssh2 said.
public struct SSHError: Error, Sendable, CustomStringConvertible {
    /// The broad class of failure, for callers that react differently to each.
    public enum Kind: String, Sendable {
        /// Name resolution failed.
        case resolve
        /// The TCP connection could not be made (refused, unreachable, timed out).
        case connect
        /// The SSH handshake failed.
        case handshake
        /// The host's key is not in known_hosts and the policy refuses unknown keys.
        case hostKeyUnknown
        /// The host offered a key that differs from the one in known_hosts.
        case hostKeyChanged
        /// known_hosts could not be read or written.
        case knownHosts
        /// No authentication method was accepted.
        case authentication
        /// A channel could not be opened or used.
        case channel
        /// An SFTP operation failed.
        case sftp
        /// The connection broke or stopped answering.
        case disconnected
        /// A command ran past its timeout and was ended.
        case timeout
        /// The operation was cancelled by the caller.
        case cancelled
        /// The connection was already closed by the caller.
        case closed
    }

    /// The class of failure.
    public let kind: Kind
    /// A sentence for the operator: what failed, where, and what to do next.
    public let message: String
    /// libssh2's error code, when the failure came from libssh2.
    public let code: Int32?
    /// libssh2's own text for that code (`libssh2_session_last_error`).
    public let detail: String?

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, code: Int32? = nil, detail: String? = nil) {
        self.kind = kind
        self.message = message
        self.code = code
        self.detail = detail
    }

    /// The message, with libssh2's text appended when it adds something.
    public var description: String {
        guard let detail, !detail.isEmpty, !message.contains(detail) else { return message }
        if let code { return "\(message) (libssh2: \(detail), code \(code))" }
        return "\(message) (\(detail))"
    }
}

/// Reads libssh2's last error for a session.
func lastError(_ session: OpaquePointer?) -> (code: Int32, text: String) {
    guard let session else { return (0, "") }
    var message: UnsafeMutablePointer<CChar>? = nil
    var length: Int32 = 0
    let code = libssh2_session_last_error(session, &message, &length, 0)
    let text = message.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(length)), as: UTF8.self) } ?? ""
    return (code, text)
}

extension SSHError {
    /// An error built from the session's last libssh2 error.
    static func libssh2(_ kind: Kind, _ message: String, session: OpaquePointer?) -> SSHError {
        let (code, text) = lastError(session)
        return SSHError(kind, message, code: code, detail: text)
    }
}

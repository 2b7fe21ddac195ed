import Foundation
import RunbookCore

/// Where a request starts.
enum ProbeOrigin: String, Sendable {
    /// On the host (over SSH, a direct-tcpip channel, as `ssh -L` does).
    case host
    /// On the controller, a plain socket.
    case controller
}


import Foundation
import RunbookCore

/// A step that cannot be planned or applied, with the reason for the operator. Either the
/// runbook asks for something invalid (exit 2, like any bad input), or the host is not as the
/// step needs it (`onHost`: no such file or table, no PostgreSQL or docker, too little disk):
/// a runtime failure, exit 1.
package struct StepFailure: Error, CustomStringConvertible {
    package let description: String
    /// True when what is wrong is on the host, not in the runbook.
    package let hostSide: Bool
    package init(_ message: String) { description = message; hostSide = false }
    private init(_ message: String, hostSide: Bool) { description = message; self.hostSide = hostSide }
    /// The host is not as the step needs it.
    package static func onHost(_ message: String) -> StepFailure { StepFailure(message, hostSide: true) }
}


import Foundation
import RunbookCore

import RunbookCore

/// A step that cannot be planned or applied, with the reason for the operator.
package struct StepFailure: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}


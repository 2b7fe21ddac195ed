import Foundation
import RunbookCore


/// `assert`: expressions that must hold; checked when the step runs.
package struct AssertStep: StepKind {
    package static let schema = StepKindSchema(
        name: "assert", summary: "fail unless every expression is true",
        arguments: [
            ArgumentSpec("that", .expressionList, required: true, "template if expressions"),
            ArgumentSpec("message", .string, "shown when an expression is false"),
        ],
        scalarForm: .expressionList, scalarKey: "that")
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static func defaultName(_ arguments: [String: Value]) -> String {
        let that = arguments["that"]?.listValue?.map(\.description).joined(separator: " and ") ?? ""
        return "assert " + (that.count > 40 ? that.prefix(40).trimmingCharacters(in: .whitespaces) + "…" : that)
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        let conditions: [String]
        switch arguments.raw["that"] {
        case .string(let s): conditions = [s]
        case .list(let items): conditions = items.compactMap(\.stringValue)
        default: throw StepFailure("assert needs that: an expression or a list of them")
        }
        let message = arguments.string("message")
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true,
                                        summary: "assert " + conditions.joined(separator: " and "))
        return HostStepPlan(change: change, operation: .assert(conditions: conditions, message: message), deferredUntilApply: false)
    }
}

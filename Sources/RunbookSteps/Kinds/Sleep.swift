import Foundation
import RunbookCore


/// `sleep: 5s`.
package struct SleepStep: StepKind {
    package static let schema = StepKindSchema(
        name: "sleep", summary: "pause",
        arguments: [ArgumentSpec("duration", .duration, required: true, "how long")],
        scalarForm: .duration, scalarKey: "duration")
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .readOnly }
    package static func defaultName(_ arguments: [String: Value]) -> String { "sleep \(arguments["duration"]?.description ?? "")" }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        // The loader stores `sleep: 5s` as { duration: "5s" }.
        let text: String
        switch arguments.raw["duration"] {
        case .string(let s): text = arguments.strings["duration"] ?? s
        case .int(let i): text = "\(i)s"
        default: throw StepFailure("sleep takes a duration, e.g. sleep: 5s")
        }
        guard let duration = DurationText.parse(text) else { throw StepFailure("sleep: \(text) is not a duration") }
        let change = PlannedChange.make(step: step, host: host.name, action: .check, reversible: true, summary: "sleep \(text)")
        return HostStepPlan(change: change, operation: .sleep(duration), deferredUntilApply: false)
    }
}

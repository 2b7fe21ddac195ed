import Foundation
import RunbookCore

/// `template`: render a template from templates/ (per host, with the run's context) and put it
/// on the host with `FilePlanner`: a unified diff in the plan, the previous bytes restored on undo.
package struct TemplateStep: StepKind {
    package static let schema = StepKindSchema(
        name: "template", summary: "render a template from templates/ to a file on the host",
        arguments: [ArgumentSpec("src", .string, required: true, "template under templates/")] + fileArguments)
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    package static let fileSource = FileSource.template
    /// Written over SFTP as the login user, so never through sudo.
    package static let supportsBecome = false
    package static func defaultName(_ arguments: [String: Value]) -> String { "template \(arguments["src"]?.description ?? "")" }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        try await FilePlanner().plan(step: step, host: host, arguments: arguments, facts: facts)
    }
}

import Foundation
import RunbookCore

/// `copy`: put a file from templates/ (as is) or inline `content` on the host with `FilePlanner`.
package struct CopyStep: StepKind {
    package static let schema = StepKindSchema(
        name: "copy", summary: "put a file from templates/ (or inline content) on the host",
        arguments: [
            ArgumentSpec("src", .string, "file under templates/, copied as is"),
            ArgumentSpec("content", .string, "the file's content, instead of src"),
        ] + fileArguments,
        exactlyOneOf: [["src", "content"]])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    package static let fileSource = FileSource.copy
    /// Written over SFTP as the login user, so never through sudo.
    package static let supportsBecome = false
    package static func defaultName(_ arguments: [String: Value]) -> String {
        if let src = arguments["src"] { return "copy \(src.description)" }
        return "copy to \(arguments["dest"]?.description ?? "")"
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        try await FilePlanner().plan(step: step, host: host, arguments: arguments, facts: facts)
    }
}

import Foundation
@testable import RunbookEngine
@testable import RunbookSteps
import RunbookCore
import Testing

@Suite("Warm-up")
struct WarmUpTests {
    /// The warm-up ignores its own errors; a built-in project that stopped validating would
    /// silently warm up nothing.
    @Test("the built-in warm-up runbook and inventory load, validate and render without touching disk")
    func builtInProjectIsValid() throws {
        let runbook = try RunbookLoader(root: Engine.warmUpDirectory)
            .load(text: Engine.warmUpRunbook, file: "warm-up.yml", name: "warm-up")
        #expect(runbook.steps.map(\.kind) == ["command", "assert", "sleep"])
        let inventory = try InventoryLoader(homeDirectory: Engine.warmUpDirectory, defaultUser: "deploy")
            .load(text: Engine.warmUpInventory, file: "warm-up-inventory.yml")
        #expect(try HostPattern(runbook.hosts).select(from: inventory).map(\.name) == ["h1"])
        let templates = TemplateEngine(templatesDirectory: Engine.warmUpDirectory)
        try Engine.checkTemplates(runbook, templates: templates)
        let context = TemplateContext(params: ["workers": .int(4)], host: ["name": .string("h1")],
                                      secrets: try SecretStore(environment: [:], file: nil))
        let rendered = try templates.render(string: "echo {{ params.workers }} {{ host.name }}",
                                            at: SourceLocation(file: "warm-up.yml", line: 1, column: 1),
                                            context: context, secrets: .references)
        #expect(rendered.text == "echo 4 h1")
        #expect(!FileManager.default.fileExists(atPath: Engine.warmUpDirectory))
    }
}

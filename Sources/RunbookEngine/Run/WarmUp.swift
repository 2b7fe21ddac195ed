import Foundation
import RunbookCore
import RunbookSteps

extension Engine {
    /// Starts, in a background task, what a run does once per process before its first step:
    /// a small built-in runbook and inventory are loaded from text and validated (templates
    /// checked), a command is rendered, and an undo record and lock info go through JSON. Nothing is
    /// read from disk and no host is contacted. The Swift runtime builds the generic types and
    /// protocol conformances these need the first time they are used (milliseconds of
    /// lookups); done here, on the other core while the arguments are parsed, the real
    /// project's load and first step find them ready. It runs on the concurrency pool's
    /// threads, which the run uses anyway, rather than a thread of its own.
    public static func warmUp() {
        Task.detached(priority: .background) { runWarmUp() }
    }

    static let warmUpRunbook = """
        name: warm-up
        description: built in; never run
        hosts: all
        params:
          workers: { type: int, default: 4 }
          mode: { type: enum, default: fast, values: [fast, safe] }
        vars: { port: 8000, names: [a, b] }
        steps:
          - name: Show
            id: show
            command: { run: "echo {{ params.workers }} {{ vars.port }} {{ host.name }}", undo: "true" }
            when: "params.workers > 1 and params.mode == 'fast'"
            timeout: 30s
          - name: Check
            assert: { that: "steps.show.rc == 0", message: "show failed" }
          - name: Wait
            sleep: { duration: 1ms }
        """

    static let warmUpInventory = """
        defaults: { user: deploy, port: 22, host_key_checking: strict }
        groups:
          web: { hosts: [h1] }
        hosts:
          h1: { address: 127.0.0.1, vars: { role: web } }
        """

    static let warmUpDirectory = "/nonexistent-runbook-warm-up"

    private static func runWarmUp() {
        guard let runbook = try? RunbookLoader(root: warmUpDirectory).load(text: warmUpRunbook, file: "warm-up.yml", name: "warm-up"),
              let inventory = try? InventoryLoader(homeDirectory: warmUpDirectory, defaultUser: "deploy")
                .load(text: warmUpInventory, file: "warm-up-inventory.yml"),
              let hosts = try? HostPattern(runbook.hosts).select(from: inventory),
              let secrets = try? SecretStore(environment: [:], file: nil)
        else { return }
        let templates = TemplateEngine(templatesDirectory: warmUpDirectory)
        try? checkTemplates(runbook, templates: templates)
        let params: [String: Value] = ["workers": .int(4), "mode": .string("fast")]
        let context = TemplateContext(params: params, host: ["name": .string(hosts.first?.name ?? "h1")], secrets: secrets)
        // A command without template syntax: what every step's command goes through.
        _ = try? templates.render(string: "true", at: SourceLocation(file: "warm-up.yml", line: 1, column: 1),
                                  context: context, secrets: .references)
        _ = sha256Hex(canonicalJSON(params))
        let encoder = JSONEncoder()
        _ = try? encoder.encode(UndoRecord.irreversible("command without undo"))
        let info = LockInfo(runID: "20260101-000000-0000", controller: "warm-up", pid: 1, user: "warm-up",
                            startedAt: "2026-01-01T00:00:00Z", runbook: "warm-up")
        _ = LockInfo.decode(info.encoded())
        _ = Journal.timestamp()
    }
}

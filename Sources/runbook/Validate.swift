import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine

extension Runbook {
    /// `runbook validate [NAME…]`: static checks of runbooks and the inventory; no host is contacted.
    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "validate",
            abstract: "Check runbooks (all of them by default) and the inventory without contacting any host.",
            discussion: """
                Prints "ok  NAME" for each valid runbook and every problem of the others on stderr, \
                with file, line, column and field. Also checks the inventory when there is one, and \
                each runbook's hosts: pattern against it. Exits 2 when anything is invalid.
                """)

        @Argument(help: "Runbook names (or paths to runbook files); all runbooks under ROOT/runbooks when none is given.")
        var names: [String] = []

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let loader = RunbookLoader(root: context.root)
            var invalid = false

            // The inventory: checked when present, or when one was asked for explicitly.
            var inventory: Inventory?
            let explicitInventory = options.inventory != nil || ProcessInfo.processInfo.environment["RUNBOOK_INVENTORY"] != nil
            let inventoryFile = RunbookLoader.displayPath(context.inventoryPath)
            if explicitInventory || FileManager.default.fileExists(atPath: context.inventoryPath) {
                do throws(DiagnosticError) {
                    let loaded = try context.loadInventory()
                    inventory = loaded
                    report(context, ["inventory": inventoryFile, "ok": true, "hosts": loaded.hosts.count],
                           human: "ok  inventory \(inventoryFile) (\(loaded.hosts.count) host\(loaded.hosts.count == 1 ? "" : "s"))")
                } catch {
                    invalid = true
                    report(context, ["inventory": inventoryFile, "ok": false], diagnostics: error.diagnostics)
                }
            } else if !context.json {
                context.err.write(context.err.paint("note: no inventory at \(inventoryFile): hosts: patterns are not checked", .dim) + "\n")
            }

            // The runbooks.
            var targets: [(name: String, file: String, load: () throws(DiagnosticError) -> RunbookCore.Runbook)] = []
            if names.isEmpty {
                let all = loader.names()
                if all.isEmpty {
                    throw DiagnosticError(.error(
                        "no runbooks to validate in \(RunbookLoader.displayPath(loader.runbooksDirectory))/",
                        hint: "runbooks are files ROOT/runbooks/NAME.yml; pass --root DIR for another project"))
                }
                for name in all {
                    let path = loader.path(for: name)
                    targets.append((name, RunbookLoader.displayPath(path), { () throws(DiagnosticError) in try loader.load(path: path) }))
                }
            } else {
                for name in names {
                    if name.contains("/") || name.hasSuffix(".yml") || name.hasSuffix(".yaml") {
                        let path = Context.absolute(name, base: FileManager.default.currentDirectoryPath)
                        targets.append((RunbookLoader.runbookName(forPath: path), RunbookLoader.displayPath(path), { () throws(DiagnosticError) in
                            guard FileManager.default.fileExists(atPath: path) else {
                                throw DiagnosticError(.error("runbook file not found: \(name)"))
                            }
                            return try loader.load(path: path)
                        }))
                    } else {
                        targets.append((name, RunbookLoader.displayPath(loader.path(for: name)), { () throws(DiagnosticError) in
                            try loader.load(name: name)
                        }))
                    }
                }
            }

            var good = 0
            for target in targets {
                do throws(DiagnosticError) {
                    let runbook = try target.load()
                    var problems = inventory.map { loader.checkHosts(runbook, against: $0) } ?? []
                    problems += loader.checkSchedule(runbook)
                    problems += Engine.rawWarnings(runbook)
                    // The same template checks apply runs before contacting any host.
                    do throws(DiagnosticError) {
                        try Engine.checkTemplates(runbook, templates: TemplateEngine(templatesDirectory: loader.templatesDirectory))
                    } catch {
                        problems += error.diagnostics
                    }
                    if problems.contains(where: { $0.severity == .error }) {
                        invalid = true
                        report(context, ["name": target.name, "file": runbook.file, "ok": false], diagnostics: problems)
                    } else {
                        good += 1
                        report(context, ["name": target.name, "file": runbook.file, "ok": true, "steps": runbook.steps.count],
                               human: "ok  \(target.name)", diagnostics: problems)
                    }
                } catch {
                    invalid = true
                    report(context, ["name": target.name, "file": target.file, "ok": false], diagnostics: error.diagnostics)
                }
            }
            if !context.json, targets.count > 1 || invalid {
                let bad = targets.count - good
                let summary = "\(targets.count) runbook\(targets.count == 1 ? "" : "s"): \(good) ok" + (bad > 0 ? ", \(bad) invalid" : "")
                (invalid ? context.err : context.out).write(summary + (invalid && bad == 0 ? "; the inventory is invalid" : "") + "\n")
            }
            if invalid { throw ExitCode(2) }
        }

        /// Prints one result: a JSON line with `fields` (and the diagnostics), or `human` on stdout and the diagnostics on stderr.
        func report(_ context: Context, _ fields: [String: Any], human: String? = nil, diagnostics: [Diagnostic] = []) {
            if context.json {
                var object = fields
                object["event"] = "validate"
                let encoder = JSONEncoder()
                object["diagnostics"] = diagnostics.compactMap { d -> Any? in
                    guard let data = try? encoder.encode(d) else { return nil }
                    return try? JSONSerialization.jsonObject(with: data)
                }
                context.out.write(List.jsonLine(object))
                return
            }
            if let human { context.out.write(context.out.paint(human, .green) + "\n") }
            if !diagnostics.isEmpty {
                context.err.write(DiagnosticError(diagnostics).rendered(color: context.err.colorEnabled) + "\n")
            }
        }
    }
}

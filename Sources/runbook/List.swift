import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine

extension Runbook {
    /// `runbook list`: the runbooks under ROOT/runbooks with their descriptions, params and schedules.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List the runbooks with their descriptions, params and schedules.",
            discussion: "No host is contacted. A runbook that fails to load is listed with its first error, and the command then exits 2.")

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            let loader = RunbookLoader(root: context.root)
            let entries = loader.list()
            var failed = 0
            if context.json {
                for entry in entries {
                    var object: [String: Any] = ["name": entry.name]
                    switch entry.result {
                    case .success(let runbook):
                        object = Self.jsonObject(runbook)
                    case .failure(let error):
                        failed += 1
                        object["file"] = RunbookLoader.displayPath(loader.path(for: entry.name))
                        object["error"] = (error.errors.first ?? error.diagnostics.first)?.rendered ?? "invalid runbook"
                        object["errors"] = error.errors.count
                    }
                    context.out.write(Self.jsonLine(object))
                }
            } else if entries.isEmpty {
                context.err.write("no runbooks in \(RunbookLoader.displayPath(loader.runbooksDirectory))/ (runbooks are files NAME.yml there)\n")
            } else {
                let rows = entries.map { entry -> [String] in
                    switch entry.result {
                    case .success(let runbook):
                        let params = runbook.params.map(Self.paramSummary).joined(separator: ", ")
                        return [runbook.name, runbook.description, params.isEmpty ? "-" : params, runbook.schedule ?? "-"]
                    case .failure(let error):
                        failed += 1
                        let first = (error.errors.first ?? error.diagnostics.first).map(Self.oneLine) ?? "invalid runbook"
                        let more = error.errors.count > 1 ? " (+\(error.errors.count - 1) more)" : ""
                        return [entry.name, context.out.paint("INVALID: " + first + more, .red), "-", "-"]
                    }
                }
                context.out.write(table(header: ["NAME", "DESCRIPTION", "PARAMS", "SCHEDULE"], rows: rows, terminal: context.out, wrap: [1, 2]))
                if failed > 0 {
                    context.err.write("\(failed) of \(entries.count) runbook\(entries.count == 1 ? "" : "s") invalid: run `runbook validate` for every problem\n")
                }
            }
            if failed > 0 { throw ExitCode(2) }
        }

        /// `workers:int=8`, `target:enum (a|b)` (required when there is no default).
        static func paramSummary(_ spec: ParamSpec) -> String {
            var text = "\(spec.name):\(spec.type.description)"
            if let value = spec.defaultValue { text += "=\(value)" } else { text += " (required)" }
            return text
        }

        /// A diagnostic on one line: `file:line:col: field: summary`.
        static func oneLine(_ diagnostic: Diagnostic) -> String {
            var text = diagnostic.location.map { "\($0): " } ?? ""
            if let field = diagnostic.field, !field.isEmpty { text += "\(field): " }
            return text + diagnostic.summary
        }

        static func jsonObject(_ runbook: RunbookCore.Runbook) -> [String: Any] {
            var object: [String: Any] = [
                "name": runbook.name, "description": runbook.description, "hosts": runbook.hosts,
                "file": runbook.file, "steps": runbook.steps.count,
                "params": runbook.params.map { spec -> [String: Any] in
                    var param: [String: Any] = ["name": spec.name, "type": spec.type.description, "required": spec.defaultValue == nil]
                    if case .enumeration(let values) = spec.type {
                        param["type"] = "enum"
                        param["values"] = values
                    }
                    if let value = spec.defaultValue { param["default"] = jsonValue(value) }
                    if let min = spec.min { param["min"] = min }
                    if let max = spec.max { param["max"] = max }
                    if let description = spec.description { param["description"] = description }
                    return param
                },
            ]
            object["schedule"] = runbook.schedule ?? NSNull()
            return object
        }

        static func jsonValue(_ value: Value) -> Any {
            switch value {
            case .string(let s): return s
            case .int(let i): return i
            case .double(let d): return d
            case .bool(let b): return b
            case .list(let l): return l.map(jsonValue)
            case .map(let m): return m.mapValues(jsonValue)
            case .null: return NSNull()
            }
        }

        /// One JSON object on one line, keys sorted.
        static func jsonLine(_ object: [String: Any]) -> String {
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self) + "\n"
        }
    }
}

import Foundation
import RunbookCore
import RunbookSteps

/// Secret values by name: the controller's `RUNBOOK_SECRET_NAME` environment variables, then
/// `NAME=value` lines of `.runbook/secrets.env` (which must be mode 0600).
public struct SecretStore: Sendable {
    private let values: [String: String]

    /// Loads secrets; a secrets file readable by others is refused, naming the file.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment, file: String?) throws(DiagnosticError) {
        var values: [String: String] = [:]
        if let file, FileManager.default.fileExists(atPath: file) {
            let mode = ((try? FileManager.default.attributesOfItem(atPath: file))?[.posixPermissions] as? NSNumber)?.intValue ?? 0
            if mode & 0o077 != 0 {
                throw DiagnosticError([.error("secrets file is readable by others (mode \(String(mode, radix: 8)))",
                    at: SourceLocation(file: file, line: 1, column: 1),
                    hint: "run `chmod 600 \(file)`")])
            }
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
                guard let eq = trimmed.firstIndex(of: "=") else {
                    throw DiagnosticError([.error("expected NAME=value",
                        at: SourceLocation(file: file, line: index + 1, column: 1))])
                }
                var value = String(trimmed[trimmed.index(after: eq)...])
                if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                    value = String(value.dropFirst().dropLast())
                }
                values[String(trimmed[..<eq]).trimmingCharacters(in: .whitespaces)] = value
            }
        }
        for (key, value) in environment where key.hasPrefix("RUNBOOK_SECRET_") {
            values[String(key.dropFirst("RUNBOOK_SECRET_".count))] = value
        }
        self.values = values
    }

    /// The secret called `name`, if defined.
    public func value(_ name: String) -> String? { values[name] }

    /// The secret called `name`, or else by its environment form: `db_password` also finds
    /// `DB_PASSWORD` (what `RUNBOOK_SECRET_DB_PASSWORD` gives). For names recorded earlier,
    /// such as an undo command's, when the secret now comes from the environment.
    public func lookup(_ name: String) -> String? {
        value(name) ?? value(String(Shell.secretVariable(name).dropFirst("RUNBOOK_SECRET_".count)))
    }

    /// Every defined secret name.
    public var names: [String] { values.keys.sorted() }

    /// A masker for every defined secret value.
    public var masker: SecretMasker { SecretMasker(secrets: Array(values.values)) }
}

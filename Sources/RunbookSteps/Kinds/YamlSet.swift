import Foundation
import RunbookCore

/// `yaml_set`: edit one node of an existing YAML file in place (a compose file the operator
/// wrote). The new text is spliced in where the node is written; every other byte stays as
/// it was: comments, anchors and merge keys, quoting, key order, blank lines, CRLF. With
/// `value` it sets the node (`create: true` adds a missing key; `null` removes it); with
/// `flag` it sets one option of the command held there (`--workers 4`, `--workers=4`,
/// `-w 4`), inserting an absent one after the program name. A key inherited through `<<:
/// *anchor` is written into the mapping that merges it, never into the shared anchor.
/// Plan: a unified diff; apply and undo as `template` (the previous bytes come back).
package struct YamlSetStep: StepKind {
    package static let schema = StepKindSchema(
        name: "yaml_set", summary: "edit one node of a YAML file in place, keeping every other byte",
        arguments: [
            ArgumentSpec("file", .string, required: true, "the YAML file on the host"),
            ArgumentSpec("path", .string, required: true,
                         "dotted path to the node: services.web.command, services.web.environment.WEB_CONCURRENCY, a list index as .0; a key with dots in double quotes"),
            ArgumentSpec("value", .any, "the new value (scalar, list or mapping); null removes the key"),
            ArgumentSpec("create", .bool, default: false, "add the missing keys at the end of the path instead of failing"),
            ArgumentSpec("flag", .map,
                         "set one option of the command at path: name (e.g. --workers), aliases (e.g. [-w]), value (null removes it), after (the program an absent option follows; default: the command's first word)"),
            ArgumentSpec("mode", .fileMode, "permissions, in octal (default: those of the file)"),
            ArgumentSpec("validate", .command,
                         "command that must pass on the candidate file before it is put in place; %s is its path; `compose` checks it with the host's docker compose (v2) or docker-compose (v1)"),
        ])
    package static func undoPolicy(_ arguments: Value) -> UndoBehavior { .restore }
    /// Written over SFTP as the login user, like `template`.
    package static let supportsBecome = false
    package static func defaultName(_ arguments: [String: Value]) -> String {
        var name = "yaml_set \(arguments["file"]?.description ?? "") \(arguments["path"]?.description ?? "")"
        if let flag = arguments["flag"]?.mapValue?["name"]?.stringValue { name += " \(flag)" }
        return name
    }
    package init() {}

    package func plan(step: Step, host: RunbookCore.Host, arguments: RenderedArguments, facts: FactReader) async throws -> HostStepPlan {
        guard let file = arguments.string("file") else { throw StepFailure("yaml_set needs file") }
        guard file.hasPrefix("/") else { throw StepFailure("file must be an absolute path, got \(file)") }
        guard let pathText = arguments.string("path") else { throw StepFailure("yaml_set needs path, e.g. services.web.command") }
        let edit: YAMLEdit
        do {
            edit = YAMLEdit(path: try YAMLEdit.parsePath(pathText), operation: try Self.operation(arguments),
                            create: try arguments.bool("create", default: false))
        } catch let failure as YAMLEdit.Failure {
            throw StepFailure(failure.description)
        }
        guard let current = try await facts.file(file) else {
            throw StepFailure.onHost("\(file) does not exist on \(host.name); yaml_set edits an existing file (use template or copy to create one)")
        }
        let edited: [UInt8]
        do {
            edited = try edit.apply(to: current.contents)
        } catch {
            throw StepFailure("\(file): \(error.description)")
        }
        var fileArguments = RenderedArguments(strings: ["dest": file], raw: [:], fileContents: edited)
        fileArguments.raw["mode"] = arguments.raw["mode"]
        fileArguments.commands["validate"] = arguments.commands["validate"]
        return try await FilePlanner().plan(step: step, host: host, arguments: fileArguments, facts: facts)
    }

    /// `value` or `flag`, exactly one.
    static func operation(_ arguments: RenderedArguments) throws -> YAMLEdit.Operation {
        let hasValue = arguments.raw.keys.contains("value")
        let flagArgument = arguments.raw["flag"]
        switch (hasValue, flagArgument) {
        case (true, _?): throw StepFailure("give either value or flag, not both")
        case (false, nil): throw StepFailure("yaml_set needs value (the new node) or flag (an option of the command at path)")
        case (true, nil):
            // A templated value is its rendered text; a list or mapping had its strings rendered.
            if let rendered = arguments.strings["value"] { return .set(.string(rendered)) }
            return .set(arguments.raw["value"] ?? .null)
        case (false, let flag?):
            guard case .map(let entries) = flag else { throw StepFailure("flag must be a mapping: {name: --workers, value: 4}") }
            for key in entries.keys where !["name", "aliases", "value", "after"].contains(key) {
                throw StepFailure("flag: unknown key \(key.debugDescription) (name, aliases, value, after)")
            }
            guard let name = entries["name"]?.stringValue, Self.isOption(name) else {
                throw StepFailure("flag needs name, an option such as --workers or -w")
            }
            var aliases: [String] = []
            switch entries["aliases"] {
            case nil, .null?: break
            case .string(let one)?: aliases = [one]
            case .list(let items)?: aliases = items.compactMap(\.stringValue)
            default: throw StepFailure("flag: aliases must be a list of options, e.g. [-w]")
            }
            for alias in aliases where !Self.isOption(alias) { throw StepFailure("flag: alias \(alias.debugDescription) is not an option such as -w") }
            var value: String?
            switch entries["value"] {
            case nil: throw StepFailure("flag needs value (null removes the option)")
            case .null?: value = nil
            case .string(let text)?: value = text
            case .int(let number)?: value = String(number)
            case .double(let number)?: value = String(number)
            case .bool(let flag)?: value = flag ? "true" : "false"
            default: throw StepFailure("flag: value must be one word")
            }
            if let value, !Self.isWord(value) {
                throw StepFailure("flag: value \(value.debugDescription) must be one word of letters, digits and _ . / : @ % + , = -")
            }
            let after = entries["after"]?.stringValue
            if let after, !Self.isWord(after) { throw StepFailure("flag: after \(after.debugDescription) must be one word") }
            return .flag(YAMLEdit.Flag(name: name, aliases: aliases, value: value, after: after))
        }
    }

    /// `--workers`, `-w`: a dash and a word.
    static func isOption(_ text: String) -> Bool {
        text.hasPrefix("-") && text.count >= 2 && !text.contains("=") && isWord(text)
    }

    /// One word that needs no quoting in a command, in YAML or in a shell.
    static func isWord(_ text: String) -> Bool {
        !text.isEmpty && !text.hasPrefix("#") && text.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "_./:@%+,=-".unicodeScalars.contains($0)
        }
    }
}

import Foundation
import RunbookCore
import RunbookEngine

/// `runbook apply NAME …` recognised before the argument parser runs, so that the project
/// loads and the hosts' connections go up on other threads meanwhile (`HeadStart`). Parsing
/// the arguments costs about as much as loading a small project; the handshakes then start
/// that much earlier.
///
/// Only the plain shape is recognised: the runbook's name and `-p`, `-l`, `-i`, `--root`,
/// `--state-dir`, `--forks`, `--color`, `--json`, `--yes`, `--no-rollback` and `-v`, each
/// option and its value as separate words or `--name=value`. Anything else (`--plan`,
/// `--log`, `--help`, a second name, an unknown word, a value that starts with `-`) begins
/// nothing. Whatever is begun is only a guess: `Engine.apply` takes it only when the parsed
/// request and settings are exactly the same, so a guess that differs costs a connection
/// that is closed unused, never a different run.
enum EarlyApply {
    /// The head start begun for this process's arguments, if any.
    nonisolated(unsafe) private(set) static var headStart: HeadStart?

    /// Begins the head start when `arguments` (without the program name) are a plain apply.
    static func begin(_ arguments: [String]) {
        guard let (request, settings) = recognise(arguments) else { return }
        headStart = HeadStart(request, settings: settings)
    }

    /// The request and settings a plain `apply` command line parses to; nil for anything else.
    static func recognise(_ arguments: [String]) -> (RunRequest, EngineSettings)? {
        guard arguments.first == "apply" else { return nil }
        var name: String?
        var params: [String: String] = [:]
        var limit: String?, inventory: String?, root: String?, stateDir: String?
        var forks = 10, verbose = 0
        var words = arguments.dropFirst().makeIterator()
        while let word = words.next() {
            guard word.hasPrefix("-") else {
                guard name == nil else { return nil }
                name = word
                continue
            }
            if word.count > 1, word.dropFirst().allSatisfy({ $0 == "v" }) {
                verbose += word.count - 1
                continue
            }
            var option = word
            var value: String?
            if word.hasPrefix("--"), let eq = word.firstIndex(of: "=") {
                option = String(word[..<eq])
                value = String(word[word.index(after: eq)...])
            }
            switch option {
            case "--yes", "--no-rollback", "--json":
                guard value == nil else { return nil }
                continue
            case "-p", "--param", "-l", "--limit", "-i", "--inventory", "--root", "--state-dir", "--forks", "--color":
                break
            default:
                return nil
            }
            if value == nil { value = words.next() }
            guard let value, !value.hasPrefix("-") else { return nil }
            switch option {
            case "-p", "--param":
                guard let (key, assigned) = ParamValues.parseAssignment(value) else { return nil }
                params[key] = assigned
            case "-l", "--limit": limit = value
            case "-i", "--inventory": inventory = value
            case "--root": root = value
            case "--state-dir": stateDir = value
            case "--forks":
                guard let number = Int(value), number >= 1 else { return nil }
                forks = number
            default: // --color
                guard ColorChoice(rawValue: value) != nil else { return nil }
            }
        }
        guard let name else { return nil }
        let (rootPath, statePath, inventoryPath) = Context.locations(root: root, stateDir: stateDir, inventory: inventory)
        return (RunRequest(runbook: name, params: params, limit: limit),
                EngineSettings(root: rootPath, stateDir: statePath, inventoryPath: inventoryPath, forks: forks,
                               logger: Context.logger(verbose: verbose)))
    }
}

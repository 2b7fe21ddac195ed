import ArgumentParser
import Foundation
import Logging
import RunbookCore
import RunbookEngine

/// Everything a command needs, built once from the global options: paths, logger, output,
/// secrets. Commands stay thin and every side effect goes through here.
struct Context {
    let root: String
    let stateDir: String
    let inventoryPath: String
    let logger: Logger
    let out: Terminal
    let err: Terminal
    let json: Bool
    let forks: Int
    /// `-v` or more: plans show built-in kinds' generated scripts whole.
    let verbose: Bool

    init(_ options: GlobalOptions) {
        let environment = ProcessInfo.processInfo.environment
        (root, stateDir, inventoryPath) = Context.locations(root: options.root, stateDir: options.stateDir, inventory: options.inventory)
        json = options.json
        forks = options.forks
        verbose = options.verbose > 0
        let noColor = environment["NO_COLOR"].map { !$0.isEmpty } ?? false
        func colored(_ fd: Int32) -> Bool {
            switch options.color {
            case .always: return true
            case .never: return false
            case .auto: return !noColor && isatty(fd) == 1 && environment["TERM"] != "dumb"
            }
        }
        out = Terminal(fd: 1, color: colored(1))
        err = Terminal(fd: 2, color: colored(2))
        logger = Context.logger(verbose: options.verbose)
    }

    /// The project root, state dir and inventory file that `--root`, `--state-dir` and `-i`
    /// (or `$RUNBOOK_INVENTORY`) name, made absolute against the current directory.
    static func locations(root: String?, stateDir: String?, inventory: String?) -> (root: String, stateDir: String, inventoryPath: String) {
        let cwd = FileManager.default.currentDirectoryPath
        let root = root.map { absolute($0, base: cwd) } ?? cwd
        let stateDir = stateDir.map { absolute($0, base: cwd) } ?? root + "/.runbook"
        let inventoryPath = (inventory ?? ProcessInfo.processInfo.environment["RUNBOOK_INVENTORY"])
            .map { absolute($0, base: cwd) } ?? root + "/inventory/hosts.yml"
        return (root, stateDir, inventoryPath)
    }

    /// The logger for `-v` given `verbose` times (logging is set up on the first call).
    static func logger(verbose: Int) -> Logger {
        let level: Logger.Level = verbose >= 2 ? .debug : (verbose == 1 ? .info : .warning)
        LoggingBootstrap.once(level: level)
        var logger = Logger(label: "runbook")
        logger.logLevel = level
        return logger
    }

    static func absolute(_ path: String, base: String) -> String {
        if path.hasPrefix("/") { return path }
        if path == "~" || path.hasPrefix("~/") {
            return NSHomeDirectory() + path.dropFirst()
        }
        return base + "/" + path
    }

    /// Asks `question` on the terminal unless `yes`; refuses (exit 3, nothing changed) when
    /// there is no terminal to ask on or the answer is not exactly `yes`.
    func confirmOrRefuse(_ question: String, yes: Bool, what: String) throws {
        if yes { return }
        guard let answer = Self.ask(question, out: out, interactive: isatty(0) == 1 && !json) else {
            err.write("refused: no terminal to ask on; pass --yes to \(what) without asking\n")
            throw ExitCode(3)
        }
        guard answer else {
            err.write("not confirmed; nothing was changed\n")
            throw ExitCode(3)
        }
    }

    /// Writes `question` and reads a line: true only for `yes`; nil without a terminal.
    static func ask(_ question: String, out: Terminal, interactive: Bool) -> Bool? {
        guard interactive else { return nil }
        out.write(question + " Only 'yes' will be accepted: ")
        return readLine()?.trimmingCharacters(in: .whitespaces) == "yes"
    }

    /// The inventory, with its warnings printed.
    func loadInventory() throws(DiagnosticError) -> Inventory {
        guard FileManager.default.fileExists(atPath: inventoryPath) else {
            throw DiagnosticError(.error("inventory file not found: \(inventoryPath)",
                hint: "create inventory/hosts.yml, or pass -i FILE or set RUNBOOK_INVENTORY"))
        }
        let inventory = try InventoryLoader.forCurrentUser().load(path: inventoryPath)
        for warning in inventory.warnings { err.write(warning.rendered + "\n") }
        return inventory
    }

    /// Secrets from the environment and `STATE/secrets.env`.
    func loadSecrets() throws(DiagnosticError) -> SecretStore {
        try SecretStore(file: stateDir + "/secrets.env")
    }

    /// The hosts a LIMIT or PATTERN selects.
    func select(_ pattern: String, in inventory: Inventory) throws(DiagnosticError) -> [RunbookCore.Host] {
        try HostPattern(pattern).select(from: inventory)
    }
}

/// Logging goes to stderr, bootstrapped once per process.
enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false
    static func once(level: Logger.Level) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

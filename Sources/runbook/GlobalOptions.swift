import ArgumentParser

/// Options every command accepts (SPEC §2).
struct GlobalOptions: ParsableArguments {
    @Option(name: [.customShort("i"), .long], help: "Inventory file (default: $RUNBOOK_INVENTORY or inventory/hosts.yml).")
    var inventory: String?

    @Option(help: "Project root (default: the current directory).")
    var root: String?

    @Option(help: "State directory for the journal, saved plans and locks (default: ROOT/.runbook).")
    var stateDir: String?

    @Option(help: "Hosts worked on at once.")
    var forks: Int = 10

    @Flag(help: "JSON Lines events on stdout instead of human output.")
    var json = false

    @Option(help: "Colour output: auto, always or never (NO_COLOR is honoured).")
    var color: ColorChoice = .auto

    @Flag(name: .short, help: "More detail on stderr (-v: progress, -vv: debug).")
    var verbose: Int

    func validate() throws {
        guard forks >= 1 else { throw ValidationError("--forks must be at least 1") }
    }
}

/// `--color` values.
enum ColorChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
}

import ArgumentParser
import Foundation
import RunbookCore
import RunbookEngine

extension Runbook {
    /// `runbook unlock HOST`: remove a lock left by a dead run.
    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "unlock",
            abstract: "Remove a lock left by a dead run (a host, or `local` for this controller's lock), after confirming.")

        @Argument(help: "An inventory host, or `local` for the controller's own lock.")
        var host: String

        @Flag(help: "Remove without asking.")
        var yes = false

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let context = Context(options)
            var holder: LockInfo?
            var transport: (any Transport)? = nil
            var lockPath = HostLock.defaultPath
            // A lock that names no run (empty or unreadable: its taker was killed between creating
            // and writing it) can only be removed by hand; say so and offer that.
            var nameless = false
            if host == "local" {
                do { holder = try LocalLock.read(stateDir: context.stateDir) } catch let held as LockHeld where held.holder == nil {
                    holder = nil
                    nameless = true
                    lockPath = held.path
                }
            } else {
                let inventory = try context.loadInventory()
                guard let target = inventory.host(named: host) else {
                    throw DiagnosticError(.error("no host named \(host) in \(context.inventoryPath)", hint: "run `runbook hosts`"))
                }
                let connector = Connector(secrets: try context.loadSecrets(), logger: context.logger)
                do {
                    transport = try await connector.connect(target)
                } catch {
                    context.err.write("error: \(error)\n")
                    throw ExitCode(1)
                }
                lockPath = target.lockPath
                do { holder = try await HostLock.read(on: transport!, path: lockPath) } catch let held as LockHeld where held.holder == nil {
                    holder = nil
                    nameless = true
                }
            }
            defer { if let transport { Task { await transport.close() } } }
            /// Removes the lock once the operator confirms.
            func remove() async throws {
                try context.confirmOrRefuse("Remove this lock?", yes: yes, what: "remove it")
                if let transport {
                    try await HostLock.forceRemove(on: transport, path: lockPath)
                } else {
                    try LocalLock.forceRemove(stateDir: context.stateDir)
                }
                context.out.write("unlocked \(host)\n")
            }
            if nameless {
                context.out.write("\(host) has a lock at \(lockPath) that names no run (empty or unreadable: whoever took it was stopped before writing it)\n")
                try await remove()
                return
            }
            guard let holder else {
                context.out.write("\(host) is not locked\n")
                return
            }
            context.out.write("\(host) is locked by run \(holder.runID) (runbook \(holder.runbook)) from \(holder.controller) pid \(holder.pid), user \(holder.user), since \(holder.startedAt)\n")
            if holder.controller == ControllerIdentity.hostname && LockInfo.processIsAlive(holder.pid) {
                context.err.write("refused: that run is still alive on this controller (pid \(holder.pid))\n")
                throw ExitCode(3)
            }
            try await remove()
        }
    }
}

import Foundation
import RunbookCore
import RunbookSteps

/// One host's lock at the start of an apply: taken, or refused with the reason.
struct HostLockAttempt: Sendable {
    let transport: any Transport
    let path: String
    /// Why the lock was not taken (held by another run, or an error); nil when it was.
    let refusal: String?
}

/// A host's connection at the start of an apply, and its lock when one was attempted.
struct ConnectedHost: Sendable {
    let connection: Result<any Transport, TransportError>
    let lock: HostLockAttempt?
}

/// Why the host locks of a run were not taken.
struct HostLockRefusal: Error, Sendable {
    let message: String
}

extension Engine {
    /// Host locks, all or nothing: taken on every host at once (up to --forks), one command
    /// each. When any host refuses, the ones taken are released again and the first refusal
    /// in inventory order is returned.
    func lockHosts(_ hosts: [RunbookCore.Host], transports: [String: any Transport],
                   info: LockInfo) async -> Result<[HostLockAttempt], HostLockRefusal> {
        let attempts = await boundedMap(hosts, limit: settings.forks) { host in
            await Self.lock(host, transport: transports[host.name]!, info: info)
        }
        return await allOrNothing(attempts, info: info)
    }

    /// Takes one host's lock.
    static func lock(_ host: RunbookCore.Host, transport: any Transport, info: LockInfo) async -> HostLockAttempt {
        do {
            try await HostLock.acquire(on: transport, info: info, path: host.lockPath)
            return HostLockAttempt(transport: transport, path: host.lockPath, refusal: nil)
        } catch {
            return HostLockAttempt(transport: transport, path: host.lockPath, refusal: "\(error)")
        }
    }

    /// The locks taken, when every attempt took one; else releases those taken and returns
    /// the first refusal (attempts are in inventory order).
    func allOrNothing(_ attempts: [HostLockAttempt], info: LockInfo) async -> Result<[HostLockAttempt], HostLockRefusal> {
        let locked = attempts.filter { $0.refusal == nil }
        if let refusal = attempts.lazy.compactMap(\.refusal).first {
            await releaseHostLocks(locked, info: info)
            return .failure(HostLockRefusal(message: refusal))
        }
        return .success(locked)
    }

    /// Connects to every host (up to --forks at once) and takes each one's lock as soon as it
    /// is connected and `info` is known; no lock is taken without `info` or when it comes
    /// back nil.
    func connectAndLockAll(_ hosts: [RunbookCore.Host], secrets: SecretStore,
                           info: Task<LockInfo?, Never>?) async -> [String: ConnectedHost] {
        let connector = Connector(secrets: secrets, logger: settings.logger, opener: settings.opener)
        let results = await boundedMap(hosts, limit: settings.forks) { host -> (String, ConnectedHost) in
            let transport: any Transport
            do throws(TransportError) {
                transport = try await connector.connect(host)
            } catch {
                return (host.name, ConnectedHost(connection: .failure(error), lock: nil))
            }
            guard let info = await info?.value else {
                return (host.name, ConnectedHost(connection: .success(transport), lock: nil))
            }
            return (host.name, ConnectedHost(connection: .success(transport), lock: await Self.lock(host, transport: transport, info: info)))
        }
        return Dictionary(uniqueKeysWithValues: results)
    }

    /// Releases the host locks `lockHosts` took with `info`, on every host at once; with
    /// `thenClose`, each host's connection is closed right after its lock is released.
    func releaseHostLocks(_ locked: [HostLockAttempt], info: LockInfo, thenClose: Bool = false) async {
        _ = await boundedMap(locked, limit: settings.forks) { lock in
            _ = try? await HostLock.release(on: lock.transport, info: info, path: lock.path)
            if thenClose { await lock.transport.close() }
        }
    }
}

import Foundation
import Testing
import TestSupport

/// `compose_scale` and `docker_prune` end to end: the built binary against a real dockerd
/// running inside test host h2 (started by `scripts/docker-test up`), with compose v1
/// (`docker-compose`) and, through a stand-in CLI plugin, the `docker compose` v2 form.
@Suite("docker steps", .serialized)
struct DockerStepTests {
    let env: TestHosts
    static let host = "h2"

    init() throws {
        env = try TestHosts.load()
        try Self.startDocker()
    }

    /// Starts (or checks) the Docker stack in h2; fast when it already runs.
    static func startDocker() throws {
        let r = try runProcessFull(repositoryRoot + "/scripts/docker-test", ["up", host])
        guard r.status == 0 else {
            throw DockerStackFailed(message: "scripts/docker-test up \(host) failed (\(r.status)):\n\(r.stderr)")
        }
    }

    /// A compose project of its own in the test's remote directory (services web and
    /// worker, see scripts/docker-test.d/docker-compose.yml), with one worker running.
    func composeProject(_ p: RunbookProject, workers: Int = 1) throws -> String {
        let file = p.remoteDir + "/docker-compose.yml"
        try FileManager.default.copyItem(atPath: repositoryRoot + "/scripts/docker-test.d/docker-compose.yml", toPath: file)
        try host("docker-compose -f \(file) up -d --no-recreate --scale worker=\(workers) worker")
        #expect(try running(p, "worker") == workers)
        return file
    }

    /// Removes the project's containers.
    func removeProject(_ p: RunbookProject) {
        _ = try? env.inHost(Self.host, "docker-compose -f \(p.remoteDir)/docker-compose.yml down -t 0 >/dev/null 2>&1")
    }

    /// Running containers of `service` in the project in `p.remoteDir`, counted by `docker ps` on the host.
    func running(_ p: RunbookProject, _ service: String) throws -> Int {
        let out = try host("docker ps -q --filter label=com.docker.compose.project.working_dir=\(p.remoteDir) --filter label=com.docker.compose.service=\(service) | wc -l")
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Runs a shell command in h2; a failure fails the test.
    @discardableResult
    func host(_ command: String) throws -> String {
        let r = try env.inHost(Self.host, command)
        #expect(r.status == 0, "on \(Self.host): \(command)")
        return r.stdout
    }

    func scaleRunbook(_ p: RunbookProject, file: String, failAfter: Bool = false) throws {
        // The failing step first notes how many workers docker ps counts at that moment.
        let count = "docker ps -q --filter label=com.docker.compose.project.working_dir=\(p.remoteDir) --filter label=com.docker.compose.service=worker | wc -l > \(p.remoteDir)/mid-run"
        let fail = failAfter ? "  - name: Fail\n    command: { run: \"\(count); false\" }\n" : ""
        try p.write("runbooks/scale.yml", """
            name: scale
            description: Scale the workers
            hosts: \(Self.host)
            params:
              replicas: { type: int, default: 3, min: 0, max: 10 }
            steps:
              - name: Scale workers
                compose_scale: { compose_file: "\(file)", service: worker, replicas: "{{ params.replicas }}" }
            \(fail)
            """)
    }

    @Test("compose_scale shows current → wanted, scales 1 → 3 → 1, and is a no-op when equal")
    func scaleUpAndDown() throws {
        let p = try RunbookProject(env)
        defer { removeProject(p); p.cleanUp() }
        let file = try composeProject(p)
        try scaleRunbook(p, file: file)

        let plan = try p.run(["plan", "scale", "-p", "replicas=3"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("~ Scale workers  worker: 1 → 3 replicas in \(file) (docker-compose)"), "\(plan.stdout)")
        #expect(try running(p, "worker") == 1, "plan changed nothing")

        let up = try p.run(["apply", "scale", "-p", "replicas=3", "--yes"])
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        #expect(try running(p, "worker") == 3)
        #expect(try running(p, "web") == 0, "only the named service is touched")

        let same = try p.run(["plan", "scale", "-p", "replicas=3"])
        #expect(same.status == 0, "\(same.stderr)")
        #expect(same.stdout.contains("worker: 3 replicas, as wanted"), "\(same.stdout)")
        #expect(same.stdout.contains("0 to run") && same.stdout.contains("1 unchanged"), "\(same.stdout)")

        let down = try p.run(["apply", "scale", "-p", "replicas=1", "--yes"])
        #expect(down.status == 0, "\(down.stdout)\(down.stderr)")
        #expect(try running(p, "worker") == 1)
    }

    @Test("a failure after compose_scale 1 → 3 rolls the service back to 1 replica")
    func failureRestoresCount() throws {
        let p = try RunbookProject(env)
        defer { removeProject(p); p.cleanUp() }
        let file = try composeProject(p)
        try scaleRunbook(p, file: file, failAfter: true)
        let failed = try p.run(["apply", "scale", "-p", "replicas=3", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("rolled back"), "\(failed.stdout)")
        let midRun = try String(contentsOfFile: p.remoteDir + "/mid-run", encoding: .utf8)
        #expect(midRun.trimmingCharacters(in: .whitespacesAndNewlines) == "3", "workers before the rollback: \(midRun)")
        #expect(try running(p, "worker") == 1)
    }

    @Test("a saved compose_scale plan is refused once the replica count changed")
    func stalePlanRefused() throws {
        let p = try RunbookProject(env)
        defer { removeProject(p); p.cleanUp() }
        let file = try composeProject(p)
        try scaleRunbook(p, file: file)
        let plan = try p.run(["plan", "scale", "-p", "replicas=3", "--out", "saved.json"])
        #expect(plan.status == 0, "\(plan.stderr)")
        try host("docker-compose -f \(file) up -d --no-recreate --scale worker=2 worker >/dev/null 2>&1")
        let apply = try p.run(["apply", "--plan", "saved.json"])
        #expect(apply.status == 3, "\(apply.stdout)\(apply.stderr)")
        #expect((apply.stdout + apply.stderr).contains("stale"))
        #expect(try running(p, "worker") == 2, "nothing was applied")
    }

    @Test("with docker compose v2 present, compose_scale uses it (plan, apply and undo)")
    func prefersComposeV2() throws {
        let p = try RunbookProject(env)
        defer { removeProject(p); p.cleanUp() }
        let file = try composeProject(p)
        // A CLI plugin standing in for compose v2: it logs its arguments and runs v1. It is
        // visible in h2 only: its config directory is bind-mounted over /root/.docker in h2's
        // mount namespace for the duration of the test.
        let config = p.remoteDir + "/docker-config"
        let log = p.remoteDir + "/compose-v2.log"
        try FileManager.default.createDirectory(atPath: config + "/cli-plugins", withIntermediateDirectories: true)
        try """
            #!/bin/sh
            if [ "$1" = docker-cli-plugin-metadata ]; then
                echo '{"SchemaVersion":"0.1.0","Vendor":"runbook tests","Version":"v2.0.0","ShortDescription":"compose v2 stand-in"}'
                exit 0
            fi
            shift
            echo "$*" >>\(log)
            exec docker-compose "$@"

            """.write(toFile: config + "/cli-plugins/docker-compose", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: config + "/cli-plugins/docker-compose")
        let created = try host("if [ -d /root/.docker ]; then echo existed; else mkdir /root/.docker && echo created; fi")
        try host("mount --bind \(config) /root/.docker")
        defer {
            _ = try? env.inHost(Self.host, "umount /root/.docker")
            if created.hasPrefix("created") { _ = try? env.inHost(Self.host, "rmdir /root/.docker") }
        }
        #expect(try host("docker compose version >/dev/null 2>&1 && echo v2") == "v2\n")

        try scaleRunbook(p, file: file, failAfter: true)
        let plan = try p.run(["plan", "scale", "-p", "replicas=2"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("worker: 1 → 2 replicas in \(file) (docker compose)"), "\(plan.stdout)")
        let failed = try p.run(["apply", "scale", "-p", "replicas=2", "--yes"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(try running(p, "worker") == 1)
        let calls = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(calls.contains("-f \(file) up -d --no-recreate --no-deps --scale worker=2 worker"), "\(calls)")
        #expect(calls.contains("-f \(file) up -d --no-recreate --no-deps --scale worker=1 worker"), "\(calls)")
    }

    @Test("docker_prune plans the reclaimable space, removes a dangling image and keeps volumes")
    func pruneDanglingImage() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let tag = "rbtest/dangling:" + UUID().uuidString.prefix(8).lowercased()
        let volume = "rbtest-volume-" + UUID().uuidString.prefix(8).lowercased()
        // Two builds under one tag: the first image loses its tag and is left dangling.
        func build(_ label: String) throws -> String {
            try host("printf 'FROM runbook-test/web:1\\nLABEL rbtest=%s\\n' \(label) | DOCKER_BUILDKIT=0 docker build -q -t \(tag) - 2>/dev/null")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let dangling = try build("first-\(UUID().uuidString)")
        let kept = try build("second-\(UUID().uuidString)")
        #expect(dangling.hasPrefix("sha256:") && kept.hasPrefix("sha256:") && dangling != kept)
        try host("docker volume create \(volume) >/dev/null")
        defer {
            _ = try? env.inHost(Self.host, "docker rmi -f \(tag) >/dev/null 2>&1; docker volume rm -f \(volume) >/dev/null 2>&1")
        }
        #expect(try host("docker images -q --no-trunc -f dangling=true").contains(dangling))

        try p.write("runbooks/prune.yml", """
            name: prune
            description: Reclaim docker disk space
            hosts: \(Self.host)
            steps:
              - name: Prune docker
                docker_prune: {}
            """)
        let plan = try p.run(["plan", "prune"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("dangling image"), "\(plan.stdout)")
        #expect(plan.stdout.contains("reclaimable: dangling images up to "), "\(plan.stdout)")
        #expect(plan.stdout.contains("volumes kept"), "\(plan.stdout)")
        #expect(plan.stdout.contains("(irreversible)"), "\(plan.stdout)")
        #expect(plan.stdout.contains("$ docker system prune -f\n"), "\(plan.stdout)")
        #expect(try env.inHost(Self.host, "docker image inspect \(dangling) >/dev/null 2>&1").status == 0, "plan removed nothing")

        let apply = try p.run(["apply", "prune", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(try env.inHost(Self.host, "docker image inspect \(dangling) >/dev/null 2>&1").status != 0, "the dangling image is gone")
        #expect(try env.inHost(Self.host, "docker image inspect \(tag) >/dev/null 2>&1").status == 0, "tagged images stay without all: true")
        #expect(try env.inHost(Self.host, "docker volume inspect \(volume) >/dev/null 2>&1").status == 0, "volumes stay without volumes: true")
        #expect(try env.inHost(Self.host, "docker image inspect runbook-test/web:1 >/dev/null 2>&1").status == 0)
    }
}

/// `scripts/docker-test up` failed.
struct DockerStackFailed: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

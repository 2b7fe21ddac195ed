import Foundation
import Testing
import TestSupport

/// `fetch`: a file from a host to the controller over the run's SSH session.
@Suite("fetch", .serialized)
struct FetchTests {
    let env: TestHosts
    init() throws { env = try TestHosts.load() }

    func fetchRunbook(_ p: RunbookProject, src: String, keep: Int = 2) throws {
        try p.write("runbooks/offsite.yml", """
            name: offsite
            description: Copy a dump off the host
            hosts: h1
            steps:
              - id: copy
                name: Copy the dump to the controller
                fetch: { src: "\(src)", dest: offsite/h1, keep: \(keep), prefix: app- }
              - name: Say where it went
                command: { run: "echo {{ steps.copy.path }} {{ steps.copy.sha256 }} > \(p.remoteDir)/outputs" }
            """)
    }

    @Test("a 200 MiB file reaches the controller byte for byte, checksummed, streamed (the process stays far below its size); keep removes the oldest copies only")
    func fetchesLargeFileStreaming() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        let src = p.remoteDir + "/app-20261205-030000.dump"
        let made = try p.remote("h1", "head -c 209715200 /dev/urandom > \(src) && sha256sum \(src)")
        let hostDigest = try #require(made.split(separator: " ").first.map(String.init))
        // Older copies already off the host, and a file that is not a copy.
        let offsite = p.root + "/offsite/h1"
        try FileManager.default.createDirectory(atPath: offsite, withIntermediateDirectories: true)
        for (day, name) in ["app-20261201-030000.dump", "app-20261202-030000.dump", "notes.txt"].enumerated() {
            let path = offsite + "/" + name
            try Data("old \(name)\n".utf8).write(to: URL(fileURLWithPath: path))
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 1_700_000_000 + Double(day) * 86400)],
                                                  ofItemAtPath: path)
        }
        try fetchRunbook(p, src: src)

        let plan = try p.run(["plan", "offsite"])
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("+ Copy the dump to the controller  copy \(src) (200.0 MiB) from h1 to \(offsite)/app-20261205-030000.dump on the controller, SHA-256 checked; keep 2 of app-*"),
                "\(plan.stdout)")
        #expect(plan.stdout.contains("$ sha256sum -- \(src)"), "\(plan.stdout)")
        #expect(!FileManager.default.fileExists(atPath: offsite + "/app-20261205-030000.dump"), "plan copied")

        // The peak memory of the apply, measured by its parent.
        let measured = try runProcessFull("/usr/bin/python3", ["-c", """
            import resource, subprocess, sys
            r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
            sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)
            print("maxrss_kib=%d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            sys.exit(r.returncode)
            """, p.binary, "apply", "offsite", "--yes"], environment: ProcessInfo.processInfo.environment.merging(["NO_COLOR": "1"]) { $1 },
            currentDirectory: p.root)
        #expect(measured.status == 0, "\(measured.stdout)\(measured.stderr)")
        let copy = offsite + "/app-20261205-030000.dump"
        let local = try runProcessFull("/usr/bin/sha256sum", [copy]).stdout.split(separator: " ").first.map(String.init)
        #expect(local == hostDigest)
        #expect(try FileManager.default.attributesOfItem(atPath: copy)[.posixPermissions] as? Int == 0o600)
        #expect(measured.stdout.contains("sha256 \(hostDigest) equals the host's"), "\(measured.stdout)")
        #expect(measured.stdout.contains("keep 2: removed app-20261201-030000.dump"), "\(measured.stdout)")
        #expect(try p.remote("h1", "cat \(p.remoteDir)/outputs") == "\(copy) \(hostDigest)\n")
        let left = try FileManager.default.contentsOfDirectory(atPath: offsite).sorted()
        #expect(left == ["app-20261202-030000.dump", "app-20261205-030000.dump", "notes.txt"], "\(left)")
        let rss = measured.stdout.split(separator: "\n").first { $0.hasPrefix("maxrss_kib=") }.flatMap { Int($0.dropFirst("maxrss_kib=".count)) }
        #expect((rss ?? .max) < 100 * 1024, "the apply held \(rss ?? -1) KiB: the 200 MiB file was not streamed")

        // The same name again is refused, and the copy there is left alone.
        let again = try p.run(["apply", "offsite", "--yes"])
        #expect(again.status == 1, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("\(copy) already exists on the controller; nothing was copied"), "\(again.stdout)")
        #expect(try runProcessFull("/usr/bin/sha256sum", [copy]).stdout.hasPrefix(hostDigest))
        // No temporary file is ever left.
        #expect(try FileManager.default.contentsOfDirectory(atPath: offsite).allSatisfy { !$0.hasPrefix(".") })
    }

    @Test("a src that is missing or not a regular file is refused while planning; nothing reaches the controller")
    func refusesMissingSource() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try fetchRunbook(p, src: p.remoteDir + "/app-missing.dump")
        let missing = try p.run(["plan", "offsite"])
        #expect(missing.status == 1, "\(missing.stdout)")
        #expect((missing.stdout + missing.stderr).contains("\(p.remoteDir)/app-missing.dump does not exist on h1"), "\(missing.stdout)\(missing.stderr)")
        try fetchRunbook(p, src: p.remoteDir)
        let directory = try p.run(["plan", "offsite"])
        #expect((directory.stdout + directory.stderr).contains("is not a regular file"), "\(directory.stdout)\(directory.stderr)")
        #expect(!FileManager.default.fileExists(atPath: p.root + "/offsite"))
    }
}

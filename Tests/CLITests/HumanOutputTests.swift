import Foundation
import Testing
import TestSupport

/// The human output as a person sees it: `runbook` in a real terminal (tmux, 80 columns),
/// the screen captured when the command is done and compared with the golden files in
/// Tests/CLITests/Golden/. Run IDs, durations and the project's folder are normalised.
/// `RUNBOOK_UPDATE_GOLDEN=1` rewrites the golden files from what the terminal shows.
@Suite("human output at 80 columns", .serialized)
struct HumanOutputTests {
    static let golden = repositoryRoot + "/Tests/CLITests/Golden"

    /// A project whose one host is the controller (`connection: local`), in a folder of the
    /// same path on every machine, so lines wrap the same way.
    struct Project {
        let root = "/tmp/rbgolden"

        init() throws {
            try? FileManager.default.removeItem(atPath: root)
            for dir in ["runbooks", "templates", "inventory", "work"] {
                try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
            }
            try "hosts:\n  ctl: { connection: local, vars: { runbook_lock_path: \(root)/host.lock } }\n"
                .write(toFile: root + "/inventory/hosts.yml", atomically: true, encoding: .utf8)
            try "# managed by hand\nworkers = 2\nbind = 127.0.0.1:8000\n"
                .write(toFile: root + "/work/app.conf", atomically: true, encoding: .utf8)
            try "# managed by runbook\nworkers = {{ params.workers }}\nbind = 127.0.0.1:8000\n"
                .write(toFile: root + "/templates/app.conf.j2", atomically: true, encoding: .utf8)
            try """
                name: tune
                description: >-
                  Render the app server's configuration with the requested number of workers, check
                  the file, and restart nothing: a long description that a table must wrap.
                hosts: ctl
                params:
                  workers: { type: int, default: 8, min: 1, max: 64, description: worker processes }
                steps:
                  - name: Render the app server's configuration with the requested worker count
                    template: { src: app.conf.j2, dest: \(root)/work/app.conf, mode: "0640" }
                  - name: Check the file holds the new count
                    command:
                      run: "grep -q 'workers = {{ params.workers }}' \(root)/work/app.conf"
                      check: true
                  - name: Give it a moment
                    sleep: 1s
                """.write(toFile: root + "/runbooks/tune.yml", atomically: true, encoding: .utf8)
            try """
                name: report
                description: Print the configuration.
                hosts: ctl
                steps:
                  - name: Show it
                    command: { run: "cat \(root)/work/app.conf", check: true }
                """.write(toFile: root + "/runbooks/report.yml", atomically: true, encoding: .utf8)
        }

        func cleanUp() { try? FileManager.default.removeItem(atPath: root) }

        /// The screen of an 80-column terminal once `runbook ARGUMENTS` has ended, as shown;
        /// `watch` sees the screen every 0.1 s meanwhile.
        func screen(_ arguments: [String], watch: ((String) -> Void)? = nil) throws -> String {
            let socket = root + "/tmux-" + UUID().uuidString.prefix(8)
            let done = root + "/done-" + UUID().uuidString
            let binary = repositoryRoot + "/.build/debug/runbook"
            let words = ([binary] + arguments + ["--root", root, "--state-dir", root + "/state"]).map(shellQuoted)
            let command = "cd \(shellQuoted(root)) && TERM=xterm-256color NO_COLOR=1 \(words.joined(separator: " ")); echo \"exit $?\"; touch \(shellQuoted(done)); sleep 120"
            let tmux = "/usr/bin/tmux"
            // The tmux server outlives this call: it must hold none of this process's
            // descriptors (Python closes every one but stdin/out/err, which are /dev/null), and
            // not the signal mask it inherits from this process, which blocks SIGTERM: with it,
            // `kill-server` could not end the server.
            let started = try runProcessFull("/usr/bin/python3", ["-c", """
                import signal, subprocess, sys
                sys.exit(subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, close_fds=True,
                                        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, [])).returncode)
                """, tmux, "-S", socket, "-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "150", command])
            #expect(started.status == 0, "tmux did not start")
            defer { _ = try? runProcessFull(tmux, ["-S", socket, "kill-server"]) }
            for _ in 0..<600 where !FileManager.default.fileExists(atPath: done) {
                if let watch { watch(try runProcessFull(tmux, ["-S", socket, "capture-pane", "-p", "-t", "0"]).stdout) }
                Thread.sleep(forTimeInterval: 0.1)
            }
            let captured = try runProcessFull(tmux, ["-S", socket, "capture-pane", "-p", "-t", "0"])
            return captured.stdout
        }

        func normalised(_ text: String) -> String {
            var lines = text.replacingOccurrences(of: #"\d{8}-\d{6}-[0-9a-f]{4}"#, with: "RUNID-XXXXXX-XXXX", options: .regularExpression)
                .replacingOccurrences(of: #"\b\d+(\.\d+)? (ms|s)\b"#, with: "TIME", options: .regularExpression)
                .replacingOccurrences(of: #"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}Z?"#, with: "YYYY-MM-DD HH:MM:SS", options: .regularExpression)
                .split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
            while lines.last?.trimmingCharacters(in: .whitespaces).isEmpty == true { lines.removeLast() }
            return lines.joined(separator: "\n") + "\n"
        }
    }

    static func shellQuoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// The screen, normalised, against its golden file (or the golden file written, when asked).
    func matches(_ raw: String, _ name: String, in project: Project) throws {
        let screen = project.normalised(raw)
        let path = Self.golden + "/" + name + ".txt"
        if ProcessInfo.processInfo.environment["RUNBOOK_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(atPath: Self.golden, withIntermediateDirectories: true)
            try screen.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOfFile: path, encoding: .utf8)
        #expect(screen == expected, "\(name): the terminal shows\n\(screen)\nthe golden file \(path) says\n\(expected)")
    }

    @Test("plan, apply, rollback and list as an 80-column terminal shows them")
    func goldenScreens() throws {
        let project = try Project()
        defer { project.cleanUp() }
        try matches(try project.screen(["plan", "tune"]), "plan", in: project)
        let apply = try project.screen(["apply", "tune", "-p", "workers=6", "--yes"])
        try matches(apply, "apply", in: project)
        #expect(try String(contentsOfFile: project.root + "/work/app.conf", encoding: .utf8).contains("workers = 6\n"))
        let runID = try #require(apply.firstMatch(of: /run (\d{8}-\d{6}-[0-9a-f]{4}) succeeded/)?.output.1)
        try matches(try project.screen(["rollback", String(runID), "--yes"]), "rollback", in: project)
        #expect(try String(contentsOfFile: project.root + "/work/app.conf", encoding: .utf8) == "# managed by hand\nworkers = 2\nbind = 127.0.0.1:8000\n")
        try matches(try project.screen(["list"]), "list", in: project)
    }

    @Test("a step running for a while shows its elapsed time on the terminal, gone once it ends; a pipe gets none of it")
    func liveElapsedTime() throws {
        let project = try Project()
        defer { project.cleanUp() }
        try """
            name: wait
            description: One slow step.
            hosts: ctl
            steps:
              - name: Take a while
                command: { run: "sleep 4", check: true }
            """.write(toFile: project.root + "/runbooks/wait.yml", atomically: true, encoding: .utf8)
        var seen: [String] = []
        let final = try project.screen(["apply", "wait", "--yes"]) { screen in
            if let line = screen.split(separator: "\n").first(where: { $0.contains("running") }) { seen.append(String(line)) }
        }
        #expect(seen.contains { $0.hasPrefix("ctl  [1/1] Take a while  running ") && $0.hasSuffix("s") }, "\(seen)")
        #expect(!final.contains("running"), "\(final)")
        #expect(final.contains("ctl  [1/1] Take a while  ok  4."), "\(final)")
        let piped = try runBuiltRunbook(["apply", "wait", "--yes", "--root", project.root, "--state-dir", project.root + "/state"])
        #expect(piped.status == 0, "\(piped.stdout)\(piped.stderr)")
        #expect(!piped.stdout.contains("running") && !piped.stdout.contains("\r") && !piped.stdout.contains("\u{1B}"), "\(piped.stdout)")
    }
}

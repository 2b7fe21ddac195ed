import Foundation
import Testing
import TestSupport

@Suite("gather", .serialized)
struct GatherTests {
    let env: TestHosts
    init() throws { env = try TestHosts.load() }

    @Test("gather's facts agree with /proc and df on the host, and gate later steps")
    func factsAgree() throws {
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("templates/facts.j2", "{{ facts.cpu_count }} {{ facts.memory_percent }} {{ facts.disk_root_percent }} {{ facts.cpu_percent }} {{ facts.swap_total_mb }} {{ facts.load1 }} {{ facts.load15 }}\n")
        try p.write("runbooks/capacity.yml", """
            name: capacity
            description: Gather and gate
            hosts: h1
            steps:
              - id: cap
                gather: {}
              - name: Record the facts
                template: { src: facts.j2, dest: "\(p.remoteDir)/facts" }
              - name: Memory is a percentage
                assert:
                  that: ["facts.memory_percent >= 0", "facts.memory_percent <= 100", "facts.cpu_count > 0"]
              - name: Only when the disk is nearly full
                command: { run: "touch \(p.remoteDir)/disk-alarm" }
                when: facts.disk_max_percent > 99
            """)
        let plan = try p.run(["plan", "capacity"])
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("· gather  cpu "), "\(plan.stdout)")
        #expect(plan.stdout.contains("= Only when the disk is nearly full  skip: when is false"))
        let apply = try p.run(["apply", "capacity", "--yes"])
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let fields = try String(contentsOfFile: p.remoteDir + "/facts", encoding: .utf8).split(separator: " ").map(String.init)
        #expect(fields.count == 7)
        let cpus = try p.remote("h1", "nproc").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(fields[0] == cpus)
        let meminfo = try p.remote("h1", "awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END {print 100*(t-a)/t}' /proc/meminfo")
        let memory = try #require(Double(meminfo.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(abs((Double(fields[1]) ?? -100) - memory) < 10)
        let df = try p.remote("h1", "df -P / | awk 'NR==2 {sub(\"%\",\"\",$5); print $5}'").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(abs((Int(fields[2]) ?? -100) - (Int(df) ?? 0)) <= 1)
        let cpu = try #require(Int(fields[3]))
        #expect(cpu >= 0 && cpu <= 100)
        let swap = try p.remote("h1", "awk '/^SwapTotal:/{print int($2/1024)}' /proc/meminfo").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(fields[4] == swap)
        // Load averages move slowly: a second later /proc/loadavg is still close.
        let loadavg = try p.remote("h1", "cat /proc/loadavg").split(separator: " ").compactMap { Double($0) }
        #expect(loadavg.count >= 3)
        let load1 = try #require(Double(fields[5])), load15 = try #require(Double(fields[6].trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(abs(load1 - loadavg[0]) < 2.5, "load1 \(load1) against /proc/loadavg \(loadavg)")
        #expect(abs(load15 - loadavg[2]) < 0.5, "load15 \(load15) against /proc/loadavg \(loadavg)")
        // The disk is not 99% full here, so the gated step was skipped.
        #expect(!FileManager.default.fileExists(atPath: p.remoteDir + "/disk-alarm"))
    }
}

@Suite("gather: PostgreSQL and docker facts", .serialized)
struct GatherServiceTests {
    let env: TestHosts
    init() throws { env = try TestHosts.load() }

    @Test("PostgreSQL connections by state, long queries and the limit come from the server")
    func postgresFacts() throws {
        let pg = try TestPostgres.ready(env)
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("templates/pg.j2", "{{ facts.pg_connections }} {{ facts.pg_connections_by_state.active }} {{ facts.pg_long_queries }} {{ facts.pg_max_connections }}\n")
        try p.write("runbooks/pgfacts.yml", """
            name: pgfacts
            description: PostgreSQL facts
            hosts: \(pg.host)
            steps:
              - gather: { \(pg.connection) }
              - template: { src: pg.j2, dest: "\(p.remoteDir)/pg" }
            """)
        let r = try p.run(["apply", "pgfacts", "--yes"], environment: ["RUNBOOK_SECRET_db_password": pg.password])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let fields = try String(contentsOfFile: p.remoteDir + "/pg", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").compactMap { Int($0) }
        #expect(fields.count == 4)
        let max = try pg.superuser("SHOW max_connections").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(fields.count == 4 && fields[0] >= 1 && fields[1] >= 1 && fields[2] == 0 && String(fields[3]) == max)
        #expect(!r.stdout.contains(pg.password))
    }

    @Test("docker stats per container")
    func dockerFacts() throws {
        try DockerStepTests.startDocker()
        let p = try RunbookProject(env)
        defer { p.cleanUp() }
        try p.write("templates/d.j2", "{% for name, stats in facts.docker %}{{ name }}\n{% endfor %}")
        try p.write("runbooks/dockerfacts.yml", """
            name: dockerfacts
            description: docker facts
            hosts: \(DockerStepTests.host)
            steps:
              - gather: {}
              - template: { src: d.j2, dest: "\(p.remoteDir)/d" }
            """)
        let r = try p.run(["apply", "dockerfacts", "--yes"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let names = try String(contentsOfFile: p.remoteDir + "/d", encoding: .utf8).split(separator: "\n").map(String.init)
        // Other suites start and remove containers on this host meanwhile: the stack's own
        // containers are always there, and every name gather saw is a real container.
        let known = try env.inHost(DockerStepTests.host, "docker ps -a --format '{{.Names}}'").stdout.split(separator: "\n").map(String.init)
        #expect(names.contains("rb-compose-h2_web_1"), "\(names)")
        #expect(names.allSatisfy { known.contains($0) || $0.hasPrefix("rbtest-") }, "\(names) vs \(known)")
    }
}

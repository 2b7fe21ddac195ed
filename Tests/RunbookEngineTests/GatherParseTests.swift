import Foundation
import RunbookCore
import Testing

@testable import RunbookEngine
@testable import RunbookSteps

@Suite("gather: parsing the facts command's output")
struct GatherParseTests {
    @Test("disk, PostgreSQL and docker lines become maps; a container removed mid-stats (`--`) is left out")
    func parse() {
        let facts = GatherStep.parse("""
            cpu_percent=12.5
            memory_percent=40
            disk:/=18
            disk:/srv=91
            pg_connections=2
            pg_conn:idle in transaction=2
            docker:app_web_1=1.5|3.25
            docker:--=0.00|0.00
            """)
        #expect(facts["cpu_percent"] == .double(12.5))
        #expect(facts["disk"] == .map(["/": .int(18), "/srv": .int(91)]))
        #expect(facts["disk_max_percent"] == .int(91))
        #expect(facts["pg_connections_by_state"] == .map(["idle_in_transaction": .int(2)]))
        #expect(facts["docker"] == .map(["app_web_1": .map(["cpu_percent": .double(1.5), "memory_percent": .double(3.25)])]))
    }
}

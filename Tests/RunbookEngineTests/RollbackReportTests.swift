import Testing
@testable import RunbookEngine

/// A rollback reports one line per undo, however long the command it ran.
@Suite struct RollbackReportTests {
    @Test func oneLineCommandsStayAsTheyAre() {
        #expect(Engine.oneLine("rm -f /srv/flag") == "rm -f /srv/flag")
    }

    @Test func aScriptShowsTheLineThatSaysWhatItDoes() {
        let undo = """
            PGAPPNAME=runbook PGCONNECT_TIMEOUT=10; export PGAPPNAME PGCONNECT_TIMEOUT
            runbook_compose() { if docker compose version >/dev/null 2>&1; then docker compose "$@"; fi; }
            runbook_compose -f /srv/app/docker-compose.prod.yml exec -T db psql -U postgres -d postgres -w -X -f - <<'RUNBOOK_SQL'
            DROP DATABASE IF EXISTS "app_drill" WITH (FORCE);
            RUNBOOK_SQL
            """
        #expect(Engine.oneLine(undo) == #"DROP DATABASE IF EXISTS "app_drill" WITH (FORCE); (a 5-line script)"#)
        #expect(Engine.oneLine("cd /srv/app\ndocker-compose stop") == "docker-compose stop (a 2-line script)")
        let long = String(repeating: "x", count: 300)
        #expect(Engine.oneLine(long).count == 120 && Engine.oneLine(long).hasSuffix("…"))
    }
}

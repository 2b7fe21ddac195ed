import Foundation
import RunbookCore
import Testing
import TestSupport

@testable import RunbookSteps

/// `load_test`: its arguments, its statistics and gates on numbers given by hand, and the
/// action run against a scripted host whose endpoint answers as the test says.
@Suite struct LoadTestTests {
    /// A `load_test` row with `arguments` (the URL added).
    func testCase(_ arguments: [String: Value]) -> StepCase {
        var all = arguments
        if all["url"] == nil { all["url"] = "http://127.0.0.1:8080/health" }
        return StepCase(name: "load", kind: "load_test", arguments: all, action: .check, undo: .readOnly)
    }

    /// The planned action of a `load_test` step.
    func action(_ arguments: [String: Value], stepTimeout: Duration? = nil) async throws -> LoadTestAction {
        let row = testCase(arguments)
        var planStep = step(row)
        planStep.timeout = stepTimeout
        let host = Host(name: "h1", address: "10.0.0.1", user: "deploy", knownHosts: "/dev/null")
        let planned = try await LoadTestStep().plan(step: planStep, host: host, arguments: rendered(row, schema: LoadTestStep.schema),
                                                    facts: FactReader(transport: scripted(row)))
        guard case .action(let action) = planned.operation, let loadTest = action as? LoadTestAction else {
            throw StepFailure("load_test planned \(planned.operation), not its action")
        }
        return loadTest
    }

    /// The plan's refusal of `arguments`, as text ("" when it was planned).
    func refusal(_ arguments: [String: Value], stepTimeout: Duration? = nil) async -> String {
        do {
            _ = try await action(arguments, stepTimeout: stepTimeout)
            return ""
        } catch {
            return "\(error)"
        }
    }

    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    static let serverError = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\nboom\n"

    // MARK: max_error_rate

    @Test func errorRateIsAPercentageOrAFraction() throws {
        #expect(try LoadTestStep.parseErrorRate("1%") == 0.01)
        #expect(try LoadTestStep.parseErrorRate("0.5%") == 0.005)
        #expect(try LoadTestStep.parseErrorRate(" 2.5 % ") == 0.025)
        #expect(try LoadTestStep.parseErrorRate("0.01") == 0.01)
        #expect(try LoadTestStep.parseErrorRate("0") == 0)
        #expect(try LoadTestStep.parseErrorRate("100%") == 1)
        for bad in ["1", "2", "1.5", "150%", "-1%", "-0.1", "abc", "%", "nan", "1e400"] {
            do {
                let parsed = try LoadTestStep.parseErrorRate(bad)
                Issue.record("max_error_rate \(bad) was read as \(parsed)")
            } catch {
                #expect(error.description.hasPrefix("max_error_rate: "), "\(bad): \(error)")
            }
        }
    }

    @Test func errorRateAsWrittenInARunbook() async throws {
        // As YAML gives it: a number (0.01), a quoted fraction, a percentage.
        #expect(try await action(["requests": 10, "max_error_rate": .double(0.01)]).maxErrorRate == 0.01)
        #expect(try await action(["requests": 10, "max_error_rate": "0.02"]).maxErrorRate == 0.02)
        #expect(try await action(["requests": 10, "max_error_rate": "0.5%"]).summary.contains("error rate at most 0.5%"))
        // Without it, no error is allowed.
        #expect(try await action(["requests": 10]).maxErrorRate == 0)
        #expect(await refusal(["requests": 10, "max_error_rate": "5"]).contains("max_error_rate: 5 is a fraction of 1 or more"))
    }

    // MARK: Statistics and gates

    @Test func percentilesByNearestRank() {
        let hundred = LoadTestMeasurement(latencies: (1...100).reversed().map { .milliseconds($0) }, errorCauses: [:], elapsed: .seconds(2))
        #expect(hundred.percentile(50) == .milliseconds(50))
        #expect(hundred.percentile(95) == .milliseconds(95))
        #expect(hundred.percentile(99) == .milliseconds(99))
        #expect(hundred.rate == 50)
        // Ten values: the 95th and 99th percentiles are the largest; the median the 5th.
        let ten = LoadTestMeasurement(latencies: [7, 1, 9, 3, 10, 2, 8, 4, 6, 5].map { .milliseconds($0) }, errorCauses: [:], elapsed: .seconds(1))
        #expect(ten.percentile(50) == .milliseconds(5))
        #expect(ten.percentile(95) == .milliseconds(10))
        #expect(ten.percentile(99) == .milliseconds(10))
        #expect(LoadTestMeasurement(latencies: [.milliseconds(42)], errorCauses: [:], elapsed: .seconds(1)).percentile(50) == .milliseconds(42))
        #expect(LoadTestMeasurement(latencies: [], errorCauses: ["x": 3], elapsed: .seconds(1)).percentile(95) == nil)
    }

    @Test func errorRateAndRateCountEveryRequest() {
        let measured = LoadTestMeasurement(latencies: Array(repeating: .milliseconds(3), count: 797),
                                           errorCauses: ["status 500 (expected 200)": 200, "no answer within 10 s": 3],
                                           elapsed: .milliseconds(2500))
        #expect(measured.requests == 1000)
        #expect(measured.errors == 203)
        #expect(measured.errorRate == 0.203)
        #expect(measured.rate == 400)
        #expect(LoadTestAction.percentText(measured.errorRate) == "20.3%")
        #expect(LoadTestAction.percentText(0.01) == "1%")
        #expect(LoadTestAction.percentText(0.0025) == "0.25%")
        #expect(LoadTestAction.percentText(0.00001) == "0.001%")
        #expect(LoadTestAction.percentText(0) == "0%")
        let lines = measured.table.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(measured.table)")
        #expect(lines[0].split(separator: " ") == ["requests", "errors", "p50", "p95", "p99", "rate"])
        #expect(lines[1].split(separator: " ") == ["1000", "203", "(20.3%)", "3.0ms", "3.0ms", "3.0ms", "400.0", "req/s"])
        #expect(lines[2] == "errors: 200 × status 500 (expected 200); 3 × no answer within 10 s")
    }

    @Test func gatesNameTheMeasuredValueAndTheLimit() async throws {
        let gated = try await action(["requests": 1000, "p95_under": "90ms", "p99_under": "200ms", "max_error_rate": "1%"])
        // Exactly at the error limit (10 of 1000 is 1%) passes, with every latency under 80 ms.
        let latencies: [Duration] = (1...990).map { .milliseconds($0 % 80 + 1) }
        let atLimit = LoadTestMeasurement(latencies: latencies, errorCauses: ["status 500 (expected 200)": 10], elapsed: .seconds(4))
        guard case .success(let outputs, let message?) = gated.verdict(atLimit) else {
            Issue.record("10 errors in 1000 requests must pass max_error_rate 1%: \(gated.verdict(atLimit))")
            return
        }
        #expect(outputs["requests"] == .int(1000))
        #expect(outputs["errors"] == .int(10))
        #expect(outputs["error_rate"] == .double(0.01))
        #expect(outputs["p50_ms"] == .double(Durations.milliseconds(atLimit.percentile(50)!)))
        #expect(outputs["p95_ms"] == .double(Durations.milliseconds(atLimit.percentile(95)!)))
        #expect(outputs["p99_ms"] == .double(Durations.milliseconds(atLimit.percentile(99)!)))
        #expect(outputs["rate"] == .double(250))
        #expect(outputs["changed"] == .bool(false))
        #expect(message.hasPrefix("GET http://127.0.0.1:8080/health from h1: 1000 requests, concurrency 10, in "), "\(message)")
        #expect(message.contains("passed: p95 under 90ms, p99 under 200ms, error rate at most 1%"), "\(message)")
        #expect(message.contains("\n" + atLimit.table))

        // One more error, and p95 of a slower endpoint: both gates named, with the numbers.
        let slow = LoadTestMeasurement(latencies: (1...989).map { .milliseconds($0) }, errorCauses: ["status 500 (expected 200)": 11],
                                       elapsed: .seconds(4))
        guard case .failure(let failure) = gated.verdict(slow) else {
            Issue.record("11 errors and a p95 of 940ms must fail")
            return
        }
        let first = failure.split(separator: "\n").first.map(String.init) ?? ""
        #expect(first.contains("error rate 1.1% over 1000 requests is over max_error_rate 1%"), "\(failure)")
        #expect(first.contains("p95 latency 940ms over 989 answered requests is not under p95_under 90ms"), "\(failure)")
        #expect(first.contains("p99 latency 980ms over 989 answered requests is not under p99_under 200ms"), "\(failure)")
        #expect(failure.contains(slow.table), "\(failure)")

        // Nothing answered: the latency gates cannot be met, and say why.
        let dead = LoadTestMeasurement(latencies: [], errorCauses: ["cannot connect": 1000], elapsed: .seconds(1))
        guard case .failure(let none) = gated.verdict(dead) else {
            Issue.record("no answer must fail")
            return
        }
        #expect(none.contains("error rate 100% over 1000 requests is over max_error_rate 1%"), "\(none)")
        #expect(none.contains("p95 cannot be measured: no request answered 200"), "\(none)")
    }

    // MARK: Against a scripted endpoint

    @Test func twentyPercentOfErrorsFailTheGateWithTheMeasuredRate() async throws {
        let host = ScriptedTransport(hostName: "h1")
        // Every fifth request answers 500.
        host.answer(address: "127.0.0.1", port: 8080, delay: .milliseconds(20)) { $0 % 5 == 4 ? Self.serverError : Self.ok }
        let load = try await action(["requests": 200, "concurrency": 8, "max_error_rate": "1%"])
        let result = await load.perform(on: host, controller: ScriptedTransport(hostName: "controller"),
                                        step: step(testCase([:])))
        guard case .failure(let message) = result else {
            Issue.record("20% of errors passed max_error_rate 1%: \(result)")
            return
        }
        #expect(message.hasPrefix("error rate 20% over 200 requests is over max_error_rate 1%\n"), "\(message)")
        #expect(message.contains("errors: 40 × status 500 (expected 200)"), "\(message)")
        #expect(message.contains("200       40 (20%)"), "\(message)")
        #expect(host.exchangeCount(address: "127.0.0.1", port: 8080) == 200)
        // Bounded by the concurrency, and concurrent.
        #expect(host.mostConcurrentExchanges <= 8)
        #expect(host.mostConcurrentExchanges > 1)
    }

    @Test func aHealthyEndpointPassesWithItsNumbers() async throws {
        let host = ScriptedTransport(hostName: "h1")
        host.answer(address: "127.0.0.1", port: 8080, delay: .milliseconds(5)) { _ in Self.ok }
        // A gate no scheduling delay can reach: this test is about the numbers, not the clock.
        let load = try await action(["requests": 60, "concurrency": 6, "p95_under": "1h", "max_error_rate": "1%"])
        let result = await load.perform(on: host, controller: ScriptedTransport(hostName: "controller"), step: step(testCase([:])))
        guard case .success(let outputs, let message?) = result else {
            Issue.record("a healthy endpoint failed: \(result)")
            return
        }
        #expect(outputs["requests"] == .int(60))
        #expect(outputs["errors"] == .int(0))
        #expect(outputs["error_rate"] == .double(0))
        // Each exchange takes at least its 5 ms.
        for key in ["p50_ms", "p95_ms", "p99_ms"] {
            let value = try #require(outputs[key]?.doubleValue, "\(key) missing")
            #expect(value >= 5, "\(key) \(value)")
        }
        let p50 = try #require(outputs["p50_ms"]?.doubleValue)
        let p99 = try #require(outputs["p99_ms"]?.doubleValue)
        #expect(p50 <= p99)
        let rate = try #require(outputs["rate"]?.doubleValue)
        #expect(rate > 0 && rate <= 6 * 1000 / 5, "rate \(rate) req/s")
        #expect(message.split(separator: "\n").count == 3, "\(message)")
        #expect(message.contains("60        0"), "\(message)")
        #expect(host.exchangeCount(address: "127.0.0.1", port: 8080) == 60)
    }

    @Test func refusedAndTimedOutRequestsAreErrors() async throws {
        let host = ScriptedTransport(hostName: "h1")
        // Every other connection is refused.
        host.answer(address: "127.0.0.1", port: 8080) { $0 % 2 == 0 ? Self.ok : nil }
        let refused = await (try await action(["requests": 40, "concurrency": 1, "max_error_rate": "60%"]))
            .perform(on: host, controller: host, step: step(testCase([:])))
        guard case .success(let outputs, _) = refused else {
            Issue.record("50% of errors must pass max_error_rate 60%: \(refused)")
            return
        }
        #expect(outputs["errors"] == .int(20))
        #expect(outputs["error_rate"] == .double(0.5))

        let silent = ScriptedTransport(hostName: "h1")
        silent.answer(address: "127.0.0.1", port: 8080, delay: .seconds(5)) { _ in Self.ok }
        let timedOut = await (try await action(["requests": 4, "concurrency": 4, "timeout": "50ms"]))
            .perform(on: silent, controller: silent, step: step(testCase([:])))
        guard case .failure(let message) = timedOut else {
            Issue.record("requests over their timeout passed: \(timedOut)")
            return
        }
        #expect(message.hasPrefix("error rate 100% over 4 requests is over max_error_rate 0%"), "\(message)")
        #expect(message.contains("4 × no answer within 50 ms"), "\(message)")
    }

    @Test func fromTheControllerUsesTheControllersTransport() async throws {
        let host = ScriptedTransport(hostName: "h1")
        let controller = ScriptedTransport(hostName: "controller")
        controller.answer(address: "127.0.0.1", port: 8080) { _ in Self.ok }
        let load = try await action(["requests": 10, "from": "controller"])
        #expect(load.summary.hasPrefix("GET http://127.0.0.1:8080/health from the controller: 10 requests"))
        guard case .success = await load.perform(on: host, controller: controller, step: step(testCase([:]))) else {
            Issue.record("the controller's endpoint answers")
            return
        }
        #expect(controller.exchangeCount(address: "127.0.0.1", port: 8080) == 10)
        #expect(host.exchangeCount(address: "127.0.0.1", port: 8080) == 0)
    }

    @Test func aDurationEndsTheTestAndWhicheverComesFirstWins() async throws {
        let host = ScriptedTransport(hostName: "h1")
        host.answer(address: "127.0.0.1", port: 8080, delay: .milliseconds(10)) { _ in Self.ok }
        let started = ContinuousClock.now
        let timed = try await action(["duration": "300ms", "concurrency": 4])
        let result = await timed.perform(on: host, controller: host, step: step(testCase([:])))
        guard case .success(let outputs, _) = result else {
            Issue.record("a timed load test against a healthy endpoint failed: \(result)")
            return
        }
        let took = ContinuousClock.now - started
        let made = try #require(outputs["requests"]?.intValue)
        // 4 at a time, each at least 10 ms, for 300 ms: at most 4 × (30 + 1) requests. (No
        // upper bound on the time: a loaded machine may schedule the requests late.)
        #expect(made >= 1 && made <= 124, "\(made) requests")
        #expect(took >= .milliseconds(300), "\(took)")

        // 20 requests come before 10 minutes are up: the count ends the test, not the duration.
        let both = try await action(["requests": 20, "duration": "10m", "concurrency": 4])
        guard case .success(let few, _) = await both.perform(on: host, controller: host, step: step(testCase([:]))) else {
            Issue.record("20 requests failed")
            return
        }
        #expect(few["requests"] == .int(20))
    }

    @Test func theStepsTimeoutCutsTheTestShortAndFailsIt() async throws {
        let host = ScriptedTransport(hostName: "h1")
        host.answer(address: "127.0.0.1", port: 8080, delay: .milliseconds(20)) { _ in Self.ok }
        let load = try await action(["requests": 10_000, "concurrency": 2], stepTimeout: .milliseconds(300))
        guard case .failure(let message) = await load.perform(on: host, controller: host, step: step(testCase([:]))) else {
            Issue.record("10000 requests of 20 ms, 2 at a time, cannot be made in 300 ms")
            return
        }
        #expect(message.contains("the step's timeout: 300ms ended the test after "), "\(message)")
        #expect(message.contains(" of 10000 requests"), "\(message)")
        #expect(host.exchangeCount(address: "127.0.0.1", port: 8080) < 100)
    }

    // MARK: Plan refusals

    @Test func badArgumentsAreRefusedNamingTheField() async {
        #expect(await refusal(["concurrency": 4]).contains("load_test needs requests (how many, e.g. 1000) or duration"))
        #expect(await refusal(["requests": 0]).contains("requests: 0 must be from 1 to 100000"))
        #expect(await refusal(["requests": 100_001]).contains("requests: 100001 must be from 1 to 100000"))
        #expect(await refusal(["requests": 10, "concurrency": 0]).contains("concurrency: 0 must be from 1 to 256"))
        #expect(await refusal(["requests": 10, "concurrency": 257]).contains("concurrency: 257 must be from 1 to 256"))
        #expect(await refusal(["duration": "11m"]).contains("duration: 11m must be longer than 0s and at most 10m"))
        #expect(await refusal(["duration": "0s"]).contains("duration: 0s must be"))
        #expect(await refusal(["requests": 10, "expect_status": 99]).contains("expect_status: 99 is not an HTTP status"))
        #expect(await refusal(["requests": 10, "timeout": "0s"]).contains("timeout must be longer than 0s"))
        #expect(await refusal(["requests": 10, "p95_under": "0s"]).contains("p95_under must be longer than 0s"))
        #expect(await refusal(["requests": 10, "from": "moon"]).contains("from: moon must be host or controller"))
        #expect(await refusal(["requests": 10, "url": "https://shop.test/"]).contains("url: https://shop.test/: load_test sends plain HTTP only"))
        #expect(await refusal(["requests": 10, "url": "ftp://x/"]).contains("url: ftp://x/ is not an http:// or https:// URL"))
        #expect(await refusal(["requests": 10, "concurrency": "many"]).contains("concurrency: many is not a whole number"))
        #expect(await refusal(["duration": "1m"], stepTimeout: .seconds(30))
            .contains("the step's timeout: 30s ends the test before duration 1m"))
        #expect(await refusal(["requests": 100_000, "concurrency": 256, "duration": "10m", "max_error_rate": "100%"]).isEmpty)
    }
}

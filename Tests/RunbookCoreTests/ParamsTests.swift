import RunbookCore
import Testing

private let here = SourceLocation(file: "runbooks/scale.yml", line: 5, column: 3)

private let specs: [ParamSpec] = [
    ParamSpec(name: "workers", type: .int, defaultValue: 8, min: 1, max: 64, description: "gunicorn workers", location: here),
    ParamSpec(name: "mode", type: .enumeration(["fast", "safe"]), defaultValue: "safe", min: nil, max: nil, description: nil, location: here),
    ParamSpec(name: "older_than", type: .duration, defaultValue: "1m", min: nil, max: nil, description: nil, location: here),
    ParamSpec(name: "dry", type: .bool, defaultValue: false, min: nil, max: nil, description: nil, location: here),
    ParamSpec(name: "label", type: .string, defaultValue: "x", min: 1, max: 5, description: nil, location: here),
]

private func problems(_ overrides: [String: String], specs: [ParamSpec] = specs, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> [Diagnostic] {
    do {
        let values = try ParamValues.resolve(specs: specs, overrides: overrides, file: "runbooks/scale.yml")
        Issue.record("expected the params to be rejected, got \(values)", sourceLocation: sourceLocation)
        return []
    } catch {
        return error.diagnostics
    }
}

@Suite struct ParamsTests {
    @Test func defaultsApplyAndOverridesAreTyped() throws {
        let defaults = try ParamValues.resolve(specs: specs, overrides: [:], file: "runbooks/scale.yml")
        #expect(defaults == ["workers": 8, "mode": "safe", "older_than": "1m", "dry": false, "label": "x"])

        let values = try ParamValues.resolve(
            specs: specs, overrides: ["workers": "12", "mode": "fast", "older_than": "90s", "dry": "YES", "label": "abc"],
            file: "runbooks/scale.yml")
        #expect(values == ["workers": 12, "mode": "fast", "older_than": "90s", "dry": true, "label": "abc"])
        #expect(try ParamValues.resolve(specs: specs, overrides: ["dry": "no"], file: "f")["dry"] == false)
        #expect(try ParamValues.resolve(specs: specs, overrides: ["dry": "True"], file: "f")["dry"] == true)
    }

    @Test func unknownNameSuggestsTheClosest() {
        let found = problems(["wrokers": "4"])
        #expect(found.count == 1)
        #expect(found[0].summary.contains("unknown parameter \"wrokers\""))
        #expect(found[0].field == "-p wrokers")
        #expect(found[0].hint == "did you mean \"workers\"?")
    }

    @Test func intIsCheckedForTypeAndBounds() {
        let notInt = problems(["workers": "many"])
        #expect(notInt.count == 1)
        #expect(notInt[0].summary.contains("expected an integer"))
        #expect(notInt[0].hint?.contains("runbooks/scale.yml:5:3") == true)

        let tooBig = problems(["workers": "65"])
        #expect(tooBig[0].summary.contains("above the maximum 64"))
        let tooSmall = problems(["workers": "0"])
        #expect(tooSmall[0].summary.contains("below the minimum 1"))
    }

    @Test func enumDurationBoolAndStringAreChecked() {
        let badEnum = problems(["mode": "fsat"])
        #expect(badEnum[0].summary.contains("not one of fast, safe"))
        #expect(badEnum[0].hint?.contains("did you mean \"fast\"?") == true)

        let badDuration = problems(["older_than": "soon"])
        #expect(badDuration[0].summary.contains("expected a duration"))

        let badBool = problems(["dry": "maybe"])
        #expect(badBool[0].summary.contains("expected true or false"))

        let tooLong = problems(["label": "abcdef"])
        #expect(tooLong[0].summary.contains("more than the maximum 5"))
    }

    @Test func missingRequiredNamesWhereItIsDeclared() {
        let required = [ParamSpec(name: "target", type: .string, defaultValue: nil, min: nil, max: nil, description: nil, location: here)]
        let found = problems([:], specs: required)
        #expect(found.count == 1)
        #expect(found[0].summary == "missing required parameter \"target\" (declared at runbooks/scale.yml:5:3, no default)")
        #expect(found[0].hint == "pass -p target=VALUE (string)")
    }

    @Test func everyProblemIsReported() {
        let found = problems(["workers": "x", "mode": "slow", "nope": "1", "dry": "2"])
        #expect(found.count == 4)
    }

    @Test func assignments() throws {
        #expect(ParamValues.parseAssignment("workers=8")! == ("workers", "8"))
        #expect(ParamValues.parseAssignment("sql=a=b")! == ("sql", "a=b"))
        #expect(ParamValues.parseAssignment("empty=")! == ("empty", ""))
        #expect(ParamValues.parseAssignment("novalue") == nil)
        #expect(ParamValues.parseAssignment("=8") == nil)
        #expect(try ParamValues.parseAssignments(["a=1", "b=2", "a=3"]) == ["a": "3", "b": "2"])
        #expect(throws: DiagnosticError.self) { try ParamValues.parseAssignments(["oops"]) }
    }
}

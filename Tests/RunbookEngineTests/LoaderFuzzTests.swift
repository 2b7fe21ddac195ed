import Foundation
import RunbookCore
import Testing
import TestSupport

@testable import RunbookEngine

/// A mutation fuzzer over the runbook, inventory and template loaders: seeds are the shipped
/// runbooks, inventories and templates plus the committed corpus in `Tests/Fuzz/corpus`
/// (shapes operators write: anchors, merge keys, CRLF, raw blocks); each input is a seed with
/// a few random edits (bytes flipped, YAML and template tokens inserted, spans deleted,
/// repeated or spliced from another seed). Every input must end in a loaded value or in
/// diagnostics that each name a line, never in a crash or a hang. The generator is seeded, so
/// a failure is reproducible from the seed it prints; `RUNBOOK_FUZZ_SECONDS` sets the budget
/// (default 15) and `RUNBOOK_FUZZ_SEED` the first seed.
@Suite("loader fuzzing")
struct LoaderFuzzTests {
    enum Target { case runbook, inventory, template }

    struct Seed {
        let name: String
        let bytes: [UInt8]
        let target: Target
    }

    /// SplitMix64: small, fast and reproducible.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let tokens: [String] = [
        "{{", "}}", "{%", "%}", "{#", "#}", ":", ": ", "- ", "&a ", "*a", "<<: *a", "\n", "\t", "\"", "'", "[", "]", "{", "}",
        "|", ">", "#", "!!binary ", "!!int ", "~", "\r\n", "\u{0}", "\u{FEFF}", "not ", " and ", " or ", "...", "%", "1e999",
        "-1", "99999999999999999999", "0x", "params.", "vars.", "facts.", "steps.", "secrets.", "item", "loop.index",
        "|range", "|default:", "|raw", "|quote", "{% for x in params.n|range %}", "{% endfor %}", "{% if true %}",
        "{% endif %}", "{% raw %}", "{% endraw %}", "{% include 'x' %}", "when: ", "loop: ", "delegate_to: ", "timeout: ",
        "become: true", "hosts: ", "steps:", "  - ", "command: ", "template: ", "é", "日本", "\u{1B}[31m", "\\", "$(",
    ]

    static func seeds() throws -> [Seed] {
        var seeds: [Seed] = []
        func add(_ directory: String, _ target: (String) -> Target?) throws {
            let path = repositoryRoot + "/" + directory
            for name in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                guard let kind = target(name) else { continue }
                let data = try Data(contentsOf: URL(fileURLWithPath: path + "/" + name))
                seeds.append(Seed(name: directory + "/" + name, bytes: Array(data), target: kind))
            }
        }
        try add("runbooks") { $0.hasSuffix(".yml") ? .runbook : nil }
        try add("inventory") { $0.hasSuffix(".yml") ? .inventory : nil }
        try add("templates") { $0.hasSuffix(".j2") ? .template : nil }
        try add("Tests/Fuzz/corpus") { name in
            if name.hasSuffix(".j2") { return .template }
            if name.hasPrefix("inventory") { return .inventory }
            return name.hasSuffix(".yml") ? .runbook : nil
        }
        return seeds
    }

    static func mutate(_ bytes: [UInt8], seeds: [Seed], using random: inout Generator) -> [UInt8] {
        var out = bytes
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let at = out.isEmpty ? 0 : Int.random(in: 0...out.count, using: &random)
            switch Int.random(in: 0..<6, using: &random) {
            case 0 where !out.isEmpty:
                out[min(at, out.count - 1)] ^= UInt8(1 << Int.random(in: 0..<8, using: &random))
            case 1, 2:
                out.insert(contentsOf: Array(tokens.randomElement(using: &random)!.utf8), at: at)
            case 3 where !out.isEmpty:
                let length = Int.random(in: 1...min(64, out.count - min(at, out.count - 1)), using: &random)
                out.removeSubrange(min(at, out.count - 1)..<min(out.count, min(at, out.count - 1) + length))
            case 4 where !out.isEmpty:
                let start = min(at, out.count - 1)
                let span = Array(out[start..<min(out.count, start + Int.random(in: 1...32, using: &random))])
                let times = Int.random(in: 1...50, using: &random)
                out.insert(contentsOf: Array([[UInt8]](repeating: span, count: times).joined()), at: start)
            default:
                let other = seeds.randomElement(using: &random)!.bytes
                guard !other.isEmpty else { continue }
                let from = Int.random(in: 0..<other.count, using: &random)
                out.insert(contentsOf: other[from..<min(other.count, from + Int.random(in: 1...200, using: &random))], at: at)
            }
        }
        return out
    }

    /// Loads `bytes` as `target`; a problem when the loader failed without naming a line.
    static func run(_ bytes: [UInt8], as target: Target, templates: TemplateEngine, context: TemplateContext) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        let diagnostics: [Diagnostic]
        do throws(DiagnosticError) {
            switch target {
            case .runbook:
                let runbook = try RunbookLoader(root: "/nonexistent").load(text: text, file: "runbooks/fuzz.yml", name: "fuzz")
                try Engine.checkTemplates(runbook, templates: templates)
            case .inventory:
                _ = try InventoryLoader(homeDirectory: "/nonexistent", defaultUser: "root").load(text: text, file: "inventory/fuzz.yml")
            case .template:
                let location = SourceLocation(file: "templates/fuzz.j2", line: 1, column: 1)
                let found = templates.check(string: text, at: location)
                if found.contains(where: { $0.severity == .error }) { throw DiagnosticError(found) }
                _ = try templates.render(string: text, at: location, context: context, secrets: .values)
            }
            return nil
        } catch {
            diagnostics = error.diagnostics
        }
        if diagnostics.isEmpty { return "an error with no diagnostic" }
        if let unplaced = diagnostics.first(where: { $0.severity == .error && ($0.location?.line ?? 0) < 1 }) {
            return "no line: \(unplaced.rendered)"
        }
        return nil
    }

    @Test("mutated runbooks, inventories and templates load or fail with a line, never crash or hang", .timeLimit(.minutes(3)))
    func fuzzLoaders() throws {
        let seeds = try Self.seeds()
        #expect(seeds.count >= 20, "\(seeds.map(\.name))")
        let environment = ProcessInfo.processInfo.environment
        let budget = Double(environment["RUNBOOK_FUZZ_SECONDS"] ?? "") ?? 15
        let firstSeed = UInt64(environment["RUNBOOK_FUZZ_SEED"] ?? "") ?? 20_261_205
        let templates = TemplateEngine(templatesDirectory: repositoryRoot + "/templates")
        let context = TemplateContext(params: ["replicas": .int(3), "n": .int(2), "workers": .int(4), "x": .string("a b")],
                                      vars: ["keepalive": .int(16), "db": .map(["user": .string("app")])],
                                      host: ["name": .string("web1"), "address": .string("10.0.0.11")],
                                      secrets: try SecretStore(environment: [:], file: nil))
        // Every seed as it is must pass first.
        for seed in seeds {
            if let problem = Self.run(seed.bytes, as: seed.target, templates: templates, context: context) {
                Issue.record("\(seed.name): \(problem)")
            }
        }
        let start = Date()
        var inputs = 0
        var failures: [String] = []
        var seedValue = firstSeed
        while Date().timeIntervalSince(start) < budget && inputs < 200_000 && failures.count < 5 {
            var random = Generator(state: seedValue)
            let seed = seeds.randomElement(using: &random)!
            let input = Self.mutate(seed.bytes, seeds: seeds, using: &random)
            if let problem = Self.run(input, as: seed.target, templates: templates, context: context) {
                failures.append("seed \(seedValue) (\(seed.name)): \(problem)\n  input: \(String(decoding: input, as: UTF8.self).debugDescription.prefix(600))")
            }
            inputs += 1
            seedValue &+= 1
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        #expect(inputs >= 100, "only \(inputs) inputs in \(budget) s")
        print("loader fuzzing: \(inputs) inputs from \(seeds.count) seeds in \(Int(Date().timeIntervalSince(start))) s, seeds \(firstSeed)…\(seedValue)")
    }
}

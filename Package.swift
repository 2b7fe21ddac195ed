// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "runbook",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "runbook", targets: ["runbook"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/stencilproject/Stencil", from: "0.15.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
    ],
    targets: [
        // Thin bindings: libssh2 headers plus static inline wrappers for its function-like macros.
        .systemLibrary(
            name: "CLibSSH2",
            pkgConfig: "libssh2",
            providers: [.apt(["libssh2-1-dev"])]
        ),
        // The one SQLite call GRDB does not offer (a variadic one): the journal's close.
        .systemLibrary(
            name: "CSQLite",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // SSH sessions, channels, SFTP, known_hosts, agent. Knows nothing of runbooks.
        .target(
            name: "SSH",
            dependencies: [
                "CLibSSH2",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Model and seams, no I/O: inventory, host patterns, transport protocol, shell quoting.
        .target(name: "RunbookCore"),
        // Transport implementations: SSH (over the SSH module) and local.
        .target(
            name: "RunbookTransport",
            dependencies: [
                "RunbookCore", "SSH",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The step kinds, one file each (schema, undo policy, planner), and what they share:
        // compose, PostgreSQL, HTTP, diffs. Facts in, operations out; never touches a host itself.
        .target(
            name: "RunbookSteps",
            dependencies: [
                "RunbookCore",
                .product(name: "Crypto", package: "swift-crypto"),
                // yaml_set reads its file with libyaml (Yams' CYaml) for each node's exact extent.
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The driver: the project (loader, inventory, secrets), templates, the run (planner,
        // applier, rollback, locks) and the journal. Asks the step registry; never names a kind.
        .target(
            name: "RunbookEngine",
            dependencies: [
                "RunbookCore", "RunbookSteps", "RunbookTransport", "CSQLite",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Stencil", package: "Stencil"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The command-line interface, thin.
        .executableTarget(
            name: "runbook",
            dependencies: [
                "RunbookEngine", "RunbookCore", "RunbookSteps", "RunbookTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // bench/: per-command latency of the SSH layer on an open session (see bench/README.md).
        .executableTarget(name: "ssh-microbench", dependencies: ["SSH"], path: "bench/ssh-microbench"),
        .testTarget(name: "SSHTests", dependencies: ["SSH", "TestSupport"]),
        .testTarget(name: "RunbookCoreTests", dependencies: ["RunbookCore"]),
        .testTarget(name: "RunbookStepsTests", dependencies: ["RunbookSteps", "RunbookCore", "TestSupport"]),
        .testTarget(name: "RunbookEngineTests", dependencies: [
            "RunbookEngine", "RunbookSteps", "RunbookTransport", "RunbookCore", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport"], exclude: ["Golden"]),
        // Shared by test targets: locating the test hosts and the built binary.
        .target(name: "TestSupport", dependencies: ["RunbookCore"], path: "Tests/TestSupport"),
    ]
)

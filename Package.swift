// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Tandem",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tandemd", targets: ["tandemd"]),
        .executable(name: "tandemctl", targets: ["tandemctl"]),
        .executable(name: "tandem-vendor", targets: ["tandem-vendor"]),
        .executable(name: "tandem-bench", targets: ["tandem-bench"]),
        .executable(name: "tandem-sim", targets: ["tandem-sim"]),
        .executable(name: "tandem-witness", targets: ["tandem-witness"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd",
                       providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CTandemSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CTandemBusShim", dependencies: ["CSystemd"]),
        .target(name: "TandemCore"),
        .target(name: "TandemPair", dependencies: ["TandemCore"]),
        .target(name: "TandemPeer", dependencies: [
            "TandemPair", "TandemCore", .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemSystemd", dependencies: [
            "CSystemd", "TandemCore", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemWitness", dependencies: [
            "TandemSystemd", "TandemPeer", "TandemPair", "TandemCore", .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "TandemSimulation", dependencies: [
            "TandemPair", "TandemCore", "TandemEngine", "TandemStore", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemLicensing", dependencies: [
            "TandemCore", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "TandemStore", dependencies: [
            "TandemCore", "CTandemSQLite", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemEngine", dependencies: [
            "TandemCore", "TandemLicensing", "TandemStore", "TandemPair",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemAPI", dependencies: ["TandemCore"]),
        // tandemd.conf: the INI reader, every setting and its checks (no network, no bus).
        .target(name: "TandemConfig", dependencies: [
            "TandemCore", "TandemPair", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "TandemClient", dependencies: [
            "TandemAPI", "TandemCore", "TandemLicensing", .product(name: "Logging", package: "swift-log"),
        ]),
        // What /metrics shows: a snapshot of the server, in the Prometheus text format.
        .target(name: "TandemMetrics", dependencies: [
            "TandemCore", .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .target(name: "TandemNet", dependencies: [
            "TandemCore", "TandemAPI", "TandemConfig", "TandemMetrics",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The client half of D-Bus (values, calls, names): libsystemd only.
        .target(name: "TandemBusClient", dependencies: ["CSystemd"]),
        // The server half: the Manager and License objects over the engine.
        .target(name: "TandemBus", dependencies: [
            "CSystemd", "CTandemBusShim", "TandemBusClient", "TandemCore", "TandemEngine", "TandemPair", "TandemStore",
            "TandemMetrics", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemDaemon", dependencies: [
            "CSystemd", "TandemCore", "TandemLicensing", "TandemStore", "TandemEngine", "TandemBus", "TandemBusClient",
            "TandemNet", "TandemAPI", "TandemPair", "TandemPeer", "TandemSystemd", "TandemConfig", "TandemMetrics",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // What the command-line programs share (one-line failures, tables, the run loop).
        .target(name: "TandemCommandLine", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // tandemctl: D-Bus client and network client; no engine, no store, no SQLite.
        .target(name: "TandemctlCommands", dependencies: [
            "TandemCommandLine", "TandemBusClient", "TandemCore", "TandemPeer", "TandemPair", "TandemClient", "TandemLicensing",
            "TandemAPI", "TandemConfig", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // tandem-vendor: licensing only; no D-Bus, no SQLite.
        .target(name: "TandemVendorCommands", dependencies: [
            "TandemCommandLine", "TandemCore", "TandemLicensing",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // tandem-bench: the one program that touches the store directly (its baselines).
        .target(name: "TandemBenchCommands", dependencies: [
            "TandemCommandLine", "TandemBusClient", "TandemCore", "TandemLicensing", "TandemStore", "CTandemSQLite",
            "TandemPeer", "TandemPair",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "tandemd", dependencies: ["TandemDaemon"]),
        .executableTarget(name: "tandemctl", dependencies: ["TandemctlCommands", "TandemCommandLine"]),
        .executableTarget(name: "tandem-vendor", dependencies: ["TandemVendorCommands", "TandemCommandLine"]),
        .executableTarget(name: "tandem-bench", dependencies: ["TandemBenchCommands", "TandemCommandLine"]),
        .executableTarget(name: "tandem-sim", dependencies: ["TandemSimulation", "TandemPair"]),
        .executableTarget(name: "tandem-witness", dependencies: ["TandemWitness"]),
        // Helpers every test target shares (temporary directories).
        .target(name: "TandemTesting"),
        .testTarget(name: "TandemCoreTests", dependencies: ["TandemTesting", "TandemCore"]),
        .testTarget(name: "TandemPairTests", dependencies: [
            "TandemTesting", "TandemPair", "TandemSimulation", "TandemCore", "TandemPeer",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "TandemLicensingTests", dependencies: ["TandemLicensing", "TandemCore"]),
        .testTarget(name: "TandemMetricsTests", dependencies: ["TandemMetrics", "TandemCore"]),
        .testTarget(name: "TandemStoreTests", dependencies: [
            "TandemTesting", "TandemStore", "TandemCore", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TandemEngineTests", dependencies: [
            "TandemTesting", "TandemEngine", "TandemPair", "TandemCore", "TandemLicensing", "TandemStore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(
            name: "TandemDaemonTests",
            dependencies: [
                "TandemTesting", "TandemDaemon", "TandemConfig", "TandemCore", "TandemPair", "TandemSystemd", "CSystemd",
            ]),
        .testTarget(name: "IntegrationTests", dependencies: [
            "TandemTesting", "CSystemd", "TandemPeer", "TandemBus", "TandemBusClient", "TandemCore", "TandemLicensing",
            "TandemNet", "TandemAPI", "TandemClient", "TandemctlCommands", "TandemCommandLine", "TandemMetrics",
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// Fuzzing (scripts/fuzz): TANDEM_FUZZ_RUNTIME, the path of libFuzzer's no-main runtime
// (libclang_rt.fuzzer_no_main-x86_64.a of the toolchain), adds the tandem-fuzz program and
// compiles the modules that read outside input with libFuzzer's coverage instrumentation and
// AddressSanitizer. tandem-fuzz has its own main (LLVMFuzzerRunDriver), hence the no-main runtime.
// Build it in its own scratch path (.build-fuzz): these flags must never reach what ships.
if let runtime = Context.environment["TANDEM_FUZZ_RUNTIME"] {
    let fuzzed: Set = [
        "TandemCore", "TandemLicensing", "TandemPair", "TandemPeer", "TandemAPI", "TandemConfig", "tandem-fuzz",
    ]
    package.targets += [
        .target(name: "CTandemFuzz", path: "Fuzz/CTandemFuzz"),
        .executableTarget(name: "tandem-fuzz", dependencies: [
            "CTandemFuzz", "TandemCore", "TandemLicensing", "TandemPair", "TandemPeer", "TandemAPI", "TandemConfig",
            .product(name: "Crypto", package: "swift-crypto"),
        ], path: "Fuzz/tandem-fuzz",
            linkerSettings: [.unsafeFlags(["-sanitize=address", "-Xlinker", runtime, "-Xlinker", "-lstdc++"])]),
    ]
    package.products.append(.executable(name: "tandem-fuzz", targets: ["tandem-fuzz"]))
    for target in package.targets where fuzzed.contains(target.name) {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-sanitize=fuzzer,address"])]
    }
}

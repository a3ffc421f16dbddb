// swift-tools-version:6.2
import PackageDescription

// Layout: TriadCore is pure (model, validation, selectors, the registry contract, auth rules);
// TriadSQLite and TriadPostgres are the two registry backends; TriadAMQP publishes events to
// RabbitMQ through rabbitmq-c (CRabbitMQ); TriadMQTT talks MQTT through libmosquitto
// (CMosquitto); TriadServer is the HTTP edge;
// TriadClient talks to a server for the CLI; TriadMesh is the mesh's control plane (Envoy config,
// trace managers, control API); `triad` only wires them together. docs/architecture.md has more.
let package = Package(
    name: "triad",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "triad", targets: ["triad"])
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        // Already in the graph through Hummingbird; named here because TriadMesh reads Envoy's
        // fluentd access-log stream on a Unix socket with a raw NIO channel (not HTTP).
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        // The WebSocket client device agents follow Home Assistant with (its WebSocket API).
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
    ],
    targets: [
        .target(
            name: "TriadCore",
            dependencies: [.product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams")]
        ),
        // The registry's SQL schema, shared by the two SQL backends (kept out of TriadCore).
        .target(name: "TriadSQL"),
        // The embedded backend talks to the system's SQLite directly, keeping its prepared statements.
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(
            name: "TriadSQLite",
            dependencies: [
                "TriadCore",
                "TriadSQL",
                "CSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "TriadPostgres",
            dependencies: [
                "TriadCore",
                "TriadSQL",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .systemLibrary(
            name: "CRabbitMQ",
            path: "Sources/CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        .target(
            name: "TriadAMQP",
            dependencies: [
                "TriadCore",
                "CRabbitMQ",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .systemLibrary(
            name: "CMosquitto",
            path: "Sources/CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // Child processes (probes, mesh instances, Envoy) started and reaped the same way.
        .target(
            name: "TriadProcess",
            dependencies: ["TriadCore"]
        ),
        .target(
            name: "TriadMQTT",
            dependencies: ["CMosquitto", "TriadCore"]
        ),
        .target(
            name: "TriadServer",
            dependencies: [
                "TriadCore",
                "TriadSQLite",
                "TriadPostgres",
                "TriadAMQP",
                "TriadMQTT",
                "TriadProcess",
                "TriadDevops",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("Resources/openapi.yaml"), .embedInCode("Console/Assets")]
        ),
        .target(
            name: "TriadClient",
            dependencies: [
                "TriadCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .target(
            name: "TriadMesh",
            dependencies: [
                "TriadCore",
                "TriadProcess",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The devops bridge: git repositories and the build manager.
        .target(
            name: "TriadDevops",
            dependencies: ["TriadCore", "TriadProcess", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Resource agents: the agent host, device agents over Home Assistant, person agents.
        .target(
            name: "TriadAgents",
            dependencies: [
                "TriadCore",
                "TriadClient",
                "TriadAMQP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "triad",
            dependencies: [
                "TriadCore",
                "TriadAgents",
                "TriadServer",
                "TriadClient",
                "TriadMQTT",
                "TriadMesh",
                "TriadDevops",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The measuring side of bench/pipeline.sh; lives with the benchmarks.
        .executableTarget(
            name: "triad-bench",
            dependencies: [
                "TriadCore", "TriadMQTT", "TriadAMQP", "TriadClient", .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "bench/Sources/triad-bench"
        ),
        // What every test suite shares: waiting for what happens, a manual clock, paths, programs run.
        .target(
            name: "TriadTesting",
            dependencies: ["TriadProcess"],
            path: "Tests/TriadTesting"
        ),
        .testTarget(
            name: "TriadCoreTests",
            dependencies: ["TriadCore", "TriadTesting"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "TriadMeshTests",
            dependencies: [
                "TriadProcess",
                "TriadTesting",
                .product(name: "Yams", package: "Yams"),
                "TriadMesh",
                "TriadCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ],
            // Golden files, read by path (IstioRenderTests).
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "TriadDevopsTests",
            dependencies: ["TriadDevops", "TriadCore", "TriadTesting"]
        ),
        .testTarget(
            name: "TriadAMQPTests",
            dependencies: ["TriadAMQP"]
        ),
        .testTarget(
            name: "TriadServerTests",
            dependencies: [
                "TriadAgents",
                "TriadTesting",
                "TriadCore",
                "TriadProcess",
                "TriadServer",
                "TriadClient",
                "TriadSQLite",
                "TriadPostgres",
                "TriadAMQP",
                "TriadMQTT",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                // The small HTTP upstreams that invocation tests call.
                .product(name: "Hummingbird", package: "hummingbird"),
                // Home Assistant's entity registry (WebSocket only), and a relay that takes a
                // service away from one client.
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
    ]
)

// As Hummingbird builds: existentials spelled `any`, and a file sees only the modules it imports.
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .enableUpcomingFeature("ExistentialAny"),
        .enableUpcomingFeature("MemberImportVisibility"),
    ]
}

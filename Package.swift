// swift-tools-version: 6.1
//
// Spindle: a fiber-style job system for Swift on Linux.
//
// Module layout (see ARCHITECTURE.md):
//   CSpindle       C and assembly for what Swift cannot express: the context switch, signal and
//                  alternate-stack glue, sanitizer fiber hooks, GNU-only libc prototypes.
//   Spindle        the library. Depends on the toolchain only.
//   SpindleBenchKit the benchmark engine: sampling, statistics, reports.
//   SpindleArgumentParser  Spindle's options as an @OptionGroup (swift-argument-parser).
//   SpindleConfiguration   Spindle's options from a ConfigReader (swift-configuration).
//   SpindleObservability   start-up/shutdown logs, a status report (swift-log) and metrics
//                          (swift-metrics) of a job system and its pipelines.
//   SpindleBench   the benchmark executable (`swift run -c release spindle-bench`).
//   FrameLoop, AsyncServer, ImageBatch  the examples (Examples/).
import PackageDescription

let package = Package(
    name: "Spindle",
    products: [
        .library(name: "Spindle", targets: ["Spindle"]),
        // Spindle's options as an @OptionGroup for swift-argument-parser commands.
        .library(name: "SpindleArgumentParser", targets: ["SpindleArgumentParser"]),
        // Spindle's options from swift-configuration (environment, JSON file, command line).
        .library(name: "SpindleConfiguration", targets: ["SpindleConfiguration"]),
        // Logging (swift-log) and metrics (swift-metrics) of a running job system.
        .library(name: "SpindleObservability", targets: ["SpindleObservability"]),
        .executable(name: "spindle-bench", targets: ["SpindleBench"]),
        .executable(name: "frame-loop", targets: ["FrameLoop"]),
        .executable(name: "async-server", targets: ["AsyncServer"]),
        .executable(name: "image-batch", targets: ["ImageBatch"]),
    ],
    dependencies: [
        // Used by the integration targets, the benchmark executable and the examples, never by
        // the Spindle library.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // JSON files (a default trait) and command-line arguments (opt-in trait) as providers.
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0",
                 traits: [.defaults, "CommandLineArguments"]),
    ],
    targets: [
        .target(name: "CSpindle"),
        .target(
            name: "Spindle",
            dependencies: ["CSpindle"]
        ),
        // Integrations live in targets of their own, so the core depends on the toolchain only.
        .target(
            name: "SpindleArgumentParser",
            dependencies: ["Spindle", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .target(
            name: "SpindleConfiguration",
            dependencies: ["Spindle", .product(name: "Configuration", package: "swift-configuration")]
        ),
        .target(
            name: "SpindleObservability",
            dependencies: [
                "Spindle",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The benchmark engine: sampling, statistics, reports. No dependency on Spindle, so its
        // unit tests are quick and it can measure any peer.
        .target(
            name: "SpindleBenchKit",
            path: "Benchmarks/SpindleBenchKit"
        ),
        // Counts heap allocations in spindle-bench by interposing malloc (executable only).
        .target(
            name: "CMallocCounter",
            path: "Benchmarks/CMallocCounter"
        ),
        .executableTarget(
            name: "SpindleBench",
            dependencies: [
                "Spindle", "CSpindle", "SpindleBenchKit", "CMallocCounter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/SpindleBench"
        ),
        // Checks with the kernel where memory and work landed (one node here; two in the guest
        // of Tests/NumaGuest/run.sh). docs/numa.md, "Verification".
        .executableTarget(
            name: "SpindleNumaCheck",
            dependencies: ["Spindle"],
            path: "Tests/NumaGuest/Check"
        ),
        // Examples/: runnable programs that use Spindle as an application would (CI runs each).
        .executableTarget(
            name: "FrameLoop",
            dependencies: ["Spindle"],
            path: "Examples/FrameLoop"
        ),
        .executableTarget(
            name: "AsyncServer",
            dependencies: ["Spindle"],
            path: "Examples/AsyncServer"
        ),
        .executableTarget(
            name: "ImageBatch",
            dependencies: [
                "Spindle", "SpindleConfiguration", "SpindleObservability",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/ImageBatch"
        ),
        // Small C helpers that tests need to touch stack memory at a precise depth.
        .target(
            name: "CSpindleTestSupport",
            path: "Tests/CSpindleTestSupport"
        ),
        .testTarget(
            name: "SpindleTests",
            dependencies: ["Spindle", "CSpindle", "CSpindleTestSupport"]
        ),
        .testTarget(
            name: "SpindleIntegrationTests",
            dependencies: [
                "Spindle", "SpindleArgumentParser", "SpindleConfiguration", "SpindleObservability",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "SpindleBenchKitTests",
            dependencies: ["SpindleBenchKit"]
        ),
        // Runs the built spindle-bench executable (a dependency, so it is built first).
        .testTarget(
            name: "SpindleBenchCLITests",
            dependencies: ["SpindleBench"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

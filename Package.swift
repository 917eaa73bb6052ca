// swift-tools-version: 6.1
//
// Spindle: a fiber-style job system for Swift on Linux.
//
// This package (see ARCHITECTURE.md):
//   CSpindle       C and assembly for what Swift cannot express: the context switch, signal and
//                  alternate-stack glue, sanitizer fiber hooks, GNU-only libc prototypes.
//   Spindle        the library. Depends on the toolchain only.
//   SpindleArgumentParser  Spindle's options as an @OptionGroup (swift-argument-parser).
//   SpindleConfiguration   Spindle's options from a ConfigReader (swift-configuration).
//   SpindleObservability   start-up/shutdown logs, a status report (swift-log) and metrics
//                          (swift-metrics) of a job system and its pipelines.
//
// Each integration is behind a package trait of the same name, off by default: a package that
// depends on Spindle without naming a trait resolves no remote package at all (SwiftPM leaves the
// dependencies of disabled traits out of resolution; .ci/run checks it with an empty cache).
//
//     .package(url: "…/Spindle.git", from: "…", traits: ["SpindleConfiguration"])
//
// Two more packages live in this repository and are never dependencies of these products:
//   Benchmarks/    spindle-bench, the benchmark CLI, and its engine (SpindleBenchKit).
//   Examples/      runnable programs that use Spindle as an application would.
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
    ],
    traits: [
        .trait(name: "SpindleArgumentParser",
               description: "Builds the SpindleArgumentParser product (depends on swift-argument-parser)."),
        .trait(name: "SpindleConfiguration",
               description: "Builds the SpindleConfiguration product (depends on swift-configuration)."),
        .trait(name: "SpindleObservability",
               description: "Builds the SpindleObservability product (depends on swift-log and swift-metrics)."),
        .default(enabledTraits: []),
    ],
    dependencies: [
        // Each used only by the integration of the trait that names it, never by `Spindle`.
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
        // Integrations: a target each, its remote dependency behind its trait. Without the trait
        // the module is empty (its sources are inside `#if <trait>`).
        .target(
            name: "SpindleArgumentParser",
            dependencies: [
                "Spindle",
                .product(name: "ArgumentParser", package: "swift-argument-parser",
                         condition: .when(traits: ["SpindleArgumentParser"])),
            ]
        ),
        .target(
            name: "SpindleConfiguration",
            dependencies: [
                "Spindle",
                .product(name: "Configuration", package: "swift-configuration",
                         condition: .when(traits: ["SpindleConfiguration"])),
            ]
        ),
        .target(
            name: "SpindleObservability",
            dependencies: [
                "Spindle",
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["SpindleObservability"])),
                .product(name: "Metrics", package: "swift-metrics", condition: .when(traits: ["SpindleObservability"])),
            ]
        ),
        // Checks with the kernel where memory and work landed (one node here; two in the guest
        // of Tests/NumaGuest/run.sh). docs/numa.md, "Verification".
        .executableTarget(
            name: "SpindleNumaCheck",
            dependencies: ["Spindle"],
            path: "Tests/NumaGuest/Check"
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
        // The integrations' tests, compiled with their traits (`swift test --enable-all-traits`,
        // which Scripts/test-all runs).
        .testTarget(
            name: "SpindleIntegrationTests",
            dependencies: [
                "Spindle", "SpindleArgumentParser", "SpindleConfiguration", "SpindleObservability",
                .product(name: "ArgumentParser", package: "swift-argument-parser",
                         condition: .when(traits: ["SpindleArgumentParser"])),
                .product(name: "Configuration", package: "swift-configuration",
                         condition: .when(traits: ["SpindleConfiguration"])),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: ["SpindleObservability"])),
                .product(name: "Metrics", package: "swift-metrics", condition: .when(traits: ["SpindleObservability"])),
                .product(name: "MetricsTestKit", package: "swift-metrics",
                         condition: .when(traits: ["SpindleObservability"])),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

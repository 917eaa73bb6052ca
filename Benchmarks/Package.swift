// swift-tools-version: 6.1
//
// spindle-bench, Spindle's benchmark CLI, in a package of its own so that its dependencies never
// reach users of the Spindle products (docs/benchmarking.md):
//   SpindleBenchKit  the benchmark engine: sampling, statistics, reports, the workload
//                    definitions (docs/workloads.md). No dependency on Spindle.
//   CMallocCounter   counts heap allocations in spindle-bench by interposing malloc.
//   SpindleBench     the executable: the command line and the suites.
//
// From the repository's root: `swift run --package-path Benchmarks -c release spindle-bench`.
import PackageDescription

let package = Package(
    name: "SpindleBenchmarks",
    products: [
        .executable(name: "spindle-bench", targets: ["SpindleBench"]),
    ],
    dependencies: [
        // Named, so that the dependency is "Spindle" whatever the checkout's folder is called.
        .package(name: "Spindle", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(name: "SpindleBenchKit"),
        .target(name: "CMallocCounter"),
        .executableTarget(
            name: "SpindleBench",
            dependencies: [
                .product(name: "Spindle", package: "Spindle"),
                "SpindleBenchKit", "CMallocCounter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
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

// swift-tools-version: 6.1
//
// Runnable programs that use Spindle as an application would (README.md, "Examples"; CI runs
// each). A package of its own, so that what the examples use never reaches users of Spindle.
//
// From the repository's root: `swift run --package-path Examples -c release frame-loop`.
import PackageDescription

let package = Package(
    name: "SpindleExamples",
    products: [
        .executable(name: "frame-loop", targets: ["FrameLoop"]),
        .executable(name: "async-server", targets: ["AsyncServer"]),
        .executable(name: "image-batch", targets: ["ImageBatch"]),
        .executable(name: "spindle-soak", targets: ["Soak"]),
        .executable(name: "parked-fibers", targets: ["ParkedFibers"]),
    ],
    dependencies: [
        // Named, so that the dependency is "Spindle" whatever the checkout's folder is called;
        // the image batch uses two integrations, each enabled by its trait.
        .package(name: "Spindle", path: "..", traits: ["SpindleConfiguration", "SpindleObservability"]),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0",
                 traits: [.defaults, "CommandLineArguments"]),
    ],
    targets: [
        .executableTarget(
            name: "FrameLoop",
            dependencies: [.product(name: "Spindle", package: "Spindle")]
        ),
        .executableTarget(
            name: "ParkedFibers",
            dependencies: [.product(name: "Spindle", package: "Spindle")]
        ),
        .executableTarget(
            name: "Soak",
            dependencies: [.product(name: "Spindle", package: "Spindle")]
        ),
        .executableTarget(
            name: "AsyncServer",
            dependencies: [.product(name: "Spindle", package: "Spindle")]
        ),
        .executableTarget(
            name: "ImageBatch",
            dependencies: [
                .product(name: "Spindle", package: "Spindle"),
                .product(name: "SpindleConfiguration", package: "Spindle"),
                .product(name: "SpindleObservability", package: "Spindle"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

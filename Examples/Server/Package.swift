// swift-tools-version: 6.1
//
// A Hummingbird 2 server that takes CPU-bound work off its request handlers with Spindle, beside
// the one-line Dispatch alternative (README.md, "Spindle in a server"). A package of its own:
// Hummingbird and SwiftNIO are never dependencies of the Spindle products.
//
//   swift run -c release spindle-server [--port 8080] [--workers N] [--pinning none|compact]
//   ./load.sh                         # wrk at several connection counts: requests/s, p50, p99, CPU
import PackageDescription

let package = Package(
    name: "SpindleServerExample",
    products: [
        .executable(name: "spindle-server", targets: ["SpindleServer"]),
    ],
    dependencies: [
        // Named, so that the dependency is "Spindle" whatever the checkout's folder is called.
        .package(name: "Spindle", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .executableTarget(
            name: "SpindleServer",
            dependencies: [
                .product(name: "Spindle", package: "Spindle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

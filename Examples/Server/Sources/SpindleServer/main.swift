// A server whose requests each need a render of 65–420 µs of CPU time, offloaded from the async
// handler in each of the ways a Swift server team would try (README.md, "Spindle in a server"):
//
//   GET /render/inline?seed=N      computed on the handler's task (the cooperative pool)
//   GET /render/dispatch?seed=N    a Dispatch hop: withCheckedContinuation + DispatchQueue.global()
//   GET /render/compute?seed=N     await jobs.compute { … } on a Spindle job system
//   GET /render/executor?seed=N    withTaskExecutorPreference(jobs) { … }: a task on Spindle's workers
//   GET /render/split?seed=N       jobs.compute, the render's tiles as parallel jobs
//   GET /render/split-dispatch?seed=N  the Dispatch hop, the tiles in a concurrentPerform
//
// Every route answers the render's checksum in hex, the same for every route and seed
// (`spindle-server --render SEED` prints it serially, for checks).

import Dispatch
import Foundation
import Hummingbird
import Spindle

/// The render: `tiles` tiles of a cost that depends on the seed, together 65–420 µs here.
enum Render {
    static let tiles = 4

    /// Spin rounds per microsecond on this machine (W5's spin, calibrated at start), unless
    /// `--rounds-per-us` fixes it: the render's value depends on it, so a check that compares a
    /// server's answers with `--render` fixes it in both processes.
    nonisolated(unsafe) static var fixedRoundsPerMicrosecond: Int?
    static let roundsPerMicrosecond: Int = fixedRoundsPerMicrosecond ?? calibrated

    private static var calibrated: Int {
        var rounds = 1000
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            var sink: UInt64 = 0
            for r in 0..<100 { sink &+= spin(UInt64(r), rounds) }
            let nanoseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 100
            if sink == 42 { print(sink) }
            rounds = max(1, Int(Double(rounds) * 1000 / nanoseconds))
        }
        return rounds
    }

    static func spin(_ seed: UInt64, _ rounds: Int) -> UInt64 {
        var h = seed
        for i in 0..<rounds {
            h ^= h >> 33
            h = h &* 0xff51_afd7_ed55_8ccd &+ UInt64(i)
        }
        return h
    }

    /// Microseconds of work of one tile of a request.
    static func tileMicroseconds(_ seed: UInt64) -> Int {
        (65 + Int(seed % 356)) / tiles
    }

    /// One tile's checksum.
    static func tile(_ seed: UInt64, _ index: Int) -> UInt64 {
        spin(seed &* 31 &+ UInt64(index), tileMicroseconds(seed) * roundsPerMicrosecond)
    }

    /// The whole render, serially.
    static func serial(_ seed: UInt64) -> UInt64 {
        (0..<tiles).reduce(0) { $0 ^ tile(seed, $1) }
    }

    static func answer(_ value: UInt64) -> String { String(value, radix: 16) }
}

struct Options {
    var port = 8080
    var workers: Int?
    var pinning = JobSystem.Pinning.compact
    var render: UInt64?
    var spinMicroseconds: Int?
    var roundsPerMicrosecond: Int?

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst()
        while let option = rest.popFirst() {
            switch option {
            case "--port": port = Self.number(rest.popFirst(), option)
            case "--workers": workers = Self.number(rest.popFirst(), option)
            case "--render": render = UInt64(Self.number(rest.popFirst(), option))
            case "--spin-us": spinMicroseconds = Self.number(rest.popFirst(), option)
            case "--rounds-per-us": roundsPerMicrosecond = Self.number(rest.popFirst(), option)
            case "--pinning":
                switch rest.popFirst() {
                case "none": pinning = .none
                case "compact": pinning = .compact
                case let other: Self.usage("--pinning takes none or compact (got \(other ?? "nothing"))")
                }
            default: Self.usage("unknown option \(option)")
            }
        }
    }

    static func number(_ text: String?, _ option: String) -> Int {
        guard let text, let value = Int(text), value >= 0 else { usage("\(option) needs a number") }
        return value
    }

    static func usage(_ problem: String) -> Never {
        print("spindle-server: \(problem)\nusage: spindle-server [--port N] [--workers N] [--pinning none|compact] [--spin-us N] [--rounds-per-us N] [--render SEED]")
        exit(64)
    }
}

/// The seed of a request (`?seed=N`; 0 when missing).
func seed(_ request: Request) -> UInt64 {
    request.uri.queryParameters.get("seed", as: UInt64.self) ?? 0
}

@main
struct SpindleServer {
    static func main() async throws {
        let options = Options(CommandLine.arguments)
        Render.fixedRoundsPerMicrosecond = options.roundsPerMicrosecond
        if let render = options.render {
            print(Render.answer(Render.serial(render)))
            return
        }
        _ = Render.roundsPerMicrosecond
        var configuration = JobSystem.Configuration(pinning: options.pinning)
        configuration.workers = options.workers
        if let spin = options.spinMicroseconds { configuration.spinBeforeSleeping = .microseconds(spin) }
        let jobs = try JobSystem(configuration: configuration)
        defer { jobs.shutdown() }

        let router = Router()
        router.get("render/inline") { request, _ -> String in
            Render.answer(Render.serial(seed(request)))
        }
        router.get("render/dispatch") { request, _ -> String in
            let seed = seed(request)
            let value = await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: Render.serial(seed)) }
            }
            return Render.answer(value)
        }
        router.get("render/compute") { request, _ -> String in
            let seed = seed(request)
            return Render.answer(await jobs.compute { _ in Render.serial(seed) })
        }
        router.get("render/executor") { request, _ -> String in
            let seed = seed(request)
            return Render.answer(await withTaskExecutorPreference(jobs) { Render.serial(seed) })
        }
        router.get("render/split") { request, _ -> String in
            let seed = seed(request)
            let value = await jobs.compute { _ in
                jobs.parallelReduce(0..<Render.tiles, identity: UInt64(0), combine: ^) { Render.tile(seed, $0) }
            }
            return Render.answer(value)
        }
        router.get("render/split-dispatch") { request, _ -> String in
            let seed = seed(request)
            let value = await withCheckedContinuation { continuation in
                DispatchQueue.global().async {
                    // Each iteration writes its own element; the buffer outlives concurrentPerform.
                    nonisolated(unsafe) let parts = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: Render.tiles)
                    defer { parts.deallocate() }
                    DispatchQueue.concurrentPerform(iterations: Render.tiles) { parts[$0] = Render.tile(seed, $0) }
                    continuation.resume(returning: parts.reduce(0, ^))
                }
            }
            return Render.answer(value)
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: options.port)))
        print("spindle-server: http://127.0.0.1:\(options.port) with \(jobs.workerCount) Spindle workers (pinning \(options.pinning))")
        try await app.runService()
    }
}

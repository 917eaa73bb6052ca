// spindle-soak: mixed work for a given time, watching the process for growth.
//
//     swift run --package-path Examples -c release spindle-soak [--duration 60] [--sample-every 5] [--seed N]
//
// Rounds of seeded mixed work (spawns and waits, fork-join, parallel loops and reductions, task
// graphs, pipelines that finish, are cancelled or are dropped with their input open, and short
// lived job systems created and shut down) run on a long-lived system and on fresh ones until
// the duration has passed. Every result is checked. Between rounds, when no short-lived system
// exists, the process's resident memory, threads, open file descriptors and memory mappings are
// sampled. The run fails (exit 1) on a wrong result or on growth: threads or descriptors above
// the largest value seen in the first third of the samples after warm-up, mappings more than
// 5 % + 64 above it, or resident memory more than 10 % + 8 MiB above it. docs/reliability.md, "Soak".
import Foundation
import Spindle

struct Options {
    var duration = 60.0
    var sampleEvery = 5.0
    var seed: UInt64 = 0x50A4
    var workers = 2

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst()
        func value<T: LosslessStringConvertible>(_ name: String, _: T.Type) -> T {
            guard let next = rest.popFirst(), let parsed = T(next) else { fail("\(name) needs a value of type \(T.self)") }
            return parsed
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--duration": duration = value(argument, Double.self)
            case "--sample-every": sampleEvery = value(argument, Double.self)
            case "--seed": seed = value(argument, UInt64.self)
            case "--workers": workers = value(argument, Int.self)
            case "--help", "-h":
                print("usage: spindle-soak [--duration SECONDS] [--sample-every SECONDS] [--seed N] [--workers N]")
                exit(0)
            default: fail("unknown option \(argument) (see --help)")
            }
        }
        guard duration > 0, sampleEvery > 0, workers >= 1 else { fail("durations and --workers must be positive") }
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("spindle-soak: \(message)\n".utf8))
    exit(1)
}

/// SplitMix64, so that a failing round can be replayed with its seed.
struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

// MARK: The process, sampled

struct Sample {
    var seconds: Double
    var rssKiB: Int
    var threads: Int
    var descriptors: Int
    var mappings: Int

    static func now(at seconds: Double) -> Sample {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return -1 }
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? -1
        }
        let descriptors = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.count ?? 0) - 1
        let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        return Sample(seconds: seconds, rssKiB: field("VmRSS"), threads: field("Threads"),
                      descriptors: descriptors, mappings: maps.utf8.reduce(0) { $0 + ($1 == 10 ? 1 : 0) })
    }
}

// MARK: The work

final class Cells: @unchecked Sendable {
    // SAFETY: each index is written by one job, and read after the loop or graph that wrote it
    // has been waited for.
    let pointer: UnsafeMutablePointer<Int>
    let count: Int
    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: 0, count: count)
    }
    deinit { pointer.deallocate() }
}

func check(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fail("wrong result: \(what())") }
}

/// Spawns, nested spawns with waits, and a fork-join sum.
func spawnsAndWaits(_ jobs: JobSystem, _ random: inout Random) {
    let count = 200 + random.below(2000)
    let tally = Cells(count)
    let all = JobCounter()
    for index in 0..<count {
        jobs.run(counter: all) { context in
            if index % 7 == 0 {
                let inner = JobCounter()
                context.run(counter: inner) { _ in tally.pointer[index] = index }
                context.wait(for: inner)
            } else {
                tally.pointer[index] = index
            }
        }
    }
    jobs.wait(for: all)
    check((0..<count).allSatisfy { tally.pointer[$0] == $0 }, "spawns: an element of \(count) not written")

    @Sendable func sum(_ context: JobContext, _ range: Range<Int>) -> Int {
        if range.count <= 64 { return range.reduce(0, +) }
        let middle = range.lowerBound + range.count / 2
        let (left, right) = context.join({ sum($0, range.lowerBound..<middle) }, { sum($0, middle..<range.upperBound) })
        return left + right
    }
    let n = 10_000 + random.below(100_000)
    let result = Cells(1)
    let done = JobCounter()
    jobs.run(counter: done) { context in result.pointer[0] = sum(context, 0..<n) }
    jobs.wait(for: done)
    check(result.pointer[0] == n * (n - 1) / 2, "join sum of 0..<\(n)")
}

/// A parallel loop, a nested loop, a reduction and a map.
func loops(_ jobs: JobSystem, _ random: inout Random) {
    let rows = 16 + random.below(64)
    let columns = 256 + random.below(2048)
    let cells = Cells(rows * columns)
    jobs.parallelFor(0..<rows) { row in
        jobs.parallelForChunks(0..<columns) { range in
            for column in range { cells.pointer[row * columns + column] = row ^ column }
        }
    }
    for index in 0..<rows * columns {
        check(cells.pointer[index] == (index / columns) ^ (index % columns), "nested loop cell \(index)")
    }
    let n = 1000 + random.below(200_000)
    let total = jobs.parallelReduce(0..<n, identity: 0, combine: +) { $0 }
    check(total == n * (n - 1) / 2, "reduce over 0..<\(n)")
    let squares = jobs.parallelMap(0..<1000) { $0 * $0 }
    check(squares.enumerated().allSatisfy { $0.element == $0.offset * $0.offset }, "parallelMap of squares")
}

/// A layered graph built once and run a few times.
func graphs(_ jobs: JobSystem, _ random: inout Random) {
    let width = 2 + random.below(6)
    let layers = 3 + random.below(20)
    let cells = Cells(width * layers)
    let graph = TaskGraph()
    var nodes: [TaskGraph.Node] = []
    for layer in 0..<layers {
        for column in 0..<width {
            let index = layer * width + column
            let node = graph.node("n\(index)") { _ in
                var value = 1
                if layer > 0 { for from in 0..<width { value += cells.pointer[(layer - 1) * width + from] } }
                cells.pointer[index] = value % 1_000_003
            }
            if layer > 0 { for from in 0..<width { try! nodes[(layer - 1) * width + from].precedes(node) } }
            nodes.append(node)
        }
    }
    var expected = [Int](repeating: 0, count: width * layers)
    for layer in 0..<layers {
        for column in 0..<width {
            var value = 1
            if layer > 0 { for from in 0..<width { value += expected[(layer - 1) * width + from] } }
            expected[layer * width + column] = value % 1_000_003
        }
    }
    for run in 0..<(1 + random.below(4)) {
        try! jobs.runAndWait(graph)
        check((0..<width * layers).allSatisfy { cells.pointer[$0] == expected[$0] }, "graph \(width)×\(layers), run \(run)")
    }
}

/// A pipeline that finishes, one that is cancelled, and one dropped with its input open.
func pipelines(_ jobs: JobSystem, _ random: inout Random) {
    let count = 500 + random.below(5000)
    let pipeline = Pipeline<Int>("soak", channelCapacity: 16 + random.below(64))
    let sum = Cells(1)
    pipeline.source
        .compactMap("odd") { $0 % 2 == 1 ? $0 : nil }
        .parallelMap("double", batch: 8 + random.below(32)) { $0 * 2 }
        .sink("sum") { sum.pointer[0] += $0 }
    let run = try! pipeline.start(on: jobs)
    check(run.send(contentsOf: 0..<count) == count, "pipeline accepted every item")
    let report = try! run.finish()
    let odd = (0..<count).filter { $0 % 2 == 1 }
    check(sum.pointer[0] == odd.reduce(0, +) * 2, "pipeline sum of \(count)")
    check(report.delivered + report.filtered == count, "pipeline accounting: \(report)")

    let cancelled = try! pipeline.start(on: jobs)
    cancelled.send(contentsOf: 0..<count)
    cancelled.cancel()
    let stopped = try! cancelled.wait()
    check(stopped.delivered + stopped.filtered + stopped.discarded == stopped.accepted, "cancelled pipeline accounting: \(stopped)")

    // Dropped with its input open: cancelled by its deinit.
    do {
        let dropped = try! pipeline.start(on: jobs)
        dropped.send(contentsOf: 0..<100)
    }
}

func round(_ jobs: JobSystem, _ random: inout Random) {
    spawnsAndWaits(jobs, &random)
    loops(jobs, &random)
    graphs(jobs, &random)
    pipelines(jobs, &random)
}

// MARK: The run

let options = Options(CommandLine.arguments)
let clock = ContinuousClock()
let start = clock.now
func elapsed() -> Double {
    let duration = clock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

print("spindle-soak: \(Int(options.duration)) s of mixed work on a \(options.workers)-worker system and short-lived ones, seed \(options.seed)")
let longLived = try JobSystem(configuration: .init(workers: options.workers))
var random = Random(state: options.seed)
var samples: [Sample] = []
var rounds = 0
var systems = 0
var nextSample = 0.0
print("  time   rounds  systems   RSS KiB  threads  fds  mappings")
while true {
    let now = elapsed()
    if now >= nextSample {
        let sample = Sample.now(at: now)
        samples.append(sample)
        print(String(format: "%6.1f %8d %8d %9d %8d %4d %9d", now, rounds, systems,
                     sample.rssKiB, sample.threads, sample.descriptors, sample.mappings))
        nextSample += options.sampleEvery
    }
    if now >= options.duration { break }
    var roundRandom = Random(state: random.next())
    if roundRandom.below(3) == 0 {
        let fresh = try JobSystem(configuration: .init(workers: 1 + roundRandom.below(4), threadNamePrefix: "soak-w"))
        round(fresh, &roundRandom)
        fresh.shutdown()
        systems += 1
    } else {
        round(longLived, &roundRandom)
    }
    rounds += 1
}
longLived.shutdown()

// Growth: the first third of the samples after warm-up (the first sample and one period) set
// the reference; the last third must not exceed it.
let settled = Array(samples.dropFirst(2))
guard settled.count >= 3 else {
    print("spindle-soak: \(rounds) rounds, \(systems) short-lived systems, every result right (too short to judge growth: use --duration of at least 4 sample periods)")
    exit(0)
}
let third = max(1, settled.count / 3)
let reference = settled.prefix(third)
let late = settled.suffix(third)
func growth(_ name: String, _ value: (Sample) -> Int, slack: (Int) -> Int) -> String? {
    let limit = reference.map(value).max()!
    let latest = late.map(value).max()!
    guard latest > limit + slack(limit) else { return nil }
    return "\(name) grew from \(limit) to \(latest) (allowed: \(limit + slack(limit)))"
}
var problems: [String] = []
problems += [growth("threads", { $0.threads }, slack: { _ in 0 })].compactMap { $0 }
problems += [growth("file descriptors", { $0.descriptors }, slack: { _ in 0 })].compactMap { $0 }
// A new peak of parked jobs late in the run may add fiber stacks (two mappings each): a little
// slack; a leak of stacks or systems climbs past it.
problems += [growth("memory mappings", { $0.mappings }, slack: { $0 / 20 + 64 })].compactMap { $0 }
problems += [growth("resident KiB", { $0.rssKiB }, slack: { $0 / 10 + 8 * 1024 })].compactMap { $0 }
if !problems.isEmpty { fail("growth after \(rounds) rounds: " + problems.joined(separator: "; ")) }
print("spindle-soak: \(rounds) rounds, \(systems) short-lived systems, every result right; no growth in threads, descriptors, mappings or resident memory")

import Foundation
import Synchronization

/// The standard workloads W1–W7 (docs/workloads.md): constants, inputs, serial references
/// and check values, shared by every implementation so that figures line up.
public enum Workloads {
    // MARK: W1 spawn throughput
    public static let w1Jobs = 1_000_000

    // MARK: W2 fork-join fib
    public static let w2N = 27
    public static let w2Expected = 196_418
    /// Spawns in one fib(27): fib(28) − 1.
    public static let w2Spawns = 317_810

    public static func fibSerial(_ n: Int) -> Int {
        n < 2 ? n : fibSerial(n - 1) + fibSerial(n - 2)
    }

    // MARK: W3 axpy
    public static let w3Count = 16_777_216
    public static let w3PassesPerSample = 20
    /// y rises by 2.5 per pass: 50.0 per sample, exactly (small integers and halves in Float).
    public static let w3RisePerSample: Float = 50
    /// Bytes moved per sample: read x, read y, write y (4 bytes each) for every element, 20 passes.
    public static let w3BytesPerSample = 12 * w3Count * w3PassesPerSample

    @inline(__always)
    public static func axpy(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableBufferPointer<Float>, _ range: Range<Int>) {
        for i in range { y[i] = 2.5 * x[i] + y[i] }
    }

    /// Throws unless every element of `y` equals `expected`.
    public static func checkAxpy(_ y: UnsafeBufferPointer<Float>, expected: Float) throws {
        for i in y.indices where y[i] != expected {
            throw BenchmarkCheckFailure("W3: y[\(i)] = \(y[i]), expected \(expected) (each sample must raise y by exactly 50.0)")
        }
    }

    // MARK: W4 compute-bound
    public static let w4Count = 1_048_576
    public static let w4Expected = "4.903393e+06"

    public static func w4Input() -> [Float] {
        (0..<w4Count).map { Float($0 % 4096) / 4096.0 }
    }

    @inline(__always)
    public static func w4Element(_ x: Float) -> Float {
        var s: Float = 0
        for k in 0..<64 { s += sinf(x * Float(k)) }
        return s
    }

    /// Σ Double(out[i]) in index order, printed %.6e, must be 4.903393e+06.
    public static func checkW4(_ out: UnsafeBufferPointer<Float>) throws {
        try checkSum(out, printed: w4Expected, workload: "W4")
    }

    /// The W4/W7 check: Σ Double(out[i]) in index order, printed `%.6e`, equals `printed`.
    static func checkSum(_ out: UnsafeBufferPointer<Float>, printed expected: String, workload: String) throws {
        var sum = 0.0
        for value in out { sum += Double(value) }
        let printed = String(format: "%.6e", sum)
        guard printed == expected else {
            throw BenchmarkCheckFailure("\(workload): Σ out = \(printed), expected \(expected)")
        }
    }

    // MARK: W5 DAG
    public static let w5Layers = 32
    public static let w5Width = 64
    public static let w5Nodes = w5Layers * w5Width
    public static let w5RunsPerSample = 50
    public static let w5Fingerprint: UInt64 = 15_096_486_880_998_371_215

    /// Dependencies of every node (empty for layer 0), drawn from one splitmix64 stream.
    public static func w5Dependencies() -> [[Int]] {
        var stream = SplitMix64(seed: 42)  // the generator of docs/workloads.md: one stream for the whole graph
        var deps = [[Int]](repeating: [], count: w5Nodes)
        for layer in 1..<w5Layers {
            for j in 0..<w5Width {
                var list: [Int] = []
                while list.count < 4 {
                    let d = (layer - 1) * w5Width + Int(stream.next() % UInt64(w5Width))
                    if !list.contains(d) { list.append(d) }
                }
                deps[layer * w5Width + j] = list
            }
        }
        return deps
    }

    /// FNV-1a-64 over all deps of nodes 64..<2048, in order.
    public static func w5GraphFingerprint(_ deps: [[Int]]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for node in w5Width..<w5Nodes {
            for d in deps[node] {
                h ^= UInt64(d)
                h &*= 0x100_0000_01b3
            }
        }
        return h
    }

    @inline(__always)
    public static func spin(_ seed: UInt64, _ k: Int) -> UInt64 {
        var h = seed
        for i in 0..<k {
            h ^= h >> 33
            h = h &* 0xff51_afd7_ed55_8ccd &+ UInt64(i)
        }
        return h
    }

    /// A node's body: `value[id] = spin(id + Σ value[d], K)`.
    @inline(__always)
    public static func w5Node(_ id: Int, deps: [Int], values: UnsafeMutableBufferPointer<UInt64>, k: Int) {
        var seed = UInt64(id)
        for d in deps { seed &+= values[d] }
        values[id] = spin(seed, k)
    }

    /// K such that one spin takes about 1 µs on this machine, calibrated once per process.
    public static let w5K: Int = {
        var k = 1000
        for _ in 0..<3 {
            let repetitions = 200
            var sink: UInt64 = 0
            let start = Clock.nanoseconds()
            for r in 0..<repetitions { sink &+= spin(UInt64(r), k) }
            let perSpin = Double(Clock.nanoseconds() - start) / Double(repetitions)
            calibrationSink.store(sink, ordering: .relaxed)  // keeps the timed loop alive
            k = Swift.max(1, Int((Double(k) * 1000 / perSpin).rounded()))
        }
        return k
    }()

    /// Where calibration stores its result, so the optimizer cannot drop the timed loop.
    static let calibrationSink = Atomic<UInt64>(0)

    /// The serial reference: every node in id order (a topological order); returns the XOR.
    public static func w5Serial(deps: [[Int]], values: UnsafeMutableBufferPointer<UInt64>, k: Int) -> UInt64 {
        for id in 0..<w5Nodes { w5Node(id, deps: deps[id], values: values, k: k) }
        return values.reduce(0, ^)
    }

    // MARK: W10 async offload

    /// Computations of one W10 sample, shared by the concurrent tasks.
    public static let w10Computations = 20_000
    /// The task counts W10 is measured at.
    public static let w10Concurrency = [1, 32, 128]
    /// K such that one W10 computation takes about 100 µs: a hundred times W5's.
    public static var w10K: Int { 100 * w5K }

    /// The W10 check: the XOR of spin(i, K) over every computation's global index i.
    public static func w10Expected(k: Int) -> UInt64 {
        (0..<w10Computations).reduce(0) { $0 ^ spin(UInt64($1), k) }
    }

    // MARK: W6 dependent chain
    public static let w6Hops = 100_000

    // MARK: W7 nested parallel-for
    public static let w7Outer = 256
    public static let w7Inner = 4096
    public static let w7PassesPerSample = 10
    public static let w7Expected = "2.609294e+06"

    public static func w7Input() -> [Float] {
        (0..<(w7Outer * w7Inner)).map { Float($0 % 1000) * 0.001 }
    }

    @inline(__always)
    public static func w7Element(_ a: Float) -> Float {
        var y = a
        for _ in 0..<8 { y = y * 0.999 + 0.25 }
        return y
    }

    public static func checkW7(_ out: UnsafeBufferPointer<Float>) throws {
        try checkSum(out, printed: w7Expected, workload: "W7")
    }
}

// An image-processing batch on Spindle, configured and observed as a service would be:
//
//   1. batch: every image is blurred with nested parallel loops (images in parallel, the rows of
//      each image in parallel slices) and its histogram is a parallel reduction;
//   2. stream: the same images flow through a pipeline (generate → blur → stats → write) with
//      bounded channels, the blur stage running in parallel and the output kept in order.
//
// Every result is checked against a serial computation; a mismatch exits with status 1.
// Options come from swift-configuration: command line, then environment, then an optional JSON
// file; Spindle's own keys are under `spindle` (--spindle-workers, SPINDLE_PINNING, …).
//
//   swift run -c release image-batch [--images N] [--size PIXELS] [--rounds N] [--status] [--config-file-path F.json]
//   SPINDLE_WORKERS=2 swift run -c release image-batch --spindle-pinning none

import Configuration
import Logging
import Spindle
import SpindleConfiguration
import SpindleObservability
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A grey-scale image, row-major.
struct Image: Sendable, Equatable {
    let id: Int
    let size: Int
    var pixels: [UInt8]

    /// A deterministic test picture: rings and a diagonal gradient, different for each id.
    static func generate(id: Int, size: Int) -> Image {
        var pixels = [UInt8](repeating: 0, count: size * size)
        let center = Double(size) / 2
        for y in 0..<size {
            for x in 0..<size {
                let dx = Double(x) - center, dy = Double(y) - center
                let ring = (Int((dx * dx + dy * dy).squareRoot()) &+ id * 3) & 31
                pixels[y * size + x] = UInt8(truncatingIfNeeded: ring * 6 &+ (x &+ y &+ id) / 4)
            }
        }
        return Image(id: id, size: size, pixels: pixels)
    }
}

/// The binomial filter [1 4 6 4 1]/16 along one axis, edges clamped.
@inline(__always)
func tap(_ pixels: UnsafeBufferPointer<UInt8>, size: Int, x: Int, y: Int, horizontal: Bool) -> UInt8 {
    @inline(__always) func at(_ offset: Int) -> Int {
        let sx = horizontal ? min(max(x + offset, 0), size - 1) : x
        let sy = horizontal ? y : min(max(y + offset, 0), size - 1)
        return Int(pixels[sy * size + sx])
    }
    let sum = at(-2) + 4 * at(-1) + 6 * at(0) + 4 * at(1) + at(2)
    return UInt8((sum + 8) / 16)
}

/// Blurs rows `rows` of `source` along one axis into `output` (which covers exactly those rows).
func blurRows(_ source: UnsafeBufferPointer<UInt8>, size: Int, rows: Range<Int>, horizontal: Bool,
              into output: UnsafeMutableBufferPointer<UInt8>) {
    for y in rows {
        for x in 0..<size {
            output[(y - rows.lowerBound) * size + x] = tap(source, size: size, x: x, y: y, horizontal: horizontal)
        }
    }
}

/// The serial reference blur.
func blurSerially(_ image: Image) -> Image {
    let size = image.size
    var pass = image.pixels
    var result = image.pixels
    image.pixels.withUnsafeBufferPointer { source in
        pass.withUnsafeMutableBufferPointer { blurRows(source, size: size, rows: 0..<size, horizontal: true, into: $0) }
    }
    pass.withUnsafeBufferPointer { source in
        result.withUnsafeMutableBufferPointer { blurRows(source, size: size, rows: 0..<size, horizontal: false, into: $0) }
    }
    return Image(id: image.id, size: size, pixels: result)
}

/// The blur with each pass split into row slices that run in parallel. Called from a job, the
/// loops park the job's fiber while the slices run (nested parallelism, no extra threads).
func blurInParallel(_ image: Image, on jobs: JobSystem) -> Image {
    let size = image.size
    var pass = [UInt8](repeating: 0, count: size * size)
    var result = [UInt8](repeating: 0, count: size * size)
    let rowGrain = max(1, 4096 / size)  // about 4 KiB of pixels per slice
    // A slice must hold whole rows: fixed partitioning cuts at multiples of the grain from the
    // start (adaptive partitioning may cut anywhere, never below the grain).
    let slices = Partitioner.fixed(grain: rowGrain * size)
    image.pixels.withUnsafeBufferPointer { source in
        let source = SendableBuffer(source)
        pass.withParallelMutableSlices(on: jobs, partitioner: slices) { slice, range in
            blurRows(source.buffer, size: size, rows: range.lowerBound / size..<(range.upperBound / size),
                     horizontal: true, into: slice)
        }
    }
    pass.withUnsafeBufferPointer { source in
        let source = SendableBuffer(source)
        result.withParallelMutableSlices(on: jobs, partitioner: slices) { slice, range in
            blurRows(source.buffer, size: size, rows: range.lowerBound / size..<(range.upperBound / size),
                     horizontal: false, into: slice)
        }
    }
    return Image(id: image.id, size: size, pixels: result)
}

/// A read-only buffer shared with the slices of one loop (the loop returns before the buffer's
/// scope ends).
struct SendableBuffer: @unchecked Sendable {
    let buffer: UnsafeBufferPointer<UInt8>
    init(_ buffer: UnsafeBufferPointer<UInt8>) { self.buffer = buffer }
}

/// A 16-bin histogram.
struct Histogram: Sendable, Equatable {
    var bins = [Int](repeating: 0, count: 16)
    static func + (lhs: Histogram, rhs: Histogram) -> Histogram {
        Histogram(bins: zip(lhs.bins, rhs.bins).map(+))
    }

    /// Counts the pixels of `rows`.
    mutating func count(_ image: Image, rows: Range<Int>) {
        bins.withUnsafeMutableBufferPointer { bins in
            image.pixels.withUnsafeBufferPointer { pixels in
                for pixel in pixels[rows.lowerBound * image.size..<rows.upperBound * image.size] {
                    bins[Int(pixel) >> 4] += 1
                }
            }
        }
    }
}

func histogramSerially(_ image: Image) -> Histogram {
    var histogram = Histogram()
    histogram.count(image, rows: 0..<image.size)
    return histogram
}

/// The histogram as a parallel reduction over blocks of rows, one histogram per block; fixed
/// blocks, so the result does not depend on where the partitioner split.
func histogramInParallel(_ image: Image, on jobs: JobSystem) -> Histogram {
    let rowsPerBlock = max(1, 16_384 / image.size)
    let blocks = (image.size + rowsPerBlock - 1) / rowsPerBlock
    return jobs.parallelReduce(0..<blocks, identity: Histogram(), partitioner: .fixed(grain: 1), combine: +) { block in
        var histogram = Histogram()
        histogram.count(image, rows: block * rowsPerBlock..<min(image.size, (block + 1) * rowsPerBlock))
        return histogram
    }
}

/// FNV-1a over an image's pixels.
func checksum(_ image: Image) -> UInt64 {
    image.pixels.reduce(0xcbf2_9ce4_8422_2325 ^ UInt64(image.id)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

// MARK: - Program

struct Failure: Error, CustomStringConvertible {
    let description: String
}

func seconds(_ duration: Duration) -> String {
    let value = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    return String(Int(value * 1000)) + " ms"
}

func runExample() async throws {
    // Options: the command line first, then the environment, then a JSON file if one is named.
    let early = ConfigReader(providers: [CommandLineArgumentsProvider(), EnvironmentVariablesProvider()])
    var providers: [any ConfigProvider] = [CommandLineArgumentsProvider(), EnvironmentVariablesProvider()]
    if early.string(forKey: "config.filePath") != nil {  // --config-file-path or CONFIG_FILE_PATH
        providers.append(try await FileProvider<JSONSnapshot>(config: early.scoped(to: "config")))
    }
    let config = ConfigReader(providers: providers)
    let imageCount = config.int(forKey: "images", default: 48)
    let size = config.int(forKey: "size", default: 256)
    let statusReport = config.bool(forKey: "status", default: false)
    guard imageCount >= 1, size >= 8 else {
        throw Failure(description: "--images must be at least 1 and --size at least 8 (got \(imageCount) and \(size))")
    }

    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    var logger = Logger(label: "image-batch")
    logger.logLevel = .info

    let configuration = try JobSystem.Configuration(config: config)
    let jobs = try JobSystem(configuration: configuration, logger: logger)
    defer { jobs.shutdown() }
    let monitor = JobSystemMonitor(jobs, logger: logger,
                                   options: .init(interval: .milliseconds(250), statusReport: statusReport, metrics: false))
    defer { monitor.stop() }
    let clock = ContinuousClock()

    // Each phase runs `rounds` times and reports its fastest round (the first pays for mapping
    // fiber stacks and touching fresh memory).
    let rounds = max(1, config.int(forKey: "rounds", default: 3))
    func fastest<T>(_ body: () throws -> T) rethrows -> (T, Duration) {
        var best = Duration.seconds(Int64.max)
        var result: T?
        for _ in 0..<rounds {
            let start = clock.now
            result = try body()
            best = min(best, clock.now - start)
        }
        return (result!, best)
    }

    // The expected results, computed serially.
    let images = (0..<imageCount).map { Image.generate(id: $0, size: size) }
    let ((expected, expectedHistograms), serialTime) = fastest { () -> ([Image], [Histogram]) in
        let blurred = images.map { blurSerially($0) }
        return (blurred, blurred.map(histogramSerially))
    }
    let expectedChecksum = expected.reduce(UInt64(0)) { $0 ^ checksum($1) }

    // 1. Batch: images in parallel, each blurred with parallel row slices (nested loops).
    let ((blurred, histograms), batchTime) = fastest { () -> ([Image], [Histogram]) in
        let blurred = images.parallelMap(on: jobs) { blurInParallel($0, on: jobs) }
        return (blurred, blurred.parallelMap(on: jobs) { histogramInParallel($0, on: jobs) })
    }
    guard blurred == expected, histograms == expectedHistograms else {
        throw Failure(description: "batch: a blurred image or histogram differs from the serial computation")
    }

    // 2. Stream: the same images through a pipeline with bounded channels, built once and run
    //    once per round.
    let pipeline = Pipeline<Int>("images", channelCapacity: 16)
    let generated = pipeline.source.parallelMap("generate", batch: 4) { Image.generate(id: $0, size: size) }
    let blurredStream = generated.parallelMap("blur", batch: 4) { blurSerially($0) }
    let stats = blurredStream.map("stats", state: -1) { (last: inout Int, image: Image) -> (Image, Histogram) in
        precondition(image.id == last + 1, "the pipeline reordered images: \(image.id) after \(last)")
        last = image.id
        return (image, histogramSerially(image))
    }
    let written = Mutex<(checksum: UInt64, histogram: Histogram, count: Int)>((0, Histogram(), 0))
    stats.sink("write") { item in
        let (image, histogram) = item
        written.withLock {
            $0.checksum ^= checksum(image)
            $0.histogram = $0.histogram + histogram
            $0.count += 1
        }
    }
    let (report, streamTime) = try fastest { () throws -> PipelineReport in
        written.withLock { $0 = (0, Histogram(), 0) }
        let run = try pipeline.start(on: jobs)
        monitor.observe(run, name: "images")
        for id in 0..<imageCount { run.send(id) }
        let report = try run.finish()
        let result = written.withLock { $0 }
        guard result.count == imageCount, result.checksum == expectedChecksum,
              result.histogram == expectedHistograms.reduce(Histogram(), +), report.accepted == imageCount else {
            throw Failure(description: "stream: \(result.count) of \(imageCount) images written, checksums \(result.checksum) vs \(expectedChecksum)")
        }
        return report
    }

    print("image-batch: \(imageCount) images of \(size)x\(size) on \(jobs.workerCount) workers, fastest of \(rounds) rounds")
    print("  serial blur + histogram      \(seconds(serialTime))")
    print("  batch (nested parallel loops) \(seconds(batchTime))")
    print("  stream (generate → blur → stats → write) \(seconds(streamTime))")
    for stage in report.stages {
        print("    \(stage.name): \(stage.itemsIn) in, \(stage.itemsOut) out, busy \(seconds(stage.busy)), waiting for room \(seconds(stage.waitingForRoom))")
    }
    print("  checksum \(String(expectedChecksum, radix: 16)): batch and stream match the serial results")
}

do {
    try await runExample()
} catch {
    print("image-batch: \(error)")
    exit(1)
}

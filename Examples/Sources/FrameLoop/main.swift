// A game-style frame loop on Spindle: each frame runs one task graph, built once
//
//   input (high) ──> animate ─┬─> physics ──> cull ──> submit (low)
//                             └─> audio (low)
//
// whose nodes use parallel loops over the entities and per-frame scratch memory from the frame
// allocator. `--trace FILE` records the job timeline of the run for https://ui.perfetto.dev.
//
//   swift run -c release frame-loop [--frames N] [--entities N] [--trace FILE]

import Spindle

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var frames = 120
    var entities = 50_000
    var tracePath: String?

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst()
        while let option = rest.popFirst() {
            switch option {
            case "--frames": frames = Self.number(rest.popFirst(), for: option)
            case "--entities": entities = Self.number(rest.popFirst(), for: option)
            case "--trace":
                guard let path = rest.popFirst() else { Self.usage("--trace needs a file name") }
                tracePath = path
            default: Self.usage("unknown option \(option)")
            }
        }
        if frames < 1 || entities < 1 { Self.usage("--frames and --entities must be at least 1") }
    }

    static func number(_ text: String?, for option: String) -> Int {
        guard let text, let value = Int(text) else { usage("\(option) needs a number") }
        return value
    }

    static func usage(_ problem: String) -> Never {
        print("frame-loop: \(problem)\nusage: frame-loop [--frames N] [--entities N] [--trace FILE]")
        exit(64)
    }
}

/// Memory shared by the jobs of one frame, which write disjoint indices of it (the graph orders
/// the nodes, and each parallel loop gives every index to one chunk).
struct Shared<Element>: @unchecked Sendable {
    // SAFETY: see above; nothing reads an element while another job writes it.
    let buffer: UnsafeMutableBufferPointer<Element>

    init(_ buffer: UnsafeMutableBufferPointer<Element>) { self.buffer = buffer }

    subscript(index: Int) -> Element {
        get { buffer[index] }
        nonmutating set { buffer[index] = newValue }
    }
}

/// The simulated world: structure-of-arrays state.
final class World: @unchecked Sendable {
    // SAFETY: the arrays' elements are written through `Shared` as described there; `visible`,
    // `audioLevel` and `frame` are written by one node each, ordered before their readers.
    let count: Int
    let x, y, vx, vy, phase: Shared<Float>
    var visible = 0
    var audioLevel: Float = 0
    var frame = 0

    init(entities: Int) {
        count = entities
        var seed: UInt64 = 0x5EED
        func column(_ scale: Float, _ offset: Float) -> Shared<Float> {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: entities)
            for i in 0..<entities {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                buffer[i] = Float(seed >> 40) / Float(1 << 24) * scale + offset
            }
            return Shared(buffer)
        }
        x = column(200, -100)
        y = column(200, -100)
        vx = column(2, -1)
        vy = column(2, -1)
        phase = column(1, 0)
    }

    deinit {
        for column in [x, y, vx, vy, phase] { column.buffer.deallocate() }
    }
}

func makeFrameGraph(_ world: World, jobs: JobSystem) -> TaskGraph {
    let graph = TaskGraph("frame")
    let count = world.count
    let (x, y, vx, vy, phase) = (world.x, world.y, world.vx, world.vy, world.phase)
    let input = graph.node("input", priority: .high) { _ in
        world.frame += 1
    }
    let animate = graph.node("animate") { _ in
        jobs.parallelFor(0..<count, grain: 2048) { range in
            for i in range { phase[i] = (phase[i] + 0.01).truncatingRemainder(dividingBy: 1) }
        }
    }
    let physics = graph.node("physics") { _ in
        let dt: Float = 1.0 / 60
        jobs.parallelFor(0..<count, grain: 2048) { range in
            for i in range {
                x[i] += vx[i] * dt
                y[i] += vy[i] * dt
                if abs(x[i]) > 100 { vx[i] = -vx[i] }
                if abs(y[i]) > 100 { vy[i] = -vy[i] }
            }
        }
    }
    let cull = graph.node("cull") { ctx in
        // One visible count per chunk in per-frame scratch memory: no heap allocation per frame.
        let chunk = 4096
        let chunks = (count + chunk - 1) / chunk
        let counts = Shared(ctx.frameAllocate(Int.self, count: chunks))
        jobs.parallelFor(0..<chunks) { c in
            var visible = 0
            for i in c * chunk..<min(count, (c + 1) * chunk) where abs(x[i]) < 50 && abs(y[i]) < 40 {
                visible += 1
            }
            counts[c] = visible
        }
        world.visible = counts.buffer.reduce(0, +)
    }
    let submit = graph.node("submit", priority: .low) { _ in
        // Stand-in for building the frame's draw list.
        _ = world.visible
    }
    let audio = graph.node("audio", priority: .low) { _ in
        let sum = jobs.parallelReduce(0..<count, identity: Float(0), partitioner: .fixed(grain: 8192), combine: +) { phase[$0] }
        world.audioLevel = sum / Float(count)
    }
    try! input.precedes(animate)
    try! animate.precedes(physics, audio)   // audio reads the phases animate wrote
    try! physics.precedes(cull)
    try! cull.precedes(submit)
    return graph
}

/// The visible count the slow way, to check the parallel one.
func visibleSerially(_ world: World) -> Int {
    (0..<world.count).filter { abs(world.x[$0]) < 50 && abs(world.y[$0]) < 40 }.count
}

func main() throws {
    let options = Options(CommandLine.arguments)
    let jobs = try JobSystem()
    let world = World(entities: options.entities)
    let graph = makeFrameGraph(world, jobs: jobs)
    if options.tracePath != nil { jobs.startTrace() }
    let clock = ContinuousClock()
    // Frame times only: the serial check after each frame is not part of the loop being shown.
    var worst = Duration.zero
    var total = Duration.zero
    for _ in 0..<options.frames {
        let frameStart = clock.now
        try jobs.frame { try jobs.runAndWait(graph) }
        let elapsed = clock.now - frameStart
        total += elapsed
        worst = max(worst, elapsed)
        guard world.visible == visibleSerially(world) else {
            print("frame-loop: frame \(world.frame) culled \(world.visible) visible entities, expected \(visibleSerially(world))")
            exit(1)
        }
    }
    if let path = options.tracePath {
        let trace = jobs.stopTrace()
        try trace.write(toFile: path)
        print("trace: \(trace.eventCount) events (\(trace.droppedEvents) dropped) written to \(path); open it at https://ui.perfetto.dev")
    }
    print("frame-loop: \(options.frames) frames of \(options.entities) entities on \(jobs.workerCount) workers, "
          + "mean \(total / options.frames), worst \(worst); \(world.visible) visible, audio level \(world.audioLevel)")
    jobs.shutdown()
}

do {
    try main()
} catch {
    print("frame-loop: \(error)")
    exit(1)
}

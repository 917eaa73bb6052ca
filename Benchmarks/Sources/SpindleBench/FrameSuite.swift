// The frame group: the game-style frame of Examples/FrameLoop (one task graph per frame whose
// nodes run parallel loops over 100,000 entities, per-frame scratch from the frame allocator,
// priorities) as a benchmark, beside the same frame on Dispatch with concurrentPerform for each
// phase. Also, for the shared-machine question (docs/benchmarking.md, "Measuring beside other
// work"): two job systems in one process each running its own frame at the same time, beside two
// threads running the Dispatch frame at the same time; and W7 the same way.
//
// One iteration is one frame. The check after each frame (untimed) compares the culled count
// with a serial count and the audio level with a serial sum.

import Dispatch
import Foundation
import Spindle
import SpindleBenchKit

enum FrameSuite {
    static let entities = 100_000
    static let cullChunk = 4096

    /// Structure-of-arrays state of one world; the frame's phases write disjoint indices.
    final class World: @unchecked Sendable {
        // SAFETY: a frame's loops give every index to one chunk, the graph (or the Dispatch
        // frame's order) orders the phases, and the check reads after the frame.
        let count: Int
        let x, y, vx, vy, phase: UnsafeMutablePointer<Float>
        var visible = 0
        var audioLevel: Float = 0

        init(entities: Int) {
            count = entities
            var seed: UInt64 = 0xF4A3E
            func column(_ scale: Float, _ offset: Float) -> UnsafeMutablePointer<Float> {
                let column = UnsafeMutablePointer<Float>.allocate(capacity: entities)
                for i in 0..<entities {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    column[i] = Float(seed >> 40) / Float(1 << 24) * scale + offset
                }
                return column
            }
            x = column(200, -100)
            y = column(200, -100)
            vx = column(2, -1)
            vy = column(2, -1)
            phase = column(1, 0)
        }

        deinit { for column in [x, y, vx, vy, phase] { column.deallocate() } }

        // The phases' bodies, shared by both implementations.

        func animate(_ range: Range<Int>) {
            for i in range { phase[i] = (phase[i] + 0.01).truncatingRemainder(dividingBy: 1) }
        }

        func physics(_ range: Range<Int>) {
            let dt: Float = 1.0 / 60
            for i in range {
                x[i] += vx[i] * dt
                y[i] += vy[i] * dt
                if abs(x[i]) > 100 { vx[i] = -vx[i] }
                if abs(y[i]) > 100 { vy[i] = -vy[i] }
            }
        }

        func visible(inChunk chunk: Int) -> Int {
            var visible = 0
            for i in chunk * cullChunk..<Swift.min(count, (chunk + 1) * cullChunk) where abs(x[i]) < 50 && abs(y[i]) < 40 {
                visible += 1
            }
            return visible
        }

        var chunks: Int { (count + cullChunk - 1) / cullChunk }

        /// The check: the frame's visible count and audio level against serial ones.
        func check(_ name: String) throws {
            let serialVisible = (0..<chunks).reduce(0) { $0 + visible(inChunk: $1) }
            guard visible == serialVisible else {
                throw BenchmarkCheckFailure("frame/\(name): \(visible) entities culled visible, expected \(serialVisible)")
            }
            var sum: Float = 0
            for i in 0..<count { sum += phase[i] }
            let expected = sum / Float(count)
            guard abs(audioLevel - expected) <= 1e-3 * Swift.max(1, abs(expected)) else {
                throw BenchmarkCheckFailure("frame/\(name): audio level \(audioLevel), expected \(expected)")
            }
        }
    }

    /// The frame as a task graph on `jobs` (Examples/FrameLoop's shape):
    /// input (high) → animate → physics → cull → submit (low), animate → audio (low).
    static func frameGraph(_ world: World, on jobs: JobSystem) -> TaskGraph {
        let graph = TaskGraph("frame")
        let count = world.count
        let input = graph.node("input", priority: .high) { _ in }
        let animate = graph.node("animate") { _ in
            jobs.parallelFor(0..<count, grain: 2048) { range in world.animate(range) }
        }
        let physics = graph.node("physics") { _ in
            jobs.parallelFor(0..<count, grain: 2048) { range in world.physics(range) }
        }
        let cull = graph.node("cull") { ctx in
            // One count per chunk in per-frame scratch memory.
            let chunks = world.chunks
            let counts = SharedBuffer(pointer: ctx.frameAllocate(Int.self, count: chunks))
            jobs.parallelFor(0..<chunks) { c in counts.pointer[c] = world.visible(inChunk: c) }
            world.visible = (0..<chunks).reduce(0) { $0 + counts.pointer[$1] }
        }
        let submit = graph.node("submit", priority: .low) { _ in _ = world.visible }
        let audio = graph.node("audio", priority: .low) { _ in
            let sum = jobs.parallelReduce(0..<count, identity: Float(0), partitioner: .fixed(grain: 8192), combine: +) { world.phase[$0] }
            world.audioLevel = sum / Float(count)
        }
        do {
            try input.precedes(animate)
            try animate.precedes(physics, audio)
            try physics.precedes(cull)
            try cull.precedes(submit)
        } catch {
            preconditionFailure("frame graph: \(error)")
        }
        return graph
    }

    /// The same frame on Dispatch: the phases in the graph's order, each loop a concurrentPerform
    /// over chunks, audio beside physics and cull on a global queue.
    static func dispatchFrame(_ world: World) {
        let count = world.count
        func chunked(_ grain: Int, _ body: @Sendable (Range<Int>) -> Void) {
            let chunks = (count + grain - 1) / grain
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                body(c * grain..<Swift.min(count, (c + 1) * grain))
            }
        }
        chunked(2048) { world.animate($0) }
        let audioDone = DispatchSemaphore(value: 0)
        DispatchQueue.global(qos: .utility).async {
            let grain = 8192
            let chunks = (count + grain - 1) / grain
            let partial = SharedBuffer<Float>(repeating: 0, count: chunks)
            defer { partial.pointer.deallocate() }
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                var sum: Float = 0
                for i in c * grain..<Swift.min(count, (c + 1) * grain) { sum += world.phase[i] }
                partial.pointer[c] = sum
            }
            world.audioLevel = partial.pointer.reduce(0, +) / Float(count)
            audioDone.signal()
        }
        chunked(2048) { world.physics($0) }
        let chunks = world.chunks
        let counts = SharedBuffer<Int>(repeating: 0, count: chunks)
        defer { counts.pointer.deallocate() }
        DispatchQueue.concurrentPerform(iterations: chunks) { c in counts.pointer[c] = world.visible(inChunk: c) }
        world.visible = counts.pointer.reduce(0, +)
        audioDone.wait()
    }

    /// A routine running `frame` once per iteration on `world`, checked after each (untimed).
    static func routine(_ name: String, _ world: World, _ frame: @escaping () throws -> Void) -> Routine {
        { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                total &+= try Clock.measure { try frame() }
                try world.check(name)
            }
            return total
        }
    }

    /// Runs `first` and `second` at the same time on two threads of their own and returns when
    /// both are done (the caller runs `first`).
    static func together(_ first: () throws -> Void, _ second: @escaping @Sendable () throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        let failure = ErrorBox()
        Thread {
            do { try second() } catch { failure.error = error }
            done.signal()
        }.start()
        try first()
        done.wait()
        if let error = failure.error { throw error }
    }

    final class ErrorBox: @unchecked Sendable {
        // SAFETY: written by one thread before it signals, read after the wait.
        var error: (any Error)?
    }

    /// Two job systems of `workers` workers each, kept for the run.
    nonisolated(unsafe) static var pairs: [Int: (JobSystem, JobSystem)] = [:]

    static func pair(workers: Int) throws -> (JobSystem, JobSystem) {
        if let pair = pairs[workers] { return pair }
        let pair = (try JobSystem(configuration: .init(workers: workers, threadNamePrefix: "pair-a-w")),
                    try JobSystem(configuration: .init(workers: workers, threadNamePrefix: "pair-b-w")))
        pairs[workers] = pair
        return pair
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(entities)
        registry.register(Benchmark(BenchmarkID(group: "frame", name: "dispatch"), throughput: throughput, mode: .flat,
                                    note: "the same frame: concurrentPerform over chunks per phase, audio on a global queue beside physics and cull") { _ in
            let world = World(entities: entities)
            return routine("dispatch", world) { dispatchFrame(world) }
        })
        registry.register(Benchmark(BenchmarkID(group: "frame", name: "spindle"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "one TaskGraph per frame (input → animate → physics → cull → submit, audio beside physics), parallelFor over the entities in the nodes, frame allocator, priorities; jobs.frame { runAndWait }") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let world = World(entities: entities)
            let graph = frameGraph(world, on: jobs)
            return routine("spindle", world) { try jobs.frame { try jobs.runAndWait(graph) } }
        })
        registry.register(Benchmark(BenchmarkID(group: "frame", name: "dispatch-two-at-once"), throughput: .elements(2 * entities),
                                    mode: .flat,
                                    note: "two threads each run the Dispatch frame on a world of their own at the same time; sample = both done") { _ in
            let first = World(entities: entities), second = World(entities: entities)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    total &+= try Clock.measure { try together({ dispatchFrame(first) }, { dispatchFrame(second) }) }
                    try first.check("dispatch-two-at-once")
                    try second.check("dispatch-two-at-once")
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "frame", name: "spindle-two-systems"), throughput: .elements(2 * entities),
                                    mode: .flat, sweepsThreads: true,
                                    note: "two JobSystems in one process, each of `threads` workers, each running its frame graph on a world of its own at the same time; sample = both done") { threads in
            let (a, b) = try pair(workers: threads)
            let first = World(entities: entities), second = World(entities: entities)
            let firstGraph = frameGraph(first, on: a), secondGraph = frameGraph(second, on: b)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    total &+= try Clock.measure {
                        try together({ try a.frame { try a.runAndWait(firstGraph) } },
                                     { try b.frame { try b.runAndWait(secondGraph) } })
                    }
                    try first.check("spindle-two-systems")
                    try second.check("spindle-two-systems")
                }
                return total
            }
        })
        registerW7Pairs(&registry)
    }

    /// W7 with the inner loop chunked, twice at the same time: two job systems, or two threads
    /// on Dispatch.
    static func registerW7Pairs(_ registry: inout BenchmarkRegistry) {
        let outer = Workloads.w7Outer, inner = Workloads.w7Inner
        let throughput = Throughput.elements(2 * outer * inner * Workloads.w7PassesPerSample)
        let innerChunks = 8
        func pairRoutine(_ pass: @escaping @Sendable (Int, SharedBuffer<Float>, SharedBuffer<Float>) -> Void) -> Routine {
            let a = SharedBuffer(Workloads.w7Input())
            let outs = [SharedBuffer<Float>(repeating: 0, count: outer * inner), SharedBuffer<Float>(repeating: 0, count: outer * inner)]
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    for out in outs { out.pointer.update(repeating: 0) }
                    total &+= try Clock.measure {
                        try together({
                            for _ in 0..<Workloads.w7PassesPerSample { pass(0, a, outs[0]) }
                        }, {
                            for _ in 0..<Workloads.w7PassesPerSample { pass(1, a, outs[1]) }
                        })
                    }
                    for out in outs { try Workloads.checkW7(out.readOnly) }
                }
                return total
            }
        }
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "dispatch-chunks-two-at-once"), throughput: throughput,
                                    mode: .flat,
                                    note: "two threads each run W7 (concurrentPerform(256) containing concurrentPerform over \(innerChunks) chunks) at the same time; sample = both done") { _ in
            pairRoutine { _, a, out in
                DispatchQueue.concurrentPerform(iterations: outer) { o in
                    DispatchQueue.concurrentPerform(iterations: innerChunks) { c in
                        for i in chunk(c, of: innerChunks, count: inner) {
                            out.pointer[o * inner + i] = Workloads.w7Element(a.pointer[o * inner + i])
                        }
                    }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "spindle-chunks-two-systems"), throughput: throughput,
                                    mode: .flat, sweepsThreads: true,
                                    note: "two JobSystems of `threads` workers each run W7 with parallelForChunks inside (as spindle-chunks) at the same time; sample = both done") { threads in
            let systems = try pair(workers: threads)
            return pairRoutine { which, a, out in
                let jobs = which == 0 ? systems.0 : systems.1
                jobs.parallelFor(0..<outer) { o in
                    jobs.parallelForChunks(0..<inner) { range in
                        let input = a.pointer, output = out.pointer
                        for i in range { output[o * inner + i] = Workloads.w7Element(input[o * inner + i]) }
                    }
                }
            }
        })
    }
}

import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Frame memory: per worker, reused each frame.
extension JobSystemTests {
    @Suite(.serialized)
    struct FrameTests {
        @Test(arguments: [1, 4])
        func frameMemoryIsPerWorkerAndReusedEachFrame(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 60, "frameMemory workers=\(workers)") {
                let addresses = Locked<Set<UInt>>([])
                let corrupt = Tally()
                for frame in 0..<3 {
                    jobs.frame {
                        let outside = jobs.frameAllocate(UInt64.self, count: 16)
                        outside.initialize(repeating: UInt64(frame))
                        jobs.wait(for: jobs.run(count: 64) { index, ctx in
                            let buffer = ctx.frameAllocate(UInt64.self, count: 1000)
                            buffer.initialize(repeating: UInt64(index))
                            ctx.wait(for: ctx.run(count: 2) { _, _ in })
                            if buffer.contains(where: { $0 != UInt64(index) }) { corrupt.add() }
                            addresses.withLock { _ = $0.insert(UInt(bitPattern: buffer.baseAddress)) }
                        })
                        #expect(outside.allSatisfy { $0 == UInt64(frame) })
                    }
                }
                #expect(corrupt.current == 0)
                #expect(addresses.withLock { $0.count } <= 64 * 3)
                #expect(jobs.metrics().total.frameBytes > 0)
            }
            #if DEBUG
            // Debug builds poison a frame's memory when it ends.
            var kept: UnsafeMutableBufferPointer<UInt8>?
            jobs.frame {
                kept = jobs.frameAllocate(UInt8.self, count: 64)
                kept!.initialize(repeating: 7)
            }
            #expect(kept!.allSatisfy { $0 == 0xDD })
            #endif
            jobs.shutdown()
        }
    }
}

@testable import Spindle
import Synchronization
import Testing

/// The memory of job records (Scheduler/Jobs/RecordMemory.swift): the bump arena, its chunks and
/// their pool, and the reclamation rule of docs/scheduler.md, "Job records".
struct RecordArenaTests {
    /// A pool whose chunks are not bound to any node (placement is NumaTests' business).
    func makePool() -> ChunkPool {
        ChunkPool(node: 0, placement: MemoryPlacement { _, _, _ in true })
    }

    /// Fills the arena's current chunk with records of `size` bytes: the records, in order, and
    /// the chunk they are in.
    func fillChunk(_ arena: inout RecordArena, pool: Unmanaged<ChunkPool>,
                   size: Int) -> (records: [UnsafeMutableRawPointer], chunk: UnsafeMutableRawPointer) {
        let first = arena.allocate(size: size, pool: pool)
        let chunk = RecordChunk.of(first)
        var records = [first]
        while arena.cursor + size <= RecordChunk.chunkSize {
            records.append(arena.allocate(size: size, pool: pool))
        }
        return (records, chunk)
    }

    @Test
    func recordsAreAlignedAndConsecutiveWithinAChunk() {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        // Sizes that are not multiples of 8 round up to the next one.
        let sizes = [32, 1, 7, 8, 9, 24, 13, 64, 3]
        var records: [UnsafeMutableRawPointer] = []
        for size in sizes { records.append(arena.allocate(size: size, pool: unmanaged)) }
        let chunk = RecordChunk.of(records[0])
        #expect(UInt(bitPattern: chunk) % UInt(RecordChunk.chunkSize) == 0, "a chunk is aligned to its size")
        #expect(records[0] == chunk + RecordChunk.headerSize, "the first record follows the chunk header")
        for (index, record) in records.enumerated() {
            #expect(UInt(bitPattern: record) % 8 == 0, "record \(index) (\(sizes[index]) bytes) is not 8-byte aligned")
            #expect(RecordChunk.of(record) == chunk, "record \(index) is not in the arena's chunk")
        }
        for index in 1..<records.count {
            let rounded = (sizes[index - 1] + 7) / 8 * 8
            #expect(records[index] == records[index - 1] + rounded,
                    "record \(index) does not follow record \(index - 1) (\(sizes[index - 1]) bytes)")
        }
        #expect(arena.chunk == chunk)
        #expect(arena.allocated == sizes.count)
        #expect(arena.cursor == chunk.distance(to: records.last!) + 8)
        #expect(pool.bytes.load(ordering: .relaxed) == RecordChunk.chunkSize, "one chunk mapped")
    }

    @Test
    func linkedRecordsLeaveRoomForTheLinkInFront() {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        let plain = arena.allocate(size: 24, pool: unmanaged)
        let linked = arena.allocateLinked(size: 32, pool: unmanaged)
        let after = arena.allocate(size: 8, pool: unmanaged)
        #expect(RecordLink.prefix == 8)
        #expect(linked == plain + 24 + RecordLink.prefix, "the link word sits between the two records")
        #expect(UnsafeMutableRawPointer(RecordLink.of(linked)) == linked - RecordLink.prefix)
        #expect(UInt(bitPattern: linked) % 8 == 0)
        #expect(after == linked + 32, "the linked record's size does not include its prefix twice")
        // The link word is usable: it is the first word of the reserved prefix.
        RecordLink.of(linked).initialize(to: Atomic(0xABCD))
        #expect((linked - RecordLink.prefix).load(as: UInt.self) == 0xABCD)
    }

    @Test
    func aFullChunkIsFollowedByANewOne() {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        let size = 40
        let (records, chunk) = fillChunk(&arena, pool: unmanaged, size: size)
        #expect(records.count == (RecordChunk.chunkSize - RecordChunk.headerSize) / size)
        #expect(records.allSatisfy { RecordChunk.of($0) == chunk })
        let next = arena.allocate(size: size, pool: unmanaged)
        let second = RecordChunk.of(next)
        #expect(second != chunk, "a record that does not fit takes a new chunk")
        #expect(next == second + RecordChunk.headerSize)
        #expect(arena.chunk == second && arena.allocated == 1 && arena.locallyReleased == 0)
        #expect(pool.bytes.load(ordering: .relaxed) == 2 * RecordChunk.chunkSize)
        #expect(Set(pool.mappedChunks) == [chunk, second])
        // A record of the pool's chunks knows its pool.
        #expect(RecordChunk.pool(chunk).toOpaque() == unmanaged.toOpaque())
        #expect(RecordChunk.pool(second).toOpaque() == unmanaged.toOpaque())
    }

    /// The chunk goes back to the pool only once every record of it was released and the arena
    /// retired it, in either order; until then the pool maps new chunks.
    @Test(arguments: ["released first", "retired first"])
    func aChunkReturnsToItsPoolOnlyWhenReleasedAndRetired(order: String) {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        let records = (0..<10).map { _ in arena.allocate(size: 32, pool: unmanaged) }
        let chunk = RecordChunk.of(records[0])
        // Each `get()` keeps the chunk it took: only a recycled chunk is ever on the free list.
        if order == "released first" {
            // Every record finishes on another thread (through the chunk's count) ...
            for record in records { RecordChunk.release(record: record) }
            #expect(pool.get() != chunk, "a chunk its arena still allocates from was recycled")
            // ... and only the arena letting go of the chunk settles it.
            arena.retire()
            #expect(arena.chunk == nil)
            #expect(pool.get() == chunk, "released and retired, the chunk was not recycled")
        } else {
            arena.retire()
            for record in records.dropLast() { RecordChunk.release(record: record) }
            #expect(pool.get() != chunk, "a chunk with a live record was recycled")
            RecordChunk.release(record: records.last!)
            #expect(pool.get() == chunk, "the last release did not recycle the retired chunk")
        }
        #expect(pool.get() != chunk, "a recycled chunk was handed out twice")
        #expect(pool.bytes.load(ordering: .relaxed) == 3 * RecordChunk.chunkSize, "two chunks mapped besides the recycled one")
    }

    /// Records released on the arena's own thread while their chunk is current are only counted
    /// (`locallyReleased`); retiring the chunk folds them in.
    @Test
    func locallyReleasedRecordsCountWhenTheChunkIsRetired() {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        let records = (0..<6).map { _ in arena.allocate(size: 16, pool: unmanaged) }
        let chunk = RecordChunk.of(records[0])
        // Four finish locally (the worker's fast path), one through the chunk, one not yet.
        arena.locallyReleased += 4
        RecordChunk.release(record: records[4])
        arena.retire()
        #expect(pool.get() != chunk, "recycled with one record still live")
        RecordChunk.release(record: records[5])
        #expect(pool.get() == chunk, "every record finished and the chunk was retired, but it was not recycled")
    }

    /// A full chunk whose records all finished locally is recycled the moment the arena moves
    /// on, so the arena's next chunk is the same memory, used again from its header.
    @Test
    func aChunkWhoseRecordsAllFinishedLocallyIsReusedAtOnce() {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        let (records, chunk) = fillChunk(&arena, pool: unmanaged, size: 64)
        arena.locallyReleased = records.count
        let next = arena.allocate(size: 64, pool: unmanaged)
        #expect(next == chunk + RecordChunk.headerSize, "the arena did not get its recycled chunk back")
        #expect(arena.allocated == 1 && arena.locallyReleased == 0)
        #expect(pool.bytes.load(ordering: .relaxed) == RecordChunk.chunkSize, "a second chunk was mapped")
        // One local release too few: the chunk stays out of the pool when the arena moves on.
        let (more, _) = fillChunk(&arena, pool: unmanaged, size: 64)
        arena.locallyReleased = more.count
        let moved = arena.allocate(size: 64, pool: unmanaged)
        #expect(RecordChunk.of(moved) != chunk, "recycled with one record still live")
        RecordChunk.release(record: next)
        #expect(pool.get() == chunk)
    }

    @Test
    func aRecycledChunkStartsWithAFreshCount() {
        let pool = makePool()
        let unmanaged = Unmanaged.passUnretained(pool)
        var arena = RecordArena()
        let record = arena.allocate(size: 32, pool: unmanaged)
        let chunk = RecordChunk.of(record)
        arena.retire()
        RecordChunk.release(record: record)
        // The arena takes the recycled chunk again, and the reclamation rule starts over.
        var again = RecordArena()
        let reused = again.allocate(size: 32, pool: unmanaged)
        #expect(RecordChunk.of(reused) == chunk)
        let pending = RecordChunk.pending(chunk).pointee.load(ordering: .relaxed)
        #expect(pending == RecordChunk.bias)
        #expect(pool.bytes.load(ordering: .relaxed) == RecordChunk.chunkSize, "no second chunk was mapped")
        again.retire()
        #expect(pool.get() != chunk, "recycled while its record is live")
        RecordChunk.release(record: reused)
        #expect(pool.get() == chunk)
    }
}

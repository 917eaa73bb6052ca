@testable import Spindle
import Synchronization
import Testing

/// Named slots of raw memory (`RawSlot`, `RawBlock`, Support/RawLayout.swift).
struct RawLayoutTests {
    @Test
    func slotOffsetsCountLinesAndWords() {
        #expect(RawBlock.lineSize == 64)
        #expect(RawSlot<UInt64>(line: 0).offset == 0)
        #expect(RawSlot<UInt64>(line: 0, word: 1).offset == 8)
        #expect(RawSlot<UInt64>(line: 1).offset == 64)
        #expect(RawSlot<UInt64>(line: 2, word: 3).offset == 2 * 64 + 3 * 8)
        #expect(RawSlot<UInt64>(line: 3, word: 7).offset == 3 * 64 + 56)
        #expect(RawSlot<UInt8>(byteOffset: 13).offset == 13)
        #expect(RawSlot<UInt32>(byteOffset: 100).offset == 100)
    }

    @Test
    func aSlotEndsAfterItsValue() {
        #expect(RawSlot<UInt8>(byteOffset: 13).end == 14)
        #expect(RawSlot<UInt32>(byteOffset: 100).end == 104)
        #expect(RawSlot<UInt64>(line: 1, word: 2).end == 64 + 16 + 8)
        #expect(RawSlot<(UInt64, UInt64, UInt64)>(line: 0).end == 24)
        #expect(RawSlot<Atomic<Int>>(line: 2).end == 128 + MemoryLayout<Int>.size)
        #expect(RawSlot<UnsafeMutableRawPointer?>(line: 0, word: 7).end == 64, "the last word ends with its line")
    }

    /// Values written through `initialize` read back through the subscript, at the slot's
    /// address, without disturbing their neighbours.
    @Test
    func initializedSlotsReadBackThroughTheSubscript() {
        let block = RawBlock.allocate(byteCount: 256)
        defer { block.deallocate() }
        #expect(UInt(bitPattern: block.base) % 128 == 0, "allocate aligns to 128 bytes by default")
        let counter = RawSlot<Atomic<Int>>(line: 0, word: 0)
        let word = RawSlot<UInt64>(line: 0, word: 1)
        let small = RawSlot<UInt16>(byteOffset: 16)
        let pointer = RawSlot<UnsafeMutableRawPointer?>(line: 1, word: 0)
        let last = RawSlot<UInt64>(line: 3, word: 7)
        block.initialize(counter, to: Atomic(41))
        block.initialize(word, to: 0xDEAD_BEEF_CAFE_F00D)
        block.initialize(small, to: 0x1234)
        block.initialize(pointer, to: block.base)
        block.initialize(last, to: 7)

        #expect(UnsafeMutableRawPointer(block[word]) == block.base + 8)
        #expect(UnsafeMutableRawPointer(block[last]) == block.base + 248)
        let added = block[counter].pointee.add(1, ordering: .relaxed).newValue
        #expect(added == 42)
        let reread = block[counter].pointee.load(ordering: .relaxed)
        #expect(reread == 42)
        #expect(block[word].pointee == 0xDEAD_BEEF_CAFE_F00D)
        #expect(block[small].pointee == 0x1234)
        #expect(block[pointer].pointee == block.base)
        #expect(block[last].pointee == 7)
        // Writes through the subscript land where raw reads find them.
        block[word].pointee = 5
        #expect(block.base.load(fromByteOffset: 8, as: UInt64.self) == 5)
        #expect(block.base.load(fromByteOffset: 16, as: UInt16.self) == 0x1234)
        #expect(block.base.load(fromByteOffset: 248, as: UInt64.self) == 7)
        // A view of the same memory sees the same slots.
        let view = RawBlock(block.base, byteCount: 256)
        #expect(view[word].pointee == 5)
        let throughView = view[counter].pointee.load(ordering: .relaxed)
        #expect(throughView == 42)
    }

    /// With SPINDLE_INTERNAL_CHECKS, a slot outside its block traps; without, the subscript only
    /// computes the address (and costs nothing more).
    @Test
    func aSlotOutsideItsBlockTrapsOnlyWithInternalChecks() async {
        if internalChecksEnabled {
            let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                let block = RawBlock.allocate(byteCount: 64)
                // The second line of a block of one line.
                _ = block[RawSlot<UInt64>(line: 1)]
            }
            let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
            #expect(stderr.contains("outside a block of 64 bytes"))
            // A slot that starts inside but ends past the block traps too.
            await #expect(processExitsWith: .failure) {
                let block = RawBlock.allocate(byteCount: 64)
                _ = block[RawSlot<(UInt64, UInt64)>(line: 0, word: 7)]
            }
        } else {
            await #expect(processExitsWith: .success) {
                let block = RawBlock.allocate(byteCount: 64)
                let outside = block[RawSlot<UInt64>(line: 1)]
                precondition(UnsafeMutableRawPointer(outside) == block.base + 64)
            }
        }
    }

    /// With SPINDLE_INTERNAL_CHECKS, a slot misaligned for its type traps.
    @Test(.enabled(if: internalChecksEnabled, "built without SPINDLE_INTERNAL_CHECKS"))
    func aMisalignedSlotTrapsWithInternalChecks() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let block = RawBlock.allocate(byteCount: 64)
            _ = block[RawSlot<UInt64>(byteOffset: 4)]
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("misaligned"))
    }
}

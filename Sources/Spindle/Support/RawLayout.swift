// Raw memory with named slots: the one way Spindle turns a byte offset into a typed pointer.
// Every hand-laid-out structure (a worker's shared words, the sleep state, deque storage, join
// records, record chunks, graph plans, channels, injection queues) declares its slots once, as
// `RawSlot` constants, and reaches them through a `RawBlock`. With SPINDLE_INTERNAL_CHECKS
// (docs/internal-checks.md) every access checks that the slot lies inside the block and is
// aligned for its type.

/// A value of type `Value` at a fixed byte offset of a raw block.
@usableFromInline
struct RawSlot<Value: ~Copyable>: Sendable {
    @usableFromInline let offset: Int

    /// The slot at 8-byte word `word` of 64-byte cache line `line`.
    @inlinable
    init(line: Int, word: Int = 0) {
        offset = line * RawBlock.lineSize + word * 8
    }

    /// The slot at `offset` bytes (for layouts that are not in whole lines).
    @inlinable
    init(byteOffset offset: Int) {
        self.offset = offset
    }

    /// The first byte after this slot.
    @inlinable var end: Int { offset + MemoryLayout<Value>.size }
}

/// A block of raw memory laid out in `RawSlot`s. A view: it does not own the memory unless made
/// by `allocate` (then `deallocate` frees it).
@usableFromInline
struct RawBlock: @unchecked Sendable {
    // SAFETY: a plain address; what may touch the memory behind it is the layout's contract.
    @usableFromInline let base: UnsafeMutableRawPointer
    #if SPINDLE_INTERNAL_CHECKS
    @usableFromInline let byteCount: Int
    #endif

    @usableFromInline static let lineSize = 64

    /// A view of `byteCount` bytes at `base`.
    @inlinable
    init(_ base: UnsafeMutableRawPointer, byteCount: Int) {
        self.base = base
        #if SPINDLE_INTERNAL_CHECKS
        self.byteCount = byteCount
        #endif
    }

    /// Allocates `byteCount` bytes aligned to `alignment` (uninitialized).
    static func allocate(byteCount: Int, alignment: Int = 128) -> RawBlock {
        RawBlock(.allocate(byteCount: byteCount, alignment: alignment), byteCount: byteCount)
    }

    /// Frees a block made by `allocate`. Its slots must be deinitialized (or trivial).
    func deallocate() {
        base.deallocate()
    }

    /// The typed pointer to `slot`.
    @inlinable @inline(__always)
    subscript<Value: ~Copyable>(_ slot: RawSlot<Value>) -> UnsafeMutablePointer<Value> {
        #if SPINDLE_INTERNAL_CHECKS
        internalCheck(slot.offset >= 0 && slot.end <= byteCount,
                      "raw slot at \(slot.offset) of \(Value.self) outside a block of \(byteCount) bytes")
        internalCheck((Int(bitPattern: base) + slot.offset) % MemoryLayout<Value>.alignment == 0,
                      "raw slot at \(slot.offset) of \(Value.self) misaligned")
        #endif
        return (base + slot.offset).assumingMemoryBound(to: Value.self)
    }

    /// Binds `slot` to its type and initializes it.
    @inlinable
    func initialize<Value: ~Copyable>(_ slot: RawSlot<Value>, to value: consuming Value) {
        #if SPINDLE_INTERNAL_CHECKS
        internalCheck(slot.offset >= 0 && slot.end <= byteCount,
                      "raw slot at \(slot.offset) of \(Value.self) outside a block of \(byteCount) bytes")
        #endif
        (base + slot.offset).bindMemory(to: Value.self, capacity: 1).initialize(to: value)
    }
}

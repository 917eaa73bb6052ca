import CSpindle

// The table a debugger reads to list the fibers (spindle_debug_info in CSpindle.h;
// docs/debugging.md). Written on slow paths only: the layout once, a head when a scheduler makes
// or recycles a fiber (under its lock).

enum DebugTable {
    /// Records the layout offsets (once; every scheduler calls it) and takes a slot.
    static func claimSlot() -> Int32 {
        _ = layoutWritten
        return spindle_debug_claim_slot()
    }

    static func releaseSlot(_ slot: Int32) {
        spindle_debug_release_slot(slot)
    }

    /// Publishes a scheduler's list head.
    static func publish(_ head: UnsafeMutablePointer<FiberState>?, slot: Int32) {
        guard slot >= 0 else { return }
        spindle_debug_set_head(slot, head.map { UnsafeMutableRawPointer($0) })
    }

    private static let layoutWritten: Void = {
        func offset(_ path: PartialKeyPath<FiberState>) -> UInt32 {
            UInt32(MemoryLayout<FiberState>.offset(of: path)!)
        }
        spindle_debug_set_layout(
            offset(\FiberState.fiber) + UInt32(MemoryLayout<Fiber>.offset(of: \Fiber.control)!),
            offset(\FiberState.phase), offset(\FiberState.priority), offset(\FiberState.currentCounter),
            offset(\FiberState.waitedCounter), offset(\FiberState.worker), offset(\FiberState.allNext),
            // A Swift object's stored properties start after its two-word header; `word` is first.
            UInt32(2 * MemoryLayout<Int>.size))
    }()
}

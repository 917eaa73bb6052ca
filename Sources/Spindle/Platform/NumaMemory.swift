import CSpindle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How memory is asked to be placed (docs/numa.md, "Memory placement").
enum PlacementPolicy: Hashable, Sendable {
    /// Pages go to this kernel node if it has room.
    case preferred(node: Int)
    /// Pages are spread round-robin over these kernel nodes.
    case interleaved(nodes: [Int])
}

/// Applies placement policies to page-aligned ranges: the kernel's `mbind`, or (tests) a
/// recorder. A refused bind is counted, not fatal.
struct MemoryPlacement: Sendable {
    let bind: @Sendable (_ address: UnsafeMutableRawPointer, _ length: Int, _ policy: PlacementPolicy) -> Bool

    /// `mbind(2)`.
    static let kernel = MemoryPlacement { address, length, policy in
        let (mode, nodes): (Int32, [Int]) = switch policy {
        case .preferred(let node): (NumaMemory.preferredMode, [node])
        case .interleaved(let nodes): (NumaMemory.interleaveMode, nodes)
        }
        guard let highest = nodes.max(), highest >= 0, highest < 4096 else { return false }
        var mask = [UInt](repeating: 0, count: highest / UInt.bitWidth + 1)
        for node in nodes { mask[node / UInt.bitWidth] |= 1 << UInt(node % UInt.bitWidth) }
        let refused = mask.withUnsafeBufferPointer { words in
            spindle_mbind(address, UInt(length), mode, words.baseAddress, UInt(words.count * UInt.bitWidth + 1), 0) != 0
        }
        if refused { NumaMemory.lastRefusal.store(errno, ordering: .relaxed) }
        return !refused
    }
}

/// What the kernel says about where memory is: for checking placement (tests, diagnostics).
///
/// Thread-safety: every member is thread-safe; each is one or two system calls.
public enum NumaMemory {
    static let preferredMode: Int32 = 1  // MPOL_PREFERRED
    static let bindMode: Int32 = 2  // MPOL_BIND
    static let interleaveMode: Int32 = 3  // MPOL_INTERLEAVE

    /// The errno of the latest `mbind` the kernel refused in this process (0: none yet).
    static let lastRefusal = Atomic<Int32>(0)

    /// The kernel node of each page holding one of `addresses`, or nil for a page that is not
    /// present (never touched, or swapped out). Uses `move_pages(2)` without moving anything.
    /// - Throws: `SystemError` if the kernel refuses the query.
    public static func nodes(ofPagesAt addresses: [UnsafeRawPointer]) throws(SystemError) -> [Int?] {
        guard !addresses.isEmpty else { return [] }
        var status = [Int32](repeating: 0, count: addresses.count)
        let pages = addresses.map { UnsafeMutableRawPointer(mutating: $0) as UnsafeMutableRawPointer? }
        let result = pages.withUnsafeBufferPointer { pagesBuffer in
            status.withUnsafeMutableBufferPointer { statusBuffer in
                pagesBuffer.withMemoryRebound(to: UnsafeMutableRawPointer.self) { raw in
                    spindle_page_nodes(UInt(addresses.count), raw.baseAddress!, statusBuffer.baseAddress!)
                }
            }
        }
        guard result == 0 else { throw SystemError(call: "move_pages", errno: spindle_errno()) }
        return status.map { $0 >= 0 ? Int($0) : nil }
    }

    /// The policy the kernel holds for the page at `address`: its mode (`MPOL_*` number) and
    /// node set. nil mode 0 (`MPOL_DEFAULT`) means no policy was set for it.
    static func policy(of address: UnsafeRawPointer) throws(SystemError) -> (mode: Int32, nodes: [Int]) {
        var mode: Int32 = 0
        var mask = [UInt](repeating: 0, count: 64)
        let result = mask.withUnsafeMutableBufferPointer { words in
            spindle_get_mempolicy_of(UnsafeMutableRawPointer(mutating: address), &mode, words.baseAddress!,
                                     UInt(words.count * UInt.bitWidth))
        }
        guard result == 0 else { throw SystemError(call: "get_mempolicy", errno: spindle_errno()) }
        var nodes: [Int] = []
        for (index, word) in mask.enumerated() where word != 0 {
            for bit in 0..<UInt.bitWidth where word & (1 << UInt(bit)) != 0 { nodes.append(index * UInt.bitWidth + bit) }
        }
        return (mode, nodes)
    }

    static var pageSize: Int { PageMemory.pageSize }
}

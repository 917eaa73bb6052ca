#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The sizes of a fiber's stack and of the guard region below it.
///
/// Swift emits no stack probes: a function whose frame is larger than the guard region can
/// step over it and corrupt the memory below (docs/fibers.md, "Measured facts", "Stack use and
/// guards"). The guard therefore costs address space generously (1 MiB by default, the gap
/// Linux keeps below a main thread's stack) but no memory. See docs/fibers.md, "Stacks".
///
/// - `stackSize` (default 256 KiB, minimum 64 KiB): usable stack, including a control block of
///   at most 256 bytes at its top. Typical job code uses at most 17 KiB in steady state and up
///   to about 40 KiB the first time a feature runs in a process (Foundation formatters, a
///   `throw` with an interpolated error); 256 KiB leaves room for user recursion. Only touched
///   pages become resident.
/// - `guardSize` (default 1 MiB, minimum one page): `PROT_NONE` region below the stack; a fault
///   inside it is reported as a fiber stack overflow. A frame larger than the guard (C code with
///   a large array on the stack) can jump over it unless compiled with stack probes
///   (`-fstack-clash-protection`); raise the guard for such code.
///
/// Both sizes are rounded up to whole pages. A value type; thread-safe like any `Sendable` value.
public struct FiberStackConfiguration: Hashable, Sendable, CustomStringConvertible {
    /// 256 KiB: the default usable stack size.
    public static let defaultStackSize = 256 * 1024
    /// 64 KiB: the smallest stack accepted.
    public static let minimumStackSize = 64 * 1024
    /// 1 MiB: the default guard region below each stack (address space only).
    public static let defaultGuardSize = 1024 * 1024
    /// Stacks larger than this are almost certainly a unit mistake (bytes vs. KiB).
    public static let maximumStackSize = 1 << 30

    /// Usable bytes of stack, a multiple of the page size.
    public let stackSize: Int
    /// Bytes of `PROT_NONE` guard below the stack, a multiple of the page size.
    public let guardSize: Int

    /// The defaults: 256 KiB of stack, 1 MiB of guard.
    public static let `default` = try! FiberStackConfiguration()

    /// - Throws: `FiberStackConfiguration.Error` if `stackSize` is outside
    ///   `minimumStackSize...maximumStackSize` or `guardSize` is smaller than one page or larger
    ///   than `maximumStackSize`.
    public init(stackSize: Int = defaultStackSize, guardSize: Int = defaultGuardSize) throws(Error) {
        guard (Self.minimumStackSize...Self.maximumStackSize).contains(stackSize) else {
            throw Error.stackSizeOutOfRange(stackSize)
        }
        let page = Self.pageSize
        guard (page...Self.maximumStackSize).contains(guardSize) else {
            throw Error.guardSizeOutOfRange(guardSize, pageSize: page)
        }
        self.stackSize = Self.roundUp(stackSize, to: page)
        self.guardSize = Self.roundUp(guardSize, to: page)
    }

    public var description: String {
        "\(stackSize / 1024) KiB stack, \(guardSize / 1024) KiB guard"
    }

    /// A configuration value was out of range. `description` says which and what is accepted.
    public enum Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        case stackSizeOutOfRange(Int)
        case guardSizeOutOfRange(Int, pageSize: Int)

        public var description: String {
            switch self {
            case .stackSizeOutOfRange(let size):
                return "fiber stack size \(size) bytes is out of range: use \(FiberStackConfiguration.minimumStackSize) (64 KiB) to \(FiberStackConfiguration.maximumStackSize) bytes"
            case .guardSizeOutOfRange(let size, let page):
                return "fiber guard size \(size) bytes is out of range: use at least one page (\(page) bytes) and at most \(FiberStackConfiguration.maximumStackSize) bytes"
            }
        }
    }

    static var pageSize: Int { PageMemory.pageSize }

    static func roundUp(_ value: Int, to alignment: Int) -> Int {
        (value + alignment - 1) / alignment * alignment
    }
}

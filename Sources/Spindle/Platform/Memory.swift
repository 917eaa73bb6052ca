#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Anonymous memory straight from the kernel, for the allocators that need alignment, placement
/// or protection beyond malloc's: job-record chunks, frame memory, fiber stacks, NUMA buffers.
enum PageMemory {
    /// The size of a page.
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// `size` bytes (a multiple of the page size) of zeroed, readable and writable memory, page
    /// aligned and untouched. `stack` marks it as a thread stack and reserves no swap for it
    /// (only touched pages count).
    /// - Throws: `SystemError` when the kernel refuses (`ENOMEM`: the address space or
    ///   `vm.max_map_count` is exhausted).
    static func mapThrowing(_ size: Int, stack: Bool = false) throws(SystemError) -> UnsafeMutableRawPointer {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (stack ? MAP_NORESERVE | MAP_STACK : 0)
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, flags, -1, 0), mapped != MAP_FAILED else {
            throw SystemError(call: "mmap", errno: errno)
        }
        return mapped
    }

    /// The kernel's limit on a process's memory mappings (`/proc/sys/vm/max_map_count`), or nil
    /// if it cannot be read. For error messages.
    static func mappingLimit() -> Int? {
        var digits = ""
        guard readProcFile("/proc/sys/vm/max_map_count", { chunk in
            for byte in chunk where (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                digits.append(Character(UnicodeScalar(byte)))
            }
        }) else { return nil }
        return Int(digits)
    }

    /// How many memory mappings the process holds now (lines of `/proc/self/maps`), or nil. For
    /// error messages: it reads the whole file.
    static func mappingCount() -> Int? {
        var lines = 0
        guard readProcFile("/proc/self/maps", { chunk in
            for byte in chunk where byte == UInt8(ascii: "\n") { lines += 1 }
        }) else { return nil }
        return lines
    }

    /// Reads a /proc file to its end with read(2), chunk by chunk (such files report size 0).
    private static func readProcFile(_ path: String, _ body: (UnsafeRawBufferPointer) -> Void) -> Bool {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let count = read(descriptor, buffer.baseAddress, buffer.count)
            if count < 0 {
                if errno == EINTR { continue }
                return false
            }
            if count == 0 { return true }
            body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }

    /// Makes `size` bytes at `memory` inaccessible (a guard region).
    static func protectNone(_ memory: UnsafeMutableRawPointer, _ size: Int) throws(SystemError) {
        _ = try retryingSyscall("mprotect") { mprotect(memory, size, PROT_NONE) }
    }

    /// Gives the pages of `size` bytes at `memory` back to the kernel while keeping the mapping:
    /// they read as zero when touched again (`MADV_DONTNEED`).
    static func discard(_ memory: UnsafeMutableRawPointer, _ size: Int) {
        _ = madvise(memory, size, MADV_DONTNEED)
    }

    /// `size` bytes of zeroed, readable and writable memory aligned to `size` (a power of two):
    /// twice as much is mapped and the ends are given back.
    ///
    /// Traps when the address space is exhausted (nothing sensible remains for a job system).
    /// - Complexity: three system calls.
    static func mapAligned(_ size: Int, for what: StaticString) -> UnsafeMutableRawPointer {
        precondition(size > 0 && size & (size - 1) == 0, "PageMemory.mapAligned: \(size) is not a power of two")
        let mapped = mmap(nil, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        require(mapped != MAP_FAILED && mapped != nil,
                "Spindle: out of memory for \(what) (mmap of \(2 * size) bytes failed: \(String(cString: strerror(errno))))")
        let start = UInt(bitPattern: mapped!)
        let aligned = (start + UInt(size) - 1) & ~(UInt(size) - 1)
        if aligned > start { munmap(mapped, Int(aligned - start)) }
        let end = start + UInt(2 * size)
        if end > aligned + UInt(size) {
            munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(size)), Int(end - aligned - UInt(size)))
        }
        return UnsafeMutableRawPointer(bitPattern: aligned)!
    }

    /// `size` bytes (a multiple of the page size) of zeroed, readable and writable memory, page
    /// aligned and untouched (so a NUMA binding made before first touch takes effect).
    ///
    /// Traps when the address space is exhausted.
    static func map(_ size: Int, for what: StaticString) -> UnsafeMutableRawPointer {
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        require(mapped != MAP_FAILED && mapped != nil,
                "Spindle: out of memory for \(what) (mmap of \(size) bytes failed: \(String(cString: strerror(errno))))")
        return mapped!
    }

    /// Gives `size` bytes at `memory` back to the kernel.
    static func unmap(_ memory: UnsafeMutableRawPointer, _ size: Int) {
        munmap(memory, size)
    }
}

import CSpindle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A shared library loaded at run time (`dlopen`), for optional system libraries (libnuma).
/// The handle stays open for the life of the process.
struct DynamicLibrary: @unchecked Sendable {
    // SAFETY: a dlopen handle may be used from any thread.
    private let handle: UnsafeMutableRawPointer

    /// The library `name`, or the loader's explanation of why it cannot be loaded.
    static func open(_ name: String) -> Result<DynamicLibrary, LoadError> {
        guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
            return .failure(LoadError(detail: dlerror().map { String(cString: $0) } ?? "unknown error"))
        }
        return .success(DynamicLibrary(handle: handle))
    }

    /// Why a library did not load (the loader's message).
    struct LoadError: Error, CustomStringConvertible {
        let detail: String
        var description: String { detail }
    }

    /// The address of `name` at symbol version `version` if the library has it, else of the
    /// default version of `name`, else nil.
    func symbol(_ name: String, version: String) -> UnsafeMutableRawPointer? {
        spindle_dlvsym(handle, name, version) ?? dlsym(handle, name)
    }
}

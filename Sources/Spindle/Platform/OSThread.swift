#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Detached OS threads for work that must not run on the workers (dedicated pipeline stages,
/// the metrics reporter).
enum OSThread {
    private final class Start {
        let name: String
        let cpu: Int?
        let body: @Sendable () -> Void
        init(name: String, cpu: Int?, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.cpu = cpu
            self.body = body
        }
    }

    /// Starts a detached thread named `name` (at most 15 bytes are kept), pinned to `cpu` if
    /// given, that runs `body`. Returns nil on success, or `pthread_create`'s error number.
    ///
    /// Pinning or naming failures inside the new thread are ignored: the thread still runs
    /// (the CPU was checked against the allowed set beforehand).
    @discardableResult
    static func detach(name: String, cpu: Int? = nil, _ body: @escaping @Sendable () -> Void) -> Int32? {
        let start = Unmanaged.passRetained(Start(name: name, cpu: cpu, body: body))
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let start = Unmanaged<Start>.fromOpaque(argument!).takeRetainedValue()
            try? CurrentThread.setName(String(start.name.utf8.prefix(15))!)
            if let cpu = start.cpu { try? CurrentThread.pin(to: CPUSet([cpu])) }
            start.body()
            return nil
        }, start.toOpaque())
        guard result == 0 else {
            start.release()
            return result
        }
        pthread_detach(thread)
        return nil
    }
}

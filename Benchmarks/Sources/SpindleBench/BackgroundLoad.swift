// Busy competing processes for `--background-load` (docs/benchmarking.md, "Measuring beside
// other work"): each is this executable started with the hidden `--burn` flag, which spins
// forever as a plain CPU-bound process would, at normal priority and unpinned. They are separate
// processes, not threads of the benchmark, so the kernel schedules them as it would another
// program on a shared machine. The kernel kills them if spindle-bench dies (PR_SET_PDEATHSIG);
// spindle-bench kills them after each measurement, on Ctrl-C and on every exit path.

import CMallocCounter
import Foundation

#if canImport(Glibc)
import Glibc
#endif

enum BackgroundLoad {
    /// The processes running now: a fixed buffer, so the signal handler reads no Swift array.
    nonisolated(unsafe) private static let pids = UnsafeMutablePointer<pid_t>.allocate(capacity: maximum)
    nonisolated(unsafe) private static var count = 0
    nonisolated(unsafe) private static var handlersInstalled = false
    /// The most busy processes `--background-load` starts.
    static let maximum = 64

    /// The `--burn` mode: spin until killed.
    static func burn() -> Never {
        guard spindle_bench_die_with_parent() == 0 else { exit(0) }
        var x: UInt64 = 1
        while true {
            x = x &* 6_364_136_223_846_793_005 &+ 1
            if x == 0 { print(x) }   // never true; keeps the loop from being optimized away
        }
    }

    /// Starts `count` busy processes and returns once each runs.
    static func start(_ count: Int) throws {
        precondition(count <= maximum - BackgroundLoad.count, "--background-load is validated to at most \(maximum)")
        installHandlers()
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        for _ in 0..<count {
            let process = Process()
            process.executableURL = executable
            process.arguments = ["--burn"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            do {
                try process.run()
            } catch {
                stop()
                throw CLIError("--background-load: cannot start a busy process (\(error.localizedDescription))")
            }
            pids[BackgroundLoad.count] = process.processIdentifier
            BackgroundLoad.count += 1
        }
    }

    /// Kills the busy processes and waits for them.
    static func stop() {
        let started = count
        count = 0
        for index in 0..<started { kill(pids[index], SIGKILL) }
        for index in 0..<started {
            var status: Int32 = 0
            while waitpid(pids[index], &status, 0) < 0 && errno == EINTR {}
        }
    }

    /// Ctrl-C and termination kill the busy processes before spindle-bench exits.
    private static func installHandlers() {
        guard !handlersInstalled else { return }
        handlersInstalled = true
        let handler: @convention(c) (Int32) -> Void = { signal in
            for index in 0..<BackgroundLoad.count { kill(BackgroundLoad.pids[index], SIGKILL) }
            _exit(128 + signal)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        atexit { BackgroundLoad.stop() }
    }
}

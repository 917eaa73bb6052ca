import Foundation
import Testing
@testable @_spi(Internals) import Spindle

@Suite("Platform: allowed CPUs, pinning, thread names")
struct CurrentThreadTests {
    /// The kernel's own view of the process's allowed CPUs.
    private func procAllowedList() throws -> CPUSet {
        let status = try readProcFile("/proc/self/status")
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
        return try CPUSet(parsing: String(line.dropFirst("Cpus_allowed_list:".count)))
    }

    @Test func allowedCPUsMatchTheKernel() throws {
        let allowed = try CPUSet.allowed()
        #expect(!allowed.isEmpty)
        // Other tests pin their own threads, never the runner's; the runner's mask is the
        // process's, which /proc/self/status reports for the main thread.
        let kernel = try procAllowedList()
        #expect(allowed.isSubset(of: kernel))
    }

    @Test func pinningRestrictsTheThreadToOneCPU() throws {
        let allowed = try CPUSet.allowed()
        for cpu in allowed {
            let result: (CPUSet, Int?) = onNewThread {
                try! CurrentThread.pin(to: [cpu])
                return (try! CurrentThread.allowedCPUs(), CurrentThread.cpu)
            }
            #expect(result.0 == [cpu])
            #expect(result.1 == cpu)
        }
    }

    @Test func pinningOutsideTheAllowedSetIsATypedError() throws {
        // CPU 8191 does not exist on this machine: the kernel answers EINVAL.
        let error: SystemError? = onNewThread { () -> SystemError? in
            do throws(SystemError) {
                try CurrentThread.pin(to: [8191])
                return nil
            } catch {
                return error
            }
        }
        let thrown = try #require(error)
        #expect(thrown.call == "sched_setaffinity")
        #expect(thrown.errno == EINVAL)
        #expect(thrown.description.contains("sched_setaffinity failed: Invalid argument"))
    }

    @Test func threadNamesShowInProc() throws {
        let (tid, comm): (pid_t, String) = onNewThread {
            try! CurrentThread.setName("spindle-w7")
            let tid = CurrentThread.id
            let comm = try! readProcFile("/proc/self/task/\(tid)/comm")
            return (tid, comm)
        }
        #expect(tid > 0)
        #expect(comm == "spindle-w7\n")
    }

    @Test func namesLongerThanLinuxAllowsAreRejectedClearly() {
        let error: ThreadNameError? = onNewThread { () -> ThreadNameError? in
            do {
                try CurrentThread.setName("spindle-worker-1234")
                return nil
            } catch let error as ThreadNameError {
                return error
            } catch {
                return nil
            }
        }
        #expect(error == ThreadNameError(name: "spindle-worker-1234", byteCount: 19))
        #expect(error?.description.contains("at most 15") == true)
    }
}

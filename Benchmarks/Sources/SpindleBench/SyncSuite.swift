// Fiber-aware synchronization beside a pthread mutex in the same run: the uncontended cost of a
// lock/unlock pair, and a contended one where every worker's job hammers one lock
// (docs/synchronization.md).

import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

/// A pthread mutex in stable memory, for the peer entries.
final class PthreadMutexBox: @unchecked Sendable {
    // SAFETY: used only through pthread calls; `value` only under the mutex.
    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    var value = 0
    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }
    @inline(__always) func increment() {
        pthread_mutex_lock(mutex)
        value &+= 1
        pthread_mutex_unlock(mutex)
    }
}

enum SyncSuite {
    static let uncontended = 1_000_000
    static let perJob = 100_000

    static func register(_ registry: inout BenchmarkRegistry) {
        let count = uncontended
        registry.register(Benchmark(BenchmarkID(group: "sync", name: "jobmutex-uncontended"), throughput: .elements(count), mode: .flat,
                                    note: "JobMutex.withLock { $0 += 1 } ×1M on one thread (one CAS to lock, one to unlock)") { _ in
            let mutex = JobMutex(0)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    mutex.withLock { $0 = 0 }
                    total &+= Clock.measure {
                        for _ in 0..<count { mutex.withLock { $0 &+= 1 } }
                    }
                    let value = mutex.withLock { $0 }
                    guard value == count else { throw BenchmarkCheckFailure("sync: \(value) increments, expected \(count)") }
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "sync", name: "pthread-mutex-uncontended"), throughput: .elements(count), mode: .flat,
                                    note: "pthread_mutex_lock; value += 1; pthread_mutex_unlock ×1M on one thread") { _ in
            let box = PthreadMutexBox()
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    box.value = 0
                    total &+= Clock.measure {
                        for _ in 0..<count { box.increment() }
                    }
                    guard box.value == count else { throw BenchmarkCheckFailure("sync: \(box.value) increments, expected \(count)") }
                }
                return total
            }
        })
        let each = perJob
        registry.register(Benchmark(BenchmarkID(group: "sync", name: "jobmutex-contended"), throughput: .elements(each), mode: .flat,
                                    sweepsThreads: true,
                                    note: "one job per worker, each JobMutex.withLock { $0 += 1 } ×100k on one mutex (after a short spin a waiter parks its fiber; an unlock wakes the first waiter, which retries); per unit: per lock of one job") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let mutex = JobMutex(0)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    mutex.withLock { $0 = 0 }
                    total &+= Clock.measure {
                        let done = JobCounter()
                        for _ in 0..<threads {
                            jobs.run(counter: done) { _ in for _ in 0..<each { mutex.withLock { $0 &+= 1 } } }
                        }
                        jobs.wait(for: done)
                    }
                    let value = mutex.withLock { $0 }
                    guard value == each * threads else { throw BenchmarkCheckFailure("sync: \(value) increments, expected \(each * threads)") }
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "sync", name: "pthread-mutex-contended"), throughput: .elements(each), mode: .flat,
                                    sweepsThreads: true,
                                    note: "the same jobs with a pthread mutex (a waiter blocks its worker thread); per unit: per lock of one job") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let box = PthreadMutexBox()
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    box.value = 0
                    total &+= Clock.measure {
                        let done = JobCounter()
                        for _ in 0..<threads {
                            jobs.run(counter: done) { _ in for _ in 0..<each { box.increment() } }
                        }
                        jobs.wait(for: done)
                    }
                    guard box.value == each * threads else { throw BenchmarkCheckFailure("sync: \(box.value) increments, expected \(each * threads)") }
                }
                return total
            }
        })
    }
}

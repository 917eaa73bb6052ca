import Synchronization
import Testing
@testable @_spi(Internals) import Spindle

/// A word in stable memory for futex tests.
final class FutexWord: @unchecked Sendable {
    // SAFETY: only accessed through the atomic.
    let pointer: UnsafeMutablePointer<Atomic<UInt32>>
    init(_ value: UInt32) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: Atomic(value))
    }
    deinit {
        pointer.deinitialize(count: 1)
        pointer.deallocate()
    }
}

@Suite("Platform: futex")
struct FutexTests {
    @Test func waitOnAChangedValueReturnsAtOnce() {
        let word = FutexWord(1)
        #expect(Futex.wait(on: word.pointer, expected: 0) == .valueChanged)
    }

    @Test func waitTimesOut() {
        let word = FutexWord(0)
        #expect(Futex.wait(on: word.pointer, expected: 0, timeoutNanoseconds: 1_000_000) == .timedOut)
    }

    @Test func wakeWithNoWaiterWakesNobody() {
        let word = FutexWord(0)
        #expect(Futex.wake(word.pointer, count: 8) == 0)
    }

    @Test(arguments: [1, 2, 4, 8])
    func everyWaiterSeesTheStoreAndReturns(waiters: Int) {
        // The protocol the scheduler relies on: waiters sleep while the word is 0; the waker
        // stores 1, then wakes everyone. Whenever each waiter started sleeping, none can miss it.
        let word = FutexWord(0)
        let returned = Atomic<Int>(0)
        withTimeLimit(seconds: 60, "futex wake-up, \(waiters) waiters") {
            onThreads(waiters + 1) { index in
                if index == 0 {
                    word.pointer.pointee.store(1, ordering: .releasing)
                    Futex.wake(word.pointer, count: Int32.max)
                } else {
                    while word.pointer.pointee.load(ordering: .acquiring) == 0 {
                        _ = Futex.wait(on: word.pointer, expected: 0)
                    }
                    returned.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(returned.load(ordering: .relaxed) == waiters)
    }
}

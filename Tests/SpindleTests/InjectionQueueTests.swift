import Foundation
@testable import Spindle
import Synchronization
import Testing

/// Records for the injection queue: raw memory the size of a job header with the link word in
/// front of it (`RecordLink`, through which the queue links records), each tagged with its index.
final class QueueRecords: @unchecked Sendable {
    // SAFETY: each record is written by its one producer before it is pushed.
    let base: UnsafeMutableRawPointer
    let stride = RecordLink.prefix + MemoryLayout<JobHeader>.stride
    let count: Int

    init(_ count: Int) {
        self.count = count
        base = .allocate(byteCount: stride * count, alignment: 16)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: stride * count)
    }

    deinit { base.deallocate() }

    func record(_ index: Int) -> UnsafeMutableRawPointer { base + index * stride + RecordLink.prefix }
    func index(of record: UnsafeMutableRawPointer) -> Int { (record - RecordLink.prefix - base) / stride }
}

@Suite(.serialized)
struct InjectionQueueTests {
    /// The interleaving that once hung W1: the consumer holds the last linked record and
    /// re-appends the stub just after a producer swapped `tail` but before it linked. The
    /// queue then holds two records with `tail` at the stub; it must still say it has work,
    /// and give both records out. (Debug builds only: it needs the queue's test hook.)
    #if DEBUG
    @Test
    func aPushHalfDoneDuringTheStubReappendIsNotLost() {
        let records = QueueRecords(2)
        let queue = InjectionQueue()
        let first = UInt(bitPattern: records.record(0)), second = UInt(bitPattern: records.record(1))
        queue.push(records.record(0))
        var previous: UInt = 0
        queue.afterTailCheck = {
            queue.afterTailCheck = nil
            previous = queue.swapTail(second)  // the producer stalls here
        }
        var out: [UInt] = []
        let taken = queue.take(limit: 1) { out.append(UInt(bitPattern: $0)) }
        #expect(previous == first)
        queue.linkPush(previous, second)  // the producer resumes
        #expect(queue.mayHaveWork, "two records queued, but the queue says it is empty")
        #expect(queue.hasLinkedRecord, "two records linked, but the consumers' poll says none")
        _ = queue.take(limit: 8) { out.append(UInt(bitPattern: $0)) }
        #expect(taken == 0 && out == [first, second], "records out: \(out)")
        #expect(!queue.mayHaveWork)
        #expect(!queue.hasLinkedRecord)
    }
    #endif

    /// A push in progress (`tail` exchanged, record not linked yet) is work for the sleep
    /// protocol's re-check (`mayHaveWork`), which must not let a worker sleep past it, but not
    /// for the consumers' poll (`hasLinkedRecord`), which reads no `tail`; once linked, both
    /// see it, on an empty queue (behind the stub) and behind a queued record alike.
    @Test
    func aPushInProgressIsSeenByTheRecheckAndALinkedOneByBoth() {
        let records = QueueRecords(3)
        let queue = InjectionQueue()
        #expect(!queue.mayHaveWork && !queue.hasLinkedRecord)
        for queued in [0, 1] {
            let incoming = UInt(bitPattern: records.record(queued + 1))
            if queued == 1 { queue.push(records.record(0)) }
            let previous = queue.swapTail(incoming)
            #expect(queue.mayHaveWork, "queued \(queued): a push in progress must keep a worker from sleeping")
            #expect(queue.hasLinkedRecord == (queued == 1), "queued \(queued): the poll sees only linked records")
            queue.linkPush(previous, incoming)
            #expect(queue.mayHaveWork && queue.hasLinkedRecord, "queued \(queued): a linked push must be seen")
            var out: [UInt] = []
            _ = queue.take(limit: 8) { out.append(UInt(bitPattern: $0)) }
            let expected = queued == 1 ? [UInt(bitPattern: records.record(0)), incoming] : [incoming]
            #expect(out == expected, "queued \(queued): records out: \(out)")
            #expect(!queue.mayHaveWork && !queue.hasLinkedRecord, "queued \(queued): drained, but still reports work")
        }
    }

    /// Producers push while a consumer takes in batches; every record comes out exactly once,
    /// in each producer's order, and once the producers are done the queue never reports itself
    /// empty while records remain, neither to the sleep re-check nor to the consumers' poll (a
    /// false "empty" lets every worker sleep, or search forever, with jobs queued).
    @Test(arguments: [1, 2, 4])
    func nothingIsLostAndEmptinessIsNeverClaimedEarly(producers: Int) {
        let perProducer = 200_000
        let total = producers * perProducer
        let records = QueueRecords(total)
        let queue = InjectionQueue()
        let seen = Flags(total)
        let duplicates = Tally()
        let outOfOrder = Tally()
        let falseEmpty = Tally()
        let takenTotal = Tally()
        let producersDone = Atomic<Int>(0)
        withTimeLimit(seconds: 120, "InjectionQueue producers=\(producers)") {
            onThreads(producers + 1) { thread in
                if thread < producers {
                    for k in 0..<perProducer { queue.push(records.record(thread * perProducer + k)) }
                    producersDone.wrappingAdd(1, ordering: .sequentiallyConsistent)
                    return
                }
                var last = [Int](repeating: -1, count: producers)
                var batch = 1
                while takenTotal.current < total {
                    let finished = producersDone.load(ordering: .sequentiallyConsistent) == producers
                    let taken = queue.take(limit: batch) { record in
                        let index = records.index(of: record)
                        if !seen.mark(index) { duplicates.add() }
                        let producer = index / perProducer
                        if index < last[producer] { outOfOrder.add() }
                        last[producer] = index
                        takenTotal.add()
                    }
                    batch = batch % 32 + 1
                    // Everything is pushed and linked and this is the only consumer: records
                    // remain, so the queue must say it may have work.
                    if taken == 0 && finished && takenTotal.current < total
                        && !(queue.mayHaveWork && queue.hasLinkedRecord) {
                        falseEmpty.add()
                        return
                    }
                }
            }
        }
        #expect(falseEmpty.current == 0, "the queue reported itself empty with \(total - takenTotal.current) records left")
        #expect(duplicates.current == 0)
        #expect(outOfOrder.current == 0)
        #expect(seen.unmarked.isEmpty, "\(seen.unmarked.count) records never came out")
    }
}

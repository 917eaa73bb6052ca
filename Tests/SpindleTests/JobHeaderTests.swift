@testable import Spindle
import Testing

/// Execute functions for headers that are never executed (distinct, so that a test can tell
/// which one a header holds).
private func executeNothing(_ record: UnsafeMutableRawPointer, _ state: UnsafeMutableRawPointer) {}
private func executeNothingElse(_ record: UnsafeMutableRawPointer, _ state: UnsafeMutableRawPointer) {
    record.storeBytes(of: 0, as: UInt8.self)
}

/// The record header's packed word and the table of job kinds (Scheduler/Jobs/JobKind.swift).
struct JobHeaderTests {
    static var execute: ExecuteFunction { executeNothing }
    static var otherExecute: ExecuteFunction { executeNothingElse }

    /// Every kind × priority × pinned flag, with a real counter's address and with none, packs
    /// and unpacks each field unchanged.
    @Test(arguments: JobKind.allCases)
    func theHeaderPacksAndUnpacksEveryField(kind: JobKind) {
        let counter = JobCounter()
        let unmanaged = Unmanaged.passUnretained(counter)
        for counterChoice in [unmanaged, nil] {
            for priority in Priority.allCases {
                for pinned in [false, true] {
                    let header = JobHeader(kind: kind, execute: Self.execute, counter: counterChoice,
                                           priority: priority, pinned: pinned)
                    let what = "\(kind) \(priority) pinned=\(pinned) counter=\(counterChoice == nil ? "nil" : "set")"
                    #expect(header.kind == kind, "\(what): kind")
                    #expect(header.priority == priority, "\(what): priority")
                    #expect(header.pinned == pinned, "\(what): pinned")
                    #expect(header.counter?.toOpaque() == counterChoice?.toOpaque(), "\(what): counter")
                    #expect(unsafeBitCast(header.execute, to: UnsafeRawPointer.self)
                            == unsafeBitCast(Self.execute, to: UnsafeRawPointer.self), "\(what): execute")
                }
            }
        }
        // The unpacked counter is the object itself.
        let header = JobHeader(kind: kind, execute: Self.execute, counter: unmanaged, priority: .low, pinned: true)
        #expect(header.counter?.takeUnretainedValue() === counter)
    }

    /// The fields occupy disjoint bits: changing one leaves the others' bits as they were.
    @Test
    func theFieldsDoNotOverlap() {
        let counter = JobCounter()
        let unmanaged = Unmanaged.passUnretained(counter)
        let address = UInt(bitPattern: unmanaged.toOpaque())
        let outsideMask: UInt = address & ~JobHeader.addressMask
        #expect(outsideMask == 0, "a counter's address does not fit the header")
        let base = JobHeader(kind: .run, execute: Self.execute, counter: unmanaged, priority: .high, pinned: false)
        #expect(base.word == address, "high (0), not pinned, kind run (0): the word is the address")
        let pinned = JobHeader(kind: .run, execute: Self.execute, counter: unmanaged, priority: .high, pinned: true)
        let pinnedBits: UInt = pinned.word ^ base.word
        #expect(pinnedBits == JobHeader.pinnedBit)
        let low = JobHeader(kind: .run, execute: Self.execute, counter: unmanaged, priority: .low, pinned: false)
        let lowBits: UInt = low.word ^ base.word
        #expect(lowBits == UInt(Priority.low.rawValue))
        let partial = JobHeader(kind: .asyncTask, execute: Self.execute, counter: unmanaged, priority: .high, pinned: false)
        let kindBits: UInt = partial.word ^ base.word
        let asyncKind: UInt = UInt(JobKind.asyncTask.rawValue) << JobHeader.kindShift
        #expect(kindBits == asyncKind)
        let none = JobHeader(kind: .run, execute: Self.execute, counter: nil, priority: .high, pinned: false)
        #expect(none.word == 0)
        #expect(none.counter == nil)
        // The masks partition the word below the kind.
        let flags: UInt = JobHeader.priorityMask | JobHeader.pinnedBit | JobHeader.takenBit
        let belowKind: UInt = (1 << JobHeader.kindShift) - 1
        #expect(JobHeader.addressMask & flags == 0)
        #expect(JobHeader.addressMask | flags == belowKind)
    }

    /// A worker's taken mark changes no field the header was made with.
    @Test
    func theTakenMarkLeavesTheFieldsAlone() throws {
        let counter = JobCounter()
        let memory = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<JobHeader>.stride, alignment: 16)
        defer { memory.deallocate() }
        memory.bindMemory(to: JobHeader.self, capacity: 1).initialize(to: JobHeader(
            kind: .runCount, execute: Self.execute, counter: Unmanaged.passUnretained(counter), priority: .low, pinned: true))
        #expect(JobHeader.of(memory).word & JobHeader.takenBit == 0)
        JobHeader.markTaken(memory)
        let header = JobHeader.of(memory)
        #expect(header.word & JobHeader.takenBit != 0)
        #expect(header.kind == .runCount && header.priority == .low && header.pinned)
        #expect(header.counter?.toOpaque() == Unmanaged.passUnretained(counter).toOpaque())
    }

    /// The header read back from a record's memory, as workers do.
    @Test
    func aHeaderReadsBackFromRecordMemory() {
        let counter = JobCounter()
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 32, alignment: 16)
        defer { memory.deallocate() }
        memory.initializeMemory(as: JobHeader.self, repeating: JobHeader(
            kind: .runCount, execute: Self.otherExecute, counter: .passUnretained(counter), priority: .normal, pinned: true),
            count: 1)
        let header = JobHeader.of(memory)
        #expect(header.kind == .runCount)
        #expect(header.priority == .normal)
        #expect(header.pinned)
        #expect(header.counter?.takeUnretainedValue() === counter)
        #expect(unsafeBitCast(header.execute, to: UnsafeRawPointer.self)
                == unsafeBitCast(Self.otherExecute, to: UnsafeRawPointer.self))
        #expect(MemoryLayout<JobHeader>.size == 16, "the header is two words")
    }

    @Test
    func everyKindHasItsOwnTraceName() {
        let names = JobKind.allCases.map(\.traceName)
        #expect(Set(names).count == JobKind.allCases.count, "trace names: \(names)")
        #expect(names.allSatisfy { !$0.isEmpty })
        #expect(JobKind.run.traceName == "run")
        #expect(JobKind.runArgument.traceName == "run(argument:)")
        #expect(JobKind.runCount.traceName == "run(count:)")
        // The trace's fixed labels are the kinds' names, in raw-value order.
        #expect(TraceLabel.fixed == names)
        #expect(JobKind.allCases.allSatisfy { TraceLabel.fixed[Int(TraceLabel.of($0))] == $0.traceName })
    }

    @Test
    func onlyPartialTasksDoNotRunNested() {
        for kind in JobKind.allCases {
            #expect(kind.runsNested == (kind != .asyncTask), "\(kind).runsNested")
        }
    }
}

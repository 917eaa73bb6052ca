@testable import Spindle
import Testing

/// The order a worker visits its steal victims in (`VictimOrder`, Scheduler/Worker/Stealing.swift).
struct VictimOrderTests {
    /// With one node: one group of every other worker, each exactly once, never the worker itself.
    @Test(arguments: [1, 2, 3, 8, 17])
    func withoutGroupsEveryOtherWorkerOnce(workers: Int) {
        for worker in 0..<workers {
            let order = VictimOrder(worker: worker, workers: workers, groups: nil)
            defer { order.deallocate() }
            #expect(!order.victims.contains(worker), "worker \(worker) of \(workers) steals from itself")
            #expect(order.victims.count == workers - 1)
            #expect(Set(order.victims) == Set(0..<workers).subtracting([worker]),
                    "worker \(worker) of \(workers): victims \(order.victims)")
            #expect(Array(order.groupEnds) == [workers - 1], "one group holding every victim")
        }
    }

    /// With groups (NUMA nodes, nearest first): the groups concatenated in their order, and where
    /// each one ends.
    @Test
    func groupsAreConcatenatedInOrder() {
        let groups = [[1, 2], [4, 5, 6], [3], [0, 7]]
        let order = VictimOrder(worker: 8, workers: 9, groups: groups)
        defer { order.deallocate() }
        #expect(Array(order.victims) == [1, 2, 4, 5, 6, 3, 0, 7])
        #expect(Array(order.groupEnds) == [2, 5, 6, 8])
        // Each group is the slice between the previous end and its own.
        var start = 0
        for (index, end) in order.groupEnds.enumerated() {
            #expect(Array(order.victims[start..<end]) == groups[index])
            start = end
        }
    }

    /// The groups the scheduler builds for two nodes: the worker's own node's other workers
    /// first, then the other node's, each worker but itself exactly once.
    @Test
    func groupsFromTheNumaPolicyCoverEveryOtherWorker() {
        let workerNodes = [0, 0, 0, 1, 1, 1]
        let distances = [[10, 21], [21, 10]]
        for worker in workerNodes.indices {
            let groups = NumaPolicy.victimGroups(of: worker, workerNodes: workerNodes, distances: distances)
            let order = VictimOrder(worker: worker, workers: workerNodes.count, groups: groups)
            defer { order.deallocate() }
            #expect(order.victims.count == workerNodes.count - 1)
            #expect(Set(order.victims) == Set(workerNodes.indices).subtracting([worker]))
            #expect(Array(order.groupEnds) == [2, 5], "worker \(worker): \(order.groupEnds)")
            let home = workerNodes[worker]
            #expect(order.victims.prefix(2).allSatisfy { workerNodes[$0] == home }, "worker \(worker) visits its own node first")
        }
    }

    /// A single worker has no victims: one empty group (the scheduler does not steal then).
    @Test
    func aSingleWorkerHasNoVictims() {
        let order = VictimOrder(worker: 0, workers: 1, groups: nil)
        defer { order.deallocate() }
        #expect(order.victims.isEmpty)
        #expect(Array(order.groupEnds) == [0])
    }
}

/// The pure decisions of NUMA placement, kept apart so they can be tested against any topology
/// (docs/numa.md).
enum NumaPolicy {
    /// `worker`'s steal victims grouped by node, nearest first: its own node's other workers,
    /// then each other node's workers in order of distance (ties by node index). Empty groups
    /// are left out.
    static func victimGroups(of worker: Int, workerNodes: [Int], distances: [[Int]]) -> [[Int]] {
        let home = workerNodes[worker]
        let order = distances.indices.sorted { (distances[home][$0], $0 == home ? 0 : 1, $0) < (distances[home][$1], $1 == home ? 0 : 1, $1) }
        return order.compactMap { node in
            let group = workerNodes.indices.filter { $0 != worker && workerNodes[$0] == node }
            return group.isEmpty ? nil : group
        }
    }

    /// `count` elements of `stride` bytes cut into one block per node, in node order, with
    /// boundaries on page multiples (so no page straddles two nodes); a block may be empty.
    static func blocks(count: Int, elementStride stride: Int, nodes: Int, pageSize: Int) -> [Range<Int>] {
        precondition(nodes >= 1 && stride >= 1 && pageSize >= 1)
        // Elements per page, rounded so that a boundary falls on a page boundary whenever the
        // element size divides the page size (the buffer itself starts page-aligned).
        let perPage = Swift.max(1, pageSize / stride)
        let pages = (count + perPage - 1) / perPage
        var bounds: [Int] = []
        for node in 0...nodes {
            let page = pages * node / nodes
            bounds.append(Swift.min(count, page * perPage))
        }
        return (0..<nodes).map { bounds[$0]..<bounds[$0 + 1] }
    }
}

// An async, server-style program on Spindle: requests arrive on an AsyncStream; CPU-bound work
// leaves the cooperative pool for the workers through `computeMap` (in order, bounded in flight)
// and `compute`; a batch of child tasks runs on Spindle's task executor. Every result is checked
// against a serial computation.
//
//   swift run -c release async-server [--requests N]

import Spindle

#if canImport(Glibc)
import Glibc
#endif

/// A CPU-bound request: hash `rounds` times (FNV-1a over the running value).
struct Request: Sendable {
    let id: Int
    let rounds: Int
}

func handle(_ request: Request) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(request.id)
    for round in 0..<request.rounds {
        hash = (hash ^ UInt64(round & 0xff)) &* 0x100_0000_01b3
    }
    return hash
}

func requests(_ count: Int) -> AsyncStream<Request> {
    AsyncStream { continuation in
        for id in 0..<count { continuation.yield(Request(id: id, rounds: 2_000 + (id % 7) * 1_000)) }
        continuation.finish()
    }
}

func run(requestCount: Int) async throws {
    let jobs = try JobSystem()
    defer { jobs.shutdown() }
    let clock = ContinuousClock()

    // 1. A request stream handled on the workers, responses in request order, at most 32 in flight.
    var served = 0
    let start = clock.now
    for try await (id, hash) in requests(requestCount).computeMap(on: jobs, maxInFlight: 32, { request in
        (request.id, handle(request))
    }) {
        guard id == served, hash == handle(Request(id: id, rounds: 2_000 + (id % 7) * 1_000)) else {
            print("async-server: response \(served) was request \(id) with a wrong hash")
            exit(1)
        }
        served += 1
    }
    let streamed = clock.now - start

    // 2. One larger request that fans out inside its job, awaited without blocking a thread.
    let batch = try await jobs.compute { ctx in
        try ctx.checkCancellation()
        return jobs.parallelMap(0..<1_000) { handle(Request(id: $0, rounds: 500)) }
    }
    let batchExpected = (0..<1_000).map { handle(Request(id: $0, rounds: 500)) }
    guard batch == batchExpected else {
        print("async-server: the fanned-out batch differs from the serial one")
        exit(1)
    }

    // 3. Child tasks on Spindle's executor (the async code itself runs on the workers).
    let total = await Task(executorPreference: jobs) {
        await withTaskGroup(of: UInt64.self) { group in
            for id in 0..<1_000 { group.addTask { handle(Request(id: id, rounds: 100)) } }
            var sum: UInt64 = 0
            for await hash in group { sum &+= hash }
            return sum
        }
    }.value
    let totalExpected = (0..<1_000).reduce(UInt64(0)) { $0 &+ handle(Request(id: $1, rounds: 100)) }
    guard total == totalExpected else {
        print("async-server: the executor's task group summed to \(total), expected \(totalExpected)")
        exit(1)
    }
    print("async-server: \(served) streamed requests in \(streamed) on \(jobs.workerCount) workers; "
          + "a 1,000-part batch through compute and a 1,000-task group on the executor: all results checked")
}

var requestCount = 2_000
var arguments = CommandLine.arguments.dropFirst()
while let option = arguments.popFirst() {
    guard option == "--requests", let text = arguments.popFirst(), let value = Int(text), value >= 0 else {
        print("usage: async-server [--requests N]")
        exit(64)
    }
    requestCount = value
}
try await run(requestCount: requestCount)

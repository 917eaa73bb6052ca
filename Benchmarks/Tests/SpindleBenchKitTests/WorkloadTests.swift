import Testing
@testable import SpindleBenchKit

@Suite("Workload definitions")
struct WorkloadTests {
    @Test func w5GraphMatchesItsPublishedFingerprint() {
        let deps = Workloads.w5Dependencies()
        #expect(deps[0..<64].allSatisfy { $0.isEmpty })
        #expect(deps[64...].allSatisfy { Set($0).count == 4 })
        #expect(Workloads.w5GraphFingerprint(deps) == Workloads.w5Fingerprint)
    }

    @Test func serialReferencesPassTheirChecks() throws {
        #expect(Workloads.fibSerial(Workloads.w2N) == Workloads.w2Expected)
        let input = Workloads.w7Input()
        let out = input.map(Workloads.w7Element)
        try out.withUnsafeBufferPointer { try Workloads.checkW7($0) }
        let w4 = Workloads.w4Input().map(Workloads.w4Element)
        try w4.withUnsafeBufferPointer { try Workloads.checkW4($0) }
    }

    @Test func checksRejectWrongResults() {
        var out = Workloads.w7Input().map(Workloads.w7Element)
        out[5] += 1
        #expect(throws: BenchmarkCheckFailure.self) { try out.withUnsafeBufferPointer { try Workloads.checkW7($0) } }
        let y = [Float](repeating: 52, count: 8)
        #expect(throws: BenchmarkCheckFailure.self) { try y.withUnsafeBufferPointer { try Workloads.checkAxpy($0, expected: 102) } }
    }
}

import Testing
@testable @_spi(Internals) import Spindle

@Suite("CPUSet parsing and formatting")
struct CPUSetTests {
    @Test(arguments: [
        ("0", [0]),
        ("0-3", [0, 1, 2, 3]),
        ("0-3,8-11", [0, 1, 2, 3, 8, 9, 10, 11]),
        ("0,2,4-6", [0, 2, 4, 5, 6]),
        (" 1 , 3-4 ", [1, 3, 4]),
        ("5,1,3", [1, 3, 5]),
        ("2-2", [2]),
        ("1,1,0-1", [0, 1]),
        ("8191", [8191]),
    ])
    func parsesTasksetLists(input: String, expected: [Int]) throws {
        let set = try CPUSet(parsing: input)
        #expect(Array(set) == expected)
        #expect(set.count == expected.count)
    }

    @Test func formatsRunsCompactly() throws {
        #expect(CPUSet([0, 1, 2, 3, 8, 10, 11]).description == "0-3,8,10-11")
        #expect(CPUSet().description == "")
        #expect(CPUSet([7]).description == "7")
        for text in ["0-3,8-11", "0,2,4-6", "63-65", "0-8191"] {
            #expect(try CPUSet(parsing: text).description == text)
        }
    }

    @Test(arguments: [
        ("", CPUSet.ParseError.Reason.empty),
        ("   ", .empty),
        ("a", .malformed(element: "a")),
        ("1-", .malformed(element: "1-")),
        ("-1", .malformed(element: "-1")),
        ("1,,2", .malformed(element: "")),
        ("1-2-3", .malformed(element: "1-2-3")),
        ("0x3", .malformed(element: "0x3")),
        ("1;2", .malformed(element: "1;2")),
        ("4-2", .reversedRange(low: 4, high: 2)),
        ("8192", .outOfRange(cpu: "8192")),
        ("0-99999999999999999999999", .outOfRange(cpu: "99999999999999999999999")),
    ])
    func rejectsBadInputWithAReason(input: String, reason: CPUSet.ParseError.Reason) {
        #expect(throws: CPUSet.ParseError(input: input, reason: reason)) {
            try CPUSet(parsing: input)
        }
    }

    @Test func errorMessagesSayWhatIsWrongAndWhatIsAccepted() {
        let reversed = CPUSet.ParseError(input: "4-2", reason: .reversedRange(low: 4, high: 2))
        #expect(reversed.description.contains("4-2 is reversed"))
        #expect(reversed.description.contains("\"2-4\""))
        #expect(reversed.description.contains("0-3,8-11"))
        let malformed = CPUSet.ParseError(input: "x", reason: .malformed(element: "x"))
        #expect(malformed.description.contains("\"x\" is neither a CPU number nor a range"))
        let range = CPUSet.ParseError(input: "9000", reason: .outOfRange(cpu: "9000"))
        #expect(range.description.contains("9000 is above the largest supported CPU number 8191"))
    }

    @Test func setAlgebra() {
        var set: CPUSet = [1, 5, 64, 130]
        #expect(set.contains(64) && !set.contains(63) && !set.contains(-1) && !set.contains(100_000))
        set.remove(130)
        #expect(set == [1, 5, 64])
        set.remove(64)
        set.remove(5)
        set.remove(1)
        #expect(set.isEmpty && set == CPUSet())
        let a: CPUSet = [0, 1, 2, 70]
        let b: CPUSet = [1, 70, 71]
        #expect(a.intersection(b) == [1, 70])
        #expect(CPUSet([1, 70]).isSubset(of: a))
        #expect(!b.isSubset(of: a))
    }
}

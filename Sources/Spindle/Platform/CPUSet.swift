/// A set of CPU numbers, written and parsed in the list form of `taskset -c` and `numactl`
/// (`"0-3,8-11"`, `"0,2,4-6"`).
///
/// A value type; thread-safe like any `Sendable` value.
///
/// ```swift
/// let cpus = try CPUSet(parsing: "0-3,8")   // [0, 1, 2, 3, 8]
/// cpus.description                           // "0-3,8"
/// let allowed = try CPUSet.allowed()        // what taskset, cgroups and containers allow
/// ```
public struct CPUSet: Hashable, Sendable, Sequence, ExpressibleByArrayLiteral, CustomStringConvertible {
    /// The largest CPU number a set can hold (the Linux kernel's largest `NR_CPUS` is 8192).
    public static let maximumCPU = 8191

    /// Bit `i % 64` of `words[i / 64]` is CPU `i`. No trailing zero words, so `==` is structural.
    private var words: [UInt64]

    /// The empty set.
    public init() { words = [] }

    /// A set of the given CPU numbers.
    /// - Precondition: every number is in `0...CPUSet.maximumCPU`.
    public init<S: Sequence>(_ cpus: S) where S.Element == Int {
        self.init()
        for cpu in cpus { insert(cpu) }
    }

    /// The set of the listed CPUs (duplicates count once).
    public init(arrayLiteral cpus: Int...) { self.init(cpus) }

    /// Builds a set from the kernel's affinity bitmask layout (array of `unsigned long`).
    init(mask: UnsafeBufferPointer<UInt>) {
        self.init()
        for (index, word) in mask.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                let bit = bits.trailingZeroBitCount
                insert(index * UInt.bitWidth + bit)
                bits &= bits &- 1
            }
        }
    }

    /// The number of CPUs in the set. O(n) in the highest CPU number.
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// Whether the set holds no CPU.
    public var isEmpty: Bool { words.isEmpty }

    /// O(1).
    public func contains(_ cpu: Int) -> Bool {
        guard cpu >= 0, cpu / 64 < words.count else { return false }
        return words[cpu / 64] & (1 << UInt64(cpu % 64)) != 0
    }

    /// Adds `cpu`. - Precondition: `cpu` is in `0...CPUSet.maximumCPU`.
    public mutating func insert(_ cpu: Int) {
        require((0...Self.maximumCPU).contains(cpu),
                     "CPU \(cpu) is outside 0...\(Self.maximumCPU)")
        let index = cpu / 64
        if index >= words.count { words.append(contentsOf: repeatElement(0, count: index - words.count + 1)) }
        words[index] |= 1 << UInt64(cpu % 64)
    }

    /// Removes `cpu` if present.
    public mutating func remove(_ cpu: Int) {
        guard contains(cpu) else { return }
        words[cpu / 64] &= ~(1 << UInt64(cpu % 64))
        while words.last == 0 { words.removeLast() }
    }

    /// The CPUs in ascending order.
    public func makeIterator() -> IndexingIterator<[Int]> {
        var cpus: [Int] = []
        for (index, word) in words.enumerated() {
            var bits = word
            while bits != 0 {
                cpus.append(index * 64 + bits.trailingZeroBitCount)
                bits &= bits &- 1
            }
        }
        return cpus.makeIterator()
    }

    /// CPUs in both sets.
    public func intersection(_ other: CPUSet) -> CPUSet {
        var result = CPUSet()
        result.words = zip(words, other.words).map { $0 & $1 }
        while result.words.last == 0 { result.words.removeLast() }
        return result
    }

    /// Whether every CPU of `self` is in `other`.
    public func isSubset(of other: CPUSet) -> Bool { intersection(other) == self }

    /// The list form, with runs collapsed: `"0-3,8,10-11"`; `""` for the empty set.
    public var description: String {
        var parts: [String] = []
        var runStart: Int?
        var previous = -2
        for cpu in self {
            if cpu != previous + 1 {
                if let start = runStart { parts.append(Self.run(start, previous)) }
                runStart = cpu
            }
            previous = cpu
        }
        if let start = runStart { parts.append(Self.run(start, previous)) }
        return parts.joined(separator: ",")
    }

    private static func run(_ low: Int, _ high: Int) -> String {
        low == high ? "\(low)" : "\(low)-\(high)"
    }
}

// MARK: - Parsing

extension CPUSet {
    /// Why a CPU list could not be parsed. `description` names the input, the problem, and what
    /// is accepted.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        /// What is wrong with the text.
        public enum Reason: Hashable, Sendable {
            /// The input has no CPUs at all (`""`, `" "`).
            case empty
            /// An element is not a number or a `low-high` range (`"a"`, `"1-"`, `"1,,2"`).
            case malformed(element: String)
            /// A range whose first CPU is above its last (`"4-2"`).
            case reversedRange(low: Int, high: Int)
            /// A CPU number above `CPUSet.maximumCPU`.
            case outOfRange(cpu: String)
        }

        /// The text that could not be parsed.
        public let input: String
        /// What is wrong with it.
        public let reason: Reason

        public var description: String {
            let problem: String
            switch reason {
            case .empty:
                problem = "it lists no CPUs"
            case .malformed(let element):
                problem = "\"\(element)\" is neither a CPU number nor a range like \"0-3\""
            case .reversedRange(let low, let high):
                problem = "the range \(low)-\(high) is reversed; write the lower CPU first (\"\(high)-\(low)\")"
            case .outOfRange(let cpu):
                problem = "CPU \(cpu) is above the largest supported CPU number \(CPUSet.maximumCPU)"
            }
            return "invalid CPU list \"\(input)\": \(problem). Expected comma-separated CPU numbers and ranges, as in \"0-3,8-11\" or \"0,2,4-6\"."
        }
    }

    /// Parses a CPU list in `taskset -c` / `numactl` form: comma-separated CPU numbers and
    /// inclusive `low-high` ranges, spaces around elements allowed.
    ///
    /// - Throws: `CPUSet.ParseError` for empty, malformed, reversed or out-of-range input.
    /// - Complexity: O(n) in the length of the input plus the number of CPUs listed.
    public init(parsing input: String) throws(ParseError) {
        self.init()
        let trimmed = input.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw ParseError(input: input, reason: .empty) }
        for rawElement in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let element = Substring(rawElement).trimmingWhitespace()
            let bounds = element.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count == 1 || bounds.count == 2 else {
                throw ParseError(input: input, reason: .malformed(element: String(element)))
            }
            let low = try Self.parseCPU(bounds[0], element: element, input: input)
            let high = bounds.count == 2 ? try Self.parseCPU(bounds[1], element: element, input: input) : low
            guard low <= high else {
                throw ParseError(input: input, reason: .reversedRange(low: low, high: high))
            }
            for cpu in low...high { insert(cpu) }
        }
    }

    private static func parseCPU(_ text: Substring, element: Substring, input: String) throws(ParseError) -> Int {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw ParseError(input: input, reason: .malformed(element: String(element)))
        }
        guard let value = Int(text), value <= maximumCPU else {
            throw ParseError(input: input, reason: .outOfRange(cpu: String(text)))
        }
        return value
    }
}

extension StringProtocol {
    /// This text without leading and trailing whitespace.
    func trimmingWhitespace() -> Substring {
        let slice = self[...]
        let start = slice.firstIndex { !$0.isWhitespace } ?? slice.endIndex
        let end = slice[start...].lastIndex { !$0.isWhitespace }.map { slice.index(after: $0) } ?? start
        return Substring(slice[start..<end])
    }
}

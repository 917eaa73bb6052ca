import Foundation

/// What the figures depend on. Comparing against a baseline with another fingerprint warns.
public struct Fingerprint: Hashable, Sendable, Codable, CustomStringConvertible {
    public var cpuModel: String
    public var allowedCPUs: Int
    public var kernel: String
    public var toolchain: String
    public var configuration: String

    public init(cpuModel: String, allowedCPUs: Int, kernel: String, toolchain: String, configuration: String) {
        self.cpuModel = cpuModel
        self.allowedCPUs = allowedCPUs
        self.kernel = kernel
        self.toolchain = toolchain
        self.configuration = configuration
    }

    /// This process: /proc/cpuinfo, the allowed CPUs, uname, the compiler this binary was built
    /// with, and debug or release.
    public static func current(allowedCPUs: Int) -> Fingerprint {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        #if compiler(>=6.3)
        let toolchain = "Swift 6.3 or later"
        #elseif compiler(>=6.2)
        let toolchain = "Swift 6.2"
        #elseif compiler(>=6.1)
        let toolchain = "Swift 6.1"
        #else
        let toolchain = "Swift 6.0"
        #endif
        #if DEBUG
        let configuration = "debug"
        #else
        let configuration = "release"
        #endif
        return Fingerprint(cpuModel: model, allowedCPUs: allowedCPUs, kernel: kernel, toolchain: toolchain,
                           configuration: configuration)
    }

    public var description: String {
        "\(cpuModel), \(allowedCPUs) CPUs, Linux \(kernel), \(toolchain), \(configuration)"
    }
}

/// A saved set of samples to compare later runs with.
///
/// Stored as one JSON file per baseline name: `<directory>/<name>.json`, by default under
/// `.spindle-bench/baselines/` in the current directory (`--baseline-dir` changes it). Saving
/// merges with an existing file, so a filtered run updates only the benchmarks it ran.
public struct BaselineFile: Codable, Sendable {
    public static let currentVersion = 1
    public var version: Int
    public var name: String
    public var fingerprint: Fingerprint
    public var entries: [Entry]

    public struct Entry: Codable, Sendable {
        public var id: String
        public var threads: Int?
        public var perIteration: [Double]
    }

    public func entry(id: BenchmarkID, threads: Int?) -> Entry? {
        entries.first { $0.id == id.description && $0.threads == threads }
    }
}

public enum BaselineError: Error, CustomStringConvertible, Equatable {
    case missing(name: String, path: String)
    case unreadable(path: String, reason: String)
    case corrupt(path: String, reason: String)
    case unwritable(path: String, reason: String)
    case invalidName(String)

    public var description: String {
        switch self {
        case .missing(let name, let path): return "baseline '\(name)' not found (no file at \(path)); save one with --save-baseline \(name)"
        case .unreadable(let path, let reason): return "cannot read baseline \(path): \(reason)"
        case .corrupt(let path, let reason): return "baseline \(path) is corrupt: \(reason)"
        case .unwritable(let path, let reason): return "cannot write baseline \(path): \(reason)"
        case .invalidName(let name): return "invalid baseline name '\(name)': use letters, digits, '-', '_' and '.'"
        }
    }
}

public struct BaselineStore {
    public static let defaultDirectory = ".spindle-bench/baselines"
    public let directory: String

    public init(directory: String = BaselineStore.defaultDirectory) {
        self.directory = directory
    }

    public func path(for name: String) -> String { "\(directory)/\(name).json" }

    static func validate(_ name: String) throws(BaselineError) {
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
        guard !name.isEmpty, allowed, !name.hasPrefix(".") else { throw .invalidName(name) }
    }

    public func load(_ name: String) throws(BaselineError) -> BaselineFile {
        try Self.validate(name)
        let path = path(for: name)
        guard FileManager.default.fileExists(atPath: path) else { throw .missing(name: name, path: path) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .unreadable(path: path, reason: "\(error.localizedDescription)")
        }
        do {
            let file = try JSONDecoder().decode(BaselineFile.self, from: data)
            guard file.version == BaselineFile.currentVersion else {
                throw BaselineError.corrupt(path: path, reason: "format version \(file.version), expected \(BaselineFile.currentVersion)")
            }
            return file
        } catch let error as BaselineError {
            throw error
        } catch {
            throw .corrupt(path: path, reason: Self.describe(error))
        }
    }

    public func save(_ name: String, results: [BenchmarkResult], fingerprint: Fingerprint) throws(BaselineError) {
        try Self.validate(name)
        let path = path(for: name)
        var file = (try? load(name)) ?? BaselineFile(version: BaselineFile.currentVersion, name: name,
                                                    fingerprint: fingerprint, entries: [])
        file.fingerprint = fingerprint
        for result in results {
            let entry = BaselineFile.Entry(id: result.id.description, threads: result.threads,
                                           perIteration: result.analysis.samples.perIteration)
            file.entries.removeAll { $0.id == entry.id && $0.threads == entry.threads }
            file.entries.append(entry)
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(file).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw .unwritable(path: path, reason: error.localizedDescription)
        }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context): return context.debugDescription
        case DecodingError.keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context): return "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.valueNotFound(_, let context): return "missing value at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        default: return "\(error)"
        }
    }
}

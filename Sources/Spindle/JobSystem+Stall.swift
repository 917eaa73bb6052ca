// Stall reports: a system whose workers all sleep while jobs wait in parked fibers, for
// `Configuration.stallReportAfter`. docs/sleep.md, "Stalls".

extension JobSystem {
    /// What a stalled system was waiting for: every worker asleep and nothing queued for
    /// `Configuration.stallReportAfter`, while jobs were parked in waits. No job of the system
    /// can end those waits any more; only something outside it (a thread calling
    /// `JobCounter.decrement(by:)`, an async task) still could, and usually nothing will: a job
    /// that waits for a counter only its own completion brings to zero, or two jobs that wait
    /// for each other.
    public struct StallReport: Sendable, CustomStringConvertible {
        /// One parked job.
        public struct Wait: Sendable, Hashable {
            /// The counter of the waiting job (nil: it was submitted without one).
            public let job: ObjectIdentifier?
            /// The counter it waits for (nil: it waits for the other half of a `join`, which
            /// another worker took).
            public let counter: ObjectIdentifier?
            /// That counter's value when the report was made.
            public let counterValue: Int?
            /// Where `JobContext.wait(for:)` was called (nil for a join).
            public let file: String?
            public let line: Int?
            /// The worker the job parked on.
            public let worker: Int
            /// Debug builds: where the waiting job was submitted (the `file` and `line` of the
            /// `JobSystem.run`, `tryRun` or `JobContext.run` call that made it). nil in release
            /// builds and for jobs the library made (`origin` says which).
            public let submittedFile: String?
            public let submittedLine: Int?
            /// Debug builds: what the waiting job is: "run", "run(argument:)", "run(count:)",
            /// "graph node \"name\"", "join". nil in release builds.
            public let origin: String?

            public init(job: ObjectIdentifier?, counter: ObjectIdentifier?, counterValue: Int?, file: String?, line: Int?,
                        worker: Int, submittedFile: String? = nil, submittedLine: Int? = nil, origin: String? = nil) {
                self.job = job
                self.counter = counter
                self.counterValue = counterValue
                self.file = file
                self.line = line
                self.worker = worker
                self.submittedFile = submittedFile
                self.submittedLine = submittedLine
                self.origin = origin
            }
        }

        /// The parked jobs, in no particular order.
        public let waits: [Wait]
        /// How long the system had been idle with these waits when the report was made.
        public let idle: Duration

        /// Groups of waits that wait for each other in a cycle (indices into `waits`, each
        /// cycle listed once, in wait order): wait *i* waits for the counter of the job of the
        /// next, and the last for the first's. Such waits can never end.
        public var cycles: [[Int]] {
            var byJob: [ObjectIdentifier: Int] = [:]
            for (index, wait) in waits.enumerated() {
                if let job = wait.job { byJob[job] = index }
            }
            var found: [[Int]] = []
            var seen = Set<Int>()
            for start in waits.indices where !seen.contains(start) {
                var path: [Int] = []
                var position: [Int: Int] = [:]
                var current: Int? = start
                while let index = current, !seen.contains(index) {
                    if let at = position[index] {
                        found.append(Array(path[at...]))
                        break
                    }
                    position[index] = path.count
                    path.append(index)
                    current = waits[index].counter.flatMap { byJob[$0] }
                }
                seen.formUnion(path)
            }
            return found
        }

        public var description: String {
            var names: [ObjectIdentifier: String] = [:]
            func name(_ counter: ObjectIdentifier) -> String {
                if let known = names[counter] { return known }
                let letter = names.count < 26 ? String(UnicodeScalar(UInt8(65 + names.count))) : "#\(names.count + 1)"
                let made = "counter \(letter) (\(counter))"
                names[counter] = made
                return made
            }
            var lines = ["Spindle: JobSystem stalled: every worker has been asleep with nothing queued for \(idle) while \(waits.count) job(s) wait in parked fibers; no job of the system can end these waits:"]
            for (index, wait) in waits.enumerated() {
                var who = wait.job.map { "the job of \(name($0))" } ?? "a job without a counter"
                if let file = wait.submittedFile {
                    who += " (submitted at \(file):\(wait.submittedLine ?? 0))"
                } else if let origin = wait.origin {
                    who += " (\(origin), made by the library)"
                }
                let site = wait.file.map { " at \($0):\(wait.line ?? 0)" } ?? ""
                let what: String
                if let counter = wait.counter {
                    what = "waits\(site) for \(name(counter)), which is at \(wait.counterValue ?? 0)"
                } else {
                    what = "waits for the other half of a join, taken by another worker"
                }
                lines.append("  \(index + 1). \(who) \(what) (parked on worker \(wait.worker))")
            }
            for cycle in cycles {
                let chain = (cycle + [cycle[0]]).map { "\($0 + 1)" }.joined(separator: " → ")
                lines.append("  Waits \(chain) wait for each other in a cycle: each counter reaches zero only when a job waiting for the next finishes. Wait for the counters of jobs you spawned, never for one that counts the waiting job or its waiter.")
            }
            lines.append("  If something outside the system will still decrement these counters, raise JobSystem.Configuration.stallReportAfter (or set it to nil), or handle reports with JobSystem.onStall(_:).")
            return lines.joined(separator: "\n")
        }
    }

    /// Sets what happens when the system stalls (`Configuration.stallReportAfter`): `handler`
    /// gets the report, once per stall, on a worker thread that then goes back to sleep. nil
    /// restores the default: a debug build traps with the report, a release build writes it to
    /// standard error.
    ///
    /// Thread-safe; never blocks for long. The handler must not block: it runs on a worker.
    /// - Complexity: O(1).
    public func onStall(_ handler: (@Sendable (StallReport) -> Void)?) {
        scheduler.lock.withLock { scheduler.stallHandler = handler }
    }
}

// Start-up, misconfiguration and shutdown of a job system as swift-log events. docs/observability.md.

// Compiled with the `SpindleObservability` package trait only (Package.swift).
#if SpindleObservability
import Logging
import Spindle

extension JobSystem {
    /// Starts a job system like `init(configuration:)` and logs its life through `logger`:
    ///
    /// - `spindle.started` (info): workers, their CPUs and NUMA nodes, pinning, and where the
    ///   topology came from; a warning `spindle.numa-fallback` when libnuma could not be used
    ///   (placement is then off; the reason is in the metadata).
    /// - `spindle.misconfigured` (error): the configuration error's message, before it is thrown.
    /// - `spindle.stopped` (info): jobs run, steals, fiber parks and sleeps over the system's
    ///   life, when `shutdown()` or `deinit` has stopped the workers.
    ///
    /// Blocks until every worker runs (as `init(configuration:)`).
    /// - Throws: what `init(configuration:)` throws.
    public convenience init(configuration: Configuration = Configuration(), logger: Logger) throws {
        do {
            try self.init(configuration: configuration)
        } catch let error as ConfigurationError {
            logger.error("spindle.misconfigured", metadata: ["error": "\(error)"])
            throw error
        } catch {
            logger.error("spindle.start-failed", metadata: ["error": "\(error)"])
            throw error
        }
        logStart(to: logger)
        onShutdown { final in
            let total = final.total
            logger.info("spindle.stopped", metadata: [
                "jobs": "\(total.jobsRun)",
                "steals": "\(total.steals)",
                "fiber-parks": "\(total.fibersParked)",
                "sleeps": "\(total.sleeps)",
                "fiber-stacks": "\(final.fiberStacks)",
            ])
        }
    }

    private func logStart(to logger: Logger) {
        let workers: [Logger.MetadataValue] = (0..<workerCount).map { index in
            let cpu = cpu(ofWorker: index).map(String.init) ?? "unpinned"
            return "w\(index): cpu \(cpu), node \(topology.nodes[node(ofWorker: index)].id)"
        }
        let source: String
        switch topology.source {
        case .libnuma: source = "libnuma"
        case .custom: source = "configuration"
        case .fallback: source = "fallback (one node)"
        }
        logger.info("spindle.started", metadata: [
            "workers": "\(workerCount)",
            "pinning": "\(configuration.pinning.name)",
            "numa-nodes": "\(topology.nodes.count)",
            "topology": "\(source)",
            "placement": .array(workers),
        ])
        if case .fallback(let reason) = topology.source {
            logger.warning("spindle.numa-fallback", metadata: ["reason": "\(reason)"])
        }
    }
}
#endif  // SpindleObservability

// Estimators for benchmark samples, in the manner of criterion.rs: point estimates, bootstrap
// confidence intervals with a seeded generator (so reports reproduce), the slope of time against
// iterations, Tukey's outlier fences, and a bootstrap Welch t-test for comparisons.
// docs/benchmarking.md gives the definitions and the choices made.

/// SplitMix64: small, fast, seedable. Every bootstrap takes its generator from a seed, so the
/// same samples and seed give the same intervals.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform index in `0..<count` (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// sample counts used here, far under bootstrap noise).
    @inline(__always)
    mutating func index(below count: Int) -> Int {
        Int((UInt64(truncatingIfNeeded: next() >> 32) &* UInt64(count)) >> 32)
    }
}

public enum Statistics {
    // MARK: Point estimates

    /// Arithmetic mean. - Precondition: `values` is not empty.
    public static func mean(_ values: [Double]) -> Double {
        precondition(!values.isEmpty, "mean of no values")
        return values.reduce(0, +) / Double(values.count)
    }

    /// Sample variance (divides by n − 1). - Precondition: at least two values.
    public static func variance(_ values: [Double]) -> Double {
        precondition(values.count >= 2, "variance needs at least two values")
        let m = mean(values)
        return values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)
    }

    /// Sample standard deviation (n − 1).
    public static func standardDeviation(_ values: [Double]) -> Double {
        variance(values).squareRoot()
    }

    /// The `p`-th quantile, `p` in 0...1, interpolating linearly between order statistics
    /// (R's type 7, numpy's default): position `p · (n − 1)` in the sorted values.
    public static func quantile(sorted: [Double], _ p: Double) -> Double {
        precondition(!sorted.isEmpty, "quantile of no values")
        precondition((0...1).contains(p), "quantile \(p) is outside 0...1")
        let position = p * Double(sorted.count - 1)
        let low = Int(position.rounded(.down))
        let high = Swift.min(low + 1, sorted.count - 1)
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }

    public static func median(_ values: [Double]) -> Double {
        quantile(sorted: values.sorted(), 0.5)
    }

    /// Median absolute deviation from the median, scaled by 1.4826 so that it estimates the
    /// standard deviation of normally distributed data (as criterion.rs reports it).
    public static func medianAbsoluteDeviation(_ values: [Double]) -> Double {
        let center = median(values)
        return median(values.map { Swift.abs($0 - center) }) * 1.4826
    }

    // MARK: Regression

    /// A least-squares line through the origin: `y ≈ slope · x`.
    public struct Fit: Hashable, Sendable {
        public let slope: Double
        /// Coefficient of determination for a model without intercept:
        /// `1 − Σ(y − slope·x)² / Σy²` (the uncentered form, which is the right one when the
        /// line is forced through the origin; the centered form can go negative there).
        public let rSquared: Double
    }

    /// Fits `y = slope · x` by least squares: `slope = Σxy / Σx²`.
    /// - Precondition: equal lengths, at least one pair, some non-zero `x`.
    public static func fitThroughOrigin(x: [Double], y: [Double]) -> Fit {
        precondition(x.count == y.count && !x.isEmpty, "regression needs equal, non-empty x and y")
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for i in x.indices {
            sxy += x[i] * y[i]
            sxx += x[i] * x[i]
            syy += y[i] * y[i]
        }
        precondition(sxx > 0, "regression needs a non-zero x")
        let slope = sxy / sxx
        var residual = 0.0
        for i in x.indices {
            let r = y[i] - slope * x[i]
            residual += r * r
        }
        return Fit(slope: slope, rSquared: syy > 0 ? 1 - residual / syy : 1)
    }

    // MARK: Outliers

    /// Tukey's fences, reported rather than removed.
    public struct Outliers: Hashable, Sendable, Codable {
        public var lowSevere = 0, lowMild = 0, highMild = 0, highSevere = 0
        public var total: Int { lowSevere + lowMild + highMild + highSevere }
        public let lowSevereFence: Double, lowMildFence: Double, highMildFence: Double, highSevereFence: Double
    }

    /// Classifies values against Q1 − 3·IQR, Q1 − 1.5·IQR, Q3 + 1.5·IQR and Q3 + 3·IQR
    /// (quartiles by `quantile(sorted:_:)`). A value exactly on a fence is not an outlier.
    public static func classifyOutliers(_ values: [Double]) -> Outliers {
        let sorted = values.sorted()
        let q1 = quantile(sorted: sorted, 0.25)
        let q3 = quantile(sorted: sorted, 0.75)
        let iqr = q3 - q1
        var result = Outliers(lowSevereFence: q1 - 3 * iqr, lowMildFence: q1 - 1.5 * iqr,
                              highMildFence: q3 + 1.5 * iqr, highSevereFence: q3 + 3 * iqr)
        for value in values {
            if value < result.lowSevereFence { result.lowSevere += 1 }
            else if value < result.lowMildFence { result.lowMild += 1 }
            else if value > result.highSevereFence { result.highSevere += 1 }
            else if value > result.highMildFence { result.highMild += 1 }
        }
        return result
    }

    // MARK: Bootstrap

    /// A point estimate with its bootstrap confidence interval.
    public struct Estimate: Hashable, Sendable, Codable {
        public let point: Double
        public let lower: Double
        public let upper: Double
        public let confidenceLevel: Double
    }

    /// Percentile bootstrap: resamples `values` with replacement `resamples` times, computes
    /// `statistic` on each, and takes the `(1 ± level)/2` quantiles of those.
    public static func bootstrap(
        _ values: [Double], resamples: Int, confidenceLevel: Double, seed: UInt64,
        _ statistic: ([Double]) -> Double
    ) -> Estimate {
        precondition(!values.isEmpty, "bootstrap of no values")
        precondition(resamples > 0, "bootstrap needs at least one resample")
        var rng = SplitMix64(seed: seed)
        var resample = [Double](repeating: 0, count: values.count)
        var distribution = [Double]()
        distribution.reserveCapacity(resamples)
        for _ in 0..<resamples {
            for i in resample.indices { resample[i] = values[rng.index(below: values.count)] }
            distribution.append(statistic(resample))
        }
        return interval(point: statistic(values), distribution: distribution, level: confidenceLevel)
    }

    /// Bootstrap of the slope: resamples (iterations, time) pairs.
    public static func bootstrapSlope(
        x: [Double], y: [Double], resamples: Int, confidenceLevel: Double, seed: UInt64
    ) -> Estimate {
        var rng = SplitMix64(seed: seed)
        var rx = [Double](repeating: 0, count: x.count)
        var ry = rx
        var distribution = [Double]()
        distribution.reserveCapacity(resamples)
        for _ in 0..<resamples {
            for i in rx.indices {
                let j = rng.index(below: x.count)
                rx[i] = x[j]
                ry[i] = y[j]
            }
            if rx.contains(where: { $0 != 0 }) {
                distribution.append(fitThroughOrigin(x: rx, y: ry).slope)
            }
        }
        return interval(point: fitThroughOrigin(x: x, y: y).slope, distribution: distribution, level: confidenceLevel)
    }

    static func interval(point: Double, distribution: [Double], level: Double) -> Estimate {
        precondition(level > 0 && level < 1, "confidence level \(level) must be strictly between 0 and 1")
        let sorted = distribution.sorted()
        let tail = (1 - level) / 2
        return Estimate(point: point, lower: quantile(sorted: sorted, tail),
                        upper: quantile(sorted: sorted, 1 - tail), confidenceLevel: level)
    }

    // MARK: Comparison

    /// Welch's t statistic for the difference of means `a − b`.
    public static func welchT(_ a: [Double], _ b: [Double]) -> Double {
        let va = variance(a) / Double(a.count)
        let vb = variance(b) / Double(b.count)
        let denominator = (va + vb).squareRoot()
        let difference = mean(a) - mean(b)
        if denominator == 0 { return difference == 0 ? 0 : (difference > 0 ? .infinity : -.infinity) }
        return difference / denominator
    }

    /// Two-sided p-value of Welch's t for `a` vs `b` by the mixed bootstrap: under the null
    /// hypothesis both samples come from one population, so both are drawn from the pooled
    /// values, and the p-value is how often a resampled |t| reaches the observed |t|.
    public static func bootstrapWelchPValue(_ a: [Double], _ b: [Double], resamples: Int, seed: UInt64) -> Double {
        let observed = Swift.abs(welchT(a, b))
        let pooled = a + b
        var rng = SplitMix64(seed: seed)
        var ra = [Double](repeating: 0, count: a.count)
        var rb = [Double](repeating: 0, count: b.count)
        var extreme = 0
        for _ in 0..<resamples {
            for i in ra.indices { ra[i] = pooled[rng.index(below: pooled.count)] }
            for i in rb.indices { rb[i] = pooled[rng.index(below: pooled.count)] }
            if Swift.abs(welchT(ra, rb)) >= observed { extreme += 1 }
        }
        return Double(extreme) / Double(resamples)
    }

    /// Relative change of `statistic` from `old` to `new` (`new/old − 1`), with a bootstrap
    /// interval from resampling both samples independently.
    public static func relativeChange(
        old: [Double], new: [Double], resamples: Int, confidenceLevel: Double, seed: UInt64,
        _ statistic: ([Double]) -> Double
    ) -> Estimate {
        var rng = SplitMix64(seed: seed)
        var ro = [Double](repeating: 0, count: old.count)
        var rn = [Double](repeating: 0, count: new.count)
        var distribution = [Double]()
        distribution.reserveCapacity(resamples)
        for _ in 0..<resamples {
            for i in ro.indices { ro[i] = old[rng.index(below: old.count)] }
            for i in rn.indices { rn[i] = new[rng.index(below: new.count)] }
            distribution.append(statistic(rn) / statistic(ro) - 1)
        }
        return interval(point: statistic(new) / statistic(old) - 1, distribution: distribution, level: confidenceLevel)
    }

    /// How a comparison came out.
    public enum Verdict: String, Hashable, Sendable, Codable {
        case improved = "improved"
        case regressed = "regressed"
        case noChange = "no change"
        case withinNoise = "change within noise threshold"
    }

    /// criterion's rule: without a significant p-value there is no change; with one, the change
    /// counts only if its whole confidence interval lies beyond the noise threshold, in one
    /// direction. Changes are in time, so negative is faster.
    public static func verdict(pValue: Double, significanceLevel: Double, change: Estimate, noiseThreshold: Double) -> Verdict {
        guard pValue < significanceLevel else { return .noChange }
        if change.upper < -noiseThreshold { return .improved }
        if change.lower > noiseThreshold { return .regressed }
        return .withinNoise
    }
}

import Testing
@testable import SpindleBenchKit

/// Every expected value here was worked out by hand (and cross-checked with numpy).
@Suite("Benchmark statistics")
struct StatisticsTests {
    let values: [Double] = [2, 4, 4, 4, 5, 5, 7, 9]

    @Test func pointEstimates() {
        #expect(Statistics.mean(values) == 5)
        // Σ(x − 5)² = 9+1+1+1+0+0+4+16 = 32, over n − 1 = 7.
        #expect(abs(Statistics.variance(values) - 32.0 / 7.0) < 1e-12)
        #expect(abs(Statistics.standardDeviation(values) - 2.138089935299395) < 1e-12)
        #expect(Statistics.median(values) == 4.5)
        #expect(Statistics.median([3, 1, 2]) == 2)
        // |x − 4.5| = 2.5, 0.5×5, 2.5, 4.5: median 0.5, scaled by 1.4826.
        #expect(abs(Statistics.medianAbsoluteDeviation(values) - 0.7413) < 1e-12)
    }

    @Test func quantilesInterpolateLinearly() {
        let sorted = values.sorted()
        #expect(Statistics.quantile(sorted: sorted, 0) == 2)
        #expect(Statistics.quantile(sorted: sorted, 1) == 9)
        #expect(Statistics.quantile(sorted: sorted, 0.25) == 4)     // position 1.75: 4 + 0.75·0
        #expect(Statistics.quantile(sorted: sorted, 0.75) == 5.5)   // position 5.25: 5 + 0.25·2
        #expect(Statistics.quantile(sorted: [10], 0.3) == 10)
    }

    @Test func slopeThroughTheOriginWithUncenteredRSquared() {
        // Σxy = 2 + 9 + 16.5 = 27.5, Σx² = 14: slope 27.5/14.
        let fit = Statistics.fitThroughOrigin(x: [1, 2, 3], y: [2, 4.5, 5.5])
        #expect(abs(fit.slope - 27.5 / 14) < 1e-12)
        // Σ(y − ŷ)² = 0.48214…, Σy² = 54.5.
        #expect(abs(fit.rSquared - 0.9911533420707732) < 1e-12)
        let perfect = Statistics.fitThroughOrigin(x: [1, 2, 4], y: [3, 6, 12])
        #expect(perfect.slope == 3 && perfect.rSquared == 1)
    }

    @Test func tukeyFencesClassifyWithoutRemoving() {
        // Q1 = 4, Q3 = 5.5, IQR = 1.5: fences −0.5, 1.75, 7.75, 10. Only 9 is outside (mild, high).
        let outliers = Statistics.classifyOutliers(values)
        #expect(outliers.lowSevereFence == -0.5 && outliers.lowMildFence == 1.75)
        #expect(outliers.highMildFence == 7.75 && outliers.highSevereFence == 10)
        #expect(outliers.highMild == 1 && outliers.total == 1)
        let wide = Statistics.classifyOutliers([-20, 1.5, 4, 4, 4, 5, 5, 5, 9, 30])
        // Q1 = 4, Q3 = 5, IQR = 1: −20 severe low (below 1), 1.5 mild low (below 2.5), 9 severe
        // high (above 8), 30 severe high.
        #expect(wide.lowSevere == 1 && wide.lowMild == 1 && wide.highMild == 0 && wide.highSevere == 2)
    }

    @Test func welchTStatistic() {
        // means 2.5 and 4; variances 5/3 and 4; t = −1.5 / √(5/12 + 4/3).
        #expect(abs(Statistics.welchT([1, 2, 3, 4], [2, 4, 6]) - -1.1338934190276817) < 1e-12)
        #expect(Statistics.welchT([1, 1], [1, 1]) == 0)
    }

    @Test func bootstrapIsSeededAndBracketsTheEstimate() {
        let a = Statistics.bootstrap(values, resamples: 2000, confidenceLevel: 0.95, seed: 7, Statistics.mean)
        let b = Statistics.bootstrap(values, resamples: 2000, confidenceLevel: 0.95, seed: 7, Statistics.mean)
        let c = Statistics.bootstrap(values, resamples: 2000, confidenceLevel: 0.95, seed: 8, Statistics.mean)
        #expect(a == b, "the same seed must reproduce the interval")
        #expect(a != c)
        #expect(a.point == 5 && a.lower < 5 && a.upper > 5 && a.lower >= 2 && a.upper <= 9)
        // A constant sample has a degenerate interval.
        let constant = Statistics.bootstrap([3, 3, 3], resamples: 100, confidenceLevel: 0.95, seed: 1, Statistics.mean)
        #expect(constant.lower == 3 && constant.upper == 3)
    }

    @Test func comparisonVerdicts() {
        let old = (0..<50).map { 100 + Double($0 % 5) }          // ~102
        let slower = (0..<50).map { 120 + Double($0 % 5) }       // ~20 % slower
        let same = (0..<50).map { 100 + Double(($0 + 2) % 5) }
        let p = Statistics.bootstrapWelchPValue(old, slower, resamples: 2000, seed: 3)
        #expect(p < 0.01)
        let change = Statistics.relativeChange(old: old, new: slower, resamples: 2000, confidenceLevel: 0.95, seed: 3, Statistics.mean)
        #expect(change.point > 0.19 && change.point < 0.2)
        #expect(Statistics.verdict(pValue: p, significanceLevel: 0.05, change: change, noiseThreshold: 0.01) == .regressed)
        let pSame = Statistics.bootstrapWelchPValue(old, same, resamples: 2000, seed: 3)
        #expect(pSame > 0.5)
        let sameChange = Statistics.relativeChange(old: old, new: same, resamples: 2000, confidenceLevel: 0.95, seed: 3, Statistics.mean)
        #expect(Statistics.verdict(pValue: pSame, significanceLevel: 0.05, change: sameChange, noiseThreshold: 0.01) == .noChange)
        // Significant but inside the noise band, and a clear improvement.
        let small = Statistics.Estimate(point: 0.004, lower: -0.002, upper: 0.009, confidenceLevel: 0.95)
        #expect(Statistics.verdict(pValue: 0.01, significanceLevel: 0.05, change: small, noiseThreshold: 0.01) == .withinNoise)
        let faster = Statistics.Estimate(point: -0.2, lower: -0.25, upper: -0.15, confidenceLevel: 0.95)
        #expect(Statistics.verdict(pValue: 0.001, significanceLevel: 0.05, change: faster, noiseThreshold: 0.01) == .improved)
    }

    @Test func formatting() {
        #expect(Format.time(17.409) == "17.409 ns")
        #expect(Format.time(12_584) == "12.584 µs")
        #expect(Format.time(1_509_500_000) == "1.5095 s")
        #expect(Format.ratio(1.957) == "1.96×")
        #expect(Format.ratio(0.001069) == "0.00107×")
        #expect(Format.throughput(.elements(1_000_000), nanosecondsPerIteration: 345_940_000) == "2.8907 Melem/s")
    }
}

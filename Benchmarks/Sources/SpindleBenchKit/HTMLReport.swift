import Foundation

/// A self-contained HTML report (one `index.html`, inline SVG, no scripts or external files):
/// per benchmark, the distribution of per-iteration times and the regression of sample time on
/// iterations; per group, a violin plot of the competitors and, for `--threads` sweeps, speedup
/// against worker count.
public enum HTMLReport {
    public enum Error: Swift.Error, CustomStringConvertible {
        case unwritable(path: String, reason: String)
        public var description: String {
            switch self {
            case .unwritable(let path, let reason): return "cannot write the HTML report to \(path): \(reason)"
            }
        }
    }

    /// Writes `<directory>/index.html`, creating the directory if needed.
    public static func write(_ results: [BenchmarkResult], title: String, to directory: String) throws(Error) {
        let path = "\(directory)/index.html"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(render(results, title: title).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw .unwritable(path: path, reason: error.localizedDescription)
        }
    }

    public static func render(_ results: [BenchmarkResult], title: String) -> String {
        var groups: [(String, [BenchmarkResult])] = []
        for result in results {
            if let index = groups.firstIndex(where: { $0.0 == result.id.group }) {
                groups[index].1.append(result)
            } else {
                groups.append((result.id.group, [result]))
            }
        }
        var body = "<h1>spindle-bench</h1>\n<p>\(escape(title))</p>\n"
        body += "<nav><ul>" + groups.map { "<li><a href=\"#\(anchor($0.0))\">\(escape($0.0))</a></li>" }.joined() + "</ul></nav>\n"
        for (group, members) in groups {
            body += "<section id=\"\(anchor(group))\"><h2>\(escape(group))</h2>\n"
            body += "<h3>Competitors</h3>\n" + violin(members) + "\n"
            let swept = members.filter { $0.threads != nil }
            if Set(swept.compactMap(\.threads)).count > 1 {
                body += "<h3>Speedup against worker count</h3>\n" + speedupChart(swept) + "\n"
            }
            for result in members {
                let name = Format.label(result.id, threads: result.threads)
                let typical = result.analysis.typical
                body += "<h3>\(escape(name))</h3>\n"
                body += "<p>time: [\(Format.time(typical.lower)) <b>\(Format.time(typical.point))</b> \(Format.time(typical.upper))]"
                if let note = result.note { body += " — \(escape(note))" }
                body += "</p>\n<div class=\"pair\">" + distribution(result) + regression(result) + "</div>\n"
            }
            body += "</section>\n"
        }
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>spindle-bench report</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
            h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
            .pair { display: flex; flex-wrap: wrap; gap: 1em; }
            svg { background: #fafafa; border: 1px solid #eee; }
            svg text { font: 11px system-ui, sans-serif; fill: #333; }
            nav ul { columns: 3; }
            </style></head><body>
            \(body)
            </body></html>
            """
    }

    // MARK: Plots

    /// Kernel density estimate (Gaussian, Silverman's bandwidth) of `values` at `points`.
    static func density(_ values: [Double], at points: [Double]) -> [Double] {
        let n = Double(values.count)
        let sd = values.count > 1 ? Statistics.standardDeviation(values) : 0
        let sorted = values.sorted()
        let iqr = Statistics.quantile(sorted: sorted, 0.75) - Statistics.quantile(sorted: sorted, 0.25)
        var spread = Swift.min(sd, iqr / 1.34)
        if spread <= 0 { spread = Swift.max(sd, Swift.abs(sorted.last ?? 1) * 0.01, 1e-9) }
        let h = 0.9 * spread * pow(n, -0.2)
        let norm = 1 / (n * h * (2 * Double.pi).squareRoot())
        return points.map { x in values.reduce(0) { $0 + exp(-0.5 * pow((x - $1) / h, 2)) } * norm }
    }

    struct Frame {
        let width = 440.0, height = 240.0, left = 84.0, right = 34.0, top = 15.0, bottom = 40.0
        let xMin: Double, xMax: Double, yMin: Double, yMax: Double

        func x(_ value: Double) -> Double {
            left + (value - xMin) / Swift.max(xMax - xMin, 1e-300) * (width - left - right)
        }
        func y(_ value: Double) -> Double {
            height - bottom - (value - yMin) / Swift.max(yMax - yMin, 1e-300) * (height - top - bottom)
        }

        func axes(xLabel: String, yLabel: String, xFormat: (Double) -> String, yFormat: (Double) -> String) -> String {
            var out = "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
            out += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
            for i in 0...4 {
                let fraction = Double(i) / 4
                let xv = xMin + (xMax - xMin) * fraction
                let yv = yMin + (yMax - yMin) * fraction
                out += "<text x=\"\(x(xv))\" y=\"\(height - bottom + 14)\" text-anchor=\"middle\">\(escape(xFormat(xv)))</text>"
                out += "<text x=\"\(left - 4)\" y=\"\(y(yv) + 4)\" text-anchor=\"end\">\(escape(yFormat(yv)))</text>"
            }
            out += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 6)\" text-anchor=\"middle\">\(escape(xLabel))</text>"
            out += "<text x=\"12\" y=\"\((top + height - bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 12 \((top + height - bottom) / 2))\">\(escape(yLabel))</text>"
            return out
        }

        func svg(_ content: String) -> String {
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">\(content)</svg>"
        }
    }

    /// Density of per-iteration times, with the samples as ticks and the mean as a line.
    static func distribution(_ result: BenchmarkResult) -> String {
        let values = result.analysis.samples.perIteration
        let low = values.min() ?? 0, high = values.max() ?? 1
        let pad = Swift.max((high - low) * 0.15, high * 0.001, 1e-9)
        let xs = (0..<120).map { low - pad + (high - low + 2 * pad) * Double($0) / 119 }
        let ys = density(values, at: xs)
        let frame = Frame(xMin: xs.first!, xMax: xs.last!, yMin: 0, yMax: (ys.max() ?? 1) * 1.1)
        var content = frame.axes(xLabel: "time per iteration", yLabel: "density", xFormat: Format.time, yFormat: { _ in "" })
        let path = zip(xs, ys).map { "\(frame.x($0)),\(frame.y($1))" }.joined(separator: " ")
        content += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
        for value in values {
            content += "<line x1=\"\(frame.x(value))\" y1=\"\(frame.y(0))\" x2=\"\(frame.x(value))\" y2=\"\(frame.y(0) - 8)\" stroke=\"#1f77b4\" stroke-opacity=\"0.5\"/>"
        }
        let mean = result.analysis.mean.point
        content += "<line x1=\"\(frame.x(mean))\" y1=\"\(frame.top)\" x2=\"\(frame.x(mean))\" y2=\"\(frame.y(0))\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>"
        return frame.svg(content)
    }

    /// Sample time against iterations, with the fitted line through the origin (linear plan);
    /// for other plans, sample time against sample index.
    static func regression(_ result: BenchmarkResult) -> String {
        let samples = result.analysis.samples
        let linear = samples.mode == .linear
        let xs = linear ? samples.iterations : samples.iterations.indices.map { Double($0 + 1) }
        let ys = samples.times
        let frame = Frame(xMin: 0, xMax: (xs.max() ?? 1) * 1.05, yMin: 0, yMax: (ys.max() ?? 1) * 1.1)
        var content = frame.axes(xLabel: linear ? "iterations" : "sample", yLabel: "sample time",
                                 xFormat: { String(format: "%.0f", $0) }, yFormat: Format.time)
        for (x, y) in zip(xs, ys) {
            content += "<circle cx=\"\(frame.x(x))\" cy=\"\(frame.y(y))\" r=\"2.5\" fill=\"#1f77b4\" fill-opacity=\"0.7\"/>"
        }
        if linear, let slope = result.analysis.slope?.point {
            let end = frame.xMax
            content += "<line x1=\"\(frame.x(0))\" y1=\"\(frame.y(0))\" x2=\"\(frame.x(end))\" y2=\"\(frame.y(slope * end))\" stroke=\"#d62728\"/>"
            if let r2 = result.analysis.rSquared {
                content += "<text x=\"\(frame.left + 8)\" y=\"\(frame.top + 12)\">R² = \(String(format: "%.5f", r2))</text>"
            }
        }
        return frame.svg(content)
    }

    /// One horizontal violin per competitor, on a shared time axis, with the median marked. When
    /// the competitors differ by more than 10×, the axis (and each density) is logarithmic, so
    /// the fast ones do not collapse into a line next to the slow ones.
    static func violin(_ members: [BenchmarkResult]) -> String {
        let all = members.flatMap { $0.analysis.samples.perIteration }.filter { $0 > 0 }
        let smallest = all.min() ?? 1, largest = all.max() ?? 1
        let logarithmic = largest / smallest > 10
        func t(_ value: Double) -> Double { logarithmic ? log10(Swift.max(value, 1e-12)) : value }
        func inverse(_ value: Double) -> Double { logarithmic ? pow(10, value) : value }
        let low = t(smallest), high = t(largest)
        let pad = Swift.max((high - low) * 0.05, Swift.abs(high) * 0.001, 1e-9)
        let axisLow = logarithmic ? low - pad : Swift.max(low - pad, 0)
        let axisHigh = high + pad
        let rowHeight = 46.0
        let height = 40 + rowHeight * Double(members.count)
        let width = 860.0, left = 330.0, right = 48.0
        func x(_ transformed: Double) -> Double { left + (transformed - axisLow) / (axisHigh - axisLow) * (width - left - right) }
        var content = ""
        for (row, member) in members.enumerated() {
            let values = member.analysis.samples.perIteration.map(t)
            let center = 20 + rowHeight * (Double(row) + 0.5)
            let vlow = values.min() ?? 0, vhigh = values.max() ?? 0
            let vpad = Swift.max((vhigh - vlow) * 0.1, Swift.abs(vhigh) * 0.001, 1e-9)
            let xs = (0..<80).map { vlow - vpad + (vhigh - vlow + 2 * vpad) * Double($0) / 79 }
            let ys = density(values, at: xs)
            let peak = Swift.max(ys.max() ?? 1, 1e-300)
            let upper = zip(xs, ys).map { "\(x($0)),\(center - $1 / peak * rowHeight * 0.42)" }
            let lower = zip(xs, ys).reversed().map { "\(x($0)),\(center + $1 / peak * rowHeight * 0.42)" }
            content += "<polygon points=\"\((upper + lower).joined(separator: " "))\" fill=\"#1f77b4\" fill-opacity=\"0.35\" stroke=\"#1f77b4\"/>"
            let median = member.analysis.median.point
            content += "<line x1=\"\(x(t(median)))\" y1=\"\(center - rowHeight * 0.4)\" x2=\"\(x(t(median)))\" y2=\"\(center + rowHeight * 0.4)\" stroke=\"#d62728\" stroke-width=\"2\"/>"
            let label = member.id.name + (member.id.parameter.map { "/\($0)" } ?? "") + (member.threads.map { " ×\($0)" } ?? "")
            content += "<text x=\"\(left - 8)\" y=\"\(center + 4)\" text-anchor=\"end\">\(escape(label)) (\(escape(Format.time(median))))</text>"
        }
        for i in 0...4 {
            let value = axisLow + (axisHigh - axisLow) * Double(i) / 4
            content += "<text x=\"\(x(value))\" y=\"\(height - 6)\" text-anchor=\"middle\">\(escape(Format.time(inverse(value))))</text>"
        }
        if logarithmic {
            content += "<text x=\"\(width - right)\" y=\"14\" text-anchor=\"end\">log scale</text>"
        }
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">\(content)</svg>"
    }

    /// Speedup (median at one worker / median at n) against n, one line per benchmark, with the
    /// ideal linear speedup dashed.
    static func speedupChart(_ swept: [BenchmarkResult]) -> String {
        let ids = swept.reduce(into: [BenchmarkID]()) { if !$0.contains($1.id) { $0.append($1.id) } }
        let maxThreads = Double(swept.compactMap(\.threads).max() ?? 1)
        var lines: [(BenchmarkID, [(Double, Double)])] = []
        for id in ids {
            let runs = swept.filter { $0.id == id }.sorted { ($0.threads ?? 0) < ($1.threads ?? 0) }
            guard let base = runs.first(where: { $0.threads == 1 }) else { continue }
            lines.append((id, runs.map { (Double($0.threads!), base.analysis.median.point / $0.analysis.median.point) }))
        }
        let maxSpeedup = Swift.max(maxThreads, lines.flatMap { $0.1.map(\.1) }.max() ?? 1)
        let frame = Frame(xMin: 1, xMax: maxThreads, yMin: 0, yMax: maxSpeedup * 1.1)
        var content = frame.axes(xLabel: "workers", yLabel: "speedup", xFormat: { String(format: "%.0f", $0) },
                                 yFormat: { String(format: "%.1f×", $0) })
        content += "<line x1=\"\(frame.x(1))\" y1=\"\(frame.y(1))\" x2=\"\(frame.x(maxThreads))\" y2=\"\(frame.y(maxThreads))\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>"
        let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
        for (index, (id, points)) in lines.enumerated() {
            let color = colors[index % colors.count]
            content += "<polyline points=\"\(points.map { "\(frame.x($0.0)),\(frame.y($0.1))" }.joined(separator: " "))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            content += "<text x=\"\(frame.left + 8)\" y=\"\(frame.top + 12 + Double(index) * 13)\" fill=\"\(color)\">\(escape(id.name))</text>"
        }
        return frame.svg(content)
    }

    // MARK: Helpers

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func anchor(_ text: String) -> String {
        String(text.map { $0.isLetter || $0.isNumber ? $0 : "-" })
    }
}

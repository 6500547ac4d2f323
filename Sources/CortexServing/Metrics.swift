import Cortex

/// Prometheus metrics (text exposition format 0.0.4): counters, gauges and histograms
/// with labels, thread-safe, rendered on demand for `/metrics`.
public final class Metrics: @unchecked Sendable {
    struct Histogram {
        let bounds: [Double]
        var counts: [Int]      // per bucket (not cumulative), last = +Inf
        var sum = 0.0
        var count = 0
    }
    struct Family {
        let type: String, help: String
        var values: [String: Double] = [:]          // label set -> value (counters, gauges)
        var histograms: [String: Histogram] = [:]   // label set -> histogram
        var bounds: [Double] = []
    }
    private let families = Locked<[(String, Family)]>([])

    public init() {}

    /// Declare a metric (render order is declaration order).
    public func declare(_ name: String, type: String, help: String, buckets: [Double] = []) {
        families.withLock { f in
            guard !f.contains(where: { $0.0 == name }) else { return }
            var fam = Family(type: type, help: help)
            fam.bounds = buckets
            f.append((name, fam))
        }
    }

    static func labelText(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        let body = labels.map { k, v in
            let escaped = v.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
            return "\(k)=\"\(escaped)\""
        }.joined(separator: ",")
        return "{\(body)}"
    }

    private func update(_ name: String, _ body: (inout Family) -> Void) {
        families.withLock { f in
            if let i = f.firstIndex(where: { $0.0 == name }) { body(&f[i].1) }
        }
    }

    public func increment(_ name: String, _ labels: [(String, String)] = [], by v: Double = 1) {
        let key = Metrics.labelText(labels)
        update(name) { $0.values[key, default: 0] += v }
    }

    public func set(_ name: String, _ labels: [(String, String)] = [], _ v: Double) {
        let key = Metrics.labelText(labels)
        update(name) { $0.values[key] = v }
    }

    public func observe(_ name: String, _ labels: [(String, String)] = [], _ v: Double) {
        let key = Metrics.labelText(labels)
        update(name) { fam in
            var h = fam.histograms[key] ?? Histogram(bounds: fam.bounds, counts: [Int](repeating: 0, count: fam.bounds.count + 1))
            h.counts[h.bounds.firstIndex { v <= $0 } ?? h.bounds.count] += 1
            h.sum += v
            h.count += 1
            fam.histograms[key] = h
        }
    }

    /// The value of a counter or gauge (0 when never set).
    public func value(_ name: String, _ labels: [(String, String)] = []) -> Double {
        let key = Metrics.labelText(labels)
        return families.withLock { f in f.first { $0.0 == name }?.1.values[key] ?? 0 }
    }

    public func render() -> String {
        families.withLock { f in
            var out = ""
            for (name, fam) in f {
                out += "# HELP \(name) \(fam.help)\n# TYPE \(name) \(fam.type)\n"
                for key in fam.values.keys.sorted() { out += "\(name)\(key) \(Metrics.number(fam.values[key]!))\n" }
                for key in fam.histograms.keys.sorted() {
                    let h = fam.histograms[key]!
                    let inner = key.isEmpty ? "" : String(key.dropFirst().dropLast()) + ","
                    var cumulative = 0
                    for (i, b) in h.bounds.enumerated() {
                        cumulative += h.counts[i]
                        out += "\(name)_bucket{\(inner)le=\"\(Metrics.number(b))\"} \(cumulative)\n"
                    }
                    out += "\(name)_bucket{\(inner)le=\"+Inf\"} \(h.count)\n"
                    out += "\(name)_sum\(key) \(Metrics.number(h.sum))\n\(name)_count\(key) \(h.count)\n"
                }
            }
            return out
        }
    }

    static func number(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int(v)) }
        return "\(v)"
    }
}

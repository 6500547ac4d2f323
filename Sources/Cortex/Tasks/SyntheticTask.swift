/// The synthetic sequence tasks of cortexcore's evaluation harness (seed `000`,
/// Metta-AI/metta `packages/cortex/evaluations`), as binary classification of token
/// sequences:
///
/// - `delayed_recall(delay)`: tokens {0, 1, 2}; a cue bit then `delay` fillers (2);
///   label = the cue.
/// - `majority(length, nonzero_prob = 0.3)`: tokens {0 pad, 1 (+1), 2 (−1)}; label =
///   count(1) > count(2).
/// - `dyck(n_pairs, neg_fraction = 0.5)`: tokens {0 "(", 1 ")"}; a uniformly random
///   balanced string of 2·n_pairs, one token flipped with probability `neg_fraction`;
///   label = well-formed.
///
/// Samples come from Cortex's own generator (SplitMix64, seeded, documented below), so
/// they are reproducible here but are not the reference's Python `random` draws.
public enum SyntheticTask: String, Sendable, CaseIterable {
    case delayedRecall = "delayed_recall"
    case majority
    case dyck

    public var vocabSize: Int { self == .dyck ? 2 : 3 }

    /// `count` samples for `parameters` (the task's JSON fields; defaults as the
    /// reference harness: delay 50, length 100, n_pairs 50).
    public func generate(count: Int, parameters: JSON, seed: UInt64) throws -> (tokens: [[Int]], labels: [Int]) {
        guard count >= 0, count <= 1_000_000 else { throw CortexError.invalidArgument("samples must be in [0, 1000000]") }
        func int(_ name: String, _ value: Int) throws -> Int {
            try parameters.intField(name, default: value, in: 1...100_000, core: rawValue)
        }
        func prob(_ name: String, _ value: Double) throws -> Double {
            guard let v = parameters[name], !v.isNull else { return value }
            guard let d = v.double, d >= 0, d <= 1 else { throw CortexError.parse("\(rawValue): \(name) must be in [0, 1]") }
            return d
        }
        var rng = SplitMix64(seed: seed)
        var tokens: [[Int]] = [], labels: [Int] = []
        tokens.reserveCapacity(count)
        switch self {
        case .delayedRecall:
            let delay = try int("delay", 50)
            for _ in 0..<count {
                let cue = rng.uniform() < 0.5 ? 0 : 1
                tokens.append([cue] + Array(repeating: 2, count: delay))
                labels.append(cue)
            }
        case .majority:
            let length = try int("length", 100), p = try prob("nonzero_prob", 0.3)
            for _ in 0..<count {
                var seq = [Int](repeating: 0, count: length)
                for t in 0..<length where rng.uniform() < p { seq[t] = rng.uniform() < 0.5 ? 2 : 1 }
                tokens.append(seq)
                labels.append(seq.filter { $0 == 1 }.count > seq.filter { $0 == 2 }.count ? 1 : 0)
            }
        case .dyck:
            let pairs = try int("n_pairs", 50), negative = try prob("neg_fraction", 0.5)
            for _ in 0..<count {
                var seq: [Int] = [], opens = 0, closes = 0
                for _ in 0..<(2 * pairs) {
                    if opens == pairs || (closes < opens && rng.uniform() >= 0.5) {
                        seq.append(1); closes += 1
                    } else {
                        seq.append(0); opens += 1
                    }
                }
                var label = 1
                if rng.uniform() < negative {
                    let i = Int(rng.next() % UInt64(seq.count))
                    seq[i] = 1 - seq[i]
                    label = 0
                }
                tokens.append(seq)
                labels.append(label)
            }
        }
        return (tokens, labels)
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): x += 0x9E3779B97F4A7C15, then two xor-shift-
/// multiply rounds. `uniform()` takes the top 53 bits as a double in [0, 1).
public struct SplitMix64: Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

#if canImport(Glibc)
import Glibc
#endif

/// The fast-weight controller's inputs from the host's predictions (seed 002, "inference
/// time surprise"), per sequence:
///
///     loss_t = −log p_t[token]          (or the host's own loss)
///     ema_t  = 0.99·ema_{t−1} + 0.01·loss_t;    surprise_t = loss_t − ema_t
///     uncertainty_t = entropy(softmax(logits_t))   (nats)
///     phase_t = sin(2π t / period)
///
/// `signals` returns `[surprise, uncertainty, reward, phase]`, the controller's order.
/// The EMA starts at the first loss (so the first surprise is 0).
public struct PlasticitySignals: Sendable, Equatable {
    public var ema: Double?
    public var step = 0
    public var period: Double
    public var decay: Double

    public init(period: Double = 1024, decay: Double = 0.99) {
        self.period = period
        self.decay = decay
    }

    /// Entropy (nats) and −log p[token] of the softmax of `logits` (`token` nil: no loss).
    public static func entropy(_ logits: UnsafePointer<Float>, count V: Int, token: Int?) -> (entropy: Double, loss: Double?) {
        var m = -Double.infinity
        for i in 0..<V { m = max(m, Double(logits[i])) }
        var z = 0.0
        for i in 0..<V { z += Glibc.exp(Double(logits[i]) - m) }
        let logZ = m + Glibc.log(z)
        var h = 0.0
        for i in 0..<V {
            let lp = Double(logits[i]) - logZ
            h -= Glibc.exp(lp) * lp
        }
        return (h, token.map { logZ - Double(logits[$0]) })
    }

    /// Advance by one token with its loss and uncertainty; returns the controller input.
    public mutating func update(loss: Double, uncertainty: Double, reward: Double = 0) -> [Float] {
        let e = ema.map { decay * $0 + (1 - decay) * loss } ?? loss
        ema = e
        let phase = Glibc.sin(2 * Double.pi * Double(step) / period)
        step += 1
        return [Float(loss - e), Float(uncertainty), Float(reward), Float(phase)]
    }
}

/// Consolidation's inference side (seed 002): surprise hysteresis opens a segment when
/// `loss − ema > open·ema` and closes it when `loss − ema < close·ema` (1.2 and 1.05 in
/// the seed), recording the segment's mean and mean square of h and the change of the
/// fast weights (U, V at close minus at open).
public struct Segmenter: Sendable {
    public struct Segment: Sendable, Equatable {
        public var start: Int, end: Int
        public var hMean: [Float], hMeanSquare: [Float]
        public var deltaU: [Float], deltaV: [Float]
    }

    public var open: Double = 1.2, close: Double = 1.05
    public private(set) var segments: [Segment] = []
    var current: (start: Int, count: Int, sum: [Double], sumSq: [Double], u: [Float], v: [Float])?
    var t = 0

    public init() {}

    public var isOpen: Bool { current != nil }

    /// One token: its loss and the EMA after it, the host hidden state h and the fast
    /// weights after the token (flattened).
    public mutating func observe(loss: Double, ema: Double, h: [Float], u: [Float], v: [Float]) {
        let s = loss - ema
        if current == nil, s > open * ema {
            current = (t, 0, [Double](repeating: 0, count: h.count), [Double](repeating: 0, count: h.count), u, v)
        }
        if var c = current {
            for i in 0..<h.count { c.sum[i] += Double(h[i]); c.sumSq[i] += Double(h[i]) * Double(h[i]) }
            c.count += 1
            current = c
            if s < close * ema {
                let n = Double(c.count)
                segments.append(Segment(start: c.start, end: t, hMean: c.sum.map { Float($0 / n) },
                                        hMeanSquare: c.sumSq.map { Float($0 / n) },
                                        deltaU: zip(u, c.u).map { $0 - $1 }, deltaV: zip(v, c.v).map { $0 - $1 }))
                current = nil
            }
        }
        t += 1
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The fast-weight controller's inputs from the host's predictions ("inference
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

/// Consolidation's inference side: surprise hysteresis opens a segment when
/// `loss − ema > open·ema` and closes it when `loss − ema < close·ema` (1.2 and 1.05 in
/// the seed), recording the segment's mean and mean square of h and the change of the
/// fast weights (U, V at close minus at open). The last `capacity` closed segments are
/// kept (the seed's code queue), so a session's memory stays bounded.
public struct Segmenter: Sendable, Equatable {
    public struct Segment: Sendable, Equatable {
        public var start: Int, end: Int
        public var hMean: [Float], hMeanSquare: [Float]
        public var deltaU: [Float], deltaV: [Float]
        /// Per-channel variance of h over the segment (mean square − mean²).
        public var hVariance: [Float] { zip(hMeanSquare, hMean).map { max(0, $0 - $1 * $1) } }
    }

    /// A segment being recorded: where it opened, its sums, and U, V at the open.
    public struct Open: Sendable, Equatable {
        public var start: Int, count: Int
        public var sum: [Double], sumSquare: [Double]
        public var u: [Float], v: [Float]
    }

    public var open: Double = 1.2, close: Double = 1.05
    public var capacity = 64
    public internal(set) var segments: [Segment] = []
    /// Closed segments dropped from the front because of `capacity`.
    public internal(set) var dropped = 0
    public internal(set) var current: Open?
    /// Tokens observed.
    public internal(set) var t = 0

    public init(open: Double = 1.2, close: Double = 1.05) {
        self.open = open
        self.close = close
    }

    public var isOpen: Bool { current != nil }

    /// One token: its loss and the EMA after it, the host hidden state `h`, and the fast
    /// weights after the token (`snapshot`, read only when a segment opens or closes).
    public mutating func observe(loss: Double, ema: Double, h: UnsafeBufferPointer<Float>,
                                 snapshot: () -> (u: [Float], v: [Float])) {
        let s = loss - ema
        if current == nil, s > open * ema {
            let w = snapshot()
            current = Open(start: t, count: 0, sum: [Double](repeating: 0, count: h.count),
                           sumSquare: [Double](repeating: 0, count: h.count), u: w.u, v: w.v)
        }
        if var c = current {
            current = nil  // keep the arrays uniquely referenced while they are updated
            for i in 0..<min(h.count, c.sum.count) {
                let x = Double(h[i])
                c.sum[i] += x
                c.sumSquare[i] += x * x
            }
            c.count += 1
            if s < close * ema {
                let n = Double(c.count), w = snapshot()
                segments.append(Segment(start: c.start, end: t, hMean: c.sum.map { Float($0 / n) },
                                        hMeanSquare: c.sumSquare.map { Float($0 / n) },
                                        deltaU: zip(w.u, c.u).map { $0 - $1 }, deltaV: zip(w.v, c.v).map { $0 - $1 }))
                if segments.count > capacity {
                    segments.removeFirst(segments.count - capacity)
                    dropped += 1
                }
            } else {
                current = c
            }
        }
        t += 1
    }

    /// Convenience for arrays (tests).
    public mutating func observe(loss: Double, ema: Double, h: [Float], u: [Float], v: [Float]) {
        h.withUnsafeBufferPointer { observe(loss: loss, ema: ema, h: $0, snapshot: { (u, v) }) }
    }
}

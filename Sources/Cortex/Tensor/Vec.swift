/// Small fused vector loops shared by the models (SIMD8 over contiguous floats).
public enum Vec {
    typealias V = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }

    /// The first `n` floats at p (n < 8: zero-padded).
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, count n: Int) -> V {
        if n >= 8 { return load(p) }
        var v = V()
        for i in 0..<n { v[i] = p[i] }
        return v
    }

    /// Store the first `n` lanes of v at p.
    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>, count n: Int) {
        if n >= 8 { store(v, p); return }
        for i in 0..<n { p[i] = v[i] }
    }

    /// a += b
    public static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store(load(a + i) + load(b + i), a + i); i += 8 }
        while i < n { a[i] += b[i]; i += 1 }
    }

    /// Add `bias` [n] to each of `rows` contiguous rows of length n (a Linear's bias).
    public static func addRows(_ p: UnsafeMutablePointer<Float>, rows: Int, _ bias: UnsafePointer<Float>, _ n: Int) {
        for r in 0..<rows { add(p + r * n, bias, n) }
    }

    /// y += a · b (elementwise)
    public static func multiplyAdd(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store(load(y + i) + load(a + i) * load(b + i), y + i); i += 8 }
        while i < n { y[i] += a[i] * b[i]; i += 1 }
    }

    /// y += a · x (scalar a)
    public static func axpy(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let av = V(repeating: a)
        while i + 8 <= n { store(load(y + i) + av * load(x + i), y + i); i += 8 }
        while i < n { y[i] += a * x[i]; i += 1 }
    }

    /// a ← a · b (elementwise)
    public static func multiply(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store(load(a + i) * load(b + i), a + i); i += 8 }
        while i < n { a[i] *= b[i]; i += 1 }
    }

    /// y ← (a + b)·s + c·t + d: one pass (the spike stream's LayerNorm-through-W rows).
    public static func affine(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                              _ s: Float, _ c: UnsafePointer<Float>, _ t: Float, _ d: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let sv = V(repeating: s), tv = V(repeating: t)
        while i + 8 <= n {
            store((load(a + i) + load(b + i)) * sv + load(c + i) * tv + load(d + i), y + i)
            i += 8
        }
        while i < n { y[i] = (a[i] + b[i]) * s + c[i] * t + d[i]; i += 1 }
    }

    /// Σ a·b
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var i = 0, acc = V()
        while i + 8 <= n { acc += load(a + i) * load(b + i); i += 8 }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Σ a
    public static func sum(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
        var i = 0, acc = V()
        while i + 8 <= n { acc += load(a + i); i += 8 }
        var s = acc.sum()
        while i < n { s += a[i]; i += 1 }
        return s
    }

    /// p ← a · p
    public static func scale(_ p: UnsafeMutablePointer<Float>, _ a: Float, _ n: Int) {
        var i = 0
        let av = V(repeating: a)
        while i + 8 <= n { store(load(p + i) * av, p + i); i += 8 }
        while i < n { p[i] *= a; i += 1 }
    }

    /// p ← p − β·clamp(p, −1, 1), then subnormal results flushed to zero: decaying fast
    /// weights underflow into subnormals after a few thousand unwritten tokens, and
    /// subnormal arithmetic is ~100× slower (a value below 1.2e−38 changes no output).
    public static func antiHebbian(_ p: UnsafeMutablePointer<Float>, _ beta: Float, _ n: Int) {
        var i = 0
        let bv = V(repeating: beta), lo = V(repeating: -1), hi = V(repeating: 1)
        let tiny = V(repeating: Float.leastNormalMagnitude), zero = V()
        while i + 8 <= n {
            var x = load(p + i)
            x -= bv * x.clamped(lowerBound: lo, upperBound: hi)
            x.replace(with: zero, where: (x .< tiny) .& (x .> -tiny))
            store(x, p + i)
            i += 8
        }
        while i < n {
            var x = p[i]
            x -= beta * min(max(x, -1), 1)
            p[i] = abs(x) < Float.leastNormalMagnitude ? 0 : x
            i += 1
        }
    }

    /// The LSTM cell update on activated gates: c ← f·c + i·g, h ← o·tanh(c).
    public static func lstmCell(
        i: UnsafePointer<Float>, f: UnsafePointer<Float>, g: UnsafePointer<Float>, o: UnsafePointer<Float>,
        c: UnsafeMutablePointer<Float>, h: UnsafeMutablePointer<Float>, count n: Int
    ) {
        var k = 0
        while k + 8 <= n {
            let cn = load(f + k) * load(c + k) + load(i + k) * load(g + k)
            store(cn, c + k)
            store(load(o + k) * Kernels.tanh(cn), h + k)
            k += 8
        }
        while k < n {
            let cn = f[k] * c[k] + i[k] * g[k]
            c[k] = cn
            var v = Kernels.V()
            v[0] = cn
            h[k] = o[k] * Kernels.tanh(v)[0]
            k += 1
        }
    }
}

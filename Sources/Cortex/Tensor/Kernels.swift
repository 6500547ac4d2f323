import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Elementwise and normalisation kernels on contiguous float arrays, vectorised with
/// `SIMD8<Float>` and a shared polynomial `exp` (Cephes expf, ~1 ulp on the clamped
/// range), so the activations of every model use one accurate, fast code path.
public enum Kernels {
    public typealias V = SIMD8<Float>

    // MARK: vector math

    /// e^x, elementwise. Inputs are clamped to [-87.3, 88.3] (results below ~1e-38
    /// flush to that bound); NaN propagates.
    @inline(__always)
    public static func exp(_ x: V) -> V {
        // Range reduction x = n·ln2 + r, |r| ≤ ln2/2. Adding 1.5·2^23 rounds x·log2(e)
        // to the nearest integer in the float's low mantissa bits: no per-lane
        // conversions, everything stays in vector registers.
        let magic: Float = 12_582_912  // 1.5 · 2^23
        // Clamp with compare+select (pointwiseMin/Max are not specialised and cost a call).
        let hi = V(repeating: 88.3), lo = V(repeating: -87.3)
        let v = x.replacing(with: hi, where: x .> hi).replacing(with: lo, where: x .< lo)
        let t = v * 1.442_695_04 + magic
        let n = t - magic
        var r = v - n * 0.693_359_375
        r = r - n * -2.121_944_4e-4
        let z = r * r
        var y = V(repeating: 1.987_569_15e-4)
        y = y * r + 1.398_199_950_7e-3
        y = y * r + 8.333_451_907_3e-3
        y = y * r + 4.166_579_589_4e-2
        y = y * r + 1.666_666_545_9e-1
        y = y * r + 5.000_000_120_1e-1
        y = y * z + r + 1
        // 2^n through the exponent bits: bits(t) = bits(magic) + n.
        let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return (y * unsafeBitCast(bits, to: V.self)).replacing(with: x, where: x .!= x)
    }

    @inline(__always)
    public static func sigmoid(_ x: V) -> V { 1 / (1 + exp(-x)) }

    /// log σ(x), stable for large |x| (mLSTM's forget gate, the delta rule's decay).
    @inline(__always) public static func logSigmoid(_ x: Float) -> Float { min(x, 0) - log1pf(expf(-abs(x))) }

    /// tanh: the Cephes odd polynomial near 0 (keeps relative accuracy), and
    /// 1 − 2/(e^{2|x|}+1) elsewhere.
    @inline(__always)
    public static func tanh(_ x: V) -> V {
        let a = x.replacing(with: -x, where: x .< 0)
        let large = 1 - 2 / (exp(2 * a) + 1)
        let z = x * x
        var p = V(repeating: -5.704_988_727_45e-3)
        p = p * z + 2.063_908_879_54e-2
        p = p * z - 5.373_971_555_31e-2
        p = p * z + 1.333_144_220_36e-1
        p = p * z - 3.333_328_194_22e-1
        let small = p * z * x + x
        let signed = large.replacing(with: -large, where: x .< 0)
        return signed.replacing(with: small, where: a .< 0.625).replacing(with: x, where: x .!= x)
    }

    // MARK: array kernels

    /// Apply `f` to `n` floats in place, 8 at a time; the tail is padded.
    @inline(__always)
    public static func map(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ f: (V) -> V) {
        var i = 0
        while i + 8 <= n {
            let r = UnsafeMutableRawPointer(p + i)
            r.storeBytes(of: f(r.loadUnaligned(as: V.self)), as: V.self)
            i += 8
        }
        if i < n {
            var v = V()
            for j in 0..<(n - i) { v[j] = p[i + j] }
            let r = f(v)
            for j in 0..<(n - i) { p[i + j] = r[j] }
        }
    }

    public static func sigmoid(_ p: UnsafeMutablePointer<Float>, _ n: Int) { map(p, n, sigmoid) }
    public static func tanh(_ p: UnsafeMutablePointer<Float>, _ n: Int) { map(p, n, tanh) }
    public static func silu(_ p: UnsafeMutablePointer<Float>, _ n: Int) { map(p, n) { $0 * sigmoid($0) } }

    /// GELU with the exact erf form (PyTorch's default `approximate='none'`):
    /// `x·Φ(x) = ½x·erfc(−x/√2)`, 8 lanes at a time. erfc(|z|) = t·exp(−z² + P(t)),
    /// t = 1/(1 + |z|/2), with Numerical Recipes' Chebyshev fit P (fractional error
    /// < 1.2e-7); for x < 0 the product uses erfc directly, so the tail keeps its
    /// relative accuracy (no 1 − erf cancellation).
    public static func gelu(_ p: UnsafeMutablePointer<Float>, _ n: Int) { map(p, n, gelu) }

    @inline(__always)
    public static func gelu(_ x: V) -> V {
        let z = x.replacing(with: -x, where: x .< 0) * 0.707_106_781_186_547_5
        let t = 1 / (1 + 0.5 * z)
        var q = V(repeating: 0.170_872_77)
        q = q * t - 0.822_152_23
        q = q * t + 1.488_515_87
        q = q * t - 1.135_203_98
        q = q * t + 0.278_868_07
        q = q * t - 0.186_288_06
        q = q * t + 0.096_784_18
        q = q * t + 0.374_091_96
        q = q * t + 1.000_023_68
        q = q * t - 1.265_512_23
        let erfc = t * Kernels.exp(q - z * z)                                  // erfc(|x|/√2)
        let phi2 = erfc.replacing(with: V(repeating: 2) - erfc, where: x .>= 0)  // 2Φ(x) = erfc(−x/√2)
        return 0.5 * x * phi2
    }

    /// Softmax over each of `rows` contiguous rows of length `n`.
    public static func softmax(_ p: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        softmax(p, rows: rows, n: n, scale: 1)
    }

    /// Softmax of `scale · x` (scale > 0) per row, in place: `exp(scale·(x − max x))`
    /// normalised — one pass fewer than scaling first (C, 16 lanes where the CPU has them).
    public static func softmax(_ p: UnsafeMutablePointer<Float>, rows: Int, n: Int, scale: Float) {
        guard n > 0, rows > 0 else { return }
        cxk_softmax_rows(p, Int32(rows), Int32(n), Int32(n), scale)
    }

    /// LayerNorm over the last dimension (biased variance, like torch), in place.
    public static func layerNorm(
        _ p: UnsafeMutablePointer<Float>, rows: Int, n: Int,
        weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, eps: Float
    ) {
        guard n > 0 else { return }
        for r in 0..<rows {
            let row = p + r * n
            var mean: Float = 0
            for i in 0..<n { mean += row[i] }
            mean /= Float(n)
            var v: Float = 0
            for i in 0..<n { let d = row[i] - mean; v += d * d }
            let inv = 1 / (v / Float(n) + eps).squareRoot()
            for i in 0..<n {
                var y = (row[i] - mean) * inv
                if let weight { y *= weight[i] }
                if let bias { y += bias[i] }
                row[i] = y
            }
        }
    }

    /// Per-head LayerNorm (`MultiHeadLayerNorm`: group norm with `heads` groups of the
    /// last dimension, weight only), in place on `rows` rows of `heads·headDim`.
    public static func headNorm(
        _ p: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int, weight: UnsafePointer<Float>, eps: Float
    ) {
        for r in 0..<rows {
            for n in 0..<heads {
                layerNorm(p + (r * heads + n) * headDim, rows: 1, n: headDim, weight: weight + n * headDim, bias: nil, eps: eps)
            }
        }
    }

    /// RMSNorm over the last dimension: x / sqrt(mean(x²) + eps) · weight, in place.
    public static func rmsNorm(
        _ p: UnsafeMutablePointer<Float>, rows: Int, n: Int,
        weight: UnsafePointer<Float>?, eps: Float
    ) {
        guard n > 0, rows > 0 else { return }
        cxk_rmsnorm(p, Int32(rows), Int32(n), weight, eps)
    }
}

/// Mirrors cortexcore's `GRUGatingUnit` (GTrXL-style), mixing a residual `x` with a
/// sublayer output `y`:
///
///     r = σ(W_r y + U_r x),  z = σ(W_z y + U_z x − b_g),  h = tanh(W_g y + U_g (r ⊙ x))
///     out = (1 − z) ⊙ x + z ⊙ h
///
/// A class: scaffolds bind it per call, and copying a struct of six Linears retained
/// every tensor (4 % of the default stack's step).
final class GRUGate: Sendable {
    let wr: Linear, ur: Linear, wz: Linear, uz: Linear, wg: Linear, ug: Linear
    let bg: Tensor  // [H]
    let hidden: Int

    init(_ weights: WeightSource, _ prefix: String, hidden H: Int) throws {
        func lin(_ n: String) throws -> Linear { try Linear(weights, prefix + n, in: H, out: H, bias: false) }
        wr = try lin("Wr"); ur = try lin("Ur"); wz = try lin("Wz"); uz = try lin("Uz"); wg = try lin("Wg"); ug = try lin("Ug")
        bg = try weights.tensor(prefix + "bg", shape: [H])
        hidden = H
    }

    var parameterCount: Int { 6 * hidden * hidden + hidden }

    /// `out = gate(x, y)` for `rows` rows (out may alias neither input).
    func apply(x: UnsafePointer<Float>, y: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>,
               arena: Arena, routing: Routing?) throws {
        let H = hidden, n = rows * H
        let r = try arena.take(n), z = try arena.take(n), h = try arena.take(n)
        wr.apply(y, rows: rows, into: r, routing: routing)
        ur.apply(x, rows: rows, into: r, accumulate: true, routing: routing)
        Kernels.sigmoid(r, n)
        wz.apply(y, rows: rows, into: z, routing: routing)
        uz.apply(x, rows: rows, into: z, accumulate: true, routing: routing)
        let b = bg.data  // hoisted: a property access per element would retain the buffer
        for i in 0..<rows { for j in 0..<H { z[i * H + j] -= b[j] } }
        Kernels.sigmoid(z, n)
        for i in 0..<n { r[i] *= x[i] }  // r ⊙ x
        wg.apply(y, rows: rows, into: h, routing: routing)
        ug.apply(r, rows: rows, into: h, accumulate: true, routing: routing)
        Kernels.tanh(h, n)
        for i in 0..<n { out[i] = (1 - z[i]) * x[i] + z[i] * h[i] }
    }
}

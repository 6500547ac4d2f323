#if canImport(Glibc)
import Glibc
#endif

/// Mirrors cortexcore 0.1.6 `cortex.cells.core.axon_cell.AxonCell` (seed: `AxonCore`) with
/// its kernels `kernels/pytorch/rtu/rtu_stream_diag.py` and `rtu_stream_fullrank.py`: a
/// streaming RTU, a diagonal complex-valued linear recurrence per channel.
///
/// Input mixing (at most one, as the reference decides it): an untraced linear map
/// `input_proj` (the default), the SRHT (`srht_perm`, `srht_signs`, Walsh–Hadamard,
/// `1/√H`), or none. Then per channel, with `r = e^{−e^{ν}}`, `θ = e^{θ_log}`,
/// `g = r cos θ`, `φ = r sin θ`, `γ = √(1 − r²)`:
///
///     c1 = g·h1 − φ·h2 + γ·u1,   c2 = g·h2 + φ·h1 + γ·u2,   h ← (c1, c2)
///
/// with `u = x·w` (diagonal `w1, w2 [H]`) or `u = x·Wc` (full rank, `Wc1, Wc2 [H, H]`).
/// The output is `out_proj([act(c1), act(c2)])`.
///
/// State: `hc1, hc2 [B, H]` and the eight eligibility traces the reference carries for
/// streaming training (`E_nu_*, E_th_* [B, H]`; `E_w*_* [B, H]`, or `[B, H, H]` in full
/// rank). They never change the output, but they are computed exactly as the reference
/// does (including its use of the pre-reset state in the ν/θ traces after a reset), so a
/// state exported to PyTorch continues training where Cortex left it.
///
/// SRHT: cortexcore's CPU butterfly writes through aliased views and computes
/// `[a+b, a]` instead of `[a+b, a−b]`. Cortex computes the true
/// transform (what the CUDA kernel, and so GPU-trained models, use); the config field
/// `"cortex_srht": "cpu_reference"` reproduces the CPU reference instead.
public struct AxonCore: RecurrentModule {
    public enum Activation: String, Sendable {
        case identity, silu, relu, tanh

        /// The reference's names (`_resolve_activation`), case-insensitive.
        static func named(_ name: String) -> Activation? {
            switch name.lowercased() {
            case "silu", "swish": return .silu
            case "relu": return .relu
            case "tanh": return .tanh
            case "linear", "identity": return .identity
            default: return nil
            }
        }
    }

    /// The input map applied before the recurrence.
    public enum InputMix: Sendable, Equatable { case none, linear, srht }

    /// How the SRHT's Walsh–Hadamard butterfly is computed.
    public enum Hadamard: String, Sendable {
        case exact = "hadamard"
        case cpuReference = "cpu_reference"
    }

    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var outDim: Int? = nil
        public var activation: Activation = .identity
        public var useSRHT = false
        public var srhtPermute = true
        public var useFullRank = false
        public var useUntracedLinear = true
        public var hadamard: Hadamard = .exact

        public init(hiddenSize: Int) { self.hiddenSize = hiddenSize }

        /// Full rank disables both mixers; the untraced linear map wins over the SRHT.
        public var inputMix: InputMix {
            if useFullRank { return .none }
            if useUntracedLinear { return .linear }
            return useSRHT ? .srht : .none
        }

        public var outputSize: Int { outDim ?? hiddenSize }

        /// Parse an `AxonConfig` object (`owner` names it in messages).
        static func parse(_ json: JSON, hiddenSize: Int, owner: String) throws -> Config {
            guard json.objectPairs != nil else { throw CortexError.parse("\(owner): not a JSON object") }
            var c = Config(hiddenSize: hiddenSize)
            do {
                if let a = json["activation"], !a.isNull {
                    guard let name = a.string else { throw CortexError.parse("activation must be a string") }
                    guard let act = Activation.named(name) else {
                        throw CortexError.unsupported("activation '\(name)' is not supported (silu, swish, relu, tanh, linear, identity)")
                    }
                    c.activation = act
                }
                if let o = json["out_dim"], !o.isNull {
                    guard let v = o.int, v >= 1, v <= StackConfig.maxHidden else {
                        throw CortexError.unsupported("out_dim must be an integer in [1, \(StackConfig.maxHidden)]")
                    }
                    c.outDim = v
                }
                c.useSRHT = try json.boolField("use_srht", default: false, core: "axon")
                c.srhtPermute = try json.boolField("srht_permute", default: true, core: "axon")
                c.useFullRank = try json.boolField("use_fullrank_rtu", default: false, core: "axon")
                c.useUntracedLinear = try json.boolField("use_untraced_linear", default: true, core: "axon")
                if let h = json["cortex_srht"], !h.isNull {
                    guard let s = h.string, let mode = Hadamard(rawValue: s) else {
                        throw CortexError.parse("cortex_srht must be \"hadamard\" or \"cpu_reference\"")
                    }
                    c.hadamard = mode
                }
            } catch let e as CortexError {
                throw e.prefixed(owner)
            }
            return c
        }

        /// `AxonLayer`'s own choice when the parent gives no `AxonConfig`: identity
        /// activation, SRHT for power-of-two inputs, else the untraced linear map.
        static func layerDefault(inFeatures: Int, outFeatures: Int) -> Config {
            var c = Config(hiddenSize: inFeatures)
            c.outDim = outFeatures
            let pow2 = inFeatures > 0 && inFeatures & (inFeatures - 1) == 0
            c.useSRHT = pow2
            c.useUntracedLinear = !pow2
            c.srhtPermute = true
            return c
        }
    }

    let hidden: Int, out: Int
    let activation: Activation
    let mix: InputMix
    let hadamard: Hadamard
    let fullRank: Bool
    /// Per channel, rows of `[H]`: g, φ, γ, ∂g/∂ν, ∂φ/∂ν, ∂γ/∂ν, ∂g/∂θ, ∂φ/∂θ.
    let dynamics: Tensor
    let w1: Tensor?, w2: Tensor?      // diagonal input weights [H]
    let wc1: Tensor?, wc2: Tensor?    // full-rank input maps [H_in, H] (x·Wc)
    let inputProj: Linear?            // [H, H], no bias
    let srhtSigns: Tensor?
    let srhtPerm: [Int]?
    let outProj: Linear               // [out, 2H] + bias

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        let H = config.hiddenSize
        guard H >= 1 else { throw CortexError.unsupported("axon: hidden_size must be >= 1") }
        hidden = H
        out = config.outputSize
        activation = config.activation
        mix = config.inputMix
        hadamard = weights.hadamardOverride ?? config.hadamard
        fullRank = config.useFullRank
        if mix == .srht, H & (H - 1) != 0 {
            throw CortexError.unsupported("axon: use_srht needs a power-of-two hidden_size (got \(H)); the reference's transform asserts it")
        }

        let nuLog = try weights.tensor(prefix + "nu_log", shape: [H])
        let thetaLog = try weights.tensor(prefix + "theta_log", shape: [H])
        let d = try Tensor(zeros: [8, H])
        for j in 0..<H {
            // Float32 throughout, in the reference's order of operations.
            let expNu = expf(nuLog.data[j]), expTh = expf(thetaLog.data[j])
            let r = expf(-expNu), theta = expTh
            let g = r * cosf(theta), phi = r * sinf(theta)
            let s = sqrtf(max(1 - r * r, 0))
            d.data[j] = g
            d.data[H + j] = phi
            d.data[2 * H + j] = s
            d.data[3 * H + j] = -expNu * g
            d.data[4 * H + j] = -expNu * phi
            // The full-rank kernel clamps the denominator; the diagonal one does not.
            d.data[5 * H + j] = expNu * r * r / (config.useFullRank ? max(s, 1e-12) : s)
            d.data[6 * H + j] = -phi * expTh
            d.data[7 * H + j] = g * expTh
        }
        dynamics = d

        if fullRank {
            wc1 = try weights.tensor(prefix + "Wc1", shape: [H, H])
            wc2 = try weights.tensor(prefix + "Wc2", shape: [H, H])
            w1 = nil; w2 = nil
        } else {
            w1 = try weights.tensor(prefix + "w1", shape: [H])
            w2 = try weights.tensor(prefix + "w2", shape: [H])
            wc1 = nil; wc2 = nil
        }
        inputProj = mix == .linear ? try Linear(weights, prefix + "input_proj", in: H, out: H, bias: false) : nil
        if mix == .srht {
            srhtSigns = try weights.tensor(prefix + "srht_signs", shape: [H])
            let perm = try weights.integers(prefix + "srht_perm", shape: [H])
            if let bad = perm.first(where: { $0 < 0 || $0 >= H }) {
                throw CortexError.invalidArgument("axon: srht_perm holds index \(bad), outside [0, \(H))")
            }
            srhtPerm = perm
        } else {
            try weights.emptyBuffer(prefix + "srht_signs")
            try weights.emptyBuffer(prefix + "srht_perm")
            srhtSigns = nil; srhtPerm = nil
        }
        outProj = try Linear(weights, prefix + "out_proj", in: 2 * H, out: out)
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { out }

    /// State tensors per Axon: hc1, hc2 and eight traces.
    public static let slotCount = 10

    public var stateSpecs: [StateSpec] {
        let row = [StateSpec(name: "hc1", perRow: [hidden]), StateSpec(name: "hc2", perRow: [hidden])]
        let dyn = ["E_nu_c1", "E_nu_c2", "E_th_c1", "E_th_c2"].map { StateSpec(name: $0, perRow: [hidden]) }
        let inputShape = fullRank ? [hidden, hidden] : [hidden]
        let inp = ["E_w1_c1", "E_w1_c2", "E_w2_c1", "E_w2_c2"].map { StateSpec(name: $0, perRow: inputShape) }
        return row + dyn + inp
    }

    public var parameterCount: Int {
        2 * hidden + [w1, w2, wc1, wc2].reduce(0) { $0 + ($1?.count ?? 0) } + (inputProj?.parameterCount ?? 0)
            + outProj.parameterCount
    }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let B = batch, T = time, H = hidden, N = B * T
        guard B > 0, T > 0 else { return }
        // 1. Input mixing, for every step at once.
        var xhat = x
        switch mix {
        case .linear:
            guard let inputProj else { break }
            let m = try arena.take(N * H)
            inputProj.apply(x, rows: N, into: m, routing: arena.routing(rowsPerStream: T))
            xhat = UnsafePointer(m)
        case .srht:
            let m = try arena.take(N * H)
            srht(x, into: m, rows: N)
            xhat = UnsafePointer(m)
        case .none:
            break
        }
        // 2. Input injections u1, u2 [N, H].
        let u1 = try arena.take(N * H), u2 = try arena.take(N * H)
        if let wc1, let wc2 {
            BLAS.gemm(m: N, n: H, k: H, a: xhat, lda: H, b: wc1.data, ldb: H, c: u1, ldc: H)
            BLAS.gemm(m: N, n: H, k: H, a: xhat, lda: H, b: wc2.data, ldb: H, c: u2, ldc: H)
        } else if let w1, let w2 {
            for r in 0..<N {
                for j in 0..<H {
                    u1[r * H + j] = xhat[r * H + j] * w1.data[j]
                    u2[r * H + j] = xhat[r * H + j] * w2.data[j]
                }
            }
        }
        // 3. The recurrence, writing pre-activations [c1, c2] per step into z [N, 2H].
        // Channels are independent: split them over the threads when there is enough work.
        let z = try arena.take(N * 2 * H)
        let work = N * H * (fullRank ? H : 1)
        Parallel.run(parts: Parallel.parts(work: work, grain: 16_384, items: (H + 7) / 8)) { part, parts in
            let channels = Parallel.slice(H, part: part, parts: parts)
            recurrence(channels: channels, batch: B, time: T, xhat: xhat, u1: u1, u2: u2, z: z, state: state, resets: resets)
        }
        // 4. Activation, then 5. out_proj: [N, 2H] -> [N, out].
        switch activation {
        case .identity: break
        case .silu: Kernels.silu(z, N * 2 * H)
        case .tanh: Kernels.tanh(z, N * 2 * H)
        case .relu: Kernels.map(z, N * 2 * H) { $0.replacing(with: 0, where: $0 .< 0) }
        }
        // The reference flattens [B·T, 2H] here: routed adapters apply only at T = 1.
        outProj.apply(z, rows: N, into: y, routing: arena.routingFlattened(time: T))
    }

    /// The recurrence and its traces for one range of channels, all rows and steps.
    private func recurrence(
        channels: Range<Int>, batch B: Int, time T: Int,
        xhat: UnsafePointer<Float>, u1: UnsafePointer<Float>, u2: UnsafePointer<Float>,
        z: UnsafeMutablePointer<Float>, state: StateSlots, resets: UnsafePointer<UInt8>?
    ) {
        let H = hidden
        let s = state.startIndex
        let dyn = dynamics.data
        let inputTrace = fullRank ? H * H : H
        typealias V = Vec.V
        for b in 0..<B {
            let h1 = state[s] + b * H, h2 = state[s + 1] + b * H
            let n1 = state[s + 2] + b * H, n2 = state[s + 3] + b * H
            let t1 = state[s + 4] + b * H, t2 = state[s + 5] + b * H
            let w11 = state[s + 6] + b * inputTrace, w12 = state[s + 7] + b * inputTrace
            let w21 = state[s + 8] + b * inputTrace, w22 = state[s + 9] + b * inputTrace
            for t in 0..<T {
                let row = b * T + t
                let reset = resets.map { $0[row] != 0 } ?? false
                // Rows zeroed by a reset act as zeros below (keep = 0); the ν/θ traces still
                // read the state before the reset, as the reference does.
                let keep = V(repeating: reset ? 0 : 1)
                let U1 = u1 + row * H, U2 = u2 + row * H, xt = xhat + row * H, zr = z + row * 2 * H
                var j = channels.lowerBound
                while j < channels.upperBound {
                    let n = min(8, channels.upperBound - j)
                    let g = Vec.load(dyn + j, count: n), f = Vec.load(dyn + H + j, count: n), y = Vec.load(dyn + 2 * H + j, count: n)
                    let p1 = Vec.load(h1 + j, count: n), p2 = Vec.load(h2 + j, count: n), a1 = p1 * keep, a2 = p2 * keep
                    let x1 = Vec.load(U1 + j, count: n), x2 = Vec.load(U2 + j, count: n)
                    let c1 = g * a1 - f * a2 + y * x1
                    let c2 = g * a2 + f * a1 + y * x2
                    Vec.store(c1, h1 + j, count: n)
                    Vec.store(c2, h2 + j, count: n)
                    Vec.store(c1, zr + j, count: n)
                    Vec.store(c2, zr + H + j, count: n)
                    let en1 = Vec.load(n1 + j, count: n) * keep, en2 = Vec.load(n2 + j, count: n) * keep
                    let et1 = Vec.load(t1 + j, count: n) * keep, et2 = Vec.load(t2 + j, count: n) * keep
                    let dgNu = Vec.load(dyn + 3 * H + j, count: n), dpNu = Vec.load(dyn + 4 * H + j, count: n), dgamNu = Vec.load(dyn + 5 * H + j, count: n)
                    let dgTh = Vec.load(dyn + 6 * H + j, count: n), dpTh = Vec.load(dyn + 7 * H + j, count: n)
                    Vec.store(dgNu * p1 + g * en1 - dpNu * p2 - f * en2 + dgamNu * x1, n1 + j, count: n)
                    Vec.store(dgNu * p2 + g * en2 + dpNu * p1 + f * en1 + dgamNu * x2, n2 + j, count: n)
                    Vec.store(dgTh * p1 + g * et1 - dpTh * p2 - f * et2, t1 + j, count: n)
                    Vec.store(dgTh * p2 + g * et2 + dpTh * p1 + f * et1, t2 + j, count: n)
                    if !fullRank {
                        let e11 = Vec.load(w11 + j, count: n) * keep, e12 = Vec.load(w12 + j, count: n) * keep
                        let e21 = Vec.load(w21 + j, count: n) * keep, e22 = Vec.load(w22 + j, count: n) * keep
                        let xj = Vec.load(xt + j, count: n)
                        Vec.store(g * e11 - f * e12 + y * xj, w11 + j, count: n)
                        Vec.store(g * e12 + f * e11, w12 + j, count: n)
                        Vec.store(g * e22 + f * e21 + y * xj, w22 + j, count: n)
                        Vec.store(g * e21 - f * e22, w21 + j, count: n)
                    }
                    j += n
                }
                if fullRank {
                    fullRankTraces(x: xt, channels: channels, reset: reset, w11: w11, w12: w12, w21: w21, w22: w22)
                }
            }
        }
    }

    /// Full-rank input-map traces `E_W [H_in, H]` of one row for one step, columns in
    /// `channels`: `E11 ← E11·g − E12·φ + x_d·γ`, `E12 ← E12·g + E11·φ`, mirrored for W2.
    private func fullRankTraces(
        x: UnsafePointer<Float>, channels: Range<Int>, reset: Bool,
        w11: UnsafeMutablePointer<Float>, w12: UnsafeMutablePointer<Float>,
        w21: UnsafeMutablePointer<Float>, w22: UnsafeMutablePointer<Float>
    ) {
        let H = hidden, dyn = dynamics.data
        let keep = Vec.V(repeating: reset ? 0 : 1)
        for d in 0..<H {
            let xd = Vec.V(repeating: x[d])
            var j = channels.lowerBound
            while j < channels.upperBound {
                let n = min(8, channels.upperBound - j), o = d * H + j
                let g = Vec.load(dyn + j, count: n), f = Vec.load(dyn + H + j, count: n), y = Vec.load(dyn + 2 * H + j, count: n)
                let e11 = Vec.load(w11 + o, count: n) * keep, e12 = Vec.load(w12 + o, count: n) * keep
                let e21 = Vec.load(w21 + o, count: n) * keep, e22 = Vec.load(w22 + o, count: n) * keep
                Vec.store(e11 * g - e12 * f + xd * y, w11 + o, count: n)
                Vec.store(e12 * g + e11 * f, w12 + o, count: n)
                Vec.store(e22 * g + e21 * f + xd * y, w22 + o, count: n)
                Vec.store(e21 * g - e22 * f, w21 + o, count: n)
                j += n
            }
        }
    }

    /// `srht_pytorch`: permute, flip signs, Walsh–Hadamard butterfly, scale by 1/√H.
    private func srht(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int) {
        guard let perm = srhtPerm, let signs = srhtSigns?.data else { return }
        let H = hidden
        let scale = Float(1 / Double(H).squareRoot())
        let cpu = hadamard == .cpuReference
        for r in 0..<rows {
            let s = src + r * H, d = dst + r * H
            for j in 0..<H { d[j] = s[perm[j]] * signs[j] }
            var h = 1
            while h < H {
                var i = 0
                while i < H {
                    for k in i..<(i + h) {
                        let a = d[k], b = d[k + h]
                        let sum = a + b
                        d[k] = sum
                        // The CPU reference reads `a` back after overwriting it: (a+b)−b.
                        d[k + h] = cpu ? sum - b : a - b
                    }
                    i += 2 * h
                }
                h *= 2
            }
            for j in 0..<H { d[j] *= scale }
        }
    }
}

/// The stack config's "axon" cell (see `CoreKind`).
extension AxonCore: CoreKind {
    static let tag = "axon"
    static let classNames = (blocks: "AxonCell", scaffolds: "AxonCore")
    static let schema: StackSchema.Fields = ["activation": .init(type: .string), "r_max": .init(type: .number()), "r_min": .init(type: .number()),
                                           "max_phase": .init(type: .number()), "out_dim": .init(type: .int(min: 1), nullable: true),
                                           "cuda_seq_threshold": .init(type: .int(min: 1)), "use_srht": .init(type: .bool),
                                           "srht_permute": .init(type: .bool), "use_fullrank_rtu": .init(type: .bool),
                                           "use_untraced_linear": .init(type: .bool), "cortex_srht": .init(type: .string)]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        let c = try Config.parse(json, hiddenSize: hiddenSize, owner: "axon cell")
        guard c.outputSize == hiddenSize else {
            throw CortexError.unsupported("axon cell: out_dim \(c.outputSize) must equal hidden_size \(hiddenSize) in a block (the reference raises)")
        }
        return CoreConfig(kind: Self.self) { w, p in try AxonCore(config: c, weights: w, prefix: p) }
    }
}

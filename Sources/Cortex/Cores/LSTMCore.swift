import CKernels

/// Mirrors cortexcore 0.1.6 `cortex.cells.lstm.LSTMCell` (seed: `LSTMCore`), which
/// runs a single-layer `nn.LSTM` (gate order i, f, g, o) through
/// `kernels/pytorch/lstm.py::lstm_sequence_pytorch`.
///
/// Weights: `weight_ih_l0 [4H, H]`, `weight_hh_l0 [4H, H]`, optional `bias_ih_l0`,
/// `bias_hh_l0 [4H]`. State: `h [B, 1, H]`, `c [B, 1, H]` (the reference keeps a
/// layer axis of size num_layers = 1).
public struct LSTMCore: RecurrentModule {
    public let hidden: Int
    /// W_ih, packed at load for Cortex's product (see PackedMatrix).
    let weightIH: PackedMatrix
    /// W_hh, packed by blocks of hidden units for the recurrence (see ParallelRecurrence).
    let recurrent: BlockedRecurrentWeight
    /// b_ih + b_hh, folded once at load (nil when bias=False).
    let bias: Tensor?

    public struct Config: Sendable, Equatable {
        public var hiddenSize: Int
        public var bias: Bool = true
    }

    public init(config: Config, weights: WeightSource, prefix: String) throws {
        let h = config.hiddenSize
        hidden = h
        weightIH = try PackedMatrix(try weights.tensor(prefix + "weight_ih_l0", shape: [4 * h, h]))
        let hh = try weights.tensor(prefix + "weight_hh_l0", shape: [4 * h, h])
        recurrent = try BlockedRecurrentWeight(weightHH: hh, hidden: h)
        if config.bias {
            let bi = try weights.tensor(prefix + "bias_ih_l0", shape: [4 * h])
            let bh = try weights.tensor(prefix + "bias_hh_l0", shape: [4 * h])
            let b = try Tensor(zeros: [4 * h])
            for i in 0..<(4 * h) { b.data[i] = bi.data[i] + bh.data[i] }
            bias = b
        } else {
            bias = nil
        }
    }

    public var inputSize: Int { hidden }
    public var outputSize: Int { hidden }
    public var stateSpecs: [StateSpec] { [StateSpec(name: "h", perRow: [1, hidden]), StateSpec(name: "c", perRow: [1, hidden])] }
    public var parameterCount: Int { 2 * 4 * hidden * hidden + (bias.map { 2 * $0.count } ?? 0) }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let H = hidden, G = 4 * hidden
        let h = state[state.startIndex], c = state[state.startIndex + 1]
        guard batch > 0, time > 0, H > 0 else { return }

        // Input projections for every step at once: xg[b, t] = W_ih x[b, t] (the bias is
        // added in the cell).
        let xg = try arena.take(batch * time * G)
        weightIH.apply(m: batch * time, x, ldx: H, into: xg, ldy: G)
        // The recurrence, its rows and hidden units split over the threads (ParallelRecurrence.swift).
        let parts = Parallel.parts(work: batch * G * H, grain: 1 << 16, items: recurrent.blockCount * batch)
        // One barrier per row group, on 64-byte lines of their own (sequences only).
        var barriers: UnsafeMutablePointer<cxk_barrier>? = nil
        if time > 1 && parts > 1 {
            let raw = UnsafeMutableRawPointer(try arena.take(16 * min(parts, batch)))
            raw.initializeMemory(as: UInt8.self, repeating: 0, count: 64 * min(parts, batch))
            barriers = raw.bindMemory(to: cxk_barrier.self, capacity: min(parts, batch))
        }
        let job = RecurrenceJob(
            weight: recurrent, xg: xg, bias: bias.map { UnsafePointer($0.data) }, y: y, c: c, hA: h,
            hB: try arena.take(batch * H), gates: try arena.take(batch * G), barriers: barriers, resets: resets,
            batch: batch, time: time)
        job.runParallel(parts: parts)
    }
}

/// The stack config's "lstm" cell (see `CoreKind`).
extension LSTMCore: CoreKind {
    static let tag = "lstm"
    static let classNames = (blocks: "LSTMCell", scaffolds: "LSTMCore")
    static let schema: StackSchema.Fields = ["num_layers": .init(type: .int(min: 1)), "bias": .init(type: .bool), "dropout": .init(type: .number(min: 0)),
                                           "proj_size": .init(type: .int(min: 0))]

    static func parseCore(_ json: JSON, hiddenSize: Int) throws -> CoreConfig {
        let layers = json["num_layers"]?.int ?? 1
        guard layers == 1 else {
            throw CortexError.unsupported("lstm cell: num_layers \(layers) is not supported (cortexcore 0.1.6 supports num_layers == 1 only)")
        }
        if let p = json["proj_size"], !p.isNull, p.int != 0 {
            throw CortexError.unsupported("lstm cell: proj_size > 0 is not supported (as in cortexcore 0.1.6)")
        }
        let c = Config(hiddenSize: hiddenSize, bias: try json.boolField("bias", default: true, core: tag))
        return CoreConfig(kind: Self.self) { w, p in try LSTMCore(config: c, weights: w, prefix: p + "net.") }
    }
}

import Synchronization

/// The recurrent state of `batch` independent streams of one model: one contiguous
/// tensor `[B] + perRow` per `StateSpec`, in the model's spec order.
///
/// Not thread-safe by design (one thread at a time), but misuse is detected: a
/// second concurrent call gets `CortexError.busy` instead of corrupting memory.
/// Every call is atomic: the model runs on a shadow copy that replaces the state
/// only when the call succeeds.
public final class RecurrentState: @unchecked Sendable {
    public let model: Model
    public let batch: Int
    public private(set) var tensors: [Tensor]
    private var slots: [UnsafeMutablePointer<Float>]
    private var shadow: [Tensor]
    private var shadowSlots: [UnsafeMutablePointer<Float>]
    /// Scratch for the model's temporaries; sized by the first call, then reused.
    public let arena = Arena()
    private let busy = Atomic<Bool>(false)

    static let maxBatch = 1 << 24

    init(model: Model, batch: Int) throws {
        guard batch >= 1, batch <= RecurrentState.maxBatch else {
            throw CortexError.invalidArgument("batch must be in [1, \(RecurrentState.maxBatch)], got \(batch)")
        }
        self.model = model
        self.batch = batch
        let make = {
            try model.stateSpecs.map { spec -> Tensor in
                let t = try Tensor(zeros: [batch] + spec.perRow)
                if spec.initial != 0 { t.data.update(repeating: spec.initial, count: t.count) }
                return t
            }
        }
        tensors = try make()
        shadow = try make()
        slots = tensors.map(\.data)
        shadowSlots = shadow.map(\.data)
    }

    /// Run `body` as the only user of this state (else throw `.busy`), with the
    /// scratch arena rewound.
    public func exclusive<R>(_ body: () throws -> R) throws -> R {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw CortexError.busy("the state is in use by another thread")
        }
        defer { busy.store(false, ordering: .releasing) }
        arena.reset()
        return try body()
    }

    /// Advance every stream by `time` steps. Call inside `exclusive`. `x`: `[B, T, D_in]`,
    /// `y`: `[B, T, D_out]`, `resets`: `[B, T]` or nil. The state changes only on success.
    public func advance(
        x: UnsafePointer<Float>, batch: Int, time: Int,
        resets: UnsafePointer<UInt8>?, into y: UnsafeMutablePointer<Float>
    ) throws {
        for i in tensors.indices { shadowSlots[i].update(from: slots[i], count: tensors[i].count) }
        try model.module.run(x: x, y: y, batch: batch, time: time,
                             state: shadowSlots[shadowSlots.indices], resets: resets, arena: arena)
        swap(&tensors, &shadow)
        swap(&slots, &shadowSlots)
    }

    /// Reset the rows where `rows[b]` is true (all rows when nil): zeros, or each
    /// tensor's `resetValue`.
    public func reset(rows: [Bool]? = nil) throws {
        if let rows, rows.count != batch {
            throw CortexError.shapeMismatch("reset mask: expected \(batch) rows, got \(rows.count)")
        }
        try exclusive {
            for (t, spec) in zip(tensors, model.stateSpecs) {
                let n = spec.rowCount
                for b in 0..<batch where rows?[b] ?? true { (t.data + b * n).update(repeating: spec.resetValue, count: n) }
            }
        }
    }

    /// A copy of the state tensor named `path` (e.g. "PassThroughBlock_0.LSTMCell.h").
    public func tensor(named path: String) throws -> Tensor {
        let i = try index(of: path)
        return try exclusive { try tensors[i].copy() }
    }

    /// Index of the state tensor named `path`.
    public func index(of path: String) throws -> Int {
        guard let i = model.stateSpecs.firstIndex(where: { $0.name == path }) else {
            let known = model.stateSpecs.map(\.name).joined(separator: ", ")
            throw CortexError.invalidArgument("no state tensor named '\(path)' (known: \(known))")
        }
        return i
    }

    /// Overwrite tensor `index` with `count` floats produced by `fill` (called with
    /// exclusive access; the count is checked by the caller against `shape(of:)`).
    public func write(index i: Int, _ fill: (UnsafeMutablePointer<Float>) -> Void) throws {
        try exclusive { fill(tensors[i].data) }
    }

    /// Full shape `[B] + perRow` of tensor `index`.
    public func shape(of i: Int) -> [Int] { [batch] + model.stateSpecs[i].perRow }

    /// A deep copy.
    public func clone() throws -> RecurrentState {
        let out = try RecurrentState(model: model, batch: batch)
        try exclusive {
            for (dst, src) in zip(out.tensors, tensors) { dst.data.update(from: src.data, count: src.count) }
        }
        return out
    }

    /// Overwrite every tensor (shapes already validated by the caller).
    func load(_ values: [Tensor]) {
        for (dst, src) in zip(tensors, values) { dst.data.update(from: src.data, count: src.count) }
    }
}

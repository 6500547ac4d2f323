/// The recurrent state of `batch` independent streams of one model: one contiguous
/// tensor `[B] + perRow` per `StateSpec`, in the model's slot order (`allStateSpecs`,
/// derived caches included; indices below refer to that order).
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
    fileprivate let use = UseFlag()
    /// Call shapes (time, with/without resets) that already ran to completion on this
    /// state: their scratch is reserved in `arena`, so they cannot fail and run in place.
    private var provenShapes = Set<Int>()
    /// Routed-adapter slot of each stream (`[B]`, zeros until set); the arena points at it.
    fileprivate let routeIDs: UnsafeMutablePointer<Int32>
    /// Whether route ids were given (a model with `require_route_ids` refuses to run
    /// until they are).
    public private(set) var hasRouteIDs = false

    static let maxBatch = 1 << 24

    init(model: Model, batch: Int) throws {
        switch model.kind {
        case .stack: break
        case .languageModel:
            throw CortexError.unsupported("an open_mythos model has no recurrent state: it runs on token ids with a KV cache")
        case .sidecar:
            throw CortexError.unsupported("a cortex_sidecar model has no recurrent state: it runs per host layer with a sidecar session")
        case .spikeDecoder:
            throw CortexError.unsupported("a spike_decoder model is stateless: it decodes packed spike events")
        }
        guard batch >= 1, batch <= RecurrentState.maxBatch else {
            throw CortexError.invalidArgument("batch must be in [1, \(RecurrentState.maxBatch)], got \(batch)")
        }
        self.model = model
        self.batch = batch
        let make = {
            try model.allStateSpecs.map { spec -> Tensor in
                let t = try Tensor(zeros: [batch] + spec.perRow)
                if spec.initial != 0 { t.data.update(repeating: spec.initial, count: t.count) }
                return t
            }
        }
        tensors = try make()
        shadow = try make()
        slots = tensors.map(\.data)
        shadowSlots = shadow.map(\.data)
        routeIDs = .allocate(capacity: batch)
        routeIDs.initialize(repeating: 0, count: batch)
        arena.routeSlots = model.routedAdapter == nil ? nil : UnsafePointer(routeIDs)
    }

    deinit { routeIDs.deallocate() }

    /// The route ids in use (`[B]`), or nil when none were given.
    public var routeIDList: [Int]? {
        hasRouteIDs ? (0..<batch).map { Int(routeIDs[$0]) } : nil
    }

    /// Bind stream b to adapter slot `ids[b]` for the calls that follow (nil: unbind).
    /// cortexcore takes `route_ids` per call; here they stay with the state, as a
    /// stream usually keeps its slot. Refused for a model without routed adapters.
    public func setRouteIDs(_ ids: [Int]?) throws {
        guard let spec = model.routedAdapter else {
            throw CortexError.invalidArgument("route ids: the model has no routed adapters (its config has no routed_adapter)")
        }
        if let ids {
            guard ids.count == batch else {
                throw CortexError.shapeMismatch("route ids: expected \(batch) values (one per stream), got \(ids.count)")
            }
            if let bad = ids.firstIndex(where: { $0 < 0 || $0 >= spec.numSlots }) {
                throw CortexError.invalidArgument("route ids: values must be in [0, \(spec.numSlots)), got \(ids[bad]) at index \(bad)")
            }
        }
        try exclusive {
            for b in 0..<batch { routeIDs[b] = Int32(ids?[b] ?? 0) }
            hasRouteIDs = ids != nil
        }
    }

    /// Run `body` as the only user of this state (else throw `.busy`), with the
    /// scratch arena rewound.
    public func exclusive<R>(_ body: () throws -> R) throws -> R {
        try use.acquire("the state")
        defer { use.release() }
        let reserved = arena.capacity
        arena.reset()
        if arena.capacity < reserved { provenShapes.removeAll() }  // merging failed: scratch must grow again
        return try body()
    }

    /// Advance every stream by `time` steps. Call inside `exclusive`. `x`: `[B, T, D_in]`,
    /// `y`: `[B, T, D_out]`, `resets`: `[B, T]` or nil. The state changes only on success.
    public func advance(
        x: UnsafePointer<Float>, batch: Int, time: Int,
        resets: UnsafePointer<UInt8>?, into y: UnsafeMutablePointer<Float>
    ) throws {
        // A module's run() can fail only when its scratch cannot be allocated (the
        // RecurrentModule contract). A shape that succeeded before finds its scratch
        // reserved, so it runs in place; anything else runs on a shadow copy that replaces
        // the state only on success (for large states, e.g. XL's memory at B=32, the
        // copy would otherwise dominate a step).
        if let spec = model.routedAdapter, spec.requireRouteIDs, !hasRouteIDs {
            throw CortexError.invalidArgument(
                "routed adapters are enabled (require_route_ids): give route ids [B] first (a state's route ids)")
        }
        let shape = time &* 2 &+ (resets == nil ? 0 : 1)
        if provenShapes.contains(shape) {
            try model.module.run(x: x, y: y, batch: batch, time: time,
                                 state: slots[slots.indices], resets: resets, arena: arena)
            return
        }
        for i in tensors.indices { shadowSlots[i].update(from: slots[i], count: tensors[i].count) }
        try model.module.run(x: x, y: y, batch: batch, time: time,
                             state: shadowSlots[shadowSlots.indices], resets: resets, arena: arena)
        swap(&tensors, &shadow)
        swap(&slots, &shadowSlots)
        if provenShapes.count < 64 { provenShapes.insert(shape) }
    }

    /// Reset the rows where `rows[b]` is true (all rows when nil): zeros, or each
    /// tensor's `resetValue`.
    public func reset(rows: [Bool]? = nil) throws {
        if let rows, rows.count != batch {
            throw CortexError.shapeMismatch("reset mask: expected \(batch) rows, got \(rows.count)")
        }
        try exclusive {
            for (t, spec) in zip(tensors, model.allStateSpecs) {
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
        guard let i = model.allStateSpecs.firstIndex(where: { $0.name == path && !$0.derived }) else {
            let known = model.stateSpecs.map(\.name).joined(separator: ", ")
            throw CortexError.invalidArgument("no state tensor named '\(path)' (known: \(known))")
        }
        return i
    }

    /// Overwrite tensor `index` with `count` floats produced by `fill` (called with
    /// exclusive access; the count is checked by the caller against `shape(of:)`).
    public func write(index i: Int, _ fill: (UnsafeMutablePointer<Float>) -> Void) throws {
        try exclusive {
            fill(tensors[i].data)
            clearDerived()
        }
    }

    /// Full shape `[B] + perRow` of tensor `index`.
    public func shape(of i: Int) -> [Int] { [batch] + model.allStateSpecs[i].perRow }

    /// Forget every derived cache (after the state was written from outside).
    func clearDerived() {
        for (t, spec) in zip(tensors, model.allStateSpecs) where spec.derived { t.data.update(repeating: 0, count: t.count) }
    }

    /// A deep copy.
    public func clone() throws -> RecurrentState {
        let out = try RecurrentState(model: model, batch: batch)
        try exclusive {
            for (dst, src) in zip(out.tensors, tensors) { dst.data.update(from: src.data, count: src.count) }
            out.routeIDs.update(from: routeIDs, count: batch)
            out.hasRouteIDs = hasRouteIDs
        }
        return out
    }

    /// Overwrite tensors (shapes already validated by the caller); nil leaves a derived
    /// cache empty.
    func load(_ values: [Tensor?]) {
        for (dst, src) in zip(tensors, values) {
            if let src { dst.data.update(from: src.data, count: src.count) } else { dst.data.update(repeating: 0, count: dst.count) }
        }
    }
}

// MARK: lanes: many single-stream states advanced as one batch

extension RecurrentState {
    /// Copy every tensor's row `a` of `src` to row `b` of `dst` (same model), with its
    /// route id. Call with exclusive access to both.
    fileprivate static func copyRow(from src: RecurrentState, _ a: Int, to dst: RecurrentState, _ b: Int) {
        for (i, spec) in src.model.allStateSpecs.enumerated() {
            let n = spec.rowCount
            (dst.tensors[i].data + b * n).update(from: src.tensors[i].data + a * n, count: n)
        }
        dst.routeIDs[b] = src.routeIDs[a]
    }

    /// Advance `states` (distinct, one stream each, all of this state's model) together,
    /// using `self` (batch == states.count) as the batch: rows are gathered into it, the
    /// batch advances once (one GEMM per projection for all streams, so a session server
    /// pays one call for many sessions), and the rows are scattered back. `x`: `[n, T, D_in]`,
    /// `resets`: `[n, T]` or nil, `y`: `[n, T, D_out]`. Row i matches states[i] advanced
    /// alone to fp32 rounding, not bitwise: OpenBLAS picks its kernel by row count (one
    /// row: SGEMV), which changes the order of the sums. Call inside `exclusive` of `self`.
    /// Atomic: on failure no state changes.
    public func advanceLanes(_ states: [RecurrentState], x: UnsafePointer<Float>, time: Int,
                             resets: UnsafePointer<UInt8>?, into y: UnsafeMutablePointer<Float>) throws {
        guard states.count == batch else {
            throw CortexError.shapeMismatch("lanes: \(states.count) states for a batch of \(batch)")
        }
        for (i, s) in states.enumerated() {
            guard s.model === model else { throw CortexError.invalidArgument("lanes: state \(i) belongs to another model") }
            guard s.batch == 1 else { throw CortexError.shapeMismatch("lanes: state \(i) has batch \(s.batch); each state must hold one stream") }
            guard s !== self else { throw CortexError.invalidArgument("lanes: state \(i) is the batch state itself") }
            for j in 0..<i where states[j] === s { throw CortexError.invalidArgument("lanes: state \(i) appears twice (states \(j) and \(i))") }
        }
        let routed = states.map(\.hasRouteIDs)
        guard routed.allSatisfy({ $0 }) || !routed.contains(true) else {
            throw CortexError.invalidArgument("lanes: some states have route ids and some do not")
        }
        // Take every lane state (a busy one fails here, before anything changed).
        var taken: [RecurrentState] = []
        defer { for s in taken { s.use.release() } }
        for (i, s) in states.enumerated() {
            try s.use.acquire("lanes: state \(i)")
            taken.append(s)
        }
        for (b, s) in states.enumerated() { RecurrentState.copyRow(from: s, 0, to: self, b) }
        hasRouteIDs = routed.first ?? false
        try advance(x: x, batch: batch, time: time, resets: resets, into: y)
        for (b, s) in states.enumerated() { RecurrentState.copyRow(from: self, b, to: s, 0) }
    }
}

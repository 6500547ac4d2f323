/// cortexcore's routed adapters (`cortex/routed_adapter.py`, `RoutedAdapterConfig`):
/// every `nn.Linear` of a stack (and sLSTM's headwise gate maps) gains per-slot low-rank
/// terms, `y = x·Wᵀ + b + (α/r)·B[s]·(A[s]·x)`, the slot `s` chosen per stream by its
/// route id.
///
/// Which rows get the adapter follows the reference exactly: it finds the batch among
/// the input's leading dimensions, so a Linear fed `[B, T, F]` adapts every row with its
/// stream's slot, while one fed a flattened `[B·T, F]` (PreUp/PostUp projections, the
/// gated FFNs, Axon's `out_proj` in sequence mode) adapts nothing unless T = 1. Call
/// sites say which case they are through `Routing`.
public struct RoutedAdapterSpec: Sendable, Equatable {
    public var numSlots: Int
    public var rank: Int
    public var alpha: Double?
    public var requireRouteIDs: Bool

    /// α / max(1, r), α defaulting to r.
    public var scale: Float { Float((alpha ?? Double(rank)) / Double(max(1, rank))) }

    /// The stack config's `routed_adapter` (nil when absent or disabled).
    static func parse(_ json: JSON?) throws -> RoutedAdapterSpec? {
        guard let json, !json.isNull else { return nil }
        guard json.objectPairs != nil else { throw CortexError.parse("routed_adapter must be an object") }
        let core = "routed_adapter"
        guard try json.boolField("enabled", default: true, core: core) else { return nil }
        guard json["num_slots"] != nil else { throw CortexError.parse("routed_adapter: num_slots is required") }
        var spec = RoutedAdapterSpec(
            numSlots: try json.intField("num_slots", default: 1, in: 1...1_000_000, core: core),
            rank: try json.intField("rank", default: 4, in: 1...65536, core: core),
            alpha: nil,
            requireRouteIDs: try json.boolField("require_route_ids", default: true, core: core))
        if let a = json["alpha"], !a.isNull {
            guard let v = a.double, v > 0, v.isFinite else { throw CortexError.parse("routed_adapter: alpha must be a number > 0") }
            spec.alpha = v
        }
        return spec
    }
}

/// How one call's rows map to streams for an adapted Linear: row r uses the slot of
/// stream `r / rowsPerStream`.
public struct Routing {
    public let slots: UnsafePointer<Int32>
    public let rowsPerStream: Int
}

extension Arena {
    /// Routing for a Linear whose input is `[B, time·…, F]` (rows grouped by stream), or
    /// nil when the model has no adapters.
    func routing(rowsPerStream: Int) -> Routing? {
        guard let slots = routeSlots else { return nil }
        return Routing(slots: slots, rowsPerStream: max(rowsPerStream, 1))
    }

    /// Routing for a Linear the reference feeds a flattened `[B·T, F]`: the adapter only
    /// applies when T = 1 (the reference cannot find the batch otherwise).
    func routingFlattened(time: Int) -> Routing? {
        time == 1 ? routing(rowsPerStream: 1) : nil
    }
}

/// The low-rank adapters of one Linear, `A [S, r, in]`, `B [S, out, r]`; or of a headwise
/// map (sLSTM's gates), `A [S, NH, r, DH]`, `B [S, NH, DH, r]`, each head on its slice.
public struct LowRankAdapter: Sendable {
    let a: Tensor, b: Tensor
    let scale: Float
    let heads: Int
    var rank: Int { a.shape[a.shape.count - 2] }
    var inPerHead: Int { a.shape[a.shape.count - 1] }
    var outPerHead: Int { b.shape[b.shape.count - 2] }

    /// `y[r] += scale · B[s]·(A[s]·x[r])` for every row, s the row's stream's slot.
    func add(_ x: UnsafePointer<Float>, rows: Int, ldx: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, routing: Routing) {
        let R = rank, I = inPerHead, O = outPerHead, NH = heads
        let ap = a.data, bp = b.data, scale = scale
        withUnsafeTemporaryAllocation(of: Float.self, capacity: R) { tmp in
            guard let t = tmp.baseAddress else { return }
            for row in 0..<rows {
                let s = Int(routing.slots[row / routing.rowsPerStream])
                for n in 0..<NH {
                    let xr = x + row * ldx + n * I, yr = y + row * ldy + n * O
                    let As = ap + (s * NH + n) * R * I, Bs = bp + (s * NH + n) * O * R
                    for k in 0..<R {
                        var acc: Float = 0
                        for i in 0..<I { acc += As[k * I + i] * xr[i] }
                        t[k] = acc
                    }
                    for o in 0..<O {
                        var acc: Float = 0
                        for k in 0..<R { acc += Bs[o * R + k] * t[k] }
                        yr[o] += scale * acc
                    }
                }
            }
        }
    }
}

extension WeightSource {
    /// `<name>.adapter_A` / `adapter_B` when the stack has routed adapters.
    func adapter(_ name: String, in i: Int, out o: Int) throws -> LowRankAdapter? {
        guard let spec = routing else { return nil }
        let S = spec.numSlots, R = spec.rank
        return LowRankAdapter(a: try tensor(name + ".adapter_A", shape: [S, R, i]),
                              b: try tensor(name + ".adapter_B", shape: [S, o, R]), scale: spec.scale, heads: 1)
    }

    /// A headwise map's adapters (`RoutedAdapterHeadwiseLinearExpand`).
    func headwiseAdapter(_ name: String, heads: Int, headDim: Int) throws -> LowRankAdapter? {
        guard let spec = routing else { return nil }
        let S = spec.numSlots, R = spec.rank
        return LowRankAdapter(a: try tensor(name + ".adapter_A", shape: [S, heads, R, headDim]),
                              b: try tensor(name + ".adapter_B", shape: [S, heads, headDim, R]),
                              scale: spec.scale, heads: heads)
    }
}

/// A parent core's `use_axon_layer` / `use_axon_qkv` flag with its optional `AxonConfig`.
public enum AxonLayerOption: Sendable, Equatable {
    case off
    /// On; a nil config means AxonLayer's own defaults.
    case on(AxonCore.Config?)

    var isOn: Bool { self != .off }
}

/// Mirrors cortexcore 0.1.6 `cortex.cells.core.axon_layer.AxonLayer`: a drop-in for a
/// Linear, `y = linear(x) + AxonCell(x)`, whose Axon keeps its state inside the parent
/// core's state at `<group>.<name>` (e.g. `slstm.if_fused.hc1`).
///
/// The Axon runs with `hidden_size = in_features`, `out_dim = out_features` and the
/// identity activation, whatever the given `AxonConfig` says (the reference enforces
/// that); without a config it picks the SRHT for power-of-two inputs, else the
/// untraced linear map. Weights: `<name>.linear.{weight,bias}`, `<name>.cell.*`.
public struct AxonLayer: RecurrentModule {
    let axon: AxonCore
    let linear: Linear  // the Linear branch [out, in] + bias
    let path: String

    /// `config`: the parent's `axon_layer_config` / `axon_qkv_config` (nil: defaults).
    public init(
        inFeatures: Int, outFeatures: Int, config: AxonCore.Config?,
        weights: WeightSource, prefix: String, statePath: String
    ) throws {
        var c = config ?? .layerDefault(inFeatures: inFeatures, outFeatures: outFeatures)
        c.hiddenSize = inFeatures
        c.outDim = outFeatures
        c.activation = .identity
        axon = try AxonCore(config: c, weights: weights, prefix: prefix + "cell.")
        linear = try Linear(weights, prefix + "linear", in: inFeatures, out: outFeatures)
        path = statePath
    }

    public var inputSize: Int { axon.inputSize }
    public var outputSize: Int { axon.outputSize }
    public var stateSpecs: [StateSpec] { axon.stateSpecs.map { $0.prefixed(path) } }
    public var parameterCount: Int { axon.parameterCount + linear.parameterCount }

    public func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        try axon.run(x: x, y: y, batch: batch, time: time, state: state, resets: resets, arena: arena)
        linear.apply(x, rows: batch * time, into: y, accumulate: true, routing: arena.routing(rowsPerStream: time))
    }

    /// `run`, writing row r of the output at `out + r·ldOut` (a column block of a wider
    /// matrix); `state` holds this layer's `AxonCore.slotCount` slots.
    func run(
        x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, ldOut: Int,
        batch: Int, time: Int, state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws {
        let o = outputSize
        if ldOut == o {
            try run(x: x, y: out, batch: batch, time: time, state: state, resets: resets, arena: arena)
            return
        }
        let tmp = try arena.take(batch * time * o)
        try run(x: x, y: tmp, batch: batch, time: time, state: state, resets: resets, arena: arena)
        for r in 0..<(batch * time) { (out + r * ldOut).update(from: tmp + r * o, count: o) }
    }
}

extension AxonLayerOption {
    /// The layer this option asks for, or nil when off.
    func make(inFeatures: Int, outFeatures: Int, weights: WeightSource, prefix: String, statePath: String) throws -> AxonLayer? {
        guard case .on(let config) = self else { return nil }
        return try AxonLayer(inFeatures: inFeatures, outFeatures: outFeatures, config: config,
                             weights: weights, prefix: prefix, statePath: statePath)
    }
}

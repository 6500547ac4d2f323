/// One named state tensor of a module: full shape `[B] + perRow`.
public struct StateSpec: Sendable, Equatable {
    public let name: String
    public let perRow: [Int]
    /// Value of a fresh state (AGaLiTe's tick starts at 1; everything else at 0).
    /// Resets always zero, as the reference's reset_state does.
    public let initial: Float
    /// Value a reset row takes (`cx_state_reset`): 0, as the reference's reset_state,
    /// except where a core's consistent math needs the fresh value.
    public let resetValue: Float
    /// A cache derived from the rest of the state (e.g. XL's projected memory keys),
    /// starting at zeros = "not computed". Not part of the reference's TensorDict: it is
    /// hidden from names and tensor access, cleared whenever the state is written from
    /// outside, and carried in state blobs so a restored state continues bit for bit.
    public let derived: Bool

    public init(name: String, perRow: [Int], initial: Float = 0, resetValue: Float = 0, derived: Bool = false) {
        self.name = name
        self.perRow = perRow
        self.initial = initial
        self.resetValue = resetValue
        self.derived = derived
    }

    public var rowCount: Int { perRow.reduce(1, *) }

    /// The same spec under `prefix` ("LSTMCell" + "h" → "LSTMCell.h").
    public func prefixed(_ prefix: String) -> StateSpec {
        StateSpec(name: prefix + "." + name, perRow: perRow, initial: initial, resetValue: resetValue, derived: derived)
    }
}

/// Pointers to a module's state tensors, in the order of its `stateSpecs`.
/// Each tensor is contiguous `[B] + perRow` and is updated in place.
public typealias StateSlots = ArraySlice<UnsafeMutablePointer<Float>>

/// The uniform contract shared by cores, scaffolds and stacks (cortexcore's
/// `forward(x, state, resets) -> (y, state)`), on contiguous buffers:
///
/// - `x`: `[B, T, inputSize]`, `y`: `[B, T, outputSize]` (step mode is `T == 1`).
/// - `state`: this module's slots, read as the state before the first step and left
///   holding the state after the last.
/// - `resets`: `[B, T]` bytes or nil; a non-zero `resets[b, t]` zeroes row b's state
///   before step t, exactly where cortexcore applies its reset mask.
/// - Temporaries come from `arena`, so repeated steps allocate nothing.
/// - `run` may throw only when `arena` cannot allocate, and must take the same scratch
///   for the same (batch, time, resets present): a call shape that succeeded once then
///   cannot fail, and `RecurrentState` runs it in place instead of on a shadow copy.
public protocol RecurrentModule: Sendable {
    var inputSize: Int { get }
    var outputSize: Int { get }
    var stateSpecs: [StateSpec] { get }
    var parameterCount: Int { get }

    func run(
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
        batch: Int, time: Int,
        state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena
    ) throws
}

/// Weights by name, as in a PyTorch `state_dict()`. Records which names were used
/// so a loader can refuse files with tensors the config does not explain.
public final class WeightSource {
    public let file: SafetensorsFile
    private(set) var used = Set<String>()
    /// The stack's routed adapters: Linear layers then load their `adapter_A`/`adapter_B`.
    public var routing: RoutedAdapterSpec?

    /// Load every nn.Linear weight as INT8 (per output channel); see `Int8Matrix`.
    public var quantizeLinears = false
    /// Every Axon's SRHT, whatever its config says (the model-wide `srht` load option).
    public var hadamardOverride: AxonCore.Hadamard? = nil
    /// The names of the nn.Linear layers loaded, in order (what INT8 quantises).
    public var linearNames: [String] = []
    /// Bytes of those layers' weight matrices as loaded (fp32 or INT8).
    public var linearWeightBytes = 0

    public init(file: SafetensorsFile, quantizeLinears: Bool = false) {
        self.file = file
        self.quantizeLinears = quantizeLinears
    }

    /// A saved INT8 weight: `<name>.weight_int8` (I8 [rows, cols]) and `<name>.weight_scale`
    /// ([rows], float, every scale > 0).
    public func int8Matrix(_ name: String, rows: Int, cols: Int) throws -> Int8Matrix {
        let qName = name + ".weight_int8", sName = name + ".weight_scale"
        used.insert(qName)
        let q = try file.int8(qName, shape: [rows, cols])
        let s = try tensor(sName, shape: [rows])
        let scales = Array(UnsafeBufferPointer(start: s.data, count: rows))
        guard scales.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw CortexError.parse("tensor '\(sName)': every scale must be a finite number > 0")
        }
        return Int8Matrix(rows: rows, cols: cols, values: q, scales: scales)
    }

    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        used.insert(name)
        return try file.tensor(name, shape: shape)
    }

    public func has(_ name: String) -> Bool { file.contains(name) }

    /// A scalar parameter (`nn.Parameter(torch.tensor(x))`), stored with shape [] or [1].
    public func scalar(_ name: String) throws -> Float {
        let shape = file.entries[name]?.shape == [1] ? [1] : []
        let t = try tensor(name, shape: shape)
        return withExtendedLifetime(t) { t.data[0] }  // the buffer must outlive the read
    }

    /// An integer buffer (e.g. a permutation) stored as integers or integral floats.
    public func integers(_ name: String, shape: [Int]) throws -> [Int] {
        used.insert(name)
        return try file.integers(name, shape: shape)
    }

    /// Accept the tensors under `prefix` as a second name of those under `target` (a
    /// module registered twice, as AdapterBlock's `cell` and `wrapped_block.cell`): each
    /// must exist under both names with equal values.
    public func alias(_ prefix: String, of target: String) throws {
        for name in file.names where name.hasPrefix(prefix) {
            let other = target + name.dropFirst(prefix.count)
            guard file.contains(other) else {
                throw CortexError.missingTensor("tensor '\(name)' has no counterpart '\(other)'")
            }
            let a = try file.tensor(name), b = try file.tensor(other)
            guard a.shape == b.shape, a.toArray() == b.toArray() else {
                throw CortexError.invalidArgument("tensors '\(name)' and '\(other)' should be the same module's but differ")
            }
            used.insert(name)
        }
    }

    /// Consume a buffer the reference registers empty when a feature is off (so the
    /// unused-tensor check accepts it); absent is fine, non-empty is an error.
    public func emptyBuffer(_ name: String) throws {
        guard file.contains(name) else { return }
        used.insert(name)
        if let e = file.entries[name], e.shape.reduce(1, *) != 0 {
            throw CortexError.shapeMismatch("tensor '\(name)' has shape \(e.shape), expected an empty buffer (the feature is off in the config)")
        }
    }

    /// Accept a tensor without reading it (a buffer Cortex recomputes from the config).
    public func ignore(_ name: String) throws { used.insert(name) }

    /// Names in the file that no module asked for.
    public var unused: [String] { file.names.filter { !used.contains($0) } }
}

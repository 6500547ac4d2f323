/// A loaded model: immutable after load and safe to share between threads.
///
/// A model directory holds `config.json`
/// (`{"format": "cortex", "format_version": 1, "architecture": "cortex_stack", "config": {...}}`,
/// where `config` is cortexcore's `CortexStackConfig.model_dump_json()`) and
/// `model.safetensors` (the PyTorch module's own `state_dict()`).
public final class Model: @unchecked Sendable {
    public enum NaNPolicy: Int32, Sendable {
        case propagate = 0, reject = 1

        /// The input contract every front end (Swift, the C ABI, the server) applies:
        /// under `.reject` the first value that is not finite is refused, named by its
        /// index (`x[13]`, or `h[row][col]` when `width` > 0).
        public func check(_ p: UnsafePointer<Float>, count: Int, name: String, width: Int = 0) throws {
            guard self == .reject else { return }
            for i in 0..<count where !p[i].isFinite {
                let at = width > 0 ? "\(name)[\(i / width)][\(i % width)]" : "\(name)[\(i)]"
                throw CortexError.nanInput("\(at) is non-finite (\(p[i])): NaN, infinite or beyond float32's range; the NaN policy is reject")
            }
        }
    }

    /// `[B]` resets in sequence mode mean "reset these rows before the first step":
    /// the `[B, T]` mask every core takes (zero except each flagged row's first step).
    public static func expandRowResets(_ rows: UnsafePointer<UInt8>, batch: Int, time: Int,
                                       into mask: UnsafeMutablePointer<UInt8>) {
        mask.update(repeating: 0, count: batch * time)
        for b in 0..<batch where time > 0 && rows[b] != 0 { mask[b * time] = 1 }
    }

    public static let formatVersion = 1
    public static let architectures = ["cortex_stack", "open_mythos", "cortex_sidecar", "spike_decoder"]
    public static let maxConfigBytes = 16 << 20

    public let architecture: String
    /// The `config` object of config.json, as given.
    public let config: JSON
    /// Fields of a stack config the reference ignores too (`StackSchema`): shown in `info`.
    public let ignoredConfigFields: [String]
    public let module: any RecurrentModule
    /// The state tensors, named as in the reference's TensorDict.
    public let stateSpecs: [StateSpec]
    /// Every tensor a state holds, in the module's slot order: `stateSpecs` plus derived
    /// caches (`StateSpec.derived`).
    public let allStateSpecs: [StateSpec]
    public let fingerprint: UInt64
    public let nanPolicy: NaNPolicy
    /// The stack's routed adapters (nil without them): states then need route ids.
    public let routedAdapter: RoutedAdapterSpec?
    /// What the model is; each kind runs through its own objects.
    public enum Kind {
        /// A memory stack: recurrent states (`forward`, `RecurrentState`); `module` is it.
        case stack(CortexStack)
        /// An OpenMythos language model (`"architecture": "open_mythos"`): token ids and a
        /// `MythosCache`, not recurrent states.
        case languageModel(MythosModel)
        /// Memory sidecars for a host transformer (`"architecture": "cortex_sidecar"`): per
        /// hooked layer, through `SidecarSession`s.
        case sidecar(SidecarModel)
        /// The Perceiver spike decoder (`"architecture": "spike_decoder"`): stateless, packed
        /// spike events to hand velocity (`SpikeDecoder.decode`).
        case spikeDecoder(SpikeDecoder)
    }
    public let kind: Kind
    /// The kind's model, or nil for another kind.
    public var mythos: MythosModel? { if case .languageModel(let m) = kind { return m }; return nil }
    public var sidecar: SidecarModel? { if case .sidecar(let m) = kind { return m }; return nil }
    public var spikeDecoder: SpikeDecoder? { if case .spikeDecoder(let m) = kind { return m }; return nil }
    /// Scratch batch states of forward(lanes:) (any batch size, at most 16 kept).
    private let lanePool = Locked<[RecurrentState]>([])
    /// Whether nn.Linear weights are held as INT8, how many there are and their bytes.
    public let int8: Bool
    public let linearLayers: Int
    /// The nn.Linear layers' names (state-dict prefixes of their `.weight`), in load order.
    public let linearNames: [String]
    public let linearWeightBytes: Int

    public var inputSize: Int { module.inputSize }
    public var outputSize: Int { module.outputSize }

    /// Load `directory/config.json` and `directory/model.safetensors`.
    /// `checkWeights`: refuse weights holding NaN or ±infinity, naming the tensor (each
    /// tensor is scanned once as it loads). `srht`: every Axon's SRHT transform, whatever
    /// the config says (`.cpuReference`: cortexcore's CPU butterfly, for models trained
    /// with it; nil: each config's own, the true transform by default).
    public static func load(directory: String, nanPolicy: NaNPolicy = .propagate, int8: Bool = false,
                            checkWeights: Bool = false, srht: AxonCore.Hadamard? = nil) throws -> Model {
        guard FileIO.isDirectory(directory) else { throw CortexError.io("\(directory) is not a directory") }
        let config = try FileIO.read(directory + "/config.json", limit: maxConfigBytes)
        // Only the header is read here, and checked before any data is touched; each
        // tensor is read from the file when the model asks for it.
        return try Model(configBytes: config, nanPolicy: nanPolicy, int8: int8, checkWeights: checkWeights, srht: srht) {
            try SafetensorsFile(path: directory + "/model.safetensors")
        }
    }

    /// `int8`: quantise every nn.Linear weight to INT8 per output channel at load
    /// (`Int8Matrix`); embeddings, norms, convolutions and recurrent kernels stay fp32.
    /// Weights saved as INT8 (`<name>.weight_int8`, `.weight_scale`) load as INT8 either way.
    public convenience init(configBytes: [UInt8], weightBytes: [UInt8], nanPolicy: NaNPolicy = .propagate,
                            int8: Bool = false, checkWeights: Bool = false, srht: AxonCore.Hadamard? = nil) throws {
        try self.init(configBytes: configBytes, nanPolicy: nanPolicy, int8: int8, checkWeights: checkWeights, srht: srht) {
            try SafetensorsFile(bytes: weightBytes)
        }
    }

    /// The weights come from `loadWeights`, called once the config is known to be valid.
    init(configBytes: [UInt8], nanPolicy: NaNPolicy, int8: Bool, checkWeights: Bool, srht: AxonCore.Hadamard?,
         loadWeights: () throws -> SafetensorsFile) throws {
        guard configBytes.count <= Model.maxConfigBytes else {
            throw CortexError.parse("config.json is larger than \(Model.maxConfigBytes) bytes")
        }
        let doc: JSON
        do { doc = try JSON.parse(configBytes) } catch let e as CortexError { throw e.prefixed("config.json") }
        guard doc.objectPairs != nil else { throw CortexError.parse("config.json: not a JSON object") }
        guard doc["format"]?.string == "cortex" else {
            throw CortexError.parse("config.json: not a Cortex model config (expected \"format\": \"cortex\")")
        }
        guard let version = doc["format_version"]?.int else {
            throw CortexError.parse("config.json: format_version must be an integer")
        }
        guard version == Model.formatVersion else {
            throw CortexError.unsupported("config.json: format_version \(version) is not supported (this build reads \(Model.formatVersion))")
        }
        guard let arch = doc["architecture"]?.string else { throw CortexError.parse("config.json: architecture must be a string") }
        guard let config = doc["config"], config.objectPairs != nil else {
            throw CortexError.parse("config.json: config must be a JSON object")
        }
        // The whole config is checked before the weights file is opened.
        enum Family {
            case stack(StackConfig), mythos(MythosConfig), sidecar(SidecarConfig), spike(SpikeDecoderConfig)
        }
        let family: Family
        do {
            switch arch {
            case "cortex_stack": family = .stack(try StackConfig.parse(config))
            case "open_mythos": family = .mythos(try MythosConfig.parse(config))
            case "cortex_sidecar": family = .sidecar(try SidecarConfig.parse(config))
            case "spike_decoder": family = .spike(try SpikeDecoderConfig.parse(config))
            default:
                throw CortexError.unsupported("unknown architecture '\(arch)' (supported: \(Model.architectures.joined(separator: ", ")))")
            }
        } catch let e as CortexError {
            throw e.prefixed("config.json")
        }
        try BLAS.ensureLoaded()
        var file: SafetensorsFile
        do { file = try loadWeights() } catch let e as CortexError { throw e.prefixed("model.safetensors") }
        file.requireFinite = checkWeights
        let weights = WeightSource(file: file, quantizeLinears: int8)
        weights.hadamardOverride = srht

        switch family {
        case .stack(let cfg):
            let stack = try CortexStack(config: cfg, weights: weights)
            (kind, module, routedAdapter, ignoredConfigFields) = (.stack(stack), stack, cfg.routedAdapter, cfg.ignoredFields)
        case .mythos(let cfg):
            let m = try MythosModel(config: cfg, weights: weights)
            (kind, routedAdapter, ignoredConfigFields) = (.languageModel(m), nil, [])
            module = NonRecurrentStub(dIn: cfg.vocabSize, dOut: cfg.vocabSize, parameters: m.parameterCount,
                                      runsOn: "an open_mythos model runs on token ids with a KV cache")
        case .sidecar(let cfg):
            let m = try SidecarModel(config: cfg, weights: weights)
            (kind, routedAdapter, ignoredConfigFields) = (.sidecar(m), nil, [])
            module = NonRecurrentStub(dIn: cfg.dModel, dOut: cfg.dModel, parameters: m.parameterCount,
                                      runsOn: "a cortex_sidecar model runs per host layer with a sidecar session")
        case .spike(let cfg):
            let m = try SpikeDecoder(config: cfg, weights: weights)
            (kind, routedAdapter, ignoredConfigFields) = (.spikeDecoder(m), nil, [])
            module = NonRecurrentStub(dIn: cfg.hiddenDim, dOut: cfg.behaviorDim, parameters: m.parameterCount,
                                      runsOn: "a spike_decoder model is stateless and decodes packed spike events")
        }
        let unused = weights.unused
        guard unused.isEmpty else {
            let shown = unused.prefix(5).joined(separator: ", ")
            throw CortexError.missingTensor("model.safetensors has \(unused.count) tensor(s) the config does not use: \(shown)")
        }
        self.architecture = arch
        self.config = config
        self.allStateSpecs = module.stateSpecs
        self.stateSpecs = module.stateSpecs.filter { !$0.derived }
        self.nanPolicy = nanPolicy
        self.linearLayers = weights.linearNames.count
        self.linearNames = weights.linearNames
        self.linearWeightBytes = weights.linearWeightBytes
        self.int8 = int8 || weights.linearNames.contains { weights.has($0 + ".weight_int8") }

        var h = FNV1a64()
        h.combine(arch)
        h.combine(config.serialized)
        for name in file.names.sorted() {
            guard let e = file.entries[name] else { continue }
            h.combine(name)
            h.combine(e.dtype.rawValue)
            for d in e.shape { h.combine(UInt64(d)) }
            var at = e.begin  // in 1 MB pieces: a tensor is never held whole just to hash it
            while at < e.end {
                let next = min(e.end, at + (1 << 20))
                try file.storage.withBytes(at..<next) { h.combine($0) }
                at = next
            }
        }
        self.fingerprint = h.value
    }

    /// A fresh zero state for `batch` streams.
    public func makeState(batch: Int) throws -> RecurrentState {
        try RecurrentState(model: self, batch: batch)
    }

    /// Model description for `cx_model_info_json`.
    public var info: JSON {
        .object([
            ("format", .string("cortex")),
            ("format_version", .number(Double(Model.formatVersion))),
            ("architecture", .string(architecture)),
            ("fingerprint", .string(fingerprint.hex16)),
            ("d_in", .number(Double(inputSize))),
            ("d_out", .number(Double(outputSize))),
            ("parameters", .number(Double(module.parameterCount))),
            ("nan_policy", .string(nanPolicy == .reject ? "reject" : "propagate")),
            ("weights", .object([("linear", .string(int8 ? "int8" : "float32")),
                                 ("linear_layers", .number(Double(linearLayers))),
                                 ("linear_bytes", .number(Double(linearWeightBytes)))])),
            ("routed_adapter", routedAdapter.map { r in
                .object([("num_slots", .number(Double(r.numSlots))), ("rank", .number(Double(r.rank))),
                         ("scale", .number(Double(r.scale))), ("require_route_ids", .bool(r.requireRouteIDs))])
            } ?? .null),
            ("blas", .object([("library", .string("OpenBLAS")), ("core", .string(BLAS.coreName)),
                              ("threads", .number(Double(BLAS.threads))),
                              // The ISA of Cortex's own kernels (packed nn.Linear products, row-wise).
                              ("kernels", .string(BLAS.kernelISA))])),
            ("state", .array(stateSpecs.map {
                .object([("name", .string($0.name)), ("shape", .array(([-1] + $0.perRow).map { .number(Double($0)) }))])
            })),
            ("config", config),
            ("ignored_config_fields", .array(ignoredConfigFields.map { .string($0) })),
        ])
    }

    // MARK: compute (Swift API)

    /// Sequence mode (`x: [B, T, D_in]`) or step mode (`x: [B, D_in]`); `resets` is
    /// `[B, T]` / `[B]` (non-zero = reset), `[B]` in sequence mode meaning "before the
    /// first step". Returns `[B, T, D_out]` / `[B, D_out]` and advances `state`.
    public func forward(_ x: Tensor, state: RecurrentState, resets: [Bool]? = nil) throws -> Tensor {
        try run(x, batch: state.batch, resets: resets) { xp, t, mask, y in
            try state.exclusive { try state.advance(x: xp, batch: state.batch, time: t, resets: mask, into: y) }
        }
    }

    /// `forward` for many single-stream states at once, as one batch (see
    /// `RecurrentState.advanceLanes`): `x` is `[n, D_in]` or `[n, T, D_in]` for n states.
    public func forward(lanes states: [RecurrentState], x: Tensor, resets: [Bool]? = nil) throws -> Tensor {
        let lanes = try borrowLanes(states.count)
        defer { returnLanes(lanes) }
        return try run(x, batch: states.count, resets: resets) { xp, t, mask, y in
            try lanes.exclusive { try lanes.advanceLanes(states, x: xp, time: t, resets: mask, into: y) }
        }
    }

    /// Validate `x` and `resets` for `batch` streams, allocate y, and call `body` with
    /// (x, T, resets mask [B, T] or nil, y).
    private func run(_ x: Tensor, batch: Int, resets: [Bool]?,
                     _ body: (UnsafePointer<Float>, Int, UnsafePointer<UInt8>?, UnsafeMutablePointer<Float>) throws -> Void) throws -> Tensor {
        let step = x.rank == 2
        guard x.rank == 2 || x.rank == 3 else {
            throw CortexError.shapeMismatch("x: expected (B, T, \(inputSize)) or (B, \(inputSize)), got \(x.shape)")
        }
        let b = x.shape[0], t = step ? 1 : x.shape[1], d = x.shape[x.rank - 1]
        guard b == batch, d == inputSize else {
            throw CortexError.shapeMismatch("x: expected batch \(batch) and features \(inputSize), got \(x.shape)")
        }
        var mask: [UInt8]? = nil
        if let resets {
            let flags = resets.map { UInt8($0 ? 1 : 0) }
            if resets.count == b * t { mask = flags }
            else if resets.count == b {
                var m = [UInt8](repeating: 0, count: b * t)
                flags.withUnsafeBufferPointer { Model.expandRowResets($0.baseAddress!, batch: b, time: t, into: &m) }
                mask = m
            } else {
                throw CortexError.shapeMismatch("resets: expected \(b) or \(b * t) values, got \(resets.count)")
            }
        }
        let xc = try x.contiguous()
        try nanPolicy.check(xc.data, count: xc.count, name: "x")
        let y = try Tensor(zeros: step ? [b, outputSize] : [b, t, outputSize])
        try mask.withOptionalPointer { m in try body(xc.data, t, m, y.data) }
        return y
    }

    /// A batch state of `n` streams for `forward(lanes:)`, reused across calls (a few kept).
    public func borrowLanes(_ n: Int) throws -> RecurrentState {
        let kept = lanePool.withLock { p -> RecurrentState? in
            guard let i = p.firstIndex(where: { $0.batch == n }) else { return nil }
            return p.remove(at: i)
        }
        return try kept ?? makeState(batch: n)
    }

    public func returnLanes(_ s: RecurrentState) { lanePool.withLock { if $0.count < 16 { $0.append(s) } } }
}

/// The recurrent-module face of a model that does not run on recurrent states (an
/// OpenMythos language model, a sidecar, a spike decoder): it reports its sizes and
/// parameter count, and `run` refuses with where the model does run.
struct NonRecurrentStub: RecurrentModule {
    let dIn: Int, dOut: Int, parameters: Int
    /// Completes "... not on recurrent states", e.g. "an open_mythos model runs on token ids".
    let runsOn: String
    var inputSize: Int { dIn }
    var outputSize: Int { dOut }
    var stateSpecs: [StateSpec] { [] }
    var parameterCount: Int { parameters }
    func run(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int, time: Int,
             state: StateSlots, resets: UnsafePointer<UInt8>?, arena: Arena) throws {
        throw CortexError.unsupported(runsOn + ", not on recurrent states")
    }
}

extension Optional where Wrapped == [UInt8] {
    func withOptionalPointer<R>(_ body: (UnsafePointer<UInt8>?) throws -> R) rethrows -> R {
        switch self {
        case .none: return try body(nil)
        case .some(let a): return try a.withUnsafeBufferPointer { try body($0.baseAddress) }
        }
    }
}

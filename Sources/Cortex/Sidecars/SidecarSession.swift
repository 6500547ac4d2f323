
/// The memory of one conversation (or `batch` parallel streams) across every hooked
/// layer of a sidecar model: the layers' state tensors, and for fast-weight sidecars the
/// plasticity signals (loss EMA, phase counter, the controller input for the next
/// tokens), the segmenter and the last hidden state each layer saw.
///
/// Its size is fixed at creation (constant in the tokens seen). One thread at a time: a
/// concurrent call gets `CortexError.busy`. Every call is atomic: a failure leaves the
/// session as it was.
public final class SidecarSession: @unchecked Sendable {
    public let model: Model
    public let sidecar: SidecarModel
    public let batch: Int
    public let id: String

    /// All state tensors: per layer, per tensor, `[B, count]`, contiguous per layer.
    let storage: FloatBuffer
    /// Where layer `i`'s region starts and how long it is (floats).
    let layerRegions: [Range<Int>]
    /// Per layer, the pointer of each state tensor (into `storage`).
    let slots: [[UnsafeMutablePointer<Float>]]
    /// Per layer, the same pointers into `shadow` (a failed first call must not leave a
    /// half-advanced state; later calls of a proven shape run in place).
    private var shadowSlots: [[UnsafeMutablePointer<Float>]] = []
    private var shadow: FloatBuffer?
    private var provenShapes = Set<Int>()
    let arena = Arena()
    private let use = UseFlag()

    // Fast-weight sidecars only (empty otherwise).
    public internal(set) var signals: [PlasticitySignals]
    /// The controller input `[surprise, uncertainty, reward, phase]` of each stream for
    /// the next tokens (`[B, 4]`), set by `observe`.
    let controlInput: FloatBuffer
    public internal(set) var segmenters: [Segmenter]
    /// The last hidden state each layer saw, `[B, L, D]` (the segmenter's h).
    let lastHidden: FloatBuffer
    /// Tokens each stream has passed through the first hooked layer.
    public internal(set) var tokens: [Int]

    public init(model: Model, batch: Int, id: String) throws {
        let sc = try model.requireSidecar()
        guard batch >= 1, batch <= 1 << 16 else { throw CortexError.invalidArgument("batch must be in [1, 65536], got \(batch)") }
        try SidecarSession.validate(id: id)
        self.model = model
        sidecar = sc
        self.batch = batch
        self.id = id
        var regions: [Range<Int>] = [], offsets: [[Int]] = []
        var at = 0
        for layer in sc.layers {
            let start = at
            var o: [Int] = []
            for t in layer.stateTensors {
                o.append(at)
                at = try Checked.add(at, try Checked.mul(t.count, batch, "session size"), "session size")
            }
            offsets.append(o)
            regions.append(start..<at)
        }
        storage = try FloatBuffer(count: max(at, 1))
        let base = storage.pointer
        layerRegions = regions
        slots = offsets.map { $0.map { base + $0 } }
        let fw = sc.usesSignals
        signals = fw ? (0..<batch).map { _ in PlasticitySignals(period: sc.config.signalPeriod, decay: sc.config.signalDecay) } : []
        segmenters = fw ? (0..<batch).map { _ in Segmenter(open: sc.config.segmentOpen, close: sc.config.segmentClose) } : []
        controlInput = try FloatBuffer(count: batch * 4)
        lastHidden = try FloatBuffer(count: fw ? try Checked.mul(batch * sc.layers.count, sc.dModel, "session size") : 1)
        tokens = [Int](repeating: 0, count: batch)
        for b in 0..<batch { fresh(stream: b) }
    }

    static func validate(id: String) throws {
        guard !id.isEmpty, id.utf8.count <= 256 else { throw CortexError.invalidArgument("session id must be 1 to 256 bytes of UTF-8") }
        guard !id.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 }) else {
            throw CortexError.invalidArgument("session id must not contain control characters")
        }
    }

    /// Floats of state (every layer, every stream); constant in the tokens seen.
    public var stateFloats: Int { layerRegions.last?.upperBound ?? 0 }
    /// Bytes this session holds (state, signals, scratch excluded).
    public var memoryBytes: Int { 4 * (stateFloats + controlInput.count + lastHidden.count) }

    /// Run `body` as the only user of this session (else throw `.busy`), scratch rewound.
    public func exclusive<R>(_ body: () throws -> R) throws -> R {
        try use.acquire("the session")
        defer { use.release() }
        arena.reset()
        return try body()
    }

    /// Put stream `b` back to a fresh state. Call inside `exclusive` (or at init).
    func fresh(stream b: Int) {
        for (l, layer) in sidecar.layers.enumerated() {
            for (i, t) in layer.stateTensors.enumerated() {
                let row = slots[l][i] + b * t.count
                if let initial = t.initial { row.update(from: initial.data, count: t.count) }
                else { row.update(repeating: 0, count: t.count) }
            }
        }
        for i in 0..<4 { controlInput.pointer[b * 4 + i] = 0 }
        if sidecar.usesSignals {
            signals[b] = PlasticitySignals(period: sidecar.config.signalPeriod, decay: sidecar.config.signalDecay)
            segmenters[b] = Segmenter(open: sidecar.config.segmentOpen, close: sidecar.config.segmentClose)
            let per = sidecar.layers.count * sidecar.dModel
            (lastHidden.pointer + b * per).update(repeating: 0, count: per)
        }
        tokens[b] = 0
    }

    /// Reset the streams where `mask[b]` (all when nil) to a fresh state.
    public func reset(mask: [Bool]? = nil) throws {
        if let mask, mask.count != batch { throw CortexError.shapeMismatch("reset mask: expected \(batch) values, got \(mask.count)") }
        try exclusive { for b in 0..<batch where mask?[b] ?? true { fresh(stream: b) } }
    }

    /// A deep copy under another id (the original is unchanged).
    public func fork(id newID: String) throws -> SidecarSession {
        let copy = try SidecarSession(model: model, batch: batch, id: newID)
        try exclusive { try copy.assign(from: self) }
        return copy
    }

    /// Copy every field of `other` (same model and batch) into this session.
    func assign(from other: SidecarSession) throws {
        guard other.model === model, other.batch == batch else { throw CortexError.stateMismatch("sessions differ in model or batch") }
        storage.pointer.update(from: other.storage.pointer, count: stateFloats)
        controlInput.pointer.update(from: other.controlInput.pointer, count: controlInput.count)
        lastHidden.pointer.update(from: other.lastHidden.pointer, count: lastHidden.count)
        signals = other.signals
        segmenters = other.segmenters
        tokens = other.tokens
    }

    // MARK: compute

    /// The sidecar output `y [B, T, D]` of hooked layer `layer` for its normalised hidden
    /// states `h [B, T, D]`, advancing that layer's memory. `signals [B, T, 4]` overrides
    /// the controller input (fast weights; nil: the input `observe` set, every token).
    public func forward(layer: Int, h: UnsafePointer<Float>, time T: Int, signals: UnsafePointer<Float>?,
                        into y: UnsafeMutablePointer<Float>) throws {
        let slot = try sidecar.slot(ofLayer: layer)
        guard T >= 1, T <= 1 << 24 else { throw CortexError.invalidArgument("time must be >= 1, got \(T)") }
        try exclusive {
            let B = batch, D = sidecar.dModel, runner = sidecar.layers[slot]
            var sig = UnsafePointer(controlInput.pointer)
            if let signals { sig = signals }
            else if sidecar.usesSignals && T > 1 {
                let s = try arena.take(B * T * 4)
                for b in 0..<B { for t in 0..<T { (s + (b * T + t) * 4).update(from: controlInput.pointer + b * 4, count: 4) } }
                sig = UnsafePointer(s)
            }
            let key = T << 16 | slot
            if provenShapes.contains(key) {
                try runner.run(h: h, signals: sig, y: y, batch: B, time: T, state: slots[slot], arena: arena)
            } else {
                // First call of this shape: run on a copy, commit on success.
                let region = layerRegions[slot]
                if shadow == nil {
                    let widest = layerRegions.map(\.count).max() ?? 1
                    let buf = try FloatBuffer(count: max(widest, 1))
                    shadow = buf
                    shadowSlots = zip(slots, layerRegions).map { ptrs, r in ptrs.map { buf.pointer + ($0 - storage.pointer - r.lowerBound) } }
                }
                guard let shadow else { return }
                shadow.pointer.update(from: storage.pointer + region.lowerBound, count: region.count)
                try runner.run(h: h, signals: sig, y: y, batch: B, time: T, state: shadowSlots[slot], arena: arena)
                (storage.pointer + region.lowerBound).update(from: shadow.pointer, count: region.count)
                provenShapes.insert(key)
            }
            if sidecar.usesSignals {
                let L = sidecar.layers.count
                for b in 0..<B { (lastHidden.pointer + (b * L + slot) * D).update(from: h + (b * T + T - 1) * D, count: D) }
            }
            if slot == 0 { for b in 0..<B { tokens[b] += T } }
        }
    }

    /// Advance the plasticity signals of every stream by one token (fast weights): its
    /// loss, the entropy of the host's prediction, and a reward. Sets the controller input
    /// of the next tokens and feeds the segmenter.
    public func observe(losses: [Double], uncertainties: [Double], rewards: [Double]) throws {
        guard sidecar.usesSignals else {
            throw CortexError.unsupported("this sidecar (kind \(sidecar.config.kind.rawValue)) has no plasticity controller")
        }
        guard losses.count == batch, uncertainties.count == batch, rewards.count == batch else {
            throw CortexError.shapeMismatch("observe: expected \(batch) losses, uncertainties and rewards")
        }
        guard (losses + uncertainties + rewards).allSatisfy(\.isFinite) else {
            throw CortexError.nanInput("observe: losses, uncertainties and rewards must be finite")
        }
        try exclusive {
            let L = sidecar.layers.count, D = sidecar.dModel
            for b in 0..<batch {
                let v = signals[b].update(loss: losses[b], uncertainty: uncertainties[b], reward: rewards[b])
                for i in 0..<4 { controlInput.pointer[b * 4 + i] = v[i] }
                let h = UnsafeBufferPointer(start: lastHidden.pointer + b * L * D, count: L * D)
                segmenters[b].observe(loss: losses[b], ema: signals[b].ema ?? losses[b], h: h) { fastWeights(stream: b) }
            }
        }
    }

    /// Stream `b`'s U and V of every layer, concatenated in layer order.
    func fastWeights(stream b: Int) -> (u: [Float], v: [Float]) {
        var u: [Float] = [], v: [Float] = []
        for (l, layer) in sidecar.layers.enumerated() {
            let t = layer.stateTensors
            guard t.count == 2 else { continue }
            u += UnsafeBufferPointer(start: slots[l][0] + b * t[0].count, count: t[0].count)
            v += UnsafeBufferPointer(start: slots[l][1] + b * t[1].count, count: t[1].count)
        }
        return (u, v)
    }

    /// The controller input each stream's next tokens get, `[B, 4]`
    /// (`[surprise, uncertainty, reward, phase]`; zeros before the first `observe`).
    public func controllerInput() throws -> Tensor {
        try exclusive {
            let t = try Tensor(zeros: [batch, 4])
            t.data.update(from: controlInput.pointer, count: batch * 4)
            return t
        }
    }

    /// The closed segments of stream `b` (oldest first; at most the segmenter's capacity).
    public func segments(stream b: Int) throws -> [Segmenter.Segment] {
        guard sidecar.usesSignals else {
            throw CortexError.unsupported("this sidecar (kind \(sidecar.config.kind.rawValue)) has no segmenter")
        }
        guard b >= 0, b < batch else { throw CortexError.invalidArgument("stream \(b) is outside [0, \(batch))") }
        return try exclusive { segmenters[b].segments }
    }

    /// A copy of state tensor `name` of hooked layer `layer`, `[B, count]`.
    public func stateTensor(layer: Int, name: String) throws -> Tensor {
        let slot = try sidecar.slot(ofLayer: layer)
        let specs = sidecar.layers[slot].stateTensors
        guard let i = specs.firstIndex(where: { $0.name == name }) else {
            throw CortexError.invalidArgument("layer \(layer) has no state tensor '\(name)' (has: \(specs.map(\.name).joined(separator: ", ")))")
        }
        return try exclusive {
            let t = try Tensor(zeros: [batch, specs[i].count])
            t.data.update(from: slots[slot][i], count: batch * specs[i].count)
            return t
        }
    }
}

extension Model {
    /// The sidecar model, or a clear error for other architectures.
    public func requireSidecar() throws -> SidecarModel {
        guard let sidecar else {
            throw CortexError.unsupported("this is a '\(architecture)' model, not a sidecar (\"architecture\": \"cortex_sidecar\")")
        }
        return sidecar
    }
}

/// Serialised sidecar session (what the session store keeps, and `cx_session_to_bytes`):
///
///     "CXSESS01"            8 bytes magic
///     format version        u32 LE (1), reserved u32 (0)
///     model fingerprint     u64 LE (a session loads only into the sidecar that wrote it)
///     batch                 u64 LE
///     payload length        u64 LE
///     payload               safetensors (F32): "layers.<layer>.<name>" [B, count] for every
///                           state tensor; fast weights also "control_input" [B, 4],
///                           "last_hidden" [B, L·D], per stream b and closed segment i
///                           "segments.<b>.<i>.<h_mean|h_mean_square|delta_u|delta_v>",
///                           per open segment "open.<b>.<u|v>"; metadata "session": JSON
///                           with the id, tokens per stream, the signals (EMA, step) and
///                           the segmenters' counters (and an open segment's exact sums)
///     checksum              u64 LE, FNV-1a of everything after the magic
///
/// Decoding checks everything (magic, version, fingerprint, sizes, checksum, names,
/// shapes, values) before building a session.
public enum SessionCodec {
    public static let magic = Array("CXSESS01".utf8)
    static let envelope = BlobEnvelope(magic: magic, fieldCount: 1, context: "session bytes", noun: "Cortex session",
                                       shortNoun: "session", owner: "sidecar", thisOwner: "this one")

    public static func encode(_ s: SidecarSession) throws -> [UInt8] {
        let payload: [UInt8] = try s.exclusive {
            let sc = s.sidecar, B = s.batch
            var tensors: [(String, Tensor)] = []
            func add(_ name: String, _ shape: [Int], _ src: UnsafePointer<Float>) throws {
                let t = try Tensor(zeros: shape)
                t.data.update(from: src, count: t.count)
                tensors.append((name, t))
            }
            func add(_ name: String, _ values: [Float]) throws {
                try values.withUnsafeBufferPointer { p in
                    if let base = p.baseAddress { try add(name, [values.count], base) }
                    else { tensors.append((name, try Tensor(zeros: [0]))) }
                }
            }
            for (l, layer) in sc.layers.enumerated() {
                for (i, t) in layer.stateTensors.enumerated() {
                    try add("layers.\(sc.config.layers[l]).\(t.name)", [B, t.count], s.slots[l][i])
                }
            }
            var meta: [(String, JSON)] = [("id", .string(s.id)), ("tokens", .array(s.tokens.map { .number(Double($0)) }))]
            if sc.usesSignals {
                try add("control_input", [B, 4], s.controlInput.pointer)
                try add("last_hidden", [B, sc.layers.count * sc.dModel], s.lastHidden.pointer)
                meta.append(("signals", .array(s.signals.map { g in
                    .object([("ema", g.ema.map { .number($0) } ?? .null), ("step", .number(Double(g.step)))])
                })))
                var segs: [JSON] = []
                for (b, seg) in s.segmenters.enumerated() {
                    for (i, x) in seg.segments.enumerated() {
                        try add("segments.\(b).\(i).h_mean", x.hMean)
                        try add("segments.\(b).\(i).h_mean_square", x.hMeanSquare)
                        try add("segments.\(b).\(i).delta_u", x.deltaU)
                        try add("segments.\(b).\(i).delta_v", x.deltaV)
                    }
                    var open = JSON.null
                    if let c = seg.current {
                        try add("open.\(b).u", c.u)
                        try add("open.\(b).v", c.v)
                        open = .object([("start", .number(Double(c.start))), ("count", .number(Double(c.count))),
                                        ("sum", .array(c.sum.map { .number($0) })),
                                        ("sum_square", .array(c.sumSquare.map { .number($0) }))])
                    }
                    segs.append(.object([("t", .number(Double(seg.t))), ("dropped", .number(Double(seg.dropped))),
                                         ("bounds", .array(seg.segments.map { .array([.number(Double($0.start)), .number(Double($0.end))]) })),
                                         ("open", open)]))
                }
                meta.append(("segmenters", .array(segs)))
            }
            return try SafetensorsFile.write(tensors, metadata: ["format": "cortex-session", "session": JSON.object(meta).serialized])
        }
        return envelope.seal(fingerprint: s.model.fingerprint, fields: [UInt64(s.batch)], payload: payload)
    }

    /// The session in `bytes`, for `model` (the sidecar that wrote it). `id` renames it.
    public static func decode(_ bytes: [UInt8], model: Model, id newID: String? = nil) throws -> SidecarSession {
        let sc = try model.requireSidecar()
        func bad(_ s: String) -> CortexError { .parse("session bytes: " + s) }
        let (fields, file) = try envelope.open(bytes, fingerprint: model.fingerprint,
                                                    requireFinite: model.nanPolicy == .reject) { f in
            guard f[0] >= 1, f[0] <= 1 << 16 else { throw bad("invalid batch \(f[0])") }
        }
        let batch = fields[0]
        guard let text = file.metadata["session"] else { throw bad("metadata 'session' is missing") }
        let meta = try JSON.parse(text)
        guard let savedID = meta["id"]?.string else { throw bad("metadata: id is missing") }
        let B = Int(batch)
        let s = try SidecarSession(model: model, batch: B, id: newID ?? savedID)
        var used = Set<String>()
        func load(_ name: String, _ shape: [Int], into dst: UnsafeMutablePointer<Float>) throws {
            guard let e = file.entries[name] else { throw CortexError.missingTensor("session bytes: tensor '\(name)' is missing") }
            guard e.dtype == .f32, e.shape == shape else {
                throw CortexError.stateMismatch("session bytes: '\(name)' is \(e.dtype.rawValue) \(e.shape), expected F32 \(shape)")
            }
            let t = try file.tensor(name)
            dst.update(from: t.data, count: t.count)
            used.insert(name)
        }
        func vector(_ name: String) throws -> [Float] {
            guard let e = file.entries[name], e.dtype == .f32, e.shape.count == 1 else {
                throw CortexError.missingTensor("session bytes: vector '\(name)' is missing or not F32 [n]")
            }
            let t = try file.tensor(name)
            used.insert(name)
            return Array(UnsafeBufferPointer(start: t.data, count: t.count))
        }
        func count(_ j: JSON?, _ what: String) throws -> Int {
            guard let v = j?.int, v >= 0 else { throw bad("metadata: \(what) must be a non-negative integer") }
            return v
        }
        for (l, layer) in sc.layers.enumerated() {
            for (i, t) in layer.stateTensors.enumerated() {
                try load("layers.\(sc.config.layers[l]).\(t.name)", [B, t.count], into: s.slots[l][i])
            }
        }
        guard let tokens = meta["tokens"]?.array, tokens.count == B else { throw bad("metadata: tokens must list \(B) counts") }
        s.tokens = try tokens.map { try count($0, "tokens") }
        if sc.usesSignals {
            let L = sc.layers.count, D = sc.dModel
            try load("control_input", [B, 4], into: s.controlInput.pointer)
            try load("last_hidden", [B, L * D], into: s.lastHidden.pointer)
            guard let sig = meta["signals"]?.array, sig.count == B, let segs = meta["segmenters"]?.array, segs.count == B else {
                throw bad("metadata: signals and segmenters must have \(B) entries")
            }
            let uCount = sc.layers.reduce(0) { $0 + ($1.stateTensors.first?.count ?? 0) }
            for b in 0..<B {
                if let e = sig[b]["ema"], !e.isNull {
                    guard let v = e.double, v.isFinite else { throw bad("metadata: signals[\(b)].ema must be a number") }
                    s.signals[b].ema = v
                }
                s.signals[b].step = try count(sig[b]["step"], "signals step")
                var seg = s.segmenters[b]
                seg.t = try count(segs[b]["t"], "segmenter t")
                seg.dropped = try count(segs[b]["dropped"], "segmenter dropped")
                guard let bounds = segs[b]["bounds"]?.array, bounds.count <= seg.capacity else { throw bad("metadata: segment bounds") }
                for (i, pair) in bounds.enumerated() {
                    guard let p = pair.array, p.count == 2 else { throw bad("metadata: segment bounds must be [start, end] pairs") }
                    let x = Segmenter.Segment(start: try count(p[0], "segment start"), end: try count(p[1], "segment end"),
                                              hMean: try vector("segments.\(b).\(i).h_mean"),
                                              hMeanSquare: try vector("segments.\(b).\(i).h_mean_square"),
                                              deltaU: try vector("segments.\(b).\(i).delta_u"),
                                              deltaV: try vector("segments.\(b).\(i).delta_v"))
                    guard x.hMean.count == L * D, x.hMeanSquare.count == L * D, x.deltaU.count == uCount, x.deltaV.count == uCount else {
                        throw CortexError.stateMismatch("session bytes: segment \(i) of stream \(b) has the wrong sizes")
                    }
                    seg.segments.append(x)
                }
                if let o = segs[b]["open"], !o.isNull {
                    guard let sum = o["sum"]?.array?.compactMap(\.double), let sq = o["sum_square"]?.array?.compactMap(\.double),
                          sum.count == L * D, sq.count == L * D else { throw bad("metadata: open segment sums must have \(L * D) numbers") }
                    let u = try vector("open.\(b).u"), v = try vector("open.\(b).v")
                    guard u.count == uCount, v.count == uCount else { throw CortexError.stateMismatch("session bytes: open segment sizes") }
                    seg.current = Segmenter.Open(start: try count(o["start"], "open start"), count: try count(o["count"], "open count"),
                                                 sum: sum, sumSquare: sq, u: u, v: v)
                }
                s.segmenters[b] = seg
            }
        }
        guard let extra = file.names.first(where: { !used.contains($0) }) else { return s }
        throw bad("unexpected tensor '\(extra)'")
    }
}

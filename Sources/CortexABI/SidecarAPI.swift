import CCortex
import Cortex

// Memory sidecars through the C ABI: sessions, the per-layer forward, plasticity
// signals, segments, and the SQLite session store.

/// A float vector as an output handle.
func publishVector(_ v: [Float]) throws -> OpaquePointer {
    let t = try Tensor(zeros: [v.count])
    v.withUnsafeBufferPointer { if let b = $0.baseAddress { t.data.update(from: b, count: v.count) } }
    return publishTensor(t)
}

/// Per-stream values `[B]` (any real or integer dtype) as doubles; nil for a NULL tensor.
func readPerStream(_ p: UnsafePointer<DLTensor>?, _ name: StaticString, batch B: Int) throws -> [Double]? {
    guard p != nil else { return nil }
    let t = try InputTensor(p, name: name, maskAllowed: true)
    guard t.shape.count == 1, t.shape[0] == B else { throw CortexError.shapeMismatch("\(name): expected (B=\(B)), got \(t.description)") }
    if t.kind == .bool {
        var m = [UInt8](repeating: 0, count: B)
        m.withUnsafeMutableBufferPointer { if let p = $0.baseAddress { t.readMask(into: p) } }
        return m.map { $0 != 0 ? 1 : 0 }
    }
    if let ints = t.readIntegers() { return ints.map(Double.init) }
    let buf = try FloatBuffer(count: B)
    t.readFloats(into: buf.pointer)
    return (0..<B).map { Double(buf.pointer[$0]) }
}

@_cdecl("cx_session_create")
public func cx_session_create(_ model: OpaquePointer?, _ id: UnsafePointer<CChar>?, _ batch: Int64,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_session_create") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let sid = try string(id, "id")
        let out = try requireOut(out, "out")
        guard batch >= 1, batch <= 1 << 16 else { throw CortexError.invalidArgument("batch must be in [1, 65536], got \(batch)") }
        out.pointee = publish(try SidecarSession(model: m, batch: Int(batch), id: sid), .session)
    }
}

@_cdecl("cx_session_free")
public func cx_session_free(_ session: OpaquePointer?) { retire(session, .session) }

@_cdecl("cx_session_info")
public func cx_session_info(_ session: OpaquePointer?, _ batch: UnsafeMutablePointer<Int64>?,
                            _ tokens: UnsafeMutablePointer<Int64>?, _ bytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_session_info") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let counts = try s.exclusive { s.tokens }
        batch?.pointee = Int64(s.batch)
        tokens?.pointee = Int64(counts.max() ?? 0)
        bytes?.pointee = Int64(s.memoryBytes)
    }
}

@_cdecl("cx_session_id")
public func cx_session_id(_ session: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                          _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_session_id") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        try copyOut(s.id, buf, cap, needed)
    }
}

@_cdecl("cx_session_reset")
public func cx_session_reset(_ session: OpaquePointer?, _ mask: UnsafePointer<DLTensor>?) -> Int32 {
    entry("cx_session_reset") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        try s.reset(mask: try readPerStream(mask, "mask", batch: s.batch)?.map { $0 != 0 })
    }
}

@_cdecl("cx_session_fork")
public func cx_session_fork(_ session: OpaquePointer?, _ id: UnsafePointer<CChar>?,
                            _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_session_fork") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let sid = try string(id, "id")
        let out = try requireOut(out, "out")
        out.pointee = publish(try s.fork(id: sid), .session)
    }
}

@_cdecl("cx_session_to_bytes")
public func cx_session_to_bytes(_ session: OpaquePointer?, _ buf: UnsafeMutableRawPointer?, _ cap: Int,
                                _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_session_to_bytes") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        try copyOut(bytes: try SessionCodec.encode(s), buf, cap, try requireOut(needed, "needed"))
    }
}

@_cdecl("cx_session_from_bytes")
public func cx_session_from_bytes(_ model: OpaquePointer?, _ buf: UnsafeRawPointer?, _ len: Int,
                                  _ id: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_session_from_bytes") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let newID = id == nil ? nil : try string(id, "id")
        let out = try requireOut(out, "out")
        let bytes = try inputBytes(buf, len)
        out.pointee = publish(try SessionCodec.decode(bytes, model: m, id: newID), .session)
    }
}

@_cdecl("cx_session_get_state")
public func cx_session_get_state(_ session: OpaquePointer?, _ layer: Int32, _ name: UnsafePointer<CChar>?,
                                 _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_session_get_state") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let n = try string(name, "name")
        let out = try requireOut(out, "out")
        out.pointee = publishTensor(try s.stateTensor(layer: Int(layer), name: n))
    }
}

/// Shared body of cx_model_forward_sidecar(_into): validate everything, then run atomically.
func sidecarForward(_ modelP: OpaquePointer?, _ layer: Int32, _ hP: UnsafePointer<DLTensor>?, _ sessionP: OpaquePointer?,
                    _ signalsP: UnsafePointer<DLTensor>?, output: OutputTarget) throws {
    let m = try resolve(modelP, .model, "model", as: Model.self)
    let s = try resolve(sessionP, .session, "session", as: SidecarSession.self)
    let sc = try m.requireSidecar()
    guard s.model === m else { throw CortexError.stateMismatch("session was created for another model") }
    _ = try sc.slot(ofLayer: Int(layer))
    let B = s.batch, D = sc.dModel
    let h = try InputTensor(hP, name: "h")
    let step = h.shape.count == 2
    guard h.shape.count == 2 || h.shape.count == 3, h.shape[0] == B, h.shape[h.shape.count - 1] == D, h.count > 0 else {
        throw CortexError.shapeMismatch("h: expected (B=\(B), T, D=\(D)) or (B=\(B), D=\(D)) float32, got \(h.description)")
    }
    let T = step ? 1 : h.shape[1]
    var sig: FloatBuffer? = nil
    if signalsP != nil {
        guard sc.usesSignals else { throw CortexError.unsupported("signals: this sidecar (kind \(sc.config.kind.rawValue)) has no controller") }
        let g = try InputTensor(signalsP, name: "signals")
        let ok = step ? g.shape.count == 2 && g.shape[0] == B && g.shape[1] == 4
            : g.shape.count == 3 && g.shape[0] == B && g.shape[1] == T && g.shape[2] == 4
        guard ok else {
            throw CortexError.shapeMismatch("signals: expected \(step ? "(B=\(B), 4)" : "(B=\(B), T=\(T), 4)"), got \(g.description)")
        }
        let buf = try FloatBuffer(count: B * T * 4)
        g.readFloats(into: buf.pointer)
        try Model.NaNPolicy.reject.check(buf.pointer, count: B * T * 4, name: "signals")  // always: they steer the memory
        sig = buf
    }
    var shape = Dims()
    shape.append(B)
    if !step { shape.append(T) }
    shape.append(D)
    var into: OutputTensor? = nil
    var allocOut: UnsafeMutablePointer<OpaquePointer?>? = nil
    switch output {
    case .allocate(let p): allocOut = try requireOut(p, "y")
    case .into(let p): into = try OutputTensor(p, name: "y", expected: shape)
    }
    let count = B * T * D
    let y = try FloatBuffer(count: count, zeroed: false)
    var hBuf: FloatBuffer? = nil
    let hPtr: UnsafePointer<Float>
    if let direct = h.directFloats { hPtr = direct } else {
        let b = try FloatBuffer(count: count, zeroed: false)
        h.readFloats(into: b.pointer)
        hBuf = b
        hPtr = UnsafePointer(b.pointer)
    }
    try m.nanPolicy.check(hPtr, count: count, name: "h")
    try withExtendedLifetime(hBuf) {
        try s.forward(layer: Int(layer), h: hPtr, time: T, signals: sig.map { UnsafePointer($0.pointer) }, into: y.pointer)
    }
    if let into { into.write(from: y.pointer, count: count) }
    if let allocOut { allocOut.pointee = publish(TensorHandle(buffer: y, shape: shape.array), .tensor) }
}

@_cdecl("cx_model_forward_sidecar")
public func cx_model_forward_sidecar(_ model: OpaquePointer?, _ layer: Int32, _ h: UnsafePointer<DLTensor>?,
                               _ session: OpaquePointer?, _ signals: UnsafePointer<DLTensor>?,
                               _ y: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_forward_sidecar") { try sidecarForward(model, layer, h, session, signals, output: .allocate(y)) }
}

@_cdecl("cx_model_forward_sidecar_into")
public func cx_model_forward_sidecar_into(_ model: OpaquePointer?, _ layer: Int32, _ h: UnsafePointer<DLTensor>?,
                                    _ session: OpaquePointer?, _ signals: UnsafePointer<DLTensor>?,
                                    _ y: UnsafeMutablePointer<DLTensor>?) -> Int32 {
    entry("cx_model_forward_sidecar_into") { try sidecarForward(model, layer, h, session, signals, output: .into(y)) }
}

@_cdecl("cx_session_observe")
public func cx_session_observe(_ session: OpaquePointer?, _ logits: UnsafePointer<DLTensor>?,
                               _ tokens: UnsafePointer<DLTensor>?, _ losses: UnsafePointer<DLTensor>?,
                               _ rewards: UnsafePointer<DLTensor>?) -> Int32 {
    entry("cx_session_observe") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let B = s.batch
        var loss = try readPerStream(losses, "losses", batch: B)
        var uncertainty = [Double](repeating: 0, count: B)
        if logits != nil {
            let l = try InputTensor(logits, name: "logits")
            guard l.shape.count == 2, l.shape[0] == B, l.shape[1] >= 1 else {
                throw CortexError.shapeMismatch("logits: expected (B=\(B), V) float32, got \(l.description)")
            }
            let V = l.shape[1]
            let buf = try FloatBuffer(count: B * V, zeroed: false)
            l.readFloats(into: buf.pointer)
            try Model.NaNPolicy.reject.check(buf.pointer, count: B * V, name: "logits")  // always: they become losses
            let ids = try tokens == nil ? nil : readPerStream(tokens, "tokens", batch: B)
            if let ids, !ids.allSatisfy({ $0 >= 0 && $0 < Double(V) && $0.rounded() == $0 }) {
                throw CortexError.invalidArgument("tokens: every id must be in [0, \(V))")
            }
            var fromLogits = [Double](repeating: 0, count: B)
            for b in 0..<B {
                let e = PlasticitySignals.entropy(buf.pointer + b * V, count: V, token: ids.map { Int($0[b]) })
                uncertainty[b] = e.entropy
                if let l = e.loss { fromLogits[b] = l }
            }
            if loss == nil, ids != nil { loss = fromLogits }
        } else if tokens != nil {
            throw CortexError.invalidArgument("tokens need logits (the loss is −log softmax(logits)[token])")
        }
        guard let loss else { throw CortexError.invalidArgument("observe needs losses, or logits with the tokens that followed") }
        let reward = try readPerStream(rewards, "rewards", batch: B) ?? [Double](repeating: 0, count: B)
        try s.observe(losses: loss, uncertainties: uncertainty, rewards: reward)
    }
}

@_cdecl("cx_session_signals")
public func cx_session_signals(_ session: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_session_signals") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let out = try requireOut(out, "out")
        out.pointee = publishTensor(try s.controllerInput())
    }
}

@_cdecl("cx_session_segment_count")
public func cx_session_segment_count(_ session: OpaquePointer?, _ stream: Int64, _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_session_segment_count") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let c = try requireOut(count, "count")
        c.pointee = Int64(try s.segments(stream: Int(stream)).count)
    }
}

@_cdecl("cx_session_segment")
public func cx_session_segment(_ session: OpaquePointer?, _ stream: Int64, _ index: Int64,
                               _ start: UnsafeMutablePointer<Int64>?, _ end: UnsafeMutablePointer<Int64>?,
                               _ hMean: UnsafeMutablePointer<OpaquePointer?>?, _ hVar: UnsafeMutablePointer<OpaquePointer?>?,
                               _ deltaU: UnsafeMutablePointer<OpaquePointer?>?,
                               _ deltaV: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_session_segment") {
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        let a = try requireOut(start, "start"), b = try requireOut(end, "end")
        let outs = [try requireOut(hMean, "h_mean"), try requireOut(hVar, "h_var"),
                    try requireOut(deltaU, "delta_u"), try requireOut(deltaV, "delta_v")]
        let all = try s.segments(stream: Int(stream))
        guard index >= 0, index < Int64(all.count) else {
            throw CortexError.invalidArgument("index \(index) is outside [0, \(all.count)) (segments of stream \(stream))")
        }
        let seg = all[Int(index)]
        let handles = [try publishVector(seg.hMean), try publishVector(seg.hVariance),
                       try publishVector(seg.deltaU), try publishVector(seg.deltaV)]
        a.pointee = Int64(seg.start)
        b.pointee = Int64(seg.end)
        for (o, h) in zip(outs, handles) { o.pointee = h }
    }
}

// MARK: - store

@_cdecl("cx_store_default_options")
public func cx_store_default_options() -> cx_store_options {
    cx_store_options(struct_size: UInt32(MemoryLayout<cx_store_options>.size), reserved: 0, ttl_seconds: 0, max_bytes: 0,
                     reserved2: (0, 0, 0, 0))
}

@_cdecl("cx_store_create")
public func cx_store_create(_ path: UnsafePointer<CChar>?, _ opts: UnsafePointer<cx_store_options>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_store_create") {
        let p = try string(path, "path")
        let out = try requireOut(out, "out")
        let v = try readOptionsStruct(opts, defaults: cx_store_default_options(), what: "store")
        try requireZero(v.reserved); try requireZero(v.reserved2)
        // SessionStore checks the values.
        let o = SessionStore.Options(ttl: v.ttl_seconds, maxBytes: Int(v.max_bytes))
        out.pointee = publish(try SessionStore(path: p, options: o), .store)
    }
}

@_cdecl("cx_store_free")
public func cx_store_free(_ store: OpaquePointer?) { retire(store, .store) }

@_cdecl("cx_store_save")
public func cx_store_save(_ store: OpaquePointer?, _ session: OpaquePointer?) -> Int32 {
    entry("cx_store_save") {
        let st = try resolve(store, .store, "store", as: SessionStore.self)
        let s = try resolve(session, .session, "session", as: SidecarSession.self)
        try st.save(s)
    }
}

@_cdecl("cx_store_load")
public func cx_store_load(_ store: OpaquePointer?, _ model: OpaquePointer?, _ id: UnsafePointer<CChar>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_store_load") {
        let st = try resolve(store, .store, "store", as: SessionStore.self)
        let m = try resolve(model, .model, "model", as: Model.self)
        let sid = try string(id, "id")
        let out = try requireOut(out, "out")
        out.pointee = publish(try st.load(id: sid, model: m), .session)
    }
}

@_cdecl("cx_store_delete")
public func cx_store_delete(_ store: OpaquePointer?, _ id: UnsafePointer<CChar>?, _ existed: UnsafeMutablePointer<Int32>?) -> Int32 {
    entry("cx_store_delete") {
        let st = try resolve(store, .store, "store", as: SessionStore.self)
        let sid = try string(id, "id")
        let found = try st.delete(id: sid)
        existed?.pointee = found ? 1 : 0
    }
}

@_cdecl("cx_store_list_json")
public func cx_store_list_json(_ store: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                               _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_store_list_json") {
        let st = try resolve(store, .store, "store", as: SessionStore.self)
        let doc = JSON.array(try st.list().map { e in
            .object([("id", .string(e.id)), ("bytes", .number(Double(e.bytes))), ("fingerprint", .string(e.fingerprint)),
                     ("updated", .number(e.updated)), ("accessed", .number(e.accessed))])
        })
        try copyOut(doc.serialized, buf, cap, needed)
    }
}

@_cdecl("cx_store_purge_expired")
public func cx_store_purge_expired(_ store: OpaquePointer?, _ removed: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_store_purge_expired") {
        let st = try resolve(store, .store, "store", as: SessionStore.self)
        let n = try st.purgeExpired()
        removed?.pointee = Int64(n)
    }
}

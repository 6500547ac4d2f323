/// Serialised OpenMythos KV cache:
///
///     "CXKVCAC1"            8 bytes magic
///     format version        u32 LE (1), reserved u32 (0)
///     model fingerprint     u64 LE
///     batch, position       u64 LE each
///     payload length        u64 LE
///     payload               safetensors: per layer "<prelude|loop|coda>.<i>.<k>",
///                           stream k as F32 [B, tokens, width] (GQA: 0 keys, 1 values;
///                           MLA: 0 c_kv, 1 rotated shared key)
///     checksum              u64 LE, FNV-1a of everything after the magic
///
/// MLA's kv_up rows are not stored: they are recomputed on load. Everything is checked
/// (magic, version, fingerprint, lengths, checksum, names, shapes) before use.
public enum MythosCacheCodec {
    public static let magic = Array("CXKVCAC1".utf8)
    static let envelope = BlobEnvelope(magic: magic, fieldCount: 2, context: "cache bytes", noun: "Cortex KV cache",
                                       shortNoun: "cache", owner: "model", thisOwner: "this model")

    static func name(_ key: MythosModel.LayerKey) -> String {
        switch key {
        case .prelude(let i): return "prelude.\(i)"
        case .loop(let t): return "loop.\(t)"
        case .coda(let i): return "coda.\(i)"
        }
    }

    public static func encode(_ cache: MythosCache) throws -> [UInt8] {
        let payload: [UInt8] = try cache.exclusive {
            var tensors: [(String, Tensor)] = []
            let keys = cache.layers.keys.sorted { name($0) < name($1) }
            for key in keys {
                guard let l = cache.layers[key] else { continue }
                for i in 0..<l.persistent {
                    let w = l.widths[i]
                    let t = try Tensor(zeros: [l.batch, l.length, w])
                    for b in 0..<l.batch where l.length > 0 {
                        l.read(i, b, from: 0, rows: l.length, into: t.data + b * l.length * w)
                    }
                    tensors.append(("\(name(key)).\(i)", t))
                }
            }
            return try SafetensorsFile.write(tensors, metadata: ["format": "cortex-kv-cache"])
        }
        return envelope.seal(fingerprint: cache.model.fingerprint, fields: [UInt64(cache.batch), UInt64(cache.position)],
                             payload: payload)
    }

    public static func decode(_ bytes: [UInt8], model: Model) throws -> MythosCache {
        let m = try model.requireMythos()
        func bad(_ s: String) -> CortexError { .parse("cache bytes: " + s) }
        let (fields, file) = try envelope.open(bytes, fingerprint: model.fingerprint,
                                                    requireFinite: model.nanPolicy == .reject) { f in
            guard f[0] >= 1, f[0] <= 1 << 20 else { throw bad("invalid batch \(f[0])") }
            guard f[1] <= UInt64(m.config.maxSeqLen) else { throw bad("position \(f[1]) exceeds max_seq_len") }
        }
        let batch = fields[0], position = fields[1]
        let cache = try MythosCache(model: model, mythos: m, batch: Int(batch))
        // Group the tensors by layer.
        var byLayer: [String: [Int: String]] = [:]
        for n in file.names {
            guard let dot = n.lastIndex(of: "."), let k = Int(n[n.index(after: dot)...]) else { throw bad("unexpected tensor '\(n)'") }
            byLayer[String(n[..<dot]), default: [:]][k] = n
        }
        for (layerName, streams) in byLayer {
            let parts = layerName.split(separator: ".")
            guard parts.count == 2, let i = Int(parts[1]), i >= 0 else { throw bad("unexpected layer '\(layerName)'") }
            let key: MythosModel.LayerKey, block: MythosBlock
            switch parts[0] {
            case "prelude" where i < m.prelude.count: key = .prelude(i); block = m.prelude[i]
            case "coda" where i < m.coda.count: key = .coda(i); block = m.coda[i]
            case "loop" where i < 1 << 16: key = .loop(i); block = m.block
            default: throw bad("layer '\(layerName)' does not exist in this model")
            }
            let layer = try cache.layer(key, block: block)
            guard streams.count == layer.persistent, (0..<layer.persistent).allSatisfy({ streams[$0] != nil }) else {
                throw bad("layer '\(layerName)' needs streams 0..<\(layer.persistent)")
            }
            var tokens = -1
            for s in 0..<layer.persistent {
                guard let n = streams[s], let e = file.entries[n], e.dtype == .f32, e.shape.count == 3,
                      e.shape[0] == Int(batch), e.shape[2] == layer.widths[s] else {
                    throw CortexError.stateMismatch("cache bytes: '\(layerName).\(s)' has the wrong dtype or shape")
                }
                guard tokens < 0 || tokens == e.shape[1] else { throw bad("layer '\(layerName)' streams differ in length") }
                tokens = e.shape[1]
            }
            try layer.reserve(tokens)
            for s in 0..<layer.persistent {
                let t = try file.tensor("\(layerName).\(s)"), w = layer.widths[s]
                for b in 0..<Int(batch) where tokens > 0 {
                    try layer.write(s, b, at: 0, rows: tokens, from: t.data + b * tokens * w)
                }
            }
            layer.setLength(tokens)
            try block.attention.rebuildDerived(layer, from: 0, arena: cache.arena)
        }
        cache.arena.reset()
        cache.advance(to: Int(position))
        return cache
    }
}

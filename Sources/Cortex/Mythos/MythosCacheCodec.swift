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
    static let headerSize = 8 + 8 + 8 + 8 + 8 + 8

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
                        (t.data + b * l.length * w).update(from: l.base(i, b), count: l.length * w)
                    }
                    tensors.append(("\(name(key)).\(i)", t))
                }
            }
            return try SafetensorsFile.write(tensors, metadata: ["format": "cortex-kv-cache"])
        }
        var out = magic
        LittleEndian.append(&out, 1)
        LittleEndian.append(&out, cache.model.fingerprint)
        LittleEndian.append(&out, UInt64(cache.batch))
        LittleEndian.append(&out, UInt64(cache.position))
        LittleEndian.append(&out, UInt64(payload.count))
        out += payload
        LittleEndian.append(&out, FNV1a64.hash(Array(out[8...])))
        return out
    }

    public static func decode(_ bytes: [UInt8], model: Model) throws -> MythosCache {
        let m = try model.requireMythos()
        func bad(_ s: String) -> CortexError { .parse("cache bytes: " + s) }
        guard bytes.count >= headerSize + 8 else { throw bad("\(bytes.count) bytes is too short for a Cortex KV cache") }
        guard Array(bytes[0..<8]) == magic else { throw bad("bad magic (not a Cortex KV cache)") }
        guard LittleEndian.u64(bytes, 8) == 1 else { throw CortexError.stateMismatch("cache bytes: format version or reserved field is not (1, 0)") }
        guard LittleEndian.u64(bytes, 16) == model.fingerprint else {
            throw CortexError.stateMismatch("cache bytes: saved by model \(LittleEndian.u64(bytes, 16).hex16), not this model (\(model.fingerprint.hex16))")
        }
        let batch = LittleEndian.u64(bytes, 24), position = LittleEndian.u64(bytes, 32), len = LittleEndian.u64(bytes, 40)
        guard batch >= 1, batch <= 1 << 20 else { throw bad("invalid batch \(batch)") }
        guard position <= UInt64(m.config.maxSeqLen) else { throw bad("position \(position) exceeds max_seq_len") }
        guard len == UInt64(bytes.count - headerSize - 8) else { throw bad("payload length does not match the blob size") }
        guard FNV1a64.hash(Array(bytes[8..<(bytes.count - 8)])) == LittleEndian.u64(bytes, bytes.count - 8) else {
            throw bad("checksum mismatch (damaged cache)")
        }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(bytes: Array(bytes[headerSize..<(bytes.count - 8)])) } catch let e as CortexError {
            throw e.prefixed("cache bytes")
        }
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
                    layer.base(s, b).update(from: t.data + b * tokens * w, count: tokens * w)
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

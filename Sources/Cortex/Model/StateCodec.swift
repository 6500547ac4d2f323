/// Serialised recurrent state:
///
///     "CXSTATE1"            8 bytes magic
///     format version        u32 LE (1)
///     reserved              u32 LE (0)
///     model fingerprint     u64 LE
///     batch                 u64 LE
///     payload length        u64 LE
///     payload               safetensors: one F32 tensor [B, ...] per state path
///     checksum              u64 LE, FNV-1a of everything after the magic
///
/// Everything is checked before any value is used: magic, version, reserved = 0,
/// fingerprint, lengths, checksum, then the exact set of names and shapes the model
/// expects, and, for a model loaded with the reject NaN policy, that every value is
/// finite.
public enum StateCodec {
    public static let magic = Array("CXSTATE1".utf8)
    public static let version: UInt32 = 1
    static let headerSize = 8 + 4 + 4 + 8 + 8 + 8

    public static func encode(_ state: RecurrentState) throws -> [UInt8] {
        let payload = try state.exclusive {
            try SafetensorsFile.write(Array(zip(state.model.allStateSpecs.map(\.name), state.tensors)),
                                      metadata: ["format": "cortex-state"])
        }
        var out = magic
        LittleEndian.append(&out, UInt64(version))  // version (u32) + reserved (u32) as one LE u64
        LittleEndian.append(&out, state.model.fingerprint)
        LittleEndian.append(&out, UInt64(state.batch))
        LittleEndian.append(&out, UInt64(payload.count))
        out.append(contentsOf: payload)
        LittleEndian.append(&out, FNV1a64.hash(Array(out[8...])))
        return out
    }

    public static func decode(_ bytes: [UInt8], model: Model) throws -> RecurrentState {
        guard bytes.count >= headerSize + 8 else {
            throw CortexError.parse("state bytes: \(bytes.count) bytes is too short for a Cortex state")
        }
        guard Array(bytes[0..<8]) == magic else { throw CortexError.parse("state bytes: bad magic (not a Cortex state)") }
        let version = LittleEndian.u32(bytes, 8)
        guard version == StateCodec.version else {
            throw CortexError.stateMismatch("state bytes: format version \(version), this build reads \(StateCodec.version)")
        }
        guard LittleEndian.u32(bytes, 12) == 0 else { throw CortexError.parse("state bytes: reserved header field is not zero (damaged state)") }
        let fingerprint = LittleEndian.u64(bytes, 16)
        guard fingerprint == model.fingerprint else {
            throw CortexError.stateMismatch("state bytes: saved by model \(fingerprint.hex16), not this model (\(model.fingerprint.hex16))")
        }
        let batch64 = LittleEndian.u64(bytes, 24)
        guard batch64 >= 1, batch64 <= UInt64(RecurrentState.maxBatch) else {
            throw CortexError.parse("state bytes: invalid batch \(batch64)")
        }
        let len = LittleEndian.u64(bytes, 32)
        guard len == UInt64(bytes.count - headerSize - 8) else {
            throw CortexError.parse("state bytes: payload length \(len) does not match the blob size")
        }
        let payload = Array(bytes[headerSize..<(bytes.count - 8)])
        guard FNV1a64.hash(Array(bytes[8..<(bytes.count - 8)])) == LittleEndian.u64(bytes, bytes.count - 8) else {
            throw CortexError.parse("state bytes: checksum mismatch (damaged state)")
        }
        var file: SafetensorsFile
        do { file = try SafetensorsFile(bytes: payload) } catch let e as CortexError { throw e.prefixed("state bytes") }
        // A checksum does not stop a blob written with NaN and re-sealed: under the
        // reject policy the values are checked too.
        file.requireFinite = model.nanPolicy == .reject
        let batch = Int(batch64)
        // Derived caches are optional in a blob (absent: recomputed on the next call).
        let known = Set(model.allStateSpecs.map(\.name))
        if let stray = file.names.first(where: { !known.contains($0) }) {
            throw CortexError.stateMismatch("state bytes: tensor '\(stray)' is not part of this model's state")
        }
        var values: [Tensor?] = []
        for spec in model.allStateSpecs {
            guard let e = file.entries[spec.name] else {
                if spec.derived { values.append(nil); continue }
                throw CortexError.stateMismatch("state bytes: missing '\(spec.name)'")
            }
            guard e.dtype == .f32, e.shape == [batch] + spec.perRow else {
                throw CortexError.stateMismatch("state bytes: '\(spec.name)' is \(e.dtype.rawValue) \(e.shape), expected F32 \([batch] + spec.perRow)")
            }
            values.append(try file.tensor(spec.name))
        }
        let state = try RecurrentState(model: model, batch: batch)
        state.load(values)
        return state
    }
}

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
    /// The frame shared with KV-cache and session blobs; its one field is the batch.
    static let envelope = BlobEnvelope(magic: magic, fieldCount: 1, context: "state bytes", noun: "Cortex state",
                                       shortNoun: "state", owner: "model", thisOwner: "this model")

    public static func encode(_ state: RecurrentState) throws -> [UInt8] {
        let payload = try state.exclusive {
            try SafetensorsFile.write(Array(zip(state.model.allStateSpecs.map(\.name), state.tensors)),
                                      metadata: ["format": "cortex-state"])
        }
        return envelope.seal(fingerprint: state.model.fingerprint, fields: [UInt64(state.batch)], payload: payload)
    }

    public static func decode(_ bytes: [UInt8], model: Model) throws -> RecurrentState {
        // A checksum does not stop a blob written with NaN and re-sealed: under the
        // reject policy the values are checked too.
        let (fields, file) = try envelope.open(bytes, fingerprint: model.fingerprint,
                                               requireFinite: model.nanPolicy == .reject) { f in
            guard f[0] >= 1, f[0] <= UInt64(RecurrentState.maxBatch) else {
                throw CortexError.parse("state bytes: invalid batch \(f[0])")
            }
        }
        let batch64 = fields[0]
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
            do { values.append(try file.tensor(spec.name)) } catch let e as CortexError { throw e.prefixed("state bytes") }
        }
        let state = try RecurrentState(model: model, batch: batch)
        state.load(values)
        return state
    }
}

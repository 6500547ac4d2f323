/// The frame of the state, KV-cache and session blobs:
///
///     magic (8 bytes) · version u32 LE (1) + reserved u32 (0) · model fingerprint u64 ·
///     `fieldCount` u64 fields · payload length u64 · payload (safetensors) ·
///     checksum u64 (FNV-1a of everything after the magic)
///
/// `open` checks the frame in a fixed order (size, magic, version, fingerprint, the
/// caller's `validate` of the fields, length, checksum) and parses the payload.
struct BlobEnvelope {
    let magic: [UInt8]
    let fieldCount: Int
    /// Error prefix ("cache bytes") and what a blob is ("Cortex KV cache", "cache").
    let context: String, noun: String, shortNoun: String
    /// Who wrote it, in the fingerprint error ("model" … "this model").
    let owner: String, thisOwner: String

    var headerSize: Int { 8 + 8 + 8 + 8 * fieldCount + 8 }

    func seal(fingerprint: UInt64, fields: [UInt64], payload: [UInt8]) -> [UInt8] {
        var out = magic
        LittleEndian.append(&out, 1)
        LittleEndian.append(&out, fingerprint)
        for f in fields { LittleEndian.append(&out, f) }
        LittleEndian.append(&out, UInt64(payload.count))
        out += payload
        LittleEndian.append(&out, FNV1a64.hash(Array(out[8...])))
        return out
    }

    /// `requireFinite`: the payload's tensors refuse NaN and ±infinity when read (a
    /// checksum is no protection against a blob written with NaN and re-sealed).
    func open(_ bytes: [UInt8], fingerprint: UInt64, requireFinite: Bool,
              validate: ([UInt64]) throws -> Void) throws -> (fields: [UInt64], payload: SafetensorsFile) {
        func bad(_ s: String) -> CortexError { .parse("\(context): " + s) }
        guard bytes.count >= headerSize + 8 else { throw bad("\(bytes.count) bytes is too short for a \(noun)") }
        guard Array(bytes[0..<8]) == magic else { throw bad("bad magic (not a \(noun))") }
        let version = LittleEndian.u32(bytes, 8)
        guard version == 1 else {
            throw CortexError.stateMismatch("\(context): format version \(version), this build reads 1")
        }
        guard LittleEndian.u32(bytes, 12) == 0 else { throw bad("reserved header field is not zero (damaged \(shortNoun))") }
        let saved = LittleEndian.u64(bytes, 16)
        guard saved == fingerprint else {
            throw CortexError.stateMismatch("\(context): saved by \(owner) \(saved.hex16), not \(thisOwner) (\(fingerprint.hex16))")
        }
        let fields = (0..<fieldCount).map { LittleEndian.u64(bytes, 24 + 8 * $0) }
        try validate(fields)
        guard LittleEndian.u64(bytes, headerSize - 8) == UInt64(bytes.count - headerSize - 8) else {
            throw bad("payload length does not match the blob size")
        }
        guard FNV1a64.hash(Array(bytes[8..<(bytes.count - 8)])) == LittleEndian.u64(bytes, bytes.count - 8) else {
            throw bad("checksum mismatch (damaged \(shortNoun))")
        }
        do {
            var payload = try SafetensorsFile(bytes: Array(bytes[headerSize..<(bytes.count - 8)]))
            payload.requireFinite = requireFinite
            return (fields, payload)
        } catch let e as CortexError {
            throw e.prefixed(context)
        }
    }
}

/// FNV-1a, 64-bit: model fingerprints and state-blob checksums. Not cryptographic;
/// it tells models and damaged blobs apart.
public struct FNV1a64 {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func combine(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        value = h
    }

    public mutating func combine(_ bytes: [UInt8]) { bytes.withUnsafeBytes { combine($0) } }
    public mutating func combine(_ s: String) { combine(Array(s.utf8)); combine([0]) }
    public mutating func combine(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { combine($0) } }

    public static func hash(_ bytes: [UInt8]) -> UInt64 { var h = FNV1a64(); h.combine(bytes); return h.value }
}

extension UInt64 {
    /// 16 lowercase hex digits.
    var hex16: String {
        let s = String(self, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

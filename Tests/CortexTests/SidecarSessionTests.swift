@testable import Cortex
import Foundation
import XCTest

/// Whole sidecar models ("architecture": "cortex_sidecar") through the Swift API, against
/// the PyTorch reference goldens Tests/goldens/sidecars/model_{gdn,fast_weight}: the calls
/// seq1, step1, step2, step3, seq2 over hooked layers 1 and 3 (batch 2, D = 24), the
/// fast-weight signals after `observe(losses:)`, and the final state tensors, within
/// 1e-5 · max(1, max |reference|); a SessionCodec save/restore mid-conversation whose
/// continuation is bitwise equal to an uninterrupted run; and the SessionStore's TTL (with
/// its injectable clock), LRU eviction and the max_bytes refusal.
final class SidecarSessionTests: XCTestCase {
    static let calls = ["seq1", "step1", "step2", "step3", "seq2"]
    static let layers = [1, 3]

    /// A test clock for SessionStore.now.
    final class Clock: @unchecked Sendable {
        var t: Double
        init(_ t: Double) { self.t = t }
    }

    struct SidecarGolden {
        let kind: String
        let golden: Golden
        var model: Model { golden.model }
        var cases: SafetensorsFile { golden.cases }
        var stateNames: [String] { kind == "fast_weight" ? ["U", "V"] : ["conv_q", "conv_k", "conv_v", "S", "win_k", "win_v", "win_n"] }

        init(_ kind: String) throws {
            self.kind = kind
            golden = try Golden("sidecars/model_" + kind)
        }

        func has(_ name: String) -> Bool { cases.names.contains(name) }

        /// The golden's `calls` on `s`, every output concatenated. `check`: compare each
        /// output (and the signals after observe) with the reference; the largest errors
        /// are accumulated in `worst` (outputs, signals).
        @discardableResult
        func run(_ s: SidecarSession, _ calls: ArraySlice<String>, check: Bool,
                 worst: inout (y: Float, signals: Float)) throws -> [Float] {
            var outs: [Float] = []
            for call in calls {
                for layer in SidecarSessionTests.layers {
                    let h = try cases.tensor("\(call)/\(layer)/h")
                    let sigName = "\(call)/\(layer)/signals"
                    let sig = has(sigName) ? try cases.tensor(sigName) : nil
                    let T = h.shape.count == 3 ? h.shape[1] : 1
                    let y = try Tensor(zeros: h.shape)
                    try withExtendedLifetime((h, sig)) {
                        try s.forward(layer: layer, h: h.data, time: T, signals: sig.map { UnsafePointer($0.data) }, into: y.data)
                    }
                    if check {
                        let want = try cases.tensor("\(call)/\(layer)/y")
                        assertClose(y, want, "\(kind) sidecar model: \(call) layer \(layer) y")
                        worst.y = max(worst.y, maxError(y, want).err)
                    }
                    outs += y.toArray()
                }
                if has("\(call)/losses") {
                    let losses = try cases.tensor("\(call)/losses").toArray().map(Double.init)
                    let zeros = [Double](repeating: 0, count: s.batch)
                    try s.observe(losses: losses, uncertainties: zeros, rewards: zeros)
                    if check {
                        let got = try s.controllerInput(), want = try cases.tensor("\(call)/signals_after")
                        assertClose(got, want, "\(kind) sidecar model: \(call) signals after observe")
                        worst.signals = max(worst.signals, maxError(got, want).err)
                    }
                }
            }
            return outs
        }

        func run(_ s: SidecarSession, _ calls: ArraySlice<String>) throws -> [Float] {
            var unused: (y: Float, signals: Float) = (0, 0)
            return try run(s, calls, check: false, worst: &unused)
        }
    }

    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cortex-sidecar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

    // MARK: goldens

    func checkGolden(_ kind: String) throws {
        let g = try SidecarGolden(kind)
        let s = try SidecarSession(model: g.model, batch: 2, id: "golden")
        XCTAssertEqual(g.model.sidecar?.config.layers, SidecarSessionTests.layers)
        let memory = s.memoryBytes
        var worst: (y: Float, signals: Float) = (0, 0)
        try g.run(s, SidecarSessionTests.calls[...], check: true, worst: &worst)
        XCTAssertEqual(s.tokens, [17, 17], "tokens seen (9 + 3 + 5)")
        XCTAssertEqual(s.memoryBytes, memory, "memory is constant in the tokens seen")
        var worstState: Float = 0
        for layer in SidecarSessionTests.layers {
            for name in g.stateNames {
                let got = try s.stateTensor(layer: layer, name: name)
                let ref = try g.cases.tensor("final/\(layer)/\(name)")
                XCTAssertEqual(got.shape, [2, ref.count / 2], "\(name): [B, n]")
                let want = try Tensor(shape: got.shape, values: ref.toArray())
                assertClose(got, want, "\(kind) sidecar model: final layer \(layer) \(name)")
                worstState = max(worstState, maxError(got, want).err)
            }
        }
        print("[sidecar] \(kind) golden: max abs error outputs \(worst.y), signals \(worst.signals), final state \(worstState)")
        if kind == "fast_weight" {
            let fresh = try SidecarSession(model: g.model, batch: 2, id: "fresh")
            let moved = zip(try s.stateTensor(layer: 1, name: "U").toArray(), try fresh.stateTensor(layer: 1, name: "U").toArray())
                .map { abs($0 - $1) }.max() ?? 0
            XCTAssertGreaterThan(moved, 1e-2, "the fast weights moved")
        }
    }

    func testGDNGolden() throws { try checkGolden("gdn") }

    func testFastWeightGolden() throws { try checkGolden("fast_weight") }

    func testSessionErrors() throws {
        let gdn = try SidecarGolden("gdn"), fw = try SidecarGolden("fast_weight")
        let s = try SidecarSession(model: gdn.model, batch: 2, id: "e")
        _ = try gdn.run(s, SidecarSessionTests.calls[0..<1])
        let before = try SessionCodec.encode(s)
        let h = try gdn.cases.tensor("seq2/1/h"), y = try Tensor(zeros: h.shape)
        XCTAssertThrowsError(try s.forward(layer: 2, h: h.data, time: 5, signals: nil, into: y.data)) {
            guard case CortexError.invalidArgument(let m) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(m.contains("layer 2 has no sidecar"), m)
        }
        XCTAssertThrowsError(try s.observe(losses: [1, 1], uncertainties: [0, 0], rewards: [0, 0])) {
            guard case CortexError.unsupported = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try s.stateTensor(layer: 1, name: "nope"))
        XCTAssertThrowsError(try s.reset(mask: [true]))
        XCTAssertThrowsError(try SidecarSession(model: gdn.model, batch: 1, id: ""))
        XCTAssertThrowsError(try SidecarSession(model: gdn.model, batch: 0, id: "x"))
        XCTAssertEqual(try SessionCodec.encode(s), before, "refused calls change nothing")
        let f = try SidecarSession(model: fw.model, batch: 2, id: "f")
        XCTAssertThrowsError(try f.observe(losses: [1, .nan], uncertainties: [0, 0], rewards: [0, 0])) {
            guard case CortexError.nanInput = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try f.observe(losses: [1], uncertainties: [0], rewards: [0])) {
            guard case CortexError.shapeMismatch = $0 else { return XCTFail("\($0)") }
        }
        withExtendedLifetime((h, y)) {}
    }

    // MARK: save / restore

    func checkResume(_ kind: String) throws {
        let g = try SidecarGolden(kind), calls = SidecarSessionTests.calls
        let whole = try SidecarSession(model: g.model, batch: 2, id: "r")
        let uninterrupted = try g.run(whole, calls[...])
        var first: [Float]
        let blob: [UInt8]
        do {
            let r = try SidecarSession(model: g.model, batch: 2, id: "r")
            first = try g.run(r, calls[0..<2])
            blob = try SessionCodec.encode(r)
        }
        XCTAssertEqual(Array(blob.prefix(8)), Array("CXSESS01".utf8))
        let back = try SessionCodec.decode(blob, model: g.model)
        XCTAssertEqual(back.id, "r")
        XCTAssertEqual(back.batch, 2)
        XCTAssertEqual(back.tokens, [10, 10])
        XCTAssertEqual(try SessionCodec.encode(back), blob, "decode then encode is the identity")
        first += try g.run(back, calls[2...])
        XCTAssertEqual(first.count, uninterrupted.count)
        XCTAssertEqual(bits(first), bits(uninterrupted), "\(kind): the restored continuation is bitwise equal")
        XCTAssertEqual(try SessionCodec.encode(back), try SessionCodec.encode(whole), "\(kind): and ends in the same bytes")
        print("[sidecar] \(kind): \(first.count) outputs bitwise equal after a restore from \(blob.count) bytes")
        XCTAssertEqual(try SessionCodec.decode(blob, model: g.model, id: "other").id, "other")

        // Refused: the other sidecar, a damaged or truncated blob.
        let other = try SidecarGolden(kind == "gdn" ? "fast_weight" : "gdn")
        XCTAssertThrowsError(try SessionCodec.decode(blob, model: other.model)) {
            guard case CortexError.stateMismatch(let m) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(m.contains("not this one"), m)
        }
        var damaged = blob
        damaged[blob.count / 2] ^= 1
        XCTAssertThrowsError(try SessionCodec.decode(damaged, model: g.model)) {
            guard case CortexError.parse(let m) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(m.contains("checksum"), m)
        }
        XCTAssertThrowsError(try SessionCodec.decode(Array(blob.dropLast(3)), model: g.model)) {
            guard case CortexError.parse = $0 else { return XCTFail("\($0)") }
        }
    }

    func testResumeGDN() throws { try checkResume("gdn") }

    func testResumeFastWeight() throws { try checkResume("fast_weight") }

    // MARK: store

    func testStoreRoundTrip() throws {
        let g = try SidecarGolden("fast_weight"), dir = try tempDir()
        let s = try SidecarSession(model: g.model, batch: 2, id: "chat")
        _ = try g.run(s, SidecarSessionTests.calls[0..<3])
        do {
            let store = try SessionStore(path: dir + "/s.db")
            try store.save(s)
            XCTAssertEqual(try store.list().map(\.id), ["chat"])
            XCTAssertEqual(try store.list().first?.fingerprint, g.model.fingerprint.hex16)
            XCTAssertThrowsError(try store.load(id: "nope", model: g.model)) {
                guard case CortexError.notFound = $0 else { return XCTFail("\($0)") }
            }
        }
        // Reopened: the same bytes, and the continuation equals the original's.
        let store = try SessionStore(path: dir + "/s.db")
        let r = try store.load(id: "chat", model: g.model)
        XCTAssertEqual(try SessionCodec.encode(r), try SessionCodec.encode(s))
        XCTAssertEqual(bits(try g.run(r, SidecarSessionTests.calls[3...])), bits(try g.run(s, SidecarSessionTests.calls[3...])))
        let gdn = try SidecarGolden("gdn")
        XCTAssertThrowsError(try store.load(id: "chat", model: gdn.model)) {
            guard case CortexError.stateMismatch = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertTrue(try store.delete(id: "chat"))
        XCTAssertFalse(try store.delete(id: "chat"))
        XCTAssertEqual(try store.list(), [])
    }

    func testStoreTTLWithClock() throws {
        let g = try SidecarGolden("gdn"), dir = try tempDir()
        let store = try SessionStore(path: dir + "/ttl.db", options: .init(ttl: 10))
        let clock = Clock(1000)
        store.now = { clock.t }
        try store.save(try SidecarSession(model: g.model, batch: 1, id: "old"))
        clock.t = 1006
        try store.save(try SidecarSession(model: g.model, batch: 1, id: "new"))
        _ = try store.load(id: "old", model: g.model)  // an access renews it
        clock.t = 1015.5
        XCTAssertEqual(Set(try store.list().map(\.id)), ["old", "new"], "both alive just before accessed + ttl")
        XCTAssertEqual(try store.list().first(where: { $0.id == "old" })?.accessed, 1006)
        XCTAssertEqual(try store.list().first(where: { $0.id == "old" })?.updated, 1000)
        XCTAssertEqual(try store.purgeExpired(), 0)
        clock.t = 1016  // accessed + ttl <= now: expired
        XCTAssertThrowsError(try store.load(id: "new", model: g.model)) {
            guard case CortexError.notFound(let m) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(m.contains("expired"), m)
        }
        XCTAssertEqual(try store.purgeExpired(), 1, "the other expired session")
        XCTAssertEqual(try store.list(), [])
        // A save renews too; no TTL means nothing expires however late.
        try store.save(try SidecarSession(model: g.model, batch: 1, id: "again"))
        clock.t = 1025.9
        XCTAssertEqual(try store.list().map(\.id), ["again"])
        let forever = try SessionStore(path: dir + "/forever.db")
        forever.now = { clock.t }
        try forever.save(try SidecarSession(model: g.model, batch: 1, id: "kept"))
        clock.t = 1e12
        XCTAssertEqual(try forever.list().map(\.id), ["kept"])
        XCTAssertNoThrow(try forever.load(id: "kept", model: g.model))
        XCTAssertThrowsError(try SessionStore(path: dir + "/bad.db", options: .init(ttl: -1)))
    }

    func testStoreLRUAndMaxBytes() throws {
        let g = try SidecarGolden("gdn"), dir = try tempDir()
        let size = try SessionCodec.encode(try SidecarSession(model: g.model, batch: 1, id: "a")).count
        let clock = Clock(1)
        let lru = try SessionStore(path: dir + "/lru.db", options: .init(maxBytes: size * 5 / 2))
        lru.now = { clock.t }
        for id in ["a", "b"] {
            try lru.save(try SidecarSession(model: g.model, batch: 1, id: id))
            clock.t += 1
        }
        _ = try lru.load(id: "a", model: g.model)  // b is now the least recently used
        clock.t += 1
        try lru.save(try SidecarSession(model: g.model, batch: 1, id: "c"))
        XCTAssertEqual(try lru.list().map(\.id), ["c", "a"], "b evicted; most recently used first")
        XCTAssertEqual(try lru.list().map(\.accessed), [4, 3])
        XCTAssertLessThanOrEqual(try lru.totalBytes(), size * 5 / 2)
        XCTAssertThrowsError(try lru.load(id: "b", model: g.model)) {
            guard case CortexError.notFound = $0 else { return XCTFail("\($0)") }
        }
        // Replacing a session never evicts itself; a fourth evicts the oldest (a).
        clock.t += 1
        try lru.save(try SidecarSession(model: g.model, batch: 1, id: "c"))
        clock.t += 1
        try lru.save(try SidecarSession(model: g.model, batch: 1, id: "d"))
        XCTAssertEqual(try lru.list().map(\.id), ["d", "c"])

        // A blob larger than max_bytes is refused, and nothing is stored.
        let tiny = try SessionStore(path: dir + "/tiny.db", options: .init(maxBytes: size / 2))
        XCTAssertThrowsError(try tiny.save(try SidecarSession(model: g.model, batch: 1, id: "big"))) {
            guard case CortexError.invalidArgument(let m) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(m.contains("max_bytes"), m)
        }
        XCTAssertEqual(try tiny.list(), [])
        XCTAssertEqual(try tiny.totalBytes(), 0)
        // Exactly max_bytes fits.
        let exact = try SessionStore(path: dir + "/exact.db", options: .init(maxBytes: size))
        XCTAssertNoThrow(try exact.save(try SidecarSession(model: g.model, batch: 1, id: "fits")))
        XCTAssertEqual(try exact.list().map(\.id), ["fits"])
    }
}

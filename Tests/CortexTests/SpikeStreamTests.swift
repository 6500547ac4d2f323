@testable import Cortex
import XCTest

/// Streaming decoding with the paged window (SpikeStream) against recomputing each
/// window from scratch with `SpikeDecoder.decode` (the golden-checked path), on the
/// goldens' small decoder: within 1e-5 · max(1, |recomputed|) at every stride, over
/// windows that fill, slide, empty and refill; pages are recycled and bounded; a refused
/// stride changes nothing; a batch of streams equals each stream alone.
final class SpikeStreamTests: XCTestCase {
    func decoder() throws -> SpikeDecoder { try XCTUnwrap(try Golden("spike/decoder_small").model.spikeDecoder) }

    /// Random events for one stride: `count` events with bins in [0, stride).
    func stride(_ rng: inout SplitMix64, count: Int, stride: Int, neurons: Int) -> (neurons: [Int], bins: [Int], values: [Int]) {
        (neurons: (0..<count).map { _ in rng.int(neurons) }, bins: (0..<count).map { _ in rng.int(stride) },
         values: (0..<count).map { _ in 1 + rng.int(7) })
    }

    func recomputed(_ dec: SpikeDecoder, _ s: SpikeStream) throws -> [Float] {
        let w = s.windowEvents()
        return try dec.decode(neurons: w.neurons, timeBins: w.timeBins, values: w.values,
                              offsets: [0, w.neurons.count]).toArray()
    }

    func testStreamEqualsRecomputingTheWindow() throws {
        let dec = try decoder()
        // Window 120 bins, stride 10: events enter at t = 110..119 and leave after 12 strides.
        let s = try SpikeStream(decoder: dec, windowBins: 120, strideBins: 10, maxWindowEvents: 2000)
        var rng = SplitMix64(seed: 7)
        var worst: Float = 0, maxPages = 0
        for k in 0..<60 {
            // Busy, quiet (no events at all for 15 strides: the window empties) and busy again.
            let n = (20..<35).contains(k) ? 0 : 30 + rng.int(120)
            let ev = stride(&rng, count: n, stride: 10, neurons: dec.config.maxNeurons)
            let y = try s.step(neurons: ev.neurons, bins: ev.bins, values: ev.values).toArray()
            let ref = try recomputed(dec, s)
            let scale = max(1, ref.map(abs).max()!)
            for o in 0..<ref.count { worst = max(worst, abs(y[o] - ref[o]) / scale) }
            XCTAssertEqual(s.endBin, 10 * (k + 1))
            maxPages = max(maxPages, s.pagesInUse)
            if k == 34 { XCTAssertEqual(s.eventsInWindow, 0); XCTAssertEqual(s.pagesInUse, 0) }
        }
        print("[spike stream] 60 strides vs recomputing each window: max rel error \(worst); pages in use <= \(maxPages)")
        XCTAssertLessThanOrEqual(worst, 1e-5)
        // At most ~12 strides × 150 events live: 29 pages of 64, plus the partial ends.
        XCTAssertLessThanOrEqual(maxPages, 2000 / SpikeStream.pageEvents + 2)
        XCTAssertLessThanOrEqual(s.pool.pagesMade, maxPages, "expired pages are reused, not made anew")
    }

    func testPartialFirstWindowsAndOtherGeometries() throws {
        let dec = try decoder()
        for (window, stride) in [(120, 10), (37, 5), (8, 8), (40, 1)] {
            let s = try SpikeStream(decoder: dec, windowBins: window, strideBins: stride, maxWindowEvents: 4000)
            var rng = SplitMix64(seed: UInt64(window * 100 + stride))
            var worst: Float = 0
            for _ in 0..<(2 * window / stride + 3) {
                let ev = self.stride(&rng, count: rng.int(40), stride: stride, neurons: dec.config.maxNeurons)
                let y = try s.step(neurons: ev.neurons, bins: ev.bins, values: ev.values).toArray()
                let ref = try recomputed(dec, s)
                for o in 0..<ref.count { worst = max(worst, abs(y[o] - ref[o]) / max(1, abs(ref[o]))) }
                // Bins count from the window's start, the newest is window − 1.
                XCTAssertLessThanOrEqual(s.windowEvents().timeBins.max() ?? 0, window - 1)
            }
            print("[spike stream] window \(window) stride \(stride): max rel error \(worst)")
            XCTAssertLessThanOrEqual(worst, 1e-5)
        }
    }

    func testRefusedStrideChangesNothingAndResetStartsOver() throws {
        let dec = try decoder()
        let s = try SpikeStream(decoder: dec, windowBins: 120, strideBins: 10, maxWindowEvents: 100)
        var rng = SplitMix64(seed: 3)
        for _ in 0..<5 {
            let ev = stride(&rng, count: 15, stride: 10, neurons: dec.config.maxNeurons)
            _ = try s.step(neurons: ev.neurons, bins: ev.bins, values: ev.values)
        }
        let before = (s.endBin, s.windowEvents().neurons, s.windowEvents().timeBins)
        func refused(_ n: [Int], _ b: [Int], _ v: [Int], _ message: String) {
            XCTAssertThrowsError(try s.step(neurons: n, bins: b, values: v)) { e in
                XCTAssertTrue("\(e)".contains(message), "\(e)")
            }
            XCTAssertEqual(s.endBin, before.0)
            XCTAssertEqual(s.windowEvents().neurons, before.1)
            XCTAssertEqual(s.windowEvents().timeBins, before.2)
        }
        refused([1, 40], [0, 0], [1, 1], "event 1: neuron_id 40 is outside [0, 40)")
        refused([1, 2], [0, 10], [1, 1], "event 1: time_bin 10 is outside [0, 10)")
        refused([1], [0], [8], "value 8")
        refused([1, 2], [0], [1, 1], "one length")
        refused(Array(repeating: 1, count: 40), Array(repeating: 0, count: 40), Array(repeating: 1, count: 40),
                "max_window_events = 100")
        // Still usable, and equal to recomputing.
        let y = try s.step(neurons: [3], bins: [9], values: [2]).toArray()
        for (a, b) in zip(y, try recomputed(dec, s)) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        s.reset()
        XCTAssertEqual(s.endBin, 0)
        XCTAssertEqual(s.eventsInWindow, 0)
        XCTAssertEqual(s.pagesInUse, 0)
        let empty = try s.step(neurons: [], bins: [], values: []).toArray()
        for (a, b) in zip(empty, try dec.decode(neurons: [], timeBins: [], values: [], offsets: [0, 0]).toArray()) {
            XCTAssertEqual(a, b, accuracy: 1e-6)
        }
        XCTAssertThrowsError(try SpikeStream(decoder: dec, windowBins: 121, strideBins: 10)) // past max_time_bins
        XCTAssertThrowsError(try SpikeStream(decoder: dec, windowBins: 20, strideBins: 21))
    }

    func testBatchOfStreamsEqualsEachAlone() throws {
        let dec = try decoder()
        let batch = try (0..<3).map { _ in try SpikeStream(decoder: dec) }
        let alone = try (0..<3).map { _ in try SpikeStream(decoder: dec) }
        var rng = SplitMix64(seed: 11)
        var worst: Float = 0
        for _ in 0..<20 {
            let evs = (0..<3).map { i in stride(&rng, count: i == 1 ? 0 : rng.int(60), stride: 10, neurons: 40) }
            let y = try SpikeStream.step(batch, events: evs).toArray()
            for i in 0..<3 {
                let one = try alone[i].step(neurons: evs[i].neurons, bins: evs[i].bins, values: evs[i].values).toArray()
                for o in 0..<3 { worst = max(worst, abs(one[o] - y[i * 3 + o])) }
            }
        }
        print("[spike stream] 3 streams batched vs alone: max abs difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-6)
        // One bad stream refuses the batch, naming it, and no stream moves.
        let ends = batch.map(\.endBin)
        XCTAssertThrowsError(try SpikeStream.step(batch, events: [([1], [0], [1]), ([99], [0], [1]), ([], [], [])])) { e in
            XCTAssertTrue("\(e)".contains("stream 1"), "\(e)")
        }
        XCTAssertEqual(batch.map(\.endBin), ends)
        XCTAssertThrowsError(try SpikeStream.step([batch[0], batch[0]], events: [([], [], []), ([], [], [])]))
    }

    func testPagePoolRecyclesAndBounds() throws {
        let pool = try PagePool(pageFloats: 4, maxPages: 2)
        let a = try pool.allocate(), b = try pool.allocate()
        XCTAssertThrowsError(try pool.allocate()) { XCTAssertTrue("\($0)".contains("page pool exhausted")) }
        pool.retain(a)
        XCTAssertTrue(pool.isShared(a))
        pool.release(a)
        XCTAssertFalse(pool.isShared(a))
        pool.release(a)
        XCTAssertEqual(pool.pagesInUse, 1)
        XCTAssertEqual(try pool.allocate(), a)   // recycled
        pool.release(b)
        XCTAssertEqual(pool.pagesMade, 2)
    }
}

extension SplitMix64 {
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

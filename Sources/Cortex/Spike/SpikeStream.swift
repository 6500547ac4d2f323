
/// Streaming decoding over a sliding window, with the window's keys/values in pages.
///
/// A stream receives spike events one stride at a time (default: 10 bins of 5 ms = 50 ms)
/// and after each stride decodes the last `windowBins` bins (default 120 = 600 ms), as
/// `SpikeDecoder.decode` would on that window's events with `time_bin` = bin − window
/// start (the window's last bin is `windowBins − 1`; before a full window has passed,
/// the bins before the stream started are empty).
///
/// Why the keys/values of old events can be kept although their `time_bin` changes with
/// every stride: with `a = neuron_emb[n] + value_emb[v]` (fixed per event) and `e_t =
/// time_emb[t]`, the cross-attention's keys/values are
///
///     W·LN(a + e_t) = (W(γ⊙a) + W(γ⊙e_t) − μ·Wγ) / σ + Wβ,
///     μ = mean(a) + mean(e_t),  σ² = (|a|² + 2a·e_t + |e_t|²)/D − μ² + ε,
///
/// so the one GEMM per event, `A = W(γ⊙a)`, is computed once when the event arrives and
/// kept in a page; `W(γ⊙e_t)` is a per-bin table (`SpikeDecoder.timeTable`); re-binning
/// an old event costs two dot products and one pass over its row. Pages hold
/// `pageEvents` events in arrival order and go back to the stream's pool as soon as their
/// newest event leaves the window; the pool is sized for `maxWindowEvents`, so a stream's
/// memory is bounded. The results equal recomputing the window (tested against
/// `decode`, to float rounding).
///
/// One thread at a time (a concurrent call gets `CortexError.busy`). Every call is
/// atomic: a refused step leaves the stream as it was.
public final class SpikeStream: @unchecked Sendable {
    public let decoder: SpikeDecoder
    public let windowBins: Int
    public let strideBins: Int
    public let maxWindowEvents: Int
    public static let pageEvents = 64

    /// Events in one page: ids, absolute bin and the statistics of `a`; the page's
    /// floats hold the events' `A` rows (`2·latent_dim` each).
    final class EventPage {
        var slot = 0
        var count = 0
        var neuron = [Int32](repeating: 0, count: SpikeStream.pageEvents)
        var value = [Int32](repeating: 0, count: SpikeStream.pageEvents)
        var bin = [Int](repeating: 0, count: SpikeStream.pageEvents)
        var mean = [Float](repeating: 0, count: SpikeStream.pageEvents)     // mean(a)
        var square = [Float](repeating: 0, count: SpikeStream.pageEvents)   // |a|²
        /// The latest bin of its events (a stride's events come in any bin order).
        var newestBin = 0
    }

    let pool: PagePool
    private var pages: [EventPage] = []          // oldest first
    private var spare: [EventPage] = []          // recycled page records
    /// Bins seen so far: the window is `[endBin − windowBins, endBin)`.
    public private(set) var endBin = 0
    private let scratch = SpikeScratch()
    private let rows = GrowableBuffer()          // the new events' γ⊙a
    private let keysValues = GrowableBuffer()
    private let use = UseFlag()
    /// (page, slot) of each live event: kept between strides so a step does not allocate it.
    private var live: [(page: Int, slot: Int)] = []

    public init(decoder: SpikeDecoder, windowBins: Int = 120, strideBins: Int = 10, maxWindowEvents: Int = 8192) throws {
        let c = decoder.config
        guard windowBins >= 1, windowBins <= c.maxTimeBins else {
            throw CortexError.invalidArgument("window_bins must be in [1, max_time_bins = \(c.maxTimeBins)], got \(windowBins)")
        }
        guard strideBins >= 1, strideBins <= windowBins else {
            throw CortexError.invalidArgument("stride_bins must be in [1, window_bins = \(windowBins)], got \(strideBins)")
        }
        guard maxWindowEvents >= 1, maxWindowEvents <= 1 << 22 else {
            throw CortexError.invalidArgument("max_window_events must be in [1, 4194304], got \(maxWindowEvents)")
        }
        self.decoder = decoder
        self.windowBins = windowBins
        self.strideBins = strideBins
        self.maxWindowEvents = maxWindowEvents
        // Live events fill pages from a partly expired first page to a partly filled last one.
        let pages = (maxWindowEvents + SpikeStream.pageEvents - 1) / SpikeStream.pageEvents + 1
        pool = try PagePool(pageFloats: SpikeStream.pageEvents * 2 * c.latentDim, maxPages: pages)
        _ = try decoder.timeTable()
    }

    deinit { for p in pages { pool.release(p.slot) } }

    /// Run `body` as the only user of this stream (else throw `.busy`).
    public func exclusive<R>(_ body: () throws -> R) throws -> R {
        try use.run("the stream", body)
    }

    /// Events inside the current window.
    public var eventsInWindow: Int {
        let start = endBin - windowBins
        return pages.reduce(0) { n, p in n + (0..<p.count).reduce(0) { $0 + (p.bin[$1] >= start ? 1 : 0) } }
    }
    public var pagesInUse: Int { pages.count }
    /// Bytes the stream's pages hold (in use or recycled): bounded by `maxWindowEvents`.
    public var pageBytes: Int { pool.pagesMade * pool.pageFloats * 4 }

    /// The current window as `decode` takes it: ids, `time_bin` (bin − window start) and
    /// values, in arrival order (what recomputing from scratch would be given).
    public func windowEvents() -> (neurons: [Int], timeBins: [Int], values: [Int]) {
        let start = endBin - windowBins
        var n: [Int] = [], t: [Int] = [], v: [Int] = []
        for p in pages {
            for i in 0..<p.count where p.bin[i] >= start {
                n.append(Int(p.neuron[i])); t.append(p.bin[i] - start); v.append(Int(p.value[i]))
            }
        }
        return (n, t, v)
    }

    /// Forget every event and start again at bin 0 (pages go back to the pool).
    public func reset() {
        for p in pages { pool.release(p.slot); spare.append(p) }
        pages.removeAll(keepingCapacity: true)
        endBin = 0
    }

    /// The events of the next stride (`bins` relative to its start, in `[0, strideBins)`),
    /// checked without changing anything. Returns the events that stay in the window.
    package func validate(neurons: [Int], bins: [Int], values: [Int]) throws -> Int {
        try decoder.checkEvents(neurons: neurons, timeBins: bins, values: values, timeLimit: strideBins,
                                timeField: "a stream's time bins count from the stride's start: stride_bins")
        let e = neurons.count
        let start = endBin + strideBins - windowBins
        var kept = e
        for p in pages { for i in 0..<p.count where p.bin[i] >= start { kept += 1 } }
        guard kept <= maxWindowEvents else {
            throw CortexError.invalidArgument("the window would hold \(kept) events, more than max_window_events = \(maxWindowEvents)")
        }
        return kept
    }

    /// Append one stride of events and slide the window (after `validate`): pages whose
    /// events all left the window go back to the pool; the new events' `A = W(γ⊙a)` is
    /// computed in one GEMM and written into pages.
    func append(neurons: [Int], bins: [Int], values: [Int]) throws {
        let dec = decoder, c = dec.config, Dh = c.hiddenDim, W = 2 * c.latentDim, E = neurons.count
        let gamma = dec.normKV.weight.data
        let a = try rows.reserve(max(1, E * Dh))
        var stats = [(mean: Float, square: Float)](repeating: (0, 0), count: E)
        for e in 0..<E {
            let row = a + e * Dh
            row.update(from: dec.neuronEmb.data + neurons[e] * Dh, count: Dh)
            Vec.add(row, dec.valueEmb.data + values[e] * Dh, Dh)
            stats[e] = (Vec.sum(row, Dh) / Float(Dh), Vec.dot(row, row, Dh))
            Vec.multiply(row, gamma, Dh)
        }
        let windowStart = endBin + strideBins - windowBins
        while let first = pages.first, first.newestBin < windowStart {
            pool.release(first.slot)
            spare.append(pages.removeFirst())
        }
        var e = 0
        while e < E {
            if pages.last.map({ $0.count == SpikeStream.pageEvents }) ?? true {
                let page = spare.popLast() ?? EventPage()
                page.slot = try pool.allocate()   // cannot fail: the pool is sized for maxWindowEvents
                page.count = 0
                page.newestBin = 0
                pages.append(page)
            }
            let page = pages[pages.count - 1]
            let n = min(E - e, SpikeStream.pageEvents - page.count)
            dec.crossKV.apply(a + e * Dh, rows: n, into: pool.pointer(page.slot) + page.count * W)
            for i in 0..<n {
                let j = page.count + i
                page.neuron[j] = Int32(neurons[e + i]); page.value[j] = Int32(values[e + i])
                page.bin[j] = endBin + bins[e + i]
                page.newestBin = max(page.newestBin, page.bin[j])
                page.mean[j] = stats[e + i].mean; page.square[j] = stats[e + i].square
            }
            page.count += n
            e += n
        }
        endBin += strideBins
    }

    /// Write the window's keys/values (`W·LN(a + e_t)` per live event) to `out`
    /// (`[eventsInWindow, 2·latent_dim]`), split over the threads for large windows;
    /// returns the row count.
    func writeKeysValues(into out: UnsafeMutablePointer<Float>, table: SpikeDecoder.TimeTable) -> Int {
        let dec = decoder, c = dec.config, Dh = c.hiddenDim, W = 2 * c.latentDim
        let start = endBin - windowBins, eps = Double(dec.normKV.eps)
        // (page, slot, output row) of every live event, in arrival order.
        live.removeAll(keepingCapacity: true)
        for (j, p) in pages.enumerated() { for i in 0..<p.count where p.bin[i] >= start { live.append((j, i)) } }
        let bases = pages.map { UnsafePointer(pool.pointer($0.slot)) }
        live.withUnsafeBufferPointer { events in
            Parallel.run(parts: Parallel.parts(work: events.count * W, grain: 1 << 15, items: events.count)) { part, parts in
                for r in Parallel.slice(events.count, part: part, parts: parts, align: 1) {
                    let p = pages[events[r].page], i = events[r].slot
                    let t = p.bin[i] - start, et = dec.timeEmb.data + t * Dh
                    let cross = Vec.dot(dec.neuronEmb.data + Int(p.neuron[i]) * Dh, et, Dh)
                        + Vec.dot(dec.valueEmb.data + Int(p.value[i]) * Dh, et, Dh)
                    let mu = Double(p.mean[i]) + table.mean[t]
                    let variance = (Double(p.square[i]) + 2 * Double(cross) + table.square[t]) / Double(Dh) - mu * mu
                    let inv = 1 / (max(variance, 0) + eps).squareRoot()
                    Vec.affine(out + r * W, bases[events[r].page] + i * W, table.rows + t * W, Float(inv),
                               table.gammaRow, Float(-inv * mu), table.betaRow, W)
                }
            }
        }
        return live.count
    }

    /// One stride for each stream (all of one decoder), decoded as one batch: `events[i]`
    /// is stream i's new events (bins relative to the stride start). Returns `[B,
    /// behavior_dim]`. All streams are checked before any changes; a refused call changes
    /// none. Each stream must not be in use elsewhere (the caller holds `exclusive`).
    public static func step(_ streams: [SpikeStream], events: [(neurons: [Int], bins: [Int], values: [Int])]) throws -> Tensor {
        guard let first = streams.first else { throw CortexError.invalidArgument("no streams to step") }
        guard events.count == streams.count else {
            throw CortexError.shapeMismatch("\(streams.count) streams but \(events.count) event sets")
        }
        guard Set(streams.map { ObjectIdentifier($0) }).count == streams.count else {
            throw CortexError.invalidArgument("a stream appears twice in one step")
        }
        let dec = first.decoder, W = 2 * dec.config.latentDim, table = try dec.timeTable()
        var offsets = [0], total = 0
        for (s, ev) in zip(streams, events) {
            guard s.decoder === dec else { throw CortexError.stateMismatch("streams of different decoders cannot step together") }
            do { total += try s.validate(neurons: ev.neurons, bins: ev.bins, values: ev.values) } catch let e as CortexError {
                throw streams.count > 1 ? e.prefixed("stream \(offsets.count - 1)") : e
            }
            offsets.append(total)
        }
        // What can fail to allocate is taken before the first stream changes.
        let out = try Tensor(zeros: [streams.count, dec.config.behaviorDim])
        let kv = try first.keysValues.reserve(max(1, total * W))
        for (s, ev) in zip(streams, events) { _ = try s.rows.reserve(max(1, ev.neurons.count * dec.config.hiddenDim)) }
        for (s, ev) in zip(streams, events) { try s.append(neurons: ev.neurons, bins: ev.bins, values: ev.values) }
        for (b, s) in streams.enumerated() {
            let n = s.writeKeysValues(into: kv + offsets[b] * W, table: table)
            guard n == offsets[b + 1] - offsets[b] else {
                throw CortexError.internal("stream \(b): \(n) events in the window, \(offsets[b + 1] - offsets[b]) expected")
            }
        }
        try dec.decode(keysValues: kv, offsets: offsets, into: out.data, scratch: first.scratch)
        return out
    }

    /// One stride of this stream: its new events, then the window's decoded velocity `[1, behavior_dim]`.
    public func step(neurons: [Int], bins: [Int], values: [Int]) throws -> Tensor {
        try exclusive { try SpikeStream.step([self], events: [(neurons, bins, values)]) }
    }
}

extension SpikeDecoder {
    /// What streams need per time bin: `W(γ⊙e_t)` rows, mean(e_t) and |e_t|², and the
    /// rows `Wγ` and `Wβ` (W = the cross-attention's kv_proj, γ/β = norm_kv). Made once.
    final class TimeTable: @unchecked Sendable {
        let buffer: FloatBuffer
        let rows: UnsafeMutablePointer<Float>       // [max_time_bins, 2·latent_dim]
        let gammaRow: UnsafeMutablePointer<Float>   // [2·latent_dim]
        let betaRow: UnsafeMutablePointer<Float>
        let mean: [Double], square: [Double]

        init(_ d: SpikeDecoder) throws {
            let c = d.config, T = c.maxTimeBins, Dh = c.hiddenDim, W = 2 * c.latentDim
            buffer = try FloatBuffer(count: (T + 2) * W)
            rows = buffer.pointer
            gammaRow = rows + T * W
            betaRow = gammaRow + W
            let input = try FloatBuffer(count: (T + 2) * Dh, zeroed: false)
            var mean = [Double](repeating: 0, count: T), square = mean
            for t in 0..<T {
                let e = d.timeEmb.data + t * Dh, row = input.pointer + t * Dh
                mean[t] = Double(Vec.sum(e, Dh)) / Double(Dh)
                square[t] = Double(Vec.dot(e, e, Dh))
                row.update(from: e, count: Dh)
                Vec.multiply(row, d.normKV.weight.data, Dh)
            }
            (input.pointer + T * Dh).update(from: d.normKV.weight.data, count: Dh)
            if let beta = d.normKV.bias { (input.pointer + (T + 1) * Dh).update(from: beta.data, count: Dh) } else {
                (input.pointer + (T + 1) * Dh).update(repeating: 0, count: Dh)
            }
            d.crossKV.apply(input.pointer, rows: T + 2, into: rows)
            self.mean = mean
            self.square = square
        }
    }

    func timeTable() throws -> TimeTable {
        try streamTable.withLock { t in
            if let t { return t }
            let made = try TimeTable(self)
            t = made
            return made
        }
    }
}

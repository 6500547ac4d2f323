import CKernels

/// The LSTM's recurrent weight `W_hh [4H, H]` arranged for a recurrence split over any
/// number of threads.
///
/// Hidden units are taken in blocks of 16. Block u (units `J_u = [16u, 16u + w)`, w = 16
/// except maybe the last) owns the rows of gates i, f, g, o for its units, `4w` rows in
/// that order; the blocks are stacked and packed once at load as one matrix. So a
/// thread owning blocks `u0 ..< u1` multiplies the previous `h` by one contiguous range
/// of packed panels and gets its units' gates side by side. Every output is the packed
/// kernel's one FMA chain over `h`, whatever the range: results do not depend on the
/// thread count.
struct BlockedRecurrentWeight: @unchecked Sendable {
    static let unitsPerBlock = 16
    let hidden: Int
    let packed: PackedMatrix

    init(weightHH w: Tensor, hidden H: Int) throws {
        hidden = H
        let rows = try Tensor(zeros: [4 * H, H])
        for u in 0..<blocks(H) {
            let (j0, width) = Self.units(u, H)
            for g in 0..<4 {
                (rows.data + (4 * j0 + g * width) * H).update(from: w.data + (g * H + j0) * H, count: width * H)
            }
        }
        packed = try PackedMatrix(rows)
    }

    var blockCount: Int { blocks(hidden) }

    /// First unit and width of block `u`.
    static func units(_ u: Int, _ H: Int) -> (Int, Int) {
        let j0 = u * unitsPerBlock
        return (j0, min(unitsPerBlock, H - j0))
    }
}

private func blocks(_ H: Int) -> Int { (H + BlockedRecurrentWeight.unitsPerBlock - 1) / BlockedRecurrentWeight.unitsPerBlock }

/// Everything one LSTM recurrence needs, shared by its parts.
///
/// The parts form a grid: row groups (sequences of the batch, independent of each other)
/// by unit groups (slices of the unit blocks). Per step a part multiplies its rows of the
/// previous `h` (all units) by its blocks' rows of `W_hh`, then adds the input
/// projection, applies the activations and the cell update for its units in one C pass
/// and writes its units of the next `h`; the unit groups of one row group then meet at
/// that row group's barrier. So each thread keeps a quarter (or less) of `W_hh` in its
/// cache, and a barrier waits for a few threads, not all. `h` is double-buffered, so
/// nobody reads what another part is writing; `c` slices are private to their part.
/// Every row's products are the same whatever the grid: results do not depend on it.
struct RecurrenceJob {
    let weight: BlockedRecurrentWeight
    let xg: UnsafePointer<Float>        // [B, T, 4H]: W_ih x for every step (gate-major)
    let bias: UnsafePointer<Float>?     // [4H]: b_ih + b_hh
    let y: UnsafeMutablePointer<Float>  // [B, T, H]
    let c: UnsafeMutablePointer<Float>  // [B, H], updated in place
    let hA: UnsafeMutablePointer<Float> // [B, H]: h before step 0 (the state's h)
    let hB: UnsafeMutablePointer<Float> // [B, H]: the other h buffer
    let gates: UnsafeMutablePointer<Float> // [B, 4H]: W_hh h, block-ordered
    let barriers: UnsafeMutablePointer<cxk_barrier>? // one per row group (T > 1)
    let resets: UnsafePointer<UInt8>?   // [B, T]
    let batch: Int
    let time: Int

    /// A thread's share of `W_hh` should stay in its cache: at most this many bytes.
    static let cachedWeightBytes = 256 << 10

    /// The grid for `parts` parts: (row groups, unit groups). Unit groups: enough that a
    /// part's share of `W_hh` fits `cachedWeightBytes` and that row groups ≤ B; then as
    /// many row groups as that leaves, and the parts left spread over the units again.
    static func grid(parts: Int, batch: Int, weight: BlockedRecurrentWeight) -> (rows: Int, units: Int) {
        let bytes = 16 * weight.hidden * weight.hidden
        let forCache = (bytes + cachedWeightBytes - 1) / cachedWeightBytes
        let forRows = (parts + batch - 1) / max(batch, 1)
        let least = max(1, min(max(forCache, forRows), weight.blockCount, parts))
        let rg = max(1, min(parts / least, batch))
        return (rg, max(1, min(parts / rg, weight.blockCount)))
    }

    /// Part `part` of `parts` runs all T steps for its rows and unit blocks.
    func run(part: Int, parts: Int) {
        let H = weight.hidden, G = 4 * H, B = batch, T = time
        let (rg, ug) = Self.grid(parts: parts, batch: B, weight: weight)
        guard part < rg * ug else { return }  // a part the grid leaves out
        let r = part / ug, u = part % ug
        let rows = Parallel.slice(B, part: r, parts: rg, align: 1)
        let mine = Parallel.slice(weight.blockCount, part: u, parts: ug, align: 1)
        let j0 = mine.lowerBound * BlockedRecurrentWeight.unitsPerBlock
        let j1 = min(H, mine.upperBound * BlockedRecurrentWeight.unitsPerBlock)
        let packed = weight.packed.buffer.pointer + 4 * j0 * H  // panel 4·u0 (a block is 4 panels)
        let b0 = rows.lowerBound, m = rows.count
        var cur = UnsafePointer(hA), next = hB
        for t in 0..<T {
            if j1 > j0 && m > 0 {
                // W_hh h for these rows and units (block order), then the cell with the input
                // projection added, fused in one C pass (cxk_lstm_cell).
                cxk_packed_gemm(Int32(m), Int32(4 * (j1 - j0)), Int32(H), cur + b0 * H, Int32(H), packed,
                               gates + b0 * G + 4 * j0, Int32(G), 0)
                for b in rows {
                    let reset: Int32 = (resets.map { $0[b * T + t] != 0 } ?? false) ? 1 : 0
                    cxk_lstm_cell(gates + b * G, xg + (b * T + t) * G, bias, Int32(H), Int32(j0), Int32(j1), c + b * H,
                                 next + b * H, y + (b * T + t) * H, reset)
                }
            }
            if t + 1 < T, ug > 1, let barriers { cxk_barrier_wait(barriers + r, Int32(ug)) }
            let done = next
            next = UnsafeMutablePointer(mutating: cur)
            cur = UnsafePointer(done)
        }
    }

    /// Run over up to `parts` threads; afterwards the final h is copied into `hA` if needed.
    /// Without barriers (one step, or row groups only) the parts need not run at once (a
    /// part no worker has started is run by the caller); otherwise they run together.
    func runParallel(parts: Int) {
        let body: cxk_task_fn = { ctx, part, parts in
            guard let ctx else { return }
            ctx.assumingMemoryBound(to: RecurrenceJob.self).pointee.run(part: Int(part), parts: Int(parts))
        }
        let together = time > 1 && Self.grid(parts: parts, batch: batch, weight: weight).units > 1
        withUnsafePointer(to: self) { job in
            let ctx = UnsafeMutableRawPointer(mutating: job)
            _ = together ? cxk_parallel_run_together(body, ctx, Int32(parts)) : cxk_parallel_run(body, ctx, Int32(parts))
        }
        if time % 2 == 1 { hA.update(from: hB, count: batch * weight.hidden) }
    }
}

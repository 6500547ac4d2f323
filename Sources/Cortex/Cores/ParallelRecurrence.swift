import CKernels

/// The LSTM's recurrent weight split for the two-thread recurrence of sequence mode.
///
/// Part p owns hidden units `J_p = [p·H/2, (p+1)·H/2)`: the rows of `W_hh` for gates
/// i, f, g, o of those units (`[4·H/2, H]`), packed once at load. Per step each part
/// multiplies the previous `h` (all of it) by its rows, applies the activations and the
/// cell update for its own units, writes its half of the next `h`, and meets the
/// other part at a spin barrier. `h` is double-buffered so nobody reads what the other
/// part is writing; `c` slices are private to their part. Results do not depend on
/// the number of threads: each output element is computed the same way either way.
struct SplitRecurrentWeight: @unchecked Sendable {
    let hidden: Int
    let half: Int
    let packed: [FloatBuffer]  // one per part

    init?(weightHH w: Tensor, hidden H: Int) throws {
        guard H % 2 == 0, H >= 2, H <= Int(Int32.max) / 4 else { return nil }
        hidden = H
        half = H / 2
        var parts: [FloatBuffer] = []
        for p in 0..<2 {
            // Gather rows g·H + J_p for g = 0..3 into [4·half, H], then pack.
            let rows = try Tensor(zeros: [4 * half, H])
            for g in 0..<4 {
                (rows.data + g * half * H).update(from: w.data + (g * H + p * half) * H, count: half * H)
            }
            let buf = try FloatBuffer(count: cx_packed_size(Int32(4 * half), Int32(H)))
            let n = Int32(4 * (H / 2)), k = Int32(H)
            withExtendedLifetime(rows) { cx_pack_weights(rows.data, n, k, buf.pointer) }
            parts.append(buf)
        }
        packed = parts
    }
}

/// Everything one sequence-mode recurrence needs, shared by both parts.
struct RecurrenceJob {
    let weight: SplitRecurrentWeight
    let xg: UnsafePointer<Float>        // [B, T, 4H]: W_ih x + b for every step
    let y: UnsafeMutablePointer<Float>  // [B, T, H]
    let c: UnsafeMutablePointer<Float>  // [B, H], updated in place
    let hA: UnsafeMutablePointer<Float> // [B, H]: h before step 0 (the state's h)
    let hB: UnsafeMutablePointer<Float> // [B, H]: the other h buffer
    let gates: UnsafeMutablePointer<Float> // [2, B, 4·half]: per-part scratch
    let resets: UnsafePointer<UInt8>?   // [B, T]
    let batch: Int
    let time: Int

    /// Part `part` of `parts` (1 or 2) runs all T steps for its hidden units.
    func run(part: Int, parts: Int) {
        let H = weight.hidden, H2 = weight.half, G2 = 4 * H2, B = batch, T = time
        var cur = UnsafePointer(hA), next = hB
        for t in 0..<T {
            for p in (parts == 2 ? part..<(part + 1) : 0..<2) {
                let j0 = p * H2
                let g = gates + p * B * G2
                // Gate pre-activations of this part's units: the input projection...
                for b in 0..<B {
                    let src = xg + (b * T + t) * 4 * H
                    for k in 0..<4 { (g + b * G2 + k * H2).update(from: src + k * H + j0, count: H2) }
                }
                // ... plus W_hh h for the rows whose h was not reset before this step.
                cx_packed_gemm(Int32(B), Int32(G2), Int32(H), cur, Int32(H), weight.packed[p].pointer, g, Int32(G2), 1)
                for b in 0..<B {
                    let gb = g + b * G2
                    let cb = c + b * H + j0
                    if let resets, resets[b * T + t] != 0 {
                        let src = xg + (b * T + t) * 4 * H
                        for k in 0..<4 { (gb + k * H2).update(from: src + k * H + j0, count: H2) }
                        cb.update(repeating: 0, count: H2)
                    }
                    Kernels.sigmoid(gb, 2 * H2)
                    Kernels.tanh(gb + 2 * H2, H2)
                    Kernels.sigmoid(gb + 3 * H2, H2)
                    Vec.lstmCell(i: gb, f: gb + H2, g: gb + 2 * H2, o: gb + 3 * H2, c: cb, h: next + b * H + j0, count: H2)
                    (y + (b * T + t) * H + j0).update(from: next + b * H + j0, count: H2)
                }
            }
            cx_parallel_barrier(Int32(parts))
            let done = next
            next = UnsafeMutablePointer(mutating: cur)
            cur = UnsafePointer(done)
        }
    }

    /// Run on up to two threads; afterwards the final h is copied into `hA` if needed.
    func runParallel(parts: Int) {
        withUnsafePointer(to: self) { job in
            _ = cx_parallel_run({ ctx, part, parts in
                guard let ctx else { return }
                ctx.assumingMemoryBound(to: RecurrenceJob.self).pointee.run(part: Int(part), parts: Int(parts))
            }, UnsafeMutableRawPointer(mutating: job), Int32(parts))
        }
        if time % 2 == 1 { hA.update(from: hB, count: batch * weight.hidden) }
    }
}

import CKernels

/// Split work over Cortex's threads (the caller plus idle workers of Cortex's pool, see
/// `cxk_parallel_run`): `body(part, parts)` runs once per part, all parts at once. Parts
/// must split work, never change it, so results do not depend on the thread count.
/// `parts` passed to the body may be fewer than asked (the pool is shared).
public enum Parallel {
    /// Parts for `work` units when each part should have at least `grain` of them (a few
    /// microseconds of work: below that, waking a worker costs more than it saves), at
    /// most `items` (the pieces the work divides into) and the thread count; at least 1.
    public static func parts(work: Int, grain: Int, items: Int) -> Int {
        Int(cxk_parallel_parts(work, grain, items))
    }

    /// Run `body` as up to `parts` parts (clamped to the configured thread count).
    public static func run(parts: Int, _ body: (_ part: Int, _ parts: Int) -> Void) {
        let n = min(max(parts, 1), BLAS.threads)
        if n == 1 { body(0, 1); return }
        withoutActuallyEscaping(body) { escapable in
            var box = Box(body: escapable)
            withUnsafeMutablePointer(to: &box) { p in
                _ = cxk_parallel_run({ ctx, part, parts in
                    guard let ctx else { return }
                    ctx.assumingMemoryBound(to: Box.self).pointee.body(Int(part), Int(parts))
                }, UnsafeMutableRawPointer(p), Int32(n))
            }
        }
    }

    /// The half-open slice of `0..<count` that `part` of `parts` owns, in multiples of
    /// `align` (so SIMD loops keep full vectors).
    public static func slice(_ count: Int, part: Int, parts: Int, align: Int = 8) -> Range<Int> {
        let blocks = (count + align - 1) / align
        let lo = min(count, blocks * part / parts * align), hi = min(count, blocks * (part + 1) / parts * align)
        return lo..<hi
    }

    /// Items with these costs dealt into `parts` groups of similar total cost (largest
    /// first into the lightest group, ties to the lower group), each group in index order.
    /// Deterministic: the same costs and parts give the same groups.
    public static func groups(costs: [Int], parts: Int) -> [[Int]] {
        var groups = [[Int]](repeating: [], count: max(parts, 1)), load = [Int](repeating: 0, count: max(parts, 1))
        for i in costs.indices.sorted(by: { costs[$0] != costs[$1] ? costs[$0] > costs[$1] : $0 < $1 }) {
            let k = load.indices.min(by: { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 })!
            groups[k].append(i)
            load[k] += costs[i]
        }
        return groups.map { $0.sorted() }
    }

    private struct Box { let body: (Int, Int) -> Void }
}

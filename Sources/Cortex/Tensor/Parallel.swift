import CKernels

/// Split work over Cortex's threads (the caller plus one persistent worker, see
/// `cx_parallel_run`): `body(part, parts)` runs once per part. Parts must split work,
/// never change it, so results do not depend on the thread count.
public enum Parallel {
    /// Run `body` as up to `parts` parts (clamped to the configured thread count).
    public static func run(parts: Int, _ body: (_ part: Int, _ parts: Int) -> Void) {
        let n = min(max(parts, 1), BLAS.threads)
        if n == 1 { body(0, 1); return }
        withoutActuallyEscaping(body) { escapable in
            var box = Box(body: escapable)
            withUnsafeMutablePointer(to: &box) { p in
                _ = cx_parallel_run({ ctx, part, parts in
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

    private struct Box { let body: (Int, Int) -> Void }
}

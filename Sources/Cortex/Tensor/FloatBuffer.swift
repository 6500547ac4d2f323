#if canImport(Glibc)
import Glibc
#endif

/// One owned, 64-byte aligned, zero-initialised buffer of floats. Tensors share it
/// by reference; exported DLPack tensors retain it, so it outlives its producer.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// `zeroed: false` leaves the contents undefined (scratch memory: no page is touched
    /// until used).
    public init(count: Int, zeroed: Bool = true) throws {
        guard count >= 0 else { throw CortexError.invalidArgument("negative buffer size \(count)") }
        let bytes = try Checked.mul(max(count, 1), MemoryLayout<Float>.stride, "buffer size")
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            throw CortexError.outOfMemory("cannot allocate \(bytes) bytes")
        }
        if zeroed { memset(raw, 0, bytes) }
        self.count = count
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { free(pointer) }
}

/// A bump allocator for scratch memory. Step mode takes all its temporaries from
/// one arena per state: the first step sizes it, later steps allocate nothing.
public final class Arena: @unchecked Sendable {
    /// Per-call context that travels with the scratch every module receives: the routed-
    /// adapter slot of each stream (`[B]`), set by the state for the call; nil when the
    /// model has no routed adapters.
    public var routeSlots: UnsafePointer<Int32>?

    private var blocks: [FloatBuffer] = []
    private var used = 0
    private var highWater = 0
    /// The error a parallel part hit (parts cannot throw across threads; the caller
    /// rethrows it after the section).
    public var failure: (any Error)?
    /// Scratch of parallel parts (`child(_:)`), reset with this arena.
    private var children: [Arena] = []

    public init() {}

    /// The arena part `i` of a parallel section allocates from (one per part, so parts
    /// never share a bump pointer). Call on the calling thread, before the section.
    public func child(_ i: Int) -> Arena {
        while children.count <= i { children.append(Arena()) }
        let c = children[i]
        c.routeSlots = routeSlots
        return c
    }

    /// Give parts `0..<n` of a parallel section their arenas (call on the calling thread,
    /// before the section) and clear their failures; parts then use `part(_:)`.
    public func prepareParts(_ n: Int) {
        for i in 0..<n { child(i).failure = nil }
    }

    /// The arena of part `i`, made by `prepareParts`. Safe from any part.
    public func part(_ i: Int) -> Arena { children[i] }

    /// The first failure a part of the last section recorded (parts `0..<n`).
    public func partFailure(_ n: Int) -> (any Error)? {
        for i in 0..<min(n, children.count) { if let e = children[i].failure { return e } }
        return nil
    }

    /// Scratch for `count` floats, valid until the next `reset()`. Not zeroed.
    public func take(_ count: Int) throws -> UnsafeMutablePointer<Float> {
        // Round to 16 floats so every slice stays 64-byte aligned.
        let n = try Checked.mul((count + 15) / 16, 16, "scratch size")
        if let last = blocks.last, used + n <= last.count {
            let p = last.pointer + used
            used += n
            highWater = max(highWater, used)
            return p
        }
        // Grow: a new block; earlier blocks stay alive until reset() merges them.
        let block = try FloatBuffer(count: max(n, 4096), zeroed: false)
        blocks.append(block)
        used = n
        highWater = max(highWater, n)
        return block.pointer
    }

    /// Forget all scratch handed out. If several blocks were needed, replace them by
    /// one large enough for all, so the next pass fits without allocating.
    public func reset() {
        if blocks.count > 1 {
            let total = blocks.reduce(0) { $0 + $1.count }
            if let merged = try? FloatBuffer(count: total, zeroed: false) {
                blocks = [merged]
            } else {
                blocks.removeAll()
            }
        }
        used = 0
        for c in children { c.reset() }
    }

    /// Scratch for `count` bytes (masks), carved from float scratch; valid until `reset()`.
    /// The bytes are only ever accessed as UInt8 through the returned pointer.
    public func takeBytes(_ count: Int) throws -> UnsafeMutablePointer<UInt8> {
        let p = try take((count + 3) / 4)
        return UnsafeMutableRawPointer(p).bindMemory(to: UInt8.self, capacity: count)
    }

    /// Floats currently reserved (for tests of the no-allocation contract).
    public var capacity: Int { blocks.reduce(0) { $0 + $1.count } + children.reduce(0) { $0 + $1.capacity } }
}

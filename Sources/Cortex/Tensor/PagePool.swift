
/// Fixed-size pages of floats from a bounded pool: the memory behind paged caches (a
/// spike stream's window of keys/values). A page is allocated once and recycled through
/// a free list, so a cache that slides or is reset allocates nothing in steady state,
/// and the pool's bound is the cache's memory bound. Pages carry a reference count:
/// several owners may share one (copy-on-write forks); it returns to the free list
/// when the last owner releases it. Thread-safe.
public final class PagePool: @unchecked Sendable {
    /// Floats per page.
    public let pageFloats: Int
    /// Pages the pool may hold at most.
    public let maxPages: Int

    private struct Books {
        var pages: [FloatBuffer] = []   // every page made so far, by index
        var refs: [Int32] = []          // owners of each page (0: on the free list)
        var free: [Int] = []
    }
    private let books = Locked(Books())

    public init(pageFloats: Int, maxPages: Int) throws {
        guard pageFloats >= 1, maxPages >= 1 else {
            throw CortexError.invalidArgument("a page pool needs pageFloats >= 1 and maxPages >= 1 (got \(pageFloats), \(maxPages))")
        }
        _ = try Checked.mul(pageFloats, maxPages, "page pool size")
        self.pageFloats = pageFloats
        self.maxPages = maxPages
    }

    /// A page for one owner (contents undefined). Throws `outOfMemory` when all
    /// `maxPages` are in use.
    public func allocate() throws -> Int {
        try books.withLock { b in
            if let i = b.free.popLast() {
                b.refs[i] = 1
                return i
            }
            guard b.pages.count < maxPages else {
                throw CortexError.outOfMemory("page pool exhausted: all \(maxPages) pages of \(pageFloats) floats are in use")
            }
            b.pages.append(try FloatBuffer(count: pageFloats, zeroed: false))
            b.refs.append(1)
            return b.pages.count - 1
        }
    }

    /// One more owner of `page` (a fork sharing it).
    public func retain(_ page: Int) { books.withLock { $0.refs[page] += 1 } }

    /// One owner fewer; the last one returns the page to the free list.
    public func release(_ page: Int) {
        books.withLock { b in
            b.refs[page] -= 1
            if b.refs[page] == 0 { b.free.append(page) }
        }
    }

    /// Whether more than one owner holds `page` (write to a copy, not to it).
    public func isShared(_ page: Int) -> Bool { books.withLock { $0.refs[page] > 1 } }

    public func pointer(_ page: Int) -> UnsafeMutablePointer<Float> { books.withLock { $0.pages[page].pointer } }

    /// Pages held by at least one owner.
    public var pagesInUse: Int { books.withLock { $0.pages.count - $0.free.count } }
    /// Pages ever made (in use or on the free list): the memory the pool holds.
    public var pagesMade: Int { books.withLock { $0.pages.count } }
}

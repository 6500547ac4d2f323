import CSQLite
#if canImport(Glibc)
import Glibc
#endif

/// Sidecar sessions persisted in one SQLite database file (WAL mode), by session id.
///
/// - A save is one transaction: a process killed mid-save leaves the previous blob (SQLite's
///   WAL guarantees it; `synchronous=FULL` also survives power loss).
/// - Blobs are `SessionCodec`'s (magic, version, the sidecar's fingerprint, checksum), so
///   a session loads only into the sidecar that wrote it.
/// - `ttl` (seconds, 0: none): a session not saved or loaded for that long is expired:
///   never returned, and deleted by the next open, save, list or `purgeExpired`.
/// - `maxBytes` (0: none): after a save, the least recently used sessions (by last save
///   or load) are evicted until the blobs fit; a single blob larger than the cap is refused.
///
/// Thread-safe: calls are serialised. Several processes may share the file (SQLite's
/// locking, with a 10 s busy timeout).
public final class SessionStore: @unchecked Sendable {
    public struct Options: Sendable {
        public var ttl: Double = 0
        public var maxBytes: Int = 0
        public init(ttl: Double = 0, maxBytes: Int = 0) { self.ttl = ttl; self.maxBytes = maxBytes }
    }

    public struct Entry: Sendable, Equatable {
        public let id: String
        public let bytes: Int
        public let fingerprint: String
        public let updated: Double, accessed: Double
    }

    public let path: String
    public let options: Options
    private let db: OpaquePointer
    private let lock = Locked<Int>(0)
    /// The clock (seconds since the epoch); replaceable by tests.
    var now: @Sendable () -> Double = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    static let schema = "cortex-session-store 1"

    public init(path: String, options: Options = Options()) throws {
        guard options.ttl >= 0, options.ttl.isFinite, options.maxBytes >= 0 else {
            throw CortexError.invalidArgument("session store: ttl and max_bytes must be >= 0")
        }
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let handle { sqlite3_close_v2(handle) }
            throw CortexError.io("session store \(path): cannot open (\(msg))")
        }
        db = handle
        self.path = path
        self.options = options
        do {
            sqlite3_busy_timeout(db, 10_000)
            let mode = try queryText("PRAGMA journal_mode=WAL")
            guard mode?.lowercased() == "wal" else { throw CortexError.io("session store \(path): WAL mode is not available (\(mode ?? "?"))") }
            try exec("PRAGMA synchronous=FULL")
            try exec("""
                CREATE TABLE IF NOT EXISTS cortex_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS sessions (
                    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, blob BLOB NOT NULL, bytes INTEGER NOT NULL,
                    created REAL NOT NULL, updated REAL NOT NULL, accessed REAL NOT NULL);
                CREATE INDEX IF NOT EXISTS sessions_accessed ON sessions (accessed);
                INSERT OR IGNORE INTO cortex_meta VALUES ('schema', '\(SessionStore.schema)');
                """)
            let found = try queryText("SELECT value FROM cortex_meta WHERE key = 'schema'")
            guard found == SessionStore.schema else {
                throw CortexError.unsupported("session store \(path): schema '\(found ?? "?")' is not '\(SessionStore.schema)'")
            }
            _ = try purgeExpired()
        } catch {
            sqlite3_close_v2(db)
            throw error
        }
    }

    deinit { sqlite3_close_v2(db) }

    // MARK: operations

    /// Save (insert or replace) `session` under its id, then evict expired and, past
    /// `maxBytes`, least recently used sessions.
    public func save(_ session: SidecarSession) throws {
        let blob = try SessionCodec.encode(session)
        try save(id: session.id, fingerprint: session.model.fingerprint.hex16, blob: blob)
    }

    func save(id: String, fingerprint: String, blob: [UInt8]) throws {
        if options.maxBytes > 0, blob.count > options.maxBytes {
            throw CortexError.invalidArgument("session store: session '\(id)' is \(blob.count) bytes, more than max_bytes \(options.maxBytes)")
        }
        try serialised {
            let t = now()
            try transaction {
                try run("""
                    INSERT INTO sessions (id, fingerprint, blob, bytes, created, updated, accessed) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)
                    ON CONFLICT(id) DO UPDATE SET fingerprint = ?2, blob = ?3, bytes = ?4, updated = ?5, accessed = ?5
                    """, [.text(id), .text(fingerprint), .blob(blob), .int(blob.count), .real(t)])
                try deleteExpired(at: t)
                if options.maxBytes > 0 {
                    // Oldest access first, never the one just written.
                    var total = try queryInt("SELECT COALESCE(SUM(bytes), 0) FROM sessions")
                    while total > options.maxBytes {
                        guard let (victim, size) = try oldest(excluding: id) else { break }
                        try run("DELETE FROM sessions WHERE id = ?1", [.text(victim)])
                        total -= size
                    }
                }
            }
        }
    }

    /// The session saved under `id`, for `model`; it counts as an access (LRU, TTL).
    public func load(id: String, model: Model) throws -> SidecarSession {
        try serialised {
            let t = now()
            guard let row = try row(id: id) else { throw CortexError.notFound("session store: no session '\(id)'") }
            if isExpired(accessed: row.accessed, at: t) {
                try run("DELETE FROM sessions WHERE id = ?1", [.text(id)])
                throw CortexError.notFound("session store: session '\(id)' expired (ttl \(options.ttl) s)")
            }
            // Decode first: a refused load (another sidecar's session) renews nothing.
            let session = try SessionCodec.decode(row.blob, model: model)
            try run("UPDATE sessions SET accessed = ?2 WHERE id = ?1", [.text(id), .real(t)])
            return session
        }
    }

    /// Delete session `id`; returns whether it existed.
    @discardableResult
    public func delete(id: String) throws -> Bool {
        try serialised {
            try run("DELETE FROM sessions WHERE id = ?1", [.text(id)])
            return sqlite3_changes(db) > 0
        }
    }

    /// Live sessions, most recently used first.
    public func list() throws -> [Entry] {
        try serialised {
            try deleteExpired(at: now())
            var out: [Entry] = []
            try query("SELECT id, bytes, fingerprint, updated, accessed FROM sessions ORDER BY accessed DESC, id", []) { st in
                out.append(Entry(id: text(st, 0), bytes: Int(sqlite3_column_int64(st, 1)), fingerprint: text(st, 2),
                                 updated: sqlite3_column_double(st, 3), accessed: sqlite3_column_double(st, 4)))
            }
            return out
        }
    }

    /// Delete expired sessions now; returns how many.
    @discardableResult
    public func purgeExpired() throws -> Int {
        try serialised {
            guard options.ttl > 0 else { return 0 }
            try deleteExpired(at: now())
            return Int(sqlite3_changes(db))
        }
    }

    /// Total blob bytes stored.
    public func totalBytes() throws -> Int {
        try serialised { try queryInt("SELECT COALESCE(SUM(bytes), 0) FROM sessions") }
    }

    // MARK: SQL helpers

    enum Value { case text(String), blob([UInt8]), int(Int), real(Double) }

    private func serialised<R>(_ body: () throws -> R) throws -> R {
        try lock.withLock { _ in try body() }
    }

    private func isExpired(accessed: Double, at t: Double) -> Bool { options.ttl > 0 && accessed + options.ttl <= t }

    private func deleteExpired(at t: Double) throws {
        guard options.ttl > 0 else { return }
        try run("DELETE FROM sessions WHERE accessed + ?1 <= ?2", [.real(options.ttl), .real(t)])
    }

    private func oldest(excluding id: String) throws -> (String, Int)? {
        var found: (String, Int)?
        try query("SELECT id, bytes FROM sessions WHERE id != ?1 ORDER BY accessed ASC, id LIMIT 1", [.text(id)]) { st in
            found = (text(st, 0), Int(sqlite3_column_int64(st, 1)))
        }
        return found
    }

    private func row(id: String) throws -> (blob: [UInt8], accessed: Double)? {
        var out: ([UInt8], Double)?
        try query("SELECT blob, accessed FROM sessions WHERE id = ?1", [.text(id)]) { st in
            let n = Int(sqlite3_column_bytes(st, 0))
            var blob = [UInt8](repeating: 0, count: n)
            if n > 0, let p = sqlite3_column_blob(st, 0) {
                blob.withUnsafeMutableBytes { $0.baseAddress?.copyMemory(from: p, byteCount: n) }
            }
            out = (blob, sqlite3_column_double(st, 1))
        }
        return out
    }

    private func transaction(_ body: () throws -> Void) throws {
        try exec("BEGIN IMMEDIATE")
        do {
            try body()
            try exec("COMMIT")
        } catch {
            _ = sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            throw error
        }
    }

    private func failure(_ what: String) -> CortexError {
        .io("session store \(path): \(what): \(String(cString: sqlite3_errmsg(db)))")
    }

    private func exec(_ sql: String) throws {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw failure("SQL failed") }
    }

    private func run(_ sql: String, _ values: [Value]) throws {
        try query(sql, values) { _ in }
    }

    private func queryInt(_ sql: String) throws -> Int {
        var v = 0
        try query(sql, []) { v = Int(sqlite3_column_int64($0, 0)) }
        return v
    }

    private func queryText(_ sql: String) throws -> String? {
        var v: String?
        try query(sql, []) { v = text($0, 0) }
        return v
    }

    private func text(_ st: OpaquePointer, _ col: Int32) -> String {
        guard let p = sqlite3_column_text(st, col) else { return "" }
        return String(cString: p)
    }

    /// Prepare, bind, step through every row, finalise.
    private func query(_ sql: String, _ values: [Value], row: (OpaquePointer) throws -> Void) throws {
        var st: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &st, nil) == SQLITE_OK, let st else { throw failure("prepare") }
        defer { sqlite3_finalize(st) }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, v) in values.enumerated() {
            let k = Int32(i + 1)
            let rc: Int32
            switch v {
            case .text(let s): rc = sqlite3_bind_text(st, k, s, -1, transient)
            case .int(let n): rc = sqlite3_bind_int64(st, k, Int64(n))
            case .real(let d): rc = sqlite3_bind_double(st, k, d)
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob64(st, k, $0.baseAddress, sqlite3_uint64($0.count), transient) }
            }
            guard rc == SQLITE_OK else { throw failure("bind") }
        }
        while true {
            let rc = sqlite3_step(st)
            if rc == SQLITE_ROW { try row(st); continue }
            guard rc == SQLITE_DONE else { throw failure("step") }
            return
        }
    }
}

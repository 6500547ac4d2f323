#if canImport(Glibc)
import Glibc
#endif

/// Whole-file reads and atomic writes through libc (no Foundation needed).
public enum FileIO {
    /// Open `path` for reading and return the descriptor and the file's size; refuses
    /// anything but a regular file. Opened with O_NONBLOCK, so a named pipe (or a device)
    /// is refused at once instead of blocking until a writer appears.
    public static func openRegular(_ path: String) throws -> (fd: Int32, size: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw CortexError.io("cannot open \(path): \(errnoText())") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let why = errnoText()
            close(fd)
            throw CortexError.io("cannot stat \(path): \(why)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw CortexError.io("\(path) is not a regular file (a pipe, device or directory)")
        }
        return (fd, Int(st.st_size))
    }

    /// Exactly `count` bytes at `offset` of an open file.
    public static func read(_ fd: Int32, _ path: String, offset: Int, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        try bytes.withUnsafeMutableBytes { buf in
            guard let base = buf.baseAddress else { return }
            while done < count {
                let n = pread(fd, base + done, count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    throw CortexError.io("cannot read \(path): \(errnoText())")
                }
                if n == 0 { break }
                done += n
            }
        }
        guard done == count else { throw CortexError.io("\(path): short read (\(done) of \(count) bytes)") }
        return bytes
    }

    /// The bytes of `path`; files larger than `limit` bytes are refused before reading.
    public static func read(_ path: String, limit: Int = 1 << 36) throws -> [UInt8] {
        let (fd, size) = try openRegular(path)
        defer { close(fd) }
        guard size <= limit else { throw CortexError.io("\(path) is \(size) bytes, above the limit of \(limit)") }
        return try read(fd, path, offset: 0, count: size)
    }

    /// Write `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
    public static func writeAtomic(_ path: String, _ bytes: [UInt8]) throws {
        let tmp = path + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CortexError.io("cannot create \(tmp): \(errnoText())") }
        var ok = true
        bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count, let base = buf.baseAddress {
                let n = write(fd, base + done, buf.count - done)
                if n < 0 { if errno == EINTR { continue }; ok = false; return }
                done += n
            }
        }
        if fsync(fd) != 0 { ok = false }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let why = errnoText()
            unlink(tmp)
            throw CortexError.io("cannot write \(path): \(why)")
        }
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}

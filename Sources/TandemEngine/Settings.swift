import Glibc
import Synchronization
import TandemCore
import TandemLicensing

/// Settings the engine needs; reloadable.
public struct EngineSettings: Sendable {
    public var defaultLeaseUSec: USec
    public var maxLeaseUSec: USec
    public var trustedKeys: TrustedKeys
    /// The site's usage policy (policy.conf), applied to acquisitions this node decides.
    public var policy: UsagePolicy
    public init(
        defaultLeaseUSec: USec = 300 * usecPerSecond, maxLeaseUSec: USec = 86_400 * usecPerSecond,
        trustedKeys: TrustedKeys = TrustedKeys(), policy: UsagePolicy = .open
    ) {
        self.policy = policy
        self.defaultLeaseUSec = defaultLeaseUSec
        self.maxLeaseUSec = maxLeaseUSec
        self.trustedKeys = trustedKeys
    }
    public static let minLeaseUSec: USec = usecPerSecond
    /// The longest an acquisition may wait for a seat (`wait_usec`).
    public static let maxWaitUSec: USec = 3_600 * usecPerSecond
    /// The longest borrow any policy may allow (`Borrow=` is at most 365 days).
    public static let maxBorrowUSec: USec = 365 * 86_400 * usecPerSecond
}

/// Fresh identifiers: unguessable (a lease id is what renews and releases a lease over the
/// network), so from the kernel's CSPRNG, but read through `RandomBytes`, 4 KiB at a time,
/// rather than a getrandom call per byte.
public enum Identifiers {
    static let digits = Array("0123456789abcdef".utf8)

    /// `prefix` and `bytes` random bytes in hex, built in one buffer (a lease id is made per grant).
    static func hex(_ prefix: String, _ bytes: Int) -> String {
        var raw = [UInt8](repeating: 0, count: bytes)
        RandomBytes.shared.fill(&raw)
        var out = Array(prefix.utf8)
        out.reserveCapacity(out.count + bytes * 2)
        for b in raw {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
    public static func lease() -> String { hex("lease-", 8) }
    public static func reservation() -> String { hex("res-", 6) }
    public static func audit() -> String { hex("audit-", 8) }
    public static func denial() -> String { hex("deny-", 8) }
    /// A License Server ID such as `TS-7Q2M-K4XW-9D1C-B3RT` (Crockford base32, 80 bits).
    public static func serverId() -> String {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var raw = [UInt8](repeating: 0, count: 16)
        RandomBytes.shared.fill(&raw)
        let chars = raw.map { alphabet[Int($0 & 31)] }
        return "TS-" + stride(from: 0, to: 16, by: 4).map { String(chars[$0..<$0 + 4]) }.joined(separator: "-")
    }
}

/// Bytes of the kernel's CSPRNG, buffered: three system calls per 4 KiB instead of one
/// getrandom(2) per identifier byte. A byte is handed out once and wiped from the buffer as it goes.
/// tandemd forks no child that makes identifiers, so no two processes share a buffer.
public final class RandomBytes: Sendable {
    public static let shared = RandomBytes()
    static let chunk = 4096

    private let pool = Mutex<(bytes: [UInt8], next: Int)>(([], 0))

    public func fill(_ out: inout [UInt8]) {
        pool.withLock { p in
            for i in out.indices {
                if p.next == p.bytes.count {
                    p.bytes = Self.read(Self.chunk)
                    p.next = 0
                }
                out[i] = p.bytes[p.next]
                p.bytes[p.next] = 0
                p.next += 1
            }
        }
    }

    /// `count` bytes of /dev/urandom (the same generator as getrandom(2), once it is seeded).
    static func read(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { fatalError("/dev/urandom: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, count - done) }
            if n > 0 {
                done += n
            } else if n == 0 || errno != EINTR {
                fatalError("/dev/urandom: \(n == 0 ? "end of file" : String(cString: strerror(errno)))")
            }
        }
        return bytes
    }
}

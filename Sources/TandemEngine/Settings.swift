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

/// Fresh identifiers.
public enum Identifiers {
    static func hex(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes * 2)
        for _ in 0..<bytes {
            let b = UInt8.random(in: 0...255, using: &g)
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
    public static func lease() -> String { "lease-" + hex(8) }
    public static func reservation() -> String { "res-" + hex(6) }
    public static func audit() -> String { "audit-" + hex(8) }
    public static func denial() -> String { "deny-" + hex(8) }
    /// A License Server ID such as `TS-7Q2M-K4XW-9D1C-B3RT` (Crockford base32, 80 bits).
    public static func serverId() -> String {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var g = SystemRandomNumberGenerator()
        let chars = (0..<16).map { _ in alphabet[Int.random(in: 0..<32, using: &g)] }
        return "TS-" + stride(from: 0, to: 16, by: 4).map { String(chars[$0..<$0 + 4]) }.joined(separator: "-")
    }
}

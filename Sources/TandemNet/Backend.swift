import TandemCore

/// What the network API needs from the license engine. The daemon implements it by handing
/// each call to the engine's own thread and answering once the change is durable.
public protocol LicenseBackend: Sendable {
    func serverStatus() async -> ServerStatus
    func acquire(_ request: AcquireBody) async -> Result<(LeaseView, created: Bool), TandemError>
    func renew(leaseId: String) async -> Result<LeaseView, TandemError>
    func release(leaseId: String) async -> Result<Void, TandemError>
    func lease(id: String) async -> Result<LeaseView, TandemError>
    func features() async -> [FeatureUsage]
}

/// `GET /v1/server`.
public struct ServerStatus: Codable, Sendable, Equatable {
    public var serverId: String
    public var version: String
    public var role: String
    public var pairStatus: String
    public var serving: Bool
    public var epoch: UInt64
    public var peerAddress: String?
    public var peerServerId: String?
    public init(serverId: String, version: String, role: String, pairStatus: String, serving: Bool, epoch: UInt64,
                peerAddress: String? = nil, peerServerId: String? = nil) {
        self.serverId = serverId
        self.version = version
        self.role = role
        self.pairStatus = pairStatus
        self.serving = serving
        self.epoch = epoch
        self.peerAddress = peerAddress
        self.peerServerId = peerServerId
    }
}

/// `POST /v1/leases` body.
public struct AcquireBody: Sendable, Equatable {
    public var feature: String
    public var count: UInt32
    public var client: String
    public var requestId: String?
    public var ttlSec: UInt64?
    public init(feature: String, count: UInt32, client: String, requestId: String? = nil, ttlSec: UInt64? = nil) {
        self.feature = feature
        self.count = count
        self.client = client
        self.requestId = requestId
        self.ttlSec = ttlSec
    }
}

/// A lease as the network API shows it.
public struct LeaseView: Codable, Sendable, Equatable {
    public var leaseId: String
    public var feature: String
    public var client: String
    public var count: UInt32
    public var acquiredAt: String
    public var expiresAt: String
    public var expiresUsec: UInt64
    public var ttlSec: UInt64
    public var serverId: String

    public init(_ lease: Lease, serverId: String) {
        leaseId = lease.id
        feature = lease.feature
        client = lease.client
        count = lease.count
        acquiredAt = RFC3339.format(usec: lease.acquiredUSec)
        expiresAt = RFC3339.format(usec: lease.expiresUSec)
        expiresUsec = lease.expiresUSec
        ttlSec = lease.ttlUSec / usecPerSecond
        self.serverId = serverId
    }
}

public enum RFC3339 {
    /// "2026-11-29T17:40:00Z" (UTC, whole seconds).
    public static func format(usec: UInt64) -> String {
        let secs = Int64(usec / 1_000_000)
        let days = secs / 86_400
        let rem = secs % 86_400
        // Civil date from days (Howard Hinnant).
        let z = days + 719_468
        let era = z / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(y)-\(two(m))-\(two(d))T\(two(rem / 3600)):\(two(rem / 60 % 60)):\(two(rem % 60))Z"
    }
}

/// The usage history: every lease is a session, every refused acquisition a denial. Both are
/// derived from the change log (a session from a lease's grant and end, a denial from its own
/// entry), so that the standby, which receives the same log, keeps the same history.

/// How a session ended.
public enum SessionEnd: String, Sendable, Equatable, CaseIterable, Codable {
    /// Its holder released it.
    case released
    /// Its holder stopped renewing it.
    case expired
    /// An administrator released a lease that was not theirs.
    case revoked
    /// A partition healed and the serving node's log does not hold it (this node had granted
    /// it alone, and the merge ended it or the lease had run out meanwhile).
    case merged
}

/// Who holds a lease beyond the free-form client id: the login and host names a product
/// gives (or the OS's, filled in by `tandemctl client` and `TandemClient`).
public struct Holder: Sendable, Equatable, Codable {
    public var user: String?
    public var host: String?
    public init(user: String? = nil, host: String? = nil) {
        self.user = user
        self.host = host
    }
    public static let unknown = Holder()
}

/// One refused acquisition.
public struct Denial: Sendable, Equatable, Codable {
    /// Unique ("deny-" and 16 hex digits): recorded once however often its entry is applied.
    public var id: String
    public var timeUSec: USec
    public var feature: String
    public var count: UInt32
    public var client: String
    public var holder: Holder
    /// The local caller's uid (D-Bus); nil over the network.
    public var uid: UInt32?
    /// The network API token's name (`ClientTokenFile=`).
    public var token: String?
    public var reason: DenialReason

    public init(
        id: String, timeUSec: USec, feature: String, count: UInt32, client: String, holder: Holder,
        uid: UInt32?, token: String?, reason: DenialReason
    ) {
        self.id = id
        self.timeUSec = timeUSec
        self.feature = feature
        self.count = count
        self.client = client
        self.holder = holder
        self.uid = uid
        self.token = token
        self.reason = reason
    }
}

/// One lease's life: from its grant to its end (nil while it is held).
public struct Session: Sendable, Equatable {
    public var leaseId: String
    public var feature: String
    public var count: UInt32
    public var client: String
    public var holder: Holder
    public var uid: UInt32?
    public var token: String?
    public var startUSec: USec
    public var endUSec: USec?
    public var ended: SessionEnd?
    /// A borrow's: the machine the seats were taken to.
    public var machineId: String?

    public init(
        leaseId: String, feature: String, count: UInt32, client: String, holder: Holder, uid: UInt32?,
        token: String?, startUSec: USec, endUSec: USec? = nil, ended: SessionEnd? = nil
    ) {
        self.leaseId = leaseId
        self.feature = feature
        self.count = count
        self.client = client
        self.holder = holder
        self.uid = uid
        self.token = token
        self.startUSec = startUSec
        self.endUSec = endUSec
        self.ended = ended
    }

    public init(_ lease: Lease) {
        self.init(
            leaseId: lease.id, feature: lease.feature, count: lease.count, client: lease.client,
            holder: lease.holder, uid: lease.uid, token: lease.token, startUSec: lease.acquiredUSec)
        machineId = lease.machineId
    }

    /// Seat-microseconds held within [since, until) (an open session counts up to `now`).
    public func seatUSec(since: USec, until: USec, now: USec) -> UInt64 {
        let end = min(endUSec ?? now, until), start = max(startUSec, since)
        return end > start ? UInt64(count) * (end - start) : 0
    }
}

/// One bucket of a feature's usage series.
public struct UsageBucket: Sendable, Equatable {
    public var startUSec: USec
    /// The most seats in use at any moment of the bucket.
    public var maxInUse: UInt32
    /// The seats owned (of licenses valid) during the bucket, as last recorded.
    public var seats: UInt32
    public var acquisitions: UInt32
    public var denials: UInt32

    public init(startUSec: USec, maxInUse: UInt32, seats: UInt32, acquisitions: UInt32, denials: UInt32) {
        self.startUSec = startUSec
        self.maxInUse = maxInUse
        self.seats = seats
        self.acquisitions = acquisitions
        self.denials = denials
    }
}

/// Which sessions or denials a listing or a report takes (every field that is set must match).
public struct HistoryFilter: Sendable, Equatable {
    public var feature: String?
    public var user: String?
    public var host: String?
    public var client: String?
    /// At most this many rows (the newest); nil: `defaultLimit`.
    public var limit: Int?

    public init(
        feature: String? = nil, user: String? = nil, host: String? = nil, client: String? = nil, limit: Int? = nil
    ) {
        self.feature = feature
        self.user = user
        self.host = host
        self.client = client
        self.limit = limit
    }

    public static let defaultLimit = 10_000
    public static let maxLimit = 1_000_000
}

/// What a report groups by.
public enum ReportGrouping: String, Sendable, Equatable, CaseIterable {
    case user, host, feature, client
}

/// One group of a report: sessions (or denials) and the seat-hours they held.
public struct ReportRow: Sendable, Equatable {
    public var group: String
    public var count: UInt64
    /// Seat-hours held within the report's range (0 for denials).
    public var seatHours: Double
    public init(group: String, count: UInt64, seatHours: Double) {
        self.group = group
        self.count = count
        self.seatHours = seatHours
    }
}

/// The series' steps that are kept as rollups (one minute, one hour, one day); a series of any
/// step that is a multiple of one minute is summed from the coarsest that divides it.
public enum UsageRollup {
    public static let stepsUSec: [USec] = [60 * usecPerSecond, 3600 * usecPerSecond, 86400 * usecPerSecond]
    public static let minStepUSec = stepsUSec[0]
    /// The coarsest rollup whose step divides `step`.
    public static func source(for step: USec) -> USec? {
        stepsUSec.last { step % $0 == 0 }
    }
    /// A series answers at most this many buckets (a year and some of minutes) over D-Bus.
    public static let maxBuckets: UInt64 = 600_000
    /// Over HTTP, at most this many (about 1.2 MB of JSON, a week of minutes): 600000 buckets
    /// are 70 MB of JSON. A client pages back with `until` set to the first bucket's start.
    public static let maxNetworkBuckets: UInt64 = 10_000
}

/// Time in microseconds since the Unix epoch (CLOCK_REALTIME), systemd style.
public typealias USec = UInt64

public let usecPerSecond: USec = 1_000_000

/// An activated license: what a verified license document grants.
public struct License: Codable, Sendable, Equatable {
    public var id: String
    public var product: String
    public var feature: String
    public var seats: UInt32
    /// Last valid instant (inclusive), 0 = never expires.
    public var notAfterUSec: USec
    public var issuedTo: [String]
    public var keyId: String
    /// The signed document exactly as activated (kept for audit and replication).
    public var document: String
    public var activatedUSec: USec

    public init(
        id: String, product: String, feature: String, seats: UInt32, notAfterUSec: USec,
        issuedTo: [String], keyId: String, document: String, activatedUSec: USec = 0
    ) {
        self.id = id
        self.product = product
        self.feature = feature
        self.seats = seats
        self.notAfterUSec = notAfterUSec
        self.issuedTo = issuedTo
        self.keyId = keyId
        self.document = document
        self.activatedUSec = activatedUSec
    }

    public func isExpired(at now: USec) -> Bool { notAfterUSec != 0 && now > notAfterUSec }
}

/// Seats held by one client for a limited time.
public struct Lease: Codable, Sendable, Equatable {
    public var id: String
    public var feature: String
    public var client: String
    public var count: UInt32
    /// uid of the local caller that acquired it (D-Bus); nil for network clients.
    public var uid: UInt32?
    /// The name of the network API token it was acquired with (`ClientTokenFile=`); nil over
    /// D-Bus and without tokens. Only that token (or an administrator) may renew or release it.
    public var token: String?
    /// The login and host names the product gave (see `Holder`); nil when not given.
    public var user: String?
    public var host: String?
    public var requestId: String?
    public var acquiredUSec: USec
    public var expiresUSec: USec
    public var ttlUSec: USec
    /// The serving epoch in which the lease was granted.
    public var epoch: UInt64
    /// A borrow (`tandemctl client borrow`): the `/etc/machine-id` of the machine that took the
    /// seats away. Its expiry is fixed (never renewed) and its certificate says so.
    public var machineId: String?
    /// When an administrator revoked the borrow. Its seats stay counted until the expiry: the
    /// borrowing machine is offline and cannot be told.
    public var borrowRevokedUSec: USec?

    public init(
        id: String, feature: String, client: String, count: UInt32, uid: UInt32?, token: String? = nil,
        holder: Holder = .unknown, requestId: String?, acquiredUSec: USec, expiresUSec: USec, ttlUSec: USec,
        epoch: UInt64
    ) {
        self.id = id
        self.feature = feature
        self.client = client
        self.count = count
        self.uid = uid
        self.token = token
        self.user = holder.user
        self.host = holder.host
        self.requestId = requestId
        self.acquiredUSec = acquiredUSec
        self.expiresUSec = expiresUSec
        self.ttlUSec = ttlUSec
        self.epoch = epoch
    }

    public var isBorrowed: Bool { machineId != nil }

    public var holder: Holder {
        get { Holder(user: user, host: host) }
        set { (user, host) = (newValue.user, newValue.host) }
    }
}

/// Seats set aside for one holder (a client id).
public struct Reservation: Codable, Sendable, Equatable {
    public var id: String
    public var feature: String
    public var holder: String
    public var count: UInt32
    public init(id: String, feature: String, holder: String, count: UInt32) {
        self.id = id
        self.feature = feature
        self.holder = holder
        self.count = count
    }
}

/// A feature's seat account at one instant: the one definition of each number.
///
/// `reserved` counts seats *set aside and not used*: a holder's own leases draw from its
/// reservations first, so a reservation whose holder uses it adds to `inUse`, not to
/// `reserved`. Whenever the seats cover the use, `inUse + reserved + available == seats`
/// (in general the three add up to `max(seats, inUse)`).
/// Why an acquisition was refused (reports, metrics; more reasons come with policies).
public enum DenialReason: String, Sendable, Equatable, CaseIterable, Codable {
    /// Fewer seats free than asked for.
    case insufficientSeats = "insufficient-seats"
    /// Free seats exist but are set aside for other holders.
    case reservedForOthers = "reserved-for-others"
    /// No active license for the feature.
    case unknownFeature = "unknown-feature"
    /// The usage policy's `Exclude=` names the holder.
    case policyExcluded = "policy-excluded"
    /// The usage policy's `Include=` names others only.
    case policyNotIncluded = "policy-not-included"
    /// The holder would hold more than the policy's `Max=` allows it.
    case policyMax = "policy-max"
    /// Free seats exist but the usage policy's `Reserve=` sets them aside for others.
    case policyReserved = "policy-reserved"
    /// A borrow the usage policy's `Borrow=` does not allow (none, or not that long).
    case policyBorrow = "policy-borrow"

    /// Refusals by the usage policy (`PolicyDenied`).
    public var isPolicy: Bool {
        switch self {
        case .policyExcluded, .policyNotIncluded, .policyMax, .policyReserved, .policyBorrow: return true
        case .insufficientSeats, .reservedForOthers, .unknownFeature: return false
        }
    }
}

public struct FeatureUsage: Sendable, Equatable, Codable {
    public var feature: String
    /// Seats of the feature's licenses that are valid now.
    public var seats: UInt32
    /// Seats held by leases.
    public var inUse: UInt32
    /// Seats set aside for holders and not used by them (at most the seats not in use).
    public var reserved: UInt32
    /// Seats a client without a reservation can acquire now.
    public var available: UInt32
    /// Acquisitions refused for lack of seats (not replicated).
    public var denied: UInt64

    public init(feature: String, seats: UInt32, inUse: UInt32, reserved: UInt32, available: UInt32, denied: UInt64) {
        (self.feature, self.seats, self.inUse, self.reserved, self.available, self.denied) = (
            feature, seats, inUse, reserved, available, denied
        )
    }
}

/// One license's part of its feature's account (see `LicenseState.shares`).
public struct LicenseShare: Sendable, Equatable {
    public var licenseId: String
    public var seats: UInt32
    public var inUse: UInt32
    public var reserved: UInt32
}

/// A state change: the unit of durability, of the change log and of replication.
/// Replaying the changes of the log in order rebuilds the state exactly.
public enum Change: Codable, Sendable, Equatable {
    case serverIdSet(id: String)
    case licenseActivated(License)
    case licenseDeactivated(id: String)
    case leaseGranted(Lease)
    case leaseRenewed(id: String, expiresUSec: USec)
    /// `atUSec`: when it was decided; `revoked`: by an administrator, not its holder (both nil in
    /// entries written before the usage history, which are taken as released at their commit).
    case leaseReleased(id: String, atUSec: USec? = nil, revoked: Bool? = nil)
    case leaseExpired(id: String)
    /// An administrator revoked a borrow: it stays, counted, until it expires.
    case borrowRevoked(id: String, atUSec: USec)
    case reservationAdded(Reservation)
    case reservationRemoved(id: String)
    /// A node started serving in a new epoch (the first entry of every serving period).
    case epochStarted(epoch: UInt64)
    /// Lease changes that a node of a pair made alone while the pair was cut off (no witness)
    /// and that another node's log does not hold were merged into the log: those of `epoch`
    /// up to sequence number `through` (so that they are merged once).
    case leasesMerged(epoch: UInt64, through: UInt64)
    /// An administrative action was done or refused (the audit trail; no license state).
    case audited(AuditRecord)
    /// An acquisition was refused (the usage history; no license state).
    case acquisitionDenied(Denial)

    /// A short stable name used as the change log's `kind` column.
    public var kind: String {
        switch self {
        case .serverIdSet: return "server-id-set"
        case .licenseActivated: return "license-activated"
        case .licenseDeactivated: return "license-deactivated"
        case .leaseGranted: return "lease-granted"
        case .leaseRenewed: return "lease-renewed"
        case .leaseReleased: return "lease-released"
        case .leaseExpired: return "lease-expired"
        case .borrowRevoked: return "borrow-revoked"
        case .reservationAdded: return "reservation-added"
        case .reservationRemoved: return "reservation-removed"
        case .epochStarted: return "epoch-started"
        case .leasesMerged: return "leases-merged"
        case .audited: return "audited"
        case .acquisitionDenied: return "acquisition-denied"
        }
    }
}

/// Who is asking: decided by the adapter from the caller's real credentials.
public struct Caller: Sendable, Equatable {
    public var uid: UInt32?
    public var isAdmin: Bool
    /// A client of the network API (authorized by its token, not by a uid). It may renew and
    /// release the leases taken over the network with the same token (any, without tokens).
    public var network: Bool
    /// The name of the token a network client presented; nil when the API needs none.
    public var token: String?
    public init(uid: UInt32?, isAdmin: Bool, network: Bool = false, token: String? = nil) {
        self.uid = uid
        self.isAdmin = isAdmin
        self.network = network
        self.token = token
    }
    public static let root = Caller(uid: 0, isAdmin: true)
    public static let networkClient = Caller(uid: nil, isAdmin: false, network: true)
    /// A network client that presented the token named `token`.
    public static func networkClient(token: String?) -> Caller {
        Caller(uid: nil, isAdmin: false, network: true, token: token)
    }

    /// The same caller without an administrator's rights (what it owns as itself).
    public var withoutAdministration: Caller { Caller(uid: uid, isAdmin: false, network: network, token: token) }

    /// Whether this caller may renew or release `lease`: an administrator any; a local user
    /// those it acquired over D-Bus; a network client those taken over the network with its
    /// token, and those taken with none (without tokens, or before tokens had names: a server
    /// upgraded with leases out keeps serving their renewals).
    public func owns(_ lease: Lease) -> Bool {
        if isAdmin { return true }
        guard network else { return lease.uid != nil && lease.uid == uid }
        return lease.uid == nil && (lease.token == nil || lease.token == token)
    }
}

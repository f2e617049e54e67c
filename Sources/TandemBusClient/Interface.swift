/// The org.tandem.LicenseManager1 interfaces, member by member: the one definition the daemon
/// exports (its vtables are built from it) and the clients call (`tandemctl`, tests, benchmarks).
/// `docs/org.tandem.LicenseManager1.xml` is kept in step with it by a test.

/// One argument of a method or signal.
public struct BusArgument: Sendable, Equatable {
    public var name: String
    public var type: String
    public init(_ name: String, _ type: String) {
        self.name = name
        self.type = type
    }
}

/// How a property's value changes.
public enum BusPropertyChange: Sendable {
    /// Fixed while the daemon runs.
    case constant
    /// Announced with PropertiesChanged.
    case emitsChange
    /// Set by privileged callers.
    case writable
    /// Read fresh on every Get, never announced.
    case unannounced
}

/// Methods of org.tandem.LicenseManager1.Manager, in the order of the introspection data.
public enum ManagerMethod: String, CaseIterable, Sendable {
    case getActivationRequest = "GetActivationRequest"
    case activateLicense = "ActivateLicense"
    case deactivateLicense = "DeactivateLicense"
    case listLicenses = "ListLicenses"
    case acquire = "Acquire"
    case renew = "Renew"
    case release = "Release"
    case listLeases = "ListLeases"
    case reserve = "Reserve"
    case unreserve = "Unreserve"
    case listReservations = "ListReservations"
    case getUsage = "GetUsage"
    case resetServerId = "ResetServerId"
    case prepareBackup = "PrepareBackup"
    case enableBackup = "EnableBackup"
    case disableBackup = "DisableBackup"
    case getPeerStatus = "GetPeerStatus"
    case sync = "Sync"
    case prepareRemoval = "PrepareRemoval"
    case listAudit = "ListAudit"
    case listLeaseHolders = "ListLeaseHolders"
    case getUsageHistory = "GetUsageHistory"
    case listSessions = "ListSessions"
    case listDenials = "ListDenials"
    case getUsageReport = "GetUsageReport"
    case listQueue = "ListQueue"
    case listBorrows = "ListBorrows"
    case revokeBorrow = "RevokeBorrow"

    public var input: [BusArgument] {
        switch self {
        case .activateLicense: return [BusArgument("license", "s")]
        case .deactivateLicense: return [BusArgument("license_id", "s")]
        case .acquire:
            return [
                BusArgument("feature", "s"), BusArgument("count", "u"), BusArgument("client", "s"),
                BusArgument("options", "a{sv}")
            ]
        case .renew, .release, .revokeBorrow: return [BusArgument("lease_id", "s")]
        case .reserve: return [BusArgument("feature", "s"), BusArgument("count", "u"), BusArgument("holder", "s")]
        case .unreserve: return [BusArgument("reservation_id", "s")]
        case .prepareBackup: return [BusArgument("primary_address", "s")]
        case .enableBackup: return [BusArgument("backup_address", "s")]
        case .listAudit: return [BusArgument("since_usec", "t"), BusArgument("limit", "u")]
        case .getUsageHistory:
            return [
                BusArgument("feature", "s"), BusArgument("since_usec", "t"), BusArgument("until_usec", "t"),
                BusArgument("step_usec", "t")
            ]
        case .listSessions, .listDenials:
            return [BusArgument("since_usec", "t"), BusArgument("until_usec", "t"), BusArgument("filter", "a{sv}")]
        case .getUsageReport:
            return [
                BusArgument("kind", "s"), BusArgument("since_usec", "t"), BusArgument("until_usec", "t"),
                BusArgument("by", "s"), BusArgument("filter", "a{sv}")
            ]
        case .getActivationRequest, .listLicenses, .listLeases, .listLeaseHolders, .listReservations, .getUsage,
            .resetServerId, .listQueue, .listBorrows,
            .disableBackup, .getPeerStatus, .sync, .prepareRemoval:
            return []
        }
    }

    public var output: [BusArgument] {
        switch self {
        case .getActivationRequest: return [BusArgument("request", "s")]
        case .activateLicense: return [BusArgument("license_id", "s"), BusArgument("path", "o")]
        case .listLicenses: return [BusArgument("licenses", "a" + LicenseRow.signature)]
        case .acquire: return [BusArgument("lease_id", "s"), BusArgument("expires_usec", "t")]
        case .renew: return [BusArgument("expires_usec", "t")]
        case .listLeases: return [BusArgument("leases", "a" + LeaseRow.signature)]
        case .reserve: return [BusArgument("reservation_id", "s")]
        case .listReservations: return [BusArgument("reservations", "a" + ReservationRow.signature)]
        case .getUsage: return [BusArgument("usage", "a" + UsageRow.signature)]
        case .resetServerId: return [BusArgument("server_id", "s")]
        case .getPeerStatus: return [BusArgument("status", "a{sv}")]
        case .listAudit: return [BusArgument("records", "a" + AuditRow.signature)]
        case .listLeaseHolders: return [BusArgument("leases", "a" + LeaseHolderRow.signature)]
        case .getUsageHistory: return [BusArgument("buckets", "a" + UsageBucketRow.signature)]
        case .listSessions: return [BusArgument("sessions", "a" + SessionRow.signature)]
        case .listDenials: return [BusArgument("denials", "a" + DenialRow.signature)]
        case .getUsageReport: return [BusArgument("groups", "a" + UsageReportRow.signature)]
        case .listQueue: return [BusArgument("waiting", "a" + QueueRow.signature)]
        case .listBorrows: return [BusArgument("borrows", "a" + BorrowRow.signature)]
        case .deactivateLicense, .release, .revokeBorrow, .unreserve, .prepareBackup, .enableBackup, .disableBackup,
            .sync,
            .prepareRemoval:
            return []
        }
    }
}

/// Properties of org.tandem.LicenseManager1.Manager.
public enum ManagerProperty: String, CaseIterable, Sendable {
    case version = "Version"
    case serverId = "ServerId"
    case role = "Role"
    case pairStatus = "PairStatus"
    case serviceAccount = "ServiceAccount"
    case epoch = "Epoch"
    case licenseCount = "LicenseCount"
    case seatsTotal = "SeatsTotal"
    case seatsInUse = "SeatsInUse"
    case listenAddresses = "ListenAddresses"
    case serving = "Serving"
    case peerAddress = "PeerAddress"
    case peerServerId = "PeerServerId"
    case peerStatus = "PeerStatus"
    case replicatedSeq = "ReplicatedSeq"
    case replicationLag = "ReplicationLag"
    case witnessAddress = "WitnessAddress"
    case witnessStatus = "WitnessStatus"
    case rejectedFrames = "RejectedFrames"
    case partitionPolicy = "PartitionPolicy"
    case networkConnections = "NetworkConnections"
    case policyDigest = "PolicyDigest"
    case policyMismatch = "PolicyMismatch"
    case borrowKey = "BorrowKey"

    public var type: String {
        switch self {
        case .epoch, .replicatedSeq, .replicationLag: return "t"
        case .licenseCount, .seatsTotal, .seatsInUse: return "u"
        case .listenAddresses: return "as"
        case .serving, .policyMismatch: return "b"
        case .rejectedFrames, .networkConnections: return "a{st}"
        default: return "s"
        }
    }

    public var change: BusPropertyChange {
        switch self {
        case .version, .serviceAccount, .listenAddresses, .partitionPolicy, .borrowKey: return .constant
        case .networkConnections: return .unannounced
        default: return .emitsChange
        }
    }

    /// The properties that tell how the pair stands (announced when the pair's status moves).
    public static let pairStatusProperties: [ManagerProperty] = [
        .role, .pairStatus, .serving, .epoch, .peerAddress, .peerServerId, .peerStatus, .witnessStatus, .rejectedFrames,
        .policyDigest, .policyMismatch
    ]
}

/// Signals of org.tandem.LicenseManager1.Manager.
public enum ManagerSignal: String, CaseIterable, Sendable {
    case licenseActivated = "LicenseActivated"
    case licenseDeactivated = "LicenseDeactivated"
    case leaseExpired = "LeaseExpired"

    public var arguments: [BusArgument] {
        switch self {
        case .licenseActivated, .licenseDeactivated: return [BusArgument("license_id", "s"), BusArgument("path", "o")]
        case .leaseExpired: return [BusArgument("lease_id", "s")]
        }
    }
}

/// Properties of org.tandem.LicenseManager1.License (one object per active license).
public enum LicenseProperty: String, CaseIterable, Sendable {
    case id = "Id"
    case product = "Product"
    case feature = "Feature"
    case seats = "Seats"
    case notAfterUSec = "NotAfterUSec"
    case issuedTo = "IssuedTo"
    case activatedUSec = "ActivatedUSec"
    case keyId = "KeyId"
    case inUse = "InUse"
    case reserved = "Reserved"

    public var type: String {
        switch self {
        case .seats, .inUse, .reserved: return "u"
        case .notAfterUSec, .activatedUSec: return "t"
        case .issuedTo: return "as"
        default: return "s"
        }
    }

    public var change: BusPropertyChange {
        switch self {
        case .inUse, .reserved: return .emitsChange
        default: return .constant
        }
    }
}

/// The fields of GetPeerStatus's `a{sv}`: the peer as it last described itself, and how this
/// node sees it.
public enum PeerStatusField: String, CaseIterable, Sendable {
    case address = "Address"
    case status = "Status"
    case serverId = "ServerId"
    case role = "Role"
    case pairStatus = "PairStatus"
    case serving = "Serving"
    case epoch = "Epoch"
    case reportedUSec = "ReportedUSec"
    case networkAddress = "NetworkAddress"
    case statusReason = "StatusReason"
}

extension BusClient {
    /// A Manager property's value.
    public func get(_ property: ManagerProperty) throws(BusError) -> BusValue { try get(property.rawValue) }
}

extension BusClient {
    /// Calls a Manager method.
    public func call(_ method: ManagerMethod, _ args: [BusValue] = []) throws(BusError) -> [BusValue] {
        try call(method.rawValue, args)
    }
}

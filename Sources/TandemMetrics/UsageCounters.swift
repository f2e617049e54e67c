import TandemCore

/// What happened to seats since tandemd started, per feature, for the metrics' counters:
/// acquisitions and expirations counted from the committed change log (so the standby counts
/// what the serving node did, as it replicates it), refusals by reason as they are decided.
public struct UsageCounters: Sendable {
    public private(set) var acquisitions: [String: UInt64] = [:]
    public private(set) var expirations: [String: UInt64] = [:]
    public private(set) var releases: [String: UInt64] = [:]
    /// Refused for lack of seats, per (feature, reason).
    public private(set) var denials: [String: [DenialReason: UInt64]] = [:]
    /// Refused for want of a license: not per feature (the name is the caller's, any string).
    public private(set) var unknownFeatureDenials: UInt64 = 0
    /// The feature of each active lease: an expiry or release names only the lease.
    private var featureOfLease: [String: String] = [:]

    /// Leases whose feature is remembered (for the host to see it does not grow unbounded).
    public var trackedLeases: Int { featureOfLease.count }

    public init(activeLeases: some Sequence<Lease> = []) {
        for l in activeLeases { featureOfLease[l.id] = l.feature }
    }

    public mutating func count(_ entries: [LogEntry]) {
        for e in entries {
            switch e.change {
            case .leaseGranted(let l):
                acquisitions[l.feature, default: 0] += 1
                featureOfLease[l.id] = l.feature
            case .leaseExpired(let id):
                if let f = featureOfLease.removeValue(forKey: id) { expirations[f, default: 0] += 1 }
            case .leaseReleased(let id, _, _):
                if let f = featureOfLease.removeValue(forKey: id) { releases[f, default: 0] += 1 }
            case .acquisitionDenied(let d):
                refused(d.feature, d.reason)
            default:
                break
            }
        }
    }

    public mutating func refused(_ feature: String, _ reason: DenialReason) {
        if reason == .unknownFeature {
            unknownFeatureDenials += 1
        } else {
            denials[feature, default: [:]][reason, default: 0] += 1
        }
    }

    /// The active leases now (after a snapshot replaced the log, or a merge): forgets the others.
    public mutating func resync(activeLeases: some Sequence<Lease>) {
        featureOfLease = Dictionary(activeLeases.map { ($0.id, $0.feature) }, uniquingKeysWith: { a, _ in a })
    }
}

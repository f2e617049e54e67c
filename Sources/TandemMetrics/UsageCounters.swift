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
    public init() {}

    /// Counts a commit's entries. An expiry or a release names only its lease: `featureOfEnded`
    /// says whose feature it was (the store's history resolved it as it wrote the session, so no
    /// second map of every live lease is kept here); an end it cannot place is not guessed at.
    public mutating func count(_ entries: [LogEntry], featureOfEnded: (String) -> String?) {
        for e in entries {
            switch e.change {
            case .leaseGranted(let l):
                acquisitions[l.feature, default: 0] += 1
            case .leaseExpired(let id):
                if let f = featureOfEnded(id) { expirations[f, default: 0] += 1 }
            case .leaseReleased(let id, _, _):
                if let f = featureOfEnded(id) { releases[f, default: 0] += 1 }
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
}

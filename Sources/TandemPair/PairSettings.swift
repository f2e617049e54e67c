import TandemCore

/// Timing of the pair protocol (local durations; clocks of different hosts may be offset and
/// drift a little, so no absolute time is ever compared across hosts except lease expiry,
/// which gets `expiryGraceUSec`).
public struct PairSettings: Sendable, Equatable {
    /// The shipped timing (`HeartbeatSec=`, `FailoverTimeoutSec=`): a dead serving node is
    /// noticed in under a second. etcd's heartbeat; a shorter timeout than its election's,
    /// because the witness, not a randomised election, settles who serves.
    public static let defaultHeartbeatUSec: USec = 100_000
    public static let defaultFailoverTimeoutUSec: USec = 800_000
    /// The witness's lease for the shipped timing: 5/6 of the timeout, so that a dead node's
    /// lease has ended when its peer asks for a vote.
    public static let defaultWitnessLeaseUSec: USec = defaultFailoverTimeoutUSec * 5 / 6
    public var heartbeatUSec: USec = 1_000_000
    public var failoverTimeoutUSec: USec = 3_000_000
    /// How long a witness vote or renewal keeps a leader serving, measured by the witness. The
    /// leader counts the shorter of this and the lease the witness says it gives.
    public var witnessLeaseUSec: USec = 2_500_000
    /// The leader trusts its lease for this fraction of `witnessLeaseUSec` after it *sent*
    /// the request that earned it (covers clock drift between leader and witness).
    public var leaseSafety: Double = 0.8
    /// Leases are expired this long after their expiry time, so that a node whose clock runs
    /// ahead of the granting node's never frees seats a client still holds.
    public var expiryGraceUSec: USec = 500_000
    /// A handover that does not complete within this time is abandoned.
    public var handoverTimeoutUSec: USec = 3_000_000
    public var maxEntriesPerFrame = 64
    /// Log compaction (`compactIfLong`): entries kept in memory at least, and how far the
    /// serving node may run ahead of an absent standby before it compacts anyway (after which
    /// the standby needs a snapshot: `pair-not-synced` until `Sync`).
    public var compactKeep = 10_000
    public var compactRetain: UInt64 = 1_000_000
    /// Changes per snapshot frame.
    public var snapshotChunk = 200
    /// Who decides which node serves when the two cannot see each other.
    public var partition: PartitionMode = .witness
    public init() {}
}

/// How a pair behaves when its nodes cannot see each other.
public enum PartitionMode: Sendable, Equatable {
    /// The witness lets at most one node serve.
    case witness
    /// No witness: each node serves on its own after `failoverTimeoutUSec` without its peer
    /// (the tech note's behaviour) and may over-allocate while cut off; after the heal the lease
    /// changes each side made alone are merged into one log.
    case takeover
    /// No witness: like `takeover`, but while cut off (and until the pair is back in step) each
    /// node grants only its share of the seats that were free at the last position both held:
    /// `primaryPercent` for the configured primary, the rest for the backup. Never over-allocates.
    case split(primaryPercent: UInt32)

    /// As shown in status and compared between the two nodes when pairing.
    public var description: String {
        switch self {
        case .witness: return "witness"
        case .takeover: return "takeover"
        case .split(let p): return "split:\(p)"
        }
    }
}

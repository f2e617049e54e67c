import TandemCore

/// The tie-breaker: decides which node may serve. It keeps durably only the last epoch it
/// voted for, the lease it told that epoch's leader, and the latest log position a leader
/// recorded with it while its follower was unreachable; when a lease ends lives in memory
/// (after a restart it waits one lease time before voting, so that a lease it forgot has run
/// out).
public struct PairWitness: Sendable {
    /// The lease a new vote gives.
    public var leaseUSec: USec
    // Durable.
    public private(set) var votedEpoch: UInt64 = 0
    public private(set) var recordedEpoch: UInt64 = 0
    public private(set) var recordedSeq: UInt64 = 0
    /// The lease the leader of `votedEpoch` was told with its vote: its renewals last as long,
    /// even after a restart with another `leaseUSec` (the leader trusts what it was told).
    public private(set) var votedLeaseUSec: USec
    // Volatile.
    var leaseUntil: USec

    public init(leaseUSec: USec, now: USec) {
        self.leaseUSec = leaseUSec
        votedLeaseUSec = leaseUSec
        leaseUntil = now + leaseUSec
    }

    /// A witness restored from its durable record: it waits one lease time before voting.
    /// A record without the voted lease (an older witness's) counts the older default, 2.5 s.
    public init(
        leaseUSec: USec, now: USec, votedEpoch: UInt64, recordedEpoch: UInt64, recordedSeq: UInt64,
        votedLeaseUSec: USec?
    ) {
        self.init(leaseUSec: leaseUSec, now: now)
        self.votedEpoch = votedEpoch
        self.recordedEpoch = recordedEpoch
        self.recordedSeq = recordedSeq
        self.votedLeaseUSec = votedLeaseUSec ?? max(leaseUSec, 2_500_000)
        leaseUntil = now + max(leaseUSec, self.votedLeaseUSec)
    }

    public mutating func restart(now: USec) {
        leaseUntil = now + max(leaseUSec, votedLeaseUSec)
    }

    static func atLeast(_ a: (UInt64, UInt64), _ b: (UInt64, UInt64)) -> Bool {
        a.0 != b.0 ? a.0 > b.0 : a.1 >= b.1
    }

    public mutating func receive(from node: NodeIndex, _ message: PairMessage, now: USec) -> [(NodeIndex, PairMessage)]
    {
        switch message {
        case .voteRequest(let epoch, let lastSeq, let lastEpoch):
            guard epoch > votedEpoch, now >= leaseUntil,
                Self.atLeast((lastEpoch, lastSeq), (recordedEpoch, recordedSeq))
            else {
                return [(node, .voteDenied(epoch: epoch, votedEpoch: votedEpoch))]
            }
            votedEpoch = epoch
            votedLeaseUSec = leaseUSec
            leaseUntil = now + leaseUSec
            return [(node, .voteGranted(epoch: epoch, leaseUSec: leaseUSec))]
        case .renew(let epoch, let seq, let seqEpoch, let sentAt):
            guard epoch == votedEpoch else {
                return epoch < votedEpoch ? [(node, .deposed(votedEpoch: votedEpoch))] : []
            }
            leaseUntil = now + votedLeaseUSec
            if let seq, let seqEpoch, Self.atLeast((seqEpoch, seq), (recordedEpoch, recordedSeq)) {
                recordedEpoch = seqEpoch
                recordedSeq = seq
            }
            let recorded: UInt64? = recordedEpoch == epoch ? recordedSeq : nil
            return [(node, .renewed(epoch: epoch, recordedSeq: recorded, sentAt: sentAt))]
        case .releaseLease(let epoch):
            if epoch == votedEpoch { leaseUntil = now }
            return []
        default:
            return []
        }
    }
}

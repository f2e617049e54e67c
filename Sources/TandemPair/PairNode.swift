import TandemCore

/// Timing of the pair protocol (local durations; clocks of different hosts may be offset and
/// drift a little, so no absolute time is ever compared across hosts except lease expiry,
/// which gets `expiryGraceUSec`).
public struct PairSettings: Sendable, Equatable {
    public var heartbeatUSec: USec = 1_000_000
    public var failoverTimeoutUSec: USec = 3_000_000
    /// How long a witness vote or renewal keeps a leader serving, measured by the witness.
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

public enum PairStatus: String, Sendable, Equatable {
    case unpaired
    case pairedAndAvailable = "paired-and-available"
    case primaryNotAvailable = "primary-not-available"
    case backupNotAvailable = "backup-not-available"
    case recovering
    case pairNotSynced = "pair-not-synced"
}

public enum PeerStatus: String, Sendable, Equatable {
    case running, stopped, disconnected
    case notAvailable = "not-available"
}

/// Something a node asks its host to do.
public enum NodeEffect: Sendable, Equatable {
    case send(Peer, PairMessage)
    /// Answer the client request identified by `ref`.
    case reply(ref: Int, ClientReply)
}

/// One node of a pair, as a pure state machine: events in, effects out. The durable part
/// (log, promised epoch) survives `restart`; the rest is rebuilt.
///
/// Protocol, in short (witness mode):
/// - A node serves only as *leader* of an epoch the witness voted for, and only while its
///   witness lease is valid by its own conservative reckoning. The witness votes for a new
///   epoch only after the current leader's lease ran out at the witness, and only for a
///   candidate whose log is at least as up to date as the last position a leader recorded
///   with it. Epochs carry the node's parity (node 0 even, node 1 odd), so two nodes never
///   share one.
/// - The leader appends every change to its log (durable) and replicates it. A client is
///   answered once its change is durable on the follower (acknowledged) or, while the
///   follower is unreachable, recorded with the witness — so a node that lacks an answered
///   change can never be elected, and no answered change is lost.
/// - A new leader first appends `epochStarted` (its own entry), so everything answered is
///   covered by an entry of the answering leader's epoch (Raft's no-op rule).
/// - Followers keep the leader's log: entries that conflict (same sequence number, older
///   epoch) were never answered and are discarded.
/// - A returning configured primary catches up as follower, asks for a handover, and the
///   backup stops serving, lets the primary catch the last entries and gives its lease back.
public struct PairNode: Sendable {
    public let index: NodeIndex
    public var settings: PairSettings

    // Durable.
    public private(set) var baseState: LicenseState
    /// The log holds the entries after (`logBase`, `logBaseEpoch`); `baseState` is the state there.
    public private(set) var logBase: UInt64 = 0
    public private(set) var logBaseEpoch: UInt64 = 0
    public private(set) var log: [LogEntry] = []
    public private(set) var promisedEpoch: UInt64 = 0 {
        didSet { if promisedEpoch != oldValue { unstored.insert(.progress) } }
    }
    /// Counts truncations and snapshots installed (the log was rewritten, not only extended).
    public private(set) var truncations = 0 {
        didSet { unstored.insert(.rewritten) }
    }
    /// Without a witness: lease changes this node made or held that the serving node's log did
    /// not have when they were cut from this log; they wait here until merged (see `Change.leasesMerged`).
    public private(set) var unmerged: [LogEntry] = [] {
        didSet { if unmerged != oldValue { unstored.insert(.progress) } }
    }
    /// `split`: while set, the last position both nodes held; grants are limited to this node's
    /// share of the seats free there until the pair is back in step (an acknowledgement of a
    /// caught-up follower clears it on both sides).
    public private(set) var splitBasePos: UInt64? {
        didSet { if splitBasePos != oldValue { unstored.insert(.progress) } }
    }

    /// What of the durable part changed, beyond entries appended to the log, since the host
    /// last stored it (`markStored`): the host writes that with the new entries, in one commit.
    public struct Unstored: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The promised epoch, the unmerged lease changes or the split base moved.
        public static let progress = Unstored(rawValue: 1)
        /// The log was compacted: its base moved.
        public static let base = Unstored(rawValue: 2)
        /// The log was truncated or replaced by a snapshot: the stored log must be replaced.
        public static let rewritten = Unstored(rawValue: 4)
    }
    public private(set) var unstored: Unstored = []

    /// The host stored the durable part as it is now.
    public mutating func markStored() { unstored = [] }

    // Derived from the durable part.
    public private(set) var state: LicenseState

    // Volatile.
    public enum Mode: Sendable, Equatable {
        case follower
        case candidate(epoch: UInt64, sentAt: USec)
        case leader(epoch: UInt64)
        case handingOver(epoch: UInt64, since: USec)
    }
    public private(set) var mode: Mode = .follower
    public private(set) var leaderHint: NodeIndex?
    var startedAt: USec
    var lastHeardLeader: USec?
    var lastHeardPeer: USec?
    var leaderLastSeq: UInt64 = 0
    // Leader bookkeeping.
    var peerMatchSeq: UInt64 = 0
    var peerNextSeq: UInt64 = 1
    var peerCaughtUp = false
    var witnessRecorded: UInt64 = 0
    var leaseValidUntil: USec = 0
    var lastHeartbeatSent: USec?
    var lastRenewSent: USec?
    var lastRecordRequested: UInt64 = 0
    var lastHandoverRequest: USec?
    var pending: [(seq: UInt64, ref: Int, reply: ClientReply, admin: Bool)] = []
    /// The follower's log does not reach back to ours (different bases): it needs a snapshot.
    public private(set) var peerNeedsSnapshot = false
    /// An administrator asked for a snapshot (Sync); it is sent every heartbeat until acknowledged.
    var syncRequested = false
    /// Follower: the position up to which its log is known to equal the leader's.
    var followerMatched: UInt64 = 0
    /// Follower: snapshot parts received so far, for (epoch, seq).
    var snapshotKey: (UInt64, UInt64)?
    var snapshotParts: [Int: [Change]] = [:]
    /// Without a witness: where this node's serving period began (its log end when it took over).
    var electionSeq: UInt64 = 0
    /// `split`: the state at `splitBasePos` (rebuilt from the log after a restart); `splitBaseLost`
    /// when the log no longer reaches it, and then nothing is granted until the pair is in step.
    var splitBase: LicenseState?
    var splitBaseLost = false
    /// `split`: leases decided before this node found itself cut off, beyond its share, and
    /// refused to their clients: neither a retried request nor a renewal gets them here (the
    /// peer may hold them, and then counts them). After a restart the node cannot tell which
    /// they were, and refuses every retried request for a lease granted since the split base.
    var splitRefused: Set<String> = []
    var splitRefusedUnknown = false
    var lastMergeSent: USec?

    public var peer: NodeIndex { 1 - index }

    public init(index: NodeIndex, initial: LicenseState, settings: PairSettings = PairSettings(), now: USec) {
        self.index = index
        self.settings = settings
        baseState = initial
        state = initial
        startedAt = now
    }

    /// A node restored from durable storage: the state at (`base`, `baseEpoch`), the log after
    /// it, and the highest epoch promised. It starts as a follower.
    public init(index: NodeIndex, baseState: LicenseState, base: UInt64, baseEpoch: UInt64, log: [LogEntry],
                promisedEpoch: UInt64, unmerged: [LogEntry] = [], splitBasePos: UInt64? = nil,
                settings: PairSettings = PairSettings(), now: USec) {
        self.index = index
        self.unmerged = unmerged
        self.splitBasePos = splitBasePos
        splitRefusedUnknown = splitBasePos != nil
        self.settings = settings
        self.baseState = baseState
        logBase = base
        logBaseEpoch = baseEpoch
        var s = baseState
        var seq = base
        for e in log {
            precondition(e.seq == seq + 1, "log entries must follow the base without gaps")
            seq = e.seq
            s.apply(e.change)
        }
        self.log = log
        self.promisedEpoch = max(promisedEpoch, log.last?.epoch ?? baseEpoch)
        state = s
        startedAt = now
    }

    // MARK: - Queries

    public var lastSeq: UInt64 { log.last?.seq ?? logBase }
    public var lastEpoch: UInt64 { log.last?.epoch ?? logBaseEpoch }

    /// The epoch of the entry at `seq`, if this log knows it.
    public func epochAt(_ seq: UInt64) -> UInt64? {
        if seq == logBase { return logBaseEpoch }
        guard seq > logBase, seq <= lastSeq else { return seq == 0 ? 0 : nil }
        return log[Int(seq - logBase - 1)].epoch
    }

    /// Entries with sequence numbers in `from...to` (both within the log).
    public func entries(from: UInt64, through to: UInt64) -> ArraySlice<LogEntry> {
        guard from <= to, from > logBase, to <= lastSeq else { return [] }
        return log[Int(from - logBase - 1)..<Int(to - logBase)]
    }

    /// The highest sequence number whose answers may be released: acknowledged by the
    /// follower or recorded with the witness (meaningful while leading).
    public var acknowledgedSeq: UInt64 { max(peerMatchSeq, witnessRecorded) }
    public var peerMatch: UInt64 { peerMatchSeq }
    public var isLeading: Bool { leadingEpoch != nil }

    public var servingEpoch: UInt64? {
        if case .leader(let e) = mode { return e }
        return nil
    }

    /// True when this node may grant seats right now.
    public func isServing(now: USec) -> Bool {
        servingEpoch != nil && now < leaseValidUntil
    }

    func peerReachable(now: USec) -> Bool {
        guard let t = lastHeardPeer else { return false }
        return now < t + settings.failoverTimeoutUSec
    }

    public func peerStatus(now: USec) -> PeerStatus {
        guard lastHeardPeer != nil else { return .notAvailable }
        return peerReachable(now: now) ? .running : .disconnected
    }

    public func pairStatus(now: USec) -> PairStatus {
        if peerNeedsSnapshot, leadingEpoch != nil { return .pairNotSynced }
        guard peerReachable(now: now) else { return index == 0 ? .backupNotAvailable : .primaryNotAvailable }
        switch mode {
        case .leader, .handingOver:
            return peerCaughtUp && peerMatchSeq == lastSeq ? .pairedAndAvailable : .recovering
        case .follower:
            return lastHeardLeader != nil && lastSeq == leaderLastSeq ? .pairedAndAvailable : .recovering
        case .candidate:
            return .recovering
        }
    }

    var epochTable: [EpochRange] {
        var out: [EpochRange] = logBase > 0 || logBaseEpoch > 0 ? [EpochRange(epoch: logBaseEpoch, lastSeq: logBase)] : []
        for e in log {
            if out.last?.epoch == e.epoch { out[out.count - 1].lastSeq = e.seq } else { out.append(EpochRange(epoch: e.epoch, lastSeq: e.seq)) }
        }
        return out
    }

    /// The next epoch this node may use: above everything seen, with this node's parity.
    func nextEpoch(above floor: UInt64) -> UInt64 {
        var e = floor + 1
        if e % 2 != UInt64(index) { e += 1 }
        return e
    }

    // MARK: - Lifecycle

    /// A crash and restart: volatile state is gone, the log and promised epoch remain.
    public mutating func restart(now: USec) {
        mode = .follower
        leaderHint = nil
        startedAt = now
        lastHeardLeader = nil
        lastHeardPeer = nil
        leaderLastSeq = 0
        peerMatchSeq = 0
        peerNextSeq = 1
        peerCaughtUp = false
        witnessRecorded = 0
        leaseValidUntil = 0
        lastHeartbeatSent = nil
        lastRenewSent = nil
        lastRecordRequested = 0
        lastHandoverRequest = nil
        pending = []
        peerNeedsSnapshot = false
        syncRequested = false
        followerMatched = 0
        snapshotKey = nil
        snapshotParts = [:]
        electionSeq = 0
        splitBase = nil
        splitBaseLost = false
        splitRefused = []
        splitRefusedUnknown = splitBasePos != nil
        lastMergeSent = nil
    }

    public var usesWitness: Bool { settings.partition == .witness }

    // MARK: - Log

    private mutating func append(_ change: Change, epoch: UInt64) {
        let entry = LogEntry(seq: lastSeq + 1, epoch: epoch, change: change)
        log.append(entry)
        state.apply(change)
    }

    private mutating func truncate(from seq: UInt64) {
        guard seq <= lastSeq, seq > logBase else { return }
        if !usesWitness { keepUnmerged(log[Int(seq - logBase - 1)...]) }
        log.removeSubrange(Int(seq - logBase - 1)...)
        truncations += 1
        var s = baseState
        for e in log { s.apply(e.change) }
        state = s
    }

    /// Without a witness, entries cut from this log may have been answered while the pair was
    /// cut off: their lease changes are kept until the serving node merged them.
    /// A renewal is kept as the whole lease with the renewed expiry, so that it can be merged
    /// even where the lease has expired meanwhile (its client renewed it here).
    private mutating func keepUnmerged(_ entries: some Sequence<LogEntry>) {
        for e in entries {
            var kept = e
            switch e.change {
            case .leaseGranted, .leaseReleased:
                break
            case .leaseRenewed(let id, let expires):
                guard var l = state.leases[id] else { continue }
                l.expiresUSec = expires
                kept.change = .leaseGranted(l)
            default:
                continue
            }
            if (state.merged[e.epoch] ?? 0) < e.seq, !unmerged.contains(where: { $0.seq == e.seq && $0.epoch == e.epoch }) {
                unmerged.append(kept)
            }
        }
    }

    /// Drops what the log says was merged.
    private mutating func pruneUnmerged() {
        guard !unmerged.isEmpty else { return }
        let merged = state.merged
        unmerged.removeAll { (merged[$0.epoch] ?? 0) >= $0.seq }
    }

    /// Leader: merges lease changes made while the pair was cut off (grants — renewals arrive
    /// as grants, see `keepUnmerged` — and releases). Only their effect on the current state is
    /// appended — a lease the log does not hold (unless it has run out), a later expiry for one
    /// it holds, the release of a lease still held; expiries are left to this node's own clock —
    /// followed by one `leasesMerged` mark per epoch, so each is merged once.
    private mutating func merge(_ items: [LogEntry], epoch: UInt64, now: USec) {
        var through: [UInt64: UInt64] = [:]
        for item in items.sorted(by: { ($0.epoch, $0.seq) < ($1.epoch, $1.seq) }) {
            if (state.merged[item.epoch] ?? 0) >= item.seq { continue }
            switch item.change {
            case .leaseGranted(let l):
                if let cur = state.leases[l.id] {
                    if l.expiresUSec > cur.expiresUSec { append(.leaseRenewed(id: l.id, expiresUSec: l.expiresUSec), epoch: epoch) }
                } else if l.expiresUSec > now {
                    // Without its request id: the grant may never have been answered (its node
                    // stopped serving first), and a retried request must not receive it now.
                    var merged = l
                    merged.requestId = nil
                    append(.leaseGranted(merged), epoch: epoch)
                }
            case .leaseReleased(let id):
                if state.leases[id] != nil { append(item.change, epoch: epoch) }
            default:
                break
            }
            through[item.epoch] = max(through[item.epoch] ?? 0, item.seq)
        }
        for e in through.keys.sorted() { append(.leasesMerged(epoch: e, through: through[e]!), epoch: epoch) }
        pruneUnmerged()
    }

    // MARK: - Events

    public mutating func tick(now: USec) -> [NodeEffect] {
        var out: [NodeEffect] = []
        switch mode {
        case .leader(let epoch):
            if now >= leaseValidUntil {
                stepDown(&out)
                return out
            }
            // Expire leases (with grace for clock offsets between nodes).
            if now > settings.expiryGraceUSec, case .success(let d) = state.decide(.expireLeases, caller: .root, now: now - settings.expiryGraceUSec),
               !d.changes.isEmpty {
                for c in d.changes { append(c, epoch: epoch) }
            }
            if lastHeartbeatSent.map({ now >= $0 + settings.heartbeatUSec }) ?? true {
                lastHeartbeatSent = now
                out += replicate(epoch: epoch, resend: true)
                if syncRequested && peerNeedsSnapshot { out += snapshotFrames(epoch: epoch) }
                if usesWitness { out += renew(epoch: epoch, now: now, record: !peerReachable(now: now)) }
            } else if peerNextSeq <= lastSeq {
                out += replicate(epoch: epoch, resend: false)
            }
            if usesWitness {
                if !peerReachable(now: now), lastRecordRequested < lastSeq, !pending.isEmpty {
                    out += renew(epoch: epoch, now: now, record: true)
                }
            } else if !peerReachable(now: now) {
                // Cut off: under split, limit grants first; then answer without the peer.
                limitToSplitShare(now: now, &out)
                releaseAnswers(&out, now: now)
            }
        case .handingOver(let epoch, let since):
            if now >= leaseValidUntil {
                stepDown(&out)
                return out
            }
            if peerMatchSeq == lastSeq && pending.isEmpty {
                // The witness hears first that the lease is free, so that the peer's vote request,
                // which follows the handover message, usually finds it free.
                if usesWitness { out.append(.send(.witness, .releaseLease(epoch: epoch))) }
                out.append(.send(.node(peer), .handoverReady(epoch: epoch, lastSeq: lastSeq)))
                mode = .follower
                leaderHint = peer
                lastHeardLeader = now // give the peer a full timeout to take over
                leaseValidUntil = 0
            } else if now >= since + settings.handoverTimeoutUSec {
                mode = .leader(epoch: epoch)
            } else if lastHeartbeatSent.map({ now >= $0 + settings.heartbeatUSec / 4 }) ?? true {
                lastHeartbeatSent = now
                out += replicate(epoch: epoch, resend: true)
                if usesWitness { out += renew(epoch: epoch, now: now, record: false) }
            }
        case .follower:
            let silentSince = lastHeardLeader ?? startedAt
            // The configured backup waits a little longer at start, so that the primary leads first.
            let wait = settings.failoverTimeoutUSec + (lastHeardLeader == nil && index == 1 ? settings.failoverTimeoutUSec : 0)
            if now >= silentSince + wait {
                out += becomeCandidate(now: now, floor: promisedEpoch)
            } else if index == 0, leaderHint == peer, lastHeardLeader != nil, lastSeq == leaderLastSeq, lastSeq > 0,
                      lastHandoverRequest.map({ now >= $0 + settings.heartbeatUSec }) ?? true {
                // Failback: caught up with the backup; ask for serving back.
                lastHandoverRequest = now
                out.append(.send(.node(peer), .handoverRequest(epoch: promisedEpoch)))
            }
            // Lease changes cut from this log go to the serving node until it merged them.
            if !unmerged.isEmpty, lastHeardLeader != nil, leaderHint == peer,
               lastMergeSent.map({ now >= $0 + settings.heartbeatUSec }) ?? true {
                lastMergeSent = now
                out.append(.send(.node(peer), .merge(epoch: promisedEpoch, entries: Array(unmerged.prefix(settings.maxEntriesPerFrame)))))
            }
        case .candidate(let epoch, let sentAt):
            if now >= sentAt + settings.failoverTimeoutUSec {
                out += becomeCandidate(now: now, floor: max(promisedEpoch, epoch - 1))
            }
        }
        return out
    }

    private mutating func becomeCandidate(now: USec, floor: UInt64) -> [NodeEffect] {
        let epoch = nextEpoch(above: floor)
        guard usesWitness else {
            // No witness to ask: this node takes over by itself.
            var out: [NodeEffect] = []
            lead(epoch: epoch, validUntil: .max, now: now, &out)
            return out
        }
        mode = .candidate(epoch: epoch, sentAt: now)
        return [.send(.witness, .voteRequest(epoch: epoch, lastSeq: lastSeq, lastEpoch: lastEpoch))]
    }

    /// Starts serving in `epoch`: its first entry marks it; without a witness, lease changes
    /// this node still holds unmerged are merged at once.
    private mutating func lead(epoch: UInt64, validUntil: USec, now: USec, _ out: inout [NodeEffect]) {
        promisedEpoch = max(promisedEpoch, epoch)
        mode = .leader(epoch: epoch)
        leaderHint = index
        leaseValidUntil = validUntil
        peerMatchSeq = 0
        peerNextSeq = lastSeq + 1
        peerCaughtUp = false
        witnessRecorded = 0
        lastRecordRequested = 0
        pending = []
        peerNeedsSnapshot = false
        electionSeq = lastSeq
        append(.epochStarted(epoch: epoch), epoch: epoch)
        if !unmerged.isEmpty { merge(unmerged, epoch: epoch, now: now) }
        lastHeartbeatSent = now
        if !usesWitness, !peerReachable(now: now) { limitToSplitShare(now: now, &out) }
        out += replicate(epoch: epoch, resend: false)
    }

    /// Without a witness, with the peer out of reach (this node then answers alone: see
    /// `releaseAnswers`): under `split`, grants are limited from here on to this node's share of
    /// the seats free at the last position both nodes held. Grants already decided beyond that
    /// share (not yet answered) are refused to their clients; they stay in the log (the peer may
    /// have them), counting against this node's share, and this node never hands them out.
    private mutating func limitToSplitShare(now: USec, _ out: inout [NodeEffect]) {
        guard case .split = settings.partition else { return }
        if splitBasePos == nil { splitBasePos = max(electionSeq, peerMatchSeq) }
        ensureSplitBase()
        // Seats of leases granted since the base and already answered count first; then the
        // waiting grants in order, as far as the share goes.
        let waiting = Set(pending.compactMap { p -> String? in
            if case .done(.leaseGranted(let l, false)) = p.reply { return l.id } else { return nil }
        })
        var counted: [String: UInt64] = [:]
        for l in leasesSinceSplitBase where !waiting.contains(l.id) { counted[l.feature, default: 0] += UInt64(l.count) }
        var withdrawn: Set<String> = []
        for p in pending {
            guard case .done(.leaseGranted(let l, false)) = p.reply, state.leases[l.id] != nil else { continue }
            if counted[l.feature, default: 0] + UInt64(l.count) > splitShare(l.feature, at: now) {
                withdrawn.insert(l.id)
            } else {
                counted[l.feature, default: 0] += UInt64(l.count)
            }
        }
        splitRefused.formUnion(withdrawn)
        guard !withdrawn.isEmpty else { return }
        // Every answer still waiting about a withdrawn lease (a retried request) is a refusal.
        var keep: [(seq: UInt64, ref: Int, reply: ClientReply, admin: Bool)] = []
        for p in pending {
            switch p.reply {
            case .done(.leaseGranted(let l, _)) where withdrawn.contains(l.id):
                out.append(.reply(ref: p.ref, .refused(.insufficientSeats, splitRefusal(l.feature, at: now))))
            case .done(.leaseRenewed(let l)) where withdrawn.contains(l.id), .done(.leaseReleased(let l)) where withdrawn.contains(l.id):
                out.append(.reply(ref: p.ref, .refused(.leaseNotFound, "lease \(l.id) was withdrawn before it was answered")))
            default:
                keep.append(p)
            }
        }
        pending = keep
    }

    /// Rebuilds the state at `splitBasePos` if needed.
    private mutating func ensureSplitBase() {
        guard let pos = splitBasePos, splitBase == nil, !splitBaseLost else { return }
        guard pos >= logBase, pos <= lastSeq else {
            splitBaseLost = true
            return
        }
        var base = baseState
        for e in log where e.seq <= pos { base.apply(e.change) }
        splitBase = base
    }

    /// The pair is back in step: full grants again.
    private mutating func endSplit() {
        splitBasePos = nil
        splitBase = nil
        splitBaseLost = false
        splitRefused = []
        splitRefusedUnknown = false
    }

    /// `split`: seats of `feature` this node may grant while the pair is not in step.
    func splitShare(_ feature: String, at now: USec) -> UInt64 {
        guard case .split(let percent) = settings.partition, splitBasePos != nil else { return .max }
        guard let base = splitBase, !splitBaseLost else { return 0 }
        // Seats of licenses valid now: one that ran out since the base grants nothing.
        let seats = UInt64(base.seats(feature, at: now))
        // Seats set aside for holders are no side's to grant: the sides could not agree on
        // which of them serves a holder, so reservations wait for the heal.
        let used = Self.seats(of: base.leases.values, feature) + base.idleReserved(feature, exceptHolder: nil)
        let free = seats > used ? seats - used : 0
        let primary = free * UInt64(min(percent, 100)) / 100
        return index == 0 ? primary : free - primary
    }

    /// `split`: seats of `feature` held by leases granted since the split base.
    func splitHeld(_ feature: String) -> UInt64 { Self.seats(of: leasesSinceSplitBase, feature) }

    /// `split`: leases in the state that were not in it at the split base.
    var leasesSinceSplitBase: [Lease] {
        guard let base = splitBase else { return [] }
        return state.leases.values.filter { base.leases[$0.id] == nil }
    }

    static func seats(of leases: some Sequence<Lease>, _ feature: String) -> UInt64 {
        leases.reduce(0) { $0 + ($1.feature == feature ? UInt64($1.count) : 0) }
    }

    func splitRefusal(_ feature: String, at now: USec) -> String {
        "cut off from the peer (PartitionPolicy=split): this node may grant \(splitShare(feature, at: now)) of the seats of \(quoted(feature)) that were free, and granted \(splitHeld(feature))"
    }

    private mutating func stepDown(_ out: inout [NodeEffect]) {
        for p in pending { out.append(.reply(ref: p.ref, .notServing(leader: nil))) }
        pending = []
        mode = .follower
        leaderHint = nil
        leaseValidUntil = 0
    }

    private mutating func renew(epoch: UInt64, now: USec, record: Bool) -> [NodeEffect] {
        lastRenewSent = now
        if record { lastRecordRequested = lastSeq }
        return [.send(.witness, .renew(epoch: epoch, recordSeq: record ? lastSeq : nil, recordEpoch: record ? lastEpoch : nil, sentAt: now))]
    }

    /// Entries for the follower: from what it is known to have (`resend`) or only the new ones.
    private mutating func replicate(epoch: UInt64, resend: Bool) -> [NodeEffect] {
        if resend { peerNextSeq = min(peerNextSeq, peerMatchSeq + 1) }
        // Nothing before the base can be sent; if the follower needs it, its mismatch answer
        // says so (and only a snapshot helps then).
        if peerNextSeq <= logBase { peerNextSeq = logBase + 1 }
        let from = peerNextSeq
        let to = min(lastSeq, from + UInt64(settings.maxEntriesPerFrame) - 1)
        let entries = Array(self.entries(from: from, through: to))
        let prev = from - 1
        peerNextSeq = max(peerNextSeq, to + 1)
        return [.send(.node(peer), .append(epoch: epoch, prevSeq: prev, prevEpoch: epochAt(prev) ?? 0, entries: entries, leaderLastSeq: lastSeq))]
    }

    private mutating func releaseAnswers(_ out: inout [NodeEffect], now: USec) {
        let acked = max(peerMatchSeq, witnessRecorded)
        // Without a witness, a node cut off from its peer answers alone (but never an
        // administrative change: those wait for the peer).
        let alone = !usesWitness && !peerReachable(now: now)
        var keep: [(seq: UInt64, ref: Int, reply: ClientReply, admin: Bool)] = []
        for p in pending {
            if p.seq <= acked || (alone && !p.admin) { out.append(.reply(ref: p.ref, p.reply)) } else { keep.append(p) }
        }
        pending = keep
    }

    public mutating func receive(from: Peer, _ message: PairMessage, now: USec) -> [NodeEffect] {
        var out: [NodeEffect] = []
        if case .node = from { lastHeardPeer = now }
        switch message {
        case .append(let epoch, let prevSeq, let prevEpoch, let entries, let leaderLast):
            guard followLeader(of: epoch, from: from, now: now, &out) else { return out }
            // Positions up to the base were folded into it only once both logs held them
            // identically (or from the leader's own snapshot): they match whatever a leader sends.
            guard prevSeq <= lastSeq, prevSeq < logBase || epochAt(prevSeq) == prevEpoch else {
                out.append(.send(from, .mismatch(epoch: epoch, lastSeq: lastSeq, epochTable: epochTable)))
                return out
            }
            for e in entries where e.seq > logBase {
                if e.seq <= lastSeq {
                    if epochAt(e.seq) != e.epoch {
                        truncate(from: e.seq)
                        append(e.change, epoch: e.epoch)
                    }
                } else if e.seq == lastSeq + 1 {
                    append(e.change, epoch: e.epoch)
                }
            }
            let matchSeq = max(prevSeq + UInt64(entries.count), logBase)
            // A tail from an older epoch beyond what the leader has is divergent: drop it.
            if lastSeq > matchSeq, let next = epochAt(matchSeq + 1), next < epoch, matchSeq >= leaderLast {
                truncate(from: matchSeq + 1)
            }
            leaderLastSeq = max(leaderLastSeq, leaderLast)
            followerMatched = max(followerMatched, matchSeq)
            pruneUnmerged()
            out.append(.send(from, ackOrMerge(epoch: epoch, matchSeq: matchSeq, caughtUp: matchSeq >= leaderLastSeq && lastSeq == matchSeq, now: now)))

        case .snapshot(let epoch, let seq, let seqEpoch, let part, let parts, let changes):
            guard followLeader(of: epoch, from: from, now: now, &out) else { return out }
            guard parts > 0, part >= 0, part < parts else { return out }
            // A log that already holds that position (a late duplicate) keeps what follows it;
            // one whose base is past it has it too.
            if seq < logBase { return out }
            if epochAt(seq) == seqEpoch {
                followerMatched = max(followerMatched, seq)
                out.append(.send(from, ackOrMerge(epoch: epoch, matchSeq: seq, caughtUp: seq >= leaderLastSeq && lastSeq == seq, now: now)))
                return out
            }
            if snapshotKey.map({ $0 != (epoch, seq) }) ?? true {
                snapshotKey = (epoch, seq)
                snapshotParts = [:]
            }
            snapshotParts[part] = changes
            guard snapshotParts.count == parts else { return out }
            var s = LicenseState(changes: (0..<parts).flatMap { snapshotParts[$0] ?? [] })
            s.serverId = state.serverId
            if !usesWitness {
                // The entries this node made itself may be missing from the snapshot's history.
                keepUnmerged(log.filter { $0.epoch % 2 == UInt64(index) && (s.merged[$0.epoch] ?? 0) < $0.seq })
            }
            baseState = s
            state = s
            logBase = seq
            logBaseEpoch = seqEpoch
            log = []
            truncations += 1
            snapshotKey = nil
            snapshotParts = [:]
            followerMatched = seq
            leaderLastSeq = max(leaderLastSeq, seq)
            pruneUnmerged()
            out.append(.send(from, ackOrMerge(epoch: epoch, matchSeq: seq, caughtUp: seq >= leaderLastSeq, now: now)))

        case .ack(let epoch, let matchSeq, let caughtUp):
            guard let mine = leadingEpoch, mine == epoch else { return out }
            if matchSeq <= lastSeq, epochAt(matchSeq) != nil {
                if matchSeq >= logBase {
                    peerNeedsSnapshot = false
                    syncRequested = false
                }
                peerMatchSeq = max(peerMatchSeq, matchSeq)
                peerNextSeq = max(peerNextSeq, peerMatchSeq + 1)
                peerCaughtUp = caughtUp && peerMatchSeq == lastSeq
                // The peer acknowledges only with nothing unmerged: the pair is in step again.
                if caughtUp { endSplit() }
            }
            releaseAnswers(&out, now: now)

        case .mismatch(let epoch, let followerLast, let table):
            guard let mine = leadingEpoch, mine == epoch else { return out }
            // Agreement: the highest position where both logs hold the same epoch's entries.
            var agree: UInt64 = 0
            let mineTable = epochTable
            for r in table.reversed() {
                if let m = mineTable.first(where: { $0.epoch == r.epoch }) {
                    agree = min(r.lastSeq, m.lastSeq)
                    break
                }
            }
            agree = min(agree, followerLast)
            if agree < logBase { peerNeedsSnapshot = true }
            peerNextSeq = max(agree, logBase) + 1
            out += replicate(epoch: epoch, resend: false)

        case .stale(let epoch):
            if epoch > promisedEpoch {
                promisedEpoch = epoch
                if case .follower = mode {} else { stepDown(&out) }
            }

        case .handoverRequest(let epoch):
            if case .leader(let mine) = mode, epoch == mine, index == 1 {
                mode = .handingOver(epoch: mine, since: now)
                lastHeartbeatSent = nil
            }

        case .handoverReady(let epoch, let last):
            if case .follower = mode, epoch == promisedEpoch, last == lastSeq {
                out += becomeCandidate(now: now, floor: promisedEpoch)
            }

        case .voteGranted(let epoch, let leaseUSec):
            guard case .candidate(let e, let sentAt) = mode, e == epoch else { return out }
            lead(epoch: epoch, validUntil: sentAt + USec(Double(leaseUSec) * settings.leaseSafety), now: now, &out)

        case .merge(let epoch, let entries):
            guard let mine = leadingEpoch, mine == epoch, !usesWitness else { return out }
            merge(entries, epoch: mine, now: now)
            out += replicate(epoch: mine, resend: false)

        case .voteDenied(let epoch, let voted):
            guard case .candidate(let e, _) = mode, e == epoch else { return out }
            // Try again after the usual wait (tick), above whatever the witness voted for.
            promisedEpoch = max(promisedEpoch, voted)

        case .renewed(let epoch, let recorded, let sentAt):
            guard let mine = leadingEpoch, mine == epoch else { return out }
            leaseValidUntil = max(leaseValidUntil, sentAt + USec(Double(settings.witnessLeaseUSec) * settings.leaseSafety))
            if let r = recorded { witnessRecorded = max(witnessRecorded, r) }
            releaseAnswers(&out, now: now)

        case .deposed(let voted):
            promisedEpoch = max(promisedEpoch, voted)
            if leadingEpoch != nil { stepDown(&out) }

        case .voteRequest, .renew, .releaseLease:
            break // for the witness
        }
        return out
    }

    /// A follower acknowledges only once nothing cut from its log waits to be merged; until
    /// then it sends those lease changes instead, so the leader's answers (and, under `split`,
    /// its full grants) wait for the merge.
    private mutating func ackOrMerge(epoch: UInt64, matchSeq: UInt64, caughtUp: Bool, now: USec) -> PairMessage {
        guard !unmerged.isEmpty else {
            if caughtUp { endSplit() }
            return .ack(epoch: epoch, matchSeq: matchSeq, caughtUp: caughtUp)
        }
        lastMergeSent = now
        return .merge(epoch: epoch, entries: Array(unmerged.prefix(settings.maxEntriesPerFrame)))
    }

    /// A frame from the leader of `epoch`: a stale one is answered with our epoch (false);
    /// otherwise this node follows that leader.
    private mutating func followLeader(of epoch: UInt64, from: Peer, now: USec, _ out: inout [NodeEffect]) -> Bool {
        if epoch < promisedEpoch {
            out.append(.send(from, .stale(epoch: promisedEpoch)))
            return false
        }
        if epoch > promisedEpoch {
            promisedEpoch = epoch
            leaderLastSeq = 0
        }
        if case .follower = mode {} else { stepDown(&out) }
        leaderHint = peer
        lastHeardLeader = now
        return true
    }

    /// The epoch this node leads (also while handing over).
    var leadingEpoch: UInt64? {
        switch mode {
        case .leader(let e), .handingOver(let e, _): return e
        default: return nil
        }
    }

    // MARK: - Compaction and snapshots

    /// The highest position this node may fold into its base: one that can never be truncated
    /// (equal on both nodes, or answered).
    public var compactableSeq: UInt64 {
        min(lastSeq, isLeading ? acknowledgedSeq : followerMatched, splitBasePos ?? .max)
    }

    /// Folds the entries through `seq` (at most `compactableSeq`) into the base state.
    public mutating func compact(through seq: UInt64) {
        let target = min(seq, compactableSeq)
        guard target > logBase, let targetEpoch = epochAt(target) else { return }
        let n = Int(target - logBase)
        for e in log.prefix(n) { baseState.apply(e.change) }
        log.removeFirst(n)
        logBase = target
        logBaseEpoch = targetEpoch
        unstored.insert(.base)
    }

    /// Compacts when the log holds more than twice `compactKeep` entries: through what the
    /// standby has, keeping `compactKeep` entries, and never more than `compactRetain` entries
    /// beyond what an absent standby has.
    public mutating func compactIfLong() {
        guard log.count > 2 * settings.compactKeep else { return }
        var target = lastSeq - UInt64(settings.compactKeep)
        if isLeading {
            let floor = lastSeq > settings.compactRetain ? lastSeq - settings.compactRetain : 0
            target = min(target, max(peerMatchSeq, floor))
        }
        compact(through: target)
    }

    /// Sync: sends the follower a snapshot of the whole state (every heartbeat until it has it).
    /// Only the serving node can.
    public mutating func sync() -> [NodeEffect] {
        guard case .leader(let epoch) = mode else { return [] }
        syncRequested = true
        peerNeedsSnapshot = true
        return snapshotFrames(epoch: epoch)
    }

    /// Whether `sync` applies (this node leads).
    public var canSync: Bool { servingEpoch != nil }

    private func snapshotFrames(epoch: UInt64) -> [NodeEffect] {
        let changes = state.sharedChanges
        let size = max(1, settings.snapshotChunk)
        let parts = max(1, (changes.count + size - 1) / size)
        return (0..<parts).map { p in
            let chunk = Array(changes[min(p * size, changes.count)..<min((p + 1) * size, changes.count)])
            return .send(.node(peer), .snapshot(epoch: epoch, seq: lastSeq, seqEpoch: lastEpoch, part: p, parts: parts, changes: chunk))
        }
    }

    /// Counts a refused acquisition (a local statistic, not replicated).
    public mutating func noteDenied(_ feature: String) {
        state.denied[feature, default: 0] += 1
    }

    /// A client request (the simulation's clients). Successful answers wait until the change is
    /// acknowledged.
    public mutating func request(ref: Int, _ command: ClientCommand, now: USec, newLeaseId: String) -> [NodeEffect] {
        let core: Command
        switch command {
        case .acquire(let feature, let count, let client, let ttl, let requestId):
            core = .acquire(AcquireRequest(feature: feature, count: count, client: client, ttlUSec: ttl, requestId: requestId, newLeaseId: newLeaseId))
        case .renew(let id): core = .renew(leaseId: id)
        case .release(let id): core = .release(leaseId: id)
        }
        let (decision, effects) = perform(ref: ref, core, caller: .root, now: now)
        switch decision {
        case .pending: return effects
        case .refused(let e): return [.reply(ref: ref, .refused(e.code, e.message))] + effects
        case .notServing(let leader): return [.reply(ref: ref, .notServing(leader: leader))] + effects
        }
    }

    /// Any command (a daemon's D-Bus and network calls): decided against the state at once; a
    /// change is appended and its answer (`.reply(ref, .done)`) released once acknowledged.
    public mutating func perform(ref: Int, _ command: Command, caller: Caller, now: USec) -> (PairDecision, [NodeEffect]) {
        var out: [NodeEffect] = []
        guard case .leader(let epoch) = mode, now < leaseValidUntil else {
            return (.notServing(leader: leaderHint == index ? nil : leaderHint), out)
        }
        if now > settings.expiryGraceUSec, case .success(let d) = state.decide(.expireLeases, caller: .root, now: now - settings.expiryGraceUSec) {
            for c in d.changes { append(c, epoch: epoch) }
        }
        ensureSplitBase()
        let alone = !usesWitness && !peerReachable(now: now)
        if alone {
            if command.isAdministrative {
                return (.refused(TandemError(.peerUnreachable, "the peer is out of reach: administrative changes wait until the pair is back together")), out)
            }
            limitToSplitShare(now: now, &out)
        }
        switch state.decide(command, caller: caller, now: now) {
        case .failure(let e):
            return (.refused(e), out)
        case .success(let d):
            if splitBasePos != nil {
                switch d.outcome {
                case .leaseGranted(let l, false) where splitHeld(l.feature) + UInt64(l.count) > splitShare(l.feature, at: now):
                    return (.refused(TandemError(.insufficientSeats, splitRefusal(l.feature, at: now))), out)
                case .leaseGranted(let l, true) where splitRefused.contains(l.id) || (splitRefusedUnknown && splitBase?.leases[l.id] == nil):
                    return (.refused(TandemError(.insufficientSeats, splitRefusal(l.feature, at: now))), out)
                case .leaseRenewed(let l) where splitRefused.contains(l.id):
                    return (.refused(TandemError(.leaseNotFound, "lease \(l.id) was refused while cut off from the peer")), out)
                default:
                    break
                }
            }
            for c in d.changes { append(c, epoch: epoch) }
            pending.append((seq: lastSeq, ref: ref, reply: .done(d.outcome), admin: command.isAdministrative))
            out += replicate(epoch: epoch, resend: false)
            if usesWitness, !peerReachable(now: now) { out += renew(epoch: epoch, now: now, record: true) }
            releaseAnswers(&out, now: now)
            return (.pending(d.outcome), out)
        }
    }
}

import TandemCore

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
    public internal(set) var baseState: LicenseState
    /// The log holds the entries after (`logBase`, `logBaseEpoch`); `baseState` is the state there.
    public internal(set) var logBase: UInt64 = 0
    public internal(set) var logBaseEpoch: UInt64 = 0
    public internal(set) var log: [LogEntry] = []
    public internal(set) var promisedEpoch: UInt64 = 0 {
        didSet { if promisedEpoch != oldValue { unstored.insert(.progress) } }
    }
    /// Counts truncations and snapshots installed (the log was rewritten, not only extended).
    public internal(set) var truncations = 0 {
        didSet { unstored.insert(.rewritten) }
    }
    /// Without a witness: lease changes this node made or held that the serving node's log did
    /// not have when they were cut from this log; they wait here until merged (see `Change.leasesMerged`).
    public internal(set) var unmerged: [LogEntry] = [] {
        didSet { if unmerged != oldValue { unstored.insert(.progress) } }
    }
    /// `split`: while set, the last position both nodes held; grants are limited to this node's
    /// share of the seats free there until the pair is back in step (an acknowledgement of a
    /// caught-up follower clears it on both sides).
    public internal(set) var splitBasePos: UInt64? {
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
    public internal(set) var unstored: Unstored = []

    /// The host stored the durable part as it is now.
    public mutating func markStored() { unstored = [] }

    // Derived from the durable part.
    public internal(set) var state: LicenseState

    /// What a node knows only while it runs: lost on a crash, rebuilt as a whole by `restart`.
    struct Volatile: Sendable {
        var mode: Mode = .follower
        var leaderHint: NodeIndex?
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
        /// The lease the witness gave with this epoch's vote; its renewals last as long.
        var votedLeaseUSec: USec?
        var lastHeartbeatSent: USec?
        var lastRecordRequested: UInt64 = 0
        var lastHandoverRequest: USec?
        /// Answers decided and appended, waiting until their entry is acknowledged.
        var pending: [PendingAnswer] = []
        /// The follower's log does not reach back to ours (different bases): it needs a snapshot.
        var peerNeedsSnapshot = false
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
        var splitRefusedUnknown: Bool
        var lastMergeSent: USec?
        /// What the peer said as it went, and when; cleared by any other frame from it.
        var peerDeparture: (PeerDeparture, at: USec)?
        /// This node said it is leaving (`leave`): it neither serves nor stands any more.
        var left = false
        /// The peer's usage policy digest, as it last answered a probe (nil: not heard, or gone).
        var peerPolicyDigest: String?

        init(startedAt: USec, splitRefusedUnknown: Bool) {
            self.startedAt = startedAt
            self.splitRefusedUnknown = splitRefusedUnknown
        }
    }

    /// A client's answer decided and appended at `seq`, released once that entry is acknowledged.
    struct PendingAnswer: Sendable {
        var seq: UInt64
        var ref: Int
        var reply: ClientReply
        /// Administrative changes are never answered by a node alone (see `releaseAnswers`).
        var admin: Bool
    }

    public enum Mode: Sendable, Equatable {
        case follower
        case candidate(epoch: UInt64, sentAt: USec)
        case leader(epoch: UInt64)
        case handingOver(epoch: UInt64, since: USec)
    }
    var volatile: Volatile
    public var mode: Mode { volatile.mode }
    public var leaderHint: NodeIndex? { volatile.leaderHint }
    /// The follower's log does not reach back to ours (different bases): it needs a snapshot.
    public var peerNeedsSnapshot: Bool { volatile.peerNeedsSnapshot }

    public var peer: NodeIndex { 1 - index }

    /// This node's usage policy digest (configuration: the host sets it at start and on reload).
    public var policyDigest = ""
    /// The peer's, as the host last heard it in the peer's description of itself (nil: the peer
    /// did not answer, left, or is of a version that does not say).
    public var peerPolicyDigest: String? { volatile.peerPolicyDigest }
    public mutating func notePeerPolicy(_ digest: String?) { volatile.peerPolicyDigest = digest }
    /// The two nodes decide under different usage policies (administrative changes wait).
    public var policyMismatch: Bool { volatile.peerPolicyDigest.map { $0 != policyDigest } ?? false }

    public init(index: NodeIndex, initial: LicenseState, settings: PairSettings = PairSettings(), now: USec) {
        self.index = index
        self.settings = settings
        baseState = initial
        state = initial
        volatile = Volatile(startedAt: now, splitRefusedUnknown: false)
    }

    /// A node restored from durable storage: the state at (`base`, `baseEpoch`), the log after
    /// it, and the highest epoch promised. It starts as a follower.
    public init(
        index: NodeIndex, baseState: LicenseState, base: UInt64, baseEpoch: UInt64, log: [LogEntry],
        promisedEpoch: UInt64, unmerged: [LogEntry] = [], splitBasePos: UInt64? = nil,
        settings: PairSettings = PairSettings(), now: USec
    ) {
        self.index = index
        self.unmerged = unmerged
        self.splitBasePos = splitBasePos
        volatile = Volatile(startedAt: now, splitRefusedUnknown: splitBasePos != nil)
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
    public var acknowledgedSeq: UInt64 { max(volatile.peerMatchSeq, volatile.witnessRecorded) }
    public var peerMatch: UInt64 { volatile.peerMatchSeq }
    public var isLeading: Bool { leadingEpoch != nil }

    public var servingEpoch: UInt64? {
        if case .leader(let e) = volatile.mode { return e }
        return nil
    }

    /// True when this node may grant seats right now.
    public func isServing(now: USec) -> Bool {
        servingEpoch != nil && now < volatile.leaseValidUntil
    }

    /// A peer that said it is going is out of reach at once, not after the silence.
    func peerReachable(now: USec) -> Bool {
        guard let t = volatile.lastHeardPeer, volatile.peerDeparture == nil else { return false }
        return now < t + settings.failoverTimeoutUSec
    }

    public func peerStatus(now: USec) -> PeerStatus {
        switch volatile.peerDeparture?.0 {
        case .stopped: return .stopped
        case .removed: return .notAvailable
        case nil: break
        }
        guard volatile.lastHeardPeer != nil else { return .notAvailable }
        return peerReachable(now: now) ? .running : .disconnected
    }

    /// Why the peer has the status it has, for people: what it said as it went, or how long
    /// it has been silent (nil while it runs).
    public func peerStatusReason(now: USec) -> String? {
        let who = peer == 0 ? "the primary" : "the backup"
        if let (departure, at) = volatile.peerDeparture {
            let ago = Self.seconds(now - min(at, now))
            switch departure {
            case .stopped: return "\(who) said its service was stopping, \(ago) ago"
            case .removed: return "\(who) said it was being uninstalled, \(ago) ago"
            }
        }
        guard let t = volatile.lastHeardPeer else { return "nothing heard from \(who) since this server started" }
        return peerReachable(now: now) ? nil : "nothing heard from \(who) for \(Self.seconds(now - min(t, now)))"
    }

    static func seconds(_ usec: USec) -> String { "\(usec / 1_000_000) s" }

    public func pairStatus(now: USec) -> PairStatus {
        if volatile.peerNeedsSnapshot, leadingEpoch != nil { return .pairNotSynced }
        guard peerReachable(now: now) else { return index == 0 ? .backupNotAvailable : .primaryNotAvailable }
        switch volatile.mode {
        case .leader, .handingOver:
            return volatile.peerCaughtUp ? .pairedAndAvailable : .recovering
        case .follower:
            return volatile.lastHeardLeader != nil && lastSeq == volatile.leaderLastSeq
                ? .pairedAndAvailable : .recovering
        case .candidate:
            return .recovering
        }
    }

    var epochTable: [EpochRange] {
        var out: [EpochRange] =
            logBase > 0 || logBaseEpoch > 0 ? [EpochRange(epoch: logBaseEpoch, lastSeq: logBase)] : []
        for e in log {
            if out.last?.epoch == e.epoch {
                out[out.count - 1].lastSeq = e.seq
            } else {
                out.append(EpochRange(epoch: e.epoch, lastSeq: e.seq))
            }
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
        // A node that stopped in a split does not know which grants it refused then.
        volatile = Volatile(startedAt: now, splitRefusedUnknown: splitBasePos != nil)
    }

    public var usesWitness: Bool { settings.partition == .witness }

    /// This node is stopping (`forGood`: being uninstalled): it stops serving, gives the
    /// witness its lease back and tells the peer, which then stands at once. Answers still
    /// waiting are the host's to refuse; nothing more is decided, sent or stood for.
    public mutating func leave(forGood: Bool, now: USec) -> [NodeEffect] {
        guard !volatile.left else { return [] }
        var out: [NodeEffect] = []
        if usesWitness {
            // A candidate's vote may be granted meanwhile: that lease is given back too.
            if let epoch = leadingEpoch {
                out.append(.send(.witness, .releaseLease(epoch: epoch)))
            } else if case .candidate(let epoch, _) = volatile.mode {
                out.append(.send(.witness, .releaseLease(epoch: epoch)))
            }
        }
        volatile.mode = .follower
        volatile.leaseValidUntil = 0
        volatile.pending = []
        volatile.left = true
        out.append(.send(.node(peer), .leaving(epoch: promisedEpoch, lastSeq: lastSeq, forGood: forGood)))
        return out
    }

    public var hasLeft: Bool { volatile.left }

    // MARK: - Log

    mutating func append(_ change: Change, epoch: UInt64) {
        let entry = LogEntry(seq: lastSeq + 1, epoch: epoch, change: change)
        log.append(entry)
        state.apply(change)
    }

    mutating func truncate(from seq: UInt64) {
        guard seq <= lastSeq, seq > logBase else { return }
        if !usesWitness { keepUnmerged(log[Int(seq - logBase - 1)...]) }
        log.removeSubrange(Int(seq - logBase - 1)...)
        truncations += 1
        var s = baseState
        for e in log { s.apply(e.change) }
        state = s
    }

    /// Leader: expires the leases whose time has come, with grace for clock offsets between nodes.
    mutating func expireWithGrace(now: USec, epoch: UInt64) {
        guard now > settings.expiryGraceUSec,
            case .success(let d) = state.decide(.expireLeases, caller: .root, now: now - settings.expiryGraceUSec)
        else { return }
        for c in d.changes { append(c, epoch: epoch) }
    }

    // MARK: - Events

    /// Time passed: what this node does in its mode (called every few tens of milliseconds).
    public mutating func tick(now: USec) -> [NodeEffect] {
        var out: [NodeEffect] = []
        guard !volatile.left else { return out }
        switch volatile.mode {
        case .leader(let epoch):
            tickLeading(epoch: epoch, now: now, &out)
        case .handingOver(let epoch, let since):
            tickHandingOver(epoch: epoch, since: since, now: now, &out)
        case .follower:
            tickFollowing(now: now, &out)
        case .candidate(let epoch, let sentAt):
            tickCandidate(epoch: epoch, sentAt: sentAt, now: now, &out)
        }
        return out
    }

    public mutating func receive(from: Peer, _ message: PairMessage, now: USec) -> [NodeEffect] {
        var out: [NodeEffect] = []
        guard !volatile.left else { return out }
        if case .node = from {
            // A peer heard again after a silence or a departure has to show it caught up anew.
            if !peerReachable(now: now) { volatile.peerCaughtUp = false }
            volatile.lastHeardPeer = now
            if case .leaving = message {} else { volatile.peerDeparture = nil }
        }
        switch message {
        case .append(let epoch, let prevSeq, let prevEpoch, let entries, let leaderLast):
            onAppend(
                epoch: epoch, prevSeq: prevSeq, prevEpoch: prevEpoch, entries: entries, leaderLast: leaderLast,
                from: from, now: now, &out)

        case .snapshot(let epoch, let seq, let seqEpoch, let part, let parts, let changes):
            onSnapshot(
                epoch: epoch, seq: seq, seqEpoch: seqEpoch, part: part, parts: parts, changes: changes, from: from,
                now: now, &out)

        case .ack(let epoch, let matchSeq, let caughtUp):
            onAck(epoch: epoch, matchSeq: matchSeq, caughtUp: caughtUp, from: from, now: now, &out)

        case .mismatch(let epoch, let followerLast, let table):
            onMismatch(epoch: epoch, followerLast: followerLast, table: table, from: from, now: now, &out)

        case .stale(let epoch):
            if epoch > promisedEpoch {
                promisedEpoch = epoch
                if case .follower = volatile.mode {} else { stepDown(&out) }
            }

        case .handoverRequest(let epoch):
            if case .leader(let mine) = volatile.mode, epoch == mine, index == 1 {
                volatile.mode = .handingOver(epoch: mine, since: now)
                volatile.lastHeartbeatSent = nil
            }

        case .handoverReady(let epoch, let last):
            if case .follower = volatile.mode, epoch == promisedEpoch, last == lastSeq {
                out += becomeCandidate(now: now, floor: promisedEpoch)
            }

        case .voteGranted(let epoch, let leaseUSec):
            guard case .candidate(let e, let sentAt) = volatile.mode, e == epoch else { return out }
            lead(epoch: epoch, validUntil: sentAt + USec(Double(leaseUSec) * settings.leaseSafety), now: now, &out)
            volatile.votedLeaseUSec = leaseUSec

        case .merge(let epoch, let entries):
            guard let mine = leadingEpoch, mine == epoch, !usesWitness else { return out }
            merge(entries, epoch: mine, now: now)
            out += replicate(epoch: mine, resend: false)

        case .voteDenied(let epoch, let voted):
            guard case .candidate(let e, _) = volatile.mode, e == epoch else { return out }
            // Try again after the usual wait (tick), above whatever the witness voted for.
            promisedEpoch = max(promisedEpoch, voted)

        case .renewed(let epoch, let recorded, let sentAt):
            guard let mine = leadingEpoch, mine == epoch else { return out }
            // A witness set to a shorter lease than this node's timing is trusted no longer than
            // it gives: the leader must stop before the witness votes for its peer.
            let lease = min(settings.witnessLeaseUSec, volatile.votedLeaseUSec ?? settings.witnessLeaseUSec)
            volatile.leaseValidUntil = max(
                volatile.leaseValidUntil, sentAt + USec(Double(lease) * settings.leaseSafety))
            if let r = recorded { volatile.witnessRecorded = max(volatile.witnessRecorded, r) }
            releaseAnswers(&out, now: now)

        case .deposed(let voted):
            promisedEpoch = max(promisedEpoch, voted)
            if leadingEpoch != nil { stepDown(&out) }

        case .leaving(let epoch, _, let forGood):
            // From an older epoch: a frame of a run of the peer that is over (late, or replayed).
            guard case .node = from, epoch >= promisedEpoch else { return out }
            volatile.peerDeparture = (forGood ? .removed : .stopped, now)
            volatile.peerPolicyDigest = nil  // a node that is gone holds nothing up
            // Handing serving back to a node that is going: keep it.
            if case .handingOver(let mine, _) = volatile.mode { volatile.mode = .leader(epoch: mine) }
            // The serving node stopped: stand at once rather than after the silence (with a
            // witness, it still decides: the stopping node gave its lease back).
            if case .follower = volatile.mode, volatile.leaderHint != index {
                out += becomeCandidate(now: now, floor: epoch)
            }

        case .voteRequest, .renew, .releaseLease:
            break  // for the witness
        }
        return out
    }

    /// The epoch this node leads (also while handing over).
    var leadingEpoch: UInt64? {
        switch volatile.mode {
        case .leader(let e), .handingOver(let e, _): return e
        default: return nil
        }
    }

    // MARK: - Commands

    /// Counts a refused acquisition (a local statistic, not replicated).
    public mutating func noteDenied(_ feature: String) {
        state.denied[feature, default: 0] += 1
    }

    /// Any command (a daemon's D-Bus and network calls): decided against the state at once; a
    /// change is appended and its answer (`.reply(ref, .done)`) released once acknowledged.
    public mutating func perform(
        ref: Int, _ command: Command, caller: Caller, now: USec
    ) -> (PairDecision, [NodeEffect]) {
        var out: [NodeEffect] = []
        guard case .leader(let epoch) = volatile.mode, now < volatile.leaseValidUntil else {
            return (.notServing(leader: volatile.leaderHint == index ? nil : volatile.leaderHint), out)
        }
        expireWithGrace(now: now, epoch: epoch)
        ensureSplitBase()
        if command.isAdministrative, policyMismatch {
            func name(_ d: String) -> String { d.isEmpty ? "none" : String(d.prefix(12)) }
            return (
                .refused(
                    TandemError(
                        .pairState,
                        "the nodes' usage policies differ (this node's \(name(policyDigest)), the peer's "
                            + "\(name(volatile.peerPolicyDigest ?? ""))): make policy.conf the same on both and reload"
                            + " (systemctl reload tandemd), then try again")),
                out
            )
        }
        let alone = !usesWitness && !peerReachable(now: now)
        if alone {
            if command.isAdministrative {
                return (
                    .refused(
                        TandemError(
                            .peerUnreachable,
                            "the peer is out of reach: administrative changes wait until the pair is back together")),
                    out
                )
            }
            limitToSplitShare(now: now, &out)
        }
        switch state.decide(command, caller: caller, now: now) {
        case .failure(let e):
            return (.refused(e), out)
        case .success(let d):
            if let refusal = splitRefusal(of: d.outcome, at: now) { return (.refused(refusal), out) }
            for c in d.changes { append(c, epoch: epoch) }
            volatile.pending.append(
                PendingAnswer(seq: lastSeq, ref: ref, reply: .done(d.outcome), admin: command.isAdministrative))
            out += replicate(epoch: epoch, resend: false)
            if usesWitness, !peerReachable(now: now) { out += renew(epoch: epoch, now: now, record: true) }
            releaseAnswers(&out, now: now)
            return (.pending(d.outcome), out)
        }
    }
}

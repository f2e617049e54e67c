import Foundation
import Logging
import TandemCore
import TandemLicensing
import TandemPair
import TandemStore

/// Settings the engine needs; reloadable.
public struct EngineSettings: Sendable {
    public var defaultLeaseUSec: USec
    public var maxLeaseUSec: USec
    public var trustedKeys: TrustedKeys
    public init(defaultLeaseUSec: USec = 300 * usecPerSecond, maxLeaseUSec: USec = 86_400 * usecPerSecond,
                trustedKeys: TrustedKeys = TrustedKeys()) {
        self.defaultLeaseUSec = defaultLeaseUSec
        self.maxLeaseUSec = maxLeaseUSec
        self.trustedKeys = trustedKeys
    }
    public static let minLeaseUSec: USec = usecPerSecond
}

/// Fresh identifiers.
public enum Identifiers {
    static func hex(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes * 2)
        for _ in 0..<bytes {
            let b = UInt8.random(in: 0...255, using: &g)
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
    public static func lease() -> String { "lease-" + hex(8) }
    public static func reservation() -> String { "res-" + hex(6) }
    /// A License Server ID such as `TS-7Q2M-K4XW-9D1C-B3RT` (Crockford base32, 80 bits).
    public static func serverId() -> String {
        let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        var g = SystemRandomNumberGenerator()
        let chars = (0..<16).map { _ in alphabet[Int.random(in: 0..<32, using: &g)] }
        return "TS-" + stride(from: 0, to: 16, by: 4).map { String(chars[$0..<$0 + 4]) }.joined(separator: "-")
    }
}

/// The one owner of the license state. It decides commands against the state in memory,
/// stages their changes, and commits every staged change of a batch in one durable
/// transaction (group commit); the callers' answers are released only after that commit.
/// It is driven from a single thread (the daemon's event loop) and is not thread-safe.
public final class Engine {
    /// The license state: this server's own, or the pair's (replicated) while paired.
    public var state: LicenseState { pair?.state ?? ownState }
    private var ownState: LicenseState
    public let store: Store
    public var settings: EngineSettings
    let logger: Logger
    let clock: () -> USec

    /// Changes decided and applied in memory, and the answers waiting for them to be durable.
    private var staged: [Change] = []
    private var waiters: [() -> Void] = []
    private var deniedDirty = false
    public private(set) var commitCount = 0
    public private(set) var committedChanges = 0

    /// Called after every commit with the entries written (signals, status, replication).
    public var onCommit: (([LoggedChange]) -> Void)?
    /// Called whenever something was staged or an answer waits for the next commit.
    public var onWork: (() -> Void)?

    public init(store: Store, settings: EngineSettings, logger: Logger, clock: @escaping () -> USec = Engine.realtimeNow) throws {
        self.store = store
        self.settings = settings
        self.logger = logger
        self.clock = clock
        ownState = try store.load()
        if ownState.serverId.isEmpty {
            let id = Identifiers.serverId()
            try store.commit([.serverIdSet(id: id)], epoch: ownState.epoch, now: clock())
            ownState.apply(.serverIdSet(id: id))
            logger.notice("generated License Server ID", metadata: ["server_id": "\(id)"])
        }
    }

    public static func realtimeNow() -> USec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return USec(ts.tv_sec) * usecPerSecond + USec(ts.tv_nsec / 1000)
    }

    public var now: USec { clock() }
    public var hasStaged: Bool { !staged.isEmpty || !waiters.isEmpty || !outbox.isEmpty || !replies.isEmpty }
    public var stagedCount: Int { staged.count }

    /// Decides and stages `command`. On success the outcome is final once its batch is committed.
    public func submit(_ command: Command, caller: Caller) -> Result<Outcome, TandemError> {
        if pair != nil { return submitPaired(command, caller: caller) }
        let now = clock()
        expireDue(now: now)
        let result = state.decide(command, caller: caller, now: now)
        switch result {
        case .success(let d):
            stage(d.changes)
            return .success(d.outcome)
        case .failure(let e):
            if e.code == .insufficientSeats, case .acquire(let req) = command {
                ownState.denied[req.feature, default: 0] += 1
                deniedDirty = true
            }
            return .failure(e)
        }
    }

    private func stage(_ changes: [Change]) {
        guard !changes.isEmpty else { return }
        for c in changes { ownState.apply(c) }
        staged.append(contentsOf: changes)
        onWork?()
    }

    /// Stages the expiry of every lease whose time has come.
    @discardableResult
    public func expireDue(now: USec? = nil) -> [Lease] {
        guard pair == nil else { return [] } // a pair expires leases in its own log (PairNode.tick)
        let t = now ?? clock()
        guard let next = state.nextExpiry, next <= t else { return [] }
        guard case .success(let d) = state.decide(.expireLeases, caller: .root, now: t),
              case .expired(let gone) = d.outcome else { return [] }
        stage(d.changes)
        ownState.settleExpiryBound()
        for l in gone {
            logger.info("lease expired", metadata: ["lease_id": "\(l.id)", "feature": "\(l.feature)", "client": "\(l.client)"])
        }
        return gone
    }

    /// Runs `body` once everything decided so far is durable (immediately if nothing is staged).
    public func whenCommitted(_ body: @escaping () -> Void) {
        if staged.isEmpty { body() } else { waiters.append(body) }
    }

    /// Runs `body` once the last command submitted is answered: durable here (and, while
    /// paired, acknowledged by the pair), or refused after all because this node stopped serving.
    public func whenAnswered(_ body: @escaping (TandemError?) -> Void) {
        if pair != nil {
            if let ref = lastPendingRef, pairWaiters[ref] != nil {
                pairWaiters[ref]!.append(body)
            } else {
                body(nil)
            }
        } else {
            whenCommitted { body(nil) }
        }
    }

    /// Commits the staged batch in one transaction, then releases the waiting answers.
    /// A failure leaves the state in memory ahead of the disk: the caller must stop.
    public func flush() throws {
        if pair != nil { return try flushPaired() }
        let batch = staged
        let waiting = waiters
        if !batch.isEmpty || deniedDirty {
            let logged = try store.commit(batch, epoch: state.epoch, now: clock(), denied: deniedDirty ? state.denied : nil)
            commitCount += 1
            committedChanges += logged.count
            staged = []
            deniedDirty = false
            waiters = []
            for f in waiting { f() }
            if !logged.isEmpty { onCommit?(logged) }
        } else {
            waiters = []
            for f in waiting { f() }
        }
    }

    // MARK: - Conveniences that build commands from adapter input

    /// Verifies a license document and activates it.
    public func activate(document: String, caller: Caller) -> Result<Outcome, TandemError> {
        guard caller.isAdmin else { return .failure(TandemError(.accessDenied, "ActivateLicense needs root or membership in the admin group")) }
        do throws(TandemError) {
            let doc = try settings.trustedKeys.verify(document)
            if let peer = pairPeerServerId, pair != nil, !doc.license().issuedTo.contains(peer) {
                return .failure(TandemError(.wrongServer, "a paired server activates only licenses issued to both servers of the pair (\(state.serverId) and \(peer))"))
            }
            return submit(.activate(doc.license()), caller: caller)
        } catch {
            return .failure(error)
        }
    }

    public func acquire(feature: String, count: UInt32, client: String, ttlUSec: USec?, requestId: String?,
                        caller: Caller) -> Result<Outcome, TandemError> {
        let ttl = ttlUSec ?? settings.defaultLeaseUSec
        guard ttl >= EngineSettings.minLeaseUSec && ttl <= settings.maxLeaseUSec else {
            return .failure(TandemError(.invalidArgs, "ttl must be from 1 s to \(settings.maxLeaseUSec / usecPerSecond) s (MaxLeaseSec)"))
        }
        return submit(.acquire(AcquireRequest(feature: feature, count: count, client: client, ttlUSec: ttl,
                                              requestId: requestId, newLeaseId: Identifiers.lease())), caller: caller)
    }

    public func reserve(feature: String, count: UInt32, holder: String, caller: Caller) -> Result<Outcome, TandemError> {
        submit(.reserve(feature: feature, count: count, holder: holder, newId: Identifiers.reservation()), caller: caller)
    }

    public func resetServerId(caller: Caller) -> Result<Outcome, TandemError> {
        submit(.resetServerId(newId: Identifiers.serverId()), caller: caller)
    }

    /// The text an administrator sends to the vendor to get licenses issued.
    public var activationRequest: String {
        "Tandem-Activation-Request: 1\nServer-Id: \(state.serverId)\n" + (pairPeerServerId.map { "Server-Id: \($0)\n" } ?? "")
    }

    /// Writes the refused-acquisition counters if they changed (on shutdown).
    public func persistCounters() throws {
        if deniedDirty {
            try store.commit([], epoch: state.epoch, now: clock(), denied: state.denied)
            deniedDirty = false
        }
    }

    // MARK: - Paired operation

    /// The pair protocol's node while paired: it owns the replicated state and log; the
    /// engine persists its log, sends its frames after each commit and answers callers when
    /// it releases their answers.
    public private(set) var pair: PairNode?
    /// The configured primary (node 0) or backup (node 1).
    public var pairIndex: NodeIndex? { pair?.index }
    public var pairPeerServerId: String?
    /// Names a node for messages ("the primary at 10.0.0.1:7391").
    public var describeNode: (NodeIndex) -> String = { $0 == 0 ? "the primary" : "the backup" }
    /// Sends a pair frame (called after the commit that made its content durable).
    public var onSend: ((Peer, PairMessage) -> Void)?
    private var nextRef = 0
    private var lastPendingRef: Int?
    private var pairWaiters: [Int: [(TandemError?) -> Void]] = [:]
    /// The log position each pending answer waits for (to be durable here too).
    private var pendingSeq: [Int: UInt64] = [:]
    private var outbox: [(Peer, PairMessage)] = []
    private var earlyOutbox: [(Peer, PairMessage)] = []
    private var replies: [(Int, ClientReply)] = []
    private var persistedTruncations = 0
    private var persistedBase: UInt64 = 0
    private var persistedPromised: UInt64 = 0
    private var persistedUnmerged: [LogEntry] = []
    private var persistedSplitBase: UInt64?

    /// Starts paired operation with `node` (restored from the store or just formed).
    public func startPair(_ node: PairNode, peerServerId: String) {
        pair = node
        pairPeerServerId = peerServerId
        persistedTruncations = node.truncations
        persistedPromised = node.promisedEpoch
        persistedBase = node.logBase
        persistedUnmerged = node.unmerged
        persistedSplitBase = node.splitBasePos
    }

    /// Leaves paired operation, keeping the pair's state as this server's own.
    public func stopPair() {
        guard let node = pair else { return }
        for w in pairWaiters.values.joined() { w(TandemError(.notServing, "the pair was dissolved")) }
        pairWaiters = [:]
        pendingSeq = [:]
        lastPendingRef = nil
        outbox = []
        earlyOutbox = []
        replies = []
        var s = node.state
        s.serverId = ownState.serverId
        s.serverIdUsed = ownState.serverIdUsed || !node.state.licenses.isEmpty
        ownState = s
        pair = nil
        pairPeerServerId = nil
    }

    private func submitPaired(_ command: Command, caller: Caller) -> Result<Outcome, TandemError> {
        if case .resetServerId = command {
            return .failure(TandemError(.pairState, "ResetServerId is refused while paired (DisableBackup first)"))
        }
        if command.isAdministrative, pair!.index == 1 {
            return .failure(TandemError(.notPrimary, "administrative changes are made on the primary (\(describeNode(0)))"))
        }
        nextRef += 1
        let ref = nextRef
        let (decision, effects) = pair!.perform(ref: ref, command, caller: caller, now: clock())
        switch decision {
        case .pending(let outcome):
            lastPendingRef = ref
            pairWaiters[ref] = []
            pendingSeq[ref] = pair!.lastSeq
            handle(effects)
            onWork?()
            return .success(outcome)
        case .refused(let e):
            handle(effects)
            if e.code == .insufficientSeats, case .acquire(let req) = command {
                pair!.noteDenied(req.feature)
                deniedDirty = true
            }
            return .failure(e)
        case .notServing(let leader):
            handle(effects)
            return .failure(notServing("this node is not serving licenses now", leader))
        }
    }

    private func notServing(_ what: String, _ leader: NodeIndex?) -> TandemError {
        TandemError(.notServing, what + (leader.map { "; \(describeNode($0)) is serving" } ?? ""))
    }

    /// A frame from the peer or the witness.
    public func pairReceive(from: Peer, _ message: PairMessage) {
        guard pair != nil else { return }
        handle(pair!.receive(from: from, message, now: clock()))
    }

    /// Periodic work of the pair protocol (heartbeats, elections, expiry).
    public func pairTick() {
        guard pair != nil else { return }
        handle(pair!.tick(now: clock()))
        pair!.compactIfLong()
        if pair!.logBase != persistedBase { onWork?() }
    }

    /// Sync: the serving node sends the standby a snapshot of the whole state.
    public func pairSync() -> TandemError? {
        guard pair != nil else { return TandemError(.pairState, "this server is not paired") }
        guard pair!.canSync else { return TandemError(.notServing, "Sync is done on the serving node (\(describeNode(1 - pair!.index)))") }
        handle(pair!.sync())
        return nil
    }

    private func handle(_ effects: [NodeEffect]) {
        for e in effects {
            switch e {
            case .send(let peer, let m) where pair?.isLeading == true && m.isAppend:
                // The leader's entries go out before its own commit (at the start of the flush),
                // so that both disks work at once: an answer still waits for both (replies are
                // released only after the local commit), and the follower acknowledges only what
                // it committed. Everything else (acks, witness records) says "durable here" and
                // waits for the commit.
                earlyOutbox.append((peer, m))
            case .send(let peer, let m): outbox.append((peer, m))
            case .reply(let ref, let r): replies.append((ref, r))
            }
        }
        if !outbox.isEmpty || !earlyOutbox.isEmpty || !replies.isEmpty || (pair.map { $0.lastSeq != store.lastSeq } ?? false) { onWork?() }
    }

    private func flushPaired() throws {
        let early = PairMessage.coalesced(earlyOutbox)
        earlyOutbox = []
        for (peer, m) in early { onSend?(peer, m) }
        // Answers whose change is already on this disk (the peer acknowledged it meanwhile) go
        // out now rather than after this flush's commit: their callers come back sooner and
        // join the next batch.
        let storedSeq = store.lastSeq
        var later: [(Int, ClientReply)] = []
        for (ref, r) in replies {
            if let seq = pendingSeq[ref], seq > storedSeq { later.append((ref, r)) } else { answer(ref, r) }
        }
        replies = later
        let node = pair!
        var meta: [(String, String)] = []
        if node.promisedEpoch != persistedPromised { meta.append(("pair_promised_epoch", String(node.promisedEpoch))) }
        // Lease changes cut from the log are kept in the same transaction as the cut.
        if node.unmerged != persistedUnmerged { meta.append(Store.unmergedMeta(node.unmerged.map { ($0.seq, $0.epoch, $0.change) })) }
        if node.splitBasePos != persistedSplitBase { meta.append(("pair_split_base", node.splitBasePos.map { String($0) } ?? "")) }
        let now = clock()
        if node.truncations != persistedTruncations {
            try store.replace(state: node.state, base: node.logBase, baseEpoch: node.logBaseEpoch, baseState: node.baseState,
                              log: node.log.map { ($0.seq, $0.epoch, $0.change) }, now: now, meta: meta)
            persistedTruncations = node.truncations
            persistedBase = node.logBase
            commitCount += 1
        } else if node.lastSeq > store.lastSeq || !meta.isEmpty || deniedDirty || node.logBase != persistedBase {
            // Entries compacted before they were stored come from the base snapshot instead.
            let entries = node.entries(from: max(store.lastSeq, node.logBase) + 1, through: node.lastSeq)
            let compact = node.logBase != persistedBase ? (node.logBase, node.logBaseEpoch, node.baseState) : nil
            try store.append(entries.map { ($0.seq, $0.epoch, $0.change) }, now: now, meta: meta,
                             denied: deniedDirty ? node.state.denied : nil, compactTo: compact)
            persistedBase = node.logBase
            deniedDirty = false
            commitCount += 1
            committedChanges += entries.count
            if !entries.isEmpty {
                onCommit?(entries.map { LoggedChange(seq: $0.seq, epoch: $0.epoch, timeUSec: now, change: $0.change) })
            }
        }
        persistedPromised = node.promisedEpoch
        persistedUnmerged = node.unmerged
        persistedSplitBase = node.splitBasePos
        let sends = PairMessage.coalesced(outbox)
        let answers = replies
        outbox = []
        replies = []
        for (peer, m) in sends { onSend?(peer, m) }
        for (ref, r) in answers { answer(ref, r) }
    }

    private func answer(_ ref: Int, _ r: ClientReply) {
        let ws = pairWaiters.removeValue(forKey: ref) ?? []
        pendingSeq[ref] = nil
        if lastPendingRef == ref { lastPendingRef = nil }
        let error: TandemError?
        switch r {
        case .notServing(let leader):
            error = notServing("this node stopped serving before the change was replicated", leader)
        case .refused(let code, let why): error = TandemError(code, why)
        default: error = nil
        }
        for w in ws { w(error) }
    }
}

import Foundation
import Logging
import TandemCore
import TandemLicensing
import TandemPair
import TandemStore

/// The one owner of the license state. It hands commands to its replication role (standalone,
/// or a pair's node), commits what was decided in one durable transaction per batch (group
/// commit), and answers each command's ticket once its change is durable (and, while paired,
/// acknowledged by the pair). It is driven from a single thread (the daemon's event loop) and is
/// not thread-safe.
public final class Engine {
    public let store: Store
    public var settings: EngineSettings {
        didSet {
            pair?.setPolicyDigest(settings.policy.digest)
            serveWaiters()  // under the policy as it is now
        }
    }
    let logger: Logger
    let clock: () -> USec

    private var replication: any Replication
    /// This server's own state, kept while paired for its ID and for when the pair is dissolved.
    private var ownIdentity: (serverId: String, serverIdUsed: Bool)
    private var deniedDirty = false
    private var committing = false
    /// Tickets not answered yet (by serial), and reads waiting for every ticket before them.
    private var open: [Int: Ticket] = [:]
    /// Set while stopping: every new command is refused with it.
    private var refusal: TandemError?
    private var nextSerial = 0
    private var settleWaiters: [(before: Int, body: () -> Void)] = []
    /// Refused actions of unprivileged callers recorded lately (see `audit`).
    var refusedAudits = ReportThrottle(intervalUSec: Engine.refusalAuditIntervalUSec)
    /// Audit records made while this node did not serve, oldest first (see `keep`).
    var pendingAudits: [AuditRecord] = []
    /// User names by uid (see `userName`).
    var userNames: [UInt32: String?] = [:]
    /// Acquisitions waiting for a seat on this node (see `WaitQueue`).
    var queue = WaitQueue()
    private var servingWaiters = false
    public private(set) var commitCount = 0
    public private(set) var committedChanges = 0

    /// Called after every commit with the entries written (signals, status).
    public var onCommit: (([LogEntry]) -> Void)?
    /// Called whenever something was staged or an answer waits for the next commit.
    public var onWork: (() -> Void)?
    /// Sends a pair frame (called after the commit that made its content durable).
    public var onSend: ((Peer, PairMessage) -> Void)?
    /// Names a node for messages ("the primary at 10.0.0.1:7391").
    public var describeNode: (NodeIndex) -> String = { $0 == 0 ? "the primary" : "the backup" }

    public init(
        store: Store, settings: EngineSettings, logger: Logger,
        clock: @escaping () -> USec = Engine.realtimeNow
    ) throws {
        self.store = store
        self.settings = settings
        self.logger = logger
        self.clock = clock
        var state = store.committedState
        if state.serverId.isEmpty {
            let id = Identifiers.serverId()
            try store.commit([.serverIdSet(id: id)], epoch: state.epoch, now: clock())
            state.apply(.serverIdSet(id: id))
            logger.notice("generated License Server ID", metadata: ["server_id": "\(id)"])
        }
        ownIdentity = (state.serverId, state.serverIdUsed)
        replication = StandaloneReplication(state: state, store: store, logger: logger, onWork: {})
        replication = standalone(state)  // now that self exists, with the callback that reaches onWork
    }

    private func standalone(_ state: LicenseState) -> StandaloneReplication {
        StandaloneReplication(state: state, store: store, logger: logger, onWork: { [unowned self] in onWork?() })
    }

    public static func realtimeNow() -> USec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return USec(ts.tv_sec) * usecPerSecond + USec(ts.tv_nsec / 1000)
    }

    /// The license state: this server's own, or the pair's (replicated) while paired.
    public var state: LicenseState { replication.state }
    public var now: USec { clock() }
    public var hasStaged: Bool { replication.hasWork }
    public var stagedCount: Int { replication.stagedCount }
    /// Whether what is staged should be committed at once (see `Replication.batchFull`).
    public var batchFull: Bool { replication.batchFull }

    // MARK: - Commands

    /// Decides `command`. The ticket says what was decided at once and carries the final answer.
    public func submit(_ command: Command, caller: Caller) -> Ticket {
        let ticket = submit(command, caller: caller, countsRefusal: true)
        // Seats that came free go to the requests waiting for them first.
        if case .success = ticket.decision, command.maySeatWaiters { serveWaiters() }
        return ticket
    }

    /// `countsRefusal`: a refused acquisition is a denial (not while it may still wait). Serves
    /// no waiter: the engine's own records (audit, denials) go through here.
    func submit(_ command: Command, caller: Caller, countsRefusal: Bool) -> Ticket {
        if let refusal { return Ticket(decision: .failure(refusal)) }
        let ticket = replication.perform(command, caller: caller, now: clock())
        auditLeaseCommand(command, caller: caller, ticket.decision)
        if countsRefusal, case .failure(let e) = ticket.decision, case .acquire(let req) = command {
            countRefusal(req, e, caller: caller)
        }
        if ticket.answer == nil {
            let serial = nextSerial
            nextSerial += 1
            open[serial] = ticket
            ticket.afterAnswer = { [unowned self] in settled(serial) }
        }
        return ticket
    }

    /// Runs `body` once every command submitted so far is answered (at once if none waits): a
    /// read then sees only what is durable.
    public func whenSettled(_ body: @escaping () -> Void) {
        if open.isEmpty { body() } else { settleWaiters.append((nextSerial, body)) }
    }

    /// Whether every command submitted so far is answered.
    public var isSettled: Bool { open.isEmpty }

    /// Refuses every command submitted from now on with `error` (the daemon is stopping).
    public func refuseNew(_ error: TandemError) {
        refusal = error
        expireWaits(now: clock())
    }

    /// Answers every command still waiting with `error` (they may still take effect, as after
    /// any refusal by a node that stopped serving: a client retries with its request id).
    /// Returns how many there were.
    @discardableResult
    public func abandonUnanswered(_ error: TandemError) -> Int {
        let waiting = open.sorted { $0.key < $1.key }.map(\.value)
        for t in waiting { t.finish(.failure(error)) }
        return waiting.count
    }

    private func settled(_ serial: Int) {
        open[serial] = nil
        guard !settleWaiters.isEmpty else { return }
        let oldest = open.keys.min() ?? Int.max
        let ready = settleWaiters.filter { $0.before <= oldest }
        settleWaiters.removeAll { $0.before <= oldest }
        for w in ready { w.body() }
    }

    /// Verifies a license document and activates it.
    public func activate(document: String, caller: Caller) -> Ticket {
        guard caller.isAdmin else {
            return Ticket(
                decision: .failure(
                    .needsAdministrator("ActivateLicense")))
        }
        do throws(TandemError) {
            let doc = try settings.trustedKeys.verify(document)
            if let pair, !doc.license().issuedTo.contains(pair.peerServerId) {
                return Ticket(
                    decision: .failure(
                        TandemError(
                            .wrongServer,
                            "a paired server activates only licenses issued to both servers of the pair "
                                + "(\(state.serverId) and \(pair.peerServerId))"
                        )))
            }
            return submit(.activate(doc.license()), caller: caller)
        } catch {
            return Ticket(decision: .failure(error))
        }
    }

    /// Counts a refused acquisition (GetUsage's denied) and records it as a denial when it is one.
    private func countRefusal(_ req: AcquireRequest, _ e: TandemError, caller: Caller) {
        if e.code == .insufficientSeats {
            replication.countDenied(req.feature)
            deniedDirty = true
        }
        if let reason = state.denialReason(e, feature: req.feature, count: req.count, client: req.client, at: clock()) {
            recordDenial(req, reason: reason, caller: caller)
        }
    }

    /// Puts a refused acquisition into the usage history (replicated like any change; the
    /// refused caller does not wait for it). Only a serving node refuses for lack of seats.
    private func recordDenial(_ req: AcquireRequest, reason: DenialReason, caller: Caller) {
        let denial = Denial(
            id: Identifiers.denial(), timeUSec: clock(), feature: req.feature, count: req.count, client: req.client,
            holder: req.holder, uid: caller.uid, token: caller.network ? caller.token : nil, reason: reason)
        if case .failure(let e) = submit(.recordDenial(denial), caller: .root, countsRefusal: false).decision {
            logger.debug("refused acquisition not recorded", metadata: ["reason": "\(e.message)"])
        }
    }

    /// Acquires seats. With `waitUSec`, a request refused for want of seats waits for them in
    /// this node's queue (see `WaitQueue`) instead, unless the policy says `Queue=no`.
    public func acquire(
        feature: String, count: UInt32, client: String, ttlUSec: USec?, requestId: String?,
        holder: Holder = .unknown, caller: Caller, waitUSec: USec = 0, newLeaseId: String = Identifiers.lease()
    ) -> Ticket {
        let ttl = ttlUSec ?? settings.defaultLeaseUSec
        guard ttl >= EngineSettings.minLeaseUSec && ttl <= settings.maxLeaseUSec else {
            return Ticket(
                decision: .failure(
                    TandemError(
                        .invalidArgs, "ttl must be from 1 s to \(settings.maxLeaseUSec / usecPerSecond) s (MaxLeaseSec)"
                    )))
        }
        guard waitUSec <= EngineSettings.maxWaitUSec else {
            return Ticket(
                decision: .failure(
                    TandemError(.invalidArgs, "wait must be at most \(EngineSettings.maxWaitUSec / usecPerSecond) s")))
        }
        let req = AcquireRequest(
            feature: feature, count: count, client: client, ttlUSec: ttl,
            requestId: requestId, newLeaseId: newLeaseId, holder: holder, policy: settings.policy)
        let now = clock()
        serveWaitersFirst(now: now)
        if refusal == nil, let i = queue.position(of: req) {
            let w = queue.byFeature[feature]![i]
            guard w.caller == caller, w.request.count == count else {
                let r = quoted(requestId ?? "")
                return Ticket(
                    decision: .failure(TandemError(.invalidArgs, "request_id \(r) waits for a different acquisition")))
            }
            // Asked again with a wait: it waits on where it was. Without: it no longer waits.
            let ticket = waitUSec > 0 ? Ticket.waiting() : nil
            let earlier = queue.rejoin(feature, at: i, ticket: ticket, untilUSec: now + waitUSec)
            earlier?.finish(
                .failure(TandemError(.insufficientSeats, "asked again with the same request_id: that request answers")))
            if let ticket {
                serveWaiters()
                onWork?()
                return ticket
            }
        }
        let ticket = submit(.acquire(req), caller: caller, countsRefusal: waitUSec == 0)
        guard waitUSec > 0, case .failure(let e) = ticket.decision else { return ticket }
        // More seats than the feature has would wait for ever: refused at once, as without a wait
        // (the refusal says so, so that a client does not ask again and again).
        guard Self.waitsFor(e), settings.policy.features[feature]?.queue != false,
            count <= state.seats(feature, at: now)
        else {
            countRefusal(req, e, caller: caller)
            return ticket
        }
        let waiting = Ticket.waiting()
        let who = PolicyHolder(user: holder.user, host: holder.host, client: client)
        queue.append(
            WaitQueue.Waiter(
                request: req, caller: caller, ticket: waiting, sinceUSec: now, untilUSec: now + waitUSec,
                lastRefusal: e, priority: settings.policy.priority(of: who)))
        onWork?()
        return waiting
    }

    /// Borrows seats for the machine `machineId` for `durationUSec` (the policy's `Borrow=` must
    /// allow it). A borrow never waits: its holder is about to leave.
    public func borrow(
        feature: String, count: UInt32, client: String, machineId: String, durationUSec: USec, requestId: String?,
        holder: Holder = .unknown, caller: Caller
    ) -> Ticket {
        guard durationUSec >= EngineSettings.minLeaseUSec && durationUSec <= EngineSettings.maxBorrowUSec else {
            return Ticket(
                decision: .failure(TandemError(.invalidArgs, "a borrow lasts from 1 s to 365 days")))
        }
        let req = AcquireRequest(
            feature: feature, count: count, client: client, ttlUSec: durationUSec, requestId: requestId,
            newLeaseId: Identifiers.lease(), holder: holder, policy: settings.policy, borrowFor: machineId)
        serveWaitersFirst(now: clock())
        return submit(.acquire(req), caller: caller, countsRefusal: true)
    }

    /// Leases whose time has come go first, and their seats to those already waiting: a newcomer
    /// does not take them ahead of the queue (a pair expires leases in its own tick).
    func serveWaitersFirst(now: USec) {
        guard !queue.isEmpty, let alone = replication as? StandaloneReplication else { return }
        alone.tick(now: now)
        serveWaiters()
    }

    /// Refusals a request may wait out: too few free seats, or free ones the policy keeps for others.
    static func waitsFor(_ e: TandemError) -> Bool {
        e.code == .insufficientSeats || (e.code == .policyDenied && e.policyReason == .policyReserved)
    }

    /// Grants what it can to the waiting requests, per feature in the order they came.
    func serveWaiters() {
        guard !queue.isEmpty, !servingWaiters, refusal == nil else { return }
        servingWaiters = true
        defer { servingWaiters = false }
        var left: [String: [WaitQueue.Waiter]] = [:]
        var refused: [(WaitQueue.Waiter, TandemError)] = []
        let now = clock()
        for feature in queue.byFeature.keys.sorted() {
            // No seat free at all: nobody of this feature can be served (one decision skipped per waiter).
            if state.seats(feature, at: now) <= state.inUse(feature) {
                left[feature] = queue.byFeature[feature]
                continue
            }
            for var w in queue.byFeature[feature]! {
                guard w.keptUntilUSec == nil, let waiting = w.ticket else {
                    left[feature, default: []].append(w)
                    continue
                }
                var req = w.request
                req.newLeaseId = Identifiers.lease()
                req.policy = settings.policy
                let t = submit(.acquire(req), caller: w.caller, countsRefusal: false)
                switch t.decision {
                case .success:
                    t.whenAnswered { waiting.finish($0) }
                case .failure(let e) where Self.waitsFor(e):
                    w.lastRefusal = e
                    left[feature, default: []].append(w)
                case .failure(let e):
                    refused.append((w, e))
                }
            }
        }
        queue.byFeature = left
        for (w, e) in refused {
            countRefusal(w.request, e, caller: w.caller)
            w.ticket?.finish(.failure(e))
        }
    }

    /// Waits that ran out are answered `InsufficientSeats` (their place kept a while for the same
    /// request id); places not taken up again go, each a denial. A node that does not serve (a
    /// standby, one stopping) answers every waiter with why, so that clients go to the one that does.
    func expireWaits(now: USec) {
        guard !queue.isEmpty else { return }
        let notServing: TandemError? =
            refusal
            ?? pair.flatMap {
                $0.node.isServing(now: now) ? nil : TandemError(.notServing, "this node no longer serves")
            }
        var left: [String: [WaitQueue.Waiter]] = [:]
        var answered: [(Ticket?, TandemError)] = []
        var lapsed: [WaitQueue.Waiter] = []
        for feature in queue.byFeature.keys.sorted() {
            for var w in queue.byFeature[feature]! {
                if let notServing {
                    answered.append((w.ticket, notServing))
                } else if let kept = w.keptUntilUSec {
                    if now < kept { left[feature, default: []].append(w) } else { lapsed.append(w) }
                } else if now >= w.untilUSec {
                    let waited = (now - w.sinceUSec) / usecPerSecond
                    // InsufficientSeats whatever kept it waiting: the client may ask again.
                    answered.append(
                        (
                            w.ticket,
                            TandemError(
                                .insufficientSeats,
                                "\(w.lastRefusal.message); waited \(waited) s (ask again with the same request_id"
                                    + " within \(WaitQueue.rejoinUSec / usecPerSecond) s to keep the place in the queue)"
                            )
                        ))
                    w.ticket = nil
                    w.keptUntilUSec = now + WaitQueue.rejoinUSec
                    left[feature, default: []].append(w)
                } else {
                    left[feature, default: []].append(w)
                }
            }
        }
        // The queue is settled before anyone is answered or recorded: those may reach the engine.
        queue.byFeature = left
        for (ticket, error) in answered { ticket?.finish(.failure(error)) }
        for w in lapsed { countRefusal(w.request, w.lastRefusal, caller: w.caller) }
    }

    /// The acquisitions waiting for a seat, per feature in queue order.
    public var waiting: [WaitingRequest] {
        queue.waiting.map {
            WaitingRequest(
                position: $0.position, request: $0.waiter.request, sinceUSec: $0.waiter.sinceUSec,
                untilUSec: $0.waiter.untilUSec)
        }
    }

    /// When the next wait runs out (or a kept place lapses).
    public var nextWaitDeadline: USec? { queue.nextDeadline }

    public func reserve(feature: String, count: UInt32, holder: String, caller: Caller) -> Ticket {
        submit(
            .reserve(feature: feature, count: count, holder: holder, newId: Identifiers.reservation()), caller: caller)
    }

    public func resetServerId(caller: Caller) -> Ticket {
        submit(.resetServerId(newId: Identifiers.serverId()), caller: caller)
    }

    /// The text an administrator sends to the vendor to get licenses issued.
    public var activationRequest: String {
        "Tandem-Activation-Request: 1\nServer-Id: \(state.serverId)\n"
            + (pair.map { "Server-Id: \($0.peerServerId)\n" } ?? "")
    }

    // MARK: - Time and commits

    /// Time-driven work: standalone, the expiry of leases whose time has come; paired, the
    /// protocol's heartbeats, elections and expiry (with grace for clock offsets).
    public func tick() {
        let now = clock()
        replication.tick(now: now)
        submitPendingAudits()
        serveWaiters()  // seats that expired go to waiters before their waits are judged
        expireWaits(now: now)
    }

    /// When the next lease expires while standalone (a pair expires leases in its tick).
    public var nextExpiry: USec? { (replication as? StandaloneReplication)?.nextExpiry }

    /// Commits what was decided in one transaction, then releases the answers waiting for it.
    /// A failure leaves the state in memory ahead of the disk: the caller must stop.
    public func flush() throws {
        // An answer's callback may ask for a commit while one runs: it is the next one's.
        guard !committing else { return onWork?() ?? () }
        committing = true
        defer { committing = false }
        let denied = deniedDirty ? state.denied : nil
        deniedDirty = false
        let written: [LogEntry]?
        do { written = try replication.commit(now: clock(), denied: denied) } catch {
            deniedDirty = denied != nil
            throw error
        }
        guard let written else { return }
        commitCount += 1
        committedChanges += written.count
        if !written.isEmpty { onCommit?(written) }
    }

    /// Writes the refused-acquisition counters if they changed (on shutdown).
    public func persistCounters() throws {
        if deniedDirty {
            try store.saveDenied(state.denied)
            deniedDirty = false
        }
    }

    // MARK: - Paired operation

    /// The pair's replication while paired.
    public var pair: PairReplication? { replication as? PairReplication }

    /// Starts paired operation with `node` (restored from the store or just formed).
    public func startPair(_ node: PairNode, peerServerId: String) {
        ownIdentity = (state.serverId, state.serverIdUsed)
        // Pairing replaces the state; a command the standalone server decided but did not commit
        // is refused (PairHost commits before it pairs, so this is a guard, not a path).
        abandonUnanswered(TandemError(.pairState, "the server was paired before this change was committed"))
        replication = PairReplication(
            node: node, peerServerId: peerServerId, store: store,
            describeNode: { [unowned self] in describeNode($0) },
            send: { [unowned self] in onSend?($0, $1) },
            onWork: { [unowned self] in onWork?() })
        pair?.setPolicyDigest(settings.policy.digest)
    }

    /// Starts paired operation with the pair stored in the store, if one was formed (after a
    /// restart). Returns its record.
    @discardableResult
    public func restorePair(settings: PairSettings) throws -> PairRecord? {
        guard let record = try store.pairRecord() else { return nil }
        let (base, log) = try store.pairLog(serverId: state.serverId)
        let progress = record.progress
        let node = PairNode(
            index: record.node, baseState: base.state, base: base.seq, baseEpoch: base.epoch,
            log: log, promisedEpoch: progress.promisedEpoch,
            unmerged: progress.unmerged, splitBasePos: progress.splitBase, settings: settings, now: clock())
        startPair(node, peerServerId: record.peerServerId)
        return record
    }

    /// Leaves paired operation, keeping the pair's state as this server's own.
    public func stopPair() {
        guard let pair else { return }
        pair.dissolve()
        var s = pair.state
        s.serverId = ownIdentity.serverId
        s.serverIdUsed = ownIdentity.serverIdUsed || !pair.state.licenses.isEmpty
        replication = standalone(s)
    }

    /// A frame from the peer or the witness.
    public func pairReceive(from: Peer, _ message: PairMessage) {
        pair?.receive(from: from, message, now: clock())
    }

    /// The daemon is stopping (`forGood`: being uninstalled): the pair node stops serving and
    /// says so to its peer, which need not wait for the silence to take over.
    public func pairLeave(forGood: Bool) {
        pair?.leave(forGood: forGood, now: clock())
    }

    /// Sync: the serving node sends the standby a snapshot of the whole state.
    public func pairSync() -> TandemError? {
        guard let pair else { return TandemError(.pairState, "this server is not paired") }
        return pair.sync()
    }
}

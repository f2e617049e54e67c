import TandemCore
import TandemPair
import TandemStore

/// A server in a pair: the pair protocol's node owns the replicated state and log. Commands go
/// to the node; after each commit of what it decided, its frames are sent and the answers it
/// released are given to their tickets. The node says what of its durable part must be stored.
public final class PairReplication: Replication {
    public private(set) var node: PairNode
    public let peerServerId: String
    let store: Store
    /// Names a node for messages ("the primary at 10.0.0.1:7391").
    var describeNode: (NodeIndex) -> String
    /// Sends a pair frame (called after the commit that made its content durable).
    var send: (Peer, PairMessage) -> Void
    let onWork: () -> Void

    private var nextRef = 0
    /// Answers waiting for the pair, and the log position each waits for (durable here too).
    private var tickets: [Int: (ticket: Ticket, seq: UInt64)] = [:]
    /// The leader's appends: sent before its own commit (see `handle`).
    private var earlyOutbox: [(Peer, PairMessage)] = []
    private var outbox: [(Peer, PairMessage)] = []
    private var replies: [(ref: Int, reply: ClientReply)] = []

    init(
        node: PairNode, peerServerId: String, store: Store, describeNode: @escaping (NodeIndex) -> String,
        send: @escaping (Peer, PairMessage) -> Void, onWork: @escaping () -> Void
    ) {
        self.node = node
        self.peerServerId = peerServerId
        self.store = store
        self.describeNode = describeNode
        self.send = send
        self.onWork = onWork
    }

    var state: LicenseState { node.state }

    /// The usage policy this node decides under, told to the peer (see `PairNode.policyMismatch`).
    func setPolicyDigest(_ digest: String) { node.policyDigest = digest }
    /// What the peer said of its own (PeerInfo, every heartbeat's probe).
    public func notePeerPolicy(_ digest: String?) { node.notePeerPolicy(digest) }
    var index: NodeIndex { node.index }
    var stagedCount: Int { Int(node.lastSeq - min(node.lastSeq, store.lastSeq)) }
    /// A pair's batch is what one loop iteration decided and received: it is committed with the
    /// deferred flush, once the iteration's frames are all in (coalesced, and acknowledged once).
    var batchFull: Bool { false }
    var hasWork: Bool {
        !outbox.isEmpty || !earlyOutbox.isEmpty || !replies.isEmpty || node.lastSeq != store.lastSeq
            || !node.unstored.isEmpty
    }

    func perform(_ command: Command, caller: Caller, now: USec) -> Ticket {
        if case .resetServerId = command {
            return Ticket(
                decision: .failure(
                    TandemError(.pairState, "ResetServerId is refused while paired (DisableBackup first)")))
        }
        if command.isAdministrative, node.index == 1 {
            return Ticket(
                decision: .failure(
                    TandemError(.notPrimary, "administrative changes are made on the primary (\(describeNode(0)))")))
        }
        nextRef += 1
        let ref = nextRef
        let (decision, effects) = node.perform(ref: ref, command, caller: caller, now: now)
        let ticket: Ticket
        switch decision {
        case .pending(let outcome):
            ticket = Ticket(decision: .success(outcome))
            tickets[ref] = (ticket, node.lastSeq)
        case .refused(let e):
            ticket = Ticket(decision: .failure(e))
        case .notServing(let leader):
            ticket = Ticket(decision: .failure(notServing("this node is not serving licenses now", leader)))
        }
        handle(effects)
        return ticket
    }

    func countDenied(_ feature: String) { node.noteDenied(feature) }

    /// A frame from the peer or the witness.
    func receive(from: Peer, _ message: PairMessage, now: USec) {
        handle(node.receive(from: from, message, now: now))
    }

    /// Periodic work of the pair protocol (heartbeats, elections, expiry, compaction).
    func tick(now: USec) {
        handle(node.tick(now: now))
        node.compactIfLong()
        if !node.unstored.isEmpty { onWork() }
    }

    /// This node is stopping: it stops serving and tells the peer and the witness (sent with
    /// the next commit, which the daemon makes before it exits).
    func leave(forGood: Bool, now: USec) {
        handle(node.leave(forGood: forGood, now: now))
        for t in takeTicketsInOrder() {
            t.finish(.failure(TandemError(.notServing, "tandemd stopped before the change was acknowledged")))
        }
    }

    /// Sync: the serving node sends the standby a snapshot of the whole state.
    func sync() -> TandemError? {
        guard node.canSync else {
            return TandemError(.notServing, "Sync is done on the serving node (\(describeNode(1 - node.index)))")
        }
        handle(node.sync())
        return nil
    }

    /// Refuses every answer still waiting: the pair is dissolved.
    func dissolve() {
        for t in takeTicketsInOrder() { t.finish(.failure(TandemError(.notServing, "the pair was dissolved"))) }
    }

    /// Every ticket still waiting, in the order submitted (not the dictionary's, which the process's
    /// hash seed sets: the simulation replays a seed only if the answers go out in the same order).
    private func takeTicketsInOrder() -> [Ticket] {
        let waiting = tickets.sorted { $0.key < $1.key }.map(\.value.ticket)
        tickets = [:]
        return waiting
    }

    private func notServing(_ what: String, _ leader: NodeIndex?) -> TandemError {
        TandemError(.notServing, what + (leader.map { "; \(describeNode($0)) is serving" } ?? ""))
    }

    private func handle(_ effects: [NodeEffect]) {
        for e in effects {
            switch e {
            case .send(let peer, let m) where node.isLeading && m.isAppend:
                // The leader's entries go out before its own commit (at the start of the commit),
                // so that both disks work at once: an answer still waits for both (replies are
                // released only after the local commit), and the follower acknowledges only what
                // it committed. Everything else (acks, witness records) says "durable here" and
                // waits for the commit.
                earlyOutbox.append((peer, m))
            case .send(let peer, let m): outbox.append((peer, m))
            case .reply(let ref, let r): replies.append((ref, r))
            }
        }
        if hasWork { onWork() }
    }

    func commit(now: USec, denied: [String: UInt64]?) throws -> [LogEntry]? {
        let early = PairMessage.coalesced(earlyOutbox)
        earlyOutbox = []
        for (peer, m) in early { send(peer, m) }
        // Answers whose change is already on this disk (the peer acknowledged it meanwhile) go
        // out now rather than after this commit: their callers come back sooner and join the
        // next batch.
        let storedSeq = store.lastSeq
        var later: [(ref: Int, reply: ClientReply)] = []
        for (ref, r) in replies {
            if let seq = tickets[ref]?.seq, seq > storedSeq { later.append((ref, r)) } else { answer(ref, r) }
        }
        replies = later
        let written = try store(now: now, denied: denied)
        let sends = PairMessage.coalesced(outbox)
        let answers = replies
        outbox = []
        replies = []
        for (peer, m) in sends { send(peer, m) }
        for (ref, r) in answers { answer(ref, r) }
        return written
    }

    /// Writes what the node has that the store lacks: new entries, or the whole log after a
    /// truncation or a snapshot, with the progress and the log's base when they moved.
    private func store(now: USec, denied: [String: UInt64]?) throws -> [LogEntry]? {
        let unstored = node.unstored
        let progress = PairProgress(
            promisedEpoch: node.promisedEpoch, unmerged: node.unmerged, splitBase: node.splitBasePos)
        let base = LogBase(seq: node.logBase, epoch: node.logBaseEpoch, state: node.baseState)
        var written: [LogEntry]?
        // Entries the node compacted before they were stored are in its base only: the base
        // and the log are then written whole.
        if unstored.contains(.rewritten) || node.logBase > store.lastSeq {
            let compactedFirst = !unstored.contains(.rewritten)
            try store.replace(
                state: node.state, base: base, log: node.log, now: now, progress: progress, denied: denied)
            written = compactedFirst ? node.log : []
        } else if node.lastSeq > store.lastSeq || !unstored.isEmpty || denied != nil {
            let entries = Array(node.entries(from: store.lastSeq + 1, through: node.lastSeq))
            try store.append(
                entries, now: now, progress: unstored.contains(.progress) ? progress : nil, denied: denied,
                compactTo: unstored.contains(.base) ? node.logBase : nil, applied: node.state)
            written = entries
        }
        node.markStored()
        return written
    }

    private func answer(_ ref: Int, _ r: ClientReply) {
        guard let ticket = tickets.removeValue(forKey: ref)?.ticket else { return }
        switch r {
        case .notServing(let leader):
            ticket.finish(.failure(notServing("this node stopped serving before the change was replicated", leader)))
        case .refused(let code, let why):
            ticket.finish(.failure(TandemError(code, why)))
        case .done(let outcome):
            ticket.finish(.success(outcome))
        }
    }
}

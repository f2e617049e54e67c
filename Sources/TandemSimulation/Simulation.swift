import TandemCore
import TandemPair

/// A small deterministic random generator (SplitMix64): the same seed replays exactly.
public struct SimRandom {
    var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : next() % n }
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    public mutating func range(_ lo: UInt64, _ hi: UInt64) -> UInt64 { lo + below(hi - lo + 1) }
}

public struct SimConfig: Sendable {
    public var seed: UInt64
    public var clients = 5
    public var seats: UInt32 = 6
    /// Faults are injected during this time; then everything heals and the pair must converge.
    public var faultPhaseUSec: USec = 60_000_000
    public var convergeWithinUSec: USec = 60_000_000
    public var dropRate = 0.05
    public var duplicateRate = 0.03
    public var minDelayUSec: USec = 200
    public var maxDelayUSec: USec = 40_000
    /// Clock offsets of every host are drawn from ±this; rates drift by up to ±driftPPM.
    public var maxClockOffsetUSec: USec = 200_000
    public var driftPPM: Int64 = 1000
    /// Mean time between faults (crash, witness crash, partition) during the fault phase.
    public var meanFaultIntervalUSec: USec = 4_000_000
    public var settings = PairSettings()
    /// How the pair handles partitions; nil: chosen by the seed (three seeds in five with a
    /// witness, one `takeover`, one `split`).
    public var partition: PartitionMode?
    /// Print every event with both nodes' modes and log positions (debugging a seed).
    public var trace = false
    public init(seed: UInt64) { self.seed = seed }
}

public struct SimResult: Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var failure: String?
    public var events = 0
    public var granted = 0
    public var released = 0
    public var leaderChanges = 0
    public var faults = 0
    public var convergedAfterUSec: USec?
    /// Who served at the end, and the converged log's length.
    public var finalLeader: Int?
    public var finalLogLength = 0
    public var partition: PartitionMode = .witness
    public var passed: Bool { failure == nil }
    public var description: String {
        if let failure { return "seed \(seed): FAILED after \(events) events: \(failure)" }
        return "seed \(seed): ok (\(partition), \(events) events, \(faults) faults, \(leaderChanges) leader changes, \(granted) grants, \(released) releases, converged in \(Double(convergedAfterUSec ?? 0) / 1e6) s)"
    }
}

/// Two nodes, a witness and clients under a seeded scheduler that crashes and restarts nodes
/// and the witness, cuts links both ways and one way, drops, duplicates, delays and reorders
/// messages and skews clocks. Invariants are checked after every event.
public final class Simulation {
    enum Entity: Hashable { case node(Int), witness, client(Int) }

    enum Payload {
        case pair(PairMessage)
        case request(ref: Int, ClientCommand)
        case reply(ref: Int, SimReply)
    }

    enum Event {
        case deliver(from: Entity, to: Entity, Payload)
        case nodeTick(Int)
        case clientTick(Int)
        case clientTimeout(Int, attempt: Int)
        case fault
        case restart(Entity)
        case heal(Entity, Entity)
        case stopFaults
    }

    struct Clock {
        var offset: Int64
        var ppm: Int64
        func local(_ t: USec) -> USec { USec(max(0, Int64(t) + offset + Int64(t) / 1_000_000 * ppm)) }
        /// Global time at which this clock shows `local` (approximate inverse).
        func global(_ local: USec) -> USec {
            let l = Int64(local) - offset
            return USec(max(0, l - l / 1_000_000 * ppm))
        }
    }

    struct Client {
        enum Phase { case idle, acquiring(requestId: String, count: UInt32, ttl: USec, sentLocal: USec), holding, renewing(sentLocal: USec), releasing }
        var phase: Phase = .idle
        var target = 0
        var attempt = 0
        var leaseId: String?
        var count: UInt32 = 0
        var ttl: USec = 0
        /// Client's own deadline for using the seat (local clock).
        var deadlineLocal: USec = 0
        var nextRenewLocal: USec = 0
        var requests = 0
    }

    let cfg: SimConfig
    var rng: SimRandom
    var now: USec = 0
    var queue: [(time: USec, order: UInt64, event: Event)] = []
    var order: UInt64 = 0
    var nodes: [PairNode]
    var witness: PairWitness
    var clocks: [Entity: Clock] = [:]
    var down: Set<Entity> = []
    var cut: Set<[Entity]> = [] // directed links that drop everything
    var clients: [Client]
    var faultsOn = true
    var result: SimResult
    var leaseCounter = 0
    var refs: [Int: (client: Int, command: ClientCommand, sentLocal: USec)] = [:]
    var nextRef = 0

    // Ground truth for the invariants.
    var epochLeader: [UInt64: Int] = [:]
    var held: [String: (count: UInt32, untilGlobal: USec)] = [:]
    var ackedGrants: Set<String> = []
    var ackedReleases: Set<String> = []
    var logIndex: [LogIndex] = [LogIndex(), LogIndex()]
    var compacting = false
    var checkedGrants = 0
    var checkedReleases = 0
    var lastCounts: (UInt64, UInt64) = (0, 0)
    /// Per node, what its state looked like when its seat accounting was last checked.
    var accountingChecked: [AccountingMark?] = [nil, nil]
    /// What the accounting depends on, cheaply: renewals, the most frequent change, move none of it.
    struct AccountingMark: Equatable {
        var leases, reservations: Int
        var inUse, available: UInt32
    }
    /// Without a witness: whether the pair was back in step when a node said a lease was unknown.
    var inStepAtReply: [Int: Bool] = [:]
    var withWitness: Bool { cfg.settings.partition == .witness }

    /// Every grant and release a node's log ever held, by sequence number. Entries are indexed
    /// after every event; a node compacts only in its tick, after its index was updated, so
    /// compacted entries were indexed. A truncation or a snapshot (the node's `truncations`
    /// count) drops what was indexed past the base the node had at the last update.
    struct LogIndex {
        var lastSeq: UInt64 = 0
        var base: UInt64 = 0
        var truncations = 0
        var granted: [String: UInt64] = [:]
        var ended: [String: UInt64] = [:]
        var rebuilt = false
        /// Without a witness, entries cut from a log are kept as unmerged and merged later
        /// (possibly as nothing, when their effect is already there): the index remembers every
        /// grant and release a log or an unmerged list ever held.
        var forget = true
        var count: UInt64 { lastSeq }
        /// Returns true when a snapshot moved the node's base past what was indexed: the
        /// history up to it is then the sender's (`absorb`).
        @discardableResult
        mutating func update(_ node: PairNode) -> Bool {
            var jumped = false
            if node.truncations != truncations {
                truncations = node.truncations
                if forget {
                    granted = granted.filter { $0.value <= base }
                    ended = ended.filter { $0.value <= base }
                }
                lastSeq = min(lastSeq, base)
                rebuilt = true
                jumped = node.logBase > base
            }
            for e in node.entries(from: max(lastSeq, node.logBase) + 1, through: node.lastSeq) {
                switch e.change {
                case .leaseGranted(let l): granted[l.id] = e.seq
                case .leaseReleased(let id), .leaseExpired(let id): ended[id] = e.seq
                default: break
                }
            }
            for e in node.unmerged {
                if case .leaseGranted(let l) = e.change, granted[l.id] == nil { granted[l.id] = e.seq }
                if case .leaseReleased(let id) = e.change, ended[id] == nil { ended[id] = e.seq }
            }
            lastSeq = node.lastSeq
            base = node.logBase
            return jumped
        }

        /// Takes over the other node's history through `seq` (the snapshot this node installed).
        mutating func absorb(_ other: LogIndex, through seq: UInt64) {
            for (id, at) in other.granted where at <= seq && granted[id] == nil { granted[id] = at }
            for (id, at) in other.ended where at <= seq && ended[id] == nil { ended[id] = at }
        }
    }

    func updateIndex(_ i: Int) {
        if logIndex[i].update(nodes[i]) { logIndex[i].absorb(logIndex[1 - i], through: nodes[i].logBase) }
    }

    public init(_ cfg: SimConfig) {
        rng = SimRandom(seed: cfg.seed)
        var initial = LicenseState()
        initial.apply(.serverIdSet(id: "TS-SIM"))
        initial.apply(.licenseActivated(License(id: "SIM", product: "Sim", feature: "cad", seats: cfg.seats, notAfterUSec: 0,
                                                issuedTo: ["TS-SIM"], keyId: "k", document: "")))
        // One seed in four sets seats aside for the first client, so that reservations, and the
        // seat accounting's invariants about them, are part of the run.
        if cfg.seed % 4 == 2 {
            initial.apply(.reservationAdded(Reservation(id: "RSV", feature: "cad", holder: "client-0", count: 2)))
        }
        // Odd seeds start from a pair formed after some standalone history (a log base, as a
        // daemon forms it); even seeds from an empty log.
        let base: UInt64 = cfg.seed % 2 == 1 ? 7 : 0
        let baseEpoch: UInt64 = cfg.seed % 2 == 1 ? 1 : 0
        // Two seeds in three compact their logs (small, so that it happens often) and may fall
        // out of sync and be synced with snapshots in small parts.
        compacting = cfg.seed % 3 != 0
        var cfg = cfg
        cfg.settings.partition = cfg.partition ?? [PartitionMode.witness, .witness, .witness, .takeover,
                                                   .split(primaryPercent: UInt32(30 + cfg.seed % 41))][Int(cfg.seed / 7 % 5)]
        self.cfg = cfg
        var settings = cfg.settings
        if compacting {
            settings.compactKeep = Int(cfg.seed / 3 % 8) + 1
            settings.compactRetain = cfg.seed / 24 % 30 + 3
            settings.snapshotChunk = Int(cfg.seed / 5 % 4) + 1
        }
        nodes = (0..<2).map { PairNode(index: $0, baseState: initial, base: base, baseEpoch: baseEpoch, log: [],
                                       promisedEpoch: baseEpoch, settings: settings, now: 0) }
        witness = PairWitness(leaseUSec: cfg.settings.witnessLeaseUSec, now: 0)
        clients = Array(repeating: Client(), count: cfg.clients)
        result = SimResult(seed: cfg.seed)
        result.partition = cfg.settings.partition
        if cfg.settings.partition != .witness { logIndex = [LogIndex(forget: false), LogIndex(forget: false)] }
        let entities: [Entity] = [.node(0), .node(1), .witness] + (0..<cfg.clients).map { .client($0) }
        for e in entities {
            let off = Int64(rng.below(2 * cfg.maxClockOffsetUSec + 1)) - Int64(cfg.maxClockOffsetUSec)
            let ppm = Int64(rng.below(UInt64(2 * cfg.driftPPM + 1))) - cfg.driftPPM
            clocks[e] = Clock(offset: off + Int64(cfg.maxClockOffsetUSec) * 2, ppm: ppm) // keep local times positive
        }
        for i in 0..<2 {
            nodes[i].restart(now: local(.node(i)))
            schedule(rng.range(1, 100_000), .nodeTick(i))
        }
        witness.restart(now: local(.witness))
        for j in 0..<cfg.clients { schedule(rng.range(1_000_000, 3_000_000), .clientTick(j)) }
        schedule(rng.range(cfg.meanFaultIntervalUSec / 2, cfg.meanFaultIntervalUSec * 3 / 2), .fault)
        schedule(cfg.faultPhaseUSec, .stopFaults)
    }

    func local(_ e: Entity) -> USec { clocks[e]!.local(now) }

    func schedule(_ delay: USec, _ event: Event) {
        order += 1
        let item = (time: now + delay, order: order, event: event)
        // Binary insertion keeps the queue sorted by (time, order): deterministic.
        var lo = 0, hi = queue.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if (queue[mid].time, queue[mid].order) < (item.time, item.order) { lo = mid + 1 } else { hi = mid }
        }
        queue.insert(item, at: lo)
    }

    func send(from: Entity, to: Entity, _ payload: Payload) {
        if down.contains(from) || cut.contains([from, to]) { return }
        if faultsOn && rng.chance(cfg.dropRate) { return }
        let copies = faultsOn && rng.chance(cfg.duplicateRate) ? 2 : 1
        for _ in 0..<copies {
            let delay = rng.range(cfg.minDelayUSec, faultsOn ? cfg.maxDelayUSec : cfg.maxDelayUSec / 4)
            schedule(delay, .deliver(from: from, to: to, payload))
        }
    }

    func apply(_ effects: [NodeEffect], from i: Int) {
        // Frames leave the way tandemd sends them: coalesced (PairMessage.coalesced).
        var sends: [(Peer, PairMessage)] = []
        var rest: [NodeEffect] = []
        for eff in effects {
            if case .send(let p, let m) = eff { sends.append((p, m)) } else { rest.append(eff) }
        }
        for eff in PairMessage.coalesced(sends).map({ NodeEffect.send($0.0, $0.1) }) + rest {
            switch eff {
            case .send(.node(let j), let m): send(from: .node(i), to: .node(j), .pair(m))
            case .send(.witness, let m): send(from: .node(i), to: .witness, .pair(m))
            case .reply(let ref, let anyReply):
                let reply = anyReply.normalized
                noteReply(ref: ref, reply)
                if !withWitness, case .refused(.leaseNotFound, _) = reply { inStepAtReply[ref] = pairInStep() }
                if let r = refs[ref] { send(from: .node(i), to: .client(r.client), .reply(ref: ref, reply)) }
            }
        }
    }

    /// Ground truth: a reply leaving a node is what the pair acknowledged.
    func noteReply(ref: Int, _ reply: SimReply) {
        guard let r = refs[ref] else { return }
        let margin = 0.8
        switch (reply, r.command) {
        case (.granted(let id, _), .acquire(_, let count, _, let ttl, _)):
            ackedGrants.insert(id)
            let until = clocks[.client(r.client)]!.global(r.sentLocal + USec(Double(ttl) * margin))
            if var h = held[id] {
                h.untilGlobal = max(h.untilGlobal, until)
                held[id] = h
            } else if !ackedReleases.contains(id) {
                held[id] = (count, until)
            }
            result.granted += 1
        case (.renewed(let id, _), .renew):
            if var h = held[id] {
                let until = clocks[.client(r.client)]!.global(r.sentLocal + USec(Double(clients[r.client].ttl) * margin))
                h.untilGlobal = max(h.untilGlobal, until)
                held[id] = h
            }
        case (.released(let id), _):
            ackedReleases.insert(id)
            held[id] = nil
            result.released += 1
        default:
            break
        }
    }

    // MARK: - Clients

    func clientSend(_ j: Int, _ command: ClientCommand) {
        nextRef += 1
        let ref = nextRef
        refs[ref] = (j, command, local(.client(j)))
        // A client that asks to release a lease has stopped using its seats.
        if case .release(let id) = command { held[id] = nil }
        clients[j].attempt += 1
        let attempt = clients[j].attempt
        send(from: .client(j), to: .node(clients[j].target), .request(ref: ref, command))
        schedule(1_500_000, .clientTimeout(j, attempt: attempt))
    }

    func clientTick(_ j: Int) {
        let t = local(.client(j))
        var c = clients[j]
        switch c.phase {
        case .idle:
            if faultsOn && rng.chance(0.6) {
                c.requests += 1
                let count = UInt32(rng.range(1, 2))
                let ttl = rng.range(6_000_000, 12_000_000)
                c.count = count
                c.ttl = ttl
                c.phase = .acquiring(requestId: "c\(j)-r\(c.requests)", count: count, ttl: ttl, sentLocal: t)
                clients[j] = c
                clientSend(j, .acquire(feature: "cad", count: count, client: "client-\(j)", ttlUSec: ttl, requestId: "c\(j)-r\(c.requests)"))
            }
        case .holding:
            if t >= c.deadlineLocal {
                // Out of time: stop using the seat.
                if let id = c.leaseId { held[id] = nil }
                c.phase = .idle
                c.leaseId = nil
                clients[j] = c
            } else if !faultsOn || rng.chance(0.15) {
                c.phase = .releasing
                clients[j] = c
                if let id = c.leaseId {
                    held[id] = nil // the client stops using the seat as it asks to release it
                    clientSend(j, .release(leaseId: id))
                }
            } else if t >= c.nextRenewLocal {
                c.phase = .renewing(sentLocal: t)
                clients[j] = c
                if let id = c.leaseId { clientSend(j, .renew(leaseId: id)) }
            }
        default:
            break
        }
        schedule(rng.range(300_000, 900_000), .clientTick(j))
    }

    func clientRetry(_ j: Int, switchNode: Bool) {
        if switchNode { clients[j].target = 1 - clients[j].target }
        let c = clients[j]
        switch c.phase {
        case .acquiring(let requestId, let count, let ttl, _):
            clients[j].phase = .acquiring(requestId: requestId, count: count, ttl: ttl, sentLocal: local(.client(j)))
            clientSend(j, .acquire(feature: "cad", count: count, client: "client-\(j)", ttlUSec: ttl, requestId: requestId))
        case .renewing:
            if local(.client(j)) >= c.deadlineLocal {
                if let id = c.leaseId { held[id] = nil }
                clients[j].phase = .idle
                clients[j].leaseId = nil
            } else if let id = c.leaseId {
                clients[j].phase = .renewing(sentLocal: local(.client(j)))
                clientSend(j, .renew(leaseId: id))
            }
        case .releasing:
            if let id = c.leaseId { clientSend(j, .release(leaseId: id)) }
        default:
            break
        }
    }

    func clientReceive(_ j: Int, ref: Int, _ reply: SimReply) -> String? {
        guard let r = refs[ref] else { return nil }
        var c = clients[j]
        let margin = 0.8
        switch (c.phase, reply) {
        case (.acquiring(let requestId, _, let ttl, _), .granted(let id, _)):
            guard case .acquire(_, _, _, _, let rid) = r.command, rid == requestId else { return nil }
            c.phase = .holding
            c.leaseId = id
            c.deadlineLocal = r.sentLocal + USec(Double(ttl) * margin)
            c.nextRenewLocal = r.sentLocal + ttl / 3
            c.attempt += 1
        case (.acquiring, .refused(.insufficientSeats, _)):
            c.phase = .idle
            c.attempt += 1
        case (.renewing, .renewed(let id, _)):
            guard id == c.leaseId else { return nil }
            c.phase = .holding
            c.deadlineLocal = max(c.deadlineLocal, r.sentLocal + USec(Double(c.ttl) * margin))
            c.nextRenewLocal = r.sentLocal + c.ttl / 3
            c.attempt += 1
        case (.renewing, .refused(.leaseNotFound, let why)):
            // The pair says our lease is gone while we still hold it by our own reckoning:
            // an acknowledged grant was lost (or expired early). Without a witness, a node cut
            // off from the one that granted it does not know it until the pair is back in step.
            if case .renew(let id) = r.command, id == c.leaseId, local(.client(j)) < c.deadlineLocal,
               withWitness || inStepAtReply[ref] == true {
                return "client \(j): lease \(id) unknown to the serving node before its deadline (\(why))"
            }
            if let id = c.leaseId { held[id] = nil }
            c.phase = .idle
            c.leaseId = nil
            c.attempt += 1
        case (.releasing, .released), (.releasing, .refused(.leaseNotFound, _)):
            c.phase = .idle
            c.leaseId = nil
            c.attempt += 1
        case (_, .notServing(let leader)):
            clients[j] = c
            if case .idle = c.phase { return nil }
            if case .holding = c.phase { return nil }
            clients[j].target = leader ?? (1 - c.target)
            clientRetry(j, switchNode: false)
            return nil
        default:
            return nil
        }
        clients[j] = c
        return nil
    }

    // MARK: - Faults

    func injectFault() {
        result.faults += 1
        switch rng.below(6) {
        case 0, 1:
            let i = Int(rng.below(2))
            if !down.contains(.node(i)) {
                down.insert(.node(i))
                schedule(rng.range(1_000_000, 12_000_000), .restart(.node(i)))
            }
        case 2:
            if !down.contains(.witness) {
                down.insert(.witness)
                schedule(rng.range(1_000_000, 8_000_000), .restart(.witness))
            }
        case 3:
            // Cut both ways between the nodes.
            cut.insert([.node(0), .node(1)])
            cut.insert([.node(1), .node(0)])
            schedule(rng.range(2_000_000, 10_000_000), .heal(.node(0), .node(1)))
        case 4:
            // One-way cut, between the nodes or between a node and the witness.
            let a: Entity = .node(Int(rng.below(2)))
            let b: Entity = rng.chance(0.5) ? .witness : (a == .node(0) ? .node(1) : .node(0))
            if rng.chance(0.5) { cut.insert([a, b]) } else { cut.insert([b, a]) }
            schedule(rng.range(2_000_000, 10_000_000), .heal(a, b))
        default:
            // Isolate a node from everyone.
            let a: Entity = .node(Int(rng.below(2)))
            for b in [Entity.node(0), .node(1), .witness] where b != a {
                cut.insert([a, b])
                cut.insert([b, a])
            }
            schedule(rng.range(2_000_000, 10_000_000), .heal(a, .witness))
            schedule(rng.range(2_000_000, 10_000_000), .heal(a, a == .node(0) ? .node(1) : .node(0)))
        }
        if faultsOn {
            schedule(rng.range(cfg.meanFaultIntervalUSec / 2, cfg.meanFaultIntervalUSec * 3 / 2), .fault)
        }
    }

    // MARK: - Invariants

    func checkInvariants() -> String? {
        // One serving node per epoch; at most one node able to grant at any moment.
        var serving: [Int] = []
        for i in 0..<2 where !down.contains(.node(i)) {
            if let e = nodes[i].servingEpoch {
                if let other = epochLeader[e], other != i { return "epoch \(e) served by nodes \(other) and \(i)" }
                if epochLeader[e] == nil {
                    epochLeader[e] = i
                    result.leaderChanges += 1
                }
            }
            if nodes[i].isServing(now: local(.node(i))) { serving.append(i) }
            // Without compaction both logs reach back to the common base, so the follower can
            // always be caught up from the log: never pair-not-synced.
            if !compacting, nodes[i].pairStatus(now: local(.node(i))) == .pairNotSynced { return "node \(i) reports pair-not-synced" }
        }
        if serving.count > 1, withWitness { return "both nodes serving at once (epochs \(nodes[0].servingEpoch ?? 0), \(nodes[1].servingEpoch ?? 0))" }
        // Seats held by clients never exceed seats owned.
        var inUse: UInt64 = 0
        for h in held.values where h.untilGlobal > now { inUse += UInt64(h.count) }
        if inUse > UInt64(cfg.seats), cfg.settings.partition != .takeover {
            let holding = held.filter { $0.value.untilGlobal > now }.keys.sorted()
            return "over-allocation: clients hold \(inUse) seats of \(cfg.seats): \(holding); node leases: \(nodes.map { $0.state.leases.keys.sorted() })"
        }
        // Each node's own accounting keeps the core's invariants (a takeover heal may leave
        // more in use than there are seats, by design).
        // Checked when a node's seats moved (licenses do not run out here, so time alone
        // changes no account): a check on every event would triple the simulation's time.
        for i in 0..<2 where !down.contains(.node(i)) {
            let n = nodes[i]
            let mark = AccountingMark(leases: n.state.leases.count, reservations: n.state.reservations.count,
                                      inUse: n.state.totalInUse, available: n.state.available("cad", for: nil, at: 0))
            guard mark != accountingChecked[i] else { continue }
            accountingChecked[i] = mark
            let faults = n.state.seatAccountingFaults(at: local(.node(i)), overcommitted: !withWitness)
            if let f = faults.first { return "node \(i): seat accounting: \(f)" }
        }
        // No acknowledged change lost: every answered grant and release is in some node's log.
        for i in 0..<2 { updateIndex(i) }
        // Only the entries added since the last check can be new; a truncation rebuilds the index.
        if ackedGrants.count != checkedGrants || logIndex[0].count < lastCounts.0 || logIndex[1].count < lastCounts.1 || logIndex[0].rebuilt || logIndex[1].rebuilt {
            let missing = ackedGrants.filter { logIndex[0].granted[$0] == nil && logIndex[1].granted[$0] == nil }
            if let id = missing.sorted().first { return "acknowledged grant \(id) is in no node's log" }
            let missingEnd = ackedReleases.filter { logIndex[0].ended[$0] == nil && logIndex[1].ended[$0] == nil }
            if let id = missingEnd.sorted().first { return "acknowledged release \(id) is in no node's log" }
            checkedGrants = ackedGrants.count
            logIndex[0].rebuilt = false
            logIndex[1].rebuilt = false
        } else if ackedReleases.count != checkedReleases {
            let missingEnd = ackedReleases.filter { logIndex[0].ended[$0] == nil && logIndex[1].ended[$0] == nil }
            if let id = missingEnd.sorted().first { return "acknowledged release \(id) is in no node's log" }
        }
        checkedReleases = ackedReleases.count
        lastCounts = (logIndex[0].count, logIndex[1].count)
        return nil
    }

    /// Both nodes up, linked, paired-and-available at the same log end, nothing left to merge.
    func pairInStep() -> Bool {
        guard !down.contains(.node(0)), !down.contains(.node(1)), !cut.contains([.node(0), .node(1)]), !cut.contains([.node(1), .node(0)]) else { return false }
        let a = nodes[0], b = nodes[1]
        return a.unmerged.isEmpty && b.unmerged.isEmpty && a.lastSeq == b.lastSeq && a.lastEpoch == b.lastEpoch
            && a.pairStatus(now: local(.node(0))) == .pairedAndAvailable && b.pairStatus(now: local(.node(1))) == .pairedAndAvailable
    }

    func converged() -> Bool {
        guard down.isEmpty, cut.isEmpty else { return false }
        let a = nodes[0], b = nodes[1]
        guard a.unmerged.isEmpty, b.unmerged.isEmpty else { return false }
        guard a.lastSeq == b.lastSeq, a.lastEpoch == b.lastEpoch, a.state.licenses == b.state.licenses,
              a.state.leases == b.state.leases, a.state.reservations == b.state.reservations, a.state.epoch == b.state.epoch else { return false }
        return a.pairStatus(now: local(.node(0))) == .pairedAndAvailable
            && b.pairStatus(now: local(.node(1))) == .pairedAndAvailable
            && (a.isServing(now: local(.node(0))) || b.isServing(now: local(.node(1))))
    }

    // MARK: - Run

    public func run() -> SimResult {
        var stopAt: USec?
        while !queue.isEmpty {
            let item = queue.removeFirst()
            now = item.time
            result.events += 1
            if cfg.trace {
                let n = nodes.map { "\($0.mode) seq \($0.logBase)..\($0.lastSeq)@\($0.lastEpoch) p\($0.promisedEpoch) tr\($0.truncations) L\($0.state.leases.keys.sorted().map { $0.dropFirst(6) }) U\($0.unmerged.count)" }
                var ev = "\(item.event)"
                if ev.count > 600 { ev = String(ev.prefix(600)) + "..." }
                print("t=\(now) \(n[0]) | \(n[1]) :: \(ev)")
            }
            switch item.event {
            case .deliver(let from, let to, let payload):
                if down.contains(to) || cut.contains([from, to]) { break }
                switch (to, payload) {
                case (.node(let i), .pair(let m)):
                    let src: Peer = from == .witness ? .witness : .node(1 - i)
                    apply(nodes[i].receive(from: src, m, now: local(.node(i))), from: i)
                case (.node(let i), .request(let ref, let cmd)):
                    leaseCounter += 1
                    apply(nodes[i].request(ref: ref, cmd, now: local(.node(i)), newLeaseId: "lease-\(leaseCounter)"), from: i)
                case (.witness, .pair(let m)):
                    guard case .node(let i) = from else { break }
                    for (n, reply) in witness.receive(from: i, m, now: local(.witness)) {
                        send(from: .witness, to: .node(n), .pair(reply))
                    }
                case (.client(let j), .reply(let ref, let reply)):
                    if let failure = clientReceive(j, ref: ref, reply) {
                        result.failure = failure
                        return result
                    }
                default:
                    break
                }
            case .nodeTick(let i):
                if !down.contains(.node(i)) {
                    apply(nodes[i].tick(now: local(.node(i))), from: i)
                    if compacting {
                        // Compaction after the index saw every entry; an operator answers
                        // pair-not-synced with Sync now and then.
                        updateIndex(i)
                        nodes[i].compactIfLong()
                        if nodes[i].pairStatus(now: local(.node(i))) == .pairNotSynced, rng.chance(0.3) {
                            apply(nodes[i].sync(), from: i)
                        }
                    }
                }
                schedule(rng.range(80_000, 120_000), .nodeTick(i))
            case .clientTick(let j):
                clientTick(j)
            case .clientTimeout(let j, let attempt):
                if clients[j].attempt == attempt { clientRetry(j, switchNode: true) }
            case .fault:
                if faultsOn { injectFault() }
            case .restart(let e):
                down.remove(e)
                switch e {
                case .node(let i): nodes[i].restart(now: local(e))
                case .witness: witness.restart(now: local(e))
                default: break
                }
            case .heal(let a, let b):
                cut.remove([a, b])
                cut.remove([b, a])
            case .stopFaults:
                faultsOn = false
                cut.removeAll()
                for e in down { schedule(rng.range(100_000, 1_000_000), .restart(e)) }
                stopAt = now
            }
            if let failure = checkInvariants() {
                result.failure = failure
                return result
            }
            if let s = stopAt {
                let quiet = clients.allSatisfy { if case .idle = $0.phase { return true } else { return false } }
                if quiet && converged() {
                    result.convergedAfterUSec = now - s
                    result.finalLeader = nodes[0].isServing(now: local(.node(0))) ? 0 : 1
                    result.finalLogLength = nodes[0].log.count
                    // Final check: the converged log holds every answered change.
                    for id in ackedGrants.sorted() where logIndex[0].granted[id] == nil && logIndex[1].granted[id] == nil {
                        result.failure = "grant \(id) missing after convergence"; return result
                    }
                    for id in ackedReleases.sorted() where logIndex[0].ended[id] == nil && logIndex[1].ended[id] == nil {
                        result.failure = "release \(id) missing after convergence"; return result
                    }
                    return result
                }
                if now > s + cfg.convergeWithinUSec {
                    result.failure = "no convergence within \(cfg.convergeWithinUSec / 1_000_000) s after the faults stopped: "
                        + "node0 \(nodes[0].mode) seq \(nodes[0].lastSeq) \(nodes[0].pairStatus(now: local(.node(0))).rawValue), "
                        + "node1 \(nodes[1].mode) seq \(nodes[1].lastSeq) \(nodes[1].pairStatus(now: local(.node(1))).rawValue), "
                        + "witness voted \(witness.votedEpoch), clients \(clients.map { "\($0.phase)" })"
                    return result
                }
            }
        }
        result.failure = "event queue ran dry"
        return result
    }
}

/// Runs seeds `from..<to`; returns the results (failures first).
public func runSeeds(_ seeds: Range<UInt64>, configure: (inout SimConfig) -> Void = { _ in }) -> [SimResult] {
    seeds.map { seed in
        var cfg = SimConfig(seed: seed)
        configure(&cfg)
        return Simulation(cfg).run()
    }
}

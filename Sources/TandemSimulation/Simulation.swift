import Foundation
import TandemCore
import TandemPair

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
    /// Drive whole engines (`Engine` over a SQLite store, commits in batches, a crash losing what
    /// was not committed, a restart restoring the pair from the store) instead of bare nodes.
    public var engine = false
    public init(seed: UInt64) { self.seed = seed }
}

public struct SimResult: Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var failure: String?
    public var events = 0
    public var granted = 0
    public var released = 0
    /// Engine runs: acquisitions that waited in a node's queue, and grants that ended a wait.
    public var queued = 0
    public var grantedAfterWaiting = 0
    public var leaderChanges = 0
    public var faults = 0
    /// Of the faults, graceful stops (the node told its peer as it went).
    public var gracefulStops = 0
    public var convergedAfterUSec: USec?
    /// Who served at the end, and the converged log's length.
    public var finalLeader: Int?
    public var finalLogLength = 0
    public var partition: PartitionMode = .witness
    public var passed: Bool { failure == nil }
    public var description: String {
        if let failure { return "seed \(seed): FAILED after \(events) events: \(failure)" }
        return
            "seed \(seed): ok (\(partition), \(events) events, \(faults) faults (\(gracefulStops) stops), "
            + "\(leaderChanges) leader "
            + "changes, \(granted) grants (\(grantedAfterWaiting) after waiting in \(queued) waits), "
            + "\(released) releases, "
            + "converged in "
            + "\(Double(convergedAfterUSec ?? 0) / 1e6) s)"
    }
}

/// Two nodes, a witness and clients under a seeded scheduler that crashes and restarts nodes
/// and the witness, cuts links both ways and one way, drops, duplicates, delays and reorders
/// messages and skews clocks. Invariants are checked after every event.
public final class Simulation {
    enum Entity: Hashable, Comparable { case node(Int), witness, client(Int) }

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
        enum Phase {
            case idle
            case acquiring(requestId: String, count: UInt32, ttl: USec, wait: USec, sentLocal: USec)
            case holding
            case renewing(sentLocal: USec)
            case releasing
        }
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
    var rng: SplitMix64
    var now: USec = 0
    var queue: [(time: USec, order: UInt64, event: Event)] = []
    var order: UInt64 = 0
    /// The nodes as pure state machines, or (`SimConfig.engine`) as engines over stores.
    var pure: [PairNode]
    var engines: [EngineNode]?
    var storeDir: String?
    /// The nodes' protocol state (read by the invariants).
    var nodes: [PairNode] { engines.map { $0.map(\.node) } ?? pure }
    /// An engine could not start or commit: the run fails with it.
    var engineFailure: String?
    var witness: PairWitness
    var clocks: [Entity: Clock] = [:]
    var down: Set<Entity> = []
    var cut: Set<[Entity]> = []  // directed links that drop everything
    var clients: [Client]
    var faultsOn = true
    var result: SimResult
    var leaseCounter = 0
    var refs: [Int: (client: Int, command: ClientCommand, sentLocal: USec)] = [:]
    var nextRef = 0

    // Ground truth for the invariants.
    var epochLeader: [UInt64: Int] = [:]
    var held: [String: (count: UInt32, untilGlobal: USec)] = [:]
    /// The lease each request was granted (a second, different one while the first lives is a
    /// grant given twice).
    var grantsByRequest: [String: String] = [:]
    /// Requests that joined a node's queue (engine runs).
    var waited: Set<Int> = []
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

    func updateIndex(_ i: Int) {
        if logIndex[i].update(nodes[i]) { logIndex[i].absorb(logIndex[1 - i], through: nodes[i].logBase) }
    }

    public init(_ cfg: SimConfig) {
        rng = SplitMix64(seed: cfg.seed)
        var initial = LicenseState()
        initial.apply(.serverIdSet(id: "TS-SIM"))
        initial.apply(
            .licenseActivated(
                License(
                    id: "SIM", product: "Sim", feature: "cad", seats: cfg.seats, notAfterUSec: 0,
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
        cfg.settings.partition =
            cfg.partition
            ?? [
                PartitionMode.witness, .witness, .witness, .takeover,
                .split(primaryPercent: UInt32(30 + cfg.seed % 41))
            ][Int(cfg.seed / 7 % 5)]
        self.cfg = cfg
        var settings = cfg.settings
        if compacting {
            settings.compactKeep = Int(cfg.seed / 3 % 8) + 1
            settings.compactRetain = cfg.seed / 24 % 30 + 3
            settings.snapshotChunk = Int(cfg.seed / 5 % 4) + 1
        }
        pure = (0..<2).map {
            PairNode(
                index: $0, baseState: initial, base: base, baseEpoch: baseEpoch, log: [],
                promisedEpoch: baseEpoch, settings: settings, now: 0)
        }
        witness = PairWitness(leaseUSec: cfg.settings.witnessLeaseUSec, now: 0)
        clients = Array(repeating: Client(), count: cfg.clients)
        result = SimResult(seed: cfg.seed)
        result.partition = cfg.settings.partition
        if cfg.settings.partition != .witness { logIndex = [LogIndex(forget: false), LogIndex(forget: false)] }
        let entities: [Entity] = [.node(0), .node(1), .witness] + (0..<cfg.clients).map { .client($0) }
        for e in entities {
            let off = Int64(rng.below(2 * cfg.maxClockOffsetUSec + 1)) - Int64(cfg.maxClockOffsetUSec)
            let ppm = Int64(rng.below(UInt64(2 * cfg.driftPPM + 1))) - cfg.driftPPM
            clocks[e] = Clock(offset: off + Int64(cfg.maxClockOffsetUSec) * 2, ppm: ppm)  // keep local times positive
        }
        if cfg.engine {
            do {
                let dir = try Self.makeStoreDir()
                storeDir = dir
                engines = try (0..<2).map { i in
                    try EngineNode(
                        index: i, dir: dir, initial: initial, base: base, baseEpoch: baseEpoch, settings: settings,
                        clock: { [unowned self] in local(.node(i)) })
                }
            } catch { engineFailure = "cannot start the engines: \(error)" }
        }
        for i in 0..<2 {
            if engines == nil { pure[i].restart(now: local(.node(i))) }
            schedule(rng.range(1, 100_000), .nodeTick(i))
        }
        witness.restart(now: local(.witness))
        for j in 0..<cfg.clients { schedule(rng.range(1_000_000, 3_000_000), .clientTick(j)) }
        schedule(rng.range(cfg.meanFaultIntervalUSec / 2, cfg.meanFaultIntervalUSec * 3 / 2), .fault)
        schedule(cfg.faultPhaseUSec, .stopFaults)
    }

    func local(_ e: Entity) -> USec { clocks[e]!.local(now) }

    deinit {
        if let storeDir { try? FileManager.default.removeItem(atPath: storeDir) }
    }

    /// Engine mode: the stores live in memory-backed storage when there is some (their
    /// durability is the simulation's crash model, not the disk's).
    static func makeStoreDir() throws -> String {
        let parent = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        var template = Array((parent + "/tandem-sim-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw EngineNodeError("mkdtemp in \(parent) failed") }
        return String(cString: made)
    }

    /// Engine mode: after an event, the engine commits (most of the time: now and then the
    /// changes wait for the next event's commit, as a batch does in tandemd, and a crash loses
    /// them), and what it released goes out.
    func settle(_ i: Int) {
        guard let en = engines?[i], let engine = en.engine else { return }
        if rng.chance(0.8) {
            do { try engine.flush() } catch { engineFailure = "node \(i): commit failed: \(error)" }
        }
        let out = en.effects
        en.effects = []
        apply(out, from: i)
    }

    /// A node crashes (engine mode: its engine goes, with whatever it had not committed).
    func crash(_ i: Int) {
        down.insert(.node(i))
        engines?[i].crash()
    }

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
        case (.granted(let id, _), .acquire(_, let count, _, let ttl, _, _)):
            ackedGrants.insert(id)
            let until = clocks[.client(r.client)]!.global(r.sentLocal + USec(Double(ttl) * margin))
            if var h = held[id] {
                h.untilGlobal = max(h.untilGlobal, until)
                held[id] = h
            } else if !ackedReleases.contains(id) {
                held[id] = (count, until)
            }
            result.granted += 1
            if waited.contains(ref) { result.grantedAfterWaiting += 1 }
        case (.renewed(let id, _), .renew):
            if var h = held[id] {
                let until = clocks[.client(r.client)]!.global(
                    r.sentLocal + USec(Double(clients[r.client].ttl) * margin))
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

    // MARK: - Run

    public func run() -> SimResult {
        var stopAt: USec?
        while !queue.isEmpty {
            let item = queue.removeFirst()
            now = item.time
            result.events += 1
            if cfg.trace {
                let n = nodes.map {
                    "\($0.mode) seq \($0.logBase)..\($0.lastSeq)@\($0.lastEpoch) p\($0.promisedEpoch) "
                        + "tr\($0.truncations) L\($0.state.leases.keys.sorted().map { $0.dropFirst(6) }) "
                        + "U\($0.unmerged.count)"
                }
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
                    if let en = engines?[i] {
                        en.engine?.pairReceive(from: src, m)
                        settle(i)
                    } else {
                        apply(pure[i].receive(from: src, m, now: local(.node(i))), from: i)
                    }
                case (.node(let i), .request(let ref, let cmd)):
                    leaseCounter += 1
                    if let en = engines?[i] {
                        en.request(ref: ref, cmd, newLeaseId: "lease-\(leaseCounter)")
                        if case .acquire(_, _, _, _, let rid, let wait) = cmd, wait > 0,
                            en.engine?.waiting.contains(where: { $0.request.requestId == rid }) == true
                        {
                            result.queued += 1
                            waited.insert(ref)
                        }
                        settle(i)
                    } else {
                        apply(
                            pure[i].request(ref: ref, cmd, now: local(.node(i)), newLeaseId: "lease-\(leaseCounter)"),
                            from: i)
                    }
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
                    if let en = engines?[i], let engine = en.engine {
                        // The engine's tick compacts too: the index sees every entry first (what
                        // the tick appends is not acknowledged yet, so it cannot be compacted).
                        updateIndex(i)
                        engine.tick()
                        if compacting, en.node.pairStatus(now: local(.node(i))) == .pairNotSynced, rng.chance(0.3) {
                            _ = engine.pairSync()
                        }
                        settle(i)
                    } else {
                        apply(pure[i].tick(now: local(.node(i))), from: i)
                        if compacting {
                            // Compaction after the index saw every entry; an operator answers
                            // pair-not-synced with Sync now and then.
                            updateIndex(i)
                            pure[i].compactIfLong()
                            if pure[i].pairStatus(now: local(.node(i))) == .pairNotSynced, rng.chance(0.3) {
                                apply(pure[i].sync(), from: i)
                            }
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
                case .node(let i):
                    if let en = engines?[i] {
                        // A restart of a node that runs (a second restart event) is a crash first.
                        en.crash()
                        do { try en.open() } catch {
                            engineFailure = "node \(i) did not restart from its store: \(error)"
                        }
                    } else {
                        pure[i].restart(now: local(e))
                    }
                case .witness: witness.restart(now: local(e))
                default: break
                }
            case .heal(let a, let b):
                cut.remove([a, b])
                cut.remove([b, a])
            case .stopFaults:
                faultsOn = false
                cut.removeAll()
                // In order: a set's order is the process's hash seed's, and the draws must replay.
                for e in down.sorted() { schedule(rng.range(100_000, 1_000_000), .restart(e)) }
                stopAt = now
            }
            if let failure = engineFailure ?? checkInvariants() {
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
                    for id in ackedGrants.sorted()
                    where logIndex[0].granted[id] == nil && logIndex[1].granted[id] == nil {
                        result.failure = "grant \(id) missing after convergence"; return result
                    }
                    for id in ackedReleases.sorted() where logIndex[0].ended[id] == nil && logIndex[1].ended[id] == nil
                    {
                        result.failure = "release \(id) missing after convergence"; return result
                    }
                    return result
                }
                if now > s + cfg.convergeWithinUSec {
                    result.failure =
                        "no convergence within \(cfg.convergeWithinUSec / 1_000_000) s after the faults stopped: "
                        + "node0 \(nodes[0].mode) seq \(nodes[0].lastSeq) "
                        + "\(nodes[0].pairStatus(now: local(.node(0))).rawValue), "
                        + "node1 \(nodes[1].mode) seq \(nodes[1].lastSeq) "
                        + "\(nodes[1].pairStatus(now: local(.node(1))).rawValue), "
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

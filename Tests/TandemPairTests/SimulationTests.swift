import TandemTesting
import Testing
import TandemCore
@testable import TandemPair
@testable import TandemSimulation

/// 120 seeds in 2 chunks here, and 16 driving engines (debug build, in parallel with the
/// integration tests, whose timing they should not starve); scripts/test runs 3000 more, and
/// 300 driving engines, through the optimized `tandem-sim` first. A failing seed is printed and replays exactly
/// with `tandem-sim --seed N`.
@Suite struct PairSimulation {
    @Test(arguments: 0..<2)
    func seedsKeepEveryInvariant(chunk: Int) async {
        let from = UInt64(chunk * 60 + 1)
        for r in await onOwnThread({ runSeeds(from..<(from + 60)) }) where !r.passed {
            Issue.record("\(r) — replay with: swift run tandem-sim --seed \(r.seed)")
        }
    }

    /// The same seeds driving whole engines over SQLite stores: the engine's pair glue (appends
    /// sent before the local commit, answers released against the store, what the node says to
    /// store, the pair restored from the store after a crash that lost what was not committed).
    @Test func seedsDrivingTheEngineKeepEveryInvariant() async {
        let results = await onOwnThread({
            runSeeds(1..<17) {
                $0.engine = true; $0.seats = 4
            }
        })
        for r in results where !r.passed {
            Issue.record("\(r) — replay with: swift run tandem-sim --engine --seed \(r.seed)")
        }
        // Requests waited in the nodes' queues across the crashes and partitions, and seats
        // came to them there (the invariants held: none granted twice, none over the seats).
        #expect(results.map(\.queued).reduce(0, +) > 0 && results.map(\.grantedAfterWaiting).reduce(0, +) > 0)
    }

    @Test func anEngineSeedReplaysExactly() async {
        let (a, b) = await onOwnThread {
            (runSeeds(9..<10) { $0.engine = true }.first!, runSeeds(9..<10) { $0.engine = true }.first!)
        }
        #expect(a.passed, "\(a)")
        #expect(
            a.events == b.events && a.granted == b.granted && a.faults == b.faults
                && a.convergedAfterUSec == b.convergedAfterUSec)
    }

    @Test func aSeedReplaysExactly() {
        let a = runSeeds(7..<8).first!
        let b = runSeeds(7..<8).first!
        #expect(a.passed)
        #expect(
            a.events == b.events && a.granted == b.granted && a.faults == b.faults
                && a.convergedAfterUSec == b.convergedAfterUSec)
        let c = runSeeds(8..<9).first!
        #expect(c.events != a.events, "different seeds should differ")
    }

    @Test func withoutFaultsThePrimaryLeadsAndThePairConverges() {
        let r = runSeeds(1..<2) { cfg in
            cfg.meanFaultIntervalUSec = 1_000_000_000_000
            cfg.dropRate = 0
            cfg.duplicateRate = 0
            cfg.faultPhaseUSec = 20_000_000
        }.first!
        #expect(r.passed, "\(r)")
        #expect(r.finalLeader == 0, "the configured primary should serve when nothing fails")
        #expect(r.granted > 0 && r.leaderChanges == 1, "\(r)")
    }

    @Test func heavierFaultsStillKeepTheInvariants() async {
        let results = await onOwnThread {
            runSeeds(
                5000..<5050,
                configure: { cfg in
                    cfg.meanFaultIntervalUSec = 1_500_000
                    cfg.dropRate = 0.2
                    cfg.duplicateRate = 0.1
                    cfg.clients = 8
                    cfg.seats = 4
                })
        }
        for r in results where !r.passed {
            Issue.record("\(r)")
        }
    }
}

@Suite struct WitnessRules {
    @Test func votesOncePerEpochAndNotDuringALiveLease() {
        var w = PairWitness(leaseUSec: 1000, now: 0)
        // Just restarted: waits out a lease it may have forgotten.
        #expect(
            w.receive(from: 0, .voteRequest(epoch: 2, lastSeq: 0, lastEpoch: 0), now: 500).first?.1
                == .voteDenied(epoch: 2, votedEpoch: 0))
        #expect(
            w.receive(from: 0, .voteRequest(epoch: 2, lastSeq: 0, lastEpoch: 0), now: 1000).first?.1
                == .voteGranted(epoch: 2, leaseUSec: 1000))
        // The other node may not take over while node 0's lease lives...
        #expect(
            w.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 1, lastEpoch: 2), now: 1500).first?.1
                == .voteDenied(epoch: 3, votedEpoch: 2))
        // ... renewals extend it ...
        #expect(
            w.receive(from: 0, .renew(epoch: 2, recordSeq: 5, recordEpoch: 2, sentAt: 1), now: 1900).first?.1
                == .renewed(epoch: 2, recordedSeq: 5, sentAt: 1))
        #expect(
            w.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 5, lastEpoch: 2), now: 2800).first?.1
                == .voteDenied(epoch: 3, votedEpoch: 2))
        // ... and once it ran out, a candidate behind the recorded position is refused,
        #expect(
            w.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 4, lastEpoch: 2), now: 3000).first?.1
                == .voteDenied(epoch: 3, votedEpoch: 2))
        // one that has it is elected, and the old leader is deposed.
        #expect(
            w.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 5, lastEpoch: 2), now: 3000).first?.1
                == .voteGranted(epoch: 3, leaseUSec: 1000))
        #expect(
            w.receive(from: 0, .renew(epoch: 2, recordSeq: nil, recordEpoch: nil, sentAt: 2), now: 3100).first?.1
                == .deposed(votedEpoch: 3))
        // An epoch is never voted twice.
        #expect(
            w.receive(from: 0, .voteRequest(epoch: 3, lastSeq: 9, lastEpoch: 3), now: 9000).first?.1
                == .voteDenied(epoch: 3, votedEpoch: 3))
    }

    /// The leader trusts the lease its vote told it; a witness restarted with a shorter
    /// `--lease-sec` keeps renewing, and waiting, that long for the epoch it voted for.
    @Test func aVotedLeaseOutlivesARestartWithAShorterOne() {
        var w = PairWitness(leaseUSec: 1000, now: 0)
        #expect(
            w.receive(from: 0, .voteRequest(epoch: 2, lastSeq: 0, lastEpoch: 0), now: 1000).first?.1
                == .voteGranted(epoch: 2, leaseUSec: 1000))
        var restarted = PairWitness(
            leaseUSec: 300, now: 1500, votedEpoch: w.votedEpoch, recordedEpoch: w.recordedEpoch,
            recordedSeq: w.recordedSeq, votedLeaseUSec: w.votedLeaseUSec)
        #expect(
            restarted.receive(from: 0, .renew(epoch: 2, recordSeq: nil, recordEpoch: nil, sentAt: 1), now: 2600)
                .first?.1 == .renewed(epoch: 2, recordedSeq: nil, sentAt: 1))
        // 300 µs after the renewal the leader may still serve: its lease is 1000.
        #expect(
            restarted.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 0, lastEpoch: 0), now: 3000).first?.1
                == .voteDenied(epoch: 3, votedEpoch: 2))
        // Once it ran out, the new vote gives the configured, shorter lease.
        #expect(
            restarted.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 0, lastEpoch: 0), now: 3600).first?.1
                == .voteGranted(epoch: 3, leaseUSec: 300))
        // A record from before the lease was kept counts the older default, 2.5 s.
        var old = PairWitness(
            leaseUSec: 300, now: 0, votedEpoch: 2, recordedEpoch: 0, recordedSeq: 0, votedLeaseUSec: nil)
        #expect(
            old.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 0, lastEpoch: 0), now: 2_000_000).first?.1
                == .voteDenied(epoch: 3, votedEpoch: 2))
        #expect(
            old.receive(from: 1, .voteRequest(epoch: 3, lastSeq: 0, lastEpoch: 0), now: 2_500_000).first?.1
                == .voteGranted(epoch: 3, leaseUSec: 300))
    }
}

/// A server "S" with one license of `seats` seats for the feature "cad".
func licensedState(seats: UInt32) -> LicenseState {
    var s = LicenseState()
    s.apply(.serverIdSet(id: "S"))
    s.apply(
        .licenseActivated(
            License(
                id: "L", product: "P", feature: "cad", seats: seats, notAfterUSec: 0, issuedTo: ["S"], keyId: "k",
                document: "")))
    return s
}

@Suite struct NodeRules {
    func initial() -> LicenseState { licensedState(seats: 2) }

    @Test func answersWaitForTheFollowerAndEpochsHaveTheNodesParity() {
        var primary = PairNode(index: 0, initial: initial(), now: 0)
        var backup = PairNode(index: 1, initial: initial(), now: 0)
        // The primary times out first and asks the witness for an even epoch.
        let effects = primary.tick(now: 3_000_000)
        guard case .send(.witness, .voteRequest(let epoch, _, _))? = effects.first else {
            Issue.record("no vote request: \(effects)")
            return
        }
        #expect(epoch % 2 == 0)
        let hello = primary.receive(from: .witness, .voteGranted(epoch: epoch, leaseUSec: 2_500_000), now: 3_000_100)
        #expect(primary.isServing(now: 3_000_200))
        #expect(primary.log.first?.change == .epochStarted(epoch: epoch))
        // A client request is held until the backup has the change.
        let out = primary.request(
            ref: 1, .acquire(feature: "cad", count: 1, client: "c", ttlUSec: 10_000_000, requestId: "r"),
            now: 3_000_300, newLeaseId: "lease-1")
        #expect(!out.contains { if case .reply = $0 { true } else { false } })
        // Deliver both appends to the backup and its acks back.
        var answers: [ClientReply] = []
        for case .send(.node(1), let m) in hello + out {
            for case .send(.node(0), let ack) in backup.receive(from: .node(0), m, now: 3_000_400) {
                for case .reply(_, let r) in primary.receive(from: .node(1), ack, now: 3_000_500) { answers.append(r) }
            }
        }
        #expect(answers.count == 1)
        if case .granted(let id, _)? = answers.first?.normalized {
            #expect(id == "lease-1")
        } else {
            Issue.record("\(answers)")
        }
        #expect(backup.state.leases["lease-1"] != nil)
        #expect(backup.pairStatus(now: 3_000_600) == .pairedAndAvailable)
        // The backup refuses clients and names the leader.
        #expect(
            backup.request(ref: 2, .release(leaseId: "lease-1"), now: 3_000_700, newLeaseId: "x") == [
                .reply(ref: 2, .notServing(leader: 0))
            ])
    }

    /// Entries in flight under load are not catching up: the leader stays paired-and-available
    /// while its follower acknowledges each frame whole; a follower more than a frame behind is
    /// recovering until it has everything.
    @Test func entriesInFlightAreNotRecovering() {
        var p = PartitionPolicies.Pair(.takeover, seats: 100)
        p.run(seconds: 8)
        guard p.nodes[0].isServing(now: p.now) else {
            Issue.record("the primary does not lead")
            return
        }
        #expect(p.nodes[0].pairStatus(now: p.now) == .pairedAndAvailable)
        let sent = p.nodes[0].request(
            ref: 1, .acquire(feature: "cad", count: 1, client: "c", ttlUSec: 60_000_000, requestId: "r1"), now: p.now,
            newLeaseId: "lease-1")
        #expect(p.answers[1] == nil, "the answer waits for the follower")
        #expect(p.nodes[0].pairStatus(now: p.now) == .pairedAndAvailable)
        p.deliver(sent, from: 0)
        #expect(p.answers[1] != nil)
        // 70 changes whose frames are lost: the next heartbeat resends the first 64 of them.
        p.linked = false
        for ref in 2...71 { _ = p.acquire(on: 0, ref: ref) }
        p.linked = true
        p.now += p.nodes[0].settings.heartbeatUSec
        for case .send(.node(1), let append) in p.nodes[0].tick(now: p.now) {
            for case .send(.node(0), let ack) in p.nodes[1].receive(from: .node(0), append, now: p.now) {
                p.deliver(p.nodes[0].receive(from: .node(1), ack, now: p.now), from: 0)
            }
        }
        #expect(p.nodes[0].pairStatus(now: p.now) == .recovering)
        #expect(p.nodes[1].pairStatus(now: p.now) == .recovering)
        p.run(seconds: 1)
        #expect(p.nodes[0].pairStatus(now: p.now) == .pairedAndAvailable)
        #expect(p.nodes[1].pairStatus(now: p.now) == .pairedAndAvailable)
        #expect((1...71).allSatisfy { p.answers[$0] != nil })
    }

    @Test func aStaleLeaderIsTurnedAway() {
        var backup = PairNode(index: 1, initial: initial(), now: 0)
        _ = backup.receive(
            from: .node(0), .append(epoch: 4, prevSeq: 0, prevEpoch: 0, entries: [], leaderLastSeq: 0), now: 10)
        let reply = backup.receive(
            from: .node(0), .append(epoch: 2, prevSeq: 0, prevEpoch: 0, entries: [], leaderLastSeq: 0), now: 20)
        #expect(reply == [.send(.node(0), .stale(epoch: 4))])
    }
}

@Suite struct PartitionPolicies {
    @Test(arguments: [PartitionMode.takeover, .split(primaryPercent: 50)])
    func seedsWithoutAWitnessKeepTheirInvariants(mode: PartitionMode) async {
        let name = mode == .takeover ? "takeover" : "split"
        for r in await onOwnThread({ runSeeds(1..<41, configure: { $0.partition = mode }) }) where !r.passed {
            Issue.record("\(r) — replay with: swift run tandem-sim --partition \(name) --seed \(r.seed)")
        }
    }

    /// Two nodes without a witness, exchanging messages while linked.
    struct Pair {
        var nodes: [PairNode]
        var now: USec = 0
        var linked = true
        var answers: [Int: SimReply] = [:]
        init(_ mode: PartitionMode, seats: UInt32) {
            var settings = PairSettings()
            settings.partition = mode
            nodes = (0..<2).map {
                PairNode(
                    index: $0, baseState: licensedState(seats: seats), base: 0, baseEpoch: 0, log: [], promisedEpoch: 0,
                    settings: settings, now: 0)
            }
        }
        mutating func deliver(_ effects: [NodeEffect], from i: Int) {
            var queue = effects.map { (i, $0) }
            while !queue.isEmpty {
                let (src, e) = queue.removeFirst()
                switch e {
                case .reply(let ref, let r): answers[ref] = r.normalized
                case .send(.node(let j), let m) where linked:
                    queue += nodes[j].receive(from: .node(src), m, now: now).map { (j, $0) }
                default: break
                }
            }
        }
        /// Runs both nodes for `seconds`, ticking every 100 ms.
        mutating func run(seconds: Double) {
            let end = now + USec(seconds * 1e6)
            while now < end {
                now += 100_000
                for i in 0..<2 { deliver(nodes[i].tick(now: now), from: i) }
            }
        }
        mutating func acquire(on i: Int, ref: Int, count: UInt32 = 1) -> SimReply? {
            deliver(
                nodes[i].request(
                    ref: ref,
                    .acquire(
                        feature: "cad", count: count, client: "c\(ref)", ttlUSec: 600_000_000, requestId: "r\(ref)"),
                    now: now, newLeaseId: "lease-\(ref)"), from: i)
            return answers[ref]
        }
        func inUse(_ i: Int) -> UInt32 { nodes[i].state.leases.values.reduce(0) { $0 + $1.count } }
    }

    @Test func takeoverServesOnBothSidesAndMergesAfterTheHeal() {
        var p = Pair(.takeover, seats: 2)
        p.run(seconds: 8)
        #expect(p.nodes[0].isServing(now: p.now) && !p.nodes[1].isServing(now: p.now))
        #expect(p.acquire(on: 0, ref: 1) == .granted(leaseId: "lease-1", expiresUSec: p.now + 600_000_000))
        #expect(p.nodes[1].state.leases["lease-1"] != nil, "replicated before the answer")
        // Cut: the backup takes over by itself; each side serves alone, and grants the seat left.
        p.linked = false
        p.run(seconds: 5)
        #expect(p.nodes[0].isServing(now: p.now) && p.nodes[1].isServing(now: p.now))
        #expect(p.nodes[1].pairStatus(now: p.now) == .primaryNotAvailable)
        #expect(p.acquire(on: 0, ref: 2).map { if case .granted = $0 { true } else { false } } == true)
        #expect(p.acquire(on: 1, ref: 3).map { if case .granted = $0 { true } else { false } } == true)
        // Administrative changes wait for the pair.
        let (decision, _) = p.nodes[0].perform(
            ref: 9, .reserve(feature: "cad", count: 1, holder: "h", newId: "res-1"), caller: .root, now: p.now)
        #expect(
            decision
                == .refused(
                    TandemError(
                        .peerUnreachable,
                        "the peer is out of reach: administrative changes wait until the pair is back together")))
        // Heal: one node leads, the other's lease changes are merged; three seats of two are in use.
        p.linked = true
        p.run(seconds: 5)
        let leader = p.nodes[0].isServing(now: p.now) ? 0 : 1
        #expect(!p.nodes[1 - leader].isServing(now: p.now))
        #expect(p.nodes[0].state.leases == p.nodes[1].state.leases)
        #expect(Set(p.nodes[leader].state.leases.keys) == ["lease-1", "lease-2", "lease-3"])
        #expect(p.nodes[0].unmerged.isEmpty && p.nodes[1].unmerged.isEmpty)
        #expect(p.nodes[leader].pairStatus(now: p.now) == .pairedAndAvailable)
        // No new grant until usage is back under the seat count.
        #expect(
            p.acquire(on: leader, ref: 4).map { if case .refused(.insufficientSeats, _) = $0 { true } else { false } }
                == true)
    }

    /// A borrow revoked by the node that serves alone while cut off stays revoked after the heal,
    /// whichever node leads then (the revocation is merged like a release).
    @Test(arguments: [0, 1]) func aRevocationMadeAloneIsMergedAfterTheHeal(revokedOn: Int) {
        var p = Pair(.takeover, seats: 2)
        p.run(seconds: 8)
        var policy = UsagePolicy()
        var rules = FeaturePolicy()
        rules.borrowDays = 7
        policy.features["cad"] = rules
        let borrow = AcquireRequest(
            feature: "cad", count: 1, client: "laptop", ttlUSec: 86_400_000_000, requestId: "b", newLeaseId: "borrow-1",
            policy: policy, borrowFor: "0123456789abcdef0123456789abcdef")
        let (granted, effects) = p.nodes[0].perform(ref: 1, .acquire(borrow), caller: .root, now: p.now)
        p.deliver(effects, from: 0)
        guard case .pending = granted else {
            Issue.record("not granted: \(granted)")
            return
        }
        #expect(p.nodes[1].state.leases["borrow-1"]?.isBorrowed == true)
        p.linked = false
        p.run(seconds: 5)
        let (revoked, more) = p.nodes[revokedOn].perform(
            ref: 2, .revokeBorrow(leaseId: "borrow-1"), caller: .root, now: p.now)
        p.deliver(more, from: revokedOn)
        guard case .pending = revoked else {
            Issue.record("not revoked: \(revoked)")
            return
        }
        p.linked = true
        p.run(seconds: 5)
        #expect(p.nodes[0].state.leases == p.nodes[1].state.leases)
        #expect(p.nodes[0].state.leases["borrow-1"]?.borrowRevokedUSec != nil, "the revocation was lost in the merge")
    }

    @Test func splitGrantsOnlyEachSidesShareWhileCutOff() {
        var p = Pair(.split(primaryPercent: 50), seats: 5)
        p.run(seconds: 8)
        #expect(p.acquire(on: 0, ref: 1) != nil)
        // 4 seats free at the last common position: 2 for each side.
        p.linked = false
        p.run(seconds: 5)
        var granted = [0, 0]
        for i in 0..<2 {
            for k in 0..<4 {
                if case .granted? = p.acquire(on: i, ref: 10 * (i + 1) + k) { granted[i] += 1 }
            }
        }
        #expect(granted == [2, 2])
        if case .refused(.insufficientSeats, let why)? = p.answers[13] {
            #expect(why.contains("PartitionPolicy=split"))
        } else {
            Issue.record("expected a split refusal: \(String(describing: p.answers[13]))")
        }
        // After the heal: one log, never more seats in use than owned, and full grants again.
        p.linked = true
        p.run(seconds: 5)
        let leader = p.nodes[0].isServing(now: p.now) ? 0 : 1
        #expect(p.nodes[0].state.leases == p.nodes[1].state.leases)
        #expect(p.inUse(leader) == 5)
        #expect(p.nodes[leader].splitBasePos == nil && p.nodes[1 - leader].splitBasePos == nil)
        p.deliver(
            p.nodes[leader].request(ref: 50, .release(leaseId: "lease-1"), now: p.now, newLeaseId: "x"), from: leader)
        #expect(p.acquire(on: leader, ref: 51).map { if case .granted = $0 { true } else { false } } == true)
    }
}

/// A stopping node says so (issue 17): its peer shows it stopped at once, and when it served,
/// the standby takes over long before the silence timeout; one being uninstalled is not available.
@Suite struct Departures {
    /// Two nodes and a witness, all linked, delivering at once.
    struct Witnessed {
        var nodes: [PairNode]
        var witness: PairWitness
        var now: USec = 0
        var up = [true, true]
        /// `witnessLeaseUSec`: the witness's own lease, when it is not set like the nodes.
        init(witnessLeaseUSec: USec? = nil) {
            let settings = PairSettings()
            nodes = (0..<2).map { PairNode(index: $0, initial: licensedState(seats: 2), settings: settings, now: 0) }
            witness = PairWitness(leaseUSec: witnessLeaseUSec ?? settings.witnessLeaseUSec, now: 0)
        }
        mutating func deliver(_ effects: [NodeEffect], from i: Int) {
            var queue = effects.map { (i, $0) }
            while !queue.isEmpty {
                let (src, e) = queue.removeFirst()
                switch e {
                case .send(.node(let j), let m) where up[j]:
                    queue += nodes[j].receive(from: .node(src), m, now: now).map { (j, $0) }
                case .send(.witness, let m):
                    for (j, answer) in witness.receive(from: src, m, now: now) where up[j] {
                        queue += nodes[j].receive(from: .witness, answer, now: now).map { (j, $0) }
                    }
                default: break
                }
            }
        }
        mutating func run(seconds: Double) {
            let end = now + USec(seconds * 1e6)
            while now < end {
                now += 50_000
                for i in 0..<2 where up[i] { deliver(nodes[i].tick(now: now), from: i) }
            }
        }
        mutating func stop(_ i: Int, forGood: Bool = false) {
            deliver(nodes[i].leave(forGood: forGood, now: now), from: i)
            up[i] = false
        }
        mutating func start(_ i: Int) {
            nodes[i].restart(now: now)
            up[i] = true
        }
        func serving(_ i: Int) -> Bool { nodes[i].isServing(now: now) }
    }

    @Test func aStoppedServingNodeIsShownStoppedAndTheStandbyTakesOverAtOnce() {
        var pair = Witnessed()
        pair.run(seconds: 10)
        #expect(pair.serving(0) && !pair.serving(1))
        #expect(pair.nodes[1].peerStatus(now: pair.now) == .running)
        #expect(pair.nodes[1].peerStatusReason(now: pair.now) == nil)
        pair.stop(0)
        // No waiting for FailoverTimeoutSec= (3 s, PairSettings' own): stopped, and serving, within 200 ms.
        #expect(pair.nodes[1].peerStatus(now: pair.now) == .stopped)
        #expect(pair.nodes[1].pairStatus(now: pair.now) == .primaryNotAvailable)
        #expect(pair.nodes[1].peerStatusReason(now: pair.now)?.contains("the primary said its service") == true)
        pair.run(seconds: 0.2)
        #expect(pair.serving(1), "the standby did not take over at once")
        #expect(!pair.serving(0))
        // The primary comes back: running again, and it gets serving back.
        pair.start(0)
        pair.run(seconds: 10)
        #expect(pair.nodes[1].peerStatus(now: pair.now) == .running)
        #expect(pair.nodes[0].peerStatus(now: pair.now) == .running)
        #expect(pair.serving(0) && !pair.serving(1))
    }

    /// A witness set to a shorter lease than the nodes' timing: the leader counts its renewals
    /// no longer than the witness gives, so it stops before the witness may vote for its peer.
    @Test func theLeaderTrustsNoLongerLeaseThanTheWitnessGives() {
        // Still longer than a heartbeat (1 s here), or the leader could not renew in time.
        var pair = Witnessed(witnessLeaseUSec: 1_500_000)
        pair.run(seconds: 10)
        #expect(pair.serving(0) && !pair.serving(1))
        let safety = pair.nodes[0].settings.leaseSafety
        #expect(pair.nodes[0].settings.witnessLeaseUSec > 1_500_000)
        #expect(
            pair.nodes[0].volatile.leaseValidUntil <= pair.now + USec(1_500_000 * safety),
            "the leader counts on its lease until \(pair.nodes[0].volatile.leaseValidUntil), now \(pair.now)")
    }

    @Test func aStoppedStandbyIsShownStoppedAndAnUninstalledOneNotAvailable() {
        var pair = Witnessed()
        pair.run(seconds: 10)
        pair.stop(1)
        #expect(pair.nodes[0].peerStatus(now: pair.now) == .stopped)
        #expect(pair.nodes[0].pairStatus(now: pair.now) == .backupNotAvailable)
        pair.run(seconds: 5)
        // Still stopped (not disconnected) after the silence timeout, and the primary serves on.
        #expect(pair.nodes[0].peerStatus(now: pair.now) == .stopped)
        #expect(pair.serving(0))
        pair.start(1)
        pair.run(seconds: 1)
        #expect(pair.nodes[0].peerStatus(now: pair.now) == .running)
        pair.stop(1, forGood: true)
        #expect(pair.nodes[0].peerStatus(now: pair.now) == .notAvailable)
        #expect(pair.nodes[0].pairStatus(now: pair.now) == .backupNotAvailable)
        #expect(pair.nodes[0].peerStatusReason(now: pair.now)?.contains("being uninstalled") == true)
        // Silence alone is disconnected, as before.
        pair.start(1)
        pair.run(seconds: 1)
        pair.up[1] = false
        pair.run(seconds: 4)
        #expect(pair.nodes[0].peerStatus(now: pair.now) == .disconnected)
        #expect(pair.nodes[0].peerStatusReason(now: pair.now)?.hasPrefix("nothing heard from the backup for") == true)
    }
}

/// The nodes of a pair hear each other's usage policy digest every heartbeat (issue 13, in the
/// peer's description of itself): while the two differ, administrative changes are refused and
/// products still get seats; once the same, or once the peer is gone, the changes go through.
@Suite struct PolicyDigests {
    @Test func differingPoliciesAreShownAndHoldAdministrativeChanges() {
        var pair = Departures.Witnessed()
        pair.nodes[0].policyDigest = "aaaa"
        pair.nodes[1].policyDigest = "bbbb"
        pair.run(seconds: 10)
        pair.nodes[0].notePeerPolicy("bbbb")
        pair.nodes[1].notePeerPolicy("aaaa")
        #expect(pair.serving(0))
        #expect(pair.nodes[0].policyMismatch && pair.nodes[1].policyMismatch)
        #expect(pair.nodes[0].peerPolicyDigest == "bbbb" && pair.nodes[1].peerPolicyDigest == "aaaa")
        let reserve = Command.reserve(feature: "cad", count: 1, holder: "ws-9", newId: "res-1")
        let (refused, _) = pair.nodes[0].perform(ref: 1, reserve, caller: .root, now: pair.now)
        guard case .refused(let e) = refused else {
            Issue.record("a reservation went through while the policies differ: \(refused)")
            return
        }
        #expect(e.code == .pairState && e.message.contains("usage policies differ") && e.message.contains("bbbb"))
        // Seats are not held up.
        let effects = pair.nodes[0].request(
            ref: 2, .acquire(feature: "cad", count: 1, client: "ws-1", ttlUSec: 60_000_000, requestId: "r"),
            now: pair.now, newLeaseId: "lease-1")
        pair.deliver(effects, from: 0)
        pair.run(seconds: 0.2)
        #expect(pair.nodes[0].state.inUse("cad") == 1)
        // The backup's policy is made the same and reloaded: within a heartbeat the pair agrees.
        pair.nodes[1].policyDigest = "aaaa"
        pair.nodes[0].notePeerPolicy("aaaa")
        #expect(!pair.nodes[0].policyMismatch)
        let (allowed, more) = pair.nodes[0].perform(ref: 3, reserve, caller: .root, now: pair.now)
        pair.deliver(more, from: 0)
        guard case .pending = allowed else {
            Issue.record("the reservation was refused once the policies agree: \(allowed)")
            return
        }
        // A peer that says nothing (an older version) or leaves holds nothing up either.
        pair.nodes[0].notePeerPolicy(nil)
        #expect(!pair.nodes[0].policyMismatch)
        pair.nodes[1].notePeerPolicy("bbbb")
        #expect(pair.nodes[1].policyMismatch)
        pair.stop(0)
        #expect(!pair.nodes[1].policyMismatch, "the primary left")
    }
}

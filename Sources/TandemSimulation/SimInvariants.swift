import TandemCore
import TandemPair

/// What must hold after every event, and what convergence means once the faults stop.
extension Simulation {
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
            if !compacting, nodes[i].pairStatus(now: local(.node(i))) == .pairNotSynced {
                return "node \(i) reports pair-not-synced"
            }
        }
        if serving.count > 1, withWitness {
            return "both nodes serving at once (epochs \(nodes[0].servingEpoch ?? 0), \(nodes[1].servingEpoch ?? 0))"
        }
        // Seats held by clients never exceed seats owned.
        var inUse: UInt64 = 0
        for h in held.values where h.untilGlobal > now { inUse += UInt64(h.count) }
        if inUse > UInt64(cfg.seats), cfg.settings.partition != .takeover {
            let holding = held.filter { $0.value.untilGlobal > now }.keys.sorted()
            return
                "over-allocation: clients hold \(inUse) seats of \(cfg.seats): \(holding); node leases: "
                + "\(nodes.map { $0.state.leases.keys.sorted() })"
        }
        // Each node's own accounting keeps the core's invariants (a takeover heal may leave
        // more in use than there are seats, by design).
        // Checked when a node's seats moved (licenses do not run out here, so time alone
        // changes no account): a check on every event would triple the simulation's time.
        for i in 0..<2 where !down.contains(.node(i)) {
            let n = nodes[i]
            let mark = AccountingMark(
                leases: n.state.leases.count, reservations: n.state.reservations.count,
                inUse: n.state.totalInUse, available: n.state.available("cad", for: nil, at: 0))
            guard mark != accountingChecked[i] else { continue }
            accountingChecked[i] = mark
            let faults = n.state.seatAccountingFaults(at: local(.node(i)), overcommitted: !withWitness)
            if let f = faults.first { return "node \(i): seat accounting: \(f)" }
        }
        // No acknowledged change lost: every answered grant and release is in some node's log.
        for i in 0..<2 { updateIndex(i) }
        // Only the entries added since the last check can be new; a truncation rebuilds the index.
        if ackedGrants.count != checkedGrants || logIndex[0].count < lastCounts.0 || logIndex[1].count < lastCounts.1
            || logIndex[0].rebuilt || logIndex[1].rebuilt
        {
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
        guard !down.contains(.node(0)), !down.contains(.node(1)), !cut.contains([.node(0), .node(1)]),
            !cut.contains([.node(1), .node(0)])
        else { return false }
        let a = nodes[0], b = nodes[1]
        return a.unmerged.isEmpty && b.unmerged.isEmpty && a.lastSeq == b.lastSeq && a.lastEpoch == b.lastEpoch
            && a.pairStatus(now: local(.node(0))) == .pairedAndAvailable
            && b.pairStatus(now: local(.node(1))) == .pairedAndAvailable
    }

    func converged() -> Bool {
        guard down.isEmpty, cut.isEmpty else { return false }
        let a = nodes[0], b = nodes[1]
        guard a.unmerged.isEmpty, b.unmerged.isEmpty else { return false }
        guard a.lastSeq == b.lastSeq, a.lastEpoch == b.lastEpoch, a.state.licenses == b.state.licenses,
            a.state.leases == b.state.leases, a.state.reservations == b.state.reservations,
            a.state.epoch == b.state.epoch
        else { return false }
        return a.pairStatus(now: local(.node(0))) == .pairedAndAvailable
            && b.pairStatus(now: local(.node(1))) == .pairedAndAvailable
            && (a.isServing(now: local(.node(0))) || b.isServing(now: local(.node(1))))
    }
}

import TandemCore

/// Log compaction (folding answered entries into the base state) and snapshots (the serving
/// node sending the standby the whole state when their logs no longer meet: `Sync`).
extension PairNode {
    /// The highest position this node may fold into its base: one that can never be truncated
    /// (equal on both nodes, or answered).
    public var compactableSeq: UInt64 {
        min(lastSeq, isLeading ? acknowledgedSeq : volatile.followerMatched, splitBasePos ?? .max)
    }

    /// Folds the entries through `seq` (at most `compactableSeq`) into the base state.
    public mutating func compact(through seq: UInt64) {
        let target = min(seq, compactableSeq)
        guard target > logBase, let targetEpoch = epochAt(target) else { return }
        let n = Int(target - logBase)
        for e in log.prefix(n) { baseState.apply(e.change, sharingWith: state) }
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
            target = min(target, max(volatile.peerMatchSeq, floor))
        }
        compact(through: target)
    }

    /// Sync: sends the follower a snapshot of the whole state (every heartbeat until it has it).
    /// Only the serving node can.
    public mutating func sync() -> [NodeEffect] {
        guard case .leader(let epoch) = volatile.mode else { return [] }
        volatile.syncRequested = true
        volatile.peerNeedsSnapshot = true
        return snapshotFrames(epoch: epoch)
    }

    /// Whether `sync` applies (this node leads).
    public var canSync: Bool { servingEpoch != nil }

    func snapshotFrames(epoch: UInt64) -> [NodeEffect] {
        let changes = state.sharedChanges
        let size = max(1, settings.snapshotChunk)
        let parts = max(1, (changes.count + size - 1) / size)
        return (0..<parts).map { p in
            let chunk = Array(changes[min(p * size, changes.count)..<min((p + 1) * size, changes.count)])
            return .send(
                .node(peer),
                .snapshot(epoch: epoch, seq: lastSeq, seqEpoch: lastEpoch, part: p, parts: parts, changes: chunk))
        }
    }

    /// Follower: one part of the leader's snapshot at (`seq`, `seqEpoch`); installed once all parts are in.
    mutating func onSnapshot(
        epoch: UInt64, seq: UInt64, seqEpoch: UInt64, part: Int, parts: Int, changes: [Change], from: Peer, now: USec,
        _ out: inout [NodeEffect]
    ) {
        guard followLeader(of: epoch, from: from, now: now, &out) else { return }
        guard parts > 0, part >= 0, part < parts else { return }
        // A log that already holds that position (a late duplicate) keeps what follows it;
        // one whose base is past it has it too.
        if seq < logBase { return }
        if epochAt(seq) == seqEpoch {
            volatile.followerMatched = max(volatile.followerMatched, seq)
            out.append(
                .send(
                    from,
                    ackOrMerge(
                        epoch: epoch, matchSeq: seq, caughtUp: seq >= volatile.leaderLastSeq && lastSeq == seq, now: now
                    )))
            return
        }
        if volatile.snapshotKey.map({ $0 != (epoch, seq) }) ?? true {
            volatile.snapshotKey = (epoch, seq)
            volatile.snapshotParts = [:]
        }
        volatile.snapshotParts[part] = changes
        guard volatile.snapshotParts.count == parts else { return }
        var s = LicenseState(changes: (0..<parts).flatMap { volatile.snapshotParts[$0] ?? [] })
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
        volatile.snapshotKey = nil
        volatile.snapshotParts = [:]
        volatile.followerMatched = seq
        volatile.leaderLastSeq = max(volatile.leaderLastSeq, seq)
        pruneUnmerged()
        out.append(
            .send(from, ackOrMerge(epoch: epoch, matchSeq: seq, caughtUp: seq >= volatile.leaderLastSeq, now: now)))
    }
}

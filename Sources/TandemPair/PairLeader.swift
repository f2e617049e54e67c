import TandemCore

/// The serving node's side of the protocol: leading an epoch, replicating the log, renewing
/// the witness lease, releasing answers once acknowledged, handing over to the primary.
extension PairNode {
    /// Leader: heartbeats, witness renewals, expiry; cut off without a witness, answers alone.
    mutating func tickLeading(epoch: UInt64, now: USec, _ out: inout [NodeEffect]) {
        if now >= volatile.leaseValidUntil {
            stepDown(&out)
            return
        }
        expireWithGrace(now: now, epoch: epoch)
        if volatile.lastHeartbeatSent.map({ now >= $0 + settings.heartbeatUSec }) ?? true {
            volatile.lastHeartbeatSent = now
            out += replicate(epoch: epoch, resend: true)
            if volatile.syncRequested && volatile.peerNeedsSnapshot { out += snapshotFrames(epoch: epoch) }
            if usesWitness { out += renew(epoch: epoch, now: now, record: !peerReachable(now: now)) }
        } else if volatile.peerNextSeq <= lastSeq {
            out += replicate(epoch: epoch, resend: false)
        }
        if usesWitness {
            if !peerReachable(now: now), volatile.lastRecordRequested < lastSeq, !volatile.pending.isEmpty {
                out += renew(epoch: epoch, now: now, record: true)
            }
        } else if !peerReachable(now: now) {
            // Cut off: under split, limit grants first; then answer without the peer.
            limitToSplitShare(now: now, &out)
            releaseAnswers(&out, now: now)
        }
    }

    /// Handing over to the configured primary: done once it has every entry and no answer waits.
    mutating func tickHandingOver(epoch: UInt64, since: USec, now: USec, _ out: inout [NodeEffect]) {
        if now >= volatile.leaseValidUntil {
            stepDown(&out)
            return
        }
        if volatile.peerMatchSeq == lastSeq && volatile.pending.isEmpty {
            // The witness hears first that the lease is free, so that the peer's vote request,
            // which follows the handover message, usually finds it free.
            if usesWitness { out.append(.send(.witness, .releaseLease(epoch: epoch))) }
            out.append(.send(.node(peer), .handoverReady(epoch: epoch, lastSeq: lastSeq)))
            volatile.mode = .follower
            volatile.leaderHint = peer
            volatile.lastHeardLeader = now  // give the peer a full timeout to take over
            volatile.leaseValidUntil = 0
        } else if now >= since + settings.handoverTimeoutUSec {
            volatile.mode = .leader(epoch: epoch)
        } else if volatile.lastHeartbeatSent.map({ now >= $0 + settings.heartbeatUSec / 4 }) ?? true {
            volatile.lastHeartbeatSent = now
            out += replicate(epoch: epoch, resend: true)
            if usesWitness { out += renew(epoch: epoch, now: now, record: false) }
        }
    }

    /// Starts serving in `epoch`: its first entry marks it; without a witness, lease changes
    /// this node still holds unmerged are merged at once.
    mutating func lead(epoch: UInt64, validUntil: USec, now: USec, _ out: inout [NodeEffect]) {
        promisedEpoch = max(promisedEpoch, epoch)
        volatile.mode = .leader(epoch: epoch)
        volatile.leaderHint = index
        volatile.leaseValidUntil = validUntil
        volatile.peerMatchSeq = 0
        volatile.peerNextSeq = lastSeq + 1
        volatile.peerCaughtUp = false
        volatile.witnessRecorded = 0
        volatile.lastRecordRequested = 0
        volatile.pending = []
        volatile.peerNeedsSnapshot = false
        volatile.electionSeq = lastSeq
        append(.epochStarted(epoch: epoch), epoch: epoch)
        if !unmerged.isEmpty { merge(unmerged, epoch: epoch, now: now) }
        volatile.lastHeartbeatSent = now
        if !usesWitness, !peerReachable(now: now) { limitToSplitShare(now: now, &out) }
        out += replicate(epoch: epoch, resend: false)
    }

    mutating func stepDown(_ out: inout [NodeEffect]) {
        for p in volatile.pending { out.append(.reply(ref: p.ref, .notServing(leader: nil))) }
        volatile.pending = []
        volatile.mode = .follower
        volatile.leaderHint = nil
        volatile.leaseValidUntil = 0
    }

    mutating func renew(epoch: UInt64, now: USec, record: Bool) -> [NodeEffect] {
        if record { volatile.lastRecordRequested = lastSeq }
        return [
            .send(
                .witness,
                .renew(
                    epoch: epoch, recordSeq: record ? lastSeq : nil, recordEpoch: record ? lastEpoch : nil, sentAt: now)
            )
        ]
    }

    /// Entries for the follower: from what it is known to have (`resend`) or only the new ones.
    mutating func replicate(epoch: UInt64, resend: Bool) -> [NodeEffect] {
        if resend { volatile.peerNextSeq = min(volatile.peerNextSeq, volatile.peerMatchSeq + 1) }
        // Nothing before the base can be sent; if the follower needs it, its mismatch answer
        // says so (and only a snapshot helps then).
        if volatile.peerNextSeq <= logBase { volatile.peerNextSeq = logBase + 1 }
        let from = volatile.peerNextSeq
        let to = min(lastSeq, from + UInt64(settings.maxEntriesPerFrame) - 1)
        let entries = Array(self.entries(from: from, through: to))
        let prev = from - 1
        volatile.peerNextSeq = max(volatile.peerNextSeq, to + 1)
        return [
            .send(
                .node(peer),
                .append(
                    epoch: epoch, prevSeq: prev, prevEpoch: epochAt(prev) ?? 0, entries: entries, leaderLastSeq: lastSeq
                ))
        ]
    }

    mutating func releaseAnswers(_ out: inout [NodeEffect], now: USec) {
        let acked = max(volatile.peerMatchSeq, volatile.witnessRecorded)
        // Without a witness, a node cut off from its peer answers alone (but never an
        // administrative change: those wait for the peer).
        let alone = !usesWitness && !peerReachable(now: now)
        var keep: [PendingAnswer] = []
        for p in volatile.pending {
            if p.seq <= acked || (alone && !p.admin) { out.append(.reply(ref: p.ref, p.reply)) } else { keep.append(p) }
        }
        volatile.pending = keep
    }

    /// Leader: the follower's log matches ours up to `matchSeq`.
    mutating func onAck(
        epoch: UInt64, matchSeq: UInt64, caughtUp: Bool, from: Peer, now: USec, _ out: inout [NodeEffect]
    ) {
        guard let mine = leadingEpoch, mine == epoch else { return }
        if matchSeq <= lastSeq, epochAt(matchSeq) != nil {
            if matchSeq >= logBase {
                volatile.peerNeedsSnapshot = false
                volatile.syncRequested = false
            }
            volatile.peerMatchSeq = max(volatile.peerMatchSeq, matchSeq)
            volatile.peerNextSeq = max(volatile.peerNextSeq, volatile.peerMatchSeq + 1)
            // Caught up means the follower held all the leader had when it sent that frame: entries
            // still in flight under load are not catching up (every answer waits for them anyway).
            volatile.peerCaughtUp = caughtUp
            // The peer acknowledges only with nothing unmerged: the pair is in step again.
            if caughtUp { endSplit() }
        }
        releaseAnswers(&out, now: now)
    }

    /// Leader: the follower could not place our entries; find where the logs agree.
    mutating func onMismatch(
        epoch: UInt64, followerLast: UInt64, table: [EpochRange], from: Peer, now: USec, _ out: inout [NodeEffect]
    ) {
        guard let mine = leadingEpoch, mine == epoch else { return }
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
        volatile.peerCaughtUp = false
        if agree < logBase { volatile.peerNeedsSnapshot = true }
        volatile.peerNextSeq = max(agree, logBase) + 1
        out += replicate(epoch: epoch, resend: false)
    }
}

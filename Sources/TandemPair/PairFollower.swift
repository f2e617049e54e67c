import TandemCore

/// The standby's side of the protocol: following the leader's log, standing as a candidate
/// when the leader falls silent.
extension PairNode {
    /// Follower: takes over after the leader fell silent; the configured primary asks for serving back.
    mutating func tickFollowing(now: USec, _ out: inout [NodeEffect]) {
        let silentSince = volatile.lastHeardLeader ?? volatile.startedAt
        // The configured backup waits a little longer at start, so that the primary leads first.
        let wait =
            settings.failoverTimeoutUSec
            + (volatile.lastHeardLeader == nil && index == 1 ? settings.failoverTimeoutUSec : 0)
        if now >= silentSince + wait {
            out += becomeCandidate(now: now, floor: promisedEpoch)
        } else if index == 0, volatile.leaderHint == peer, volatile.lastHeardLeader != nil,
            lastSeq == volatile.leaderLastSeq, lastSeq > 0,
            volatile.lastHandoverRequest.map({ now >= $0 + settings.heartbeatUSec }) ?? true
        {
            // Failback: caught up with the backup; ask for serving back.
            volatile.lastHandoverRequest = now
            out.append(.send(.node(peer), .handoverRequest(epoch: promisedEpoch)))
        }
        // Lease changes cut from this log go to the serving node until it merged them.
        if !unmerged.isEmpty, volatile.lastHeardLeader != nil, volatile.leaderHint == peer,
            volatile.lastMergeSent.map({ now >= $0 + settings.heartbeatUSec }) ?? true
        {
            volatile.lastMergeSent = now
            out.append(
                .send(
                    .node(peer),
                    .merge(epoch: promisedEpoch, entries: Array(unmerged.prefix(settings.maxEntriesPerFrame)))))
        }
    }

    /// Candidate: asks again, in a newer epoch, when no vote came. After the peer said it was
    /// stopping, soon: the witness may have heard our question before the lease given back.
    mutating func tickCandidate(epoch: UInt64, sentAt: USec, now: USec, _ out: inout [NodeEffect]) {
        let wait = volatile.peerDeparture != nil ? settings.heartbeatUSec : settings.failoverTimeoutUSec
        if now >= sentAt + wait {
            // In a new epoch: a late grant of the old one must not be taken as given at the
            // retry's time (the witness's lease began when it heard the first question).
            out += becomeCandidate(now: now, floor: max(promisedEpoch, epoch))
        }
    }

    mutating func becomeCandidate(now: USec, floor: UInt64) -> [NodeEffect] {
        let epoch = nextEpoch(above: floor)
        guard usesWitness else {
            // No witness to ask: this node takes over by itself.
            var out: [NodeEffect] = []
            lead(epoch: epoch, validUntil: .max, now: now, &out)
            return out
        }
        volatile.mode = .candidate(epoch: epoch, sentAt: now)
        return [.send(.witness, .voteRequest(epoch: epoch, lastSeq: lastSeq, lastEpoch: lastEpoch))]
    }

    /// Follower: entries from the leader of `epoch` after (`prevSeq`, `prevEpoch`).
    mutating func onAppend(
        epoch: UInt64, prevSeq: UInt64, prevEpoch: UInt64, entries: [LogEntry], leaderLast: UInt64, from: Peer,
        now: USec, _ out: inout [NodeEffect]
    ) {
        guard followLeader(of: epoch, from: from, now: now, &out) else { return }
        // Positions up to the base were folded into it only once both logs held them
        // identically (or from the leader's own snapshot): they match whatever a leader sends.
        guard prevSeq <= lastSeq, prevSeq < logBase || epochAt(prevSeq) == prevEpoch else {
            out.append(.send(from, .mismatch(epoch: epoch, lastSeq: lastSeq, epochTable: epochTable)))
            return
        }
        for e in entries where e.seq > logBase {
            if e.seq <= lastSeq {
                if epochAt(e.seq) != e.epoch {
                    truncate(from: e.seq)
                    append(e.change, epoch: e.epoch)
                }
            } else if e.seq == lastSeq + 1 {
                append(e.change, epoch: e.epoch)
            }
        }
        let matchSeq = max(prevSeq + UInt64(entries.count), logBase)
        // A tail from an older epoch beyond what the leader has is divergent: drop it.
        if lastSeq > matchSeq, let next = epochAt(matchSeq + 1), next < epoch, matchSeq >= leaderLast {
            truncate(from: matchSeq + 1)
        }
        volatile.leaderLastSeq = max(volatile.leaderLastSeq, leaderLast)
        volatile.followerMatched = max(volatile.followerMatched, matchSeq)
        pruneUnmerged()
        out.append(
            .send(
                from,
                ackOrMerge(
                    epoch: epoch, matchSeq: matchSeq,
                    caughtUp: matchSeq >= volatile.leaderLastSeq && lastSeq == matchSeq, now: now)))
    }

    /// A frame from the leader of `epoch`: a stale one is answered with our epoch (false);
    /// otherwise this node follows that leader.
    mutating func followLeader(of epoch: UInt64, from: Peer, now: USec, _ out: inout [NodeEffect]) -> Bool {
        if epoch < promisedEpoch {
            out.append(.send(from, .stale(epoch: promisedEpoch)))
            return false
        }
        if epoch > promisedEpoch {
            promisedEpoch = epoch
            volatile.leaderLastSeq = 0
        }
        if case .follower = volatile.mode {} else { stepDown(&out) }
        volatile.leaderHint = peer
        volatile.lastHeardLeader = now
        return true
    }
}

import TandemCore

/// Without a witness both nodes may serve while cut off from each other. After the heal, the
/// lease changes a node made alone that the serving node's log lacks are cut from its log, kept
/// (durably: `unmerged`) and sent to the serving node, which merges their effect into its log.
extension PairNode {
    /// Without a witness, entries cut from this log may have been answered while the pair was
    /// cut off: their lease changes are kept until the serving node merged them.
    /// A renewal is kept as the whole lease with the renewed expiry, so that it can be merged
    /// even where the lease has expired meanwhile (its client renewed it here).
    mutating func keepUnmerged(_ entries: some Sequence<LogEntry>) {
        for e in entries {
            var kept = e
            switch e.change {
            case .leaseGranted, .leaseReleased, .acquisitionDenied, .borrowRevoked:
                break
            case .audited(let a) where !a.succeeded:
                break  // a refusal stays true; what was done alone is not merged (the journal has it)
            case .leaseRenewed(let id, let expires):
                guard var l = state.leases[id] else { continue }
                l.expiresUSec = expires
                kept.change = .leaseGranted(l)
            default:
                continue
            }
            if (state.merged[e.epoch] ?? 0) < e.seq,
                !unmerged.contains(where: { $0.seq == e.seq && $0.epoch == e.epoch })
            {
                unmerged.append(kept)
            }
        }
    }

    /// Drops what the log says was merged.
    mutating func pruneUnmerged() {
        guard !unmerged.isEmpty else { return }
        let merged = state.merged
        unmerged.removeAll { (merged[$0.epoch] ?? 0) >= $0.seq }
    }

    /// Leader: merges lease changes made while the pair was cut off (grants — renewals arrive
    /// as grants, see `keepUnmerged` — releases and borrow revocations) and the refusals
    /// audited meanwhile.
    /// Only their effect on the current state is appended — a lease the log does not hold
    /// (unless it has run out), a later expiry for one it holds, the release of a lease still
    /// held; expiries are left to this node's own clock — followed by one `leasesMerged` mark
    /// per epoch, so each is merged once.
    mutating func merge(_ items: [LogEntry], epoch: UInt64, now: USec) {
        var through: [UInt64: UInt64] = [:]
        for item in items.sorted(by: { ($0.epoch, $0.seq) < ($1.epoch, $1.seq) }) {
            if (state.merged[item.epoch] ?? 0) >= item.seq { continue }
            switch item.change {
            case .leaseGranted(let l):
                if let cur = state.leases[l.id] {
                    if l.expiresUSec > cur.expiresUSec {
                        append(.leaseRenewed(id: l.id, expiresUSec: l.expiresUSec), epoch: epoch)
                    }
                } else if l.expiresUSec > now {
                    // Without its request id: the grant may never have been answered (its node
                    // stopped serving first), and a retried request must not receive it now.
                    var merged = l
                    merged.requestId = nil
                    append(.leaseGranted(merged), epoch: epoch)
                }
            case .leaseReleased(let id, _, _):
                if state.leases.contains(id) { append(item.change, epoch: epoch) }
            case .borrowRevoked(let id, _):
                // A revocation made alone stays, on the borrow if it is still held.
                if state.leases[id]?.isBorrowed == true, state.leases[id]?.borrowRevokedUSec == nil {
                    append(item.change, epoch: epoch)
                }
            case .audited, .acquisitionDenied:
                // A refusal made alone stays in the trail or the history (kept once: by its id).
                append(item.change, epoch: epoch)
            default:
                break
            }
            through[item.epoch] = max(through[item.epoch] ?? 0, item.seq)
        }
        for e in through.keys.sorted() { append(.leasesMerged(epoch: e, through: through[e]!), epoch: epoch) }
        pruneUnmerged()
    }

    /// A follower acknowledges only once nothing cut from its log waits to be merged; until
    /// then it sends those lease changes instead, so the leader's answers (and, under `split`,
    /// its full grants) wait for the merge.
    mutating func ackOrMerge(epoch: UInt64, matchSeq: UInt64, caughtUp: Bool, now: USec) -> PairMessage {
        guard !unmerged.isEmpty else {
            if caughtUp { endSplit() }
            return .ack(epoch: epoch, matchSeq: matchSeq, caughtUp: caughtUp)
        }
        volatile.lastMergeSent = now
        return .merge(epoch: epoch, entries: Array(unmerged.prefix(settings.maxEntriesPerFrame)))
    }
}

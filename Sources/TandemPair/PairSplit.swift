import TandemCore

/// `PartitionPolicy=split`: while the nodes are cut off from each other (and until the pair is
/// back in step), each node grants only its share of the seats that were free at the last
/// position both held (`splitBasePos`), so that the two never over-allocate together.
extension PairNode {
    /// Without a witness, with the peer out of reach (this node then answers alone: see
    /// `releaseAnswers`): under `split`, grants are limited from here on to this node's share of
    /// the seats free at the last position both nodes held. Grants already decided beyond that
    /// share (not yet answered) are refused to their clients; they stay in the log (the peer may
    /// have them), counting against this node's share, and this node never hands them out.
    mutating func limitToSplitShare(now: USec, _ out: inout [NodeEffect]) {
        guard case .split = settings.partition else { return }
        if splitBasePos == nil { splitBasePos = max(volatile.electionSeq, volatile.peerMatchSeq) }
        ensureSplitBase()
        // Seats of leases granted since the base and already answered count first; then the
        // waiting grants in order, as far as the share goes.
        let waiting = Set(
            volatile.pending.compactMap { p -> String? in
                if case .done(.leaseGranted(let l, false)) = p.reply { return l.id } else { return nil }
            })
        var counted: [String: UInt64] = [:]
        for l in leasesSinceSplitBase where !waiting.contains(l.id) {
            counted[l.feature, default: 0] += UInt64(l.count)
        }
        var withdrawn: Set<String> = []
        for p in volatile.pending {
            guard case .done(.leaseGranted(let l, false)) = p.reply, state.leases.contains(l.id) else { continue }
            if counted[l.feature, default: 0] + UInt64(l.count) > splitShare(l.feature, at: now) {
                withdrawn.insert(l.id)
            } else {
                counted[l.feature, default: 0] += UInt64(l.count)
            }
        }
        volatile.splitRefused.formUnion(withdrawn)
        guard !withdrawn.isEmpty else { return }
        // Every answer still waiting about a withdrawn lease (a retried request) is a refusal.
        var keep: [PendingAnswer] = []
        for p in volatile.pending {
            switch p.reply {
            case .done(.leaseGranted(let l, _)) where withdrawn.contains(l.id):
                out.append(.reply(ref: p.ref, .refused(.insufficientSeats, splitRefusal(l.feature, at: now))))
            case .done(.leaseRenewed(let l)) where withdrawn.contains(l.id),
                .done(.leaseReleased(let l)) where withdrawn.contains(l.id):
                out.append(
                    .reply(ref: p.ref, .refused(.leaseNotFound, "lease \(l.id) was withdrawn before it was answered")))
            default:
                keep.append(p)
            }
        }
        volatile.pending = keep
    }

    /// Rebuilds the state at `splitBasePos` if needed.
    mutating func ensureSplitBase() {
        guard let pos = splitBasePos, volatile.splitBase == nil, !volatile.splitBaseLost else { return }
        guard pos >= logBase, pos <= lastSeq else {
            volatile.splitBaseLost = true
            return
        }
        var base = baseState
        for e in log where e.seq <= pos { base.apply(e.change) }
        volatile.splitBase = base
    }

    /// The pair is back in step: full grants again.
    mutating func endSplit() {
        splitBasePos = nil
        volatile.splitBase = nil
        volatile.splitBaseLost = false
        volatile.splitRefused = []
        volatile.splitRefusedUnknown = false
    }

    /// `split`: seats of `feature` this node may grant while the pair is not in step.
    func splitShare(_ feature: String, at now: USec) -> UInt64 {
        guard case .split(let percent) = settings.partition, splitBasePos != nil else { return .max }
        guard let base = volatile.splitBase, !volatile.splitBaseLost else { return 0 }
        // Seats of licenses valid now: one that ran out since the base grants nothing.
        let seats = UInt64(base.seats(feature, at: now))
        // Seats set aside for holders are no side's to grant: the sides could not agree on
        // which of them serves a holder, so reservations wait for the heal.
        let used = Self.seats(of: base.leases.values, feature) + base.idleReserved(feature, exceptHolder: nil)
        let free = seats > used ? seats - used : 0
        let primary = free * UInt64(min(percent, 100)) / 100
        return index == 0 ? primary : free - primary
    }

    /// `split`: seats of `feature` held by leases granted since the split base.
    func splitHeld(_ feature: String) -> UInt64 { Self.seats(of: leasesSinceSplitBase, feature) }

    /// `split`: leases in the state that were not in it at the split base.
    var leasesSinceSplitBase: [Lease] {
        guard let base = volatile.splitBase else { return [] }
        return state.leases.values.filter { !base.leases.contains($0.id) }
    }

    static func seats(of leases: some Sequence<Lease>, _ feature: String) -> UInt64 {
        leases.reduce(0) { $0 + ($1.feature == feature ? UInt64($1.count) : 0) }
    }

    func splitRefusal(_ feature: String, at now: USec) -> String {
        "cut off from the peer (PartitionPolicy=split): this node may grant \(splitShare(feature, at: now)) of "
            + "the seats of \(quoted(feature)) that were free, and granted \(splitHeld(feature))"
    }

    /// `split`: the refusal of a decided outcome that this node may not give while not in step.
    func splitRefusal(of outcome: Outcome, at now: USec) -> TandemError? {
        guard splitBasePos != nil else { return nil }
        switch outcome {
        case .leaseGranted(let l, false) where splitHeld(l.feature) + UInt64(l.count) > splitShare(l.feature, at: now):
            return TandemError(.insufficientSeats, splitRefusal(l.feature, at: now))
        case .leaseGranted(let l, true)
        where volatile.splitRefused.contains(l.id)
            || (volatile.splitRefusedUnknown && volatile.splitBase?.leases.contains(l.id) != true):
            return TandemError(.insufficientSeats, splitRefusal(l.feature, at: now))
        case .leaseRenewed(let l) where volatile.splitRefused.contains(l.id):
            return TandemError(.leaseNotFound, "lease \(l.id) was refused while cut off from the peer")
        default:
            return nil
        }
    }
}

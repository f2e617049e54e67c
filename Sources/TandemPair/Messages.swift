import TandemCore

/// Node 0 is the configured primary, node 1 the configured backup.
public typealias NodeIndex = Int

/// What the two nodes and the witness say to each other. Every frame carries the sender's
/// epoch; frames of a stale epoch are refused.
public enum PairMessage: Sendable, Equatable, Codable {
    /// Leader -> follower: entries after (prevSeq, prevEpoch); empty entries are a heartbeat.
    case append(epoch: UInt64, prevSeq: UInt64, prevEpoch: UInt64, entries: [LogEntry], leaderLastSeq: UInt64)
    /// Follower -> leader: my log matches yours up to `matchSeq`.
    case ack(epoch: UInt64, matchSeq: UInt64, caughtUp: Bool)
    /// Follower -> leader: I could not place your entries; here are my epochs' last sequence numbers.
    case mismatch(epoch: UInt64, lastSeq: UInt64, epochTable: [EpochRange])
    /// Anyone -> a node of an older epoch: you are stale.
    case stale(epoch: UInt64)
    /// Follower (configured primary, caught up) -> leader (backup): give serving back.
    case handoverRequest(epoch: UInt64)
    /// Leader -> follower: I stopped serving at `lastSeq`; take over.
    case handoverReady(epoch: UInt64, lastSeq: UInt64)
    /// Leader -> follower (Sync): part `part` of `parts` of the whole state at (`seq`, `seqEpoch`),
    /// as the changes that rebuild it; the follower replaces its log with it once it has all parts.
    case snapshot(epoch: UInt64, seq: UInt64, seqEpoch: UInt64, part: Int, parts: Int, changes: [Change])
    /// Follower -> leader (no witness): lease changes cut from my log, made while the pair was
    /// cut off, that your log may not have; merge them. Sent instead of acknowledgements until merged.
    case merge(epoch: UInt64, entries: [LogEntry])
    /// Node -> peer: I am stopping (`forGood`: being uninstalled) and no longer serve; my log
    /// ends at `lastSeq`. A standby that hears it from the serving node stands at once.
    case leaving(epoch: UInt64, lastSeq: UInt64, forGood: Bool)

    // Node <-> witness.
    /// Candidate -> witness: may I serve in `epoch`? My log ends at (lastEpoch, lastSeq).
    case voteRequest(epoch: UInt64, lastSeq: UInt64, lastEpoch: UInt64)
    case voteGranted(epoch: UInt64, leaseUSec: UInt64)
    case voteDenied(epoch: UInt64, votedEpoch: UInt64)
    /// Leader -> witness: keep my lease; record that my log holds (recordEpoch, recordSeq) durably.
    case renew(epoch: UInt64, recordSeq: UInt64?, recordEpoch: UInt64?, sentAt: UInt64)
    case renewed(epoch: UInt64, recordedSeq: UInt64?, sentAt: UInt64)
    /// Witness -> old leader: a newer epoch was voted.
    case deposed(votedEpoch: UInt64)
    /// Leader handing over -> witness: my lease may end now.
    case releaseLease(epoch: UInt64)

    public var epoch: UInt64 {
        switch self {
        case .append(let e, _, _, _, _), .ack(let e, _, _), .mismatch(let e, _, _), .stale(let e),
            .handoverRequest(let e), .handoverReady(let e, _), .snapshot(let e, _, _, _, _, _), .merge(let e, _),
            .leaving(let e, _, _),
            .voteRequest(let e, _, _), .voteGranted(let e, _),
            .voteDenied(let e, _), .renew(let e, _, _, _), .renewed(let e, _, _), .releaseLease(let e):
            return e
        case .deposed(let e): return e
        }
    }
}

extension PairMessage {
    public var isAppend: Bool {
        if case .append = self { return true }
        return false
    }

    /// The same messages in fewer frames: consecutive appends to one peer that continue each
    /// other are merged into one, and an acknowledgement is dropped when a later one to the same
    /// peer in the same epoch covers it (acknowledgements are cumulative). Order is kept otherwise.
    public static func coalesced(_ messages: [(Peer, PairMessage)]) -> [(Peer, PairMessage)] {
        var out: [(Peer, PairMessage)] = []
        for (peer, m) in messages {
            if let (lastPeer, last) = out.last, lastPeer == peer,
                case .append(let e1, let p1, let pe1, let en1, _) = last,
                case .append(let e2, let p2, _, let en2, let l2) = m,
                e1 == e2, !en1.isEmpty, en1.last!.seq == p2, en1.count + en2.count <= 256
            {
                out[out.count - 1] = (
                    peer, .append(epoch: e1, prevSeq: p1, prevEpoch: pe1, entries: en1 + en2, leaderLastSeq: l2)
                )
                continue
            }
            out.append((peer, m))
        }
        // One acknowledgement per (peer, epoch): the highest, where the last one was. (A struct
        // key: an interpolated one printed the peer by reflection, several % of a standby's CPU.)
        struct AckKey: Hashable {
            var peer: Peer
            var epoch: UInt64
        }
        var best: [AckKey: UInt64] = [:]
        for (peer, m) in out {
            if case .ack(let e, let match, _) = m {
                let key = AckKey(peer: peer, epoch: e)
                best[key] = max(best[key] ?? 0, match)
            }
        }
        var placed: Set<AckKey> = []
        var kept: [(Peer, PairMessage)] = []
        for (peer, m) in out.reversed() {
            if case .ack(let e, let match, _) = m {
                let key = AckKey(peer: peer, epoch: e)
                if placed.contains(key) { continue }
                placed.insert(key)
                if match < best[key]!,
                    let top = out.first(where: {
                        if case .ack(e, best[key]!, _) = $0.1, $0.0 == peer { return true } else { return false }
                    })
                {
                    kept.append(top)
                    continue
                }
            }
            kept.append((peer, m))
        }
        return kept.reversed()
    }
}

/// The last sequence number of one epoch in a log.
public struct EpochRange: Sendable, Equatable, Codable {
    public var epoch: UInt64
    public var lastSeq: UInt64
    public init(epoch: UInt64, lastSeq: UInt64) {
        self.epoch = epoch
        self.lastSeq = lastSeq
    }
}

/// Where a message goes.
public enum Peer: Sendable, Equatable, Hashable {
    case node(NodeIndex)
    case witness
}

/// A node's answer to a command it performed (`PairNode.perform`), released as `NodeEffect.reply`.
public enum ClientReply: Sendable, Equatable {
    case refused(TandemErrorCode, String)
    /// This node is not serving; `leader` is who is, if known.
    case notServing(leader: NodeIndex?)
    /// The command's change is durable on both sides (or, alone, where the policy allows).
    case done(Outcome)
}

/// What `PairNode.perform` decided at once.
public enum PairDecision: Sendable, Equatable {
    /// Decided and appended; the answer (`.done`) follows once the change is acknowledged.
    case pending(Outcome)
    case refused(TandemError)
    case notServing(leader: NodeIndex?)
}

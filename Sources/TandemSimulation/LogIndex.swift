import TandemCore
import TandemPair

extension Simulation {
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
                case .leaseReleased(let id, _, _), .leaseExpired(let id): ended[id] = e.seq
                default: break
                }
            }
            for e in node.unmerged {
                if case .leaseGranted(let l) = e.change, granted[l.id] == nil { granted[l.id] = e.seq }
                if case .leaseReleased(let id, _, _) = e.change, ended[id] == nil { ended[id] = e.seq }
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
}

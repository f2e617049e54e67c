import TandemCore

extension PairMessage {
    /// The binary form (see `WireWriter`).
    public var wire: [UInt8] {
        var w = WireWriter()
        write(to: &w)
        return w.bytes
    }

    public init(wire bytes: [UInt8], from: Int = 0) throws(WireError) {
        var r = WireReader(bytes, from: from)
        self = try Self.read(from: &r)
        guard r.atEnd else { throw WireError(what: "trailing bytes") }
    }

    func write(to w: inout WireWriter) {
        func entries(_ es: [LogEntry]) { w.array(es) { e, x in x.write(to: &e) } }
        switch self {
        case .append(let e, let prevSeq, let prevEpoch, let es, let leaderLast):
            w.byte(1); w.u64(e); w.u64(prevSeq); w.u64(prevEpoch); entries(es); w.u64(leaderLast)
        case .ack(let e, let match, let caughtUp):
            w.byte(2); w.u64(e); w.u64(match); w.bool(caughtUp)
        case .mismatch(let e, let last, let table):
            w.byte(3); w.u64(e); w.u64(last);
            w.array(table) {
                $0.u64($1.epoch); $0.u64($1.lastSeq)
            }
        case .stale(let e):
            w.byte(4); w.u64(e)
        case .handoverRequest(let e):
            w.byte(5); w.u64(e)
        case .handoverReady(let e, let last):
            w.byte(6); w.u64(e); w.u64(last)
        case .snapshot(let e, let seq, let seqEpoch, let part, let parts, let changes):
            w.byte(7); w.u64(e); w.u64(seq); w.u64(seqEpoch); w.int(part); w.int(parts);
            w.array(changes) { x, c in c.write(to: &x) }
        case .merge(let e, let es):
            w.byte(8); w.u64(e); entries(es)
        case .voteRequest(let e, let last, let lastEpoch):
            w.byte(9); w.u64(e); w.u64(last); w.u64(lastEpoch)
        case .voteGranted(let e, let lease):
            w.byte(10); w.u64(e); w.u64(lease)
        case .voteDenied(let e, let voted):
            w.byte(11); w.u64(e); w.u64(voted)
        case .renew(let e, let recordSeq, let recordEpoch, let sentAt):
            w.byte(12); w.u64(e); w.optional(recordSeq) { $0.u64($1) }; w.optional(recordEpoch) { $0.u64($1) };
            w.u64(sentAt)
        case .renewed(let e, let recorded, let sentAt):
            w.byte(13); w.u64(e); w.optional(recorded) { $0.u64($1) }; w.u64(sentAt)
        case .deposed(let voted):
            w.byte(14); w.u64(voted)
        case .releaseLease(let e):
            w.byte(15); w.u64(e)
        case .leaving(let e, let last, let forGood):
            w.byte(16); w.u64(e); w.u64(last); w.bool(forGood)
        }
    }

    static func read(from r: inout WireReader) throws(WireError) -> PairMessage {
        func entries() throws(WireError) -> [LogEntry] {
            try r.array { (r: inout WireReader) throws(WireError) in try LogEntry.read(from: &r) }
        }
        func u64() throws(WireError) -> UInt64 { try r.u64() }
        func optU64() throws(WireError) -> UInt64? {
            try r.optional { (r: inout WireReader) throws(WireError) in try r.u64() }
        }
        switch try r.byte() {
        case 1:
            return .append(
                epoch: try u64(), prevSeq: try u64(), prevEpoch: try u64(), entries: try entries(),
                leaderLastSeq: try u64())
        case 2: return .ack(epoch: try u64(), matchSeq: try u64(), caughtUp: try r.bool())
        case 3:
            return .mismatch(
                epoch: try u64(), lastSeq: try u64(),
                epochTable: try r.array { (r: inout WireReader) throws(WireError) in
                    EpochRange(epoch: try r.u64(), lastSeq: try r.u64())
                })
        case 4: return .stale(epoch: try u64())
        case 5: return .handoverRequest(epoch: try u64())
        case 6: return .handoverReady(epoch: try u64(), lastSeq: try u64())
        case 7:
            return .snapshot(
                epoch: try u64(), seq: try u64(), seqEpoch: try u64(), part: try r.int(), parts: try r.int(),
                changes: try r.array { (r: inout WireReader) throws(WireError) in try Change.read(from: &r) })
        case 8: return .merge(epoch: try u64(), entries: try entries())
        case 9: return .voteRequest(epoch: try u64(), lastSeq: try u64(), lastEpoch: try u64())
        case 10: return .voteGranted(epoch: try u64(), leaseUSec: try u64())
        case 11: return .voteDenied(epoch: try u64(), votedEpoch: try u64())
        case 12: return .renew(epoch: try u64(), recordSeq: try optU64(), recordEpoch: try optU64(), sentAt: try u64())
        case 13: return .renewed(epoch: try u64(), recordedSeq: try optU64(), sentAt: try u64())
        case 14: return .deposed(votedEpoch: try u64())
        case 15: return .releaseLease(epoch: try u64())
        case 16: return .leaving(epoch: try u64(), lastSeq: try u64(), forGood: try r.bool())
        case let t: throw WireError(what: "unknown message tag \(t)")
        }
    }
}

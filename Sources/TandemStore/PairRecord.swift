import Foundation
import TandemCore

/// The pair's persistent state as one record: who this server is in the pair, who its peer is,
/// and the protocol's durable bookkeeping. The pair's log is the store's log, its base the
/// store's tables. Stored in the meta table (keys `pair_*`, the format of earlier versions).
public struct PairRecord: Sendable, Equatable {
    /// 0: this server is the configured primary, 1: the backup.
    public var node: Int
    /// The peer's pair-link address as the administrator gave it.
    public var peerAddress: String
    public var peerServerId: String
    public var progress: PairProgress

    public init(node: Int, peerAddress: String, peerServerId: String, progress: PairProgress) {
        self.node = node
        self.peerAddress = peerAddress
        self.peerServerId = peerServerId
        self.progress = progress
    }
}

/// The part of the pair's record that the protocol moves on (written with the log entries of
/// the same commit, so that a cut and what it cut are durable together).
public struct PairProgress: Sendable, Equatable {
    /// The highest epoch this node promised (voted for or served in).
    public var promisedEpoch: UInt64
    /// Without a witness: lease changes cut from this node's log that wait to be merged.
    public var unmerged: [LogEntry]
    /// `split`: the last position both nodes held, while the pair is not in step.
    public var splitBase: UInt64?

    public init(promisedEpoch: UInt64, unmerged: [LogEntry] = [], splitBase: UInt64? = nil) {
        self.promisedEpoch = promisedEpoch
        self.unmerged = unmerged
        self.splitBase = splitBase
    }
}

/// Where the pair's log starts: the state at position (`seq`, `epoch`).
public struct LogBase: Sendable, Equatable {
    public var seq: UInt64
    public var epoch: UInt64
    public var state: LicenseState

    public init(seq: UInt64, epoch: UInt64, state: LicenseState) {
        self.seq = seq
        self.epoch = epoch
        self.state = state
    }
}

extension Store {
    private enum PairKey: String, CaseIterable {
        case role = "pair_role", peerAddress = "pair_peer_address", peerServerId = "pair_peer_server_id"
        case promisedEpoch = "pair_promised_epoch", unmerged = "pair_unmerged", splitBase = "pair_split_base"
        case preparedFor = "pair_prepared_for"
    }

    private static let roleNames = ["primary", "backup"]

    /// The stored pair, if one was formed.
    public func pairRecord() throws -> PairRecord? {
        guard let role = try meta(PairKey.role.rawValue), let node = Self.roleNames.firstIndex(of: role),
            let peer = try meta(PairKey.peerAddress.rawValue),
            let peerId = try meta(PairKey.peerServerId.rawValue)
        else { return nil }
        return PairRecord(node: node, peerAddress: peer, peerServerId: peerId, progress: try pairProgress())
    }

    /// The pair protocol's stored progress (what `append` and `replace` wrote last).
    public func pairProgress() throws -> PairProgress {
        var unmerged: [LogEntry] = []
        if let text = try meta(PairKey.unmerged.rawValue), !text.isEmpty {
            unmerged = try JSONDecoder().decode([LogEntry].self, from: Data(text.utf8))
        }
        return PairProgress(
            promisedEpoch: UInt64(try meta(PairKey.promisedEpoch.rawValue) ?? "0") ?? 0,
            unmerged: unmerged,
            splitBase: try meta(PairKey.splitBase.rawValue).flatMap { UInt64($0) })
    }

    /// The base of the pair's log (the state the tables hold, without this server's own
    /// identity: what both nodes share) and the log after it.
    public func pairLog(serverId: String) throws -> (base: LogBase, log: [LogEntry]) {
        var (base, log) = try loadLog()
        var shared = LicenseState(changes: base.state.sharedChanges)
        shared.serverId = serverId
        base.state = shared
        return (base, log)
    }

    /// The primary this standalone server was prepared for (PrepareBackup), if any.
    public func preparedPrimary() throws -> String? { try meta(PairKey.preparedFor.rawValue) }

    public func setPreparedPrimary(_ address: String) throws { try setMeta(PairKey.preparedFor.rawValue, address) }

    /// Writes entries decided by a pair (their own sequence numbers and epochs), and the pair's
    /// progress if given, in one durable transaction. With `compactTo`, the log through that
    /// position is folded into the tables (the pair's node compacted its log), in the same
    /// transaction. `applied`: the state the entries were applied to (see `commit`).
    public func append(
        _ entries: some Collection<LogEntry>, now: USec, progress: PairProgress? = nil,
        denied: [String: UInt64]? = nil, compactTo: UInt64? = nil, applied: LicenseState? = nil
    ) throws {
        let entries = Array(entries)
        var seq = lastSeq
        for e in entries {
            precondition(e.seq == seq + 1, "pair log entries must follow the stored log")
            seq = e.seq
        }
        let folded = try compactTo.flatMap { try compaction(through: $0, appended: entries) }
        try db.transaction {
            for e in entries { try insertLog(e, now: now) }
            try recordHistory(entries, now: now, applied: applied)
            if let folded { try write(folded) }
            if let progress { try writeProgress(progress) }
            if let denied { try writeDenied(denied) }
        }
        // The positions move only once the transaction is durable.
        extend(with: entries, compacted: folded)
    }

    /// Replaces the stored state and the log after `base` (a truncated pair log, a snapshot
    /// received), keeping this server's own ID. One transaction.
    public func replace(
        state: LicenseState, base: LogBase, log: some Collection<LogEntry>, now: USec,
        progress: PairProgress, denied: [String: UInt64]? = nil
    ) throws {
        try db.transaction {
            try replaceState(state, base: base, log: log, now: now, progress: progress)
            if let denied { try writeDenied(denied) }
        }
        tail = Array(log)
        self.base = LogPosition(seq: base.seq, epoch: base.epoch)
        lastSeq = tail.last?.seq ?? base.seq
    }

    /// Forms a pair: the state becomes `base` with an empty log, and the record is stored.
    public func formPair(_ record: PairRecord, base: LogBase, now: USec) throws {
        // What the standalone server logged goes into its tables first: its own identity
        // (License Server ID, whether it was used) is kept there, not in the pair's base.
        let own = try compaction(through: lastSeq, appended: [])
        try db.transaction {
            if let own { try write(own) }
            try replaceState(base.state, base: base, log: [], now: now, progress: record.progress)
            try setMeta(PairKey.role.rawValue, Self.roleNames[record.node])
            try setMeta(PairKey.peerAddress.rawValue, record.peerAddress)
            try setMeta(PairKey.peerServerId.rawValue, record.peerServerId)
        }
        tail = []
        self.base = LogPosition(seq: base.seq, epoch: base.epoch)
        lastSeq = base.seq
    }

    /// Drops the pair's record (the pair was dissolved); the state and the log stay, the log
    /// going on as the standalone server's.
    public func dissolvePair() throws {
        try db.transaction {
            for k in PairKey.allCases { try db.run("DELETE FROM meta WHERE key = ?", .text(k.rawValue)) }
        }
    }

    private func replaceState(
        _ state: LicenseState, base: LogBase, log: some Collection<LogEntry>, now: USec,
        progress: PairProgress
    ) throws {
        // The tables get the base; `state` (the state now) only says whether this server's ID
        // was used for activations. The audit trail is history, not state: the refusals in the
        // log that goes are kept (they changed nothing, so they stay true; a record folded twice
        // is kept once). What it says was done may have been cut with it: the journal has those.
        for e in tail { if case .audited(let a) = e.change, !a.succeeded { try insertAudit(a) } }
        try recordReplacement(by: state, log: log, now: now)
        try db.exec(
            "DELETE FROM licenses; DELETE FROM leases; DELETE FROM reservations; DELETE FROM change_log;"
                + " DELETE FROM meta WHERE key LIKE 'leases_merged_%';")
        try write(TableFold(base.state.sharedChanges))
        try setMeta("server_id_used", state.serverIdUsed ? "1" : "0")
        for e in log { try insertLog(e, now: now) }
        try writeBase(LogPosition(seq: base.seq, epoch: base.epoch))
        try writeProgress(progress)
    }

    private func writeProgress(_ p: PairProgress) throws {
        try setMeta(PairKey.promisedEpoch.rawValue, String(p.promisedEpoch))
        try setMeta(PairKey.unmerged.rawValue, String(decoding: try encoder.encode(p.unmerged), as: UTF8.self))
        try setMeta(PairKey.splitBase.rawValue, p.splitBase.map { String($0) } ?? "")
    }
}

import Foundation
import TandemCore

/// The pair's persistent state as one record: who this server is in the pair, who its peer is,
/// and the protocol's durable bookkeeping. The pair's log is the change log after `base`.
/// Stored in the meta table (keys `pair_*`, the format of earlier versions).
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
        case base = "pair_base", baseState = "pair_base_state", preparedFor = "pair_prepared_for"
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

    /// The position of the stored base of the pair's log, if there is one.
    func pairBaseSeq() throws -> UInt64? {
        try meta(PairKey.base.rawValue).flatMap { $0.split(separator: " ").first.flatMap { UInt64($0) } }
    }

    /// The stored base of the pair's log, with this server's own ID.
    public func pairBase(serverId: String) throws -> LogBase? {
        guard let b = try meta(PairKey.base.rawValue), let text = try meta(PairKey.baseState.rawValue) else {
            return nil
        }
        let parts = b.split(separator: " ").compactMap { UInt64($0) }
        guard parts.count == 2 else { throw SQLiteError(code: 0, message: "bad pair_base '\(b)'") }
        var state = LicenseState(changes: try JSONDecoder().decode([Change].self, from: Data(text.utf8)))
        state.serverId = serverId
        return LogBase(seq: parts[0], epoch: parts[1], state: state)
    }

    /// The primary this standalone server was prepared for (PrepareBackup), if any.
    public func preparedPrimary() throws -> String? { try meta(PairKey.preparedFor.rawValue) }

    public func setPreparedPrimary(_ address: String) throws { try setMeta(PairKey.preparedFor.rawValue, address) }

    /// Writes entries decided by a pair (their own sequence numbers and epochs), and the pair's
    /// progress if given, in one durable transaction. With `compactTo`, the log up to that
    /// position is dropped and the state there kept as the log's base, in the same transaction.
    public func append(
        _ entries: some Collection<LogEntry>, now: USec, progress: PairProgress? = nil,
        denied: [String: UInt64]? = nil, compactTo: LogBase? = nil
    ) throws {
        // The position moves only once the transaction is durable.
        var seq = lastSeq
        try db.transaction {
            if let c = compactTo {
                try db.run("DELETE FROM change_log WHERE seq <= ?", .int(Int64(c.seq)))
                try writeBase(c)
                seq = max(seq, c.seq)
            }
            for e in entries {
                precondition(e.seq == seq + 1, "pair log entries must follow the stored log")
                try write(e.change)
                try insertLog(e, now: now)
                seq = e.seq
            }
            if let progress { try writeProgress(progress) }
            if let denied { try writeDenied(denied) }
        }
        lastSeq = seq
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
        lastSeq = log.reversed().first?.seq ?? base.seq
    }

    /// Forms a pair: the state becomes `base` with an empty log, and the record is stored.
    public func formPair(_ record: PairRecord, base: LogBase, now: USec) throws {
        try db.transaction {
            try replaceState(base.state, base: base, log: [], now: now, progress: record.progress)
            try setMeta(PairKey.role.rawValue, Self.roleNames[record.node])
            try setMeta(PairKey.peerAddress.rawValue, record.peerAddress)
            try setMeta(PairKey.peerServerId.rawValue, record.peerServerId)
        }
        lastSeq = base.seq
    }

    /// Drops the pair's record and log base (the pair was dissolved); the state stays.
    public func dissolvePair() throws {
        try db.transaction {
            for k in PairKey.allCases { try db.run("DELETE FROM meta WHERE key = ?", .text(k.rawValue)) }
        }
    }

    private func replaceState(
        _ state: LicenseState, base: LogBase, log: some Collection<LogEntry>, now: USec,
        progress: PairProgress
    ) throws {
        try db.exec("DELETE FROM licenses; DELETE FROM leases; DELETE FROM reservations; DELETE FROM change_log;")
        let used = state.serverIdUsed
        for c in state.sharedChanges { try write(c) }
        try setMeta("server_id_used", used ? "1" : "0")
        for e in log { try insertLog(e, now: now) }
        try writeBase(base)
        try writeProgress(progress)
    }

    private func writeBase(_ base: LogBase) throws {
        try setMeta(PairKey.base.rawValue, "\(base.seq) \(base.epoch)")
        try setMeta(
            PairKey.baseState.rawValue, String(decoding: try encoder.encode(base.state.sharedChanges), as: UTF8.self))
    }

    private func writeProgress(_ p: PairProgress) throws {
        try setMeta(PairKey.promisedEpoch.rawValue, String(p.promisedEpoch))
        try setMeta(PairKey.unmerged.rawValue, String(decoding: try encoder.encode(p.unmerged), as: UTF8.self))
        try setMeta(PairKey.splitBase.rawValue, p.splitBase.map { String($0) } ?? "")
    }
}

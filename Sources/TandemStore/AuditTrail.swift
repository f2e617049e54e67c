import Foundation
import TandemCore

/// The audit trail on disk: records folded out of the log live in the `audit` table; those
/// still in the log are read from it. Either way a record is a committed one.
extension Store {
    func insertAudit(_ a: AuditRecord) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let arguments = (try? encoder.encode(a.arguments)).map { String(decoding: $0, as: UTF8.self) }
        try db.run(
            "INSERT OR IGNORE INTO audit (id, time_usec, server_id, action, via, uid, user, token, arguments, result,"
                + " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            .text(a.id), .int(Int64(a.timeUSec)), .text(a.serverId), .text(a.action), .text(a.via.rawValue),
            a.uid.map { .int(Int64($0)) } ?? .null, a.user.map { .text($0) } ?? .null,
            a.token.map { .text($0) } ?? .null, .text(arguments ?? "{}"), .text(a.result), .text(a.detail))
    }

    /// Keeps the newest `auditKeepRecords` records of the table (the journal keeps its own).
    func pruneAudit() throws {
        try db.run(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY time_usec DESC, id DESC LIMIT -1 OFFSET ?)",
            .int(Int64(auditKeepRecords)))
    }

    /// The audit records from `sinceUSec` on, oldest first, at most `limit` (the newest ones).
    public func audit(sinceUSec: USec = 0, limit: Int = 10_000) throws -> [AuditRecord] {
        var out: [String: AuditRecord] = [:]
        for r in try db.query(
            "SELECT id, time_usec, server_id, action, via, uid, user, token, arguments, result, detail FROM audit"
                + " WHERE time_usec >= ? ORDER BY time_usec DESC LIMIT ?",
            .int(Int64(min(sinceUSec, USec(Int64.max)))), .int(Int64(limit)))
        {
            let arguments = (r[8].text?.data(using: .utf8)).flatMap {
                try? JSONDecoder().decode([String: String].self, from: $0)
            }
            let record = AuditRecord(
                id: r[0].text ?? "", timeUSec: USec(r[1].int ?? 0), serverId: r[2].text ?? "", action: r[3].text ?? "",
                via: AuditChannel(rawValue: r[4].text ?? "") ?? .dbus, uid: r[5].int.map { UInt32($0) },
                user: r[6].text, token: r[7].text, arguments: arguments ?? [:], result: r[9].text ?? "",
                detail: r[10].text ?? "")
            out[record.id] = record
        }
        for entry in tail {
            if case .audited(let a) = entry.change, a.timeUSec >= sinceUSec { out[a.id] = a }
        }
        return Array(out.values.sorted { ($0.timeUSec, $0.id) < ($1.timeUSec, $1.id) }.suffix(limit))
    }
}

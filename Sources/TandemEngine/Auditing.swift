import Foundation
import Logging
import TandemCore

/// Who did what to the server, done or refused: each action goes to the journal (with
/// `AuditRecord.messageId`) and, when this node serves, into the replicated history in the
/// same commit as the action's own changes (it is submitted right after them).
extension Engine {
    /// Records `action` by `caller`: done when `error` is nil (`detail` says what was done),
    /// refused otherwise. Refusals of unprivileged callers are kept at most once per caller and
    /// action in `Engine.refusalAuditIntervalUSec`, with the count left out since (a flood of
    /// refused calls must not become a flood of commits); the others are all kept.
    public func audit(
        _ action: String, via: AuditChannel, caller: Caller, arguments: [String: String] = [:],
        error: TandemError? = nil, detail: String = ""
    ) {
        // Arguments are the caller's text, refused ones unchecked: bounded and escaped, so
        // that a record stays small (it travels in a pair frame) and prints on one line.
        var arguments = arguments.mapValues(Self.bounded)
        if error != nil, !caller.isAdmin {
            let source = "\(caller.uid.map { "uid \($0)" } ?? "token \(caller.token ?? "-")") \(action)"
            guard let unrecorded = refusedAudits.report(source, now: Self.monotonicUSec()) else { return }
            if unrecorded > 0 { arguments["unrecorded_before"] = String(unrecorded) }
        }
        let record = AuditRecord(
            id: Identifiers.audit(), timeUSec: clock(), serverId: state.serverId, action: action, via: via,
            uid: caller.uid, user: caller.uid.flatMap(userName), token: caller.token, arguments: arguments,
            result: error?.code.rawValue ?? AuditRecord.ok, detail: Self.bounded(error?.message ?? detail))
        logger.log(
            level: error == nil ? .notice : .warning,
            "\(action) \(error == nil ? "done" : "refused")\(record.detail.isEmpty ? "" : ": " + record.detail)",
            metadata: Self.journalFields(record))
        keep(record)
    }

    /// A renewal or release is seat use, not administration, except on someone else's lease:
    /// a refused attempt is audited (someone tried to keep or free seats not theirs), and so is
    /// an administrator's release of it (a revocation) — over D-Bus and HTTP alike.
    func auditLeaseCommand(_ command: Command, caller: Caller, _ decision: Result<Outcome, TandemError>) {
        let action: String, leaseId: String
        switch command {
        case .renew(let id): (action, leaseId) = ("Renew", id)
        case .release(let id): (action, leaseId) = ("Release", id)
        default: return
        }
        let via: AuditChannel = caller.network ? .http : .dbus
        switch decision {
        case .failure(let e) where e.code == .accessDenied:
            audit(action, via: via, caller: caller, arguments: ["lease_id": leaseId], error: e)
        case .success(.leaseReleased(let l)) where caller.isAdmin && !caller.withoutAdministration.owns(l):
            audit(
                "RevokeLease", via: via, caller: caller,
                arguments: [
                    "lease_id": l.id, "feature": l.feature, "client": l.client, "count": "\(l.count)",
                    "holder": l.token.map { "token " + $0 } ?? l.uid.map { "uid \($0)" } ?? "network"
                ])
        default:
            break
        }
    }

    /// Puts `record` into the replicated history, or, while this node does not serve (a pair
    /// forming, a standby), holds it until it does (`submitPendingAudits`, each tick): the
    /// record of an EnableBackup is made before the new pair serves. At most
    /// `maxPendingAudits` wait; the journal has them all.
    func keep(_ record: AuditRecord) {
        let ticket = submit(.audit(record), caller: .root, countsRefusal: false)
        guard case .failure(let e) = ticket.decision else { return }
        guard e.code == .notServing else {
            logger.info(
                "audit record kept in the journal only",
                metadata: ["audit_id": "\(record.id)", "reason": "\(e.message)"])
            return
        }
        if pendingAudits.count >= Self.maxPendingAudits {
            let dropped = pendingAudits.removeFirst()
            logger.warning(
                "audit record kept in the journal only: too many wait for this node to serve",
                metadata: ["audit_id": "\(dropped.id)"])
        }
        pendingAudits.append(record)
    }

    /// Submits the records held while this node did not serve, once it does.
    func submitPendingAudits() {
        guard !pendingAudits.isEmpty, pair?.node.isServing(now: clock()) ?? true else { return }
        let waiting = pendingAudits
        pendingAudits = []
        for r in waiting { keep(r) }
    }

    public static let maxPendingAudits = 1000

    /// The record's journal fields: MESSAGE_ID, and AUDIT_* for who, what and the result.
    static func journalFields(_ r: AuditRecord) -> Logger.Metadata {
        var m: Logger.Metadata = [
            "message_id": "\(AuditRecord.messageId)", "audit_id": "\(r.id)", "audit_action": "\(r.action)",
            "audit_via": "\(r.via.rawValue)", "audit_result": "\(r.result)"
        ]
        if let uid = r.uid { m["audit_uid"] = "\(uid)" }
        if let user = r.user { m["audit_user"] = "\(user)" }
        if let token = r.token { m["audit_token"] = "\(token)" }
        for (k, v) in r.arguments { m["audit_arg_" + k] = "\(v)" }
        return m
    }

    /// `text` escaped and cut to `argumentLimit` characters, with its length when cut.
    static func bounded(_ text: String) -> String {
        let escaped = escapingControlCharacters(text, limit: Self.argumentLimit)
        return text.unicodeScalars.count > Self.argumentLimit ? escaped + " (\(text.utf8.count) bytes)" : escaped
    }

    /// How much of an argument or a message a record keeps, in characters.
    public static let argumentLimit = 200

    /// A uid's user name (nil when the system has none for it), looked up once per uid: an
    /// acquisition over D-Bus records its caller's name, and a lookup may read /etc/passwd.
    public func userName(_ uid: UInt32) -> String? {
        if let known = userNames[uid] { return known }
        if userNames.count >= 10_000 { userNames = [:] }
        let name = Self.userName(uid)
        userNames[uid] = .some(name)
        return name
    }

    static func userName(_ uid: UInt32) -> String? {
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buf = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(uid, &pw, &buf, buf.count, &result) == 0, result != nil, let name = pw.pw_name else {
            return nil
        }
        return String(cString: name)
    }

    static func monotonicUSec() -> UInt64 { DispatchTime.now().uptimeNanoseconds / 1000 }

    /// How often a refusal of an unprivileged caller is kept, per caller and action.
    public static let refusalAuditIntervalUSec: UInt64 = 10 * 1_000_000
}

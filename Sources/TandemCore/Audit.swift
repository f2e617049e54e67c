/// One administrative action, done or refused: who asked, how, what, and what came of it. The
/// audit trail is a part of the replicated history (`Change.audited`): the serving node records
/// it in the same commit as the action's own changes, and the standby receives it with them.
public struct AuditRecord: Codable, Sendable, Equatable {
    /// Unique ("audit-" and 16 hex digits): a record folded into the tables twice is kept once.
    public var id: String
    /// When the server decided (realtime µs).
    public var timeUSec: USec
    /// The server that recorded it (the serving node of a pair).
    public var serverId: String
    /// The D-Bus method or the event: "ActivateLicense", "RevokeLease", "EnableBackup", "Reload".
    public var action: String
    /// How it was asked for.
    public var via: AuditChannel
    /// The caller's uid (D-Bus), nil over the network and for signals.
    public var uid: UInt32?
    /// The uid's user name when the system knows it.
    public var user: String?
    /// The network API token's name (`ClientTokenFile=`).
    public var token: String?
    /// The arguments that matter ("license_id", "feature", "seats", "holder", ...).
    public var arguments: [String: String]
    /// "ok", or the name of the error that refused it ("AccessDenied").
    public var result: String
    /// The refusal's message, or what was done.
    public var detail: String

    public init(
        id: String, timeUSec: USec, serverId: String, action: String, via: AuditChannel, uid: UInt32? = nil,
        user: String? = nil, token: String? = nil, arguments: [String: String] = [:], result: String,
        detail: String = ""
    ) {
        self.id = id
        self.timeUSec = timeUSec
        self.serverId = serverId
        self.action = action
        self.via = via
        self.uid = uid
        self.user = user
        self.token = token
        self.arguments = arguments
        self.result = result
        self.detail = detail
    }

    /// The journal's MESSAGE_ID of every audit record: `journalctl MESSAGE_ID=...` lists them.
    public static let messageId = "e391005e11d143e8b5029bd69dd9f58a"
    /// The result of an action that was done.
    public static let ok = "ok"

    public var succeeded: Bool { result == Self.ok }
}

/// How an audited action reached the server.
public enum AuditChannel: String, Codable, Sendable, Equatable, CaseIterable {
    case dbus
    case http
    /// A signal to the process (SIGHUP: reload).
    case signal
    /// A change of how the service manager runs tandemd, found at start (its account).
    case systemd
}

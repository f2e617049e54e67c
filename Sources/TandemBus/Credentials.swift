import CSystemd
import Foundation
import TandemBusClient
import TandemCore

/// Decides who a D-Bus caller is, from credentials the bus daemon vouches for.
public struct BusAuthorizer: Sendable {
    /// Members of this group are administrators (besides uid 0). nil: only root.
    public var adminGid: UInt32?
    public init(adminGid: UInt32?) { self.adminGid = adminGid }

    /// Looks up a group by name; nil if it does not exist.
    public static func gid(ofGroup name: String) -> UInt32? {
        var grp = group()
        var result: UnsafeMutablePointer<group>?
        var buf = [CChar](repeating: 0, count: 16384)
        guard getgrnam_r(name, &grp, &buf, buf.count, &result) == 0, result != nil else { return nil }
        return grp.gr_gid
    }

    /// The caller whose bus-vouched credentials are `creds` (nil when they could not be had):
    /// fails closed, so unknown credentials make an unknown, unprivileged caller.
    public func caller(_ creds: SenderCredentials?) -> Caller {
        guard let creds else { return Caller(uid: nil, isAdmin: false) }
        if creds.uid == 0 { return Caller(uid: 0, isAdmin: true) }
        guard let adminGid, let gids = creds.groups else { return Caller(uid: creds.uid, isAdmin: false) }
        return Caller(uid: creds.uid, isAdmin: gids.contains(adminGid))
    }
}

/// What the bus daemon recorded about a connection when it connected (SO_PEERCRED and the
/// peer's groups): its effective uid and, when the bus knows them, all its group ids.
public struct SenderCredentials: Sendable, Equatable {
    public var uid: UInt32
    public var groups: [UInt32]?
}

/// Asks the bus daemon (org.freedesktop.DBus.GetConnectionCredentials) who a sender is, and
/// remembers the answer. A unique connection name is never reused on a bus and its
/// credentials are fixed when it connects, so entries never go stale; the cache is only
/// bounded. Nothing is taken from /proc (sd-bus "augmentation"), which would be racy.
public final class SenderCredentialsCache {
    private var cache: [String: SenderCredentials] = [:]
    let limit: Int
    public init(limit: Int = 4096) { self.limit = limit }

    public func credentials(bus: OpaquePointer, message m: OpaquePointer) -> SenderCredentials? {
        guard let senderPtr = sd_bus_message_get_sender(m) else { return nil }
        let sender = String(cString: senderPtr)
        if let c = cache[sender] { return c }
        var call: OpaquePointer?
        guard
            sd_bus_message_new_method_call(
                bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "GetConnectionCredentials") >= 0, let call
        else { return nil }
        defer { sd_bus_message_unref(call) }
        do { try BusMessage.append(call, .string(sender)) } catch { return nil }
        var error = sd_bus_error()
        defer { sd_bus_error_free(&error) }
        var reply: OpaquePointer?
        guard sd_bus_call(bus, call, 5_000_000, &error, &reply) >= 0, let reply else { return nil }
        defer { sd_bus_message_unref(reply) }
        guard let values = try? BusMessage.readAll(reply), let dict = values.first?.dictValue,
            let uid = dict["UnixUserID"]?.uint64Value, uid <= UInt64(UInt32.max)
        else { return nil }
        let groups = dict["UnixGroupIDs"]?.arrayValue?.compactMap {
            $0.uint64Value.map { UInt32(truncatingIfNeeded: $0) }
        }
        let creds = SenderCredentials(uid: UInt32(uid), groups: groups)
        if cache.count >= limit { cache.removeAll(keepingCapacity: true) }
        cache[sender] = creds
        return creds
    }
}

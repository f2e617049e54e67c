import CSystemd
import Foundation
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

    /// The caller of `m`. Fails closed: any lookup error, or a credential that sd-bus could
    /// only "augment" from /proc (racy, not vouched for by the bus), makes the caller
    /// unknown (no uid) and not an administrator. Group membership comes from the bus
    /// daemon's own record of the connection (GetConnectionCredentials' UnixGroupIDs, taken
    /// when the peer connected), never from /proc or the group database.
    public func caller(of m: OpaquePointer, groups: (OpaquePointer) -> [UInt32]?) -> Caller {
        var creds: OpaquePointer?
        let mask = UInt64(SD_BUS_CREDS_EUID)
        guard sd_bus_query_sender_creds(m, mask, &creds) >= 0, let creds else { return Caller(uid: nil, isAdmin: false) }
        defer { sd_bus_creds_unref(creds) }
        let augmented = sd_bus_creds_get_augmented_mask(creds)
        var euid: uid_t = 0
        guard augmented & UInt64(SD_BUS_CREDS_EUID) == 0, sd_bus_creds_get_euid(creds, &euid) >= 0 else {
            return Caller(uid: nil, isAdmin: false)
        }
        if euid == 0 { return Caller(uid: 0, isAdmin: true) }
        guard let adminGid, let gids = groups(m) else { return Caller(uid: euid, isAdmin: false) }
        return Caller(uid: euid, isAdmin: gids.contains(adminGid))
    }
}

/// Remembers the group ids the bus daemon reports for each sender. A unique connection name
/// is never reused on a bus and its credentials are fixed when it connects, so entries
/// never go stale; the cache is only bounded.
public final class SenderGroupsCache {
    private var cache: [String: [UInt32]] = [:]
    let limit: Int
    public init(limit: Int = 4096) { self.limit = limit }

    public func groups(bus: OpaquePointer, message m: OpaquePointer) -> [UInt32]? {
        guard let senderPtr = sd_bus_message_get_sender(m) else { return nil }
        let sender = String(cString: senderPtr)
        if let g = cache[sender] { return g }
        var call: OpaquePointer?
        guard sd_bus_message_new_method_call(bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus", "GetConnectionCredentials") >= 0, let call else { return nil }
        defer { sd_bus_message_unref(call) }
        do { try BusMessage.append(call, .string(sender)) } catch { return nil }
        var error = sd_bus_error()
        defer { sd_bus_error_free(&error) }
        var reply: OpaquePointer?
        guard sd_bus_call(bus, call, 5_000_000, &error, &reply) >= 0, let reply else { return nil }
        defer { sd_bus_message_unref(reply) }
        guard let values = try? BusMessage.readAll(reply), let dict = values.first?.dictValue,
              let list = dict["UnixGroupIDs"]?.arrayValue else { return nil }
        let gids = list.compactMap { $0.uint64Value.map { UInt32(truncatingIfNeeded: $0) } }
        if cache.count >= limit { cache.removeAll(keepingCapacity: true) }
        cache[sender] = gids
        return gids
    }
}

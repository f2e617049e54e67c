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
    /// unknown (no uid) and not an administrator.
    public func caller(of m: OpaquePointer) -> Caller {
        var creds: OpaquePointer?
        let mask = UInt64(SD_BUS_CREDS_EUID) | UInt64(SD_BUS_CREDS_SUPPLEMENTARY_GIDS)
        guard sd_bus_query_sender_creds(m, mask, &creds) >= 0, let creds else { return Caller(uid: nil, isAdmin: false) }
        defer { sd_bus_creds_unref(creds) }
        let augmented = sd_bus_creds_get_augmented_mask(creds)
        var euid: uid_t = 0
        guard augmented & UInt64(SD_BUS_CREDS_EUID) == 0, sd_bus_creds_get_euid(creds, &euid) >= 0 else {
            return Caller(uid: nil, isAdmin: false)
        }
        if euid == 0 { return Caller(uid: 0, isAdmin: true) }
        guard let adminGid, augmented & UInt64(SD_BUS_CREDS_SUPPLEMENTARY_GIDS) == 0 else {
            return Caller(uid: euid, isAdmin: false)
        }
        var gids: UnsafePointer<gid_t>?
        let n = sd_bus_creds_get_supplementary_gids(creds, &gids)
        guard n >= 0, let gids else { return Caller(uid: euid, isAdmin: false) }
        let isMember = (0..<Int(n)).contains { gids[$0] == adminGid }
        return Caller(uid: euid, isAdmin: isMember)
    }
}

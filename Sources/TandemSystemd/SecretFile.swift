import CSystemd
import Foundation

/// Files holding secrets (the pair key, the client tokens, the TLS key) are refused when users
/// other than the service's own could read or change them, as ssh refuses a loose private key.
/// The owner must be root or the user the service runs as; group and others get no permission,
/// except that the group may read when it is the service's own group: `root:tandem 0640` is how
/// an administrator hands a root-owned secret to the service account. A POSIX access ACL is
/// judged by its entries (the mode's group bits are then only the ACL's mask): a named user may
/// read only when it is root or the service's user, a named group only when it is the service's
/// group. That is how systemd hands over a `LoadCredential=` file (root-owned, 0400, and an ACL
/// entry for the service's dynamic user), and how a `user:eve:r` entry is caught.
public enum SecretFile {
    /// Throws, naming `setting`, the path, its mode and what to do, when the file is loose or missing.
    public static func check(_ path: String, setting: String) throws(ServiceError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ServiceError("\(setting)=\(path): \(String(cString: strerror(errno)))")
        }
        let mode = st.st_mode & 0o777
        let acl = accessACL(path)
        let why = looseness(
            mode: mode, owner: st.st_uid, group: st.st_gid, acl: acl, uid: geteuid(), gid: getegid())
        if let why {
            throw ServiceError(
                "\(setting)=\(path): mode \(String(mode, radix: 8))\(acl == nil ? "" : " with an ACL"), "
                    + "owner \(st.st_uid), group \(st.st_gid): \(why)")
        }
    }

    /// One entry of a POSIX access ACL.
    public struct ACLEntry: Sendable, Equatable {
        public enum Tag: UInt16, Sendable {
            case userObj = 0x01, user = 0x02, groupObj = 0x04, group = 0x08, mask = 0x10, other = 0x20
        }
        public var tag: Tag
        public var permissions: UInt16
        public var id: UInt32
        public init(_ tag: Tag, _ permissions: UInt16, id: UInt32 = UInt32.max) {
            self.tag = tag
            self.permissions = permissions
            self.id = id
        }
    }

    /// The file's access ACL (`system.posix_acl_access`), or nil when it has none.
    static func accessACL(_ path: String) -> [ACLEntry]? {
        var raw = [UInt8](repeating: 0, count: 4096)
        let n = getxattr(path, "system.posix_acl_access", &raw, raw.count)
        guard n >= 4 else { return nil }
        return parseACL(Array(raw[..<n]))
    }

    /// The kernel's xattr form: a version (2), then entries of tag (16 bits), permissions
    /// (16 bits) and id (32 bits), little-endian. Nil when it is not that.
    public static func parseACL(_ bytes: [UInt8]) -> [ACLEntry]? {
        func u16(_ i: Int) -> UInt16 { UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8 }
        func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) | UInt32(u16(i + 2)) << 16 }
        guard bytes.count >= 4, (bytes.count - 4) % 8 == 0, u32(0) == 2 else { return nil }
        var entries: [ACLEntry] = []
        for at in stride(from: 4, to: bytes.count, by: 8) {
            guard let tag = ACLEntry.Tag(rawValue: u16(at)) else { return nil }
            entries.append(ACLEntry(tag, u16(at + 2), id: u32(at + 4)))
        }
        return entries
    }

    /// Why a file with these owner, mode bits and ACL is not private to a service running as
    /// `uid`:`gid`, or nil when it is.
    public static func looseness(
        mode: mode_t, owner: uid_t, group: gid_t, acl: [ACLEntry]? = nil, uid: uid_t, gid: gid_t
    ) -> String? {
        if owner != 0 && owner != uid {
            return "it belongs to another user, who could change it; chown it to root or to uid \(uid)"
        }
        if mode & 0o007 != 0 { return "other users may read or change it; chmod 600 it" }
        guard let acl, acl.contains(where: { $0.tag == .mask }) else {
            if mode & 0o030 != 0 { return "its group may change or run it; chmod 600 (or 640) it" }
            if mode & 0o040 != 0 && group != gid {
                return "group \(group) may read it; chmod 600 it, or give it the service's group \(gid) with mode 640"
            }
            return nil
        }
        // With a mask, the group bits are the mask: judge the entries, as the mask lets them act.
        let mask = acl.first { $0.tag == .mask }?.permissions ?? 0
        for e in acl where e.permissions & mask != 0 {
            switch e.tag {
            case .user where e.id != 0 && e.id != uid:
                return "its ACL lets user \(e.id) read or change it; remove that entry (setfacl -x u:\(e.id))"
            case .groupObj where e.permissions & mask & 0o3 != 0, .group where e.permissions & mask & 0o3 != 0:
                return "its ACL lets a group change or run it; remove that permission"
            case .groupObj where group != gid:
                return "group \(group) may read it; chmod 600 it, or give it the service's group \(gid)"
            case .group where e.id != gid:
                return "its ACL lets group \(e.id) read it; remove that entry (setfacl -x g:\(e.id))"
            default: continue
            }
        }
        return nil
    }
}

import Foundation

/// Files holding secrets (the pair key, the client tokens, the TLS key) are refused when users
/// other than the service's own could read or change them, as ssh refuses a loose private key.
/// The owner must be root or the user the service runs as; group and others get no permission,
/// except that the group may read when it is the service's own group: `root:tandem 0640` is how
/// an administrator hands a root-owned secret to the service account.
public enum SecretFile {
    /// Throws, naming `setting`, the path, its mode and what to do, when the file is loose or missing.
    public static func check(_ path: String, setting: String) throws(ServiceError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ServiceError("\(setting)=\(path): \(String(cString: strerror(errno)))")
        }
        let mode = st.st_mode & 0o777
        if let why = looseness(mode: mode, owner: st.st_uid, group: st.st_gid, uid: geteuid(), gid: getegid()) {
            throw ServiceError(
                "\(setting)=\(path): mode \(String(mode, radix: 8)), owner \(st.st_uid), group \(st.st_gid): \(why)")
        }
    }

    /// Why a file with these owner and mode bits is not private to a service running as
    /// `uid`:`gid`, or nil when it is.
    public static func looseness(mode: mode_t, owner: uid_t, group: gid_t, uid: uid_t, gid: gid_t) -> String? {
        if owner != 0 && owner != uid {
            return "it belongs to another user, who could change it; chown it to root or to uid \(uid)"
        }
        if mode & 0o007 != 0 { return "other users may read or change it; chmod 600 it" }
        if mode & 0o030 != 0 { return "its group may change or run it; chmod 600 (or 640) it" }
        if mode & 0o040 != 0 && group != gid {
            return "group \(group) may read it; chmod 600 it, or give it the service's group \(gid) with mode 640"
        }
        return nil
    }
}

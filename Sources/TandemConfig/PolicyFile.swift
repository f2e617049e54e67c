import Crypto
import Foundation
import TandemCore

/// The usage policy file (`/etc/tandem/policy.conf` and `policy.d/*.conf`), systemd INI style:
///
///     [Group eng]            Users=alice bob dev-*
///     [HostGroup lab]        Hosts=lab-*
///     [Feature cad]          Reserve=2 group:eng   Max=1 user:*   Include=group:eng hostgroup:lab
///                            Exclude=user:mallory  MaxLeaseSec=3600  Borrow=7  Queue=no
///
/// `Reserve=`, `Max=`, `Include=` and `Exclude=` add a rule each time they appear (an empty value
/// drops the ones before, as systemd's list settings do); the other keys take the last value.
/// `group:NAME` without a `[Group NAME]` is the system's group of that name (members read now:
/// a changed group needs a reload, as FlexNet's options file needs `lmreread`).
public enum PolicyFile {
    public static let defaultPath = "/etc/tandem/policy.conf"

    /// The drop-in directory of a policy file: `policy.conf` -> `policy.d`.
    public static func dropins(of path: String) -> String {
        (path.hasSuffix(".conf") ? String(path.dropLast(5)) : path) + ".d"
    }

    /// Reads the policy; a missing file is no policy unless `required`.
    public static func load(
        path: String, required: Bool = false, systemGroup: (String) -> [String]? = SystemGroups.members
    ) throws(ConfigError) -> UsagePolicy {
        try parse(IniFile.load(path: path, required: required, dropins: dropins(of: path)), systemGroup: systemGroup)
    }

    public static func parse(_ ini: IniFile, systemGroup: (String) -> [String]?) throws(ConfigError) -> UsagePolicy {
        var policy = UsagePolicy()
        // Where each group and host group is referenced, to say where an unknown one is named.
        var named: [(PolicySubject, IniFile.Entry)] = []
        for e in ini.entries {
            func fail(_ why: String) -> ConfigError { ConfigError(file: e.file, line: e.line, reason: why) }
            let place = "\((e.file as NSString).lastPathComponent):\(e.line)"
            let header = e.section.split(separator: " ", maxSplits: 1).map(String.init)
            guard header.count == 2, !header[1].isEmpty else {
                throw fail("unknown section [\(e.section)] (Group NAME, HostGroup NAME, Feature NAME)")
            }
            let (kind, name) = (header[0], header[1].trimmingCharacters(in: .whitespaces))
            let words = e.value.split(whereSeparator: \.isWhitespace).map(String.init)
            if kind == "Group" || kind == "HostGroup" {
                do { try Validate.identifier(name, "\(kind) name") } catch { throw fail(error.message) }
                // A comment after a value is not one in this format: refuse it rather than take it
                // for members ("#" and "names;" would join the group).
                if let bad = words.first(where: {
                    $0.hasPrefix("#") || $0.hasPrefix(";") || $0.contains(":")
                        || $0.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
                }) {
                    throw fail("\(e.key)=: '\(bad)' is not a name (comments go on lines of their own)")
                }
            }
            switch (kind, e.key) {
            case ("Group", "Users"):
                policy.groups[name] = words.isEmpty ? [] : (policy.groups[name] ?? []) + words
            case ("Group", "Priority"):
                guard let n = Int(e.value), n >= -1000, n <= 1000 else {
                    throw fail("Priority= is a whole number from -1000 to 1000 (higher waits less), got '\(e.value)'")
                }
                policy.groupPriority[name] = n
                if policy.groups[name] == nil { policy.groups[name] = [] }
            case ("HostGroup", "Hosts"):
                policy.hostGroups[name] = words.isEmpty ? [] : (policy.hostGroups[name] ?? []) + words
            case ("Feature", _):
                do { try Validate.identifier(name, "feature") } catch { throw fail(error.message) }
                var rules = policy.features[name] ?? FeaturePolicy()
                func subject(_ text: String) throws(ConfigError) -> PolicySubject {
                    switch PolicySubject.parse(text) {
                    case .success(let s):
                        if s.kind == .group || s.kind == .hostgroup { named.append((s, e)) }
                        return s
                    case .failure(let p): throw fail("\(e.key)=: \(p.reason)")
                    }
                }
                switch e.key {
                case "Reserve", "Max":
                    var list = e.key == "Reserve" ? rules.reserve : rules.max
                    if words.isEmpty {
                        list = []
                    } else {
                        guard words.count == 2, let n = UInt32(words[0]), n >= 1, n <= 1_000_000 else {
                            throw fail("\(e.key)= takes a seat count from 1 to 1000000 and one WHO, got '\(e.value)'")
                        }
                        list.append(PolicyRule(count: n, subject: try subject(words[1]), place: place))
                    }
                    if e.key == "Reserve" { rules.reserve = list } else { rules.max = list }
                case "Include", "Exclude":
                    var list = e.key == "Include" ? rules.include : rules.exclude
                    if words.isEmpty { list = [] }
                    for w in words { list.append(PolicyRule(subject: try subject(w), place: place)) }
                    if e.key == "Include" { rules.include = list } else { rules.exclude = list }
                case "MaxLeaseSec":
                    let v = e.value.hasSuffix("s") ? String(e.value.dropLast()) : e.value
                    guard let n = UInt64(v), n >= 1, n <= 365 * 86_400 else {
                        throw fail(
                            "MaxLeaseSec= must be a whole number of seconds from 1 to 31536000, got '\(e.value)'")
                    }
                    rules.maxLeaseUSec = n * usecPerSecond
                case "Borrow":
                    guard let n = UInt32(e.value), n <= 365 else {
                        throw fail("Borrow= is the longest borrow in days, 0 (none) to 365, got '\(e.value)'")
                    }
                    rules.borrowDays = n == 0 ? nil : n
                case "Queue":
                    switch e.value {
                    case "yes", "true", "on", "1": rules.queue = true
                    case "no", "false", "off", "0": rules.queue = false
                    default: throw fail("Queue= is yes or no, got '\(e.value)'")
                    }
                default:
                    throw fail(
                        "unknown key '\(e.key)' in [Feature] (Reserve, Max, Include, Exclude, MaxLeaseSec, Borrow, Queue)"
                    )
                }
                policy.features[name] = rules
            case ("Group", _), ("HostGroup", _):
                throw fail("unknown key '\(e.key)' in [\(kind)] (\(kind == "Group" ? "Users=, Priority" : "Hosts")=)")
            default:
                throw fail("unknown section [\(e.section)] (Group NAME, HostGroup NAME, Feature NAME)")
            }
        }
        for (s, e) in named {
            if s.kind == .hostgroup, policy.hostGroups[s.name] == nil {
                throw ConfigError(file: e.file, line: e.line, reason: "no [HostGroup \(s.name)] for \(s)")
            }
            if s.kind == .group, policy.groups[s.name] == nil {
                guard let members = systemGroup(s.name) else {
                    throw ConfigError(
                        file: e.file, line: e.line, reason: "no [Group \(s.name)] and no system group '\(s.name)'")
                }
                policy.groups[s.name] = members
            }
        }
        if !policy.isOpen {
            policy.digest = SHA256.hash(data: Data(policy.canonicalText.utf8)).map { String(format: "%02x", $0) }
                .joined()
        }
        return policy
    }
}

/// The system's groups (NSS: /etc/group, LDAP, sssd), as the policy names them.
public enum SystemGroups {
    /// Users whose supplementary or primary group `name` is; nil when there is no such group.
    public static func members(_ name: String) -> [String]? {
        var size = 1 << 14
        while size <= 1 << 24 {
            var grp = group(), result: UnsafeMutablePointer<group>? = nil
            var buffer = [CChar](repeating: 0, count: size)
            // gr_mem points into the buffer: read it while the buffer is pinned.
            let found: (gid: gid_t, users: [String])?? = buffer.withUnsafeMutableBufferPointer { b in
                let rc = getgrnam_r(name, &grp, b.baseAddress, b.count, &result)
                if rc == ERANGE { return nil }
                guard rc == 0, result != nil else { return .some(nil) }
                var users: [String] = []
                if var p = grp.gr_mem {
                    while let m = p.pointee {
                        users.append(String(cString: m))
                        p += 1
                    }
                }
                return .some((grp.gr_gid, users))
            }
            guard let found else {
                size *= 4
                continue
            }
            guard let (gid, listed) = found else { return nil }
            var users = listed
            // Users whose primary group it is are members too (getent group does not list them;
            // a directory that does not enumerate its users, as sssd by default, names only these).
            setpwent()
            while let pw = getpwent() {
                if pw.pointee.pw_gid == gid { users.append(String(cString: pw.pointee.pw_name)) }
            }
            endpwent()
            return Array(Set(users)).sorted()
        }
        return nil
    }
}

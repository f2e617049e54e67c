/// A site's usage policy (`/etc/tandem/policy.conf`): who may use a feature, how much of it, and
/// what is set aside for whom — FlexNet's options file (`INCLUDE`, `EXCLUDE`, `MAX`, `RESERVE`)
/// and RLM's ISV options in one place. It is configuration, not replicated state: each node of
/// a pair loads its own file (the pair compares their digests), and the serving node applies it
/// when it decides an acquisition. Pure: group members from the system are resolved by the loader.
public struct UsagePolicy: Sendable, Equatable {
    /// Group name -> member user names (globs): `[Group NAME] Users=`, or the system's group.
    public var groups: [String: [String]] = [:]
    /// Group name -> `Priority=` of its members' waiting requests (higher first; 0 when unset).
    public var groupPriority: [String: Int] = [:]
    /// Host group name -> member host names (globs): `[HostGroup NAME] Hosts=`.
    public var hostGroups: [String: [String]] = [:]
    /// Per feature, by exact name.
    public var features: [String: FeaturePolicy] = [:]
    /// A digest of what the policy says (the loader's SHA-256 of its canonical text), compared
    /// between the nodes of a pair; empty for no policy.
    public var digest: String = ""

    public init() {}

    /// No policy: every holder may use every seat.
    public static let open = UsagePolicy()

    /// Says nothing that changes a decision or a queue's order.
    public var isOpen: Bool { features.isEmpty && groupPriority.values.allSatisfy { $0 == 0 } }
}

/// Who a rule names: `user:NAME`, `host:NAME`, `group:NAME`, `hostgroup:NAME` or `client:NAME`,
/// where a user, host or client name may hold `*` and `?` globs.
public struct PolicySubject: Sendable, Equatable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable, Hashable {
        case user, host, group, hostgroup, client
    }
    public var kind: Kind
    public var name: String

    public init(kind: Kind, name: String) {
        self.kind = kind
        self.name = name
    }

    /// `KIND:NAME`, or nil with the reason.
    public static func parse(_ text: String) -> Result<PolicySubject, PolicyParseProblem> {
        guard let colon = text.firstIndex(of: ":") else {
            return .failure(.init("'\(text)' is not KIND:NAME (user:, host:, group:, hostgroup:, client:)"))
        }
        guard let kind = Kind(rawValue: String(text[..<colon])) else {
            return .failure(
                .init("unknown kind '\(text[..<colon])' in '\(text)' (user, host, group, hostgroup, client)"))
        }
        let name = String(text[text.index(after: colon)...])
        guard !name.isEmpty, name.utf8.count <= 255, !name.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            return .failure(.init("'\(text)' names nobody: NAME must be 1-255 bytes without spaces"))
        }
        return .success(PolicySubject(kind: kind, name: name))
    }

    public var description: String { "\(kind.rawValue):\(name)" }
}

/// A reason a policy text is refused (the loader adds file and line).
public struct PolicyParseProblem: Error, Sendable, Equatable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
}

/// One rule line, with where it was written (`policy.conf:12`), which refusals quote.
public struct PolicyRule: Sendable, Equatable {
    /// Seats for `Reserve=` and `Max=`; 0 for `Include=` and `Exclude=`.
    public var count: UInt32
    public var subject: PolicySubject
    public var place: String
    public init(count: UInt32 = 0, subject: PolicySubject, place: String) {
        self.count = count
        self.subject = subject
        self.place = place
    }
}

/// `[Feature NAME]`.
public struct FeaturePolicy: Sendable, Equatable {
    /// `Reserve=N WHO`: N seats set aside for the holders WHO names (together).
    public var reserve: [PolicyRule] = []
    /// `Max=N WHO`: each holder WHO names holds at most N seats.
    public var max: [PolicyRule] = []
    /// `Include=WHO`: when any, only the holders they name may use the feature.
    public var include: [PolicyRule] = []
    /// `Exclude=WHO`: these may not (Exclude wins over Include).
    public var exclude: [PolicyRule] = []
    /// `MaxLeaseSec=`: longer leases are granted this long (the client renews).
    public var maxLeaseUSec: USec?
    /// `Borrow=DAYS`: the longest borrow; nil: no borrowing.
    public var borrowDays: UInt32?
    /// `Queue=`: whether requests may wait for a seat (nil: the default, yes).
    public var queue: Bool?

    public init() {}
}

/// Who is asking, as the policy sees them.
public struct PolicyHolder: Sendable, Equatable {
    public var user: String?
    public var host: String?
    public var client: String
    public init(user: String?, host: String?, client: String) {
        self.user = user
        self.host = host
        self.client = client
    }
}

extension UsagePolicy {
    /// Whether `subject` names `holder`. A holder that did not say its user or host name is
    /// named by no user, group, host or host group rule.
    public func names(_ subject: PolicySubject, _ holder: PolicyHolder) -> Bool {
        switch subject.kind {
        case .user: return holder.user.map { Glob.matches(subject.name, $0) } ?? false
        case .host: return holder.host.map { Glob.matches(subject.name, $0) } ?? false
        case .client: return Glob.matches(subject.name, holder.client)
        case .group:
            guard let user = holder.user else { return false }
            return (groups[subject.name] ?? []).contains { Glob.matches($0, user) }
        case .hostgroup:
            guard let host = holder.host else { return false }
            return (hostGroups[subject.name] ?? []).contains { Glob.matches($0, host) }
        }
    }

    /// Where a waiting request of `who` stands: the highest `Priority=` of the groups naming its
    /// user (0 for none).
    public func priority(of who: PolicyHolder) -> Int {
        groupPriority.filter { names(PolicySubject(kind: .group, name: $0.key), who) }.values.max() ?? 0
    }

    /// The key a `Max=` rule counts a holder's seats by: its user for user and group rules, its
    /// host for host and host-group rules, its client id for client rules.
    public static func countingKey(_ kind: PolicySubject.Kind, _ holder: PolicyHolder) -> HolderKey? {
        switch kind {
        case .user, .group: return holder.user.map(HolderKey.user)
        case .host, .hostgroup: return holder.host.map(HolderKey.host)
        case .client: return .client(holder.client)
        }
    }
}

/// A holder as seat accounting indexes it.
public enum HolderKey: Sendable, Hashable {
    case user(String)
    case host(String)
    case client(String)
}

/// Shell-style globs: `*` any run of characters, `?` one character, everything else itself.
public enum Glob {
    public static func matches(_ pattern: String, _ text: String) -> Bool {
        if !pattern.contains("*") && !pattern.contains("?") { return pattern == text }
        let p = Array(pattern.unicodeScalars), t = Array(text.unicodeScalars)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count && p[pi] == "*" {
                star = pi
                mark = ti
                pi += 1
            } else if pi < p.count && (p[pi] == "?" || p[pi] == t[ti]) {
                pi += 1
                ti += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}

// MARK: - Deciding under a policy

extension TandemError {
    static func policyDenied(_ reason: DenialReason, _ message: String) -> TandemError {
        var e = TandemError(.policyDenied, message)
        e.policyReason = reason
        return e
    }
}

extension LicenseState {
    /// A borrow: allowed only by the feature's `Borrow=`, and for no longer than it says.
    func admitBorrow(_ req: AcquireRequest, _ machineId: String, _ rules: FeaturePolicy?) throws(TandemError) {
        try Validate.machineId(machineId)
        let f = quoted(req.feature)
        guard let days = rules?.borrowDays else {
            throw .policyDenied(.policyBorrow, "feature \(f): borrowing is not allowed (the policy sets no Borrow=)")
        }
        guard req.ttlUSec <= USec(days) * 86_400 * usecPerSecond else {
            throw .policyDenied(
                .policyBorrow,
                "feature \(f): a borrow of \(req.ttlUSec / usecPerSecond) s is longer than Borrow=\(days) (days) allows"
            )
        }
    }

    /// `Exclude=`, `Include=` and `Max=` for an acquisition (before seats are counted).
    func admit(_ req: AcquireRequest, _ rules: FeaturePolicy) throws(TandemError) {
        let policy = req.policy
        let who = PolicyHolder(user: req.holder.user, host: req.holder.host, client: req.client)
        let f = quoted(req.feature)
        if let rule = rules.exclude.first(where: { policy.names($0.subject, who) }) {
            throw .policyDenied(
                .policyExcluded,
                "feature \(f): \(Self.describe(who)) is excluded (\(rule.place): Exclude=\(rule.subject))")
        }
        if !rules.include.isEmpty, !rules.include.contains(where: { policy.names($0.subject, who) }) {
            let listed = rules.include.map { "\($0.place): Include=\($0.subject)" }.joined(separator: ", ")
            throw .policyDenied(.policyNotIncluded, "feature \(f): \(Self.describe(who)) is not included (\(listed))")
        }
        for rule in rules.max where policy.names(rule.subject, who) {
            guard let key = UsagePolicy.countingKey(rule.subject.kind, who) else { continue }
            let holds = held(req.feature, by: key)
            if holds + UInt64(req.count) > UInt64(rule.count) {
                throw .policyDenied(
                    .policyMax,
                    "feature \(f): \(Self.describe(key)) holds \(holds) seat(s) and asked for \(req.count);"
                        + " at most \(rule.count) each (\(rule.place): Max=\(rule.count) \(rule.subject))")
            }
        }
    }

    /// `Reserve=`: of the `free` seats, those set aside for holders other than this one and not
    /// used by them are not this holder's — except the ones reserved for this very client over
    /// D-Bus (`Reserve`), which stay its own whatever the policy keeps for others.
    func checkPolicyReserves(_ req: AcquireRequest, _ rules: FeaturePolicy, free: UInt32) throws(TandemError) {
        let who = PolicyHolder(user: req.holder.user, host: req.holder.host, client: req.client)
        var setAside: UInt64 = 0
        var blocking: [PolicyRule] = []
        for rule in rules.reserve where !req.policy.names(rule.subject, who) {
            let used = held(req.feature, byAll: rule.subject, req.policy)
            if used < UInt64(rule.count) {
                setAside += UInt64(rule.count) - used
                blocking.append(rule)
            }
        }
        let own = min(idleReserved(req.feature, of: req.client), UInt64(free))
        let general = UInt64(free) - own
        guard UInt64(req.count) > own + (general > setAside ? general - setAside : 0) else { return }
        let listed = blocking.map { "\($0.place): Reserve=\($0.count) \($0.subject)" }.joined(separator: ", ")
        throw .policyDenied(
            .policyReserved,
            "feature \(quoted(req.feature)): \(req.count) seat(s) requested, \(free) free, of which"
                + " \(min(setAside, general)) are reserved for others (\(listed))")
    }

    private static func describe(_ who: PolicyHolder) -> String {
        var parts: [String] = []
        if let u = who.user { parts.append("user \(quoted(u))") }
        if let h = who.host { parts.append("host \(quoted(h))") }
        parts.append("client \(quoted(who.client))")
        return parts.joined(separator: ", ")
    }

    private static func describe(_ key: HolderKey) -> String {
        switch key {
        case .user(let u): return "user \(quoted(u))"
        case .host(let h): return "host \(quoted(h))"
        case .client(let c): return "client \(quoted(c))"
        }
    }
}

extension UsagePolicy {
    /// What the policy says, in one deterministic text (sorted, places left out): two nodes with
    /// the same text decide alike. Its digest is `digest`.
    /// Rules and members are sorted and de-duplicated (their order changes no decision, only
    /// which rule a refusal quotes first), and a feature without rules is left out.
    public var canonicalText: String {
        var out: [String] = []
        func members(_ list: [String]) -> String { Set(list).sorted().joined(separator: " ") }
        for name in groups.keys.sorted() { out.append("group \(name) \(members(groups[name]!))") }
        for name in groupPriority.keys.sorted() { out.append("priority \(name) \(groupPriority[name]!)") }
        for name in hostGroups.keys.sorted() { out.append("hostgroup \(name) \(members(hostGroups[name]!))") }
        for name in features.keys.sorted() {
            let f = features[name]!
            var lines: [String] = []
            func rules(_ kind: String, _ list: [PolicyRule], counted: Bool) {
                lines += Set(list.map { "  \(kind) \(counted ? "\($0.count) " : "")\($0.subject)" }).sorted()
            }
            rules("reserve", f.reserve, counted: true)
            rules("max", f.max, counted: true)
            rules("include", f.include, counted: false)
            rules("exclude", f.exclude, counted: false)
            if let t = f.maxLeaseUSec { lines.append("  max-lease-usec \(t)") }
            if let d = f.borrowDays { lines.append("  borrow-days \(d)") }
            if let q = f.queue { lines.append("  queue \(q)") }
            if !lines.isEmpty { out += ["feature \(name)"] + lines }
        }
        return out.joined(separator: "\n") + "\n"
    }
}

extension UsagePolicy {
    /// What the policy says of a request for `feature` by `who`, for people: a verdict and each
    /// rule that names the holder, with its place.
    public func explain(feature: String, for who: PolicyHolder) -> (verdict: String, rules: [String]) {
        guard let f = features[feature] else { return ("no rules: any holder may use any free seat", []) }
        var rules: [String] = []
        if let r = f.exclude.first(where: { names($0.subject, who) }) {
            return ("refused (PolicyDenied): excluded", ["\(r.place): Exclude=\(r.subject) names this holder"])
        }
        if !f.include.isEmpty {
            guard let r = f.include.first(where: { names($0.subject, who) }) else {
                let listed = f.include.map { "\($0.place): Include=\($0.subject)" }
                return ("refused (PolicyDenied): not included", listed.map { "\($0) does not name this holder" })
            }
            rules.append("\(r.place): Include=\(r.subject) names this holder")
        }
        var cap: UInt32?
        for r in f.max where names(r.subject, who) {
            cap = min(cap ?? r.count, r.count)
            rules.append("\(r.place): Max=\(r.count) \(r.subject): at most \(r.count) seat(s) held at once")
        }
        for r in f.reserve {
            rules.append(
                names(r.subject, who)
                    ? "\(r.place): Reserve=\(r.count) \(r.subject): may use these reserved seats"
                    : "\(r.place): Reserve=\(r.count) \(r.subject): these seats, while unused, are not for this holder")
        }
        if let t = f.maxLeaseUSec { rules.append("MaxLeaseSec=\(t / usecPerSecond): leases last at most that long") }
        rules.append(f.borrowDays.map { "Borrow=\($0): may borrow for up to \($0) day(s)" } ?? "no borrowing")
        if f.queue == false { rules.append("Queue=no: requests do not wait for a seat") }
        return (
            cap.map { "allowed, up to \($0) seat(s) at once, when seats are free" } ?? "allowed when seats are free",
            rules
        )
    }
}

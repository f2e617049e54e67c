/// The whole replicated state of one license server, as a value.
///
/// `decide` checks a command against the state and returns the changes it makes, without
/// touching anything; `apply` performs one change. Neither reads a clock or does I/O:
/// time and fresh identifiers come in with the command. This is the functional core
/// that the daemon, the store and (later) replication and the pair simulation share.
public struct LicenseState: Sendable, Equatable {
    public var serverId: String = ""
    /// True once a license was ever activated under the current server id.
    public var serverIdUsed: Bool = false
    public var epoch: UInt64 = 1
    public private(set) var licenses: [String: License] = [:]
    public private(set) var leases = LeaseTable()
    public private(set) var reservations: [String: Reservation] = [:]
    /// Per epoch, the highest sequence number of that epoch's lease changes merged into the
    /// log after a partition (see `Change.leasesMerged`).
    public private(set) var merged: [UInt64: UInt64] = [:]
    /// Refused acquisitions per feature (not part of the change log).
    public var denied: [String: UInt64] = [:]
    /// Seats held per feature and per holder (client id, user name, host name): kept up to
    /// date by `apply`, so that seat accounting and policies do not walk every lease on each
    /// acquisition.
    private var held: [String: [HolderKey: UInt64]] = [:]
    private var heldTotal: [String: UInt64] = [:]
    /// Seats of borrows per feature (part of `heldTotal`).
    private var borrowedTotal: [String: UInt64] = [:]
    /// No lease expires before this (a lower bound; see `settleExpiryBound`).
    private var expiryBound = ExpiryBound()

    public init() {}

    // MARK: - Applying changes

    /// Applies `change`. A lease it grants shares its box with the same lease in `first`, a state
    /// that applied the change before (the engine's, when the store's history applies it).
    public mutating func apply(_ change: Change, sharingWith first: LicenseState? = nil) {
        switch change {
        case .serverIdSet(let id):
            serverId = id
            serverIdUsed = false
        case .licenseActivated(let license):
            licenses[license.id] = license
            serverIdUsed = true
        case .licenseDeactivated(let id):
            licenses[id] = nil
        case .leaseGranted(let lease):
            if let old = leases.insert(lease, sharingWith: first?.leases) { account(old, -1) }
            account(lease, 1)
        case .leaseRenewed(let id, let expires):
            if leases.renew(id, expiresUSec: expires) { expiryBound.lower(to: expires) }
        case .borrowRevoked(let id, let at):
            leases.revokeBorrow(id, at: at)
        case .leaseReleased(let id, _, _), .leaseExpired(let id):
            if let lease = leases.remove(id) { account(lease, -1) }
        case .reservationAdded(let r):
            reservations[r.id] = r
        case .reservationRemoved(let id):
            reservations[id] = nil
        case .epochStarted(let e):
            epoch = e
        case .leasesMerged(let e, let through):
            merged[e] = max(merged[e] ?? 0, through)
        case .audited, .acquisitionDenied:
            break  // the trail and the history are kept by the store, beside the state
        }
    }

    /// Room for `n` leases, before loading that many (no rehashing as they come).
    public mutating func reserveLeases(_ n: Int) {
        leases.reserveCapacity(n)
    }

    public mutating func apply(_ changes: [Change]) {
        for c in changes { apply(c) }
    }

    private mutating func account(_ lease: Lease, _ sign: Int64) {
        // Runs for every lease loaded at start-up and every grant and end, on each state that
        // applies it: one lookup of the feature per map, each count changed in place.
        let delta = Int64(lease.count) * sign
        func countHolders(_ byHolder: inout [HolderKey: UInt64]) -> Bool {
            Self.add(delta, to: &byHolder, .client(lease.client))
            if let user = lease.user { Self.add(delta, to: &byHolder, .user(user)) }
            if let host = lease.host { Self.add(delta, to: &byHolder, .host(host)) }
            return byHolder.isEmpty
        }
        if countHolders(&held[lease.feature, default: [:]]) { held[lease.feature] = nil }
        Self.add(delta, to: &heldTotal, lease.feature)
        if lease.isBorrowed { Self.add(delta, to: &borrowedTotal, lease.feature) }
        if sign > 0 { expiryBound.lower(to: lease.expiresUSec) }
    }

    /// Adds `delta` to the count of `key` (one lookup when it is there); a count that reaches
    /// zero is removed, so that the maps' keys are what is held.
    private static func add<K: Hashable>(_ delta: Int64, to counts: inout [K: UInt64], _ key: K) {
        if let i = counts.index(forKey: key) {
            let n = Int64(counts.values[i]) + delta
            if n > 0 { counts.values[i] = UInt64(n) } else { counts.remove(at: i) }
        } else if delta > 0 {
            counts[key] = UInt64(delta)
        }
    }

    /// Seats of `feature` held by one holder.
    public func held(_ feature: String, by key: HolderKey) -> UInt64 { held[feature]?[key] ?? 0 }

    /// Seats of `feature` held by every holder `subject` names under `policy`.
    public func held(_ feature: String, byAll subject: PolicySubject, _ policy: UsagePolicy) -> UInt64 {
        guard let byHolder = held[feature] else { return 0 }
        var total: UInt64 = 0
        for (key, n) in byHolder {
            let named: Bool
            switch (key, subject.kind) {
            case (.user(let u), .user), (.user(let u), .group):
                named = policy.names(subject, PolicyHolder(user: u, host: nil, client: ""))
            case (.host(let h), .host), (.host(let h), .hostgroup):
                named = policy.names(subject, PolicyHolder(user: nil, host: h, client: ""))
            case (.client(let c), .client):
                named = Glob.matches(subject.name, c)
            default:
                named = false
            }
            if named { total += n }
        }
        return total
    }

    /// The lease `client` took with `requestId` (for idempotent acquisition), if it is still here.
    public func lease(forRequest requestId: String, client: String) -> Lease? {
        leases.lease(forRequest: requestId, client: client)
    }

    // MARK: - Seat accounting
    //
    // The one definition of every seat number; each view (GetUsage, ListLicenses, the License
    // objects, the Manager properties, /v1/features) reads `usage(_:at:)` or `shares(_:at:)`.

    /// Every feature that has a license, a lease or a reservation.
    public var features: [String] {
        var all = Set(licenses.values.map(\.feature))
        for f in heldTotal.keys { all.insert(f) }
        for r in reservations.values { all.insert(r.feature) }
        return all.sorted()
    }

    /// Seats of the licenses for `feature` that are valid at `now`.
    public func seats(_ feature: String, at now: USec) -> UInt32 {
        var total: UInt64 = 0
        for l in licenses.values where l.feature == feature && !l.isExpired(at: now) { total += UInt64(l.seats) }
        return UInt32(clamping: total)
    }

    /// Seats held by leases of `feature`.
    public func inUse(_ feature: String) -> UInt32 {
        UInt32(clamping: heldTotal[feature] ?? 0)
    }

    /// Seats of `feature` borrowed to machines that are away (counted in `inUse`).
    public func borrowed(_ feature: String) -> UInt32 {
        UInt32(clamping: borrowedTotal[feature] ?? 0)
    }

    /// Seats of all reservations of `feature`, used by their holders or not.
    public func setAside(_ feature: String) -> UInt32 {
        var total: UInt64 = 0
        for r in reservations.values where r.feature == feature { total += UInt64(r.count) }
        return UInt32(clamping: total)
    }

    /// Reserved seats that their holders are not using, excluding those of `exceptHolder`.
    public func idleReserved(_ feature: String, exceptHolder: String?) -> UInt64 {
        var perHolder: [String: Int64] = [:]
        for r in reservations.values where r.feature == feature { perHolder[r.holder, default: 0] += Int64(r.count) }
        guard !perHolder.isEmpty else { return 0 }
        for holder in perHolder.keys {
            perHolder[holder]! -= Int64(held[feature]?[.client(holder)] ?? 0)
        }
        var idle: UInt64 = 0
        for (holder, left) in perHolder where holder != exceptHolder && left > 0 { idle += UInt64(left) }
        return idle
    }

    /// Seats reserved for `holder` (D-Bus `Reserve`) that it does not use.
    public func idleReserved(_ feature: String, of holder: String) -> UInt64 {
        var total: Int64 = 0
        for r in reservations.values where r.feature == feature && r.holder == holder { total += Int64(r.count) }
        return UInt64(max(0, total - Int64(held[feature]?[.client(holder)] ?? 0)))
    }

    /// Seats `client` could acquire now: those neither in use nor set aside for someone else.
    public func available(_ feature: String, for client: String?, at now: USec) -> UInt32 {
        let free =
            Int64(seats(feature, at: now)) - Int64(inUse(feature))
            - Int64(idleReserved(feature, exceptHolder: client))
        return UInt32(clamping: max(0, free))
    }

    /// The seat account of one feature (see `FeatureUsage` for what each number means). Seats
    /// the usage `policy` keeps for holders (`Reserve=`) and they do not use count as reserved.
    public func usage(_ feature: String, at now: USec, policy: UsagePolicy = .open) -> FeatureUsage {
        let seats = seats(feature, at: now), inUse = inUse(feature)
        let unused = UInt64(seats > inUse ? seats - inUse : 0)
        let reserved = min(idleReserved(feature, exceptHolder: nil) + policyReserved(feature, policy), unused)
        return FeatureUsage(
            feature: feature, seats: seats, inUse: inUse, reserved: UInt32(reserved),
            available: UInt32(unused - reserved), denied: denied[feature] ?? 0)
    }

    public func usage(at now: USec, policy: UsagePolicy = .open) -> [FeatureUsage] {
        features.map { usage($0, at: now, policy: policy) }
    }

    /// Seats the policy's `Reserve=` rules of `feature` keep and their holders do not use.
    func policyReserved(_ feature: String, _ policy: UsagePolicy) -> UInt64 {
        guard let rules = policy.features[feature] else { return 0 }
        var idle: UInt64 = 0
        for rule in rules.reserve {
            let used = held(feature, byAll: rule.subject, policy)
            if used < UInt64(rule.count) { idle += UInt64(rule.count) - used }
        }
        return idle
    }

    /// Why an acquisition of `count` seats of `feature` by `client` is refused, as reports and
    /// metrics name it (nil: `error` is not a refusal for lack of seats or feature). Decided
    /// against the state the refusal was decided against.
    public func denialReason(
        _ error: TandemError, feature: String, count: UInt32, client: String, at now: USec
    ) -> DenialReason? {
        switch error.code {
        case .unknownFeature: return .unknownFeature
        case .policyDenied: return error.policyReason
        case .insufficientSeats:
            let s = seats(feature, at: now), used = inUse(feature)
            let unused = s > used ? s - used : 0
            return count <= unused ? .reservedForOthers : .insufficientSeats
        default: return nil
        }
    }

    /// How a feature's account is attributed to its licenses, in license id order: each valid
    /// license takes use, then reservations, up to its seats; use beyond all valid seats (a
    /// license ran out, or a partition healed under takeover) goes to the last license, so the
    /// shares always add up to the feature's `inUse` and `reserved`.
    public func shares(_ feature: String, at now: USec, policy: UsagePolicy = .open) -> [LicenseShare] {
        let account = usage(feature, at: now, policy: policy)
        let ordered = licenses.values.filter { $0.feature == feature }.sorted { $0.id < $1.id }
        var inUseLeft = account.inUse, reservedLeft = account.reserved
        var out = ordered.map { l -> LicenseShare in
            let cap = l.isExpired(at: now) ? 0 : l.seats
            let u = min(cap, inUseLeft)
            let r = min(cap - u, reservedLeft)
            inUseLeft -= u
            reservedLeft -= r
            return LicenseShare(licenseId: l.id, seats: l.seats, inUse: u, reserved: r)
        }
        if inUseLeft > 0, !out.isEmpty {
            let last = ordered.lastIndex { !$0.isExpired(at: now) } ?? out.count - 1
            out[last].inUse += inUseLeft
        }
        return out
    }

    /// The share of license `id` (zero for an unknown license).
    public func licenseUsage(_ id: String, at now: USec, policy: UsagePolicy = .open) -> LicenseShare {
        guard let license = licenses[id] else { return LicenseShare(licenseId: id, seats: 0, inUse: 0, reserved: 0) }
        return shares(license.feature, at: now, policy: policy).first { $0.licenseId == id }!
    }

    /// Seats of all licenses valid at `now` (the Manager's `SeatsTotal`).
    public func totalSeats(at now: USec) -> UInt32 {
        UInt32(clamping: licenses.values.reduce(UInt64(0)) { $0 + ($1.isExpired(at: now) ? 0 : UInt64($1.seats)) })
    }

    /// Seats held by all leases (the Manager's `SeatsInUse`).
    public var totalInUse: UInt32 {
        UInt32(clamping: heldTotal.values.reduce(0, +))
    }

    /// No lease expires before this time (nil: no lease). A lower bound, cheap to read on
    /// every command; `settleExpiryBound` makes it exact again.
    public var nextExpiry: USec? { leases.isEmpty ? nil : expiryBound.value }

    /// Recomputes the exact earliest expiry (one walk over the leases). Call it when the
    /// bound has been reached, so that the walk happens once per expiry, not per command.
    public mutating func settleExpiryBound() {
        expiryBound = ExpiryBound(leases.values.map(\.expiresUSec).min())
    }

    /// Active (unexpired) leases, all or one client's, oldest first.
    public func activeLeases(client: String? = nil, at now: USec) -> [Lease] {
        leases.values.filter { $0.expiresUSec > now && (client == nil || $0.client == client) }
            .sorted { ($0.acquiredUSec, $0.id) < ($1.acquiredUSec, $1.id) }
    }

    /// A lease that has not expired at `now`.
    public func activeLease(_ id: String, at now: USec) -> Lease? {
        leases[id].flatMap { $0.expiresUSec > now ? $0 : nil }
    }
}

/// A cached lower bound on lease expiry. It is a cache, not state: two states with the same
/// leases are equal whatever their bounds.
struct ExpiryBound: Sendable, Equatable {
    private(set) var value: USec? = nil
    init(_ v: USec? = nil) { value = v }
    mutating func lower(to t: USec) { value = min(value ?? t, t) }
    static func == (_: ExpiryBound, _: ExpiryBound) -> Bool { true }
}

extension LicenseState {
    /// Changes that rebuild this state from an empty one (not the refusal counters): how a
    /// state is stored as a snapshot and sent whole.
    public var asChanges: [Change] {
        (serverId.isEmpty ? [] : [.serverIdSet(id: serverId)]) + sharedChanges
    }

    /// The same without this server's own ID: what the two nodes of a pair share (each keeps
    /// its own License Server ID), sent in snapshots and kept as the pair's base.
    public var sharedChanges: [Change] {
        var out: [Change] = []
        out.append(.epochStarted(epoch: epoch))
        out += licenses.keys.sorted().map { .licenseActivated(licenses[$0]!) }
        out += leases.keys.sorted().map { .leaseGranted(leases[$0]!) }
        out += reservations.keys.sorted().map { .reservationAdded(reservations[$0]!) }
        out += merged.keys.sorted().map { .leasesMerged(epoch: $0, through: merged[$0]!) }
        return out
    }

    public init(changes: [Change]) {
        self.init()
        for c in changes { apply(c) }
    }
}

/// A request to change the state. Fresh identifiers are chosen by the caller so that
/// deciding stays a pure function.
public enum Command: Sendable, Equatable {
    case activate(License)
    case deactivate(licenseId: String)
    case acquire(AcquireRequest)
    case renew(leaseId: String)
    case release(leaseId: String)
    /// An administrator voids a borrow (its seats stay counted until its expiry).
    case revokeBorrow(leaseId: String)
    case reserve(feature: String, count: UInt32, holder: String, newId: String)
    case unreserve(reservationId: String)
    case resetServerId(newId: String)
    /// Remove every lease whose expiry time has passed.
    case expireLeases
    /// Record an administrative action in the audit trail (the daemon's, never a caller's).
    case audit(AuditRecord)
    /// Record a refused acquisition in the usage history (the daemon's, never a caller's).
    case recordDenial(Denial)
}

public struct AcquireRequest: Sendable, Equatable {
    public var feature: String
    public var count: UInt32
    public var client: String
    public var ttlUSec: USec
    public var requestId: String?
    public var newLeaseId: String
    public var holder: Holder
    /// The usage policy the serving node decides under (configuration, not replicated).
    public var policy: UsagePolicy
    /// A borrow: seats taken to a machine that will be offline, for `ttlUSec`, never renewed.
    public var borrowFor: String?
    public init(
        feature: String, count: UInt32, client: String, ttlUSec: USec, requestId: String?, newLeaseId: String,
        holder: Holder = .unknown, policy: UsagePolicy = .open, borrowFor machineId: String? = nil
    ) {
        self.borrowFor = machineId
        self.policy = policy
        self.feature = feature
        self.count = count
        self.client = client
        self.ttlUSec = ttlUSec
        self.requestId = requestId
        self.newLeaseId = newLeaseId
        self.holder = holder
    }
}

extension Command {
    /// Commands after which seats may be free that were not: waiting requests are tried again.
    public var maySeatWaiters: Bool {
        switch self {
        case .release, .unreserve, .activate, .expireLeases: return true
        case .acquire, .renew, .revokeBorrow, .deactivate, .reserve, .resetServerId, .audit, .recordDenial:
            return false
        }
    }

    /// Changes of the license configuration (as opposed to seat use by products).
    public var isAdministrative: Bool {
        switch self {
        case .activate, .deactivate, .reserve, .unreserve, .resetServerId: return true
        // Revoking a borrow, like an administrator's release, is about seats in use: the
        // serving node does it.
        case .acquire, .renew, .release, .revokeBorrow, .expireLeases, .audit, .recordDenial: return false
        }
    }
}

/// What a successful command answers.
public enum Outcome: Sendable, Equatable {
    case licenseActivated(License)
    case licenseDeactivated(License)
    /// `existing` is true when a retried request id returned the lease granted before.
    case leaseGranted(Lease, existing: Bool)
    case leaseRenewed(Lease)
    case leaseReleased(Lease)
    case borrowRevoked(Lease)
    case reservationAdded(Reservation)
    case reservationRemoved(Reservation)
    case serverIdReset(String)
    case expired([Lease])
    case audited(AuditRecord)
    case denialRecorded(Denial)
    /// An acquisition waits for a seat (`wait_usec`); its answer is the grant, or the refusal
    /// when the wait runs out.
    case waiting
}

public struct Decision: Sendable, Equatable {
    public var outcome: Outcome
    public var changes: [Change]
}

extension LicenseState {
    /// Checks `command` from `caller` at time `now` and says what it would change.
    /// Expired leases must have been removed first (`expireLeases`), so that every
    /// decision sees only live leases.
    public func decide(_ command: Command, caller: Caller, now: USec) -> Result<Decision, TandemError> {
        do throws(TandemError) {
            return .success(try decideThrowing(command, caller: caller, now: now))
        } catch {
            return .failure(error)
        }
    }

    private func requireAdmin(_ caller: Caller, _ action: String) throws(TandemError) {
        guard caller.isAdmin else { throw .needsAdministrator(action) }
    }

    private func ownedLease(_ id: String, _ caller: Caller, now: USec) throws(TandemError) -> Lease {
        guard let lease = activeLease(id, at: now) else {
            throw TandemError(.leaseNotFound, "no lease \(quoted(id))")
        }
        guard caller.owns(lease) else {
            throw TandemError(
                .accessDenied, "lease \(quoted(id)) belongs to another \(caller.network ? "token" : "user")")
        }
        return lease
    }

    private func decideThrowing(_ command: Command, caller: Caller, now: USec) throws(TandemError) -> Decision {
        switch command {
        case .activate(let license):
            try requireAdmin(caller, "ActivateLicense")
            guard license.issuedTo.contains(serverId) else {
                throw TandemError(
                    .wrongServer,
                    "license \(quoted(license.id)) is issued to \(license.issuedTo.joined(separator: ", ")), "
                        + "not to this server (\(serverId))"
                )
            }
            guard !license.isExpired(at: now) else {
                throw TandemError(.licenseExpired, "license \(quoted(license.id)) expired")
            }
            guard licenses[license.id] == nil else {
                throw TandemError(.licenseAlreadyActive, "license \(quoted(license.id)) is already active")
            }
            var l = license
            l.activatedUSec = now
            return Decision(outcome: .licenseActivated(l), changes: [.licenseActivated(l)])

        case .deactivate(let id):
            try requireAdmin(caller, "DeactivateLicense")
            guard let license = licenses[id] else {
                throw TandemError(.licenseNotFound, "no active license \(quoted(id))")
            }
            try checkSeatsRemain(without: license, now: now)
            return Decision(outcome: .licenseDeactivated(license), changes: [.licenseDeactivated(id: id)])

        case .acquire(let req):
            try Validate.identifier(req.feature, "feature")
            try Validate.count(req.count)
            try Validate.text(req.client, "client")
            if let user = req.holder.user { try Validate.text(user, "user", max: 128) }
            if let host = req.holder.host { try Validate.text(host, "host", max: 255) }
            if let r = req.requestId {
                try Validate.text(r, "request_id", max: 128)
                if var existing = lease(forRequest: r, client: req.client), existing.expiresUSec > now {
                    // The request id names a lease only to the caller that took it.
                    guard caller.owns(existing) else {
                        throw TandemError(.accessDenied, "request_id \(quoted(r)) was used by another caller")
                    }
                    guard existing.feature == req.feature && existing.count == req.count,
                        existing.machineId == req.borrowFor
                    else {
                        throw TandemError(
                            .invalidArgs, "request_id \(quoted(r)) was already used for a different acquisition")
                    }
                    // A borrow's expiry is in its certificate: a retry gets it unchanged, unless it
                    // was revoked (a new certificate for it is not given out).
                    if existing.borrowRevokedUSec != nil {
                        throw TandemError(
                            .accessDenied, "borrow \(quoted(existing.id)) was revoked by an administrator")
                    }
                    if existing.isBorrowed {
                        return Decision(outcome: .leaseGranted(existing, existing: true), changes: [])
                    }
                    // A retry (lost answer, failover) gets the same lease, renewed from now: the
                    // client reckons its lease time from when it sent the retry.
                    existing.expiresUSec = max(existing.expiresUSec, now + existing.ttlUSec)
                    return Decision(
                        outcome: .leaseGranted(existing, existing: true),
                        changes: [.leaseRenewed(id: existing.id, expiresUSec: existing.expiresUSec)])
                }
            }
            guard licenses.values.contains(where: { $0.feature == req.feature }) else {
                throw TandemError(.unknownFeature, "no active license for feature \(quoted(req.feature))")
            }
            let rules = req.policy.features[req.feature]
            if let rules { try admit(req, rules) }
            if let machine = req.borrowFor { try admitBorrow(req, machine, rules) }
            let free = available(req.feature, for: req.client, at: now)
            guard req.count <= free else {
                throw TandemError(
                    .insufficientSeats,
                    "feature \(quoted(req.feature)): \(req.count) seats requested, \(free) available")
            }
            if let rules { try checkPolicyReserves(req, rules, free: free) }
            // MaxLeaseSec= bounds what a client renews; a borrow's length is bounded by Borrow=.
            let ttl = req.borrowFor != nil ? req.ttlUSec : min(req.ttlUSec, rules?.maxLeaseUSec ?? req.ttlUSec)
            var lease = Lease(
                id: req.newLeaseId, feature: req.feature, client: req.client, count: req.count,
                uid: caller.uid, token: caller.network ? caller.token : nil, holder: req.holder,
                requestId: req.requestId,
                acquiredUSec: now,
                expiresUSec: now + ttl, ttlUSec: ttl, epoch: epoch)
            lease.machineId = req.borrowFor
            return Decision(outcome: .leaseGranted(lease, existing: false), changes: [.leaseGranted(lease)])

        case .renew(let id):
            var lease = try ownedLease(id, caller, now: now)
            guard !lease.isBorrowed else {
                throw TandemError(
                    .invalidArgs,
                    "lease \(quoted(id)) is a borrow: it is not renewed, it ends when its certificate expires")
            }
            lease.expiresUSec = now + lease.ttlUSec
            return Decision(
                outcome: .leaseRenewed(lease), changes: [.leaseRenewed(id: id, expiresUSec: lease.expiresUSec)])

        case .release(let id):
            let lease = try ownedLease(id, caller, now: now)
            // An administrator's release of a lease that is not theirs is a revocation.
            let revoked = !caller.withoutAdministration.owns(lease)
            if revoked && lease.isBorrowed {
                throw TandemError(
                    .invalidArgs,
                    "lease \(quoted(id)) is a borrow: its machine is away and keeps its seats until its certificate"
                        + " expires; revoke it (RevokeBorrow), or its holder returns it")
            }
            return Decision(
                outcome: .leaseReleased(lease), changes: [.leaseReleased(id: id, atUSec: now, revoked: revoked)])

        case .revokeBorrow(let id):
            try requireAdmin(caller, "RevokeBorrow")
            guard let lease = activeLease(id, at: now), lease.isBorrowed else {
                throw TandemError(.leaseNotFound, "no borrow \(quoted(id))")
            }
            guard lease.borrowRevokedUSec == nil else { return Decision(outcome: .borrowRevoked(lease), changes: []) }
            var revoked = lease
            revoked.borrowRevokedUSec = now
            return Decision(outcome: .borrowRevoked(revoked), changes: [.borrowRevoked(id: id, atUSec: now)])

        case .reserve(let feature, let count, let holder, let newId):
            try requireAdmin(caller, "Reserve")
            try Validate.identifier(feature, "feature")
            try Validate.count(count)
            try Validate.text(holder, "holder")
            guard licenses.values.contains(where: { $0.feature == feature }) else {
                throw TandemError(.unknownFeature, "no active license for feature \(quoted(feature))")
            }
            // Reservations never promise more seats than there are, and the new one must fit in
            // what is neither used nor already set aside.
            let r = Reservation(id: newId, feature: feature, holder: holder, count: count)
            var after = self
            after.apply(.reservationAdded(r))
            let seats = Int64(seats(feature, at: now))
            if Int64(after.setAside(feature)) > seats
                || Int64(inUse(feature)) + Int64(after.idleReserved(feature, exceptHolder: nil)) > seats
            {
                throw TandemError(
                    .insufficientSeats,
                    "feature \(quoted(feature)): only \(reservable(feature, at: now)) seats can be reserved now")
            }
            return Decision(outcome: .reservationAdded(r), changes: [.reservationAdded(r)])

        case .unreserve(let id):
            try requireAdmin(caller, "Unreserve")
            guard let r = reservations[id] else {
                throw TandemError(.reservationNotFound, "no reservation \(quoted(id))")
            }
            return Decision(outcome: .reservationRemoved(r), changes: [.reservationRemoved(id: id)])

        case .resetServerId(let newId):
            try requireAdmin(caller, "ResetServerId")
            guard licenses.isEmpty else {
                throw TandemError(
                    .licensesActive,
                    "\(licenses.count) license(s) are active; deactivate them before resetting the server id")
            }
            guard reservations.isEmpty else {
                throw TandemError(
                    .seatsReserved,
                    "\(reservations.count) reservation(s) stand; remove them (Unreserve) before resetting the server id"
                )
            }
            return Decision(outcome: .serverIdReset(newId), changes: [.serverIdSet(id: newId)])

        case .expireLeases:
            let gone = leases.values.filter { $0.expiresUSec <= now }.sorted {
                ($0.expiresUSec, $0.id) < ($1.expiresUSec, $1.id)
            }
            return Decision(outcome: .expired(gone), changes: gone.map { .leaseExpired(id: $0.id) })

        case .audit(let record):
            return Decision(outcome: .audited(record), changes: [.audited(record)])

        case .recordDenial(let denial):
            return Decision(outcome: .denialRecorded(denial), changes: [.acquisitionDenied(denial)])
        }
    }
}

extension LicenseState {
    /// Refuses to remove `license` when the seats left could not cover the leases and the
    /// reservations of its feature, and the last license of a feature while reservations of
    /// it stand (expired or not: a reservation never outlives its feature's licenses). Other
    /// expired licenses count no seats any more: removing them changes no account.
    func checkSeatsRemain(without license: License, now: USec) throws(TandemError) {
        let f = license.feature
        let expired = license.isExpired(at: now)
        let remaining = Int64(seats(f, at: now)) - (expired ? 0 : Int64(license.seats))
        let inUse = Int64(inUse(f)), setAside = Int64(setAside(f))
        if !expired, inUse > remaining {
            throw TandemError(
                .licenseInUse,
                "license \(quoted(license.id)): \(inUse) seats of \(quoted(f)) are in use"
                    + " and only \(remaining) would remain")
        }
        let standing = reservations.values.filter { $0.feature == f }.count
        if standing > 0, !licenses.values.contains(where: { $0.feature == f && $0.id != license.id }) {
            throw TandemError(
                .seatsReserved,
                "license \(quoted(license.id)) is the last of \(quoted(f)) and \(standing)"
                    + " reservation(s) of it stand; remove them (Unreserve) first")
        }
        guard !expired else { return }
        if setAside > remaining || inUse + Int64(idleReserved(f, exceptHolder: nil)) > remaining {
            throw TandemError(
                .seatsReserved,
                "license \(quoted(license.id)): \(setAside) seats of \(quoted(f)) are reserved"
                    + " (\(inUse) in use) and only \(remaining) would remain; remove reservations (Unreserve) first")
        }
    }

    /// Seats a new reservation of `feature` could take now.
    func reservable(_ feature: String, at now: USec) -> UInt32 {
        let seats = Int64(seats(feature, at: now))
        let left = min(
            seats - Int64(setAside(feature)),
            seats - Int64(inUse(feature)) - Int64(idleReserved(feature, exceptHolder: nil)))
        return UInt32(clamping: max(0, left))
    }
}

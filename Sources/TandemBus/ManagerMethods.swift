import Logging
import TandemBusClient
import TandemCore
import TandemEngine

/// The Manager's methods, one function each. Commands go to the engine and are answered once
/// their changes are durable; reads wait for the commands submitted before them.
extension LicenseManagerServer {
    func handler(_ method: ManagerMethod) -> (BusCall) -> BusAnswer {
        switch method {
        case .getActivationRequest: return { [unowned self] _ in read([.string(engine.activationRequest)]) }
        case .activateLicense: return { [unowned self] in authorized($0, .manageLicenses, activateLicense) }
        case .deactivateLicense: return { [unowned self] in authorized($0, .manageLicenses, deactivateLicense) }
        case .listLicenses: return { [unowned self] _ in read([LicenseRow.array(licenseRows())]) }
        case .acquire: return { [unowned self] in acquire($0) }
        case .renew: return { [unowned self] in authorized($0, ifNotOwner: renew) }
        case .release: return { [unowned self] in authorized($0, ifNotOwner: release) }
        case .listLeases: return { [unowned self] _ in read([LeaseRow.array(leaseRows())]) }
        case .reserve: return { [unowned self] in authorized($0, .manageSeats, reserve) }
        case .unreserve: return { [unowned self] in authorized($0, .manageSeats, unreserve) }
        case .listReservations: return { [unowned self] _ in read([ReservationRow.array(reservationRows())]) }
        case .getUsage: return { [unowned self] _ in read([UsageRow.array(usageRows())]) }
        case .resetServerId: return { [unowned self] in authorized($0, .manageLicenses, resetServerId) }
        case .prepareBackup:
            return { [unowned self] in
                authorized($0, .managePair) { [unowned self] call in
                    pairing(call, ["primary": call.string(0)]) { $0.prepareBackup(primary: call.string(0), done: $1) }
                }
            }
        case .enableBackup:
            return { [unowned self] in
                authorized($0, .managePair) { [unowned self] call in
                    pairing(call, ["backup": call.string(0)]) { $0.enableBackup(backup: call.string(0), done: $1) }
                }
            }
        case .disableBackup:
            return { [unowned self] in
                authorized($0, .managePair) { [unowned self] call in pairing(call) { $0.disableBackup(done: $1) } }
            }
        case .sync:
            return { [unowned self] in
                authorized($0, .managePair) { [unowned self] call in pairing(call) { $0.sync(done: $1) } }
            }
        case .prepareRemoval:
            return { [unowned self] in
                authorized($0, .managePair) { [unowned self] call in pairing(call) { $0.prepareRemoval(done: $1) } }
            }
        case .listAudit: return { [unowned self] in authorized($0, .readAudit, listAudit) }
        case .listLeaseHolders: return { [unowned self] _ in read([LeaseHolderRow.array(leaseHolderRows())]) }
        case .listQueue:
            return { [unowned self] _ in
                read([
                    QueueRow.array(
                        engine.waiting.map {
                            QueueRow(
                                feature: $0.request.feature, position: UInt32($0.position), client: $0.request.client,
                                count: $0.request.count, user: $0.request.holder.user ?? "",
                                host: $0.request.holder.host ?? "", sinceUSec: $0.sinceUSec, untilUSec: $0.untilUSec)
                        })
                ])
            }
        case .listBorrows:
            return { [unowned self] _ in
                read([
                    BorrowRow.array(
                        engine.state.activeLeases(at: engine.now).filter(\.isBorrowed).map {
                            BorrowRow(
                                leaseId: $0.id, feature: $0.feature, count: $0.count, machineId: $0.machineId ?? "",
                                user: $0.user ?? "", host: $0.host ?? "", acquiredUSec: $0.acquiredUSec,
                                expiresUSec: $0.expiresUSec, revokedUSec: $0.borrowRevokedUSec ?? 0)
                        })
                ])
            }
        case .revokeBorrow: return { [unowned self] in authorized($0, .manageSeats, revokeBorrow) }
        case .getUsageHistory: return { [unowned self] in getUsageHistory($0) }
        case .listSessions: return { [unowned self] in listSessions($0) }
        case .listDenials: return { [unowned self] in listDenials($0) }
        case .getUsageReport: return { [unowned self] in getUsageReport($0) }
        case .getPeerStatus:
            return { [unowned self] _ in
                read([.vardict((pairControl?.peerStatus() ?? []).map { ($0.0.rawValue, $0.1) })])
            }
        }
    }

    // MARK: - Authorization

    /// Runs `body` with the caller polkit says it is for `action`: root is an administrator
    /// without asking; polkit's yes makes one, its no does not (the body then refuses, and
    /// audits, as for any caller who is not); where polkit is not on the bus, uid and group
    /// decide as before. A challenge the caller did not allow to wait for is
    /// InteractiveAuthorizationRequired; any failure in between refuses (fails closed).
    func authorized(_ call: BusCall, _ action: PolkitAction, _ body: @escaping (BusCall) -> BusAnswer) -> BusAnswer {
        let who = caller(call.message)
        guard who.uid != 0, let polkit else { return body(call) }
        return .later { [engine] done in
            polkit.check(action, for: call.message) { verdict in
                var judged = call
                switch verdict {
                case .unavailable:
                    break
                case .allowed:
                    judged.authorizedCaller = Caller(uid: who.uid, isAdmin: true)
                case .denied:
                    judged.authorizedCaller = Caller(uid: who.uid, isAdmin: false)
                case .challenge:
                    let e = TandemError(
                        .interactiveAuthorizationRequired,
                        "\(call.member) needs an authentication: allow interactive authorization (busctl"
                            + " --allow-interactive-authorization=yes) or ask an administrator")
                    engine.audit(call.member, via: .dbus, caller: who, error: e)
                    return done(.failure(e))
                case .failed(let why):
                    let e = TandemError(.accessDenied, "\(call.member): authorization failed (\(why))")
                    engine.audit(call.member, via: .dbus, caller: who, error: e)
                    return done(.failure(e))
                }
                switch body(judged) {
                case .now(let result): done(result)
                case .later(let answer): answer(done)
                }
            }
        }
    }

    /// Renew and Release: polkit (manage-seats) is asked only about another caller's lease.
    func authorized(_ call: BusCall, ifNotOwner body: @escaping (BusCall) -> BusAnswer) -> BusAnswer {
        let who = caller(call.message)
        guard let lease = engine.state.activeLease(call.string(0), at: engine.now),
            !who.withoutAdministration.owns(lease)
        else { return body(call) }
        return authorized(call, .manageSeats, body)
    }

    // MARK: - Answers

    /// A read: answered once every command submitted before it is answered, so that it shows
    /// only what is durable.
    func read(_ values: [BusValue]) -> BusAnswer {
        .later { [engine] done in engine.whenSettled { done(.success(values)) } }
    }

    private func submit(_ command: Command, _ call: BusCall) -> Ticket {
        engine.submit(command, caller: caller(call))
    }

    /// Records an administrative call in the audit trail as it was decided (refused, or what will
    /// be done: `arguments`, and those `fromOutcome` adds), and returns its ticket.
    private func audited(
        _ call: BusCall, _ action: String, _ ticket: Ticket, _ arguments: [String: String] = [:],
        fromOutcome: (Outcome) -> [String: String] = { _ in [:] }
    ) -> Ticket {
        let who = caller(call)
        switch ticket.decision {
        case .success(let o):
            engine.audit(action, via: .dbus, caller: who, arguments: arguments.merging(fromOutcome(o)) { $1 })
        case .failure(let e):
            engine.audit(action, via: .dbus, caller: who, arguments: arguments, error: e)
        }
        return ticket
    }

    /// A command: refused at once, or answered with `values` of its outcome once it is durable.
    private func answer(_ call: BusCall, _ ticket: Ticket, _ values: @escaping (Outcome) -> [BusValue]) -> BusAnswer {
        if case .failure(let e) = ticket.decision {
            logger.debug(
                "refused",
                metadata: ["member": "\(call.member)", "error": "\(e.code.rawValue)", "reason": "\(e.message)"])
            return .error(e)
        }
        return .later { done in ticket.whenAnswered { done($0.map(values)) } }
    }

    // MARK: - Methods

    private func activateLicense(_ call: BusCall) -> BusAnswer {
        let ticket = audited(
            call, "ActivateLicense", engine.activate(document: call.string(0), caller: caller(call))
        ) { o in
            guard case .licenseActivated(let l) = o else { return [:] }
            return ["license_id": l.id, "product": l.product, "feature": l.feature, "seats": "\(l.seats)"]
        }
        return answer(call, ticket) { o in
            guard case .licenseActivated(let l) = o else { return [] }
            return [.string(l.id), .objectPath(BusNames.licensePath(l.id))]
        }
    }

    private func unreserve(_ call: BusCall) -> BusAnswer {
        let id = call.string(0)
        return answer(
            call, audited(call, "Unreserve", submit(.unreserve(reservationId: id), call), ["reservation_id": id])
        ) { _ in [] }
    }

    private func revokeBorrow(_ call: BusCall) -> BusAnswer {
        let id = call.string(0)
        let ticket = audited(call, "RevokeBorrow", submit(.revokeBorrow(leaseId: id), call), ["lease_id": id]) { o in
            guard case .borrowRevoked(let l) = o else { return [:] }
            return ["feature": l.feature, "count": "\(l.count)", "machine_id": l.machineId ?? ""]
        }
        return answer(call, ticket) { _ in [] }
    }

    private func deactivateLicense(_ call: BusCall) -> BusAnswer {
        let id = call.string(0)
        let ticket = audited(call, "DeactivateLicense", submit(.deactivate(licenseId: id), call), ["license_id": id]) {
            o in
            guard case .licenseDeactivated(let l) = o else { return [:] }
            return ["feature": l.feature, "seats": "\(l.seats)"]
        }
        return answer(call, ticket) { _ in [] }
    }

    private func acquire(_ call: BusCall) -> BusAnswer {
        var ttl: USec?
        var wait: USec = 0
        var requestId: String?
        var holder = Holder()
        var given: Set<String> = []
        for entry in call.args.count > 3 ? call.args[3].arrayValue ?? [] : [] {
            guard case .dictEntry(let k, .variant(let v)) = entry, let key = k.stringValue else { continue }
            guard given.insert(key).inserted else {
                return .error(TandemError(.invalidArgs, "option \(quoted(key)) is given twice"))
            }
            switch (key, v) {
            case ("ttl_usec", .uint64(let t)): ttl = t
            case ("wait_usec", .uint64(let t)): wait = t
            case ("request_id", .string(let s)): requestId = s
            case ("user", .string(let s)): holder.user = s
            case ("host", .string(let s)): holder.host = s
            case ("ttl_usec", _), ("wait_usec", _), ("request_id", _), ("user", _), ("host", _):
                return .error(
                    TandemError(
                        .invalidArgs, "option \(quoted(key)) must be of type \(key.hasSuffix("_usec") ? "t" : "s")"))
            default:
                return .error(TandemError(.invalidArgs, "unknown option \(quoted(key))"))
            }
        }
        let who = caller(call)
        // Without `user` and `host` options, the caller's login name and (a D-Bus caller is local)
        // this host's name are the holder's.
        if holder.user == nil { holder.user = who.uid.flatMap(engine.userName) }
        if holder.host == nil { holder.host = info.hostName }
        let ticket = engine.acquire(
            feature: call.string(0), count: call.uint32(1), client: call.string(2), ttlUSec: ttl,
            requestId: requestId, holder: holder, caller: who, waitUSec: wait)
        return answer(call, ticket) { o in
            guard case .leaseGranted(let l, _) = o else { return [] }
            return [.string(l.id), .uint64(l.expiresUSec)]
        }
    }

    private func renew(_ call: BusCall) -> BusAnswer {
        answer(call, submit(.renew(leaseId: call.string(0)), call)) { o in
            guard case .leaseRenewed(let l) = o else { return [] }
            return [.uint64(l.expiresUSec)]
        }
    }

    private func release(_ call: BusCall) -> BusAnswer {
        answer(call, submit(.release(leaseId: call.string(0)), call)) { _ in [] }
    }

    private func reserve(_ call: BusCall) -> BusAnswer {
        let (feature, count, holder) = (call.string(0), call.uint32(1), call.string(2))
        let ticket = audited(
            call, "Reserve",
            engine.reserve(feature: feature, count: count, holder: holder, caller: caller(call)),
            ["feature": feature, "count": "\(count)", "holder": holder]
        ) { o in
            guard case .reservationAdded(let r) = o else { return [:] }
            return ["reservation_id": r.id]
        }
        return answer(call, ticket) { o in
            guard case .reservationAdded(let r) = o else { return [] }
            return [.string(r.id)]
        }
    }

    private func resetServerId(_ call: BusCall) -> BusAnswer {
        let previous = engine.state.serverId
        let ticket = audited(
            call, "ResetServerId", engine.resetServerId(caller: caller(call)), ["previous_server_id": previous]
        ) { o in
            guard case .serverIdReset(let id) = o else { return [:] }
            return ["server_id": id]
        }
        return answer(call, ticket) { o in
            guard case .serverIdReset(let id) = o else { return [] }
            return [.string(id)]
        }
    }

    /// PrepareBackup, EnableBackup, DisableBackup and Sync: administrators only, with a pair link.
    /// The audit trail: administrators only (it says who did what). Records from `since_usec`
    /// on, the newest `limit` of them (0: 10000; at most 100000), oldest first.
    private func listAudit(_ call: BusCall) -> BusAnswer {
        guard caller(call).isAdmin else {
            return .error(.needsAdministrator("ListAudit"))
        }
        let since = call.args.first?.uint64Value ?? 0
        let asked = Int(call.uint32(1))
        guard asked <= 100_000 else { return .error(TandemError(.invalidArgs, "limit is at most 100000")) }
        return .later { [engine] done in
            engine.whenSettled {
                do {
                    let rows = try engine.store.audit(sinceUSec: since, limit: asked == 0 ? 10_000 : asked).map {
                        AuditRow(
                            id: $0.id, timeUSec: $0.timeUSec, serverId: $0.serverId, action: $0.action,
                            via: $0.via.rawValue, uid: $0.uid ?? AuditRow.noUid, user: $0.user ?? "",
                            token: $0.token ?? "", arguments: $0.arguments, result: $0.result, detail: $0.detail)
                    }
                    done(.success([AuditRow.array(rows)]))
                } catch {
                    done(.failure(TandemError(.failed, "cannot read the audit trail: \(error)")))
                }
            }
        }
    }

    /// Audited when it is done or refused (`arguments`: what the call names).
    private func pairing(
        _ call: BusCall, _ arguments: [String: String] = [:],
        _ start: @escaping (PairControl, @escaping (TandemError?) -> Void) -> Void
    ) -> BusAnswer {
        let who = caller(call), action = call.member
        let refused = { [engine] (error: TandemError) -> BusAnswer in
            engine.audit(action, via: .dbus, caller: who, arguments: arguments, error: error)
            return .error(error)
        }
        guard who.isAdmin else {
            return refused(.needsAdministrator(action))
        }
        if let refusal { return refused(refusal) }
        guard let pc = pairControl else {
            return refused(TandemError(.pairState, "pairing needs KeyFile= in the [Pair] section of tandemd.conf"))
        }
        return .later { [engine] done in
            start(pc) { error in
                engine.audit(action, via: .dbus, caller: who, arguments: arguments, error: error)
                done(error.map { .failure($0) } ?? .success([]))
            }
        }
    }

    // MARK: - Rows

    private func licenseRows() -> [LicenseRow] {
        let state = engine.state
        let now = engine.now
        var shares: [String: LicenseShare] = [:]
        let policy = engine.settings.policy
        for f in state.features {
            for share in state.shares(f, at: now, policy: policy) { shares[share.licenseId] = share }
        }
        return state.licenses.values.sorted { $0.id < $1.id }.map { l in
            let u = shares[l.id]!
            return LicenseRow(
                id: l.id, product: l.product, feature: l.feature, seats: l.seats, inUse: u.inUse,
                reserved: u.reserved, notAfterUSec: l.notAfterUSec)
        }
    }

    private func leaseRows() -> [LeaseRow] {
        engine.state.activeLeases(at: engine.now).map { l in
            LeaseRow(
                id: l.id, feature: l.feature, client: l.client, count: l.count, acquiredUSec: l.acquiredUSec,
                expiresUSec: l.expiresUSec)
        }
    }

    private func reservationRows() -> [ReservationRow] {
        engine.state.reservations.values.sorted { $0.id < $1.id }.map { r in
            ReservationRow(id: r.id, feature: r.feature, holder: r.holder, count: r.count)
        }
    }

    private func usageRows() -> [UsageRow] {
        engine.state.usage(at: engine.now, policy: engine.settings.policy).map { u in
            UsageRow(
                feature: u.feature, seats: u.seats, inUse: u.inUse, reserved: u.reserved, available: u.available,
                denied: u.denied)
        }
    }
}

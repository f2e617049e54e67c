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
        case .activateLicense: return { [unowned self] in activateLicense($0) }
        case .deactivateLicense: return { [unowned self] in deactivateLicense($0) }
        case .listLicenses: return { [unowned self] _ in read([LicenseRow.array(licenseRows())]) }
        case .acquire: return { [unowned self] in acquire($0) }
        case .renew: return { [unowned self] in renew($0) }
        case .release:
            return { [unowned self] call in answer(call, submit(.release(leaseId: call.string(0)), call)) { _ in [] } }
        case .listLeases: return { [unowned self] _ in read([LeaseRow.array(leaseRows())]) }
        case .reserve: return { [unowned self] in reserve($0) }
        case .unreserve:
            return { [unowned self] call in
                answer(call, submit(.unreserve(reservationId: call.string(0)), call)) { _ in [] }
            }
        case .listReservations: return { [unowned self] _ in read([ReservationRow.array(reservationRows())]) }
        case .getUsage: return { [unowned self] _ in read([UsageRow.array(usageRows())]) }
        case .resetServerId: return { [unowned self] in resetServerId($0) }
        case .prepareBackup:
            return { [unowned self] call in pairing(call) { $0.prepareBackup(primary: call.string(0), done: $1) } }
        case .enableBackup:
            return { [unowned self] call in pairing(call) { $0.enableBackup(backup: call.string(0), done: $1) } }
        case .disableBackup: return { [unowned self] call in pairing(call) { $0.disableBackup(done: $1) } }
        case .sync: return { [unowned self] call in pairing(call) { $0.sync(done: $1) } }
        case .getPeerStatus:
            return { [unowned self] _ in
                read([.vardict((pairControl?.peerStatus() ?? []).map { ($0.0.rawValue, $0.1) })])
            }
        }
    }

    // MARK: - Answers

    /// A read: answered once every command submitted before it is answered, so that it shows
    /// only what is durable.
    private func read(_ values: [BusValue]) -> BusAnswer {
        .later { [engine] done in engine.whenSettled { done(.success(values)) } }
    }

    private func submit(_ command: Command, _ call: BusCall) -> Ticket {
        engine.submit(command, caller: caller(call.message))
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
        answer(call, engine.activate(document: call.string(0), caller: caller(call.message))) { [logger] o in
            guard case .licenseActivated(let l) = o else { return [] }
            logger.notice(
                "license activated",
                metadata: ["license_id": "\(l.id)", "feature": "\(l.feature)", "seats": "\(l.seats)"])
            return [.string(l.id), .objectPath(BusNames.licensePath(l.id))]
        }
    }

    private func deactivateLicense(_ call: BusCall) -> BusAnswer {
        answer(call, submit(.deactivate(licenseId: call.string(0)), call)) { [logger] o in
            if case .licenseDeactivated(let l) = o {
                logger.notice("license deactivated", metadata: ["license_id": "\(l.id)"])
            }
            return []
        }
    }

    private func acquire(_ call: BusCall) -> BusAnswer {
        var ttl: USec?
        var requestId: String?
        var given: Set<String> = []
        for entry in call.args.count > 3 ? call.args[3].arrayValue ?? [] : [] {
            guard case .dictEntry(let k, .variant(let v)) = entry, let key = k.stringValue else { continue }
            guard given.insert(key).inserted else {
                return .error(TandemError(.invalidArgs, "option \(quoted(key)) is given twice"))
            }
            switch (key, v) {
            case ("ttl_usec", .uint64(let t)): ttl = t
            case ("request_id", .string(let s)): requestId = s
            case ("ttl_usec", _), ("request_id", _):
                return .error(
                    TandemError(.invalidArgs, "option \(quoted(key)) must be of type \(key == "ttl_usec" ? "t" : "s")"))
            default:
                return .error(TandemError(.invalidArgs, "unknown option \(quoted(key))"))
            }
        }
        let ticket = engine.acquire(
            feature: call.string(0), count: call.uint32(1), client: call.string(2), ttlUSec: ttl,
            requestId: requestId, caller: caller(call.message))
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

    private func reserve(_ call: BusCall) -> BusAnswer {
        let ticket = engine.reserve(
            feature: call.string(0), count: call.uint32(1), holder: call.string(2), caller: caller(call.message))
        return answer(call, ticket) { [logger] o in
            guard case .reservationAdded(let r) = o else { return [] }
            logger.notice(
                "seats reserved",
                metadata: [
                    "reservation_id": "\(r.id)", "feature": "\(r.feature)", "holder": "\(r.holder)",
                    "count": "\(r.count)"
                ])
            return [.string(r.id)]
        }
    }

    private func resetServerId(_ call: BusCall) -> BusAnswer {
        answer(call, engine.resetServerId(caller: caller(call.message))) { [logger] o in
            guard case .serverIdReset(let id) = o else { return [] }
            logger.notice("License Server ID reset", metadata: ["server_id": "\(id)"])
            return [.string(id)]
        }
    }

    /// PrepareBackup, EnableBackup, DisableBackup and Sync: administrators only, with a pair link.
    private func pairing(
        _ call: BusCall, _ start: @escaping (PairControl, @escaping (TandemError?) -> Void) -> Void
    ) -> BusAnswer {
        guard caller(call.message).isAdmin else {
            return .error(TandemError(.accessDenied, "\(call.member) needs root or membership in the admin group"))
        }
        if let refusal { return .error(refusal) }
        guard let pc = pairControl else {
            return .error(TandemError(.pairState, "pairing needs KeyFile= in the [Pair] section of tandemd.conf"))
        }
        return .later { [logger] done in
            start(pc) { error in
                if let error {
                    logger.notice(
                        "\(call.member) refused",
                        metadata: ["error": "\(error.code.rawValue)", "reason": "\(error.message)"])
                    done(.failure(error))
                } else {
                    done(.success([]))
                }
            }
        }
    }

    // MARK: - Rows

    private func licenseRows() -> [LicenseRow] {
        let state = engine.state
        let now = engine.now
        var shares: [String: LicenseShare] = [:]
        for f in state.features { for share in state.shares(f, at: now) { shares[share.licenseId] = share } }
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
        engine.state.usage(at: engine.now).map { u in
            UsageRow(
                feature: u.feature, seats: u.seats, inUse: u.inUse, reserved: u.reserved, available: u.available,
                denied: u.denied)
        }
    }
}

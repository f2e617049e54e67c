import TandemCore

/// What a run of log entries does to the state tables, row by row, as `LicenseState.apply`
/// would: compaction folds the entries first and then writes each row once, so a lease
/// granted and released within the run is one DELETE of nothing rather than an INSERT and a
/// DELETE, and a lease renewed a hundred times is one UPDATE.
struct TableFold {
    enum Row<Value> {
        case put(Value)
        case delete
    }

    private(set) var licenses: [String: Row<License>] = [:]
    private(set) var leases: [String: Row<Lease>] = [:]
    /// New expiry times of leases that are in the tables (not put by this fold).
    private(set) var renewals: [String: USec] = [:]
    /// Revocation times of borrows that are in the tables (not put by this fold).
    private(set) var revocations: [String: USec] = [:]
    private(set) var reservations: [String: Row<Reservation>] = [:]
    private(set) var serverId: String?
    private(set) var serverIdUsed: Bool?
    private(set) var epoch: UInt64?
    private(set) var merged: [UInt64: UInt64] = [:]
    /// Audit records, in log order (appended to the audit table, never replaced).
    private(set) var audits: [AuditRecord] = []

    init() {}

    init(_ changes: some Sequence<Change>) {
        for c in changes { add(c) }
    }

    mutating func add(_ change: Change) {
        switch change {
        case .serverIdSet(let id):
            serverId = id
            serverIdUsed = false
        case .licenseActivated(let l):
            licenses[l.id] = .put(l)
            serverIdUsed = true
        case .licenseDeactivated(let id):
            licenses[id] = .delete
        case .leaseGranted(let l):
            leases[l.id] = .put(l)
            renewals[l.id] = nil
            revocations[l.id] = nil
        case .leaseRenewed(let id, let expires):
            switch leases[id] {
            case .put(var l)?:
                l.expiresUSec = expires
                leases[id] = .put(l)
            case .delete?: break  // renewing a lease that is gone changes nothing
            case nil: renewals[id] = expires
            }
        case .borrowRevoked(let id, let at):
            switch leases[id] {
            case .put(var l)?:
                l.borrowRevokedUSec = at
                leases[id] = .put(l)
            case .delete?: break
            case nil: revocations[id] = at
            }
        case .leaseReleased(let id, _, _), .leaseExpired(let id):
            leases[id] = .delete
            renewals[id] = nil
            revocations[id] = nil
        case .reservationAdded(let r):
            reservations[r.id] = .put(r)
        case .reservationRemoved(let id):
            reservations[id] = .delete
        case .epochStarted(let e):
            epoch = e
        case .leasesMerged(let e, let through):
            merged[e] = max(merged[e] ?? 0, through)
        case .audited(let record):
            audits.append(record)
        case .acquisitionDenied:
            break  // written to the history tables when committed (`Store.recordHistory`)
        }
    }
}

extension Store {
    /// Writes a fold into the tables (inside a transaction). A row written again replaces the
    /// one of that id, as `apply` does, so a compaction never fails on what a commit accepted.
    func write(_ fold: TableFold) throws {
        if let id = fold.serverId { try setMeta("server_id", id) }
        if let used = fold.serverIdUsed { try setMeta("server_id_used", used ? "1" : "0") }
        if let e = fold.epoch { try setMeta("epoch", String(e)) }
        for (e, through) in fold.merged {
            try db.run(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                    + " SET value = CAST(MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                .text("leases_merged_\(e)"), .text(String(through)))
        }
        for (id, row) in fold.licenses {
            switch row {
            case .put(let l):
                try db.run(
                    "INSERT OR REPLACE INTO licenses (id, product, feature, seats, not_after_usec, issued_to, key_id,"
                        + " document, activated_usec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    .text(l.id), .text(l.product), .text(l.feature), .int(Int64(l.seats)),
                    .int(Int64(l.notAfterUSec)), .text(l.issuedTo.joined(separator: ",")), .text(l.keyId),
                    .text(l.document), .int(Int64(l.activatedUSec)))
            case .delete: try db.run("DELETE FROM licenses WHERE id = ?", .text(id))
            }
        }
        for (id, row) in fold.leases {
            switch row {
            case .put(let l):
                try db.run(
                    "INSERT OR REPLACE INTO leases (id, feature, client, count, uid, request_id, acquired_usec,"
                        + " expires_usec, ttl_usec, epoch, token, user, host, machine_id, borrow_revoked_usec)"
                        + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    .text(l.id), .text(l.feature), .text(l.client), .int(Int64(l.count)),
                    l.uid.map { .int(Int64($0)) } ?? .null, l.requestId.map { .text($0) } ?? .null,
                    .int(Int64(l.acquiredUSec)), .int(Int64(l.expiresUSec)), .int(Int64(l.ttlUSec)),
                    .int(Int64(l.epoch)), Self.text(l.token), Self.text(l.user), Self.text(l.host),
                    Self.text(l.machineId), l.borrowRevokedUSec.map { .int(Int64($0)) } ?? .null)
            case .delete: try db.run("DELETE FROM leases WHERE id = ?", .text(id))
            }
        }
        for (id, expires) in fold.renewals {
            try db.run("UPDATE leases SET expires_usec = ? WHERE id = ?", .int(Int64(expires)), .text(id))
        }
        for (id, at) in fold.revocations {
            try db.run("UPDATE leases SET borrow_revoked_usec = ? WHERE id = ?", .int(Int64(at)), .text(id))
        }
        for a in fold.audits { try insertAudit(a) }
        if !fold.audits.isEmpty { try pruneAudit() }
        for (id, row) in fold.reservations {
            switch row {
            case .put(let r):
                try db.run(
                    "INSERT OR REPLACE INTO reservations (id, feature, holder, count) VALUES (?, ?, ?, ?)",
                    .text(r.id), .text(r.feature), .text(r.holder), .int(Int64(r.count)))
            case .delete: try db.run("DELETE FROM reservations WHERE id = ?", .text(id))
            }
        }
    }
}

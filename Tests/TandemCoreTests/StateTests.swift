import Testing
@testable import TandemCore

let admin = Caller(uid: 0, isAdmin: true)
let alice = Caller(uid: 1000, isAdmin: false)
let bob = Caller(uid: 1001, isAdmin: false)
let t0: USec = 1_800_000_000 * usecPerSecond

func license(
    _ id: String, feature: String = "cad", seats: UInt32 = 10, notAfter: USec = 0, to: [String] = ["SID-1"]
) -> License {
    License(
        id: id, product: "P", feature: feature, seats: seats, notAfterUSec: notAfter, issuedTo: to, keyId: "k",
        document: "doc")
}

func state(seats: UInt32 = 10) -> LicenseState {
    var s = LicenseState()
    s.apply(.serverIdSet(id: "SID-1"))
    s.apply(.licenseActivated(license("L1", seats: seats)))
    return s
}

func acquire(
    _ s: inout LicenseState, count: UInt32, client: String = "c", caller: Caller = alice, id: String,
    requestId: String? = nil, ttl: USec = 60 * usecPerSecond, now: USec = t0
) -> Result<Outcome, TandemError> {
    let r = s.decide(
        .acquire(
            AcquireRequest(
                feature: "cad", count: count, client: client, ttlUSec: ttl, requestId: requestId, newLeaseId: id)),
        caller: caller, now: now)
    if case .success(let d) = r { s.apply(d.changes); return .success(d.outcome) }
    if case .failure(let e) = r { return .failure(e) }
    fatalError()
}

extension Result {
    var error: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}

@Suite struct SeatAccounting {
    @Test func seatsOfSeveralLicensesAddUp() {
        var s = state(seats: 3)
        s.apply(.licenseActivated(license("L2", seats: 4)))
        #expect(s.seats("cad", at: t0) == 7)
        #expect(acquire(&s, count: 7, id: "a").error == nil)
        #expect(acquire(&s, count: 1, id: "b").error?.code == .insufficientSeats)
        #expect(s.inUse("cad") == 7)
    }

    @Test func unknownFeatureIsRefused() {
        var s = state()
        let r = s.decide(
            .acquire(
                AcquireRequest(feature: "nope", count: 1, client: "c", ttlUSec: 1, requestId: nil, newLeaseId: "x")),
            caller: alice, now: t0)
        #expect(r.error?.code == .unknownFeature)
        _ = acquire(&s, count: 1, id: "ok")
        #expect(s.leases.count == 1)
    }

    @Test func expiredLicenseGrantsNoSeats() {
        var s = state(seats: 5)
        s.apply(.licenseActivated(license("L2", seats: 5, notAfter: t0 - 1)))
        #expect(s.seats("cad", at: t0) == 5)
        #expect(acquire(&s, count: 6, id: "a").error?.code == .insufficientSeats)
    }

    @Test func invalidCountsAndClientsAreInvalidArgs() {
        var s = state()
        #expect(acquire(&s, count: 0, id: "a").error?.code == .invalidArgs)
        #expect(acquire(&s, count: 1, client: "", id: "a").error?.code == .invalidArgs)
        #expect(acquire(&s, count: 1, client: "bad\u{1}", id: "a").error?.code == .invalidArgs)
        #expect(s.leases.isEmpty)
    }
}

@Suite struct Leases {
    /// Leases are boxed (a state copy shares them): a copy stays a value all the same.
    @Test func aCopiedStateKeepsItsLeasesWhenTheOtherChanges() {
        var s = state()
        _ = acquire(&s, count: 2, id: "a")
        _ = acquire(&s, count: 1, id: "b")
        let copy = s
        #expect(copy.leases == s.leases && copy.leases.contains("a") && !copy.leases.contains("z"))
        s.apply(.leaseRenewed(id: "a", expiresUSec: t0 + 999))
        s.apply(.borrowRevoked(id: "b", atUSec: t0 + 5))
        #expect(copy.leases["a"]?.expiresUSec == t0 + 60 * usecPerSecond && s.leases["a"]?.expiresUSec == t0 + 999)
        #expect(copy.leases["b"]?.borrowRevokedUSec == nil && s.leases["b"]?.borrowRevokedUSec == t0 + 5)
        #expect(copy.leases != s.leases && copy != s)
        s.apply(.leaseReleased(id: "a", atUSec: t0 + 1, revoked: false))
        #expect(copy.leases.count == 2 && s.leases.count == 1 && copy.inUse("cad") == 3 && s.inUse("cad") == 1)
        // Equal contents are equal, whether or not they share boxes.
        var rebuilt = LicenseState(changes: s.asChanges)
        rebuilt.denied = s.denied
        #expect(rebuilt.leases == s.leases && Set(rebuilt.leases.keys) == ["b"])
        #expect(s.leases.values.map(\.id) == ["b"])
        // A lease renewed equals the same lease granted with that expiry.
        var granted = LicenseState()
        granted.apply(.leaseGranted(s.leases["b"]!))
        var renewed = LicenseState()
        var original = s.leases["b"]!
        original.expiresUSec = t0 + 1
        renewed.apply(.leaseGranted(original))
        #expect(renewed.leases != granted.leases)
        renewed.apply(.leaseRenewed(id: "b", expiresUSec: s.leases["b"]!.expiresUSec))
        #expect(renewed.leases == granted.leases && renewed.leases["b"] == s.leases["b"])
    }

    /// A second state applying a grant shares the first one's box only if it holds that very lease.
    @Test func aGrantAppliedTwiceIsBoxedOnce() {
        var engine = state()
        _ = acquire(&engine, count: 2, id: "a")
        let lease = engine.leases["a"]!
        var store = LicenseState()
        store.apply(.leaseGranted(lease), sharingWith: engine)
        #expect(store.leases.sharesBox("a", with: engine.leases) && store.leases["a"] == lease)
        // The engine renewed it meanwhile: the box (what it was granted with) is still the same.
        engine.apply(.leaseRenewed(id: "a", expiresUSec: t0 + 999))
        var later = LicenseState()
        later.apply(.leaseGranted(lease), sharingWith: engine)
        #expect(later.leases.sharesBox("a", with: engine.leases) && later.leases["a"] == lease)
        // Another lease under the same id is not shared.
        var other = lease
        other.count = 1
        var third = LicenseState()
        third.apply(.leaseGranted(other), sharingWith: engine)
        #expect(!third.leases.sharesBox("a", with: engine.leases) && third.leases["a"] == other)
        #expect(third.inUse("cad") == 1 && store.inUse("cad") == 2)
    }

    /// The request index keeps boxes, not keys of its own: it still finds a lease after a copy, a
    /// renewal and a revocation (a new box), and finds nothing once the lease is gone.
    @Test func leasesAreFoundByRequestThroughCopiesAndChanges() {
        var s = state()
        _ = acquire(&s, count: 1, client: "ws1", id: "a", requestId: "r1")
        _ = acquire(&s, count: 1, client: "ws2", id: "b", requestId: "r1")
        _ = acquire(&s, count: 1, client: "ws1", id: "c")
        let copy = s
        s.apply(.leaseRenewed(id: "a", expiresUSec: t0 + 999))
        s.apply(.borrowRevoked(id: "a", atUSec: t0 + 5))
        #expect(s.lease(forRequest: "r1", client: "ws1")?.borrowRevokedUSec == t0 + 5)
        #expect(s.lease(forRequest: "r1", client: "ws1")?.expiresUSec == t0 + 999)
        #expect(s.lease(forRequest: "r1", client: "ws2")?.id == "b" && s.lease(forRequest: "r2", client: "ws1") == nil)
        s.apply(.leaseReleased(id: "a", atUSec: t0 + 6, revoked: false))
        #expect(s.lease(forRequest: "r1", client: "ws1") == nil && s.lease(forRequest: "r1", client: "ws2")?.id == "b")
        #expect(copy.lease(forRequest: "r1", client: "ws1") == copy.leases["a"] && copy.leases["a"] != nil)
        // The same request again after the release is a new lease, found under that request.
        _ = acquire(&s, count: 1, client: "ws1", id: "d", requestId: "r1")
        #expect(s.lease(forRequest: "r1", client: "ws1")?.id == "d")
        #expect(copy.lease(forRequest: "r1", client: "ws1")?.id == "a")
        // The index holds exactly the leases taken with a request id (a release leaves none behind).
        for state in [s, copy] {
            #expect(state.leases.requestIndexCount == state.leases.values.filter { $0.requestId != nil }.count)
        }
        s.apply(.leaseReleased(id: "b", atUSec: t0 + 7, revoked: false))
        s.apply(.leaseExpired(id: "d"))
        #expect(s.leases.requestIndexCount == 0 && copy.leases.requestIndexCount == 2)
    }

    @Test func requestIdIsIdempotent() {
        var s = state()
        let first = acquire(&s, count: 2, id: "a", requestId: "r1")
        let again = acquire(&s, count: 2, id: "b", requestId: "r1")
        guard case .success(.leaseGranted(let l1, existing: false)) = first,
            case .success(.leaseGranted(let l2, existing: true)) = again
        else {
            Issue.record("unexpected \(first) \(again)")
            return
        }
        #expect(l1.id == l2.id)
        #expect(s.leases.count == 1)
        #expect(s.inUse("cad") == 2)
        // The same id for a different acquisition is a caller error.
        #expect(acquire(&s, count: 3, id: "c", requestId: "r1").error?.code == .invalidArgs)
    }

    @Test func onlyOwnerOrAdminMayRenewOrRelease() {
        var s = state()
        _ = acquire(&s, count: 1, caller: alice, id: "a")
        #expect(s.decide(.renew(leaseId: "a"), caller: bob, now: t0).error?.code == .accessDenied)
        #expect(s.decide(.release(leaseId: "a"), caller: bob, now: t0).error?.code == .accessDenied)
        #expect(
            s.decide(.release(leaseId: "a"), caller: Caller(uid: nil, isAdmin: false), now: t0).error?.code
                == .accessDenied)
        #expect(s.decide(.renew(leaseId: "a"), caller: alice, now: t0).error == nil)
        #expect(s.decide(.release(leaseId: "a"), caller: admin, now: t0).error == nil)
    }

    @Test func renewExtendsByTheLeaseTime() throws {
        var s = state()
        _ = acquire(&s, count: 1, id: "a", ttl: 10 * usecPerSecond)
        let d = try s.decide(.renew(leaseId: "a"), caller: alice, now: t0 + 5 * usecPerSecond).get()
        #expect(d.changes == [.leaseRenewed(id: "a", expiresUSec: t0 + 15 * usecPerSecond)])
    }

    @Test func expiryFreesSeats() throws {
        var s = state(seats: 2)
        _ = acquire(&s, count: 2, id: "a", ttl: 10 * usecPerSecond)
        _ = acquire(&s, count: 0, id: "x")
        let d = try s.decide(.expireLeases, caller: admin, now: t0 + 10 * usecPerSecond).get()
        #expect(d.changes == [.leaseExpired(id: "a")])
        s.apply(d.changes)
        #expect(s.inUse("cad") == 0)
        #expect(s.decide(.renew(leaseId: "a"), caller: alice, now: t0).error?.code == .leaseNotFound)
    }

    @Test func anExpiredButUnreapedLeaseCannotBeRenewed() {
        var s = state()
        _ = acquire(&s, count: 1, id: "a", ttl: 10 * usecPerSecond)
        #expect(
            s.decide(.renew(leaseId: "a"), caller: alice, now: t0 + 10 * usecPerSecond).error?.code == .leaseNotFound)
    }
}

@Suite struct Indexes {
    @Test func seatCountsFollowGrantsRenewalsAndReleases() throws {
        var s = state(seats: 10)
        _ = acquire(&s, count: 3, client: "a", id: "l1", ttl: 50)
        _ = acquire(&s, count: 2, client: "b", id: "l2", ttl: 20)
        #expect(s.inUse("cad") == 5 && s.totalInUse == 5)
        #expect(s.nextExpiry == t0 + 20)
        s.apply(.leaseReleased(id: "l2"))
        #expect(s.inUse("cad") == 3 && s.inUse("other") == 0)
        // The bound may stay early after the earliest lease left; settling makes it exact.
        #expect(s.nextExpiry! <= t0 + 50)
        s.settleExpiryBound()
        #expect(s.nextExpiry == t0 + 50)
        s.apply(.leaseRenewed(id: "l1", expiresUSec: t0 + 5))
        #expect(s.nextExpiry == t0 + 5)
        s.apply(.leaseExpired(id: "l1"))
        #expect(s.inUse("cad") == 0 && s.totalInUse == 0 && s.nextExpiry == nil)
        // Derived indexes do not make equal states unequal.
        var rebuilt = LicenseState()
        rebuilt.apply(.serverIdSet(id: "SID-1"))
        rebuilt.apply(.licenseActivated(license("L1", seats: 10)))
        #expect(rebuilt == s)
    }
}

@Suite struct Reservations {
    @Test func reservedSeatsOnlyForTheirHolder() throws {
        var s = state(seats: 5)
        let d = try s.decide(.reserve(feature: "cad", count: 3, holder: "bob", newId: "r"), caller: admin, now: t0)
            .get()
        s.apply(d.changes)
        #expect(s.available("cad", for: "anyone", at: t0) == 2)
        #expect(s.available("cad", for: "bob", at: t0) == 5)
        #expect(acquire(&s, count: 3, client: "carol", id: "a").error?.code == .insufficientSeats)
        #expect(acquire(&s, count: 2, client: "carol", id: "b").error == nil)
        // "reserved" counts seats set aside and not used by their holder.
        let before = s.usage(at: t0).first!
        #expect(before.inUse == 2 && before.reserved == 3 && before.available == 0)
        #expect(acquire(&s, count: 3, client: "bob", id: "c").error == nil)
        #expect(acquire(&s, count: 1, client: "bob", id: "d").error?.code == .insufficientSeats)
        let u = s.usage(at: t0).first!
        #expect(u.inUse == 5 && u.reserved == 0 && u.available == 0)
    }

    /// The issue's first case: every view reads the same account.
    @Test func viewsOfAReservationInUseAgree() throws {
        var s = state(seats: 3)
        s.apply(.licenseActivated(license("L2", seats: 2)))
        s.apply(
            try s.decide(.reserve(feature: "cad", count: 2, holder: "H", newId: "r"), caller: admin, now: t0).get()
                .changes)
        #expect(acquire(&s, count: 3, client: "X", id: "x").error == nil)
        #expect(acquire(&s, count: 2, client: "H", id: "h").error == nil)
        let u = s.usage("cad", at: t0)
        let shares = s.shares("cad", at: t0)
        #expect(u.reserved == 0 && u.inUse == 5)
        #expect(shares.map(\.reserved).reduce(0, +) == u.reserved && shares.map(\.inUse).reduce(0, +) == u.inUse)
        s.apply(.leaseReleased(id: "h"))
        let idle = s.usage("cad", at: t0)
        #expect(idle.reserved == 2 && idle.inUse == 3 && idle.available == 0)
        #expect(s.shares("cad", at: t0).map(\.reserved) == [0, 2])
        #expect(s.seatAccountingFaults(at: t0).isEmpty)
    }

    /// The issue's second and third cases: reservations keep the seats they were promised.
    @Test func deactivationCannotStrandReservations() throws {
        var s = state(seats: 3)
        s.apply(.licenseActivated(license("L2", seats: 2)))
        for (id, holder) in [("r1", "H"), ("r2", "H2")] {
            s.apply(
                try s.decide(.reserve(feature: "cad", count: 2, holder: holder, newId: id), caller: admin, now: t0)
                    .get().changes)
        }
        #expect(s.decide(.deactivate(licenseId: "L1"), caller: admin, now: t0).error?.code == .seatsReserved)
        #expect(s.decide(.deactivate(licenseId: "L2"), caller: admin, now: t0).error?.code == .seatsReserved)
        // Reservations beyond the seats are refused.
        #expect(
            s.decide(.reserve(feature: "cad", count: 2, holder: "H3", newId: "r3"), caller: admin, now: t0).error?.code
                == .insufficientSeats)
        s.apply(.reservationRemoved(id: "r2"))
        // Use by others plus the idle reservation must fit what would remain.
        #expect(acquire(&s, count: 2, client: "X", id: "x").error == nil)
        #expect(s.decide(.deactivate(licenseId: "L2"), caller: admin, now: t0).error?.code == .seatsReserved)
        s.apply(.leaseReleased(id: "x"))
        s.apply(try s.decide(.deactivate(licenseId: "L2"), caller: admin, now: t0).get().changes)
        // The last license cannot go while a reservation stands, nor the server id.
        #expect(s.decide(.deactivate(licenseId: "L1"), caller: admin, now: t0).error?.code == .seatsReserved)
        s.apply(.reservationRemoved(id: "r1"))
        s.apply(try s.decide(.deactivate(licenseId: "L1"), caller: admin, now: t0).get().changes)
        #expect(s.decide(.resetServerId(newId: "SID-2"), caller: admin, now: t0).error == nil)
        // A reservation left over by an earlier version blocks the reset until it is removed.
        s.apply(.reservationAdded(Reservation(id: "old", feature: "cad", holder: "H", count: 1)))
        #expect(s.decide(.resetServerId(newId: "SID-2"), caller: admin, now: t0).error?.code == .seatsReserved)
        #expect(s.decide(.unreserve(reservationId: "old"), caller: admin, now: t0).error == nil)
    }

    @Test func anExpiredLicenseMayGoAndItsUseMovesToTheLastValidOne() throws {
        var s = state(seats: 2)
        s.apply(.licenseActivated(license("L2", seats: 2, notAfter: t0 + 10)))
        _ = acquire(&s, count: 4, id: "a")
        let later = t0 + 20
        #expect(s.usage("cad", at: later).seats == 2 && s.usage("cad", at: later).inUse == 4)
        #expect(s.shares("cad", at: later).map(\.inUse) == [4, 0])
        #expect(s.seatAccountingFaults(at: later, overcommitted: true).isEmpty)
        #expect(!s.seatAccountingFaults(at: later).isEmpty)
        #expect(s.decide(.deactivate(licenseId: "L2"), caller: admin, now: later).error == nil)
        #expect(s.totalSeats(at: later) == 2 && s.totalSeats(at: t0) == 4)
    }

    @Test func reservationMustFit() throws {
        var s = state(seats: 5)
        _ = acquire(&s, count: 4, client: "x", id: "a")
        #expect(
            s.decide(.reserve(feature: "cad", count: 2, holder: "bob", newId: "r"), caller: admin, now: t0).error?.code
                == .insufficientSeats)
        #expect(
            s.decide(.reserve(feature: "cad", count: 1, holder: "bob", newId: "r"), caller: admin, now: t0).error == nil
        )
        #expect(
            s.decide(.reserve(feature: "nope", count: 1, holder: "bob", newId: "r"), caller: admin, now: t0).error?.code
                == .unknownFeature)
        #expect(
            s.decide(.reserve(feature: "cad", count: 1, holder: "bob", newId: "r"), caller: alice, now: t0).error?.code
                == .accessDenied)
        #expect(s.decide(.unreserve(reservationId: "zz"), caller: admin, now: t0).error?.code == .reservationNotFound)
    }
}

@Suite struct LicensesAndServerId {
    @Test func activationChecks() {
        let s = state()
        #expect(s.decide(.activate(license("L9", to: ["OTHER"])), caller: admin, now: t0).error?.code == .wrongServer)
        #expect(
            s.decide(.activate(license("L9", notAfter: t0 - 1)), caller: admin, now: t0).error?.code == .licenseExpired)
        #expect(s.decide(.activate(license("L1")), caller: admin, now: t0).error?.code == .licenseAlreadyActive)
        #expect(s.decide(.activate(license("L9")), caller: alice, now: t0).error?.code == .accessDenied)
        #expect(s.decide(.activate(license("L9")), caller: admin, now: t0).error == nil)
    }

    @Test func deactivationRefusedWhileSeatsInUse() {
        var s = state(seats: 5)
        s.apply(.licenseActivated(license("L2", seats: 5)))
        _ = acquire(&s, count: 6, id: "a")
        #expect(s.decide(.deactivate(licenseId: "L2"), caller: admin, now: t0).error?.code == .licenseInUse)
        #expect(s.decide(.deactivate(licenseId: "nope"), caller: admin, now: t0).error?.code == .licenseNotFound)
        s.apply(.leaseReleased(id: "a"))
        #expect(s.decide(.deactivate(licenseId: "L2"), caller: admin, now: t0).error == nil)
    }

    @Test func resetServerIdRefusedWhileLicensesActive() throws {
        var s = state()
        #expect(s.serverIdUsed)
        #expect(s.decide(.resetServerId(newId: "SID-2"), caller: admin, now: t0).error?.code == .licensesActive)
        s.apply(.licenseDeactivated(id: "L1"))
        let d = try s.decide(.resetServerId(newId: "SID-2"), caller: admin, now: t0).get()
        s.apply(d.changes)
        #expect(s.serverId == "SID-2")
        #expect(!s.serverIdUsed)
    }

    @Test func usageIsAttributedToLicensesInOrder() {
        var s = state(seats: 3)
        s.apply(.licenseActivated(license("L2", seats: 3)))
        _ = acquire(&s, count: 4, id: "a")
        #expect(s.licenseUsage("L1", at: t0).inUse == 3)
        #expect(s.licenseUsage("L2", at: t0).inUse == 1)
    }
}

@Suite struct Replay {
    @Test func replayingChangesRebuildsTheState() {
        var s = state(seats: 5)
        var log: [Change] = [.serverIdSet(id: "SID-1"), .licenseActivated(license("L1", seats: 5))]
        for (i, n) in [1, 2].enumerated() {
            let r = s.decide(
                .acquire(
                    AcquireRequest(
                        feature: "cad", count: UInt32(n), client: "c", ttlUSec: 10, requestId: "q\(i)",
                        newLeaseId: "l\(i)")), caller: alice, now: t0)
            let d = try! r.get()
            s.apply(d.changes)
            log += d.changes
        }
        let rel = try! s.decide(.release(leaseId: "l0"), caller: alice, now: t0).get()
        s.apply(rel.changes)
        log += rel.changes
        var rebuilt = LicenseState()
        rebuilt.apply(log)
        #expect(rebuilt == s)
    }
}

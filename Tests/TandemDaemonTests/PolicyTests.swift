import Testing
import TandemCore
@testable import TandemConfig

/// The usage policy: the file's syntax and refusals with their place, then what each rule lets
/// through and refuses, decided by the pure core as the serving node decides.
@Suite struct PolicyFileTests {
    static let systemGroups = ["staff": ["carol", "dave"]]

    func policy(_ text: String) throws(ConfigError) -> UsagePolicy {
        var ini = IniFile()
        try ini.parse(text, file: "/etc/tandem/policy.conf")
        return try PolicyFile.parse(ini) { Self.systemGroups[$0] }
    }

    func refusal(_ text: String) -> String? {
        do { _ = try policy(text) } catch { return error.description }
        return nil
    }

    @Test func theSyntaxIsRead() throws {
        let p = try policy(
            """
            [Group eng]
            Users=alice bob
            Users=dev-*
            [HostGroup lab]
            Hosts=lab-?
            [Feature cad]
            Reserve=2 group:eng
            Max=1 user:*
            Include=group:eng hostgroup:lab
            Exclude=user:mallory
            MaxLeaseSec=600
            Borrow=7
            Queue=no
            [Feature cam]
            Include=group:staff
            """)
        #expect(p.groups["eng"] == ["alice", "bob", "dev-*"])
        #expect(p.groups["staff"] == ["carol", "dave"], "a group without a section is the system's")
        #expect(p.hostGroups["lab"] == ["lab-?"])
        let cad = try #require(p.features["cad"])
        #expect(
            cad.reserve == [PolicyRule(count: 2, subject: .init(kind: .group, name: "eng"), place: "policy.conf:7")])
        #expect(cad.max.map(\.count) == [1] && cad.include.count == 2 && cad.exclude.count == 1)
        #expect(cad.maxLeaseUSec == 600 * usecPerSecond && cad.borrowDays == 7 && cad.queue == false)
        #expect(p.digest.count == 64)
        #expect(try policy("").digest == "", "no policy, no digest")
        // The digest is of what the policy says, not of its layout.
        let a = try policy("[Feature cad]\nMax=1 user:*\n# note\n"), b = try policy("\n[Feature cad]\n\nMax=1  user:*")
        #expect(a.digest == b.digest)
        #expect(a.digest != (try policy("[Feature cad]\nMax=2 user:*")).digest)
        // Nor of the order of rules and members, nor of a feature left without rules.
        let c = try policy(
            "[Group g]\nUsers=b a\n[Feature cad]\nExclude=user:x user:y\n[Feature cam]\nMax=1 user:*\nMax=\n")
        let d = try policy("[Group g]\nUsers=a\nUsers=b a\n[Feature cad]\nExclude=user:y\nExclude=user:x\n")
        #expect(c.digest == d.digest, "\(c.canonicalText) vs \(d.canonicalText)")
        // An empty assignment drops the rules before it.
        #expect(try policy("[Feature cad]\nMax=1 user:*\nMax=\n").features["cad"]?.max == [])
    }

    @Test func mistakesAreRefusedWithTheirPlace() {
        let cases: [(String, String)] = [
            ("[Feature cad]\nMax=two user:*", "/etc/tandem/policy.conf:2: Max= takes a seat count"),
            ("[Feature cad]\nReserve=2 eng", "/etc/tandem/policy.conf:2: Reserve=: 'eng' is not KIND:NAME"),
            ("[Feature cad]\nInclude=team:eng", "/etc/tandem/policy.conf:2: Include=: unknown kind 'team'"),
            ("[Feature cad]\nInclude=group:nobody-here", "/etc/tandem/policy.conf:2: no [Group nobody-here]"),
            ("[Feature cad]\n\nExclude=hostgroup:lab", "/etc/tandem/policy.conf:3: no [HostGroup lab]"),
            ("[Feature cad]\nQueue=maybe", "/etc/tandem/policy.conf:2: Queue= is yes or no"),
            ("[Feature cad]\nBorrow=400", "/etc/tandem/policy.conf:2: Borrow= is the longest borrow"),
            ("[Feature cad]\nMaxLeaseSec=0", "/etc/tandem/policy.conf:2: MaxLeaseSec= must be"),
            ("[Feature cad]\nSeats=3", "/etc/tandem/policy.conf:2: unknown key 'Seats'"),
            ("[Feature c/d]\nMax=1 user:*", "/etc/tandem/policy.conf:2: feature may contain only"),
            ("[Features cad]\nMax=1 user:*", "/etc/tandem/policy.conf:2: unknown section [Features cad]"),
            ("[Group eng]\nMembers=alice", "/etc/tandem/policy.conf:2: unknown key 'Members' in [Group]"),
            ("[Feature cad]\nMax=1", "/etc/tandem/policy.conf:2: Max= takes a seat count"),
            ("[Group eng]\nUsers=alice  # the lead", "/etc/tandem/policy.conf:2: Users=: '#' is not a name"),
            ("[HostGroup lab]\nHosts=lab-1 ;old", "/etc/tandem/policy.conf:2: Hosts=: ';old' is not a name"),
            ("[Group a b]\nUsers=c", "/etc/tandem/policy.conf:2: Group name may contain only")
        ]
        for (text, expected) in cases {
            let got = refusal(text)
            #expect(got?.hasPrefix(expected) == true, "\(text): \(got ?? "accepted")")
        }
    }

    @Test func groupPriorities() throws {
        let p = try policy("[Group ops]\nUsers=carol\nPriority=10\n[Group lab]\nUsers=carol dan\nPriority=-5\n")
        #expect(p.priority(of: PolicyHolder(user: "carol", host: nil, client: "c")) == 10, "the highest of its groups")
        #expect(p.priority(of: PolicyHolder(user: "dan", host: nil, client: "c")) == -5)
        #expect(p.priority(of: PolicyHolder(user: "eve", host: nil, client: "c")) == 0)
        #expect(p.priority(of: PolicyHolder(user: nil, host: nil, client: "c")) == 0)
        #expect(refusal("[Group ops]\nPriority=high")?.contains("Priority= is a whole number") == true)
        #expect(try policy("[Group ops]\nPriority=1\n").digest != (try policy("[Group ops]\nPriority=2\n")).digest)
    }

    @Test func systemGroupsComeFromNSS() {
        #expect(SystemGroups.members("root")?.contains("root") == true, "root's primary group")
        #expect(SystemGroups.members("no-such-group-here") == nil)
    }

    @Test func globs() {
        #expect(Glob.matches("dev-*", "dev-7") && Glob.matches("*", "") && Glob.matches("a?c", "abc"))
        #expect(!Glob.matches("dev-*", "ops-1") && !Glob.matches("a?c", "ac") && !Glob.matches("abc", "abcd"))
        #expect(Glob.matches("*-ws-*", "plant-ws-12") && !Glob.matches("*-ws-*", "plant-ws"))
        #expect(Glob.matches("*x", "*yx") && Glob.matches("a*", "a*b") && !Glob.matches("*x", "*xy"))
    }
}

@Suite struct PolicyDecisions {
    let now: USec = 1_800_000_000 * usecPerSecond
    let user = Caller(uid: 1000, isAdmin: false)

    func state(seats: UInt32) -> LicenseState {
        var s = LicenseState()
        s.apply(.serverIdSet(id: "SID-1"))
        s.apply(
            .licenseActivated(
                License(
                    id: "L1", product: "P", feature: "cad", seats: seats, notAfterUSec: 0, issuedTo: ["SID-1"],
                    keyId: "k", document: "d")))
        return s
    }

    func policy(_ text: String) throws -> UsagePolicy {
        var ini = IniFile()
        try ini.parse(text, file: "/etc/tandem/policy.conf")
        return try PolicyFile.parse(ini) { _ in nil }
    }

    /// Acquires and applies; the refusal's reason and message, or nil when granted.
    func acquire(
        _ s: inout LicenseState, _ p: UsagePolicy, user: String?, host: String? = nil, client: String = "ws",
        count: UInt32 = 1, ttl: USec = 3_600 * usecPerSecond
    ) -> (DenialReason?, String)? {
        let req = AcquireRequest(
            feature: "cad", count: count, client: client, ttlUSec: ttl, requestId: nil,
            newLeaseId: "lease-\(s.leases.count)", holder: Holder(user: user, host: host), policy: p)
        switch s.decide(.acquire(req), caller: self.user, now: now) {
        case .success(let d):
            s.apply(d.changes)
            return nil
        case .failure(let e):
            return (s.denialReason(e, feature: "cad", count: count, client: client, at: now), e.message)
        }
    }

    @Test func excludeWinsOverInclude() throws {
        let p = try policy(
            "[Group eng]\nUsers=alice mallory\n[Feature cad]\nInclude=group:eng\nExclude=user:mallory\n")
        var s = state(seats: 5)
        #expect(acquire(&s, p, user: "alice") == nil)
        let excluded = try #require(acquire(&s, p, user: "mallory"))
        #expect(excluded.0 == .policyExcluded)
        #expect(excluded.1.contains("policy.conf:5: Exclude=user:mallory"), "\(excluded.1)")
        let outside = try #require(acquire(&s, p, user: "eve"))
        #expect(outside.0 == .policyNotIncluded && outside.1.contains("policy.conf:4: Include=group:eng"))
        #expect(acquire(&s, p, user: nil)?.0 == .policyNotIncluded, "an unnamed user is in no group")
        #expect(s.inUse("cad") == 1)
    }

    @Test func maxCountsEachHolderApart() throws {
        let p = try policy("[Feature cad]\nMax=2 user:*\nMax=3 host:lab-*\n")
        var s = state(seats: 10)
        #expect(acquire(&s, p, user: "alice", count: 2) == nil)
        let more = try #require(acquire(&s, p, user: "alice"))
        #expect(more.0 == .policyMax && more.1.contains("user 'alice' holds 2 seat(s)"), "\(more.1)")
        #expect(acquire(&s, p, user: "bob", count: 2) == nil, "another user has a Max of its own")
        // Host rules count per host, across users.
        #expect(acquire(&s, p, user: "carol", host: "lab-1", count: 2) == nil)
        #expect(acquire(&s, p, user: "dave", host: "lab-1", count: 2)?.0 == .policyMax)
        #expect(acquire(&s, p, user: "dave", host: "lab-2", count: 2) == nil)
        #expect(s.inUse("cad") == 8)
    }

    @Test func reserveSetsSeatsAsideForItsHolders() throws {
        let p = try policy("[Group eng]\nUsers=alice bob\n[Feature cad]\nReserve=2 group:eng\n")
        var s = state(seats: 4)
        #expect(acquire(&s, p, user: "eve", count: 2) == nil)
        let refused = try #require(acquire(&s, p, user: "eve"))
        #expect(refused.0 == .policyReserved, "2 free, both reserved for eng")
        #expect(refused.1.contains("policy.conf:4: Reserve=2 group:eng"), "\(refused.1)")
        #expect(acquire(&s, p, user: "alice") == nil)
        #expect(acquire(&s, p, user: "eve")?.0 == .policyReserved, "alice's seat used one; one still set aside")
        #expect(acquire(&s, p, user: "bob") == nil)
        #expect(acquire(&s, p, user: "bob")?.0 == .insufficientSeats, "no seats at all is not the policy's doing")
    }

    @Test func maxLeaseSecShortensTheLease() throws {
        let p = try policy("[Feature cad]\nMaxLeaseSec=60\n")
        var s = state(seats: 2)
        #expect(acquire(&s, p, user: "alice", ttl: 3_600 * usecPerSecond) == nil)
        #expect(s.leases.values.first?.ttlUSec == 60 * usecPerSecond)
        #expect(acquire(&s, .open, user: "alice", ttl: 3_600 * usecPerSecond) == nil)
        #expect(s.leases.values.map(\.ttlUSec).max() == 3_600 * usecPerSecond, "other policies do not")
    }

    @Test func otherFeaturesAndAnOpenPolicyAreUntouched() throws {
        let p = try policy("[Feature cam]\nExclude=user:*\n")
        var s = state(seats: 1)
        #expect(acquire(&s, p, user: "alice") == nil)
    }
}

extension PolicyDecisions {
    /// A client's own reservation over D-Bus stays its own under a policy Reserve (review).
    @Test func aClientsOwnReservationIsNotTakenByAPolicyReserve() throws {
        let p = try policy("[Group eng]\nUsers=alice\n[Feature cad]\nReserve=2 group:eng\n")
        var s = state(seats: 3)
        s.apply(.reservationAdded(Reservation(id: "res-1", feature: "cad", holder: "ws-x", count: 2)))
        #expect(acquire(&s, p, user: "eve", client: "ws-x", count: 2) == nil, "its own reserved seats")
        #expect(acquire(&s, p, user: "eve", client: "ws-x")?.0 == .policyReserved, "the last seat is eng's")
        #expect(acquire(&s, p, user: "alice") == nil)
    }
}

/// Borrowing as the core decides it: only where `Borrow=` allows and for no longer; counted in
/// use; never renewed; a revocation keeps the seats counted until the expiry; the holder's
/// release returns it early; the expiry ends it.
@Suite struct BorrowDecisions {
    let now: USec = 1_800_000_000 * usecPerSecond
    let laptop = Caller.networkClient(token: "laptops")
    let machine = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    let day: USec = 86_400 * usecPerSecond

    func borrow(
        _ s: LicenseState, _ p: UsagePolicy, for length: USec, machine: String? = nil, count: UInt32 = 1,
        requestId: String? = nil
    ) -> Result<Decision, TandemError> {
        let req = AcquireRequest(
            feature: "cad", count: count, client: "laptop-7", ttlUSec: length, requestId: requestId,
            newLeaseId: "lease-b\(s.leases.count)", holder: Holder(user: "alice", host: "laptop-7"), policy: p,
            borrowFor: machine ?? self.machine)
        return s.decide(.acquire(req), caller: laptop, now: now)
    }

    @Test func onlyWhatBorrowAllows() throws {
        let decisions = PolicyDecisions()
        var s = decisions.state(seats: 2)
        let none = try decisions.policy("[Feature cad]\nMax=5 user:*\n")
        guard case .failure(let off) = borrow(s, none, for: day) else {
            Issue.record("borrowed without Borrow="); return
        }
        #expect(off.code == .policyDenied && off.policyReason == .policyBorrow, "\(off)")
        let p = try decisions.policy("[Feature cad]\nBorrow=7\n")
        guard case .failure(let long) = borrow(s, p, for: 8 * day) else { Issue.record("8 days allowed"); return }
        #expect(long.policyReason == .policyBorrow && long.message.contains("Borrow=7"), "\(long.message)")
        guard case .failure(let bad) = borrow(s, p, for: day, machine: "not-a-machine") else {
            Issue.record("a malformed machine id was taken")
            return
        }
        #expect(bad.code == .invalidArgs)
        // Allowed: counted in use, replicated as a lease with its machine.
        let granted = try borrow(s, p, for: 7 * day, count: 2, requestId: "r1").get()
        s.apply(granted.changes)
        guard case .leaseGranted(let lease, existing: false) = granted.outcome else { Issue.record("no lease"); return }
        #expect(lease.machineId == machine && lease.expiresUSec == now + 7 * day)
        #expect(s.inUse("cad") == 2 && s.borrowed("cad") == 2 && s.usage("cad", at: now).available == 0)
        // A retry with the same request id gets the same borrow, its expiry unchanged (its
        // certificate says it); the same request id for an ordinary lease is another acquisition.
        let again = try borrow(s, p, for: 7 * day, count: 2, requestId: "r1").get()
        #expect(again.changes.isEmpty && again.outcome == .leaseGranted(lease, existing: true))
        let plain = AcquireRequest(
            feature: "cad", count: 2, client: "laptop-7", ttlUSec: day, requestId: "r1", newLeaseId: "x", policy: p)
        guard case .failure(let mixed) = s.decide(.acquire(plain), caller: laptop, now: now) else {
            Issue.record("a borrow's request id made a lease")
            return
        }
        #expect(mixed.code == .invalidArgs)
    }

    @Test func neverRenewedRevokedButCountedReturnedOrExpired() throws {
        let decisions = PolicyDecisions()
        var s = decisions.state(seats: 3)
        let p = try decisions.policy("[Feature cad]\nBorrow=3\n")
        let d = try borrow(s, p, for: day, requestId: "r1").get()
        s.apply(d.changes)
        guard case .leaseGranted(let lease, _) = d.outcome else { Issue.record("no lease"); return }
        guard case .failure(let renew) = s.decide(.renew(leaseId: lease.id), caller: laptop, now: now) else {
            Issue.record("a borrow was renewed")
            return
        }
        #expect(renew.code == .invalidArgs && renew.message.contains("not renewed"))
        // An administrator revokes it (not a user); an administrator's release is refused.
        let user = Caller(uid: 1000, isAdmin: false)
        #expect((try? s.decide(.revokeBorrow(leaseId: lease.id), caller: user, now: now).get()) == nil)
        guard case .failure(let release) = s.decide(.release(leaseId: lease.id), caller: .root, now: now) else {
            Issue.record("an administrator's release freed a borrow's seats")
            return
        }
        #expect(release.message.contains("RevokeBorrow"))
        let revoked = try s.decide(.revokeBorrow(leaseId: lease.id), caller: .root, now: now + 5).get()
        s.apply(revoked.changes)
        // Asked again with its request id, a revoked borrow is refused (no new certificate).
        guard case .failure(let retry) = borrow(s, p, for: day, requestId: "r1") else {
            Issue.record("a revoked borrow was granted again")
            return
        }
        #expect(retry.code == .accessDenied && retry.message.contains("revoked"))
        #expect(s.leases[lease.id]?.borrowRevokedUSec == now + 5 && s.inUse("cad") == 1, "still counted")
        #expect(try s.decide(.revokeBorrow(leaseId: lease.id), caller: .root, now: now + 9).get().changes.isEmpty)
        // Its holder returns it early; or it runs out at its expiry.
        let back = try s.decide(.release(leaseId: lease.id), caller: laptop, now: now + 10).get()
        var returned = s
        returned.apply(back.changes)
        #expect(returned.inUse("cad") == 0 && returned.borrowed("cad") == 0)
        #expect(try s.decide(.expireLeases, caller: .root, now: lease.expiresUSec - 1).get().changes.isEmpty)
        let ended = try s.decide(.expireLeases, caller: .root, now: lease.expiresUSec).get()
        s.apply(ended.changes)
        #expect(ended.changes == [.leaseExpired(id: lease.id)] && s.inUse("cad") == 0)
        // Not a borrow: RevokeBorrow does not know it.
        let plain = AcquireRequest(
            feature: "cad", count: 1, client: "ws", ttlUSec: day, requestId: nil, newLeaseId: "p1", policy: p)
        s.apply(try s.decide(.acquire(plain), caller: laptop, now: now).get().changes)
        guard case .failure(let notBorrow) = s.decide(.revokeBorrow(leaseId: "p1"), caller: .root, now: now) else {
            Issue.record("revoked a plain lease")
            return
        }
        #expect(notBorrow.code == .leaseNotFound)
    }
}

import Foundation
import TandemBus
import TandemBusClient
import TandemCore
import Testing

let ns = "org.tandem.LicenseManager1."
let invalidArgs = "org.freedesktop.DBus.Error.InvalidArgs"
let accessDenied = "org.freedesktop.DBus.Error.AccessDenied"
let nobody = 65534
let staffGid = 50  // Debian's "staff" group; the fixture's AdminGroup=

@Suite(.serialized) struct NamedErrors {
    @Test func eachBadInputGetsItsErrorAndChangesNothing() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        // Some state to protect: a lease, a reservation.
        let lease = try c.call("Acquire", [.string("cad"), .uint32(2), .string("ws"), .vardict([])])[0]
        let reservation = try c.call("Reserve", [.string("cad"), .uint32(1), .string("holder")])[0]
        let before = try snapshot(c)
        let other = try Vendor()

        let cases: [(String, String, [BusValue])] = [
            (ns + "InvalidLicense", "ActivateLicense", [.string("not a license")]),
            (ns + "InvalidLicense", "ActivateLicense", [.string(try other.issue(to: [f.serverId], id: "UNTRUSTED"))]),
            (
                ns + "InvalidLicense", "ActivateLicense",
                [
                    .string(
                        try f.vendor.issue(to: [f.serverId], seats: 5, id: "TAMPER").replacingOccurrences(
                            of: "Seats: 5", with: "Seats: 50"))
                ]
            ),
            (
                ns + "WrongServer", "ActivateLicense",
                [.string(try f.vendor.issue(to: ["TS-0000-0000-0000-0000"], id: "ELSEWHERE"))]
            ),
            (
                ns + "LicenseExpired", "ActivateLicense",
                [.string(try f.vendor.issue(to: [f.serverId], id: "OLD", notAfter: "2020-01-01"))]
            ),
            (
                ns + "LicenseAlreadyActive", "ActivateLicense",
                [.string(try f.vendor.issue(to: [f.serverId], id: "LIC-CAD"))]
            ),
            (ns + "LicenseNotFound", "DeactivateLicense", [.string("NOPE")]),
            (ns + "LicenseInUse", "DeactivateLicense", [.string("LIC-CAD")]),
            (ns + "UnknownFeature", "Acquire", [.string("nope"), .uint32(1), .string("ws"), .vardict([])]),
            (ns + "InsufficientSeats", "Acquire", [.string("cad"), .uint32(3), .string("ws"), .vardict([])]),
            (ns + "LeaseNotFound", "Renew", [.string("lease-nope")]),
            (ns + "LeaseNotFound", "Release", [.string("lease-nope")]),
            (ns + "ReservationNotFound", "Unreserve", [.string("res-nope")]),
            (ns + "InsufficientSeats", "Reserve", [.string("cad"), .uint32(3), .string("h2")]),
            (ns + "UnknownFeature", "Reserve", [.string("nope"), .uint32(1), .string("h2")]),
            (ns + "LicensesActive", "ResetServerId", []),
            (invalidArgs, "Acquire", [.string("cad"), .uint32(0), .string("ws"), .vardict([])]),
            (invalidArgs, "Acquire", [.string("cad"), .uint32(1), .string(""), .vardict([])]),
            (invalidArgs, "Acquire", [.string("c a d"), .uint32(1), .string("ws"), .vardict([])]),
            (
                invalidArgs, "Acquire",
                [.string("cad"), .uint32(1), .string("ws"), .vardict([("ttl_usec", .uint64(10))])]
            ),
            (
                invalidArgs, "Acquire",
                [.string("cad"), .uint32(1), .string("ws"), .vardict([("ttl_usec", .uint64(1_000_000 * 1_000_000))])]
            ),
            (
                invalidArgs, "Acquire",
                [.string("cad"), .uint32(1), .string("ws"), .vardict([("ttl_usec", .string("soon"))])]
            ),
            (
                invalidArgs, "Acquire",
                [.string("cad"), .uint32(1), .string("ws"), .vardict([("colour", .string("red"))])]
            ),
            (invalidArgs, "Acquire", [.string("cad"), .uint32(1)]),
            (invalidArgs, "Reserve", [.string("cad"), .uint32(0), .string("h")]),
            // The bounds every call is held to before its method runs (ArgumentBounds).
            (
                invalidArgs, "Acquire",
                [
                    .string("cad"), .uint32(1), .string("ws"),
                    .vardict([("request_id", .string("a")), ("request_id", .string("b"))])
                ]
            ),
            (
                invalidArgs, "Acquire",
                [.string("cad"), .uint32(1), .string("ws"), .vardict((0..<33).map { ("k\($0)", .string("v")) })]
            ),
            (
                invalidArgs, "Acquire",
                [
                    .string("cad"), .uint32(1), .string("ws"),
                    .vardict([("ttl_usec", .variant(.variant(.variant(.variant(.uint64(9))))))])
                ]
            ),
            (
                invalidArgs, "Acquire",
                [
                    .string("cad"), .uint32(1), .string(String(repeating: "x", count: 70_000)),
                    .vardict([])
                ]
            ),
            (invalidArgs, "ActivateLicense", [.string(String(repeating: "A", count: 70_000))]),
            (invalidArgs, "Release", [.string(String(repeating: "l", count: 70_000))])
        ]
        for (name, member, args) in cases {
            expectBusError(name) { _ = try c.call(member, args) }
            #expect(try snapshot(c) == before, "\(member) -> \(name) changed the state")
        }
        _ = (lease, reservation)
        // The bound is named, before any option is looked at.
        let many: BusValue = .vardict((0..<33).map { ("ttl_usec", .uint64(UInt64($0))) })
        #expect {
            _ = try c.call("Acquire", [.string("cad"), .uint32(1), .string("ws"), many])
        } throws: { "\($0)".contains("argument 4: an array of 33 entries (at most 32)") }

        // The CLI reports the error's name and reason on one line and exits non-zero.
        let r = try tandemctl(f.bus, ["release", "lease-nope"])
        #expect(r.status == 1)
        #expect(r.stderr == "tandemctl: LeaseNotFound: no lease 'lease-nope'\n")
        let bad = try tandemctl(f.bus, ["license", "activate", "/nonexistent"])
        #expect(bad.status != 0 && bad.stderr.split(separator: "\n").count == 1)
        #expect(try snapshot(c) == before)
    }

    @Test func resetServerIdWorksWhenNoLicenseIsActive() throws {
        let f = try Fixture(activate: false)
        let c = try f.bus.client()
        let old = try f.daemon.serverId
        let new = try c.call("ResetServerId")[0].stringValue
        #expect(new != nil && new != old)
        #expect(try f.daemon.serverId == new)
        // A license issued to the old ID no longer activates.
        expectBusError(ns + "WrongServer") {
            _ = try c.call("ActivateLicense", [.string(try f.vendor.issue(to: [old], id: "OLD-ID"))])
        }
    }
}

@Suite(.serialized) struct Authorization {
    @Test func nonAdminIsDeniedEveryAdminMethod() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let rootLease = try c.call("Acquire", [.string("cad"), .uint32(1), .string("root-ws"), .vardict([])])[0]
            .stringValue!
        let resId = try c.call("Reserve", [.string("cad"), .uint32(1), .string("h")])[0].stringValue!
        let before = try snapshot(c)
        let license = try f.vendor.issue(to: [f.serverId], id: "LIC-NEW")
        let adminCalls: [(String, [String])] = [
            ("ActivateLicense", ["s", license]),
            ("DeactivateLicense", ["s", "LIC-CAD"]),
            ("Reserve", ["sus", "cad", "1", "x"]),
            ("Unreserve", ["s", resId]),
            ("ResetServerId", []),
            // Someone else's lease.
            ("Renew", ["s", rootLease]),
            ("Release", ["s", rootLease])
        ]
        for (member, args) in adminCalls {
            let r = try managerCall(f.bus, member, args, uid: nobody)
            #expect(r.status != 0, "\(member) succeeded for nobody")
            #expect(r.stderr.contains("Access denied"), "\(member): \(r.stderr)")
        }
        #expect(try snapshot(c) == before)

        // Reading is open to everyone.
        for member in ["ListLicenses", "ListLeases", "ListReservations", "GetUsage", "GetActivationRequest"] {
            #expect(try managerCall(f.bus, member, [], uid: nobody).status == 0, "\(member) refused to nobody")
        }
        #expect(
            try busctl(
                f.bus, ["get-property", BusNames.service, BusNames.rootPath, BusNames.managerInterface, "ServerId"],
                uid: nobody
            ).status == 0)

        // nobody may acquire, and renew and release its own lease.
        let mine = try managerCall(f.bus, "Acquire", ["susa{sv}", "cad", "1", "nobody-ws", "0"], uid: nobody)
        #expect(mine.status == 0, "\(mine.stderr)")
        let mineId = String(mine.stdout.split(separator: "\"")[1])
        #expect(try managerCall(f.bus, "Renew", ["s", mineId], uid: nobody).status == 0)
        // ... which another unprivileged uid may not touch, but root may.
        #expect(try managerCall(f.bus, "Release", ["s", mineId], uid: 65533).status != 0)
        #expect(try managerCall(f.bus, "Release", ["s", mineId], uid: nobody).status == 0)
    }

    @Test func adminGroupMembersMayAdminister() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let lease = try c.call("Acquire", [.string("cad"), .uint32(1), .string("root-ws"), .vardict([])])[0]
            .stringValue!
        let res = try managerCall(f.bus, "Reserve", ["sus", "cad", "1", "h"], uid: nobody, groups: [staffGid])
        #expect(res.status == 0, "\(res.stderr)")
        #expect(try managerCall(f.bus, "Release", ["s", lease], uid: nobody, groups: [staffGid]).status == 0)
        // Another supplementary group does not make an admin.
        let denied = try managerCall(f.bus, "Reserve", ["sus", "cad", "1", "h"], uid: nobody, groups: [4])
        #expect(denied.stderr.contains("Access denied"))
    }
}

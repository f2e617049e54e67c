import Foundation
import TandemBus
import TandemBusClient
import TandemCore
import Testing

/// The seat accounting faults found with plain busctl calls, each now a refusal with its
/// name and the stored state unchanged (two licenses of `cad`: LIC-A 3 seats, LIC-B 2).
@Suite(.serialized) struct SeatAccountingThroughBusctl {
    func fixture() throws -> Fixture {
        let f = try Fixture(activate: false)
        for (id, seats) in [("LIC-A", 3), ("LIC-B", 2)] {
            let doc = try f.vendor.issue(to: [f.serverId], seats: seats, id: id)
            #expect(try managerCall(f.bus, "ActivateLicense", ["s", doc]).status == 0)
        }
        return f
    }

    func call(_ f: Fixture, _ member: String, _ args: [String]) throws -> String {
        let r = try managerCall(f.bus, member, args)
        #expect(r.status == 0, "\(member) \(args): \(r.stderr)")
        return r.stdout
    }

    /// busctl's stderr for a refused call, and the state before and after it.
    func refused(
        _ f: Fixture, _ member: String, _ args: [String], _ error: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let before = try snapshot(f.bus.client())
        let r = try managerCall(f.bus, member, args)
        #expect(r.status != 0, "\(member) \(args) was accepted", sourceLocation: sourceLocation)
        // busctl prints the error's message; the name is checked through the client.
        do {
            _ = try f.bus.client().call(member, Self.values(args))
            Issue.record("\(member) was accepted the second time", sourceLocation: sourceLocation)
        } catch let e as BusError {
            #expect(e.name == ns + error, "\(e.name): \(e.message)", sourceLocation: sourceLocation)
        }
        #expect(try snapshot(f.bus.client()) == before, "\(member) changed the state", sourceLocation: sourceLocation)
    }

    /// busctl's arguments as values (the signatures used here: s, u and an empty a{sv}).
    static func values(_ args: [String]) -> [BusValue] {
        guard var sig = args.first?[...] else { return [] }
        var out: [BusValue] = []
        for text in args.dropFirst() {
            if sig.hasPrefix("a{sv}") {
                out.append(.vardict([]))
                sig = sig.dropFirst(5)
            } else {
                out.append(sig.first == "u" ? .uint32(UInt32(text)!) : .string(text))
                sig = sig.dropFirst()
            }
        }
        return out
    }

    /// GetUsage's row of cad: seats, in_use, reserved, available.
    func usage(_ f: Fixture) throws -> [UInt32] {
        let rows = try f.bus.client().call("GetUsage")[0].arrayValue ?? []
        let cad = rows.compactMap(\.structValue).first { $0[0].stringValue == "cad" } ?? []
        return cad.dropFirst().prefix(4).map { UInt32(truncatingIfNeeded: $0.uint64Value ?? 99) }
    }

    /// ListLicenses' in_use and reserved summed, and the License objects' InUse and Reserved summed.
    func attributed(_ f: Fixture) throws -> (list: [UInt32], objects: [UInt32]) {
        let rows = try f.bus.client().call("ListLicenses")[0].arrayValue?.compactMap(\.structValue) ?? []
        let list = [4, 5].map { i in rows.reduce(UInt32(0)) { $0 + UInt32(truncatingIfNeeded: $1[i].uint64Value ?? 0) }
        }
        var objects: [UInt32] = [0, 0]
        for row in rows {
            let path = BusNames.licensePath(row[0].stringValue!)
            for (i, name) in ["InUse", "Reserved"].enumerated() {
                let r = try busctl(f.bus, ["get-property", BusNames.service, path, BusNames.licenseInterface, name])
                objects[i] +=
                    UInt32(r.stdout.split(separator: " ").last!.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99
            }
        }
        return (list, objects)
    }

    @Test func everyViewReadsTheSameAccount() throws {
        let f = try fixture()
        _ = try call(f, "Reserve", ["sus", "cad", "2", "H"])
        #expect(try usage(f) == [5, 0, 2, 3])
        #expect(try attributed(f) == ([0, 2], [0, 2]))
        _ = try call(f, "Acquire", ["susa{sv}", "cad", "3", "X", "0"])
        _ = try call(f, "Acquire", ["susa{sv}", "cad", "2", "H", "0"])
        // H uses its reservation: the two seats count as in use, nowhere as reserved.
        #expect(try usage(f) == [5, 5, 0, 0])
        #expect(try attributed(f) == ([5, 0], [5, 0]))
        let total = try busctl(
            f.bus, ["get-property", BusNames.service, BusNames.rootPath, BusNames.managerInterface, "SeatsTotal"])
        #expect(total.stdout == "u 5\n")
        let status = try tandemctl(f.bus, ["usage"])
        #expect(status.status == 0 && status.stdout.contains("cad"))
    }

    @Test func deactivationCannotLeaveReservationsWithoutSeats() throws {
        let f = try fixture()
        _ = try call(f, "Reserve", ["sus", "cad", "2", "H"])
        _ = try call(f, "Reserve", ["sus", "cad", "2", "H2"])
        try refused(f, "DeactivateLicense", ["s", "LIC-A"], "SeatsReserved")
        try refused(f, "DeactivateLicense", ["s", "LIC-B"], "SeatsReserved")
        try refused(f, "Reserve", ["sus", "cad", "2", "H3"], "InsufficientSeats")
        #expect(try usage(f) == [5, 0, 4, 1])
        // Seats for the holder stay honoured: H takes its own two even when X took the free one.
        _ = try call(f, "Acquire", ["susa{sv}", "cad", "1", "X", "0"])
        try refused(f, "Acquire", ["susa{sv}", "cad", "1", "X", "0"], "InsufficientSeats")
        _ = try call(f, "Acquire", ["susa{sv}", "cad", "2", "H", "0"])
        #expect(try usage(f) == [5, 3, 2, 0])
    }

    @Test func theLastLicenseAndTheServerIdWaitForReservations() throws {
        let f = try fixture()
        let h = try call(f, "Reserve", ["sus", "cad", "2", "H"]).split(separator: "\"")[1]
        _ = try call(f, "DeactivateLicense", ["s", "LIC-B"])
        try refused(f, "DeactivateLicense", ["s", "LIC-A"], "SeatsReserved")
        try refused(f, "ResetServerId", [], "LicensesActive")
        _ = try call(f, "Unreserve", ["s", String(h)])
        _ = try call(f, "DeactivateLicense", ["s", "LIC-A"])
        #expect(try call(f, "ListReservations", []) == "a(sssu) 0\n")
        #expect(try call(f, "GetUsage", []) == "a(suuuut) 0\n")
        _ = try call(f, "ResetServerId", [])
    }

    /// Client text cannot make lines of its own in the log or the error message.
    @Test func untrustedTextIsQuotedInMessagesAndLogs() throws {
        let f = try Fixture()
        let evil = "x\n<0>forged line\u{1B}[31m"
        let r = try managerCall(f.bus, "Release", ["s", evil])
        #expect(r.status != 0)
        #expect(r.stderr.contains(#"'x\n<0>forged line\u{1B}[31m'"#), "\(r.stderr)")
        usleep(100_000)
        let log = f.daemon.log()
        // The reason (a message that quotes the id) is quoted once more as a log field.
        #expect(
            log.contains(#"reason='no lease \'x\\n<0>forged line\\u{1B}[31m\''"#),
            "the refusal is logged at debug level")
        #expect(!log.split(separator: "\n").contains { $0.hasPrefix("<0>") || $0.hasPrefix("forged") })
        #expect(!log.contains("\u{1B}"))
    }
}

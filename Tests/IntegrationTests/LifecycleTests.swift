import Foundation
import TandemBus
import TandemBusClient
import TandemCore
import Testing

@Suite(.serialized) struct Lifecycle {
    @Test func leasesExpireAlsoWhileTheDaemonIsDown() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let short = try c.call(
            "Acquire", [.string("cad"), .uint32(2), .string("ws"), .vardict([("ttl_usec", .uint64(1_000_000))])])[0]
            .stringValue!
        let long = try c.call(
            "Acquire", [.string("cad"), .uint32(1), .string("ws"), .vardict([("ttl_usec", .uint64(600_000_000))])])[0]
            .stringValue!
        #expect(f.daemon.stop() == 0)
        usleep(1_300_000)
        let listener = try f.bus.client()
        let signals = try SignalCollector(listener)
        try f.daemon.start()
        signals.pump(seconds: 5) { signals.received.contains { $0.member == "LeaseExpired" } }
        let expired = signals.received.filter { $0.member == "LeaseExpired" }.compactMap { $0.args.first?.stringValue }
        #expect(expired == [short])
        let leases = try c.call("ListLeases").first?.arrayValue?.compactMap { $0.structValue?.first?.stringValue }
        #expect(leases == [long])
        #expect(try c.get("SeatsInUse") == .uint32(1))
    }

    @Test func leasesExpireWhileRunning() throws {
        let f = try Fixture()
        let listener = try f.bus.client()
        let signals = try SignalCollector(listener)
        let c = try f.bus.client()
        let id = try c.call(
            "Acquire", [.string("cad"), .uint32(1), .string("ws"), .vardict([("ttl_usec", .uint64(1_000_000))])])[0]
            .stringValue!
        signals.pump(seconds: 5) { signals.received.contains { $0.member == "LeaseExpired" } }
        #expect(
            signals.received.filter { $0.member == "LeaseExpired" }.compactMap { $0.args.first?.stringValue } == [id])
        #expect(try c.call("ListLeases").first?.arrayValue?.isEmpty == true)
        expectBusError(ns + "LeaseNotFound") { _ = try c.call("Renew", [.string(id)]) }
    }

    @Test func killNineLosesNothingAcknowledged() throws {
        let f = try Fixture(activate: false)
        let c = try f.bus.client()
        _ = try c.call("ActivateLicense", [.string(try f.vendor.issue(to: [f.serverId], seats: 100_000, id: "BIG"))])
        // Four clients acquire as fast as they can; the daemon is killed under them.
        final class Acked: @unchecked Sendable {
            let lock = NSLock()
            var ids: [String] = []
            func add(_ id: String) { lock.lock(); ids.append(id); lock.unlock() }
        }
        let acked = Acked()
        let address = f.bus.address
        let group = DispatchGroup()
        for t in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                guard let client = try? BusClient(.address(address)) else { return }
                client.timeoutUSec = 2_000_000
                for i in 0..<100_000 {
                    guard
                        let r = try? client.call(
                            "Acquire",
                            [
                                .string("cad"), .uint32(1), .string("c\(t)-\(i)"),
                                .vardict([("ttl_usec", .uint64(3_600_000_000))])
                            ]),
                        let id = r.first?.stringValue
                    else { return }
                    acked.add(id)
                }
            }
        }
        // Let some work happen, then kill -9 mid-stream.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            acked.lock.lock(); let n = acked.ids.count; acked.lock.unlock()
            if n >= 300 { break }
            usleep(10_000)
        }
        #expect(f.daemon.stop(SIGKILL) == -SIGKILL)
        group.wait()
        let acknowledged = Set(acked.ids)
        #expect(acknowledged.count >= 300)
        try f.daemon.start()
        let stored = Set(
            try c.call("ListLeases").first?.arrayValue?.compactMap { $0.structValue?.first?.stringValue } ?? [])
        let lost = acknowledged.subtracting(stored)
        #expect(lost.isEmpty, "\(lost.count) acknowledged leases lost after kill -9")
        #expect(try c.get("SeatsInUse").uint64Value == UInt64(stored.count))
    }

    @Test func notifiesSystemd() throws {
        let notify = try NotifyReceiver()
        let bus = try TestBus()
        let vendor = try Vendor()
        let d = try Tandemd(
            bus: bus, config: "[Server]\nVendorKeys=\(vendor.keysDir)\n",
            env: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"])
        try d.start()
        var messages = notify.receive(seconds: 5) { m in
            m.contains { $0.contains("READY=1") } && m.filter { $0.contains("WATCHDOG=1") }.count >= 2
        }
        let ready = messages.first { $0.contains("READY=1") }
        #expect(ready?.contains("STATUS=0 licenses, 0/0 seats in use, unpaired") == true, "\(messages)")
        #expect(messages.filter { $0.contains("WATCHDOG=1") }.count >= 2, "\(messages)")

        // STATUS follows changes.
        let c = try bus.client()
        _ = try c.call("ActivateLicense", [.string(try vendor.issue(to: [try d.serverId], seats: 7, id: "N1"))])
        _ = try c.call("Acquire", [.string("cad"), .uint32(3), .string("ws"), .vardict([])])
        messages = notify.receive(seconds: 5) { m in
            m.contains { $0.contains("STATUS=1 license, 3/7 seats in use, unpaired") }
        }
        #expect(messages.contains { $0.contains("STATUS=1 license, 3/7 seats in use, unpaired") }, "\(messages)")

        // SIGHUP reloads (RELOADING=1 then READY=1); SIGTERM stops (STOPPING=1, exit 0).
        d.signal(SIGHUP)
        messages = notify.receive(seconds: 5) { m in m.contains { $0.contains("READY=1") } }
        #expect(messages.contains { $0.contains("RELOADING=1") }, "\(messages)")
        d.signal(SIGTERM)
        messages = notify.receive(seconds: 5) { m in m.contains { $0.contains("STOPPING=1") } }
        #expect(messages.contains { $0.contains("STOPPING=1") }, "\(messages)")
        #expect(d.stop(SIGTERM) == 0)
    }

    @Test func badConfigIsRefusedWithFileLineAndReason() throws {
        let bus = try TestBus()
        let d = try Tandemd(bus: bus, config: "[Server]\nDefaultLeaseSec=300\nMaxLeaseSec=forever\n")
        #expect(throws: TestFailure.self) { try d.start() }
        let log = d.log()
        #expect(log.contains("\(d.configPath):3: MaxLeaseSec= must be a whole number"), "\(log)")
        #expect(log.hasPrefix("<2>") || log.contains("\n<2>"), "critical priority expected: \(log)")
    }

    @Test func reloadPicksUpNewVendorKeys() throws {
        let f = try Fixture(activate: false)
        let c = try f.bus.client()
        let second = try Vendor()
        let text = try second.issue(to: [f.serverId], id: "FROM-SECOND")
        expectBusError(ns + "InvalidLicense") { _ = try c.call("ActivateLicense", [.string(text)]) }
        try FileManager.default.copyItem(
            atPath: second.keysDir + "/vendor.pub", toPath: f.vendor.keysDir + "/second.pub")
        f.daemon.signal(SIGHUP)
        var activated = false
        for _ in 0..<100 where !activated {
            activated = (try? c.call("ActivateLicense", [.string(text)])) != nil
            if !activated { usleep(20_000) }
        }
        #expect(activated)
        // A broken reload keeps the running settings.
        try "[Server]\nBogus=1\n".write(toFile: f.daemon.configPath, atomically: true, encoding: .utf8)
        f.daemon.signal(SIGHUP)
        usleep(300_000)
        #expect(try c.get("Version").stringValue != nil)
        #expect(f.daemon.log().contains("configuration not reloaded"))
    }

    @Test func logLevelIsControlledOverLogControl1() throws {
        let f = try Fixture()
        let args = ["org.tandem.LicenseManager1", "/org/freedesktop/LogControl1", "org.freedesktop.LogControl1"]
        #expect(try busctl(f.bus, ["get-property"] + args + ["LogLevel"]).stdout == "s \"debug\"\n")
        #expect(try busctl(f.bus, ["get-property"] + args + ["SyslogIdentifier"]).stdout == "s \"tandemd\"\n")
        // Only a privileged caller may change it.
        let denied = try busctl(f.bus, ["set-property"] + args + ["LogLevel", "s", "info"], uid: nobody)
        #expect(denied.status != 0)
        #expect(try busctl(f.bus, ["set-property"] + args + ["LogLevel", "s", "loud"]).status != 0)
        #expect(try busctl(f.bus, ["set-property"] + args + ["LogLevel", "s", "info"]).status == 0)
        #expect(try busctl(f.bus, ["get-property"] + args + ["LogLevel"]).stdout == "s \"info\"\n")
        let c = try f.bus.client()
        expectBusError(ns + "LeaseNotFound") { _ = try c.call("Renew", [.string("quiet-1")]) }
        #expect(try busctl(f.bus, ["set-property"] + args + ["LogLevel", "s", "debug"]).status == 0)
        expectBusError(ns + "LeaseNotFound") { _ = try c.call("Renew", [.string("loud-1")]) }
        let log = f.daemon.log()
        #expect(!log.contains("quiet-1"), "debug message logged at info level")
        #expect(log.contains("<7>refused") && log.contains("loud-1"), "\(log)")
    }

    @Test func aSecondDaemonOnTheSameStateIsRefused() throws {
        let f = try Fixture()
        let otherBus = try TestBus()
        let second = try Tandemd(bus: otherBus, config: "[Server]\n", stateDir: f.daemon.stateDir)
        #expect(throws: TestFailure.self) { try second.start() }
        #expect(second.log().contains("database is locked"), "\(second.log())")
        // The first one is unharmed.
        #expect(try f.bus.client().call("ListLicenses").first?.arrayValue?.count == 1)
    }

    @Test func stateSurvivesRestart() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        _ = try c.call(
            "Acquire", [.string("cad"), .uint32(2), .string("ws"), .vardict([("request_id", .string("r1"))])])
        _ = try c.call("Reserve", [.string("cad"), .uint32(1), .string("h")])
        let before = try snapshot(c)
        let sid = try f.daemon.serverId
        #expect(f.daemon.stop() == 0)
        // It closed the database before exiting (the WAL is checkpointed and gone), though it
        // leaves its state in memory for the exit to free.
        #expect(!FileManager.default.fileExists(atPath: f.daemon.stateDir + "/tandem.db-wal"))
        try f.daemon.start()
        #expect(try snapshot(c) == before)
        #expect(try f.daemon.serverId == sid)
        // The request id still maps to the same lease after the restart.
        let again = try c.call(
            "Acquire", [.string("cad"), .uint32(2), .string("ws"), .vardict([("request_id", .string("r1"))])])
        #expect(try c.call("ListLeases").first?.arrayValue?.count == 1)
        #expect(again.first == (try c.call("ListLeases").first?.arrayValue?.first?.structValue?.first))
    }
}

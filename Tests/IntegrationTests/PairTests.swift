import Foundation
import Testing
import TandemBus
import TandemClient
import TandemCore
import TandemPeer

/// A witness process on loopback.
final class Witness {
    let process = Process()
    let port: Int
    init(keyFile: String, port: Int) throws {
        self.port = port
        let dir = makeTempDir("witness")
        process.executableURL = URL(fileURLWithPath: binary("tandem-witness"))
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--key-file", keyFile, "--state-dir", dir, "--lease-sec", "0.8"]
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
    }
    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }
}

func listRows(_ v: [BusValue]) -> [[BusValue]] { (v.first?.arrayValue ?? []).compactMap(\.structValue) }

func pairPorts() -> (Int, Int, Int) {
    let base = Int.random(in: 20_000...60_000)
    return (base, base + 1, base + 2)
}

func waitFor(_ what: String, seconds: Double, _ cond: () throws -> Bool) throws {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if (try? cond()) == true { return }
        usleep(50_000)
    }
    throw TestFailure("timed out waiting for \(what)")
}

@Suite(.serialized) struct PairIntegration {
    @Test func workflowReplicationFailoverAndFrames() async throws {
        let vendor = try Vendor()
        let keyDir = makeTempDir("pairkey")
        let keyFile = keyDir + "/pair.key"
        let busA = try TestBus(), busB = try TestBus()
        let kg = try tandemctl(busA, ["pair", "keygen", keyFile])
        #expect(kg.status == 0, "\(kg.stderr)")
        var st = stat()
        stat(keyFile, &st)
        #expect(st.st_mode & 0o777 == 0o600)
        let (pa, pb, pw) = pairPorts()
        let witness = try Witness(keyFile: keyFile, port: pw)
        _ = witness
        func conf(_ port: Int) -> String {
            """
            [Server]
            VendorKeys=\(vendor.keysDir)
            Listen=127.0.0.1:0
            [Pair]
            KeyFile=\(keyFile)
            Listen=127.0.0.1:\(port)
            Witness=127.0.0.1:\(pw)
            HeartbeatSec=0.2
            FailoverTimeoutSec=1
            """
        }
        let a = try Tandemd(bus: busA, config: conf(pa))
        let b = try Tandemd(bus: busB, config: conf(pb))
        try a.start()
        try b.start()
        let ca = try a.client(), cb = try b.client()
        let idA = try a.serverId, idB = try b.serverId

        // Refusals before the pair exists.
        expectBusError("org.tandem.LicenseManager1.PeerNotPrepared") { _ = try ca.call("EnableBackup", [.string("127.0.0.1:\(pb)")]) }
        expectBusError("org.tandem.LicenseManager1.PeerUnreachable") { _ = try cb.call("PrepareBackup", [.string("127.0.0.1:\(pw + 7)")]) }
        expectBusError("org.tandem.LicenseManager1.PairState") { _ = try ca.call("DisableBackup") }

        // The tech note's workflow through tandemctl.
        let prep = try tandemctl(busB, ["pair", "prepare-backup", "--primary", "127.0.0.1:\(pa)"])
        #expect(prep.status == 0, "\(prep.stderr)")
        let en = try tandemctl(busA, ["pair", "enable-backup", "--backup", "127.0.0.1:\(pb)"])
        #expect(en.status == 0, "\(en.stderr)")
        #expect(try ca.get("Role") == .string("primary"))
        #expect(try cb.get("Role") == .string("backup"))
        #expect(try ca.get("PeerServerId") == .string(idB))
        try waitFor("paired-and-available on both", seconds: 10) {
            try ca.get("PairStatus") == .string("paired-and-available") && cb.get("PairStatus") == .string("paired-and-available")
                && ca.get("Serving") == .bool(true)
        }
        #expect(try cb.get("Serving") == .bool(false))
        let request = try ca.call("GetActivationRequest").first?.stringValue ?? ""
        #expect(request.contains(idA) && request.contains(idB), "\(request)")

        // A license for one server only is refused; one for both is activated on the primary
        // and appears on the backup.
        expectBusError("org.tandem.LicenseManager1.WrongServer") {
            _ = try ca.call("ActivateLicense", [.string(try vendor.issue(to: [idA], id: "ONLY-A"))])
        }
        let doc = try vendor.issue(to: [idA, idB], feature: "cad", seats: 3, id: "PAIR-1")
        expectBusError("org.tandem.LicenseManager1.NotPrimary") { _ = try cb.call("ActivateLicense", [.string(doc)]) }
        _ = try ca.call("ActivateLicense", [.string(doc)])
        try waitFor("the license on the backup", seconds: 5) { try !listRows(cb.call("ListLicenses")).isEmpty }
        expectBusError("org.tandem.LicenseManager1.LicensesActive") { _ = try ca.call("DisableBackup") }
        expectBusError("org.tandem.LicenseManager1.PairState") { _ = try ca.call("ResetServerId") }
        expectBusError("org.tandem.LicenseManager1.NotServing") {
            _ = try cb.call("Acquire", [.string("cad"), .uint32(1), .string("direct"), .vardict([])])
        }

        // A product acquires over the network; the lease is on the backup as soon as it is answered.
        let httpA = try a.httpAddress, httpB = try b.httpAddress
        let client = TandemClient(servers: ["http://" + httpA, "http://" + httpB], timeout: 2)
        let lease = try await client.acquire(feature: "cad", count: 1, client: "ws-1", ttlSec: 60)
        let onB = listRows(try cb.call("ListLeases")).map { $0[0].stringValue ?? "" }
        #expect(onB.contains(lease.leaseId), "backup lacks the answered lease: \(onB)")

        // Tampered and replayed frames are refused and counted.
        let key = try PairKey.load(path: keyFile)
        var sealer = FrameSealer(key: key)
        let udp = try UDPSocket(bind: SocketAddress(resolving: "127.0.0.1:0", defaultPort: 0))
        let target = try SocketAddress(resolving: "127.0.0.1:\(pb)", defaultPort: 0)
        var frame = sealer.seal(.probe(nonce: 1), now: USec(Date().timeIntervalSince1970 * 1e6))
        udp.send(frame, to: target)
        udp.send(frame, to: target) // replay
        frame[frame.count / 2] ^= 0x40
        udp.send(frame, to: target) // altered
        func rejected(_ reason: String) throws -> UInt64 {
            for e in try cb.get("RejectedFrames").arrayValue ?? [] {
                if case .dictEntry(.string(reason), .uint64(let n)) = e { return n }
            }
            return 0
        }
        try waitFor("rejected frames counted", seconds: 5) { try rejected("replayed") >= 1 && rejected("unauthenticated") >= 1 }

        // kill -9 of the primary: the backup takes over in a new epoch; the lease stays valid there.
        let epochBefore = try cb.get("Epoch").uint64Value ?? 0
        a.stop(SIGKILL)
        let killed = Date()
        try waitFor("the backup serving", seconds: 10) { try cb.get("Serving") == .bool(true) }
        let took = Date().timeIntervalSince(killed)
        #expect(took < 1 + 1 + 2, "failover took \(took) s")
        #expect(try (cb.get("Epoch").uint64Value ?? 0) > epochBefore)
        #expect(try cb.get("PairStatus") == .string("primary-not-available"))
        let renewed = try await client.renew(leaseId: lease.leaseId)
        #expect(renewed.leaseId == lease.leaseId)
        let second = try await client.acquire(feature: "cad", count: 1, client: "ws-2", ttlSec: 60)
        #expect(second.serverId == idB)

        // The primary returns, catches up and takes serving back (failback).
        try a.start()
        try waitFor("failback to the primary", seconds: 15) {
            try ca.get("Serving") == .bool(true) && cb.get("Serving") == .bool(false)
                && ca.get("PairStatus") == .string("paired-and-available")
        }
        let onA = listRows(try ca.call("ListLeases")).map { $0[0].stringValue ?? "" }
        #expect(onA.contains(lease.leaseId) && onA.contains(second.leaseId), "\(onA)")
    }
}

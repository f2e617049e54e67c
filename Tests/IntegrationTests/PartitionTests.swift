import Foundation
import TandemBus
import TandemBusClient
import TandemCore
import TandemPeer
import TandemTesting
import Testing

/// Network namespaces joined by a bridge, with link-local addresses that exist only inside
/// them: `hosts` are namespaces with one veth each into the bridge namespace; `cut(host)` takes
/// that host's bridge port down (both directions), `heal(host)` brings it back.
final class TestNetwork {
    let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    var namespaces: [String] = []
    var bridgeNS: String { "tdm-sw-\(tag)" }

    init(hosts: [String]) throws {
        try ip(["netns", "add", bridgeNS])
        namespaces.append(bridgeNS)
        try ip(["-n", bridgeNS, "link", "add", "br0", "type", "bridge"])
        try ip(["-n", bridgeNS, "link", "set", "br0", "up"])
        for (i, h) in hosts.enumerated() {
            let ns = name(h)
            try ip(["netns", "add", ns])
            namespaces.append(ns)
            try ip(["-n", ns, "link", "set", "lo", "up"])
            try ip(["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p\(i)", "netns", bridgeNS])
            try ip(["-n", ns, "addr", "add", address(i) + "/24", "dev", "eth0"])
            try ip(["-n", ns, "link", "set", "eth0", "up"])
            try ip(["-n", bridgeNS, "link", "set", "p\(i)", "master", "br0"])
            try ip(["-n", bridgeNS, "link", "set", "p\(i)", "up"])
            ports[h] = "p\(i)"
        }
    }

    var ports: [String: String] = [:]
    func name(_ host: String) -> String { "tdm-\(host)-\(tag)" }
    /// 169.254.77.(i+1): IPv4 link-local, only inside these namespaces.
    func address(_ i: Int) -> String { "169.254.77.\(i + 1)" }

    func cut(_ host: String) throws { try ip(["-n", bridgeNS, "link", "set", ports[host]!, "down"]) }
    func heal(_ host: String) throws { try ip(["-n", bridgeNS, "link", "set", ports[host]!, "up"]) }

    @discardableResult
    func ip(_ args: [String]) throws -> RunResult {
        let r = try run("/usr/sbin/ip", args)
        guard r.status == 0 else { throw TestFailure("ip \(args.joined(separator: " ")): \(r.stderr)") }
        return r
    }

    deinit {
        for ns in namespaces.reversed() { _ = try? run("/usr/sbin/ip", ["netns", "del", ns]) }
    }

    static var available: Bool {
        geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
    }
}

@Suite(.serialized) struct Partition {
    /// The primary is cut off from the backup and the witness (a veth link down) while both
    /// sides keep trying to acquire: at most one side serves at a time, the seats granted never
    /// exceed the seats owned, and after the heal both nodes hold the same leases.
    @Test(.enabled(if: TestNetwork.available, "needs root and iproute2"))
    func aCutPrimaryNeverOverAllocates() throws {
        let net = try TestNetwork(hosts: ["a", "b", "w"])
        let keyFile = makeTempDir("pairkey") + "/pair.key"
        try PairKey.generate().write(path: keyFile)
        let addrW = net.address(2)
        // The witness runs in its own namespace.
        let witness = Process()
        witness.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        witness.arguments = [
            "netns", "exec", net.name("w"), binary("tandem-witness"), "--listen", "\(addrW):7392",
            "--key-file", keyFile, "--state-dir", makeTempDir("witness"), "--lease-sec", "0.8"
        ]
        witness.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try witness.run()
        defer { kill(witness.processIdentifier, SIGKILL); witness.waitUntilExit() }
        let seats = 4
        let (a, b, ca, cb) = try formPair(net, keyFile: keyFile, witness: "\(addrW):7392", seats: seats)

        var granted: [String: String] = [:]  // lease id -> node
        var errors: [String] = []
        func tryAcquire(_ c: BusClient, _ node: String, _ n: Int) {
            switch acquire(c, "\(node)-\(n)") {
            case .success(let id): granted[id] = node
            case .failure(let e): errors.append("\(node): \(e)")
            }
        }
        tryAcquire(ca, "a", 0)
        tryAcquire(ca, "a", 1)
        #expect(granted.count == 2, "\(errors)")

        try net.cut("a")
        let cutAt = Date()
        var n = 2
        var bServedAfter: Double?
        while Date().timeIntervalSince(cutAt) < 6 {
            n += 1
            let before = granted.count
            tryAcquire(cb, "b", n)
            if granted.count > before, bServedAfter == nil { bServedAfter = Date().timeIntervalSince(cutAt) }
            tryAcquire(ca, "a", n)
            #expect(granted.count <= seats, "over-allocation while partitioned: \(granted)")
            // Never both serving at once.
            #expect(!(try ca.get("Serving") == .bool(true) && cb.get("Serving") == .bool(true)))
            usleep(100_000)
        }
        #expect(bServedAfter != nil, "the backup never served while the primary was cut off")
        #expect(granted.values.filter { $0 == "a" }.count == 2, "the cut-off primary granted seats: \(granted)")
        #expect(granted.count == seats)
        // A cut link is silence, not a stop: the tech note's Disconnected (issue 17).
        #expect(try cb.get("PeerStatus") == .string("disconnected"))
        #expect(try ca.get("PeerStatus") == .string("disconnected"))

        try heal(net, ca, cb)
        #expect(try leaseIds(ca) == Set(granted.keys))
        _ = a.stop()
        _ = b.stop()
    }

    /// Two nodes in namespaces `a` and `b`, paired (with `witness`, or without one under
    /// `policy`), with a license of `seats` seats issued to both.
    func formPair(
        _ net: TestNetwork, keyFile: String, witness: String?, policy: String? = nil, seats: Int
    ) throws -> (Tandemd, Tandemd, BusClient, BusClient) {
        let vendor = try Vendor()
        let (addrA, addrB) = (net.address(0), net.address(1))
        func conf(_ addr: String) -> String {
            pairConfig(
                vendor: vendor, keyFile: keyFile, link: "\(addr):7391", witness: witness,
                extra: "HeartbeatSec=0.2\nFailoverTimeoutSec=1\n" + (policy.map { "PartitionPolicy=\($0)" } ?? ""))
        }
        let a = try Tandemd(bus: try TestBus(), config: conf(addrA)),
            b = try Tandemd(bus: try TestBus(), config: conf(addrB))
        a.netns = net.name("a")
        b.netns = net.name("b")
        try a.start()
        try b.start()
        let ca = try a.client(), cb = try b.client()
        _ = try cb.call("PrepareBackup", [.string(addrA)])
        _ = try ca.call("EnableBackup", [.string(addrB)])
        try waitFor("paired-and-available", seconds: 10) {
            try ca.get("PairStatus") == .string("paired-and-available")
                && cb.get("PairStatus") == .string("paired-and-available")
                && ca.get("Serving") == .bool(true)
        }
        _ = try ca.call(
            "ActivateLicense",
            [.string(try vendor.issue(to: [try a.serverId, try b.serverId], seats: seats, id: "NET"))])
        return (a, b, ca, cb)
    }

    /// Without a witness, and with two seats taken on the primary.
    func pairWithoutWitness(
        _ net: TestNetwork, policy: String, seats: Int
    ) throws -> (Tandemd, Tandemd, BusClient, BusClient, [String]) {
        let keyFile = makeTempDir("pairkey") + "/pair.key"
        try PairKey.generate().write(path: keyFile)
        let (a, b, ca, cb) = try formPair(net, keyFile: keyFile, witness: nil, policy: policy, seats: seats)
        #expect(try ca.get("WitnessAddress") == .string(""))
        let first = try (0..<2).map { try acquire(ca, "a-\($0)").get() }
        return (a, b, ca, cb, first)
    }

    /// Brings the primary's link back and waits until both nodes are paired with the same leases.
    func heal(_ net: TestNetwork, _ ca: BusClient, _ cb: BusClient) throws {
        try net.heal("a")
        try waitFor("both nodes paired with the same leases after the heal", seconds: 20) {
            try ca.get("PairStatus") == .string("paired-and-available")
                && cb.get("PairStatus") == .string("paired-and-available")
                && leaseIds(ca) == leaseIds(cb)
        }
    }

    func acquire(_ c: BusClient, _ client: String) -> Result<String, Error> {
        Result {
            try c.call(
                "Acquire", [.string("cad"), .uint32(1), .string(client), .vardict([("ttl_usec", .uint64(600_000_000))])]
            ).first?.stringValue ?? ""
        }
    }

    /// PartitionPolicy=takeover (no witness): both sides serve while the link is cut and may
    /// over-allocate; administrative changes wait; after the heal the lease changes of both
    /// sides are merged into one log (none lost) and nothing new is granted until usage is back
    /// under the seat count.
    @Test(.enabled(if: TestNetwork.available, "needs root and iproute2"))
    func takeoverServesOnBothSidesAndMergesAfterTheHeal() throws {
        let net = try TestNetwork(hosts: ["a", "b"])
        let (a, b, ca, cb, first) = try pairWithoutWitness(net, policy: "takeover", seats: 4)
        #expect(try ca.get("PartitionPolicy") == .string("takeover"))
        try net.cut("a")
        try waitFor("the backup serving on its own", seconds: 8) { try cb.get("Serving") == .bool(true) }
        #expect(try ca.get("Serving") == .bool(true), "the primary goes on alone")
        try waitFor("both sides see the peer gone", seconds: 5) {
            try ca.get("PairStatus") == .string("backup-not-available")
                && cb.get("PairStatus") == .string("primary-not-available")
        }
        // Each side grants the two seats it sees free: six leases on four seats.
        var granted = Set(first)
        for n in 0..<2 {
            granted.insert(try acquire(ca, "a-cut-\(n)").get())
            granted.insert(try acquire(cb, "b-cut-\(n)").get())
        }
        #expect(granted.count == 6)
        do {
            _ = try ca.call("Reserve", [.string("cad"), .uint32(1), .string("h")])
            Issue.record("an administrative change was accepted while the peer was out of reach")
        } catch let e {
            #expect(e.name == "org.tandem.LicenseManager1.PeerUnreachable", "\(e)")
        }
        try heal(net, ca, cb)
        // The primary takes serving back after the heal (a handover): wait it out, then one serves.
        try waitFor("one node serving after the heal", seconds: 10) { try ca.get("Serving") != cb.get("Serving") }
        let serving = try ca.get("Serving") == .bool(true) ? ca : cb
        #expect(try leaseIds(serving) == granted, "every lease granted on either side is kept")
        // Six of four seats in use: no new grant until three are released.
        switch acquire(serving, "late") {
        case .success(let id): Issue.record("granted \(id) while over-allocated")
        case .failure(let e): #expect((e as? BusError)?.name == "org.tandem.LicenseManager1.InsufficientSeats", "\(e)")
        }
        for id in granted.sorted().prefix(3) { _ = try serving.call("Release", [.string(id)]) }
        #expect((try? acquire(serving, "late").get()) != nil)
        _ = a.stop()
        _ = b.stop()
    }

    /// PartitionPolicy=split (no witness): while cut off each side grants only its share of
    /// the seats free at the last position both held (SplitPrimaryPercent=50: 2 and 2 of 4),
    /// never over-allocating, also across a kill -9 and restart; after the heal both hold every
    /// lease granted.
    @Test(.enabled(if: TestNetwork.available, "needs root and iproute2"))
    func splitGrantsEachSideItsShareAndNeverOverAllocates() throws {
        let net = try TestNetwork(hosts: ["a", "b"])
        let seats = 6
        let (a, b, ca, cb, first) = try pairWithoutWitness(net, policy: "split", seats: seats)
        #expect(try cb.get("PartitionPolicy") == .string("split:50"))
        try net.cut("a")
        try waitFor("the backup serving on its own", seconds: 8) { try cb.get("Serving") == .bool(true) }
        try waitFor("the primary sees the backup gone", seconds: 5) {
            try ca.get("PairStatus") == .string("backup-not-available")
        }
        var granted: [String: String] = Dictionary(uniqueKeysWithValues: first.map { ($0, "a") })
        var refusals: [String] = []
        for n in 0..<4 {
            for (c, side) in [(ca, "a"), (cb, "b")] {
                switch acquire(c, "\(side)-cut-\(n)") {
                case .success(let id): granted[id] = side
                case .failure(let e): refusals.append((e as? BusError).map { "\($0.name): \($0.message)" } ?? "\(e)")
                }
            }
            #expect(granted.count <= seats, "over-allocation while cut off: \(granted)")
        }
        #expect(
            granted.values.filter { $0 == "a" }.count == 4 && granted.values.filter { $0 == "b" }.count == 2,
            "\(granted)")
        #expect(
            refusals.count == 4
                && refusals.allSatisfy { $0.contains("InsufficientSeats") && $0.contains("PartitionPolicy=split") },
            "\(refusals)")
        // kill -9 of the cut-off primary and a restart, still cut off: it takes over again from
        // its stored log and split base, and its share stays spent.
        a.stop(SIGKILL)
        try a.start()
        try waitFor("the restarted primary serving on its own", seconds: 8) { try ca.get("Serving") == .bool(true) }
        switch acquire(ca, "a-after-restart") {
        case .success(let id): Issue.record("the restarted primary granted \(id) beyond its share: \(granted)")
        case .failure(let e): #expect((e as? BusError)?.name == "org.tandem.LicenseManager1.InsufficientSeats", "\(e)")
        }
        try heal(net, ca, cb)
        #expect(try leaseIds(ca) == Set(granted.keys))
        _ = a.stop()
        _ = b.stop()
    }
}

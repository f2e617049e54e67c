import Foundation
import Testing
import TandemBus
import TandemCore
import TandemPeer

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
        let vendor = try Vendor()
        let keyFile = makeTempDir("pairkey") + "/pair.key"
        try PairKey.generate().write(path: keyFile)
        let (addrA, addrB, addrW) = (net.address(0), net.address(1), net.address(2))
        // The witness runs in its own namespace.
        let witness = Process()
        witness.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        witness.arguments = ["netns", "exec", net.name("w"), binary("tandem-witness"), "--listen", "\(addrW):7392",
                             "--key-file", keyFile, "--state-dir", makeTempDir("witness"), "--lease-sec", "0.8"]
        witness.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try witness.run()
        defer { kill(witness.processIdentifier, SIGKILL); witness.waitUntilExit() }
        func conf(_ addr: String) -> String {
            pairConfig(vendor: vendor, keyFile: keyFile, link: "\(addr):7391", witness: "\(addrW):7392",
                       extra: "HeartbeatSec=0.2\nFailoverTimeoutSec=1")
        }
        let busA = try TestBus(), busB = try TestBus()
        let a = try Tandemd(bus: busA, config: conf(addrA)), b = try Tandemd(bus: busB, config: conf(addrB))
        a.netns = net.name("a")
        b.netns = net.name("b")
        try a.start()
        try b.start()
        let ca = try a.client(), cb = try b.client()
        _ = try cb.call("PrepareBackup", [.string(addrA)])
        _ = try ca.call("EnableBackup", [.string(addrB)])
        try waitFor("paired-and-available", seconds: 10) {
            try ca.get("PairStatus") == .string("paired-and-available") && cb.get("PairStatus") == .string("paired-and-available")
                && ca.get("Serving") == .bool(true)
        }
        let seats = 4
        _ = try ca.call("ActivateLicense", [.string(try vendor.issue(to: [try a.serverId, try b.serverId], seats: seats, id: "NET"))])

        var granted: [String: String] = [:] // lease id -> node
        var errors: [String] = []
        func tryAcquire(_ c: BusClient, _ node: String, _ n: Int) {
            do {
                let id = try c.call("Acquire", [.string("cad"), .uint32(1), .string("\(node)-\(n)"),
                                                 .vardict([("ttl_usec", .uint64(600_000_000))])]).first?.stringValue ?? ""
                granted[id] = node
            } catch { errors.append("\(node): \(error)") }
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

        try net.heal("a")
        try waitFor("both nodes paired after the heal", seconds: 20) {
            try ca.get("PairStatus") == .string("paired-and-available") && cb.get("PairStatus") == .string("paired-and-available")
                && leaseIds(ca) == leaseIds(cb)
        }
        #expect(try leaseIds(ca) == Set(granted.keys))
        _ = a.stop()
        _ = b.stop()
    }
}

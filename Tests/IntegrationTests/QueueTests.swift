import Foundation
import TandemBusClient
import TandemCore
import TandemTesting
import Testing

/// Waiting for a seat (issue 13): a request that finds no free seat waits in its feature's queue
/// (`wait_usec` over D-Bus, a held request with `wait_sec` over HTTP), is granted as soon as a
/// seat comes free, in the order the requests came, and is refused when its wait runs out.
@Suite(.serialized) struct WaitingForASeat {
    /// A command running in the background, its output read once it ends.
    final class Background {
        let process = Process()
        let out = Pipe()
        init(_ exe: String, _ args: [String], env: [String: String]) throws {
            process.executableURL = URL(fileURLWithPath: exe)
            process.arguments = args
            var environment = ProcessInfo.processInfo.environment
            for (k, v) in env { environment[k] = v }
            process.environment = environment
            process.standardOutput = out
            process.standardError = out
            try process.run()
        }
        func finish() -> (status: Int32, output: String) {
            process.waitUntilExit()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        deinit { if process.isRunning { process.terminate() } }
    }

    /// `busctl call Acquire` of one seat of `one` for `client`, waiting up to `waitSec`.
    static func waiter(_ f: Fixture, _ client: String, waitSec: Int, user: String = "root") throws -> Background {
        try Background(
            "/usr/bin/busctl",
            [
                "--timeout=\(waitSec + 20)", "call", BusNames.service, BusNames.rootPath, BusNames.managerInterface,
                "Acquire", "susa{sv}", "one", "1", client, "3", "wait_usec", "t", "\(waitSec * 1_000_000)",
                "request_id", "s", "r-\(client)", "user", "s", user
            ], env: f.bus.env)
    }

    static func queue(_ c: BusClient) throws -> [QueueRow] { try QueueRow.rows(c.call("ListQueue")) }

    /// Activates a one-seat feature `one` and takes its seat for `ws-a`: the lease's id.
    static func oneSeatTaken(_ f: Fixture) throws -> String {
        let c = try f.bus.client()
        let license = try f.vendor.issue(to: [f.serverId], feature: "one", seats: 1, id: "ONE")
        _ = try c.call("ActivateLicense", [.string(license)])
        return try c.call("Acquire", [.string("one"), .uint32(1), .string("ws-a"), .vardict([])])[0].stringValue ?? ""
    }

    static func holder(_ c: BusClient) throws -> [LeaseHolderRow] {
        try LeaseHolderRow.rows(c.call("ListLeaseHolders")).filter { $0.feature == "one" }
    }

    @Test func waitersAreGrantedInTheirOrderAsSoonAsASeatComesFree() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let first = try Self.oneSeatTaken(f)
        // Three requests come one after the other and wait, in that order.
        var waiters: [Background] = []
        for (i, name) in ["ws-b", "ws-c", "ws-d"].enumerated() {
            waiters.append(try Self.waiter(f, name, waitSec: 20))
            try waitFor("\(name) to wait", seconds: 10) { try Self.queue(c).count == i + 1 }
        }
        let q = try Self.queue(c)
        #expect(q.map(\.client) == ["ws-b", "ws-c", "ws-d"] && q.map(\.position) == [1, 2, 3], "\(q)")
        #expect(q.allSatisfy { $0.untilUSec - $0.sinceUSec == 20_000_000 && $0.user == "root" })
        let table = try tandemctl(f.bus, ["queue"]).stdout.split(separator: "\n").dropFirst()
        #expect(
            table.map { $0.split(separator: " ").prefix(3).joined(separator: " ") } == [
                "one 1 ws-b", "one 2 ws-c", "one 3 ws-d"
            ], "\(table)")
        let base = "http://" + (try f.daemon.httpAddress)
        let web = try http("GET", base + "/v1/queue")
        #expect(web.status == 200 && web.body.contains("\"position\":3"), "\(web.body)")
        let metrics = samples(try http("GET", base + "/metrics", contentType: nil).body)
        #expect(
            metrics["tandem_feature_queue_waiting{feature=\"one\"}"] == 3,
            "\(metrics.filter { $0.key.contains("queue") })")

        // Each release hands the seat to the next waiter, at once.
        var held = first
        for (i, name) in ["ws-b", "ws-c", "ws-d"].enumerated() {
            _ = try c.call("Release", [.string(held)])
            let granted = waiters[i].finish()
            #expect(granted.status == 0 && granted.output.hasPrefix("st \"lease-"), "\(name): \(granted.output)")
            let now = try Self.holder(c)
            #expect(now.map(\.client) == [name], "\(now)")
            held = now.first?.id ?? ""
        }
        // Granted within 100 ms of each release: the grant's time against the released session's end.
        let sessions = try UsageHistory.sessions(c, filter: [("feature", .string("one"))])
        let byClient = Dictionary(uniqueKeysWithValues: sessions.map { ($0.client, $0) })
        for (before, after) in [("ws-a", "ws-b"), ("ws-b", "ws-c"), ("ws-c", "ws-d")] {
            guard let released = byClient[before], let granted = byClient[after] else {
                Issue.record("no sessions of \(before) and \(after): \(sessions)")
                continue
            }
            let gap = Int64(granted.startUSec) - Int64(released.endUSec)
            #expect(gap >= 0 && gap < 100_000, "\(after) granted \(gap) µs after \(before)'s release")
            print("queue: \(after) granted \(gap) µs after \(before)'s release")
        }
        #expect(try Self.queue(c).isEmpty)
        // Nothing waited out: no denial.
        #expect(try UsageHistory.denials(c).isEmpty)
    }

    @Test func aWaitThatRunsOutIsRefusedAndAnHTTPRequestIsHeld() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let first = try Self.oneSeatTaken(f)
        // A one-second wait with no seat coming: InsufficientSeats after it, and a denial.
        let started = Date()
        let short = try Self.waiter(f, "ws-late", waitSec: 1).finish()
        let waited = Date().timeIntervalSince(started)
        // (busctl prints the error's message: InsufficientSeats's.)
        #expect(short.status != 0 && short.output.contains("1 seats requested, 0 available"), "\(short.output)")
        #expect(short.output.contains("waited 1 s"), "\(short.output)")
        #expect(waited >= 1 && waited < 5, "\(waited)")
        try waitFor("the kept place to lapse and be a denial", seconds: 20) {
            try UsageHistory.denials(c).map(\.client) == ["ws-late"]
        }
        #expect(try UsageHistory.denials(c).first?.reason == "insufficient-seats")
        // Over HTTP: a held request, granted when the seat comes free.
        let base = "http://" + (try f.daemon.httpAddress)
        let held = try Background(
            "/usr/bin/curl",
            [
                "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", "--max-time", "30", "-X", "POST", "-H",
                "Content-Type: application/json", "--data-binary",
                #"{"feature":"one","client":"web-1","request_id":"w1","wait_sec":20}"#, base + "/v1/leases"
            ], env: [:])
        try waitFor("the HTTP request to wait", seconds: 10) { try Self.queue(c).map(\.client) == ["web-1"] }
        _ = try c.call("Release", [.string(first)])
        let answer = held.finish()
        #expect(answer.output.hasSuffix("\n201") && answer.output.contains("\"client\":\"web-1\""), "\(answer.output)")
        // Without wait_sec a request is refused at once, as before; a wait_sec over 60 is refused.
        let now = try http("POST", base + "/v1/leases", body: #"{"feature":"one","client":"web-2"}"#)
        #expect(now.status == 409)
        let long = try http("POST", base + "/v1/leases", body: #"{"feature":"one","client":"web-2","wait_sec":61}"#)
        #expect(long.status == 400, "\(long.body)")
    }
}

extension WaitingForASeat {
    /// Queue=no in the policy, and a request for more seats than the feature has, are refused at once.
    @Test func noWaitingWhereItCannotEndWell() throws {
        let dir = makeTempDir("queue-policy")
        try "[Feature one]\nQueue=no\n".write(toFile: dir + "/policy.conf", atomically: true, encoding: .utf8)
        let f = try Fixture(extraConfig: "Policy=\(dir)/policy.conf\n")
        let c = try f.bus.client()
        _ = try Self.oneSeatTaken(f)
        let wait: BusValue = .vardict([("wait_usec", .uint64(5_000_000))])
        let started = Date()
        expectBusError("org.tandem.LicenseManager1.InsufficientSeats") {
            _ = try c.call("Acquire", [.string("one"), .uint32(1), .string("ws-b"), wait])
        }
        expectBusError("org.tandem.LicenseManager1.InsufficientSeats") {
            _ = try c.call("Acquire", [.string("cad"), .uint32(6), .string("ws-b"), wait])
        }
        #expect(Date().timeIntervalSince(started) < 2, "neither waited")
        #expect(try Self.queue(c).isEmpty)
        // The client takes such a refusal as final: it does not ask again and again for its --wait.
        let config = makeTempDir("client") + "/client.conf"
        try "[Client]\nServer=\(try f.daemon.httpAddress)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let asked = Date()
        let cli = try run(
            binary("tandemctl"), ["client", "acquire", "one", "--client", "ws-c", "--wait", "20", "--config", config])
        #expect(cli.status != 0 && cli.stderr.contains("InsufficientSeats"), "\(cli.stderr)")
        #expect(Date().timeIntervalSince(asked) < 5)
        #expect(try UsageHistory.denials(c).filter { $0.client == "ws-c" }.count == 1)
    }
}

extension WaitingForASeat {
    /// `Priority=` of a group in the policy: its members' waiting requests go before the others'
    /// (first come first served within one priority).
    @Test func aGroupsPriorityGoesFirst() throws {
        let dir = makeTempDir("queue-priority")
        try "[Group ops]\nUsers=carol\nPriority=10\n".write(
            toFile: dir + "/policy.conf", atomically: true, encoding: .utf8)
        let f = try Fixture(extraConfig: "Policy=\(dir)/policy.conf\n")
        let c = try f.bus.client()
        let first = try Self.oneSeatTaken(f)
        var waiters: [Background] = []
        for (i, (name, user)) in [("ws-b", "eve"), ("ws-c", "dan"), ("ws-d", "carol")].enumerated() {
            waiters.append(try Self.waiter(f, name, waitSec: 20, user: user))
            try waitFor("\(name) to wait", seconds: 10) { try Self.queue(c).count == i + 1 }
        }
        #expect(try Self.queue(c).map(\.client) == ["ws-d", "ws-b", "ws-c"], "carol's ops request first")
        _ = try c.call("Release", [.string(first)])
        let granted = waiters[2].finish()
        #expect(granted.status == 0, "\(granted.output)")
        #expect(try Self.holder(c).map(\.client) == ["ws-d"])
        #expect(try Self.queue(c).map(\.position) == [1, 2])
    }
}

/// A waiter outlives a failover (issue 13): `tandemctl client acquire --wait` is waiting at the
/// primary when it is killed; the client asks the backup with the same request id, waits there,
/// and is granted once, when the seat comes free.
@Suite(.serialized) struct WaitingThroughAFailover {
    @Test func aWaiterIsQueuedAgainOnTheBackupAndGrantedOnce() throws {
        let p = try PairFixture().formed(seats: 1)
        let ca = try p.a.client(), cb = try p.b.client()
        let held =
            try ca.call("Acquire", [.string("cad"), .uint32(1), .string("ws-a"), .vardict([])])[0]
            .stringValue ?? ""
        let config = makeTempDir("client") + "/client.conf"
        try "[Client]\nServer=\(try p.a.httpAddress)\nBackup=\(try p.b.httpAddress)\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        let waiter = try WaitingForASeat.Background(
            binary("tandemctl"),
            [
                "client", "acquire", "cad", "--client", "ws-b", "--request-id", "rb", "--wait", "60", "--json",
                "--config", config, "--failover-wait", "20"
            ], env: [:])
        try waitFor("ws-b to wait at the primary", seconds: 10) {
            try WaitingForASeat.queue(ca).map(\.client) == ["ws-b"]
        }
        _ = p.a.stop(SIGKILL)
        try waitFor("ws-b to wait at the backup", seconds: 20) {
            try WaitingForASeat.queue(cb).map(\.client) == ["ws-b"]
        }
        _ = try cb.call("Release", [.string(held)])
        let granted = waiter.finish()
        #expect(granted.status == 0 && granted.output.contains("\"client\" : \"ws-b\""), "\(granted.output)")
        let leases = try LeaseHolderRow.rows(cb.call("ListLeaseHolders"))
        #expect(leases.map(\.client) == ["ws-b"], "granted once: \(leases)")
        #expect(try WaitingForASeat.queue(cb).isEmpty)
    }
}

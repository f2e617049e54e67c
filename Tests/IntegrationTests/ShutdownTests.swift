import Foundation
import TandemBusClient
import Testing

/// Stopping is designed: the loop keeps running until the calls in progress are answered.
@Suite(.serialized) struct Shutdown {
    /// One call's life, as a client saw it.
    struct Call {
        var started, ended: Date
        /// "ok", a D-Bus error name, "http <status>", or "curl exit <n>".
        var outcome: String
        var viaHTTP: Bool
    }

    final class Calls: @unchecked Sendable {
        let lock = NSLock()
        var all: [Call] = []
        var stop = false
        func add(_ c: Call) { lock.withLock { all.append(c) } }
        var stopped: Bool { lock.withLock { stop } }
    }

    /// SIGTERM while paired acquisitions wait for a frozen backup's acknowledgement, over D-Bus
    /// and the network API: every call that was in flight is answered (granted, or refused with
    /// NotServing / 503) within a second, not left to its client's timeout, and tandemd exits 0.
    @Test func sigtermAnswersEveryCallInFlightAndExitsZero() throws {
        let f = try PairFixture().formed(seats: 100_000)
        let calls = Calls()
        let busAddress = f.busA.address
        let base = "http://" + (try f.a.httpAddress)
        let group = DispatchGroup()
        for t in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                guard let client = try? BusClient(.address(busAddress)) else { return }
                client.timeoutUSec = 5_000_000
                var i = 0
                while !calls.stopped {
                    let started = Date()
                    var outcome = "ok"
                    do {
                        _ = try client.call(.acquire, [.string("cad"), .uint32(1), .string("d\(t)-\(i)"), .vardict([])])
                    } catch { outcome = (error as? BusError)?.name ?? "\(error)" }
                    calls.add(Call(started: started, ended: Date(), outcome: outcome, viaHTTP: false))
                    // Gone from the bus: nothing more to ask.
                    if outcome.hasSuffix("ServiceUnknown") || outcome.hasSuffix("NameHasNoOwner") { return }
                    i += 1
                }
            }
        }
        for t in 0..<2 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var i = 0
                while !calls.stopped {
                    let started = Date()
                    let r = try? run(
                        "/usr/bin/curl",
                        [
                            "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "POST",
                            "-H", "Content-Type: application/json", "--data-binary",
                            #"{"feature":"cad","count":1,"client":"h\#(t)-\#(i)"}"#, base + "/v1/leases"
                        ])
                    let outcome =
                        r.map { $0.status == 0 ? "http \($0.stdout)" : "curl exit \($0.status)" } ?? "curl did not run"
                    calls.add(Call(started: started, ended: Date(), outcome: outcome, viaHTTP: true))
                    if outcome == "curl exit 7" { return }  // nothing listens any more
                    i += 1
                }
            }
        }
        usleep(500_000)
        // The backup stops acknowledging: the primary's answers wait for it (or for the witness,
        // once the backup counts as unreachable).
        f.b.signal(SIGSTOP)
        defer { f.b.signal(SIGCONT) }
        usleep(300_000)
        let term = Date()
        let status = f.a.stop(SIGTERM)
        let exited = Date()
        usleep(200_000)
        calls.lock.withLock { calls.stop = true }
        group.wait()

        #expect(status == 0, "tandemd exited with \(status): \(f.a.log().suffix(3000))")
        // The daemon's own bound is 0.6 s for the answers plus 0.3 s for the network API to
        // send them; a loaded machine may add a little.
        #expect(exited.timeIntervalSince(term) < 2.0, "tandemd took \(exited.timeIntervalSince(term)) s to stop")
        let all = calls.lock.withLock { calls.all }
        let inFlight = all.filter { $0.started < term && $0.ended > term }
        #expect(!inFlight.isEmpty, "no call was in flight at SIGTERM: the test tested nothing")
        let answeredBefore = all.filter { $0.started < term }
        for c in answeredBefore {
            let late = c.ended.timeIntervalSince(term)
            #expect(late < 1.5, "a call in flight at SIGTERM took \(late) s: \(c.outcome)")
            if c.viaHTTP {
                // A request that had not reached tandemd yet may find the listener closed (7);
                // one that was sent is answered: granted (201) or refused (503).
                #expect(
                    ["http 201", "http 503", "curl exit 7"].contains(c.outcome), "HTTP call ended with \(c.outcome)")
            } else {
                #expect(c.outcome == "ok" || c.outcome == ns + "NotServing", "D-Bus call ended with \(c.outcome)")
            }
        }
        let refused = inFlight.filter { $0.outcome.hasSuffix("NotServing") || $0.outcome == "http 503" }.count
        print(
            "shutdown: \(inFlight.count) calls in flight at SIGTERM (\(refused) refused), stopped in "
                + "\(exited.timeIntervalSince(term)) s"
        )
        #expect(f.a.log().contains("stopping on signal"))
    }
}

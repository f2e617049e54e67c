import TandemCore
import Testing

@Suite struct ReportThrottleTests {
    @Test func oncePerSourceAndIntervalWithTheCountLeftOut() {
        var t = ReportThrottle(intervalUSec: 100)
        #expect(t.report("a", now: 0) == 0)
        #expect(t.report("a", now: 10) == nil)
        #expect(t.report("a", now: 99) == nil)
        #expect(t.report("b", now: 50) == 0)  // sources apart
        #expect(t.report("a", now: 100) == 2)
        #expect(t.report("a", now: 150) == nil)
    }

    @Test func aFullTableIsPrunedAtMostOnceAnInterval() {
        var t = ReportThrottle(intervalUSec: 100, maxSources: 2)
        #expect(t.report("a", now: 0) == 0)
        #expect(t.report("b", now: 0) == 0)
        #expect(t.report("c", now: 50) == nil)  // full, nothing expired: pruned, still full
        #expect(t.report("c", now: 120) == nil)  // expired now, but pruned 70 µs ago
        #expect(t.report("c", now: 150) == 0)  // the next prune makes room
        #expect(t.report("a", now: 160) == 0)
        #expect(t.report("b", now: 170) == nil)  // full again: a and c are recent
    }
}

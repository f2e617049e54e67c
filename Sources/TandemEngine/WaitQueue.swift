import TandemCore

/// One acquisition waiting for a seat, as ListQueue and /v1/queue show it.
public struct WaitingRequest: Sendable {
    /// 1 for the first in its feature's queue.
    public var position: Int
    public var request: AcquireRequest
    public var sinceUSec: USec
    public var untilUSec: USec
}

/// Acquisitions waiting for a seat (`wait_usec`), per feature, oldest first. A waiting request
/// holds nothing and lives only on the node that serves: it is not replicated. After a failover
/// the client sends it again, with the same request id, to the node that serves then (a grant is
/// never given twice: the request id names the lease).
///
/// Seats that come free go to the waiters first, in the order they came (a higher `Priority=`
/// of the holder's groups first), each that can be served (a waiter whose request does not fit yet does not hold up smaller ones behind it).
/// A waiter whose time runs out is answered `InsufficientSeats` and keeps its place for
/// `rejoinUSec`, so that a client whose wait is longer than one held request (the network API
/// holds one at most a minute) asks again with the same request id without losing it. While it
/// is between two requests it is not served: a seat that comes free then goes to the next one.
struct WaitQueue {
    struct Waiter {
        var request: AcquireRequest
        var caller: Caller
        /// Answered with the grant, or with the refusal when the wait runs out.
        var ticket: Ticket?
        var sinceUSec: USec
        var untilUSec: USec
        /// The refusal it would get now (its reason is the denial's if it never gets a seat).
        var lastRefusal: TandemError
        /// Answered and gone from the queue unless its client asks again before this time.
        var keptUntilUSec: USec?
        /// The policy's `Priority=` of its holder's groups: a higher one goes before.
        var priority = 0
    }

    static let rejoinUSec: USec = 10 * usecPerSecond

    var byFeature: [String: [Waiter]] = [:]

    var isEmpty: Bool { byFeature.isEmpty }

    /// Where the request that `req` repeats (same client and request id) waits, if it does.
    func position(of req: AcquireRequest) -> Int? {
        guard let r = req.requestId else { return nil }
        return byFeature[req.feature]?.firstIndex { $0.request.requestId == r && $0.request.client == req.client }
    }

    /// Behind every waiter of its priority or a higher one (first come first served within one).
    mutating func append(_ w: Waiter) {
        var list = byFeature[w.request.feature] ?? []
        list.insert(w, at: list.firstIndex { $0.priority < w.priority } ?? list.endIndex)
        byFeature[w.request.feature] = list
    }

    /// A repeated request takes over its place (`ticket` nil: it no longer waits, and leaves the
    /// queue). Returns the earlier ticket, still to be answered, which the caller finishes once
    /// the queue is settled.
    mutating func rejoin(_ feature: String, at i: Int, ticket: Ticket?, untilUSec: USec) -> Ticket? {
        let earlier = byFeature[feature]![i].ticket
        if let ticket {
            byFeature[feature]![i].ticket = ticket
            byFeature[feature]![i].untilUSec = untilUSec
            byFeature[feature]![i].keptUntilUSec = nil
        } else {
            byFeature[feature]!.remove(at: i)
            if byFeature[feature]!.isEmpty { byFeature[feature] = nil }
        }
        return earlier
    }

    /// The earliest time a wait runs out or a kept place lapses.
    var nextDeadline: USec? {
        byFeature.values.joined().map { $0.keptUntilUSec ?? $0.untilUSec }.min()
    }

    /// The waiting requests, per feature in queue order (those answered and kept are left out).
    var waiting: [(position: Int, waiter: Waiter)] {
        byFeature.keys.sorted().flatMap { f in
            byFeature[f]!.filter { $0.keptUntilUSec == nil }.enumerated().map { ($0.offset + 1, $0.element) }
        }
    }
}

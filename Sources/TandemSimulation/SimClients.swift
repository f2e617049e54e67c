import TandemCore
import TandemPair

/// The simulated products: acquire, renew before the lease runs out, release; retry on the
/// other node when a node does not answer or is not serving.
extension Simulation {
    func clientSend(_ j: Int, _ command: ClientCommand) {
        nextRef += 1
        let ref = nextRef
        refs[ref] = (j, command, local(.client(j)))
        // A client that asks to release a lease has stopped using its seats.
        if case .release(let id) = command { held[id] = nil }
        clients[j].attempt += 1
        let attempt = clients[j].attempt
        send(from: .client(j), to: .node(clients[j].target), .request(ref: ref, command))
        // A request that may wait for a seat is given its wait before the client asks again.
        var wait: USec = 0
        if case .acquire(_, _, _, _, _, let w) = command { wait = w }
        schedule(1_500_000 + wait, .clientTimeout(j, attempt: attempt))
    }

    func clientTick(_ j: Int) {
        let t = local(.client(j))
        var c = clients[j]
        switch c.phase {
        case .idle:
            if faultsOn && rng.chance(0.6) {
                c.requests += 1
                let count = UInt32(rng.range(1, 2))
                let ttl = rng.range(6_000_000, 12_000_000)
                // Engines queue: half the requests would rather wait up to a few seconds for a seat.
                let wait = engines != nil && rng.chance(0.5) ? rng.range(500_000, 4_000_000) : 0
                c.count = count
                c.ttl = ttl
                c.phase = .acquiring(
                    requestId: "c\(j)-r\(c.requests)", count: count, ttl: ttl, wait: wait, sentLocal: t)
                clients[j] = c
                clientSend(
                    j,
                    .acquire(
                        feature: "cad", count: count, client: "client-\(j)", ttlUSec: ttl,
                        requestId: "c\(j)-r\(c.requests)", waitUSec: wait))
            }
        case .holding:
            if t >= c.deadlineLocal {
                // Out of time: stop using the seat.
                if let id = c.leaseId { held[id] = nil }
                c.phase = .idle
                c.leaseId = nil
                clients[j] = c
            } else if !faultsOn || rng.chance(0.15) {
                c.phase = .releasing
                clients[j] = c
                if let id = c.leaseId {
                    held[id] = nil  // the client stops using the seat as it asks to release it
                    clientSend(j, .release(leaseId: id))
                }
            } else if t >= c.nextRenewLocal {
                c.phase = .renewing(sentLocal: t)
                clients[j] = c
                if let id = c.leaseId { clientSend(j, .renew(leaseId: id)) }
            }
        default:
            break
        }
        schedule(rng.range(300_000, 900_000), .clientTick(j))
    }

    func clientRetry(_ j: Int, switchNode: Bool) {
        if switchNode { clients[j].target = 1 - clients[j].target }
        let c = clients[j]
        switch c.phase {
        case .acquiring(let requestId, let count, let ttl, let wait, _):
            // Asked again with the same request id (and wait): granted once, wherever it waits.
            clients[j].phase = .acquiring(
                requestId: requestId, count: count, ttl: ttl, wait: wait, sentLocal: local(.client(j)))
            clientSend(
                j,
                .acquire(
                    feature: "cad", count: count, client: "client-\(j)", ttlUSec: ttl, requestId: requestId,
                    waitUSec: wait))
        case .renewing:
            if local(.client(j)) >= c.deadlineLocal {
                if let id = c.leaseId { held[id] = nil }
                clients[j].phase = .idle
                clients[j].leaseId = nil
            } else if let id = c.leaseId {
                clients[j].phase = .renewing(sentLocal: local(.client(j)))
                clientSend(j, .renew(leaseId: id))
            }
        case .releasing:
            if let id = c.leaseId { clientSend(j, .release(leaseId: id)) }
        default:
            break
        }
    }

    func clientReceive(_ j: Int, ref: Int, _ reply: SimReply) -> String? {
        guard let r = refs[ref] else { return nil }
        // A request is granted once: a second lease for it while the first is still held by a
        // node would be seats granted twice (after a wait, a retry, a failover).
        if case .granted(let id, _) = reply, case .acquire(_, _, _, _, let rid, _) = r.command {
            if let first = grantsByRequest[rid], first != id, withWitness,
                nodes.contains(where: { $0.state.leases.contains(first) })
            {
                return "request \(rid) granted twice: \(first), then \(id)"
            }
            grantsByRequest[rid] = id
        }
        var c = clients[j]
        let margin = 0.8
        switch (c.phase, reply) {
        case (.acquiring(let requestId, _, let ttl, _, _), .granted(let id, _)):
            guard case .acquire(_, _, _, _, let rid, _) = r.command, rid == requestId else { return nil }
            c.phase = .holding
            c.leaseId = id
            c.deadlineLocal = r.sentLocal + USec(Double(ttl) * margin)
            c.nextRenewLocal = r.sentLocal + ttl / 3
            c.attempt += 1
        case (.acquiring, .refused(.insufficientSeats, _)):
            c.phase = .idle
            c.attempt += 1
        case (.renewing, .renewed(let id, _)):
            guard id == c.leaseId else { return nil }
            c.phase = .holding
            c.deadlineLocal = max(c.deadlineLocal, r.sentLocal + USec(Double(c.ttl) * margin))
            c.nextRenewLocal = r.sentLocal + c.ttl / 3
            c.attempt += 1
        case (.renewing, .refused(.leaseNotFound, let why)):
            // The pair says our lease is gone while we still hold it by our own reckoning:
            // an acknowledged grant was lost (or expired early). Without a witness, a node cut
            // off from the one that granted it does not know it until the pair is back in step.
            if case .renew(let id) = r.command, id == c.leaseId, local(.client(j)) < c.deadlineLocal,
                withWitness || inStepAtReply[ref] == true
            {
                return "client \(j): lease \(id) unknown to the serving node before its deadline (\(why))"
            }
            if let id = c.leaseId { held[id] = nil }
            c.phase = .idle
            c.leaseId = nil
            c.attempt += 1
        case (.releasing, .released), (.releasing, .refused(.leaseNotFound, _)):
            c.phase = .idle
            c.leaseId = nil
            c.attempt += 1
        case (_, .notServing(let leader)):
            clients[j] = c
            if case .idle = c.phase { return nil }
            if case .holding = c.phase { return nil }
            clients[j].target = leader ?? (1 - c.target)
            clientRetry(j, switchNode: false)
            return nil
        default:
            return nil
        }
        clients[j] = c
        return nil
    }
}

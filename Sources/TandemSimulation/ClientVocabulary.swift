import TandemCore
import TandemPair

/// What the simulation's clients ask a node (a product's acquire/renew/release loop).
public enum ClientCommand: Sendable, Equatable {
    /// `waitUSec`: wait that long for a seat in the serving node's queue (engines only: a bare
    /// node has no queue and refuses at once).
    case acquire(feature: String, count: UInt32, client: String, ttlUSec: USec, requestId: String, waitUSec: USec = 0)
    case renew(leaseId: String)
    case release(leaseId: String)
}

/// A node's answer as the simulation's clients read it.
public enum SimReply: Sendable, Equatable {
    case granted(leaseId: String, expiresUSec: USec)
    case renewed(leaseId: String, expiresUSec: USec)
    case released(leaseId: String)
    case refused(TandemErrorCode, String)
    case notServing(leader: NodeIndex?)
    /// Another outcome (the clients send no other commands).
    case other(Outcome)
}

extension ClientReply {
    /// The client's reading of a node's answer.
    public var normalized: SimReply {
        switch self {
        case .refused(let code, let why): return .refused(code, why)
        case .notServing(let leader): return .notServing(leader: leader)
        case .done(.leaseGranted(let l, _)): return .granted(leaseId: l.id, expiresUSec: l.expiresUSec)
        case .done(.leaseRenewed(let l)): return .renewed(leaseId: l.id, expiresUSec: l.expiresUSec)
        case .done(.leaseReleased(let l)): return .released(leaseId: l.id)
        case .done(let o): return .other(o)
        }
    }
}

extension PairNode {
    /// A client request: decided at once; a successful answer waits until the change is
    /// acknowledged, a refusal is answered at once.
    public mutating func request(ref: Int, _ command: ClientCommand, now: USec, newLeaseId: String) -> [NodeEffect] {
        let core: Command
        switch command {
        case .acquire(let feature, let count, let client, let ttl, let requestId, _):
            core = .acquire(
                AcquireRequest(
                    feature: feature, count: count, client: client, ttlUSec: ttl,
                    requestId: requestId, newLeaseId: newLeaseId))
        case .renew(let id): core = .renew(leaseId: id)
        case .release(let id): core = .release(leaseId: id)
        }
        let (decision, effects) = perform(ref: ref, core, caller: .root, now: now)
        switch decision {
        case .pending: return effects
        case .refused(let e): return [.reply(ref: ref, .refused(e.code, e.message))] + effects
        case .notServing(let leader): return [.reply(ref: ref, .notServing(leader: leader))] + effects
        }
    }
}

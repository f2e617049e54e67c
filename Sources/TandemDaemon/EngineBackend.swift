import Foundation
import TandemBus
import TandemAPI
import TandemCore
import TandemEngine
import TandemMetrics
import TandemNet
import TandemStore

/// The network API's view of the engine: every call runs on the event-loop thread (through
/// the mailbox) and resumes once its change is committed.
final class EngineBackend: LicenseBackend, @unchecked Sendable {
    let mailbox: LoopMailbox
    // Touched on the loop thread only.
    unowned let daemon: Daemon

    init(mailbox: LoopMailbox, daemon: Daemon) {
        self.mailbox = mailbox
        self.daemon = daemon
    }

    /// A refusal as products see it: NotServing names the serving node's network address.
    static func withServingAddress(_ e: TandemError, _ d: Daemon) -> TandemError {
        guard e.code == .notServing, let host = d.pairHost, let peer = host.peerInfo, peer.serving == true,
            let address = host.peerAPIAddress
        else { return e }
        var out = e
        out.servingAddress = address
        out.message += " (serving: \(address))"
        return out
    }

    private func onLoop<T: Sendable>(_ body: @escaping (Daemon, @escaping (T) -> Void) -> Void) async -> T {
        await withCheckedContinuation { (cont: CheckedContinuation<T, Never>) in
            let box = UncheckedBox(cont)
            mailbox.post { [daemon] in
                body(daemon) { value in box.value.resume(returning: value) }
            }
        }
    }

    func serverStatus() async -> ServerStatus {
        await onLoop { d, done in
            let info = d.server.info
            let pair = d.pairHost
            done(
                ServerStatus(
                    serverId: d.engine.state.serverId, version: info.version,
                    role: (pair?.role ?? .standalone).rawValue,
                    pairStatus: (pair?.pairStatus ?? .unpaired).rawValue, serving: pair?.serving ?? true,
                    epoch: d.engine.state.epoch,
                    peerAddress: pair?.peerAPIAddress, peerServerId: d.engine.pair?.peerServerId,
                    borrowKey: info.borrowKey))
        }
    }

    /// A command's final answer as `view` of its outcome; NotServing names the serving node.
    private func answer<T: Sendable>(
        _ submit: @escaping (Daemon) -> Ticket,
        _ view: @escaping (Daemon, Outcome) -> T?
    ) async -> Result<T, TandemError> {
        await onLoop { d, done in
            submit(d).whenAnswered { result in
                switch result {
                case .success(let o):
                    done(view(d, o).map { .success($0) } ?? .failure(TandemError(.failed, "unexpected outcome")))
                case .failure(let e):
                    done(.failure(Self.withServingAddress(e, d)))
                }
            }
        }
    }

    /// A read, once every command submitted before it is answered.
    private func read<T: Sendable>(_ body: @escaping (Daemon) -> T) async -> T {
        await onLoop { d, done in
            let value = body(d)
            d.engine.whenSettled { done(value) }
        }
    }

    func acquire(_ r: AcquireBody, caller: Caller) async -> Result<(LeaseView, created: Bool), TandemError> {
        await answer({ d in
            let holder = Holder(user: r.user, host: r.host)
            if let machine = r.machineId, let sec = r.borrowSec {
                return d.engine.borrow(
                    feature: r.feature, count: r.count, client: r.client, machineId: machine,
                    durationUSec: sec * usecPerSecond, requestId: r.requestId, holder: holder, caller: caller)
            }
            return d.engine.acquire(
                feature: r.feature, count: r.count, client: r.client,
                ttlUSec: r.ttlSec.map { $0 * usecPerSecond }, requestId: r.requestId,
                holder: holder, caller: caller, waitUSec: (r.waitSec ?? 0) * usecPerSecond)
        }) { d, o in
            guard case .leaseGranted(let lease, let existing) = o else { return nil }
            var view = LeaseView(lease, serverId: d.engine.state.serverId)
            if lease.isBorrowed { view.certificate = d.borrowSigner.certificate(for: lease).text }
            return (view, created: !existing)
        }
    }

    func renew(leaseId: String, caller: Caller) async -> Result<LeaseView, TandemError> {
        await answer({ $0.engine.submit(.renew(leaseId: leaseId), caller: caller) }) { d, o in
            guard case .leaseRenewed(let lease) = o else { return nil }
            return LeaseView(lease, serverId: d.engine.state.serverId)
        }
    }

    func release(leaseId: String, caller: Caller) async -> Result<Void, TandemError> {
        await answer({ $0.engine.submit(.release(leaseId: leaseId), caller: caller) }) { _, _ in () }
    }

    func lease(id: String) async -> Result<LeaseView, TandemError> {
        await read { d in
            guard let lease = d.engine.state.activeLease(id, at: d.engine.now) else {
                return .failure(TandemError(.leaseNotFound, "no lease \(quoted(id))"))
            }
            return .success(LeaseView(lease, serverId: d.engine.state.serverId))
        }
    }

    func leases(client: String?) async -> [LeaseView] {
        await read { d in
            let sid = d.engine.state.serverId
            return d.engine.state.activeLeases(client: client, at: d.engine.now).map { LeaseView($0, serverId: sid) }
        }
    }

    func queue() async -> [QueueEntry] {
        await onLoop { d, done in
            done(
                d.engine.waiting.map {
                    QueueEntry(
                        feature: $0.request.feature, position: $0.position, client: $0.request.client,
                        count: $0.request.count, user: $0.request.holder.user, host: $0.request.holder.host,
                        since: RFC3339.format(usec: $0.sinceUSec), sinceUsec: $0.sinceUSec, untilUsec: $0.untilUSec)
                })
        }
    }

    func features() async -> [FeatureUsage] {
        await read { d in d.engine.state.usage(at: d.engine.now, policy: d.engine.settings.policy) }
    }

    func metrics() async -> ServerMetrics {
        await read { d in d.metrics }
    }

    func usageHistory(feature: String, _ q: HistoryQuery) async -> Result<[UsageBucket], TandemError> {
        await history {
            try $0.usageSeries(
                feature: feature, since: q.sinceUSec, until: q.untilUSec, step: q.stepUSec,
                maxBuckets: UsageRollup.maxNetworkBuckets)
        }
    }

    func sessions(_ q: HistoryQuery) async -> Result<[Session], TandemError> {
        await history { try $0.sessions(since: q.sinceUSec, until: q.untilUSec, filter: q.filter) }
    }

    func denials(_ q: HistoryQuery) async -> Result<[Denial], TandemError> {
        await history { try $0.denials(since: q.sinceUSec, until: q.untilUSec, filter: q.filter) }
    }

    /// Reads the history once every command submitted before is answered (so it shows them).
    private func history<T: Sendable>(_ body: @escaping (Store) throws -> T) async -> Result<T, TandemError> {
        await onLoop { d, done in
            d.engine.whenSettled {
                do {
                    done(.success(try body(d.engine.store)))
                } catch let e as TandemError {
                    done(.failure(e))
                } catch {
                    done(.failure(TandemError(.failed, "cannot read the usage history: \(error)")))
                }
            }
        }
    }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

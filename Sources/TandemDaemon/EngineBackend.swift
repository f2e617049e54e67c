import Foundation
import TandemBus
import TandemAPI
import TandemCore
import TandemEngine
import TandemNet

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
              let address = host.peerAPIAddress else { return e }
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
            done(ServerStatus(serverId: d.engine.state.serverId, version: info.version, role: (pair?.role ?? .standalone).rawValue,
                              pairStatus: (pair?.pairStatus ?? .unpaired).rawValue, serving: pair?.serving ?? true, epoch: d.engine.state.epoch,
                              peerAddress: pair?.peerAPIAddress, peerServerId: d.engine.pairPeerServerId))
        }
    }

    func acquire(_ r: AcquireBody) async -> Result<(LeaseView, created: Bool), TandemError> {
        await onLoop { d, done in
            let result = d.engine.acquire(feature: r.feature, count: r.count, client: r.client,
                                          ttlUSec: r.ttlSec.map { $0 * usecPerSecond }, requestId: r.requestId, caller: .networkClient)
            switch result {
            case .success(.leaseGranted(let lease, let existing)):
                let view = LeaseView(lease, serverId: d.engine.state.serverId)
                d.engine.whenAnswered { e in done(e.map { .failure($0) } ?? .success((view, created: !existing))) }
            case .success: done(.failure(TandemError(.failed, "unexpected outcome")))
            case .failure(let e): done(.failure(Self.withServingAddress(e, d)))
            }
        }
    }

    func renew(leaseId: String) async -> Result<LeaseView, TandemError> {
        await onLoop { d, done in
            switch d.engine.submit(.renew(leaseId: leaseId), caller: .networkClient) {
            case .success(.leaseRenewed(let lease)):
                let view = LeaseView(lease, serverId: d.engine.state.serverId)
                d.engine.whenAnswered { e in done(e.map { .failure($0) } ?? .success(view)) }
            case .success: done(.failure(TandemError(.failed, "unexpected outcome")))
            case .failure(let e): done(.failure(Self.withServingAddress(e, d)))
            }
        }
    }

    func release(leaseId: String) async -> Result<Void, TandemError> {
        await onLoop { d, done in
            switch d.engine.submit(.release(leaseId: leaseId), caller: .networkClient) {
            case .success: d.engine.whenAnswered { e in done(e.map { .failure($0) } ?? .success(())) }
            case .failure(let e): done(.failure(Self.withServingAddress(e, d)))
            }
        }
    }

    func lease(id: String) async -> Result<LeaseView, TandemError> {
        await onLoop { d, done in
            guard let lease = d.engine.state.activeLease(id, at: d.engine.now) else {
                done(.failure(TandemError(.leaseNotFound, "no lease \(quoted(id))")))
                return
            }
            let view = LeaseView(lease, serverId: d.engine.state.serverId)
            d.engine.whenAnswered { e in done(e.map { .failure($0) } ?? .success(view)) }
        }
    }

    func leases(client: String?) async -> [LeaseView] {
        await onLoop { d, done in
            let sid = d.engine.state.serverId
            let views = d.engine.state.activeLeases(client: client, at: d.engine.now).map { LeaseView($0, serverId: sid) }
            d.engine.whenAnswered { _ in done(views) }
        }
    }

    func features() async -> [FeatureUsage] {
        await onLoop { d, done in
            let rows = d.engine.state.usage(at: d.engine.now)
            d.engine.whenAnswered { _ in done(rows) }
        }
    }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

import TandemAPI
import TandemCore
import TandemMetrics

/// What the network API needs from the license engine. The daemon implements it by handing
/// each call to the engine's own thread and answering once the change is durable.
public protocol LicenseBackend: Sendable {
    func serverStatus() async -> ServerStatus
    /// `caller` is the network client, named by its token: it may renew and release only the
    /// leases it took.
    func acquire(_ request: AcquireBody, caller: Caller) async -> Result<(LeaseView, created: Bool), TandemError>
    func renew(leaseId: String, caller: Caller) async -> Result<LeaseView, TandemError>
    func release(leaseId: String, caller: Caller) async -> Result<Void, TandemError>
    func lease(id: String) async -> Result<LeaseView, TandemError>
    /// Leases, all or those of one client.
    func leases(client: String?) async -> [LeaseView]
    func features() async -> [FeatureUsage]
    /// The acquisitions waiting for a seat.
    func queue() async -> [QueueEntry]
    /// The server at this moment, for `GET /metrics`.
    func metrics() async -> ServerMetrics
    /// The usage history (read once what was submitted before is durable).
    func usageHistory(feature: String, _ q: HistoryQuery) async -> Result<[UsageBucket], TandemError>
    func sessions(_ q: HistoryQuery) async -> Result<[Session], TandemError>
    func denials(_ q: HistoryQuery) async -> Result<[Denial], TandemError>
}

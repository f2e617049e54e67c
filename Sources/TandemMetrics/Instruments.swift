import Foundation
import Prometheus

/// The process's own instruments, recorded as things happen and kept for /metrics: commit
/// durations and batch sizes, and requests by API, method and result with their durations.
///
/// They are made straight on swift-prometheus's registry, with help text, rather than through
/// swift-metrics: its factory registers without help (promtool's lint flags every such
/// family), and the registry stops the process when one name is registered with two help texts.
public final class Instruments: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let commitDuration: DurationHistogram
    private let commitBatch: ValueHistogram
    private let requestInstruments = NSLock()
    nonisolated(unsafe) private var requestCounters: [RequestLabels: Counter] = [:]
    nonisolated(unsafe) private var requestTimers: [RequestLabels: DurationHistogram] = [:]

    /// The label values of a request's instruments (the timer's have no result). A struct, not
    /// a joined string: a lookup on every request then builds nothing (short names stay inline).
    private struct RequestLabels: Hashable {
        var api: String
        var method: String
        var result: String?

        var pairs: [(String, String)] {
            [("api", api), ("method", method)] + (result.map { [("result", $0)] } ?? [])
        }
    }

    /// tandemd's, for the daemon, the bus and the network API alike.
    public static let shared = Instruments()

    static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .seconds(1), .seconds(5)
    ]

    public init() {
        commitDuration = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "tandem", metricName: "commit_duration", unitName: "seconds",
                helpText: "How long a commit of the state database took (one transaction, synchronous=FULL)."),
            labels: [], buckets: Self.durationBuckets)
        commitBatch = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "tandem", metricName: "commit_batch", unitName: "changes",
                helpText: "Changes written by one commit (commands decided together share one)."),
            labels: [], buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000])
    }

    public func commit(duration: Duration, changes: Int) {
        commitDuration.record(duration)
        commitBatch.record(Double(changes))
    }

    /// A request answered: `api` "dbus" or "http", `method` the D-Bus member or the HTTP method
    /// and route ("POST /v1/leases"), `result` "ok", the error's name, or the HTTP status.
    public func request(api: String, method: String, result: String, duration: Duration) {
        let (counter, timer) = requestInstruments.withLock { () -> (Counter, DurationHistogram) in
            (
                Self.kept(in: &requestCounters, RequestLabels(api: api, method: method, result: result)) {
                    registry.makeCounter(descriptor: Self.requests, labels: $0.pairs)
                },
                Self.kept(in: &requestTimers, RequestLabels(api: api, method: method)) {
                    registry.makeDurationHistogram(
                        descriptor: Self.requestDuration, labels: $0.pairs, buckets: Self.durationBuckets)
                }
            )
        }
        counter.increment()
        timer.record(duration)
    }

    static var requests: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "tandem", metricName: "requests", unitName: "total",
            helpText: "Requests answered, by API (dbus, http), method and result.")
    }
    static var requestDuration: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "tandem", metricName: "request_duration", unitName: "seconds",
            helpText: "From a request's arrival to its answer, by API and method.")
    }

    /// The instrument for these label values, made once: the registry is asked only the first time.
    private static func kept<T>(
        in cache: inout [RequestLabels: T], _ labels: RequestLabels, make: (RequestLabels) -> T
    ) -> T {
        if let found = cache[labels] { return found }
        let made = make(labels)
        cache[labels] = made
        return made
    }
}

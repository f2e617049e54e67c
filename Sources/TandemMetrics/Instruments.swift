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
    nonisolated(unsafe) private var requestCounters: [String: Counter] = [:]
    nonisolated(unsafe) private var requestTimers: [String: DurationHistogram] = [:]

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
            let key = api + "\u{0}" + method + "\u{0}" + result
            let counter =
                requestCounters[key]
                ?? registry.makeCounter(
                    descriptor: MetricNameDescriptor(
                        namespace: "tandem", metricName: "requests", unitName: "total",
                        helpText: "Requests answered, by API (dbus, http), method and result."),
                    labels: [("api", api), ("method", method), ("result", result)])
            requestCounters[key] = counter
            let timerKey = api + "\u{0}" + method
            let timer =
                requestTimers[timerKey]
                ?? registry.makeDurationHistogram(
                    descriptor: MetricNameDescriptor(
                        namespace: "tandem", metricName: "request_duration", unitName: "seconds",
                        helpText: "From a request's arrival to its answer, by API and method."),
                    labels: [("api", api), ("method", method)], buckets: Self.durationBuckets)
            requestTimers[timerKey] = timer
            return (counter, timer)
        }
        counter.increment()
        timer.record(duration)
    }
}

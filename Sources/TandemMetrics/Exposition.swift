import Prometheus
import TandemCore

/// What `GET /metrics` shows: the server as it is at the scrape, taken on the event loop in
/// one piece (so that seats, leases and the pair's status agree with each other and with
/// `GetUsage` and the pair properties at that moment).
public struct ServerMetrics: Sendable {
    public var version: String
    public var serverId: String
    public var features: [FeatureUsage] = []
    /// The activated licenses, in id order (their seats and expiry are shown).
    public var licenses: [License] = []
    /// `standalone`, `primary` or `backup`.
    public var role: String
    /// The tech note's pair status (`unpaired` when standalone).
    public var pairStatus: String
    public var serving: Bool
    public var epoch: UInt64
    /// How this node sees its peer (`PeerStatus`), nil when standalone.
    public var peerStatus: String?
    /// `running`, `disconnected`, `not-available`; nil without a witness.
    public var witnessStatus: String?
    /// The serving node: change-log entries the standby has not acknowledged.
    public var replicationLagEntries: UInt64?
    /// Acquisitions waiting for a seat on this node, per feature.
    public var waiting: [String: Int] = [:]
    /// Seats borrowed to machines that are away, per feature (part of the seats in use).
    public var borrowed: [String: UInt32] = [:]
    /// The peer's usage policy differs from this node's (nil when standalone).
    public var policyMismatch: Bool?
    public var rejectedFrames: [(reason: String, count: UInt64)] = []
    /// The network API's connections open now and refused since start (MaxConnections=...).
    public var connectionsOpen: UInt64 = 0
    public var connectionsRefused: UInt64 = 0
    /// Acquisitions, expirations, releases and refusals since tandemd started.
    public var counters = UsageCounters()

    public init(
        version: String, serverId: String, role: String, pairStatus: String, serving: Bool, epoch: UInt64
    ) {
        (self.version, self.serverId, self.role, self.pairStatus, self.serving, self.epoch) = (
            version, serverId, role, pairStatus, serving, epoch
        )
    }

    /// Every pair status and peer status a series is kept for (one each, 1 for the current), so
    /// that an alert can ask for a status that is not current without the series vanishing.
    public static let pairStatuses = [
        "unpaired", "paired-and-available", "primary-not-available", "backup-not-available", "recovering",
        "pair-not-synced"
    ]
    public static let peerStatuses = ["running", "stopped", "disconnected", "not-available"]
    public static let roles = ["standalone", "primary", "backup"]

    /// The Prometheus text format (0.0.4), as `promtool check metrics` accepts it: `tandem_`
    /// names, base units (seconds), `_total` counters, a HELP line each.
    public var exposition: String {
        let registry = PrometheusCollectorRegistry()
        func gauge(
            _ name: String, _ unit: String = "", _ help: String, _ labels: [(String, String)] = []
        )
            -> Gauge
        {
            registry.makeGauge(
                descriptor: MetricNameDescriptor(namespace: "tandem", metricName: name, unitName: unit, helpText: help),
                labels: labels)
        }
        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
            registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "tandem", metricName: name, unitName: "total", helpText: help),
                labels: labels)
        }
        gauge(
            "build", "info", "The running tandemd: its version and License Server ID.",
            [
                ("version", version), ("server_id", serverId)
            ]
        ).set(to: 1.0)
        for f in features {
            let l = [("feature", f.feature)]
            gauge("feature_seats", "", "Seats of the feature's licenses valid now.", l).set(to: Double(f.seats))
            gauge("feature_seats_in_use", "", "Seats held by leases.", l).set(to: Double(f.inUse))
            gauge("feature_seats_reserved", "", "Seats set aside for holders and not used by them.", l)
                .set(to: Double(f.reserved))
            gauge("feature_queue_waiting", "", "Acquisitions waiting for a seat on this node (wait_usec).", l)
                .set(to: Double(waiting[f.feature] ?? 0))
            gauge("feature_seats_borrowed", "", "Seats in use by borrows (machines away until the borrow ends).", l)
                .set(to: Double(borrowed[f.feature] ?? 0))
            gauge("feature_seats_available", "", "Seats a client without a reservation can acquire now.", l)
                .set(to: Double(f.available))
        }
        // Counters: for every feature with a license now, and any that had events since start.
        let counted = Set(features.map(\.feature)).union(counters.acquisitions.keys).union(counters.denials.keys)
            .union(counters.expirations.keys).union(counters.releases.keys).sorted()
        for f in counted {
            let l = [("feature", f)]
            counter("feature_acquisitions", "Leases granted since tandemd started (on a standby: replicated).", l)
                .increment(by: Int64(clamping: counters.acquisitions[f] ?? 0))
            counter("feature_expirations", "Leases that ran out unrenewed since tandemd started.", l)
                .increment(by: Int64(clamping: counters.expirations[f] ?? 0))
            counter("feature_releases", "Leases released (or revoked) since tandemd started.", l)
                .increment(by: Int64(clamping: counters.releases[f] ?? 0))
            for reason in DenialReason.allCases where reason != .unknownFeature {
                counter(
                    "feature_denials",
                    "Acquisitions refused for lack of seats or by the usage policy since tandemd started, by reason.",
                    l + [("reason", reason.rawValue)]
                ).increment(by: Int64(clamping: counters.denials[f]?[reason] ?? 0))
            }
        }
        counter("unknown_feature_denials", "Acquisitions refused since start: no license for the feature asked for.")
            .increment(by: Int64(clamping: counters.unknownFeatureDenials))
        for lic in licenses {
            let l = [("license", lic.id), ("feature", lic.feature)]
            gauge("license_seats", "", "Seats the license grants.", l).set(to: Double(lic.seats))
            if lic.notAfterUSec > 0 {
                gauge("license_expiry", "timestamp_seconds", "When the license expires, as a Unix time.", l)
                    .set(to: Double(lic.notAfterUSec) / 1e6)
            }
        }
        for s in Self.roles {
            gauge("role", "", "This server's configured role: 1 for the current one.", [("role", s)])
                .set(to: s == role ? 1.0 : 0.0)
        }
        for s in Self.pairStatuses {
            gauge("pair_status", "", "The tech note's pair status: 1 for the current one.", [("status", s)])
                .set(to: s == pairStatus ? 1.0 : 0.0)
        }
        gauge("serving", "", "1 while this node grants seats.").set(to: serving ? 1.0 : 0.0)
        gauge("epoch", "", "The serving period (grows at every change of serving node).").set(to: Double(epoch))
        if let peerStatus {
            gauge("peer_up", "", "1 while the other node of the pair is heard (running).")
                .set(to: peerStatus == "running" ? 1.0 : 0.0)
            for s in Self.peerStatuses {
                gauge("peer_status", "", "How this node sees its peer: 1 for the current status.", [("status", s)])
                    .set(to: s == peerStatus ? 1.0 : 0.0)
            }
        }
        if let witnessStatus {
            gauge("witness_up", "", "1 while the witness answers.").set(to: witnessStatus == "running" ? 1.0 : 0.0)
        }
        if let policyMismatch {
            gauge("pair_policy_mismatch", "", "1 while the peer's usage policy differs from this node's.")
                .set(to: policyMismatch ? 1.0 : 0.0)
        }
        if let replicationLagEntries {
            gauge("replication_lag", "entries", "Change-log entries the standby has not acknowledged.")
                .set(to: Double(replicationLagEntries))
        }
        for (reason, count) in rejectedFrames {
            counter("pair_frames_rejected", "Pair-link frames refused, by reason.", [("reason", reason)])
                .increment(by: Int64(clamping: count))
        }
        gauge("http_connections_open", "", "Network API connections open now.").set(to: Double(connectionsOpen))
        counter(
            "http_connections_refused",
            "Network API connections refused over MaxConnections= or MaxConnectionsPerAddress=."
        ).increment(by: Int64(clamping: connectionsRefused))
        return registry.emitToString()
    }

    /// The snapshot, then the process's instruments (commits, requests).
    public func exposition(including instruments: Instruments) -> String {
        exposition + instruments.registry.emitToString()
    }

    /// The content type of the text format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

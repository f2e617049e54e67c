import TandemCore
import TandemMetrics
import Testing

@Suite struct UsageCounting {
    func lease(_ id: String, _ feature: String) -> Lease {
        Lease(
            id: id, feature: feature, client: "ws", count: 1, uid: nil, requestId: nil, acquiredUSec: 0,
            expiresUSec: 10, ttlUSec: 10, epoch: 0)
    }

    @Test func countsFromTheLogAndRefusalsByReason() {
        // Ends are counted under the feature the store's history found for them (here a lease from
        // before the start, "old", and one granted in this commit, "a").
        var c = UsageCounters()
        let ended = ["old": "cae", "a": "cad"]
        c.count(
            [
                LogEntry(seq: 1, epoch: 1, change: .leaseGranted(lease("a", "cad"))),
                LogEntry(seq: 2, epoch: 1, change: .leaseGranted(lease("b", "cad"))),
                LogEntry(seq: 3, epoch: 1, change: .leaseExpired(id: "a")),
                LogEntry(seq: 4, epoch: 1, change: .leaseReleased(id: "old")),
                // An end of a lease it never saw granted is not guessed at.
                LogEntry(seq: 5, epoch: 1, change: .leaseExpired(id: "ghost"))
            ], featureOfEnded: { ended[$0] })
        #expect(c.acquisitions == ["cad": 2])
        #expect(c.expirations == ["cad": 1])
        #expect(c.releases == ["cae": 1])
        c.refused("cad", .insufficientSeats)
        c.refused("cad", .reservedForOthers)
        c.refused("cad", .reservedForOthers)
        c.refused("any string at all", .unknownFeature)
        #expect(c.denials == ["cad": [.insufficientSeats: 1, .reservedForOthers: 2]])
        #expect(c.unknownFeatureDenials == 1)
    }

    @Test func theExpositionNamesEveryStatusAndCountsPerFeature() {
        var m = ServerMetrics(
            version: "1.0", serverId: "TS-1", role: "primary", pairStatus: "backup-not-available", serving: true,
            epoch: 4)
        m.peerStatus = "stopped"
        m.features = [FeatureUsage(feature: "cad", seats: 5, inUse: 2, reserved: 1, available: 2, denied: 3)]
        m.counters.refused("cad", .insufficientSeats)
        let text = m.exposition
        for line in [
            // (Gauges print as floating point, counters as integers.)
            "tandem_pair_status{status=\"backup-not-available\"} 1.0",
            "tandem_pair_status{status=\"paired-and-available\"} 0.0",
            "tandem_peer_status{status=\"stopped\"} 1.0", "tandem_peer_up 0.0", "tandem_role{role=\"primary\"} 1.0",
            "tandem_feature_seats_available{feature=\"cad\"} 2.0",
            "tandem_feature_denials_total{feature=\"cad\",reason=\"insufficient-seats\"} 1",
            "tandem_feature_denials_total{feature=\"cad\",reason=\"reserved-for-others\"} 0",
            "tandem_feature_acquisitions_total{feature=\"cad\"} 0"
        ] {
            #expect(text.contains(line + "\n"), "\(line)\n\(text)")
        }
        // No witness configured, standalone peers: no series that would be meaningless.
        #expect(!text.contains("tandem_witness_up"))
        #expect(!text.contains("tandem_replication_lag_entries"))
    }
}

@Suite struct DenialReasons {
    @Test func reservedSeatsAreToldFromMissingOnes() {
        var s = LicenseState()
        s.apply(
            .licenseActivated(
                License(
                    id: "L", product: "p", feature: "cad", seats: 3, notAfterUSec: 0, issuedTo: [], keyId: "k",
                    document: "")))
        s.apply(.reservationAdded(Reservation(id: "r", feature: "cad", holder: "ws-9", count: 2)))
        let seats = TandemError(.insufficientSeats, "")
        #expect(s.denialReason(seats, feature: "cad", count: 2, client: "ws-1", at: 1) == .reservedForOthers)
        #expect(s.denialReason(seats, feature: "cad", count: 4, client: "ws-1", at: 1) == .insufficientSeats)
        #expect(
            s.denialReason(TandemError(.unknownFeature, ""), feature: "x", count: 1, client: "c", at: 1)
                == .unknownFeature)
        #expect(s.denialReason(TandemError(.accessDenied, ""), feature: "cad", count: 1, client: "c", at: 1) == nil)
    }
}

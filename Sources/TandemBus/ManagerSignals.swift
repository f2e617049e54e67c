import CSystemd
import Foundation
import TandemBusClient
import TandemCore

/// Signals and PropertiesChanged: what a committed batch or the pair's status changed.
extension LicenseManagerServer {
    private func emit(_ signal: ManagerSignal, _ values: [BusValue]) {
        emitSignal(BusNames.rootPath, BusNames.managerInterface, signal.rawValue, values)
    }

    private func emitSignal(_ path: String, _ interface: String, _ member: String, _ values: [BusValue]) {
        var msg: OpaquePointer?
        guard sd_bus_message_new_signal(bus, &msg, path, interface, member) >= 0, let msg else { return }
        defer { sd_bus_message_unref(msg) }
        do { try BusMessage.append(msg, values) } catch { return }
        sd_bus_send(bus, msg, nil)
    }

    private func emitPropertiesChanged(_ path: String, _ interface: String, _ names: [String]) {
        guard !names.isEmpty else { return }
        var cstrings: [UnsafeMutablePointer<CChar>?] = names.map { strdup($0) }
        cstrings.append(nil)
        defer { for p in cstrings { free(p) } }
        cstrings.withUnsafeMutableBufferPointer { buf in
            _ = sd_bus_emit_properties_changed_strv(bus, path, interface, buf.baseAddress)
        }
    }

    private func emitManagerChanged(_ properties: Set<ManagerProperty>) {
        emitPropertiesChanged(BusNames.rootPath, BusNames.managerInterface, properties.map(\.rawValue).sorted())
    }

    /// Announces what a committed batch changed. An expiry or a release names only its lease:
    /// `featureOfEnded` says whose feature it was (see `UsageCounters.count`); an end it cannot
    /// place touches every feature.
    public func didCommit(_ logged: [LogEntry], featureOfEnded: (String) -> String?) {
        var touchedFeatures: Set<String> = []
        var touchedAll = false
        func ended(_ id: String) {
            if let f = featureOfEnded(id) { touchedFeatures.insert(f) } else { touchedAll = true }
        }
        var managerProps: Set<ManagerProperty> = []
        for entry in logged {
            switch entry.change {
            case .serverIdSet:
                managerProps.insert(.serverId)
            case .licenseActivated(let l):
                let path = BusNames.licensePath(l.id)
                sd_bus_emit_object_added(bus, path)
                emit(.licenseActivated, [.string(l.id), .objectPath(path)])
                touchedFeatures.insert(l.feature)
                managerProps.formUnion([.licenseCount, .seatsTotal])
            case .licenseDeactivated(let id):
                let path = BusNames.licensePath(id)
                emitSignal(
                    BusNames.rootPath, BusNames.objectManagerInterface, "InterfacesRemoved",
                    [
                        .objectPath(path),
                        .strings([
                            BusNames.licenseInterface, "org.freedesktop.DBus.Peer",
                            "org.freedesktop.DBus.Introspectable", BusNames.propertiesInterface
                        ])
                    ])
                emit(.licenseDeactivated, [.string(id), .objectPath(path)])
                managerProps.formUnion([.licenseCount, .seatsTotal])
                // The feature's other licenses take over its share of use and reservations.
                touchedAll = true
            case .leaseGranted(let l):
                touchedFeatures.insert(l.feature)
                managerProps.insert(.seatsInUse)
            case .leaseExpired(let id):
                emit(.leaseExpired, [.string(id)])
                managerProps.insert(.seatsInUse)
                ended(id)
            case .leaseReleased(let id, _, _):
                managerProps.insert(.seatsInUse)
                ended(id)
            case .leaseRenewed, .borrowRevoked:
                break
            case .reservationAdded(let r):
                touchedFeatures.insert(r.feature)
            case .reservationRemoved:
                touchedAll = true
            case .epochStarted:
                managerProps.insert(.epoch)
            case .leasesMerged, .audited, .acquisitionDenied:
                break
            }
        }
        // Identity changes go out at once; seat counters are coalesced (see emitPendingPropertyChanges).
        if managerProps.contains(.serverId) || managerProps.contains(.licenseCount) {
            emitManagerChanged(managerProps)
        } else {
            pendingManagerProps.formUnion(managerProps)
        }
        // Computed once for the batch: every release of a batch would otherwise list every feature.
        if touchedAll { touchedFeatures.formUnion(engine.state.features) }
        pendingFeatures.formUnion(touchedFeatures)
        if !pendingManagerProps.isEmpty || !pendingFeatures.isEmpty { onPropertiesPending?() }
    }

    /// Announces the seat counters changed since the last call (see `onPropertiesPending`).
    public func emitPendingPropertyChanges() {
        emitManagerChanged(pendingManagerProps)
        for l in engine.state.licenses.values.sorted(by: { $0.id < $1.id }) where pendingFeatures.contains(l.feature) {
            emitPropertiesChanged(
                BusNames.licensePath(l.id), BusNames.licenseInterface,
                [LicenseProperty.inUse.rawValue, LicenseProperty.reserved.rawValue])
        }
        pendingManagerProps = []
        pendingFeatures = []
    }

    /// Announces the pair's status properties that changed since the last call; returns whether any did.
    @discardableResult
    public func announcePairStatus() -> Bool {
        let report = pairControl?.report ?? .unpaired
        var now: [ManagerProperty: BusValue] = [:]
        for p in ManagerProperty.pairStatusProperties { now[p] = managerValue(p, report: report) }
        let changed = Set(ManagerProperty.pairStatusProperties.filter { now[$0] != lastPairStatus[$0] })
        lastPairStatus = now
        emitManagerChanged(changed)
        return !changed.isEmpty
    }
}

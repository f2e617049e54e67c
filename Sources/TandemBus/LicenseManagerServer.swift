import CSystemd
import CTandemBusShim
import Foundation
import Logging
import TandemBusClient
import TandemCore
import TandemEngine
import TandemPair
import TandemStore

/// The pair's administration and status, implemented by the daemon's pair host.
public protocol PairControl: AnyObject {
    /// The configured role, and the pair status in the tech note's words.
    var role: PairRole { get }
    var pairStatus: PairStatus { get }
    func prepareBackup(primary: String, done: @escaping (TandemError?) -> Void)
    func enableBackup(backup: String, done: @escaping (TandemError?) -> Void)
    func disableBackup(done: @escaping (TandemError?) -> Void)
    /// The serving node sends the standby a full snapshot (clears pair-not-synced).
    func sync(done: @escaping (TandemError?) -> Void)
    /// Serving, PeerAddress, PeerServerId, PeerStatus, ReplicatedSeq, WitnessAddress,
    /// WitnessStatus, RejectedFrames.
    func property(_ name: String) -> BusValue?
    /// The peer's last report of itself and this node's view of it (GetPeerStatus).
    func peerStatus() -> [(String, BusValue)]
}

/// What the Manager object reports about the node itself.
public struct ServerInfo: Sendable {
    public var version: String
    public var serviceAccount: String
    /// Where the network API listens (bound addresses, with real ports).
    public var listenAddresses: [String] = []
    public init(version: String, serviceAccount: String) {
        self.version = version
        self.serviceAccount = serviceAccount
    }
}

/// The D-Bus adapter: exports org.tandem.LicenseManager1.Manager, one License object per
/// active license (ObjectManager), turns method calls into engine commands and answers
/// them once their changes are durable. Runs on the event-loop thread only.
public final class LicenseManagerServer {
    public let bus: OpaquePointer
    let engine: Engine
    public var authorizer: BusAuthorizer
    public var info: ServerInfo
    public weak var pairControl: PairControl?
    let logger: Logger
    private var slots: [OpaquePointer?] = []
    private let credentials = SenderCredentialsCache()

    func caller(_ m: OpaquePointer) -> Caller {
        authorizer.caller(credentials.credentials(bus: bus, message: m))
    }

    public init(bus: OpaquePointer, engine: Engine, authorizer: BusAuthorizer, info: ServerInfo, logger: Logger) throws(BusError) {
        self.bus = bus
        self.engine = engine
        self.authorizer = authorizer
        self.info = info
        self.logger = logger
        tandem_bus_shim_set_callbacks(methodTrampoline, propertyTrampoline)
        let me = Unmanaged.passUnretained(self).toOpaque()
        var slot: OpaquePointer?
        try checkBus(sd_bus_add_object_vtable(bus, &slot, BusNames.rootPath, BusNames.managerInterface, tandem_manager_vtable(), me),
                  "add Manager vtable")
        slots.append(slot)
        try checkBus(sd_bus_add_fallback_vtable(bus, &slot, BusNames.licensePrefix, BusNames.licenseInterface,
                                             tandem_license_vtable(), licenseFind, me), "add License vtable")
        slots.append(slot)
        try checkBus(sd_bus_add_node_enumerator(bus, &slot, BusNames.licensePrefix, licenseEnumerator, me), "add enumerator")
        slots.append(slot)
        try checkBus(sd_bus_add_object_manager(bus, &slot, BusNames.rootPath), "add object manager")
        slots.append(slot)
    }

    deinit {
        for s in slots { sd_bus_slot_unref(s) }
    }

    // MARK: - Methods

    static func fail(_ err: UnsafeMutablePointer<sd_bus_error>?, _ e: TandemError) -> Int32 {
        sd_bus_error_set(err, e.code.dbusName, e.message)
    }

    /// The one reply path: a method return with `values`, or the error.
    private func send(_ m: OpaquePointer, _ result: Result<[BusValue], TandemError>) {
        var reply: OpaquePointer?
        switch result {
        case .success(let values):
            guard sd_bus_message_new_method_return(m, &reply) >= 0, let reply else { return }
            do { try BusMessage.append(reply, values) } catch {}
            sd_bus_send(bus, reply, nil)
            sd_bus_message_unref(reply)
        case .failure(let error):
            var e = sd_bus_error()
            sd_bus_error_set(&e, error.code.dbusName, error.message)
            if sd_bus_message_new_method_error(m, &reply, &e) >= 0, let reply {
                sd_bus_send(bus, reply, nil)
                sd_bus_message_unref(reply)
            }
            sd_bus_error_free(&e)
        }
    }

    /// Sends the reply later: `m` is kept until `later` calls back with the result.
    private func replyLater(_ m: OpaquePointer, _ later: (@escaping (Result<[BusValue], TandemError>) -> Void) -> Void) -> Int32 {
        sd_bus_message_ref(m)
        later { [self] result in
            send(m, result)
            sd_bus_message_unref(m)
        }
        return 1
    }

    /// A read: answered once every command submitted before it is answered, so that it shows
    /// only what is durable.
    private func reply(_ m: OpaquePointer, _ values: [BusValue]) -> Int32 {
        replyLater(m) { done in engine.whenSettled { done(.success(values)) } }
    }

    /// A command: refused at once, or answered with `values` of its outcome once it is durable.
    private func answer(_ m: OpaquePointer, _ err: UnsafeMutablePointer<sd_bus_error>?,
                        _ ticket: Ticket, _ values: @escaping (Outcome) -> [BusValue]) -> Int32 {
        if case .failure(let e) = ticket.decision {
            logger.debug("refused", metadata: ["member": "\(String(cString: sd_bus_message_get_member(m)))", "error": "\(e.code.rawValue)", "reason": "\(e.message)"])
            return Self.fail(err, e)
        }
        return replyLater(m) { done in ticket.whenAnswered { done($0.map(values)) } }
    }

    fileprivate func handleMethod(_ m: OpaquePointer, _ err: UnsafeMutablePointer<sd_bus_error>?) -> Int32 {
        let member = String(cString: sd_bus_message_get_member(m))
        let args: [BusValue]
        do { args = try BusMessage.readAll(m) } catch {
            return Self.fail(err, TandemError(.invalidArgs, error.message))
        }
        func str(_ i: Int) -> String { args.count > i ? args[i].stringValue ?? "" : "" }
        func u32(_ i: Int) -> UInt32 { args.count > i ? UInt32(truncatingIfNeeded: args[i].uint64Value ?? 0) : 0 }
        let now = engine.now
        // Read engine.state in place: holding a copy across a submit would make the state's
        // storage copy-on-write on every change.

        switch member {
        case "GetActivationRequest":
            return reply(m, [.string(engine.activationRequest)])
        case "ActivateLicense":
            return answer(m, err, engine.activate(document: str(0), caller: caller(m))) { [logger] o in
                guard case .licenseActivated(let l) = o else { return [] }
                logger.notice("license activated", metadata: ["license_id": "\(l.id)", "feature": "\(l.feature)", "seats": "\(l.seats)"])
                return [.string(l.id), .objectPath(BusNames.licensePath(l.id))]
            }
        case "DeactivateLicense":
            return answer(m, err, engine.submit(.deactivate(licenseId: str(0)), caller: caller(m))) { [logger] o in
                if case .licenseDeactivated(let l) = o {
                    logger.notice("license deactivated", metadata: ["license_id": "\(l.id)"])
                }
                return []
            }
        case "ListLicenses":
            let state = engine.state
            var shares: [String: LicenseShare] = [:]
            for f in state.features { for share in state.shares(f, at: now) { shares[share.licenseId] = share } }
            let rows: [BusValue] = state.licenses.values.sorted { $0.id < $1.id }.map { l in
                let u = shares[l.id]!
                return .structure([.string(l.id), .string(l.product), .string(l.feature), .uint32(l.seats),
                                   .uint32(u.inUse), .uint32(u.reserved), .uint64(l.notAfterUSec)])
            }
            return reply(m, [.array(elementSignature: "(sssuuut)", rows)])
        case "Acquire":
            var ttl: USec?
            var requestId: String?
            if args.count > 3, let opts = args[3].arrayValue {
                for entry in opts {
                    guard case .dictEntry(let k, .variant(let v)) = entry, let key = k.stringValue else { continue }
                    switch (key, v) {
                    case ("ttl_usec", .uint64(let t)): ttl = t
                    case ("request_id", .string(let s)): requestId = s
                    case ("ttl_usec", _), ("request_id", _):
                        return Self.fail(err, TandemError(.invalidArgs, "option \(quoted(key)) must be of type \(key == "ttl_usec" ? "t" : "s")"))
                    default:
                        return Self.fail(err, TandemError(.invalidArgs, "unknown option \(quoted(key))"))
                    }
                }
            }
            let result = engine.acquire(feature: str(0), count: u32(1), client: str(2), ttlUSec: ttl,
                                        requestId: requestId, caller: caller(m))
            return answer(m, err, result) { o in
                guard case .leaseGranted(let l, _) = o else { return [] }
                return [.string(l.id), .uint64(l.expiresUSec)]
            }
        case "Renew":
            return answer(m, err, engine.submit(.renew(leaseId: str(0)), caller: caller(m))) { o in
                guard case .leaseRenewed(let l) = o else { return [] }
                return [.uint64(l.expiresUSec)]
            }
        case "Release":
            return answer(m, err, engine.submit(.release(leaseId: str(0)), caller: caller(m))) { _ in [] }
        case "ListLeases":
            let state = engine.state
            let rows: [BusValue] = state.activeLeases(at: now).map { l in
                .structure([.string(l.id), .string(l.feature), .string(l.client), .uint32(l.count),
                            .uint64(l.acquiredUSec), .uint64(l.expiresUSec)])
            }
            return reply(m, [.array(elementSignature: "(sssutt)", rows)])
        case "Reserve":
            return answer(m, err, engine.reserve(feature: str(0), count: u32(1), holder: str(2), caller: caller(m))) { [logger] o in
                guard case .reservationAdded(let r) = o else { return [] }
                logger.notice("seats reserved", metadata: ["reservation_id": "\(r.id)", "feature": "\(r.feature)", "holder": "\(r.holder)", "count": "\(r.count)"])
                return [.string(r.id)]
            }
        case "Unreserve":
            return answer(m, err, engine.submit(.unreserve(reservationId: str(0)), caller: caller(m))) { _ in [] }
        case "ListReservations":
            let state = engine.state
            let rows: [BusValue] = state.reservations.values.sorted { $0.id < $1.id }.map { r in
                .structure([.string(r.id), .string(r.feature), .string(r.holder), .uint32(r.count)])
            }
            return reply(m, [.array(elementSignature: "(sssu)", rows)])
        case "GetUsage":
            let state = engine.state
            let rows: [BusValue] = state.usage(at: now).map { u in
                .structure([.string(u.feature), .uint32(u.seats), .uint32(u.inUse), .uint32(u.reserved),
                            .uint32(u.available), .uint64(u.denied)])
            }
            return reply(m, [.array(elementSignature: "(suuuut)", rows)])
        case "GetPeerStatus":
            return reply(m, [.vardict(pairControl?.peerStatus() ?? [])])
        case "PrepareBackup", "EnableBackup", "DisableBackup", "Sync":
            guard caller(m).isAdmin else {
                return Self.fail(err, TandemError(.accessDenied, "\(member) needs root or membership in the admin group"))
            }
            guard let pc = pairControl else {
                return Self.fail(err, TandemError(.pairState, "pairing needs KeyFile= in the [Pair] section of tandemd.conf"))
            }
            return replyLater(m) { [logger] done in
                let finish: (TandemError?) -> Void = { error in
                    if let error {
                        logger.notice("\(member) refused", metadata: ["error": "\(error.code.rawValue)", "reason": "\(error.message)"])
                        done(.failure(error))
                    } else {
                        done(.success([]))
                    }
                }
                switch member {
                case "PrepareBackup": pc.prepareBackup(primary: str(0), done: finish)
                case "EnableBackup": pc.enableBackup(backup: str(0), done: finish)
                case "Sync": pc.sync(done: finish)
                default: pc.disableBackup(done: finish)
                }
            }
        case "ResetServerId":
            return answer(m, err, engine.resetServerId(caller: caller(m))) { [logger] o in
                guard case .serverIdReset(let id) = o else { return [] }
                logger.notice("License Server ID reset", metadata: ["server_id": "\(id)"])
                return [.string(id)]
            }
        default:
            return sd_bus_error_set(err, "org.freedesktop.DBus.Error.UnknownMethod", "Unknown method \(member)")
        }
    }

    // MARK: - Properties

    fileprivate func getProperty(path: UnsafePointer<CChar>, property: String, reply: OpaquePointer,
                                 err: UnsafeMutablePointer<sd_bus_error>?) -> Int32 {
        let state = engine.state
        var value: BusValue?
        if strcmp(path, BusNames.rootPath) == 0 {
            switch property {
            case "Version": value = .string(info.version)
            case "ServerId": value = .string(state.serverId)
            case "Role": value = .string((pairControl?.role ?? .standalone).rawValue)
            case "PairStatus": value = .string((pairControl?.pairStatus ?? .unpaired).rawValue)
            case "ServiceAccount": value = .string(info.serviceAccount)
            case "Epoch": value = .uint64(state.epoch)
            case "LicenseCount": value = .uint32(UInt32(state.licenses.count))
            case "SeatsTotal": value = .uint32(state.totalSeats(at: engine.now))
            case "SeatsInUse": value = .uint32(state.totalInUse)
            case "ListenAddresses": value = .strings(info.listenAddresses)
            case "Serving", "PeerAddress", "PeerServerId", "PeerStatus", "ReplicatedSeq", "WitnessAddress", "WitnessStatus", "RejectedFrames", "PartitionPolicy":
                value = pairControl?.property(property) ?? Self.unpairedProperty(property)
            default: value = nil
            }
        } else if let id = BusNames.licenseId(fromPath: path), let l = state.licenses[id] {
            let usage = { state.licenseUsage(id, at: self.engine.now) }
            switch property {
            case "Id": value = .string(l.id)
            case "Product": value = .string(l.product)
            case "Feature": value = .string(l.feature)
            case "Seats": value = .uint32(l.seats)
            case "NotAfterUSec": value = .uint64(l.notAfterUSec)
            case "IssuedTo": value = .strings(l.issuedTo)
            case "ActivatedUSec": value = .uint64(l.activatedUSec)
            case "KeyId": value = .string(l.keyId)
            case "InUse": value = .uint32(usage().inUse)
            case "Reserved": value = .uint32(usage().reserved)
            default: value = nil
            }
        }
        guard let value else {
            return sd_bus_error_set(err, "org.freedesktop.DBus.Error.UnknownProperty", "Unknown property \(property)")
        }
        do { try BusMessage.append(reply, value) } catch { return -EINVAL }
        return 1
    }

    static func unpairedProperty(_ name: String) -> BusValue? {
        switch name {
        case "Serving": return .bool(true)
        case "ReplicatedSeq": return .uint64(0)
        case "RejectedFrames": return .array(elementSignature: "{st}", [])
        case "PeerStatus": return .string("not-available")
        default: return .string("")
        }
    }

    fileprivate func licenseExists(_ path: UnsafePointer<CChar>) -> Bool {
        guard let id = BusNames.licenseId(fromPath: path) else { return false }
        return engine.state.licenses[id] != nil
    }

    fileprivate func licenseNodes() -> [String] {
        engine.state.licenses.keys.sorted().map(BusNames.licensePath)
    }

    // MARK: - Signals

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

    /// Announces what a committed batch changed.
    public func didCommit(_ logged: [LogEntry]) {
        var touchedFeatures: Set<String> = []
        var managerProps: Set<String> = []
        for entry in logged {
            switch entry.change {
            case .serverIdSet:
                managerProps.insert("ServerId")
            case .licenseActivated(let l):
                let path = BusNames.licensePath(l.id)
                sd_bus_emit_object_added(bus, path)
                emitSignal(BusNames.rootPath, BusNames.managerInterface, "LicenseActivated", [.string(l.id), .objectPath(path)])
                touchedFeatures.insert(l.feature)
                managerProps.formUnion(["LicenseCount", "SeatsTotal"])
            case .licenseDeactivated(let id):
                let path = BusNames.licensePath(id)
                emitSignal(BusNames.rootPath, BusNames.objectManagerInterface, "InterfacesRemoved",
                           [.objectPath(path), .strings([BusNames.licenseInterface, "org.freedesktop.DBus.Peer",
                                                         "org.freedesktop.DBus.Introspectable", BusNames.propertiesInterface])])
                emitSignal(BusNames.rootPath, BusNames.managerInterface, "LicenseDeactivated", [.string(id), .objectPath(path)])
                managerProps.formUnion(["LicenseCount", "SeatsTotal"])
                // The feature's other licenses take over its share of use and reservations.
                touchedFeatures = Set(engine.state.features)
            case .leaseGranted(let l):
                touchedFeatures.insert(l.feature)
                managerProps.insert("SeatsInUse")
            case .leaseExpired(let id):
                emitSignal(BusNames.rootPath, BusNames.managerInterface, "LeaseExpired", [.string(id)])
                managerProps.insert("SeatsInUse")
                touchedFeatures = Set(engine.state.features)
            case .leaseReleased:
                managerProps.insert("SeatsInUse")
                touchedFeatures = Set(engine.state.features)
            case .leaseRenewed:
                break
            case .reservationAdded(let r):
                touchedFeatures.insert(r.feature)
            case .reservationRemoved:
                touchedFeatures = Set(engine.state.features)
            case .epochStarted:
                managerProps.insert("Epoch")
            case .leasesMerged:
                break
            }
        }
        // Identity changes go out at once; seat counters are coalesced (see emitPendingPropertyChanges).
        if managerProps.contains("ServerId") || managerProps.contains("LicenseCount") {
            emitPropertiesChanged(BusNames.rootPath, BusNames.managerInterface, managerProps.sorted())
        } else {
            pendingManagerProps.formUnion(managerProps)
        }
        pendingFeatures.formUnion(touchedFeatures)
        if !pendingManagerProps.isEmpty || !pendingFeatures.isEmpty { onPropertiesPending?() }
    }

    private var pendingManagerProps: Set<String> = []
    private var pendingFeatures: Set<String> = []
    /// Called when seat counters changed; the owner of the event loop then calls
    /// `emitPendingPropertyChanges` a little later, so that a busy server announces its
    /// counters a few times a second instead of after every lease.
    public var onPropertiesPending: (() -> Void)?

    public func emitPendingPropertyChanges() {
        emitPropertiesChanged(BusNames.rootPath, BusNames.managerInterface, pendingManagerProps.sorted())
        for l in engine.state.licenses.values.sorted(by: { $0.id < $1.id }) where pendingFeatures.contains(l.feature) {
            emitPropertiesChanged(BusNames.licensePath(l.id), BusNames.licenseInterface, ["InUse", "Reserved"])
        }
        pendingManagerProps = []
        pendingFeatures = []
    }

    /// Emits PropertiesChanged for Role/PairStatus after `info` changed.
    public func announceInfoChanged(_ names: [String]) {
        emitPropertiesChanged(BusNames.rootPath, BusNames.managerInterface, names)
    }
}

// MARK: - C callbacks

private func server(_ userdata: UnsafeMutableRawPointer?) -> LicenseManagerServer {
    Unmanaged<LicenseManagerServer>.fromOpaque(userdata!).takeUnretainedValue()
}

private let methodTrampoline: tandem_method_cb = { m, userdata, err in
    server(userdata).handleMethod(m!, err)
}

private let propertyTrampoline: tandem_property_cb = { _, path, _, property, reply, userdata, err in
    if strcmp(path!, LogControlObject.path) == 0 {
        return logControlGet(userdata, String(cString: property!), reply!)
    }
    return server(userdata).getProperty(path: path!, property: String(cString: property!), reply: reply!, err: err)
}

private let licenseFind: sd_bus_object_find_t = { _, path, _, userdata, found, _ in
    guard server(userdata).licenseExists(path!) else { return 0 }
    found?.pointee = userdata
    return 1
}

private let licenseEnumerator: sd_bus_node_enumerator_t = { _, _, userdata, nodes, _ in
    let paths = server(userdata).licenseNodes()
    // sd-bus frees the list with free(): allocate it with malloc.
    let raw = malloc(MemoryLayout<UnsafeMutablePointer<CChar>?>.stride * (paths.count + 1))!
        .bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: paths.count + 1)
    for (i, p) in paths.enumerated() { raw[i] = strdup(p) }
    raw[paths.count] = nil
    nodes?.pointee = raw
    return 0
}

import CSystemd
import Foundation
import Logging
import TandemBusClient
import TandemCore
import TandemEngine
import TandemPair

/// How the pair stands, as the Manager's properties report it.
public struct PairReport: Sendable {
    public var serving: Bool
    public var peerAddress: String
    public var peerServerId: String
    public var peerStatus: PeerStatus
    /// The serving node: what the peer acknowledged; the standby: what it holds.
    public var replicatedSeq: UInt64
    /// The serving node: change-log entries the standby has not acknowledged; 0 elsewhere.
    public var replicationLag: UInt64
    /// The peer said a usage policy digest other than this node's (administrative changes wait).
    public var policyMismatch = false
    public var witnessAddress: String
    /// `running`, `disconnected`, `not-available`, or empty without a witness.
    public var witnessStatus: String
    public var rejectedFrames: [(reason: String, count: UInt64)]
    public var partitionPolicy: String

    public init(
        serving: Bool, peerAddress: String, peerServerId: String, peerStatus: PeerStatus, replicatedSeq: UInt64,
        witnessAddress: String, witnessStatus: String, rejectedFrames: [(reason: String, count: UInt64)],
        partitionPolicy: String, replicationLag: UInt64 = 0, policyMismatch: Bool = false
    ) {
        self.policyMismatch = policyMismatch
        (self.serving, self.peerAddress, self.peerServerId, self.peerStatus) = (
            serving, peerAddress, peerServerId, peerStatus
        )
        (self.replicatedSeq, self.witnessAddress, self.witnessStatus) = (replicatedSeq, witnessAddress, witnessStatus)
        (self.rejectedFrames, self.partitionPolicy, self.replicationLag) = (
            rejectedFrames, partitionPolicy, replicationLag
        )
    }

    /// A server that is not in a pair (or has no pair link) serves on its own.
    public static let unpaired = PairReport(
        serving: true, peerAddress: "", peerServerId: "", peerStatus: .notAvailable,
        replicatedSeq: 0, witnessAddress: "", witnessStatus: "", rejectedFrames: [],
        partitionPolicy: "")
}

/// The pair's administration and status, implemented by the daemon's pair host.
public protocol PairControl: AnyObject {
    /// The configured role, and the pair status in the tech note's words.
    var role: PairRole { get }
    var pairStatus: PairStatus { get }
    var report: PairReport { get }
    func prepareBackup(primary: String, done: @escaping (TandemError?) -> Void)
    func enableBackup(backup: String, done: @escaping (TandemError?) -> Void)
    func disableBackup(done: @escaping (TandemError?) -> Void)
    /// The serving node sends the standby a full snapshot (clears pair-not-synced).
    func sync(done: @escaping (TandemError?) -> Void)
    /// This node is being uninstalled: when it stops, it tells its peer it leaves for good.
    func prepareRemoval(done: @escaping (TandemError?) -> Void)
    /// The peer's last report of itself and this node's view of it (GetPeerStatus).
    func peerStatus() -> [(PeerStatusField, BusValue)]
}

/// What the Manager object reports about the node itself.
public struct ServerInfo: Sendable {
    public var version: String
    public var serviceAccount: String
    /// The public half of the key that signs borrow certificates (`ed25519 <base64>`).
    public var borrowKey: String = ""
    /// Where the network API listens (bound addresses, with real ports).
    public var listenAddresses: [String] = []
    /// The network API's connections now: `open`, and `refused` for a limit since start.
    public var networkConnections: @Sendable () -> [(String, UInt64)] = { [] }
    /// This host's name: the holder's host of a lease taken over D-Bus without a `host` option.
    public var hostName: String? = {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0, name[0] != 0 else { return nil }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()
    public init(version: String, serviceAccount: String) {
        self.version = version
        self.serviceAccount = serviceAccount
    }
}

/// The D-Bus adapter: exports org.tandem.LicenseManager1.Manager, one License object per
/// active license (ObjectManager), turns method calls into engine commands and answers
/// them once their changes are durable. Runs on the event-loop thread only. Its methods are in
/// `ManagerMethods.swift`, its signals in `ManagerSignals.swift`.
public final class LicenseManagerServer {
    public let bus: OpaquePointer
    let engine: Engine
    public var authorizer: BusAuthorizer
    public var info: ServerInfo
    public weak var pairControl: PairControl?
    /// Set while the daemon stops: pairing calls are refused with it (commands are refused by
    /// the engine).
    public var refusal: TandemError?
    let logger: Logger
    private var interfaces: [BusInterface] = []
    private var slots: [OpaquePointer?] = []
    private let credentials = SenderCredentialsCache()
    /// Seat counters changed and not yet announced (see `emitPendingPropertyChanges`).
    var pendingManagerProps: Set<ManagerProperty> = []
    var pendingFeatures: Set<String> = []
    /// The pair status properties as last announced.
    var lastPairStatus: [ManagerProperty: BusValue] = [:]
    /// Called when seat counters changed; the owner of the event loop then calls
    /// `emitPendingPropertyChanges` a little later, so that a busy server announces its
    /// counters a few times a second instead of after every lease.
    public var onPropertiesPending: (() -> Void)?

    func caller(_ m: OpaquePointer) -> Caller {
        authorizer.caller(credentials.credentials(bus: bus, message: m))
    }

    /// The caller of `call`: as polkit judged it, if it was asked.
    func caller(_ call: BusCall) -> Caller { call.authorizedCaller ?? caller(call.message) }

    /// Asks polkit about administrative calls (nil: uid and group decide, as without polkit).
    public var polkit: PolkitAuthority?

    public init(
        bus: OpaquePointer, engine: Engine, authorizer: BusAuthorizer, info: ServerInfo, logger: Logger
    ) throws(BusError) {
        self.bus = bus
        self.engine = engine
        self.authorizer = authorizer
        self.info = info
        self.logger = logger
        let manager = BusInterface(
            name: BusNames.managerInterface,
            methods: ManagerMethod.allCases.map { m in
                BusInterface.Method(m.rawValue, input: m.input, output: m.output, handler(m))
            },
            properties: ManagerProperty.allCases.map { p in
                BusInterface.Property(p.rawValue, type: p.type, change: p.change) { [unowned self] _ in managerValue(p)
                }
            },
            signals: ManagerSignal.allCases.map { BusInterface.Signal($0.rawValue, $0.arguments) })
        let license = BusInterface(
            name: BusNames.licenseInterface,
            properties: LicenseProperty.allCases.map { p in
                BusInterface.Property(p.rawValue, type: p.type, change: p.change) { [unowned self] path in
                    licenseValue(p, path: path)
                }
            })
        interfaces = [manager, license]
        var slot: OpaquePointer?
        try checkBus(
            sd_bus_add_object_vtable(bus, &slot, BusNames.rootPath, manager.name, manager.vtable, manager.userdata),
            "add Manager vtable")
        slots.append(slot)
        try checkBus(
            sd_bus_add_fallback_vtable(
                bus, &slot, BusNames.licensePrefix, license.name, license.vtable,
                licenseFind, Unmanaged.passUnretained(self).toOpaque()), "add License vtable")
        slots.append(slot)
        try checkBus(
            sd_bus_add_node_enumerator(
                bus, &slot, BusNames.licensePrefix, licenseEnumerator,
                Unmanaged.passUnretained(self).toOpaque()), "add enumerator")
        slots.append(slot)
        try checkBus(sd_bus_add_object_manager(bus, &slot, BusNames.rootPath), "add object manager")
        slots.append(slot)
    }

    deinit {
        for s in slots { sd_bus_slot_unref(s) }
    }

    // MARK: - Properties

    /// A Manager property's value. The pair's report is built only for the pair's properties
    /// (the seat counters are read far more often), once per caller when given.
    func managerValue(_ p: ManagerProperty, report: PairReport? = nil) -> BusValue {
        let state = engine.state
        var pair: PairReport { report ?? pairControl?.report ?? .unpaired }
        switch p {
        case .version: return .string(info.version)
        case .serverId: return .string(state.serverId)
        case .role: return .string((pairControl?.role ?? .standalone).rawValue)
        case .pairStatus: return .string((pairControl?.pairStatus ?? .unpaired).rawValue)
        case .serviceAccount: return .string(info.serviceAccount)
        case .epoch: return .uint64(state.epoch)
        case .licenseCount: return .uint32(UInt32(state.licenses.count))
        case .seatsTotal: return .uint32(state.totalSeats(at: engine.now))
        case .seatsInUse: return .uint32(state.totalInUse)
        case .listenAddresses: return .strings(info.listenAddresses)
        case .serving: return .bool(pair.serving)
        case .peerAddress: return .string(pair.peerAddress)
        case .peerServerId: return .string(pair.peerServerId)
        case .peerStatus: return .string(pair.peerStatus.rawValue)
        case .replicatedSeq: return .uint64(pair.replicatedSeq)
        case .replicationLag: return .uint64(pair.replicationLag)
        case .witnessAddress: return .string(pair.witnessAddress)
        case .witnessStatus: return .string(pair.witnessStatus)
        case .rejectedFrames:
            return .array(
                elementSignature: "{st}", pair.rejectedFrames.map { .dictEntry(.string($0.reason), .uint64($0.count)) })
        case .partitionPolicy: return .string(pair.partitionPolicy)
        case .policyDigest: return .string(engine.settings.policy.digest)
        case .borrowKey: return .string(info.borrowKey)
        case .policyMismatch: return .bool(pair.policyMismatch)
        case .networkConnections:
            return .array(
                elementSignature: "{st}", info.networkConnections().map { .dictEntry(.string($0.0), .uint64($0.1)) })
        }
    }

    /// A License object's property; nil when the path names no active license.
    func licenseValue(_ p: LicenseProperty, path: String) -> BusValue? {
        guard let id = BusNames.licenseId(fromPath: path), let l = engine.state.licenses[id] else { return nil }
        switch p {
        case .id: return .string(l.id)
        case .product: return .string(l.product)
        case .feature: return .string(l.feature)
        case .seats: return .uint32(l.seats)
        case .notAfterUSec: return .uint64(l.notAfterUSec)
        case .issuedTo: return .strings(l.issuedTo)
        case .activatedUSec: return .uint64(l.activatedUSec)
        case .keyId: return .string(l.keyId)
        case .inUse: return .uint32(share(of: id).inUse)
        case .reserved: return .uint32(share(of: id).reserved)
        }
    }

    /// A license's part of its feature's account, under the usage policy's reserves.
    private func share(of id: String) -> LicenseShare {
        engine.state.licenseUsage(id, at: engine.now, policy: engine.settings.policy)
    }

    fileprivate func licenseExists(_ path: UnsafePointer<CChar>) -> Bool {
        guard let id = BusNames.licenseId(fromPath: path) else { return false }
        return engine.state.licenses[id] != nil
    }

    fileprivate func licenseNodes() -> [String] {
        engine.state.licenses.keys.sorted().map(BusNames.licensePath)
    }

    fileprivate var licenseInterface: BusInterface { interfaces[1] }
}

// MARK: - Object tree callbacks

private func server(_ userdata: UnsafeMutableRawPointer?) -> LicenseManagerServer {
    Unmanaged<LicenseManagerServer>.fromOpaque(userdata!).takeUnretainedValue()
}

/// A License object exists while its license is active; its calls go to the License interface.
private let licenseFind: sd_bus_object_find_t = { _, path, _, userdata, found, _ in
    let s = server(userdata)
    guard s.licenseExists(path!) else { return 0 }
    found?.pointee = s.licenseInterface.userdata
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

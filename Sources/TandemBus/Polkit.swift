import CSystemd
import Foundation
import Logging
import TandemBusClient
import TandemCore

/// The administrative actions tandemd asks polkit about (packaging/polkit/*.policy).
public enum PolkitAction: String, CaseIterable, Sendable {
    /// Activate and deactivate licenses, reset the License Server ID.
    case manageLicenses = "org.tandem.LicenseManager1.manage-licenses"
    /// Reserve and unreserve seats, renew or release another caller's lease.
    case manageSeats = "org.tandem.LicenseManager1.manage-seats"
    /// Form, synchronize and dissolve the pair.
    case managePair = "org.tandem.LicenseManager1.manage-pair"
    /// Read the audit trail.
    case readAudit = "org.tandem.LicenseManager1.read-audit"
}

/// What polkit said.
public enum PolkitVerdict: Sendable, Equatable {
    case allowed
    case denied
    /// Allowed after the caller authenticates; it did not allow interactive authorization.
    case challenge
    /// polkit is not on the bus: the caller decides by uid and group, as without polkit.
    case unavailable
    /// The question failed (a timeout, a malformed answer, a caller gone): fails closed.
    case failed(String)
}

/// Asks org.freedesktop.PolicyKit1 whether a D-Bus caller may do an action, without blocking
/// the event loop: the answer comes back on it through sd-bus's asynchronous call. The
/// subject is the caller's unique bus name, so polkitd itself looks up who it is and a caller
/// that disconnects before the answer is no one (the CVE-2021-3560 pattern fails closed).
public final class PolkitAuthority {
    let bus: OpaquePointer
    let logger: Logger
    /// Calls in flight: each one's slot and completion, by a serial the callback carries.
    private var pending: [Int: (slot: OpaquePointer?, done: (PolkitVerdict) -> Void)] = [:]
    private var nextSerial = 0
    /// How long polkitd may take (interactive authorization waits for the user).
    public var timeoutUSec: UInt64 = 25_000_000
    public var interactiveTimeoutUSec: UInt64 = 120_000_000

    public init(bus: OpaquePointer, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    deinit {
        for (_, p) in pending { sd_bus_slot_unref(p.slot) }
    }

    /// Asks about `action` for the sender of `message`; `done` runs on the event loop.
    public func check(
        _ action: PolkitAction, for message: OpaquePointer, details: [String: String] = [:],
        done: @escaping (PolkitVerdict) -> Void
    ) {
        guard let senderPointer = sd_bus_message_get_sender(message) else { return done(.failed("no sender")) }
        let sender = String(cString: senderPointer)
        // 1: AllowUserInteraction, when the caller said it may wait for an authentication.
        let interactive = sd_bus_message_get_allow_interactive_authorization(message) > 0
        var call: OpaquePointer?
        guard
            sd_bus_message_new_method_call(
                bus, &call, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization") >= 0, let call
        else { return done(.failed("cannot make the polkit call")) }
        defer { sd_bus_message_unref(call) }
        let subject = BusValue.structure([
            .string("system-bus-name"), .vardict([("name", .string(sender))])
        ])
        let detailDict = BusValue.array(
            elementSignature: "{ss}",
            details.sorted { $0.key < $1.key }.map { .dictEntry(.string($0.key), .string($0.value)) })
        do {
            try BusMessage.append(
                call, [subject, .string(action.rawValue), detailDict, .uint32(interactive ? 1 : 0), .string("")])
        } catch { return done(.failed("cannot make the polkit call: \(error)")) }
        if interactive { sd_bus_message_set_allow_interactive_authorization(call, 1) }
        let serial = nextSerial
        nextSerial += 1
        let box = Unmanaged.passRetained(CallbackBox(authority: self, serial: serial)).toOpaque()
        var slot: OpaquePointer?
        let r = sd_bus_call_async(
            bus, &slot, call, polkitReplyTrampoline, box, interactive ? interactiveTimeoutUSec : timeoutUSec)
        guard r >= 0 else {
            Unmanaged<CallbackBox>.fromOpaque(box).release()
            return done(.failed("cannot ask polkit: \(String(cString: strerror(-r)))"))
        }
        pending[serial] = (slot, done)
    }

    /// The reply (or error) for call `serial`.
    fileprivate func answered(_ serial: Int, _ reply: OpaquePointer) {
        guard let p = pending.removeValue(forKey: serial) else { return }
        sd_bus_slot_unref(p.slot)
        p.done(Self.verdict(reply))
    }

    static func verdict(_ reply: OpaquePointer) -> PolkitVerdict {
        if let error = sd_bus_message_get_error(reply), error.pointee.name != nil {
            let name = String(cString: error.pointee.name)
            // No polkit on this bus — said by the bus itself: the fallback applies. The same
            // names from polkitd (it could not find the caller: gone) are a failure.
            let fromBus = sd_bus_message_get_sender(reply).map { String(cString: $0) } == "org.freedesktop.DBus"
            if fromBus
                && (name == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name == "org.freedesktop.DBus.Error.NameHasNoOwner")
            {
                return .unavailable
            }
            return .failed("\(name): \(error.pointee.message.map { String(cString: $0) } ?? "")")
        }
        guard let values = try? BusMessage.readAll(reply), let fields = values.first?.structValue, fields.count == 3,
            case .bool(let authorized) = fields[0], case .bool(let challenge) = fields[1]
        else { return .failed("polkit answered with an unexpected reply") }
        if authorized { return .allowed }
        return challenge ? .challenge : .denied
    }
}

private final class CallbackBox {
    weak var authority: PolkitAuthority?
    let serial: Int
    init(authority: PolkitAuthority, serial: Int) {
        self.authority = authority
        self.serial = serial
    }
}

/// sd-bus calls this once per asynchronous call, with the reply or an error message (a
/// timeout is an error reply too); the box is released here.
private let polkitReplyTrampoline: sd_bus_message_handler_t = { reply, userdata, _ in
    let box = Unmanaged<CallbackBox>.fromOpaque(userdata!).takeRetainedValue()
    if let reply { box.authority?.answered(box.serial, reply) }
    return 1
}

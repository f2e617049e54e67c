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
    /// Calls in flight: each one's slot, sender and completion, by a serial the callback carries.
    private var pending: [Int: (slot: OpaquePointer?, sender: String, done: (PolkitVerdict) -> Void)] = [:]
    /// Questions in flight at most, per sender and in all: a caller who keeps authentications
    /// open must not use up the bus's pending replies (about 128 per connection) and so lock
    /// the administrators out; past these, a call is refused at once.
    public static let maxPendingPerSender = 2
    public static let maxPending = 64
    /// Whether polkitd's refusal to answer tandemd was already explained in the log.
    private var untrustedLogged = false
    private var nextSerial = 0
    /// How long polkitd may take (interactive authorization waits for the user).
    public var timeoutUSec: UInt64 = 25_000_000
    public var interactiveTimeoutUSec: UInt64 = 120_000_000

    public init(bus: OpaquePointer, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    deinit {
        // Unref'd slots are cancelled without a reply; their destroy callbacks free the boxes.
        for (_, p) in pending { sd_bus_slot_unref(p.slot) }
    }

    /// Asks about `action` for the sender of `message`; `done` runs on the event loop.
    public func check(
        _ action: PolkitAction, for message: OpaquePointer, details: [String: String] = [:],
        done: @escaping (PolkitVerdict) -> Void
    ) {
        guard let senderPointer = sd_bus_message_get_sender(message) else { return done(.failed("no sender")) }
        let sender = String(cString: senderPointer)
        guard pending.count < Self.maxPending,
            pending.values.filter({ $0.sender == sender }).count < Self.maxPendingPerSender
        else { return done(.failed("too many authorization questions waiting for polkit")) }
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
        // The box lives as long as the slot: released when the slot goes (answered or not).
        sd_bus_slot_set_destroy_callback(slot, polkitBoxRelease)
        // With interaction allowed, polkit's "challenge" means no authentication was given
        // (none asked for: no agent; or dismissed): a refusal, not a request to allow it.
        pending[serial] = (
            slot, sender,
            { verdict in
                done(interactive && verdict == .challenge ? .failed("no authentication was given") : verdict)
            }
        )
    }

    /// The reply (or error) for call `serial`.
    fileprivate func answered(_ serial: Int, _ reply: OpaquePointer) {
        guard let p = pending.removeValue(forKey: serial) else { return }
        let verdict = Self.verdict(reply)
        if case .failed(let why) = verdict, why.hasPrefix("org.freedesktop.PolicyKit1.Error.NotAuthorized"),
            !untrustedLogged
        {
            untrustedLogged = true
            logger.error(
                """
                polkit does not let tandemd ask about other users: the actions' owner annotation \
                (org.freedesktop.policykit.owner in org.tandem.LicenseManager1.policy) must name the \
                account tandemd runs as; only root administers until then
                """,
                metadata: ["reason": "\(why)"])
        }
        sd_bus_slot_unref(p.slot)
        p.done(verdict)
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
/// timeout is an error reply too).
private let polkitReplyTrampoline: sd_bus_message_handler_t = { reply, userdata, _ in
    let box = Unmanaged<CallbackBox>.fromOpaque(userdata!).takeUnretainedValue()
    if let reply { box.authority?.answered(box.serial, reply) }
    return 1
}

/// The slot's destroy callback: the box's one release.
private let polkitBoxRelease: sd_bus_destroy_t = { userdata in
    Unmanaged<CallbackBox>.fromOpaque(userdata!).release()
}

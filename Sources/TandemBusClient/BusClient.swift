import CSystemd
import Foundation

/// A blocking D-Bus client connection (tandemctl, tests, benchmarks).
public final class BusClient {
    public let bus: OpaquePointer
    public var destination = BusNames.service
    public var timeoutUSec: UInt64 = 25_000_000

    public enum Kind: Sendable { case system, user, address(String) }

    public init(_ kind: Kind = .system) throws(BusError) {
        var b: OpaquePointer?
        let r: Int32
        switch kind {
        case .system: r = sd_bus_open_system(&b)
        case .user: r = sd_bus_open_user(&b)
        case .address(let a):
            var nb: OpaquePointer?
            guard sd_bus_new(&nb) >= 0, let nb else { throw BusError(errno: ENOMEM, "sd_bus_new") }
            sd_bus_set_address(nb, a)
            sd_bus_set_bus_client(nb, 1)
            r = sd_bus_start(nb)
            if r < 0 { sd_bus_unref(nb) } else { b = nb }
        }
        guard r >= 0, let b else {
            let which: String
            switch kind {
            case .system: which = "system bus"
            case .user: which = "session bus"
            case .address(let a): which = "bus at \(a)"
            }
            throw BusError(errno: -r, "cannot connect to the \(which)")
        }
        // sd_bus_start only begins the handshake; it completes when the connection is next
        // used. A client that waits longer than the bus's auth_timeout (30 s on a system bus)
        // before its first call finds itself disconnected, so finish it here: the unique name
        // is known once the Hello is answered.
        var unique: UnsafePointer<CChar>?
        let hello = sd_bus_get_unique_name(b, &unique)
        guard hello >= 0, let unique else {
            sd_bus_unref(b)
            throw BusError(errno: hello < 0 ? -hello : EPROTO, "cannot complete the handshake with the bus")
        }
        uniqueName = String(cString: unique)
        bus = b
    }

    /// The connection's unique name on the bus (":1.42").
    public let uniqueName: String

    deinit { sd_bus_flush_close_unref(bus) }

    /// Calls a method and returns the reply's values, or throws the D-Bus error.
    public func call(
        destination: String? = nil, path: String = BusNames.rootPath, interface: String = BusNames.managerInterface,
        _ member: String, _ args: [BusValue] = []
    ) throws(BusError) -> [BusValue] {
        var m: OpaquePointer?
        try checkBus(
            sd_bus_message_new_method_call(bus, &m, destination ?? self.destination, path, interface, member),
            "new call")
        defer { sd_bus_message_unref(m) }
        try BusMessage.append(m!, args)
        var error = sd_bus_error()
        defer { sd_bus_error_free(&error) }
        var reply: OpaquePointer?
        let r = sd_bus_call(bus, m, timeoutUSec, &error, &reply)
        if r < 0 {
            if error.name != nil {
                throw BusError(
                    name: String(cString: error.name), message: error.message.map { String(cString: $0) } ?? "")
            }
            throw BusError(errno: -r, "calling \(member)")
        }
        defer { sd_bus_message_unref(reply) }
        return try BusMessage.readAll(reply!)
    }

    public func getAll(
        path: String = BusNames.rootPath, interface: String = BusNames.managerInterface
    ) throws(BusError) -> [String: BusValue] {
        let r = try call(path: path, interface: BusNames.propertiesInterface, "GetAll", [.string(interface)])
        return r.first?.dictValue ?? [:]
    }

    public func get(
        path: String = BusNames.rootPath, interface: String = BusNames.managerInterface, _ name: String
    ) throws(BusError) -> BusValue {
        let r = try call(
            path: path, interface: BusNames.propertiesInterface, "Get", [.string(interface), .string(name)])
        guard case .variant(let v)? = r.first else {
            throw BusError(name: "org.freedesktop.DBus.Error.InvalidArgs", message: "no value")
        }
        return v
    }
}

import TandemCore
import CSystemd
import CTandemBusShim
import Foundation
import TandemBusClient

/// org.freedesktop.LogControl1, so that `systemctl service-log-level tandemd debug` works.
/// Setting needs privileges (sd-bus checks them: the properties are not marked unprivileged).
public final class LogControlObject {
    public static let path = "/org/freedesktop/LogControl1"
    public static let interface = "org.freedesktop.LogControl1"
    /// syslog level names, most severe first.
    public static let levels = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]

    let getLevel: () -> String
    let setLevel: (String) -> Bool
    let identifier: String
    private var slot: OpaquePointer?

    public init(bus: OpaquePointer, identifier: String, getLevel: @escaping () -> String, setLevel: @escaping (String) -> Bool) throws(BusError) {
        self.getLevel = getLevel
        self.setLevel = setLevel
        self.identifier = identifier
        tandem_bus_shim_set_setter(logControlSetter)
        let me = Unmanaged.passUnretained(self).toOpaque()
        try checkBus(sd_bus_add_object_vtable(bus, &slot, Self.path, Self.interface, tandem_log_control_vtable(), me), "add LogControl1")
    }

    deinit { sd_bus_slot_unref(slot) }

    func get(_ property: String) -> String? {
        switch property {
        case "LogLevel": return getLevel()
        case "LogTarget": return "console"
        case "SyslogIdentifier": return identifier
        default: return nil
        }
    }

    func set(_ property: String, _ value: String, _ err: UnsafeMutablePointer<sd_bus_error>?) -> Int32 {
        switch property {
        case "LogLevel":
            guard Self.levels.contains(value), setLevel(value) else {
                return sd_bus_error_set(err, "org.freedesktop.DBus.Error.InvalidArgs", "unknown log level \(quoted(value))")
            }
            return 1
        case "LogTarget":
            // tandemd writes to stderr with priority prefixes, which journald reads.
            guard value == "console" || value == "auto" || value == "journal" else {
                return sd_bus_error_set(err, "org.freedesktop.DBus.Error.NotSupported", "tandemd logs to stderr (journal) only")
            }
            return 1
        default:
            return sd_bus_error_set(err, "org.freedesktop.DBus.Error.UnknownProperty", "Unknown property \(property)")
        }
    }
}

let logControlSetter: tandem_property_set_cb = { _, _, _, property, value, userdata, err in
    let object = Unmanaged<LogControlObject>.fromOpaque(userdata!).takeUnretainedValue()
    var p: UnsafePointer<CChar>?
    guard sd_bus_message_read_basic(value, CChar(UInt8(ascii: "s")), &p) >= 0, let p else { return -EINVAL }
    return object.set(String(cString: property!), String(cString: p), err)
}

/// The property getter shared with the Manager object dispatches here for this path.
func logControlGet(_ userdata: UnsafeMutableRawPointer?, _ property: String, _ reply: OpaquePointer) -> Int32 {
    let object = Unmanaged<LogControlObject>.fromOpaque(userdata!).takeUnretainedValue()
    guard let v = object.get(property) else { return -EINVAL }
    do { try BusMessage.append(reply, .string(v)) } catch { return -EINVAL }
    return 1
}

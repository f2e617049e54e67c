import CSystemd
import Foundation
import TandemBusClient
import TandemCore

/// org.freedesktop.LogControl1, so that `systemctl service-log-level tandemd debug` works.
/// Setting needs privileges (sd-bus checks them: the properties are not marked unprivileged).
public final class LogControlObject {
    public static let path = "/org/freedesktop/LogControl1"
    public static let interface = "org.freedesktop.LogControl1"
    /// syslog level names, most severe first.
    public static let levels = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]

    private let table: BusInterface
    private var slot: OpaquePointer?

    public init(
        bus: OpaquePointer, identifier: String, getLevel: @escaping () -> String,
        setLevel: @escaping (String) -> Bool
    ) throws(BusError) {
        table = BusInterface(
            name: Self.interface,
            properties: [
                BusInterface.Property("LogLevel", type: "s", change: .writable, get: { _ in .string(getLevel()) }) {
                    value in
                    guard let name = value.stringValue, Self.levels.contains(name), setLevel(name) else {
                        return BusError(
                            name: "org.freedesktop.DBus.Error.InvalidArgs",
                            message: "unknown log level \(quoted(value.stringValue ?? ""))")
                    }
                    return nil
                },
                // tandemd writes to stderr with priority prefixes, which journald reads.
                BusInterface.Property("LogTarget", type: "s", change: .writable, get: { _ in .string("console") }) {
                    value in
                    guard ["console", "auto", "journal"].contains(value.stringValue ?? "") else {
                        return BusError(
                            name: "org.freedesktop.DBus.Error.NotSupported",
                            message: "tandemd logs to stderr (journal) only")
                    }
                    return nil
                },
                BusInterface.Property(
                    "SyslogIdentifier", type: "s", change: .unannounced, get: { _ in .string(identifier) })
            ])
        try checkBus(
            sd_bus_add_object_vtable(bus, &slot, Self.path, Self.interface, table.vtable, table.userdata),
            "add LogControl1")
    }

    deinit { sd_bus_slot_unref(slot) }
}

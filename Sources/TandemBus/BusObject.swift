import CSystemd
import CTandemBusShim
import Foundation
import TandemBusClient
import TandemCore
import TandemMetrics

/// A method call being handled: its member, its arguments, and the message to answer.
public struct BusCall {
    public let message: OpaquePointer
    public let member: String
    public let args: [BusValue]
    /// Who the caller is once polkit was asked (see `LicenseManagerServer.authorized`); nil:
    /// decided by uid and group.
    public var authorizedCaller: Caller?

    public func string(_ i: Int) -> String { args.count > i ? args[i].stringValue ?? "" : "" }
    public func uint32(_ i: Int) -> UInt32 { args.count > i ? UInt32(truncatingIfNeeded: args[i].uint64Value ?? 0) : 0 }
    public func uint64(_ i: Int) -> UInt64 { args.count > i ? args[i].uint64Value ?? 0 : 0 }
}

/// What a method handler answers: at once, or later through the callback it is given.
public enum BusAnswer {
    case now(Result<[BusValue], TandemError>)
    case later((@escaping (Result<[BusValue], TandemError>) -> Void) -> Void)

    public static func error(_ e: TandemError) -> BusAnswer { .now(.failure(e)) }
}

/// One exported interface: its members, the vtable built from them, and the dispatch of the
/// calls and property reads that sd-bus hands to the trampolines. It is the userdata of its
/// vtable and must outlive the slot that exports it.
public final class BusInterface {
    public struct Method {
        let name: String
        let input, output: [BusArgument]
        let handle: (BusCall) -> BusAnswer
        public init(
            _ name: String, input: [BusArgument], output: [BusArgument], _ handle: @escaping (BusCall) -> BusAnswer
        ) {
            (self.name, self.input, self.output, self.handle) = (name, input, output, handle)
        }
    }

    public struct Property {
        let name, type: String
        let change: BusPropertyChange
        /// The value at an object path; nil: no such object.
        let get: (String) -> BusValue?
        /// Sets the value (writable properties); a failure is sent as the D-Bus error.
        let set: ((BusValue) -> BusError?)?
        public init(
            _ name: String, type: String, change: BusPropertyChange, get: @escaping (String) -> BusValue?,
            set: ((BusValue) -> BusError?)? = nil
        ) {
            (self.name, self.type, self.change, self.get, self.set) = (name, type, change, get, set)
        }
    }

    public struct Signal {
        let name: String
        let arguments: [BusArgument]
        public init(_ name: String, _ arguments: [BusArgument]) { (self.name, self.arguments) = (name, arguments) }
    }

    public let name: String
    let vtable: UnsafeMutablePointer<sd_bus_vtable>
    private var methods: [String: Method] = [:]
    private var properties: [String: Property] = [:]
    /// The strings the vtable points at (it holds no copies of its own).
    private var strings: [UnsafeMutablePointer<CChar>] = []

    public init(name: String, methods: [Method] = [], properties: [Property] = [], signals: [Signal] = []) {
        self.name = name
        vtable = tandem_vtable_new(methods.count + properties.count + signals.count)!
        tandem_bus_shim_set_callbacks(methodTrampoline, getTrampoline, setTrampoline)
        var i = 0
        for p in properties {
            let change: Int32
            switch p.change {
            case .constant: change = 0
            case .emitsChange: change = 1
            case .writable: change = 2
            case .unannounced: change = 3
            }
            tandem_vtable_property(vtable, i, keep(p.name), keep(p.type), change)
            self.properties[p.name] = p
            i += 1
        }
        for m in methods {
            tandem_vtable_method(
                vtable, i, keep(m.name), keep(m.input.map(\.type).joined()), keep(m.output.map(\.type).joined()),
                keep(names: m.input + m.output))
            self.methods[m.name] = m
            i += 1
        }
        for s in signals {
            tandem_vtable_signal(
                vtable, i, keep(s.name), keep(s.arguments.map(\.type).joined()), keep(names: s.arguments))
            i += 1
        }
    }

    deinit {
        free(vtable)
        for s in strings { free(s) }
    }

    private func keep(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return p
    }

    /// Argument names as sd-bus wants them: each NUL-terminated, one after the other.
    private func keep(names: [BusArgument]) -> UnsafeMutablePointer<CChar> {
        let bytes: [UInt8] = names.flatMap { Array($0.name.utf8) + [0] } + [0]
        let p = malloc(bytes.count)!.bindMemory(to: CChar.self, capacity: bytes.count)
        for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
        strings.append(p)
        return p
    }

    /// The pointer to give sd-bus with `vtable`: its callbacks find this interface through it.
    public var userdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    // MARK: - Dispatch

    /// A method call: the handler's answer goes back through `send`.
    fileprivate func call(_ m: OpaquePointer, _ err: UnsafeMutablePointer<sd_bus_error>?) -> Int32 {
        let member = String(cString: sd_bus_message_get_member(m))
        guard let method = methods[member] else {
            return sd_bus_error_set(err, "org.freedesktop.DBus.Error.UnknownMethod", "Unknown method \(member)")
        }
        let args: [BusValue]
        do { args = try BusMessage.readAll(m) } catch {
            return sd_bus_error_set(err, TandemErrorCode.invalidArgs.dbusName, error.message)
        }
        if let e = ArgumentBounds.check(args) { return sd_bus_error_set(err, e.code.dbusName, e.message) }
        let started = ContinuousClock.now
        let answered = { (result: Result<[BusValue], TandemError>) in
            Self.send(m, result)
            let outcome: String
            switch result {
            case .success: outcome = "ok"
            case .failure(let e): outcome = e.code.rawValue
            }
            Instruments.shared.request(
                api: "dbus", method: member, result: outcome, duration: ContinuousClock.now - started)
        }
        switch method.handle(BusCall(message: m, member: member, args: args)) {
        case .now(let result):
            answered(result)
        case .later(let answer):
            sd_bus_message_ref(m)
            answer { result in
                answered(result)
                sd_bus_message_unref(m)
            }
        }
        return 1
    }

    /// The one reply path: a method return with the values, or the error.
    private static func send(_ m: OpaquePointer, _ result: Result<[BusValue], TandemError>) {
        // A call sent with NO_REPLY_EXPECTED gets none (as sd-bus does for its own replies).
        guard sd_bus_message_get_expect_reply(m) > 0 else { return }
        var reply: OpaquePointer?
        switch result {
        case .success(let values):
            guard sd_bus_message_new_method_return(m, &reply) >= 0, let reply else { return }
            do { try BusMessage.append(reply, values) } catch {}
            sd_bus_send(nil, reply, nil)
            sd_bus_message_unref(reply)
        case .failure(let error):
            var e = sd_bus_error()
            sd_bus_error_set(&e, error.code.dbusName, error.message)
            if sd_bus_message_new_method_error(m, &reply, &e) >= 0, let reply {
                sd_bus_send(nil, reply, nil)
                sd_bus_message_unref(reply)
            }
            sd_bus_error_free(&e)
        }
    }

    fileprivate func get(
        path: String, _ name: String, _ reply: OpaquePointer, _ err: UnsafeMutablePointer<sd_bus_error>?
    ) -> Int32 {
        guard let value = properties[name]?.get(path) else {
            return sd_bus_error_set(err, "org.freedesktop.DBus.Error.UnknownProperty", "Unknown property \(name)")
        }
        do { try BusMessage.append(reply, value) } catch { return -EINVAL }
        return 1
    }

    fileprivate func set(_ name: String, _ value: OpaquePointer, _ err: UnsafeMutablePointer<sd_bus_error>?) -> Int32 {
        guard let setter = properties[name]?.set else {
            return sd_bus_error_set(err, "org.freedesktop.DBus.Error.PropertyReadOnly", "Property \(name) is read-only")
        }
        let v: BusValue
        do {
            guard let read = try BusMessage.readAll(value).first else {
                return sd_bus_error_set(err, TandemErrorCode.invalidArgs.dbusName, "no value")
            }
            v = read
        } catch { return sd_bus_error_set(err, TandemErrorCode.invalidArgs.dbusName, error.message) }
        if let e = ArgumentBounds.check([v]) { return sd_bus_error_set(err, e.code.dbusName, e.message) }
        if let e = setter(v) { return sd_bus_error_set(err, e.name, e.message) }
        return 1
    }
}

private func interface(_ userdata: UnsafeMutableRawPointer?) -> BusInterface {
    Unmanaged<BusInterface>.fromOpaque(userdata!).takeUnretainedValue()
}

private let methodTrampoline: tandem_method_cb = { m, userdata, err in
    interface(userdata).call(m!, err)
}

private let getTrampoline: tandem_property_cb = { _, path, _, property, reply, userdata, err in
    interface(userdata).get(path: String(cString: path!), String(cString: property!), reply!, err)
}

private let setTrampoline: tandem_property_set_cb = { _, _, _, property, value, userdata, err in
    interface(userdata).set(String(cString: property!), value!, err)
}

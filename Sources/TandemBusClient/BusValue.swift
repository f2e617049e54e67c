import CSystemd
import Foundation

/// A D-Bus value with enough type information to be written back.
public indirect enum BusValue: Sendable, Equatable {
    case byte(UInt8)
    case bool(Bool)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case double(Double)
    case string(String)
    case objectPath(String)
    case signature(String)
    /// `elementSignature` is needed for empty arrays.
    case array(elementSignature: String, [BusValue])
    case structure([BusValue])
    case dictEntry(BusValue, BusValue)
    case variant(BusValue)

    public var signature: String {
        switch self {
        case .byte: return "y"
        case .bool: return "b"
        case .int16: return "n"
        case .uint16: return "q"
        case .int32: return "i"
        case .uint32: return "u"
        case .int64: return "x"
        case .uint64: return "t"
        case .double: return "d"
        case .string: return "s"
        case .objectPath: return "o"
        case .signature: return "g"
        case .array(let e, _): return "a" + e
        case .structure(let fields): return "(" + fields.map(\.signature).joined() + ")"
        case .dictEntry(let k, let v): return "{" + k.signature + v.signature + "}"
        case .variant: return "v"
        }
    }

    public static func strings(_ list: [String]) -> BusValue { .array(elementSignature: "s", list.map { .string($0) }) }

    /// An `a{sv}` dictionary.
    public static func vardict(_ pairs: [(String, BusValue)]) -> BusValue {
        .array(elementSignature: "{sv}", pairs.map { .dictEntry(.string($0.0), .variant($0.1)) })
    }

    public var stringValue: String? {
        switch self {
        case .string(let s), .objectPath(let s), .signature(let s): return s
        case .variant(let v): return v.stringValue
        default: return nil
        }
    }

    public var uint64Value: UInt64? {
        switch self {
        case .byte(let n): return UInt64(n)
        case .uint16(let n): return UInt64(n)
        case .uint32(let n): return UInt64(n)
        case .uint64(let n): return n
        case .int16(let n): return n >= 0 ? UInt64(n) : nil
        case .int32(let n): return n >= 0 ? UInt64(n) : nil
        case .int64(let n): return n >= 0 ? UInt64(n) : nil
        case .variant(let v): return v.uint64Value
        default: return nil
        }
    }

    public var boolValue: Bool? {
        switch self {
        case .bool(let b): return b
        case .variant(let v): return v.boolValue
        default: return nil
        }
    }

    public var arrayValue: [BusValue]? {
        switch self {
        case .array(_, let items): return items
        case .variant(let v): return v.arrayValue
        default: return nil
        }
    }

    public var structValue: [BusValue]? {
        if case .structure(let f) = self { return f }
        return nil
    }

    /// Dictionary view of an `a{sv}` or `a{s*}`.
    public var dictValue: [String: BusValue]? {
        guard let items = arrayValue else { return nil }
        var out: [String: BusValue] = [:]
        for item in items {
            guard case .dictEntry(let k, let v) = item, let key = k.stringValue else { return nil }
            if case .variant(let inner) = v { out[key] = inner } else { out[key] = v }
        }
        return out
    }
}

/// Errors raised by sd-bus calls.
public struct BusError: Error, Sendable, CustomStringConvertible {
    public let name: String
    public let message: String
    public init(name: String, message: String) {
        self.name = name
        self.message = message
    }
    public init(errno code: Int32, _ what: String) {
        name = "System.Error.\(code)"
        message = "\(what): \(String(cString: strerror(code)))"
    }
    public var description: String { message.isEmpty ? name : message }
}

/// Throws the sd-bus call's negative errno as a `BusError` (shared with the server half).
@inline(__always) package func checkBus(_ r: Int32, _ what: @autoclosure () -> String) throws(BusError) {
    if r < 0 { throw BusError(errno: -r, what()) }
}

/// Reading and writing values on an sd_bus_message.
public enum BusMessage {
    static func basicType(_ c: Character) -> CChar { CChar(c.asciiValue!) }

    public static func append(_ m: OpaquePointer, _ value: BusValue) throws(BusError) {
        func basic<T>(_ t: Character, _ v: T) throws(BusError) {
            var copy = v
            let r = withUnsafePointer(to: &copy) { sd_bus_message_append_basic(m, basicType(t), $0) }
            try checkBus(r, "append \(t)")
        }
        switch value {
        case .byte(let v): try basic("y", v)
        case .bool(let v): try basic("b", Int32(v ? 1 : 0))
        case .int16(let v): try basic("n", v)
        case .uint16(let v): try basic("q", v)
        case .int32(let v): try basic("i", v)
        case .uint32(let v): try basic("u", v)
        case .int64(let v): try basic("x", v)
        case .uint64(let v): try basic("t", v)
        case .double(let v): try basic("d", v)
        case .string(let s), .objectPath(let s), .signature(let s):
            let t = value.signature.first!
            let r = s.withCString { sd_bus_message_append_basic(m, basicType(t), $0) }
            try checkBus(r, "append \(t)")
        case .array(let e, let items):
            try checkBus(sd_bus_message_open_container(m, basicType("a"), e), "open array")
            for i in items { try append(m, i) }
            try checkBus(sd_bus_message_close_container(m), "close array")
        case .structure(let fields):
            let sig = String(value.signature.dropFirst().dropLast())
            try checkBus(sd_bus_message_open_container(m, basicType("r"), sig), "open struct")
            for f in fields { try append(m, f) }
            try checkBus(sd_bus_message_close_container(m), "close struct")
        case .dictEntry(let k, let v):
            try checkBus(sd_bus_message_open_container(m, basicType("e"), k.signature + v.signature), "open dict entry")
            try append(m, k)
            try append(m, v)
            try checkBus(sd_bus_message_close_container(m), "close dict entry")
        case .variant(let inner):
            try checkBus(sd_bus_message_open_container(m, basicType("v"), inner.signature), "open variant")
            try append(m, inner)
            try checkBus(sd_bus_message_close_container(m), "close variant")
        }
    }

    public static func append(_ m: OpaquePointer, _ values: [BusValue]) throws(BusError) {
        for v in values { try append(m, v) }
    }

    /// Reads every remaining value at the current level of `m`.
    public static func readAll(_ m: OpaquePointer) throws(BusError) -> [BusValue] {
        var out: [BusValue] = []
        while true {
            var type: CChar = 0
            var contents: UnsafePointer<CChar>?
            let r = sd_bus_message_peek_type(m, &type, &contents)
            try checkBus(r, "peek")
            if r == 0 { break }
            out.append(try readOne(m, type: type, contents: contents.map { String(cString: $0) }))
        }
        return out
    }

    static func readOne(_ m: OpaquePointer, type: CChar, contents: String?) throws(BusError) -> BusValue {
        func basic<T>(_ initial: T) throws(BusError) -> T {
            var v = initial
            let r = withUnsafeMutablePointer(to: &v) { sd_bus_message_read_basic(m, type, $0) }
            try checkBus(r, "read")
            return v
        }
        func container(
            _ t: Character, _ c: String, _ body: () throws(BusError) -> BusValue
        ) throws(BusError) -> BusValue {
            try checkBus(sd_bus_message_enter_container(m, basicType(t), c), "enter")
            let v = try body()
            try checkBus(sd_bus_message_exit_container(m), "exit")
            return v
        }
        switch UInt8(bitPattern: type) {
        case UInt8(ascii: "y"): return .byte(try basic(UInt8(0)))
        case UInt8(ascii: "b"): return .bool(try basic(Int32(0)) != 0)
        case UInt8(ascii: "n"): return .int16(try basic(Int16(0)))
        case UInt8(ascii: "q"): return .uint16(try basic(UInt16(0)))
        case UInt8(ascii: "i"): return .int32(try basic(Int32(0)))
        case UInt8(ascii: "u"): return .uint32(try basic(UInt32(0)))
        case UInt8(ascii: "x"): return .int64(try basic(Int64(0)))
        case UInt8(ascii: "t"): return .uint64(try basic(UInt64(0)))
        case UInt8(ascii: "d"): return .double(try basic(Double(0)))
        case UInt8(ascii: "h"): return .int32(try basic(Int32(0)))
        case UInt8(ascii: "s"), UInt8(ascii: "o"), UInt8(ascii: "g"):
            var p: UnsafePointer<CChar>?
            let r = sd_bus_message_read_basic(m, type, &p)
            try checkBus(r, "read string")
            let s = p.map { String(cString: $0) } ?? ""
            switch UInt8(bitPattern: type) {
            case UInt8(ascii: "o"): return .objectPath(s)
            case UInt8(ascii: "g"): return .signature(s)
            default: return .string(s)
            }
        case UInt8(ascii: "a"):
            let c = contents ?? ""
            return try container("a", c) { () throws(BusError) -> BusValue in
                .array(elementSignature: c, try readAll(m))
            }
        case UInt8(ascii: "r"):
            return try container("r", contents ?? "") { () throws(BusError) -> BusValue in .structure(try readAll(m)) }
        case UInt8(ascii: "e"):
            return try container("e", contents ?? "") { () throws(BusError) -> BusValue in
                let kv = try readAll(m)
                guard kv.count == 2 else {
                    throw BusError(name: "org.freedesktop.DBus.Error.InvalidArgs", message: "bad dict entry")
                }
                return .dictEntry(kv[0], kv[1])
            }
        case UInt8(ascii: "v"):
            return try container("v", contents ?? "") { () throws(BusError) -> BusValue in
                let inner = try readAll(m)
                guard let v = inner.first else {
                    throw BusError(name: "org.freedesktop.DBus.Error.InvalidArgs", message: "empty variant")
                }
                return .variant(v)
            }
        default:
            throw BusError(
                name: "org.freedesktop.DBus.Error.InvalidArgs",
                message: "unsupported type '\(Character(UnicodeScalar(UInt8(bitPattern: type))))'")
        }
    }
}

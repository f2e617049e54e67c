import Foundation
import FoundationXML
import TandemBusClient
import TandemCore
import Testing

/// A D-Bus argument fuzzer: it finds every object, interface and method tandemd exports by
/// introspection (as any client could), then calls each method with values of the right
/// signature chosen to hurt (empty, huge, control characters, extreme numbers, real ids,
/// nested variants) and with wrong signatures (an argument missing, one too many, types
/// swapped), and reads and writes every property the same way. Afterwards tandemd must answer
/// Ping and its usage must still agree with its leases and licenses.
@Suite(.serialized) struct BusArgumentFuzzing {
    /// What introspection shows of one method or property.
    struct Member {
        var path: String
        var interface: String
        var name: String
        /// A method's input signature, or a property's type.
        var signature: String
        var isProperty: Bool
    }

    /// Every method and property under `path`, following the child nodes.
    static func introspect(_ c: BusClient, path: String = "/") throws -> [Member] {
        let xml =
            try c.call(
                path: path, interface: "org.freedesktop.DBus.Introspectable", "Introspect"
            ).first?.stringValue ?? ""
        let reader = IntrospectionReader(path: path)
        let parser = XMLParser(data: Data(xml.utf8))
        parser.delegate = reader
        #expect(parser.parse(), "introspection of \(path) is not XML")
        var members = reader.members
        for child in reader.children {
            members += try introspect(c, path: (path == "/" ? "" : path) + "/" + child)
        }
        return members
    }

    final class IntrospectionReader: NSObject, XMLParserDelegate {
        let path: String
        var members: [Member] = []
        var children: [String] = []
        private var interface = ""
        private var method: (name: String, signature: String)?
        private var depth = 0
        init(path: String) { self.path = path }

        func parser(
            _ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
            attributes: [String: String] = [:]
        ) {
            depth += 1
            switch name {
            case "node" where depth == 2: children.append(attributes["name"] ?? "")
            case "interface": interface = attributes["name"] ?? ""
            case "method": method = (attributes["name"] ?? "", "")
            case "arg" where method != nil && attributes["direction"] != "out":
                method?.signature += attributes["type"] ?? ""
            case "property":
                members.append(
                    Member(
                        path: path, interface: interface, name: attributes["name"] ?? "",
                        signature: attributes["type"] ?? "", isProperty: true))
            default: break
            }
        }

        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            depth -= 1
            if name == "method", let m = method {
                members.append(
                    Member(path: path, interface: interface, name: m.name, signature: m.signature, isProperty: false))
                method = nil
            }
        }
    }

    /// The complete types of a signature: "sua{sv}" -> ["s", "u", "a{sv}"].
    static func completeTypes(_ signature: String) -> [String] {
        var out: [String] = []
        var current = ""
        var depth = 0
        for ch in signature {
            current.append(ch)
            if ch == "(" || ch == "{" { depth += 1 }
            if ch == ")" || ch == "}" { depth -= 1 }
            if depth == 0 && ch != "a" {
                out.append(current)
                current = ""
            }
        }
        return out
    }

    /// Values that have hurt parsers before, plus the ids that exist now (so that calls reach
    /// real leases, licenses and reservations).
    static func strings(known: [String]) -> [String] {
        [
            "", "x", "cad", "'", "\\", "a\nb", "\u{1}\u{7f}", "\u{202E}evil", "../../etc/passwd", "ws 1",
            String(repeating: "y", count: 257), String(repeating: "z", count: 70_000), "127.0.0.1:1", "[::1]:99999",
            "debug", "info", "journal", "null", "Tandem-License: 1\nId: X\n"
        ] + known
    }

    static func value(_ type: String, _ rng: inout SplitMix64, known: [String], depth: Int = 0) -> BusValue {
        let first = type.first ?? "s"
        switch first {
        case "s": return .string(rng.pick(strings(known: known)))
        case "o": return .objectPath(rng.pick(["/", "/org/tandem/LicenseManager1", "/x/_2e_2e", "/a/b"]))
        case "g": return .signature(rng.pick(["", "s", "a{sv}", "(((s)))"]))
        case "b": return .bool(rng.index(below: 2) == 0)
        case "y": return .byte(UInt8(truncatingIfNeeded: rng.next()))
        case "n": return .int16(rng.pick([0, -1, .max, .min]))
        case "q": return .uint16(rng.pick([0, 1, .max]))
        case "i": return .int32(rng.pick([0, -1, .max, .min]))
        case "u": return .uint32(rng.pick([0, 1, 2, 3, 1_000_000, 1_000_001, .max]))
        case "x": return .int64(rng.pick([0, -1, .max, .min]))
        case "t": return .uint64(rng.pick([0, 1, 10, 1_000_000, 86_400_000_000, .max]))
        case "d": return .double(rng.pick([0, -0.0, .nan, .infinity, 1e308]))
        case "v":
            let inner = depth > 5 ? "s" : rng.pick(["s", "u", "t", "b", "v", "as", "a{sv}"])
            return .variant(value(inner, &rng, known: known, depth: depth + 1))
        case "a":
            let element = String(type.dropFirst())
            let count = depth > 3 ? 0 : rng.pick([0, 1, 2, 40])
            if element.hasPrefix("{") {
                let kv = completeTypes(String(element.dropFirst().dropLast()))
                let keys = ["ttl_usec", "request_id", "colour", ""] + known.prefix(2)
                return .array(
                    elementSignature: element,
                    (0..<count).map { _ in
                        .dictEntry(
                            kv[0] == "s" ? .string(rng.pick(keys)) : value(kv[0], &rng, known: known, depth: depth + 1),
                            value(kv[1], &rng, known: known, depth: depth + 1))
                    })
            }
            return .array(
                elementSignature: element, (0..<count).map { _ in value(element, &rng, known: known, depth: depth + 1) }
            )
        case "(":
            let fields = completeTypes(String(type.dropFirst().dropLast()))
            return .structure(fields.map { value($0, &rng, known: known, depth: depth + 1) })
        default:
            return .string("")
        }
    }

    /// Arguments for a call: mostly of the method's own signature, sometimes wrong on purpose.
    static func arguments(_ signature: String, _ rng: inout SplitMix64, known: [String]) -> [BusValue] {
        var types = completeTypes(signature)
        switch rng.index(below: 8) {
        case 0 where !types.isEmpty: types.removeLast()  // one missing
        case 1: types.append(rng.pick(["s", "u", "a{sv}"]))  // one too many
        case 2 where !types.isEmpty: types = types.map { $0 == "s" ? "u" : "s" }  // swapped
        default: break
        }
        return types.map { value($0, &rng, known: known) }
    }

    /// Usage as GetUsage reports it against what the leases and licenses add up to.
    static func expectUsageAgrees(_ c: BusClient) throws {
        let usage = listRows(try c.call("GetUsage"))
        let leases = listRows(try c.call("ListLeases"))
        let licenses = listRows(try c.call("ListLicenses"))
        #expect(!usage.isEmpty && !licenses.isEmpty, "nothing left to compare")
        for row in usage {
            let feature = row[0].stringValue ?? ""
            let inUse = row[2].uint64Value ?? 0, reserved = row[3].uint64Value ?? 0
            let held = leases.filter { $0[1].stringValue == feature }.reduce(0) { $0 + ($1[3].uint64Value ?? 0) }
            let mine = licenses.filter { $0[2].stringValue == feature }
            #expect(inUse == held, "\(feature): GetUsage in_use \(inUse), leases hold \(held)")
            #expect(mine.reduce(0) { $0 + ($1[4].uint64Value ?? 0) } == inUse, "\(feature): licenses' in_use")
            #expect(mine.reduce(0) { $0 + ($1[5].uint64Value ?? 0) } == reserved, "\(feature): licenses' reserved")
        }
        #expect(Set(leases.compactMap { $0[1].stringValue }).isSubset(of: Set(usage.compactMap { $0[0].stringValue })))
    }

    @Test func everyMethodAndPropertySurvivesHostileArguments() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        let lease = try c.call("Acquire", [.string("cad"), .uint32(2), .string("ws-1"), .vardict([])])
        let reservation = try c.call("Reserve", [.string("cad"), .uint32(1), .string("ws-9")])
        // Real ids, so that calls reach them; not the license's, so that usage stays to compare.
        let known = [lease[0].stringValue ?? "", reservation[0].stringValue ?? "", "ws-9", f.serverId]

        let members = try Self.introspect(c)
        let interfaces = Set(members.map(\.interface))
        for expected in [
            "org.tandem.LicenseManager1.Manager", "org.tandem.LicenseManager1.License", "org.freedesktop.LogControl1",
            "org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Peer"
        ] {
            #expect(interfaces.contains(expected), "introspection lacks \(expected): \(interfaces.sorted())")
        }
        var rng = SplitMix64(state: 0x7A4D_E111)
        var calls = 0, refusals = 0
        var unnamed: [String] = []
        for member in members {
            for _ in 0..<(member.isProperty ? 6 : 24) {
                let (interface, name, args): (String, String, [BusValue])
                if member.isProperty {
                    let set = rng.index(below: 2) == 0
                    interface = "org.freedesktop.DBus.Properties"
                    name = set ? "Set" : "Get"
                    let value = Self.value(rng.pick([member.signature, "s", "u"]), &rng, known: known)
                    args = [.string(member.interface), .string(member.name)] + (set ? [.variant(value)] : [])
                } else {
                    (interface, name) = (member.interface, member.name)
                    args = Self.arguments(member.signature, &rng, known: known)
                }
                calls += 1
                do {
                    _ = try c.call(path: member.path, interface: interface, name, args)
                } catch {
                    refusals += 1
                    // Every refusal is a named D-Bus error: never a bare errno from the server
                    // ("System.Error.EINVAL"), a dropped connection or a timeout. A numeric
                    // "System.Error.22" is this client's sd-bus refusing to build the message.
                    let lost = [ETIMEDOUT, ECONNRESET, ENOTCONN, EPIPE].map { "System.Error.\($0)" }
                    let errno = error.name.hasPrefix("System.Error.E")
                    if errno || lost.contains(error.name) || error.name.contains("NoReply")
                        || error.name.contains("Disconnected")
                    {
                        unnamed.append("\(member.interface).\(name) on \(member.path): \(error)")
                    }
                }
            }
        }
        #expect(unnamed.isEmpty, "\(unnamed.prefix(5))")
        #expect(calls > 500 && refusals > 0, "\(calls) calls, \(refusals) refused")
        // Still there, still consistent.
        _ = try c.call(
            destination: BusNames.service, path: BusNames.rootPath, interface: "org.freedesktop.DBus.Peer", "Ping")
        try Self.expectUsageAgrees(c)
        #expect(f.daemon.process?.isRunning == true)
    }
}

import Foundation
import TandemBus
import TandemBusClient
import TandemCore
import Testing

/// The `<interface name="org.tandem...">` blocks of an introspection document, one trimmed
/// line per element.
func tandemInterfaces(_ xml: String) -> [String: [String]] {
    var out: [String: [String]] = [:]
    var current: String?
    for raw in xml.split(separator: "\n") {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.hasPrefix("<interface name=\"org.tandem.") {
            current = line
            out[line] = []
        } else if line == "</interface>" {
            current = nil
        } else if let c = current {
            out[c]!.append(line)
        }
    }
    return out
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

@Suite(.serialized) struct InterfaceDocs {
    @Test func introspectionMatchesDocs() throws {
        let f = try Fixture()
        let root = try busctl(f.bus, ["introspect", "--xml-interface", BusNames.service, BusNames.rootPath])
        let license = try busctl(
            f.bus, ["introspect", "--xml-interface", BusNames.service, BusNames.licensePrefix + "/LIC_2dCAD"])
        var live = tandemInterfaces(root.stdout)
        live.merge(tandemInterfaces(license.stdout)) { a, _ in a }
        #expect(live.count == 2, "expected Manager and License interfaces, got \(live.keys)")

        let docsXML = try String(contentsOfFile: packageRoot + "/docs/org.tandem.LicenseManager1.xml", encoding: .utf8)
        let documented = tandemInterfaces(docsXML)
        #expect(Set(documented.keys) == Set(live.keys))
        for (name, lines) in live {
            let doc = documented[name] ?? []
            let firstDiff =
                zip(doc, lines).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                ?? min(doc.count, lines.count)
            #expect(
                doc == lines,
                """
                docs/org.tandem.LicenseManager1.xml differs from the daemon in \(name) at element \(firstDiff): \
                docs has \(firstDiff < doc.count ? doc[firstDiff] : "nothing"), \
                daemon has \(firstDiff < lines.count ? lines[firstDiff] : "nothing")
                """)
        }

        // Every member is described in the human reference.
        let reference = try String(contentsOfFile: packageRoot + "/docs/dbus-api.md", encoding: .utf8)
        for lines in live.values {
            for line in lines {
                guard
                    line.hasPrefix("<method name=") || line.hasPrefix("<property name=")
                        || line.hasPrefix("<signal name=")
                else { continue }
                let name = line.split(separator: "\"")[1]
                #expect(reference.contains("`\(name)"), "docs/dbus-api.md does not describe \(name)")
            }
        }
        // And every error the daemon can send is listed.
        for code in TandemErrorCode.allCases {
            #expect(reference.contains("`\(code.dbusName)`"), "docs/dbus-api.md does not list \(code.dbusName)")
        }
    }
}

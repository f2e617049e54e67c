import Foundation
import Testing

/// The layout the README's map promises: every module declares what it imports, and the
/// programs link only what their job needs.
@Suite struct Layout {
    /// Modules that come with the toolchain and need no declaration.
    static let toolchain: Set = [
        "Foundation", "FoundationNetworking", "FoundationEssentials", "Glibc", "Dispatch",
        "Testing", "XCTest", "Synchronization", "FoundationXML"
    ]

    /// Package.swift's targets and the modules each may import (its dependencies).
    static func declaredDependencies() throws -> [String: Set<String>] {
        let manifest = try String(contentsOfFile: packageRoot + "/Package.swift", encoding: .utf8)
        var out: [String: Set<String>] = [:]
        let targetPattern = try NSRegularExpression(
            pattern: #"\.(?:target|executableTarget|testTarget|systemLibrary)\(name: "([^"]+)""#)
        let matches = targetPattern.matches(in: manifest, range: NSRange(manifest.startIndex..., in: manifest))
        for (i, m) in matches.enumerated() {
            let name = String(manifest[Range(m.range(at: 1), in: manifest)!])
            let end = i + 1 < matches.count ? matches[i + 1].range.location : (manifest as NSString).length
            let body = (manifest as NSString).substring(
                with: NSRange(location: m.range.location, length: end - m.range.location))
            var deps: Set<String> = []
            if let open = body.range(of: "dependencies: [") {
                var depth = 1, index = open.upperBound
                while depth > 0, index < body.endIndex {
                    if body[index] == "[" { depth += 1 } else if body[index] == "]" { depth -= 1 }
                    index = body.index(after: index)
                }
                let list = String(body[open.upperBound..<index])
                let products = try NSRegularExpression(pattern: #"\.product\(name: "([^"]+)""#)
                for p in products.matches(in: list, range: NSRange(list.startIndex..., in: list)) {
                    deps.insert(String(list[Range(p.range(at: 1), in: list)!]))
                }
                let withoutProducts = products.stringByReplacingMatches(
                    in: list, range: NSRange(list.startIndex..., in: list), withTemplate: "")
                let plain = try NSRegularExpression(
                    pattern: #"^\s*"([^"]+)"|,\s*"([^"]+)""#, options: .anchorsMatchLines)
                for p in plain.matches(
                    in: withoutProducts, range: NSRange(withoutProducts.startIndex..., in: withoutProducts))
                {
                    let r = p.range(at: 1).location != NSNotFound ? p.range(at: 1) : p.range(at: 2)
                    deps.insert(String(withoutProducts[Range(r, in: withoutProducts)!]))
                }
            }
            out[name] = deps
        }
        return out
    }

    @Test func everyImportIsDeclared() throws {
        let declared = try Self.declaredDependencies()
        #expect(declared["TandemctlCommands"] != nil && declared["TandemCore"] == [])
        #expect(declared["tandem-fuzz"]?.contains("TandemLicensing") == true)
        var missing: [String] = []
        for dir in ["Sources", "Tests", "Fuzz"] {
            for target in try FileManager.default.contentsOfDirectory(atPath: packageRoot + "/" + dir) {
                guard let deps = declared[target] else { continue }
                let files =
                    FileManager.default.enumerator(atPath: packageRoot + "/\(dir)/\(target)")?
                    .compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") } ?? []
                for file in files {
                    let text = try String(contentsOfFile: packageRoot + "/\(dir)/\(target)/\(file)", encoding: .utf8)
                    for line in text.split(separator: "\n")
                    where line.hasPrefix("import ") || line.hasPrefix("@testable import ") {
                        let module = String(line.split(separator: " ").last!)
                        if !Self.toolchain.contains(module) && !deps.contains(module) {
                            missing.append("\(target)/\(file) imports \(module)")
                        }
                    }
                }
            }
        }
        #expect(missing.isEmpty, "undeclared imports: \(missing.sorted())")
    }

    /// ldd's list of shared libraries for a built program.
    static func sharedLibraries(_ program: String) throws -> String {
        let r = try run("/usr/bin/ldd", [binary(program)])
        #expect(r.status == 0, "\(r.stderr)")
        return r.stdout
    }

    @Test func programsLinkOnlyWhatTheirJobNeeds() throws {
        let tandemctl = try Self.sharedLibraries("tandemctl")
        #expect(tandemctl.contains("libsystemd"), "tandemctl talks D-Bus")
        #expect(!tandemctl.contains("libsqlite3"), "tandemctl links SQLite: \(tandemctl)")
        let vendor = try Self.sharedLibraries("tandem-vendor")
        #expect(!vendor.contains("libsystemd") && !vendor.contains("libsqlite3"), "tandem-vendor: \(vendor)")
        #expect(try Self.sharedLibraries("tandemd").contains("libsqlite3"))
    }
}

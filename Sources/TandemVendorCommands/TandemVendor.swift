import ArgumentParser
import Foundation
import TandemCommandLine
import TandemCore
import TandemLicensing

/// The vendor's side: signing keys and signed licenses for offline activation.
public struct TandemVendor: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tandem-vendor",
        abstract: "Create vendor signing keys and issue signed Tandem licenses.",
        subcommands: [Keygen.self, PublicKey.self, Issue.self, Verify.self])
    public init() {}

    static func readPrivateKey(_ path: String) throws -> PrivateSigningKey {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CLIFailure("cannot read \(path)")
        }
        do { return try PrivateSigningKey.parse(text) } catch { throw CLIFailure("\(path): \(error)") }
    }

    /// Writes `text` to `path` with `mode`, refusing to overwrite unless `force`.
    static func write(_ text: String, to path: String, mode: mode_t, force: Bool) throws {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL)
        let fd = open(path, flags, mode)
        guard fd >= 0 else {
            throw CLIFailure(
                errno == EEXIST
                    ? "\(path) already exists (use --force to replace it)"
                    : "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        fchmod(fd, mode)
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBytes({ Foundation.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw CLIFailure("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new Ed25519 private key (mode 0600) and print its public key.")
        @Option(help: "Private key file to create.") var privateKey: String
        @Option(help: "Also write the public key to this file (for VendorKeys=).") var publicKey: String?
        @Flag(help: "Replace existing files.") var force = false
        func run() throws {
            let key = PrivateSigningKey()
            try TandemVendor.write(key.fileText, to: privateKey, mode: 0o600, force: force)
            if let publicKey {
                try TandemVendor.write(key.publicKey.fileText, to: publicKey, mode: 0o644, force: force)
            }
            print(key.publicKey.fileText, terminator: "")
        }
    }

    struct PublicKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "public-key", abstract: "Print the public key of a private key file.")
        @Option(help: "Private key file.") var privateKey: String
        func run() throws {
            print(try TandemVendor.readPrivateKey(privateKey).publicKey.fileText, terminator: "")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a signed license for one or more License Server IDs.")
        @Option(help: "Private key file.") var privateKey: String
        @Option(help: "License Server ID the license is issued to (repeat for a pair).") var serverId: [String] = []
        @Option(help: "Product name.") var product: String
        @Option(help: "Feature name (what products acquire).") var feature: String
        @Option(help: "Number of seats.") var seats: UInt32
        @Option(help: "Last valid day, YYYY-MM-DD (UTC).") var notAfter: String?
        @Option(help: "License id (default: generated).") var id: String?

        func run() throws {
            let key = try TandemVendor.readPrivateKey(privateKey)
            guard !serverId.isEmpty else { throw CLIFailure("at least one --server-id is needed") }
            let now = UInt64(Date().timeIntervalSince1970 * 1_000_000)
            let day = LicenseDocument.formatDay(usec: now)
            let serial = String(UInt32.random(in: 0...UInt32.max), radix: 16, uppercase: true)
            let licenseId = id ?? "LIC-\(day.replacingOccurrences(of: "-", with: ""))-\(serial)"
            if let notAfter {
                guard LicenseDocument.parseDay(notAfter) != nil else {
                    throw CLIFailure("--not-after '\(notAfter)' is not a date YYYY-MM-DD")
                }
            }
            let doc = LicenseDocument(
                id: licenseId, product: product, feature: feature, seats: seats, notAfter: notAfter,
                issuedTo: serverId, issuedAt: day, keyId: "")
            let signed = try key.sign(doc)
            // Round-trip through the parser so that nothing unparseable is ever printed.
            do { _ = try TrustedKeys([key.publicKey]).verify(signed.text) } catch { throw CLIFailure(error.message) }
            print(signed.text, terminator: "")
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a license file against a public key file.")
        @Option(help: "Public key file.") var publicKey: String
        @Argument(help: "License file.") var file: String
        func run() throws {
            guard let keyText = try? String(contentsOfFile: publicKey, encoding: .utf8),
                let text = try? String(contentsOfFile: file, encoding: .utf8)
            else { throw CLIFailure("cannot read input files") }
            let key: PublicSigningKey
            do { key = try PublicSigningKey.parse(keyText) } catch { throw CLIFailure("\(publicKey): \(error)") }
            do {
                let doc = try TrustedKeys([key]).verify(text)
                print("OK \(doc.id): \(doc.seats) seats of \(doc.feature) for \(doc.issuedTo.joined(separator: ", "))")
            } catch { throw CLIFailure(error.message) }
        }
    }
}

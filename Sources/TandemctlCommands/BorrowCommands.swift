import ArgumentParser
import Foundation
import TandemAPI
import TandemBusClient
import TandemClient
import TandemCommandLine
import TandemCore
import TandemLicensing

/// The client configuration's borrow settings: the pair's key and where certificates are kept.
struct BorrowSetup {
    let key: PublicSigningKey
    let store: BorrowStore

    init(_ options: ClientOptions) throws {
        let c: ClientConfiguration
        do { (key, c) = try ClientConfiguration.trustedBorrowKey(path: options.path) } catch {
            throw CLIFailure(error.description)
        }
        store = BorrowStore(directory: c.borrowDirectory ?? BorrowStore.defaultDirectory)
    }
}

func certificateJSON(_ c: BorrowCertificate, _ store: BorrowStore) -> [String: Any] {
    [
        "feature": c.feature, "count": c.seats, "lease_id": c.leaseId, "machine_id": c.machineId,
        "issued_at": RFC3339.format(usec: c.issuedUSec), "expires_at": RFC3339.format(usec: c.notAfterUSec),
        "expires_usec": c.notAfterUSec, "certificate": store.path(of: c.feature)
    ]
}

extension ClientCmd {
    struct Borrow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take seats to this machine for days it will be away from the servers.",
            discussion: """
                The seats are held on the servers until the borrow ends or is returned; this machine keeps \
                a certificate signed by the pair and bound to its /etc/machine-id, which 'client check' \
                and 'client run' verify without a server. The policy's Borrow= must allow it.
                """)
        @OptionGroup var options: ClientOptions
        @Argument(help: "Feature name.") var feature: String
        @Option(help: "Number of seats.") var count: UInt32 = 1
        @Option(help: "How long, in days (decimals allowed: 0.5 is 12 hours).") var days: Double
        @Option(help: "Client id (default: user@host).") var client: String?
        @OptionGroup var holder: HolderOptions

        func run() async throws {
            let setup = try BorrowSetup(options)
            let seconds = (days * 86_400).rounded()
            guard seconds >= 1, seconds <= 365 * 86_400 else {
                throw CLIFailure("--days must be from 1 second to 365 days, got \(days)")
            }
            let machine: String
            do { machine = try MachineIdentity.current() } catch { throw CLIFailure(error.description) }
            // A stored borrow that has not ended (valid or not: its seats may still be held) is
            // returned first, else its lease id would be lost with the file.
            if let held = try? setup.store.certificate(of: feature),
                held.notAfterUSec > USec(Date().timeIntervalSince1970 * 1e6)
            {
                throw CLIFailure(
                    "\(feature) is already borrowed on this machine until "
                        + "\(RFC3339.format(usec: held.notAfterUSec)): return it first ('tandemctl client return')")
            }
            let c = try options.client()
            let id = client ?? defaultClientId()
            let (lease, cert) = try await attempt { () async throws(ClientError) in
                try await c.borrow(
                    feature: feature, count: count, client: id, seconds: UInt64(seconds), key: setup.key,
                    machineId: machine, holder: holder.holder)
            }
            do { try setup.store.save(cert) } catch {
                try? await c.release(leaseId: lease.leaseId)
                throw CLIFailure("\(error.description); the seats were given back")
            }
            print(
                options.json
                    ? Output.json(certificateJSON(cert, setup.store))
                    : "Borrowed \(cert.seats) seat\(cert.seats == 1 ? "" : "s") of \(feature) until "
                        + "\(RFC3339.format(usec: cert.notAfterUSec)) (certificate \(setup.store.path(of: feature)))")
        }
    }

    struct Return: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "return", abstract: "Give borrowed seats back before the borrow ends.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Feature name.") var feature: String

        func run() async throws {
            let setup = try BorrowSetup(options)
            let cert: BorrowCertificate
            do {
                guard let c = try setup.store.certificate(of: feature) else {
                    throw CLIFailure("no borrow of \(feature) on this machine (\(setup.store.path(of: feature)))")
                }
                cert = c
            } catch let e as BorrowError { throw CLIFailure(e.description) }
            let c = try options.client()
            switch await outcome({ () async throws(ClientError) in try await c.release(leaseId: cert.leaseId) }) {
            case .success: break
            // The servers no longer hold it (it ended): the certificate is worth nothing either.
            case .failure(let e) where e.name == "LeaseNotFound": break
            case .failure(let e): throw failure(e)
            }
            setup.store.remove(feature)
            print(
                options.json
                    ? Output.json(["feature": feature, "lease_id": cert.leaseId, "returned": true])
                    : "Returned \(cert.seats) seat\(cert.seats == 1 ? "" : "s") of \(feature)")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a borrow on this machine, offline (exit 0: it holds).",
            discussion: """
                Verifies the certificate's signature against BorrowKey=, that it was issued to this \
                machine's /etc/machine-id and that it has not expired. No server is asked.
                """)
        @OptionGroup var options: ClientOptions
        @Argument(help: "Feature name (default: every borrow on this machine).") var feature: String?

        func run() throws {
            let setup = try BorrowSetup(options)
            let features = feature.map { [$0] } ?? setup.store.all().map(\.feature)
            guard !features.isEmpty else { throw CLIFailure("no borrow on this machine") }
            var rows: [[String: Any]] = []
            var failed: String?
            for f in features {
                do {
                    let cert = try setup.store.check(f, key: setup.key)
                    rows.append(certificateJSON(cert, setup.store).merging(["valid": true]) { $1 })
                } catch {
                    rows.append(["feature": f, "valid": false, "error": error.description])
                    failed = failed ?? error.description
                }
            }
            if options.json {
                print(Output.json(feature == nil ? rows as Any : rows[0]))
            } else {
                for r in rows {
                    if r["valid"] as? Bool == true {
                        print("\(r["feature"]!): \(r["count"]!) seat(s) borrowed until \(r["expires_at"]!), valid here")
                    }
                }
            }
            if let failed { throw CLIFailure(failed) }
        }
    }
}

struct Borrows: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the seats borrowed to machines that are away (tandemctl client borrow).")
    @OptionGroup var bus: BusOptions
    func run() throws {
        let list = try bus.rows(.listBorrows, as: BorrowRow.self)
        if bus.json {
            print(
                Output.json(
                    list.map {
                        [
                            "lease_id": $0.leaseId, "feature": $0.feature, "count": $0.count,
                            "machine_id": $0.machineId,
                            "user": $0.user, "host": $0.host, "acquired_usec": $0.acquiredUSec,
                            "expires_usec": $0.expiresUSec, "revoked_usec": $0.revokedUSec
                        ] as [String: Any]
                    }))
        } else if list.isEmpty {
            print("No seat is borrowed.")
        } else {
            print(
                Output.table(
                    ["LEASE", "FEATURE", "COUNT", "USER", "HOST", "MACHINE", "UNTIL", "REVOKED"],
                    list.map { r in
                        [
                            r.leaseId, r.feature, String(r.count), HistoryFormat.cell(r.user),
                            HistoryFormat.cell(r.host), String(r.machineId.prefix(12)), Output.time(r.expiresUSec),
                            r.revokedUSec == 0 ? "-" : Output.time(r.revokedUSec)
                        ]
                    }))
        }
    }
}

struct RevokeBorrow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke-borrow",
        abstract: "Void a borrow. Its seats stay counted until it ends: the machine is away and cannot be told.")
    @OptionGroup var bus: BusOptions
    @Argument(help: "Lease id (tandemctl borrows).") var id: String
    func run() throws {
        _ = try bus.call(.revokeBorrow, [.string(id)])
        Output.report(
            asJSON: bus.json, json: ["lease_id": id, "revoked": true],
            text: "Revoked borrow \(id): its seats stay counted until it ends")
    }
}

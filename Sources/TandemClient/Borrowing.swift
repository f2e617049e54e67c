import Foundation
import TandemAPI
import TandemCore
import TandemLicensing

/// Why a borrow could not be taken, kept or checked on this machine.
public struct BorrowError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

/// This machine's identity for borrows: `/etc/machine-id` (machine-id(5)), which a copied
/// certificate cannot bring along to another machine.
public enum MachineIdentity {
    public static let path = "/etc/machine-id"

    public static func current() throws(BorrowError) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BorrowError("\(path): cannot read (systemd-machine-id-setup makes it)")
        }
        let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
        do { try Validate.machineId(id) } catch { throw BorrowError("\(path): not a machine id") }
        return id
    }
}

extension ClientConfiguration {
    /// `BorrowKey=` of the configuration at `path`, trusted only when the file is root's and
    /// no one else may change it: whoever could put their own key there could sign their own
    /// borrows. (Products read /etc/tandem/client.conf; `client configure` writes it as root.)
    public static func trustedBorrowKey(path: String) throws(BorrowError) -> (PublicSigningKey, ClientConfiguration) {
        let c: ClientConfiguration
        do { c = try load(path: path) } catch { throw BorrowError(error.description) }
        guard let text = c.borrowKey else {
            throw BorrowError(
                "\(path): no BorrowKey= (run 'tandemctl client configure' again: it asks the server for it)")
        }
        var st = stat()
        guard stat(path, &st) == 0, st.st_uid == 0, st.st_mode & 0o022 == 0 else {
            throw BorrowError(
                "\(path): BorrowKey= is trusted only in a file owned by root that no one else may write")
        }
        do { return (try PublicSigningKey.parse(text), c) } catch { throw BorrowError("\(path): BorrowKey=: \(error)") }
    }
}

/// The certificates of the seats this user borrowed, one file per feature (`FEATURE.borrow`).
public struct BorrowStore: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// `$XDG_STATE_HOME/tandem/borrowed`, else `~/.local/state/tandem/borrowed`.
    public static var defaultDirectory: String {
        let env = ProcessInfo.processInfo.environment
        let state =
            env["XDG_STATE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil }
            ?? (env["HOME"] ?? NSHomeDirectory()) + "/.local/state"
        return state + "/tandem/borrowed"
    }

    public func path(of feature: String) -> String { directory + "/" + feature + ".borrow" }

    /// The stored certificate of `feature` (nil: none).
    public func certificate(of feature: String) throws(BorrowError) -> BorrowCertificate? {
        try Self.validFeature(feature)
        guard let text = try? String(contentsOfFile: path(of: feature), encoding: .utf8) else { return nil }
        do { return try BorrowCertificate(text: text) } catch { throw BorrowError("\(path(of: feature)): \(error)") }
    }

    /// Every stored certificate, by feature.
    public func all() -> [(feature: String, BorrowCertificate?)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".borrow") }.sorted().map { name in
            let feature = String(name.dropLast(".borrow".count))
            return (feature, try? certificate(of: feature))
        }
    }

    public func save(_ c: BorrowCertificate) throws(BorrowError) {
        try Self.validFeature(c.feature)
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try c.text.write(toFile: path(of: c.feature), atomically: true, encoding: .utf8)
        } catch { throw BorrowError("cannot write \(path(of: c.feature)): \(error.localizedDescription)") }
    }

    public func remove(_ feature: String) {
        try? FileManager.default.removeItem(atPath: path(of: feature))
    }

    /// A feature name is a file name here: the server's identifier rules keep it one.
    static func validFeature(_ feature: String) throws(BorrowError) {
        do { try Validate.identifier(feature, "feature") } catch { throw BorrowError(error.message) }
        guard feature != "." && feature != ".." else { throw BorrowError("feature may not be '\(feature)'") }
    }

    /// Checks the certificate of `feature` offline: present, signed by the pair's `key`, for
    /// this machine, not expired.
    public func check(
        _ feature: String, key: PublicSigningKey, now: Date = Date()
    ) throws(BorrowError)
        -> BorrowCertificate
    {
        guard let c = try certificate(of: feature) else {
            throw BorrowError("no borrow of \(feature) on this machine (\(path(of: feature)))")
        }
        do {
            try c.verify(key: key, machineId: try MachineIdentity.current(), now: USec(now.timeIntervalSince1970 * 1e6))
        } catch let e as BorrowCheckError {
            throw BorrowError("\(feature): \(e.description)")
        } catch { throw BorrowError("\(feature): \(error)") }
        return c
    }
}

extension TandemClient {
    /// The same for every borrow of `feature` by this machine: a borrow asked again after its
    /// answer was lost gets the lease granted the first time (while it lives) instead of a
    /// second one whose seats no certificate could give back.
    public static func borrowRequestId(feature: String, machineId: String) -> String {
        "borrow-\(machineId)-\(feature.prefix(80))"
    }

    /// Borrows `count` seats of `feature` for this machine for `seconds` (the policy's
    /// `Borrow=` bounds it), and checks the certificate against the pair's `key` before it
    /// is kept: a certificate that would not verify offline is refused here, while the
    /// server can still be told (the seats are given back).
    public func borrow(
        feature: String, count: UInt32 = 1, client: String, seconds: UInt64, key: PublicSigningKey,
        machineId: String, holder: Holder = .thisProcess, requestId: String? = nil
    ) async throws(ClientError) -> (LeaseView, BorrowCertificate) {
        var body: [String: Any] = [
            "feature": feature, "count": count, "client": client, "borrow_sec": seconds, "machine_id": machineId,
            "request_id": requestId ?? Self.borrowRequestId(feature: feature, machineId: machineId)
        ]
        if let user = holder.user { body["user"] = user }
        if let host = holder.host { body["host"] = host }
        let data = try! JSONSerialization.data(withJSONObject: body)
        let (s, reply) = try await withFailover("POST", "/v1/borrows", body: data)
        let lease = try decode(LeaseView.self, s, reply, expect: [200, 201])
        do {
            guard let text = lease.certificate else { throw BorrowCheckError.malformed("the server sent none") }
            let c = try BorrowCertificate(text: text)
            try c.verify(key: key, machineId: machineId, now: USec(Date().timeIntervalSince1970 * 1e6))
            guard c.leaseId == lease.leaseId, c.feature == feature, c.seats == count else {
                throw BorrowCheckError.malformed("it is not of this borrow")
            }
            return (lease, c)
        } catch {
            try? await release(leaseId: lease.leaseId)
            let why = (error as? BorrowCheckError)?.description ?? "\(error)"
            throw ClientError(
                name: "BadCertificate", status: 0,
                detail: "the borrow's certificate does not verify (\(why)); the seats were given back. Is BorrowKey="
                    + " the pair's? ('tandemctl client configure' learns it)")
        }
    }
}

import Crypto
import Foundation
import TandemCore

/// The text form of a signed license, as `tandem-vendor issue` prints it:
///
///     Tandem-License: 1
///     Id: LIC-20261129-8F3A2C
///     Product: Demo Suite
///     Feature: demo
///     Seats: 10
///     Issued-To: TS-ABCD-EFGH-JKLM-NPQR
///     Not-After: 2027-12-31
///     Issued-At: 2026-11-29
///     Key-Id: 3b1f0c9e2d4a5b6c
///     Signature: <base64 Ed25519 signature>
///
/// The signature covers every line before `Signature:`, each ending in "\n".
public struct LicenseDocument: Sendable, Equatable {
    public var id: String
    public var product: String
    public var feature: String
    public var seats: UInt32
    /// "YYYY-MM-DD" (valid through the end of that day, UTC), or nil for no expiry.
    public var notAfter: String?
    public var issuedTo: [String]
    public var issuedAt: String
    public var keyId: String
    public var signature: Data

    public init(
        id: String, product: String, feature: String, seats: UInt32, notAfter: String?,
        issuedTo: [String], issuedAt: String, keyId: String, signature: Data = Data()
    ) {
        self.id = id
        self.product = product
        self.feature = feature
        self.seats = seats
        self.notAfter = notAfter
        self.issuedTo = issuedTo
        self.issuedAt = issuedAt
        self.keyId = keyId
        self.signature = signature
    }

    public static let formatVersion = "1"
    static let maxDocumentBytes = 64 * 1024

    /// The bytes that are signed.
    public var payload: String {
        var lines = [
            "Tandem-License: \(Self.formatVersion)", "Id: \(id)", "Product: \(product)",
            "Feature: \(feature)", "Seats: \(seats)"
        ]
        for s in issuedTo { lines.append("Issued-To: \(s)") }
        if let n = notAfter { lines.append("Not-After: \(n)") }
        lines.append("Issued-At: \(issuedAt)")
        lines.append("Key-Id: \(keyId)")
        return lines.map { $0 + "\n" }.joined()
    }

    public var text: String { payload + "Signature: \(signature.base64EncodedString())\n" }

    /// Last valid microsecond of the Not-After day (UTC), 0 for no expiry.
    public var notAfterUSec: USec {
        guard let n = notAfter, let day = Self.parseDay(n) else { return 0 }
        return USec(day + 1) * 86_400 * usecPerSecond - 1
    }

    public static func parseDay(_ s: String) -> Int64? { CivilDate.parse(s) }
    public static func formatDay(usec: USec) -> String { CivilDate.format(usec: usec) }

    static func invalid(_ why: String) -> TandemError { TandemError(.invalidLicense, why) }

    /// Parses a license document in its one canonical form. Two things are forgiven, because
    /// licenses travel by mail and through editors and neither touches what is signed: CRLF
    /// line ends (read as LF) and blank lines before the first line or after the last. Anything
    /// else that is not exactly the format is refused with `InvalidLicense`: a blank line
    /// between fields, spaces a rendering would not write, a signature in any base64 but the
    /// canonical one (padding as written, unused bits zero).
    public static func parse(_ raw: String) throws(TandemError) -> LicenseDocument {
        guard raw.utf8.count <= maxDocumentBytes else { throw invalid("license text is larger than 64 KiB") }
        var lines = raw.replacingOccurrences(of: "\r\n", with: "\n").split(
            separator: "\n", omittingEmptySubsequences: false
        )
        .map { String($0) }
        func blank(_ line: String) -> Bool { line.trimmingCharacters(in: .whitespaces).isEmpty }
        while let first = lines.first, blank(first) { lines.removeFirst() }
        while let last = lines.last, blank(last) { lines.removeLast() }
        guard !lines.isEmpty else { throw invalid("license text is empty") }
        if let n = lines.firstIndex(where: blank) {
            throw invalid("line \(n + 1) is blank: a license has no blank lines between its fields")
        }
        var fields: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else {
                throw invalid("line \(quoted(line.prefix(40))) is not 'Key: value'")
            }
            let key = String(line[..<colon])
            var value = String(line[line.index(after: colon)...])
            if value.hasPrefix(" ") { value.removeFirst() }
            fields.append((key, value))
        }
        guard fields.first?.0 == "Tandem-License" else {
            throw invalid("not a Tandem license (first line must be 'Tandem-License: 1')")
        }
        guard fields.first?.1 == formatVersion else {
            throw invalid("unsupported license format version \(quoted(fields[0].1))")
        }
        var single: [String: String] = [:]
        var issuedTo: [String] = []
        let known: Set = [
            "Tandem-License", "Id", "Product", "Feature", "Seats", "Issued-To", "Not-After", "Issued-At", "Key-Id",
            "Signature"
        ]
        for (k, v) in fields {
            guard known.contains(k) else { throw invalid("unknown field \(quoted(k))") }
            if k == "Issued-To" { issuedTo.append(v); continue }
            guard single[k] == nil else { throw invalid("field \(quoted(k)) appears twice") }
            single[k] = v
        }
        guard fields.last?.0 == "Signature" else { throw invalid("the last line must be the signature") }
        func need(_ k: String) throws(TandemError) -> String {
            guard let v = single[k], !v.isEmpty else { throw invalid("missing field \(quoted(k))") }
            return v
        }
        let id = try need("Id")
        do { try Validate.identifier(id, "license id", max: 64) } catch { throw invalid(error.message) }
        let feature = try need("Feature")
        do { try Validate.identifier(feature, "feature", max: 64) } catch { throw invalid(error.message) }
        let product = try need("Product")
        do { try Validate.text(product, "product", max: 128) } catch { throw invalid(error.message) }
        guard let seats = UInt32(try need("Seats")), seats >= 1, seats <= Validate.maxCount else {
            throw invalid("Seats must be a whole number from 1 to \(Validate.maxCount)")
        }
        guard !issuedTo.isEmpty else { throw invalid("missing field 'Issued-To'") }
        for s in issuedTo {
            do { try Validate.identifier(s, "Issued-To", max: 64) } catch { throw invalid(error.message) }
        }
        if let n = single["Not-After"], parseDay(n) == nil {
            throw invalid("Not-After \(quoted(n)) is not a date YYYY-MM-DD")
        }
        let issuedAt = try need("Issued-At")
        let keyId = try need("Key-Id")
        let signatureText = try need("Signature")
        guard let sig = Data(base64Encoded: signatureText), sig.count == 64 else {
            throw invalid("Signature is not a base64 Ed25519 signature")
        }
        // One text per signature: a decoder forgives unused bits and some padding, this does not.
        guard sig.base64EncodedString() == signatureText else {
            throw invalid("Signature is not in canonical base64 (as tandem-vendor writes it)")
        }
        let doc = LicenseDocument(
            id: id, product: product, feature: feature, seats: seats, notAfter: single["Not-After"],
            issuedTo: issuedTo, issuedAt: issuedAt, keyId: keyId, signature: sig)
        // Field order is part of the format: re-rendering must give back the same lines.
        let given = lines.dropLast().map { $0 + "\n" }.joined()
        guard given == doc.payload else { throw invalid("fields are out of order or malformed") }
        return doc
    }

    /// The activated license this document grants.
    public func license() -> License {
        License(
            id: id, product: product, feature: feature, seats: seats, notAfterUSec: notAfterUSec,
            issuedTo: issuedTo, keyId: keyId, document: text)
    }
}

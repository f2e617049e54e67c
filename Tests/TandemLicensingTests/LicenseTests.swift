import Foundation
import Testing
import TandemCore
@testable import TandemLicensing

func sample(_ key: PrivateSigningKey, seats: UInt32 = 5, notAfter: String? = "2030-01-31") throws -> LicenseDocument {
    try key.sign(
        LicenseDocument(
            id: "LIC-1", product: "Demo Suite", feature: "demo", seats: seats, notAfter: notAfter,
            issuedTo: ["TS-A", "TS-B"], issuedAt: "2026-11-29", keyId: ""))
}

@Suite struct Licensing {
    @Test func signedLicenseVerifies() throws {
        let key = PrivateSigningKey()
        let doc = try sample(key)
        let back = try TrustedKeys([key.publicKey]).verify(doc.text)
        #expect(back == doc)
        #expect(back.license().issuedTo == ["TS-A", "TS-B"])
        #expect(back.license().seats == 5)
    }

    @Test func tamperingIsDetected() throws {
        let key = PrivateSigningKey()
        let text = try sample(key).text.replacingOccurrences(of: "Seats: 5", with: "Seats: 500")
        #expect(throws: TandemError.self) { try TrustedKeys([key.publicKey]).verify(text) }
        do { _ = try TrustedKeys([key.publicKey]).verify(text) } catch { #expect(error.code == .invalidLicense) }
    }

    @Test func untrustedKeyIsRefused() throws {
        let text = try sample(PrivateSigningKey()).text
        do {
            _ = try TrustedKeys([PrivateSigningKey().publicKey]).verify(text)
            Issue.record("accepted a license from an untrusted key")
        } catch { #expect(error.code == .invalidLicense) }
    }

    @Test(arguments: [
        "", "garbage", "Tandem-License: 2\n", "Tandem-License: 1\nId: X\n",
        "Tandem-License: 1\nId: X\nProduct: P\nFeature: f\nSeats: 0\nIssued-To: S\nIssued-At: d\nKey-Id: "
            + "k\nSignature: AAAA\n"
    ])
    func malformedDocumentsAreInvalid(_ text: String) {
        do {
            _ = try LicenseDocument.parse(text)
            Issue.record("parsed \(text)")
        } catch { #expect(error.code == .invalidLicense) }
    }

    @Test func crlfAndBlankLinesAreTolerated() throws {
        let key = PrivateSigningKey()
        let text = "\n\n" + (try sample(key).text).replacingOccurrences(of: "\n", with: "\r\n") + "\n\n"
        #expect(try TrustedKeys([key.publicKey]).verify(text).id == "LIC-1")
    }

    /// One canonical form: a signature that decodes to the same bytes from another text (unused
    /// bits set, padding changed), a blank line between fields, or a space too many is refused.
    @Test func onlyTheCanonicalFormIsAccepted() throws {
        let key = PrivateSigningKey()
        let text = try sample(key).text
        let trusted = TrustedKeys([key.publicKey])
        #expect(try trusted.verify(text).id == "LIC-1")
        let signature = String(text.split(separator: "\n").last!.dropFirst("Signature: ".count))
        // 64 bytes are 86 base64 digits and "==": the last digit carries 4 unused bits.
        let digits = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        let last = signature.index(signature.endIndex, offsetBy: -3)
        let value = digits.firstIndex(of: signature[last])!
        var unusedBits = signature
        unusedBits.replaceSubrange(last...last, with: String(digits[value ^ 1]))
        #expect(Data(base64Encoded: unusedBits) == Data(base64Encoded: signature), "the decoder forgives it")
        let variants = [
            text.replacingOccurrences(of: signature, with: unusedBits),
            text.replacingOccurrences(of: "Feature: demo\n", with: "Feature: demo\n\n"),
            text.replacingOccurrences(of: "Seats: ", with: "Seats:  "),
            text.replacingOccurrences(of: "Demo Suite\n", with: "Demo Suite \n")
        ]
        for variant in variants {
            do {
                _ = try trusted.verify(variant)
                Issue.record("accepted \(variant)")
            } catch { #expect(error.code == .invalidLicense, "\(variant)") }
        }
    }

    @Test func notAfterIsTheEndOfThatDayUTC() throws {
        let doc = try sample(PrivateSigningKey(), notAfter: "1970-01-02")
        #expect(doc.notAfterUSec == 2 * 86_400 * 1_000_000 - 1)
        #expect(LicenseDocument.parseDay("2027-02-29") == nil)
        #expect(LicenseDocument.parseDay("2028-02-29") != nil)
        #expect(LicenseDocument.formatDay(usec: 1_800_000_000_000_000) == "2027-01-15")
        #expect(try sample(PrivateSigningKey(), notAfter: nil).notAfterUSec == 0)
    }

    @Test func keyFilesRoundTrip() throws {
        let key = PrivateSigningKey()
        let back = try PrivateSigningKey.parse(key.fileText)
        #expect(back.publicKey.keyId == key.publicKey.keyId)
        #expect(try PublicSigningKey.parse(key.publicKey.fileText).keyId == key.publicKey.keyId)
        #expect(throws: (any Error).self) { try PublicSigningKey.parse("ssh-rsa AAAA") }
    }
}

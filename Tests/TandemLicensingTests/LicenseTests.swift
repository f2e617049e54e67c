import Foundation
import Testing
import TandemCore
@testable import TandemLicensing

func sample(_ key: VendorPrivateKey, seats: UInt32 = 5, notAfter: String? = "2030-01-31") throws -> LicenseDocument {
    try key.sign(
        LicenseDocument(
            id: "LIC-1", product: "Demo Suite", feature: "demo", seats: seats, notAfter: notAfter,
            issuedTo: ["TS-A", "TS-B"], issuedAt: "2026-11-29", keyId: ""))
}

@Suite struct Licensing {
    @Test func signedLicenseVerifies() throws {
        let key = VendorPrivateKey()
        let doc = try sample(key)
        let back = try TrustedKeys([key.publicKey]).verify(doc.text)
        #expect(back == doc)
        #expect(back.license().issuedTo == ["TS-A", "TS-B"])
        #expect(back.license().seats == 5)
    }

    @Test func tamperingIsDetected() throws {
        let key = VendorPrivateKey()
        let text = try sample(key).text.replacingOccurrences(of: "Seats: 5", with: "Seats: 500")
        #expect(throws: TandemError.self) { try TrustedKeys([key.publicKey]).verify(text) }
        do { _ = try TrustedKeys([key.publicKey]).verify(text) } catch { #expect(error.code == .invalidLicense) }
    }

    @Test func untrustedKeyIsRefused() throws {
        let text = try sample(VendorPrivateKey()).text
        do {
            _ = try TrustedKeys([VendorPrivateKey().publicKey]).verify(text)
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
        let key = VendorPrivateKey()
        let text = "\n\n" + (try sample(key).text).replacingOccurrences(of: "\n", with: "\r\n") + "\n\n"
        #expect(try TrustedKeys([key.publicKey]).verify(text).id == "LIC-1")
    }

    @Test func notAfterIsTheEndOfThatDayUTC() throws {
        let doc = try sample(VendorPrivateKey(), notAfter: "1970-01-02")
        #expect(doc.notAfterUSec == 2 * 86_400 * 1_000_000 - 1)
        #expect(LicenseDocument.parseDay("2027-02-29") == nil)
        #expect(LicenseDocument.parseDay("2028-02-29") != nil)
        #expect(LicenseDocument.formatDay(usec: 1_800_000_000_000_000) == "2027-01-15")
        #expect(try sample(VendorPrivateKey(), notAfter: nil).notAfterUSec == 0)
    }

    @Test func keyFilesRoundTrip() throws {
        let key = VendorPrivateKey()
        let back = try VendorPrivateKey.parse(key.fileText)
        #expect(back.publicKey.keyId == key.publicKey.keyId)
        #expect(try VendorPublicKey.parse(key.publicKey.fileText).keyId == key.publicKey.keyId)
        #expect(throws: (any Error).self) { try VendorPublicKey.parse("ssh-rsa AAAA") }
    }
}

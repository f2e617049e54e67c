import Foundation
import Testing
import TandemCore
import TandemLicensing

/// Borrow certificates: signed by the pair's key (the same key from the same pair secret),
/// verified offline on the borrowing machine only, until their end, and not after an edit.
@Suite struct BorrowCertificates {
    static let machine = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    static let other = "0123456789abcdef0123456789abcdef"
    let now: USec = 1_800_000_000 * usecPerSecond

    func lease() -> Lease {
        var l = Lease(
            id: "lease-0011223344556677", feature: "cad", client: "alice@laptop", count: 2, uid: nil,
            holder: Holder(user: "alice", host: "laptop-7"), requestId: "r", acquiredUSec: now + 123,
            expiresUSec: now + 7 * 86_400 * usecPerSecond + 999_999, ttlUSec: 7 * 86_400 * usecPerSecond, epoch: 3)
        l.machineId = Self.machine
        return l
    }

    @Test func bothNodesOfAPairSignWithOneKey() {
        let secret = (0..<32).map { UInt8($0) }
        let a = BorrowSigner(pairSecret: secret), b = BorrowSigner(pairSecret: secret)
        #expect(a.publicKey.text == b.publicKey.text)
        #expect(BorrowSigner(pairSecret: secret.reversed()).publicKey.text != a.publicKey.text)
        let cert = a.certificate(for: lease())
        #expect(throws: Never.self) { try cert.verify(key: b.publicKey, machineId: Self.machine, now: now) }
    }

    @Test func verifiesOnItsMachineUntilItsEnd() throws {
        let signer = BorrowSigner(PrivateSigningKey())
        let text = signer.certificate(for: lease()).text
        let cert = try BorrowCertificate(text: text)
        #expect(cert.text == text, "read back as written")
        #expect(text.contains("Machine-Id: \(Self.machine)\n") && text.contains("User: alice\n"))
        // Whole seconds, never after the lease's own end.
        #expect(cert.notAfterUSec == now + 7 * 86_400 * usecPerSecond && cert.notAfterUSec <= lease().expiresUSec)
        try cert.verify(key: signer.publicKey, machineId: Self.machine, now: cert.notAfterUSec - 1)
        #expect(throws: BorrowCheckError.self) {
            try cert.verify(key: signer.publicKey, machineId: Self.other, now: now)
        }
        do {
            try cert.verify(key: signer.publicKey, machineId: Self.machine, now: cert.notAfterUSec)
            Issue.record("verified at its end")
        } catch { #expect(error.description.contains("ended at 2027-")) }
        // A clock set back to before the borrow was issued (beyond an hour's slack) does not pass.
        try cert.verify(key: signer.publicKey, machineId: Self.machine, now: cert.issuedUSec - 3_000 * usecPerSecond)
        #expect(throws: BorrowCheckError.self) {
            try cert.verify(
                key: signer.publicKey, machineId: Self.machine, now: cert.issuedUSec - 3_700 * usecPerSecond)
        }
        // Another key, an edited line, a copied machine id: none verifies.
        let stranger = BorrowSigner(PrivateSigningKey()).publicKey
        #expect(throws: BorrowCheckError.self) { try cert.verify(key: stranger, machineId: Self.machine, now: now) }
        for (from, to) in [("Seats: 2", "Seats: 9"), ("Machine-Id: \(Self.machine)", "Machine-Id: \(Self.other)")] {
            let edited = try BorrowCertificate(text: text.replacingOccurrences(of: from, with: to))
            #expect(throws: BorrowCheckError.badSignature("the signature does not match: the certificate was altered"))
            {
                try edited.verify(key: signer.publicKey, machineId: edited.machineId, now: now)
            }
        }
        let later = text.replacingOccurrences(of: "Not-After: 2027-", with: "Not-After: 2028-")
        #expect(throws: BorrowCheckError.self) {
            try BorrowCertificate(text: later).verify(key: signer.publicKey, machineId: Self.machine, now: now)
        }
    }

    @Test func malformedTextIsRefused() {
        let text = BorrowSigner(PrivateSigningKey()).certificate(for: lease()).text
        for bad in [
            "", "Tandem-Borrow: 2\n", String(text.dropLast(20)), text + "Extra: 1\n",
            text.replacingOccurrences(of: "Seats: 2", with: "Seats: two"),
            text.replacingOccurrences(of: "Not-After: 2027-", with: "Not-After: 27-")
        ] {
            #expect(throws: BorrowCheckError.self) { try BorrowCertificate(text: bad) }
        }
        #expect(throws: Never.self) { try BorrowCertificate(text: text.replacingOccurrences(of: "\n", with: "\r\n")) }
    }

    @Test func instantsReadBack() {
        for t: USec in [0, 1_800_000_000 * usecPerSecond, 253_402_300_799 * usecPerSecond] {
            #expect(CivilDate.parseInstant(CivilDate.formatInstant(usec: t)) == t)
        }
        for bad in ["2026-12-07T24:00:00Z", "2026-12-07 10:00:00Z", "2026-02-30T10:00:00Z", "2026-12-07T10:00:00"] {
            #expect(CivilDate.parseInstant(bad) == nil, "\(bad)")
        }
    }
}

import Foundation
import TandemSystemd
import TandemTesting
import Testing

@Suite struct SecretFileTests {
    // The service runs as uid 500, gid 600 in these cases.
    func loose(_ mode: mode_t, owner: uid_t = 500, group: gid_t = 600) -> String? {
        SecretFile.looseness(mode: mode, owner: owner, group: group, uid: 500, gid: 600)
    }

    @Test func privateFilesAreTaken() {
        #expect(loose(0o600) == nil)
        #expect(loose(0o400) == nil)
        #expect(loose(0o600, owner: 0) == nil)
        #expect(loose(0o640, owner: 0, group: 600) == nil)  // root:tandem 0640
        #expect(loose(0o440, owner: 0, group: 600) == nil)
    }

    @Test func filesOthersMayReadOrChangeAreRefused() {
        for mode: mode_t in [0o644, 0o604, 0o602, 0o601, 0o666] {
            #expect(loose(mode)?.contains("other users") == true, "\(String(mode, radix: 8))")
        }
        #expect(loose(0o640, group: 100)?.contains("group 100 may read it") == true)
        #expect(loose(0o620, group: 600)?.contains("its group may change") == true)
        #expect(loose(0o610, group: 600) != nil)
        #expect(loose(0o600, owner: 501)?.contains("another user") == true)
    }

    @Test func checkNamesTheSettingThePathAndTheMode() throws {
        let path = makeTempDir("secret") + "/key"
        try "x".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        #expect {
            try SecretFile.check(path, setting: "TLSKey")
        } throws: { error in
            "\(error)".hasPrefix("TLSKey=\(path): mode 644, owner \(geteuid()), group \(getegid()): other users")
        }
        chmod(path, 0o600)
        try SecretFile.check(path, setting: "TLSKey")
        #expect(throws: ServiceError.self) { try SecretFile.check(path + ".missing", setting: "TLSKey") }
    }
}

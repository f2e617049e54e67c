import CSystemd
import Foundation
import TandemSystemd
import TandemTesting
import Testing

@Suite struct SecretFileTests {
    // The service runs as uid 500, gid 600 in these cases.
    func loose(
        _ mode: mode_t, owner: uid_t = 500, group: gid_t = 600, acl: [SecretFile.ACLEntry]? = nil
    ) -> String? {
        SecretFile.looseness(mode: mode, owner: owner, group: group, acl: acl, uid: 500, gid: 600)
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

    /// How systemd hands over a LoadCredential= file to a DynamicUser= service: root-owned, 0400,
    /// and an ACL entry for the service's user (the mode's group bits show the ACL's mask).
    @Test func aCredentialWithAnACLForTheServiceIsTaken() {
        let acl: [SecretFile.ACLEntry] = [
            .init(.userObj, 4), .init(.user, 4, id: 500), .init(.groupObj, 0), .init(.mask, 4), .init(.other, 0)
        ]
        #expect(loose(0o440, owner: 0, group: 0, acl: acl) == nil)
    }

    /// Mode 0640 and the service's group look private, but an ACL entry may give someone else read.
    @Test func anACLEntryForAnotherUserOrGroupIsRefused() {
        let eve: [SecretFile.ACLEntry] = [
            .init(.userObj, 6), .init(.user, 4, id: 777), .init(.groupObj, 0), .init(.mask, 4), .init(.other, 0)
        ]
        #expect(loose(0o640, acl: eve)?.contains("user 777") == true)
        let staff: [SecretFile.ACLEntry] = [
            .init(.userObj, 6), .init(.groupObj, 0), .init(.group, 4, id: 50), .init(.mask, 4), .init(.other, 0)
        ]
        #expect(loose(0o640, acl: staff)?.contains("group 50") == true)
        // An entry the mask silences gives nothing.
        let masked: [SecretFile.ACLEntry] = [
            .init(.userObj, 6), .init(.user, 4, id: 777), .init(.groupObj, 0), .init(.mask, 0), .init(.other, 0)
        ]
        #expect(loose(0o600, acl: masked) == nil)
    }

    @Test func theKernelsACLFormIsRead() {
        // version 2; user_obj rw-; user 1000 r--; group_obj ---; mask r--; other ---
        let bytes: [UInt8] = [
            2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 232, 3, 0, 0, 4, 0, 0, 0, 255, 255, 255, 255,
            16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255
        ]
        let acl = SecretFile.parseACL(bytes)
        #expect(acl?.count == 5)
        #expect(acl?[1] == SecretFile.ACLEntry(.user, 4, id: 1000))
        #expect(SecretFile.parseACL([1, 0, 0, 0]) == nil)
        #expect(SecretFile.parseACL([2, 0, 0, 0, 1]) == nil)
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
        // An ACL entry for another user, set on the file itself, is seen (where the file
        // system keeps ACLs).
        let eve: [UInt8] = [
            2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 9, 3, 0, 0, 4, 0, 0, 0, 255, 255, 255, 255,
            16, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255, 255
        ]
        if setxattr(path, "system.posix_acl_access", eve, eve.count, 0) == 0 {
            #expect {
                try SecretFile.check(path, setting: "TLSKey")
            } throws: { "\($0)".contains("with an ACL") && "\($0)".contains("user 777") }
        }
        #expect(throws: ServiceError.self) { try SecretFile.check(path + ".missing", setting: "TLSKey") }
    }
}

import Foundation
import TandemConfig
import TandemLicensing
import TandemPeer
import TandemSystemd

extension Daemon {
    /// The standalone server's borrow signing key, in its state directory.
    static let borrowKeyFileName = "borrow-signing.key"

    /// The key that signs borrow certificates. Paired (`KeyFile=` set): derived from the pair
    /// key, the same on both nodes. Standalone: a key of its own, made at the first start
    /// (`ed25519-private`, mode 0600). Pairing a standalone server changes its borrow key: the
    /// clients learn the pair's (`tandemctl client configure`), and a certificate signed before
    /// verifies only against the old key, so borrows are returned before that.
    static func borrowSigner(_ config: DaemonConfig, stateDir: String) throws -> BorrowSigner {
        if let keyFile = config.pair.keyFile {
            try SecretFile.check(keyFile, setting: "KeyFile")
            do { return BorrowSigner(pairSecret: try PairKey.load(path: keyFile).secret) } catch {
                throw ServiceError("KeyFile=\(keyFile): \(error)")
            }
        }
        let path = (stateDir as NSString).appendingPathComponent(borrowKeyFileName)
        if !FileManager.default.fileExists(atPath: path) { try writeNewKey(path) }
        try SecretFile.check(path, setting: "the borrow key file")
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ServiceError("\(path): cannot read")
        }
        do { return BorrowSigner(try PrivateSigningKey.parse(text)) } catch {
            throw ServiceError("\(path): \(error)")
        }
    }

    /// A new key, whole or not at all: written to a temporary file, made durable, renamed into
    /// place, and the directory made durable (a crash never leaves a half-written key).
    private static func writeNewKey(_ path: String) throws {
        let temporary = path + ".new"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServiceError("\(temporary): \(String(cString: strerror(errno)))") }
        let text = Array(PrivateSigningKey().fileText.utf8)
        let written = write(fd, text, text.count) == text.count && fsync(fd) == 0
        close(fd)
        guard written, rename(temporary, path) == 0 else {
            throw ServiceError("\(path): \(String(cString: strerror(errno)))")
        }
        let dir = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }
}

import Foundation

// Helpers shared by Tandem's test targets (the way HummingbirdTesting serves Hummingbird's).

/// A new, empty directory under the system's temporary directory, named after `tag`, that other
/// uids may enter (tests run processes as `nobody` that must reach sockets inside it).
public func makeTempDir(_ tag: String) -> String {
    var template = Array((NSTemporaryDirectory() + "tandem-\(tag)-XXXXXX").utf8CString)
    let path = template.withUnsafeMutableBufferPointer { buf -> String in
        guard let made = mkdtemp(buf.baseAddress!) else { fatalError("mkdtemp: \(String(cString: strerror(errno)))") }
        return String(cString: made)
    }
    chmod(path, 0o755)
    return path
}

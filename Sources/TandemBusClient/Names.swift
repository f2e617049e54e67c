import CSystemd
import Foundation

/// The names of Tandem's D-Bus API.
public enum BusNames {
    public static let service = "org.tandem.LicenseManager1"
    public static let rootPath = "/org/tandem/LicenseManager1"
    public static let licensePrefix = "/org/tandem/LicenseManager1/license"
    public static let managerInterface = "org.tandem.LicenseManager1.Manager"
    public static let licenseInterface = "org.tandem.LicenseManager1.License"
    public static let propertiesInterface = "org.freedesktop.DBus.Properties"
    public static let objectManagerInterface = "org.freedesktop.DBus.ObjectManager"

    /// The object path of license `id` (escaped as `sd_bus_path_encode()` does).
    public static func licensePath(_ id: String) -> String {
        var out: UnsafeMutablePointer<CChar>?
        guard sd_bus_path_encode(licensePrefix, id, &out) >= 0, let out else { return licensePrefix }
        defer { free(out) }
        return String(cString: out)
    }

    /// The license id of an object path under `licensePrefix`, if it is one.
    public static func licenseId(fromPath path: UnsafePointer<CChar>) -> String? {
        var out: UnsafeMutablePointer<CChar>?
        guard sd_bus_path_decode(path, licensePrefix, &out) > 0, let out else { return nil }
        defer { free(out) }
        return String(cString: out)
    }
}

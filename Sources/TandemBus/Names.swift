/// The names of Tandem's D-Bus API.
public enum BusNames {
    public static let service = "org.tandem.LicenseManager1"
    public static let rootPath = "/org/tandem/LicenseManager1"
    public static let licensePrefix = "/org/tandem/LicenseManager1/license"
    public static let managerInterface = "org.tandem.LicenseManager1.Manager"
    public static let licenseInterface = "org.tandem.LicenseManager1.License"
    public static let propertiesInterface = "org.freedesktop.DBus.Properties"
    public static let objectManagerInterface = "org.freedesktop.DBus.ObjectManager"
}

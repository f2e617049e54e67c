import Foundation
import TandemTesting
import Testing
@testable import TandemConfig
@testable import TandemDaemon
import TandemPair

func parse(_ text: String) throws(ConfigError) -> DaemonConfig {
    var ini = IniFile()
    try ini.parse(text, file: "t.conf")
    return try DaemonConfig.parse(ini)
}

@Suite struct ConfigTests {
    @Test func defaults() throws {
        let c = try parse("")
        #expect(c.adminGroup == "tandem-admin")
        #expect(c.defaultLeaseSec == 300)
        #expect(c.maxLeaseSec == 86_400)
        #expect(c.vendorKeys == nil)
    }

    @Test func historyDaysAndPolicyAreRead() throws {
        #expect(try parse("").historyDays == 400 && parse("").policy == "/etc/tandem/policy.conf")
        let c = try parse("[Server]\nHistoryDays=30\nPolicy=/srv/tandem/site.conf\n")
        #expect(c.historyDays == 30 && c.policy == "/srv/tandem/site.conf")
        #expect(PolicyFile.dropins(of: c.policy) == "/srv/tandem/site.d")
        for bad in ["HistoryDays=0", "HistoryDays=36501", "HistoryDays=a year", "Policy=site.conf"] {
            #expect(throws: ConfigError.self, "\(bad)") { try parse("[Server]\n\(bad)\n") }
        }
    }

    @Test func connectionLimitsAreRead() throws {
        let c = try parse(
            "[Server]\nMaxConnections=500\nMaxConnectionsPerAddress=50\nIdleTimeoutSec=5\nRequestTimeoutSec=3s\n")
        #expect(c.connectionLimits == ConnectionLimits(total: 500, perAddress: 50, idleTimeoutSec: 5))
        #expect(c.requestTimeoutSec == 3)
        #expect(try parse("").connectionLimits == ConnectionLimits(total: 4096, perAddress: 1024, idleTimeoutSec: 30))
    }

    @Test func keysAreRead() throws {
        let c = try parse(
            "# comment\n[Server]\nVendorKeys=/etc/tandem/keys\nAdminGroup=wheel\nDefaultLeaseSec=60\nMaxLeaseSec=600s\n"
        )
        #expect(
            c
                == {
                    var d = DaemonConfig()
                    d.vendorKeys = "/etc/tandem/keys"
                    d.adminGroup = "wheel"
                    d.defaultLeaseSec = 60
                    d.maxLeaseSec = 600
                    return d
                }())
    }

    @Test(arguments: [
        ("[Server]\nBogus=1\n", 2, "unknown key"),
        ("[Server]\nDefaultLeaseSec=soon\n", 2, "DefaultLeaseSec"),
        ("[Server]\n\nMaxLeaseSec=0\n", 3, "MaxLeaseSec"),
        ("Key=1\n", 1, "outside of a section"),
        ("[Nope]\nX=1\n", 2, "unknown section"),
        ("[Server\n", 1, "malformed section"),
        ("[Server]\njunk\n", 2, "Key=Value"),
        ("[Server]\nVendorKeys=relative/path\n", 2, "absolute"),
        ("[Server]\nDefaultLeaseSec=100\nMaxLeaseSec=50\n", 3, "larger than"),
        ("[Pair]\nPartitionPolicy=majority\n", 2, "'takeover' or 'split'"),
        ("[Pair]\nSplitPrimaryPercent=101\n", 2, "from 0 to 100"),
        ("[Server]\nMaxConnections=0\n", 2, "MaxConnections="),
        ("[Server]\nMaxConnections=100\nMaxConnectionsPerAddress=200\n", 3, "must not exceed"),
        ("[Server]\nIdleTimeoutSec=never\n", 2, "IdleTimeoutSec=")
    ])
    func badConfigNamesFileLineAndReason(_ input: (String, Int, String)) {
        do {
            _ = try parse(input.0)
            Issue.record("accepted \(input.0)")
        } catch {
            #expect(error.file == "t.conf")
            #expect(error.line == input.1)
            #expect(error.description.contains(input.2), "\(error)")
            #expect(error.description.hasPrefix("t.conf:\(input.1): "))
        }
    }

    @Test func partitionModeFollowsWitnessAndPolicy() throws {
        #expect(try parse("").pair.partitionMode == .takeover)
        #expect(
            try parse("[Pair]\nPartitionPolicy=split\nSplitPrimaryPercent=70\n").pair.partitionMode
                == .split(primaryPercent: 70))
        #expect(try parse("[Pair]\nPartitionPolicy=split\n").pair.partitionMode == .split(primaryPercent: 50))
        #expect(try parse("[Pair]\nPartitionPolicy=split\nWitness=w.example:7392\n").pair.partitionMode == .witness)
    }

    @Test func dropInsOverrideInOrder() throws {
        let dir = makeTempDir("conf")
        try FileManager.default.createDirectory(atPath: dir + "/tandemd.conf.d", withIntermediateDirectories: true)
        try "[Server]\nDefaultLeaseSec=10\n".write(toFile: dir + "/tandemd.conf", atomically: true, encoding: .utf8)
        try "[Server]\nDefaultLeaseSec=20\n".write(
            toFile: dir + "/tandemd.conf.d/10-a.conf", atomically: true, encoding: .utf8)
        try "[Server]\nDefaultLeaseSec=30\n".write(
            toFile: dir + "/tandemd.conf.d/20-b.conf", atomically: true, encoding: .utf8)
        try "[Server]\nDefaultLeaseSec=99\n".write(
            toFile: dir + "/tandemd.conf.d/30-ignored.txt", atomically: true, encoding: .utf8)
        #expect(try DaemonConfig.load(path: dir + "/tandemd.conf", required: true).defaultLeaseSec == 30)
        #expect(throws: ConfigError.self) { try DaemonConfig.load(path: dir + "/missing.conf", required: true) }
    }

    @Test func commandLine() throws {
        let command = try TandemdCommand.parse([
            "--config", "/x.conf", "--state-dir", "/s", "--user", "--log-level", "debug"
        ])
        let o = command.options, level = command.logLevel
        #expect(o.configPath == "/x.conf" && o.configGiven && o.stateDir == "/s" && o.userBus && level == .debug)
        #expect(throws: (any Error).self) { try TandemdCommand.parse(["--bogus"]) }
        #expect(throws: (any Error).self) { try TandemdCommand.parse(["--config"]) }
        #expect(throws: (any Error).self) { try TandemdCommand.parse(["--log-level", "loud"]) }
    }
}

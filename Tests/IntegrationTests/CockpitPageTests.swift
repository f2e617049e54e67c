import Foundation
import TandemBusClient
import TandemCore
import TandemTesting
import Testing

/// The License Manager page (cockpit/tandem) in a real headless Chromium, served by Cockpit's own
/// cockpit-ws and bridge on a test pair's private bus: what an administrator sees and does.
@Suite(.serialized) struct CockpitPage {
    static let ready = "document.body.dataset.ready === 'true' && document.body.dataset.connected === 'true'"

    /// cockpit-ws for `bus` (as `uid`, root by default) and a browser showing its page.
    static func open(_ bus: TestBus, uid: UInt32? = nil) throws -> (CockpitWS, Browser) {
        let ws = try CockpitWS(bus: bus, uid: uid)
        let browser = try Browser()
        try browser.open(ws.pageURL)
        do {
            try browser.wait("the page to reach tandemd", Self.ready)
        } catch {
            browser.screenshot("not-ready")
            throw TestFailure("\(error); cockpit-ws: \(ws.log())")
        }
        return (ws, browser)
    }

    static func tile(_ id: String, _ key: String) -> String {
        "document.querySelector('#\(id)')?.dataset.\(key)"
    }

    /// The text of a tile's field (`server-id`, `role`, `serving`, ...).
    static func field(_ b: Browser, _ tile: String, _ field: String) throws -> String {
        try b.text("#\(tile) dd[data-field='\(field)']")
    }

    /// Clicks a button the page disabled, as a user who works around the page would.
    static func force(_ b: Browser, _ css: String) throws {
        try b.script("document.querySelector(arguments[0]).disabled = false;", [css])
        try b.click(css)
    }

    static func confirm(_ b: Browser) throws {
        try b.wait("the confirmation", "document.querySelector('#confirm').open")
        try b.click("#confirm-yes")
    }

    /// Waits for the alert of a refused call with this D-Bus error name; returns its text.
    static func refusal(_ b: Browser, _ name: String) throws -> String {
        let css = "#alerts .alert-danger[data-error-name='\(name)']"
        do {
            try b.wait("the refusal \(name)", "document.querySelector(\"\(css)\")")
        } catch {
            b.screenshot("no-refusal")
            throw TestFailure("\(error); the alerts say: \(try b.text("#alerts"))")
        }
        let text = try b.text(css)
        try b.click(css + " button")  // dismissed, as a user would
        return text
    }

    @Test func tilesFollowAFailoverAndTheReturnWithoutAReload() throws {
        let f = try PairFixture(heartbeat: "0.2", failover: "1").formed(seats: 5)
        // The backup's License Manager: it stays up while the primary dies.
        let (ws, b) = try Self.open(f.busB)
        _ = ws
        try b.wait(
            "both tiles paired-and-available",
            "\(Self.tile("tile-local", "pairStatus")) === 'paired-and-available'"
                + " && \(Self.tile("tile-peer", "pairStatus")) === 'paired-and-available'")
        #expect(try Self.field(b, "tile-local", "server-id") == f.b.serverId)
        #expect(try Self.field(b, "tile-peer", "server-id") == f.a.serverId)
        #expect(try Self.field(b, "tile-local", "role") == "Backup" && Self.field(b, "tile-peer", "role") == "Primary")
        #expect(try Self.field(b, "tile-local", "pair-status") == "Paired and Available")
        #expect(try Self.field(b, "tile-peer", "serving") == "Yes" && Self.field(b, "tile-local", "serving") == "No")
        #expect(try b.text("#pair-info").contains("Partition policy: witness"))
        // Server Details: every Manager property, the replication lag and rejected frames among them.
        for property in ["ReplicationLag", "RejectedFrames", "ListenAddresses", "WitnessStatus", "PartitionPolicy"] {
            #expect(try b.text("#details dd[data-property='\(property)']") != "", "\(property)")
        }
        #expect(try b.text("#details dd[data-property='RejectedFrames']").contains("unauthenticated 0"))
        b.screenshot("servers-paired")
        try b.script("window.tandemSamePage = true;")

        let killed = Date()
        _ = f.a.stop(SIGKILL)
        // FailoverTimeoutSec=1, + 2 s.
        try b.wait(
            "the backup's tile to say Primary not available and Serving", seconds: 3,
            "\(Self.tile("tile-local", "pairStatus")) === 'primary-not-available'"
                + " && \(Self.tile("tile-local", "serving")) === 'true'")
        let seen = Date().timeIntervalSince(killed)
        #expect(try Self.field(b, "tile-local", "pair-status") == "Primary not available")
        try b.wait("the primary's tile to say it is gone", "\(Self.tile("tile-peer", "status")) === 'disconnected'")
        #expect(try Self.field(b, "tile-peer", "status") == "Disconnected")
        // As the tech note's tiles: the stopped server's row says the pair's status, not its last report.
        #expect(try Self.field(b, "tile-peer", "pair-status") == "Primary not available")
        #expect(try Self.field(b, "tile-peer", "serving") == "—")
        b.screenshot("servers-primary-not-available")

        try f.a.start()
        try b.wait(
            "Paired and Available again", seconds: 30,
            "\(Self.tile("tile-local", "pairStatus")) === 'paired-and-available'"
                + " && \(Self.tile("tile-peer", "pairStatus")) === 'paired-and-available'")
        // The changes the page saw, oldest first: Recovering came before Paired and Available.
        let seenStatuses =
            try b.script(
                "return [...document.querySelectorAll(\"#status-log li[data-what='Pair Status']\")]"
                    + ".map(li => li.dataset.value).reverse();") as? [String] ?? []
        #expect(seenStatuses.first == "primary-not-available", "\(seenStatuses)")
        let recovering = seenStatuses.firstIndex(of: "recovering")
        #expect(recovering != nil && seenStatuses.last == "paired-and-available", "\(seenStatuses)")
        #expect(try b.script("return window.tandemSamePage === true;") as? Bool == true, "the page was reloaded")
        b.screenshot("servers-recovered")
        print("cockpit page: Primary not available shown \(String(format: "%.2f", seen)) s after kill -9")
    }

    @Test func aLicenseActivatedByFileUploadIsOnBothNodes() throws {
        let f = try PairFixture().formed(seats: nil)
        let file = makeTempDir("upload") + "/cad.lic"
        try f.vendor.issue(to: [try f.a.serverId, try f.b.serverId], seats: 7, id: "UPLOADED-CAD")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let (ws, b) = try Self.open(f.busA)
        _ = ws
        try b.click("#tab-licenses")
        #expect(try b.script("return document.querySelector('#activate').disabled;") as? Bool == true)
        try b.type("#license-file", file)
        try b.wait("the license text to be read", "!document.querySelector('#activate').disabled")
        try b.click("#activate")
        try b.wait(
            "the license in the list", "document.querySelector(\"#licenses-table tr[data-license-id='UPLOADED-CAD']\")")
        #expect(try b.text("#licenses-table tr[data-license-id='UPLOADED-CAD']").contains("7"))
        b.screenshot("licenses")
        let peer = try f.b.client()
        try waitFor("the license on the backup", seconds: 5) {
            listRows(try peer.call("ListLicenses")).contains { $0[0].stringValue == "UPLOADED-CAD" }
        }
    }

    @Test func acquisitionsShowInUsageDetailsAndARevokeFreesTheSeat() throws {
        let f = try PairFixture().formed(seats: 5)
        let base = "http://" + (try f.a.httpAddress)
        let (ws, b) = try Self.open(f.busA)
        _ = ws
        try b.click("#tab-usage")
        for (client, count, user) in [("web-1", 2, "ann"), ("web-2", 1, "bob")] {
            let r = try http(
                "POST", base + "/v1/leases",
                body:
                    #"{"feature":"cad","count":\#(count),"client":"\#(client)","user":"\#(user)","host":"h-\#(user)"}"#)
            #expect(r.status == 201, "\(r.body)")
        }
        let inUse = "document.querySelector(\"#features-table tr[data-feature='cad']\")?.cells[2].textContent"
        try b.wait("3 seats in use", "\(inUse) === '3'")
        try b.wait("both holders", "document.querySelectorAll('#holders-table tr[data-client]').length === 2")
        #expect(try b.text("#holders-table tr[data-client='web-1']").contains("ann"))
        #expect(try b.text("#holders-table tr[data-client='web-2']").contains("h-bob"))
        try b.wait("the chart's peak", "document.querySelector('#chart-summary').dataset.peak === '3'")
        #expect(try b.script("return document.querySelector('#usage-chart').width > 0;") as? Bool == true)
        b.screenshot("usage-details")

        try b.click("#holders-table tr[data-client='web-1'] button")
        try Self.confirm(b)
        try b.wait("the revoked seats freed", "\(inUse) === '1'")
        let c = try f.a.client()
        #expect(listRows(try c.call("GetUsage")).first?[2].uint64Value == 1)
        let sessions = try SessionRow.rows(
            c.call("ListSessions", [.uint64(0), .uint64(UInt64(Int64.max)), .vardict([("client", .string("web-1"))])]))
        #expect(sessions.map(\.ended) == ["revoked"], "\(sessions)")

        // A reservation added and removed through the form.
        try b.type("#reserve-holder", "build-farm")
        try b.script("document.querySelector('#reserve-count').value = '2';")
        try b.click("#reserve")
        try b.wait("the reservation", "document.querySelector('#reservations-table tr[data-reservation-id]')")
        #expect(try b.text("#reservations-table tr[data-reservation-id]").contains("build-farm"))
        #expect(listRows(try c.call("ListReservations")).first?[3].uint64Value == 2)
        try b.click("#reservations-table tr[data-reservation-id] button")
        try waitFor("the reservation removed", seconds: 5) { listRows(try c.call("ListReservations")).isEmpty }

        // The sessions of today as CSV: the page's download, caught as the Blob it hands the browser.
        let csv =
            try b.script(
                """
                window.tandemBlobs = [];
                const original = URL.createObjectURL;
                URL.createObjectURL = blob => { window.tandemBlobs.push(blob); return original(blob); };
                document.querySelector('#download-sessions').click();
                return new Promise(resolve => {
                    const poll = () => window.tandemBlobs.length ? window.tandemBlobs[0].text().then(resolve)
                        : setTimeout(poll, 50);
                    poll();
                });
                """) as? String ?? ""
        let lines = csv.split(separator: "\r\n").map(String.init)
        #expect(lines.first?.hasPrefix("lease_id,feature,client,count,user,host") == true, "\(csv)")
        #expect(lines.contains { $0.contains(",web-1,2,ann,h-ann,") && $0.contains(",revoked,") }, "\(csv)")
        #expect(lines.contains { $0.contains(",web-2,1,bob,h-bob,") && $0.contains(",held,") }, "\(csv)")
    }

    @Test func aUserWhoIsNotAnAdministratorSeesEverythingReadOnly() throws {
        let f = try PairFixture().formed(seats: 5)
        let c = try f.a.client()
        _ = try c.call("Acquire", [.string("cad"), .uint32(1), .string("ws-1"), .vardict([])])
        let (ws, b) = try Self.open(f.busA, uid: 65534)
        _ = ws
        try b.wait("the lease", "document.querySelector('#holders-table tr[data-client]')")
        try b.wait("the license", "document.querySelector('#licenses-table tr[data-license-id]')")
        #expect(try b.text("#access").contains("Read-only"))
        let actions = [
            "#prepare-backup", "#enable-backup", "#disable-backup", "#sync", "#reset-id", "#stop-server",
            "#start-server", "#restart-server", "#activate", "#reserve", "#holders-table button",
            "#licenses-table button"
        ]
        for css in actions {
            let state =
                try b.script(
                    "const e = document.querySelector(arguments[0]); return [e.disabled, e.title];", [css]) as? [Any]
            #expect(state?.first as? Bool == true, "\(css) is enabled")
            #expect(
                (state?.last as? String)?.contains("Only an administrator") == true,
                "\(css): \(String(describing: state))")
        }
        try b.click("#tab-licenses")
        b.screenshot("read-only")
        try Self.force(b, "#licenses-table button")
        try Self.confirm(b)
        let text = try Self.refusal(b, "org.freedesktop.DBus.Error.AccessDenied")
        #expect(text.contains("AccessDenied"), "\(text)")
        #expect(listRows(try c.call("ListLicenses")).count == 1)
        b.screenshot("access-denied")
    }

    /// On a standalone server holding a license with seats in use (the tech note's backup before
    /// it is reset).
    @Test func refusalsShowTheirReason() throws {
        let f = try Fixture()
        let c = try f.bus.client()
        _ = try c.call("Acquire", [.string("cad"), .uint32(2), .string("ws-1"), .vardict([])])
        let id = f.serverId
        let (ws, b) = try Self.open(f.bus)
        _ = ws
        try b.click("#open-manage")
        // The tech note's rule, as the reason the button is disabled, and tandemd's own refusal.
        #expect(try b.text("#reset-id-reason").contains("LicensesActive"))
        try Self.force(b, "#reset-id")
        try Self.confirm(b)
        let reset = try Self.refusal(b, "org.tandem.LicenseManager1.LicensesActive")
        #expect(reset.contains("Reset License Server ID refused: LicensesActive"), "\(reset)")
        b.screenshot("refused-reset")
        #expect(try f.daemon.serverId == id)
        // Without systemd on this bus, Stop says why rather than nothing.
        try b.click("#stop-server")
        try Self.confirm(b)
        try b.wait(
            "Stop's refusal",
            "[...document.querySelectorAll('#alerts .alert-danger')]"
                + ".some(a => a.textContent.includes('Stop License Server refused'))"
        )
        try b.click("#close-manage")
        try b.click("#tab-licenses")
        try b.wait("the license", "document.querySelector(\"#licenses-table tr[data-license-id='LIC-CAD'] button\")")
        try b.click("#licenses-table tr[data-license-id='LIC-CAD'] button")
        try Self.confirm(b)
        #expect(try Self.refusal(b, "org.tandem.LicenseManager1.LicenseInUse").contains("LicenseInUse"))
        #expect(listRows(try c.call("ListLicenses")).count == 1)
    }
}

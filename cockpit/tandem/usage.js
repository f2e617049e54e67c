/* global Chart */
// Usage Details: per feature seats, in use, reserved, available and denials, live; the usage
// series as a chart (peak in use, seats owned, denials marked); who holds what now (an
// administrator may revoke a lease); reservations; a CSV of the sessions of a range.
import { allow, byId, download, fill, h, table } from "./dom.js";
import { bucketLabel, csv, duration, plural, time } from "./format.js";
import { vardict } from "./manager.js";
import { access, act, confirmAction } from "./ui.js";

const MINUTE = 60e6, HOUR = 3600e6, DAY = 86400e6;
/** Each range with the step that gives it 60-365 bars. */
export const RANGES = {
    "1h": { span: HOUR, step: MINUTE },
    "24h": { span: DAY, step: 10 * MINUTE },
    "7d": { span: 7 * DAY, step: HOUR },
    "30d": { span: 30 * DAY, step: 6 * HOUR },
    "1y": { span: 365 * DAY, step: DAY },
};
// The newest sessions a CSV holds: 100000 rows stay well under the system bus's message size.
const SESSION_LIMIT = 100000;

function cssColor(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export class UsageView {
    constructor(manager) {
        this.manager = manager;
        this.usage = [];
        this.series = [];
        this.chart = null;
        this.pending = null;
        byId("chart-feature").addEventListener("change", () => this.refreshChart());
        byId("chart-range").addEventListener("change", () => this.refreshChart());
        byId("reserve-form").addEventListener("submit", e => { e.preventDefault(); this.reserve(); });
        byId("sessions-form").addEventListener("submit", e => { e.preventDefault(); this.downloadSessions(); });
        const today = new Date();
        const monthAgo = new Date(today.getTime() - 30 * DAY / 1000);
        byId("sessions-to").valueAsDate = today;
        byId("sessions-from").valueAsDate = monthAgo;
        manager.addEventListener("data", () => this.refresh());
        manager.addEventListener("properties", () => this.renderForms());
        window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.renderChart());
    }

    /** Refreshes everything, at most one refresh at a time (signals may come in bursts). */
    refresh() {
        if (this.pending) { this.again = true; return this.pending; }
        this.pending = this.load().finally(() => {
            this.pending = null;
            if (this.again) { this.again = false; this.refresh(); }
        });
        return this.pending;
    }

    async load() {
        const m = this.manager;
        const [usage, holders, reservations] = await Promise.all([
            m.call("GetUsage").then(r => r[0]).catch(() => []),
            m.call("ListLeaseHolders").then(r => r[0]).catch(() => []),
            m.call("ListReservations").then(r => r[0]).catch(() => []),
        ]);
        this.usage = usage;
        this.renderFeatures();
        this.renderHolders(holders);
        this.renderReservations(reservations);
        this.renderForms();
        await this.refreshChart();
    }

    featureOptions(select) {
        const current = select.value;
        const names = this.usage.map(r => r[0]);
        if (names.join() !== [...select.options].map(o => o.value).join())
            fill(select, names.map(n => h("option", { value: n }, n)));
        if (names.includes(current)) select.value = current;
    }

    renderFeatures() {
        const columns = [["Feature"], ["Seats", "num"], ["In use", "num"], ["Reserved", "num"], ["Available", "num"],
            ["Denials", "num"]];
        const rows = this.usage.map(([feature, seats, inUse, reserved, available, denied]) => ({
            attrs: { dataset: { feature } }, cells: [feature, seats, inUse, reserved, available, denied] }));
        fill(byId("features-table"), table("Usage per feature", columns, rows, "No license is active."));
        this.featureOptions(byId("chart-feature"));
        this.featureOptions(byId("reserve-feature"));
    }

    renderHolders(holders) {
        const now = Date.now() * 1000;
        const columns = [["Lease"], ["Feature"], ["Seats", "num"], ["Client"], ["User"], ["Host"], ["Since"],
            ["Expires"], [""]];
        const rows = holders.map(([id, feature, client, count, acquired, expires, user, host, token, uid]) => {
            const who = user || (token ? `token ${token}` : uid !== 4294967295 ? `uid ${uid}` : "—");
            const button = h("button", { class: "btn btn-danger btn-small", "aria-label": `Revoke lease ${id}` },
                "Revoke");
            allow(button, access.reason);
            button.addEventListener("click", async () => {
                if (await confirmAction("Revoke lease", `Revoke ${client}'s lease of ${count} ${feature} seat(s)? ` +
                    "The seats are free at once; the product finds out at its next renewal.", "Revoke"))
                    await act("Revoke lease", () => this.manager.call("Release", [id], "s"), "The lease is revoked.");
            });
            return { attrs: { dataset: { leaseId: id, client } },
                cells: [h("code", {}, id.slice(0, 12)), feature, count, client, who, host || "—",
                    `${time(acquired)} (${duration((now - acquired) / 1e6)})`, time(expires), button] };
        });
        fill(byId("holders-table"), table("Leases held now", columns, rows, "No seat is held."));
    }

    renderReservations(reservations) {
        const columns = [["Reservation"], ["Feature"], ["Holder"], ["Seats", "num"], [""]];
        const rows = reservations.map(([id, feature, holder, count]) => {
            const button = h("button", { class: "btn btn-small", "aria-label": `Remove reservation ${id}` }, "Remove");
            allow(button, access.reason);
            button.addEventListener("click", () => act("Remove reservation",
                () => this.manager.call("Unreserve", [id], "s"), "The reservation is removed.")
                .then(() => this.refresh()));
            return { attrs: { dataset: { reservationId: id } },
                cells: [h("code", {}, id), feature, holder, count, button] };
        });
        fill(byId("reservations-table"), table("Reservations", columns, rows, "No seats are reserved."));
    }

    renderForms() {
        allow(byId("reserve"), access.reason ||
            (this.manager.connected ? "" : "tandemd is not running on this server.") ||
            (this.usage.length ? "" : "Activate a license first."));
    }

    async reserve() {
        const feature = byId("reserve-feature").value;
        const count = Number(byId("reserve-count").value);
        const holder = byId("reserve-holder").value.trim();
        await act("Reserve", () => this.manager.call("Reserve", [feature, count, holder], "sus"),
            `${count} seat(s) of ${feature} are reserved for ${holder}.`);
        this.refresh();
    }

    async refreshChart() {
        const feature = byId("chart-feature").value;
        const range = RANGES[byId("chart-range").value] ?? RANGES["24h"];
        if (!feature) { this.series = []; this.renderChart(); return; }
        const now = Date.now() * 1000;
        const until = now - (now % range.step) + range.step;
        const since = until - range.span;
        try {
            const [rows] = await this.manager.call("GetUsageHistory", [feature, since, until, range.step], "sttt");
            this.series = rows.map(([start, maxInUse, seats, acquisitions, denials]) =>
                ({ start, maxInUse, seats, acquisitions, denials }));
        } catch (error) {
            this.series = [];
        }
        this.step = range.step;
        this.renderChart();
    }

    renderChart() {
        const s = this.series;
        const peak = s.reduce((a, b) => Math.max(a, b.maxInUse), 0);
        const denials = s.reduce((a, b) => a + b.denials, 0);
        const acquisitions = s.reduce((a, b) => a + b.acquisitions, 0);
        const summary = byId("chart-summary");
        summary.textContent = s.length
            ? `Peak ${peak} seats in use of ${s[s.length - 1].seats}; ${plural(acquisitions, "acquisition")}, ` +
                `${plural(denials, "denial")}.`
            : "No usage recorded for this range.";
        Object.assign(summary.dataset, { peak, denials, acquisitions, buckets: s.length });
        if (typeof Chart === "undefined") return; // Chart.js (libjs-chart.js) not installed: the summary remains.
        const data = {
            labels: s.map(b => bucketLabel(b.start, this.step)),
            datasets: [
                { type: "line", label: "Peak in use", data: s.map(b => b.maxInUse), stepped: true, fill: true,
                    borderColor: cssColor("--chart-use"), backgroundColor: cssColor("--chart-use-fill"),
                    pointRadius: 0, yAxisID: "seats" },
                { type: "line", label: "Seats", data: s.map(b => b.seats), stepped: true, borderDash: [6, 4],
                    borderColor: cssColor("--chart-seats"), pointRadius: 0, yAxisID: "seats" },
                { type: "bar", label: "Denials", data: s.map(b => b.denials || null),
                    backgroundColor: cssColor("--chart-denial"), yAxisID: "denials" },
            ],
        };
        const text = cssColor("--text-muted"), grid = cssColor("--border");
        const options = {
            animation: false, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
            plugins: { legend: { labels: { color: text } } },
            scales: {
                x: { ticks: { color: text, maxTicksLimit: 12 }, grid: { color: grid } },
                seats: { position: "left", beginAtZero: true, ticks: { color: text, precision: 0 },
                    grid: { color: grid }, title: { display: true, text: "seats", color: text } },
                denials: { position: "right", beginAtZero: true, ticks: { color: text, precision: 0 },
                    grid: { drawOnChartArea: false }, title: { display: true, text: "denials", color: text } },
            },
        };
        if (this.chart) {
            this.chart.data = data;
            this.chart.options = options;
            this.chart.update();
        } else {
            this.chart = new Chart(byId("usage-chart"), { data, options });
        }
    }

    async downloadSessions() {
        const from = byId("sessions-from").valueAsDate, to = byId("sessions-to").valueAsDate;
        if (!from || !to) return;
        // The "To" day is included: the range ends at the next local midnight.
        const since = new Date(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()).getTime() * 1000;
        const until = new Date(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() + 1).getTime() * 1000;
        await act("Download sessions", async () => {
            const [rows] = await this.manager.call("ListSessions",
                [since, until, vardict({ limit: SESSION_LIMIT }, { limit: "u" })], "tta{sv}");
            const header = ["lease_id", "feature", "client", "count", "user", "host", "token", "uid", "start", "end",
                "ended", "seat_hours"];
            const now = Date.now() * 1000;
            const body = rows.map(([id, feature, client, count, user, host, token, uid, start, end, ended]) => [
                id, feature, client, count, user, host, token, uid === 4294967295 ? "" : uid,
                new Date(start / 1000).toISOString(), end ? new Date(end / 1000).toISOString() : "",
                ended || "held", (count * ((end || now) - start) / 3600e6).toFixed(3)]);
            download(`tandem-sessions-${byId("sessions-from").value}-${byId("sessions-to").value}.csv`,
                csv(header, body), "text/csv");
        });
    }
}

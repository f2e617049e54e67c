// The Server Summary (a tile for this server and one for its peer, as the tech note's tiles),
// Server Details (every Manager property) and the Pair Status changes this page has seen.
import { byId, fill, h } from "./dom.js";
import { pairStatus, peerStatus, role, time } from "./format.js";

const yesNo = value => (value === undefined ? "—" : value ? "Yes" : "No");
const LOG_LIMIT = 50;

function badge(info, attrs = {}) {
    return h("span", { class: `badge badge-${info.tone}`, ...attrs }, info.label);
}

function tile(title, fields, attrs) {
    return h("article", { class: "tile", ...attrs },
        h("h3", {}, title),
        h("dl", {}, fields.map(([label, value, key]) =>
            [h("dt", {}, label), h("dd", { dataset: { field: key } }, value)])));
}

export class ServersView {
    constructor(manager) {
        this.manager = manager;
        this.log = [];
        manager.addEventListener("properties", e => { this.noteChange(e.detail.before); this.render(); });
        manager.addEventListener("peer", () => this.render());
        manager.addEventListener("connection", () => this.render());
    }

    /** Records a change of this node's Pair Status, Serving or the peer's Status. */
    noteChange(before) {
        const p = this.manager.props;
        const changes = [];
        if (before.PairStatus !== undefined && before.PairStatus !== p.PairStatus)
            changes.push({ what: "Pair Status", value: p.PairStatus, label: pairStatus(p.PairStatus).label });
        if (before.Serving !== undefined && before.Serving !== p.Serving)
            changes.push({ what: "Serving", value: String(p.Serving), label: yesNo(p.Serving) });
        if (before.PeerStatus !== undefined && before.PeerStatus !== p.PeerStatus)
            changes.push({ what: "Peer", value: p.PeerStatus, label: peerStatus(p.PeerStatus).label });
        for (const c of changes) this.log.unshift({ ...c, at: Date.now() * 1000 });
        this.log.length = Math.min(this.log.length, LOG_LIMIT);
    }

    render() {
        const m = this.manager, p = m.props, peer = m.peer;
        const running = m.connected;
        const own = pairStatus(p.PairStatus);
        const status = running ? { label: "Running", tone: "ok" } : { label: "Not running", tone: "danger" };
        const tiles = [tile("This server", [
            ["License Server ID", p.ServerId ?? "—", "server-id"],
            ["Status", badge(status), "status"],
            ["Role", role(p.Role), "role"],
            // While tandemd does not answer, what it said last is not its status: "—".
            ["Pair Status", running ? badge(own, { dataset: { pairStatus: p.PairStatus ?? "" } }) : "—",
                "pair-status"],
            ["Serving", running ? yesNo(p.Serving) : "—", "serving"],
            ["Epoch", running ? p.Epoch ?? "—" : "—", "epoch"],
            ["Seats in use", !running || p.SeatsInUse === undefined ? "—" : `${p.SeatsInUse} of ${p.SeatsTotal}`,
                "seats"],
        ], { id: "tile-local", class: `tile tile-${running ? own.tone : "danger"}`,
            dataset: { pairStatus: running ? p.PairStatus ?? "" : "not-running",
                serving: String(running && Boolean(p.Serving)) } })];
        if (p.PeerAddress && running) {
            const state = peerStatus(peer.Status ?? p.PeerStatus);
            // A peer that is not heard from has no status of its own: its tile says the pair's
            // status as this server sees it (as the tech note's tiles do), and what it last said.
            const heard = (peer.Status ?? p.PeerStatus) === "running";
            const shownStatus = heard ? peer.PairStatus : p.PairStatus;
            const theirs = pairStatus(shownStatus);
            const stale = value => (value === undefined ? "—" : `${value} (last heard)`);
            const synced = running && p.PairStatus === "paired-and-available";
            tiles.push(tile("Peer server", [
                ["License Server ID", peer.ServerId || p.PeerServerId || "—", "server-id"],
                ["Status", badge(state), "status"],
                ["Role", role(peer.Role), "role"],
                ["Pair Status", shownStatus ? badge(theirs) : "—", "pair-status"],
                ["Serving", heard ? yesNo(peer.Serving) : "—", "serving"],
                ["Epoch", heard ? peer.Epoch ?? "—" : stale(peer.Epoch), "epoch"],
                ["Seats in use", synced ? `${p.SeatsInUse} of ${p.SeatsTotal} (replicated)` : "—", "seats"],
                ["Pair link", peer.Address || p.PeerAddress, "address"],
                peer.StatusReason ? ["Reason", peer.StatusReason, "reason"] : null,
            ].filter(Boolean), { id: "tile-peer", class: `tile tile-${state.tone === "ok" ? theirs.tone : state.tone}`,
                dataset: { pairStatus: shownStatus ?? "", status: peer.Status ?? p.PeerStatus ?? "" } }));
        }
        byId("pair-info").textContent = !(p.PeerAddress || p.WitnessAddress) ? "" : (
            `Witness: ${p.WitnessAddress || "none"}` +
            (p.WitnessAddress ? ` (${peerStatus(p.WitnessStatus).label})` : "") +
            ` · Partition policy: ${p.PartitionPolicy || "—"}` +
            (p.PolicyMismatch ? " · Usage policy DIFFERS from the peer's: administrative changes are refused" : ""));
        fill(byId("tiles"), tiles);
        this.renderDetails();
        fill(byId("status-log"), this.log.length
            ? this.log.map(c => h("li", { dataset: { what: c.what, value: c.value } },
                `${time(c.at)} ${c.what}: ${c.label}`))
            : h("li", { class: "empty" }, "No change since this page opened."));
    }

    renderDetails() {
        const p = this.manager.props;
        const rows = Object.keys(p).sort().map(key => {
            let value = p[key];
            if (Array.isArray(value)) value = value.join(", ") || "—";
            else if (value && typeof value === "object")
                value = Object.entries(value).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
            else if (typeof value === "boolean") value = yesNo(value);
            else if (value === "") value = "—";
            return [h("dt", {}, key), h("dd", { dataset: { property: key } }, String(value))];
        });
        fill(byId("details"), rows);
    }
}

// The Manage panel (the tech note's Manage License Server slide-out): pairing, Sync, the License
// Server ID, and Stop / Start / Restart through systemd's own D-Bus API. A disabled button says
// why (the tech note's rules); tandemd still decides every call, and a refusal is shown.
import { allow, byId } from "./dom.js";
import { access, act, confirmAction } from "./ui.js";

const SYSTEMD = "org.freedesktop.systemd1";
const SYSTEMD_PATH = "/org/freedesktop/systemd1";
const SYSTEMD_MANAGER = "org.freedesktop.systemd1.Manager";
const UNIT = "tandemd.service";

export class ManagePanel {
    constructor(manager) {
        this.manager = manager;
        this.unitState = "";
        const panel = byId("manage-panel");
        byId("open-manage").addEventListener("click", () => this.open());
        byId("close-manage").addEventListener("click", () => this.close());
        panel.addEventListener("keydown", e => { if (e.key === "Escape") this.close(); });
        for (const id of ["primary-address", "backup-address"]) byId(id).addEventListener("input", () => this.render());
        const on = (id, fn) => byId(id).addEventListener("click", fn);
        on("prepare-backup", () => act("Prepare Backup",
            () => manager.call("PrepareBackup", [byId("primary-address").value.trim()], "s"),
            "This server is prepared as the backup; enable the backup on the primary."));
        on("enable-backup", () => act("Enable Backup",
            () => manager.call("EnableBackup", [byId("backup-address").value.trim()], "s"), "The pair is formed."));
        on("disable-backup", () => this.confirmed("Disable Backup",
            "Dissolve the pair on both servers? Each then runs standalone.", "Disable Backup",
            () => manager.call("DisableBackup"), "The pair is dissolved."));
        on("sync", () => act("Sync", () => manager.call("Sync"), "The standby is being sent the whole state."));
        on("reset-id", () => this.confirmed("Reset License Server ID",
            "Give this server a new License Server ID? Licenses issued to the old one cannot be activated here.",
            "Reset", async () => {
                const [id] = await manager.call("ResetServerId");
                return id;
            }, "This server has a new License Server ID."));
        on("stop-server", () => this.confirmed("Stop License Server",
            "Stop tandemd on this server? In a pair the other server takes over serving; standalone, " +
            "products cannot acquire seats until it is started again.", "Stop", () => this.unit("StopUnit"),
            "tandemd is stopping."));
        on("start-server", () => act("Start License Server", () => this.unit("StartUnit"), "tandemd is starting."));
        on("restart-server", () => act("Restart License Server", () => this.unit("RestartUnit"),
            "tandemd is restarting."));
        manager.addEventListener("properties", () => this.render());
        manager.addEventListener("connection", () => this.render());
    }

    async confirmed(what, question, verb, fn, success) {
        if (await confirmAction(what, question, verb)) await act(what, fn, success);
    }

    unit(method) {
        return this.manager.callService(SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, method, [UNIT, "replace"], "ss")
            .finally(() => setTimeout(() => this.readUnit(), 1000));
    }

    async readUnit() {
        try {
            const [path] = await this.manager.callService(
                SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, "LoadUnit", [UNIT], "s");
            const [state] = await this.manager.callService(SYSTEMD, path, "org.freedesktop.DBus.Properties", "Get",
                ["org.freedesktop.systemd1.Unit", "ActiveState"], "ss");
            this.unitState = `${UNIT}: ${state.v}`;
        } catch (error) {
            this.unitState = `systemd does not answer on this bus (${error.name || error}): ` +
                "Stop, Start and Restart need the system's systemd.";
        }
        byId("unit-state").textContent = this.unitState;
    }

    open() {
        const panel = byId("manage-panel");
        panel.hidden = false;
        byId("open-manage").setAttribute("aria-expanded", "true");
        this.render();
        this.readUnit();
        byId("close-manage").focus();
    }

    close() {
        byId("manage-panel").hidden = true;
        byId("open-manage").setAttribute("aria-expanded", "false");
        byId("open-manage").focus();
    }

    render() {
        const m = this.manager, p = m.props;
        const base = access.reason || (m.connected ? "" : "tandemd is not running on this server.");
        const paired = p.Role && p.Role !== "standalone";
        const licenses = (p.LicenseCount ?? 0) > 0;
        const first = (...reasons) => reasons.find(Boolean) || "";
        byId("manage-server-id").textContent = p.ServerId ?? "—";
        allow(byId("prepare-backup"), first(base,
            paired && "This server is already paired (PairState).",
            licenses && "Remove all licenses from this server before it becomes a backup (LicensesActive).",
            !byId("primary-address").value.trim() && "Enter the primary server's pair link address."));
        allow(byId("enable-backup"), first(base,
            paired && "This server is already paired (PairState).",
            licenses && "Form the pair before activating licenses: deactivate them first (LicensesActive).",
            !byId("backup-address").value.trim() && "Enter the prepared backup server's pair link address."));
        allow(byId("disable-backup"), first(base,
            !paired && "This server is not paired.",
            licenses && "Deactivate all licenses before dissolving the pair (LicensesActive)."));
        allow(byId("sync"), first(base,
            !paired && "This server is not paired.",
            !p.Serving && "Only the serving server sends its state to the standby (NotServing)."));
        allow(byId("reset-id"), first(base,
            paired && "Disable the backup before resetting the License Server ID (PairState).",
            licenses && "Deactivate all licenses before resetting the License Server ID (LicensesActive)."));
        const unitReason = access.reason;
        for (const id of ["stop-server", "start-server", "restart-server"]) allow(byId(id), unitReason);
        byId("stop-server-reason").textContent = unitReason;
    }
}

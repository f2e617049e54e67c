/* global cockpit */
// The License Manager page: tabs (Servers, Licenses, Usage Details), the connection line, the
// light or dark theme of the Cockpit shell, and the views, all fed by one Manager.
import { byId } from "./dom.js";
import { LicensesView } from "./licenses.js";
import { ManagePanel } from "./manage.js";
import { Manager } from "./manager.js";
import { ServersView } from "./servers.js";
import { access } from "./ui.js";
import { UsageView } from "./usage.js";

const TABS = ["servers", "licenses", "usage"];

function selectTab(name, focus = false) {
    for (const tab of TABS) {
        const button = byId(`tab-${tab}`), selected = tab === name;
        button.setAttribute("aria-selected", String(selected));
        button.tabIndex = selected ? 0 : -1;
        byId(`view-${tab}`).hidden = !selected;
        if (selected && focus) button.focus();
    }
    if (cockpit.location.path[0] !== name) cockpit.location.go([name]);
}

function setUpTabs() {
    for (const tab of TABS) byId(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
    // Arrow keys move between tabs, as for any tablist.
    byId("tab-servers").parentElement.addEventListener("keydown", e => {
        const i = TABS.findIndex(t => byId(`tab-${t}`) === document.activeElement);
        if (i < 0 || (e.key !== "ArrowRight" && e.key !== "ArrowLeft")) return;
        selectTab(TABS[(i + (e.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length], true);
    });
    const fromLocation = () => {
        const wanted = cockpit.location.path[0];
        selectTab(TABS.includes(wanted) ? wanted : "servers");
    };
    cockpit.addEventListener("locationchanged", fromLocation);
    fromLocation();
}

/** Follows the shell's style (localStorage "shell:style": light, dark or auto) or the system's. */
function followTheme() {
    const apply = () => {
        const style = localStorage.getItem("shell:style") || "auto";
        const dark = style === "dark" || (style === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
        document.documentElement.classList.toggle("dark", dark);
    };
    addEventListener("storage", e => { if (e.key === "shell:style") apply(); });
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", apply);
    apply();
}

async function main() {
    followTheme();
    setUpTabs();
    await access.load();
    byId("access").textContent = access.admin ? "" : `Read-only: ${access.reason}`;
    byId("access").hidden = access.admin;
    const manager = new Manager();
    const views = [
        new ServersView(manager), new ManagePanel(manager), new LicensesView(manager), new UsageView(manager),
    ];
    manager.addEventListener("connection", () => {
        const line = byId("connection");
        const error = manager.lastError;
        line.textContent = manager.connected ? ""
            : `tandemd does not answer on this server: ${error?.name ?? error?.problem ?? ""} ${error?.message ?? ""}`;
        line.classList.toggle("connection-lost", !manager.connected);
        document.body.dataset.connected = String(manager.connected);
    });
    manager.start();
    document.body.dataset.ready = "true";
    return views;
}

main();

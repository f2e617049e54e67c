/* global cockpit */
// tandemd over the system bus, through cockpit.js: calls are made by the bridge with the logged-in
// user's own credentials, so tandemd's authorization (root, polkit, tandem-admin) decides.
// Keeps the Manager's properties and the peer's status current from PropertiesChanged and the
// Manager's signals; polls every 5 s only for what emits nothing (the peer's own report,
// NetworkConnections) and to notice tandemd coming back.

export const NAME = "org.tandem.LicenseManager1";
export const PATH = "/org/tandem/LicenseManager1";
export const MANAGER = NAME + ".Manager";
const POLL_MS = 5000;
const SIGNALS = ["LicenseActivated", "LicenseDeactivated", "LeaseExpired"];

/** Unwraps cockpit's {t, v} variants, recursively for a{sv} inside them. */
function plain(variant) {
    if (variant && typeof variant === "object" && "t" in variant && "v" in variant) return plain(variant.v);
    if (variant && typeof variant === "object" && !Array.isArray(variant)) {
        return Object.fromEntries(Object.entries(variant).map(([k, v]) => [k, plain(v)]));
    }
    return variant;
}

/** Options for an a{sv} argument: {user: "ann"} with types {user: "s"}. */
export function vardict(values, types) {
    return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, { t: types[k], v }]));
}

export class Manager extends EventTarget {
    constructor() {
        super();
        this.client = cockpit.dbus(NAME, { bus: "system" });
        this.props = {};
        this.peer = {};
        this.connected = false;
        this.lastError = null;
        this.timer = null;
    }

    /** Calls a Manager method; resolves to its out arguments, rejects with {name, message}. */
    call(method, args = [], signature = "") {
        return this.client.call(PATH, MANAGER, method, args, { type: signature });
    }

    /** Calls a method of another service on the system bus (systemd). */
    callService(name, path, iface, method, args, signature) {
        const client = cockpit.dbus(name, { bus: "system" });
        return client.call(path, iface, method, args, { type: signature }).finally(() => client.close());
    }

    start() {
        this.client.subscribe(
            { path: PATH, interface: "org.freedesktop.DBus.Properties", member: "PropertiesChanged" },
            (path, iface, signal, [changedIface, changed]) => {
                if (changedIface !== MANAGER) return;
                const before = { ...this.props };
                Object.assign(this.props, plain(changed));
                this.emit("properties", { before });
                // The peer's tile changes with the pair: fetch its report again.
                const pair = ["PairStatus", "PeerStatus", "Serving", "Epoch", "Role"];
                if (pair.some(p => p in changed)) this.refreshPeer();
                if (["SeatsInUse", "SeatsTotal", "LicenseCount"].some(p => p in changed)) this.emit("data");
            });
        for (const member of SIGNALS) {
            this.client.subscribe({ path: PATH, interface: MANAGER, member }, () => this.emit("data"));
        }
        this.client.addEventListener("owner", (event, owner) => {
            if (owner) this.refresh();
            else this.setConnected(false, { name: "org.freedesktop.DBus.Error.ServiceUnknown",
                message: "tandemd is not running" });
        });
        this.refresh();
        this.timer = setInterval(() => this.refresh(), POLL_MS);
    }

    async refresh() {
        try {
            const [all] = await this.client.call(PATH, "org.freedesktop.DBus.Properties", "GetAll", [MANAGER],
                { type: "s" });
            const before = { ...this.props };
            this.props = plain(all);
            this.setConnected(true, null);
            this.emit("properties", { before });
            await this.refreshPeer();
            this.emit("data");
        } catch (error) {
            this.setConnected(false, error);
        }
    }

    async refreshPeer() {
        try {
            const [status] = await this.call("GetPeerStatus");
            this.peer = plain(status);
            this.emit("peer");
        } catch (error) {
            this.peer = {};
            this.emit("peer");
        }
    }

    setConnected(connected, error) {
        const changed = connected !== this.connected;
        this.connected = connected;
        this.lastError = error;
        if (changed || !connected) this.emit("connection");
    }

    emit(type, detail = {}) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
    }
}

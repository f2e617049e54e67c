/* global cockpit */
// tandemd over the system bus, through cockpit.js: calls are made by the bridge with the logged-in
// user's own credentials, so tandemd's authorization (root, polkit, tandem-admin) decides.
// Keeps the Manager's properties and the peer's status current from PropertiesChanged and the
// Manager's signals; polls every 5 s (no faster) for what emits nothing (the peer's own report,
// NetworkConnections), and the views refresh their lists then.

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
        this.client = null;
        this.props = {};
        this.peer = {};
        this.connected = false;
        this.lastError = null;
        this.timer = null;
        // The bus name's owner as the bridge reports it: undefined until it says, null while
        // tandemd is gone. A call to the name bus-activates tandemd (SystemdService=), so
        // nothing is called while it is gone: a Stop from the Manage panel stays stopped.
        this.owner = undefined;
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
        this.connect();
        this.timer = setInterval(() => { if (this.owner !== null) this.refresh(); }, POLL_MS);
    }

    /** Opens the D-Bus channel and subscribes; opened again when the bridge closes it. */
    connect() {
        const client = cockpit.dbus(NAME, { bus: "system" });
        this.client = client;
        client.subscribe(
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
            client.subscribe({ path: PATH, interface: MANAGER, member }, () => this.emit("data"));
        }
        client.addEventListener("owner", (event, owner) => {
            this.owner = owner;
            if (owner) this.refresh();
            else this.setConnected(false, { name: "org.freedesktop.DBus.Error.ServiceUnknown",
                message: "tandemd is not running" });
        });
        // The bridge closes the channel for good when the name cannot be reached (tandemd not
        // there at all): open a new one after the poll interval.
        client.addEventListener("close", (event, options) => {
            if (this.client !== client) return;
            this.setConnected(false, { name: options?.problem || "disconnected", message: "tandemd is not reachable" });
            setTimeout(() => { if (this.client === client) { this.owner = undefined; this.connect(); } }, POLL_MS);
        });
        this.refresh();
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

/* global cockpit */
// What every view shares: alerts, confirmations, running an action so that no refusal is silent,
// and who may act (the reason a button is disabled for a user who is not an administrator).
import { byId, h } from "./dom.js";
import { shortErrorName } from "./format.js";

/** Shows an alert; errors stay until dismissed, successes fade after 8 s. */
export function notify(kind, title, text = "", errorName = "") {
    const close = h("button", { class: "btn btn-plain", "aria-label": "Dismiss" }, "✕");
    const el = h("div", { class: `alert alert-${kind}`, role: kind === "danger" ? "alert" : "status",
        dataset: errorName ? { errorName } : {} },
        h("strong", {}, title), text ? h("span", {}, " " + text) : null, close);
    close.addEventListener("click", () => el.remove());
    byId("alerts").prepend(el);
    if (kind !== "danger") setTimeout(() => el.remove(), 8000);
    return el;
}

/** Shows a refused call with its D-Bus error's name and message. */
export function showError(what, error) {
    const name = error?.name || error?.problem || "Error";
    notify("danger", `${what} refused: ${shortErrorName(name)}`, error?.message || String(error), name);
}

/** Runs `fn` (an async action labelled `what`); a refusal is shown, never swallowed. */
export async function act(what, fn, success) {
    try {
        const result = await fn();
        if (success) notify("success", success);
        return result;
    } catch (error) {
        showError(what, error);
        return undefined;
    }
}

/** Asks for confirmation in a modal dialog; resolves to true when confirmed. */
export function confirmAction(title, text, verb = "Confirm") {
    const dialog = byId("confirm");
    byId("confirm-title").textContent = title;
    byId("confirm-text").textContent = text;
    byId("confirm-yes").textContent = verb;
    return new Promise(resolve => {
        dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
        dialog.returnValue = "";
        dialog.showModal();
    });
}

/**
 * Who the page acts as. tandemd decides every call (root, polkit's answer, `tandem-admin`); the
 * page only predicts it from the user's uid and groups, to disable what would be refused and
 * say why. A call forced past a disabled button is still refused by tandemd, and shown.
 */
export const access = {
    user: null,
    admin: false,
    async load() {
        try {
            this.user = await cockpit.user();
            this.admin = this.user.id === 0 || (this.user.groups || []).includes("tandem-admin");
        } catch (error) {
            this.user = null;
            this.admin = false;
        }
        return this;
    },
    /** The reason an administrative action is not offered, or "" when it is. */
    get reason() {
        if (this.admin) return "";
        const who = this.user?.name ? `you are signed in as ${this.user.name}` : "your user is not known";
        return `Only an administrator may do this (root or a member of tandem-admin); ${who}.`;
    },
};

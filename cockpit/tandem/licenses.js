// Licenses: the activation request to send the vendor, activation by file or pasted text, the
// active licenses with their expiry (a warning within 14 days), deactivation with confirmation.
import { allow, byId, download, fill, h, table } from "./dom.js";
import { expiry } from "./format.js";
import { access, act, confirmAction } from "./ui.js";

export class LicensesView {
    constructor(manager) {
        this.manager = manager;
        this.rows = [];
        byId("download-request").addEventListener("click", () => act("Download activation request", async () => {
            const [request] = await manager.call("GetActivationRequest");
            download(`tandem-activation-request-${manager.props.ServerId ?? "server"}.txt`, request);
        }));
        byId("license-file").addEventListener("change", async e => {
            const file = e.target.files[0];
            if (file) byId("license-text").value = await file.text();
            this.renderForm();
        });
        byId("license-text").addEventListener("input", () => this.renderForm());
        byId("activate").addEventListener("click", () => act("Activate", async () => {
            const [id] = await manager.call("ActivateLicense", [byId("license-text").value], "s");
            byId("license-text").value = "";
            byId("license-file").value = "";
            this.renderForm();
            await this.refresh();
            return id;
        }, "The license is active."));
        manager.addEventListener("data", () => this.refresh());
        manager.addEventListener("properties", () => this.renderForm());
    }

    async refresh() {
        try {
            const [rows] = await this.manager.call("ListLicenses");
            this.rows = rows;
            this.error = null;
        } catch (error) {
            this.rows = [];
            this.error = error;
        }
        this.render();
    }

    renderForm() {
        allow(byId("activate"), access.reason ||
            (this.manager.connected ? "" : "tandemd is not running on this server.") ||
            (byId("license-text").value.trim() ? "" : "Choose a license file or paste its text."));
    }

    render() {
        const columns = [["License"], ["Product"], ["Feature"], ["Seats", "num"], ["In use", "num"],
            ["Reserved", "num"], ["Expires"], [""]];
        const rows = this.rows.map(([id, product, feature, seats, inUse, reserved, notAfter]) => {
            const exp = expiry(notAfter);
            const button = h("button", { class: "btn btn-danger btn-small", "aria-label": `Deactivate ${id}` },
                "Deactivate");
            allow(button, access.reason);
            button.addEventListener("click", async () => {
                const question = inUse > 0
                    ? `Deactivate ${id}? ${inUse} of its seats are in use; tandemd refuses if the remaining ` +
                        "seats cannot cover them."
                    : `Deactivate ${id} (${seats} seats of ${feature})?`;
                if (await confirmAction("Deactivate license", question, "Deactivate"))
                    await act(`Deactivate ${id}`, () => this.manager.call("DeactivateLicense", [id], "s"),
                        `${id} is deactivated.`);
            });
            return { attrs: { dataset: { licenseId: id } },
                cells: [id, product, feature, seats, inUse, reserved,
                    h("span", { class: `badge badge-${exp.tone}` }, exp.label), button] };
        });
        fill(byId("licenses-table"), table("Active licenses", columns, rows, this.error
            ? `The licenses could not be read: ${this.error.name || this.error.problem} ${this.error.message ?? ""}`
            : "No license is active."));
        this.renderForm();
    }
}

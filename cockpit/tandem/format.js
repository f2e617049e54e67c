// How Tandem's values read on the page: the tech note's words for pair statuses, times, counts.

/** Pair Status in the tech note's words, with the tone of its tile. */
export const PAIR_STATUS = {
    unpaired: { label: "Not paired", tone: "neutral" },
    "paired-and-available": { label: "Paired and Available", tone: "ok" },
    "primary-not-available": { label: "Primary not available", tone: "danger" },
    "backup-not-available": { label: "Backup not available", tone: "danger" },
    recovering: { label: "Recovering", tone: "warning" },
    "pair-not-synced": { label: "Pair not synced", tone: "warning" },
};

export function pairStatus(value) {
    return PAIR_STATUS[value] ?? { label: value || "Unknown", tone: "neutral" };
}

/** A node's Status as the tech note's tiles say it (Running, Stopped, ...). */
export const PEER_STATUS = {
    running: { label: "Running", tone: "ok" },
    stopped: { label: "Stopped", tone: "danger" },
    disconnected: { label: "Disconnected", tone: "danger" },
    "not-available": { label: "Not available", tone: "neutral" },
};

export function peerStatus(value) {
    return PEER_STATUS[value] ?? { label: value || "Unknown", tone: "neutral" };
}

export function role(value) {
    return { standalone: "Standalone", primary: "Primary", backup: "Backup" }[value] ?? (value || "—");
}

const pad = n => String(n).padStart(2, "0");

/** Microseconds since the epoch as local "YYYY-MM-DD HH:MM:SS"; 0 is "never" (or `zero`). */
export function time(usec, zero = "never") {
    if (!usec) return zero;
    const d = new Date(usec / 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
        `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A bucket start for a chart axis: the time of day for short ranges, the date for long ones. */
export function bucketLabel(usec, stepUsec) {
    const d = new Date(usec / 1000);
    // Day buckets lie on the UTC grid: named by their UTC date.
    if (stepUsec >= 86400e6) return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    if (stepUsec >= 3600e6) return `${day} ${pad(d.getHours())}:00`;
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "1 denial", "3 denials". */
export function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** A duration in seconds as "3 d 4 h", "5 min", "12 s". */
export function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s >= 86400) return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
    if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    if (s >= 60) return `${Math.floor(s / 60)} min`;
    return `${s} s`;
}

/** How a license's expiry reads, with a tone: expired, within 14 days, later, never. */
export function expiry(notAfterUsec, nowUsec = Date.now() * 1000) {
    if (!notAfterUsec) return { label: "never", tone: "ok" };
    const left = (notAfterUsec - nowUsec) / 1e6;
    if (left <= 0) return { label: `expired ${time(notAfterUsec)}`, tone: "danger" };
    if (left <= 14 * 86400) return { label: `${time(notAfterUsec)} (in ${duration(left)})`, tone: "warning" };
    return { label: time(notAfterUsec), tone: "ok" };
}

/** The last dotted part of a D-Bus error name: "org.tandem.LicenseManager1.LicensesActive" -> "LicensesActive". */
export function shortErrorName(name) {
    return String(name || "Error").split(".").pop();
}

/** One CSV field (RFC 4180); text a spreadsheet would take for a formula gets a leading "'". */
export function csvField(value) {
    let s = String(value ?? "");
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function csv(header, rows) {
    return [header, ...rows].map(r => r.map(csvField).join(",")).join("\r\n") + "\r\n";
}

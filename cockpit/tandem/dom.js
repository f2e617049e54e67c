// Small DOM helpers: elements are built with textContent only, so text from the server (client
// names, license ids) can never become markup.

/** h("td", {class: "num"}, "3") -> <td class="num">3</td>; attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
        else if (key === "dataset") Object.assign(el.dataset, value);
        else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
        if (child === undefined || child === null || child === false) continue;
        el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
}

export const byId = id => document.getElementById(id);

/** Replaces the children of `el`. */
export function fill(el, ...children) {
    el.replaceChildren();
    for (const child of children.flat(Infinity)) {
        if (child !== undefined && child !== null && child !== false)
            el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
}

/** A table: `columns` are [title, className?]; `rows` are arrays of cells (text or nodes). */
export function table(label, columns, rows, empty) {
    const head = h("tr", {}, columns.map(([title, cls]) => h("th", { scope: "col", class: cls }, title)));
    const body = rows.length
        ? rows.map(row => h("tr", row.attrs ?? {}, row.cells.map((cell, i) => h("td", { class: columns[i][1] }, cell))))
        : [h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty))];
    return h("table", { class: "table", "aria-label": label }, h("thead", {}, head), h("tbody", {}, body));
}

/** Disables `button` with `reason` as its tooltip and accessible description, or enables it. */
export function allow(button, reason) {
    button.disabled = Boolean(reason);
    button.title = reason || "";
    const note = button.id ? byId(button.id + "-reason") : null;
    if (note) {
        note.textContent = reason || "";
        button.setAttribute("aria-describedby", note.id);
    } else if (reason) {
        button.setAttribute("aria-description", reason);
    } else {
        button.removeAttribute("aria-description");
    }
}

/** Offers `text` as a file download named `name`. */
export function download(name, text, type = "text/plain") {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = h("a", { href: url, download: name, class: "hidden" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Building the page: every text goes in with textContent (never as markup), so a task name, a
// description or a run's output is shown as the characters it holds and can run nothing.

const SVG_NS = "http://www.w3.org/2000/svg";

// el("a", {href: "#/x", class: "y"}, "text", child, ...): attributes as given, children as text or nodes.
export function el(tag, attributes = {}, ...children) {
  return fill(document.createElement(tag), attributes, children);
}

export function svg(tag, attributes = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attributes, children);
}

function fill(node, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

// Dates are the API's ISO 8601 UTC strings; shown in UTC as task-list shows them.
export function shortDate(iso) {
  if (!iso) return "-";
  return iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "");
}

export function durationText(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let rest = Math.floor(ms / 1000);
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join("");
}

export function relative(iso, now = Date.now()) {
  if (!iso) return "";
  const delta = Date.parse(iso) - now;
  const text = durationText(Math.abs(delta));
  return delta >= 0 ? `in ${text}` : `${text} ago`;
}

// A date cell: the UTC date, the relative time as its tooltip.
export function dateCell(iso) {
  return el("td", {class: "date", title: relative(iso) || null}, shortDate(iso));
}

export function statusBadge(status) {
  return el("span", {class: `badge status-${String(status || "").toLowerCase()}`}, status || "-");
}

export function outcomeBadge(outcome) {
  if (!outcome) return el("span", {class: "muted"}, "-");
  return el("span", {class: `badge outcome-${String(outcome).toLowerCase()}`}, outcome);
}

export function labelsText(labels) {
  return Object.entries(labels || {}).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v}`).join(",");
}

export function taskHref(itemId) {
  return `#/task/${encodeURIComponent(itemId)}`;
}

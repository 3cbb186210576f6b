// Files: the reload report of GET /cxs/config: each task file applied, rejected (with its errors at
// path:line:col) or superseded, and the tasks on which live nodes disagree. Reload for an ADMINISTRATOR.

import {api} from "./api.js";
import {clear, el, shortDate, taskHref} from "./dom.js";

const REFRESH_MS = 5000;

function fileRow(file) {
  const errors = (file.errors || []).map((error) => el("li", {class: "file-error"}, `${error.location}: ${error.message}`));
  const superseded = (file.superseded || []).map((entry) =>
    el("li", {}, `${entry.task}: spec ${String(entry.specHash).slice(0, 8)}… from ${entry.source} is in force`));
  return el("tr", {"data-file": file.path, class: `file-${file.status}`},
    el("td", {class: "path"}, file.path),
    el("td", {}, el("span", {class: `badge file-status-${file.status}`}, file.status)),
    el("td", {}, (file.tasks || []).flatMap((id, i) => [i ? ", " : null, el("a", {href: taskHref(id)}, id)])),
    el("td", {}, errors.length ? el("ul", {class: "errors"}, errors) : null, superseded.length ? el("ul", {}, superseded) : null),
    el("td", {class: "date"}, shortDate(file.checkedAt)));
}

export function filesView(ctx) {
  const caption = el("p", {class: "summary", id: "files-summary"});
  const message = el("p", {class: "message", id: "reload-message", role: "status"});
  const body = el("tbody", {id: "files"});
  const divergence = el("div", {id: "divergence"});
  let poll = null;
  const reload = el("button", {type: "button", class: "action", id: "action-reload"}, "Reload tasks.d");
  reload.addEventListener("click", async () => {
    reload.disabled = true;
    try {
      const report = await api("/-/reload", {method: "POST"});
      message.className = report.ok ? "message" : "message error";
      message.textContent = `Reloaded at ${shortDate(report.at)}: ${report.created ?? 0} created, ${report.updated ?? 0} updated, `
        + `${report.removed ?? 0} removed, ${report.rejectedFiles ?? 0} file(s) rejected.`;
      await poll.now();
    } catch (error) {
      message.className = "message error";
      message.textContent = error.message;
    } finally {
      reload.disabled = false;
    }
  });
  ctx.root.append(el("h1", {}, "Files"), ctx.session.admin ? el("div", {class: "actions"}, reload) : null, message, caption,
    el("table", {class: "files"}, el("thead", {}, el("tr", {},
      ["File", "Status", "Tasks", "Errors", "Checked"].map((title) => el("th", {}, title)))), body), divergence);

  const refresh = async () => {
    const config = await api("/cxs/config");
    const files = config.files || [];
    const rejected = files.filter((file) => file.status === "rejected").length;
    const last = config.lastReload;
    caption.textContent = `${config.tasksDir || "no tasks directory"}: ${files.length} file(s), ${rejected} rejected`
      + (last ? `; last reload ${shortDate(last.at)} (${last.ok ? "ok" : "with errors"})` : "");
    clear(body).append(...files.map(fileRow));
    if (!files.length) body.append(el("tr", {}, el("td", {colspan: 5, class: "empty"}, "No task file.")));
    clear(divergence);
    if ((config.divergence || []).length) {
      divergence.append(el("h2", {}, "Nodes disagree"), el("ul", {}, config.divergence.map((entry) => el("li", {},
        el("a", {href: taskHref(entry.task)}, entry.task), ": ",
        entry.declarations.map((d) => `${d.node} spec ${String(d.specHash).slice(0, 8)}…${d.specHash === entry.inForce ? " (in force)" : ""}`).join("; ")))));
    }
  };
  poll = ctx.every(REFRESH_MS, refresh);
  return poll;
}

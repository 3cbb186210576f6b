// Cluster: the nodes, their heartbeats, and what each runs now (the running tasks' current runs).

import {api} from "./api.js";
import {clear, dateCell, el, relative, taskHref} from "./dom.js";

const REFRESH_MS = 3000;
const STALE_MS = 60e3; // the default nodeTimeout: an older heartbeat does not count

export function clusterView(ctx) {
  const body = el("tbody", {id: "nodes"});
  const caption = el("p", {class: "summary", id: "cluster-summary"});
  ctx.root.append(el("h1", {}, "Cluster"), caption,
    el("table", {class: "nodes"}, el("thead", {}, el("tr", {},
      ["Node", "Heartbeat", "Executor", "Running", "Stuck", "Runs now", "Task types", "Started", "Version", "Listen"]
        .map((title) => el("th", {}, title)))), body));

  const refresh = async () => {
    const now = new Date();
    const [nodes, running] = await Promise.all([
      api("/cxs/nodes"),
      // The running tasks with their current run (and its node): one page of the timeline's answer.
      api(`/cxs/timeline?status=RUNNING&limit=100&runsPerTask=1&span=60000&to=${now.toISOString()}`),
    ]);
    const byNode = new Map();
    for (const task of running.list) {
      const current = task.runs.find((run) => !run.finishedAt);
      if (!current) continue;
      if (!byNode.has(current.node)) byNode.set(current.node, []);
      byNode.get(current.node).push(task.itemId);
    }
    clear(body);
    for (const node of nodes.list) {
      const age = Date.now() - Date.parse(node.heartbeat);
      const tasks = byNode.get(node.nodeId) || [];
      body.append(el("tr", {"data-node": node.nodeId, class: age > STALE_MS ? "stale" : null},
        el("td", {}, node.nodeId),
        el("td", {title: node.heartbeat}, `${relative(node.heartbeat)}${age > STALE_MS ? " (not live)" : ""}`),
        el("td", {}, node.executor ? "yes" : "no"),
        el("td", {class: "num"}, node.running), el("td", {class: "num"}, node.stuck ?? 0),
        el("td", {class: "runs-now"}, tasks.flatMap((id, i) => [i ? ", " : null, el("a", {href: taskHref(id)}, id)])),
        el("td", {}, (node.taskTypes || []).join(", ")),
        dateCell(node.startedAt), el("td", {}, node.version || ""), el("td", {}, node.listen || "")));
    }
    caption.textContent = `${nodes.list.length} node(s); ${running.totalSize} task(s) running`
      + (running.totalSize > running.list.length ? ` (the first ${running.list.length} shown by node)` : "");
  };
  return ctx.every(REFRESH_MS, refresh);
}

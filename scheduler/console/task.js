// A task: what task-show shows, its next fire times, a strip of its recent runs, its run history
// and each run's output; the actions for an ADMINISTRATOR.

import {api, taskPath} from "./api.js";
import {actionBar, retrySettingsForm} from "./actions.js";
import {clear, dateCell, durationText, el, labelsText, outcomeBadge, relative, shortDate, statusBadge, svg} from "./dom.js";

const REFRESH_MS = 2000;
const RUNS_SHOWN = 20;
const STRIP_RUNS = 50;

function scheduleText(schedule) {
  if (!schedule) return "-";
  let text;
  if ("cron" in schedule) text = `cron ${schedule.cron} (${schedule.timezone || "UTC"})`;
  else if ("every" in schedule) {
    text = `every ${durationText(schedule.every * 1000)} (${schedule.fixedRate ? "fixed rate" : "fixed delay"})`;
    if (schedule.initialDelay) text += `, first after ${durationText(schedule.initialDelay * 1000)}`;
  } else if ("at" in schedule) text = `once at ${shortDate(schedule.at)}`;
  else if ("afterSuccessOf" in schedule) text = `after each success of ${schedule.afterSuccessOf}`;
  else text = `once, ${durationText((schedule.after || 0) * 1000)} after registration`;
  if (schedule.jitter) text += `, jitter ${durationText(schedule.jitter * 1000)}`;
  return text;
}

function runText(run) {
  if (!run) return null;
  if (run.command) return `command: ${run.command.join(" ")}`;
  if (run.shell !== undefined) return `shell: ${run.shell}`;
  if (run.http) return `http: ${run.http.method} ${run.http.url}`;
  return `python: ${run.python}`;
}

const json = (value) => (value && Object.keys(value).length ? JSON.stringify(value, null, 2) : null);

// The fields of task-show, in its order; a value null or "" is left out.
function fields(task) {
  const source = task.source ? (task.source.line ? `${task.source.path}:${task.source.line}` : task.source.path) : null;
  const overrides = task.overrides || {};
  const held = [task.enabled === false && "disabled", task.suspended && "suspended"].filter(Boolean).join(", ");
  return [
    ["Description", task.description],
    ["Enabled", task.enabled === false ? "no: enabled: false in its spec, nothing runs it" : "yes"],
    ["Suspended", task.suspended ? `since ${shortDate(task.suspendedAt)}` : null],
    ["Persistent", task.persistent === false ? "Memory" : "Storage"],
    ["Node", task.node],
    ["Executor Type", task.executorType],
    ["Runnable", task.runnable === false ? "no: no live node can run it; it waits" : null],
    ["Depends On", (task.dependsOn || []).join(", ")],
    ["Waiting On", (task.waitingOnTasks || []).join(", ")],
    ["Labels", labelsText(task.labels)],
    ["Source", source],
    ["Schedule", scheduleText(task.schedule)],
    ["Missed Runs", task.schedule && task.schedule.missedRuns],
    ["Run", runText(task.run)],
    ["Timeout", task.run && task.run.timeout ? durationText(task.run.timeout) : null],
    ["Concurrency", task.concurrency],
    ["On Crash", task.onCrash],
    ["Next Run", held || shortDate(task.nextScheduledExecution)],
    ["Last Run", shortDate(task.lastExecutionDate)],
    ["Last Finish", shortDate(task.lastFinishDate)],
    ["Last Success", shortDate(task.lastSuccessDate)],
    ["Created", shortDate(task.creationDate)],
    ["Attempt", task.attempt],
    ["Failures", task.failureCount],
    ["Successes", task.successCount],
    ["Max Retries", `${task.maxRetries}${"maxRetries" in overrides ? " (override)" : ""}`],
    ["Retry Delay", `${durationText(task.retryDelay)}${"retryDelay" in overrides ? " (override)" : ""}`],
    ["Lease", task.lease ? `${task.lease.owner} until ${shortDate(task.lease.until)} (fence ${task.lease.fence})` : null],
    ["Current Step", task.currentStep],
    ["Status Details", json(task.statusDetails)],
    ["Last Error", task.lastError],
    ["Parameters", json(task.parameters)],
    ["Checkpoint", json(task.checkpointData)],
  ];
}

function fieldList(task) {
  const list = el("dl", {class: "fields", id: "task-fields"});
  for (const [name, value] of fields(task)) {
    if (value === null || value === undefined || value === "") continue;
    const text = String(value);
    list.append(el("dt", {}, name), el("dd", {class: text.includes("\n") ? "pre" : null, "data-field": name}, text));
  }
  return list;
}

// Recent runs as bars, oldest left: height by duration (against the longest), colour by outcome.
function strip(runs) {
  const shown = runs.slice(0, STRIP_RUNS).reverse();
  const width = 12;
  const height = 40;
  const longest = Math.max(1, ...shown.map((run) => run.durationMs || 0));
  const picture = svg("svg", {class: "strip", id: "run-strip", width: Math.max(1, shown.length) * width, height,
    viewBox: `0 0 ${Math.max(1, shown.length) * width} ${height}`, role: "img", "aria-label": "recent runs"});
  shown.forEach((run, index) => {
    const size = run.durationMs === null ? height : Math.max(3, Math.round((run.durationMs / longest) * height));
    picture.append(svg("rect", {x: index * width + 1, y: height - size, width: width - 2, height: size,
      class: `bar outcome-${(run.outcome || "running").toLowerCase()}`},
      svg("title", {}, `${shortDate(run.startedAt)} ${run.outcome || "running"} ${durationText(run.durationMs)}`)));
  });
  return picture;
}

export function taskView(ctx) {
  const id = ctx.argument;
  const status = el("span", {id: "task-status"});
  const message = el("p", {class: "message", id: "action-message", role: "status"});
  const actions = el("div");
  const settings = el("div");
  const details = el("div");
  const nextList = el("ol", {class: "next", id: "next-runs"});
  const stripBox = el("div");
  const runsBody = el("tbody", {id: "runs"});
  const outputTitle = el("h3", {id: "output-title"}, "Output");
  const output = el("pre", {class: "output", id: "run-output"});
  let selected = null; // the runId whose output is shown; null: the newest
  const drawn = {actions: null, settings: null};
  let poll = null;

  const done = async (text, error) => {
    message.textContent = error ? error.message : text;
    message.className = error ? "message error" : "message";
    // The bar and the form are drawn again only when what they show changed: a form being
    // filled in is never reset under the user's fingers by a refresh.
    await poll.now();
  };

  ctx.root.append(
    el("p", {}, el("a", {href: "#/tasks"}, "‹ Tasks")),
    el("h1", {}, el("span", {id: "task-id"}, id), " ", status),
    message, actions, settings,
    el("div", {class: "columns"},
      el("section", {}, el("h2", {}, "Task"), details),
      el("section", {}, el("h2", {}, "Next runs"), nextList, el("h2", {}, "Recent runs"), stripBox)),
    el("h2", {}, "Runs"),
    el("table", {class: "runs"}, el("thead", {}, el("tr", {},
      ["Started", "Attempt", "Node", "Outcome", "Duration", "Exit", "Error"].map((t) => el("th", {}, t)))), runsBody),
    outputTitle, output,
  );

  const showOutput = async (run) => {
    if (!run) {
      outputTitle.textContent = "Output";
      output.textContent = "No runs yet.";
      return;
    }
    const record = await api(taskPath(id, `/runs/${encodeURIComponent(run.runId)}`));
    outputTitle.textContent = `Output of ${record.runId} (${record.outcome || "running"})`;
    output.textContent = record.output || (record.outcome ? "(no output)" : "(recorded when the run ends)");
  };

  const refresh = async () => {
    const [task, runs, next] = await Promise.all([
      api(taskPath(id)),
      api(taskPath(id, `/runs?limit=${RUNS_SHOWN}`)),
      api(taskPath(id, "/next?count=5")).catch(() => null),
    ]);
    clear(status).append(statusBadge(task.status));
    document.title = `${task.itemId} · scheduler`;
    if (ctx.session.admin) {
      const actionKey = `${task.status}|${task.suspended}|${task.enabled}`;
      if (drawn.actions !== actionKey) {
        clear(actions).append(actionBar(task, done));
        drawn.actions = actionKey;
      }
      const settingsKey = JSON.stringify([task.maxRetries, task.retryDelay, task.overrides || null]);
      if (drawn.settings !== settingsKey) {
        clear(settings).append(retrySettingsForm(task, done));
        drawn.settings = settingsKey;
      }
    }
    clear(details).append(fieldList(task));
    clear(nextList);
    for (const entry of (next && next.list) || []) {
      nextList.append(el("li", {}, `${entry.local.replace("T", " ").replace(/\.\d+/, "")} (${relative(entry.fireTime)})`, entry.note ? el("span", {class: "note"}, ` ${entry.note}`) : null));
    }
    if (!nextList.firstChild) nextList.append(el("li", {class: "muted"}, (next && next.reason) || "none planned"));
    clear(stripBox).append(strip(runs.list));
    clear(runsBody);
    for (const run of runs.list) {
      const row = el("tr", {"data-run": run.runId, class: run.runId === selected ? "selected" : null},
        dateCell(run.startedAt), el("td", {class: "num"}, run.attempt), el("td", {}, run.node),
        el("td", {}, outcomeBadge(run.outcome || "running")), el("td", {class: "num"}, durationText(run.durationMs)),
        el("td", {class: "num"}, run.exitCode ?? "-"), el("td", {class: "error"}, run.error || ""));
      row.addEventListener("click", () => {
        selected = run.runId;
        for (const other of runsBody.children) other.classList.toggle("selected", other === row);
        showOutput(run).catch((error) => ctx.problem(error.message));
      });
      runsBody.append(row);
    }
    if (!runs.list.length) runsBody.append(el("tr", {}, el("td", {colspan: 7, class: "empty"}, "No runs yet.")));
    const shown = runs.list.find((run) => run.runId === selected) || runs.list[0];
    await showOutput(shown);
  };
  poll = ctx.every(REFRESH_MS, refresh);
  return poll;
}

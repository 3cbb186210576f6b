// Tasks: the table of task-list, filtered, sorted and paged by the node (100,000 tasks stay one
// page of rows), refreshed every two seconds without reloading the page.

import {api, query} from "./api.js";
import {clear, dateCell, el, labelsText, outcomeBadge, statusBadge, taskHref} from "./dom.js";

export const STATUSES = ["SCHEDULED", "WAITING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED"];
const PAGE_SIZES = [25, 50, 100, 200];
const REFRESH_MS = 2000;
const COLUMNS = [
  ["ID", "itemId"], ["Type", "taskType"], ["Status", "status"], ["Next Run", "nextScheduledExecution"],
  ["Last Run", "lastExecutionDate"], ["Last Outcome", null], ["Failures", "failureCount"],
  ["Successes", "successCount"], ["Labels", null],
];

// The list's filters, as the URL fragment and the API name them.
export const FILTERS = ["status", "type", "labelSelector", "idPrefix"];

export function filterParams(params) {
  const found = {};
  for (const name of FILTERS) found[name] = params.get(name) || "";
  return found;
}

// The filter form shared by the task list and the timeline: changing a field changes the fragment.
export function filterForm(params, onChange) {
  const values = filterParams(params);
  let timer = null;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(() => onChange(Object.fromEntries(FILTERS.map((name) => [name, form.elements[name].value.trim()]))), 300);
  };
  const status = el("select", {name: "status", id: "filter-status", onchange: changed},
    el("option", {value: ""}, "any status"),
    STATUSES.map((s) => el("option", {value: s, selected: s === values.status}, s)));
  const text = (name, label, placeholder) => [
    el("label", {for: `filter-${name}`}, label),
    el("input", {id: `filter-${name}`, name, value: values[name], placeholder, oninput: changed, autocomplete: "off"}),
  ];
  const form = el("form", {class: "filters", onsubmit: (event) => event.preventDefault()},
    text("idPrefix", "ID starts with", "e.g. backup-"), el("label", {for: "filter-status"}, "Status"), status,
    text("type", "Type", "exact type"), text("labelSelector", "Labels", "team=data,tier!=batch"));
  return form;
}

export function fragment(view, params) {
  const text = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString();
  return `#/${view}${text ? `?${text}` : ""}`;
}

function nextRunCell(task) {
  const held = [task.enabled === false && "disabled", task.suspended && "suspended"].filter(Boolean).join(", ");
  return held ? el("td", {class: "held"}, held) : dateCell(task.nextScheduledExecution);
}

export function tasksView(ctx) {
  const params = ctx.params;
  const state = {
    ...filterParams(params),
    sortBy: params.get("sortBy") || "itemId",
    offset: Number(params.get("offset") || 0),
    limit: Number(params.get("limit") || 50),
  };
  let poll = null;
  const update = (changes) => {
    Object.assign(state, changes);
    ctx.replace(fragment("tasks", state));
    drawHeader();
    poll.now();
  };

  const summary = el("span", {class: "summary", id: "tasks-summary"}, "loading…");
  const previous = el("button", {type: "button", id: "page-prev", onclick: () => update({offset: Math.max(0, state.offset - state.limit)})}, "‹ Previous");
  const next = el("button", {type: "button", id: "page-next", onclick: () => update({offset: state.offset + state.limit})}, "Next ›");
  const size = el("select", {id: "page-size", onchange: (event) => update({limit: Number(event.target.value), offset: 0})},
    PAGE_SIZES.map((count) => el("option", {value: count, selected: count === state.limit}, `${count} a page`)));
  const head = el("thead");
  const body = el("tbody");
  const drawHeader = () => {
    const [field, direction] = state.sortBy.split(":");
    clear(head).append(el("tr", {}, COLUMNS.map(([title, sortField]) => {
      if (!sortField) return el("th", {}, title);
      const active = sortField === field;
      const sortBy = active && direction !== "desc" ? `${sortField}:desc` : sortField;
      const arrow = active ? (direction === "desc" ? " ▼" : " ▲") : "";
      return el("th", {class: "sortable", "aria-sort": active ? (direction === "desc" ? "descending" : "ascending") : null},
        el("button", {type: "button", class: "link", "data-sort": sortField, onclick: () => update({sortBy, offset: 0})}, title + arrow));
    })));
  };
  drawHeader();
  ctx.root.append(
    el("h1", {}, "Tasks"),
    filterForm(params, (filters) => update({...filters, offset: 0})),
    el("div", {class: "bar"}, summary, el("span", {class: "pager"}, previous, next, size)),
    el("table", {class: "tasks", id: "tasks"}, head, body),
  );

  const refresh = async () => {
    const page = await api(`/cxs/tasks${query({...filterParams(new URLSearchParams(state)), sortBy: state.sortBy, offset: state.offset, limit: state.limit})}`);
    clear(body);
    for (const task of page.list) {
      body.append(el("tr", {"data-task": task.itemId},
        el("td", {}, el("a", {href: taskHref(task.itemId), class: "task-link"}, task.itemId)),
        el("td", {}, task.taskType),
        el("td", {class: "status"}, statusBadge(task.status)),
        nextRunCell(task),
        dateCell(task.lastExecutionDate),
        el("td", {}, outcomeBadge(task.lastOutcome)),
        el("td", {class: task.failureCount ? "num failing" : "num"}, task.failureCount),
        el("td", {class: "num"}, task.successCount),
        el("td", {class: "labels"}, labelsText(task.labels)),
      ));
    }
    if (!page.list.length) body.append(el("tr", {}, el("td", {colspan: COLUMNS.length, class: "empty"}, "No task matches.")));
    const last = state.offset + page.list.length;
    summary.textContent = page.totalSize
      ? `${(state.offset + 1).toLocaleString("en")}–${last.toLocaleString("en")} of ${page.totalSize.toLocaleString("en")} task(s)`
      : "0 tasks";
    previous.disabled = state.offset === 0;
    next.disabled = last >= page.totalSize;
  };
  poll = ctx.every(REFRESH_MS, refresh);
  return poll;
}

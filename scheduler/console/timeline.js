// Timeline: one row per task of a page (the list's filters), one bar per run over a window of an
// hour or a day, coloured by outcome; zoom and pan move the window. It asks the node for exactly
// what it draws (GET /cxs/timeline: a page of tasks and their runs in the window, no output).

import {api, query} from "./api.js";
import {clear, durationText, el, shortDate, svg, taskHref} from "./dom.js";
import {FILTERS, filterForm, filterParams, fragment} from "./tasks.js";

const RANGES = [["15m", 15 * 60e3], ["1h", 3600e3], ["6h", 6 * 3600e3], ["1d", 24 * 3600e3], ["7d", 7 * 24 * 3600e3]];
const MIN_SPAN = 60e3; // the API takes 1 s to 7 days
const MAX_SPAN = 7 * 24 * 3600e3;
const REFRESH_MS = 5000;
const ROW = 20;
const LABEL = 200;
const AXIS = 24;
const ROWS = 50;

function ticks(start, span, width) {
  const steps = [1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400].map((s) => s * 1000);
  const step = steps.find((s) => (s / span) * width >= 90) || steps[steps.length - 1];
  const found = [];
  for (let t = Math.ceil(start / step) * step; t < start + span; t += step) found.push(t);
  return found;
}

function tickText(moment, span) {
  const iso = new Date(moment).toISOString();
  return span > 24 * 3600e3 ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, span <= 600e3 ? 19 : 16);
}

export function timelineView(ctx) {
  const params = ctx.params;
  const state = {
    ...filterParams(params),
    span: Math.min(MAX_SPAN, Math.max(MIN_SPAN, Number(params.get("span")) || 3600e3)),
    end: params.get("end") ? Number(params.get("end")) : null, // null: follows now
    offset: Number(params.get("offset") || 0),
  };
  let poll = null;
  const update = (changes) => {
    Object.assign(state, changes);
    state.span = Math.min(MAX_SPAN, Math.max(MIN_SPAN, state.span));
    if (state.end !== null && state.end >= Date.now()) state.end = null;
    ctx.replace(fragment("timeline", state));
    poll.now();
  };
  const windowEnd = () => state.end ?? Date.now();

  const caption = el("span", {class: "summary", id: "timeline-caption"});
  const controls = el("div", {class: "bar timeline-controls"},
    el("span", {class: "ranges"}, RANGES.map(([label, span]) =>
      el("button", {type: "button", "data-range": label, onclick: () => update({span, end: null})}, label))),
    el("button", {type: "button", id: "zoom-in", onclick: () => update({span: state.span / 2, end: state.end === null ? null : windowEnd() - state.span / 4})}, "Zoom in"),
    el("button", {type: "button", id: "zoom-out", onclick: () => update({span: state.span * 2, end: state.end === null ? null : windowEnd() + state.span / 2})}, "Zoom out"),
    el("button", {type: "button", id: "pan-back", onclick: () => update({end: windowEnd() - state.span / 2})}, "‹ Earlier"),
    el("button", {type: "button", id: "pan-forward", onclick: () => update({end: windowEnd() + state.span / 2})}, "Later ›"),
    el("button", {type: "button", id: "pan-now", onclick: () => update({end: null})}, "Now"),
    el("span", {class: "pager"},
      el("button", {type: "button", id: "rows-prev", onclick: () => update({offset: Math.max(0, state.offset - ROWS)})}, "‹ Tasks"),
      el("button", {type: "button", id: "rows-next", onclick: () => update({offset: state.offset + ROWS})}, "Tasks ›")),
  );
  const box = el("div", {class: "timeline", id: "timeline"});
  ctx.root.append(el("h1", {}, "Timeline"),
    filterForm(params, (filters) => update({...filters, offset: 0})), controls, caption, box,
    el("p", {class: "legend"}, ["success", "failure", "timeout", "crashed", "interrupted", "cancelled", "running"].map((o) =>
      el("span", {class: `key outcome-${o}`}, o))));

  const draw = (answer, start, end) => {
    const span = end - start;
    const width = Math.max(400, box.clientWidth || 900);
    const plot = width - LABEL;
    const height = AXIS + answer.list.length * ROW + 4;
    const x = (moment) => LABEL + ((moment - start) / span) * plot;
    const picture = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, class: "timeline-svg", role: "img",
      "aria-label": "runs by task over time"});
    for (const moment of ticks(start, span, plot).filter((t) => x(t) < width - 40)) {
      picture.append(svg("line", {x1: x(moment), x2: x(moment), y1: AXIS - 4, y2: height, class: "tick"}),
        svg("text", {x: x(moment) + 2, y: AXIS - 8, class: "tick-label"}, tickText(moment, span)));
    }
    answer.list.forEach((task, index) => {
      const y = AXIS + index * ROW;
      const link = svg("a", {href: taskHref(task.itemId)},
        svg("text", {x: 4, y: y + ROW - 6, class: `row-label status-${task.status.toLowerCase()}`}, task.itemId),
        svg("title", {}, `${task.itemId} (${task.status})${task.truncated ? `: the newest ${answer.runsPerTask} runs` : ""}`));
      picture.append(svg("line", {x1: 0, x2: width, y1: y + ROW, y2: y + ROW, class: "row-line"}), link);
      for (const run of task.runs) {
        const from = Math.max(start, Date.parse(run.startedAt));
        const to = Math.min(end, run.finishedAt ? Date.parse(run.finishedAt) : Date.now());
        const outcome = (run.outcome || "running").toLowerCase();
        picture.append(svg("a", {href: taskHref(task.itemId)},
          svg("rect", {x: x(from), y: y + 3, width: Math.max(2, x(to) - x(from)), height: ROW - 6,
            class: `bar outcome-${outcome}`, "data-run": run.runId},
          svg("title", {}, `${task.itemId} ${shortDate(run.startedAt)} ${run.outcome || "running"} ${durationText(run.durationMs)} on ${run.node}`))));
      }
    });
    clear(box).append(picture);
  };

  const refresh = async () => {
    const end = windowEnd();
    const start = end - state.span;
    const answer = await api(`/cxs/timeline${query({
      ...filterParams(new URLSearchParams(Object.entries(state).filter(([k]) => FILTERS.includes(k)))),
      to: new Date(end).toISOString(), span: Math.round(state.span), offset: state.offset, limit: ROWS,
    })}`);
    const runs = answer.list.reduce((sum, task) => sum + task.runs.length, 0);
    const last = state.offset + answer.list.length;
    caption.textContent = `${shortDate(answer.from)} – ${shortDate(answer.to)} UTC (${durationText(state.span)}`
      + `${state.end === null ? ", live" : ""}): ${runs} run(s) of tasks ${answer.totalSize ? state.offset + 1 : 0}–${last} of ${answer.totalSize}`;
    document.getElementById("rows-prev").disabled = state.offset === 0;
    document.getElementById("rows-next").disabled = last >= answer.totalSize;
    draw(answer, start, end);
  };
  poll = ctx.every(REFRESH_MS, refresh);
  return poll;
}

// The console's shell: login, the caller's role, the views by URL fragment, and the live refresh.

import {ApiError, api, forgetToken, keepToken, token} from "./api.js";
import {clear, el} from "./dom.js";
import {clusterView} from "./cluster.js";
import {filesView} from "./files.js";
import {taskView} from "./task.js";
import {tasksView} from "./tasks.js";
import {timelineView} from "./timeline.js";

const VIEWS = {tasks: tasksView, task: taskView, timeline: timelineView, cluster: clusterView, files: filesView};
const $ = (id) => document.getElementById(id);

let current = null; // the view shown: {stop()}
let session = null; // {name, roles, admin}

// What a view gets: where to draw, the route's argument and parameters, and the session.
function context(name, argument, params) {
  return {
    root: $("view"),
    argument,
    params,
    session,
    // Re-render with new parameters (filters, paging) by changing the fragment: links and the
    // back button keep them.
    go(path) {
      window.location.hash = path;
    },
    // Record new parameters in the fragment without drawing the view again (a filter being typed
    // keeps its focus); the view refreshes itself.
    replace(path) {
      history.replaceState(null, "", path);
    },
    problem: showProblem,
    // Every view refreshes itself by polling (one request at a time: a slow answer delays the
    // next, never piles up); a 401 logs out, a 403 says so. Returns {stop, now}.
    every(ms, refresh) {
      let timer = null;
      let stopped = false;
      let running = null;
      const tick = async () => {
        clearTimeout(timer);
        if (stopped) return;
        if (!document.hidden) {
          try {
            await refresh();
            showProblem(null);
          } catch (error) {
            if (!stopped) report(error);
          }
        }
        if (!stopped) timer = setTimeout(() => { running = tick(); }, ms);
      };
      running = tick();
      return {
        stop() {
          stopped = true;
          clearTimeout(timer);
        },
        // Refresh at once (after an action or a new filter), once the refresh under way is done.
        async now() {
          await running;
          running = tick();
          await running;
        },
      };
    },
  };
}

function parseRoute() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?");
  const [name, ...rest] = path.split("/");
  const argument = rest.length ? decodeURIComponent(rest.join("/")) : null;
  return {name: VIEWS[name] ? name : "tasks", argument, params: new URLSearchParams(search)};
}

function route() {
  if (!session) return;
  if (current) current.stop();
  current = null;
  clear($("view"));
  const {name, argument, params} = parseRoute();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name || (name === "task" && link.dataset.view === "tasks"));
  }
  current = VIEWS[name](context(name, argument, params));
}

function showProblem(message) {
  const box = $("problem");
  box.textContent = message || "";
  box.hidden = !message;
}

function report(error) {
  if (error instanceof ApiError && error.status === 401) {
    logout("The token was not accepted (401): log in again.");
    return;
  }
  if (error instanceof ApiError && error.status === 403) {
    showProblem(`Not allowed (403): ${error.message}`);
    return;
  }
  showProblem(error.message || String(error));
}

async function start(secret) {
  const who = await api("/cxs/whoami", {secret});
  keepToken(secret); // accepted: the views' requests use it from now on
  session = {name: who.name, roles: who.roles, admin: who.roles.includes("ADMINISTRATOR")};
  document.body.classList.toggle("admin", session.admin);
  $("who").textContent = `${who.name} (${who.roles.join(", ")})`;
  for (const id of ["nav", "who", "logout"]) $(id).hidden = false;
  $("login").hidden = true;
  route();
}

function logout(message) {
  forgetToken();
  session = null;
  if (current) current.stop();
  current = null;
  clear($("view"));
  for (const id of ["nav", "who", "logout"]) $(id).hidden = true;
  $("login").hidden = false;
  $("token").value = "";
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  showProblem(null);
}

async function login(event) {
  event.preventDefault();
  const secret = $("token").value.trim();
  if (!secret) return;
  $("login-error").hidden = true; // an earlier refusal is not this token's answer
  try {
    await start(secret);
    $("token").value = "";
  } catch (error) {
    const message = error instanceof ApiError && error.status === 401
      ? "This token is not accepted by the node (401)."
      : error instanceof ApiError && error.status === 403
        ? `This token may not read tasks (403): ${error.message}`
        : error.message;
    logout(message);
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(null));
  const kept = token();
  if (kept) {
    start(kept).catch((error) => logout(error.status === 401 ? "The token was not accepted (401): log in again." : error.message));
  } else {
    logout(null);
  }
});


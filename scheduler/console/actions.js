// The operator's actions on a task, for an ADMINISTRATOR only: a VIEWER's page has no button at
// all. Which buttons show follows the status machine (README, "The status machine"); the node
// decides anyway and answers 409 for a wrong state, which is shown as it is.

import {api, taskPath} from "./api.js";
import {el} from "./dom.js";

const CANCELLABLE = ["SCHEDULED", "WAITING", "RUNNING", "CRASHED", "COMPLETED"];
const RETRYABLE = ["FAILED", "CANCELLED"];

// A button that asks for a second click before acting (the first one arms it for a few seconds),
// and is disabled while its request is under way: one click is one request.
function actionButton(label, id, perform, {confirm = null} = {}) {
  let armed = false;
  let timer = null;
  const button = el("button", {type: "button", id, class: "action"}, label);
  button.addEventListener("click", async () => {
    if (confirm && !armed) {
      armed = true;
      button.textContent = confirm;
      button.classList.add("armed");
      timer = setTimeout(() => {
        armed = false;
        button.textContent = label;
        button.classList.remove("armed");
      }, 5000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    try {
      await perform();
    } finally {
      button.disabled = false;
      armed = false;
      button.textContent = label;
      button.classList.remove("armed");
    }
  });
  return button;
}

// The action bar of a task; ``done(message, error)`` reports and refreshes the page.
export function actionBar(task, done) {
  const id = task.itemId;
  const act = (what, method, tail) => async () => {
    try {
      await api(taskPath(id, tail), {method});
      await done(`${what}: done.`, null);
    } catch (error) {
      await done(null, error);
    }
  };
  const buttons = [];
  if (CANCELLABLE.includes(task.status)) {
    buttons.push(actionButton("Cancel", "action-cancel", act("Cancel", "DELETE", ""), {confirm: "Really cancel?"}));
  }
  if (RETRYABLE.includes(task.status)) {
    const reset = el("input", {type: "checkbox", id: "retry-reset"});
    buttons.push(el("span", {class: "retry"},
      actionButton("Retry", "action-retry", async () => act("Retry", "POST", `/retry${reset.checked ? "?resetFailureCount=true" : ""}`)()),
      el("label", {for: "retry-reset"}, reset, " reset failures")));
  }
  if (task.status === "CRASHED") buttons.push(actionButton("Resume", "action-resume", act("Resume", "POST", "/resume")));
  if (task.status !== "RUNNING" && !task.suspended && task.enabled !== false) {
    buttons.push(actionButton("Run now", "action-run", act("Run now", "POST", "/run")));
  }
  buttons.push(task.suspended
    ? actionButton("Unsuspend", "action-unsuspend", act("Unsuspend", "POST", "/unsuspend"))
    : actionButton("Suspend", "action-suspend", act("Suspend", "POST", "/suspend"), {confirm: "Really suspend?"}));
  return el("div", {class: "actions", id: "actions"}, buttons);
}

// The retry settings form: maxRetries and retryDelay (seconds here, milliseconds in the API).
export function retrySettingsForm(task, done) {
  const id = task.itemId;
  const retries = el("input", {type: "number", min: 0, max: 1000, id: "config-max-retries", value: task.maxRetries});
  const delay = el("input", {type: "number", min: 0, step: "any", id: "config-retry-delay", value: (task.retryDelay ?? 0) / 1000});
  const form = el("form", {class: "retry-settings", id: "retry-settings", novalidate: true},
    el("label", {for: "config-max-retries"}, "Max retries"), retries,
    el("label", {for: "config-retry-delay"}, "Retry delay (s)"), delay,
    el("button", {type: "submit", class: "action"}, "Save retry settings"),
    task.overrides ? el("button", {type: "button", class: "action", id: "config-clear", onclick: async () => {
      try {
        await api(taskPath(id, "/config"), {method: "DELETE"});
        await done("Overrides removed: the file's values are in force.", null);
      } catch (error) {
        await done(null, error);
      }
    }}, "Remove overrides") : null);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const maxRetries = Number(retries.value);
    const delayMs = Math.round(Number(delay.value) * 1000);
    if (!Number.isInteger(maxRetries) || maxRetries < 0 || !(delayMs >= 0)) {
      await done(null, new Error("Max retries must be a whole number from 0 and the delay a number of seconds from 0."));
      return;
    }
    try {
      await api(taskPath(id, `/config?maxRetries=${maxRetries}&retryDelay=${delayMs}`), {method: "PUT"});
      await done("Retry settings saved (kept across reloads of the file).", null);
    } catch (error) {
      await done(null, error);
    }
  });
  return form;
}

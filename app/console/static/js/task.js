// One task: its summary, controls, result and reject downloads, and its event history, all
// kept current by GET /tasks/{id}/events (replayed from the first event, then live).

import { api, streamEvents } from "./api.js";
import { ACTIONS, TERMINAL, allowed, control, label, progressText, rateText } from "./tasks-common.js";
import { downloadLink, el, formatDuration, say, sayError, setProgress, setupKeyForm } from "./ui.js";

const taskId = document.getElementById("task-id").dataset.taskId;
const events = document.getElementById("task-events");
let stream = null;
let lastEventId = 0;
const RECONNECT_MS = 1000; // after the server closed the stream (a restart) or could not be reached

function json(value) {
  return value === null || value === undefined ? "—" : JSON.stringify(value, null, 2);
}

function summary(task) {
  const items = [
    ["Kind", task.kind],
    ["Owner", task.owner],
    ["State", task.state + (task.control ? ` (${task.control} requested)` : "")],
    ["Attempts", `${task.attempts} of ${task.max_attempts}`],
    ["Created", task.created_at],
    ["Started", task.started_at],
    ["Paused", task.paused_at],
    ["Finished", task.finished_at],
    ["Runner", task.runner],
  ];
  if (task.result && typeof task.result.rejected === "number") items.push(["Rejected rows", String(task.result.rejected)]);
  const list = document.getElementById("task-summary");
  list.replaceChildren(
    ...items.filter(([, value]) => value).flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]),
  );
  list.querySelectorAll("dd")[2].className = `state state-${task.state}`;
}

function showProgress(progress) {
  setProgress(document.getElementById("task-progress"), progress.done ?? 0, progress.total);
  const extra = [rateText(progress), progress.eta_seconds ? `ETA ${formatDuration(progress.eta_seconds)}` : ""];
  document.getElementById("task-progress-text").textContent = [progressText(progress), ...extra].filter(Boolean).join(" · ");
}

function showActions(state) {
  for (const button of document.querySelectorAll("#task-actions button")) {
    button.disabled = !allowed(button.dataset.action, state);
  }
}

function links(result) {
  const box = document.getElementById("task-links");
  const found = [];
  if (result?.file_id) found.push(downloadLink(`/files/${result.file_id}`, "Download the result", result.filename));
  if (result?.reject_file_id) {
    found.push(downloadLink(`/files/${result.reject_file_id}`, `Download the rejected rows (${result.rejected})`));
  }
  box.replaceChildren(...found.flatMap((link, i) => (i ? [" · ", link] : [link])));
}

function render(task) {
  summary(task);
  showProgress(task.progress);
  showActions(task.state);
  links(task.result);
  const error = document.getElementById("task-error");
  error.hidden = !task.error;
  error.textContent = task.error ? `Error: ${task.error}` : "";
  document.getElementById("task-params").textContent = json(task.params);
  document.getElementById("task-checkpoint").textContent = json(task.checkpoint);
  document.getElementById("task-result").textContent = json(task.result);
}

function onEvent(name, data, id) {
  if (name === "state") {
    if (id) lastEventId = id;
    events.append(el("li", {}, el("time", { datetime: data.at, text: data.at }), ` ${data.state}`, data.message ? ` — ${data.message}` : ""));
    showActions(data.state);
  } else if (name === "progress") {
    showProgress(data);
    if (data.state) showActions(data.state);
  } else if (name === "end") {
    render(data);
  }
}

function watch() {
  stream?.abort();
  stream = new AbortController();
  const mine = stream;
  // The stream ends with the task, or when the server stops: then, with the task still going,
  // connect again (Last-Event-ID: no state event twice) once the server is back.
  const again = () => setTimeout(() => stream === mine && watch(), RECONNECT_MS);
  streamEvents(`/tasks/${encodeURIComponent(taskId)}/events`, onEvent, { signal: mine.signal, lastEventId })
    .then(async () => {
      if (mine.signal.aborted) return;
      const task = await api(`/tasks/${encodeURIComponent(taskId)}`);
      render(task);
      if (!TERMINAL.has(task.state)) again();
    })
    .catch((error) => {
      sayError(error);
      if (error.status === 0) again(); // the server cannot be reached (yet)
    });
}

async function act(action) {
  try {
    const task = await control(taskId, action);
    render(task);
    say(`${label(action)} requested: the task is ${task.state}.`);
    if (!TERMINAL.has(task.state)) watch();
  } catch (error) {
    sayError(error);
  }
}

async function load() {
  events.replaceChildren();
  lastEventId = 0;
  try {
    render(await api(`/tasks/${encodeURIComponent(taskId)}`));
  } catch (error) {
    sayError(error);
    return;
  }
  watch();
}

document.getElementById("task-actions").append(
  ...ACTIONS.map((action) =>
    el("button", { type: "button", "data-action": action, text: label(action), onclick: () => act(action) }),
  ),
);
setupKeyForm(load);
await load();

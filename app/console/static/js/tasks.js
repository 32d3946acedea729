// The tasks list: one page of GET /tasks, each moving task followed over its event stream
// (GET /tasks/{id}/events), and one slow refresh of the page for tasks started elsewhere.

import { api, streamEvents } from "./api.js";
import { ACTIONS, MOVING, allowed, control, label, progressText, rateText } from "./tasks-common.js";
import { el, formatDuration, say, sayError, setProgress, setupKeyForm } from "./ui.js";

// Browsers open about six connections per origin: keep some free for clicks and page loads.
const MAX_STREAMS = 3;
const REFRESH_MS = 3000;
const PAGE_SIZE = 50;

const body = document.querySelector("#tasks tbody");
const filters = document.getElementById("task-filters");
const rows = new Map(); // task id -> { row, task }
const streams = new Map(); // task id -> AbortController
let cursor = null; // the page shown
let nextCursor = null;
let pages = []; // cursors of the pages before, for "First page"

function filterQuery() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const data = new FormData(filters);
  for (const name of ["state", "kind"]) if (data.get(name)) query.set(name, data.get(name));
  if (cursor) query.set("cursor", cursor);
  return query;
}

function buildRow(task) {
  const bar = el("progress", { "aria-label": `Progress of task ${task.id.slice(0, 8)}` });
  const buttons = ACTIONS.map((action) =>
    el("button", {
      type: "button",
      "data-action": action,
      "aria-label": `${label(action)} task ${task.id.slice(0, 8)}`,
      text: label(action),
      onclick: () => act(task.id, action),
    }),
  );
  const row = el(
    "tr",
    { "data-task-id": task.id },
    el("td", {}, el("a", { href: `/ui/tasks/${task.id}`, text: task.id.slice(0, 8) })),
    el("td", { class: "kind", text: task.kind }),
    el("td", { class: "owner", text: task.owner }),
    el("td", {}, el("span", { class: "state" })),
    el("td", {}, bar),
    el("td", { class: "done num" }),
    el("td", { class: "rate num" }),
    el("td", { class: "eta num" }),
    el("td", { class: "actions" }, ...buttons),
  );
  return row;
}

function showState(row, state) {
  const cell = row.querySelector(".state");
  cell.textContent = state;
  cell.className = `state state-${state}`;
  row.dataset.state = state;
  for (const button of row.querySelectorAll("button[data-action]")) {
    button.disabled = !allowed(button.dataset.action, state);
  }
}

function showProgress(row, progress) {
  setProgress(row.querySelector("progress"), progress.done ?? 0, progress.total);
  row.querySelector(".done").textContent = progressText(progress);
  row.querySelector(".rate").textContent = rateText(progress);
  row.querySelector(".eta").textContent = formatDuration(progress.eta_seconds);
}

function update(task) {
  let entry = rows.get(task.id);
  if (!entry) {
    entry = { row: buildRow(task), task };
    rows.set(task.id, entry);
  }
  entry.task = task;
  showState(entry.row, task.state);
  showProgress(entry.row, task.progress);
  return entry.row;
}

function follow(taskId) {
  if (streams.has(taskId) || streams.size >= MAX_STREAMS) return;
  const stop = new AbortController();
  streams.set(taskId, stop);
  const onEvent = (name, data) => {
    const entry = rows.get(taskId);
    if (!entry) return;
    if (name === "state" || name === "progress") {
      if (data.state) showState(entry.row, data.state);
      if (name === "progress") showProgress(entry.row, data);
      if (data.state && !MOVING.has(data.state)) stop.abort(); // paused: nothing moves until a resume
    } else if (name === "end") {
      update(data);
    }
  };
  streamEvents(`/tasks/${encodeURIComponent(taskId)}/events`, onEvent, { signal: stop.signal })
    .catch(sayError)
    .finally(() => {
      if (streams.get(taskId) === stop) streams.delete(taskId);
      followMoving();
    });
}

function followMoving() {
  for (const [id, { row }] of rows) if (MOVING.has(row.dataset.state)) follow(id);
}

async function act(taskId, action) {
  try {
    const task = await control(taskId, action);
    update(task);
    say(`Task ${taskId.slice(0, 8)}: ${action} requested (now ${task.state}).`);
    followMoving();
  } catch (error) {
    sayError(error);
  }
}

async function load() {
  let page;
  try {
    page = await api(`/tasks?${filterQuery()}`);
  } catch (error) {
    sayError(error);
    return;
  }
  const shown = new Set(page.items.map((task) => task.id));
  for (const [id, entry] of rows) {
    if (shown.has(id)) continue;
    entry.row.remove();
    rows.delete(id);
    streams.get(id)?.abort();
  }
  const ordered = page.items.map(update);
  // Re-inserting rows would drop keyboard focus every refresh: only when the order changed.
  if (ordered.some((row, index) => body.children[index] !== row) || body.children.length !== ordered.length) {
    body.replaceChildren(...ordered);
  }
  document.getElementById("tasks-empty").hidden = page.items.length > 0;
  nextCursor = page.next_cursor;
  document.getElementById("page-next").disabled = !nextCursor;
  document.getElementById("page-first").disabled = pages.length === 0;
  followMoving();
}

function restart() {
  for (const stop of streams.values()) stop.abort();
  streams.clear();
  rows.clear();
  cursor = null;
  pages = [];
  load();
}

async function loadKinds() {
  const select = document.getElementById("filter-kind");
  try {
    const kinds = await api("/tasks/kinds");
    select.append(...kinds.map((kind) => el("option", { value: kind.name, text: kind.name })));
  } catch (error) {
    sayError(error);
  }
  const wanted = new URLSearchParams(location.search);
  for (const name of ["state", "kind"]) if (wanted.get(name)) filters.elements[name].value = wanted.get(name);
}

filters.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const name of ["state", "kind"]) if (filters.elements[name].value) query.set(name, filters.elements[name].value);
  history.replaceState(null, "", query.size ? `?${query}` : location.pathname);
  restart();
});
document.getElementById("page-next").addEventListener("click", () => {
  pages.push(cursor);
  cursor = nextCursor;
  load();
});
document.getElementById("page-first").addEventListener("click", () => {
  pages = [];
  cursor = null;
  load();
});

setupKeyForm(restart);
await loadKinds();
await load();
setInterval(load, REFRESH_MS);

// The tasks list: one page of GET /tasks, kept live by one stream of every change to the
// caller's tasks (GET /tasks/events) — no stream per row, no refresh timer. The stream's first
// event says who is watching: the owner column is for admins, who see everyone's tasks.

import { api, streamEvents } from "./api.js";
import { ACTIONS, allowed, control, label, progressText, rateText } from "./tasks-common.js";
import { el, formatDuration, say, sayError, setProgress, setupKeyForm } from "./ui.js";

const PAGE_SIZE = 50;
const RECONNECT_MS = 1000; // after the server closed the stream (a restart) or the network dropped

const body = document.querySelector("#tasks tbody");
const filters = document.getElementById("task-filters");
const table = document.getElementById("tasks");
const rows = new Map(); // task id -> { row, task }
let watch = null; // AbortController of the stream
let reloadSoon = null; // a new task belongs on this page: one GET /tasks for a burst of them
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
    el("td", { class: "owner", text: task.owner }), // shown to admins only (see showOwners)
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

function matchesFilters(task) {
  const data = new FormData(filters);
  return (!data.get("state") || data.get("state") === task.state) && (!data.get("kind") || data.get("kind") === task.kind);
}

// A change from the stream: a row shown is updated; a task not shown that belongs on the first
// page (new, or newly matching the filters) brings the page in again, in the server's order.
function onChange(task) {
  if (rows.has(task.id)) {
    update(task);
  } else if (cursor === null && matchesFilters(task)) {
    clearTimeout(reloadSoon);
    reloadSoon = setTimeout(load, 100);
  }
}

function showOwners(admin) {
  table.classList.toggle("show-owner", admin);
}

function watchTasks() {
  watch?.abort();
  const stop = new AbortController();
  watch = stop;
  const onEvent = (name, data) => {
    if (name === "watching") {
      showOwners(data.admin);
      load(); // after subscribing: a change from here on is on the stream
    } else if (name === "task") {
      onChange(data);
    }
  };
  let refused = false;
  streamEvents("/tasks/events", onEvent, { signal: stop.signal })
    .catch((error) => {
      refused = error.status === 401 || error.status === 403;
      sayError(error);
    })
    .finally(() => {
      // The server stopped or the network dropped: try again (a refused key waits for a new one).
      if (watch === stop && !stop.signal.aborted && !refused) setTimeout(() => watch === stop && watchTasks(), RECONNECT_MS);
    });
}

async function act(taskId, action) {
  try {
    const task = await control(taskId, action);
    update(task);
    say(`Task ${taskId.slice(0, 8)}: ${action} requested (now ${task.state}).`);
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
}

function restart() {
  for (const { row } of rows.values()) row.remove();
  rows.clear();
  cursor = null;
  pages = [];
  showOwners(false); // until the new key's stream says whose eyes these are
  watchTasks(); // its "watching" event loads the page
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
watchTasks();

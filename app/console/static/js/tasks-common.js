// What the tasks list and the task page share: which controls a state allows, and calling them.

import { api } from "./api.js";

export const TERMINAL = new Set(["cancelled", "succeeded", "failed"]);
// States worth a live stream: something is about to change without anyone asking.
export const MOVING = new Set(["queued", "running", "pausing", "cancelling", "failing"]);

// Mirrors the server's rules (a 409 names the current state if they ever differ).
const ALLOWED = {
  pause: new Set(["queued", "running"]),
  resume: new Set(["paused", "pausing"]),
  cancel: new Set(["queued", "running", "pausing", "paused"]),
};
export const ACTIONS = ["pause", "resume", "cancel"];
const LABELS = { pause: "Pause", resume: "Resume", cancel: "Cancel" };

export function allowed(action, state) {
  return ALLOWED[action].has(state);
}

export function label(action) {
  return LABELS[action];
}

export function control(taskId, action) {
  return api(`/tasks/${encodeURIComponent(taskId)}/${action}`, { method: "POST" });
}

export function progressText(progress) {
  const unit = progress.unit || "";
  const done = progress.done ?? 0;
  const total = progress.total;
  const amount = (value) => (unit === "bytes" ? formatBytesShort(value) : String(Math.round(value * 10) / 10));
  return total === null || total === undefined ? `${amount(done)} ${unit}` : `${amount(done)} / ${amount(total)} ${unit}`;
}

function formatBytesShort(value) {
  if (value < 1024) return `${value}`;
  if (value < 1024 ** 2) return `${(value / 1024).toFixed(1)} Ki`;
  if (value < 1024 ** 3) return `${(value / 1024 ** 2).toFixed(1)} Mi`;
  return `${(value / 1024 ** 3).toFixed(2)} Gi`;
}

export function rateText(progress) {
  if (progress.rate === null || progress.rate === undefined) return "";
  const unit = progress.unit === "bytes" ? "B" : progress.unit || "";
  return `${formatBytesShort(Math.round(progress.rate * 10) / 10)} ${unit}/s`;
}

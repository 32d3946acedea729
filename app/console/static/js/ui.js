// Shared page parts: the API key form, the status message, element building, number formatting.

import { apiKey, download, setApiKey } from "./api.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function say(text, { error = false } = {}) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.classList.toggle("error", error);
}

export function sayError(error) {
  say(error.message || String(error), { error: true });
}

// The key form: kept in sessionStorage (this tab only), then `onChange` reloads what the page shows.
export function setupKeyForm(onChange) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const status = document.getElementById("key-status");
  const show = () => {
    status.textContent = apiKey() ? "Key in use (this tab only)" : "No key: owner 'local' when the server allows it";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    input.value = "";
    show();
    say("");
    onChange();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    setApiKey("");
    show();
    onChange();
  });
  show();
}

// A link that downloads with the session's key (plain navigation cannot send one).
export function downloadLink(url, label, filename) {
  return el("a", {
    href: url,
    text: label,
    onclick: (event) => {
      if (!apiKey()) return; // no key: the browser downloads it itself, Range and all
      event.preventDefault();
      download(url, filename).catch(sayError);
    },
  });
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

export function formatAmount(value, unit) {
  if (value === null || value === undefined) return "?";
  if (unit === "bytes") return formatBytes(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function setProgress(bar, done, total) {
  if (total === null || total === undefined || total <= 0) {
    bar.removeAttribute("value"); // indeterminate
    return;
  }
  bar.max = total;
  bar.value = Math.min(done, total);
}

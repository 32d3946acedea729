// The console's one way to the API: fetch with the session's key as Bearer, problems turned
// into readable messages, and server-sent events read over fetch (EventSource cannot send a key).

const KEY = "tsm.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

export class ApiError extends Error {
  constructor(status, message, problem) {
    super(message);
    this.status = status;
    this.problem = problem;
  }
}

function explain(status, problem) {
  const detail = problem && (problem.detail || problem.title);
  if (status === 401) {
    return apiKey()
      ? `The API key was refused (${detail || "401"}). Enter a valid key above.`
      : "This server needs an API key: enter one above (an admin makes one with `tsm-server keys create OWNER`).";
  }
  if (status === 404) return `Not found (or not yours): ${detail || "404"}`;
  if (status === 0) return "The server cannot be reached.";
  return `${status} ${detail || "request failed"}`;
}

export async function errorFrom(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not a problem document: the status says enough
  }
  return new ApiError(response.status, explain(response.status, problem), problem);
}

export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders({ Accept: "application/json", ...headers }), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, explain(0), null);
  }
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

function parseEvent(block) {
  const message = { event: "message", data: "", id: null };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments are keep-alives
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") message.event = value;
    else if (field === "data") message.data += (message.data ? "\n" : "") + value;
    else if (field === "id") message.id = Number(value);
  }
  return message;
}

// Read a text/event-stream until it ends or `signal` aborts; onEvent(name, data, id) per event.
export async function streamEvents(path, onEvent, { signal, lastEventId = 0 } = {}) {
  const headers = authHeaders({ Accept: "text/event-stream" });
  if (lastEventId) headers["Last-Event-ID"] = String(lastEventId);
  let response;
  try {
    response = await fetch(path, { headers, signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    throw new ApiError(0, explain(0), null);
  }
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (message.data) onEvent(message.event, JSON.parse(message.data), message.id);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  }
}

// Downloads: a plain link works without auth; with a key the bytes are fetched with it.
export async function download(url, filename) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename || url.split("/").pop();
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

// Files: the list from GET /files, and browser uploads over tus (tus-js-client, window.tus).
//
//   pick / drop a file ─▶ tus.Upload ─▶ POST /files, PATCH …   Pause = abort (the server keeps
//   what arrived); Resume = start again (HEAD, then PATCH from the server's offset); Cancel =
//   abort + DELETE. After a reload, the same file picked again resumes: tus-js-client remembers
//   its upload URL in localStorage under the file's fingerprint. A network cut: tus-js-client
//   does not retry while the browser is offline, so the upload waits for the "online" event,
//   then starts again the same way (HEAD for the server's offset, PATCH from there).

import { api, apiKey } from "./api.js";
import { downloadLink, el, formatBytes, say, sayError, setProgress, setupKeyForm } from "./ui.js";

const CHUNK_BYTES = 8 * 1024 * 1024; // one PATCH each: a cut connection loses at most this much
const PAGE_SIZE = 50;
const uploadsBody = document.querySelector("#uploads tbody");
const filesBody = document.querySelector("#files tbody");
let cursor = null;
let nextCursor = null;

function uploadRow(file) {
  const bar = el("progress", { "aria-label": `Upload progress of ${file.name}`, max: String(file.size || 1), value: "0" });
  const status = el("span", { class: "status", text: "starting" });
  const buttons = {
    pause: el("button", { type: "button", text: "Pause", "aria-label": `Pause upload of ${file.name}` }),
    resume: el("button", { type: "button", text: "Resume", "aria-label": `Resume upload of ${file.name}`, disabled: true }),
    cancel: el("button", { type: "button", text: "Cancel", "aria-label": `Cancel upload of ${file.name}` }),
  };
  const row = el(
    "tr",
    { "data-upload": file.name },
    el("td", { text: `${file.name} (${formatBytes(file.size)})` }),
    el("td", {}, bar),
    el("td", {}, status),
    el("td", {}, buttons.pause, " ", buttons.resume, " ", buttons.cancel),
  );
  uploadsBody.prepend(row);
  return { row, bar, status, buttons };
}

function startUpload(file) {
  const view = uploadRow(file);
  const setRunning = (running) => {
    view.buttons.pause.disabled = !running;
    view.buttons.resume.disabled = running;
  };
  const finish = (text) => {
    view.status.textContent = text;
    for (const button of Object.values(view.buttons)) button.disabled = true;
  };
  const upload = new window.tus.Upload(file, {
    endpoint: "/files",
    chunkSize: CHUNK_BYTES,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
    headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {},
    removeFingerprintOnSuccess: true,
    onProgress(sent, total) {
      setProgress(view.bar, sent, total);
      view.status.textContent = `${formatBytes(sent)} of ${formatBytes(total)}`;
    },
    onSuccess() {
      setProgress(view.bar, file.size, file.size);
      finish("complete");
      view.row.dataset.state = "complete";
      say(`Uploaded ${file.name}.`);
      loadFiles();
    },
    onError(error) {
      if (!navigator.onLine && view.row.dataset.state === "uploading") {
        waitForTheNetwork();
        return;
      }
      setRunning(false);
      const status = error.originalResponse?.getStatus?.();
      view.status.textContent = status === 401 ? "refused: enter a valid API key above" : `failed: ${error.message}`;
      view.row.dataset.state = "error";
      sayError(status === 401 ? new Error("The upload needs a valid API key: enter it above, then Resume.") : error);
    },
  });
  view.buttons.pause.addEventListener("click", () => {
    upload.abort(); // what reached the server stays there
    setRunning(false);
    view.status.textContent = "paused";
    view.row.dataset.state = "paused";
  });
  const resume = () => {
    upload.options.headers = apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
    setRunning(true);
    view.row.dataset.state = "uploading";
    upload.start(); // asks the server for its offset first
  };
  const waitForTheNetwork = () => {
    view.row.dataset.state = "offline";
    view.status.textContent = "offline: continues when the network is back";
    say(`${file.name}: the network is gone; the upload continues when it is back.`);
    const back = () => {
      if (view.row.dataset.state !== "offline") return; // paused or cancelled meanwhile
      say(`${file.name}: back online, resuming from the server's offset.`);
      resume();
    };
    window.addEventListener("online", back, { once: true });
  };
  view.buttons.resume.addEventListener("click", resume);
  view.buttons.cancel.addEventListener("click", () => {
    upload.abort(true).then(
      () => finish("cancelled"),
      (error) => sayError(error),
    );
    view.row.dataset.state = "cancelled";
    loadFiles();
  });
  upload.findPreviousUploads().then((previous) => {
    if (previous.length) {
      upload.resumeFromPreviousUpload(previous[0]);
      say(`Resuming ${file.name} from where the server stopped.`);
    }
    setRunning(true);
    view.row.dataset.state = "uploading";
    upload.start();
  }, sayError);
}

function fileRow(file) {
  const name = file.filename || file.id.slice(0, 8);
  const bar = el("progress", { "aria-label": `Stored part of ${name}` });
  setProgress(bar, file.offset, file.length);
  const link = file.state === "complete" ? downloadLink(`/files/${file.id}`, "Download", file.filename) : null;
  return el(
    "tr",
    { "data-file-id": file.id },
    el("td", { text: name }),
    el("td", { text: file.origin }),
    el("td", { class: "state", text: file.state }),
    el("td", {}, bar),
    el("td", { class: "num", text: formatBytes(file.length) }),
    el("td", { text: file.created_at }),
    el("td", {}, link),
  );
}

async function loadFiles() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  try {
    const page = await api(`/files?${query}`);
    filesBody.replaceChildren(...page.items.map(fileRow));
    document.getElementById("files-empty").hidden = page.items.length > 0;
    nextCursor = page.next_cursor;
    document.getElementById("files-next").disabled = !nextCursor;
    document.getElementById("files-first").disabled = !cursor;
  } catch (error) {
    sayError(error);
  }
}

const input = document.getElementById("upload-input");
input.addEventListener("change", () => {
  for (const file of input.files) startUpload(file);
  input.value = "";
});
const zone = document.getElementById("drop-zone");
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  for (const file of event.dataTransfer.files) startUpload(file);
});
document.getElementById("files-refresh").addEventListener("click", loadFiles);
document.getElementById("files-next").addEventListener("click", () => {
  cursor = nextCursor;
  loadFiles();
});
document.getElementById("files-first").addEventListener("click", () => {
  cursor = null;
  loadFiles();
});

setupKeyForm(loadFiles);
await loadFiles();

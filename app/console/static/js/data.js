// Import wizard and export: pick a complete upload, see how the import will read it (the server's
// GET /previews/csv: dialect, column names and types, first rows), name the table, start
// import_csv; or start export_csv on a table. Both then continue on the task's page, where the
// result and reject files are linked. Delimiter and header left on "detect" are sniffed by the
// server, for the preview and the import alike, so what the preview shows is what gets imported.

import { api } from "./api.js";
import { el, formatBytes, sayError, setupKeyForm } from "./ui.js";

const PREVIEW_ROWS = 10;
const DELIMITER_NAMES = { ",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe" };
const importForm = document.getElementById("import-form");
const fileSelect = document.getElementById("import-file");
const previewNote = document.getElementById("preview-note");
const previewErrors = document.getElementById("preview-errors");
let previewRequest = null;

// The dialect options the user fixed; the rest are left to the server to sniff.
function dialectOptions() {
  const form = importForm.elements;
  const options = {};
  if (form.delimiter.value) options.delimiter = form.delimiter.value;
  if (form.header.value) options.header = form.header.value === "true";
  return options;
}

function describeDialect({ delimiter, quote, header }, given) {
  const how = (name) => (name in given ? "given" : "detected");
  const name = DELIMITER_NAMES[delimiter] || JSON.stringify(delimiter);
  const first = header ? "the first row holds the column names" : "no header row";
  return `Delimiter ${name} (${how("delimiter")}), quote ${quote}, ${first} (${how("header")}).`;
}

function clearPreview(note = "") {
  document.querySelector("#preview thead").replaceChildren();
  document.querySelector("#preview tbody").replaceChildren();
  previewNote.textContent = note;
}

function showPreview(preview, given) {
  const { columns, rows } = preview;
  document.querySelector("#preview thead").replaceChildren(
    el("tr", {}, ...columns.map((column) => el("th", { scope: "col", text: column.name }))),
    el("tr", { class: "types" }, ...columns.map((column) => el("td", { text: column.type }))),
  );
  document.querySelector("#preview tbody").replaceChildren(
    ...rows.map((row) => el("tr", {}, ...columns.map((_, i) => el("td", { text: row[i] ?? "" })))),
  );
  const renamed = preview.renamed.map((item) => `${JSON.stringify(item.header)} → ${item.column}`);
  previewNote.textContent = [
    describeDialect(preview.dialect, given),
    `Types inferred from ${preview.sampled_records} records across the file; the first ${rows.length} rows shown.`,
    renamed.length ? `Renamed columns: ${renamed.join(", ")}.` : "",
  ].join(" ");
}

// What a preview problem means for the wizard, in words (the problem's detail kept).
function previewProblem(error) {
  const detail = error.problem?.detail || error.problem?.title || "";
  if (error.status === 404) return "This file no longer exists (or is not yours): pick another one.";
  if (error.status === 409) return "This upload is not complete yet: finish it on the Files page first.";
  if (error.status === 422) return `The file cannot be read as CSV with these options: ${detail}`;
  return error.message;
}

async function loadPreview() {
  previewRequest?.abort();
  previewErrors.replaceChildren();
  clearPreview();
  if (!fileSelect.value) return;
  const request = new AbortController();
  previewRequest = request;
  const given = dialectOptions();
  const query = new URLSearchParams({ file_id: fileSelect.value, rows: String(PREVIEW_ROWS), ...given });
  previewNote.textContent = "Reading the file…";
  try {
    showPreview(await api(`/previews/csv?${query}`, { signal: request.signal }), given);
    proposeTableName();
  } catch (error) {
    if (error.name === "AbortError") return; // a newer choice replaced this request
    clearPreview();
    previewErrors.replaceChildren(el("p", { text: previewProblem(error) }));
  }
}

function proposeTableName() {
  const name = fileSelect.selectedOptions[0]?.dataset.filename || "";
  const table = document.getElementById("import-table");
  if (!table.value && name) table.value = name.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_]+/g, "_").replace(/^(\d)/, "t_$1");
}

async function loadFiles() {
  try {
    const page = await api("/files?state=complete&origin=upload&limit=200");
    const wanted = new URLSearchParams(location.search).get("file");
    fileSelect.replaceChildren(
      el("option", { value: "", text: page.items.length ? "(choose a file)" : "(no complete uploads yet)" }),
      ...page.items.map((file) =>
        el("option", {
          value: file.id,
          "data-filename": file.filename || "",
          text: `${file.filename || file.id.slice(0, 8)} (${formatBytes(file.length)})`,
          selected: file.id === wanted,
        }),
      ),
    );
    if (fileSelect.value) loadPreview();
  } catch (error) {
    sayError(error);
  }
}

async function loadTables() {
  try {
    const page = await api("/tasks?kind=import_csv&state=succeeded&limit=200");
    const tables = [...new Set(page.items.map((task) => task.result?.table).filter(Boolean))];
    document.getElementById("known-tables").replaceChildren(...tables.map((name) => el("option", { value: name })));
  } catch (error) {
    sayError(error);
  }
}

function showProblem(box, error) {
  const items = (error.problem?.errors || []).map((item) =>
    el("li", { text: `${(item.loc || []).filter((part) => part !== "body").join(".")}: ${item.msg}` }),
  );
  box.replaceChildren(el("p", { text: error.message }), items.length ? el("ul", {}, ...items) : null);
}

async function start(box, kind, params) {
  box.replaceChildren();
  try {
    const task = await api("/tasks", { method: "POST", body: { kind, params } });
    location.assign(`/ui/tasks/${task.id}`);
  } catch (error) {
    showProblem(box, error);
    sayError(error);
  }
}

importForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const form = importForm.elements;
  const box = document.getElementById("import-errors");
  if (!form.file_id.value) {
    box.textContent = "Choose a file to import.";
    return;
  }
  start(box, "import_csv", {
    file_id: form.file_id.value,
    table: form.table.value.trim(),
    mode: form.mode.value,
    ...dialectOptions(),
    on_error: form.on_error.value,
  });
});
document.getElementById("export-form").addEventListener("submit", (event) => {
  event.preventDefault();
  start(document.getElementById("export-errors"), "export_csv", { table: event.target.elements.table.value.trim() });
});
fileSelect.addEventListener("change", () => {
  document.getElementById("import-table").value = "";
  loadPreview();
});
importForm.elements.delimiter.addEventListener("change", loadPreview);
importForm.elements.header.addEventListener("change", loadPreview);

const reload = () => Promise.all([loadFiles(), loadTables()]);
setupKeyForm(reload);
await reload();

// Import wizard and export: pick a complete upload, preview its first rows (a Range request for
// the first 64 KiB, parsed here), name the table, start import_csv; or start export_csv on a table.
// Both then continue on the task's page, where the result and reject files are linked.

import { api, authHeaders, errorFrom } from "./api.js";
import { el, formatBytes, sayError, setupKeyForm } from "./ui.js";

const PREVIEW_BYTES = 64 * 1024;
const PREVIEW_ROWS = 10;
const importForm = document.getElementById("import-form");
const fileSelect = document.getElementById("import-file");
let previewText = "";

// RFC 4180 records from text that may stop mid-record: the last, possibly cut, record is dropped.
function parseCsv(text, delimiter, limit) {
  const records = [];
  let record = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length && records.length < limit; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === "") quoted = true;
    else if (c === delimiter) {
      record.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      record.push(field);
      records.push(record);
      record = [];
      field = "";
    } else field += c;
  }
  return records;
}

const GUESSES = [
  ["bigint", /^[+-]?\d{1,18}$/],
  ["numeric", /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/],
  ["boolean", /^(true|false|t|f|yes|no)$/i],
  ["date", /^\d{4}-\d{2}-\d{2}$/],
  ["timestamp", /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/],
  ["timestamptz", /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)$/],
];

function guessType(values) {
  const present = values.filter((v) => v !== "" && v !== undefined);
  if (!present.length) return "text";
  const fit = GUESSES.find(([, pattern]) => present.every((v) => pattern.test(v)));
  return fit ? fit[0] : "text";
}

function showPreview() {
  const head = document.querySelector("#preview thead");
  const body = document.querySelector("#preview tbody");
  if (!previewText) {
    head.replaceChildren();
    body.replaceChildren();
    return;
  }
  const delimiter = importForm.elements.delimiter.value;
  const hasHeader = importForm.elements.header.checked;
  const records = parseCsv(previewText, delimiter, PREVIEW_ROWS + 1);
  const names = hasHeader ? records[0] || [] : (records[0] || []).map((_, i) => `column_${i + 1}`);
  const rows = hasHeader ? records.slice(1) : records.slice(0, PREVIEW_ROWS);
  const types = names.map((_, i) => guessType(rows.map((row) => row[i])));
  head.replaceChildren(
    el("tr", {}, ...names.map((name) => el("th", { scope: "col", text: name }))),
    el("tr", { class: "types" }, ...types.map((type) => el("td", { text: type }))),
  );
  body.replaceChildren(...rows.map((row) => el("tr", {}, ...names.map((_, i) => el("td", { text: row[i] ?? "" })))));
  document.getElementById("preview-note").textContent =
    `The first ${rows.length} rows, with the column types guessed from them (the import guesses from a larger sample).`;
}

async function loadPreview() {
  previewText = "";
  showPreview();
  if (!fileSelect.value) return;
  try {
    const response = await fetch(`/files/${fileSelect.value}`, {
      headers: authHeaders({ Range: `bytes=0-${PREVIEW_BYTES - 1}` }),
    });
    if (!response.ok) throw await errorFrom(response);
    previewText = new TextDecoder().decode(await response.arrayBuffer()).replace(/^\uFEFF/, "");
    const name = fileSelect.selectedOptions[0]?.dataset.filename || "";
    const table = document.getElementById("import-table");
    if (!table.value && name) table.value = name.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9_]+/g, "_").replace(/^(\d)/, "t_$1");
  } catch (error) {
    sayError(error);
  }
  showPreview();
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
    delimiter: form.delimiter.value,
    header: form.header.checked,
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
importForm.elements.delimiter.addEventListener("change", showPreview);
importForm.elements.header.addEventListener("change", showPreview);

const reload = () => Promise.all([loadFiles(), loadTables()]);
setupKeyForm(reload);
await reload();

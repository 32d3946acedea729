// Start a task: one form per kind, its fields generated from the kind's JSON Schema
// (GET /tasks/kinds), sent as POST /tasks; a 422 names the fields it refused.

import { api } from "./api.js";
import { el, say, sayError, setupKeyForm } from "./ui.js";

const form = document.getElementById("start-form");
const select = document.getElementById("start-kind");
const fieldset = document.getElementById("start-params");
const errors = document.getElementById("start-errors");
let kinds = [];

function resolve(schema, root) {
  if (schema.$ref) return resolve(root.$defs?.[schema.$ref.split("/").pop()] ?? {}, root);
  // Optional fields arrive as anyOf [X, null]: the form field is X, left empty for null.
  const options = schema.anyOf || schema.oneOf;
  if (options) {
    const real = options.filter((option) => option.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), nullable: true, default: schema.default };
  }
  return schema;
}

function control(name, schema, required) {
  const id = `param-${name}`;
  const attrs = { id, name, required: required || undefined, "aria-describedby": schema.description ? `${id}-help` : undefined };
  if (schema.enum) {
    const options = schema.enum.map((value) => el("option", { value: String(value), text: String(value) }));
    if (!required) options.unshift(el("option", { value: "", text: "(default)" }));
    return el("select", attrs, ...options);
  }
  if (schema.type === "boolean") return el("input", { ...attrs, type: "checkbox", required: undefined });
  if (schema.type === "integer" || schema.type === "number") {
    const min = schema.minimum ?? schema.exclusiveMinimum;
    const max = schema.maximum ?? schema.exclusiveMaximum;
    return el("input", { ...attrs, type: "number", min, max, step: schema.type === "integer" ? "1" : "any" });
  }
  if (schema.type === "string") return el("input", { ...attrs, type: "text", maxlength: schema.maxLength });
  return el("textarea", { ...attrs, rows: "3", placeholder: "JSON" });
}

function field(name, property, root, required) {
  const schema = resolve(property, root);
  const input = control(name, schema, required);
  input.dataset.kind = schema.enum ? "enum" : schema.type || "json";
  const initial = schema.default ?? property.default;
  if (initial !== undefined && initial !== null) {
    if (input.type === "checkbox") input.checked = Boolean(initial);
    else input.value = typeof initial === "object" ? JSON.stringify(initial) : String(initial);
  }
  const title = `${property.title || schema.title || name}${required ? " (required)" : ""}`;
  const help = schema.description || property.description;
  return el(
    "div",
    { class: "field" },
    el("label", { for: input.id, text: title }),
    input,
    help ? el("p", { id: `${input.id}-help`, class: "help", text: help }) : null,
  );
}

function showKind() {
  const kind = kinds.find((k) => k.name === select.value);
  document.getElementById("start-kind-help").textContent = kind?.description || "";
  const legend = el("legend", { text: "Parameters" });
  if (!kind) return fieldset.replaceChildren(legend);
  const schema = kind.params_schema;
  const required = new Set(schema.required || []);
  const properties = Object.entries(schema.properties || {});
  fieldset.replaceChildren(
    legend,
    ...properties.map(([name, property]) => field(name, property, schema, required.has(name))),
    properties.length ? null : el("p", { class: "help", text: "This kind takes no parameters." }),
  );
}

function value(input) {
  if (input.type === "checkbox") return input.checked;
  const text = input.value.trim();
  if (text === "") return undefined; // left empty: the kind's default applies
  if (input.dataset.kind === "integer" || input.dataset.kind === "number") return Number(text);
  if (input.dataset.kind === "json") return JSON.parse(text);
  if (input.dataset.kind === "enum") {
    const number = Number(text);
    return text !== "" && !Number.isNaN(number) && String(number) === text ? number : text;
  }
  return text;
}

function collect() {
  const params = {};
  for (const input of fieldset.querySelectorAll("input, select, textarea")) {
    const v = value(input);
    if (v !== undefined) params[input.name] = v;
  }
  const body = { kind: select.value, params };
  const attempts = document.getElementById("start-max-attempts").value;
  if (attempts) body.max_attempts = Number(attempts);
  return body;
}

function showProblem(error) {
  const items = (error.problem?.errors || []).map((item) =>
    el("li", { text: `${(item.loc || []).filter((part) => part !== "body").join(".")}: ${item.msg}` }),
  );
  errors.replaceChildren(el("p", { text: error.message }), items.length ? el("ul", {}, ...items) : null);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errors.replaceChildren();
  let body;
  try {
    body = collect();
  } catch (error) {
    errors.textContent = `A JSON field does not parse: ${error.message}`;
    return;
  }
  try {
    const task = await api("/tasks", { method: "POST", body });
    say(`Started task ${task.id.slice(0, 8)} (${task.kind}).`);
    location.assign(`/ui/tasks/${task.id}`);
  } catch (error) {
    showProblem(error);
    sayError(error);
  }
});

async function loadKinds() {
  try {
    kinds = await api("/tasks/kinds");
  } catch (error) {
    sayError(error);
    return;
  }
  const wanted = new URLSearchParams(location.search).get("kind");
  select.replaceChildren(...kinds.map((kind) => el("option", { value: kind.name, text: kind.name })));
  if (wanted && kinds.some((kind) => kind.name === wanted)) select.value = wanted;
  showKind();
}

select.addEventListener("change", showKind);
setupKeyForm(loadKinds);
await loadKinds();

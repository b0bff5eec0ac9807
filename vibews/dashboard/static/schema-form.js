// A form for a question's schema: the subset protocol-v1 section 5 allows (an object of flat
// string, number, integer and boolean properties with enum, bounds, lengths, format, default,
// title, description and required). Native controls and native constraint validation, so the form
// is keyboard- and screen-reader-friendly without extra code; the server checks the value again
// and names the field if it disagrees.

import { el, uniqueId } from "./dom.js";

const INPUT_TYPE_OF_FORMAT = { email: "email", uri: "url", date: "date", "date-time": "datetime-local" };

function labelText(name, property, required) {
  const title = typeof property.title === "string" && property.title ? property.title : name;
  return required ? `${title} (required)` : title;
}

function enumControl(id, property, required, describedBy) {
  const select = el("select", { id, required, "aria-describedby": describedBy });
  if (!required || property.default === undefined) {
    select.append(el("option", { value: "", text: required ? "Choose…" : "(none)" }));
  }
  property.enum.forEach((choice, index) => {
    const option = el("option", { value: String(index), text: String(choice) });
    if (property.default !== undefined && choice === property.default) {
      option.selected = true;
    }
    select.append(option);
  });
  return {
    control: select,
    read: () => (select.value === "" ? undefined : property.enum[Number(select.value)]),
  };
}

function booleanControl(id, property, describedBy) {
  const box = el("input", { id, type: "checkbox", "aria-describedby": describedBy });
  box.checked = property.default === true;
  return { control: box, read: () => box.checked };
}

function numberControl(id, property, required, describedBy) {
  const input = el("input", {
    id,
    type: "number",
    inputmode: property.type === "integer" ? "numeric" : "decimal",
    step: property.type === "integer" ? "1" : "any",
    min: typeof property.minimum === "number" ? property.minimum : undefined,
    max: typeof property.maximum === "number" ? property.maximum : undefined,
    required,
    "aria-describedby": describedBy,
  });
  if (typeof property.default === "number") {
    input.value = String(property.default);
  }
  return { control: input, read: () => (input.value === "" ? undefined : Number(input.value)) };
}

function stringControl(id, property, required, describedBy) {
  const format = INPUT_TYPE_OF_FORMAT[property.format];
  const input = el("input", {
    id,
    type: format ?? "text",
    step: property.format === "date-time" ? "1" : undefined,
    minlength: Number.isInteger(property.minLength) ? property.minLength : undefined,
    maxlength: Number.isInteger(property.maxLength) ? property.maxLength : undefined,
    required,
    autocomplete: "off",
    "aria-describedby": describedBy,
  });
  if (typeof property.default === "string" && property.format !== "date-time") {
    input.value = property.default;
  }
  const read = () => {
    if (input.value === "") {
      return required ? "" : undefined;
    }
    if (property.format === "date-time") {
      // datetime-local gives local time without an offset; the contract wants RFC 3339.
      const when = new Date(input.value);
      return Number.isNaN(when.getTime()) ? input.value : when.toISOString();
    }
    return input.value;
  };
  return { control: input, read };
}

// Returns {fields: [elements], read(): value object}.
export function schemaFields(schema) {
  const properties = schema && typeof schema.properties === "object" ? schema.properties : {};
  const required = new Set(Array.isArray(schema?.required) ? schema.required : []);
  const fields = [];
  const readers = [];
  if (typeof schema?.description === "string" && schema.description) {
    fields.push(el("p", { className: "hint", text: schema.description }));
  }
  for (const [name, property] of Object.entries(properties)) {
    const id = uniqueId("field");
    const isRequired = required.has(name);
    const hintId = typeof property.description === "string" && property.description
      ? uniqueId("hint") : undefined;
    let made;
    if (Array.isArray(property.enum) && property.type !== "boolean") {
      made = enumControl(id, property, isRequired, hintId);
    } else if (property.type === "boolean") {
      made = booleanControl(id, property, hintId);
    } else if (property.type === "number" || property.type === "integer") {
      made = numberControl(id, property, isRequired, hintId);
    } else {
      made = stringControl(id, property, isRequired, hintId);
    }
    const label = el("label", { for: id, text: labelText(name, property, isRequired) });
    const field = el("div", { className: property.type === "boolean" ? "field check" : "field" });
    if (property.type === "boolean") {
      field.append(made.control, label);
    } else {
      field.append(label, made.control);
    }
    if (hintId) {
      field.append(el("p", { id: hintId, className: "hint", text: property.description }));
    }
    fields.push(field);
    readers.push([name, made.read]);
  }
  const read = () => {
    const value = {};
    for (const [name, readOne] of readers) {
      const got = readOne();
      if (got !== undefined) {
        value[name] = got;
      }
    }
    return value;
  };
  return { fields, read };
}

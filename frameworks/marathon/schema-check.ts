/**
 * Runs the app and group JSON schemas (ajv, the validator fastify uses) and turns their findings into
 * Marathon's vocabulary: wrong types become a 422 "Invalid JSON" whose errors are play-json's codes
 * (`error.expected.jsstring`, ...), which is what Marathon's own JSON readers answer; fields the
 * schema does not know are listed for the API's warning header.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { APP_SCHEMA, GROUP_SCHEMA, type JsonSchema } from "./app-schema.ts";
import { INVALID_JSON, Violations, appendPath, isJsonObject, own, ownEntries, type ValidationFailure } from "./validation.ts";

// allErrors: report every problem at once. No coercion, no defaults: the semantic layer owns those.
const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true, coerceTypes: false, useDefaults: false });
const validateAppShape: ValidateFunction = ajv.compile(APP_SCHEMA);
const validateGroupShape: ValidateFunction = ajv.compile(GROUP_SCHEMA);

/** play-json's error code for a value that is not of the expected JSON type. */
function expectedCode(type: string, value: unknown): string {
  switch (type) {
    case "string":
      return "error.expected.jsstring";
    case "number":
      return "error.expected.jsnumber";
    case "integer":
      return typeof value === "number" ? "error.expected.int" : "error.expected.jsnumber";
    case "boolean":
      return "error.expected.jsboolean";
    case "array":
      return "error.expected.jsarray";
    case "object":
      return "error.expected.jsobject";
    default:
      return `error.expected.${type}`;
  }
}

/** Undoes JSON-pointer escaping of one instancePath segment. */
function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, "/").replace(/~0/g, "~");
}

/**
 * Rewrites ajv's JSON pointer (`/healthChecks/0/portIndex`) as a Marathon path
 * (`/healthChecks(0)/portIndex`), walking the value to tell array indices from keys that are digits.
 */
function marathonPath(instancePath: string, root: unknown): { path: string; value: unknown } {
  let path = "";
  let current: unknown = root;
  if (instancePath === "") return { path, value: current };
  for (const raw of instancePath.slice(1).split("/")) {
    const segment = unescapePointer(raw);
    if (Array.isArray(current)) {
      const index = Number(segment);
      path = appendPath(path, index);
      current = current[index];
    } else {
      path = appendPath(path, segment);
      current = isJsonObject(current) ? own(current, segment) : undefined;
    }
  }
  return { path, value: current };
}

function errorDetail(error: ErrorObject, root: unknown): [string, string] {
  const { path, value } = marathonPath(error.instancePath, root);
  if (error.keyword === "required" && typeof error.params.missingProperty === "string") {
    return [appendPath(path, error.params.missingProperty), "error.path.missing"];
  }
  if (error.keyword === "type") {
    const types = Array.isArray(error.params.type) ? (error.params.type as string[]) : String(error.params.type).split(",");
    // `nullable` adds "null" to the accepted types; "not given" is not worth suggesting.
    return [path, types.filter((t) => t !== "null").map((t) => expectedCode(t, value)).join(" or ")];
  }
  return [path, error.message ?? error.keyword];
}

function shapeFailure(validate: ValidateFunction, body: unknown): ValidationFailure | null {
  if (validate(body)) return null;
  const violations = new Violations();
  for (const error of validate.errors ?? []) {
    const [path, message] = errorDetail(error, body);
    violations.add(path, message);
  }
  return violations.toFailure(INVALID_JSON);
}

/** Checks JSON types of an app body; null when they are right, else Marathon's "Invalid JSON" 422. */
export function checkAppShape(body: unknown): ValidationFailure | null {
  return shapeFailure(validateAppShape, body);
}

/** Checks JSON types of a group body (nested groups and apps included). */
export function checkGroupShape(body: unknown): ValidationFailure | null {
  return shapeFailure(validateGroupShape, body);
}

/** Resolves the only kind of `$ref` our schemas use: `#/definitions/<name>`. */
function deref(schema: JsonSchema, root: JsonSchema): JsonSchema {
  const ref = schema.$ref;
  if (typeof ref !== "string") return schema;
  const name = ref.replace(/^#\/definitions\//, "");
  const definitions = root.definitions as Record<string, JsonSchema> | undefined;
  return definitions?.[name] ?? {};
}

function collectUnknown(schema: JsonSchema, value: unknown, path: string, root: JsonSchema, out: string[]): void {
  const s = deref(schema, root);
  if (Array.isArray(value)) {
    const items = s.items as JsonSchema | undefined;
    if (items) value.forEach((item, i) => collectUnknown(items, item, appendPath(path, i), root, out));
    return;
  }
  if (!isJsonObject(value)) return;
  const properties = s.properties as Record<string, JsonSchema> | undefined;
  const additional = s.additionalProperties;
  for (const [key, child] of ownEntries(value)) {
    const known = properties && Object.prototype.hasOwnProperty.call(properties, key) ? properties[key] : undefined;
    if (known !== undefined) collectUnknown(known, child, appendPath(path, key), root, out);
    else if (isJsonObject(additional)) collectUnknown(additional, child, appendPath(path, key), root, out);
    else if (properties !== undefined) out.push(appendPath(path, key));
  }
}

/** Paths of the fields of an app body our schema does not know (`/foo`, `/healthChecks(0)/bar`). */
export function unknownAppFields(body: unknown): string[] {
  const out: string[] = [];
  collectUnknown(APP_SCHEMA, body, "", APP_SCHEMA, out);
  return out;
}

/** Paths of the fields of a group body (and its apps and groups) our schema does not know. */
export function unknownGroupFields(body: unknown): string[] {
  const out: string[] = [];
  collectUnknown(GROUP_SCHEMA, body, "", GROUP_SCHEMA, out);
  return out;
}

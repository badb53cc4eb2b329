/**
 * Marathon's error bodies and the small helpers every validator here shares.
 *
 * Marathon answers a bad request body with `{"message": ..., "details": [{"path", "errors"}]}`.
 * Paths are JSON-pointer-like, but array elements are written `(i)` and glued to their array:
 * `/healthChecks(0)/portIndex`. The whole body is `/`. Clients (the DC/OS CLI, marathon-lb, UIs)
 * display these paths, so we keep exactly that format.
 */

/** One entry of a Marathon error body: a path and every rule broken there. */
export interface ErrorDetail {
  path: string;
  errors: string[];
}

/** Marathon's error body. */
export interface MarathonErrorBody {
  message: string;
  details?: ErrorDetail[];
}

/** A rejected request body, ready for the HTTP layer to send as is. */
export interface ValidationFailure {
  ok: false;
  /** 400 for unparseable JSON, 422 for JSON of the wrong shape or breaking a rule. */
  status: 400 | 422;
  body: MarathonErrorBody;
}

/** The message of a body that parsed but broke a semantic rule. */
export const OBJECT_NOT_VALID = "Object is not valid";
/** The message of a body that is not JSON, or JSON of the wrong type somewhere. */
export const INVALID_JSON = "Invalid JSON";

/** One step of a path: a property name or an array index. */
export type PathSegment = string | number;

/**
 * Appends segments to a Marathon path. Indices become `(i)` on the previous segment, names become
 * `/name`. `appendPath("", "healthChecks", 0, "portIndex")` is `/healthChecks(0)/portIndex`.
 */
export function appendPath(base: string, ...segments: PathSegment[]): string {
  let path = base === "/" ? "" : base;
  for (const segment of segments) path += typeof segment === "number" ? `(${segment})` : `/${segment}`;
  return path;
}

/** The path as Marathon prints it: the empty path (the body itself) is `/`. */
export function displayPath(path: string): string {
  return path === "" ? "/" : path;
}

/**
 * Collects rule violations by path, keeping first-seen order of paths and errors (Marathon groups
 * its details by path the same way), so one response lists every problem at once.
 */
export class Violations {
  private readonly byPath = new Map<string, string[]>();

  /** Records that the value at `path` breaks `error`. Duplicates are kept once. */
  add(path: string, error: string): void {
    const key = displayPath(path);
    const list = this.byPath.get(key);
    if (list === undefined) this.byPath.set(key, [error]);
    else if (!list.includes(error)) list.push(error);
  }

  /** Copies every violation of `other`, e.g. those of a nested app. */
  addAll(other: Violations): void {
    for (const [path, errors] of other.byPath) for (const error of errors) this.add(path === "/" ? "" : path, error);
  }

  /** True when nothing was recorded. */
  isEmpty(): boolean {
    return this.byPath.size === 0;
  }

  /** The paths recorded so far (in display form). */
  paths(): string[] {
    return [...this.byPath.keys()];
  }

  /** The details list of a Marathon error body. */
  details(): ErrorDetail[] {
    return [...this.byPath].map(([path, errors]) => ({ path, errors: [...errors] }));
  }

  /** A 422 failure carrying every violation. */
  toFailure(message: string = OBJECT_NOT_VALID): ValidationFailure {
    return { ok: false, status: 422, body: { message, details: this.details() } };
  }
}

/** The outcome of {@link parseJsonBody}. */
export type ParsedBody = { ok: true; value: unknown } | ValidationFailure;

/**
 * Parses a request body. Unparseable JSON answers 400 with Marathon's "Invalid JSON" message and
 * the parser's complaint; the HTTP layer calls this (or does the same) before any validator, which
 * then only ever sees parsed values.
 */
export function parseJsonBody(text: string): ParsedBody {
  if (typeof text !== "string" || text.trim() === "") {
    return { ok: false, status: 400, body: { message: INVALID_JSON, details: [{ path: "/", errors: ["error.expected.jsvalue: the body is empty"] }] } };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, status: 400, body: { message: INVALID_JSON, details: [{ path: "/", errors: [reason] }] } };
  }
}

/** True for a plain JSON object (not null, not an array). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Own enumerable entries of a JSON object; safe for keys such as `__proto__`. */
export function ownEntries(value: Record<string, unknown>): Array<[string, unknown]> {
  return Object.keys(value).map((key) => [key, Object.getOwnPropertyDescriptor(value, key)?.value]);
}

/** Reads an own property (never one inherited from `Object.prototype`). */
export function own(value: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(value, key) ? value[key] : undefined;
}

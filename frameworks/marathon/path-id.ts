/**
 * Marathon path ids: `/prod/web/frontend`, a path of groups ending in an app or group name.
 *
 * Ids in request bodies may be relative (`frontend`, `../db`); they are resolved against a base
 * group the way Marathon's `PathId.canonicalPath` does, so what is stored is always absolute.
 */

/**
 * One segment of an id: lowercase letters, digits and dashes, dot-separated labels that neither
 * start nor end with a dash (Marathon's rule, so ids can become DNS names).
 */
export const ID_SEGMENT_PATTERN = /^(([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$/;

/** The pattern as Marathon prints it in its error message. */
const ID_SEGMENT_PATTERN_TEXT = "^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])$";

/**
 * Last segments an id may not have: they would collide with REST sub-resources such as
 * `/v2/apps/{id}/restart`, `/v2/apps/{id}/tasks` and `/v2/apps/{id}/versions`.
 */
export const RESERVED_ID_SEGMENTS: readonly string[] = ["restart", "tasks", "versions"];

/** The root group. */
export const ROOT_ID = "/";

/**
 * Longest id accepted, in characters. Marathon has no limit; ids end up in task ids, subjects and
 * store keys, so an unbounded one is a liability.
 * @default 1024
 */
export const MAX_ID_LENGTH = 1024;

/** What {@link resolvePathId} may check besides syntax. */
export interface ResolveOptions {
  /** The group relative ids are resolved against. @default "/" */
  base?: string;
  /** Whether `/` itself is acceptable (groups: yes, apps: no). @default false */
  allowRoot?: boolean;
  /**
   * Require the id to be a direct child of `base`, as Marathon does for the apps and groups nested
   * in a group body. @default false
   */
  directChildOfBase?: boolean;
  /** Refuse the reserved last segments. @default true */
  checkReserved?: boolean;
}

/** A resolved id, or the rules it breaks. */
export type ResolvedId = { ok: true; id: string; segments: string[] } | { ok: false; errors: string[] };

/** Splits an absolute or relative id into its non-empty segments (Marathon drops empty ones). */
function rawSegments(id: string): string[] {
  return id.split("/").filter((part) => part !== "");
}

/** Joins segments into an absolute id. */
export function formatPathId(segments: readonly string[]): string {
  return `/${segments.join("/")}`;
}

/** The segments of an absolute id that is known to be valid. */
export function pathSegments(id: string): string[] {
  return rawSegments(id);
}

/** The parent group of an absolute id; the root's parent is the root. */
export function parentId(id: string): string {
  const segments = rawSegments(id);
  return formatPathId(segments.slice(0, -1));
}

/** True when `ancestor` is `id` itself or a group above it. */
export function isSelfOrAncestorId(ancestor: string, id: string): boolean {
  const a = rawSegments(ancestor);
  const b = rawSegments(id);
  return a.length <= b.length && a.every((segment, i) => segment === b[i]);
}

/**
 * Resolves `id` against a base group and checks Marathon's id rules: segment syntax, `..` not
 * climbing above the root, not the root (unless allowed), reserved last segments, and (inside
 * group bodies) being a direct child of the enclosing group.
 */
export function resolvePathId(id: string, options: ResolveOptions = {}): ResolvedId {
  const base = options.base ?? ROOT_ID;
  if (typeof id !== "string") return { ok: false, errors: ["error.expected.jsstring"] };
  if (id.length === 0) return { ok: false, errors: ["must not be empty"] };
  if (id.length > MAX_ID_LENGTH) return { ok: false, errors: [`must be at most ${MAX_ID_LENGTH} characters`] };
  const absolute = id.startsWith("/");
  const segments = absolute ? [] : rawSegments(base);
  for (const part of rawSegments(id)) {
    if (part === ".") continue;
    if (part === "..") {
      if (segments.length === 0) return { ok: false, errors: [`'${id}' climbs above the root group`] };
      segments.pop();
      continue;
    }
    segments.push(part);
  }
  const errors: string[] = [];
  if (!segments.every((segment) => ID_SEGMENT_PATTERN.test(segment))) {
    errors.push(`must fully match regular expression '${ID_SEGMENT_PATTERN_TEXT}'`);
  }
  if (segments.length === 0 && !options.allowRoot) errors.push("Path must contain at least one path element");
  const last = segments[segments.length - 1];
  if ((options.checkReserved ?? true) && last !== undefined && RESERVED_ID_SEGMENTS.includes(last)) {
    errors.push(`must not end with any of the following reserved keywords: ${RESERVED_ID_SEGMENTS.join(", ")}`);
  }
  if (options.directChildOfBase) {
    const baseSegments = rawSegments(base);
    const isDirectChild = segments.length === baseSegments.length + 1 && baseSegments.every((segment, i) => segment === segments[i]);
    if (!isDirectChild) errors.push(`Identifier is not child of ${formatPathId(baseSegments)}. Hint: use relative paths.`);
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, id: formatPathId(segments), segments };
}

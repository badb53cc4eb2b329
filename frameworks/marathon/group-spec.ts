/**
 * Validation and normalisation of Marathon group bodies (`POST /v2/groups`, `PUT /v2/groups/{id}`).
 *
 * A group holds apps and groups whose ids are relative to it (or absolute, but then they must be
 * its direct children, as in Marathon), plus dependencies. Every nested app goes through the same
 * rules as a standalone one; errors carry the full path (`/groups(0)/apps(1)/cmd`).
 */
import { UNRESERVED_ROLE } from "../../sdk/roles.ts";
import { normalizeApp, type NormalizedApp } from "./app-spec.ts";
import { parentId, pathSegments, resolvePathId } from "./path-id.ts";
import { checkGroupShape, unknownGroupFields } from "./schema-check.ts";
import { INVALID_JSON, Violations, appendPath, isJsonObject, own, type ValidationFailure } from "./validation.ts";

/** A validated group with absolute ids throughout. */
export interface NormalizedGroup {
  id: string;
  /** @default [] */
  apps: NormalizedApp[];
  /** @default [] */
  groups: NormalizedGroup[];
  /** Absolute ids. @default [] */
  dependencies: string[];
  /** Whether apps below this top-level group get its name as their role. */
  enforceRole?: boolean;
  /** Scale every app below by this factor (a request on its own, without apps or groups). */
  scaleBy?: number;
  /** Roll the group back to this version (a request on its own, without apps or groups). */
  version?: string;
}

/** Where a group body comes from. */
export interface GroupValidationOptions {
  /** The id from the URL (`PUT /v2/groups/{id}`); used when the body has none. */
  pathId?: string;
  /** The role apps get when they name none (Marathon's `--mesos_role`). @default "*" */
  defaultRole?: string;
  /**
   * The role of the body's top-level group when it sets `enforceRole` and is not part of the body
   * (the body is a nested group such as `/dev/backend`). @default none
   */
  enforcedGroupRole?: string;
}

/** A valid group and the unknown fields it carried, or Marathon's error answer. */
export type GroupValidationResult = { ok: true; group: NormalizedGroup; unknownFields: string[] } | ValidationFailure;

/** Marathon's message for a dependency cycle. */
export const CYCLE_MESSAGE = "Dependency graph has cyclic dependencies.";

type Raw = Record<string, unknown>;

interface GroupContext {
  path: string;
  base: string;
  outermost: boolean;
  pathId?: string;
  defaultRole: string;
  enforcedGroupRole?: string;
}

/**
 * Deepest nesting of groups in one body. Marathon has no limit; the schema and normalisation
 * recurse per level, so without one a body of a few hundred kilobytes could exhaust the stack.
 * @default 64
 */
export const MAX_GROUP_DEPTH = 64;

/** The path of the first group nested deeper than {@link MAX_GROUP_DEPTH}, found without recursion. */
function tooDeep(body: unknown): string | null {
  const stack: Array<[unknown, number, string]> = [[body, 1, ""]];
  while (stack.length > 0) {
    const [group, depth, path] = stack.pop()!;
    if (!isJsonObject(group)) continue;
    if (depth > MAX_GROUP_DEPTH) return path;
    const children = own(group, "groups");
    if (Array.isArray(children)) children.forEach((child, i) => stack.push([child, depth + 1, appendPath(path, "groups", i)]));
  }
  return null;
}

/** Validates a group body and everything in it. Never throws. */
export function validateGroup(body: unknown, options: GroupValidationOptions = {}): GroupValidationResult {
  const deep = tooDeep(body);
  if (deep !== null) {
    const v = new Violations();
    v.add(deep, `groups may nest at most ${MAX_GROUP_DEPTH} levels deep`);
    return v.toFailure();
  }
  const shape = checkGroupShape(body);
  if (shape) return shape;
  const raw = body as Raw;
  if (typeof own(raw, "id") !== "string" && options.pathId === undefined) {
    const v = new Violations();
    v.add("/id", "error.path.missing");
    return v.toFailure(INVALID_JSON);
  }
  const v = new Violations();
  const group = normalizeGroup(raw, v, {
    path: "",
    base: "/",
    outermost: true,
    defaultRole: options.defaultRole ?? UNRESERVED_ROLE,
    ...(options.pathId !== undefined ? { pathId: options.pathId } : {}),
    ...(options.enforcedGroupRole !== undefined ? { enforcedGroupRole: options.enforcedGroupRole } : {}),
  });
  // Tree-wide checks need every id resolved; with broken ids they would only add noise.
  if (v.isEmpty()) checkUniqueIds(group, v);
  if (v.isEmpty() && hasDependencyCycle(group)) v.add("", CYCLE_MESSAGE);
  if (!v.isEmpty()) return v.toFailure();
  return { ok: true, group, unknownFields: unknownGroupFields(body) };
}

function groupId(raw: Raw, v: Violations, ctx: GroupContext): string {
  const idPath = appendPath(ctx.path, "id");
  const bodyId = own(raw, "id");
  let id: string | undefined;
  if (typeof bodyId === "string") {
    const resolved = resolvePathId(bodyId, { base: ctx.base, allowRoot: ctx.outermost, directChildOfBase: !ctx.outermost });
    if (resolved.ok) id = resolved.id;
    else for (const error of resolved.errors) v.add(idPath, error);
  }
  if (ctx.pathId !== undefined) {
    const fromUrl = resolvePathId(ctx.pathId, { allowRoot: true });
    if (!fromUrl.ok) for (const error of fromUrl.errors) v.add(idPath, error);
    else if (id !== undefined && id !== fromUrl.id) v.add(idPath, `the id in the body ('${id}') does not match the id in the URL ('${fromUrl.id}')`);
    else id = fromUrl.id;
  }
  return id ?? "/";
}

function normalizeGroup(raw: Raw, v: Violations, ctx: GroupContext): NormalizedGroup {
  const at = (...segments: Array<string | number>) => appendPath(ctx.path, ...segments);
  const id = groupId(raw, v, ctx);
  const enforceRole = typeof own(raw, "enforceRole") === "boolean" ? (own(raw, "enforceRole") as boolean) : undefined;
  const segments = pathSegments(id);
  // A top-level group that enforces its role makes its name the default role of every app below.
  const enforcedGroupRole = segments.length === 1 && enforceRole ? segments[0] : ctx.enforcedGroupRole;
  const apps = (Array.isArray(own(raw, "apps")) ? (own(raw, "apps") as unknown[]) : []).filter(isJsonObject).map((app, i) =>
    normalizeApp(app, v, {
      path: at("apps", i),
      base: id,
      directChild: true,
      defaultRole: ctx.defaultRole,
      ...(enforcedGroupRole !== undefined ? { enforcedGroupRole } : {}),
    }),
  );
  const groups = (Array.isArray(own(raw, "groups")) ? (own(raw, "groups") as unknown[]) : []).filter(isJsonObject).map((child, i) =>
    normalizeGroup(child, v, {
      path: at("groups", i),
      base: id,
      outermost: false,
      defaultRole: ctx.defaultRole,
      ...(enforcedGroupRole !== undefined ? { enforcedGroupRole } : {}),
    }),
  );
  const pods = own(raw, "pods");
  if (Array.isArray(pods) && pods.length > 0) v.add(at("pods"), "pods are not supported yet");

  const dependencies: string[] = [];
  const rawDeps = own(raw, "dependencies");
  (Array.isArray(rawDeps) ? rawDeps : []).forEach((dep, i) => {
    if (typeof dep !== "string") return;
    const resolved = resolvePathId(dep, { base: parentId(id), checkReserved: false, allowRoot: false });
    if (!resolved.ok) for (const error of resolved.errors) v.add(at("dependencies", i), error);
    else if (resolved.id === id) v.add(at("dependencies", i), "a group cannot depend on itself");
    else if (!dependencies.includes(resolved.id)) dependencies.push(resolved.id);
  });

  const group: NormalizedGroup = { id, apps, groups, dependencies, ...(enforceRole !== undefined ? { enforceRole } : {}) };
  const hasContent = apps.length > 0 || groups.length > 0;
  const scaleBy = own(raw, "scaleBy");
  if (typeof scaleBy === "number") {
    if (scaleBy < 0) v.add(at("scaleBy"), `got ${scaleBy}, expected 0 or more`);
    if (hasContent) v.add(at("scaleBy"), "scaleBy may not be combined with apps or groups");
    group.scaleBy = scaleBy;
  }
  const version = own(raw, "version");
  // With apps or groups, `version` is the read-only field of a fetched group sent back: ignored.
  // On its own it asks for a rollback.
  if (typeof version === "string" && !hasContent) {
    if (typeof scaleBy === "number") v.add(ctx.path, "version and scaleBy are mutually exclusive");
    group.version = version;
  }
  return group;
}

/** Marathon refuses a tree in which two apps or groups share an id. */
function checkUniqueIds(root: NormalizedGroup, v: Violations): void {
  const seen = new Set<string>([root.id]);
  const visit = (group: NormalizedGroup, path: string): void => {
    group.apps.forEach((app, i) => {
      if (seen.has(app.id)) v.add(appendPath(path, "apps", i, "id"), `Groups and Applications may not have the same identifier: ${app.id}`);
      seen.add(app.id);
    });
    group.groups.forEach((child, i) => {
      const childPath = appendPath(path, "groups", i);
      if (seen.has(child.id)) v.add(appendPath(childPath, "id"), `Groups and Applications may not have the same identifier: ${child.id}`);
      seen.add(child.id);
      visit(child, childPath);
    });
  };
  visit(root, "");
}

/**
 * True when the apps of the tree depend on each other in a cycle. As in Marathon, an app inherits
 * the dependencies of its enclosing groups, and a dependency on a group means one on every app in
 * it. Dependencies on ids outside the body are not part of this check (the API layer sees the whole
 * tree).
 */
export function hasDependencyCycle(root: NormalizedGroup): boolean {
  const appsUnder = new Map<string, string[]>();
  const inherited = new Map<string, string[]>();
  const collect = (group: NormalizedGroup, ancestorsDeps: string[]): string[] => {
    const deps = [...ancestorsDeps, ...group.dependencies];
    const mine = group.apps.map((app) => app.id);
    for (const app of group.apps) inherited.set(app.id, [...deps, ...app.dependencies]);
    for (const child of group.groups) mine.push(...collect(child, deps));
    appsUnder.set(group.id, mine);
    return mine;
  };
  collect(root, []);
  const edges = new Map<string, string[]>();
  for (const [app, deps] of inherited) {
    edges.set(app, deps.flatMap((dep) => (inherited.has(dep) ? [dep] : (appsUnder.get(dep) ?? []))));
  }
  // Iterative three-colour DFS: bodies may nest deeply; recursion depth should not depend on input.
  const state = new Map<string, 1 | 2>();
  for (const start of edges.keys()) {
    if (state.has(start)) continue;
    const stack: Array<[string, number]> = [[start, 0]];
    state.set(start, 1);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const next = edges.get(top[0])![top[1]];
      if (next === undefined) {
        state.set(top[0], 2);
        stack.pop();
        continue;
      }
      top[1]++;
      const seen = state.get(next);
      if (seen === 1) return true;
      if (seen === undefined) {
        state.set(next, 1);
        stack.push([next, 0]);
      }
    }
  }
  return false;
}

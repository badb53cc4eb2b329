/**
 * Validation and normalisation of Marathon app definitions (`POST /v2/apps`, `PUT /v2/apps/{id}`).
 *
 * Two passes, as Marathon does it: the JSON schema (`app-schema.ts`) checks types and answers a
 * 422 "Invalid JSON"; then the semantic rules below check values, cross-field rules and what Corral
 * does not support yet, and answer a 422 "Object is not valid" listing every violation by path.
 * A valid body becomes a {@link NormalizedApp}: every default filled in, the id absolute, the
 * deprecated `ports`/`uris` folded into `portDefinitions`/`fetch`. Unknown fields are accepted,
 * ignored and listed so the API can warn about them.
 *
 * Features Corral cannot honour yet (container images, secrets, per-task IPs, persistent volumes,
 * custom executors) are refused with a 422 naming the field, never silently dropped: an app that
 * asked for an image must not quietly run something else.
 */
import { roleNameError, UNRESERVED_ROLE } from "../../sdk/roles.ts";
import { constraintError, constraintTuple, parseConstraint, type ConstraintTuple } from "./constraints.ts";
import { parentId, pathSegments, resolvePathId } from "./path-id.ts";
import { checkAppShape, unknownAppFields } from "./schema-check.ts";
import {
  INVALID_JSON,
  Violations,
  appendPath,
  isJsonObject,
  own,
  ownEntries,
  type PathSegment,
  type ValidationFailure,
} from "./validation.ts";

// ---------------------------------------------------------------------------------------------
// The normalised app
// ---------------------------------------------------------------------------------------------

/** Port protocols of `portDefinitions`. */
export type PortProtocol = "tcp" | "udp" | "udp,tcp";

/** A host port the app needs on its agent. `port: 0` means "any free port". */
export interface PortDefinition {
  /** With `requirePorts`, the host port itself; otherwise a service port, 0 for "assign one". @default 0 */
  port: number;
  /** @default "tcp" */
  protocol: PortProtocol;
  name?: string;
  /** @default {} */
  labels: Record<string, string>;
}

/** An artifact the fetcher downloads into the sandbox before the task starts. */
export interface FetchUri {
  /** An absolute local path or an http(s) URL. */
  uri: string;
  /** @default false */
  executable: boolean;
  /** @default true */
  extract: boolean;
  /** @default false */
  cache: boolean;
  /** A relative path inside the sandbox. */
  destPath?: string;
}

/** Health check protocols. `COMMAND` and `MESOS_*` are run by the agent, the others by Marathon. */
export type HealthCheckProtocol = "HTTP" | "HTTPS" | "TCP" | "COMMAND" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP";

/** One health check, defaults filled. */
export interface HealthCheck {
  /** @default "HTTP" ("COMMAND" when a command is given) */
  protocol: HealthCheckProtocol;
  /** For HTTP-like protocols. @default "/" */
  path?: string;
  /** Index into `portDefinitions`; filled with 0 when the app has exactly one port and no `port` is given. */
  portIndex?: number;
  /** A fixed port to check instead of `portIndex`. */
  port?: number;
  /** The command of a `COMMAND` check. */
  command?: { value: string };
  /** @default 300 */
  gracePeriodSeconds: number;
  /** @default 60 */
  intervalSeconds: number;
  /** @default 20 */
  timeoutSeconds: number;
  /** 0 means "never kill". @default 3 */
  maxConsecutiveFailures: number;
  /** Mesos-run checks only. @default 15 */
  delaySeconds: number;
  /** @default false */
  ignoreHttp1xx: boolean;
  /** @default "IPv4" */
  ipProtocol: "IPv4" | "IPv6";
}

/** A readiness check, consulted during deployments before old instances are killed. */
export interface ReadinessCheck {
  /** @default "readinessCheck" */
  name: string;
  /** @default "HTTP" */
  protocol: "HTTP" | "HTTPS";
  /** @default "/" */
  path: string;
  /** Must name one of the app's port definitions. @default "http-api" */
  portName: string;
  /** @default 30 */
  intervalSeconds: number;
  /** Must be less than intervalSeconds. @default 10 */
  timeoutSeconds: number;
  /** @default [200] */
  httpStatusCodesForReady: number[];
  /** @default false */
  preserveLastResponse: boolean;
}

/** How a deployment replaces instances; see `upgrade.ts` for the arithmetic. */
export interface UpgradeStrategy {
  /** Fraction of `instances` that must stay healthy, in [0, 1]. @default 1 */
  minimumHealthCapacity: number;
  /** Fraction of `instances` that may run in addition, in [0, 1]. @default 1 */
  maximumOverCapacity: number;
}

/** What happens to instances on unreachable agents. */
export type UnreachableStrategy = "disabled" | { inactiveAfterSeconds: number; expungeAfterSeconds: number };

/** Which instances go first when scaling down. */
export type KillSelection = "YOUNGEST_FIRST" | "OLDEST_FIRST";

/** A host directory bind-mounted into the task's container. */
export interface HostVolume {
  containerPath: string;
  hostPath: string;
  /** @default "RW" */
  mode: "RO" | "RW";
}

/** The native (image-less) Mesos container; the only kind Corral runs. */
export interface AppContainer {
  type: "MESOS";
  /** @default [] */
  volumes: HostVolume[];
}

/** A Mesos check (`app.check`): reported, never used to kill. */
export interface AppCheck {
  http?: { portIndex?: number; port?: number; path?: string; scheme: "HTTP" | "HTTPS" };
  tcp?: { portIndex?: number; port?: number };
  exec?: { command: { shell?: string; argv?: string[] } };
  /** @default 60 */
  intervalSeconds: number;
  /** @default 20 */
  timeoutSeconds: number;
  /** @default 15 */
  delaySeconds: number;
}

/** Limits above the requested resources; `"unlimited"` lifts the limit. */
export interface ResourceLimits {
  cpus?: number | "unlimited";
  mem?: number | "unlimited";
}

/**
 * A validated app definition with every default filled in: the form stored, scheduled and
 * returned by `GET /v2/apps/{id}` (before status fields and the version are added).
 */
export interface NormalizedApp {
  /** Absolute path id. */
  id: string;
  /** Run through `/bin/sh -c`. Exactly one of cmd/args. */
  cmd?: string;
  /** Run directly (argv). Exactly one of cmd/args. */
  args?: string[];
  user?: string;
  /** @default 1 */
  instances: number;
  /** @default 1 */
  cpus: number;
  /** MiB. @default 128 */
  mem: number;
  /** MiB. @default 0 */
  disk: number;
  /** @default 0 */
  gpus: number;
  /** "" and "//cmd" both mean the command executor. @default "" */
  executor: string;
  /** @default {} */
  env: Record<string, string>;
  /** @default {} */
  labels: Record<string, string>;
  /** @default [] */
  constraints: ConstraintTuple[];
  /** Absent: offers of any role the framework is offered. */
  acceptedResourceRoles?: string[];
  /** @default the enclosing top-level group's role if it enforces one, else the default role ("*") */
  role: string;
  /** @default [{ port: 0, protocol: "tcp", labels: {} }] */
  portDefinitions: PortDefinition[];
  /** @default false */
  requirePorts: boolean;
  /** @default [] */
  fetch: FetchUri[];
  container?: AppContainer;
  /** @default [] */
  healthChecks: HealthCheck[];
  /** @default [] */
  readinessChecks: ReadinessCheck[];
  check?: AppCheck;
  /** Absolute ids. @default [] */
  dependencies: string[];
  /** @default { minimumHealthCapacity: 1, maximumOverCapacity: 1 } ({0, 0} for single-instance apps) */
  upgradeStrategy: UpgradeStrategy;
  /** @default 1 */
  backoffSeconds: number;
  /** @default 1.15 */
  backoffFactor: number;
  /** @default 300 */
  maxLaunchDelaySeconds: number;
  /** @default "YOUNGEST_FIRST" */
  killSelection: KillSelection;
  /** @default { inactiveAfterSeconds: 0, expungeAfterSeconds: 0 } */
  unreachableStrategy: UnreachableStrategy;
  /** Seconds between SIGTERM and SIGKILL; absent: the agent's default. */
  taskKillGracePeriodSeconds?: number;
  tty?: boolean;
  resourceLimits?: ResourceLimits;
  executorResources?: { cpus?: number; mem?: number; disk?: number };
}

/** Defaults Marathon applies to app definitions. */
export const APP_DEFAULTS = {
  instances: 1,
  cpus: 1,
  mem: 128,
  disk: 0,
  gpus: 0,
  executor: "",
  requirePorts: false,
  backoffSeconds: 1,
  backoffFactor: 1.15,
  maxLaunchDelaySeconds: 300,
  killSelection: "YOUNGEST_FIRST" as KillSelection,
  upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 },
  singleInstanceUpgradeStrategy: { minimumHealthCapacity: 0, maximumOverCapacity: 0 },
  unreachableStrategy: { inactiveAfterSeconds: 0, expungeAfterSeconds: 0 },
  healthCheck: { gracePeriodSeconds: 300, intervalSeconds: 60, timeoutSeconds: 20, maxConsecutiveFailures: 3, delaySeconds: 15 },
  readinessCheck: { name: "readinessCheck", protocol: "HTTP", path: "/", portName: "http-api", intervalSeconds: 30, timeoutSeconds: 10 },
  check: { intervalSeconds: 60, timeoutSeconds: 20, delaySeconds: 15 },
} as const;

/** Marathon's label marking an app that must never run two instances at once. */
export const SINGLE_INSTANCE_LABEL = "MARATHON_SINGLE_INSTANCE_APP";

/**
 * Largest cpus/mem/disk accepted. Quantities are kept in thousandths by the resource algebra; a
 * bound far above any machine keeps them exact and turns absurd input into an answer, not a crash.
 * @default 1_000_000_000
 */
export const MAX_RESOURCE_QUANTITY = 1_000_000_000;

/** Longest fetch URI, as in Marathon's schema. @default 1024 */
export const MAX_URI_LENGTH = 1024;

const INT32_MAX = 2_147_483_647;
const PORT_MAX = 65_535;
const PORT_NAME_PATTERN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const HEALTH_PROTOCOLS: readonly HealthCheckProtocol[] = ["HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"];
const MESOS_HEALTH_PROTOCOLS: readonly HealthCheckProtocol[] = ["COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"];
const HTTP_LIKE: readonly HealthCheckProtocol[] = ["HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"];
const ARCHIVE_SUFFIXES = [".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip"];

/** Marathon's message when an app has nothing (or two things) to run. */
export const CMD_OR_ARGS_MESSAGE = "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";

const IMAGES_UNSUPPORTED =
  "container images are not supported yet: Corral runs apps natively in Mesos-style containers; use container type MESOS without an image, and cmd or args";

// ---------------------------------------------------------------------------------------------
// Options and results
// ---------------------------------------------------------------------------------------------

/** Where an app body comes from; shapes how its id is resolved. */
export interface AppValidationOptions {
  /** The group relative ids are resolved against. @default "/" */
  baseGroup?: string;
  /**
   * The id from the URL (`PUT /v2/apps/{id}`). It is used when the body has none; a body id that
   * resolves to something else is an error.
   */
  pathId?: string;
  /** The role apps get when they name none (Marathon's `--mesos_role`). @default "*" */
  defaultRole?: string;
  /**
   * The role of the app's top-level group when that group sets `enforceRole`: it becomes the
   * default role. @default none
   */
  enforcedGroupRole?: string;
}

/** A valid app and the unknown fields it carried, or Marathon's error answer. */
export type AppValidationResult = { ok: true; app: NormalizedApp; unknownFields: string[] } | ValidationFailure;

/** Internal: where an app sits while being normalised. */
export interface AppContext {
  /** Path of the app in the body ("" for a standalone app, "/apps(0)" inside a group). */
  path: string;
  base: string;
  /** Inside a group body, an app must be a direct child of its group. */
  directChild: boolean;
  pathId?: string;
  defaultRole: string;
  enforcedGroupRole?: string;
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/**
 * Validates an app body and fills in Marathon's defaults. The body must already be parsed JSON
 * (see `parseJsonBody` for the 400 of unparseable text). Never throws.
 */
export function validateApp(body: unknown, options: AppValidationOptions = {}): AppValidationResult {
  const shape = checkAppShape(body);
  if (shape) return shape;
  const raw = body as Record<string, unknown>;
  if (nullish(own(raw, "id")) && options.pathId === undefined) {
    return missingId();
  }
  const violations = new Violations();
  const app = normalizeApp(raw, violations, {
    path: "",
    base: options.baseGroup ?? "/",
    directChild: false,
    defaultRole: options.defaultRole ?? UNRESERVED_ROLE,
    ...(options.pathId !== undefined ? { pathId: options.pathId } : {}),
    ...(options.enforcedGroupRole !== undefined ? { enforcedGroupRole: options.enforcedGroupRole } : {}),
  });
  if (!violations.isEmpty()) return violations.toFailure();
  return { ok: true, app, unknownFields: unknownAppFields(body) };
}

function missingId(): ValidationFailure {
  const v = new Violations();
  v.add("/id", "error.path.missing");
  return v.toFailure(INVALID_JSON);
}

/**
 * Validates a partial update (`PUT`/`PATCH /v2/apps/{id}` with only some fields) against the
 * current definition: top-level fields of the update replace those of `existing`, then the result
 * is validated as a whole. Setting `cmd` drops the old `args` (and the reverse), and the deprecated
 * `ports`/`uris` replace `portDefinitions`/`fetch`, as Marathon's AppUpdate does.
 */
export function validateAppUpdate(existing: NormalizedApp, update: unknown, options: AppValidationOptions = {}): AppValidationResult {
  const shape = checkAppShape(update);
  if (shape) return shape;
  const patch = update as Record<string, unknown>;
  const merged: Record<string, unknown> = Object.fromEntries(Object.entries(existing));
  const replaces: Array<[string, string]> = [
    ["cmd", "args"],
    ["args", "cmd"],
    ["ports", "portDefinitions"],
    ["uris", "fetch"],
  ];
  for (const [given, dropped] of replaces) {
    if (!nullish(own(patch, given)) && nullish(own(patch, dropped))) delete merged[dropped];
  }
  for (const [key, value] of ownEntries(patch)) {
    if (key === "id") continue;
    Object.defineProperty(merged, key, { value, enumerable: true, writable: true, configurable: true });
  }
  const result = validateApp(merged, { ...options, pathId: options.pathId ?? existing.id });
  if (!result.ok) return result;
  const bodyId = own(patch, "id");
  if (typeof bodyId === "string") {
    const resolved = resolvePathId(bodyId, { base: options.baseGroup ?? "/" });
    if (!resolved.ok || resolved.id !== result.app.id) {
      const v = new Violations();
      v.add("/id", `the id in the body ('${bodyId}') does not match the app being updated ('${result.app.id}')`);
      return v.toFailure();
    }
  }
  return { ok: true, app: result.app, unknownFields: unknownAppFields(update) };
}

/**
 * True for Marathon's rollback request: an update naming only a `version` (and perhaps the id).
 * The API layer answers it by restoring that version, not by calling {@link validateAppUpdate},
 * which would treat `version` as the read-only field it is in every other body.
 */
export function isRollbackRequest(update: unknown): update is { version: string } {
  if (!isJsonObject(update) || typeof own(update, "version") !== "string") return false;
  return Object.keys(update).every((key) => key === "version" || key === "id");
}

// ---------------------------------------------------------------------------------------------
// Field readers (after the schema pass the JSON types are right; the guards keep TS honest)
// ---------------------------------------------------------------------------------------------

type Raw = Record<string, unknown>;

function nullish(value: unknown): value is null | undefined {
  return value === null || value === undefined;
}

function str(raw: Raw, key: string): string | undefined {
  const v = own(raw, key);
  return typeof v === "string" ? v : undefined;
}

function num(raw: Raw, key: string): number | undefined {
  const v = own(raw, key);
  return typeof v === "number" ? v : undefined;
}

function bool(raw: Raw, key: string): boolean | undefined {
  const v = own(raw, key);
  return typeof v === "boolean" ? v : undefined;
}

function list(raw: Raw, key: string): unknown[] | undefined {
  const v = own(raw, key);
  return Array.isArray(v) ? v : undefined;
}

function object(raw: Raw, key: string): Raw | undefined {
  const v = own(raw, key);
  return isJsonObject(v) ? v : undefined;
}

function stringRecord(raw: Raw | undefined): Record<string, string> {
  if (!raw) return {};
  return Object.fromEntries(ownEntries(raw).filter((e): e is [string, string] => typeof e[1] === "string"));
}

/** Reports `value` outside [min, max] in Accord's words ("got -1, expected 0 or more"). */
function checkRange(v: Violations, path: string, value: number, min: number, max: number): boolean {
  if (value < min) {
    v.add(path, `got ${value}, expected ${min} or more`);
    return false;
  }
  if (value > max) {
    v.add(path, `got ${value}, expected ${max} or less`);
    return false;
  }
  return true;
}

/** Reads an optional number with a default, checking its range. */
function ranged(v: Violations, raw: Raw, key: string, path: string, min: number, max: number, fallback: number): number {
  const value = num(raw, key);
  if (value === undefined) return fallback;
  checkRange(v, appendPath(path, key), value, min, max);
  return value;
}

function oneOf<T extends string>(v: Violations, path: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  v.add(path, `is not one of (${allowed.join(",")})`);
  return fallback;
}

// ---------------------------------------------------------------------------------------------
// The semantic pass
// ---------------------------------------------------------------------------------------------

/**
 * Normalises one app whose JSON types are already known to be right, recording violations. Always
 * returns an app (best effort) so nested callers can keep checking the rest of a group.
 */
export function normalizeApp(raw: Raw, v: Violations, ctx: AppContext): NormalizedApp {
  const at = (...segments: PathSegment[]) => appendPath(ctx.path, ...segments);
  const id = resolveAppId(raw, v, ctx);
  const labels = stringRecord(object(raw, "labels"));
  const singleInstance = labels[SINGLE_INSTANCE_LABEL] === "true";

  const app: NormalizedApp = {
    id,
    ...command(raw, v, ctx),
    ...(str(raw, "user") !== undefined ? { user: str(raw, "user")! } : {}),
    instances: ranged(v, raw, "instances", ctx.path, 0, INT32_MAX, APP_DEFAULTS.instances),
    cpus: ranged(v, raw, "cpus", ctx.path, 0, MAX_RESOURCE_QUANTITY, APP_DEFAULTS.cpus),
    mem: ranged(v, raw, "mem", ctx.path, 0, MAX_RESOURCE_QUANTITY, APP_DEFAULTS.mem),
    disk: ranged(v, raw, "disk", ctx.path, 0, MAX_RESOURCE_QUANTITY, APP_DEFAULTS.disk),
    gpus: ranged(v, raw, "gpus", ctx.path, 0, INT32_MAX, APP_DEFAULTS.gpus),
    executor: executor(raw, v, ctx),
    env: environment(raw, v, ctx),
    labels,
    constraints: constraints(raw, v, ctx),
    ...acceptedRoles(raw, v, ctx),
    role: role(raw, v, ctx, id),
    ...ports(raw, v, ctx),
    fetch: fetchUris(raw, v, ctx),
    ...container(raw, v, ctx),
    healthChecks: [],
    readinessChecks: [],
    dependencies: dependencies(raw, v, ctx, id),
    upgradeStrategy: upgradeStrategy(raw, v, ctx, singleInstance),
    backoffSeconds: ranged(v, raw, "backoffSeconds", ctx.path, 0, INT32_MAX, APP_DEFAULTS.backoffSeconds),
    backoffFactor: ranged(v, raw, "backoffFactor", ctx.path, 1, Number.MAX_VALUE, APP_DEFAULTS.backoffFactor),
    maxLaunchDelaySeconds: ranged(v, raw, "maxLaunchDelaySeconds", ctx.path, 0, INT32_MAX, APP_DEFAULTS.maxLaunchDelaySeconds),
    killSelection: oneOf(v, at("killSelection"), str(raw, "killSelection"), ["YOUNGEST_FIRST", "OLDEST_FIRST"], APP_DEFAULTS.killSelection),
    unreachableStrategy: unreachableStrategy(raw, v, ctx),
  };
  const grace = num(raw, "taskKillGracePeriodSeconds");
  if (grace !== undefined) {
    checkRange(v, at("taskKillGracePeriodSeconds"), grace, 0, INT32_MAX);
    app.taskKillGracePeriodSeconds = grace;
  }
  const tty = bool(raw, "tty");
  if (tty !== undefined) app.tty = tty;
  if (singleInstance && app.instances > 1) v.add(ctx.path, "Single instance app may only have one instance");
  app.healthChecks = healthChecks(raw, v, ctx, app.portDefinitions);
  app.readinessChecks = readinessChecks(raw, v, ctx, app.portDefinitions);
  const check = appCheck(raw, v, ctx, app.portDefinitions);
  if (check) app.check = check;
  const limits = resourceLimits(raw, v, ctx, app);
  if (limits) app.resourceLimits = limits;
  const executorResources = object(raw, "executorResources");
  if (executorResources) {
    const out: { cpus?: number; mem?: number; disk?: number } = {};
    for (const key of ["cpus", "mem", "disk"] as const) {
      const value = num(executorResources, key);
      if (value === undefined) continue;
      checkRange(v, at("executorResources", key), value, 0, MAX_RESOURCE_QUANTITY);
      out[key] = value;
    }
    app.executorResources = out;
  }
  unsupported(raw, v, ctx);
  return app;
}

function resolveAppId(raw: Raw, v: Violations, ctx: AppContext): string {
  const bodyId = str(raw, "id");
  const options = { base: ctx.base, directChildOfBase: ctx.directChild };
  let id: string | undefined;
  if (bodyId !== undefined) {
    const resolved = resolvePathId(bodyId, options);
    if (resolved.ok) id = resolved.id;
    else for (const error of resolved.errors) v.add(appendPath(ctx.path, "id"), error);
  }
  if (ctx.pathId !== undefined) {
    const fromUrl = resolvePathId(ctx.pathId, { base: "/" });
    if (!fromUrl.ok) {
      for (const error of fromUrl.errors) v.add(appendPath(ctx.path, "id"), error);
    } else if (id !== undefined && id !== fromUrl.id) {
      v.add(appendPath(ctx.path, "id"), `the id in the body ('${id}') does not match the id in the URL ('${fromUrl.id}')`);
    } else {
      id = fromUrl.id;
    }
  }
  return id ?? "/";
}

function command(raw: Raw, v: Violations, ctx: AppContext): { cmd?: string; args?: string[] } {
  const cmd = str(raw, "cmd");
  const args = list(raw, "args")?.filter((a): a is string => typeof a === "string");
  const hasCmd = cmd !== undefined && cmd.trim() !== "";
  const hasArgs = args !== undefined && args.length > 0;
  // Marathon lets an image's entrypoint stand in for cmd/args. Images are refused on their own
  // path; not repeating that as "nothing to run" keeps the answer to the one real problem.
  const c = object(raw, "container");
  const imageContainer = c !== undefined && (object(c, "docker") !== undefined || object(c, "appc") !== undefined);
  if (cmd !== undefined && !hasCmd) v.add(appendPath(ctx.path, "cmd"), "must not be empty");
  else if (!(hasCmd !== hasArgs || (!(hasCmd && hasArgs) && imageContainer))) v.add(ctx.path, CMD_OR_ARGS_MESSAGE);
  args?.forEach((arg, i) => {
    if (arg.includes("\u0000")) v.add(appendPath(ctx.path, "args", i), "must not contain NUL characters");
  });
  if (hasCmd && cmd.includes("\u0000")) v.add(appendPath(ctx.path, "cmd"), "must not contain NUL characters");
  return { ...(hasCmd ? { cmd } : {}), ...(hasArgs ? { args } : {}) };
}

function executor(raw: Raw, v: Violations, ctx: AppContext): string {
  const value = str(raw, "executor") ?? APP_DEFAULTS.executor;
  if (value !== "" && value !== "//cmd") v.add(appendPath(ctx.path, "executor"), 'custom executors are not supported yet; use "" or "//cmd" (the command executor)');
  return value;
}

function environment(raw: Raw, v: Violations, ctx: AppContext): Record<string, string> {
  const env = object(raw, "env");
  if (!env) return {};
  const out: Array<[string, string]> = [];
  for (const [name, value] of ownEntries(env)) {
    const path = appendPath(ctx.path, "env", name);
    if (name === "" || name.includes("=") || name.includes("\u0000")) {
      v.add(path, "environment variable names must not be empty or contain '=' or NUL");
    }
    if (typeof value === "string") {
      if (value.includes("\u0000")) v.add(path, "must not contain NUL characters");
      out.push([name, value]);
    } else if (isJsonObject(value) && typeof own(value, "secret") === "string") {
      v.add(path, `secrets are not supported yet: environment variable '${name}' refers to secret '${String(own(value, "secret"))}'`);
    } else {
      v.add(path, 'must be a string or a secret reference {"secret": "<name>"}');
    }
  }
  return Object.fromEntries(out);
}

function constraints(raw: Raw, v: Violations, ctx: AppContext): ConstraintTuple[] {
  const out: ConstraintTuple[] = [];
  (list(raw, "constraints") ?? []).forEach((entry, i) => {
    const tuple = Array.isArray(entry) ? entry : [];
    const problem = constraintError(tuple);
    if (problem !== null) v.add(appendPath(ctx.path, "constraints", i), problem);
    else out.push(constraintTuple(parseConstraint(tuple))); // in its normal form (UNIQUE's "" dropped)
  });
  return out;
}

function acceptedRoles(raw: Raw, v: Violations, ctx: AppContext): { acceptedResourceRoles?: string[] } {
  const roles = list(raw, "acceptedResourceRoles");
  if (roles === undefined) return {};
  const path = appendPath(ctx.path, "acceptedResourceRoles");
  if (roles.length === 0) v.add(path, "must not be empty");
  const seen = new Set<string>();
  roles.forEach((role, i) => {
    if (typeof role !== "string") return;
    const problem = roleNameError(role, true);
    if (problem !== null) v.add(appendPath(path, i), problem);
    if (seen.has(role)) v.add(appendPath(path, i), `role '${role}' is listed twice`);
    seen.add(role);
  });
  return { acceptedResourceRoles: roles.filter((r): r is string => typeof r === "string") };
}

/** Marathon allows an app the default role or its top-level group's role, nothing else. */
function role(raw: Raw, v: Violations, ctx: AppContext, id: string): string {
  const given = str(raw, "role");
  const fallback = ctx.enforcedGroupRole ?? ctx.defaultRole;
  if (given === undefined) return fallback;
  const path = appendPath(ctx.path, "role");
  const problem = roleNameError(given, true);
  if (problem !== null) {
    v.add(path, problem);
    return given;
  }
  const segments = pathSegments(id);
  const groupRole = segments.length >= 2 ? segments[0] : undefined;
  const allowed = [ctx.defaultRole, ...(groupRole !== undefined && groupRole !== ctx.defaultRole ? [groupRole] : [])];
  if (!allowed.includes(given)) v.add(path, `role '${given}' is not allowed for ${id}; use one of: ${allowed.join(", ")}`);
  return given;
}

function ports(raw: Raw, v: Violations, ctx: AppContext): { portDefinitions: PortDefinition[]; requirePorts: boolean } {
  const requirePorts = bool(raw, "requirePorts") ?? APP_DEFAULTS.requirePorts;
  const definitions = list(raw, "portDefinitions");
  const legacy = list(raw, "ports");
  if (definitions && legacy && definitions.length > 0 && legacy.length > 0) {
    const same = definitions.length === legacy.length && definitions.every((d, i) => isJsonObject(d) && (num(d, "port") ?? 0) === legacy[i]);
    if (!same) v.add(ctx.path, "cannot specify both ports and port definitions");
  }
  let source: Raw[];
  let listKey: "portDefinitions" | "ports";
  if (definitions) {
    source = definitions.filter(isJsonObject);
    listKey = "portDefinitions";
  } else if (legacy) {
    source = legacy.map((port) => ({ port }));
    listKey = "ports";
  } else {
    if (requirePorts) v.add(appendPath(ctx.path, "requirePorts"), "requirePorts needs fixed, non-zero ports in portDefinitions");
    return { portDefinitions: [{ port: 0, protocol: "tcp", labels: {} }], requirePorts };
  }
  // Deprecated `ports` entries are plain numbers: point errors at the number itself.
  const portPath = (i: number) => (listKey === "ports" ? appendPath(ctx.path, "ports", i) : appendPath(ctx.path, listKey, i, "port"));
  const usedPorts = new Set<number>();
  const usedNames = new Set<string>();
  const out = source.map((entry, i): PortDefinition => {
    const port = num(entry, "port") ?? 0;
    if (checkRange(v, portPath(i), port, 0, PORT_MAX)) {
      if (requirePorts && port === 0) v.add(portPath(i), "requirePorts needs fixed, non-zero ports");
      if (port !== 0 && usedPorts.has(port)) v.add(portPath(i), "Ports must be unique.");
      usedPorts.add(port);
    }
    const protocol = oneOf(v, appendPath(ctx.path, listKey, i, "protocol"), str(entry, "protocol"), ["tcp", "udp", "udp,tcp"], "tcp");
    const name = str(entry, "name");
    if (name !== undefined) {
      const namePath = appendPath(ctx.path, listKey, i, "name");
      if (!PORT_NAME_PATTERN.test(name)) v.add(namePath, `must fully match regular expression '${PORT_NAME_PATTERN.source}'`);
      if (usedNames.has(name)) v.add(namePath, "Port names must be unique.");
      usedNames.add(name);
    }
    return { port, protocol, ...(name !== undefined ? { name } : {}), labels: stringRecord(object(entry, "labels")) };
  });
  return { portDefinitions: out, requirePorts };
}

/** The rule for fetch URIs: what the fetcher can get without credentials or plugins. */
export function fetchUriError(uri: string): string | null {
  if (uri.length === 0) return "must not be empty";
  if (uri.length > MAX_URI_LENGTH) return `must be at most ${MAX_URI_LENGTH} characters`;
  if (/[\u0000-\u001f\u007f]/.test(uri)) return "must not contain control characters";
  if (uri.startsWith("/")) return null;
  try {
    const url = new URL(uri);
    if ((url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "") return null;
  } catch {
    // Not a URL at all; fall through to the rule.
  }
  return "must be an absolute local path or an http(s) URL";
}

function destPathError(destPath: string): string | null {
  if (destPath.length === 0 || destPath.length > MAX_URI_LENGTH) return `must be 1 to ${MAX_URI_LENGTH} characters`;
  if (destPath.startsWith("/") || destPath.split("/").includes("..") || destPath.includes("\u0000")) {
    return "must be a relative path inside the sandbox (no leading '/', no '..')";
  }
  return null;
}

function fetchUris(raw: Raw, v: Violations, ctx: AppContext): FetchUri[] {
  const fetch = list(raw, "fetch");
  const uris = list(raw, "uris");
  if (fetch && fetch.length > 0 && uris && uris.length > 0) v.add(appendPath(ctx.path, "uris"), "may not be set in conjunction with fetch");
  if (!fetch && uris) {
    // The deprecated form: extract what looks like an archive, as Marathon does.
    return uris.filter((u): u is string => typeof u === "string").map((uri, i) => {
      const problem = fetchUriError(uri);
      if (problem !== null) v.add(appendPath(ctx.path, "uris", i), problem);
      const lower = uri.toLowerCase();
      return { uri, executable: false, extract: ARCHIVE_SUFFIXES.some((s) => lower.endsWith(s)), cache: false };
    });
  }
  return (fetch ?? []).filter(isJsonObject).map((entry, i) => {
    const uri = str(entry, "uri");
    const path = appendPath(ctx.path, "fetch", i);
    if (uri === undefined) v.add(appendPath(path, "uri"), "error.path.missing");
    else {
      const problem = fetchUriError(uri);
      if (problem !== null) v.add(appendPath(path, "uri"), problem);
    }
    const destPath = str(entry, "destPath");
    if (destPath !== undefined) {
      const problem = destPathError(destPath);
      if (problem !== null) v.add(appendPath(path, "destPath"), problem);
    }
    return {
      uri: uri ?? "",
      executable: bool(entry, "executable") ?? false,
      extract: bool(entry, "extract") ?? true,
      cache: bool(entry, "cache") ?? false,
      ...(destPath !== undefined ? { destPath } : {}),
    };
  });
}

function container(raw: Raw, v: Violations, ctx: AppContext): { container?: AppContainer } {
  const c = object(raw, "container");
  if (!c) return {};
  const at = (...segments: PathSegment[]) => appendPath(ctx.path, "container", ...segments);
  const type = str(c, "type");
  const docker = object(c, "docker");
  // An image, however it is asked for, is refused where it was written.
  if (docker && !nullish(own(docker, "image"))) v.add(at("docker", "image"), IMAGES_UNSUPPORTED);
  else if (type === "DOCKER") v.add(at("type"), IMAGES_UNSUPPORTED);
  else if (docker) v.add(at("docker"), IMAGES_UNSUPPORTED);
  if (type !== undefined && type !== "MESOS" && type !== "DOCKER") v.add(at("type"), "is not one of (MESOS,DOCKER)");
  if (object(c, "appc")) v.add(at("appc"), IMAGES_UNSUPPORTED);
  if ((list(c, "portMappings") ?? []).length > 0) {
    v.add(at("portMappings"), "portMappings need bridge or container networking, which is not supported yet; use portDefinitions (host networking)");
  }
  if (object(c, "linuxInfo")) v.add(at("linuxInfo"), "linuxInfo (seccomp, IPC, shared memory settings) is not supported yet");
  const volumes: HostVolume[] = [];
  (list(c, "volumes") ?? []).filter(isJsonObject).forEach((volume, i) => {
    const path = at("volumes", i);
    if (["persistent", "external", "secret"].some((kind) => !nullish(own(volume, kind)))) {
      v.add(path, "persistent, external and secret volumes are not supported yet; only host volumes (hostPath) are");
      return;
    }
    const containerPath = str(volume, "containerPath");
    const hostPath = str(volume, "hostPath");
    if (containerPath === undefined || containerPath === "") v.add(appendPath(path, "containerPath"), "must not be empty");
    if (hostPath === undefined || !hostPath.startsWith("/")) v.add(appendPath(path, "hostPath"), "must be an absolute path");
    const mode = oneOf(v, appendPath(path, "mode"), str(volume, "mode"), ["RO", "RW"], "RW");
    volumes.push({ containerPath: containerPath ?? "", hostPath: hostPath ?? "", mode });
  });
  return { container: { type: "MESOS", volumes } };
}

function healthChecks(raw: Raw, v: Violations, ctx: AppContext, portDefinitions: PortDefinition[]): HealthCheck[] {
  const checks = (list(raw, "healthChecks") ?? []).filter(isJsonObject);
  const out = checks.map((hc, i) => healthCheck(hc, v, appendPath(ctx.path, "healthChecks", i), portDefinitions.length));
  const mesosRun = out.filter((hc) => MESOS_HEALTH_PROTOCOLS.includes(hc.protocol) && hc.protocol !== "COMMAND").length;
  // Marathon tolerates several COMMAND checks for old apps but at most one other Mesos-run check.
  if (mesosRun > 1) v.add(appendPath(ctx.path, "healthChecks"), "AppDefinition can contain at most one Mesos health check");
  return out;
}

function healthCheck(hc: Raw, v: Violations, path: string, portCount: number): HealthCheck {
  const commandRaw = object(hc, "command");
  const commandValue = commandRaw ? str(commandRaw, "value") : undefined;
  const given = str(hc, "protocol");
  const protocol = oneOf(v, appendPath(path, "protocol"), given, HEALTH_PROTOCOLS, commandRaw ? "COMMAND" : "HTTP");
  const d = APP_DEFAULTS.healthCheck;
  const out: HealthCheck = {
    protocol,
    gracePeriodSeconds: ranged(v, hc, "gracePeriodSeconds", path, 0, INT32_MAX, d.gracePeriodSeconds),
    intervalSeconds: ranged(v, hc, "intervalSeconds", path, 0, INT32_MAX, d.intervalSeconds),
    timeoutSeconds: ranged(v, hc, "timeoutSeconds", path, 0, INT32_MAX, d.timeoutSeconds),
    maxConsecutiveFailures: ranged(v, hc, "maxConsecutiveFailures", path, 0, INT32_MAX, d.maxConsecutiveFailures),
    delaySeconds: ranged(v, hc, "delaySeconds", path, 0, INT32_MAX, d.delaySeconds),
    ignoreHttp1xx: bool(hc, "ignoreHttp1xx") ?? false,
    ipProtocol: oneOf(v, appendPath(path, "ipProtocol"), str(hc, "ipProtocol"), ["IPv4", "IPv6"], "IPv4"),
  };
  if (out.ipProtocol === "IPv6") {
    v.add(appendPath(path, "ipProtocol"), "IPv6 can only be used for container type DOCKER and Mesos http/https/tcp health checks");
  }
  if (protocol === "COMMAND") {
    if (commandValue === undefined || commandValue.trim() === "") v.add(appendPath(path, "command"), 'a COMMAND health check needs a command: {"value": "<shell command>"}');
    else out.command = { value: commandValue };
    return out;
  }
  if (commandRaw) v.add(appendPath(path, "command"), `a command is only used with protocol COMMAND, not ${protocol}`);
  if (HTTP_LIKE.includes(protocol)) out.path = str(hc, "path") ?? "/";
  const port = num(hc, "port");
  const portIndex = num(hc, "portIndex");
  if (port !== undefined) {
    checkRange(v, appendPath(path, "port"), port, 0, PORT_MAX);
    if (portIndex !== undefined) v.add(appendPath(path, "port"), "port and portIndex are mutually exclusive");
    out.port = port;
  }
  if (portIndex !== undefined || port === undefined) {
    // Marathon: with neither given, an app with exactly one port checks that one.
    const index = portIndex ?? 0;
    const valid = portIndex !== undefined ? index >= 0 && index < portCount : portCount === 1;
    if (!valid) v.add(appendPath(path, "portIndex"), "Health check port indices must address an element of the ports array or container port mappings.");
    if (port === undefined) out.portIndex = index;
  }
  return out;
}

function readinessChecks(raw: Raw, v: Violations, ctx: AppContext, portDefinitions: PortDefinition[]): ReadinessCheck[] {
  const checks = (list(raw, "readinessChecks") ?? []).filter(isJsonObject);
  const listPath = appendPath(ctx.path, "readinessChecks");
  if (checks.length > 1) v.add(listPath, `got ${checks.length}, expected 1 or less`);
  const portNames = new Set(portDefinitions.map((p) => p.name).filter((n): n is string => n !== undefined));
  const d = APP_DEFAULTS.readinessCheck;
  return checks.map((rc, i) => {
    const path = appendPath(listPath, i);
    const name = str(rc, "name") ?? d.name;
    if (name === "") v.add(appendPath(path, "name"), "must not be empty");
    const portName = str(rc, "portName") ?? d.portName;
    if (!portNames.has(portName)) v.add(appendPath(path, "portName"), `No port definition reference for portName ${portName}`);
    const intervalSeconds = ranged(v, rc, "intervalSeconds", path, 0, INT32_MAX, d.intervalSeconds);
    const timeoutSeconds = ranged(v, rc, "timeoutSeconds", path, 1, INT32_MAX, d.timeoutSeconds);
    if (timeoutSeconds >= intervalSeconds) v.add(appendPath(path, "timeoutSeconds"), `got ${timeoutSeconds}, expected less than intervalSeconds (${intervalSeconds})`);
    const codes = (list(rc, "httpStatusCodesForReady") ?? [200]).filter((c): c is number => typeof c === "number");
    if (codes.length === 0) v.add(appendPath(path, "httpStatusCodesForReady"), "must not be empty");
    codes.forEach((code, j) => checkRange(v, appendPath(path, "httpStatusCodesForReady", j), code, 100, 999));
    const checkPath = str(rc, "path") ?? d.path;
    if (checkPath === "") v.add(appendPath(path, "path"), "must not be empty");
    return {
      name,
      protocol: oneOf(v, appendPath(path, "protocol"), str(rc, "protocol"), ["HTTP", "HTTPS"], "HTTP"),
      path: checkPath,
      portName,
      intervalSeconds,
      timeoutSeconds,
      httpStatusCodesForReady: [...new Set(codes)],
      preserveLastResponse: bool(rc, "preserveLastResponse") ?? false,
    };
  });
}

function appCheck(raw: Raw, v: Violations, ctx: AppContext, portDefinitions: PortDefinition[]): AppCheck | undefined {
  const c = object(raw, "check");
  if (!c) return undefined;
  const path = appendPath(ctx.path, "check");
  const d = APP_DEFAULTS.check;
  const out: AppCheck = {
    intervalSeconds: ranged(v, c, "intervalSeconds", path, 0, INT32_MAX, d.intervalSeconds),
    timeoutSeconds: ranged(v, c, "timeoutSeconds", path, 0, INT32_MAX, d.timeoutSeconds),
    delaySeconds: ranged(v, c, "delaySeconds", path, 0, INT32_MAX, d.delaySeconds),
  };
  const kinds = (["http", "tcp", "exec"] as const).filter((k) => object(c, k) !== undefined);
  if (kinds.length !== 1) v.add(path, "must specify exactly one of http, tcp or exec");
  const target = (kind: "http" | "tcp", o: Raw): { portIndex?: number; port?: number } => {
    const port = num(o, "port");
    const portIndex = num(o, "portIndex");
    if (port !== undefined) {
      checkRange(v, appendPath(path, kind, "port"), port, 0, PORT_MAX);
      return { port };
    }
    const index = portIndex ?? 0;
    if (index < 0 || index >= portDefinitions.length) v.add(appendPath(path, kind, "portIndex"), "Check port indices must address an element of the ports array");
    return { portIndex: index };
  };
  const http = object(c, "http");
  if (http) {
    const checkPath = str(http, "path");
    out.http = {
      ...target("http", http),
      ...(checkPath !== undefined ? { path: checkPath } : {}),
      scheme: oneOf(v, appendPath(path, "http", "scheme"), str(http, "scheme"), ["HTTP", "HTTPS"], "HTTP"),
    };
  }
  const tcp = object(c, "tcp");
  if (tcp) out.tcp = target("tcp", tcp);
  const exec = object(c, "exec");
  if (exec) {
    const cmd = object(exec, "command") ?? {};
    const shell = str(cmd, "shell");
    const argv = list(cmd, "argv")?.filter((a): a is string => typeof a === "string");
    if ((shell === undefined || shell === "") === (argv === undefined || argv.length === 0)) {
      v.add(appendPath(path, "exec", "command"), "must give exactly one of shell or argv");
    }
    out.exec = { command: { ...(shell !== undefined ? { shell } : {}), ...(argv !== undefined ? { argv } : {}) } };
  }
  return out;
}

function dependencies(raw: Raw, v: Violations, ctx: AppContext, id: string): string[] {
  const out: string[] = [];
  (list(raw, "dependencies") ?? []).forEach((dep, i) => {
    if (typeof dep !== "string") return;
    const path = appendPath(ctx.path, "dependencies", i);
    // Relative dependencies are siblings: they resolve against the app's own group.
    const resolved = resolvePathId(dep, { base: parentId(id), checkReserved: false });
    if (!resolved.ok) {
      for (const error of resolved.errors) v.add(path, error);
      return;
    }
    if (resolved.id === id) v.add(path, "an app cannot depend on itself");
    if (!out.includes(resolved.id)) out.push(resolved.id);
  });
  return out;
}

function upgradeStrategy(raw: Raw, v: Violations, ctx: AppContext, singleInstance: boolean): UpgradeStrategy {
  const given = object(raw, "upgradeStrategy");
  const defaults = singleInstance ? APP_DEFAULTS.singleInstanceUpgradeStrategy : APP_DEFAULTS.upgradeStrategy;
  if (!given) return { ...defaults };
  const read = (key: keyof UpgradeStrategy): number => {
    const path = appendPath(ctx.path, "upgradeStrategy", key);
    const value = num(given, key);
    if (value === undefined) return defaults[key];
    if (value < 0) v.add(path, "is less than 0");
    else if (value > 1) v.add(path, "is greater than 1");
    else if (singleInstance && value !== 0) v.add(path, `got ${value}, expected 0 (single instance apps must never run two instances)`);
    return value;
  };
  return { minimumHealthCapacity: read("minimumHealthCapacity"), maximumOverCapacity: read("maximumOverCapacity") };
}

function unreachableStrategy(raw: Raw, v: Violations, ctx: AppContext): UnreachableStrategy {
  const value = own(raw, "unreachableStrategy");
  const path = appendPath(ctx.path, "unreachableStrategy");
  if (typeof value === "string") {
    if (value !== "disabled") v.add(path, "is not one of (disabled)");
    return "disabled";
  }
  if (!isJsonObject(value)) return { ...APP_DEFAULTS.unreachableStrategy };
  const d = APP_DEFAULTS.unreachableStrategy;
  const inactiveAfterSeconds = ranged(v, value, "inactiveAfterSeconds", path, 0, Number.MAX_SAFE_INTEGER, d.inactiveAfterSeconds);
  const expungeAfterSeconds = ranged(v, value, "expungeAfterSeconds", path, 0, Number.MAX_SAFE_INTEGER, d.expungeAfterSeconds);
  if (inactiveAfterSeconds > expungeAfterSeconds) {
    v.add(appendPath(path, "inactiveAfterSeconds"), `got ${inactiveAfterSeconds}, expected at most expungeAfterSeconds (${expungeAfterSeconds})`);
  }
  return { inactiveAfterSeconds, expungeAfterSeconds };
}

function resourceLimits(raw: Raw, v: Violations, ctx: AppContext, app: NormalizedApp): ResourceLimits | undefined {
  const limits = object(raw, "resourceLimits");
  if (!limits) return undefined;
  const out: ResourceLimits = {};
  for (const key of ["cpus", "mem"] as const) {
    const value = own(limits, key);
    if (nullish(value)) continue;
    const path = appendPath(ctx.path, "resourceLimits", key);
    if (value === "unlimited") out[key] = "unlimited";
    else if (typeof value === "number") {
      if (value < app[key]) v.add(path, `got ${value}, expected at least the requested ${key} (${app[key]}) or "unlimited"`);
      out[key] = value;
    } else v.add(path, 'must be a number or "unlimited"');
  }
  return out;
}

/** Known Marathon fields whose features Corral does not have: refused, never ignored. */
function unsupported(raw: Raw, v: Violations, ctx: AppContext): void {
  const secrets = object(raw, "secrets");
  if (secrets && Object.keys(secrets).length > 0) v.add(appendPath(ctx.path, "secrets"), "secrets are not supported yet");
  if (!nullish(own(raw, "ipAddress"))) {
    v.add(appendPath(ctx.path, "ipAddress"), "per-task IP addresses (ipAddress) are not supported yet; only host networking is");
  }
  if (!nullish(own(raw, "residency"))) v.add(appendPath(ctx.path, "residency"), "resident apps (residency, persistent volumes) are not supported yet");
  (list(raw, "networks") ?? []).filter(isJsonObject).forEach((network, i) => {
    const path = appendPath(ctx.path, "networks", i, "mode");
    const mode = str(network, "mode") ?? "container";
    if (!["container", "container/bridge", "host"].includes(mode)) v.add(path, "is not one of (container,container/bridge,host)");
    else if (mode !== "host") v.add(path, `only host networking is supported yet, got '${mode}' (the mode defaults to 'container')`);
  });
}

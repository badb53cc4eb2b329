/**
 * Scenario fields of `marathon` frameworks: the app specs (the JSON of Marathon's v2 API) deployed
 * when the framework starts, the timed actions on them (deploy, update, scale, delete), and an
 * optional task failure model. `sim/scenario.ts` calls {@link checkMarathonFramework} for every
 * framework.
 *
 * App specs are checked by Marathon's own validation (`frameworks/marathon/app-spec.ts`, what
 * `POST /v2/apps` and `PUT /v2/apps/{id}` answer 422 with); each of its problems is reported under
 * the scenario path of the spec, Marathon's path turned into ours: Marathon's
 * `/portDefinitions(0)/port` of `frameworks[2].marathon.apps[1]` is
 * `scenario.frameworks[2].marathon.apps[1].portDefinitions[0].port`.
 *
 * @module
 */

import { validateApp, validateAppUpdate, type NormalizedApp } from "../../frameworks/marathon/app-spec.ts";
import type { ValidationFailure } from "../../frameworks/marathon/validation.ts";

/** An app spec as `POST /v2/apps` takes it (validated by Marathon's validation). */
export type MarathonAppJson = Record<string, unknown>;

/** A change made to the apps at a given time, as an operator would through the v2 API. */
export type MarathonAction =
  /** `POST /v2/apps`: a new app. */
  | { atSeconds: number; type: "deploy"; app: MarathonAppJson; force?: boolean }
  /**
   * `PUT /v2/apps/{id}` (a partial update, the API's default): the fields given replace the app's.
   * A change of anything but `instances` is a new version and restarts the app (rolling, by its
   * `upgradeStrategy`).
   */
  | { atSeconds: number; type: "update"; app: MarathonAppJson; force?: boolean }
  /** `PUT /v2/apps/{id}` with `{"instances": n}`: a scale change. */
  | { atSeconds: number; type: "scale"; appId: string; instances: number; force?: boolean }
  /** `DELETE /v2/apps/{id}`: the app's tasks are killed and the app forgotten. */
  | { atSeconds: number; type: "delete"; appId: string };

/** The `marathon` field of a framework of kind `marathon`. */
export interface MarathonWorkloadSpec {
  /** Apps deployed (each as its own `POST /v2/apps`) when the framework starts. @default [] */
  apps?: MarathonAppJson[];
  /** Timed changes; `atSeconds` is scenario time (not framework time), at or after the framework's start. @default [] */
  actions?: MarathonAction[];
  /**
   * Mean run time of a task before it fails by itself (exit 1), exponential, drawn per task: how
   * Marathon's replacement and launch backoff are exercised. @default none (tasks run until killed)
   */
  taskMttfSeconds?: number;
}

type Obj = Record<string, unknown>;
type Fail = (field: string, rule: string) => void;

const ACTION_TYPES = ["deploy", "update", "scale", "delete"];

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Marathon's error path (`/healthChecks(0)/portIndex`, `/` for the body) as a suffix of ours (`.healthChecks[0].portIndex`). */
export function scenarioPathOf(marathonPath: string): string {
  if (marathonPath === "/" || marathonPath === "") return "";
  return marathonPath.replace(/\((\d+)\)/g, "[$1]").replace(/\//g, ".");
}

/** Reports every problem of a rejected spec under `field`. */
function reportFailure(failure: ValidationFailure, field: string, fail: Fail): void {
  const details = failure.body.details ?? [];
  if (details.length === 0) return fail(field, failure.body.message);
  for (const d of details) for (const error of d.errors) fail(`${field}${scenarioPathOf(d.path)}`, `${error} (Marathon's validation: ${failure.body.message})`);
}

/**
 * What the simulator cannot run: Marathon's HTTP/TCP checks and the agents' COMMAND checks probe
 * real hosts and processes, which a simulated task does not have.
 */
function checkSimulable(app: NormalizedApp, field: string, fail: Fail): void {
  if (app.healthChecks.length > 0) fail(`${field}.healthChecks`, "is not simulated (health checks probe real hosts and processes); leave it out of a scenario");
  if (app.readinessChecks.length > 0) fail(`${field}.readinessChecks`, "is not simulated (readiness checks probe real hosts); leave it out of a scenario");
}

/** Validates one spec as POST /v2/apps would; undefined when it is not valid. */
function checkApp(body: unknown, field: string, fail: Fail): NormalizedApp | undefined {
  const result = validateApp(body, { defaultRole: "*" });
  if (!result.ok) {
    reportFailure(result, field, fail);
    return undefined;
  }
  checkSimulable(result.app, field, fail);
  return result.app;
}

/**
 * Checks the `marathon` field of a framework (and that no other kind has one). Actions are
 * checked in time order against the apps they act on: a deploy of an id that exists, or an
 * update, scale or delete of one that does not, is an error (the API would answer 409 or 404).
 * An action at or after `endSeconds` (the scenario's) is an error too: it would never happen.
 */
export function checkMarathonFramework(f: Obj, field: string, fail: Fail, endSeconds = Infinity): void {
  if (f.kind !== "marathon") {
    if (f.marathon !== undefined) fail(`${field}.marathon`, 'is only allowed for kind "marathon"');
    return;
  }
  // (jobs and trace are refused for every kind but batch by checkBatchFramework.)
  if (f.tasks !== undefined) fail(`${field}.tasks`, 'is not allowed for kind "marathon" (give marathon.apps and marathon.actions)');
  const mf = `${field}.marathon`;
  if (f.marathon === undefined) return fail(mf, 'is required for kind "marathon"');
  const m = f.marathon;
  if (!isObj(m)) return fail(mf, "must be an object");
  for (const key of Object.keys(m)) if (!["apps", "actions", "taskMttfSeconds"].includes(key)) fail(`${mf}.${key}`, "is not a known field (known: apps, actions, taskMttfSeconds)");
  if (m.taskMttfSeconds !== undefined && !(typeof m.taskMttfSeconds === "number" && Number.isFinite(m.taskMttfSeconds) && m.taskMttfSeconds > 0)) fail(`${mf}.taskMttfSeconds`, "must be a finite number > 0");

  // The apps as they stand at each moment, to check each action against.
  const apps = new Map<string, NormalizedApp>();
  if (m.apps !== undefined) {
    if (!Array.isArray(m.apps)) fail(`${mf}.apps`, "must be an array of app specs");
    else
      m.apps.forEach((body, i) => {
        const app = checkApp(body, `${mf}.apps[${i}]`, fail);
        if (!app) return;
        if (apps.has(app.id)) fail(`${mf}.apps[${i}].id`, `must be unique (${app.id} is deployed twice)`);
        apps.set(app.id, app);
      });
  }
  if (m.actions === undefined) return;
  if (!Array.isArray(m.actions)) return fail(`${mf}.actions`, "must be an array");
  const start = typeof f.startSeconds === "number" ? f.startSeconds : 0;
  const stop = typeof f.stopSeconds === "number" ? f.stopSeconds : Infinity;
  // Checked in the order they will run: by time, then as listed.
  const order = m.actions.map((a, i) => ({ a, i, at: isObj(a) && typeof a.atSeconds === "number" ? a.atSeconds : 0 })).sort((x, y) => x.at - y.at || x.i - y.i);
  for (const { a, i } of order) checkAction(a, `${mf}.actions[${i}]`, apps, start, stop, endSeconds, fail);
}

function checkAction(value: unknown, field: string, apps: Map<string, NormalizedApp>, start: number, stop: number, end: number, fail: Fail): void {
  if (!isObj(value)) return fail(field, "must be an object");
  const a = value;
  const at = a.atSeconds;
  if (typeof at !== "number" || !Number.isFinite(at)) fail(`${field}.atSeconds`, "is required and must be a finite number");
  else if (at < start) fail(`${field}.atSeconds`, `must be >= the framework's startSeconds (${start}): Marathon is not running before`);
  else if (at >= stop) fail(`${field}.atSeconds`, `must be < the framework's stopSeconds (${stop})`);
  else if (at >= end) fail(`${field}.atSeconds`, `must be < scenario.endSeconds (${end}): the run ends before it`);
  if (typeof a.type !== "string" || !ACTION_TYPES.includes(a.type)) return fail(`${field}.type`, `must be one of ${ACTION_TYPES.join(", ")}`);
  const known = { deploy: ["app", "force"], update: ["app", "force"], scale: ["appId", "instances", "force"], delete: ["appId"] }[a.type as MarathonAction["type"]];
  for (const key of Object.keys(a)) if (!["atSeconds", "type", ...known].includes(key)) fail(`${field}.${key}`, `is not a known field of a ${a.type} action (known: atSeconds, type, ${known.join(", ")})`);
  if (a.force !== undefined && typeof a.force !== "boolean") fail(`${field}.force`, "must be true or false");
  if (a.type === "deploy") {
    if (a.app === undefined) return fail(`${field}.app`, "is required");
    const app = checkApp(a.app, `${field}.app`, fail);
    if (!app) return;
    if (apps.has(app.id)) fail(`${field}.app.id`, `names an app that exists at that time (${app.id}); POST /v2/apps would answer 409 (use an update)`);
    apps.set(app.id, app);
    return;
  }
  if (a.type === "update") {
    if (!isObj(a.app)) return fail(`${field}.app`, "is required and must be an app spec (an object with its id)");
    const id = typeof a.app.id === "string" ? normalizedId(a.app.id) : undefined;
    if (id === undefined) return fail(`${field}.app.id`, "is required (the app to update)");
    const existing = apps.get(id);
    if (!existing) return fail(`${field}.app.id`, `must name an app that exists at that time, got ${JSON.stringify(a.app.id)}`);
    const result = validateAppUpdate(existing, a.app, { defaultRole: "*" });
    if (!result.ok) return reportFailure(result, `${field}.app`, fail);
    checkSimulable(result.app, `${field}.app`, fail);
    apps.set(id, result.app);
    return;
  }
  const id = typeof a.appId === "string" ? normalizedId(a.appId) : undefined;
  if (id === undefined) return fail(`${field}.appId`, "is required and must be an app id such as \"/web\"");
  const existing = apps.get(id);
  if (!existing) return fail(`${field}.appId`, `must name an app that exists at that time, got ${JSON.stringify(a.appId)}`);
  if (a.type === "delete") {
    apps.delete(id);
    return;
  }
  if (a.instances === undefined) return fail(`${field}.instances`, "is required");
  const result = validateAppUpdate(existing, { instances: a.instances }, { defaultRole: "*" });
  if (!result.ok) return reportFailure(result, field, fail);
  apps.set(id, result.app);
}

/** An app id as Marathon keeps it (absolute); what validateApp would make of it, for lookups. */
function normalizedId(id: string): string {
  const result = validateApp({ id, cmd: "x" }, { defaultRole: "*" });
  return result.ok ? result.app.id : id.startsWith("/") ? id : `/${id}`;
}

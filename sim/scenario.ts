/**
 * Simulation scenarios: the JSON a capacity planner writes, its types, and its validation. A
 * scenario is checked completely before anything runs; every problem names the field (a JSON
 * path such as `frameworks[1].tasks.cpus`) and the rule it breaks.
 *
 * @module
 */

import { parseAttributes } from "../agent/resources-detect.ts";
import { AllocatorError, createAllocator, type QuotaConfig } from "../master/allocator/index.ts";
import { Resources } from "../sdk/resources.ts";
import { SeededRng } from "../sdk/rng.ts";
import { roleNameError } from "../sdk/roles.ts";
import { WIRE_FORMS, type LatencySpec, type SimNetworkOptions, type WireForm } from "./network.ts";
// Batch frameworks (synthetic jobs, trace replay) are specified and checked in sim/workloads.
import { checkBatchFramework, hasTraceMachines, type BatchJobsSpec, type TraceSpec } from "./workloads/spec.ts";
// Marathon frameworks (app specs and timed actions) are specified and checked in sim/workloads.
import { checkMarathonFramework, type MarathonWorkloadSpec } from "./workloads/marathon-spec.ts";

/** A duration in seconds: a constant, or a distribution sampled per task. */
export type DurationSpec =
  | number
  | { dist: "exp"; meanSeconds: number }
  | { dist: "uniform"; minSeconds: number; maxSeconds: number };

/** A class of identical agents. */
export interface AgentClassSpec {
  /** Agents of this class at the start. */
  count: number;
  /** Mesos text, e.g. `cpus:8;mem:32768`. Missing disk/ports get `disk:10240`/`ports:[31000-32000]`. */
  resources: string;
  /** Mesos attribute text, e.g. `rack:r1`. @default "" */
  attributes?: string;
  /** Mean time between failures of one agent (exponential). @default none (never fails) */
  mtbfSeconds?: number;
  /** Mean time to repair after a failure (exponential). @default 300 */
  mttrSeconds?: number;
  /**
   * With `mtbfSeconds`: random failures of this class happen only before this time (scenario
   * seconds), and an agent one of them took down is back by then at the latest (its repair is cut
   * short), so the rest of the run is free of them. A fault check ends its worlds so, to judge
   * recovery after the faults. @default none (failures to the end of the run)
   */
  failuresUntilSeconds?: number;
}

/** The task demand of a framework. */
export interface TaskWorkloadSpec {
  /** Tasks submitted in all. */
  count: number;
  cpus: number;
  mem: number;
  durationSeconds: DurationSpec;
  /** Poisson arrivals from the framework's start, or all at once `at` seconds after the start. */
  arrival: { poisson: { ratePerSecond: number } } | { at: number };
  /** Times a task that failed or was lost is submitted again. @default 3 */
  maxRetries?: number;
}

/** Kinds of synthetic frameworks. */
export type FrameworkKind = "tasks" | "greedy" | "decliner" | "batch" | "marathon";

export interface FrameworkSpec {
  /** Unique among the scenario's frameworks. */
  name: string;
  /**
   * `tasks`: packs as many queued tasks as fit in each offer, declines the rest;
   * `greedy`: one queued task per offer, using the whole offer; `decliner`: declines everything.
   */
  kind: FrameworkKind;
  /** @default "default" */
  role?: string;
  /** The decline filter. @default 5 */
  refuseSeconds?: number;
  /**
   * kind `batch`: keep an offer nothing fits this long for work to come, instead of declining it
   * (see frameworks/batch/core.ts). @default 0 (declined at once)
   */
  offerHoldSeconds?: number;
  /** kind `batch`: offers kept at once, at most. @default 1000 */
  maxHeldOffers?: number;
  /** @default 0 */
  startSeconds?: number;
  /** Tear down at this time. @default never */
  stopSeconds?: number;
  /** Required for `tasks` and `greedy`; not allowed for `decliner`. */
  tasks?: TaskWorkloadSpec;
  /** kind `batch` (the frameworks/batch framework): a synthetic job workload. One of `jobs` and `trace`. */
  jobs?: BatchJobsSpec;
  /** kind `batch`: a Google 2011 or Alibaba 2018 trace to replay. One of `jobs` and `trace`. */
  trace?: TraceSpec;
  /** kind `marathon` (the frameworks/marathon framework): its apps and the timed changes to them. */
  marathon?: MarathonWorkloadSpec;
}

/** A timed change of the world. `class` names an agent class. */
export type ScenarioEvent =
  | { atSeconds: number; type: "add-agents"; class: string; count: number }
  /** Graceful removal: the agents unregister and their tasks are killed. */
  | { atSeconds: number; type: "remove-agents"; class: string; count: number }
  /** Crash: the agents go silent (tasks die with them) and come back after `downSeconds`, if given. */
  | { atSeconds: number; type: "fail-agents"; class: string; count: number; downSeconds?: number }
  /** Cuts `count` running agents of the class off from everyone for `durationSeconds`. */
  | { atSeconds: number; type: "partition-agents"; class: string; count: number; durationSeconds: number }
  /**
   * Crashes every running agent whose class has the attribute `rack:<rack>`; they come back after
   * `downSeconds`, if given.
   */
  | { atSeconds: number; type: "fail-rack"; rack: string; downSeconds?: number }
  | { atSeconds: number; type: "stop-framework"; name: string }
  /**
   * Crashes the leading master: its node goes silent and its lease is left to lapse, so a standby
   * (see {@link ClusterSpec.masters}) takes over, and agents and frameworks follow it. The crashed
   * master comes back as a standby after `downSeconds`, if given.
   */
  | { atSeconds: number; type: "master-failover"; downSeconds?: number }
  /**
   * Changes the network's faults from then on: each field given replaces the scenario's
   * `network` setting of that name (at least one is required). `{ "lossRate": 0,
   * "duplicateRate": 0 }` ends message loss and duplication.
   */
  | { atSeconds: number; type: "set-network"; latency?: LatencySpec; lossRate?: number; duplicateRate?: number };

export interface ClusterSpec {
  /** Agent classes by name (names are used in agent hostnames). */
  agentClasses: Record<string, AgentClassSpec>;
  /** @default {} (every role weighs 1) */
  roleWeights?: Record<string, number>;
  /** @default {} */
  quota?: Record<string, { guarantees?: Record<string, number>; limits?: Record<string, number> }>;
  /** @default 1000 */
  allocationIntervalMs?: number;
  /** @default undefined (offers are kept until answered) */
  offerTimeoutMs?: number;
  /**
   * How often the master pings each agent (Mesos's `agent_ping_timeout`). Pings are most of a
   * large cluster's messages (two per agent per interval), so a long run without partitions may
   * raise it to run faster; an agent is noticed unreachable that much later. @default 15000
   */
  agentPingIntervalMs?: number;
  /** Pings an agent may miss before it is marked unreachable (Mesos's `max_agent_ping_timeouts`). @default 5 */
  maxMissedPings?: number;
  /**
   * Masters of the cluster. With more than one, or with a `master-failover` event, they elect a
   * leader through a lease (in memory, on virtual time) as `corral master --ha` does, sharing one
   * registry; the others are standbys. @default 1
   */
  masters?: number;
}

export interface NetworkSpec {
  /** @default { dist: "uniform", minMs: 0.2, maxMs: 1 } */
  latency?: LatencySpec;
  /** @default 0 */
  lossRate?: number;
  /** @default 0 */
  duplicateRate?: number;
  /** What messages travel as, see {@link SimNetworkOptions.wire}. @default "messages" */
  wire?: WireForm;
}

/** A whole scenario. */
export interface Scenario {
  /** @default "scenario" */
  name?: string;
  /** Seeds every random choice of the run. */
  seed: number;
  /** Simulated duration. */
  endSeconds: number;
  /** Interval of the report's samples (`--sample-interval` wins; at most 2000 samples by default, see sim/report.ts). @default min(60, max(1, endSeconds / 100)) */
  sampleIntervalSeconds?: number;
  cluster: ClusterSpec;
  /** @default {} */
  network?: NetworkSpec;
  frameworks: FrameworkSpec[];
  /** @default [] */
  events?: ScenarioEvent[];
}

/** Raised by {@link validateScenario}; `problems` lists every `field: rule`. */
export class ScenarioError extends Error {
  readonly code = "CORRAL_ERR_INVALID_SCENARIO";
  constructor(readonly problems: string[]) {
    super(`invalid scenario:\n  ${problems.join("\n  ")}`);
    this.name = "ScenarioError";
  }
}

type Obj = Record<string, unknown>;

class Checker {
  readonly problems: string[] = [];
  fail(field: string, rule: string): void {
    this.problems.push(`${field}: ${rule}`);
  }
  obj(value: unknown, field: string): Obj | undefined {
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Obj;
    this.fail(field, "must be an object");
    return undefined;
  }
  /** `rule.why` is added to the message of a value below `min`. */
  num(o: Obj, key: string, field: string, rule: { min?: number; gt?: number; int?: boolean; optional?: boolean; max?: number; why?: string }): void {
    const v = o[key];
    if (v === undefined) {
      if (!rule.optional) this.fail(`${field}.${key}`, "is required");
      return;
    }
    if (typeof v !== "number" || !Number.isFinite(v)) return this.fail(`${field}.${key}`, "must be a finite number");
    if (rule.int && !Number.isInteger(v)) return this.fail(`${field}.${key}`, "must be an integer");
    if (rule.gt !== undefined && !(v > rule.gt)) return this.fail(`${field}.${key}`, `must be > ${rule.gt}`);
    if (rule.min !== undefined && v < rule.min) return this.fail(`${field}.${key}`, `must be >= ${rule.min}${rule.why ? ` (${rule.why})` : ""}`);
    if (rule.max !== undefined && v > rule.max) return this.fail(`${field}.${key}`, `must be <= ${rule.max}`);
  }
  str(o: Obj, key: string, field: string, optional = false): string | undefined {
    const v = o[key];
    if (v === undefined) {
      if (!optional) this.fail(`${field}.${key}`, "is required");
      return undefined;
    }
    if (typeof v !== "string" || v === "") {
      this.fail(`${field}.${key}`, "must be a non-empty string");
      return undefined;
    }
    return v;
  }
  unknownKeys(o: Obj, allowed: string[], field: string): void {
    for (const key of Object.keys(o)) if (!allowed.includes(key)) this.fail(`${field}.${key}`, `is not a known field (known: ${allowed.join(", ")})`);
  }
}

/** Longest simulated duration a scenario may ask for (a year). */
export const MAX_END_SECONDS = 365 * 86_400;
/** Largest scenario seed (a plan runs seed, seed + 1, ... seed + 99, all exact integers). */
export const MAX_SEED = 1_000_000_000_000_000;
/** Most agents of one class a scenario may start with. */
export const MAX_CLASS_AGENTS = 1_000_000;

const CLASS_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const FRAMEWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Options of {@link validateScenario}. */
export interface ValidateScenarioOptions {
  /** Folder relative trace file names are read from (the scenario file's). @default the current directory */
  baseDir?: string;
}

/**
 * Checks `input` (parsed JSON) and returns it typed. @throws {ScenarioError} listing every problem.
 */
export function validateScenario(input: unknown, options: ValidateScenarioOptions = {}): Scenario {
  const c = new Checker();
  const root = c.obj(input, "scenario");
  if (!root) throw new ScenarioError(c.problems);
  c.unknownKeys(root, ["name", "seed", "endSeconds", "sampleIntervalSeconds", "cluster", "network", "frameworks", "events"], "scenario");
  if (root.name !== undefined) c.str(root, "name", "scenario", true);
  // Exact integers only, with room for a plan's seed + 1, ... (past 2^53 those would all be one seed).
  c.num(root, "seed", "scenario", { int: true, min: 0, max: MAX_SEED });
  c.num(root, "endSeconds", "scenario", { gt: 0, max: MAX_END_SECONDS });
  c.num(root, "sampleIntervalSeconds", "scenario", { gt: 0, optional: true });
  // What is timed at or after the end would silently never happen.
  const endSeconds = typeof root.endSeconds === "number" && root.endSeconds > 0 ? root.endSeconds : Infinity;

  const classes = new Set<string>();
  const cluster = root.cluster === undefined ? (c.fail("scenario.cluster", "is required"), undefined) : c.obj(root.cluster, "scenario.cluster");
  if (cluster) checkCluster(c, cluster, classes, hasTraceMachines(root.frameworks));
  const racks = new Set<string>();
  if (cluster && typeof cluster.agentClasses === "object" && cluster.agentClasses !== null) {
    for (const spec of Object.values(cluster.agentClasses as Obj)) {
      const rack = rackOf((spec as { attributes?: unknown } | null)?.attributes);
      if (rack !== undefined) racks.add(rack);
    }
  }

  if (root.network !== undefined) {
    const net = c.obj(root.network, "scenario.network");
    if (net) {
      c.unknownKeys(net, ["latency", "lossRate", "duplicateRate", "wire"], "scenario.network");
      if (net.wire !== undefined && !WIRE_FORMS.includes(net.wire as WireForm)) c.fail("scenario.network.wire", `must be one of ${WIRE_FORMS.join(", ")}`);
      c.num(net, "lossRate", "scenario.network", { min: 0, max: 1, optional: true });
      c.num(net, "duplicateRate", "scenario.network", { min: 0, max: 1, optional: true });
      if (net.latency !== undefined) checkLatency(c, net.latency, "scenario.network.latency");
    }
  }

  const names = new Set<string>();
  if (!Array.isArray(root.frameworks)) c.fail("scenario.frameworks", "must be an array");
  else {
    if (root.frameworks.length === 0) c.fail("scenario.frameworks", "must not be empty");
    root.frameworks.forEach((f, i) => checkFramework(c, f, `scenario.frameworks[${i}]`, names, options.baseDir, endSeconds));
  }

  if (root.events !== undefined) {
    if (!Array.isArray(root.events)) c.fail("scenario.events", "must be an array");
    else {
      const masters = typeof cluster?.masters === "number" ? cluster.masters : 1;
      root.events.forEach((e, i) => {
        if (isMasterFailover(e)) checkMasterFailover(c, e, `scenario.events[${i}]`, masters);
        else checkEvent(c, e, `scenario.events[${i}]`, classes, names, racks);
        const at = (e as { atSeconds?: unknown } | null)?.atSeconds;
        if (typeof at === "number" && at >= endSeconds) c.fail(`scenario.events[${i}].atSeconds`, `must be < scenario.endSeconds (${endSeconds}): the run ends before it`);
      });
    }
  }
  if (c.problems.length > 0) throw new ScenarioError(c.problems);
  return input as Scenario;
}

function checkCluster(c: Checker, cluster: Obj, classes: Set<string>, traceMachines = false): void {
  const field = "scenario.cluster";
  c.unknownKeys(cluster, ["agentClasses", "roleWeights", "quota", "allocationIntervalMs", "offerTimeoutMs", "agentPingIntervalMs", "maxMissedPings", "masters"], field);
  c.num(cluster, "masters", field, { int: true, min: 1, max: MAX_SIM_MASTERS, optional: true });
  // Floors, not only > 0: an allocation or ping every nanosecond is valid arithmetic but fires
  // so many events that the run never ends. 1 ms is far below any real setting (Mesos: 1 s and 15 s).
  const tooFrequent = "ms; a shorter interval fires so many events the run never ends";
  c.num(cluster, "allocationIntervalMs", field, { min: 1, why: tooFrequent, optional: true });
  c.num(cluster, "offerTimeoutMs", field, { gt: 0, optional: true });
  c.num(cluster, "agentPingIntervalMs", field, { min: 1, why: tooFrequent, optional: true });
  c.num(cluster, "maxMissedPings", field, { int: true, min: 1, optional: true });
  const agentClasses = cluster.agentClasses === undefined ? (c.fail(`${field}.agentClasses`, "is required"), undefined) : c.obj(cluster.agentClasses, `${field}.agentClasses`);
  if (agentClasses) {
    // A replayed trace may bring all the machines.
    if (Object.keys(agentClasses).length === 0 && !traceMachines) c.fail(`${field}.agentClasses`, "must name at least one class");
    for (const [name, spec] of Object.entries(agentClasses)) {
      const f = `${field}.agentClasses.${name}`;
      if (!CLASS_NAME.test(name)) c.fail(f, "class names must be lower-case letters, digits and '-' (1-63 characters)");
      classes.add(name);
      const o = c.obj(spec, f);
      if (!o) continue;
      c.unknownKeys(o, ["count", "resources", "attributes", "mtbfSeconds", "mttrSeconds", "failuresUntilSeconds"], f);
      c.num(o, "count", f, { int: true, min: 0, max: MAX_CLASS_AGENTS });
      // An agent takes about a second to register (its backoff); failing more often than that is
      // not a failure model, and a tiny MTBF turns the run into an endless stream of crashes.
      c.num(o, "mtbfSeconds", f, { min: 1, why: "s; an agent failing more often fails before it has registered, and the run never ends", optional: true });
      c.num(o, "mttrSeconds", f, { gt: 0, optional: true });
      c.num(o, "failuresUntilSeconds", f, { min: 0, optional: true });
      // It bounds the random failures: without them it would silently do nothing.
      if (o.failuresUntilSeconds !== undefined && o.mtbfSeconds === undefined) c.fail(`${f}.failuresUntilSeconds`, "needs mtbfSeconds (it ends the class's random failures, and without an MTBF there are none)");
      const text = c.str(o, "resources", f);
      if (text !== undefined) {
        try {
          const r = Resources.parse(text);
          if (!(r.scalar("cpus") > 0) || !(r.scalar("mem") > 0)) c.fail(`${f}.resources`, "must give cpus and mem > 0");
        } catch (err) {
          c.fail(`${f}.resources`, `is not valid Mesos resource text (${err instanceof Error ? err.message : String(err)})`);
        }
      }
      if (o.attributes !== undefined && typeof o.attributes !== "string") c.fail(`${f}.attributes`, "must be a string such as \"rack:r1;zone:a\"");
      else if (typeof o.attributes === "string") {
        // The agents parse them when they start: a bad piece is refused here, before the run.
        try {
          parseAttributes(o.attributes);
        } catch (err) {
          c.fail(`${f}.attributes`, `is not valid Mesos attribute text (${err instanceof Error ? err.message : String(err)})`);
        }
      }
    }
  }
  if (cluster.roleWeights !== undefined) {
    const w = c.obj(cluster.roleWeights, `${field}.roleWeights`);
    if (w) {
      for (const [role, weight] of Object.entries(w)) {
        const problem = roleNameError(role);
        if (problem) c.fail(`${field}.roleWeights.${role}`, problem);
        if (typeof weight !== "number" || !(weight > 0) || !Number.isFinite(weight)) c.fail(`${field}.roleWeights.${role}`, "must be a finite number > 0");
      }
    }
  }
  if (cluster.quota !== undefined) {
    const q = c.obj(cluster.quota, `${field}.quota`);
    // The master's own rules (those of PUT /quota), from a scratch allocator: a quota it would
    // refuse is named here rather than quietly dropped when the run starts.
    const scratch = q ? createAllocator({ rng: new SeededRng(0) }) : undefined;
    if (q) {
      for (const [role, spec] of Object.entries(q)) {
        const f = `${field}.quota.${role}`;
        const o = c.obj(spec, f);
        if (!o) continue;
        c.unknownKeys(o, ["guarantees", "limits"], f);
        const before = c.problems.length;
        for (const part of ["guarantees", "limits"]) {
          if (o[part] === undefined) continue;
          const m = c.obj(o[part], `${f}.${part}`);
          if (m) for (const name of Object.keys(m)) c.num(m, name, `${f}.${part}`, { min: 0 });
        }
        if (c.problems.length > before) continue;
        try {
          scratch!.setQuota(role, o as QuotaConfig);
        } catch (err) {
          if (!(err instanceof AllocatorError)) throw err;
          c.fail(f, err.message);
        }
      }
    }
  }
}

function checkLatency(c: Checker, value: unknown, field: string): void {
  const o = c.obj(value, field);
  if (!o) return;
  switch (o.dist) {
    case "fixed":
      c.unknownKeys(o, ["dist", "ms"], field);
      c.num(o, "ms", field, { min: 0 });
      return;
    case "uniform":
      c.unknownKeys(o, ["dist", "minMs", "maxMs"], field);
      c.num(o, "minMs", field, { min: 0 });
      c.num(o, "maxMs", field, { min: 0 });
      if (typeof o.minMs === "number" && typeof o.maxMs === "number" && o.maxMs < o.minMs) c.fail(`${field}.maxMs`, "must be >= minMs");
      return;
    case "exp":
      c.unknownKeys(o, ["dist", "minMs", "meanMs"], field);
      c.num(o, "minMs", field, { min: 0 });
      c.num(o, "meanMs", field, { min: 0 });
      if (typeof o.minMs === "number" && typeof o.meanMs === "number" && o.meanMs < o.minMs) c.fail(`${field}.meanMs`, "must be >= minMs");
      return;
    default:
      c.fail(`${field}.dist`, 'must be "fixed", "uniform" or "exp"');
  }
}

function checkDuration(c: Checker, parent: Obj, key: string, field: string): void {
  const v = parent[key];
  const f = `${field}.${key}`;
  if (v === undefined) return c.fail(f, "is required");
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0) c.fail(f, "must be a finite number >= 0");
    return;
  }
  const o = c.obj(v, f);
  if (!o) return;
  if (o.dist === "exp") {
    c.unknownKeys(o, ["dist", "meanSeconds"], f);
    c.num(o, "meanSeconds", f, { gt: 0 });
  } else if (o.dist === "uniform") {
    c.unknownKeys(o, ["dist", "minSeconds", "maxSeconds"], f);
    c.num(o, "minSeconds", f, { min: 0 });
    c.num(o, "maxSeconds", f, { min: 0 });
    if (typeof o.minSeconds === "number" && typeof o.maxSeconds === "number" && o.maxSeconds < o.minSeconds) c.fail(`${f}.maxSeconds`, "must be >= minSeconds");
  } else c.fail(`${f}.dist`, 'must be "exp" or "uniform" (or give a number of seconds)');
}

function checkFramework(c: Checker, value: unknown, field: string, names: Set<string>, baseDir: string | undefined, endSeconds: number): void {
  const f = c.obj(value, field);
  if (!f) return;
  c.unknownKeys(f, ["name", "kind", "role", "refuseSeconds", "offerHoldSeconds", "maxHeldOffers", "startSeconds", "stopSeconds", "tasks", "jobs", "trace", "marathon"], field);
  const name = c.str(f, "name", field);
  if (name !== undefined) {
    if (!FRAMEWORK_NAME.test(name)) c.fail(`${field}.name`, "must be letters, digits, '_', '.' or '-' (1-63 characters)");
    if (names.has(name)) c.fail(`${field}.name`, `must be unique (${JSON.stringify(name)} is used twice)`);
    names.add(name);
  }
  if (f.kind !== "tasks" && f.kind !== "greedy" && f.kind !== "decliner" && f.kind !== "batch" && f.kind !== "marathon") c.fail(`${field}.kind`, 'must be "tasks", "greedy", "decliner", "batch" or "marathon"');
  if (f.role !== undefined) {
    const role = c.str(f, "role", field, true);
    const problem = role === undefined ? undefined : roleNameError(role);
    if (problem) c.fail(`${field}.role`, problem);
  }
  c.num(f, "refuseSeconds", field, { min: 0, optional: true });
  c.num(f, "startSeconds", field, { min: 0, optional: true });
  c.num(f, "stopSeconds", field, { min: 0, optional: true });
  if (typeof f.startSeconds === "number" && typeof f.stopSeconds === "number" && f.stopSeconds <= f.startSeconds) c.fail(`${field}.stopSeconds`, "must be > startSeconds");
  if (typeof f.startSeconds === "number" && f.startSeconds >= endSeconds) c.fail(`${field}.startSeconds`, `must be < scenario.endSeconds (${endSeconds}): the run ends before the framework starts`);
  // ---- kind "batch": jobs or trace (sim/workloads/spec.ts) ----
  checkBatchFramework(f, field, (path, rule) => c.fail(path, rule), baseDir);
  if (f.kind === "batch") return;
  // ---- kind "marathon": app specs and timed actions (sim/workloads/marathon-spec.ts) ----
  checkMarathonFramework(f, field, (path, rule) => c.fail(path, rule), endSeconds);
  if (f.kind === "marathon") return;
  if (f.kind === "decliner") {
    if (f.tasks !== undefined) c.fail(`${field}.tasks`, "is not allowed for a decliner");
    return;
  }
  if (f.tasks === undefined) {
    if (f.kind === "tasks" || f.kind === "greedy") c.fail(`${field}.tasks`, `is required for kind ${String(f.kind)}`);
    return;
  }
  const tf = `${field}.tasks`;
  const t = c.obj(f.tasks, tf);
  if (!t) return;
  c.unknownKeys(t, ["count", "cpus", "mem", "durationSeconds", "arrival", "maxRetries"], tf);
  c.num(t, "count", tf, { int: true, min: 0, max: 100_000_000 });
  c.num(t, "cpus", tf, { gt: 0 });
  c.num(t, "mem", tf, { gt: 0 });
  c.num(t, "maxRetries", tf, { int: true, min: 0, optional: true });
  checkDuration(c, t, "durationSeconds", tf);
  const a = t.arrival === undefined ? (c.fail(`${tf}.arrival`, "is required"), undefined) : c.obj(t.arrival, `${tf}.arrival`);
  if (a) {
    c.unknownKeys(a, ["poisson", "at"], `${tf}.arrival`);
    if (a.poisson !== undefined && a.at !== undefined) c.fail(`${tf}.arrival`, 'must give one of "poisson" and "at", not both');
    else if (a.poisson !== undefined) {
      const p = c.obj(a.poisson, `${tf}.arrival.poisson`);
      if (p) {
        c.unknownKeys(p, ["ratePerSecond"], `${tf}.arrival.poisson`);
        c.num(p, "ratePerSecond", `${tf}.arrival.poisson`, { gt: 0 });
      }
    } else if (a.at !== undefined) c.num(a, "at", `${tf}.arrival`, { min: 0 });
    else c.fail(`${tf}.arrival`, 'must be { "poisson": { "ratePerSecond": r } } or { "at": seconds }');
  }
}

const EVENT_TYPES = ["add-agents", "remove-agents", "fail-agents", "partition-agents", "fail-rack", "stop-framework", "master-failover", "set-network"];
/** Most masters a scenario may run. */
export const MAX_SIM_MASTERS = 9;

function isMasterFailover(value: unknown): value is Obj {
  return typeof value === "object" && value !== null && (value as Obj).type === "master-failover";
}

function checkMasterFailover(c: Checker, e: Obj, field: string, masters: number): void {
  c.unknownKeys(e, ["atSeconds", "type", "downSeconds"], field);
  c.num(e, "atSeconds", field, { min: 0 });
  c.num(e, "downSeconds", field, { gt: 0, optional: true });
  if (masters < 2 && e.downSeconds === undefined) {
    c.fail(`${field}.downSeconds`, "is required with a single master (scenario.cluster.masters is 1): without a standby or a restart the cluster has no master for the rest of the run");
  }
}

/** Whether the scenario runs its masters with leader election (several, or one that fails over). */
export function electsMasters(scenario: Scenario): boolean {
  return (scenario.cluster.masters ?? 1) > 1 || (scenario.events ?? []).some((e) => e.type === "master-failover");
}

/** The rack of Mesos attribute text (`rack:r1;zone:a` → `r1`), or undefined when it names none. */
export function rackOf(attributes: unknown): string | undefined {
  if (typeof attributes !== "string") return undefined;
  for (const part of attributes.split(";")) {
    const colon = part.indexOf(":");
    if (colon > 0 && part.slice(0, colon).trim() === "rack") {
      const rack = part.slice(colon + 1).trim();
      if (rack !== "") return rack;
    }
  }
  return undefined;
}

function checkEvent(c: Checker, value: unknown, field: string, classes: Set<string>, names: Set<string>, racks: Set<string>): void {
  const e = c.obj(value, field);
  if (!e) return;
  c.num(e, "atSeconds", field, { min: 0 });
  if (typeof e.type !== "string" || !EVENT_TYPES.includes(e.type)) return c.fail(`${field}.type`, `must be one of ${EVENT_TYPES.join(", ")}`);
  if (e.type === "stop-framework") {
    c.unknownKeys(e, ["atSeconds", "type", "name"], field);
    const name = c.str(e, "name", field);
    if (name !== undefined && !names.has(name)) c.fail(`${field}.name`, `must name a framework of the scenario, got ${JSON.stringify(name)}`);
    return;
  }
  if (e.type === "set-network") {
    c.unknownKeys(e, ["atSeconds", "type", "latency", "lossRate", "duplicateRate"], field);
    c.num(e, "lossRate", field, { min: 0, max: 1, optional: true });
    c.num(e, "duplicateRate", field, { min: 0, max: 1, optional: true });
    if (e.latency !== undefined) checkLatency(c, e.latency, `${field}.latency`);
    if (e.latency === undefined && e.lossRate === undefined && e.duplicateRate === undefined) c.fail(field, "a set-network event must give at least one of latency, lossRate and duplicateRate");
    return;
  }
  if (e.type === "fail-rack") {
    c.unknownKeys(e, ["atSeconds", "type", "rack", "downSeconds"], field);
    const rack = c.str(e, "rack", field);
    const known = [...racks].sort().join(", ") || "none: give agent classes attributes such as \"rack:r1\"";
    if (rack !== undefined && !racks.has(rack)) c.fail(`${field}.rack`, `must name a rack of an agent class (attribute rack:<name>; known: ${known}), got ${JSON.stringify(rack)}`);
    c.num(e, "downSeconds", field, { gt: 0, optional: true });
    return;
  }
  const extra = e.type === "fail-agents" ? ["downSeconds"] : e.type === "partition-agents" ? ["durationSeconds"] : [];
  c.unknownKeys(e, ["atSeconds", "type", "class", "count", ...extra], field);
  const cls = c.str(e, "class", field);
  if (cls !== undefined && !classes.has(cls)) c.fail(`${field}.class`, `must name an agent class of scenario.cluster.agentClasses, got ${JSON.stringify(cls)}`);
  // Adding creates that many agents at once: bounded as a class's starting count is.
  c.num(e, "count", field, { int: true, gt: 0, ...(e.type === "add-agents" ? { max: MAX_CLASS_AGENTS } : {}) });
  if (e.type === "fail-agents") c.num(e, "downSeconds", field, { gt: 0, optional: true });
  if (e.type === "partition-agents") c.num(e, "durationSeconds", field, { gt: 0 });
}

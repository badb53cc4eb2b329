/**
 * Scenario fields of `batch` frameworks: a synthetic job workload (`jobs`) or a trace to replay
 * (`trace`), and their validation. `sim/scenario.ts` calls {@link checkBatchFramework} for every
 * framework; each problem names the field (`scenario.frameworks[2].jobs.cpus.max`) and the rule.
 *
 * @module
 */

import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { BATCH_CONFIG_BOUNDS } from "../../frameworks/batch/core.ts";
import { Resources } from "../../sdk/resources.ts";

/** An amount drawn per job: a constant, uniform in [min, max], or resampled from observed values. */
export type AmountDist = number | { dist: "uniform"; min: number; max: number } | { dist: "empirical"; values: number[]; weights?: number[] };

/** A task duration in seconds, drawn per task. */
export type BatchDurationSpec =
  | number
  | { dist: "exp"; meanSeconds: number }
  | { dist: "uniform"; minSeconds: number; maxSeconds: number }
  | { dist: "empirical"; values: number[]; weights?: number[] };

/** How jobs arrive. */
export type JobArrivalSpec =
  /** A Poisson process: exponential gaps with mean 1/rate. */
  | { poisson: { ratePerSecond: number } }
  /** Gaps resampled from observed inter-arrival times (with optional weights). */
  | { empirical: { interArrivalSeconds: number[]; weights?: number[] } }
  /** All jobs at once, `at` seconds after the framework starts. */
  | { at: number };

/** A synthetic job workload. */
export interface BatchJobsSpec {
  /** Jobs submitted in all. */
  count: number;
  arrival: JobArrivalSpec;
  /** Tasks per job (drawn per job, rounded to an integer >= 1). */
  tasksPerJob: AmountDist;
  /** Cpus per task (drawn per job: a job's tasks are alike). */
  cpus: AmountDist;
  /** Memory per task, MB (drawn per job). */
  mem: AmountDist;
  /** Disk per task, MB (drawn per job). @default none */
  disk?: AmountDist;
  /** Run time of a task (drawn per task). */
  durationSeconds: BatchDurationSpec;
  /** Probability that an attempt fails (exits 1 part-way through its run). @default 0 */
  failureRate?: number;
  /** Times a failed task is run again. @default 3 */
  maxRetries?: number;
  /** A job still live this long after submission is stopped as timed out. @default none */
  timeoutSeconds?: number;
  /** End a job as soon as one task has used up its retries. @default false */
  failFast?: boolean;
}

/** Trace formats the simulator replays. */
export type TraceFormat = "google-2011" | "alibaba-2018";

/**
 * A trace to replay (see sim/README.md, "Trace replay"). Relative paths are resolved from the
 * scenario file's folder when the scenario was read from a file (`baseDir` of the run), else from
 * the current directory.
 */
export interface TraceSpec {
  format: TraceFormat;
  /** google-2011: `task_events` part files (`.csv` or `.csv.gz`), in time order. */
  taskEvents?: string | string[];
  /** google-2011: the `machine_events` file. @default none (agents come from cluster.agentClasses) */
  machineEvents?: string;
  /** alibaba-2018: `batch_task` file(s). */
  batchTask?: string | string[];
  /** alibaba-2018: the `machine_meta` file. @default none (agents come from cluster.agentClasses) */
  machineMeta?: string;
  /**
   * Mesos text of the largest machine, e.g. `cpus:32;mem:65536`: normalized requests and
   * capacities are scaled by it (google: cpus, mem, and disk when given; alibaba: mem, and cpus
   * relative to the largest `cpu_num`).
   */
  machineShape: string;
  /** Trace time (seconds) that maps to the framework's start. @default 600 for google-2011 (where the trace window begins), 0 for alibaba-2018 */
  originSeconds?: number;
  /** Retries per task beyond the attempts the trace recorded (for attempts the simulation itself loses). @default 0 */
  maxRetries?: number;
  /** Tasks read at most; a longer trace is an error (shorten the run or raise it). @default 200000 */
  maxTasks?: number;
  /** Machines read at most. @default 100000 */
  maxMachines?: number;
}

/** Default of {@link TraceSpec.maxTasks}. */
export const DEFAULT_TRACE_MAX_TASKS = 200_000;
/** Default of {@link TraceSpec.maxMachines}. */
export const DEFAULT_TRACE_MAX_MACHINES = 100_000;
/** Default of {@link TraceSpec.originSeconds} per format. */
export const DEFAULT_TRACE_ORIGIN_SECONDS: Record<TraceFormat, number> = { "google-2011": 600, "alibaba-2018": 0 };

type Obj = Record<string, unknown>;
type Fail = (field: string, rule: string) => void;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function unknownKeys(o: Obj, allowed: readonly string[], field: string, fail: Fail): void {
  for (const key of Object.keys(o)) if (!allowed.includes(key)) fail(`${field}.${key}`, `is not a known field (known: ${allowed.join(", ")})`);
}

function num(o: Obj, key: string, field: string, fail: Fail, rule: { gt?: number; min?: number; max?: number; int?: boolean; optional?: boolean }): void {
  const v = o[key];
  const f = `${field}.${key}`;
  if (v === undefined) {
    if (!rule.optional) fail(f, "is required");
    return;
  }
  if (typeof v !== "number" || !Number.isFinite(v)) return fail(f, "must be a finite number");
  if (rule.int && !Number.isInteger(v)) return fail(f, "must be an integer");
  if (rule.gt !== undefined && !(v > rule.gt)) return fail(f, `must be > ${rule.gt}`);
  if (rule.min !== undefined && v < rule.min) return fail(f, `must be >= ${rule.min}`);
  if (rule.max !== undefined && v > rule.max) return fail(f, `must be <= ${rule.max}`);
}

/** Checks `values` (and `weights`) of an empirical distribution. */
function checkEmpirical(o: Obj, valuesKey: string, field: string, fail: Fail, min: number, minRule: string): void {
  const values = o[valuesKey];
  if (!Array.isArray(values) || values.length === 0) fail(`${field}.${valuesKey}`, "must be a non-empty array of numbers");
  else if (values.length > 1_000_000) fail(`${field}.${valuesKey}`, "must hold at most 1000000 values");
  else values.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) fail(`${field}.${valuesKey}[${i}]`, minRule);
  });
  if (o.weights === undefined) return;
  const weights = o.weights;
  if (!Array.isArray(weights)) return fail(`${field}.weights`, "must be an array of numbers >= 0");
  if (Array.isArray(values) && weights.length !== values.length) fail(`${field}.weights`, `must have one weight per value (${values.length}), got ${weights.length}`);
  weights.forEach((w, i) => {
    if (typeof w !== "number" || !Number.isFinite(w) || w < 0) fail(`${field}.weights[${i}]`, "must be a finite number >= 0");
  });
  if (weights.every((w) => typeof w === "number") && !(weights as number[]).some((w) => w > 0)) fail(`${field}.weights`, "must not all be 0");
}

/** An amount: a number > `gt`... (min is inclusive for uniform bounds). */
function checkAmount(parent: Obj, key: string, field: string, fail: Fail, required: boolean, positive: boolean): void {
  const v = parent[key];
  const f = `${field}.${key}`;
  const bound = positive ? "> 0" : ">= 0";
  const ok = (n: number) => (positive ? n > 0 : n >= 0);
  if (v === undefined) {
    if (required) fail(f, "is required");
    return;
  }
  if (typeof v === "number") {
    if (!Number.isFinite(v) || !ok(v)) fail(f, `must be a finite number ${bound}`);
    return;
  }
  if (!isObj(v)) return fail(f, 'must be a number, { "dist": "uniform", "min", "max" } or { "dist": "empirical", "values" }');
  if (v.dist === "uniform") {
    unknownKeys(v, ["dist", "min", "max"], f, fail);
    num(v, "min", f, fail, positive ? { gt: 0 } : { min: 0 });
    num(v, "max", f, fail, positive ? { gt: 0 } : { min: 0 });
    if (typeof v.min === "number" && typeof v.max === "number" && v.max < v.min) fail(`${f}.max`, "must be >= min");
  } else if (v.dist === "empirical") {
    unknownKeys(v, ["dist", "values", "weights"], f, fail);
    checkEmpirical(v, "values", f, fail, positive ? Number.MIN_VALUE : 0, `must be a finite number ${bound}`);
  } else fail(`${f}.dist`, 'must be "uniform" or "empirical" (or give a number)');
}

function checkBatchDuration(parent: Obj, key: string, field: string, fail: Fail): void {
  const v = parent[key];
  const f = `${field}.${key}`;
  if (v === undefined) return fail(f, "is required");
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0) fail(f, "must be a finite number >= 0");
    return;
  }
  if (!isObj(v)) return fail(f, "must be a number of seconds or a distribution");
  switch (v.dist) {
    case "exp":
      unknownKeys(v, ["dist", "meanSeconds"], f, fail);
      num(v, "meanSeconds", f, fail, { gt: 0 });
      return;
    case "uniform":
      unknownKeys(v, ["dist", "minSeconds", "maxSeconds"], f, fail);
      num(v, "minSeconds", f, fail, { min: 0 });
      num(v, "maxSeconds", f, fail, { min: 0 });
      if (typeof v.minSeconds === "number" && typeof v.maxSeconds === "number" && v.maxSeconds < v.minSeconds) fail(`${f}.maxSeconds`, "must be >= minSeconds");
      return;
    case "empirical":
      unknownKeys(v, ["dist", "values", "weights"], f, fail);
      checkEmpirical(v, "values", f, fail, 0, "must be a finite number >= 0");
      return;
    default:
      fail(`${f}.dist`, 'must be "exp", "uniform" or "empirical" (or give a number of seconds)');
  }
}

function checkArrival(parent: Obj, field: string, fail: Fail): void {
  const f = `${field}.arrival`;
  const a = parent.arrival;
  if (a === undefined) return fail(f, "is required");
  if (!isObj(a)) return fail(f, "must be an object");
  const forms = ["poisson", "empirical", "at"].filter((k) => a[k] !== undefined);
  if (forms.length !== 1) return fail(f, 'must be exactly one of { "poisson": { "ratePerSecond" } }, { "empirical": { "interArrivalSeconds": [...] } } or { "at": seconds }');
  unknownKeys(a, ["poisson", "empirical", "at"], f, fail);
  if (forms[0] === "at") return num(a, "at", f, fail, { min: 0 });
  const inner = a[forms[0]!];
  const g = `${f}.${forms[0]}`;
  if (!isObj(inner)) return fail(g, "must be an object");
  if (forms[0] === "poisson") {
    unknownKeys(inner, ["ratePerSecond"], g, fail);
    num(inner, "ratePerSecond", g, fail, { gt: 0 });
  } else {
    unknownKeys(inner, ["interArrivalSeconds", "weights"], g, fail);
    checkEmpirical(inner, "interArrivalSeconds", g, fail, 0, "must be a finite number >= 0");
    const values = inner.interArrivalSeconds;
    if (Array.isArray(values) && values.length > 0 && values.every((v) => v === 0)) fail(`${g}.interArrivalSeconds`, "must not all be 0");
  }
}

const JOBS_KEYS = ["count", "arrival", "tasksPerJob", "cpus", "mem", "disk", "durationSeconds", "failureRate", "maxRetries", "timeoutSeconds", "failFast"];

function checkJobs(value: unknown, field: string, fail: Fail): void {
  if (!isObj(value)) return fail(field, "must be an object");
  unknownKeys(value, JOBS_KEYS, field, fail);
  num(value, "count", field, fail, { int: true, min: 0, max: 10_000_000 });
  checkArrival(value, field, fail);
  checkAmount(value, "tasksPerJob", field, fail, true, true);
  checkAmount(value, "cpus", field, fail, true, true);
  checkAmount(value, "mem", field, fail, true, true);
  checkAmount(value, "disk", field, fail, false, false);
  checkBatchDuration(value, "durationSeconds", field, fail);
  num(value, "failureRate", field, fail, { min: 0, max: 1, optional: true });
  num(value, "maxRetries", field, fail, { int: true, min: 0, max: 1000, optional: true });
  num(value, "timeoutSeconds", field, fail, { gt: 0, optional: true });
  if (value.failFast !== undefined && typeof value.failFast !== "boolean") fail(`${field}.failFast`, "must be true or false");
}

const TRACE_KEYS = ["format", "taskEvents", "machineEvents", "batchTask", "machineMeta", "machineShape", "originSeconds", "maxRetries", "maxTasks", "maxMachines"];
const FILES: Record<TraceFormat, { required: string; optional: string; other: string[] }> = {
  "google-2011": { required: "taskEvents", optional: "machineEvents", other: ["batchTask", "machineMeta"] },
  "alibaba-2018": { required: "batchTask", optional: "machineMeta", other: ["taskEvents", "machineEvents"] },
};

function checkFile(value: unknown, field: string, fail: Fail, many: boolean, baseDir: string | undefined): void {
  const list = many && Array.isArray(value) ? value : [value];
  if (many && Array.isArray(value) && value.length === 0) return fail(field, "must name at least one file");
  list.forEach((path, i) => {
    const f = many && Array.isArray(value) ? `${field}[${i}]` : field;
    if (typeof path !== "string" || path === "") return fail(f, `must be a file path${many ? " (or an array of them)" : ""}`);
    if (!/\.csv(\.gz)?$/.test(path)) return fail(f, `must be a .csv or .csv.gz file, got ${JSON.stringify(path)}`);
    const where = baseDir === undefined ? path : resolve(baseDir, path);
    const from = baseDir === undefined ? "the current directory" : "the scenario file's folder";
    if (!existsSync(where) || !statSync(where).isFile()) fail(f, `no such file: ${path} (relative paths are read from ${from})`);
  });
}

function checkTrace(value: unknown, field: string, fail: Fail, baseDir: string | undefined): void {
  if (!isObj(value)) return fail(field, "must be an object");
  unknownKeys(value, TRACE_KEYS, field, fail);
  const format = value.format;
  if (format !== "google-2011" && format !== "alibaba-2018") fail(`${field}.format`, 'must be "google-2011" or "alibaba-2018"');
  else {
    const files = FILES[format];
    if (value[files.required] === undefined) fail(`${field}.${files.required}`, `is required for format ${format}`);
    else checkFile(value[files.required], `${field}.${files.required}`, fail, true, baseDir);
    if (value[files.optional] !== undefined) checkFile(value[files.optional], `${field}.${files.optional}`, fail, false, baseDir);
    for (const other of files.other) if (value[other] !== undefined) fail(`${field}.${other}`, `is not a file of format ${format}`);
  }
  if (typeof value.machineShape !== "string") fail(`${field}.machineShape`, 'is required: Mesos text of the largest machine, e.g. "cpus:32;mem:65536"');
  else {
    try {
      const shape = Resources.parse(value.machineShape);
      if (!(shape.scalar("cpus") > 0) || !(shape.scalar("mem") > 0)) fail(`${field}.machineShape`, "must give cpus and mem > 0");
    } catch (err) {
      fail(`${field}.machineShape`, `is not valid Mesos resource text (${err instanceof Error ? err.message : String(err)})`);
    }
  }
  num(value, "originSeconds", field, fail, { min: 0, optional: true });
  num(value, "maxRetries", field, fail, { int: true, min: 0, max: 1000, optional: true });
  num(value, "maxTasks", field, fail, { int: true, gt: 0, max: 10_000_000, optional: true });
  num(value, "maxMachines", field, fail, { int: true, gt: 0, max: 1_000_000, optional: true });
}

/**
 * The batch part of a framework's validation: for `kind: "batch"`, exactly one of `jobs` and
 * `trace` (and no `tasks`); for other kinds, neither. Trace files are looked for under `baseDir`
 * (the scenario file's folder) when given, else in the current directory.
 */
export function checkBatchFramework(f: Obj, field: string, fail: Fail, baseDir?: string): void {
  if (f.kind !== "batch") {
    for (const key of ["jobs", "trace", "offerHoldSeconds", "maxHeldOffers"]) if (f[key] !== undefined) fail(`${field}.${key}`, 'is only allowed for kind "batch"');
    return;
  }
  for (const key of ["offerHoldSeconds", "maxHeldOffers"] as const) {
    num(f, key, field, fail, { min: BATCH_CONFIG_BOUNDS[key].min, int: BATCH_CONFIG_BOUNDS[key].integer, optional: true });
  }
  if (f.tasks !== undefined) fail(`${field}.tasks`, 'is not allowed for kind "batch" (give jobs or trace)');
  if ((f.jobs === undefined) === (f.trace === undefined)) {
    fail(field, 'a batch framework needs exactly one of "jobs" (a synthetic workload) and "trace" (a trace to replay)');
    return;
  }
  if (f.jobs !== undefined) checkJobs(f.jobs, `${field}.jobs`, fail);
  else checkTrace(f.trace, `${field}.trace`, fail, baseDir);
}

/** Whether some framework replays a trace's machines (then the scenario may define no agent class). */
export function hasTraceMachines(frameworks: unknown): boolean {
  if (!Array.isArray(frameworks)) return false;
  return frameworks.some((f) => isObj(f) && f.kind === "batch" && isObj(f.trace) && (f.trace.machineEvents !== undefined || f.trace.machineMeta !== undefined));
}

/**
 * A trace as the simulator replays it, whatever its source format: jobs of tasks (with their
 * submission times, resources and recorded attempts) and machines coming and going. Times are
 * virtual ms after the framework's start; resources are already scaled by the machine shape.
 *
 * @module
 */

import { resolve } from "node:path";
import { Resources } from "../../sdk/resources.ts";
import { DEFAULT_TRACE_MAX_MACHINES, DEFAULT_TRACE_MAX_TASKS, DEFAULT_TRACE_ORIGIN_SECONDS, type TraceSpec } from "../workloads/spec.ts";
import { TraceError } from "./csv.ts";
import { readAlibaba2018 } from "./alibaba2018.ts";
import { readGoogle2011 } from "./google2011.ts";

/** One run of a task as the trace recorded it. */
export interface TraceAttempt {
  /** How long it ran; undefined when it was still running where the trace (or the run) ends. */
  durationMs?: number;
  /** It ended successfully (google FINISH, alibaba Terminated) or is still running. */
  ok: boolean;
  /** How it ended, in the trace's words (`FINISH`, `FAIL`, `EVICT`, `Terminated`, `RUNNING`...). */
  end: string;
}

export interface TraceTask {
  /** The task's number in the trace (google task index; alibaba row and instance). */
  traceIndex: string;
  /** When it was submitted, ms after the start. */
  submitMs: number;
  cpus: number;
  mem: number;
  disk?: number;
  /** At least one. */
  attempts: TraceAttempt[];
}

export interface TraceJob {
  /** A batch job id (see JOB_ID_PATTERN). */
  id: string;
  /** Its first task's submission. */
  submitMs: number;
  tasks: TraceTask[];
}

export type TraceMachineEvent =
  | { atMs: number; type: "add"; machineId: string; cpus: number; mem: number; disk?: number }
  | { atMs: number; type: "remove"; machineId: string };

export interface LoadedTrace {
  format: TraceSpec["format"];
  /** By submission time. */
  jobs: TraceJob[];
  /** By time (file order among equal times). */
  machines: TraceMachineEvent[];
  stats: {
    rows: number;
    jobs: number;
    tasks: number;
    attempts: number;
    /** Distinct machines added. */
    machines: number;
    /** Rows or tasks left out, by reason. */
    skipped: Record<string, number>;
  };
}

/** Options of {@link loadTrace}. */
export interface LoadTraceOptions {
  /** Rows after this replay time (ms after the start) are ignored: the run ends before them. @default Infinity */
  untilMs?: number;
  /** Prefix of problems, e.g. `scenario.frameworks[0].trace`. @default "trace" */
  field?: string;
  /**
   * Folder that relative file names of the spec are read from: the scenario file's folder, so a
   * scenario and its trace can be moved together. Absolute names are read as they are.
   * @default the current directory
   */
  baseDir?: string;
}

/** What the format readers get. */
export interface TraceReadContext {
  spec: TraceSpec;
  shape: { cpus: number; mem: number; disk?: number };
  originMs: number;
  untilMs: number;
  maxTasks: number;
  maxMachines: number;
  problems: string[];
  skip(reason: string, count?: number): void;
}

/** Reads the files of `spec` (synchronously, before a run). @throws {TraceError} listing the problems. */
export function loadTrace(given: TraceSpec, options: LoadTraceOptions = {}): LoadedTrace {
  const spec = options.baseDir === undefined ? given : traceFilesUnder(given, options.baseDir);
  const shapeResources = Resources.parse(spec.machineShape);
  const disk = shapeResources.scalar("disk");
  const skipped: Record<string, number> = {};
  const ctx: TraceReadContext = {
    spec,
    shape: { cpus: shapeResources.scalar("cpus"), mem: shapeResources.scalar("mem"), ...(disk > 0 ? { disk } : {}) },
    originMs: (spec.originSeconds ?? DEFAULT_TRACE_ORIGIN_SECONDS[spec.format]) * 1000,
    untilMs: options.untilMs ?? Infinity,
    maxTasks: spec.maxTasks ?? DEFAULT_TRACE_MAX_TASKS,
    maxMachines: spec.maxMachines ?? DEFAULT_TRACE_MAX_MACHINES,
    problems: [],
    skip: (reason, count = 1) => void (skipped[reason] = (skipped[reason] ?? 0) + count),
  };
  const read = spec.format === "google-2011" ? readGoogle2011(ctx) : readAlibaba2018(ctx);
  if (ctx.problems.length === 0 && read.jobs.length === 0) {
    // A replay with nothing to replay is a mistake (a wrong file, origin or window), not a quiet run.
    const files = [spec.format === "google-2011" ? spec.taskEvents : spec.batchTask].flat().filter((f): f is string => f !== undefined);
    // The task rows' reasons (both readers name them "task..."); machine rows are beside the point.
    const skips = Object.entries(skipped).flatMap(([reason, n]) => (reason.startsWith("task") ? [`${n} ${reason}`] : []));
    ctx.problems.push(`${files.join(", ") || "no task file"}: no task to replay before the run's end (${read.rows} rows read${skips.length > 0 ? `; skipped: ${skips.join(", ")}` : ""}); a trace replay needs at least one`);
  }
  if (ctx.problems.length > 0) {
    const field = options.field ?? "trace";
    throw new TraceError(ctx.problems.map((p) => `${field}: ${p}`));
  }
  read.jobs.sort((a, b) => a.submitMs - b.submitMs || compareIds(a.id, b.id));
  const tasks = read.jobs.reduce((n, j) => n + j.tasks.length, 0);
  const attempts = read.jobs.reduce((n, j) => n + j.tasks.reduce((m, t) => m + t.attempts.length, 0), 0);
  const machines = new Set(read.machines.filter((m) => m.type === "add").map((m) => m.machineId)).size;
  return { format: spec.format, jobs: read.jobs, machines: read.machines, stats: { rows: read.rows, jobs: read.jobs.length, tasks, attempts, machines, skipped } };
}

/** `spec` with its file names resolved against `baseDir` (absolute ones unchanged). */
export function traceFilesUnder(spec: TraceSpec, baseDir: string): TraceSpec {
  const under = (file: string): string => resolve(baseDir, file);
  const out: TraceSpec = { ...spec };
  for (const key of ["taskEvents", "batchTask"] as const) {
    const files = spec[key];
    if (files !== undefined) out[key] = Array.isArray(files) ? files.map(under) : under(files);
  }
  for (const key of ["machineEvents", "machineMeta"] as const) {
    const file = spec[key];
    if (file !== undefined) out[key] = under(file);
  }
  return out;
}

/** Numeric ids in numeric order, others as strings. */
export function compareIds(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/** Replay time of a trace time in ms, never before the start. */
export function replayMs(ctx: TraceReadContext, traceMs: number): number {
  return Math.max(0, traceMs - ctx.originMs);
}

/** Rounds a scaled amount to the resource algebra's thousandths, at least 0.001. */
export function scaled(normalized: number, scale: number): number {
  return Math.max(0.001, Math.round(normalized * scale * 1000) / 1000);
}

/**
 * Google cluster-data 2011 ("clusterdata-2011", trace format v2): the `task_events` and
 * `machine_events` tables.
 *
 * task_events columns: 1 time (µs), 2 missing info, 3 job ID, 4 task index, 5 machine ID,
 * 6 event type, 7 user, 8 scheduling class, 9 priority, 10 CPU request, 11 memory request,
 * 12 disk space request, 13 different-machines restriction. Event types: 0 SUBMIT, 1 SCHEDULE,
 * 2 EVICT, 3 FAIL, 4 FINISH, 5 KILL, 6 LOST, 7 UPDATE_PENDING, 8 UPDATE_RUNNING.
 *
 * machine_events columns: 1 time (µs), 2 machine ID, 3 event type (0 ADD, 1 REMOVE, 2 UPDATE),
 * 4 platform ID, 5 CPUs, 6 memory.
 *
 * Requests and capacities are normalized (1 = the largest machine) and are scaled by the
 * scenario's machine shape. Time 0 means "before the trace window"; the largest 64-bit value
 * "after it" (such rows are skipped). Replay time = trace time − `originSeconds` (600 s by
 * default: where the published trace window begins), never before 0.
 *
 * A task's attempts are its SCHEDULE → EVICT/FAIL/FINISH/KILL/LOST runs; a run still open at the
 * end is replayed as running until the simulation ends. A task never scheduled in the trace has
 * no duration to replay and is skipped (counted).
 *
 * @module
 */

import { forEachRecord, FieldReader, type Column } from "./csv.ts";
import { compareIds, replayMs, scaled, type TraceAttempt, type TraceJob, type TraceMachineEvent, type TraceReadContext, type TraceTask } from "./trace.ts";

const TASK = {
  time: { index: 1, name: "time" },
  job: { index: 3, name: "job ID" },
  task: { index: 4, name: "task index" },
  event: { index: 6, name: "event type" },
  cpu: { index: 10, name: "CPU request" },
  mem: { index: 11, name: "memory request" },
  disk: { index: 12, name: "disk space request" },
} satisfies Record<string, Column>;
const TASK_COLUMNS = 13;

const MACHINE = {
  time: { index: 1, name: "time" },
  machine: { index: 2, name: "machine ID" },
  event: { index: 3, name: "event type" },
  cpus: { index: 5, name: "CPUs" },
  mem: { index: 6, name: "memory" },
} satisfies Record<string, Column>;
const MACHINE_COLUMNS = 6;

/** Trace times from here on mean "after the end of the trace". */
const AFTER_END_US = 2 ** 63 - 2 ** 11;

const ENDINGS: Record<number, string> = { 2: "EVICT", 3: "FAIL", 4: "FINISH", 5: "KILL", 6: "LOST" };

interface TaskState {
  jobId: string;
  index: number;
  submitMs: number;
  cpu: number;
  mem: number;
  disk: number;
  attempts: TraceAttempt[];
  openSinceMs?: number;
}

export function readGoogle2011(ctx: TraceReadContext): { jobs: TraceJob[]; machines: TraceMachineEvent[]; rows: number } {
  const spec = ctx.spec;
  const files = spec.taskEvents === undefined ? [] : Array.isArray(spec.taskEvents) ? spec.taskEvents : [spec.taskEvents];
  const tasks = new Map<string, TaskState>();
  let rows = 0;
  for (const file of files) {
    forEachRecord(file, ctx.problems, (record) => {
      rows++;
      const r = new FieldReader(ctx.problems, record);
      if (!r.columns(TASK_COLUMNS, "task_events")) return;
      const time = r.number(TASK.time, { required: true, min: 0 });
      const job = r.number(TASK.job, { required: true, min: 0, int: true });
      const index = r.number(TASK.task, { required: true, min: 0, int: true });
      const event = r.number(TASK.event, { required: true, min: 0, max: 8, int: true });
      const cpu = r.number(TASK.cpu, { min: 0 });
      const mem = r.number(TASK.mem, { min: 0 });
      const disk = r.number(TASK.disk, { min: 0 });
      if (time === undefined || job === undefined || index === undefined || event === undefined) return;
      // The raw text becomes the batch job's id: "1.0" or "+5" pass as integers but are no job id.
      if (!/^\d+$/.test(r.raw(TASK.job).trim())) {
        ctx.problems.push(`${record.where}: column ${TASK.job.index} (${TASK.job.name}): must be written in digits only, got ${JSON.stringify(r.raw(TASK.job))}`);
        return;
      }
      if (time >= AFTER_END_US) return ctx.skip("task events after the trace window");
      const atMs = replayMs(ctx, time / 1000);
      if (atMs > ctx.untilMs) return ctx.skip("task events after the run's end");
      const key = `${r.raw(TASK.job).trim()}/${index}`;
      let task = tasks.get(key);
      if (!task) {
        // Terminal events of tasks we never saw start tell nothing to replay.
        if (event !== 0 && event !== 1) return ctx.skip("task events of tasks not submitted in the files");
        if (tasks.size >= ctx.maxTasks) {
          if (ctx.problems.length === 0) ctx.problems.push(`${record.where}: the trace holds more than maxTasks (${ctx.maxTasks}) tasks before the run's end; raise maxTasks or shorten the run`);
          return;
        }
        task = { jobId: r.raw(TASK.job).trim(), index, submitMs: atMs, cpu: 0, mem: 0, disk: 0, attempts: [] };
        tasks.set(key, task);
      }
      if (cpu !== undefined) task.cpu = cpu;
      if (mem !== undefined) task.mem = mem;
      if (disk !== undefined) task.disk = disk;
      applyTaskEvent(task, event, atMs);
    });
  }
  const byJob = new Map<string, TraceTask[]>();
  for (const task of tasks.values()) {
    if (task.openSinceMs !== undefined) task.attempts.push({ ok: true, end: "RUNNING" });
    if (task.attempts.length === 0) {
      ctx.skip("tasks never scheduled in the trace");
      continue;
    }
    const list = byJob.get(task.jobId) ?? [];
    list.push({
      traceIndex: String(task.index),
      submitMs: task.submitMs,
      cpus: scaled(task.cpu, ctx.shape.cpus),
      mem: scaled(task.mem, ctx.shape.mem),
      ...(ctx.shape.disk !== undefined && task.disk > 0 ? { disk: scaled(task.disk, ctx.shape.disk) } : {}),
      attempts: task.attempts,
    });
    byJob.set(task.jobId, list);
  }
  const jobs: TraceJob[] = [];
  for (const [id, list] of byJob) {
    list.sort((a, b) => compareIds(a.traceIndex, b.traceIndex));
    // A loop, not Math.min(...): a job may have more tasks than a call may have arguments.
    jobs.push({ id, submitMs: list.reduce((min, t) => Math.min(min, t.submitMs), Infinity), tasks: list });
  }
  const machines = spec.machineEvents === undefined ? [] : readMachines(ctx, spec.machineEvents);
  return { jobs, machines, rows };
}

function applyTaskEvent(task: TaskState, event: number, atMs: number): void {
  if (event === 1) {
    // A second SCHEDULE without an end in between: the first run's end is missing.
    if (task.openSinceMs !== undefined) task.attempts.push({ durationMs: atMs - task.openSinceMs, ok: false, end: "LOST" });
    task.openSinceMs = atMs;
    return;
  }
  const ending = ENDINGS[event];
  if (ending === undefined || task.openSinceMs === undefined) return; // SUBMIT, UPDATE_*, or an end while pending
  task.attempts.push({ durationMs: atMs - task.openSinceMs, ok: event === 4, end: ending });
  task.openSinceMs = undefined;
}

function readMachines(ctx: TraceReadContext, file: string): TraceMachineEvent[] {
  const events: TraceMachineEvent[] = [];
  const present = new Set<string>();
  const seen = new Set<string>();
  forEachRecord(file, ctx.problems, (record) => {
    const r = new FieldReader(ctx.problems, record);
    if (!r.columns(MACHINE_COLUMNS, "machine_events")) return;
    const time = r.number(MACHINE.time, { required: true, min: 0 });
    const machine = r.text(MACHINE.machine);
    const event = r.number(MACHINE.event, { required: true, min: 0, max: 2, int: true });
    const cpus = r.number(MACHINE.cpus, { min: 0 });
    const mem = r.number(MACHINE.mem, { min: 0 });
    if (time === undefined || machine === undefined || event === undefined) return;
    if (time >= AFTER_END_US) return ctx.skip("machine events after the trace window");
    const atMs = replayMs(ctx, time / 1000);
    if (atMs > ctx.untilMs) return ctx.skip("machine events after the run's end");
    if (event === 2) return ctx.skip("machine UPDATE events (capacity changes are not replayed)");
    if (event === 1) {
      if (!present.delete(machine)) return ctx.skip("REMOVE of a machine not present");
      events.push({ atMs, type: "remove", machineId: machine });
      return;
    }
    if (present.has(machine)) return ctx.skip("ADD of a machine already present");
    if (cpus === undefined || mem === undefined || cpus === 0 || mem === 0) return ctx.skip("machines added without a capacity");
    if (!seen.has(machine) && seen.size >= ctx.maxMachines) {
      if (ctx.problems.length === 0) ctx.problems.push(`${record.where}: the trace holds more than maxMachines (${ctx.maxMachines}) machines`);
      return;
    }
    seen.add(machine);
    present.add(machine);
    events.push({ atMs, type: "add", machineId: machine, cpus: scaled(cpus, ctx.shape.cpus), mem: scaled(mem, ctx.shape.mem), ...(ctx.shape.disk !== undefined ? { disk: ctx.shape.disk } : {}) });
  });
  // Stable: equal times keep file order.
  return events.map((e, i) => ({ e, i })).sort((a, b) => a.e.atMs - b.e.atMs || a.i - b.i).map(({ e }) => e);
}

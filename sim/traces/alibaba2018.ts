/**
 * Alibaba cluster-trace-v2018: the `batch_task` and `machine_meta` tables.
 *
 * batch_task columns: 1 task_name, 2 instance_num, 3 job_name, 4 task_type, 5 status,
 * 6 start_time (s), 7 end_time (s), 8 plan_cpu (100 = one core), 9 plan_mem (normalized, 0-100).
 *
 * machine_meta columns: 1 machine_id, 2 time_stamp (s), 3 failure_domain_1, 4 failure_domain_2,
 * 5 cpu_num, 6 mem_size (normalized, 0-100), 7 status.
 *
 * Each batch_task row becomes `instance_num` tasks of the batch job `job_name`, submitted at the
 * row's `start_time` (the table records no submission time) and running `end_time − start_time`:
 * `Terminated` rows succeed, `Failed` rows fail, `Running` rows run until the simulation ends;
 * rows in other states (never started), without a start time or a resource plan, or ending
 * before they start are skipped (counted). The DAG that task names encode is not enforced: start
 * times already follow it.
 *
 * Scaling by the machine shape: memory is `plan_mem / 100 × shape.mem` (and a machine's
 * `mem_size / 100 × shape.mem`); cpus are scaled so that the largest `cpu_num` becomes
 * `shape.cpus` (without a machine_meta file, plan_cpu / 100 cores as they are). A machine is
 * added at its earliest row (time 0 meaning "from the start"); its later rows are not replayed.
 *
 * @module
 */

import { JOB_ID_PATTERN } from "../../frameworks/batch/core.ts";
import { forEachRecord, FieldReader, type Column } from "./csv.ts";
import { replayMs, scaled, type TraceJob, type TraceMachineEvent, type TraceReadContext } from "./trace.ts";

const TASK = {
  name: { index: 1, name: "task_name" },
  instances: { index: 2, name: "instance_num" },
  job: { index: 3, name: "job_name" },
  status: { index: 5, name: "status" },
  start: { index: 6, name: "start_time" },
  end: { index: 7, name: "end_time" },
  cpu: { index: 8, name: "plan_cpu" },
  mem: { index: 9, name: "plan_mem" },
} satisfies Record<string, Column>;
const TASK_COLUMNS = 9;

const MACHINE = {
  id: { index: 1, name: "machine_id" },
  time: { index: 2, name: "time_stamp" },
  cpus: { index: 5, name: "cpu_num" },
  mem: { index: 6, name: "mem_size" },
} satisfies Record<string, Column>;
const MACHINE_COLUMNS = 7;

export function readAlibaba2018(ctx: TraceReadContext): { jobs: TraceJob[]; machines: TraceMachineEvent[]; rows: number } {
  const spec = ctx.spec;
  const meta = spec.machineMeta === undefined ? undefined : readMachines(ctx, spec.machineMeta);
  const cpuScale = meta && meta.maxCpus > 0 ? ctx.shape.cpus / meta.maxCpus : 1;
  const files = spec.batchTask === undefined ? [] : Array.isArray(spec.batchTask) ? spec.batchTask : [spec.batchTask];
  const jobs = new Map<string, TraceJob>();
  let rows = 0;
  let taskCount = 0;
  for (const file of files) {
    forEachRecord(file, ctx.problems, (record) => {
      rows++;
      const r = new FieldReader(ctx.problems, record);
      if (!r.columns(TASK_COLUMNS, "batch_task")) return;
      const name = r.text(TASK.name);
      const instances = r.number(TASK.instances, { required: true, min: 0, int: true });
      const job = r.text(TASK.job);
      const status = r.text(TASK.status);
      const start = r.number(TASK.start, { min: 0, int: true });
      const end = r.number(TASK.end, { min: 0, int: true });
      const cpu = r.number(TASK.cpu, { min: 0 });
      const mem = r.number(TASK.mem, { min: 0 });
      if (name === undefined || instances === undefined || job === undefined || status === undefined) return;
      if (!JOB_ID_PATTERN.test(job)) {
        ctx.problems.push(`${record.where}: column ${TASK.job.index} (${TASK.job.name}): must be letters, digits, '_' or '-', got ${JSON.stringify(job)}`);
        return;
      }
      if (instances === 0) return ctx.skip("tasks with no instances");
      const ok = status === "Terminated";
      if (!ok && status !== "Failed" && status !== "Running") return ctx.skip(`tasks in state ${status}`, instances);
      if (start === undefined || start === 0) return ctx.skip("tasks without a start time", instances);
      if (cpu === undefined || mem === undefined || (cpu === 0 && mem === 0)) return ctx.skip("tasks without a resource plan", instances);
      const atMs = replayMs(ctx, start * 1000);
      if (atMs > ctx.untilMs) return ctx.skip("tasks starting after the run's end", instances);
      let durationMs: number | undefined;
      if (status !== "Running") {
        if (end === undefined || end === 0 || end < start) return ctx.skip("tasks ending before they start (or never)", instances);
        durationMs = (end - start) * 1000;
      }
      if (taskCount + instances > ctx.maxTasks) {
        if (ctx.problems.length === 0) ctx.problems.push(`${record.where}: the trace holds more than maxTasks (${ctx.maxTasks}) tasks before the run's end; raise maxTasks or shorten the run`);
        return;
      }
      taskCount += instances;
      let entry = jobs.get(job);
      if (!entry) {
        entry = { id: job, submitMs: atMs, tasks: [] };
        jobs.set(job, entry);
      }
      entry.submitMs = Math.min(entry.submitMs, atMs);
      for (let i = 0; i < instances; i++) {
        entry.tasks.push({
          traceIndex: `${name}/${i}`,
          submitMs: atMs,
          cpus: scaled(cpu / 100, cpuScale),
          mem: scaled(mem / 100, ctx.shape.mem),
          attempts: [{ ...(durationMs !== undefined ? { durationMs } : {}), ok: ok || status === "Running", end: status === "Running" ? "RUNNING" : status }],
        });
      }
    });
  }
  // Tasks of a job in submission order (rows of a job need not be).
  for (const job of jobs.values()) job.tasks.sort((a, b) => a.submitMs - b.submitMs);
  const machines: TraceMachineEvent[] = (meta?.machines ?? []).map((m) => ({
    atMs: m.atMs,
    type: "add",
    machineId: m.id,
    cpus: scaled(m.cpus, cpuScale),
    mem: scaled(m.mem / 100, ctx.shape.mem),
    ...(ctx.shape.disk !== undefined ? { disk: ctx.shape.disk } : {}),
  }));
  return { jobs: [...jobs.values()], machines, rows };
}

function readMachines(ctx: TraceReadContext, file: string): { machines: Array<{ id: string; atMs: number; cpus: number; mem: number; order: number }>; maxCpus: number } {
  const first = new Map<string, { id: string; atMs: number; cpus: number; mem: number; order: number }>();
  let order = 0;
  forEachRecord(file, ctx.problems, (record) => {
    const r = new FieldReader(ctx.problems, record);
    if (!r.columns(MACHINE_COLUMNS, "machine_meta")) return;
    const id = r.text(MACHINE.id);
    const time = r.number(MACHINE.time, { required: true, min: 0, int: true });
    const cpus = r.number(MACHINE.cpus, { required: true, min: 0 });
    const mem = r.number(MACHINE.mem, { required: true, min: 0, max: 101 });
    if (id === undefined || time === undefined || cpus === undefined || mem === undefined) return;
    const atMs = replayMs(ctx, time * 1000);
    // Checked before the machine's earlier rows are looked at: a row dated earlier replaces them,
    // and must not bring a capacity that a first row would have been refused for.
    if (cpus === 0 || mem === 0 || mem > 100) return ctx.skip("machines without a valid capacity");
    const known = first.get(id);
    if (known) {
      ctx.skip("later machine_meta rows of a machine");
      if (atMs < known.atMs) Object.assign(known, { atMs, cpus, mem });
      return;
    }
    if (atMs > ctx.untilMs) return ctx.skip("machines added after the run's end");
    if (first.size >= ctx.maxMachines) {
      if (ctx.problems.length === 0) ctx.problems.push(`${record.where}: the trace holds more than maxMachines (${ctx.maxMachines}) machines`);
      return;
    }
    first.set(id, { id, atMs, cpus, mem, order: order++ });
  });
  const machines = [...first.values()].sort((a, b) => a.atMs - b.atMs || a.order - b.order);
  // A loop, not Math.max(...): there may be more machines than a call may have arguments.
  return { machines, maxCpus: machines.reduce((max, m) => Math.max(max, m.cpus), 0) };
}

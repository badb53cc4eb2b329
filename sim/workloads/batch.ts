/**
 * `batch` frameworks in a simulation: the REAL batch framework (frameworks/batch: its pure core
 * and its SDK-driver shell) on the simulated network, virtual clock and timers. This file only
 * feeds it work and records what happened:
 *
 * - `jobs`: a synthetic workload. Jobs arrive by a Poisson process, resampled inter-arrival
 *   times, or all at once; each draws its task count and per-task resources, each task its
 *   duration; an attempt fails (exit 1, part-way through) with probability `failureRate`.
 * - `trace`: a Google 2011 or Alibaba 2018 trace (sim/traces). Its jobs are submitted when the
 *   trace submitted them, each task queued at its own submission time, and attempt i runs as long
 *   as, and ends as, the trace's i-th run of that task. Its machines become agents, added and
 *   removed when the trace says.
 *
 * Every random draw comes from the framework's fork of the scenario seed.
 *
 * @module
 */

import { Resources } from "../../sdk/resources.ts";
import type { Rng } from "../../sdk/rng.ts";
import type { SchedulerDriver } from "../../sdk/scheduler.ts";
import { createBatchFramework, type BatchFramework, type BatchTaskCommand } from "../../frameworks/batch/batch.ts";
import type { BatchEvent, BatchJobSpec, BatchLaunch, BatchTaskSpec, JobOutcome } from "../../frameworks/batch/core.ts";
import { SIM_DURATION_ENV, SIM_EXIT_CODE_ENV, type SimCluster } from "../cluster.ts";
import { ScenarioError, type FrameworkSpec } from "../scenario.ts";
import { TraceError } from "../traces/csv.ts";
import { loadTrace, type LoadedTrace, type TraceMachineEvent, type TraceTask } from "../traces/trace.ts";
import { amount3, sampleAmount, sampleCount, sampleDurationMs, sampleGapMs } from "./dist.ts";
import type { BatchJobsSpec, TraceSpec } from "./spec.ts";

type AgentSlot = ReturnType<SimCluster["addAgent"]>;

/** Per-job outcomes of one batch framework. */
export interface BatchJobStats {
  submitted: number;
  completed: number;
  failed: number;
  timedOut: number;
  cancelled: number;
  /** Jobs the framework refused (its bounds: `maxLiveJobs`, `maxLiveTasks`...): never run. */
  refused: number;
}

const OUTCOME_KEY: Record<JobOutcome, keyof BatchJobStats> = { completed: "completed", failed: "failed", "timed-out": "timedOut", cancelled: "cancelled" };

/** See the module comment. Built by `SimCluster` for frameworks of kind `batch`. */
export class BatchSimFramework {
  readonly node: string;
  readonly role: string;
  readonly refuseSeconds: number;
  /** The framework; set by {@link start}. */
  batch: BatchFramework | undefined;
  readonly jobStats: BatchJobStats = { submitted: 0, completed: 0, failed: 0, timedOut: 0, cancelled: 0, refused: 0 };
  /** The trace being replayed (read when the cluster is built). */
  readonly trace: LoadedTrace | undefined;
  /** Agents standing for trace machines now present, by machine id. */
  readonly machines = new Map<string, AgentSlot>();

  private readonly arrivals: Rng;
  private readonly failures: Rng;
  private readonly driverRng: Rng;
  private readonly traceTasks = new Map<string, TraceTask>();
  private stopped = false;
  private shuttingDown = false;
  private jobsSubmitted = 0;

  constructor(
    private readonly cluster: SimCluster,
    readonly spec: FrameworkSpec,
    rng: Rng,
  ) {
    this.node = `fw-${spec.name}`;
    this.role = spec.role ?? "default";
    this.refuseSeconds = spec.refuseSeconds ?? 5;
    this.arrivals = rng.fork("arrivals");
    this.failures = rng.fork("failures");
    this.driverRng = rng.fork("driver");
    if (spec.trace) this.trace = this.load(spec.trace);
  }

  /** The SDK driver, once started. */
  get driver(): SchedulerDriver | undefined {
    return this.batch?.driver;
  }

  /** Tasks waiting for an offer. */
  queued(): number {
    return this.batch?.core.pendingTasks() ?? 0;
  }

  /** Tasks waiting for an offer that were first queued before `ms` (virtual ms since the epoch). */
  queuedSubmittedBefore(ms: number): number {
    return this.batch?.core.pendingQueuedBefore(ms) ?? 0;
  }

  /** Subscribes and starts submitting work (and, for a trace, adding its machines). */
  start(): void {
    const cluster = this.cluster;
    this.batch = createBatchFramework({
      transport: cluster.network.endpoint(this.node),
      framework: { name: this.spec.name, roles: [this.role], hostname: this.node, failoverTimeoutSeconds: 3600 },
      config: {
        refuseSeconds: this.refuseSeconds,
        ...(this.spec.offerHoldSeconds !== undefined ? { offerHoldSeconds: this.spec.offerHoldSeconds } : {}),
        ...(this.spec.maxHeldOffers !== undefined ? { maxHeldOffers: this.spec.maxHeldOffers } : {}),
      },
      clock: cluster.engine.clock,
      timers: cluster.engine.timers,
      rng: this.driverRng,
      taskCommand: (launch) => this.taskCommand(launch),
      onEvent: (event) => this.record(event),
      onUpdate: (status) => {
        cluster.audit?.deliveredTo(this.batch?.driver.frameworkId() ?? "", status);
        cluster.emit("status", { fw: this.spec.name, task: status.taskId, state: status.state, agent: status.agentId });
      },
    });
    this.batch.start().catch(() => undefined);
    cluster.emit("framework-started", { fw: this.spec.name, role: this.role });
    if (this.trace) {
      // Machines belong to the cluster: they keep coming and going after the framework stops,
      // until the cluster shuts down.
      this.inOrder(this.trace.machines, (m) => m.atMs, (m) => this.machineEvent(m), () => !this.shuttingDown);
      this.inOrder(this.trace.jobs, (j) => j.submitMs, (j) => {
        j.tasks.forEach((t, i) => this.traceTasks.set(`${j.id}/${i}`, t));
        this.submit({
          id: j.id,
          maxRetries: this.spec.trace?.maxRetries ?? 0,
          tasks: j.tasks.map((t): BatchTaskSpec => ({
            resources: resourceText(t.cpus, t.mem, t.disk),
            command: "sim",
            startAfterMs: t.submitMs - j.submitMs,
            maxRetries: t.attempts.length - 1 + (this.spec.trace?.maxRetries ?? 0),
          })),
        });
      }, () => !this.stopped);
    } else if (this.spec.jobs) this.scheduleArrivals(this.spec.jobs);
  }

  /**
   * Tears the framework down (its tasks are killed); no more work is submitted.
   * @param emit false when the whole cluster shuts down (then trace machines stop changing too). @default true
   */
  async stop(emit = true): Promise<void> {
    if (!emit) this.shuttingDown = true;
    if (this.stopped) return;
    this.stopped = true;
    if (emit) {
      this.cluster.emit("framework-stopped", { fw: this.spec.name });
      // The teardown ends the jobs still live: they are cancelled (the core would call them so),
      // not left in no outcome as jobs still running at the end of the run are.
      this.jobStats.cancelled += this.batch?.core.liveJobCount() ?? 0;
    }
    await this.batch?.stop({ teardown: true });
  }

  /** Whether the framework was stopped (torn down: its tasks killed, its updates no longer awaited). */
  isStopped(): boolean {
    return this.stopped;
  }

  // ---- workload ----------------------------------------------------------------------------------

  private load(spec: TraceSpec): LoadedTrace {
    const scenario = this.cluster.scenario;
    const index = scenario.frameworks.indexOf(this.spec);
    const field = `scenario.frameworks[${index < 0 ? this.spec.name : index}].trace`;
    try {
      const baseDir = this.cluster.baseDir;
      return loadTrace(spec, { untilMs: (scenario.endSeconds - (this.spec.startSeconds ?? 0)) * 1000, field, ...(baseDir !== undefined ? { baseDir } : {}) });
    } catch (err) {
      if (err instanceof TraceError) throw new ScenarioError(err.problems);
      throw err;
    }
  }

  private scheduleArrivals(jobs: BatchJobsSpec): void {
    if (jobs.count === 0) return;
    const engine = this.cluster.engine;
    const arrival = jobs.arrival;
    if ("at" in arrival) {
      engine.after(arrival.at * 1000, () => {
        for (let i = 0; i < jobs.count; i++) this.submit(this.makeJob(jobs));
      });
      return;
    }
    // One arrival timer at a time: the heap never holds the whole workload.
    const next = (): void => {
      if (this.stopped || this.jobsSubmitted >= jobs.count) return;
      this.submit(this.makeJob(jobs));
      engine.after(sampleGapMs(arrival, this.arrivals), next);
    };
    engine.after(sampleGapMs(arrival, this.arrivals), next);
  }

  private makeJob(jobs: BatchJobsSpec): BatchJobSpec {
    const rng = this.arrivals;
    const count = sampleCount(jobs.tasksPerJob, rng);
    const cpus = amount3(sampleAmount(jobs.cpus, rng));
    const mem = amount3(sampleAmount(jobs.mem, rng));
    const disk = jobs.disk === undefined ? undefined : amount3(sampleAmount(jobs.disk, rng));
    const resources = Resources.parse(resourceText(cpus, mem, disk));
    const tasks: BatchTaskSpec[] = [];
    for (let i = 0; i < count; i++) tasks.push({ resources, command: "sim", durationMs: sampleDurationMs(jobs.durationSeconds, rng) });
    return {
      id: `j${this.jobsSubmitted}`,
      tasks,
      maxRetries: jobs.maxRetries ?? 3,
      ...(jobs.timeoutSeconds !== undefined ? { timeoutMs: jobs.timeoutSeconds * 1000 } : {}),
      failFast: jobs.failFast ?? false,
    };
  }

  private submit(job: BatchJobSpec): void {
    if (this.stopped || !this.batch) return;
    this.jobsSubmitted++;
    this.batch.submit(job).catch((err: unknown) => {
      this.jobStats.refused++;
      this.cluster.emit("batch-job-refused", { fw: this.spec.name, job: job.id, error: err instanceof Error ? err.message : String(err) });
    });
  }

  /** What a launch runs in the instant containerizer: its duration and exit code, as env. */
  private taskCommand(launch: BatchLaunch): BatchTaskCommand {
    let durationMs = launch.spec.durationMs;
    let exitCode = 0;
    const traced = this.traceTasks.get(`${launch.jobId}/${launch.index}`);
    if (traced) {
      const attempt = traced.attempts[Math.min(launch.failures, traced.attempts.length - 1)]!;
      durationMs = attempt.durationMs;
      if (!attempt.ok) exitCode = 1;
    } else {
      const rate = this.spec.jobs?.failureRate ?? 0;
      if (rate > 0 && this.failures.next() < rate) {
        exitCode = 1;
        if (durationMs !== undefined) durationMs *= this.failures.next();
      }
    }
    const env: Record<string, string> = {};
    // Without a duration the task runs until killed (a trace task still running at its end).
    if (durationMs !== undefined) env[SIM_DURATION_ENV] = String(durationMs);
    if (exitCode !== 0) env[SIM_EXIT_CODE_ENV] = String(exitCode);
    return { command: "sim", env };
  }

  // ---- trace machines ----------------------------------------------------------------------------

  private machineEvent(m: TraceMachineEvent): void {
    const cluster = this.cluster;
    if (m.type === "add") {
      const slot = cluster.addAgent(`${this.spec.name}.${m.machineId}`, { count: 0, resources: resourceText(m.cpus, m.mem, m.disk) });
      this.machines.set(m.machineId, slot);
      cluster.emit("machine-added", { fw: this.spec.name, machine: m.machineId, agent: slot.node, cpus: m.cpus, mem: m.mem });
      return;
    }
    const slot = this.machines.get(m.machineId);
    if (!slot) return;
    this.machines.delete(m.machineId);
    cluster.emit("machine-removed", { fw: this.spec.name, machine: m.machineId, agent: slot.node });
    cluster.removeAgent(slot);
  }

  /** Calls `fn` for each item at `atMs(item)` after now, one timer at a time, while `going()`. */
  private inOrder<T>(items: readonly T[], atMs: (item: T) => number, fn: (item: T) => void, going: () => boolean): void {
    const engine = this.cluster.engine;
    const startMs = engine.now();
    let i = 0;
    const fire = (): void => {
      while (going() && i < items.length && startMs + atMs(items[i]!) <= engine.now()) fn(items[i++]!);
      if (going() && i < items.length) engine.after(startMs + atMs(items[i]!) - engine.now(), fire);
    };
    if (items.length > 0) engine.after(atMs(items[0]!), fire);
  }

  // ---- statistics and the event log -------------------------------------------------------------

  private record(event: BatchEvent): void {
    const cluster = this.cluster;
    const stats = cluster.stats;
    const fw = this.spec.name;
    switch (event.type) {
      case "job-submitted":
        this.jobStats.submitted++;
        cluster.emit("batch-job-submitted", { fw, job: event.jobId, tasks: event.tasks });
        return;
      case "tasks-queued":
        stats.submitted += event.count;
        return;
      case "task-launched": {
        stats.launched++;
        const second = Math.floor(cluster.elapsedMs() / 1000);
        stats.launchesPerSecond[second] = (stats.launchesPerSecond[second] ?? 0) + 1;
        cluster.emit("accept", { fw, agent: event.agentId, tasks: [event.taskId] });
        cluster.emit("launch", { fw, task: event.taskId, agent: event.agentId, host: event.hostname });
        return;
      }
      case "task-launch-failed":
        cluster.emit("accept-failed", { fw, task: event.taskId, error: event.error });
        return;
      case "task-running":
        if (event.waitMs !== undefined) stats.waitsMs.push(event.waitMs);
        return;
      case "task-finished":
        stats.completed++;
        return;
      case "task-failed":
        stats.failed++;
        if (event.retrying) stats.retried++;
        else stats.abandoned++;
        cluster.emit("batch-task-failed", { fw, task: event.taskId, state: event.state, retrying: event.retrying });
        return;
      case "job-ended": {
        this.jobStats[OUTCOME_KEY[event.outcome]]++;
        const s = event.summary;
        cluster.emit("batch-job-ended", { fw, job: event.jobId, outcome: event.outcome, tasks: s.tasks, finished: s.finished, failed: s.failed, retries: s.retries, elapsedMs: s.elapsedMs });
        return;
      }
      case "offers-suppressed":
        cluster.emit("suppress", { fw });
        return;
      case "offers-revived":
        cluster.emit("revive", { fw });
        return;
    }
  }
}

function resourceText(cpus: number, mem: number, disk?: number): string {
  return `cpus:${cpus};mem:${mem}${disk !== undefined ? `;disk:${disk}` : ""}`;
}

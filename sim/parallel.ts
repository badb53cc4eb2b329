/**
 * Simulator runs on several cores: a pool of worker threads, each running one whole simulation at
 * a time (`./worker.ts`). `corral sim check` gives it one job per seed and `corral sim plan` the
 * runs of a point (seeds × failure variants); both would otherwise run them one after another on
 * one core.
 *
 * One simulation per thread, never two: the engine lets a whole event's promise continuations
 * settle before the next event (see `./engine.ts`), which holds only while no other simulation
 * shares the thread's microtask queue. A run's outcome depends only on its job (the scenario and
 * its seed), so the pool's size and the order in which workers finish change nothing a run
 * reports; callers get their results in the order they asked.
 *
 * @module
 */

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { CheckOptions, CheckOutcome } from "./check.ts";
import type { PlanPoint, PlanSpec, RunMetrics } from "./plan.ts";
import type { Scenario } from "./scenario.ts";

/** One simulation for a worker. */
export type SimJob =
  /** One seed of `corral sim check`. */
  | { kind: "check"; seed: number; options: CheckOptions }
  /** One run of a `corral sim plan` point (see `scenarioEvaluator` in `./plan.ts`). */
  | { kind: "plan"; scenario: Scenario; spec: PlanSpec; run: PlanPoint; logLevel?: string; baseDir?: string };

/** What a job gives back. */
export type SimJobResult<J extends SimJob> = J extends { kind: "check" } ? CheckOutcome : RunMetrics;

/** A message from a worker: the result of job `id`, or why it failed. */
export type WorkerReply = { id: number; ok: true; result: CheckOutcome | RunMetrics } | { id: number; ok: false; error: string };

/** The most worker threads a pool starts: each simulation holds its own heap. */
export const MAX_SIM_JOBS = 64;

/** The default number of simulations at once: one per core this process may use. */
export function defaultSimJobs(): number {
  return Math.max(1, Math.min(MAX_SIM_JOBS, availableParallelism()));
}

/** The project's TypeScript loader, which a worker needs to load `./worker.ts` (see `scripts/ts`). */
const LOADER = new URL("../scripts/ts/register.mjs", import.meta.url).href;

interface Pending {
  id: number;
  job: SimJob;
  resolve: (result: CheckOutcome | RunMetrics) => void;
  reject: (error: Error) => void;
}

interface Slot {
  worker: Worker;
  /** The job the worker is running; undefined while idle. */
  busy: Pending | undefined;
}

/**
 * A fixed number of worker threads running {@link SimJob}s, one per thread at a time, the rest
 * queued. Workers start on first need and stay until {@link close}.
 */
export class SimPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 0;
  private closed = false;

  /** @param size worker threads, 1..{@link MAX_SIM_JOBS} */
  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1 || size > MAX_SIM_JOBS) throw new RangeError(`SimPool: size must be an integer 1..${MAX_SIM_JOBS}, got ${size}`);
  }

  /** Runs `job` on the next free worker. Rejects when the run throws or its worker dies. */
  run<J extends SimJob>(job: J): Promise<SimJobResult<J>> {
    if (this.closed) return Promise.reject(new Error("SimPool: closed"));
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, job, resolve: resolve as Pending["resolve"], reject });
      this.dispatch();
    });
  }

  /** Stops every worker; queued and running jobs are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const stopped = new Error("SimPool: closed");
    for (const pending of this.queue.splice(0)) pending.reject(stopped);
    await Promise.all(
      this.slots.splice(0).map((slot) => {
        slot.busy?.reject(stopped);
        slot.busy = undefined;
        return slot.worker.terminate();
      }),
    );
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let slot = this.slots.find((s) => s.busy === undefined);
      if (slot === undefined) {
        if (this.slots.length >= this.size) return;
        slot = this.startWorker();
      }
      const pending = this.queue.shift()!;
      slot.busy = pending;
      slot.worker.postMessage({ id: pending.id, job: pending.job });
    }
  }

  private startWorker(): Slot {
    // Only the loader is passed: a worker refuses V8 flags in its execArgv (such as the
    // `--max-semi-space-size` that `corral sim` runs with; V8's flags are the whole process's
    // anyway), and does not run the parent's `--import` modules by itself under every runner.
    const worker = new Worker(new URL("./worker.ts", import.meta.url), { execArgv: ["--import", LOADER] });
    const slot: Slot = { worker, busy: undefined };
    worker.on("message", (reply: WorkerReply) => {
      const pending = slot.busy;
      if (pending === undefined || pending.id !== reply.id) return;
      slot.busy = undefined;
      if (reply.ok) pending.resolve(reply.result);
      else pending.reject(new Error(reply.error));
      this.dispatch();
    });
    // A worker that dies (out of memory, a crash in native code) fails its job, not the others.
    const lost = (why: string): void => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      const pending = slot.busy;
      slot.busy = undefined;
      if (pending !== undefined) pending.reject(new Error(`simulation worker ${why} during ${describeJob(pending.job)}`));
      if (!this.closed) this.dispatch();
    };
    worker.on("error", (err) => lost(`failed (${err instanceof Error ? err.message : String(err)})`));
    worker.on("exit", (code) => lost(`exited with code ${code}`));
    this.slots.push(slot);
    return slot;
  }
}

function describeJob(job: SimJob): string {
  return job.kind === "check" ? `check of seed ${job.seed}` : `plan run of seed ${job.run.seed}`;
}

/**
 * Runs `jobs` on a pool of `size` workers and hands each result to `onResult` in the jobs' order,
 * as soon as it and every earlier one are in (so output streams in order).
 */
export async function runInOrder<J extends SimJob>(
  jobs: readonly J[],
  size: number,
  onResult: (result: SimJobResult<J>, index: number) => void,
): Promise<Array<SimJobResult<J>>> {
  const pool = new SimPool(Math.max(1, Math.min(size, jobs.length)));
  try {
    const running = jobs.map((job) => pool.run(job));
    // A failure is thrown below, in order; the runs after it are abandoned, not left unhandled.
    for (const run of running) run.catch(() => undefined);
    const results: Array<SimJobResult<J>> = [];
    for (let i = 0; i < running.length; i++) {
      results.push(await running[i]!);
      onResult(results[i]!, i);
    }
    return results;
  } finally {
    await pool.close();
  }
}

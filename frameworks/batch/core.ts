/**
 * The batch framework's core: a deterministic state machine with no I/O (DESIGN.md §1).
 *
 * A job is a list of tasks, each with its resources and either a command (a real cluster) or a
 * duration (the simulator; see the shell's `taskCommand`). Every input (a job submitted, offers,
 * a status update, the outcome of an ACCEPT, a timer) reads the time from the injected
 * {@link Clock} and returns {@link BatchEffect}s for the shell to carry out: launches, declines,
 * kills, SUPPRESS/REVIVE, reconciliation, a wake-up time and progress events.
 *
 * Scheduling: pending tasks wait in one FIFO queue (job submission order, then task index;
 * retries join at the back). Each offer takes, first-fit, as many queued tasks as fit (looking at
 * no more than `maxScanPerOffer` of them); its remainder, or the whole offer when nothing fits, is
 * declined with `refuseSeconds`. With nothing queued the core SUPPRESSes; when work arrives it
 * REVIVEs (at once when suppressed, otherwise at most once per `reviveIntervalMs`, since new work
 * after declines only needs the declined agents back).
 *
 * With `offerHoldSeconds`, an offer nothing fits is kept (up to `maxHeldOffers`) instead of
 * declined, and work that arrives goes to the kept offers first, as Aurora holds offers: a steady
 * stream of small jobs then launches at once and REVIVEs only when the kept offers run out, where
 * each REVIVE costs the master an offer of every agent. Kept offers count toward the framework's
 * share at the master, as every outstanding offer does.
 *
 * A task that ends other than FINISHED (failed, killed, lost with its agent...) is queued again
 * until it has failed `maxRetries + 1` times; a launch that never started (TASK_DROPPED, or
 * TASK_LOST for invalid offers) is queued again without counting as a failure. A job ends
 * `completed` when every task finished, `failed` once no task is left to run and one of them
 * failed (or as soon as one fails, with `failFast`), `timed-out` when `timeoutMs` passes first,
 * or `cancelled`; whatever of it still runs is killed. Each launch has its own task id, `<job>.<index>.<attempt>`, so a late update of
 * an earlier attempt can never be mistaken for the current one.
 *
 * @module
 */

import type { Clock } from "../../sdk/clock.ts";
import { Resources, ResourceError, rangesDifference, rangesIntersection, type Range, type RangesEntry, type ResourceEntry, type ScalarEntry, type SetEntry } from "../../sdk/resources.ts";
import { UNRESERVED_ROLE } from "../../sdk/roles.ts";
import { TERMINAL_TASK_STATES, type TaskState } from "../../sdk/wire/types.ts";
import { TimedHeap, type Timed } from "../../sdk/time-heap.ts";

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/** Tunables of {@link BatchCore}. */
export interface BatchConfig {
  /** Filter for declined offers and for what an accepted offer leaves unused. @default 5 */
  refuseSeconds: number;
  /** Least time between two REVIVEs for new work while offers are filtered (not suppressed). @default 1000 */
  reviveIntervalMs: number;
  /** Jobs not yet ended, at most. @default 10000 */
  maxLiveJobs: number;
  /** Tasks in one job, at most. @default 100000 */
  maxTasksPerJob: number;
  /** Tasks of all live jobs together, at most. @default 1000000 */
  maxLiveTasks: number;
  /** Queued tasks looked at per offer before the rest of the offer is declined. @default 1000 */
  maxScanPerOffer: number;
  /** Ended jobs remembered for summaries (the oldest are forgotten first). @default 10000 */
  maxEndedJobs: number;
  /** How long an offer nothing fits is kept for work to come; 0 declines it at once. @default 0 */
  offerHoldSeconds: number;
  /** Offers kept at once, at most (with `offerHoldSeconds`). @default 1000 */
  maxHeldOffers: number;
  /**
   * How long after asking to kill a task it asks again while the task has not ended: a kill
   * travels at most once to the agent and can be lost. Marathon and Metronome retry kills after
   * 10 s too (`--kill_retry_timeout`).
   * @default 10000
   */
  killRetryMs: number;
}

export const DEFAULT_BATCH_CONFIG: BatchConfig = {
  refuseSeconds: 5,
  reviveIntervalMs: 1000,
  maxLiveJobs: 10_000,
  maxTasksPerJob: 100_000,
  maxLiveTasks: 1_000_000,
  maxScanPerOffer: 1000,
  maxEndedJobs: 10_000,
  offerHoldSeconds: 0,
  maxHeldOffers: 1000,
  killRetryMs: 10_000,
};

/**
 * The least value each of {@link BatchConfig}'s tunables may take, and whether it counts things
 * (an integer). {@link BatchCore} refuses a config that breaks one, and the command line and the
 * simulator's scenario check their settings by the same bounds.
 */
export const BATCH_CONFIG_BOUNDS: { readonly [K in keyof BatchConfig]: { readonly min: number; readonly integer: boolean } } = {
  refuseSeconds: { min: 0, integer: false },
  reviveIntervalMs: { min: 0, integer: false },
  maxLiveJobs: { min: 1, integer: true },
  maxTasksPerJob: { min: 1, integer: true },
  maxLiveTasks: { min: 1, integer: true },
  maxScanPerOffer: { min: 1, integer: true },
  maxEndedJobs: { min: 0, integer: true },
  offerHoldSeconds: { min: 0, integer: false },
  maxHeldOffers: { min: 1, integer: true },
  killRetryMs: { min: 1, integer: false },
};

/** Why `value` cannot be the tunable `key` (the rule it breaks), or `undefined` when it can. */
export function batchConfigProblem(key: keyof BatchConfig, value: unknown): string | undefined {
  const { min, integer } = BATCH_CONFIG_BOUNDS[key];
  const rule = integer ? `must be an integer >= ${min}` : `must be a finite number >= ${min}`;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) return rule;
  return undefined;
}

/** Default of {@link BatchJobSpec.maxRetries}. */
export const DEFAULT_MAX_RETRIES = 3;

/**
 * Whether `name` can name an environment variable: not empty, no `=` (the process environment
 * is `NAME=value` strings, so `A=B` would set `A`) and no NUL (which ends a C string).
 */
export function isEnvName(name: string): boolean {
  return name !== "" && !name.includes("=") && !name.includes("\u0000");
}

/** The rule {@link isEnvName} checks, as job validation words it. */
export const ENV_NAME_RULE = "environment variable names must not be empty or contain '=' or NUL";

/** Commands and environment values cannot hold NUL: it ends a C string. */
export const NUL_RULE = "must not contain NUL characters";

/** Job ids: letters, digits, `_` and `-` (no dots: they separate the parts of a task id). */
export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

// ------------------------------------------------------------------------------------------------
// Inputs
// ------------------------------------------------------------------------------------------------

/** One task of a job. Tasks may share one spec object. */
export interface BatchTaskSpec {
  /** What one attempt consumes: a value, or Mesos text such as `"cpus:0.5;mem:128"`. */
  resources: Resources | string;
  /** Shell command line (`/bin/sh -c`). One of `command` and `durationMs` is required. */
  command?: string;
  /** How long the task runs, for tasks without a command (the shell turns it into one). */
  durationMs?: number;
  /** Environment variables. @default {} */
  env?: Readonly<Record<string, string>>;
  /** Queue the task only this long after the job was submitted (trace replay). @default 0 */
  startAfterMs?: number;
  /** Overrides the job's {@link BatchJobSpec.maxRetries} for this task. @default the job's */
  maxRetries?: number;
}

/** A job: tasks and how to treat their failures. */
export interface BatchJobSpec {
  /** Unique among the framework's jobs; see {@link JOB_ID_PATTERN}. */
  id: string;
  tasks: readonly BatchTaskSpec[];
  /** Times a task that ended other than FINISHED is run again. @default 3 */
  maxRetries?: number;
  /** The job is stopped (`timed-out`) this long after submission. @default none */
  timeoutMs?: number;
  /** End the job (`failed`) as soon as one task has used up its retries. @default false */
  failFast?: boolean;
}

/** An offer as the core needs it. */
export interface BatchOffer {
  id: string;
  agentId: string;
  hostname: string;
  resources: Resources;
}

/** The fields of a TaskStatus the core reads. */
export interface BatchStatus {
  taskId: string;
  state: TaskState | string;
  agentId: string;
  message?: string;
  reason?: string;
  exitCode?: number;
}

// ------------------------------------------------------------------------------------------------
// Outputs
// ------------------------------------------------------------------------------------------------

/** One task to launch, resolved. */
export interface BatchLaunch {
  /** `<job>.<index>.<attempt>`. */
  taskId: string;
  jobId: string;
  index: number;
  /** 0 for the task's first launch, then 1, 2... */
  attempt: number;
  /** Attempts of this task that failed before this one. */
  failures: number;
  agentId: string;
  hostname: string;
  resources: Resources;
  spec: Readonly<BatchTaskSpec>;
}

export type JobState = "waiting" | "running" | "completed" | "failed" | "timed-out" | "cancelled";
export type JobOutcome = "completed" | "failed" | "timed-out" | "cancelled";

/** A job as reported to users. Times are the clock's milliseconds. */
export interface BatchJobSummary {
  id: string;
  state: JobState;
  tasks: number;
  /** Tasks that finished. */
  finished: number;
  /** Tasks that used up their retries. */
  failed: number;
  /** Tasks stopped when the job ended early (queued, or killed while running). */
  dropped: number;
  /** Launches of all tasks (first attempts and retries). */
  launches: number;
  /** Failed attempts that were queued again. */
  retries: number;
  submittedAtMs: number;
  endedAtMs?: number;
  /** From submission to the end (or to now, while live). */
  elapsedMs: number;
  /** Per task that ran: from when it was first queued to its first TASK_RUNNING. */
  waitMs: { count: number; p50: number; max: number; mean: number };
  /** The last failure of a task, if any: what a user wants to see first. */
  lastFailure?: { taskId: string; state: string; message: string; exitCode?: number };
}

/** Progress, for logs, CLIs and the simulator's statistics. `atMs` is the clock's time. */
export type BatchEvent =
  | { type: "job-submitted"; atMs: number; jobId: string; tasks: number }
  /** Tasks queued for the first time (at submission, or when a delayed task is released). */
  | { type: "tasks-queued"; atMs: number; jobId: string; count: number }
  | { type: "task-launched"; atMs: number; jobId: string; taskId: string; index: number; attempt: number; agentId: string; hostname: string }
  /** The ACCEPT was refused or lost: the task is queued again (not counted as a failure). */
  | { type: "task-launch-failed"; atMs: number; jobId: string; taskId: string; index: number; attempt: number; error: string }
  /** `waitMs` is set on the task's first TASK_RUNNING. */
  | { type: "task-running"; atMs: number; jobId: string; taskId: string; index: number; attempt: number; agentId: string; hostname: string; waitMs?: number }
  | { type: "task-finished"; atMs: number; jobId: string; taskId: string; index: number; attempt: number; agentId: string }
  | {
      type: "task-failed";
      atMs: number;
      jobId: string;
      taskId: string;
      index: number;
      attempt: number;
      agentId: string;
      state: string;
      message: string;
      exitCode?: number;
      /** Queued again (true) or given up on (false). */
      retrying: boolean;
    }
  | { type: "job-ended"; atMs: number; jobId: string; outcome: JobOutcome; summary: BatchJobSummary }
  | { type: "offers-suppressed"; atMs: number }
  | { type: "offers-revived"; atMs: number };

export type BatchEffect =
  /** ACCEPT `offerId` launching `tasks`; the unused remainder is declined for `refuseSeconds`. */
  | { type: "launch"; offerId: string; agentId: string; tasks: BatchLaunch[]; refuseSeconds: number }
  | { type: "decline"; offerIds: string[]; refuseSeconds: number }
  | { type: "suppress" }
  | { type: "revive" }
  | { type: "kill"; taskId: string; agentId: string }
  | { type: "reconcile"; tasks: Array<{ taskId: string; agentId: string }> }
  /** Call {@link BatchCore.tick} at `atMs` (replaces any earlier wake-up request). */
  | { type: "wake"; atMs: number }
  | { type: "event"; event: BatchEvent };

/** Stable codes of {@link BatchError}. */
export type BatchErrorCode = "CORRAL_ERR_BAD_CONFIG" | "CORRAL_ERR_INVALID_JOB" | "CORRAL_ERR_DUPLICATE_JOB" | "CORRAL_ERR_TOO_MANY_JOBS" | "CORRAL_ERR_TOO_MANY_TASKS" | "CORRAL_ERR_UNKNOWN_JOB";

/** A job refused by {@link BatchCore.submit}, or a config by its constructor; the message names the field and the rule. */
export class BatchError extends Error {
  constructor(
    readonly code: BatchErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "BatchError";
  }
}

// ------------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------------

type TaskPhase = "held" | "pending" | "launching" | "active" | "finished" | "failed" | "dropped";

interface TaskRec {
  readonly job: JobRec;
  readonly index: number;
  readonly spec: Readonly<BatchTaskSpec>;
  readonly resources: Resources;
  readonly maxRetries: number;
  phase: TaskPhase;
  launches: number;
  failures: number;
  /** When it was first queued: where its wait starts. */
  queuedAtMs?: number;
  firstRunningAtMs?: number;
  /** The launch not ended yet, if any (a task has at most one at a time). */
  live?: LaunchRec;
}

interface LaunchRec {
  readonly taskId: string;
  readonly task: TaskRec;
  readonly attempt: number;
  readonly agentId: string;
  readonly hostname: string;
  /** `launching`: ACCEPT sent, not answered, no update yet. */
  state: "launching" | "launched" | "running";
  killSent: boolean;
}

interface JobRec {
  readonly id: string;
  readonly tasks: TaskRec[];
  readonly failFast: boolean;
  readonly submittedAtMs: number;
  state: JobState;
  endedAtMs?: number;
  finished: number;
  failed: number;
  dropped: number;
  /** Tasks neither finished, failed nor dropped. */
  open: number;
  launches: number;
  retries: number;
  lastFailure?: BatchJobSummary["lastFailure"];
  /** Launches not ended yet. */
  liveLaunches: number;
}

type Timer = Timed & ({ kind: "deadline"; job: JobRec } | { kind: "release"; task: TaskRec } | { kind: "hold-end"; offerId: string } | { kind: "kill-retry"; launch: LaunchRec });

const LIVE_STATES: ReadonlySet<JobState> = new Set<JobState>(["waiting", "running"]);

/** Updates that end an attempt: Mesos's terminal states, and UNKNOWN (the master never heard of it). */
const ENDS_ATTEMPT: ReadonlySet<string> = new Set<string>([...TERMINAL_TASK_STATES, "TASK_UNKNOWN"]);

/**
 * Whether a terminal update says the attempt never started, so that running it again is no
 * retry: TASK_DROPPED (Mesos: launching failed for a transient reason, the executor never
 * started), and TASK_LOST with REASON_INVALID_OFFERS, which is what a framework that is not
 * partition-aware is told instead of TASK_DROPPED when the offers of its ACCEPT were no longer
 * valid (rescinded, or already answered). Any other TASK_LOST may have run, so it uses a retry.
 */
function neverStarted(status: BatchStatus): boolean {
  return status.state === "TASK_DROPPED" || (status.state === "TASK_LOST" && status.reason === "REASON_INVALID_OFFERS");
}

/**
 * The part of `offered` a task asking for `wanted` uses, or `null` when it does not fit. What the
 * task asks for unreserved may come from resources the offer holds reserved for the framework's
 * role (the master offers a framework only reservations it may use): those first, since they
 * were set aside for it, then unreserved ones; one amount may be split between the two, as Mesos
 * allows. What the task asks for with a reservation must be in the offer with that reservation.
 */
export function carve(offered: Resources, wanted: Resources): Resources | null {
  // What is asked for with a reservation is set apart first; the rest comes from what is left.
  const named = wanted.reserved();
  const pool = offered.trySubtract(named);
  if (pool === null) return null;
  const parts: ResourceEntry[] = [...named.entries];
  for (const want of wanted.entries) {
    if (want.role !== UNRESERVED_ROLE) continue;
    // Same name and kind, reserved first.
    const sources = pool.entries.filter((e) => e.name === want.name && e.kind === want.kind);
    sources.sort((a, b) => Number(a.role === UNRESERVED_ROLE) - Number(b.role === UNRESERVED_ROLE));
    if (want.kind === "scalar") {
      let need = want.millis;
      for (const source of sources) {
        if (need === 0) break;
        const take = Math.min(need, (source as ScalarEntry).millis);
        parts.push({ kind: "scalar", name: want.name, role: source.role, millis: take });
        need -= take;
      }
      if (need > 0) return null;
    } else if (want.kind === "ranges") {
      let need: readonly Range[] = want.ranges;
      for (const source of sources) {
        if (need.length === 0) break;
        const take = rangesIntersection(need, (source as RangesEntry).ranges);
        if (take.length === 0) continue;
        parts.push({ kind: "ranges", name: want.name, role: source.role, ranges: take });
        need = rangesDifference(need, take);
      }
      if (need.length > 0) return null;
    } else {
      const need = new Set(want.items);
      for (const source of sources) {
        const take = (source as SetEntry).items.filter((item) => need.has(item));
        if (take.length === 0) continue;
        parts.push({ kind: "set", name: want.name, role: source.role, items: take });
        for (const item of take) need.delete(item);
      }
      if (need.size > 0) return null;
    }
  }
  return Resources.of(parts);
}

/** Cache of parsed resource texts (trace and workload jobs share a few texts among many tasks). */
const MAX_PARSED_TEXTS = 1024;

// ------------------------------------------------------------------------------------------------
// The core
// ------------------------------------------------------------------------------------------------

/** Options of {@link BatchCore}. */
export interface BatchCoreOptions {
  /** Where time comes from (the system clock, or the simulator's virtual clock). */
  clock: Clock;
  /** @default {@link DEFAULT_BATCH_CONFIG} */
  config?: Partial<BatchConfig>;
}

export class BatchCore {
  readonly config: BatchConfig;
  /** Counters over the framework's life. */
  readonly counters = {
    jobsSubmitted: 0,
    jobsCompleted: 0,
    jobsFailed: 0,
    jobsTimedOut: 0,
    jobsCancelled: 0,
    tasksLaunched: 0,
    tasksFinished: 0,
    attemptsFailed: 0,
    retries: 0,
    offersDeclined: 0,
    offersUsed: 0,
    offersHeld: 0,
  };

  private readonly clock: Clock;
  private readonly jobs = new Map<string, JobRec>();
  /** Ended jobs, oldest first, for forgetting beyond `maxEndedJobs`. */
  private readonly ended: string[] = [];
  private endedHead = 0;
  private liveJobs = 0;
  private liveTasks = 0;
  /** Launches whose task has not ended yet, by task id. */
  private readonly launches = new Map<string, LaunchRec>();
  /**
   * Forgotten jobs (past `maxEndedJobs`) with launches not ended yet, by id: a new job of the
   * same id would launch tasks of the same ids, and take their updates for its own.
   */
  private readonly draining = new Map<string, JobRec>();
  private queue: Array<TaskRec | null> = [];
  private head = 0;
  private holes = 0;
  private pending = 0;
  private readonly timers = new TimedHeap<Timer>();
  private timerSeq = 0;
  private readonly parsed = new Map<string, Resources>();

  /** Offers kept for work to come (`offerHoldSeconds`), oldest first. */
  private readonly held = new Map<string, BatchOffer>();
  private connected = false;
  private suppressed = false;
  /** Offers were declined (so filtered at the master) since the last REVIVE. */
  private filtered = false;
  private lastReviveMs = -Infinity;
  private reviveDueMs: number | undefined;
  /** Tasks were queued during the current input. */
  private newWork = false;
  private requestedWakeMs: number | undefined;

  /** @throws BatchError `CORRAL_ERR_BAD_CONFIG` naming the first tunable that breaks its bound. */
  constructor(options: BatchCoreOptions) {
    this.clock = options.clock;
    const config = { ...DEFAULT_BATCH_CONFIG };
    for (const key of Object.keys(BATCH_CONFIG_BOUNDS) as Array<keyof BatchConfig>) {
      // A tunable given as undefined keeps its default (a plain spread would put undefined in).
      const given: unknown = options.config?.[key];
      if (given === undefined) continue;
      const problem = batchConfigProblem(key, given);
      if (problem !== undefined) throw new BatchError("CORRAL_ERR_BAD_CONFIG", `config.${key}: ${problem}, got ${typeof given === "number" ? given : JSON.stringify(given)}`);
      config[key] = given as number;
    }
    this.config = config;
  }

  // ---------------------------------------------------------------------------------------------
  // Reads
  // ---------------------------------------------------------------------------------------------

  /** Tasks queued for an offer. */
  pendingTasks(): number {
    return this.pending;
  }

  /** Queued tasks first queued before `ms` (a retry keeps its first time). Scans the queue. */
  pendingQueuedBefore(ms: number): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) {
      const task = this.queue[i];
      if (task && task.phase === "pending" && (task.queuedAtMs ?? ms) < ms) n++;
    }
    return n;
  }

  /** Jobs submitted and not ended. */
  liveJobCount(): number {
    return this.liveJobs;
  }

  /** Offers kept for work to come. */
  heldOffers(): number {
    return this.held.size;
  }

  /** Whether SUPPRESS was the last of SUPPRESS/REVIVE sent. */
  isSuppressed(): boolean {
    return this.suppressed;
  }

  job(id: string): BatchJobSummary | undefined {
    const job = this.jobs.get(id);
    return job ? this.summarize(job) : undefined;
  }

  /** Every remembered job, in submission order. */
  jobList(): BatchJobSummary[] {
    return [...this.jobs.values()].map((job) => this.summarize(job));
  }

  // ---------------------------------------------------------------------------------------------
  // Inputs
  // ---------------------------------------------------------------------------------------------

  /**
   * Adds a job. Its tasks are queued at once (or after their `startAfterMs`).
   * @throws {BatchError} naming the field and the rule; nothing is changed then.
   */
  submit(spec: BatchJobSpec): BatchEffect[] {
    const now = this.clock.now();
    const { id, tasks, maxRetries, timeoutMs, failFast } = this.validateJob(spec);
    const job: JobRec = {
      id,
      tasks: [],
      failFast,
      submittedAtMs: now,
      state: "waiting",
      finished: 0,
      failed: 0,
      dropped: 0,
      open: tasks.length,
      launches: 0,
      retries: 0,
      liveLaunches: 0,
    };
    tasks.forEach((t, index) => job.tasks.push({ job, index, spec: t.spec, resources: t.resources, maxRetries: t.spec.maxRetries ?? maxRetries, phase: "held", launches: 0, failures: 0 }));
    this.jobs.set(id, job);
    this.liveJobs++;
    this.liveTasks += tasks.length;
    this.counters.jobsSubmitted++;
    const fx: BatchEffect[] = [{ type: "event", event: { type: "job-submitted", atMs: now, jobId: id, tasks: tasks.length } }];
    if (timeoutMs !== undefined) this.timers.push({ timeMs: now + timeoutMs, seq: this.timerSeq++, kind: "deadline", job });
    let queued = 0;
    for (const task of job.tasks) {
      const delay = task.spec.startAfterMs ?? 0;
      if (delay > 0) this.timers.push({ timeMs: now + delay, seq: this.timerSeq++, kind: "release", task });
      else {
        this.enqueue(task, now);
        queued++;
      }
    }
    if (queued > 0) fx.push({ type: "event", event: { type: "tasks-queued", atMs: now, jobId: id, count: queued } });
    if (job.open === 0) this.endJob(job, "completed", fx);
    return this.finish(fx);
  }

  /** The driver (re)subscribed. After a reconnection, asks for the state of every launched task. */
  subscribed(reconnected: boolean): BatchEffect[] {
    this.connected = true;
    // A new subscription starts unsuppressed and unfiltered at the master, and without the
    // offers of the old one.
    this.suppressed = false;
    this.filtered = false;
    this.held.clear();
    const fx: BatchEffect[] = [];
    if (reconnected && this.launches.size > 0) {
      fx.push({ type: "reconcile", tasks: [...this.launches.values()].map((l) => ({ taskId: l.taskId, agentId: l.agentId })) });
    }
    return this.finish(fx);
  }

  /** Contact with the master was lost; the driver re-subscribes by itself. */
  disconnected(): BatchEffect[] {
    this.connected = false;
    this.held.clear();
    return [];
  }

  /** The master took an offer back (it may be a kept one). */
  rescinded(offerId: string): BatchEffect[] {
    this.held.delete(offerId);
    return [];
  }

  /** Packs queued tasks into the offers; keeps (`offerHoldSeconds`) or declines what is left. */
  offers(offers: readonly BatchOffer[]): BatchEffect[] {
    const now = this.clock.now();
    const fx: BatchEffect[] = [];
    const declined: string[] = [];
    const holdMs = this.config.offerHoldSeconds * 1000;
    for (const offer of offers) {
      if (this.use(offer, fx)) continue;
      if (holdMs > 0 && this.held.size < this.config.maxHeldOffers) {
        this.held.set(offer.id, offer);
        this.timers.push({ timeMs: now + holdMs, seq: this.timerSeq++, kind: "hold-end", offerId: offer.id });
        this.counters.offersHeld++;
        continue;
      }
      declined.push(offer.id);
    }
    this.decline(declined, fx);
    return this.finish(fx);
  }

  /** How the ACCEPT carrying `taskIds` went: on failure the tasks are queued again, in front. */
  launchResult(taskIds: readonly string[], ok: boolean, error = ""): BatchEffect[] {
    const now = this.clock.now();
    const fx: BatchEffect[] = [];
    const requeue: TaskRec[] = [];
    for (const taskId of taskIds) {
      const launch = this.launches.get(taskId);
      if (!launch || launch.state !== "launching") continue; // updates already told us more
      const task = launch.task;
      if (ok) {
        this.markLaunched(launch, now, fx);
        continue;
      }
      this.forget(launch);
      fx.push({ type: "event", event: { type: "task-launch-failed", atMs: now, jobId: task.job.id, taskId, index: task.index, attempt: launch.attempt, error } });
      if (task.phase === "launching") requeue.push(task);
    }
    this.requeueFront(requeue);
    return this.finish(fx);
  }

  /** A status update. Idempotent: repeated and stale updates change nothing. */
  update(status: BatchStatus): BatchEffect[] {
    const now = this.clock.now();
    const fx: BatchEffect[] = [];
    const launch = this.launches.get(status.taskId);
    const ends = ENDS_ATTEMPT.has(status.state);
    if (!launch) {
      // Not a task we are waiting for (an old attempt, a leftover of an earlier run): stop it.
      if (!ends && status.state !== "TASK_KILLING") fx.push({ type: "kill", taskId: status.taskId, agentId: status.agentId });
      return this.finish(fx);
    }
    const task = launch.task;
    const job = task.job;
    const live = LIVE_STATES.has(job.state);
    // Whether a kill of this attempt was asked for before this update (not by markLaunched now).
    const killedBefore = launch.killSent;
    if (launch.state === "launching") this.markLaunched(launch, now, fx);
    if (!ends) {
      if (status.state === "TASK_RUNNING" && launch.state !== "running") {
        launch.state = "running";
        const first = task.firstRunningAtMs === undefined;
        if (first) task.firstRunningAtMs = now;
        const waitMs = first && task.queuedAtMs !== undefined ? now - task.queuedAtMs : undefined;
        fx.push({
          type: "event",
          event: { type: "task-running", atMs: now, jobId: job.id, taskId: launch.taskId, index: task.index, attempt: launch.attempt, agentId: launch.agentId, hostname: launch.hostname, ...(waitMs !== undefined ? { waitMs } : {}) },
        });
      }
      // The job ended, yet the attempt still lives: the kill may have been lost (a master failover
      // between the KILL and the agent), so every sign of life, such as a reconciliation's
      // answer, asks again.
      if (!live && killedBefore && status.state !== "TASK_KILLING") this.kill(launch, fx, true);
      return this.finish(fx);
    }
    this.forget(launch);
    if (!live || task.phase !== "active") return this.finish(fx);
    if (status.state === "TASK_FINISHED") {
      task.phase = "finished";
      job.finished++;
      job.open--;
      this.liveTasks--;
      this.counters.tasksFinished++;
      fx.push({ type: "event", event: { type: "task-finished", atMs: now, jobId: job.id, taskId: launch.taskId, index: task.index, attempt: launch.attempt, agentId: launch.agentId } });
      this.maybeEndJob(job, fx);
      return this.finish(fx);
    }
    if (neverStarted(status)) {
      const error = status.message ? `${status.state}: ${status.message}` : status.state;
      fx.push({ type: "event", event: { type: "task-launch-failed", atMs: now, jobId: job.id, taskId: launch.taskId, index: task.index, attempt: launch.attempt, error } });
      this.requeueFront([task]);
      return this.finish(fx);
    }
    this.onAttemptFailed(launch, status, now, fx);
    return this.finish(fx);
  }

  /** Timers that are due: job timeouts, delayed tasks, kept offers, kill retries, a postponed REVIVE. */
  tick(): BatchEffect[] {
    const now = this.clock.now();
    const fx: BatchEffect[] = [];
    if (this.requestedWakeMs !== undefined && this.requestedWakeMs <= now) this.requestedWakeMs = undefined;
    const released = new Map<JobRec, number>();
    const expired: string[] = [];
    while ((this.timers.peek()?.timeMs ?? Infinity) <= now) {
      const timer = this.timers.pop()!;
      if (timer.kind === "deadline") {
        if (LIVE_STATES.has(timer.job.state)) this.endJob(timer.job, "timed-out", fx);
        continue;
      }
      if (timer.kind === "hold-end") {
        if (this.held.delete(timer.offerId)) expired.push(timer.offerId);
        continue;
      }
      if (timer.kind === "kill-retry") {
        this.retryKill(timer.launch, now, fx);
        continue;
      }
      const task = timer.task;
      if (task.phase !== "held" || !LIVE_STATES.has(task.job.state)) continue;
      this.enqueue(task, now);
      released.set(task.job, (released.get(task.job) ?? 0) + 1);
    }
    for (const [job, count] of released) fx.push({ type: "event", event: { type: "tasks-queued", atMs: now, jobId: job.id, count } });
    this.decline(expired, fx);
    if (this.reviveDueMs !== undefined && this.reviveDueMs <= now) {
      this.reviveDueMs = undefined;
      if (this.pending > 0 && this.filtered && !this.suppressed) this.revive(now, fx);
    }
    return this.finish(fx);
  }

  /** Stops a job (`cancelled`): queued tasks are dropped, running ones killed. */
  cancel(jobId: string): BatchEffect[] {
    const job = this.jobs.get(jobId);
    if (!job) throw new BatchError("CORRAL_ERR_UNKNOWN_JOB", `jobId: no job ${JSON.stringify(jobId)}`);
    const fx: BatchEffect[] = [];
    if (LIVE_STATES.has(job.state)) this.endJob(job, "cancelled", fx);
    return this.finish(fx);
  }

  /** Cancels every live job. */
  cancelAll(): BatchEffect[] {
    const fx: BatchEffect[] = [];
    for (const job of this.jobs.values()) if (LIVE_STATES.has(job.state)) this.endJob(job, "cancelled", fx);
    return this.finish(fx);
  }

  // ---------------------------------------------------------------------------------------------
  // Internals
  // ---------------------------------------------------------------------------------------------

  private validateJob(spec: BatchJobSpec): { id: string; tasks: Array<{ spec: Readonly<BatchTaskSpec>; resources: Resources }>; maxRetries: number; timeoutMs: number | undefined; failFast: boolean } {
    const invalid = (field: string, rule: string) => new BatchError("CORRAL_ERR_INVALID_JOB", `${field}: ${rule}`);
    if (typeof spec !== "object" || spec === null) throw invalid("job", "must be an object");
    const id = spec.id;
    if (typeof id !== "string" || !JOB_ID_PATTERN.test(id)) throw invalid("id", `must be 1-128 letters, digits, '_' or '-' starting with a letter or digit, got ${JSON.stringify(id)}`);
    if (this.jobs.has(id)) throw new BatchError("CORRAL_ERR_DUPLICATE_JOB", `id: job ${JSON.stringify(id)} was already submitted`);
    const draining = this.draining.get(id);
    if (draining) {
      const running = draining.tasks.find((t) => t.live)?.live?.taskId;
      throw new BatchError("CORRAL_ERR_DUPLICATE_JOB", `id: job ${JSON.stringify(id)} ended but its task ${running} has not yet; submit it again once that task ended`);
    }
    const maxRetries = spec.maxRetries ?? DEFAULT_MAX_RETRIES;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) throw invalid("maxRetries", `must be an integer >= 0, got ${maxRetries}`);
    const timeoutMs = spec.timeoutMs;
    if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw invalid("timeoutMs", `must be a finite number > 0, got ${timeoutMs}`);
    if (spec.failFast !== undefined && typeof spec.failFast !== "boolean") throw invalid("failFast", "must be true or false");
    if (!Array.isArray(spec.tasks)) throw invalid("tasks", "must be an array");
    if (spec.tasks.length > this.config.maxTasksPerJob) {
      throw new BatchError("CORRAL_ERR_TOO_MANY_TASKS", `tasks: ${spec.tasks.length} tasks, more than maxTasksPerJob (${this.config.maxTasksPerJob})`);
    }
    if (this.liveJobs >= this.config.maxLiveJobs) throw new BatchError("CORRAL_ERR_TOO_MANY_JOBS", `job ${id}: ${this.liveJobs} jobs are running, the most maxLiveJobs allows`);
    if (this.liveTasks + spec.tasks.length > this.config.maxLiveTasks) {
      throw new BatchError("CORRAL_ERR_TOO_MANY_TASKS", `tasks: ${spec.tasks.length} more tasks would exceed maxLiveTasks (${this.config.maxLiveTasks}; ${this.liveTasks} live)`);
    }
    const seen = new Map<BatchTaskSpec, Resources>();
    // Array.from visits the holes of a sparse array too (map skips them, and the job would wait
    // for tasks that do not exist); a hole is refused as a task that is not an object.
    const tasks = Array.from(spec.tasks, (t, i) => {
      const known = seen.get(t);
      if (known) return { spec: t, resources: known };
      const resources = this.validateTask(t, `tasks[${i}]`, invalid);
      seen.set(t, resources);
      return { spec: t, resources };
    });
    return { id, tasks, maxRetries, timeoutMs, failFast: spec.failFast ?? false };
  }

  private validateTask(t: BatchTaskSpec, field: string, invalid: (field: string, rule: string) => BatchError): Resources {
    if (typeof t !== "object" || t === null) throw invalid(field, "must be an object");
    const resources = this.resourcesOf(t.resources, `${field}.resources`, invalid);
    if (t.command !== undefined && (typeof t.command !== "string" || t.command.trim() === "")) throw invalid(`${field}.command`, "must be a non-empty string");
    if (t.command?.includes("\u0000")) throw invalid(`${field}.command`, NUL_RULE);
    if (t.durationMs !== undefined && !(Number.isFinite(t.durationMs) && t.durationMs >= 0)) throw invalid(`${field}.durationMs`, `must be a finite number >= 0, got ${t.durationMs}`);
    if (t.command === undefined && t.durationMs === undefined) throw invalid(field, "needs a command or a durationMs");
    if (t.startAfterMs !== undefined && !(Number.isFinite(t.startAfterMs) && t.startAfterMs >= 0)) throw invalid(`${field}.startAfterMs`, `must be a finite number >= 0, got ${t.startAfterMs}`);
    if (t.maxRetries !== undefined && !(Number.isInteger(t.maxRetries) && t.maxRetries >= 0)) throw invalid(`${field}.maxRetries`, `must be an integer >= 0, got ${t.maxRetries}`);
    if (t.env !== undefined && (typeof t.env !== "object" || t.env === null || Object.values(t.env).some((v) => typeof v !== "string"))) {
      throw invalid(`${field}.env`, "must map names to strings");
    }
    for (const [name, value] of Object.entries(t.env ?? {})) {
      if (!isEnvName(name)) throw invalid(`${field}.env`, `${ENV_NAME_RULE}, got ${JSON.stringify(name)}`);
      if (value.includes("\u0000")) throw invalid(`${field}.env.${name}`, NUL_RULE);
    }
    return resources;
  }

  private resourcesOf(value: Resources | string, field: string, invalid: (field: string, rule: string) => BatchError): Resources {
    let resources: Resources;
    if (value instanceof Resources) resources = value;
    else if (typeof value === "string") {
      const cached = this.parsed.get(value);
      if (cached) return cached;
      try {
        resources = Resources.parse(value);
      } catch (err) {
        if (err instanceof ResourceError) throw invalid(field, `is not valid Mesos resource text (${err.message})`);
        throw err;
      }
      if (this.parsed.size >= MAX_PARSED_TEXTS) this.parsed.clear();
      this.parsed.set(value, resources);
    } else throw invalid(field, 'must be Mesos resource text such as "cpus:0.5;mem:128"');
    if (resources.isEmpty()) throw invalid(field, "must not be empty");
    return resources;
  }

  private enqueue(task: TaskRec, now: number): void {
    task.phase = "pending";
    task.queuedAtMs ??= now;
    this.queue.push(task);
    this.pending++;
    this.newWork = true;
  }

  /** Queues tasks whose launch never happened again, ahead of everything queued. */
  private requeueFront(tasks: TaskRec[]): void {
    if (tasks.length === 0) return;
    for (const task of tasks) task.phase = "pending";
    this.pending += tasks.length;
    this.queue.splice(this.head, 0, ...tasks);
    this.newWork = true;
  }

  /**
   * First-fit: takes queued tasks (up to `maxScanPerOffer` looked at) while they fit `offered`,
   * each with the resources of the offer it is to use.
   */
  private pick(offered: Resources): Array<{ task: TaskRec; resources: Resources }> {
    const chosen: Array<{ task: TaskRec; resources: Resources }> = [];
    if (this.pending === 0) return chosen;
    // Most offers hold unreserved resources only: the task takes what it names, as it names it.
    const reserved = offered.entries.some((e) => e.role !== UNRESERVED_ROLE);
    let remaining = offered;
    let scanned = 0;
    for (let i = this.head; i < this.queue.length && scanned < this.config.maxScanPerOffer; i++) {
      const task = this.queue[i];
      if (task === null || task === undefined) continue;
      if (task.phase !== "pending") {
        this.removeAt(i);
        continue;
      }
      scanned++;
      const resources = reserved ? carve(remaining, task.resources) : task.resources;
      const left = resources && remaining.trySubtract(resources);
      if (!resources || !left) continue;
      remaining = left;
      chosen.push({ task, resources });
      this.removeAt(i);
      this.pending--;
    }
    this.compact();
    return chosen;
  }

  /** Empties slot `i`; `holes` counts the empty slots at or after `head`. */
  private removeAt(i: number): void {
    this.queue[i] = null;
    this.holes++;
    while (this.head < this.queue.length && this.queue[this.head] === null) {
      this.head++;
      this.holes--;
    }
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.holes = 0;
      return;
    }
    const dead = this.head + this.holes;
    if (dead > 1024 && dead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head).filter((t) => t !== null);
      this.head = 0;
      this.holes = 0;
    }
  }

  /** Launches on `offer` the queued tasks that fit it; false when none does. */
  private use(offer: BatchOffer, fx: BatchEffect[]): boolean {
    const chosen = this.pick(offer.resources);
    if (chosen.length === 0) return false;
    const launches = chosen.map(({ task, resources }) => this.launch(task, offer, resources));
    fx.push({ type: "launch", offerId: offer.id, agentId: offer.agentId, tasks: launches, refuseSeconds: this.config.refuseSeconds });
    this.counters.offersUsed++;
    // The master declines what the launch leaves of the offer, with the same filter.
    this.filtered = true;
    return true;
  }

  private decline(offerIds: string[], fx: BatchEffect[]): void {
    if (offerIds.length === 0) return;
    this.counters.offersDeclined += offerIds.length;
    this.filtered = true;
    fx.push({ type: "decline", offerIds, refuseSeconds: this.config.refuseSeconds });
  }

  private launch(task: TaskRec, offer: BatchOffer, resources: Resources): BatchLaunch {
    const attempt = task.launches++;
    const job = task.job;
    const taskId = [job.id, task.index, attempt].join("."); // one flat string (see SeededRng.uuid)
    task.phase = "launching";
    job.launches++;
    if (job.state === "waiting") job.state = "running";
    const rec: LaunchRec = { taskId, task, attempt, agentId: offer.agentId, hostname: offer.hostname, state: "launching", killSent: false };
    this.launches.set(taskId, rec);
    task.live = rec;
    job.liveLaunches++;
    return { taskId, jobId: job.id, index: task.index, attempt, failures: task.failures, agentId: offer.agentId, hostname: offer.hostname, resources, spec: task.spec };
  }

  private markLaunched(launch: LaunchRec, now: number, fx: BatchEffect[]): void {
    launch.state = "launched";
    const task = launch.task;
    this.counters.tasksLaunched++;
    if (task.phase === "launching") task.phase = "active";
    fx.push({
      type: "event",
      event: { type: "task-launched", atMs: now, jobId: task.job.id, taskId: launch.taskId, index: task.index, attempt: launch.attempt, agentId: launch.agentId, hostname: launch.hostname },
    });
    // The job ended while the ACCEPT was on its way.
    if (!LIVE_STATES.has(task.job.state)) this.kill(launch, fx);
  }

  private onAttemptFailed(launch: LaunchRec, status: BatchStatus, now: number, fx: BatchEffect[]): void {
    const task = launch.task;
    const job = task.job;
    task.failures++;
    this.counters.attemptsFailed++;
    const retrying = task.failures <= task.maxRetries;
    const message = status.message ?? "";
    job.lastFailure = { taskId: launch.taskId, state: status.state, message, ...(status.exitCode !== undefined ? { exitCode: status.exitCode } : {}) };
    fx.push({
      type: "event",
      event: {
        type: "task-failed",
        atMs: now,
        jobId: job.id,
        taskId: launch.taskId,
        index: task.index,
        attempt: launch.attempt,
        agentId: launch.agentId,
        state: status.state,
        message,
        ...(status.exitCode !== undefined ? { exitCode: status.exitCode } : {}),
        retrying,
      },
    });
    if (retrying) {
      job.retries++;
      this.counters.retries++;
      this.enqueue(task, now);
      return;
    }
    task.phase = "failed";
    job.failed++;
    job.open--;
    this.liveTasks--;
    if (job.failFast) this.endJob(job, "failed", fx);
    else this.maybeEndJob(job, fx);
  }

  /** Ends the job once nothing of it is left to run. */
  private maybeEndJob(job: JobRec, fx: BatchEffect[]): void {
    if (job.open > 0 || !LIVE_STATES.has(job.state)) return;
    this.endJob(job, job.failed > 0 ? "failed" : "completed", fx);
  }

  private endJob(job: JobRec, outcome: JobOutcome, fx: BatchEffect[]): void {
    const now = this.clock.now();
    job.state = outcome;
    job.endedAtMs = now;
    for (const task of job.tasks) {
      if (task.phase === "pending") this.pending--;
      if (task.phase === "held" || task.phase === "pending" || task.phase === "launching" || task.phase === "active") {
        task.phase = "dropped";
        job.dropped++;
        job.open--;
        this.liveTasks--;
      }
    }
    // Kill what still runs (a launch still being accepted is killed once it is).
    for (const task of job.tasks) if (task.live && task.live.state !== "launching") this.kill(task.live, fx);
    this.liveJobs--;
    const counter = { completed: "jobsCompleted", failed: "jobsFailed", "timed-out": "jobsTimedOut", cancelled: "jobsCancelled" } as const;
    this.counters[counter[outcome]]++;
    fx.push({ type: "event", event: { type: "job-ended", atMs: now, jobId: job.id, outcome, summary: this.summarize(job) } });
    this.ended.push(job.id);
    while (this.ended.length - this.endedHead > this.config.maxEndedJobs) {
      const id = this.ended[this.endedHead++]!;
      const old = this.jobs.get(id);
      this.jobs.delete(id);
      if (old && old.liveLaunches > 0) this.draining.set(id, old);
    }
    if (this.endedHead > 1024 && this.endedHead * 2 > this.ended.length) {
      this.ended.splice(0, this.endedHead);
      this.endedHead = 0;
    }
  }

  private forget(launch: LaunchRec): void {
    if (!this.launches.delete(launch.taskId)) return;
    if (launch.task.live === launch) launch.task.live = undefined;
    const job = launch.task.job;
    if (--job.liveLaunches === 0 && this.draining.get(job.id) === job) this.draining.delete(job.id);
  }

  private kill(launch: LaunchRec, fx: BatchEffect[], again = false): void {
    if (launch.killSent && !again) return;
    // The first kill arms the retries; a kill asked again meanwhile leaves them as they are.
    if (!launch.killSent) this.timers.push({ timeMs: this.clock.now() + this.config.killRetryMs, seq: this.timerSeq++, kind: "kill-retry", launch });
    launch.killSent = true;
    fx.push({ type: "kill", taskId: launch.taskId, agentId: launch.agentId });
  }

  /** Asks again to kill a launch that has not ended since (while connected: else the reconciliation after re-subscribing does). */
  private retryKill(launch: LaunchRec, now: number, fx: BatchEffect[]): void {
    if (this.launches.get(launch.taskId) !== launch) return;
    if (this.connected) fx.push({ type: "kill", taskId: launch.taskId, agentId: launch.agentId });
    this.timers.push({ timeMs: now + this.config.killRetryMs, seq: this.timerSeq++, kind: "kill-retry", launch });
  }

  private revive(now: number, fx: BatchEffect[]): void {
    this.suppressed = false;
    this.filtered = false;
    this.lastReviveMs = now;
    this.reviveDueMs = undefined;
    fx.push({ type: "revive" }, { type: "event", event: { type: "offers-revived", atMs: now } });
  }

  /** SUPPRESS/REVIVE for the queue as it now is, and the next wake-up. */
  private finish(fx: BatchEffect[]): BatchEffect[] {
    const now = this.clock.now();
    // Queued work goes to the kept offers first, oldest first.
    if (this.pending > 0 && this.held.size > 0) {
      for (const [id, offer] of this.held) {
        if (this.pending === 0) break;
        if (this.use(offer, fx)) this.held.delete(id);
      }
    }
    if (this.connected) {
      if (this.pending > 0) {
        if (this.suppressed) this.revive(now, fx);
        else if (this.newWork && this.filtered) {
          if (now - this.lastReviveMs >= this.config.reviveIntervalMs) this.revive(now, fx);
          else this.reviveDueMs ??= this.lastReviveMs + this.config.reviveIntervalMs;
        }
      } else if (!this.suppressed) {
        this.suppressed = true;
        this.reviveDueMs = undefined;
        fx.push({ type: "suppress" }, { type: "event", event: { type: "offers-suppressed", atMs: now } });
      }
    }
    this.newWork = false;
    const next = Math.min(this.timers.peek()?.timeMs ?? Infinity, this.reviveDueMs ?? Infinity);
    if (next !== Infinity && next !== this.requestedWakeMs) {
      this.requestedWakeMs = next;
      fx.push({ type: "wake", atMs: next });
    }
    return fx;
  }

  private summarize(job: JobRec): BatchJobSummary {
    const waits: number[] = [];
    for (const task of job.tasks) if (task.firstRunningAtMs !== undefined && task.queuedAtMs !== undefined) waits.push(task.firstRunningAtMs - task.queuedAtMs);
    waits.sort((a, b) => a - b);
    const end = job.endedAtMs ?? this.clock.now();
    return {
      id: job.id,
      state: job.state,
      tasks: job.tasks.length,
      finished: job.finished,
      failed: job.failed,
      dropped: job.dropped,
      launches: job.launches,
      retries: job.retries,
      submittedAtMs: job.submittedAtMs,
      ...(job.endedAtMs !== undefined ? { endedAtMs: job.endedAtMs } : {}),
      elapsedMs: end - job.submittedAtMs,
      waitMs: {
        count: waits.length,
        p50: waits.length ? waits[Math.ceil(waits.length / 2) - 1]! : 0,
        max: waits.length ? waits[waits.length - 1]! : 0,
        mean: waits.length ? waits.reduce((a, b) => a + b, 0) / waits.length : 0,
      },
      ...(job.lastFailure ? { lastFailure: job.lastFailure } : {}),
    };
  }
}

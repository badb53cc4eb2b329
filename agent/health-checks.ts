/**
 * Health checks the agent runs on its tasks (`TaskInfo.health_check`), with Mesos's semantics:
 *
 * - the first check runs `delaySeconds` after the task started, each further one
 *   `intervalSeconds` after the previous one ended; a check still running after `timeoutSeconds`
 *   is killed and fails;
 * - failures within `gracePeriodSeconds` of the start do not count while the task has never
 *   passed a check;
 * - after an agent restart, a recovered task's checks carry on from the verdict reported last
 *   (no new delay or grace period), as Mesos's, which run in the executor, simply go on;
 * - the agent reports the first pass, the first pass after failures and every counted failure
 *   (with the count), so that the framework can count consecutive failures itself. Killing an
 *   unhealthy task is the framework's decision (Marathon's `maxConsecutiveFailures`).
 *
 * {@link HealthCheckSchedule} is the decision logic, a pure state machine over injected time;
 * {@link HealthCheckRunner} arms timers and runs checks through a function it is given;
 * {@link runCommandCheck} runs one COMMAND check as a process.
 *
 * How a COMMAND check runs: `/bin/sh -c <command>` with the environment the containerizer gave the
 * task (plus the check's own `environment`), in a process group of its own so that a timeout kills
 * everything it started. Where the containerizer can enter the task's container
 * ({@link Containerizer.exec}: the Linux one with cgroups), the check runs inside it as Mesos runs
 * it: in its namespaces (it sees the task's private /tmp, host name and processes), as its user
 * with its privileges, in its sandbox, counted against its cgroups' limits. Elsewhere (the posix
 * containerizer) it runs on the host, in the task's sandbox, as the user owning the sandbox.
 * Either way the task's network is the host's, so `curl localhost:$PORT0` sees what it serves.
 *
 * @module
 */
import { stat } from "node:fs/promises";
import type { Clock, TimerHandle, Timers } from "../sdk/clock.ts";
import type { Resources } from "../sdk/resources.ts";
import type { HealthCheck, TaskInfo } from "../sdk/wire/types.ts";
import { containerResourcesOf } from "./agent-logic.ts";
import { DEFAULT_PATH, runProcessGroup, taskEnvironment } from "./containerizer/common.ts";
import type { ContainerExecResult, ContainerResources, Containerizer } from "./containerizer/types.ts";

// ------------------------------------------------------------------------------------------------
// Timing
// ------------------------------------------------------------------------------------------------

/** Mesos's defaults for durations a {@link HealthCheck} leaves out, in seconds. */
export const HEALTH_CHECK_DEFAULTS = { delaySeconds: 15, intervalSeconds: 10, timeoutSeconds: 20, gracePeriodSeconds: 10 } as const;

/** Shortest time between two checks of one task, so `intervalSeconds: 0` cannot spin. @default 100 */
export const MIN_CHECK_INTERVAL_MS = 100;

/** Shortest check timeout. @default 100 */
export const MIN_CHECK_TIMEOUT_MS = 100;

/** A check's durations in ms, defaults filled in and floors applied. */
export interface HealthCheckTiming {
  delayMs: number;
  intervalMs: number;
  timeoutMs: number;
  gracePeriodMs: number;
}

function ms(seconds: number | undefined, dflt: number): number {
  const value = seconds !== undefined && Number.isFinite(seconds) && seconds >= 0 ? seconds : dflt;
  return Math.round(value * 1000);
}

/** The timing of a wire health check. */
export function healthCheckTiming(check: HealthCheck): HealthCheckTiming {
  const d = HEALTH_CHECK_DEFAULTS;
  return {
    delayMs: ms(check.delaySeconds, d.delaySeconds),
    intervalMs: Math.max(MIN_CHECK_INTERVAL_MS, ms(check.intervalSeconds, d.intervalSeconds)),
    timeoutMs: Math.max(MIN_CHECK_TIMEOUT_MS, ms(check.timeoutSeconds, d.timeoutSeconds)),
    gracePeriodMs: ms(check.gracePeriodSeconds, d.gracePeriodSeconds),
  };
}

// ------------------------------------------------------------------------------------------------
// The decision logic
// ------------------------------------------------------------------------------------------------

/** What to tell the framework after a check. */
export interface HealthVerdict {
  healthy: boolean;
  /** Failures in a row, this one included (0 when healthy). */
  consecutiveFailures: number;
  /** For the status update's message. */
  message: string;
}

/** The verdict last reported for a task's checks before the agent restarted. */
export interface ResumedHealth {
  healthy: boolean;
}

/** One task's checks: when the next is due and what each result means. Pure; time comes in. */
export class HealthCheckSchedule {
  private nextAtMs: number;
  private running = false;
  private failures = 0;
  /** False until the first pass, and while so failures within the grace period do not count. */
  private everHealthy: boolean;
  /** The verdict reported last; a pass is reported unless it was a pass too. */
  private lastReported: boolean | undefined;

  /**
   * @param resumed the verdict reported for this task before an agent restart. In Mesos the checks
   *   run in the executor and go on through an agent restart; here they restart with the agent, so
   *   they carry on from it: the first check comes an interval after `startedAtMs` (the delay was
   *   served), no grace period applies (a verdict was reported, so the task had passed or its grace
   *   period was over), and only a change from it is reported.
   */
  constructor(
    readonly timing: HealthCheckTiming,
    /** When the task started running, or when its checks resumed (with `resumed`). */
    readonly startedAtMs: number,
    resumed?: ResumedHealth,
  ) {
    this.nextAtMs = startedAtMs + (resumed === undefined ? timing.delayMs : timing.intervalMs);
    this.everHealthy = resumed !== undefined;
    this.lastReported = resumed?.healthy;
  }

  /** When the next check is due; undefined while one runs. */
  dueAtMs(): number | undefined {
    return this.running ? undefined : this.nextAtMs;
  }

  /** A check starts. */
  begin(): void {
    this.running = true;
  }

  /** A check ended at `nowMs`; returns what to report, if anything. */
  end(passed: boolean, nowMs: number, detail: string): HealthVerdict | undefined {
    this.running = false;
    this.nextAtMs = nowMs + this.timing.intervalMs;
    if (passed) {
      const report = this.lastReported !== true;
      this.everHealthy = true;
      this.failures = 0;
      this.lastReported = true;
      return report ? { healthy: true, consecutiveFailures: 0, message: "Health check passed" } : undefined;
    }
    if (!this.everHealthy && nowMs - this.startedAtMs < this.timing.gracePeriodMs) return undefined;
    this.failures++;
    this.lastReported = false;
    return { healthy: false, consecutiveFailures: this.failures, message: `Health check failed ${this.failures} time(s) in a row: ${detail}` };
  }
}

// ------------------------------------------------------------------------------------------------
// The runner
// ------------------------------------------------------------------------------------------------

/** How one check went. */
export interface CheckOutcome {
  passed: boolean;
  /** Why, in words ("exited with status 1"). */
  detail: string;
}

/** Runs one check of a task, within `timeoutMs`; never rejects. */
export type CheckRun = (timeoutMs: number) => Promise<CheckOutcome>;

/** Options of {@link HealthCheckRunner}. */
export interface HealthCheckRunnerOptions {
  clock: Clock;
  timers: Timers;
  /** Receives each verdict worth reporting, with the key the task's checks were started under. */
  report: (key: string, verdict: HealthVerdict) => void;
  /** Checks running at once, at most; due checks beyond wait for a free slot. @default 64 */
  maxConcurrentChecks?: number;
}

interface Checked {
  schedule: HealthCheckSchedule;
  run: CheckRun;
  timer: TimerHandle | undefined;
}

/**
 * Runs every task's checks on time; see the module comment. Tasks are named by a key of the
 * caller's choosing, unique among the tasks it checks: the agent uses `taskKey(frameworkId,
 * taskId)`, since a task id alone may belong to several frameworks.
 */
export class HealthCheckRunner {
  private readonly checked = new Map<string, Checked>();
  /** Due checks waiting for a slot, in order. */
  private readonly waiting = new Set<string>();
  private running = 0;
  private readonly maxConcurrent: number;

  constructor(private readonly options: HealthCheckRunnerOptions) {
    this.maxConcurrent = Math.max(1, options.maxConcurrentChecks ?? 64);
  }

  /**
   * Starts checking a task that started running at `startedAtMs` (replaces earlier checks of it);
   * with `resumed`, carries on checks that ran before an agent restart (see {@link HealthCheckSchedule}).
   */
  start(key: string, timing: HealthCheckTiming, startedAtMs: number, run: CheckRun, resumed?: ResumedHealth): void {
    this.stop(key);
    const entry: Checked = { schedule: new HealthCheckSchedule(timing, startedAtMs, resumed), run, timer: undefined };
    this.checked.set(key, entry);
    this.arm(key, entry);
  }

  /** Stops checking a task (killed, ended). A check in flight finishes unreported. */
  stop(key: string): void {
    const entry = this.checked.get(key);
    entry?.timer?.cancel();
    this.checked.delete(key);
    this.waiting.delete(key);
  }

  stopAll(): void {
    for (const key of [...this.checked.keys()]) this.stop(key);
  }

  /** Tasks being checked. */
  size(): number {
    return this.checked.size;
  }

  private arm(key: string, entry: Checked): void {
    const due = entry.schedule.dueAtMs();
    if (due === undefined) return;
    entry.timer = this.options.timers.set(Math.max(0, due - this.options.clock.now()), () => {
      if (this.checked.get(key) !== entry) return;
      entry.timer = undefined;
      this.waiting.add(key);
      this.drain();
    });
  }

  private drain(): void {
    for (const key of this.waiting) {
      if (this.running >= this.maxConcurrent) return;
      this.waiting.delete(key);
      const entry = this.checked.get(key);
      if (entry) this.runOne(key, entry);
    }
  }

  private runOne(key: string, entry: Checked): void {
    entry.schedule.begin();
    this.running++;
    const timeoutMs = entry.schedule.timing.timeoutMs;
    void entry
      .run(timeoutMs)
      .catch((err: unknown): CheckOutcome => ({ passed: false, detail: err instanceof Error ? err.message : String(err) }))
      .then((outcome) => {
        this.running--;
        if (this.checked.get(key) === entry) {
          const verdict = entry.schedule.end(outcome.passed, this.options.clock.now(), outcome.detail);
          if (verdict) this.options.report(key, verdict);
          this.arm(key, entry);
        }
        this.drain();
      });
  }
}

// ------------------------------------------------------------------------------------------------
// COMMAND checks
// ------------------------------------------------------------------------------------------------

/** Where and how a COMMAND check runs. */
export interface CommandCheckTarget {
  command: string;
  env: Record<string, string>;
  cwd: string;
  /** Switch to this user (only when the agent runs as root). */
  uid?: number;
  gid?: number;
}

/** The parts of an agent's task record a check needs. */
export interface CheckedTask {
  taskId: string;
  frameworkId: string;
  task: TaskInfo;
  sandbox: string | null;
  containerId: string | null;
  /** What the container was launched with; derived from `resources` when unknown. */
  containerResources?: ContainerResources;
  resources: Resources;
}

/**
 * Where a task's COMMAND check runs: its sandbox, its environment (as the containerizer built it,
 * with `hostname` as `HOST`), the user owning its sandbox. Undefined when the task has no COMMAND
 * check or no sandbox.
 */
export async function commandCheckTarget(record: CheckedTask, hostname: string): Promise<CommandCheckTarget | undefined> {
  const check = record.task.healthCheck;
  if (check?.kind !== "command" || record.sandbox === null) return undefined;
  const resources = record.containerResources ?? containerResourcesOf(record.resources);
  const spec = {
    containerId: record.containerId ?? record.taskId,
    taskId: record.taskId,
    frameworkId: record.frameworkId,
    command: { shell: true, value: check.command.value },
    env: { ...(record.task.command?.environment ?? {}) },
    sandboxDir: record.sandbox,
    resources,
  };
  const env = { ...taskEnvironment(spec, hostname, { PATH: process.env.PATH ?? DEFAULT_PATH }), ...check.command.environment };
  const target: CommandCheckTarget = { command: check.command.value, env, cwd: record.sandbox };
  if (process.getuid?.() === 0) {
    const owner = await stat(record.sandbox);
    if (owner.uid !== 0) {
      target.uid = owner.uid;
      target.gid = owner.gid;
    }
  }
  return target;
}

/** Runs a command inside a task's container: a containerizer's {@link Containerizer.exec}. */
export type ContainerExec = NonNullable<Containerizer["exec"]>;

/**
 * The check of a task with a COMMAND health check, or undefined when it has none (or no sandbox).
 * With `exec` (and a container) it runs inside the task's container, else on the host. Where it
 * runs is worked out at the first check (and again after a failure to work it out).
 */
export function commandCheckRun(record: CheckedTask, hostname: string, timers: Timers, exec?: ContainerExec): CheckRun | undefined {
  if (record.task.healthCheck?.kind !== "command" || record.sandbox === null) return undefined;
  let target: Promise<CommandCheckTarget | undefined> | undefined;
  const containerId = record.containerId;
  return async (timeoutMs) => {
    target ??= commandCheckTarget(record, hostname);
    let resolved: CommandCheckTarget | undefined;
    try {
      resolved = await target;
    } catch (err) {
      target = undefined;
      return { passed: false, detail: `cannot prepare the check: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (!resolved) return { passed: false, detail: "the task has no sandbox" };
    if (exec === undefined || containerId === null) return runCommandCheck(resolved, timeoutMs, timers);
    try {
      return checkOutcome(await exec(containerId, { command: resolved.command, env: resolved.env, timeoutMs }), timeoutMs);
    } catch (err) {
      return { passed: false, detail: `cannot run the check in the container: ${err instanceof Error ? err.message : String(err)}` };
    }
  };
}

/** What a check's end means: passed on exit status 0, failed otherwise (a timeout included). */
function checkOutcome(result: ContainerExecResult, timeoutMs: number): CheckOutcome {
  if (result.timedOut) return { passed: false, detail: `timed out after ${timeoutMs / 1000} s` };
  if (result.exitCode === 0) return { passed: true, detail: "exited with status 0" };
  return { passed: false, detail: result.exitCode !== null ? `exited with status ${result.exitCode}` : `killed by ${result.signal}` };
}

/** Runs one COMMAND check on the host: passes when the command exits with status 0 within `timeoutMs`. */
export async function runCommandCheck(target: CommandCheckTarget, timeoutMs: number, timers: Timers): Promise<CheckOutcome> {
  try {
    const result = await runProcessGroup(["/bin/sh", "-c", target.command], { cwd: target.cwd, env: target.env, ...(target.uid !== undefined ? { uid: target.uid, gid: target.gid ?? target.uid } : {}) }, timeoutMs, timers);
    return checkOutcome(result, timeoutMs);
  } catch (err) {
    return { passed: false, detail: `cannot run the command: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/**
 * The batch framework's shell: the SDK's {@link createSchedulerDriver} feeds offers, status updates
 * and (re)subscriptions into the pure {@link BatchCore}, one input at a time, and carries the
 * core's effects out as ACCEPT/DECLINE/SUPPRESS/REVIVE/KILL/RECONCILE calls and timers. Production
 * passes NATS and the system clock; the simulator passes its simulated transport, virtual clock
 * and timers, and so runs this very code.
 *
 * ```ts
 * const summary = await runBatchJobs({
 *   transport: await connectNats({ servers: "nats://127.0.0.1:4222", name: "batch" }),
 *   jobs: parseJobFile(JSON.parse(readFileSync("job.json", "utf8"))),
 *   onEvent: (e) => console.log(e.type),
 * });
 * ```
 *
 * Every task gets `CORRAL_JOB_ID`, `CORRAL_TASK_INDEX` (0-based) and `CORRAL_TASK_ATTEMPT` (0 for
 * its first launch) in its environment, besides the agent's own `CORRAL_TASK_ID`.
 *
 * @module
 */

import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../../sdk/clock.ts";
import type { Rng } from "../../sdk/rng.ts";
import { createSchedulerDriver, type FrameworkOptions, type SchedulerDriver, type SubscribedInfo, type TaskCommand, type TaskSpec, type TaskStatus } from "../../sdk/scheduler.ts";
import { silentLogger, type Logger, type Transport } from "../../sdk/transport.ts";
import { BatchCore, type BatchConfig, type BatchEffect, type BatchEvent, type BatchJobSpec, type BatchJobSummary, type BatchLaunch } from "./core.ts";
import { componentField } from "../../sdk/log.ts";

/** Default framework name. */
export const DEFAULT_BATCH_FRAMEWORK_NAME = "corral-batch";

/** What a task runs: a command and extra environment. */
export interface BatchTaskCommand {
  command: TaskCommand;
  /** Added to the task's own `env`. @default {} */
  env?: Readonly<Record<string, string>>;
}

/** Options of {@link createBatchFramework}. */
export interface BatchFrameworkOptions {
  /** The bus: NATS in production, the simulator's transport in a simulation. Not closed here. */
  transport: Transport;
  /** Cluster name (first token of every subject). @default "corral" */
  cluster?: string;
  /**
   * Who the framework is. Batch tasks are simply run again when their agent is lost, so the
   * framework is not partition-aware unless told so.
   * @default { name: "corral-batch", partitionAware: false }
   */
  framework?: Partial<FrameworkOptions>;
  /** Tunables of the core. @default DEFAULT_BATCH_CONFIG */
  config?: Partial<BatchConfig>;
  /** @default systemClock */
  clock?: Clock;
  /** @default systemTimers */
  timers?: Timers;
  /** Passed to the driver (its ids and backoff jitter). @default the driver's own */
  rng?: Rng;
  /** @default silentLogger */
  log?: Logger;
  /** How long a call to the master waits for its answer. @default the driver's (5000) */
  requestTimeoutMs?: number;
  /**
   * What a launch runs. The default runs the task's `command`, or `sleep <duration>` for a task
   * given a duration. The simulator maps durations to its instant containerizer instead.
   * @default {@link defaultTaskCommand}
   */
  taskCommand?: (launch: BatchLaunch) => BatchTaskCommand;
  /** Receives the core's progress events, in order. @default none */
  onEvent?: (event: BatchEvent) => void;
  /** Sees every status update as it arrives, before the core does (event logs). @default none */
  onUpdate?: (status: TaskStatus) => void;
}

/** A running batch framework. */
export interface BatchFramework {
  readonly core: BatchCore;
  readonly driver: SchedulerDriver;
  /** Subscribes; resolves once subscribed. Jobs may be submitted before or after. */
  start(): Promise<SubscribedInfo>;
  /** Adds a job. @throws {BatchError} naming the field and rule of a bad job. */
  submit(job: BatchJobSpec): Promise<void>;
  /** Stops one job (`cancelled`). */
  cancel(jobId: string): Promise<void>;
  /** Stops every live job (`cancelled`). */
  cancelAll(): Promise<void>;
  /** Resolves once no submitted job is live; rejects if the driver fails for good. */
  idle(): Promise<void>;
  /** Stops the framework; with `teardown` (default true) the master kills whatever still runs. */
  stop(options?: { teardown?: boolean }): Promise<void>;
}

/** Runs the task's command, or `sleep` for its duration. */
export function defaultTaskCommand(launch: BatchLaunch): BatchTaskCommand {
  if (launch.spec.command !== undefined) return { command: launch.spec.command };
  const seconds = Math.max(0, (launch.spec.durationMs ?? 0) / 1000);
  return { command: `sleep ${Number(seconds.toFixed(3))}` };
}

/** The SDK task of a launch: the command, the job's environment and the batch variables. */
export function taskSpecOf(launch: BatchLaunch, run: BatchTaskCommand): TaskSpec {
  return {
    taskId: launch.taskId,
    agentId: launch.agentId,
    resources: launch.resources,
    command: run.command,
    env: {
      ...(launch.spec.env ?? {}),
      ...(run.env ?? {}),
      CORRAL_JOB_ID: launch.jobId,
      CORRAL_TASK_INDEX: String(launch.index),
      CORRAL_TASK_ATTEMPT: String(launch.attempt),
    },
    labels: { "corral.job": launch.jobId, "corral.task-index": String(launch.index) },
  };
}

/** See the module comment. */
export function createBatchFramework(options: BatchFrameworkOptions): BatchFramework {
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const log = options.log ?? silentLogger;
  const component = componentField(log, "batch");
  const toCommand = options.taskCommand ?? defaultTaskCommand;
  const core = new BatchCore({ clock, ...(options.config ? { config: options.config } : {}) });
  let wake: TimerHandle | undefined;
  let stopped = false;
  let fatal: Error | undefined;
  let waiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];

  const settleWaiters = (): void => {
    if (waiters.length === 0) return;
    if (fatal) {
      const list = waiters;
      waiters = [];
      for (const w of list) w.reject(fatal);
    } else if (core.liveJobCount() === 0) {
      const list = waiters;
      waiters = [];
      for (const w of list) w.resolve();
    }
  };

  /**
   * Runs one core input and starts its effects, in order. The core is synchronous, so an input
   * is handled whole at the moment it arrives (virtual time, in the simulator) and calls leave in
   * the order the core asked for them; their outcomes come back as new inputs.
   */
  const input = (fn: () => BatchEffect[]): void => {
    if (stopped) return;
    apply(fn());
    settleWaiters();
  };

  const quiet = (what: string) => (err: unknown) => log.warn({ ...component, err }, `${what} failed`);

  const apply = (effects: BatchEffect[]): void => {
    for (const effect of effects) {
      switch (effect.type) {
        case "launch": {
          const ids = effect.tasks.map((t) => t.taskId);
          let specs: TaskSpec[];
          try {
            specs = effect.tasks.map((t) => taskSpecOf(t, toCommand(t)));
          } catch (err) {
            // A bug of the caller's taskCommand: the attempts fail (bounded by the retries)
            // rather than being queued again forever.
            log.error({ ...component, err }, "taskCommand failed; declining the offer");
            void driver.decline([effect.offerId], { refuseSeconds: effect.refuseSeconds }).catch(quiet("decline"));
            const message = `taskCommand failed: ${err instanceof Error ? err.message : String(err)}`;
            queueMicrotask(() => input(() => ids.flatMap((taskId) => core.update({ taskId, state: "TASK_ERROR", agentId: effect.agentId, message }))));
            break;
          }
          void driver.accept([effect.offerId], specs, { refuseSeconds: effect.refuseSeconds }).then(
            () => input(() => core.launchResult(ids, true)),
            (err: unknown) => input(() => core.launchResult(ids, false, (err as { code?: string }).code ?? String(err))),
          );
          break;
        }
        case "decline":
          void driver.decline(effect.offerIds, { refuseSeconds: effect.refuseSeconds }).catch(quiet("decline"));
          break;
        case "suppress":
          void driver.suppress().catch(quiet("suppress"));
          break;
        case "revive":
          void driver.revive().catch(quiet("revive"));
          break;
        case "kill":
          void driver.kill(effect.taskId, effect.agentId).catch(quiet("kill"));
          break;
        case "reconcile":
          void driver.reconcile(effect.tasks).catch(quiet("reconcile"));
          break;
        case "wake": {
          wake?.cancel();
          wake = timers.set(Math.max(0, effect.atMs - clock.now()), () => {
            wake = undefined;
            input(() => core.tick());
          });
          break;
        }
        case "event":
          try {
            options.onEvent?.(effect.event);
          } catch (err) {
            log.warn({ ...component, err }, "onEvent listener failed");
          }
          break;
      }
    }
  };

  const driver = createSchedulerDriver({
    transport: options.transport,
    ...(options.cluster !== undefined ? { cluster: options.cluster } : {}),
    framework: { name: DEFAULT_BATCH_FRAMEWORK_NAME, partitionAware: false, ...options.framework },
    clock,
    timers,
    ...(options.rng ? { rng: options.rng } : {}),
    log,
    ...(options.requestTimeoutMs !== undefined ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    callbacks: {
      subscribed: (info) => input(() => core.subscribed(info.reconnected)),
      offers: (offers) => input(() => core.offers(offers)),
      rescind: (offerId) => input(() => core.rescinded(offerId)),
      update: (status) => {
        try {
          options.onUpdate?.(status);
        } catch (err) {
          log.warn({ ...component, err }, "onUpdate listener failed");
        }
        return input(() =>
          core.update({
            taskId: status.taskId,
            state: status.state,
            agentId: status.agentId,
            message: status.message,
            reason: status.reason,
            ...(status.exitCode !== undefined ? { exitCode: status.exitCode } : {}),
          }),
        );
      },
      disconnected: () => input(() => core.disconnected()),
      error: (message) => {
        fatal = new Error(message);
        settleWaiters();
      },
    },
  });

  return {
    core,
    driver,
    start: () => driver.start(),
    submit: async (job) => input(() => core.submit(job)),
    cancel: async (jobId) => input(() => core.cancel(jobId)),
    cancelAll: async () => input(() => core.cancelAll()),
    idle: () =>
      new Promise<void>((resolve, reject) => {
        waiters.push({ resolve, reject });
        settleWaiters();
      }),
    async stop(opts = {}) {
      stopped = true;
      wake?.cancel();
      wake = undefined;
      await driver.stop({ teardown: opts.teardown ?? true }).catch(quiet("stop"));
    },
  };
}

/** Options of {@link runBatchJobs}. */
export interface RunBatchJobsOptions extends Omit<BatchFrameworkOptions, "onEvent"> {
  jobs: readonly BatchJobSpec[];
  /** Receives progress events. @default none */
  onEvent?: (event: BatchEvent, framework: BatchFramework) => void;
  /** Aborting cancels the jobs, tears the framework down and resolves with what was reached. @default none */
  signal?: AbortSignal;
}

/** What {@link runBatchJobs} resolves with. */
export interface BatchRunSummary {
  frameworkId: string | undefined;
  jobs: BatchJobSummary[];
  completed: number;
  failed: number;
  timedOut: number;
  cancelled: number;
}

/**
 * Runs `jobs` on the cluster and resolves once every one has ended (or the signal aborted), after
 * tearing the framework down. Rejects when a job is refused or the driver fails for good.
 */
export async function runBatchJobs(options: RunBatchJobsOptions): Promise<BatchRunSummary> {
  const { jobs, signal, onEvent, ...rest } = options;
  let framework!: BatchFramework;
  framework = createBatchFramework({ ...rest, ...(onEvent ? { onEvent: (e) => onEvent(e, framework) } : {}) });
  const abort = () => void framework.cancelAll();
  try {
    for (const job of jobs) await framework.submit(job);
    if (signal?.aborted) await framework.cancelAll();
    signal?.addEventListener("abort", abort, { once: true });
    await Promise.race([framework.start(), framework.idle()]);
    await framework.idle();
    const list = jobs.map((j) => framework.core.job(j.id)).filter((j): j is BatchJobSummary => j !== undefined);
    const count = (state: string) => list.filter((j) => j.state === state).length;
    return { frameworkId: framework.driver.frameworkId(), jobs: list, completed: count("completed"), failed: count("failed"), timedOut: count("timed-out"), cancelled: count("cancelled") };
  } finally {
    signal?.removeEventListener("abort", abort);
    await framework.stop({ teardown: true });
  }
}

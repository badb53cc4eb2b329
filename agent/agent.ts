/**
 * The agent process: the thin shell that connects the bus (docs/protocol.md, "Agents"), the
 * containerizer, the status-update manager and the HTTP endpoints. Decisions live in
 * `./agent-logic.ts` and `./status-updates.ts`; this file only carries messages, timers, files and
 * processes in and out.
 *
 * Lifecycle: `start()` resolves the agent's resources, starts HTTP and begins registering (in the
 * background: the master may come up later). Once registered the agent listens on its command
 * subject, answers pings, runs and kills tasks, and sends their status updates until acknowledged.
 * No ping for `ping_timeout_seconds`, or a `reregister_request`, makes it re-register.
 *
 * Recovery (with {@link AgentOptions.checkpoint}): tasks and their unacknowledged status updates are
 * checkpointed in `<workDir>/checkpoint`, per framework (`./checkpoint.ts`); a restarted agent, even
 * after SIGKILL, loads them before registering, lets the containerizer re-attach to containers still
 * running, and re-registers reporting them.
 *
 * Sandboxes ({@link AgentOptions.sandboxGc}): a task's sandbox is scheduled for removal once its
 * final status update is acknowledged, removed after `gcDelayMs` or sooner as the disk fills
 * (`./sandbox-gc.ts` decides; this file reads the disk usage and removes the directories).
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import { lstat, mkdir, readdir, readFile, rename, rm, statfs, writeFile } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import { join } from "node:path";
import pino, { type Logger as PinoLogger } from "pino";
import type { FastifyInstance } from "fastify";
import { SilenceWatch, systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../sdk/clock.ts";
import { componentLogger } from "../sdk/log.ts";
import { Resources } from "../sdk/resources.ts";
import { SeededRng, type Rng } from "../sdk/rng.ts";
import { taskKey } from "../sdk/task-key.ts";
import { DEFAULT_REQUEST_TIMEOUT_MS, isTransportError, type Subscription, type Transport } from "../sdk/transport.ts";
import { DropCounter, encodeEnvelope, handleSafely, safeDecode, type EnvelopeOf } from "../sdk/wire/codec.ts";
import { resourcesToWire } from "../sdk/wire/resources.ts";
import { clusterSubjects, isValidToken, tokenProblem } from "../sdk/wire/subjects.ts";
import type {
  AgentInfo,
  AgentRegistration,
  AgentTaskRecord,
  AgentToMaster,
  FrameworkInfo,
  MasterToAgent,
  TaskInfo,
  TaskState,
  TaskStatus,
} from "../sdk/wire/types.ts";
import {
  bytesToHex,
  invalidTaskStatus,
  killGraceMs,
  launchFailureStatus,
  mergeWithDetected,
  missingStandardResources,
  parseAgentResources,
  pingTimeoutMs,
  planLaunch,
  registrationDelayMs,
  sandboxPath,
  terminationStatus,
  toWireStatus,
  type StatusDecision,
} from "./agent-logic.ts";
import { commandCheckRun, healthCheckTiming, HealthCheckRunner, type HealthVerdict, type ResumedHealth } from "./health-checks.ts";
import { createAgentHttp, mesosStatistics, renderAgentMetrics, type AgentStateView, type ContainerStatistics, type ResourcesView, type TaskView } from "./agent-http.ts";
import { CheckpointStore, CHECKPOINT_VERSION, type TaskCheckpoint } from "./checkpoint.ts";
import { readProcStat } from "./containerizer/common.ts";
import { PosixContainerizer } from "./containerizer/posix.ts";
import type { CheckpointedContainer, Containerizer, ContainerHandle, ContainerResources, RecoveredContainer, Termination } from "./containerizer/types.ts";
import { detectResources, parseAttributes, probeHost, type Attribute } from "./resources-detect.ts";
import { DEFAULT_DISK_WATCH_INTERVAL_MS, DEFAULT_GC_DELAY_MS, DEFAULT_GC_DISK_HEADROOM, SandboxGc, type GcDecision, type GcRemoval } from "./sandbox-gc.ts";
import { createStatusUpdateManager, isTerminalState, type StatusUpdate, type StatusUpdateEffect } from "./status-updates.ts";

export type { AgentStateView, TaskView, ResourcesView } from "./agent-http.ts";

/** The version this agent reports in REGISTER/REREGISTER. */
export const AGENT_VERSION = "0.1.0";

/** What `/state` shows of a task, before its resources are rendered. */
type TaskFacts = Omit<TaskView, "resources" | "completed"> & { resources: Resources };

function taskFacts(record: TaskRecord): TaskFacts {
  return {
    frameworkId: record.frameworkId,
    taskId: record.taskId,
    state: record.state,
    sandbox: record.sandbox,
    resources: record.resources,
    containerId: record.containerId,
    message: record.latest?.message ?? "",
    exitCode: record.latest?.exitCode ?? null,
  };
}

/** Options of {@link createAgent}. */
export interface AgentOptions {
  /** Cluster name; the subjects are `corral.<cluster>.…`. @default "corral" */
  cluster?: string;
  /** The bus. The caller connects it before `start()` and closes it after `stop()`. */
  transport: Transport;
  /**
   * Directory for the agent's state: its id (`agent.id`, so a restarted agent re-registers under
   * the same id), the task sandboxes (`sandboxes/<frameworkId>/<taskId>`, removed some time after
   * their tasks end, see {@link AgentOptions.sandboxGc}) and the checkpoints (`checkpoint/`, see
   * {@link AgentOptions.checkpoint}). Created if missing.
   */
  workDir: string;
  /**
   * Total resources in Mesos text form, e.g. `cpus:4;mem:8192;ports:[31000-32000]`. Any of cpus,
   * mem, disk and ports left out is detected, as Mesos does. Port numbers are 1 to 65535.
   * @default detected: all CPUs, memory less 1 GiB, the size of workDir's file system less 5 GiB, ports 31000-32000
   */
  resources?: string;
  /** Attributes in Mesos flag form, e.g. `rack:r1;zone:a`. @default "" (none) */
  attributes?: string;
  /** Hostname reported to the master and given to tasks as `HOST`. @default os.hostname() */
  hostname?: string;
  /** Address the HTTP server binds. @default "127.0.0.1" */
  httpHost?: string;
  /** Port of the HTTP server; 0 picks a free one (Mesos agents use 5051). @default 0 */
  httpPort?: number;
  /**
   * Serve HTTP at all. Emulated agents (benchmarks, thousands per process) and the simulator turn
   * it off; the agent then advertises no endpoint.
   * @default true
   */
  http?: boolean;
  /** Runs the tasks. The agent calls its `destroyAll()` on `stop({ killTasks: true })`. @default a PosixContainerizer */
  containerizer?: Containerizer;
  /** Isolation name shown in `/state`. @default "posix" */
  isolation?: string;
  /** Time source for status timestamps and retry deadlines. @default systemClock */
  clock?: Clock;
  /** Schedules retries, backoffs and the master-liveness timeout. @default systemTimers */
  timers?: Timers;
  /** Source of status uuids, container ids and backoff jitter. @default a SeededRng with a random seed */
  rng?: Rng;
  /** Structured logger. @default pino({ name: "corral-agent" }) */
  log?: PinoLogger;
  /**
   * Re-send backoff of unacknowledged status updates: first re-send after `initialMs`, doubling up
   * to `maxMs`.
   * @default { initialMs: 10_000, maxMs: 600_000 }
   */
  statusUpdateRetry?: { initialMs?: number; maxMs?: number };
  /**
   * Uuids of acknowledged updates of finished tasks remembered, so a late replay of one (from a
   * checkpoint after a restart) is not sent to the framework again.
   * @default 10_000
   */
  maxClosedUpdateUuids?: number;
  /**
   * Base of the randomised exponential registration backoff: the n-th retry waits a random time in
   * the upper half of `registrationBackoffMs * 2^(n-1)`, capped at 60 s.
   * @default 1000
   */
  registrationBackoffMs?: number;
  /** How long one REGISTER/REREGISTER request waits for the master's answer. @default 5000 */
  registrationTimeoutMs?: number;
  /** Kill grace period when neither the kill nor the task gives one. @default 3000 */
  defaultKillGracePeriodMs?: number;
  /**
   * Where the agent keeps its id across restarts. When given, the agent neither reads nor writes
   * `<workDir>/agent.id` and does not create workDir: the simulator passes a
   * {@link MemoryAgentIdStore} so a run never touches the disk (give all of cpus, mem, disk and
   * ports in `resources` too, or the agent probes the host).
   * @default undefined (the file `<workDir>/agent.id`)
   */
  agentIdStore?: AgentIdStore;
  /** Most tasks the agent holds at once; a `run_task` beyond it fails with REASON_CONTAINER_LAUNCH_FAILED. @default 10_000 */
  maxTasks?: number;
  /** How many completed tasks (final update acknowledged) `/state` keeps listing. @default 1000 */
  maxCompletedTasks?: number;
  /**
   * Checkpoint tasks and their status updates in `<workDir>/checkpoint` (see `./checkpoint.ts`), and
   * recover them on start: containers still running are re-attached (tasks of frameworks without
   * `checkpoint: true` are killed, as Mesos does), ended ones report their exit status, and
   * unacknowledged updates are sent again. Needs a containerizer with `recover` (the Linux one).
   * @default true when the containerizer has `recover` and no `agentIdStore` is given
   */
  checkpoint?: boolean;
  /**
   * Called when an acknowledgement retires a status update (the head of its task's stream, by
   * uuid in hex), after the agent handled it; duplicates and stale acknowledgements, which change
   * nothing, are not reported. For audits such as the simulator's "every acknowledged update
   * reached its framework". @default none
   */
  onStatusUpdateAcknowledged?: (ack: { frameworkId: string; taskId: string; uuid: string }) => void;
  /**
   * Remove the sandboxes of finished tasks from the disk (see `./sandbox-gc.ts`): a task's sandbox
   * is scheduled for removal once its final status update is acknowledged (until then a restarted
   * agent may need it, and `/files/read` serves it), and removed {@link AgentOptions.gcDelayMs}
   * later, or sooner when the disk fills up (see {@link AgentOptions.gcDiskHeadroom}). At start,
   * sandboxes on disk that no recovered task owns are scheduled from their last modification, as
   * Mesos does. Off, the agent never removes a sandbox and never reads the disk usage.
   * @default true unless an `agentIdStore` is given (the simulator's agents keep nothing on disk)
   */
  sandboxGc?: boolean;
  /**
   * How long a finished task's sandbox is kept once its final update is acknowledged (Mesos's
   * `--gc_delay`). The disk checks shorten it to `gcDelayMs * max(0, 1 - gcDiskHeadroom - usage)`:
   * with the default headroom, even an empty disk keeps a sandbox 90% of this, as in Mesos.
   * @default 604_800_000 (1 week)
   */
  gcDelayMs?: number;
  /**
   * How often the disk usage of the work dir's file system is read (Mesos's
   * `--disk_watch_interval`); each reading removes at once the sandboxes older than
   * `gcDelayMs * max(0, 1 - gcDiskHeadroom - usage)`.
   * @default 60_000 (1 minute)
   */
  diskWatchIntervalMs?: number;
  /**
   * Share of the disk, from 0 to 1, that sandbox collection tries to keep free (Mesos's
   * `--gc_disk_headroom`): with the disk `1 - gcDiskHeadroom` full, every scheduled sandbox goes.
   * @default 0.1
   */
  gcDiskHeadroom?: number;
  /**
   * Reads the used share (0 to 1) of the file system holding the sandboxes.
   * @default statfs of workDir: (blocks - free blocks) / blocks, as Mesos reads it
   */
  diskUsage?: () => Promise<number>;
}

/** Keeps an agent's id across restarts (see {@link AgentOptions.agentIdStore}). */
export interface AgentIdStore {
  /** The id saved last, or undefined. */
  load(): Promise<string | undefined>;
  save(id: string): Promise<void>;
}

/** An {@link AgentIdStore} in memory: share one between an agent and its restarted successor. */
export class MemoryAgentIdStore implements AgentIdStore {
  /** @param id an id to start with. @default undefined */
  constructor(public id?: string) {}
  async load(): Promise<string | undefined> {
    return this.id;
  }
  async save(id: string): Promise<void> {
    this.id = id;
  }
}

/** Options of {@link Agent.stop}. */
export interface AgentStopOptions {
  /** Kill every task (`containerizer.destroyAll()`) and wait for their final updates to go out. @default true */
  killTasks?: boolean;
  /**
   * Tell the master the agent leaves for good (`unregister_notice`), so it does not wait for a
   * ping timeout. Leave it off for a restart: the agent then re-registers under the same id.
   * @default false
   */
  unregister?: boolean;
}

/** A running agent; see {@link createAgent}. */
export interface Agent {
  /** Resolves the resources, starts HTTP and begins registering (without waiting for a master). */
  start(): Promise<void>;
  /** Stops listening, optionally kills the tasks, and closes HTTP. Idempotent. */
  stop(opts?: AgentStopOptions): Promise<void>;
  /** The id the master assigned (or the one persisted in workDir); undefined before either. */
  agentId(): string | undefined;
  /** `http://host:port` of the HTTP server; "" before start. */
  httpUrl(): string;
  /** What `GET /state` shows. */
  state(): AgentStateView;
  /**
   * What the agent's tasks hold, read live rather than rendered as {@link Agent.state} does: its
   * total resources (undefined until `start` resolves them, when `state().resources` is null) and
   * its tasks not yet completed (those `state()` lists with `completed: false`). For readers that
   * look after every change, such as the simulator's invariant checks; the records must not be
   * changed.
   */
  heldResources(): { total: Resources | undefined; tasks: Iterable<HeldTask> };
}

/** A task not yet completed, as {@link Agent.heldResources} shows it. */
export interface HeldTask {
  readonly frameworkId: string;
  readonly taskId: string;
  /** The latest state the agent decided (it may not be acknowledged yet). */
  readonly state: TaskState;
  readonly resources: Resources;
}

/** Most sandbox removals under way at once; the others wait in a queue, oldest first. */
export const MAX_CONCURRENT_SANDBOX_REMOVALS = 4;

/** Pseudo-subject under which bad registration replies are counted (labelled "reply"). */
const REPLY_SUBJECT = "_INBOX.registration";
/** The file of the work dir that keeps the agent's id across restarts. */
export const AGENT_ID_FILE = "agent.id";

interface TaskRecord {
  frameworkId: string;
  taskId: string;
  /** `taskKey(frameworkId, taskId)`: its key in the agent's tables. */
  readonly key: string;
  task: TaskInfo;
  framework: FrameworkInfo | undefined;
  sandbox: string | null;
  resources: Resources;
  containerId: string | null;
  /** The latest state the agent decided (it may not be acknowledged yet). */
  state: TaskState;
  latest: TaskStatus | undefined;
  killRequested: boolean;
  killGraceMs: number | undefined;
  /** Settles once the task's final status has been queued. */
  done: Promise<void>;
  /** What a restarted agent needs to find the container again (see `./checkpoint.ts`). */
  containerResources?: ContainerResources;
  pid?: number;
  pidStartTicks?: number;
  cgroup?: string;
  latestUpdate?: StatusUpdate;
}

interface StatusInput extends StatusDecision {
  agentId: string;
  /** A health check's verdict (TASK_RUNNING updates only). */
  healthy?: boolean;
}

/** Creates an agent; nothing happens until {@link Agent.start}. @throws on invalid options */
export function createAgent(options: AgentOptions): Agent {
  const cluster = options.cluster ?? "corral";
  const subjects = clusterSubjects(cluster); // checks the cluster name
  if (typeof options.workDir !== "string" || options.workDir === "") throw new RangeError("workDir: required");
  const transport = options.transport;
  const workDir = options.workDir;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const rng = options.rng ?? new SeededRng(randomUUID());
  const rootLog = options.log ?? pino({ name: "corral-agent" });
  const log = componentLogger(rootLog, "agent");
  const hostname = options.hostname ?? osHostname();
  if (typeof hostname !== "string" || hostname === "") throw new RangeError("hostname: must not be empty");
  const httpHost = options.httpHost ?? "127.0.0.1";
  const httpPort = options.httpPort ?? 0;
  const givenResources = options.resources === undefined ? Resources.empty() : parseAgentResources(options.resources);
  const attributes: Attribute[] = parseAttributes(options.attributes ?? "");
  const defaultGraceMs = nonNegative(options.defaultKillGracePeriodMs ?? 3000, "defaultKillGracePeriodMs");
  const backoffBaseMs = positive(options.registrationBackoffMs ?? 1000, "registrationBackoffMs");
  const registrationTimeoutMs = positive(options.registrationTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, "registrationTimeoutMs");
  const maxTasks = positive(options.maxTasks ?? 10_000, "maxTasks");
  const maxCompletedTasks = nonNegative(options.maxCompletedTasks ?? 1000, "maxCompletedTasks");
  const isolation = options.isolation ?? "posix";
  // Checked even when collection is off, so a bad value is refused whatever else is set.
  const gc = new SandboxGc({ gcDelayMs: options.gcDelayMs ?? DEFAULT_GC_DELAY_MS, gcDiskHeadroom: options.gcDiskHeadroom ?? DEFAULT_GC_DISK_HEADROOM });
  const diskWatchIntervalMs = positive(options.diskWatchIntervalMs ?? DEFAULT_DISK_WATCH_INTERVAL_MS, "diskWatchIntervalMs");
  const collectSandboxes = options.sandboxGc ?? options.agentIdStore === undefined;
  const readDiskUsage = options.diskUsage ?? (() => fileSystemUsage(workDir));
  const containerizer: Containerizer =
    options.containerizer ??
    new PosixContainerizer({ clock, timers, hostname, defaultGracePeriodMs: defaultGraceMs, log: componentLogger(rootLog, "posix-containerizer") });
  const checkpointing = options.checkpoint ?? (typeof containerizer.recover === "function" && options.agentIdStore === undefined);
  const checkpoints = checkpointing ? new CheckpointStore(join(workDir, "checkpoint")) : undefined;
  const manager = createStatusUpdateManager({
    checkpoint: checkpointing,
    initialRetryMs: options.statusUpdateRetry?.initialMs ?? 10_000,
    maxRetryMs: options.statusUpdateRetry?.maxMs ?? 600_000,
    ...(options.maxClosedUpdateUuids !== undefined ? { maxClosedUuids: options.maxClosedUpdateUuids } : {}),
  });
  const drops = new DropCounter();
  /** Sender id (and subject id) of the first REGISTER, before the master has given us an id. */
  const instanceId = `agent-${rng.uuid()}`;

  let totalResources: Resources | undefined;
  let agentId: string | undefined;
  let http: FastifyInstance | undefined;
  let httpUrl = "";
  let starting: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;
  let stopped = false;

  let registered = false;
  let masterId: string | undefined;
  let highestEpoch = 0;
  let cmdSub: Subscription | undefined;
  let leaderSub: Subscription | undefined;
  let subscribedId: string | undefined;
  let pingTimeout = 0;
  /** The master's pings (and the registration's answer) keep this watch fed. */
  const pingWatch = new SilenceWatch(clock, timers, (timeoutMs) => {
    log.warn({ agentId, pingTimeoutMs: timeoutMs }, "no ping from the master; re-registering");
    lostMaster();
  });
  let registering: Promise<void> | undefined;
  let wakeBackoff: (() => void) | undefined;
  let registrationAttempts = 0;
  let staleEpochMessages = 0;

  // Tasks are keyed by taskKey(frameworkId, taskId) here and in every other table of the agent:
  // task ids are unique only within a framework, and two frameworks may run the same id here.
  const tasks = new Map<string, TaskRecord>();
  /** Completed tasks, oldest first; their views are built only when `/state` asks. */
  const completed = new Map<string, TaskFacts>();
  const healthChecks = new HealthCheckRunner({ clock, timers, report: onHealthVerdict });
  const retryTimers = new Map<string, TimerHandle>();
  /** The one timer sandbox collection asks for, and the time it is set for. */
  let gcTimer: { handle: TimerHandle; atMs: number } | undefined;
  let diskWatchTimer: TimerHandle | undefined;
  /** Sandbox removals queued or under way, by path: a task reusing one waits for it. */
  const removals = new Map<string, Promise<void>>();
  /** Removals waiting their turn from `removalQueueHead` on (a queue without O(n) shifts). */
  const removalQueue: Array<{ removal: GcRemoval; done: () => void } | undefined> = [];
  let removalQueueHead = 0;
  let activeRemovals = 0;

  // ----------------------------------------------------------------------------------------------
  // Publishing
  // ----------------------------------------------------------------------------------------------

  function publishToMaster(message: AgentToMaster): void {
    if (agentId === undefined) return;
    try {
      transport.publish(subjects.masterAgent(agentId), encodeEnvelope({ senderId: agentId, payload: "agentToMaster", agentToMaster: message }, transport));
    } catch (err) {
      log.warn({ err, agentId, kind: message.kind }, "cannot publish to the master");
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Status updates
  // ----------------------------------------------------------------------------------------------

  function randomUuidHex(): string {
    const bytes = new Uint8Array(16);
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(256);
    return bytesToHex(bytes);
  }

  /** Queues a status change of `record` through the manager and carries out its effects. */
  function emitStatus(record: TaskRecord, decision: StatusInput): void {
    const now = clock.now();
    const update = {
      taskId: record.taskId,
      frameworkId: record.frameworkId,
      agentId: decision.agentId,
      state: decision.state,
      uuid: randomUuidHex(),
      message: decision.message,
      reason: decision.reason,
      timestampMs: now,
      source: "SOURCE_AGENT" as const,
      ...(decision.exitCode === undefined ? {} : { exitCode: decision.exitCode }),
      ...(decision.healthy === undefined ? {} : { healthy: decision.healthy }),
    };
    if (decision.state !== "TASK_RUNNING") healthChecks.stop(record.key);
    record.state = decision.state;
    record.latest = toWireStatus(update, decision.agentId);
    record.latestUpdate = update;
    checkpointTask(record);
    log.info({ agentId: decision.agentId, frameworkId: record.frameworkId, taskId: record.taskId, state: decision.state, reason: decision.reason }, "task status");
    try {
      applyEffects(manager.enqueue(update, now));
    } catch (err) {
      log.error({ err, taskId: record.taskId, frameworkId: record.frameworkId }, "status update refused by the manager");
    }
  }

  /**
   * Starts the task's agent-run health check, if it has one (see ./health-checks.ts); `resumed` is
   * the verdict reported before a restart, for a recovered task.
   */
  function startHealthCheck(record: TaskRecord, startedAtMs: number, resumed?: ResumedHealth): void {
    const check = record.task.healthCheck;
    // Inside the task's container where the containerizer can enter it (as Mesos runs COMMAND checks).
    const exec = containerizer.exec ? containerizer.exec.bind(containerizer) : undefined;
    const run = check && commandCheckRun(record, hostname, timers, exec);
    if (check && run) healthChecks.start(record.key, healthCheckTiming(check), startedAtMs, run, resumed);
  }

  /** A health verdict becomes a TASK_RUNNING update with `healthy` set, as Mesos's executors send. */
  function onHealthVerdict(key: string, verdict: HealthVerdict): void {
    const record = tasks.get(key);
    const id = record?.latest?.agentId ?? agentId;
    if (record === undefined || id === undefined || record.state !== "TASK_RUNNING" || record.killRequested) return;
    emitStatus(record, { state: "TASK_RUNNING", reason: "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED", message: verdict.message, agentId: id, healthy: verdict.healthy });
  }

  function applyEffects(effects: StatusUpdateEffect[]): void {
    for (const effect of effects) {
      switch (effect.type) {
        case "send": {
          const id = agentId ?? effect.update.agentId;
          // The stream's latest state goes with every copy of its head, so the master can free a
          // task that has ended while its framework has not acknowledged the earlier updates.
          publishToMaster({ kind: "statusUpdate", statusUpdate: { frameworkId: effect.update.frameworkId, status: toWireStatus(effect.update, id), latestState: effect.latestState } });
          break;
        }
        case "arm-timer":
          armRetry(effect.frameworkId, effect.taskId, effect.atMs);
          break;
        case "cancel-timer": {
          const key = taskKey(effect.frameworkId, effect.taskId);
          retryTimers.get(key)?.cancel();
          retryTimers.delete(key);
          break;
        }
        case "checkpoint": {
          // Streams of frameworks that do not checkpoint are not kept: their tasks die with the agent.
          const framework = tasks.get(taskKey(effect.frameworkId, effect.taskId))?.framework;
          if (effect.stream === null || framework === undefined || framework.checkpoint) {
            guard("status update checkpoint", () => checkpoints?.writeStream(effect.frameworkId, effect.taskId, effect.stream));
          }
          break;
        }
        case "stream-closed":
          forgetTask(taskKey(effect.frameworkId, effect.taskId));
          break;
      }
    }
  }

  function armRetry(frameworkId: string, taskId: string, atMs: number): void {
    const key = taskKey(frameworkId, taskId);
    retryTimers.get(key)?.cancel();
    retryTimers.delete(key);
    if (stopped) return;
    const handle = timers.set(Math.max(0, atMs - clock.now()), () => {
      if (retryTimers.get(key) !== handle) return;
      retryTimers.delete(key);
      guard("status update retry", () => applyEffects(manager.timerFired(frameworkId, taskId, clock.now())));
    });
    retryTimers.set(key, handle);
  }

  /** The task's final update was acknowledged: keep a bounded record for /state and idempotency. */
  function forgetTask(key: string): void {
    const record = tasks.get(key);
    if (record === undefined) return;
    guard("checkpoint removal", () => checkpoints?.removeTask(record.frameworkId, record.taskId));
    // Nobody needs the sandbox now: not a restarted agent (the checkpoint is gone), not the
    // framework (it has the final status). It stays readable until collected.
    if (record.sandbox !== null) scheduleSandbox(record.sandbox, clock.now());
    tasks.delete(key);
    completed.delete(key);
    completed.set(key, taskFacts(record));
    while (completed.size > maxCompletedTasks) {
      const oldest = completed.keys().next().value;
      if (oldest === undefined) break;
      completed.delete(oldest);
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Tasks
  // ----------------------------------------------------------------------------------------------

  function runTask(runTask: Extract<MasterToAgent, { kind: "runTask" }>): void {
    const { framework, task } = runTask.runTask;
    const id = agentId!;
    const frameworkId = framework?.id ?? "";
    const taskId = task?.taskId ?? "";
    // The master may send a run_task again (it cannot know whether the first arrived): the same
    // task of the same framework runs once. The same id of another framework is another task.
    const key = taskKey(frameworkId, taskId);
    if (tasks.has(key) || completed.has(key)) {
      log.debug({ agentId: id, frameworkId, taskId }, "run_task for a known task ignored");
      return;
    }
    const plan = planLaunch({ framework, task }, { agentId: id, workDir });
    if (plan.kind === "drop") {
      drops.record(subjects.agentCmd(id), "invalid");
      log.warn({ agentId: id, problem: plan.message }, "run_task dropped");
      return;
    }
    let settle!: () => void;
    const record: TaskRecord = {
      frameworkId: plan.frameworkId,
      taskId: plan.taskId,
      key,
      task: task!,
      framework,
      sandbox: null,
      resources: plan.kind === "launch" ? plan.taskResources : Resources.empty(),
      containerId: null,
      state: "TASK_STAGING",
      latest: undefined,
      killRequested: false,
      killGraceMs: undefined,
      done: new Promise<void>((resolve) => (settle = resolve)),
    };
    const full = tasks.size >= maxTasks;
    // A task refused for lack of room is not held, so refusals cannot grow the table either.
    if (!full) tasks.set(key, record);
    if (plan.kind === "reject" || full) {
      const decision =
        plan.kind === "reject"
          ? invalidTaskStatus(plan.message)
          : launchFailureStatus(`agent holds ${tasks.size} tasks (maxTasks ${maxTasks})`, false);
      log.warn({ agentId: id, frameworkId: record.frameworkId, taskId: record.taskId, problem: decision.message }, "run_task refused");
      emitStatus(record, { ...decision, agentId: id });
      settle();
      return;
    }
    record.sandbox = plan.sandboxDir;
    record.containerResources = plan.resources;
    record.containerId = [plan.taskId, rng.uuid()].join("-"); // one flat string (see SeededRng.uuid)
    emitStatus(record, { state: "TASK_STARTING", reason: "REASON_UNSPECIFIED", message: "", agentId: id });
    const spec = {
      containerId: record.containerId,
      taskId: plan.taskId,
      frameworkId: plan.frameworkId,
      command: plan.command,
      env: plan.env,
      sandboxDir: plan.sandboxDir,
      resources: plan.resources,
      ...(plan.user === "" ? {} : { user: plan.user }),
    };
    const launch = (): Promise<ContainerHandle> => {
      try {
        return containerizer.launch(spec);
      } catch (err) {
        return Promise.reject(err);
      }
    };
    // The same task id again (after the earlier one was forgotten): its sandbox is this task's now.
    const removal = reuseSandbox(plan.sandboxDir);
    const launched = removal === undefined ? launch() : removal.then(launch);
    launched.then(
      (handle) => lifecycleStep(record, settle, () => onLaunched(record, handle, id, settle)),
      (err: unknown) => lifecycleStep(record, settle, () => emitStatus(record, { ...launchFailureStatus(describe(err), record.killRequested), agentId: id }), true),
    );
  }

  /**
   * Runs one step of a task's lifecycle: a throw is logged and ends the lifecycle (`settle`), as
   * does a step that says it is the last.
   */
  function lifecycleStep(record: TaskRecord, settle: () => void, step: () => void, last = false): void {
    try {
      step();
    } catch (err) {
      log.error({ err, taskId: record.taskId }, "task lifecycle failed");
      last = true;
    }
    if (last) settle();
  }

  /**
   * The container runs: RUNNING, then the terminal update once it ends. Callbacks rather than an
   * async function: a running task then holds one pending promise, not a suspended function and
   * its chain of promises (thousands of simulated agents hold over 100,000 tasks).
   */
  function onLaunched(record: TaskRecord, handle: ContainerHandle, id: string, settle: () => void): void {
    const running = (): void => {
      // A kill that came while the container was being started: as in Mesos, the task never
      // reports RUNNING; its container is stopped and it ends KILLED (killed during launch).
      const killedDuringLaunch = record.killRequested;
      if (killedDuringLaunch) {
        checkpointTask(record); // the pid, so a restarted agent still finds the container
        // A containerizer may refuse a kill that came before the container existed; repeat it now.
        killContainer(record);
      } else {
        emitStatus(record, { state: "TASK_RUNNING", reason: "REASON_UNSPECIFIED", message: "", agentId: id });
        startHealthCheck(record, handle.startedAtMs);
      }
      const ended = (termination: Termination): StatusDecision =>
        killedDuringLaunch && termination.killed ? launchFailureStatus(termination.message, true) : terminationStatus(termination);
      containerizer.wait(handle.containerId).then(
        (termination) => lifecycleStep(record, settle, () => emitStatus(record, { ...ended(termination), agentId: id }), true),
        (err: unknown) =>
          lifecycleStep(record, settle, () => emitStatus(record, { state: "TASK_FAILED", reason: "REASON_EXECUTOR_TERMINATED", message: `lost track of the container: ${describe(err)}`, agentId: id }), true),
      );
    };
    if (checkpoints === undefined || handle.pid === undefined) return running();
    // Checkpointed with the RUNNING update, before anyone hears of it.
    record.pid = handle.pid;
    if (handle.cgroup !== undefined) record.cgroup = handle.cgroup;
    readProcStat(handle.pid).then(
      (stat) =>
        lifecycleStep(record, settle, () => {
          const startTicks = Number(stat?.fields[19]);
          if (Number.isSafeInteger(startTicks) && startTicks > 0) record.pidStartTicks = startTicks;
          running();
        }),
      (err: unknown) => lifecycleStep(record, settle, () => { throw err; }),
    );
  }

  function killContainer(record: TaskRecord): void {
    if (record.containerId === null) return;
    containerizer
      .kill(record.containerId, record.killGraceMs ?? defaultGraceMs)
      .catch((err: unknown) => log.warn({ err, taskId: record.taskId, containerId: record.containerId }, "kill failed"));
  }

  function killTask(record: TaskRecord, graceMs: number): void {
    if (isTerminalState(record.state)) return;
    healthChecks.stop(record.key); // a dying task is not reported unhealthy
    record.killRequested = true;
    record.killGraceMs = record.killGraceMs === undefined ? graceMs : Math.min(record.killGraceMs, graceMs);
    log.info({ agentId, frameworkId: record.frameworkId, taskId: record.taskId, graceMs }, "killing task");
    killContainer(record);
  }

  // ----------------------------------------------------------------------------------------------
  // Checkpoints and recovery (see ./checkpoint.ts)
  // ----------------------------------------------------------------------------------------------

  /** Writes the task's checkpoint (synchronously: before the update that caused it is published). */
  function checkpointTask(record: TaskRecord): void {
    if (checkpoints === undefined || tasks.get(record.key) !== record) return;
    const checkpoint: TaskCheckpoint = {
      version: CHECKPOINT_VERSION,
      frameworkId: record.frameworkId,
      taskId: record.taskId,
      framework: record.framework,
      task: record.task,
      sandbox: record.sandbox,
      containerId: record.containerId,
      ...(record.containerResources === undefined ? {} : { containerResources: record.containerResources }),
      ...(record.pid === undefined ? {} : { pid: record.pid }),
      ...(record.pidStartTicks === undefined ? {} : { pidStartTicks: record.pidStartTicks }),
      ...(record.cgroup === undefined ? {} : { cgroup: record.cgroup }),
      ...(record.latestUpdate === undefined ? {} : { latest: record.latestUpdate }),
    };
    guard("task checkpoint", () => checkpoints.writeTask(checkpoint));
  }

  /**
   * Start-up after a restart (or crash): rebuilds the tasks from the checkpoints, restores their
   * unacknowledged updates (held until registered), lets the containerizer re-attach or account for
   * their containers, kills those of frameworks that do not checkpoint, and queues the final status
   * of containers that ended while the agent was down after the restored updates.
   */
  async function recoverTasks(): Promise<void> {
    const store = checkpoints!;
    const loaded = await store.load();
    for (const problem of loaded.problems) log.warn({ problem }, "unusable checkpoint skipped");
    applyEffects(manager.pause()); // nothing goes out before the master has us back
    const toRecover: TaskRecord[] = [];
    const recovered: TaskRecord[] = [];
    /** Settle the `done` of the tasks being recovered once recovery has decided their fate. */
    const settles = new Map<string, () => void>();
    for (const saved of loaded.tasks) {
      const key = taskKey(saved.frameworkId, saved.taskId);
      if (tasks.has(key)) continue;
      const owner = saved.latest?.agentId ?? agentId;
      let resources = Resources.empty();
      if (owner !== undefined) {
        const plan = planLaunch({ framework: saved.framework, task: saved.task }, { agentId: owner, workDir });
        if (plan.kind === "launch") resources = plan.taskResources;
      }
      let settle!: () => void;
      const record: TaskRecord = {
        frameworkId: saved.frameworkId,
        taskId: saved.taskId,
        key,
        task: saved.task,
        framework: saved.framework,
        sandbox: saved.sandbox,
        resources,
        containerId: saved.containerId,
        state: saved.latest?.state ?? "TASK_STAGING",
        latest: saved.latest === undefined ? undefined : toWireStatus(saved.latest, saved.latest.agentId),
        latestUpdate: saved.latest,
        killRequested: false,
        killGraceMs: undefined,
        done: new Promise<void>((resolve) => (settle = resolve)),
        ...(saved.containerResources === undefined ? {} : { containerResources: saved.containerResources }),
        ...(saved.pid === undefined ? {} : { pid: saved.pid }),
        ...(saved.pidStartTicks === undefined ? {} : { pidStartTicks: saved.pidStartTicks }),
        ...(saved.cgroup === undefined ? {} : { cgroup: saved.cgroup }),
      };
      settles.set(key, settle);
      tasks.set(key, record);
      recovered.push(record);
      if (record.containerId !== null && record.sandbox !== null && !isTerminalState(record.state)) toRecover.push(record);
      else settle();
    }
    for (const stream of loaded.streams) {
      try {
        applyEffects(manager.restore([stream], clock.now()));
      } catch (err) {
        log.warn({ err, taskId: stream.taskId }, "checkpointed status-update stream refused");
      }
    }
    // The latest status may be missing from its stream (a crash between the two writes, or a framework
    // that does not checkpoint streams): queue it again. The manager ignores a uuid it already holds.
    for (const record of recovered) {
      const latest = record.latestUpdate;
      if (latest !== undefined) guard("recovered status", () => applyEffects(manager.enqueue(latest, clock.now())));
    }
    const checkpointed: CheckpointedContainer[] = toRecover.map((record) => ({
      containerId: record.containerId!,
      sandboxDir: record.sandbox!,
      taskId: record.taskId,
      frameworkId: record.frameworkId,
      ...(record.pid === undefined ? {} : { pid: record.pid }),
      ...(record.pidStartTicks === undefined ? {} : { pidStartTicks: record.pidStartTicks }),
      ...(record.cgroup === undefined ? {} : { cgroup: record.cgroup }),
      ...(record.containerResources === undefined ? {} : { resources: record.containerResources }),
    }));
    let found: RecoveredContainer[] = [];
    if (containerizer.recover !== undefined) {
      try {
        found = await containerizer.recover(checkpointed, { orphanSandboxRoot: workDir });
      } catch (err) {
        log.error({ err }, "containerizer recovery failed; the checkpointed containers are reported lost");
      }
    }
    const byId = new Map(found.map((result) => [result.containerId, result]));
    for (const record of toRecover) {
      const id = record.latestUpdate?.agentId ?? agentId!;
      const settle = settles.get(record.key)!;
      const result = byId.get(record.containerId!);
      if (result?.running) {
        log.info({ frameworkId: record.frameworkId, taskId: record.taskId, containerId: record.containerId }, "task recovered");
        if (record.framework?.checkpoint !== true) {
          log.info({ frameworkId: record.frameworkId, taskId: record.taskId }, "killing a recovered task of a framework that does not checkpoint");
          killTask(record, 0);
        }
        void watchRecovered(record, id).finally(settle);
        continue;
      }
      const termination = result?.termination;
      if (termination === undefined || (termination.exitCode === null && termination.signal === null && !termination.killed)) {
        emitStatus(record, {
          state: "TASK_LOST",
          reason: "REASON_EXECUTOR_TERMINATED",
          message: termination?.message ?? "container could not be recovered after the agent restarted",
          agentId: id,
        });
      } else {
        emitStatus(record, { ...terminationStatus(termination), agentId: id });
      }
      settle();
    }
    if (loaded.tasks.length > 0) log.info({ tasks: loaded.tasks.length, containers: toRecover.length, reattached: found.filter((r) => r.running).length }, "recovered from checkpoints");
  }

  async function watchRecovered(record: TaskRecord, id: string): Promise<void> {
    // Its checks carry on from the verdict reported before the restart (in Mesos they never stopped).
    const healthy = record.latest?.healthy;
    if (!record.killRequested) startHealthCheck(record, clock.now(), healthy === undefined ? undefined : { healthy });
    let termination: Termination;
    try {
      termination = await containerizer.wait(record.containerId!);
    } catch (err) {
      emitStatus(record, { state: "TASK_FAILED", reason: "REASON_EXECUTOR_TERMINATED", message: `lost track of the container: ${describe(err)}`, agentId: id });
      return;
    }
    emitStatus(record, { ...terminationStatus(termination), agentId: id });
  }

  // ----------------------------------------------------------------------------------------------
  // Sandbox collection (decisions in ./sandbox-gc.ts)
  // ----------------------------------------------------------------------------------------------

  function scheduleSandbox(path: string, sinceMs: number): void {
    if (!collectSandboxes) return;
    guard("sandbox scheduling", () => applyGc(gc.schedule(path, sinceMs, clock.now())));
  }

  /**
   * A new task takes the sandbox `path`: it must not be collected. Undefined when it can be used at
   * once; else the removal already under way, to wait for (the task then starts in a fresh one).
   */
  function reuseSandbox(path: string): Promise<void> | undefined {
    if (!collectSandboxes) return undefined;
    const result = gc.unschedule(path);
    if (result === "cancelled") log.info({ sandbox: path }, "sandbox reused by a new task; no longer scheduled for removal");
    if (result !== "removing") return undefined;
    log.info({ sandbox: path }, "sandbox reused by a new task while being removed; the task starts once the removal ends");
    return removals.get(path);
  }

  /** Carries out a decision of the collector: removals now, and the timer for the next ones. */
  function applyGc(decision: GcDecision): void {
    // A stopping agent starts no removal: the next one finds the sandbox on disk and schedules it.
    if (stopped) return;
    for (const removal of decision.remove) removeSandbox(removal);
    const atMs = decision.wakeAtMs;
    if (gcTimer !== undefined && gcTimer.atMs === atMs) return;
    gcTimer?.handle.cancel();
    gcTimer = undefined;
    if (atMs === undefined) return;
    const handle = timers.set(Math.max(0, atMs - clock.now()), () => {
      if (gcTimer?.handle !== handle) return;
      gcTimer = undefined;
      guard("sandbox collection", () => applyGc(gc.due(clock.now())));
    });
    gcTimer = { handle, atMs };
  }

  /** Queues the removal of a sandbox; `removals` holds its end (also while it waits its turn). */
  function removeSandbox(removal: GcRemoval): void {
    let done!: () => void;
    removals.set(removal.path, new Promise<void>((resolve) => (done = resolve)));
    removalQueue.push({ removal, done });
    pumpRemovals();
  }

  /**
   * Starts queued removals, at most {@link MAX_CONCURRENT_SANDBOX_REMOVALS} at once: a full disk
   * may hand over every scheduled sandbox together, and thousands of recursive removals at once
   * would exhaust the file descriptors (Mesos removes them one after another).
   */
  function pumpRemovals(): void {
    while (!stopped && activeRemovals < MAX_CONCURRENT_SANDBOX_REMOVALS && removalQueueHead < removalQueue.length) {
      const { removal, done } = removalQueue[removalQueueHead]!;
      removalQueue[removalQueueHead++] = undefined;
      if (removalQueueHead > 1024 && removalQueueHead * 2 > removalQueue.length) {
        removalQueue.splice(0, removalQueueHead);
        removalQueueHead = 0;
      }
      activeRemovals += 1;
      const ageMs = clock.now() - removal.sinceMs;
      rm(removal.path, { recursive: true, force: true })
        .then(
          () => log.info({ sandbox: removal.path, ageMs }, "sandbox removed"),
          (err: unknown) => log.warn({ err, sandbox: removal.path }, "cannot remove a sandbox; it is not tried again"),
        )
        .finally(() => {
          activeRemovals -= 1;
          removals.delete(removal.path);
          done();
          guard("sandbox collection", () => applyGc(gc.removed(removal.path, clock.now())));
          pumpRemovals();
        });
    }
  }

  /** On stop: removals not yet started are dropped (the next agent finds those sandboxes on disk). */
  function dropQueuedRemovals(): void {
    for (let i = removalQueueHead; i < removalQueue.length; i++) {
      const queued = removalQueue[i]!;
      removals.delete(queued.removal.path);
      queued.done();
    }
    removalQueue.length = 0;
    removalQueueHead = 0;
  }

  /**
   * Schedules, from their last modification, the sandboxes on disk that no recovered task owns:
   * those of tasks finished before a restart, whose schedule was lost with the agent.
   */
  async function scheduleLeftoverSandboxes(): Promise<void> {
    const root = join(workDir, "sandboxes");
    const found: Array<{ key: string; path: string; mtimeMs: number }> = [];
    try {
      for (const framework of await subdirectories(root)) {
        for (const task of await subdirectories(join(root, framework))) {
          let path: string;
          try {
            path = sandboxPath(workDir, framework, task);
          } catch {
            continue; // not a name this agent gives a sandbox: not ours to remove
          }
          const key = taskKey(framework, task);
          if (tasks.has(key)) continue;
          const info = await lstat(path).catch(() => undefined);
          if (info?.isDirectory()) found.push({ key, path, mtimeMs: info.mtimeMs });
        }
      }
    } catch (err) {
      log.warn({ err, root }, "cannot list the sandboxes left on disk; they are not collected");
      return;
    }
    // Oldest first: the collector's schedule is then built by appending.
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { key, path, mtimeMs } of found) if (!tasks.has(key)) scheduleSandbox(path, mtimeMs);
    if (found.length > 0) log.info({ sandboxes: found.length, gcDelayMs: gc.gcDelayMs }, "sandboxes left on disk scheduled for removal from their last modification");
  }

  /** Reads the disk usage every `diskWatchIntervalMs`, each reading after the last one's removals. */
  function armDiskWatch(): void {
    if (stopped) return;
    diskWatchTimer = timers.set(diskWatchIntervalMs, () => {
      diskWatchTimer = undefined;
      void checkDiskUsage().finally(armDiskWatch);
    });
  }

  async function checkDiskUsage(): Promise<void> {
    let usage: number;
    try {
      usage = await readDiskUsage();
    } catch (err) {
      log.warn({ err, workDir }, "cannot read the disk usage");
      return;
    }
    if (stopped) return;
    let decision: ReturnType<SandboxGc["diskUsage"]>;
    try {
      decision = gc.diskUsage(usage, clock.now());
    } catch (err) {
      log.warn({ err, workDir }, "unusable disk usage reading");
      return;
    }
    log.debug({ usage, maxAgeMs: decision.maxAgeMs, removing: decision.remove.length }, "disk usage checked");
    guard("sandbox collection", () => applyGc(decision));
    await Promise.allSettled(decision.remove.map((r) => removals.get(r.path)));
  }

  // ----------------------------------------------------------------------------------------------
  // Commands from the master
  // ----------------------------------------------------------------------------------------------

  function onCommand(envelope: EnvelopeOf<"masterToAgent">): void {
    if (stopped) return;
    if (envelope.epoch < highestEpoch) {
      staleEpochMessages += 1;
      log.debug({ epoch: envelope.epoch, highestEpoch, kind: envelope.masterToAgent.kind }, "command from a deposed master ignored");
      return;
    }
    highestEpoch = envelope.epoch;
    const cmd: MasterToAgent = envelope.masterToAgent;
    switch (cmd.kind) {
      case "ping":
        pingWatch.heard();
        publishToMaster({ kind: "pong", pong: { seq: cmd.ping.seq } });
        return;
      case "runTask":
        runTask(cmd);
        return;
      case "killTask": {
        const record = tasks.get(taskKey(cmd.killTask.frameworkId, cmd.killTask.taskId));
        if (record === undefined) {
          // The master answers kills of tasks it does not know itself; an agent-side miss is only logged.
          log.info({ agentId, frameworkId: cmd.killTask.frameworkId, taskId: cmd.killTask.taskId }, "kill for an unknown task ignored");
          return;
        }
        killTask(record, killGraceMs(cmd.killTask.killGracePeriodSeconds, record.task.killGracePeriodSeconds, defaultGraceMs));
        return;
      }
      case "shutdownFramework":
        for (const record of tasks.values()) {
          if (record.frameworkId === cmd.shutdownFramework.frameworkId) {
            killTask(record, killGraceMs(undefined, record.task.killGracePeriodSeconds, defaultGraceMs));
          }
        }
        return;
      case "statusUpdateAck": {
        // Retires the head of this framework's stream of the task only: another framework's task of
        // the same id has a stream of its own.
        const { frameworkId, taskId, uuid } = cmd.statusUpdateAck;
        const retiredBefore = manager.stats().acknowledged;
        const uuidHex = bytesToHex(uuid);
        applyEffects(manager.acknowledge(frameworkId, taskId, uuidHex, clock.now()));
        if (options.onStatusUpdateAcknowledged && manager.stats().acknowledged > retiredBefore) {
          guard("acknowledgement listener", () => options.onStatusUpdateAcknowledged!({ frameworkId, taskId, uuid: uuidHex }));
        }
        return;
      }
      case "reregisterRequest":
        log.info({ agentId }, "master asks the agent to re-register");
        lostMaster();
        return;
      case "registered":
      case "reregistered":
        log.debug({ kind: cmd.kind }, "registration reply on the command subject ignored");
        return;
    }
  }

  /**
   * A newly elected master announces itself on the leader subject. A newer epoch is a new leader,
   * which knows this agent only once it re-registers (with its id and tasks): do so at once.
   */
  function onLeaderAnnouncement(envelope: EnvelopeOf<"masterInfo">): void {
    if (stopped || envelope.epoch <= highestEpoch) return;
    if (!registered) {
      ensureRegistering(); // already at it: retry now rather than at the end of the backoff
      return;
    }
    log.info({ agentId, epoch: envelope.epoch, masterId: envelope.masterInfo.id }, "a new master leads; re-registering");
    lostMaster();
  }

  // ----------------------------------------------------------------------------------------------
  // Registration and master liveness
  // ----------------------------------------------------------------------------------------------

  /** The master is gone or asked us to re-register: hold status updates and register again. */
  function lostMaster(): void {
    registered = false;
    pingWatch.stop();
    applyEffects(manager.pause());
    ensureRegistering();
  }

  function ensureRegistering(): void {
    if (stopped) return;
    if (registering !== undefined) {
      wakeBackoff?.(); // retry now rather than at the end of the current backoff
      return;
    }
    registering = registerLoop()
      .catch((err: unknown) => log.error({ err }, "registration loop failed"))
      .finally(() => (registering = undefined));
  }

  async function registerLoop(): Promise<void> {
    for (let attempt = 0; !stopped; attempt++) {
      if (await attemptRegistration()) return;
      if (stopped) return;
      await backoff(registrationDelayMs(attempt, backoffBaseMs, rng.next()));
    }
  }

  function backoff(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const handle = timers.set(delayMs, () => done());
      const done = () => {
        handle.cancel();
        wakeBackoff = undefined;
        resolve();
      };
      wakeBackoff = done;
    });
  }

  function registrationMessage(): AgentToMaster {
    const info: AgentInfo = {
      id: agentId ?? "",
      hostname,
      resources: resourcesToWire(totalResources ?? Resources.empty()),
      attributes: attributes.map((a) => ({ name: a.name, text: a.value })),
      httpEndpoint: httpUrl,
    };
    if (agentId === undefined) return { kind: "register", register: { agentInfo: info, version: AGENT_VERSION } };
    const reported: AgentTaskRecord[] = [];
    const frameworks = new Map<string, FrameworkInfo>();
    for (const record of tasks.values()) {
      if (record.latest === undefined) continue;
      reported.push({ frameworkId: record.frameworkId, task: record.task, status: record.latest });
      if (record.framework !== undefined) frameworks.set(record.frameworkId, record.framework);
    }
    // Subscribed under this id already (a new leader, not a restart): commands reach us at once.
    const listening = cmdSub !== undefined && subscribedId === agentId;
    return { kind: "reregister", reregister: { agentInfo: info, version: AGENT_VERSION, tasks: reported, frameworks: [...frameworks.values()], listening } };
  }

  /** One REGISTER/REREGISTER request; true once registered. Never throws. */
  async function attemptRegistration(): Promise<boolean> {
    const message = registrationMessage();
    registrationAttempts += 1;
    let replyBytes: Uint8Array;
    try {
      // Each agent speaks on its own subject, under the id it sends as (its instance id until it has one).
      const self = agentId ?? instanceId;
      const request = encodeEnvelope({ senderId: self, callId: rng.uuid(), payload: "agentToMaster", agentToMaster: message }, transport);
      replyBytes = await transport.request(subjects.masterAgent(self), request, { timeoutMs: registrationTimeoutMs });
    } catch (err) {
      const quiet = isTransportError(err, "CORRAL_ERR_NO_RESPONDERS") || isTransportError(err, "CORRAL_ERR_REQUEST_TIMEOUT");
      log[quiet ? "info" : "warn"]({ err: quiet ? undefined : err, code: (err as { code?: string }).code, kind: message.kind, attempt: registrationAttempts }, "registration attempt failed");
      return false;
    }
    if (stopped) return true;
    const decoded = safeDecode(REPLY_SUBJECT, replyBytes, { expect: ["masterToAgent", "callResponse"] });
    if (!decoded.ok) {
      drops.record(REPLY_SUBJECT, decoded.error.reason);
      log.warn({ reason: decoded.error.reason, problems: decoded.error.problems }, "bad registration reply dropped");
      return false;
    }
    const reply = decoded.envelope;
    if (reply.payload === "callResponse") {
      log.warn({ errorCode: reply.callResponse.errorCode, message: reply.callResponse.message, kind: message.kind }, "master refused the registration");
      return false;
    }
    const body = reply.masterToAgent;
    const registration = body.kind === "registered" ? body.registered : body.kind === "reregistered" ? body.reregistered : undefined;
    if (registration === undefined || !isValidToken(registration.agentId)) {
      drops.record(REPLY_SUBJECT, "invalid");
      log.warn({ kind: body.kind }, "registration reply is neither registered nor reregistered with a usable agent id");
      return false;
    }
    if (reply.epoch < highestEpoch) {
      staleEpochMessages += 1;
      log.warn({ epoch: reply.epoch, highestEpoch }, "registration answered by a deposed master; retrying");
      return false;
    }
    highestEpoch = reply.epoch;
    try {
      await onRegistered(registration);
      return true;
    } catch (err) {
      log.warn({ err }, "cannot complete the registration; retrying");
      return false;
    }
  }

  async function onRegistered(registration: AgentRegistration): Promise<void> {
    const id = registration.agentId;
    if (agentId !== undefined && agentId !== id) log.warn({ previous: agentId, agentId: id }, "the master assigned a new agent id");
    agentId = id;
    await persistAgentId(id).catch((err: unknown) => log.error({ err, agentId: id }, "cannot persist the agent id; a restart will register anew"));
    if (stopped) return;
    if (subscribedId !== id) {
      cmdSub?.unsubscribe();
      cmdSub = transport.subscribe(subjects.agentCmd(id), handleSafely<"masterToAgent">(log, drops, onCommand));
      subscribedId = id;
    }
    leaderSub ??= transport.subscribe(subjects.masterLeader(), handleSafely<"masterInfo">(log, drops, onLeaderAnnouncement, { expect: ["masterInfo"] }));
    await transport.flush();
    if (stopped) return;
    registered = true;
    masterId = registration.masterId;
    pingTimeout = pingTimeoutMs(registration.pingTimeoutSeconds);
    // The new master's timeout, however short, counts from its answer.
    pingWatch.heard();
    pingWatch.start(pingTimeout);
    log.info({ agentId: id, masterId, epoch: highestEpoch, pingTimeoutMs: pingTimeout }, "registered with the master");
    // The master offers this agent only after its first pong.
    publishToMaster({ kind: "pong", pong: { seq: 0 } });
    applyEffects(manager.resume(clock.now()));
  }

  // ----------------------------------------------------------------------------------------------
  // Persistence and resources
  // ----------------------------------------------------------------------------------------------

  async function persistAgentId(id: string): Promise<void> {
    if (options.agentIdStore !== undefined) return options.agentIdStore.save(id);
    const path = join(workDir, AGENT_ID_FILE);
    const tmp = `${path}.tmp`;
    await writeFile(tmp, `${id}\n`, "utf8");
    await rename(tmp, path);
  }

  async function readAgentId(): Promise<string | undefined> {
    let text: string;
    try {
      if (options.agentIdStore !== undefined) {
        const stored = await options.agentIdStore.load();
        if (stored === undefined) return undefined;
        text = stored;
      } else {
        text = await readFile(join(workDir, AGENT_ID_FILE), "utf8");
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.warn({ err }, "cannot read the agent id; registering anew");
      return undefined;
    }
    const id = text.trim();
    if (tokenProblem(id) === undefined) return id;
    log.warn({ content: id.slice(0, 200) }, "ignoring an unusable persisted agent id; registering anew");
    return undefined;
  }

  async function resolveResources(): Promise<Resources> {
    if (missingStandardResources(givenResources).length === 0) return givenResources;
    const detected = detectResources(await probeHost(workDir));
    return mergeWithDetected(givenResources, Resources.parse(detected.text));
  }

  // ----------------------------------------------------------------------------------------------
  // Views
  // ----------------------------------------------------------------------------------------------

  function resourcesView(resources: Resources): ResourcesView {
    return { text: resources.toString(), json: resources.toJSON() };
  }

  function taskView(facts: TaskFacts, completed: boolean): TaskView {
    return { ...facts, resources: resourcesView(facts.resources), completed };
  }

  function pendingUpdates(): number {
    return manager.pending().reduce((sum, stream) => sum + stream.pending.length, 0);
  }

  function state(): AgentStateView {
    return {
      id: agentId ?? null,
      hostname,
      httpUrl,
      resources: totalResources === undefined ? null : resourcesView(totalResources),
      attributes: Object.fromEntries(attributes.map((a) => [a.name, a.value])),
      isolation,
      registered,
      masterId: masterId ?? null,
      masterEpoch: highestEpoch,
      tasks: [...[...tasks.values()].map((record) => taskView(taskFacts(record), false)), ...[...completed.values()].map((facts) => taskView(facts, true))],
      statusUpdates: pendingUpdates(),
    };
  }

  function metrics(): string {
    return renderAgentMetrics({
      tasks: [...tasks.values()],
      pendingStatusUpdates: pendingUpdates(),
      registered,
      statusUpdateStats: manager.stats(),
      registrationAttempts,
      staleEpochMessages,
      drops,
    });
  }

  /** Usage of every running container; a container that ends meanwhile is left out. */
  async function statistics(): Promise<ContainerStatistics[]> {
    const running = [...tasks.values()].filter((t) => t.containerId !== null && !isTerminalState(t.state));
    const samples = await Promise.all(
      running.map(async (t) => {
        const usage = await containerizer.usage(t.containerId!).catch(() => undefined);
        return usage ? { framework_id: t.frameworkId, executor_id: t.taskId, container_id: t.containerId!, statistics: mesosStatistics(usage as unknown as Record<string, unknown>) } : undefined;
      }),
    );
    return samples.filter((s): s is ContainerStatistics => s !== undefined);
  }

  function guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      log.error({ err }, `${what} failed`);
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Lifecycle
  // ----------------------------------------------------------------------------------------------

  async function doStart(): Promise<void> {
    if (options.agentIdStore === undefined) await mkdir(workDir, { recursive: true });
    totalResources = await resolveResources();
    agentId = await readAgentId();
    if (checkpoints !== undefined) await recoverTasks();
    if (collectSandboxes) {
      await scheduleLeftoverSandboxes();
      armDiskWatch();
    }
    if (options.http === false) {
      if (stopped) return;
      log.info({ agentId, resources: totalResources.toString(), cluster }, "agent started (no HTTP)");
      ensureRegistering();
      return;
    }
    const app = createAgentHttp({
      state,
      metrics,
      statistics,
      sandboxOf: (frameworkId, taskId) => sandboxPath(workDir, frameworkId, taskId),
      log: componentLogger(rootLog, "agent-http"),
    });
    await app.listen({ host: httpHost, port: httpPort });
    http = app;
    const address = app.server.address();
    const port = typeof address === "object" && address !== null ? address.port : httpPort;
    const advertised = httpHost === "0.0.0.0" || httpHost === "::" ? hostname : httpHost.includes(":") ? `[${httpHost}]` : httpHost;
    httpUrl = `http://${advertised}:${port}`;
    if (stopped) return;
    log.info({ agentId, httpUrl, resources: totalResources.toString(), cluster }, "agent started");
    ensureRegistering();
  }

  function unsubscribeCommands(): void {
    cmdSub?.unsubscribe();
    cmdSub = undefined;
    leaderSub?.unsubscribe();
    leaderSub = undefined;
    subscribedId = undefined;
  }

  async function doStop(opts: AgentStopOptions): Promise<void> {
    stopped = true;
    healthChecks.stopAll();
    await starting?.catch(() => undefined);
    wakeBackoff?.();
    pingWatch.stop();
    unsubscribeCommands();
    if (opts.killTasks ?? true) {
      await containerizer.destroyAll().catch((err: unknown) => log.error({ err }, "cannot destroy the containers"));
      // Let the final (KILLED) updates reach the bus once; nobody will acknowledge them now.
      await Promise.allSettled([...tasks.values()].map((record) => record.done));
    } else {
      // The containers live on for the next agent; only the containerizer's own helpers stop.
      await containerizer.close?.().catch((err: unknown) => log.warn({ err }, "cannot close the containerizer"));
    }
    if (opts.unregister) publishToMaster({ kind: "unregisterNotice", unregisterNotice: { reason: "agent stopped" } });
    for (const handle of retryTimers.values()) handle.cancel();
    retryTimers.clear();
    gcTimer?.handle.cancel();
    gcTimer = undefined;
    diskWatchTimer?.cancel();
    diskWatchTimer = undefined;
    dropQueuedRemovals();
    await Promise.allSettled([...removals.values()]);
    await transport.flush().catch((err: unknown) => log.debug({ err }, "flush on stop failed"));
    unsubscribeCommands(); // again, in case a registration completed while stopping
    await http?.close().catch((err: unknown) => log.warn({ err }, "cannot close the HTTP server"));
    registered = false;
    log.info({ agentId }, "agent stopped");
  }

  return {
    start() {
      if (stopped) return Promise.reject(new Error("agent was stopped; create a new one"));
      starting ??= doStart();
      return starting;
    },
    stop(opts = {}) {
      stopping ??= doStop(opts);
      return stopping;
    },
    agentId: () => agentId,
    httpUrl: () => httpUrl,
    state,
    heldResources: () => ({ total: totalResources, tasks: tasks.values() }),
  };
}

/** The used share of the file system holding `path`, as Mesos reads it: (blocks - free blocks) / blocks. */
async function fileSystemUsage(path: string): Promise<number> {
  const fs = await statfs(path);
  if (!(fs.blocks > 0)) throw new Error(`statfs ${path}: the file system reports no blocks`);
  return (fs.blocks - fs.bfree) / fs.blocks;
}

/** The names of the directories in `dir`; none when it does not exist. */
async function subdirectories(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function nonNegative(value: number, name: string): number {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  return value;
}

function positive(value: number, name: string): number {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a finite number > 0, got ${value}`);
  return value;
}

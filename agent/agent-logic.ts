/**
 * The agent's decisions, as pure functions: what a `run_task` turns into, how a container's end
 * maps onto a task status, which kill grace period applies, how long to back off between
 * registration attempts, how operator-given resources combine with detected ones, and how the
 * status-update manager's updates look on the wire. The shell (`./agent.ts`) does the I/O around
 * them; nothing here reads a clock, draws a random number or touches the bus or the disk.
 *
 * @module
 */
import { join } from "node:path";
import { Resources, type ResourceEntry } from "../sdk/resources.ts";
import { pathIdProblem } from "../sdk/task-key.ts";
import { resourcesFromWire } from "../sdk/wire/resources.ts";
import {
  TASK_STATUS_REASONS,
  type FrameworkInfo,
  type TaskInfo,
  type TaskState,
  type TaskStatus,
  type TaskStatusReason,
} from "../sdk/wire/types.ts";
import type { ContainerCommand, ContainerResources, Termination } from "./containerizer/types.ts";
import type { StatusUpdate } from "./status-updates.ts";

// ------------------------------------------------------------------------------------------------
// Ids as path components
// ------------------------------------------------------------------------------------------------

// The rule (`pathIdProblem`) lives in sdk/task-key.ts, so that the master refuses at SUBSCRIBE and
// ACCEPT what an agent could not use as a directory.

/**
 * The sandbox of a task: `<workDir>/sandboxes/<frameworkId>/<taskId>`.
 * @throws RangeError naming the id when either is not path-safe (see {@link pathIdProblem}).
 */
export function sandboxPath(workDir: string, frameworkId: string, taskId: string): string {
  const fw = pathIdProblem(frameworkId);
  if (fw !== undefined) throw new RangeError(`frameworkId ${JSON.stringify(frameworkId)}: ${fw}`);
  const task = pathIdProblem(taskId);
  if (task !== undefined) throw new RangeError(`taskId ${JSON.stringify(taskId)}: ${task}`);
  // The ids are path-safe, so this is join(workDir, "sandboxes", frameworkId, taskId) as one flat
  // string; join builds it from pieces (V8 cons strings) several times its size.
  return [join(workDir, "sandboxes"), frameworkId, taskId].join("/");
}

// ------------------------------------------------------------------------------------------------
// run_task -> launch plan
// ------------------------------------------------------------------------------------------------

/** Most ports one task may be assigned (every valid port number). */
export const MAX_TASK_PORTS = 65_535;

/** What the agent does with one `run_task`. */
export type LaunchPlan =
  /** Start a container. */
  | {
      kind: "launch";
      frameworkId: string;
      taskId: string;
      sandboxDir: string;
      command: ContainerCommand;
      env: Record<string, string>;
      resources: ContainerResources;
      /** The task's resources in the algebra, for /state. */
      taskResources: Resources;
      /** Empty = the agent's user. */
      user: string;
    }
  /** Refuse the task with TASK_FAILED / REASON_TASK_INVALID; `message` names the field and the rule. */
  | { kind: "reject"; frameworkId: string; taskId: string; message: string }
  /** Not even a status update can be sent (no framework or task id): log and count only. */
  | { kind: "drop"; message: string };

/**
 * Checks a `run_task` against what this agent can run and turns it into a {@link LaunchPlan}.
 * @param agentId the id this agent is registered under; a task for another agent is refused.
 */
export function planLaunch(
  runTask: { framework?: FrameworkInfo | undefined; task?: TaskInfo | undefined },
  context: { agentId: string; workDir: string },
): LaunchPlan {
  const frameworkId = runTask.framework?.id ?? "";
  const task = runTask.task;
  if (task === undefined || task.taskId === "") return { kind: "drop", message: "run_task.task.taskId: must not be empty" };
  if (frameworkId === "") return { kind: "drop", message: `run_task.framework.id: must not be empty (task ${task.taskId})` };
  const reject = (message: string): LaunchPlan => ({ kind: "reject", frameworkId, taskId: task.taskId, message });

  const fwProblem = pathIdProblem(frameworkId);
  if (fwProblem !== undefined) return reject(`run_task.framework.id: ${fwProblem}`);
  const taskProblem = pathIdProblem(task.taskId);
  if (taskProblem !== undefined) return reject(`run_task.task.taskId: ${taskProblem}`);
  if (task.agentId !== context.agentId) {
    return reject(`run_task.task.agentId: names agent ${JSON.stringify(task.agentId)}, but this is agent ${JSON.stringify(context.agentId)}`);
  }
  const command = task.command;
  if (command === undefined || command.value === "") return reject("run_task.task.command.value: must not be empty");

  let taskResources: Resources;
  let resources: ContainerResources;
  try {
    taskResources = resourcesFromWire(task.resources);
    resources = containerResourcesOf(taskResources);
  } catch (err) {
    return reject(`run_task.task.resources: ${err instanceof Error ? err.message : String(err)}`);
  }
  return {
    kind: "launch",
    frameworkId,
    taskId: task.taskId,
    sandboxDir: sandboxPath(context.workDir, frameworkId, task.taskId),
    command: command.shell
      ? { shell: true, value: command.value }
      : { shell: false, value: command.value, arguments: [...command.arguments] },
    env: { ...command.environment },
    resources,
    taskResources,
    user: command.user,
  };
}

/**
 * The containerizer's view of a task's resources: cpus, mem and disk totals (all roles summed) and
 * every port of the `ports` ranges, in ascending order (`PORT0` is the lowest).
 * @throws RangeError when a port is outside 1..65535 or there are more than {@link MAX_TASK_PORTS}.
 */
export function containerResourcesOf(resources: Resources): ContainerResources {
  const ranges = resources.ranges("ports");
  const count = resources.rangesSize("ports");
  if (count > MAX_TASK_PORTS) throw new RangeError(`ports: at most ${MAX_TASK_PORTS} ports per task, got ${count}`);
  const ports: number[] = [];
  for (const range of ranges) {
    if (range.begin < 1 || range.end > 65_535) throw new RangeError(`ports: ${range.begin}-${range.end} is outside 1-65535`);
    for (let port = range.begin; port <= range.end; port++) ports.push(port);
  }
  return { cpus: resources.scalar("cpus"), memMb: resources.scalar("mem"), diskMb: resources.scalar("disk"), ports };
}

// ------------------------------------------------------------------------------------------------
// Container end -> task status
// ------------------------------------------------------------------------------------------------

/** The part of a {@link TaskStatus} that the agent's decision fixes. */
export interface StatusDecision {
  state: TaskState;
  reason: TaskStatusReason;
  message: string;
  exitCode?: number;
}

/** True when `value` is a reason name the wire knows. */
export function isTaskStatusReason(value: unknown): value is TaskStatusReason {
  return typeof value === "string" && (TASK_STATUS_REASONS as readonly string[]).includes(value);
}

/**
 * How a task's end is reported: KILLED when the agent stopped it, FINISHED for exit status 0,
 * otherwise FAILED with the exit code (absent for a signal; the message names it) and the
 * containerizer's reason, or REASON_COMMAND_EXECUTOR_FAILED when it gave none.
 */
export function terminationStatus(termination: Termination): StatusDecision {
  const knownReason = isTaskStatusReason(termination.reason) ? termination.reason : undefined;
  const withExit = (decision: StatusDecision): StatusDecision =>
    termination.exitCode === null ? decision : { ...decision, exitCode: termination.exitCode };
  if (termination.killed) {
    return withExit({ state: "TASK_KILLED", reason: knownReason ?? "REASON_UNSPECIFIED", message: termination.message });
  }
  if (termination.exitCode === 0 && termination.signal === null) {
    return { state: "TASK_FINISHED", reason: "REASON_UNSPECIFIED", message: termination.message, exitCode: 0 };
  }
  return withExit({ state: "TASK_FAILED", reason: knownReason ?? "REASON_COMMAND_EXECUTOR_FAILED", message: termination.message });
}

/**
 * How a failed launch is reported: TASK_FAILED / REASON_CONTAINER_LAUNCH_FAILED, or, when a kill
 * arrived while the container was being started, TASK_KILLED / REASON_TASK_KILLED_DURING_LAUNCH
 * (as Mesos does).
 */
export function launchFailureStatus(message: string, killRequested: boolean): StatusDecision {
  return killRequested
    ? { state: "TASK_KILLED", reason: "REASON_TASK_KILLED_DURING_LAUNCH", message: `Task killed during launch: ${message}` }
    : { state: "TASK_FAILED", reason: "REASON_CONTAINER_LAUNCH_FAILED", message };
}

/** The status of a `run_task` the agent refuses (see {@link LaunchPlan} `reject`). */
export function invalidTaskStatus(message: string): StatusDecision {
  return { state: "TASK_FAILED", reason: "REASON_TASK_INVALID", message };
}

// ------------------------------------------------------------------------------------------------
// Timing decisions
// ------------------------------------------------------------------------------------------------

function usableSeconds(value: number | undefined): value is number {
  return value !== undefined && Number.isFinite(value) && value >= 0;
}

/**
 * The kill grace period in ms: the kill's own, else the task's `killGracePeriodSeconds`, else the
 * agent's default. Negative or non-finite values are skipped.
 */
export function killGraceMs(fromKillSeconds: number | undefined, fromTaskSeconds: number | undefined, defaultMs: number): number {
  if (usableSeconds(fromKillSeconds)) return Math.round(fromKillSeconds * 1000);
  if (usableSeconds(fromTaskSeconds)) return Math.round(fromTaskSeconds * 1000);
  return defaultMs;
}

/** Upper bound of the registration backoff, as in Mesos (1 minute). */
export const MAX_REGISTRATION_BACKOFF_MS = 60_000;

/**
 * Delay before registration attempt `attempt + 1` (0-based: the delay after the first failure is
 * `registrationDelayMs(0, ...)`): the ceiling `baseMs * 2^attempt`, capped at `capMs`, is drawn
 * down to a uniform point of its upper half, so a fleet of agents does not retry in lockstep and
 * no retry comes immediately.
 * @param random a uniform draw from [0, 1)
 */
export function registrationDelayMs(attempt: number, baseMs: number, random: number, capMs = MAX_REGISTRATION_BACKOFF_MS): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 40));
  const r = Math.min(Math.max(random, 0), 1);
  return Math.round(ceiling / 2 + (r * ceiling) / 2);
}

/** Ping timeout used when the registration reply gives none (Mesos's 75 s: 5 missed 15 s pings). */
export const DEFAULT_PING_TIMEOUT_MS = 75_000;

/** The master-liveness timeout from a registration reply's `ping_timeout_seconds`. */
export function pingTimeoutMs(pingTimeoutSeconds: number): number {
  return Number.isFinite(pingTimeoutSeconds) && pingTimeoutSeconds > 0 ? Math.round(pingTimeoutSeconds * 1000) : DEFAULT_PING_TIMEOUT_MS;
}

// ------------------------------------------------------------------------------------------------
// Resources
// ------------------------------------------------------------------------------------------------

/** The resources an agent always offers; any of them the operator leaves out is detected. */
export const STANDARD_RESOURCES = ["cpus", "mem", "disk", "ports"] as const;

/**
 * The resources an operator gives an agent, in Mesos text form, checked as the agent needs them:
 * every `ports` range within 1..65535 (a ranges resource in general may hold any non-negative
 * integers; port numbers may not, and a port the agent offers must be one a task can be given).
 * @throws RangeError naming `resources` and the rule
 */
export function parseAgentResources(text: string): Resources {
  let resources: Resources;
  try {
    resources = Resources.parse(text);
  } catch (err) {
    throw new RangeError(`resources: ${err instanceof Error ? err.message : String(err)}`);
  }
  for (const entry of resources.entries) {
    if (entry.kind !== "ranges" || entry.name !== "ports") continue;
    for (const range of entry.ranges) {
      if (range.begin < 1 || range.end > 65_535) throw new RangeError(`resources: ports [${range.begin}-${range.end}]: port numbers are 1 to 65535`);
    }
  }
  return resources;
}

/** Which of {@link STANDARD_RESOURCES} `given` does not mention (under any role). */
export function missingStandardResources(given: Resources): string[] {
  const names = new Set(given.entries.map((e) => e.name));
  return STANDARD_RESOURCES.filter((name) => !names.has(name));
}

/**
 * The agent's total: what the operator gave, plus the detected amount of every standard resource
 * the operator did not mention (Mesos's `--resources` semantics).
 */
export function mergeWithDetected(given: Resources, detected: Resources): Resources {
  const missing = new Set(missingStandardResources(given));
  return given.add(detected.filter((e: ResourceEntry) => missing.has(e.name)));
}

// ------------------------------------------------------------------------------------------------
// Status updates on the wire
// ------------------------------------------------------------------------------------------------

/** Lower-case hex of `bytes`: the status-update manager's uuid key for a wire uuid. */
export function bytesToHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/** The inverse of {@link bytesToHex}. @throws RangeError on anything but an even number of hex digits */
export function hexToBytes(hex: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/u.test(hex)) throw new RangeError(`not lower-case hex bytes: ${JSON.stringify(hex)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * A status-update manager update in wire form, with `healthy` when a health check produced it.
 * `agentId` is the agent's current id (the master may have assigned a new one since the update was
 * queued). The source is always SOURCE_AGENT: there is no in-container executor yet.
 */
export function toWireStatus(update: StatusUpdate, agentId: string): TaskStatus {
  const status: TaskStatus = {
    taskId: update.taskId,
    state: update.state,
    message: update.message ?? "",
    source: "SOURCE_AGENT",
    reason: isTaskStatusReason(update.reason) ? update.reason : "REASON_UNSPECIFIED",
    agentId,
    frameworkId: update.frameworkId,
    uuid: hexToBytes(update.uuid),
    timestamp: update.timestampMs / 1000,
  };
  if (update.exitCode !== undefined) status.exitCode = update.exitCode;
  if (typeof update.healthy === "boolean") status.healthy = update.healthy;
  return status;
}

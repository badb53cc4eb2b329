/**
 * The agent's checkpoints: what a restarted agent (even after SIGKILL) needs to recover its tasks,
 * kept in `<workDir>/checkpoint/frameworks/<framework>/`, one directory per framework because task
 * ids are unique only within a framework (two frameworks may both run a task `j1.0.0` here):
 *
 * - `tasks/<task>.json` — one {@link TaskCheckpoint} per task the agent holds: its framework (with the
 *   `checkpoint` flag), TaskInfo (as the master sent it, with the `allocationRole` that
 *   re-registration reports back; files older than that field have none), container id, sandbox,
 *   the container's pid and its start time (from `/proc/<pid>/stat`, so a reused pid is not
 *   mistaken for it), cgroup, and the latest status.
 *   Written for every task, also of frameworks that do not checkpoint: a restarted agent must find
 *   their containers to kill them, as Mesos does.
 * - `streams/<task>.json` — the task's status-update stream (unacknowledged updates in order, recent
 *   acknowledged uuids), as the status-update manager's `checkpoint` effects give it; only for
 *   frameworks with `checkpoint: true`.
 *
 * Every write is atomic (a temporary file renamed over the old one) and synchronous, so a checkpoint
 * is on disk before the update it covers is published, and a crash leaves either the old or the new
 * file, never a torn one. Files are not fsynced: they survive a crash of the agent process, not of
 * the host. Loading skips (and reports) files that do not parse, whose TaskInfo, FrameworkInfo or
 * status updates would not make valid wire messages (the agent sends them again and reports them
 * when re-registering), or whose ids do not match the place they are in, so one bad file cannot
 * stop an agent from starting or from registering.
 *
 * Checkpoints of the earlier layout (`checkpoint/tasks/`, `checkpoint/streams/`, one directory for
 * all frameworks) are not read: the load reports them as a problem, and their tasks are not
 * recovered.
 *
 * @module
 */
import { existsSync, mkdirSync, renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { decodeMessage, encodeMessage, validateMessage, type WireMessageName, type WireMessages } from "../sdk/wire/codec.ts";
import type { FrameworkInfo, TaskInfo } from "../sdk/wire/types.ts";
import { toWireStatus } from "./agent-logic.ts";
import type { ContainerResources } from "./containerizer/types.ts";
import { isTaskState, type StatusUpdate, type StatusUpdateStreamSnapshot } from "./status-updates.ts";

/** Version of the files' format; files of another version are skipped. */
export const CHECKPOINT_VERSION = 1;

/** What the agent checkpoints about one task and its container. */
export interface TaskCheckpoint {
  version: typeof CHECKPOINT_VERSION;
  frameworkId: string;
  taskId: string;
  /** The framework as the master sent it with `run_task`; `checkpoint` decides recovery. */
  framework: FrameworkInfo | undefined;
  task: TaskInfo;
  sandbox: string | null;
  containerId: string | null;
  /** The container's resources as given to the containerizer. */
  containerResources?: ContainerResources;
  /** The supervisor's pid, once launched. */
  pid?: number;
  /** Field 22 (starttime) of `/proc/<pid>/stat` at launch. */
  pidStartTicks?: number;
  cgroup?: string;
  /** The latest status the agent decided (acknowledged or not). */
  latest?: StatusUpdate;
}

/** What {@link CheckpointStore.load} found. */
export interface LoadedCheckpoints {
  tasks: TaskCheckpoint[];
  streams: StatusUpdateStreamSnapshot[];
  /** Files skipped, with why. */
  problems: string[];
}

/** Reads and writes the checkpoints under one directory (`<workDir>/checkpoint`). */
export class CheckpointStore {
  private readonly frameworksDir: string;
  /** Directories this store has made (or found) and not removed since: no mkdir per write. */
  private readonly made = new Set<string>();

  constructor(readonly dir: string) {
    this.frameworksDir = join(dir, "frameworks");
  }

  /** Writes (replaces) a task's checkpoint. @throws on I/O errors */
  writeTask(checkpoint: TaskCheckpoint): void {
    this.write(this.taskPath(checkpoint.frameworkId, checkpoint.taskId), checkpoint);
  }

  /**
   * Forgets a task (its final update was acknowledged): both its files go, and its framework's
   * directory once no task of that framework is left.
   */
  removeTask(frameworkId: string, taskId: string): void {
    rmSync(this.taskPath(frameworkId, taskId), { force: true });
    rmSync(this.streamPath(frameworkId, taskId), { force: true });
    const frameworkDir = this.frameworkDir(frameworkId);
    for (const dir of [join(frameworkDir, "tasks"), join(frameworkDir, "streams"), frameworkDir]) {
      if (!removeIfEmpty(dir)) return;
      this.made.delete(dir);
    }
  }

  /** Writes a task's stream, or deletes it (`null`). @throws on I/O errors */
  writeStream(frameworkId: string, taskId: string, stream: StatusUpdateStreamSnapshot | null): void {
    const path = this.streamPath(frameworkId, taskId);
    if (stream === null) rmSync(path, { force: true });
    else this.write(path, stream);
  }

  /** Everything checkpointed; a missing directory is an empty checkpoint. */
  async load(): Promise<LoadedCheckpoints> {
    const problems: string[] = [];
    for (const old of ["tasks", "streams"]) {
      const path = join(this.dir, old);
      if (existsSync(path)) problems.push(`${path}: checkpoints of the layout before ${this.frameworksDir} are not recovered`);
    }
    const tasks: TaskCheckpoint[] = [];
    const streams: StatusUpdateStreamSnapshot[] = [];
    for (const frameworkDir of await listDir(this.frameworksDir, problems)) {
      const dir = join(this.frameworksDir, frameworkDir);
      tasks.push(...(await readValid(join(dir, "tasks"), frameworkDir, checkedTask, problems)));
      streams.push(...(await readValid(join(dir, "streams"), frameworkDir, checkedStream, problems)));
    }
    return { tasks, streams, problems };
  }

  private frameworkDir(frameworkId: string): string {
    return join(this.frameworksDir, frameworkDirName(frameworkId));
  }

  private taskPath(frameworkId: string, taskId: string): string {
    return join(this.frameworkDir(frameworkId), "tasks", fileName(taskId));
  }

  private streamPath(frameworkId: string, taskId: string): string {
    return join(this.frameworkDir(frameworkId), "streams", fileName(taskId));
  }

  private write(path: string, value: unknown): void {
    const dir = dirname(path);
    if (!this.made.has(dir)) {
      mkdirSync(dir, { recursive: true });
      this.made.add(dir);
    }
    const tmp = `${path}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(value)}\n`, { mode: 0o600 });
    renameSync(tmp, path);
  }
}

/** A file name for a task id: prefixed, so that ids like `..` stay plain names; `/` and `%` are escaped. */
export function fileName(taskId: string): string {
  return `t-${encodeURIComponent(taskId)}.json`;
}

/** A directory name for a framework id, escaped as {@link fileName} escapes task ids. */
export function frameworkDirName(frameworkId: string): string {
  return `f-${encodeURIComponent(frameworkId)}`;
}

/**
 * Why a checkpoint cannot stay where it was found: a file whose ids differ from its path would
 * never be removed (removal goes by the ids), so its task would come back after every restart.
 */
function placementProblem(value: { frameworkId: string; taskId: string }, frameworkDir: string, file: string): string | undefined {
  if (frameworkDirName(value.frameworkId) !== frameworkDir || fileName(value.taskId) !== file) {
    return `holds task ${value.taskId} of framework ${value.frameworkId}, which belongs elsewhere`;
  }
  return undefined;
}

/**
 * The files of `dir` (in the directory of framework `frameworkDir`) that parse, pass `check` (which
 * answers the value as the agent may use it, or a problem) and are where their ids say; every other
 * one is a problem.
 */
async function readValid<T extends { frameworkId: string; taskId: string }>(dir: string, frameworkDir: string, check: (value: unknown) => T | string, problems: string[]): Promise<T[]> {
  const out: T[] = [];
  for (const [file, value] of await readAll(dir, problems)) {
    const checked = check(value);
    const problem = typeof checked === "string" ? checked : placementProblem(checked, frameworkDir, file);
    if (problem === undefined) out.push(checked as T);
    else problems.push(`${join(dir, file)}: ${problem}`);
  }
  return out;
}

/** Removes `dir` if it is empty; true when it is gone. */
function removeIfEmpty(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT";
  }
}

/** The entries of `dir`, sorted; a missing directory has none. */
async function listDir(dir: string, problems: string[]): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") problems.push(`${dir}: ${(err as Error).message}`);
    return [];
  }
}

/** The parsed `.json` files of `dir`, by file name; a file that does not parse is a problem. */
async function readAll(dir: string, problems: string[]): Promise<Array<[string, unknown]>> {
  const out: Array<[string, unknown]> = [];
  for (const name of await listDir(dir, problems)) {
    if (!name.endsWith(".json")) continue; // leftover temporary files of an interrupted write
    const path = join(dir, name);
    try {
      out.push([name, JSON.parse(await readFile(path, "utf8"))]);
    } catch (err) {
      problems.push(`${path}: ${(err as Error).message}`);
    }
  }
  return out;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function nonEmpty(value: unknown): value is string {
  return typeof value === "string" && value !== "";
}

function updateProblem(value: unknown): string | undefined {
  if (!isObject(value)) return "status update is not an object";
  if (!nonEmpty(value.taskId) || !nonEmpty(value.frameworkId) || !nonEmpty(value.agentId) || !nonEmpty(value.uuid)) return "status update lacks ids";
  if (!isTaskState(value.state)) return "status update has no valid state";
  if (typeof value.timestampMs !== "number") return "status update has no timestamp";
  // It is sent again and reported when re-registering: it must make a valid TaskStatus.
  let problems: string[];
  try {
    problems = validateMessage("TaskStatus", toWireStatus(value as unknown as StatusUpdate, value.agentId));
  } catch (err) {
    problems = [(err as Error).message];
  }
  return problems.length > 0 ? `status update: ${problems.join("; ")}` : undefined;
}

/**
 * A message as the wire would carry it: checked against its rules and with every field in place,
 * so that a file edited by hand or damaged on disk cannot reach code (or a REREGISTER) that trusts
 * the wire's shapes. A problem is answered as text.
 */
function asOnTheWire<N extends WireMessageName>(name: N, value: unknown): WireMessages[N] | string {
  try {
    return decodeMessage(name, encodeMessage(name, value as WireMessages[N]));
  } catch (err) {
    return (err as Error).message;
  }
}

function checkedTask(value: unknown): TaskCheckpoint | string {
  if (!isObject(value)) return "not an object";
  if (value.version !== CHECKPOINT_VERSION) return `version ${String(value.version)} is not ${CHECKPOINT_VERSION}`;
  if (!nonEmpty(value.frameworkId) || !nonEmpty(value.taskId)) return "frameworkId/taskId missing";
  if (!isObject(value.task) || value.task.taskId !== value.taskId) return "task missing or for another task id";
  if (value.framework !== undefined && !isObject(value.framework)) return "framework is not an object";
  if (value.containerId !== null && !nonEmpty(value.containerId)) return "containerId is neither null nor a string";
  if (value.sandbox !== null && !nonEmpty(value.sandbox)) return "sandbox is neither null nor a string";
  for (const key of ["pid", "pidStartTicks"] as const) {
    if (value[key] !== undefined && !(Number.isSafeInteger(value[key]) && (value[key] as number) > 0)) return `${key} is not a positive integer`;
  }
  if (value.cgroup !== undefined && !nonEmpty(value.cgroup)) return "cgroup is not a string";
  if (value.latest !== undefined) {
    const problem = updateProblem(value.latest);
    if (problem !== undefined) return `latest: ${problem}`;
  }
  const task = asOnTheWire("TaskInfo", value.task);
  if (typeof task === "string") return `task: ${task}`;
  const framework = value.framework === undefined ? undefined : asOnTheWire("FrameworkInfo", value.framework);
  if (typeof framework === "string") return `framework: ${framework}`;
  return { ...(value as unknown as TaskCheckpoint), task, framework };
}

function checkedStream(value: unknown): StatusUpdateStreamSnapshot | string {
  if (!isObject(value)) return "not an object";
  if (!nonEmpty(value.taskId) || !nonEmpty(value.frameworkId)) return "taskId/frameworkId missing";
  if (!Array.isArray(value.pending) || !Array.isArray(value.acknowledged)) return "pending/acknowledged are not arrays";
  for (const update of value.pending) {
    const problem = updateProblem(update);
    if (problem !== undefined) return `pending: ${problem}`;
  }
  if (!value.acknowledged.every(nonEmpty)) return "acknowledged holds a non-string";
  return value as unknown as StatusUpdateStreamSnapshot;
}

/**
 * Helpers shared by the containerizers (posix and Linux), so both build the same task environment,
 * resolve users the same way, validate specs with the same words and end containers with the same
 * messages. Nothing here holds state.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { chown, lstat, open, readFile, rm, type FileHandle } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { constants as osConstants } from "node:os";
import type { Timers } from "../../sdk/clock.ts";
import { ContainerizerError, type ContainerExecResult, type ContainerSpec, type Termination } from "./types.ts";

/** The PATH a task gets when the agent has none to pass on. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat and cpuacct.stat on every Linux ABI Node runs on. */
export const CLOCK_TICKS_PER_SECOND = 100;

/**
 * The task's environment: `baseEnv`, then the task's own `env`, then Corral's variables (which the
 * task cannot override, so a task can always trust `MESOS_SANDBOX`, `PORT0` and friends).
 *
 * @param hostname value of `HOST`: the agent's host name, which is what a task advertises to others
 *   (not the container's own UTS host name).
 */
export function taskEnvironment(spec: ContainerSpec, hostname: string, baseEnv: Record<string, string>): Record<string, string> {
  const { resources } = spec;
  const corral: Record<string, string> = {
    MESOS_SANDBOX: spec.sandboxDir,
    MESOS_DIRECTORY: spec.sandboxDir,
    CORRAL_SANDBOX: spec.sandboxDir,
    CORRAL_TASK_ID: spec.taskId,
    MESOS_TASK_ID: spec.taskId,
    CORRAL_FRAMEWORK_ID: spec.frameworkId,
    MESOS_FRAMEWORK_ID: spec.frameworkId,
    CORRAL_CONTAINER_ID: spec.containerId,
    HOST: hostname,
    PORTS: resources.ports.join(","),
    CORRAL_CPUS: String(resources.cpus),
    CORRAL_MEM_MB: String(resources.memMb),
    CORRAL_DISK_MB: String(resources.diskMb),
  };
  resources.ports.forEach((port, index) => (corral[`PORT${index}`] = String(port)));
  // Marathon's single-port convenience.
  if (resources.ports.length > 0) corral.PORT = String(resources.ports[0]);
  return { ...baseEnv, ...spec.env, ...corral };
}

/** A user as found in /etc/passwd (or a bare uid that is not listed there). */
export interface UserIdentity {
  uid: number;
  gid: number;
  /** The login name, when /etc/passwd lists the user. */
  name?: string;
}

/** Resolves a user name or numeric uid through /etc/passwd; a bare uid not listed uses gid = uid. */
export async function lookupUser(user: string): Promise<UserIdentity> {
  const passwd = await readFile("/etc/passwd", "utf8").catch(() => "");
  const numeric = /^\d+$/.test(user) ? Number(user) : undefined;
  for (const line of passwd.split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === undefined || uid === undefined || gid === undefined) continue;
    if (name === user || (numeric !== undefined && Number(uid) === numeric)) return { uid: Number(uid), gid: Number(gid), name };
  }
  if (numeric !== undefined) return { uid: numeric, gid: numeric };
  throw new Error(`unknown user "${user}" (not in /etc/passwd)`);
}

/** Like {@link lookupUser}, but undefined when there is no user or it is the agent's own (no switch needed). */
export async function resolveUser(user: string | undefined): Promise<UserIdentity | undefined> {
  if (user === undefined || user === "") return undefined;
  const identity = await lookupUser(user);
  return process.getuid?.() === identity.uid ? undefined : identity;
}

/**
 * Opens the sandbox's `stdout` and `stderr` for appending, creating them, and hands them (and the
 * sandbox) to the task's user when there is one to switch to.
 *
 * The sandbox is keyed by task id, so a launch may find what an earlier task of the same id left
 * there, and that task owned the directory: a `stdout` that is a symlink (or a hard link) to a host
 * file would have the agent, as root, append the new task's output to that file and chown it to the
 * task's user. So nothing but a plain, singly-linked file is kept: anything else is removed first,
 * the open does not follow a symlink, and the ownership change goes through the opened descriptor.
 * The caller closes the handles.
 */
export async function openOutputFiles(sandboxDir: string, identity: UserIdentity | undefined): Promise<{ stdout: FileHandle; stderr: FileHandle }> {
  const stdout = await openOutputFile(join(sandboxDir, "stdout"), identity);
  try {
    const stderr = await openOutputFile(join(sandboxDir, "stderr"), identity);
    if (identity) await chown(sandboxDir, identity.uid, identity.gid);
    return { stdout, stderr };
  } catch (error) {
    await stdout.close().catch(() => undefined);
    throw error;
  }
}

async function openOutputFile(path: string, identity: UserIdentity | undefined): Promise<FileHandle> {
  const found = await lstat(path).catch(() => undefined);
  if (found !== undefined && !(found.isFile() && found.nlink === 1)) await rm(path, { recursive: true, force: true });
  const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND | fsConstants.O_NOFOLLOW;
  const handle = await open(path, flags, 0o644);
  try {
    // Only a process racing the agent could have linked one in since the check; refuse rather than write.
    const opened = await handle.stat();
    if (!opened.isFile() || opened.nlink !== 1) throw new Error(`${path} is not a plain file of the sandbox`);
    if (identity) await handle.chown(identity.uid, identity.gid);
    return handle;
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
}

/** Rejects a spec that cannot be launched, naming every problem; throws `CORRAL_ERR_CONTAINER_LAUNCH_FAILED`. */
export function validateSpec(spec: ContainerSpec): void {
  const problems: string[] = [];
  if (typeof spec.containerId !== "string" || spec.containerId === "") problems.push("containerId must be a non-empty string");
  if (typeof spec.sandboxDir !== "string" || !isAbsolute(spec.sandboxDir)) problems.push("sandboxDir must be an absolute path");
  if (typeof spec.command?.value !== "string" || spec.command.value === "") problems.push("command.value must be a non-empty string");
  if (!Array.isArray(spec.resources?.ports) || !spec.resources.ports.every((p) => Number.isInteger(p) && p > 0 && p < 65536)) {
    problems.push("resources.ports must be integers in 1..65535");
  }
  if (problems.length > 0) {
    throw new ContainerizerError("CORRAL_ERR_CONTAINER_LAUNCH_FAILED", `invalid container spec for ${spec.containerId}: ${problems.join("; ")}`, {
      containerId: spec.containerId,
    });
  }
}

/** The command as a human reads it in an error message. */
export function commandText(spec: ContainerSpec): string {
  return spec.command.shell ? `/bin/sh -c ${JSON.stringify(spec.command.value)}` : JSON.stringify(spec.command.value);
}

/** Mesos's words for how a command ended. */
export function exitMessage(exitCode: number | null, signal: string | null): string {
  return signal === null ? `Command exited with status ${exitCode}` : `Command terminated with signal ${signal}`;
}

/**
 * Turns a shell-style exit status (128 + n for "killed by signal n", as sh, tini and bwrap report
 * it) back into a signal. Ambiguous by nature: a program that exits 137 on its own reads as SIGKILL.
 */
export function decodeShellStatus(status: number): { exitCode: number | null; signal: NodeJS.Signals | null } {
  if (status > 128 && status < 128 + 65) {
    const signo = status - 128;
    const name = (Object.entries(osConstants.signals) as [NodeJS.Signals, number][]).find(([, n]) => n === signo)?.[0];
    if (name !== undefined) return { exitCode: null, signal: name };
  }
  return { exitCode: status, signal: null };
}

export function launchFailed(spec: ContainerSpec, message: string, cause?: unknown): ContainerizerError {
  return new ContainerizerError("CORRAL_ERR_CONTAINER_LAUNCH_FAILED", `container ${spec.containerId}: ${message}`, {
    containerId: spec.containerId,
    cause,
  });
}

export function notFound(containerId: string): ContainerizerError {
  return new ContainerizerError("CORRAL_ERR_CONTAINER_NOT_FOUND", `unknown container ${containerId}`, { containerId });
}

export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function nonNegative(value: number, name: string): number {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  return value;
}

/** One line of /proc/<pid>/stat, split after the command name. */
export interface ProcStat {
  pid: number;
  /** Process state letter (`R`, `S`, `Z`, ...). */
  state: string;
  /** Fields after the command name, starting with the state (field 3 of proc(5)). */
  fields: string[];
}

/** Reads /proc/<pid>/stat; undefined when the process is gone. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (stat === undefined) return undefined;
  // The command name is parenthesised and may itself contain spaces and ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { pid, state: fields[0] ?? "", fields };
}

/**
 * Sends a signal to one process or (negative pid) a group. Never throws: a process that is already
 * gone is the normal case, and any other failure (EPERM) is returned for the caller to log.
 */
export function sendSignal(pid: number, signal: NodeJS.Signals): string | undefined {
  try {
    process.kill(pid, signal);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    if (code !== "ESRCH") return code;
  }
  return undefined;
}

/** How {@link runProcessGroup} starts its process. */
export interface ProcessGroupOptions {
  cwd?: string;
  env: Record<string, string>;
  /** Switch to this user (only when the agent runs as root). */
  uid?: number;
  gid?: number;
}

/**
 * Runs `argv` in a process group of its own and resolves with how it ended. Once `timeoutMs` has
 * passed, the whole group is SIGKILLed (and it counts as `timedOut`); when the first process ends,
 * whatever it left behind in its group is killed too. Rejects only when the process cannot be started.
 */
export function runProcessGroup(argv: readonly string[], options: ProcessGroupOptions, timeoutMs: number, timers: Timers): Promise<ContainerExecResult> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let timedOut = false;
    const child = spawn(argv[0]!, argv.slice(1), {
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      env: options.env,
      detached: true, // its own process group: the timeout kills all it started
      stdio: "ignore",
      ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid ?? options.uid } : {}),
    });
    const killGroup = () => {
      if (child.pid !== undefined) sendSignal(-child.pid, "SIGKILL");
    };
    const timer = timers.set(timeoutMs, () => {
      timedOut = true;
      killGroup();
    });
    child.once("error", (error) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      killGroup();
      reject(error);
    });
    child.once("exit", (code, signal) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      killGroup();
      resolve({ exitCode: code, signal, timedOut });
    });
  });
}

/** What {@link ContainerRecords} needs to know of a live container. */
export interface LiveContainer {
  readonly spec: ContainerSpec;
  /** Set once the container's process exists. */
  pid: number | undefined;
  /** Resolves with the termination once the container has ended. */
  readonly done: Promise<Termination>;
  /** A kill was asked for. */
  killRequested: boolean;
  /** The shortest grace period asked for before the process existed; applied once it does. */
  pendingKillGraceMs: number | undefined;
}

/**
 * The bookkeeping every process-backed containerizer needs: live containers, a bounded record of
 * ended ones (so a late `wait` or `kill` still gets the termination), launches in progress (so
 * `destroyAll` cannot miss one), and whether the containerizer has been closed.
 */
export class ContainerRecords<L extends LiveContainer> {
  readonly live = new Map<string, L>();
  readonly ended = new Map<string, Termination>();
  private readonly launching = new Set<Promise<unknown>>();
  private closed = false;

  /** @param maxRemembered ended containers remembered; the oldest are forgotten first */
  constructor(private readonly maxRemembered: number) {}

  /** Refuses a launch when closed, for a bad spec, or for an id in use (live or remembered). */
  admit(spec: ContainerSpec): void {
    const id = spec.containerId;
    if (this.closed) {
      throw new ContainerizerError("CORRAL_ERR_CONTAINERIZER_CLOSED", `containerizer is shut down; not launching container ${id}`, { containerId: id });
    }
    validateSpec(spec);
    if (this.live.has(id) || this.ended.has(id)) {
      throw new ContainerizerError("CORRAL_ERR_CONTAINER_EXISTS", `container ${id} already exists`, { containerId: id });
    }
  }

  /** Tracks a launch in progress until it settles; returns it. */
  track<T>(started: Promise<T>): Promise<T> {
    this.launching.add(started);
    const forget = () => this.launching.delete(started);
    started.then(forget, forget);
    return started;
  }

  /** Records how a container ended. */
  remember(containerId: string, termination: Termination): void {
    this.ended.set(containerId, termination);
    while (this.ended.size > this.maxRemembered) {
      const oldest = this.ended.keys().next().value;
      if (oldest === undefined) break;
      this.ended.delete(oldest);
    }
  }

  /** How the container ended, once it has; rejects for an unknown (or forgotten) id. */
  wait(containerId: string): Promise<Termination> {
    const ended = this.ended.get(containerId);
    if (ended) return Promise.resolve(ended);
    const live = this.live.get(containerId);
    return live ? live.done : Promise.reject(notFound(containerId));
  }

  /**
   * The part of `kill` every containerizer shares: an ended container answers with its termination,
   * an unknown one is refused, one still starting keeps the shortest grace period for when its
   * process exists, and a running one is handed to `startKill`.
   */
  kill(containerId: string, graceMs: number, startKill: (live: L, graceMs: number) => void): Promise<Termination> {
    const ended = this.ended.get(containerId);
    if (ended) return Promise.resolve(ended);
    const live = this.live.get(containerId);
    if (!live) return Promise.reject(notFound(containerId));
    if (live.pid === undefined) {
      live.killRequested = true;
      live.pendingKillGraceMs = Math.min(graceMs, live.pendingKillGraceMs ?? Infinity);
    } else {
      startKill(live, graceMs);
    }
    return live.done;
  }

  /** Ids of the containers whose process exists. */
  running(): string[] {
    return [...this.live.values()].filter((live) => live.pid !== undefined).map((live) => live.spec.containerId);
  }

  /** Refuses launches from now on, waits for those in progress, and returns what is live. */
  async close(): Promise<L[]> {
    this.closed = true;
    await Promise.allSettled([...this.launching]);
    return [...this.live.values()];
  }
}

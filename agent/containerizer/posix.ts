/**
 * The posix containerizer: each task is a plain child process in its own process group, with no
 * resource isolation. It is the fallback where cgroups are unavailable and the reference behaviour
 * the Linux containerizer must match (sandbox layout, environment, kill escalation, messages).
 *
 * Known limit, shared with Mesos's posix launcher: a task that calls `setsid()` or `setpgid()` on a
 * descendant moves that descendant out of the group, and it then survives `kill`/`destroyAll`. Only
 * the Linux containerizer (a cgroup per container) closes that hole.
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, readFile, readdir, type FileHandle } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import type { BaseLogger } from "pino";
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../../sdk/clock.ts";
import {
  ContainerizerError,
  DEFAULT_MAX_REMEMBERED_TERMINATIONS,
  type ContainerHandle,
  type ContainerSpec,
  type ContainerUsage,
  type Containerizer,
  type Termination,
} from "./types.ts";
import {
  CLOCK_TICKS_PER_SECOND,
  DEFAULT_PATH,
  commandText,
  describe,
  exitMessage,
  launchFailed,
  nonNegative,
  notFound,
  openOutputFiles,
  readProcStat,
  resolveUser,
  sendSignal,
  taskEnvironment,
  type ProcStat,
  type UserIdentity,
  ContainerRecords,
} from "./common.ts";

/** The subset of a pino logger this module uses; a pino logger (or child) fits as is. */
export type PosixContainerizerLog = Pick<BaseLogger, "debug" | "info" | "warn" | "error">;

/** Options of {@link PosixContainerizer}. */
export interface PosixContainerizerOptions {
  /** Source of `startedAtMs`, usage timestamps and kill deadlines. @default systemClock */
  clock?: Clock;
  /** Schedules the SIGKILL that follows SIGTERM. @default systemTimers */
  timers?: Timers;
  /** Time between SIGTERM and SIGKILL when `kill` is called without one. @default 3000 */
  defaultGracePeriodMs?: number;
  /** Value of the task's `HOST` variable. @default os.hostname() */
  hostname?: string;
  /**
   * Environment every task starts from, before the task's own `env` and Corral's variables. The
   * agent's own environment is deliberately not inherited: it may hold bus credentials.
   * @default { PATH: <the agent's PATH, or a standard one> }
   */
  baseEnv?: Record<string, string>;
  /** How many ended containers keep their termination for late `wait`/`kill` calls. @default 1000 */
  maxRememberedTerminations?: number;
  /** Structured logger (pino-compatible). @default no logging */
  log?: PosixContainerizerLog;
}

/** How long a container's end waits for the rest of its group to die after SIGKILL. */
const GROUP_EXIT_TIMEOUT_MS = 5000;

interface Live {
  spec: ContainerSpec;
  pid: number | undefined;
  startedAtMs: number;
  killRequested: boolean;
  /** The main process has exited; the rest of its group is being reaped. */
  exited: boolean;
  /** Absolute time at which SIGKILL is due; undefined until the first kill. */
  killDeadlineMs: number | undefined;
  escalation: TimerHandle | undefined;
  /** Set when `kill` arrives before the process exists; applied right after spawn. */
  pendingKillGraceMs: number | undefined;
  done: Promise<Termination>;
  resolve: (termination: Termination) => void;
}

/**
 * Runs command tasks as child processes.
 *
 * - Shell commands run as `/bin/sh -c <value>`, others as argv (`arguments[0]` becomes argv[0]).
 * - Each task is a new session and process group (`detached`), so signals reach its children too.
 * - The working directory is the sandbox; stdout and stderr go to the sandbox's `stdout` and
 *   `stderr` files through file descriptors (not pipes), so output survives an agent restart and a
 *   chatty task never blocks on a full pipe.
 * - When the task's main process ends, whatever is left of its group is SIGKILLed, as Mesos does
 *   when it destroys an ended container.
 */
export class PosixContainerizer implements Containerizer {
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly defaultGracePeriodMs: number;
  private readonly hostname: string;
  private readonly baseEnv: Record<string, string>;
  private readonly maxRememberedTerminations: number;
  private readonly log: PosixContainerizerLog | undefined;

  private readonly records: ContainerRecords<Live>;
  /** Ended containers, oldest first, bounded by `maxRememberedTerminations`. */

  constructor(options: PosixContainerizerOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.defaultGracePeriodMs = nonNegative(options.defaultGracePeriodMs ?? 3000, "defaultGracePeriodMs");
    this.hostname = options.hostname ?? osHostname();
    this.baseEnv = { ...(options.baseEnv ?? { PATH: process.env.PATH ?? DEFAULT_PATH }) };
    this.maxRememberedTerminations = nonNegative(options.maxRememberedTerminations ?? DEFAULT_MAX_REMEMBERED_TERMINATIONS, "maxRememberedTerminations");
    this.records = new ContainerRecords(this.maxRememberedTerminations);
    this.log = options.log;
  }

  launch(spec: ContainerSpec): Promise<ContainerHandle> {
    const started = this.launchInner(spec);
    // destroyAll must not miss a container that is being started while it runs.
    return this.records.track(started);
  }

  private async launchInner(spec: ContainerSpec): Promise<ContainerHandle> {
    const id = spec.containerId;
    this.records.admit(spec);
    const live = this.register(spec);
    try {
      await this.spawnTask(spec, live);
    } catch (cause) {
      const error =
        cause instanceof ContainerizerError
          ? cause
          : new ContainerizerError("CORRAL_ERR_CONTAINER_LAUNCH_FAILED", `container ${id}: ${describe(cause)}`, { containerId: id, cause });
      this.records.live.delete(id);
      // A kill or wait issued during the launch holds `done`; it must not hang. The id is not
      // remembered, so the agent may retry the launch under the same id.
      live.resolve({
        exitCode: null,
        signal: null,
        killed: live.killRequested,
        reason: "REASON_CONTAINER_LAUNCH_FAILED",
        message: `Container launch failed: ${error.message}`,
      });
      throw error;
    }
    this.log?.info({ containerId: id, taskId: spec.taskId, frameworkId: spec.frameworkId, pid: live.pid }, "container launched");
    if (live.pendingKillGraceMs !== undefined) this.startKill(live, live.pendingKillGraceMs);
    return { containerId: id, pid: live.pid, sandboxDir: spec.sandboxDir, startedAtMs: live.startedAtMs };
  }

  private register(spec: ContainerSpec): Live {
    let resolve!: (termination: Termination) => void;
    const done = new Promise<Termination>((r) => (resolve = r));
    const live: Live = {
      spec,
      pid: undefined,
      startedAtMs: this.clock.now(),
      killRequested: false,
      exited: false,
      killDeadlineMs: undefined,
      escalation: undefined,
      pendingKillGraceMs: undefined,
      done,
      resolve,
    };
    this.records.live.set(spec.containerId, live);
    return live;
  }

  /** Prepares the sandbox and starts the process; resolves once it exists, with `live.pid` set. */
  private async spawnTask(spec: ContainerSpec, live: Live): Promise<void> {
    const where = `sandbox ${spec.sandboxDir}`;
    const identity = await resolveUser(spec.user).catch((error: unknown) => {
      throw launchFailed(spec, describe(error), error);
    });
    await mkdir(spec.sandboxDir, { recursive: true }).catch((error: unknown) => {
      throw launchFailed(spec, `cannot create ${where}: ${describe(error)}`, error);
    });
    let stdout: FileHandle | undefined;
    let stderr: FileHandle | undefined;
    try {
      ({ stdout, stderr } = await openOutputFiles(spec.sandboxDir, identity));
      const child = this.startProcess(spec, identity, stdout.fd, stderr.fd);
      child.once("exit", (code, signal) => void this.onExit(live, code, signal));
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
      // Before any further await: a quick task may exit while the descriptors are being closed.
      live.pid = child.pid;
      // Errors after spawn only concern signalling through `child`, which we never do.
      child.on("error", (error) => this.log?.warn({ containerId: spec.containerId, err: error }, "child process error"));
    } catch (error) {
      if (error instanceof ContainerizerError) throw error;
      throw launchFailed(spec, `cannot start ${commandText(spec)} in ${where}: ${describe(error)}`, error);
    } finally {
      // The child holds its own copies; ours would only leak.
      await stdout?.close().catch(() => undefined);
      await stderr?.close().catch(() => undefined);
    }
  }

  private startProcess(spec: ContainerSpec, identity: UserIdentity | undefined, stdoutFd: number, stderrFd: number): ChildProcess {
    const { command } = spec;
    const argv = command.arguments ?? [];
    const file = command.shell ? "/bin/sh" : command.value;
    const args = command.shell ? ["-c", command.value] : argv.slice(1);
    return spawn(file, args, {
      cwd: spec.sandboxDir,
      env: this.environment(spec),
      stdio: ["ignore", stdoutFd, stderrFd],
      detached: true,
      argv0: command.shell ? "sh" : (argv[0] ?? command.value),
      ...(identity ? { uid: identity.uid, gid: identity.gid } : {}),
    });
  }

  /** The task's environment: base, then the task's own, then Corral's (which the task cannot override). */
  private environment(spec: ContainerSpec): Record<string, string> {
    return taskEnvironment(spec, this.hostname, this.baseEnv);
  }

  private async onExit(live: Live, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (!this.records.live.has(live.spec.containerId) || live.pid === undefined) return;
    live.exited = true;
    // Decided now: a kill arriving while the group is reaped did not end the task.
    const killed = live.killRequested;
    live.escalation?.cancel();
    // A task's leftovers must not outlive it, and "ended" must mean no process is left.
    await this.killGroupAndWait(live).catch((error: unknown) =>
      this.log?.error({ containerId: live.spec.containerId, err: error }, "cannot reap the container's process group"),
    );
    const termination: Termination = {
      exitCode: signal === null ? code : null,
      signal,
      killed,
      message: exitMessage(code, signal),
    };
    this.records.live.delete(live.spec.containerId);
    this.records.remember(live.spec.containerId, termination);
    this.log?.info({ containerId: live.spec.containerId, taskId: live.spec.taskId, ...termination }, "container ended");
    live.resolve(termination);
  }

  /**
   * SIGKILLs what is left of the group and waits until it is empty. Other members are not our
   * children, so there is nothing to wait on but the group itself: poll with a short backoff.
   */
  private async killGroupAndWait(live: Live): Promise<void> {
    const pgid = live.pid!;
    let waitedMs = 0;
    for (let delayMs = 1; ; delayMs = Math.min(delayMs * 2, 50)) {
      this.signal(live, "SIGKILL");
      if (!(await groupHasLiveMembers(pgid))) return;
      if (waitedMs >= GROUP_EXIT_TIMEOUT_MS) {
        this.log?.warn({ containerId: live.spec.containerId, taskId: live.spec.taskId, pgid }, "processes of the container survive SIGKILL");
        return;
      }
      await new Promise<void>((resolve) => this.timers.set(delayMs, resolve));
      waitedMs += delayMs;
    }
  }

  async kill(containerId: string, gracePeriodMs?: number): Promise<Termination> {
    const grace = nonNegative(gracePeriodMs ?? this.defaultGracePeriodMs, "gracePeriodMs");
    return this.records.kill(containerId, grace, (live, graceMs) => this.startKill(live, graceMs));
  }

  /** SIGTERM now and SIGKILL at the deadline; a later kill can only bring the deadline forward. */
  private startKill(live: Live, graceMs: number): void {
    const pid = live.pid;
    if (pid === undefined || live.exited || this.records.live.get(live.spec.containerId) !== live) return;
    const now = this.clock.now();
    const deadline = now + graceMs;
    const first = live.killDeadlineMs === undefined;
    live.killRequested = true;
    if (!first && deadline >= live.killDeadlineMs!) return;
    live.killDeadlineMs = deadline;
    live.escalation?.cancel();
    live.escalation = undefined;
    this.log?.info({ containerId: live.spec.containerId, taskId: live.spec.taskId, graceMs }, "killing container");
    if (graceMs <= 0) {
      this.signal(live, "SIGKILL");
      return;
    }
    if (first) this.signal(live, "SIGTERM");
    live.escalation = this.timers.set(graceMs, () => {
      if (this.records.live.get(live.spec.containerId) !== live) return;
      this.log?.warn({ containerId: live.spec.containerId, taskId: live.spec.taskId }, "grace period over; sending SIGKILL");
      this.signal(live, "SIGKILL");
    });
  }

  private signal(live: Live, signal: NodeJS.Signals): void {
    const failure = sendSignal(-live.pid!, signal);
    if (failure) this.log?.error({ containerId: live.spec.containerId, pgid: live.pid, signal, code: failure }, "cannot signal container");
  }

  wait(containerId: string): Promise<Termination> {
    return this.records.wait(containerId);
  }

  async usage(containerId: string): Promise<ContainerUsage> {
    const live = this.records.live.get(containerId);
    if (!live || live.pid === undefined) throw notFound(containerId);
    const totals = await groupUsage(live.pid);
    return { containerId, timestampMs: this.clock.now(), ...totals };
  }

  containers(): string[] {
    return this.records.running();
  }

  async destroyAll(): Promise<void> {
    const all = await this.records.close();

    for (const live of all) this.startKill(live, 0);
    await Promise.all(all.map((live) => live.done));
  }
}

/**
 * Whether any process of the group is still running. Zombies do not count: orphaned members are
 * reaped by init, on its schedule, and hold no resources but a pid.
 */
async function groupHasLiveMembers(pgid: number): Promise<boolean> {
  try {
    process.kill(-pgid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  const members = await groupMembers(pgid);
  // Without /proc there is no way to tell zombies apart; trust the signal probe.
  return members === undefined || members.some((member) => member.state !== "Z");
}

/** Processes of a group from /proc, zombies included; undefined when /proc is unavailable. */
async function groupMembers(pgid: number): Promise<ProcStat[] | undefined> {
  const entries = await readdir("/proc").catch(() => undefined);
  if (entries === undefined) return undefined;
  const members: ProcStat[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readProcStat(Number(entry));
    if (stat !== undefined && Number(stat.fields[2]) === pgid) members.push(stat);
  }
  return members;
}

/** Sums CPU time and RSS over the live (non-zombie) members of a process group, from /proc. */
async function groupUsage(pgid: number): Promise<Omit<ContainerUsage, "containerId" | "timestampMs">> {
  const totals = { cpusUserTimeSecs: 0, cpusSystemTimeSecs: 0, memRssBytes: 0, processes: 0 };
  for (const { pid, state, fields } of (await groupMembers(pgid)) ?? []) {
    if (state === "Z") continue;
    totals.processes += 1;
    totals.cpusUserTimeSecs += Number(fields[11]) / CLOCK_TICKS_PER_SECOND;
    totals.cpusSystemTimeSecs += Number(fields[12]) / CLOCK_TICKS_PER_SECOND;
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    const rssKb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    if (rssKb !== undefined) totals.memRssBytes += Number(rssKb) * 1024;
  }
  return totals;
}

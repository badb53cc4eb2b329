/**
 * The Linux containerizer: each task runs in its own cgroups (memory without swap, cpu weight and a
 * hard CFS quota, a pids limit) and its own pid, mount, uts, ipc and cgroup namespaces, as an
 * unprivileged user with no capabilities, in a read-only view of the host with private tmpfs and its
 * sandbox as working directory. See `./linux-launch.ts` for the process tree and why it is built so.
 *
 * Isolation degrades, visibly, where the host cannot provide it (see {@link LinuxIsolation}):
 * cgroups (v2 or v1, chosen per controller) → user namespaces with rlimits → a process group with
 * rlimits (the posix containerizer). {@link LinuxContainerizer.isolation} says which one is in force
 * and the factory logs a warning once when it is not cgroups.
 *
 * Designed for re-attachment after an agent restart (see {@link LinuxContainerizer.recover}): containers are launched
 * detached (own session, output to files), a supervisor outside the container writes the exit status to
 * `<sandbox>/.corral/exit_status`, `<sandbox>/.corral/container.json` records what a later agent needs
 * (supervisor pid and start time, cgroup name, isolation), and cgroups are named from the container id.
 *
 * @module
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { access, lstat, mkdir, readFile, readdir, readlink, rm, stat as fsStat, writeFile } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import { delimiter, dirname, isAbsolute, join } from "node:path";
import type { BaseLogger } from "pino";
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../../sdk/clock.ts";
import { cgroupsForLayout, type Cgroups, type CgroupStats } from "./cgroups.ts";
import { parseMountInfo, readCgroupLayout } from "./cgroups-layout.ts";
import {
  CLOCK_TICKS_PER_SECOND,
  DEFAULT_PATH,
  commandText,
  decodeShellStatus,
  describe,
  exitMessage,
  launchFailed,
  lookupUser,
  nonNegative,
  notFound,
  openOutputFiles,
  readProcStat,
  runProcessGroup,
  sendSignal,
  taskEnvironment,
  validateSpec,
  type ProcStat,
  type UserIdentity,
  ContainerRecords,
} from "./common.ts";
import { LaunchHelper } from "./launch-helper.ts";
import {
  BWRAP_INFO_FILE,
  EXIT_STATUS_FILE,
  SUPERVISOR_FILE,
  containerHostname,
  execCommand,
  mountsToProtect,
  parseCredentials,
  splitEnvironment,
  supervisorScript,
  type LaunchPlan,
  type LaunchTools,
  type Launcher,
} from "./linux-launch.ts";
import { PosixContainerizer } from "./posix.ts";
import {
  ContainerizerError,
  DEFAULT_MAX_REMEMBERED_TERMINATIONS,
  type CheckpointedContainer,
  type ContainerExecRequest,
  type ContainerExecResult,
  type ContainerHandle,
  type ContainerSpec,
  type ContainerUsage,
  type Containerizer,
  type RecoveredContainer,
  type RecoverOptions,
  type Termination,
} from "./types.ts";

/**
 * The isolation in force, strongest first:
 * - `"cgroups-v2"` / `"cgroups-v1"`: cgroups enforce memory, cpu and pids; namespaces; user switch.
 *   `"cgroups-v1"` also covers a host that splits the controllers between v1 and v2.
 * - `"userns"`: no writable cgroups; namespaces through a user namespace, and rlimits as best-effort
 *   limits (address space for memory, processes per user namespace, open files). No OOM detection.
 * - `"posix"`: neither; a process group with rlimits (through `prlimit`), as the posix containerizer.
 */
export type LinuxIsolation = "cgroups-v2" | "cgroups-v1" | "userns" | "posix";

/** The subset of a pino logger this module uses; a pino logger (or child) fits as is. */
export type LinuxContainerizerLog = Pick<BaseLogger, "debug" | "info" | "warn" | "error">;

/** Reason a container ended over its memory limit (the agent reports it as TASK_FAILED with this reason). */
export const REASON_MEMORY_LIMITATION = "REASON_CONTAINER_LIMITATION_MEMORY";
/** Reason a container was destroyed for using more disk than it was given. */
export const REASON_DISK_LIMITATION = "REASON_CONTAINER_LIMITATION_DISK";

/** Options of {@link LinuxContainerizer.create}. */
export interface LinuxContainerizerOptions {
  /** Source of `startedAtMs`, usage timestamps and kill deadlines. @default systemClock */
  clock?: Clock;
  /** Schedules kill escalation and the limitation polls. @default systemTimers */
  timers?: Timers;
  /** Time between SIGTERM to the container's init and killing the whole cgroup. @default 3000 */
  defaultGracePeriodMs?: number;
  /** Value of the task's `HOST` variable (the container's own host name is derived from the task id). @default os.hostname() */
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
  log?: LinuxContainerizerLog;
  /** The user tasks run as when they name none. @default "nobody" */
  defaultUser?: string;
  /**
   * Users a task may ask for in its `user` field (names or uids). Any other is refused, so a framework
   * cannot pick an arbitrary account on the agent.
   * @default [] (only `defaultUser`)
   */
  allowedUsers?: readonly string[];
  /** Whether a task may run as uid 0 (through `user` or `defaultUser`). @default false */
  allowRoot?: boolean;
  /** Cap each container at its `cpus` with a hard CFS quota; when false, `cpus` only sets its relative weight. @default true */
  cpuQuota?: boolean;
  /** CFS period in microseconds. @default 100000 */
  cfsPeriodUs?: number;
  /** Maximum processes (and threads) per container, the container's own init and launcher included; null for none. @default 1024 */
  pidsMax?: number | null;
  /** RLIMIT_NOFILE (soft and hard) of every task. @default 65536 */
  nofileLimit?: number;
  /** Size cap of each private tmpfs (/tmp, /dev/shm, /var/tmp), MiB. Their contents count against the memory limit too. @default the task's memMb */
  tmpfsSizeMb?: number;
  /** Destroy a container whose sandbox grows past its `diskMb` (REASON_CONTAINER_LIMITATION_DISK). @default true */
  enforceDiskLimit?: boolean;
  /** How often the sandbox's disk usage is measured. @default 15000 */
  diskPollIntervalMs?: number;
  /** Entries a disk measurement visits at most (a bound on its cost); usage past it reads as a lower bound. @default 100000 */
  maxDiskScanEntries?: number;
  /** How often the OOM-kill counter is read while a container runs (it is always read when it ends). @default 1000 */
  oomPollIntervalMs?: number;
  /** Parent of the containers' cgroups, relative to each hierarchy's mount point. @default "corral" */
  cgroupsRoot?: string;
  /**
   * The strongest isolation to try: `"auto"` tries cgroups first; `"userns"` and `"posix"` start
   * lower (for hosts where an operator knows cgroups must not be touched, and for tests).
   * @default "auto"
   */
  isolation?: "auto" | "userns" | "posix";
  /**
   * Paths of the external tools, or null to not use one (e.g. `{ bwrap: null }` forces the unshare path).
   * @default each found on PATH
   */
  tools?: { [K in keyof LaunchTools]?: string | null };
}

/** A usage sample with what cgroups add over the posix one (Mesos `ResourceStatistics` names). */
export interface LinuxContainerUsage extends ContainerUsage {
  /** The container's CPU limit in cores (its quota, or its weight when the quota is off). */
  cpusLimit: number;
  /** CFS periods elapsed while runnable; 0 without cgroups. */
  cpusNrPeriods: number;
  /** Periods in which the container was throttled; 0 without cgroups. */
  cpusNrThrottled: number;
  /** Total time the container was throttled, seconds; 0 without cgroups. */
  cpusThrottledTimeSecs: number;
  /** Memory charged to the container now (anonymous, page cache, tmpfs), bytes. */
  memTotalBytes: number;
  /** Peak of `memTotalBytes`, bytes; undefined without cgroups or where the kernel does not track it. */
  memPeakBytes: number | undefined;
  /** The memory limit in force, bytes. */
  memLimitBytes: number;
}

const MIB = 1024 * 1024;
/** For this long, destroying a container kills its namespace's init only (see `destroy`). */
const DESTROY_INIT_ONLY_MS = 500;
/** After the reported init was killed, this long passes before every process of the cgroup is killed. */
const DESTROY_AFTER_REPORTED_INIT_MS = 10_000;
/** After this long destroying, the supervisor's own process group is killed too (last resort). */
const DESTROY_SUPERVISOR_AFTER_MS = 2000;
/** How long a SIGTERM waits for the container's init to appear (it may still be setting up). */
const FIND_INIT_TIMEOUT_MS = 2000;
const PROBE_TIMEOUT_MS = 5000;
/**
 * How often supervisors are checked for liveness. For those this agent started, their exit report
 * is what normally tells of their end and this catches one killed before it could report (the
 * last-resort kill); for adopted ones (after an agent restart) it is the only way to learn of it.
 */
const SUPERVISOR_SWEEP_MS = 1000;
/** An empty orphan cgroup younger than this may be a launch in progress of another agent; it is kept. */
const EMPTY_ORPHAN_MIN_AGE_MS = 60_000;

interface Live {
  spec: ContainerSpec;
  /** The cgroup name (relative), when cgroups are in use. */
  cgroup: string | undefined;
  /** The supervisor's pid. */
  pid: number | undefined;
  /** The launch helper's number for it; undefined for an adopted container. */
  launch: number | undefined;
  /** An adopted container's supervisor start time (/proc stat field 22), which tells a reused pid apart. */
  adoptedStartTicks: number | undefined;
  /** The status the supervisor reported before its pid was known. */
  earlyExitStatus: number | undefined;
  /** The host pid of the namespace's pid 1, once read from bwrap's report. */
  initPid: number | undefined;
  startedAtMs: number;
  killRequested: boolean;
  exited: boolean;
  onExited: Promise<void>;
  markExited: () => void;
  killDeadlineMs: number | undefined;
  escalation: TimerHandle | undefined;
  pendingKillGraceMs: number | undefined;
  destroying: Promise<void> | undefined;
  limitation: { reason: string; message: string } | undefined;
  monitors: TimerHandle[];
  done: Promise<Termination>;
  resolve: (termination: Termination) => void;
}

/** What {@link LinuxContainerizer.create} found out about the host. */
interface HostEnvironment {
  isolation: LinuxIsolation;
  /** Why isolation is weaker than cgroups, for the warning. */
  degradedBecause: string | undefined;
  cgroups: Cgroups | undefined;
  launcher: Launcher | undefined;
  tools: LaunchTools;
  agentIsRoot: boolean;
  /** The agent's own hard rlimits: a task's can only be lowered below them (raising needs CAP_SYS_RESOURCE). */
  hardLimits: { nofile: number; nproc: number; addressSpaceKb: number };
}

/**
 * Runs command tasks in isolated Linux containers. Construct with {@link LinuxContainerizer.create},
 * which probes the host; {@link LinuxContainerizer.isolation} then tells what is enforced.
 *
 * - Output goes to the sandbox's `stdout`/`stderr` files; the sandbox is the working directory and
 *   the only writable place besides the private tmpfs.
 * - `kill`: SIGTERM to the container's init (which forwards it to the workload's process group), then
 *   after the grace period every process of the cgroup is killed; no process of the container survives.
 * - A container ended by its memory limit (the kernel's OOM-kill counter moved) ends with reason
 *   `REASON_CONTAINER_LIMITATION_MEMORY`; one whose sandbox outgrew its disk is destroyed with
 *   `REASON_CONTAINER_LIMITATION_DISK`. Either way `killed` stays false: the task failed. (The exit
 *   code is not used to detect OOM: unshare reports an OOM-killed workload as a plain exit 1.)
 * - {@link ContainerHandle.pid} is the supervisor's pid (see `./linux-launch.ts`): the process that
 *   outlives an agent restart and records the exit status, i.e. what a re-attaching agent watches.
 * - Exit statuses above 128 are read as "killed by signal status - 128" (what sh, tini and bwrap
 *   report); a task that exits 137 on its own is therefore reported as SIGKILL.
 */
export class LinuxContainerizer implements Containerizer {
  /** The isolation in force on this host; decided once, by {@link LinuxContainerizer.create}. */
  readonly isolation: LinuxIsolation;
  /** The namespace tool in use and whether tini is pid 1 (else a shell init); both undefined in `"posix"` isolation. */
  readonly launcher: { tool: Launcher | undefined; init: "tini" | "sh" | undefined };
  /**
   * Runs a short command inside a running container (see {@link Containerizer.exec}): in its
   * cgroups (so it counts against its limits) and rlimits, its init's pid, mount, uts and ipc
   * namespaces and its sandbox, as its task's user with no new privileges and no capabilities.
   * Offered with cgroups isolation where nsenter (util-linux) is installed; undefined otherwise
   * (`"userns"` and `"posix"` isolation), where callers run such commands on the host.
   */
  readonly exec: ((containerId: string, request: ContainerExecRequest) => Promise<ContainerExecResult>) | undefined;

  private readonly host: HostEnvironment;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly defaultGracePeriodMs: number;
  private readonly hostname: string;
  private readonly baseEnv: Record<string, string>;
  private readonly maxRememberedTerminations: number;
  private readonly log: LinuxContainerizerLog | undefined;
  private readonly defaultUser: string;
  private readonly allowedUsers: ReadonlySet<string>;
  private readonly allowRoot: boolean;
  private readonly cpuQuota: boolean;
  private readonly cfsPeriodUs: number;
  private readonly pidsMax: number | null;
  private readonly nofileLimit: number;
  private readonly tmpfsSizeMb: number | undefined;
  private readonly enforceDiskLimit: boolean;
  private readonly diskPollIntervalMs: number;
  private readonly maxDiskScanEntries: number;
  private readonly oomPollIntervalMs: number;
  private readonly cgroupsRoot: string;
  /** Set in `"posix"` isolation: that containerizer does the work, on commands wrapped in prlimit. */
  private readonly posix: PosixContainerizer | undefined;

  private readonly records: ContainerRecords<Live>;
  /** Starts supervisors (see `./launch-helper.ts`); undefined in `"posix"` isolation. */
  private readonly helper: LaunchHelper | undefined;
  /** Containers by their launch-helper number, until their end is known. */
  private readonly byLaunch = new Map<number, Live>();
  /** Adopted containers, until their end is known. */
  private readonly adopted = new Set<Live>();
  private sweep: TimerHandle | undefined;
  /** Which of /tmp, /dev/shm and /var/tmp exist (they get private tmpfs); looked up once. */
  private tmpfsDirs: Promise<string[]> | undefined;

  /**
   * Probes the host (cgroup layout and writability, tools, namespaces) and returns a containerizer
   * using the strongest isolation that works. Logs a warning when that is not cgroups.
   */
  static async create(options: LinuxContainerizerOptions = {}): Promise<LinuxContainerizer> {
    const host = await probeHost(options);
    const containerizer = new LinuxContainerizer(options, host);
    const facts = { isolation: host.isolation, launcher: containerizer.launcher.tool, init: containerizer.launcher.init };
    if (host.degradedBecause !== undefined) {
      options.log?.warn({ ...facts, because: host.degradedBecause }, `container isolation degraded to "${host.isolation}"`);
    } else {
      options.log?.info(facts, "container isolation");
    }
    return containerizer;
  }

  private constructor(options: LinuxContainerizerOptions, host: HostEnvironment) {
    this.host = host;
    this.isolation = host.isolation;
    this.launcher = { tool: host.launcher, init: host.launcher === undefined ? undefined : host.tools.tini !== undefined ? "tini" : "sh" };
    this.exec = host.cgroups !== undefined && host.tools.nsenter !== undefined ? (containerId, request) => this.execInside(containerId, request) : undefined;
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.defaultGracePeriodMs = nonNegative(options.defaultGracePeriodMs ?? 3000, "defaultGracePeriodMs");
    this.hostname = options.hostname ?? osHostname();
    this.baseEnv = { ...(options.baseEnv ?? { PATH: process.env.PATH ?? DEFAULT_PATH }) };
    this.maxRememberedTerminations = nonNegative(options.maxRememberedTerminations ?? DEFAULT_MAX_REMEMBERED_TERMINATIONS, "maxRememberedTerminations");
    this.records = new ContainerRecords(this.maxRememberedTerminations);
    this.log = options.log;
    this.defaultUser = options.defaultUser ?? "nobody";
    this.allowedUsers = new Set(options.allowedUsers ?? []);
    this.allowRoot = options.allowRoot ?? false;
    this.cpuQuota = options.cpuQuota ?? true;
    this.cfsPeriodUs = positiveInteger(options.cfsPeriodUs ?? 100_000, "cfsPeriodUs");
    this.pidsMax = options.pidsMax === null ? null : positiveInteger(options.pidsMax ?? 1024, "pidsMax");
    this.nofileLimit = positiveInteger(options.nofileLimit ?? 65536, "nofileLimit");
    this.tmpfsSizeMb = options.tmpfsSizeMb === undefined ? undefined : nonNegative(options.tmpfsSizeMb, "tmpfsSizeMb");
    this.enforceDiskLimit = options.enforceDiskLimit ?? true;
    this.diskPollIntervalMs = positiveInteger(options.diskPollIntervalMs ?? 15_000, "diskPollIntervalMs");
    this.maxDiskScanEntries = positiveInteger(options.maxDiskScanEntries ?? 100_000, "maxDiskScanEntries");
    this.oomPollIntervalMs = positiveInteger(options.oomPollIntervalMs ?? 1000, "oomPollIntervalMs");
    this.cgroupsRoot = checkCgroupsRoot(options.cgroupsRoot ?? "corral");
    this.posix =
      host.isolation === "posix"
        ? new PosixContainerizer({
            clock: this.clock,
            timers: this.timers,
            defaultGracePeriodMs: this.defaultGracePeriodMs,
            hostname: this.hostname,
            baseEnv: this.baseEnv,
            maxRememberedTerminations: this.maxRememberedTerminations,
            ...(this.log ? { log: this.log } : {}),
          })
        : undefined;
    this.helper =
      host.isolation === "posix"
        ? undefined
        : new LaunchHelper(
            host.tools.bash !== undefined
              ? { shell: host.tools.bash, shellArgs: ["--norc", "--noprofile"], onExit: (launch, status) => this.onReportedExit(launch, status), log: this.log }
              : { setsid: host.tools.setsid, onExit: (launch, status) => this.onReportedExit(launch, status), log: this.log },
          );
  }

  // ----------------------------------------------------------------------------------------------
  // launch
  // ----------------------------------------------------------------------------------------------

  launch(spec: ContainerSpec): Promise<ContainerHandle> {
    const started = this.posix ? this.launchPosix(spec) : this.launchInner(spec);
    // destroyAll must not miss a container that is being started while it runs.
    return this.records.track(started);
  }

  private async launchInner(spec: ContainerSpec): Promise<ContainerHandle> {
    const id = spec.containerId;
    this.records.admit(spec);
    const live = this.register(spec);
    try {
      await this.startContainer(spec, live);
    } catch (cause) {
      const error = cause instanceof ContainerizerError ? cause : launchFailed(spec, describe(cause), cause);
      this.records.live.delete(id);
      if (live.cgroup !== undefined) await this.removeCgroup(live);
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
    this.log?.info({ containerId: id, taskId: spec.taskId, frameworkId: spec.frameworkId, pid: live.pid, cgroup: live.cgroup }, "container launched");
    this.startMonitors(live);
    if (live.pendingKillGraceMs !== undefined) this.startKill(live, live.pendingKillGraceMs);
    return { containerId: id, pid: live.pid, sandboxDir: spec.sandboxDir, startedAtMs: live.startedAtMs, ...(live.cgroup === undefined ? {} : { cgroup: live.cgroup }) };
  }

  private register(spec: ContainerSpec): Live {
    let resolve!: (termination: Termination) => void;
    const done = new Promise<Termination>((r) => (resolve = r));
    let markExited!: () => void;
    const onExited = new Promise<void>((r) => (markExited = r));
    const live: Live = {
      spec,
      cgroup: undefined,
      pid: undefined,
      launch: undefined,
      adoptedStartTicks: undefined,
      earlyExitStatus: undefined,
      initPid: undefined,
      startedAtMs: this.clock.now(),
      killRequested: false,
      exited: false,
      onExited,
      markExited,
      killDeadlineMs: undefined,
      escalation: undefined,
      pendingKillGraceMs: undefined,
      destroying: undefined,
      limitation: undefined,
      monitors: [],
      done,
      resolve,
    };
    this.records.live.set(spec.containerId, live);
    return live;
  }

  /**
   * Which user the task runs as: its own `user` only when allowed, else the default; never root
   * unless allowed. A non-root agent cannot switch users, so there the task runs as the agent.
   */
  private async taskIdentity(spec: ContainerSpec): Promise<UserIdentity> {
    const requested = spec.user !== undefined && spec.user !== "" ? spec.user : undefined;
    if (!this.host.agentIsRoot) {
      const own: UserIdentity = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
      if (requested !== undefined && (await lookupUser(requested)).uid !== own.uid) {
        throw new Error(`cannot run as user "${requested}": the agent is not root and cannot switch users`);
      }
      return own;
    }
    const identity = await lookupUser(requested ?? this.defaultUser);
    // Root first: it is the refusal that matters most, whatever the allow-list says.
    if (identity.uid === 0 && !this.allowRoot) {
      throw new Error(`refusing to run a task as root (user "${requested ?? this.defaultUser}"); set allowRoot to permit it`);
    }
    if (requested !== undefined && requested !== this.defaultUser && !this.allowedUsers.has(requested)) {
      throw new Error(`user "${requested}" is not allowed (allowed: ${[this.defaultUser, ...this.allowedUsers].map((u) => JSON.stringify(u)).join(", ")})`);
    }
    return identity;
  }

  /** Prepares the sandbox and cgroups and starts the supervisor; resolves once it exists, with `live.pid` set. */
  private async startContainer(spec: ContainerSpec, live: Live): Promise<void> {
    const env = taskEnvironment(spec, this.hostname, this.baseEnv);
    const cgroups = this.host.cgroups;
    if (cgroups) live.cgroup = containerCgroupName(this.cgroupsRoot, spec.containerId);
    // The steps before the supervisor do not depend on each other: run together, they do not queue
    // one behind the other in the thread pool. All settle before a failure is thrown, so the caller's
    // clean-up never races a cgroup still being created.
    this.tmpfsDirs ??= existingDirs(["/tmp", "/dev/shm", "/var/tmp"]);
    const unshare = this.host.launcher === "unshare";
    const [identity, metaDir, tmpfsDirs, mountinfo] = await settleAll([
      this.taskIdentity(spec).catch((error: unknown) => {
        throw launchFailed(spec, describe(error), error);
      }),
      prepareSandbox(spec),
      this.tmpfsDirs,
      // Read per launch: the host's mounts change. The container's mount namespace is a copy of ours.
      unshare ? readFile("/proc/self/mountinfo", "utf8").catch(() => "") : "",
      spec.command.shell ? undefined : checkProgram(spec, env.PATH ?? DEFAULT_PATH),
      cgroups && live.cgroup !== undefined ? this.setUpCgroup(cgroups, live.cgroup, spec) : undefined,
    ] as const);

    const { privileged, workloadOnly } = splitEnvironment(env);
    const plan: LaunchPlan = {
      launcher: this.host.launcher!,
      tools: this.host.tools,
      privilege: cgroups ? "root" : "userns",
      agentIsRoot: this.host.agentIsRoot,
      identity,
      hostname: containerHostname(spec.taskId),
      tmpfsBytes: Math.max(1, Math.round((this.tmpfsSizeMb ?? spec.resources.memMb) * MIB)),
      tmpfsDirs,
      ulimits: this.ulimits(spec),
      enterPaths: cgroups && live.cgroup !== undefined ? cgroups.enterPaths(live.cgroup) : [],
      metaDir,
      readOnlyMounts: unshare ? mountsToProtect(parseMountInfo(mountinfo)) : ["/"],
      workloadOnlyEnv: workloadOnly,
    };

    try {
      // The task's user owns its sandbox and output files; the supervisor appends to them. The
      // script is root-only: it holds the task's environment.
      const script = join(metaDir, SUPERVISOR_FILE);
      await Promise.all([
        openOutputFiles(spec.sandboxDir, this.host.agentIsRoot ? identity : undefined).then(({ stdout, stderr }) => Promise.all([stdout.close(), stderr.close()])),
        writeFile(script, supervisorScript(plan, spec, privileged), { mode: 0o600 }),
      ]);
      const started = this.helper!.launch(script);
      live.launch = started.launch;
      this.byLaunch.set(started.launch, live);
      live.pid = await started.pid;
    } catch (error) {
      if (live.launch !== undefined) this.byLaunch.delete(live.launch);
      if (error instanceof ContainerizerError) throw error;
      throw launchFailed(spec, `cannot start ${commandText(spec)} in sandbox ${spec.sandboxDir}: ${describe(error)}`, error);
    }
    this.armSweep();
    await this.writeMetadata(live, metaDir).catch((error: unknown) =>
      this.log?.warn({ containerId: spec.containerId, err: error }, "cannot write the container's metadata"),
    );
    // The supervisor may have ended (and said so) before its pid was known.
    if (live.earlyExitStatus !== undefined) void this.onSupervisorExit(live, live.earlyExitStatus, null);
  }

  private async setUpCgroup(cgroups: Cgroups, name: string, spec: ContainerSpec): Promise<void> {
    try {
      await cgroups.create(name);
      await cgroups.setLimits(name, {
        memoryBytes: Math.max(1, Math.round(spec.resources.memMb * MIB)),
        cpus: spec.resources.cpus,
        cpuQuota: this.cpuQuota,
        cfsPeriodUs: this.cfsPeriodUs,
        pidsMax: this.pidsMax,
      });
    } catch (error) {
      throw launchFailed(spec, `cannot set up cgroup ${name}: ${describe(error)}`, error);
    }
  }

  private ulimits(spec: ContainerSpec): string[] {
    const hard = this.host.hardLimits;
    const limits = ["-n", String(Math.min(this.nofileLimit, hard.nofile))];
    if (this.host.cgroups === undefined) {
      // Best effort without cgroups: address space stands in for memory (it over-counts mappings), and
      // RLIMIT_NPROC is counted per user namespace, so it bounds this container's processes.
      limits.push("-v", String(Math.min(hard.addressSpaceKb, Math.max(1024, Math.round(spec.resources.memMb * 1024)))));
      if (this.pidsMax !== null) limits.push("-p", String(Math.min(hard.nproc, this.pidsMax)));
    }
    return limits;
  }

  /** What a restarted agent needs to re-attach; the supervisor's start time tells a reused pid apart. */
  private async writeMetadata(live: Live, metaDir: string): Promise<void> {
    const startTicks = live.pid === undefined ? undefined : (await readProcStat(live.pid))?.fields[19];
    const meta = {
      containerId: live.spec.containerId,
      taskId: live.spec.taskId,
      frameworkId: live.spec.frameworkId,
      isolation: this.isolation,
      launcher: this.launcher,
      supervisorPid: live.pid,
      supervisorStartTicks: startTicks === undefined ? undefined : Number(startTicks),
      cgroup: live.cgroup,
      startedAtMs: live.startedAtMs,
      resources: live.spec.resources,
    };
    await writeFile(join(metaDir, "container.json"), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o644 });
  }

  // ----------------------------------------------------------------------------------------------
  // end of a container
  // ----------------------------------------------------------------------------------------------

  /** A supervisor's report (`exit <n> <status>`) through the launch helper. */
  private onReportedExit(launch: number, status: number): void {
    const live = this.byLaunch.get(launch);
    if (live === undefined) return;
    if (live.pid === undefined) live.earlyExitStatus = status;
    else void this.onSupervisorExit(live, status, null);
  }

  /** While supervisors live, checks every {@link SUPERVISOR_SWEEP_MS} that they still exist. */
  private armSweep(): void {
    if (this.sweep !== undefined) return;
    this.sweep = this.timers.set(SUPERVISOR_SWEEP_MS, () => {
      this.sweep = undefined;
      for (const live of this.byLaunch.values()) {
        // kill(pid, 0) answers ESRCH once the helper has reaped it: it ended without a word.
        if (live.pid !== undefined && !live.exited && !processExists(live.pid)) void this.onSupervisorExit(live, null, null);
      }
      for (const live of this.adopted) {
        // Not our helper's child: another process may have its pid by now, hence the start time.
        void sameProcess(live.pid!, live.adoptedStartTicks!).then((still) => {
          if (!still) void this.onSupervisorExit(live, null, null);
        });
      }
      if (this.byLaunch.size > 0 || this.adopted.size > 0) this.armSweep();
    });
  }

  private async onSupervisorExit(live: Live, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (!this.records.live.has(live.spec.containerId) || live.pid === undefined || live.exited) return;
    if (live.launch !== undefined) this.byLaunch.delete(live.launch);
    this.adopted.delete(live);
    live.exited = true;
    live.markExited();
    // Decided now: a kill arriving while the container is torn down did not end the task.
    const killed = live.killRequested;
    live.escalation?.cancel();
    for (const monitor of live.monitors) monitor.cancel();
    const id = live.spec.containerId;

    let oomKills = 0;
    let stats: CgroupStats | undefined;
    if (this.host.cgroups && live.cgroup !== undefined) {
      // Read before removal: the counters go with the cgroup.
      oomKills = await this.host.cgroups.oomKillCount(live.cgroup).catch(() => 0);
      stats = await this.host.cgroups.stats(live.cgroup).catch(() => undefined);
      await this.host.cgroups
        .killAll(live.cgroup)
        .catch((error: unknown) => this.log?.error({ containerId: id, err: error }, "cannot empty the container's cgroup"));
      await this.removeCgroup(live);
    } else {
      // The namespace died with its init; kill whatever a half-started launch may have left.
      await this.killDescendants(live.pid);
    }

    const status = await readExitStatus(join(live.spec.sandboxDir, ".corral"));
    let ending = status !== undefined ? decodeShellStatus(status) : { exitCode: signal === null ? code : null, signal };
    // We SIGKILLed the namespace's init. bwrap and tini report that as 137, but util-linux's unshare
    // turns a signalled child into a plain exit 1: the status cannot be trusted to say so.
    if (live.destroying !== undefined && ending.signal === null) ending = { exitCode: null, signal: "SIGKILL" };
    let limitation = live.limitation;
    if (limitation === undefined && oomKills > 0) limitation = memoryLimitation(live.spec.resources, stats);
    const termination: Termination = {
      exitCode: ending.exitCode,
      signal: ending.signal,
      killed,
      ...(limitation ? { reason: limitation.reason } : {}),
      message: limitation
        ? limitation.message
        : ending.exitCode === null && ending.signal === null
          ? "The container's supervisor ended without recording an exit status (it was killed)"
          : exitMessage(ending.exitCode, ending.signal),
    };
    this.records.live.delete(id);
    this.records.remember(id, termination);
    this.log?.info({ containerId: id, taskId: live.spec.taskId, ...termination }, "container ended");
    live.resolve(termination);
  }

  private async removeCgroup(live: Live): Promise<void> {
    if (!this.host.cgroups || live.cgroup === undefined) return;
    await this.host.cgroups
      .remove(live.cgroup)
      .catch((error: unknown) => this.log?.error({ containerId: live.spec.containerId, cgroup: live.cgroup, err: error }, "cannot remove the container's cgroup"));
  }

  // ----------------------------------------------------------------------------------------------
  // limitations
  // ----------------------------------------------------------------------------------------------

  private startMonitors(live: Live): void {
    const { cgroups } = this.host;
    if (cgroups && live.cgroup !== undefined) {
      const name = live.cgroup;
      this.every(live, this.oomPollIntervalMs, async () => {
        if ((await cgroups.oomKillCount(name).catch(() => 0)) === 0) return;
        // Any OOM kill fails the task, even one that only hit a child: the container is over its limit.
        const stats = await cgroups.stats(name).catch(() => undefined);
        this.limit(live, memoryLimitation(live.spec.resources, stats));
      });
    }
    const diskMb = live.spec.resources.diskMb;
    if (this.enforceDiskLimit && diskMb > 0) {
      this.every(live, this.diskPollIntervalMs, async () => {
        const usedBytes = await diskUsageBytes(live.spec.sandboxDir, this.maxDiskScanEntries);
        if (usedBytes <= diskMb * MIB) return;
        this.limit(live, {
          reason: REASON_DISK_LIMITATION,
          message: `Disk usage (${formatMb(usedBytes)}) exceeds quota (${diskMb}MB)`,
        });
      });
    }
  }

  /** Runs `check` every `intervalMs` while the container lives; the next run is armed only after one finishes. */
  private every(live: Live, intervalMs: number, check: () => Promise<void>): void {
    const arm = () => {
      const handle = this.timers.set(intervalMs, () => {
        live.monitors = live.monitors.filter((monitor) => monitor !== handle);
        if (live.exited || live.limitation !== undefined) return;
        check()
          .catch((error: unknown) => this.log?.warn({ containerId: live.spec.containerId, err: error }, "limitation check failed"))
          .finally(() => {
            if (!live.exited && live.limitation === undefined) arm();
          });
      });
      live.monitors.push(handle);
    };
    arm();
  }

  private limit(live: Live, limitation: { reason: string; message: string }): void {
    if (live.exited || live.limitation !== undefined) return;
    live.limitation = limitation;
    this.log?.warn({ containerId: live.spec.containerId, taskId: live.spec.taskId, ...limitation }, "container limitation reached; destroying it");
    void this.destroy(live);
  }

  // ----------------------------------------------------------------------------------------------
  // kill
  // ----------------------------------------------------------------------------------------------

  async kill(containerId: string, gracePeriodMs?: number): Promise<Termination> {
    if (this.posix) return this.posix.kill(containerId, gracePeriodMs);
    const grace = nonNegative(gracePeriodMs ?? this.defaultGracePeriodMs, "gracePeriodMs");
    return this.records.kill(containerId, grace, (live, graceMs) => this.startKill(live, graceMs));
  }

  /** SIGTERM to the init now and destruction at the deadline; a later kill can only bring the deadline forward. */
  private startKill(live: Live, graceMs: number): void {
    if (live.pid === undefined || live.exited || this.records.live.get(live.spec.containerId) !== live) return;
    const deadline = this.clock.now() + graceMs;
    const first = live.killDeadlineMs === undefined;
    live.killRequested = true;
    if (!first && deadline >= live.killDeadlineMs!) return;
    live.killDeadlineMs = deadline;
    live.escalation?.cancel();
    live.escalation = undefined;
    this.log?.info({ containerId: live.spec.containerId, taskId: live.spec.taskId, graceMs }, "killing container");
    if (graceMs <= 0) {
      void this.destroy(live);
      return;
    }
    if (first) void this.terminate(live);
    live.escalation = this.timers.set(graceMs, () => {
      if (this.records.live.get(live.spec.containerId) !== live || live.exited) return;
      this.log?.warn({ containerId: live.spec.containerId, taskId: live.spec.taskId }, "grace period over; killing every process of the container");
      void this.destroy(live);
    });
  }

  /** SIGTERM to the container's init, which forwards it; waits briefly for an init still being set up. */
  private async terminate(live: Live): Promise<void> {
    const deadline = Date.now() + FIND_INIT_TIMEOUT_MS;
    for (;;) {
      if (live.exited) return;
      const init = await this.findInit(live);
      if (init !== undefined) {
        const failure = sendSignal(init, "SIGTERM");
        if (failure) this.log?.error({ containerId: live.spec.containerId, pid: init, code: failure }, "cannot signal the container's init");
        return;
      }
      if (Date.now() >= deadline) {
        this.log?.warn({ containerId: live.spec.containerId }, "container init not found for SIGTERM; the grace period's end will kill it");
        return;
      }
      await Promise.race([live.onExited, this.delay(10)]);
    }
  }

  /**
   * The host pid of the container's pid 1 (the process whose innermost namespace pid is 1), once it
   * can pass SIGTERM on. Until then pid 1 is still the setup step, and a namespace's pid 1 silently
   * drops signals it has no handler for; and tini forwards to its child's process group, which exists
   * only once the child has called setpgid. Sending earlier would lose the polite stop.
   */
  private async findInit(live: Live, mustForwardSigterm = true): Promise<number | undefined> {
    const pids =
      this.host.cgroups && live.cgroup !== undefined
        ? await this.host.cgroups.procs(live.cgroup).catch(() => [])
        : (await descendants(live.pid!)).map((stat) => stat.pid);
    const stats = (await Promise.all(pids.map((pid) => readProcStat(pid)))).filter((stat) => stat !== undefined);
    for (const { pid } of stats) {
      const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
      const nspids = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
      if (nspids.length < 2 || nspids[nspids.length - 1] !== "1") continue;
      if (!mustForwardSigterm) return pid;
      if (this.launcher.init === "tini") {
        // tini waits in sigtimedwait, which unblocks what it waits for: no mask shows it handles SIGTERM.
        const isTini = /^Name:\s+tini/m.test(status);
        const childGroupReady = stats.some((child) => Number(child.fields[1]) === pid && Number(child.fields[2]) === child.pid);
        return isTini && childGroupReady ? pid : undefined;
      }
      return handlesSigterm(status) ? pid : undefined;
    }
    return undefined;
  }

  /**
   * Kills every process of the container, repeatedly, until the supervisor reports it ended.
   *
   * First by SIGKILL to the namespace's init: the kernel then kills the whole pid namespace (forks
   * included), and the launcher above it reaps the init and exits with its status, so the chain
   * unwinds cleanly and the supervisor still records the exit status. Killing the launcher along
   * with everything else would orphan the init to the host's pid 1. Where there is no init yet (the
   * container is still being set up) or it does not work out, every process of the cgroup (or of the
   * supervisor's tree) is killed; a launch still entering its cgroup during one round is caught by a
   * later one. The supervisor itself is killed only as a last resort (its exit status record is lost).
   */
  private destroy(live: Live): Promise<void> {
    live.destroying ??= (async () => {
      // Where bwrap reported the namespace's pid 1, one signal does it. The kernel then tears the
      // namespaces down, which takes seconds when a thousand go at once; escalating early would only
      // flood the agent with cgroup work, so the next rounds wait for that first.
      const reported = await this.reportedInit(live);
      if (reported !== undefined && !live.exited) {
        sendSignal(reported, "SIGKILL");
        await Promise.race([live.onExited, this.delay(DESTROY_AFTER_REPORTED_INIT_MS)]);
      }
      const started = Date.now();
      let initKilled = false;
      for (let delayMs = 5; !live.exited; delayMs = Math.min(delayMs * 2, 100)) {
        const elapsedMs = Date.now() - started;
        const initOnly = reported === undefined && elapsedMs < DESTROY_INIT_ONLY_MS;
        const init = initOnly ? await this.findInit(live, false) : undefined;
        if (init !== undefined) {
          sendSignal(init, "SIGKILL");
          initKilled = true;
        } else if (initOnly && initKilled) {
          // The dying init has left cgroup.procs while it waits for its namespace to empty; the
          // launcher must live on to reap it.
        } else if (this.host.cgroups && live.cgroup !== undefined) {
          await this.host.cgroups
            .killAll(live.cgroup)
            .catch((error: unknown) => this.log?.error({ containerId: live.spec.containerId, err: error }, "cannot kill the container's cgroup"));
        } else {
          await this.killDescendants(live.pid!);
        }
        if (elapsedMs > DESTROY_SUPERVISOR_AFTER_MS) sendSignal(-live.pid!, "SIGKILL");
        await Promise.race([live.onExited, this.delay(delayMs)]);
      }
    })();
    return live.destroying;
  }


  /**
   * The namespace's pid 1 as bwrap reported it (read once; nothing to search in /proc). Only while the
   * supervisor has not reported the end: until then the init's pid cannot have been handed to another process.
   */
  private async reportedInit(live: Live): Promise<number | undefined> {
    if (live.initPid !== undefined || this.launcher.tool !== "bwrap") return live.initPid;
    const text = await readFile(join(live.spec.sandboxDir, ".corral", BWRAP_INFO_FILE), "utf8").catch(() => "");
    const pid = /"child-pid"\s*:\s*(\d+)/.exec(text)?.[1];
    if (pid !== undefined) live.initPid = Number(pid);
    return live.exited ? undefined : live.initPid;
  }

  /** {@link exec}: enters the container of a running init (see `execCommand` in ./linux-launch.ts). */
  private async execInside(containerId: string, request: ContainerExecRequest): Promise<ContainerExecResult> {
    const live = this.records.live.get(containerId);
    const cgroups = this.host.cgroups;
    if (live === undefined || live.exited || live.pid === undefined || cgroups === undefined || live.cgroup === undefined) throw notFound(containerId);
    const cgroup = live.cgroup;
    const deadline = this.clock.now() + request.timeoutMs;
    let initPid: number | undefined;
    let credentials: ReturnType<typeof parseCredentials>;
    // A check may come while the container is still starting: its init not reported yet, or not
    // yet the task's user (root until setpriv has run). Wait for it within the check's own time.
    for (;;) {
      initPid = this.launcher.tool === "bwrap" ? await this.reportedInit(live) : await this.findInit(live, false);
      // The init must still be in the container's cgroup: a pid read earlier may since be another process's.
      const members = initPid === undefined ? [] : await cgroups.procs(cgroup).catch(() => [] as number[]);
      credentials = initPid !== undefined && members.includes(initPid) ? parseCredentials(await readFile(`/proc/${initPid}/status`, "utf8").catch(() => "")) : undefined;
      if (credentials !== undefined && (credentials.uid !== 0 || this.allowRoot)) break;
      if (live.exited || this.clock.now() >= deadline) {
        throw new ContainerizerError("CORRAL_ERR_CONTAINER_NOT_FOUND", `container ${containerId} has no running init to enter`, { containerId });
      }
      await Promise.race([live.onExited, this.delay(25)]);
    }
    if (initPid === undefined) throw notFound(containerId);
    const { privileged, workloadOnly } = splitEnvironment(request.env);
    const argv = execCommand(
      { tools: this.host.tools, initPid, credentials, cwd: live.spec.sandboxDir, ulimits: this.ulimits(live.spec), enterPaths: cgroups.enterPaths(cgroup), workloadOnlyEnv: workloadOnly },
      request.command,
    );
    return runProcessGroup(argv, { env: privileged }, Math.max(1, deadline - this.clock.now()), this.timers);
  }

  /** SIGKILLs every descendant of the supervisor (not itself: it must live to record the exit status). */
  private async killDescendants(supervisorPid: number): Promise<void> {
    for (const { pid } of await descendants(supervisorPid)) sendSignal(pid, "SIGKILL");
  }

  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => this.timers.set(ms, resolve));
  }

  // ----------------------------------------------------------------------------------------------
  // the rest of the interface
  // ----------------------------------------------------------------------------------------------

  wait(containerId: string): Promise<Termination> {
    if (this.posix) return this.posix.wait(containerId);
    return this.records.wait(containerId);
  }

  /** Samples usage: from the container's cgroups, or (without them) from its processes in /proc. */
  async usage(containerId: string): Promise<LinuxContainerUsage> {
    if (this.posix) {
      const usage = await this.posix.usage(containerId);
      return { ...usage, cpusLimit: 0, cpusNrPeriods: 0, cpusNrThrottled: 0, cpusThrottledTimeSecs: 0, memTotalBytes: usage.memRssBytes, memPeakBytes: undefined, memLimitBytes: 0 };
    }
    const live = this.records.live.get(containerId);
    if (!live || live.pid === undefined || live.exited) throw notFound(containerId);
    const { resources } = live.spec;
    const base = { containerId, timestampMs: this.clock.now(), cpusLimit: resources.cpus, memLimitBytes: resources.memMb * MIB };
    if (this.host.cgroups && live.cgroup !== undefined) {
      const stats = await this.host.cgroups.stats(live.cgroup);
      return {
        ...base,
        cpusUserTimeSecs: stats.cpuUserSecs,
        cpusSystemTimeSecs: stats.cpuSystemSecs,
        cpusNrPeriods: stats.cpuNrPeriods,
        cpusNrThrottled: stats.cpuNrThrottled,
        cpusThrottledTimeSecs: stats.cpuThrottledSecs,
        memRssBytes: stats.memoryRssBytes,
        memTotalBytes: stats.memoryCurrentBytes,
        memPeakBytes: stats.memoryPeakBytes,
        memLimitBytes: stats.memoryLimitBytes ?? base.memLimitBytes,
        processes: stats.pids,
      };
    }
    const totals = await processUsage(await descendants(live.pid));
    return { ...base, ...totals, cpusNrPeriods: 0, cpusNrThrottled: 0, cpusThrottledTimeSecs: 0, memTotalBytes: totals.memRssBytes, memPeakBytes: undefined };
  }

  containers(): string[] {
    if (this.posix) return this.posix.containers();
    return this.records.running();
  }

  async destroyAll(): Promise<void> {
    const all = await this.records.close();
    if (this.posix) return this.posix.destroyAll();

    for (const live of all) this.startKill(live, 0);
    await Promise.all(all.map((live) => live.done));
    await this.close();
  }

  /**
   * Stops this containerizer's own helper process without touching any container (they keep running
   * for a later agent to re-attach). Launches are refused afterwards.
   */
  async close(): Promise<void> {
    this.sweep?.cancel();
    this.sweep = undefined;
    await this.helper?.close();
  }

  // ----------------------------------------------------------------------------------------------
  // recovery after an agent restart
  // ----------------------------------------------------------------------------------------------

  /**
   * After an agent restart: for each checkpointed container, adopts it when its supervisor still runs
   * (same pid and start time: a reused pid is not mistaken for it), else reports how it ended from
   * the supervisor's `exit_status` (a termination with both `exitCode` and `signal` null when there
   * is none: the container is lost). What the agent did not checkpoint is read from the sandbox's
   * `.corral/container.json`. Leftover cgroups of ended containers are emptied and removed, and so
   * are orphan cgroups under `cgroupsRoot` (see {@link RecoverOptions.orphanSandboxRoot}).
   *
   * An adopted container is not this process's child: its end is noticed by polling the supervisor
   * every second (with the other supervisors); kills work as for any container (its init, then its cgroup).
   * In `"posix"` isolation nothing can be re-attached (as with Mesos's posix launcher): a running
   * one is killed (its process group) and every container is reported as lost or by its exit status.
   */
  async recover(checkpointed: ReadonlyArray<CheckpointedContainer>, options: RecoverOptions = {}): Promise<RecoveredContainer[]> {
    const results: RecoveredContainer[] = [];
    const named = new Set<string>();
    for (const entry of checkpointed) {
      try {
        results.push(await this.recoverOne(entry, named));
      } catch (error) {
        this.log?.error({ containerId: entry.containerId, err: error }, "cannot recover the container; reporting it lost");
        results.push({ containerId: entry.containerId, running: false, termination: lostTermination(`cannot recover the container: ${describe(error)}`) });
      }
    }
    if (this.host.cgroups && options.orphanSandboxRoot !== undefined) {
      await this.destroyOrphans(named, options.orphanSandboxRoot).catch((error: unknown) => this.log?.error({ err: error }, "cannot clean up orphan cgroups"));
    }
    return results;
  }

  private async recoverOne(entry: CheckpointedContainer, named: Set<string>): Promise<RecoveredContainer> {
    const id = entry.containerId;
    const known = this.records.live.get(id);
    if (known) return { containerId: id, running: true };
    const ended = this.records.ended.get(id);
    if (ended) return { containerId: id, running: false, termination: ended };
    const metaDir = join(entry.sandboxDir, ".corral");
    const meta = await readContainerMeta(metaDir);
    const pid = entry.pid ?? meta.supervisorPid;
    const startTicks = entry.pidStartTicks ?? meta.supervisorStartTicks;
    const cgroup = this.host.cgroups ? (entry.cgroup ?? meta.cgroup ?? containerCgroupName(this.cgroupsRoot, id)) : undefined;
    if (cgroup !== undefined) named.add(cgroup);
    const alive = pid !== undefined && startTicks !== undefined && (await sameProcess(pid, startTicks));

    if (alive && !this.posix && (meta.isolation === undefined || meta.isolation === this.isolation)) {
      const spec: ContainerSpec = {
        containerId: id,
        taskId: entry.taskId ?? meta.taskId ?? id,
        frameworkId: entry.frameworkId ?? meta.frameworkId ?? "",
        command: { shell: true, value: "" },
        env: {},
        sandboxDir: entry.sandboxDir,
        resources: entry.resources ?? meta.resources ?? { cpus: 0, memMb: 0, diskMb: 0, ports: [] },
      };
      const live = this.register(spec);
      live.pid = pid;
      live.cgroup = cgroup;
      if (meta.startedAtMs !== undefined) live.startedAtMs = meta.startedAtMs;
      this.startMonitors(live);
      live.adoptedStartTicks = startTicks;
      this.adopted.add(live);
      this.armSweep();
      this.log?.info({ containerId: id, taskId: spec.taskId, pid, cgroup }, "container re-attached");
      return { containerId: id, running: true };
    }

    if (alive) {
      // Cannot be re-attached here: destroy it, as Mesos does with what it cannot recover.
      this.log?.warn({ containerId: id, pid, isolation: this.isolation, was: meta.isolation }, "cannot re-attach to the running container; killing it");
      sendSignal(-pid!, "SIGKILL");
      sendSignal(pid!, "SIGKILL");
    }
    // Read before removal, as for a container that ends under a running agent: the counters go with the cgroup.
    let limitation: { reason: string; message: string } | undefined;
    if (cgroup !== undefined && !alive && (await this.host.cgroups!.oomKillCount(cgroup).catch(() => 0)) > 0) {
      limitation = memoryLimitation(entry.resources ?? meta.resources ?? { cpus: 0, memMb: 0, diskMb: 0, ports: [] }, await this.host.cgroups!.stats(cgroup).catch(() => undefined));
    }
    if (cgroup !== undefined) {
      await this.host.cgroups!.killAll(cgroup).catch((error: unknown) => this.log?.warn({ containerId: id, cgroup, err: error }, "cannot empty a leftover cgroup"));
      await this.host.cgroups!.remove(cgroup).catch((error: unknown) => this.log?.warn({ containerId: id, cgroup, err: error }, "cannot remove a leftover cgroup"));
    }
    const status = alive ? undefined : await readExitStatus(metaDir);
    let termination: Termination;
    if (status !== undefined) {
      const ending = decodeShellStatus(status);
      termination = { exitCode: ending.exitCode, signal: ending.signal, killed: false, ...(limitation ?? { message: exitMessage(ending.exitCode, ending.signal) }) };
    } else if (limitation !== undefined) {
      termination = { exitCode: null, signal: null, killed: false, ...limitation };
    } else {
      termination = lostTermination(alive ? "Container could not be re-attached after the agent restarted and was destroyed" : "Container ended while the agent was down and left no exit status");
    }
    this.records.remember(id, termination);
    this.log?.info({ containerId: id, ...termination }, "checkpointed container ended while the agent was down");
    return { containerId: id, running: false, termination };
  }

  /**
   * Destroys orphan cgroups: those under `cgroupsRoot` that no checkpoint names and no live container
   * uses, when their processes run in a sandbox below `sandboxRoot` (read from their environment or
   * working directory), or when they are empty and older than a minute (a launch may be filling a
   * fresh one).
   */
  private async destroyOrphans(named: ReadonlySet<string>, sandboxRoot: string): Promise<void> {
    const cgroups = this.host.cgroups!;
    const inUse = new Set([...named, ...[...this.records.live.values()].map((live) => live.cgroup)]);
    const parents = new Set(cgroups.enterPaths(`${this.cgroupsRoot}/x`).map((path) => dirname(dirname(path))));
    const children = new Map<string, string>();
    for (const parent of parents) {
      for (const dirent of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
        if (dirent.isDirectory() && !dirent.name.startsWith(".")) children.set(dirent.name, join(parent, dirent.name));
      }
    }
    const prefix = sandboxRoot.endsWith("/") ? sandboxRoot : `${sandboxRoot}/`;
    for (const [child, path] of children) {
      const name = `${this.cgroupsRoot}/${child}`;
      if (inUse.has(name)) continue;
      const pids = await cgroups.procs(name).catch(() => [] as number[]);
      let orphan: boolean;
      if (pids.length === 0) {
        const changed = await fsStat(path).then((st) => st.ctimeMs, () => Date.now());
        orphan = Date.now() - changed > EMPTY_ORPHAN_MIN_AGE_MS;
      } else {
        orphan = false;
        for (const pid of pids) {
          const sandbox = await processSandbox(pid);
          if (sandbox !== undefined && sandbox.startsWith(prefix)) {
            orphan = true;
            break;
          }
        }
      }
      if (!orphan) continue;
      this.log?.warn({ cgroup: name, processes: pids.length }, "destroying an orphan container cgroup");
      await cgroups.killAll(name).catch((error: unknown) => this.log?.warn({ cgroup: name, err: error }, "cannot empty an orphan cgroup"));
      await cgroups.remove(name).catch((error: unknown) => this.log?.warn({ cgroup: name, err: error }, "cannot remove an orphan cgroup"));
    }
  }

  // ----------------------------------------------------------------------------------------------
  // posix isolation
  // ----------------------------------------------------------------------------------------------

  /** Without namespaces: the posix containerizer, with the user policy and rlimits through prlimit. */
  private async launchPosix(spec: ContainerSpec): Promise<ContainerHandle> {
    validateSpec(spec);
    const identity = await this.taskIdentity(spec).catch((error: unknown) => {
      throw launchFailed(spec, describe(error), error);
    });
    const { prlimit } = this.host.tools;
    const argv = spec.command.shell ? ["/bin/sh", "-c", spec.command.value] : [spec.command.value, ...(spec.command.arguments ?? []).slice(1)];
    if (!spec.command.shell) await checkProgram(spec, taskEnvironment(spec, this.hostname, this.baseEnv).PATH ?? DEFAULT_PATH);
    const hard = this.host.hardLimits;
    const addressSpace = Math.min(hard.addressSpaceKb * 1024, Math.round(spec.resources.memMb * MIB));
    const limits = [`--nofile=${Math.min(this.nofileLimit, hard.nofile)}`, `--as=${addressSpace}`];
    const command = prlimit !== undefined ? { shell: false, value: prlimit, arguments: [prlimit, ...limits, "--", ...argv] } : spec.command;
    return this.posix!.launch({ ...spec, command, user: this.host.agentIsRoot ? String(identity.uid) : undefined });
  }
}

// ------------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------------

/**
 * The cgroup name of a container: `<cgroupsRoot>/<id>` when the id is a safe directory name, else a
 * sanitised id plus a hash of the original (deterministic, so a restarted agent finds it again).
 */
export function containerCgroupName(cgroupsRoot: string, containerId: string): string {
  const safe = /^[A-Za-z0-9_.-]{1,200}$/.test(containerId) && containerId !== "." && containerId !== "..";
  if (safe) return `${cgroupsRoot}/${containerId}`;
  const hash = createHash("sha256").update(containerId).digest("hex").slice(0, 16);
  return `${cgroupsRoot}/${containerId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 180)}-${hash}`;
}

function checkCgroupsRoot(root: string): string {
  const parts = root.split("/").filter((part) => part !== "");
  if (parts.length === 0 || parts.some((part) => part === "." || part === "..")) {
    throw new RangeError(`cgroupsRoot must be a relative path without "." or "..", got ${JSON.stringify(root)}`);
  }
  return parts.join("/");
}

function positiveInteger(value: number, name: string): number {
  if (!(Number.isInteger(value) && value > 0)) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

function formatMb(bytes: number): string {
  return `${Math.round(bytes / MIB)}MB`;
}

/** Mesos's message for a memory limitation, with the limit and the peak usage. */
function memoryLimitation(resources: ContainerSpec["resources"], stats: CgroupStats | undefined): { reason: string; message: string } {
  const peak = stats?.memoryPeakBytes ?? stats?.memoryCurrentBytes;
  const used = peak === undefined ? "unknown" : formatMb(peak);
  return { reason: REASON_MEMORY_LIMITATION, message: `Memory limit exceeded: Requested: ${resources.memMb}MB Maximum Used: ${used}` };
}

/**
 * Creates the sandbox and its `.corral` directory (root-owned; bound read-only into the container,
 * so the task can neither forge its exit status nor swap the directory for a symlink root would
 * then write through). Returns the `.corral` path.
 */
async function prepareSandbox(spec: ContainerSpec): Promise<string> {
  const metaDir = join(spec.sandboxDir, ".corral");
  try {
    await mkdir(spec.sandboxDir, { recursive: true });
  } catch (error) {
    throw launchFailed(spec, `cannot create sandbox ${spec.sandboxDir}: ${describe(error)}`, error);
  }
  try {
    await mkdir(metaDir, { mode: 0o755 }).catch(async (error: unknown) => {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const stat = await lstat(metaDir);
      if (!stat.isDirectory() || stat.uid !== (process.getuid?.() ?? stat.uid)) throw new Error(`${metaDir} exists and is not the agent's directory`);
    });
    await rm(join(metaDir, EXIT_STATUS_FILE), { force: true });
  } catch (error) {
    throw launchFailed(spec, `cannot prepare ${metaDir}: ${describe(error)}`, error);
  }
  return metaDir;
}

/** The supervisor's record of the exit status; undefined when it never wrote one (killed, or still running). */
async function readExitStatus(metaDir: string): Promise<number | undefined> {
  const text = (await readFile(join(metaDir, EXIT_STATUS_FILE), "utf8").catch(() => "")).trim();
  return /^\d+$/.test(text) ? Number(text) : undefined;
}

/** A container that ended without an exit status anyone can read (the agent reports it lost). */
function lostTermination(message: string): Termination {
  return { exitCode: null, signal: null, killed: false, message };
}

/** What `container.json` (see `writeMetadata`) says, with every field checked; {} when unreadable. */
interface ContainerMeta {
  taskId?: string;
  frameworkId?: string;
  isolation?: string;
  supervisorPid?: number;
  supervisorStartTicks?: number;
  cgroup?: string;
  startedAtMs?: number;
  resources?: ContainerSpec["resources"];
}

async function readContainerMeta(metaDir: string): Promise<ContainerMeta> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(metaDir, "container.json"), "utf8"));
  } catch {
    return {};
  }
  if (typeof raw !== "object" || raw === null) return {};
  const r = raw as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  const int = (v: unknown) => (typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined);
  const res = r.resources as Record<string, unknown> | undefined;
  const resources =
    typeof res === "object" && res !== null && typeof res.cpus === "number" && typeof res.memMb === "number" && typeof res.diskMb === "number" && Array.isArray(res.ports)
      ? { cpus: res.cpus, memMb: res.memMb, diskMb: res.diskMb, ports: res.ports.filter((p): p is number => typeof p === "number") }
      : undefined;
  const meta: ContainerMeta = {};
  if (str(r.taskId) !== undefined) meta.taskId = str(r.taskId);
  if (str(r.frameworkId) !== undefined) meta.frameworkId = str(r.frameworkId);
  if (str(r.isolation) !== undefined) meta.isolation = str(r.isolation);
  if (int(r.supervisorPid) !== undefined) meta.supervisorPid = int(r.supervisorPid);
  if (int(r.supervisorStartTicks) !== undefined) meta.supervisorStartTicks = int(r.supervisorStartTicks);
  if (str(r.cgroup) !== undefined) meta.cgroup = str(r.cgroup);
  if (typeof r.startedAtMs === "number" && Number.isFinite(r.startedAtMs)) meta.startedAtMs = r.startedAtMs;
  if (resources !== undefined) meta.resources = resources;
  return meta;
}

/** Whether `pid` is still the process that started at `startTicks` (and not a zombie). */
export async function sameProcess(pid: number, startTicks: number): Promise<boolean> {
  const stat = await readProcStat(pid);
  if (stat === undefined || stat.state === "Z" || stat.state === "X") return false;
  return Number(stat.fields[19]) === startTicks;
}

/** The sandbox a container process runs in: its `CORRAL_SANDBOX` variable, else its working directory. */
async function processSandbox(pid: number): Promise<string | undefined> {
  const environ = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
  const variable = environ.split("\0").find((entry) => entry.startsWith("CORRAL_SANDBOX="));
  if (variable !== undefined) return `${variable.slice("CORRAL_SANDBOX=".length).replace(/\/+$/, "")}/`;
  const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => undefined);
  return cwd === undefined ? undefined : `${cwd}/`;
}

/** A missing program must fail the launch with its name (as the posix containerizer does), not a later exit 127. */
async function checkProgram(spec: ContainerSpec, path: string): Promise<void> {
  const program = spec.command.value;
  const candidates = program.includes("/") ? [isAbsolute(program) ? program : join(spec.sandboxDir, program)] : path.split(delimiter).filter((dir) => dir !== "").map((dir) => join(dir, program));
  for (const candidate of candidates) {
    if (await access(candidate, fsConstants.X_OK).then(() => true, () => false)) return;
  }
  // A relative program may be fetched into the sandbox by the task itself; only fail what cannot appear.
  if (program.includes("/") && !isAbsolute(program)) return;
  throw launchFailed(spec, `cannot start ${commandText(spec)}: program not found (searched ${program.includes("/") ? program : `PATH=${path}`})`);
}

/** Like Promise.all, but rejects (with the first failure) only once every promise has settled. */
async function settleAll<T extends readonly unknown[]>(promises: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((result) => result.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((result) => (result as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

async function existingDirs(dirs: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const dir of dirs) {
    if (await lstat(dir).then((stat) => stat.isDirectory(), () => false)) found.push(dir);
  }
  return found;
}

/** Whether a process with this pid exists (a zombie counts until it is reaped). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** Whether a process (from its /proc status) has a SIGTERM handler, as the shell init's trap installs. */
export function handlesSigterm(status: string): boolean {
  const term = 1n << 14n; // SIGTERM is 15; bit n-1 of the mask
  const caught = BigInt(`0x${/^SigCgt:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
  return (caught & term) !== 0n;
}

/** Every process below `rootPid` in the process tree (from /proc), zombies included. */
async function descendants(rootPid: number): Promise<ProcStat[]> {
  const entries = await readdir("/proc").catch(() => [] as string[]);
  const byParent = new Map<number, ProcStat[]>();
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readProcStat(Number(entry));
    if (stat === undefined) continue;
    const ppid = Number(stat.fields[1]);
    byParent.set(ppid, [...(byParent.get(ppid) ?? []), stat]);
  }
  const found: ProcStat[] = [];
  const queue = [rootPid];
  while (queue.length > 0) {
    for (const child of byParent.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child.pid);
    }
  }
  return found;
}

/** CPU time and RSS summed over live processes. */
async function processUsage(processes: ProcStat[]): Promise<{ cpusUserTimeSecs: number; cpusSystemTimeSecs: number; memRssBytes: number; processes: number }> {
  const totals = { cpusUserTimeSecs: 0, cpusSystemTimeSecs: 0, memRssBytes: 0, processes: 0 };
  for (const { pid, state, fields } of processes) {
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

/**
 * Bytes the sandbox occupies on disk (allocated blocks, hard links once), walking it without following
 * symlinks. Stops after `maxEntries` entries: the result is then a lower bound, which still catches
 * a task that writes big files.
 */
export async function diskUsageBytes(dir: string, maxEntries: number): Promise<number> {
  let total = 0;
  let visited = 0;
  const seen = new Set<string>();
  const stack = [dir];
  while (stack.length > 0 && visited < maxEntries) {
    const current = stack.pop()!;
    const names = await readdir(current).catch(() => [] as string[]);
    for (const name of names) {
      if (++visited > maxEntries) break;
      const path = join(current, name);
      const stat = await lstat(path).catch(() => undefined);
      if (stat === undefined) continue;
      if (stat.nlink > 1 && !stat.isDirectory()) {
        const key = `${stat.dev}:${stat.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += stat.blocks * 512;
      if (stat.isDirectory()) stack.push(path);
    }
  }
  return total;
}

// ------------------------------------------------------------------------------------------------
// probing the host
// ------------------------------------------------------------------------------------------------

const TOOL_NAMES: Record<keyof LaunchTools, string[]> = {
  bwrap: ["bwrap"],
  unshare: ["unshare"],
  setpriv: ["setpriv"],
  setsid: ["setsid"],
  bash: ["bash"],
  tini: ["tini", "tini-static"],
  mount: ["mount"],
  mkdir: ["mkdir"],
  hostname: ["hostname"],
  env: ["env"],
  prlimit: ["prlimit"],
  nsenter: ["nsenter"],
};

async function findOnPath(names: string[]): Promise<string | undefined> {
  const dirs = [...new Set([...(process.env.PATH ?? "").split(delimiter), ...DEFAULT_PATH.split(delimiter)])].filter((dir) => isAbsolute(dir));
  for (const name of names) {
    for (const dir of dirs) {
      const path = join(dir, name);
      if (await access(path, fsConstants.X_OK).then(() => true, () => false)) return path;
    }
  }
  return undefined;
}

async function resolveTools(overrides: LinuxContainerizerOptions["tools"] = {}): Promise<LaunchTools> {
  const tools: LaunchTools = {};
  for (const key of Object.keys(TOOL_NAMES) as (keyof LaunchTools)[]) {
    const override = overrides[key];
    tools[key] = override === null ? undefined : override !== undefined ? override : await findOnPath(TOOL_NAMES[key]);
  }
  return tools;
}

/** Runs a probe command; true when it exits 0 in time. */
function runs(argv: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { timeout: PROBE_TIMEOUT_MS, env: { PATH: DEFAULT_PATH } }, (error) => resolve(error === null));
  });
}

/** The first launcher that can really build namespaces here (a kernel, seccomp or AppArmor policy may forbid it). */
async function workingLauncher(tools: LaunchTools, privilege: "root" | "userns", agentIsRoot: boolean, probeUser: UserIdentity | undefined): Promise<Launcher | undefined> {
  const asUser =
    privilege === "userns" && agentIsRoot && tools.setpriv !== undefined && probeUser !== undefined
      ? [tools.setpriv, "--reuid", String(probeUser.uid), "--regid", String(probeUser.gid), "--clear-groups", "--"]
      : [];
  if (privilege === "userns" && agentIsRoot && asUser.length === 0) return undefined;
  if (tools.bwrap !== undefined) {
    const userns = privilege === "userns" ? ["--unshare-user"] : [];
    // --as-pid-1: without it bwrap's own reaper is orphaned to the host's init as a zombie.
    const argv = [...asUser, tools.bwrap, ...userns, "--die-with-parent", "--as-pid-1", "--unshare-pid", "--unshare-uts", "--unshare-ipc", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"];
    if (await runs(argv)) return "bwrap";
  }
  if (tools.unshare !== undefined && tools.mount !== undefined && tools.mkdir !== undefined) {
    const userns = privilege === "userns" ? ["--user", "--map-root-user"] : [];
    const argv = [...asUser, tools.unshare, ...userns, "--pid", "--fork", "--mount", "--uts", "--ipc", "--propagation", "private", "--mount-proc", "--", "/bin/true"];
    if (await runs(argv)) return "unshare";
  }
  return undefined;
}

/** Whether the cgroups are there and writable: creates and removes a probe cgroup under `cgroupsRoot`. */
async function workingCgroups(cgroupsRoot: string): Promise<Cgroups | string> {
  const cgroups = cgroupsForLayout(await readCgroupLayout());
  if ("missing" in cgroups) return `cgroup controllers not available: ${cgroups.missing.join(", ")}`;
  const probe = `${cgroupsRoot}/.probe-${process.pid}`;
  try {
    await cgroups.create(probe);
    await cgroups.remove(probe);
    return cgroups;
  } catch (error) {
    await cgroups.remove(probe).catch(() => undefined);
    return `cgroups are not writable: ${describe(error)}`;
  }
}

/** The agent's hard limits from /proc/self/limits; unlimited (or unreadable) reads as Infinity. */
async function hardLimits(): Promise<HostEnvironment["hardLimits"]> {
  const text = await readFile("/proc/self/limits", "utf8").catch(() => "");
  const hard = (label: string) => {
    const value = new RegExp(`^${label}\\s+\\S+\\s+(\\S+)`, "m").exec(text)?.[1];
    return value !== undefined && /^\d+$/.test(value) ? Number(value) : Infinity;
  };
  return { nofile: hard("Max open files"), nproc: hard("Max processes"), addressSpaceKb: hard("Max address space") / 1024 };
}

async function probeHost(options: LinuxContainerizerOptions): Promise<HostEnvironment> {
  const tools = await resolveTools(options.tools);
  const agentIsRoot = process.getuid?.() === 0;
  const wanted = options.isolation ?? "auto";
  const reasons: string[] = [];
  const base = { tools, agentIsRoot, hardLimits: await hardLimits() };
  if (wanted !== "auto") reasons.push(`isolation "${wanted}" was asked for`);
  if (wanted === "auto") {
    if (!agentIsRoot) reasons.push("the agent is not root");
    else if (tools.setpriv === undefined) reasons.push("setpriv (util-linux) is not installed");
    else if (tools.setsid === undefined && tools.bash === undefined) reasons.push("neither bash nor setsid (util-linux) is installed");
    else {
      const launcher = await workingLauncher(tools, "root", true, undefined);
      if (launcher === undefined) reasons.push("neither bwrap nor unshare can create namespaces");
      else {
        const cgroups = await workingCgroups(checkCgroupsRoot(options.cgroupsRoot ?? "corral"));
        if (typeof cgroups === "string") reasons.push(cgroups);
        else {
          const isolation = cgroups.versions.has(1) ? "cgroups-v1" : "cgroups-v2";
          return { ...base, isolation, degradedBecause: undefined, cgroups, launcher };
        }
      }
    }
  }
  if (wanted !== "posix") {
    const probeUser = agentIsRoot ? await lookupUser(options.defaultUser ?? "nobody").catch(() => undefined) : undefined;
    const launcher = tools.setsid === undefined && tools.bash === undefined ? undefined : await workingLauncher(tools, "userns", agentIsRoot, probeUser);
    if (launcher !== undefined) return { ...base, isolation: "userns", degradedBecause: reasons.join("; "), cgroups: undefined, launcher };
    reasons.push("user namespaces are not available");
  }
  return { ...base, isolation: "posix", degradedBecause: reasons.join("; "), cgroups: undefined, launcher: undefined };
}

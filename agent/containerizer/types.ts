/**
 * The contract between the agent shell and whatever actually runs tasks.
 *
 * Three implementations are planned: the posix one in `./posix.ts` (a plain process group, no isolation),
 * a Linux one (cgroups and namespaces, later issue) and the simulator's instant one. The interface is
 * therefore asynchronous and deliberately small: an isolating implementation needs time to set up
 * cgroups and may fail in more ways, a simulated one resolves on the virtual clock, and the agent
 * shell only ever needs to start a container, stop it, learn how it ended and sample its usage.
 *
 * @module
 */

/** What to run inside a container, in the shape of Mesos's `CommandInfo`. */
export interface ContainerCommand {
  /**
   * When true, `value` is a shell command line run as `/bin/sh -c <value>` and `arguments` is
   * ignored. When false, `value` is the program (looked up on `PATH`) and `arguments` its argv.
   */
  shell: boolean;
  /** The command line (shell) or the program to execute (argv). */
  value: string;
  /**
   * The full argv for a non-shell command, including argv[0], as in Mesos. When absent or empty the
   * program is run with argv[0] = `value` and no further arguments.
   */
  arguments?: string[];
}

/** The resources a container was launched with; isolating implementations enforce them. */
export interface ContainerResources {
  /** CPU shares, in cores (fractions allowed). */
  cpus: number;
  /** Memory limit in MiB. */
  memMb: number;
  /** Disk quota in MiB. */
  diskMb: number;
  /** Host ports assigned to the task, in the order they are exposed as `PORT0..n`. */
  ports: number[];
}

/** Everything a containerizer needs to start one task. */
export interface ContainerSpec {
  /** Unique per launch (a relaunched task gets a new container id). */
  containerId: string;
  taskId: string;
  frameworkId: string;
  command: ContainerCommand;
  /** Environment requested by the task; implementations add the `CORRAL_*`/`MESOS_*` variables. */
  env: Record<string, string>;
  /**
   * Absolute path of this run's sandbox. The agent chooses it (one directory per container, as in
   * Mesos's `.../runs/<containerId>`); the containerizer creates it if missing.
   */
  sandboxDir: string;
  resources: ContainerResources;
  /** Run as this user (name or numeric uid). Needs the agent to run as root to switch users. */
  user?: string;
}

/** A running container, as returned once it has started. */
export interface ContainerHandle {
  containerId: string;
  /**
   * Process id of the container's init process, when there is a real one (absent in simulation).
   * With the posix containerizer it is also the process group id.
   */
  pid?: number;
  sandboxDir: string;
  /** When the container was started, from the containerizer's clock. */
  startedAtMs: number;
  /** The container's cgroup name (relative to each hierarchy's root), when it has cgroups. */
  cgroup?: string;
}

/**
 * How a container ended. Exactly one of `exitCode` and `signal` is non-null for a process that
 * ran; both are null when the container never produced an exit status (e.g. lost during recovery).
 */
export interface Termination {
  /** The exit status when the init process exited normally. */
  exitCode: number | null;
  /** The signal name (e.g. `"SIGKILL"`) when the init process was terminated by a signal. */
  signal: string | null;
  /**
   * True when the container was stopped through {@link Containerizer.kill} (or `destroyAll`), so the
   * agent reports TASK_KILLED rather than TASK_FAILED/TASK_FINISHED whatever the exit status.
   */
  killed: boolean;
  /**
   * A Mesos `TaskStatus.Reason` name when the containerizer knows why it ended, e.g.
   * `"REASON_CONTAINER_LIMITATION_MEMORY"` from an isolating implementation.
   */
  reason?: string;
  /** Human-readable, in Mesos's words: "Command exited with status 3". */
  message: string;
}

/** A point-in-time sample of a container's resource usage, like Mesos's `ResourceStatistics`. */
export interface ContainerUsage {
  containerId: string;
  /** When the sample was taken, from the containerizer's clock. */
  timestampMs: number;
  /** Cumulative user CPU time of all the container's processes, in seconds. */
  cpusUserTimeSecs: number;
  /** Cumulative system CPU time of all the container's processes, in seconds. */
  cpusSystemTimeSecs: number;
  /** Resident memory of all the container's processes, in bytes. */
  memRssBytes: number;
  /** How many processes the container currently has. */
  processes: number;
}

/** A short command to run inside a running container (see {@link Containerizer.exec}). */
export interface ContainerExecRequest {
  /** A shell command line, run as `/bin/sh -c <command>`. */
  command: string;
  /** Its whole environment (the task's, usually, plus the check's own variables). */
  env: Record<string, string>;
  /** After this long the command is killed, with everything it started. */
  timeoutMs: number;
}

/** How a command run by {@link Containerizer.exec} ended. */
export interface ContainerExecResult {
  /** Its exit status, when it exited. */
  exitCode: number | null;
  /** The signal that ended it, when one did (SIGKILL after a timeout). */
  signal: string | null;
  /** True when it was killed for exceeding its timeout. */
  timedOut: boolean;
}

/** What the agent checkpointed about one container, handed to {@link Containerizer.recover}. */
export interface CheckpointedContainer {
  containerId: string;
  /** The supervisor's (or init's) pid, as the launch handle reported it. */
  pid?: number;
  /** Field 22 of `/proc/<pid>/stat` when the agent checkpointed: tells a reused pid apart. */
  pidStartTicks?: number;
  sandboxDir: string;
  cgroup?: string;
  taskId?: string;
  frameworkId?: string;
  resources?: ContainerResources;
}

/** What recovery found for one container the agent had checkpointed. */
export interface RecoveredContainer {
  containerId: string;
  /** Still running and adopted by this containerizer instance. */
  running: boolean;
  /** When not running: how it ended, as far as can be known. */
  termination?: Termination;
}

/** Options of {@link Containerizer.recover}. */
export interface RecoverOptions {
  /**
   * Destroy orphan containers (cgroups under the containerizer's root that no checkpoint names)
   * whose processes run in a sandbox below this directory; empty orphan cgroups are removed too.
   * Orphans of other sandbox roots are left alone: another agent on the host may own them.
   * @default undefined (no orphan is touched)
   */
  orphanSandboxRoot?: string;
}

/** Stable error codes of containerizers. */
export type ContainerizerErrorCode =
  | "CORRAL_ERR_CONTAINER_EXISTS"
  | "CORRAL_ERR_CONTAINER_NOT_FOUND"
  | "CORRAL_ERR_CONTAINER_LAUNCH_FAILED"
  | "CORRAL_ERR_CONTAINERIZER_CLOSED";

/** An error from a containerizer, with a stable {@link ContainerizerErrorCode}. */
export class ContainerizerError extends Error {
  readonly code: ContainerizerErrorCode;
  readonly containerId: string | undefined;

  constructor(code: ContainerizerErrorCode, message: string, options?: { containerId?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ContainerizerError";
    this.code = code;
    this.containerId = options?.containerId;
  }
}

/**
 * Runs task containers for the agent shell.
 *
 * Lifecycle of one container: `launch` resolves once it is running; `wait` resolves exactly once with
 * its {@link Termination} however it ends (exit, `kill`, `destroyAll`, limitation); `kill` asks it to
 * stop and resolves with the same termination. Implementations keep the termination of recently
 * ended containers so a `wait` or `kill` that comes late still gets an answer.
 */
export interface Containerizer {
  /**
   * Starts a container. Resolves once the task's process exists (not when it is "healthy");
   * rejects with `CORRAL_ERR_CONTAINER_LAUNCH_FAILED` when it could not be started (bad sandbox,
   * missing program, user switch refused) and with `CORRAL_ERR_CONTAINER_EXISTS` for a reused id.
   */
  launch(spec: ContainerSpec): Promise<ContainerHandle>;

  /**
   * Stops a container: a polite signal first, a forced kill once `gracePeriodMs` has passed.
   * Resolves with the termination (same as {@link wait}). Killing an already-ended container
   * resolves with its recorded termination; a second kill with a shorter grace period shortens it.
   * Rejects with `CORRAL_ERR_CONTAINER_NOT_FOUND` for an id it never knew (or has forgotten).
   *
   * @param gracePeriodMs time between the polite and the forced signal; the implementation's
   *   default when omitted.
   */
  kill(containerId: string, gracePeriodMs?: number): Promise<Termination>;

  /**
   * Resolves with how the container ended, once it has. Rejects with
   * `CORRAL_ERR_CONTAINER_NOT_FOUND` for an unknown (or forgotten) id.
   */
  wait(containerId: string): Promise<Termination>;

  /** Samples the container's resource usage. Rejects with `CORRAL_ERR_CONTAINER_NOT_FOUND` if it is not running. */
  usage(containerId: string): Promise<ContainerUsage>;

  /** Ids of the containers currently running. */
  containers(): string[];

  /**
   * After an agent restart: reattach to the checkpointed containers that are still running and
   * report the others as ended. Optional because a plain child-process containerizer cannot reattach
   * (its children die or are orphaned with the agent).
   */
  recover?(checkpointed: ReadonlyArray<CheckpointedContainer>, options?: RecoverOptions): Promise<RecoveredContainer[]>;

  /**
   * Kills every running container immediately (no grace period) and waits for all of them to end;
   * used on agent shutdown and in tests. After it resolves no process started by this containerizer
   * is left, and further launches are refused with `CORRAL_ERR_CONTAINERIZER_CLOSED`.
   */
  destroyAll(): Promise<void>;

  /**
   * Runs a short command inside a running container, as Mesos runs a COMMAND check: in its
   * namespaces, as its task's user with its privileges, in its sandbox, counted against its limits.
   * Resolves once the command has ended (or was killed at its timeout); rejects with
   * `CORRAL_ERR_CONTAINER_NOT_FOUND` when the container is not running. Absent where there is no
   * container to enter (the posix containerizer): the caller then runs the command on the host.
   */
  exec?(containerId: string, request: ContainerExecRequest): Promise<ContainerExecResult>;

  /**
   * Releases what the containerizer itself holds (helper processes) and leaves every container
   * running, for a later agent to re-attach; used when the agent stops without killing its tasks.
   * Launches are refused afterwards. Optional: containerizers that hold nothing need not have it.
   */
  close?(): Promise<void>;
}

/**
 * How many ended containers a containerizer remembers the termination of, for a `wait` or `kill`
 * that comes after the end (an agent recovering, a late kill). One number for every
 * containerizer, so the simulated agents behave as the real ones unless a scenario says otherwise.
 */
export const DEFAULT_MAX_REMEMBERED_TERMINATIONS = 1000;

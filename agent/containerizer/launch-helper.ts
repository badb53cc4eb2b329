/**
 * The launch helper: one small, long-lived shell that starts containers' supervisors for the Linux
 * containerizer, and the pipe on which supervisors report how their containers ended.
 *
 * Why not `child_process.spawn` per container: Node forks the whole agent for each child and its
 * event loop waits until the child has exec'd. Profiled with 300 launches at once, that one call
 * took 68% of the agent's time, and every launch waited behind all the others. A shell forks cheaply
 * and never waits for the exec, and the agent's event loop only writes one line per container.
 *
 * Protocol (one line each, `n` a number the helper chooses per launch):
 * - to the helper: `<n> <script path>`; it runs `/bin/sh <script> <n>` in the background, in a process
 *   group of its own, with descriptor 3 on its own standard output, and answers `started <n> <pid>`;
 * - from a supervisor, on descriptor 3: `exit <n> <status>`, once its container has ended.
 *
 * Supervisors run in their own process groups and survive the helper and the agent. When the agent goes
 * away the helper reads end-of-file and exits; a supervisor that ends later finds nobody listening
 * and its report is lost, which is why it writes the status to its sandbox first (recovery reads it).
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { BaseLogger } from "pino";

/**
 * The helper's script. `$1` is the setsid program, or empty under bash, which with job control on
 * (`set -m`) puts each background job in its own process group without an extra exec (the helper
 * itself has its own session and no terminal). `${line#* }` keeps the script path exactly, spaces
 * included. bash is preferred: it also reaps finished supervisors at once, where dash leaves the
 * newest one a zombie until the next launch.
 *
 * First it closes every descriptor but 0-2: whatever started the agent may have left some open
 * without close-on-exec (Node marks only low ones so), and everything the helper starts, containers
 * included, would inherit them, e.g. a file their user could not open. POSIX sh can only name
 * descriptors 0-9 in a redirection; higher ones are closed under bash only.
 */
export const LAUNCH_HELPER_SCRIPT = `for fd in /proc/$$/fd/*; do
  fd=\${fd##*/}
  case $fd in
    [012]) ;;
    [3-9]) eval "exec $fd>&-" ;;
    *) [ -z "$BASH_VERSION" ] || eval "exec $fd>&-" ;;
  esac
done
setsid=$1
[ -n "$setsid" ] || set -m
while IFS= read -r line; do
  n=\${line%% *}
  $setsid /bin/sh "\${line#* }" "$n" 3>&1 </dev/null >/dev/null 2>&1 &
  printf 'started %s %s\\n' "$n" "$!"
done`;

/** Called when a supervisor reports its container's end. */
export type SupervisorExitListener = (launch: number, status: number) => void;

/** What {@link LaunchHelper} needs. */
export interface LaunchHelperOptions {
  /**
   * Absolute path of setsid(1) (util-linux), which gives each supervisor its own session; leave it
   * undefined when `shell` is bash, whose job control gives each its own process group instead.
   */
  setsid?: string | undefined;
  /** The shell that runs the helper; bash where installed. @default "/bin/sh" */
  shell?: string;
  /**
   * Options before `-c`. bash needs `--norc`: it reads `~/.bashrc` when its input is a socket, as it
   * takes that for a remote shell, and Node's pipes are sockets. @default []
   */
  shellArgs?: string[];
  /** Told of each reported end. */
  onExit: SupervisorExitListener;
  log?: Pick<BaseLogger, "warn" | "error"> | undefined;
}

/** A launch as the helper knows it: its number, and the supervisor's pid once started. */
export interface HelperLaunch {
  /** The number the supervisor reports its end under. */
  launch: number;
  /** The supervisor's pid (the leader of its own process group). */
  pid: Promise<number>;
}

/** Starts supervisors without blocking the agent. Create one per containerizer; {@link close} at the end. */
export class LaunchHelper {
  private readonly options: LaunchHelperOptions;
  private child: ChildProcess | undefined;
  private nextLaunch = 1;
  private readonly starting = new Map<number, { resolve: (pid: number) => void; reject: (error: Error) => void }>();
  private closed = false;

  constructor(options: LaunchHelperOptions) {
    this.options = options;
  }

  /**
   * Starts the supervisor script at `scriptPath` (which must not contain a newline). The returned pid
   * promise rejects when the helper dies before it answered.
   */
  launch(scriptPath: string): HelperLaunch {
    if (this.closed) throw new Error("the launch helper is closed");
    if (scriptPath.includes("\n")) throw new Error(`a supervisor script path cannot contain a newline: ${JSON.stringify(scriptPath)}`);
    const child = this.running();
    const launch = this.nextLaunch++;
    const pid = new Promise<number>((resolve, reject) => this.starting.set(launch, { resolve, reject }));
    child.stdin!.write(`${launch} ${scriptPath}\n`);
    return { launch, pid };
  }

  /** The helper's pid while it runs (it starts with the first launch). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Stops the helper (supervisors it started keep running). */
  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (child === undefined) return;
    this.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.stdin!.end();
    await exited;
  }

  private running(): ChildProcess {
    if (this.child !== undefined) return this.child;
    // Detached: a terminal's Ctrl-C meant for the agent must not take the helper down with it.
    const child = spawn(this.options.shell ?? "/bin/sh", [...(this.options.shellArgs ?? []), "-c", LAUNCH_HELPER_SCRIPT, "corral-launch-helper", this.options.setsid ?? ""], {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: {},
    });
    this.child = child;
    // Reports keep coming on this pipe after the helper itself is gone: supervisors hold its write end.
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on("line", (line) => this.onLine(line));
    createInterface({ input: child.stderr!, crlfDelay: Infinity }).on("line", (line) => this.options.log?.warn({ line }, "launch helper"));
    child.stdin!.on("error", () => undefined); // EPIPE when it died; noticed on "exit"
    child.once("exit", (code, signal) => {
      if (this.child === child) this.child = undefined;
      if (!this.closed) this.options.log?.error({ code, signal }, "the launch helper exited; starting a new one for the next launch");
      const error = new Error(`the launch helper exited (code ${code}, signal ${signal}) before starting the supervisor`);
      for (const pending of this.starting.values()) pending.reject(error);
      this.starting.clear();
    });
    child.once("error", (error) => this.options.log?.error({ err: error }, "cannot run the launch helper"));
    return child;
  }

  private onLine(line: string): void {
    const [kind, launchText, valueText] = line.split(" ");
    const launch = Number(launchText);
    const value = Number(valueText);
    if (!Number.isSafeInteger(launch) || !Number.isSafeInteger(value)) {
      this.options.log?.warn({ line }, "unreadable line from the launch helper");
      return;
    }
    if (kind === "started") {
      this.starting.get(launch)?.resolve(value);
      this.starting.delete(launch);
    } else if (kind === "exit") {
      this.options.onExit(launch, value);
    } else {
      this.options.log?.warn({ line }, "unreadable line from the launch helper");
    }
  }
}

/**
 * How the Linux containerizer turns a container spec into one process tree, as pure functions of the
 * spec and the chosen tools (so the argv and scripts can be unit-tested and reasoned about without
 * running them).
 *
 * The tree, outermost first:
 *
 * 1. **supervisor** (`/bin/sh` running the script {@link supervisorScript} writes into
 *    `<sandbox>/.corral/supervisor.sh`; root, its own session, *not* in the container's cgroups): sends
 *    its output to the sandbox's `stdout`/`stderr` files, runs 2, writes its exit status to
 *    `<sandbox>/.corral/exit_status` and tells the agent on descriptor 3. It outlives an agent restart,
 *    so a later agent can re-attach and still learn how the container ended. The agent does not fork it
 *    itself: the launch helper (`./launch-helper.ts`) does, so that starting a container never blocks
 *    the agent's event loop.
 * 2. **enter** (`/bin/sh`): sets the rlimits, writes its own `$$` into every `cgroup.procs` file, then
 *    `exec`s 3. Entering itself before it execs closes the race a parent has when it moves a child after
 *    spawning it (measured: 16-27% of launches escaped that way, 0/200 with self-entry).
 * 3. **namespaces**: `bwrap` (pid, mount, uts, ipc and cgroup namespaces; a read-only view of `/`; a new
 *    /proc; a minimal /dev; size-capped tmpfs on /tmp, /dev/shm, /var/tmp; the sandbox bound read-write
 *    and its `.corral` bound read-only), which writes the host pid of the namespace's pid 1 to
 *    `.corral/bwrap-info.json`; or, without bubblewrap, `unshare` plus a small setup shell doing the same
 *    mounts.
 * 4. **privilege drop**: `setpriv` to the task's user with no new privileges and empty bounding,
 *    inheritable and ambient capability sets; `--pdeathsig keep` because a uid change clears the
 *    parent-death signal that ties the container to step 3's process. On the unshare path that
 *    holds; under bubblewrap it does not tie the container to bwrap's outer process, so a killed
 *    bwrap leaves the container running under the host's init: in cgroups mode the supervisor's
 *    sweep or the agent's recovery kills the cgroup, which is what really ends a container.
 * 5. **init**: `tini -s -g` as the namespace's pid 1 (a pid 1 without handlers ignores SIGTERM; tini
 *    forwards it to the workload's process group and exits with the workload's status), or a small
 *    shell init where tini is not installed.
 * 6. the **workload**: `/bin/sh -c <value>` or the argv.
 *
 * {@link execCommand} builds the chain that runs a short command (a COMMAND health check) inside a
 * running container: the same enter step (rlimits, cgroups), `nsenter` into the namespaces of the
 * container's init, the same privilege drop, the command.
 *
 * @module
 */
import { join } from "node:path";
import type { ContainerSpec } from "./types.ts";
import type { UserIdentity } from "./common.ts";
import type { MountEntry } from "./cgroups-layout.ts";

/** Absolute paths of the external tools, or undefined where a tool is not installed (or not to be used). */
export interface LaunchTools {
  bwrap?: string | undefined;
  unshare?: string | undefined;
  setpriv?: string | undefined;
  setsid?: string | undefined;
  tini?: string | undefined;
  mount?: string | undefined;
  mkdir?: string | undefined;
  hostname?: string | undefined;
  env?: string | undefined;
  prlimit?: string | undefined;
  bash?: string | undefined;
  /** Enters a running container's namespaces for {@link execCommand}. */
  nsenter?: string | undefined;
}

/** Which namespace tool builds the container. */
export type Launcher = "bwrap" | "unshare";

/** Everything {@link containerCommand} and {@link supervisorScript} need besides the spec. */
export interface LaunchPlan {
  launcher: Launcher;
  tools: LaunchTools;
  /**
   * "root": the agent is root and sets up the namespaces itself, then switches to `identity`.
   * "userns": a user namespace provides the namespaces (unprivileged, or root without cgroups); when
   * the agent is root it first switches to `identity`, so the container's processes are that user on the host.
   */
  privilege: "root" | "userns";
  /** True when the agent runs as root (it must then switch to `identity` before any task code runs). */
  agentIsRoot: boolean;
  identity: UserIdentity;
  /** The container's host name (UTS namespace). */
  hostname: string;
  /** Size cap of each private tmpfs, bytes. */
  tmpfsBytes: number;
  /** Where the private tmpfs go; only directories that exist on the host (bwrap cannot create them on a read-only `/`). */
  tmpfsDirs: string[];
  /** `ulimit` flags and values set by the enter step, e.g. `["-n", "65536"]`. */
  ulimits: string[];
  /** `cgroup.procs` files the enter step writes its own pid into. */
  enterPaths: string[];
  /** The supervisor's metadata directory (`<sandbox>/.corral`), protected read-only inside the container. */
  metaDir: string;
  /**
   * Mount points the unshare path remounts read-only, `/` first (see {@link mountsToProtect}); bwrap
   * makes its whole view of `/` read-only itself and ignores this.
   * @default ["/"]
   */
  readOnlyMounts?: string[];
  /** Variables held back from the privileged steps and given to the workload only (see {@link splitEnvironment}). */
  workloadOnlyEnv: Record<string, string>;
}

/** Where bwrap reports the namespace's pid 1 (`{"child-pid": <host pid>, ...}`), in the metadata directory. */
export const BWRAP_INFO_FILE = "bwrap-info.json";
/** The supervisor's script, in the metadata directory. */
export const SUPERVISOR_FILE = "supervisor.sh";
/** The supervisor's record of the container's exit status, in the metadata directory. */
export const EXIT_STATUS_FILE = "exit_status";

/** Quotes one word for a POSIX shell: single quotes, each embedded quote closed, escaped and reopened. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Names a POSIX shell can `export`; any other variable reaches the workload only (see {@link splitEnvironment}). */
const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The supervisor's script. Run as `/bin/sh <script> <n>` with descriptor 3 open on the launch helper's
 * report pipe, where it writes `exit <n> <status>` once the container has ended and its status is on
 * disk. `$?` of a child killed by signal n is 128 + n, which is also what tini and bwrap report, so one
 * number covers every case. Exit status 125 marks a setup failure (as env(1) and container runtimes use
 * it). The environment is `privileged` (see {@link splitEnvironment}), exported by the script itself:
 * values never appear in a command line, which every user can read.
 */
export function supervisorScript(plan: LaunchPlan, spec: ContainerSpec, privileged: Record<string, string>): string {
  const sandbox = spec.sandboxDir;
  const exports = Object.entries(privileged).map(([name, value]) => {
    if (!SHELL_NAME.test(name)) throw new Error(`variable ${JSON.stringify(name)} cannot be exported by a shell; splitEnvironment keeps it for the workload`);
    return `export ${name}=${shellQuote(value)}`;
  });
  // bwrap writes the namespace's pid 1 to descriptor 4 (and keeps it out of the container).
  const info = plan.launcher === "bwrap" ? ` 4>${shellQuote(join(plan.metaDir, BWRAP_INFO_FILE))}` : "";
  return [
    `# The supervisor of container ${spec.containerId.replace(/[^\x20-\x7e]/g, "?")}, written by the Corral agent.`,
    "n=$1",
    `exec </dev/null >>${shellQuote(join(sandbox, "stdout"))} 2>>${shellQuote(join(sandbox, "stderr"))} || exit 125`,
    `cd ${shellQuote(sandbox)} || exit 125`,
    ...exports,
    `${containerCommand(plan, spec).map(shellQuote).join(" ")}${info} 3>&-`,
    "status=$?",
    `printf '%s\\n' "$status" > ${shellQuote(join(plan.metaDir, EXIT_STATUS_FILE))}`,
    `printf 'exit %s %s\\n' "$n" "$status" >&3 2>/dev/null`,
    'exit "$status"',
    "",
  ].join("\n");
}

/**
 * The enter step: rlimits first (they are inherited by everything after), then the cgroups, then exec.
 * Exit status 125 marks a setup failure (as env(1) and container runtimes use it).
 */
export const ENTER_SCRIPT = `while [ "$1" != "--" ]; do
  ulimit "$1" "$2" || { echo "corral: cannot set ulimit $1 $2" >&2; exit 125; }
  shift 2
done
shift
while [ "$1" != "--" ]; do
  printf '%s\\n' "$$" > "$1" || { echo "corral: cannot enter cgroup $1" >&2; exit 125; }
  shift
done
shift
exec "$@"`;

/**
 * The mount setup of the unshare path, run in the new mount namespace before the privilege drop.
 * First every host mount is made read-only: `/` alone would leave each file system mounted below it
 * (a world-writable /run/lock, a data disk) writable. A mount point the setup cannot reach (closed
 * to the task's user, in the user-namespace case) is unreachable for the task as well. The sandbox
 * may lie under one of the new tmpfs (e.g. under /tmp), which then hides it: so the shell first
 * `cd`s into it, and later binds `.` (its cwd still is the original directory) over the path, with
 * `--no-canonicalize` so mount(8) does not resolve `.` back to the hidden path. That bind inherits
 * the read-only flag of the mount it comes from, hence the remount read-write.
 */
export const UNSHARE_SETUP_SCRIPT = `set -e
mnt=$1 mkd=$2 hn=$3 sandbox=$4 host=$5 size=$6; shift 6
if [ -n "$hn" ]; then "$hn" "$host"; else printf '%s' "$host" > /proc/sys/kernel/hostname; fi
cd "$sandbox"
while [ "$1" != "--" ]; do
  if [ -e "$1" ]; then "$mnt" -o remount,bind,ro "$1"; fi
  shift
done
shift
while [ "$1" != "--" ]; do
  "$mnt" -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" tmpfs "$1"
  shift
done
shift
"$mkd" -p "$sandbox"
"$mnt" --no-canonicalize --bind . "$sandbox"
"$mnt" --no-canonicalize -o remount,bind,rw "$sandbox"
"$mnt" --bind -o ro "$sandbox/.corral" "$sandbox/.corral"
cd "$sandbox"
exec "$@"`;

/**
 * The mount points of the host a container's view must make read-only: `/`, then every other mount a
 * path can reach that is not read-only already. A mount covered by a later one (mounted over it, or
 * over a directory above it) is left out: no path reaches it, and remounting its path would act on
 * the wrong mount or fail. /proc is left out too: the container gets a /proc of its own.
 *
 * @param mounts the entries of /proc/self/mountinfo (see `parseMountInfo` in ./cgroups-layout.ts).
 */
export function mountsToProtect(mounts: ReadonlyArray<MountEntry>): string[] {
  const ids = new Set(mounts.map((mount) => mount.id));
  const children = new Map<number, MountEntry[]>();
  for (const mount of mounts) children.set(mount.parentId, [...(children.get(mount.parentId) ?? []), mount]);
  const under = (ancestor: string, path: string) => ancestor === "/" || path === ancestor || path.startsWith(`${ancestor}/`);
  const found = new Set<string>(["/"]);
  const visit = (mount: MountEntry): void => {
    const kids = children.get(mount.id) ?? [];
    // A mount stacked on this one's root covers it and everything mounted on it before.
    const stacked = kids.findLastIndex((kid) => kid.mountPoint === mount.mountPoint);
    if (stacked >= 0) return visit(kids[stacked]!);
    if (under("/proc", mount.mountPoint)) return;
    if (mount.mountOptions[0] !== "ro") found.add(mount.mountPoint);
    kids.forEach((kid, i) => {
      if (!kids.slice(i + 1).some((later) => under(later.mountPoint, kid.mountPoint))) visit(kid);
    });
  };
  // The namespace's root: mounted on nothing in the table. A chroot-like view may show several; the last covers the rest.
  const roots = mounts.filter((mount) => !ids.has(mount.parentId) || mount.parentId === mount.id);
  const root = roots[roots.length - 1];
  if (root !== undefined) visit(root);
  return [...found];
}

/**
 * A minimal pid 1 for hosts without tini: forwards TERM/INT/HUP to every other process of the
 * namespace (`kill -1` from a namespace's init spares only itself) and exits with the workload's
 * status. `wait` returns early when a trap runs, hence the loop.
 */
export const FALLBACK_INIT_SCRIPT = `trap 'kill -TERM -1 2>/dev/null' TERM INT HUP
"$@" &
child=$!
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || exit "$status"
done`;

/**
 * Variables that change what a process loads or runs: glibc's list of variables it ignores for setuid
 * programs, the shells' start-up hooks and util-linux's library switches. The privileged steps (root
 * shells, bwrap, unshare, mount, setpriv) must not see them, or a task's `LD_PRELOAD` would run as root;
 * they are handed to the workload after the privilege drop instead. PATH is not among them: every
 * program the privileged steps run is named by absolute path (and the shells only use builtins), so
 * the task's PATH only matters where the workload is looked up, and passing it through spares an exec.
 */
const UNSAFE_FOR_PRIVILEGED =
  /^(LD_[A-Z_]*|GCONV_PATH|GETCONF_DIR|GLIBC_TUNABLES|HOSTALIASES|LOCALDOMAIN|LOCPATH|MALLOC_[A-Z_]*|NIS_PATH|NLSPATH|RESOLV_HOST_CONF|RES_OPTIONS|TMPDIR|TZDIR|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|BASH_FUNC_.*|PS4|IFS|CDPATH|LIBMOUNT_[A-Z_]*|LIBBLKID_[A-Z_]*|LIBSMARTCOLS_[A-Z_]*)$/;

/**
 * Splits the task's environment into what the privileged steps may carry (everything else: secrets
 * stay out of command lines, which every user can read) and what only the workload gets: the variables
 * that steer programs, and names a shell cannot export (they are rare; being handed over by env(1),
 * their values are visible in that step's command line).
 */
export function splitEnvironment(env: Record<string, string>): { privileged: Record<string, string>; workloadOnly: Record<string, string> } {
  const privileged: Record<string, string> = {};
  const workloadOnly: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (UNSAFE_FOR_PRIVILEGED.test(name) || !SHELL_NAME.test(name)) workloadOnly[name] = value;
    else privileged[name] = value;
  }
  return { privileged, workloadOnly };
}

/**
 * The container's host name, from the task id: lower-case letters, digits and dashes, at most 63
 * characters (one DNS label), never empty.
 */
export function containerHostname(taskId: string): string {
  const label = taskId
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-+/g, "-")
    .slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return label === "" ? "corral-task" : label;
}

/** The workload's argv. A Mesos argv command's `arguments[0]` cannot be kept as argv[0] through exec chains. */
export function workloadArgv(spec: ContainerSpec): string[] {
  const { command } = spec;
  return command.shell ? ["/bin/sh", "-c", command.value] : [command.value, ...(command.arguments ?? []).slice(1)];
}

function dropPrivileges(setpriv: string, identity: UserIdentity | undefined): string[] {
  const user = identity === undefined ? [] : ["--reuid", String(identity.uid), "--regid", String(identity.gid), identity.name !== undefined ? "--init-groups" : "--clear-groups"];
  return [setpriv, ...user, "--no-new-privs", "--bounding-set", "-all", "--inh-caps", "-all", "--ambient-caps", "-all", "--pdeathsig", "keep", "--"];
}

function initAndWorkload(plan: LaunchPlan, spec: ContainerSpec): string[] {
  const workloadEnv = Object.entries(plan.workloadOnlyEnv).map(([name, value]) => `${name}=${value}`);
  const env = workloadEnv.length > 0 && plan.tools.env !== undefined ? [plan.tools.env, "--", ...workloadEnv] : [];
  const init = plan.tools.tini !== undefined ? [plan.tools.tini, "-s", "-g", "--"] : ["/bin/sh", "-c", FALLBACK_INIT_SCRIPT, "corral-init"];
  return [...env, ...init, ...workloadArgv(spec)];
}

function bwrapArgs(plan: LaunchPlan, spec: ContainerSpec): string[] {
  const sandbox = spec.sandboxDir;
  const userns = plan.privilege === "userns" ? ["--unshare-user", "--uid", String(plan.identity.uid), "--gid", String(plan.identity.gid), "--disable-userns"] : [];
  // bwrap makes a tmpfs 0755 and root's unless told otherwise: /tmp must be writable by the task's user (1777, as on the host).
  const tmpfs = plan.tmpfsDirs.flatMap((dir) => ["--perms", "1777", "--size", String(plan.tmpfsBytes), "--tmpfs", dir]);
  return [
    plan.tools.bwrap!,
    ...userns,
    "--die-with-parent",
    "--as-pid-1",
    "--info-fd",
    "4",
    "--unshare-pid",
    "--unshare-uts",
    "--unshare-ipc",
    "--unshare-cgroup-try",
    "--hostname",
    plan.hostname,
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    ...tmpfs,
    "--bind",
    sandbox,
    sandbox,
    "--ro-bind",
    plan.metaDir,
    plan.metaDir,
    "--chdir",
    sandbox,
    ...(plan.privilege === "userns" ? ["--cap-drop", "ALL"] : []),
    "--",
  ];
}

function unshareArgs(plan: LaunchPlan, spec: ContainerSpec): string[] {
  const { tools } = plan;
  const userns = plan.privilege === "userns" ? ["--user", `--map-user=${plan.identity.uid}`, `--map-group=${plan.identity.gid}`, "--keep-caps"] : [];
  return [
    tools.unshare!,
    ...userns,
    "--cgroup",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount",
    "--uts",
    "--ipc",
    "--propagation",
    "private",
    "--mount-proc",
    "--",
    "/bin/sh",
    "-c",
    UNSHARE_SETUP_SCRIPT,
    "corral-setup",
    tools.mount!,
    tools.mkdir!,
    tools.hostname ?? "",
    spec.sandboxDir,
    plan.hostname,
    String(plan.tmpfsBytes),
    ...(plan.readOnlyMounts ?? ["/"]),
    "--",
    ...plan.tmpfsDirs,
    "--",
  ];
}

/**
 * The command the supervisor runs: the enter step and everything after it, as an argv. Steps 3-5
 * differ by launcher and privilege; steps 2 and 6 are always the same.
 */
export function containerCommand(plan: LaunchPlan, spec: ContainerSpec): string[] {
  const { tools } = plan;
  if (tools.setpriv === undefined) throw new Error("setpriv (util-linux) is required");
  const namespaces: string[] = [];
  if (plan.privilege === "root") {
    // Root builds the namespaces, then becomes the task's user inside them.
    namespaces.push(...(plan.launcher === "bwrap" ? bwrapArgs(plan, spec) : unshareArgs(plan, spec)));
    namespaces.push(...dropPrivileges(tools.setpriv, plan.identity));
  } else {
    // Become the user first, so every process of the container is that user on the host; the user
    // namespace then grants just enough to mount inside it.
    if (plan.agentIsRoot) namespaces.push(...dropPrivileges(tools.setpriv, plan.identity));
    if (plan.launcher === "bwrap") {
      namespaces.push(...bwrapArgs(plan, spec));
    } else {
      namespaces.push(...unshareArgs(plan, spec));
      // Inside the user namespace the setup shell held capabilities (--keep-caps); the workload must not.
      namespaces.push(...dropPrivileges(tools.setpriv, undefined));
    }
  }
  return ["/bin/sh", "-c", ENTER_SCRIPT, "corral-enter", ...plan.ulimits, "--", ...plan.enterPaths, "--", ...namespaces, ...initAndWorkload(plan, spec)];
}

/** Who a container's processes run as, read from its init (`/proc/<pid>/status`). */
export interface ProcessCredentials {
  uid: number;
  gid: number;
  /** Supplementary groups. */
  groups: number[];
}

/** Everything {@link execCommand} needs besides the command. */
export interface ExecPlan {
  tools: LaunchTools;
  /** Host pid of the container's init, whose pid, mount, uts and ipc namespaces the command enters. */
  initPid: number;
  /** The task's user, as its init runs. */
  credentials: ProcessCredentials;
  /** The working directory (the sandbox: the same path inside the container). */
  cwd: string;
  /** `ulimit` flags and values, as for the container. */
  ulimits: string[];
  /** `cgroup.procs` files the command enters, so that it counts against the container's limits. */
  enterPaths: string[];
  /** Variables handed to the command only, after the privilege drop (see {@link splitEnvironment}). */
  workloadOnlyEnv: Record<string, string>;
}

/** Parses the credentials of a process from its `/proc/<pid>/status`; undefined when they are not there. */
export function parseCredentials(status: string): ProcessCredentials | undefined {
  const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1]?.trim().split(/\s+/).filter((x) => x !== "") ?? [];
  const [uid] = field("Uid");
  const [gid] = field("Gid");
  if (uid === undefined || gid === undefined || !/^\d+$/.test(uid) || !/^\d+$/.test(gid)) return undefined;
  return { uid: Number(uid), gid: Number(gid), groups: field("Groups").filter((g) => /^\d+$/.test(g)).map(Number) };
}

/**
 * The argv that runs `command` inside a running container, as Mesos runs a COMMAND check: the enter
 * step puts it in the container's cgroups (and rlimits) before anything else, `nsenter` enters the
 * init's pid, mount, uts and ipc namespaces (forking, so the command is a process of the container's
 * pid namespace) with the init's root and the sandbox as working directory, `setpriv` becomes the
 * task's user with no new privileges and empty capability sets, then `/bin/sh -c <command>`. Run it
 * as root, with the command's environment minus {@link ExecPlan.workloadOnlyEnv}.
 */
export function execCommand(plan: ExecPlan, command: string): string[] {
  const { tools, credentials } = plan;
  if (tools.nsenter === undefined) throw new Error("nsenter (util-linux) is required");
  if (tools.setpriv === undefined) throw new Error("setpriv (util-linux) is required");
  const nsenter = [tools.nsenter, "--target", String(plan.initPid), "--pid", "--mount", "--uts", "--ipc", "--root", `--wd=${plan.cwd}`, "--"];
  const groups = credentials.groups.length > 0 ? ["--groups", credentials.groups.join(",")] : ["--clear-groups"];
  const drop = [tools.setpriv, "--reuid", String(credentials.uid), "--regid", String(credentials.gid), ...groups, "--no-new-privs", "--bounding-set", "-all", "--inh-caps", "-all", "--ambient-caps", "-all", "--"];
  const workloadEnv = Object.entries(plan.workloadOnlyEnv).map(([name, value]) => `${name}=${value}`);
  const env = workloadEnv.length > 0 && tools.env !== undefined ? [tools.env, "--", ...workloadEnv] : [];
  return ["/bin/sh", "-c", ENTER_SCRIPT, "corral-exec", ...plan.ulimits, "--", ...plan.enterPaths, "--", ...nsenter, ...drop, ...env, "/bin/sh", "-c", command];
}

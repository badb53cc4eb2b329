/**
 * How the Linux containerizer turns a container spec into one process tree, as pure functions of the
 * spec and the chosen tools (so the argv can be unit-tested and reasoned about without running it).
 *
 * The tree, outermost first:
 *
 * 1. **supervisor** (`/bin/sh`, root, its own session, *not* in the container's cgroups): runs 2 and
 *    writes its exit status to `<sandbox>/.corral/exit_status`. It outlives an agent restart (output
 *    goes to files, not pipes), so a later agent can re-attach and still learn how the container ended.
 * 2. **enter** (`/bin/sh`): sets the rlimits, writes its own `$$` into every `cgroup.procs` file, then
 *    `exec`s 3. Entering itself before it execs closes the race a parent has when it moves a child after
 *    spawning it (measured: 16-27% of launches escaped that way, 0/200 with self-entry).
 * 3. **namespaces**: `bwrap` (pid, mount, uts, ipc and cgroup namespaces; a read-only view of `/`; a new
 *    /proc; a minimal /dev; size-capped tmpfs on /tmp, /dev/shm, /var/tmp; the sandbox bound read-write
 *    and its `.corral` bound read-only) or, without bubblewrap, `unshare` plus a small setup shell doing
 *    the same mounts.
 * 4. **privilege drop**: `setpriv` to the task's user with no new privileges and empty bounding,
 *    inheritable and ambient capability sets; `--pdeathsig keep` because a uid change clears the
 *    parent-death signal that ties the container to step 3's process.
 * 5. **init**: `tini -s -g` as the namespace's pid 1 (a pid 1 without handlers ignores SIGTERM; tini
 *    forwards it to the workload's process group and exits with the workload's status), or a small
 *    shell init where tini is not installed.
 * 6. the **workload**: `/bin/sh -c <value>` or the argv.
 *
 * @module
 */
import type { ContainerSpec } from "./types.ts";
import type { UserIdentity } from "./common.ts";

/** Absolute paths of the external tools, or undefined where a tool is not installed (or not to be used). */
export interface LaunchTools {
  bwrap?: string | undefined;
  unshare?: string | undefined;
  setpriv?: string | undefined;
  tini?: string | undefined;
  mount?: string | undefined;
  mkdir?: string | undefined;
  hostname?: string | undefined;
  env?: string | undefined;
  prlimit?: string | undefined;
}

/** Which namespace tool builds the container. */
export type Launcher = "bwrap" | "unshare";

/** Everything {@link buildLaunchArgs} needs besides the spec. */
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
  /** Variables held back from the privileged steps and given to the workload only (see {@link splitEnvironment}). */
  workloadOnlyEnv: Record<string, string>;
}

/**
 * The supervisor: runs the rest, then records the exit status. `$?` of a child killed by signal n is
 * 128 + n, which is also what tini and bwrap report, so one number covers every case.
 */
export const SUPERVISOR_SCRIPT = `meta=$1; shift
"$@"
status=$?
printf '%s\\n' "$status" > "$meta/exit_status"
exit "$status"`;

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
 * The mount setup of the unshare path, run in the new mount namespace before the privilege drop. The
 * sandbox may lie under one of the new tmpfs (e.g. under /tmp), which then hides it: so the shell first
 * `cd`s into it, and later binds `.` (its cwd still is the original directory) over the path, with
 * `--no-canonicalize` so mount(8) does not resolve `.` back to the hidden path.
 */
export const UNSHARE_SETUP_SCRIPT = `set -e
mnt=$1 mkd=$2 hn=$3 sandbox=$4 host=$5 size=$6; shift 6
if [ -n "$hn" ]; then "$hn" "$host"; else printf '%s' "$host" > /proc/sys/kernel/hostname; fi
cd "$sandbox"
while [ "$1" != "--" ]; do
  "$mnt" -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" tmpfs "$1"
  shift
done
shift
"$mkd" -p "$sandbox"
"$mnt" --no-canonicalize --bind . "$sandbox"
"$mnt" --bind -o ro "$sandbox/.corral" "$sandbox/.corral"
"$mnt" -o remount,bind,ro /
cd "$sandbox"
exec "$@"`;

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
 * stay out of command lines, which every user can read) and what only the workload gets.
 */
export function splitEnvironment(env: Record<string, string>): { privileged: Record<string, string>; workloadOnly: Record<string, string> } {
  const privileged: Record<string, string> = {};
  const workloadOnly: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (UNSAFE_FOR_PRIVILEGED.test(name)) workloadOnly[name] = value;
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
  const tmpfs = plan.tmpfsDirs.flatMap((dir) => ["--size", String(plan.tmpfsBytes), "--tmpfs", dir]);
  return [
    plan.tools.bwrap!,
    ...userns,
    "--die-with-parent",
    "--as-pid-1",
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
    ...plan.tmpfsDirs,
    "--",
  ];
}

/**
 * The argv of `/bin/sh` (the supervisor) that runs the whole tree for `spec`. Steps 3-5 differ by
 * launcher and privilege; steps 1, 2 and 6 are always the same.
 */
export function buildLaunchArgs(plan: LaunchPlan, spec: ContainerSpec): string[] {
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
  return [
    "-c",
    SUPERVISOR_SCRIPT,
    "corral-supervisor",
    plan.metaDir,
    "/bin/sh",
    "-c",
    ENTER_SCRIPT,
    "corral-enter",
    ...plan.ulimits,
    "--",
    ...plan.enterPaths,
    "--",
    ...namespaces,
    ...initAndWorkload(plan, spec),
  ];
}

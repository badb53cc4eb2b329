/**
 * Which cgroup version each controller lives on, and where it is mounted.
 *
 * A host may be pure v1, pure v2, or hybrid (systemd's default for years: every controller on v1 plus a
 * controller-less v2 mount used only for process tracking). Hybrid hosts can even split controllers
 * between the two. So the version is decided **per controller**, from three texts the kernel provides:
 *
 * - `/proc/self/mountinfo`: the cgroup (v1) mounts with the controllers each carries in its super
 *   options, and the cgroup2 mount;
 * - `/proc/cgroups`: which controllers the kernel has and has enabled, with their v1 hierarchy id (0 means
 *   "not on a v1 hierarchy": on v2, or not mounted at all);
 * - `cgroup.controllers` at the root of the v2 mount: which controllers v2 actually has. Needed because
 *   /proc/cgroups' hierarchy 0 cannot tell "on v2" from "unused" (a hybrid host shows `net_cls` with
 *   hierarchy 0 and an empty v2 controller list).
 *
 * Everything here is pure: the caller reads the files ({@link readCgroupLayout} does, for the live host).
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** A cgroup hierarchy version. */
export type CgroupVersion = 1 | 2;

/** Where one controller can be used. */
export interface ControllerMount {
  version: CgroupVersion;
  /** Absolute path of the hierarchy's mount point (prefixed with the `root` given to the parser). */
  mountPath: string;
  /**
   * The cgroup path, inside the hierarchy, that is mounted there (mountinfo field 4): `/` normally,
   * a sub-path when a container runtime bind-mounted only its own part of the tree.
   */
  mountRoot: string;
}

/** The controller -> mount map of a host, plus the v2 mount (if any) for v2-wide files like `cgroup.kill`. */
export interface CgroupLayout {
  /** Only controllers that are enabled and usable; a controller absent here cannot be used at all. */
  controllers: Map<string, ControllerMount>;
  /** The cgroup2 mount, whether or not it carries controllers. */
  unified: { mountPath: string; mountRoot: string } | undefined;
}

/** Inputs of {@link computeCgroupLayout}: the texts of three kernel files and a path prefix. */
export interface CgroupLayoutInput {
  /** Text of `/proc/self/mountinfo`. */
  mountinfo: string;
  /** Text of `/proc/cgroups`; empty when the kernel does not provide it (then mounts alone decide). */
  procCgroups: string;
  /** Text of `cgroup.controllers` at the root of the cgroup2 mount; empty when there is none. */
  v2Controllers: string;
  /**
   * Prefix joined in front of every mount point, for reading a layout relative to another root
   * (a fake tree in tests, a host root seen from a container).
   * @default "/"
   */
  root?: string;
}

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** The mount's id (field 1). */
  id: number;
  /** The id of the mount it is mounted on (field 2); the namespace's root names one outside the table. */
  parentId: number;
  mountPoint: string;
  mountRoot: string;
  /** Per-mount options (field 6): "ro" or "rw" first, then nosuid, nodev, ... */
  mountOptions: string[];
  fsType: string;
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as three-digit octal (`\040`). */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parses the lines of /proc/self/mountinfo (proc(5)); malformed lines are skipped. */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(" ");
    // Optional fields end with a lone "-"; it comes after the 6 fixed fields.
    const separator = fields.indexOf("-", 6);
    if (fields.length < 10 || separator < 0 || separator + 3 >= fields.length) continue;
    entries.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      mountRoot: unescapeMountPath(fields[3]!),
      mountPoint: unescapeMountPath(fields[4]!),
      mountOptions: fields[5]!.split(","),
      fsType: fields[separator + 1]!,
      superOptions: fields[separator + 3]!.split(","),
    });
  }
  return entries;
}

/** One row of /proc/cgroups. */
export interface ProcCgroupsEntry {
  name: string;
  hierarchy: number;
  enabled: boolean;
}

/** Parses /proc/cgroups; the header and malformed lines are skipped. */
export function parseProcCgroups(text: string): ProcCgroupsEntry[] {
  const entries: ProcCgroupsEntry[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const [name, hierarchy, , enabled] = line.trim().split(/\s+/);
    if (name === undefined || name === "" || hierarchy === undefined || enabled === undefined) continue;
    if (!/^\d+$/.test(hierarchy) || !/^[01]$/.test(enabled)) continue;
    entries.push({ name, hierarchy: Number(hierarchy), enabled: enabled === "1" });
  }
  return entries;
}

/** Prefers the mount that shows the whole hierarchy: a bind of a sub-tree is a second choice. */
function pickMount(candidates: MountEntry[]): MountEntry | undefined {
  return candidates.find((entry) => entry.mountRoot === "/") ?? candidates[0];
}

/**
 * Computes, for every usable controller, its version and mount. A controller on a v1 hierarchy wins
 * over v2 (the kernel allows a controller on only one of them, and a v1 mount proves it is there);
 * a controller disabled in /proc/cgroups (`cgroup_disable=`) is left out.
 */
export function computeCgroupLayout(input: CgroupLayoutInput): CgroupLayout {
  const root = input.root ?? "/";
  const mounts = parseMountInfo(input.mountinfo);
  const known = parseProcCgroups(input.procCgroups);
  const disabled = new Set(known.filter((entry) => !entry.enabled).map((entry) => entry.name));
  const controllers = new Map<string, ControllerMount>();

  const v1Mounts = mounts.filter((entry) => entry.fsType === "cgroup");
  const v1Names = new Set(v1Mounts.flatMap((entry) => entry.superOptions));
  for (const name of v1Names) {
    // Super options also hold "rw", "name=systemd", "clone_children"...: only real controllers count.
    const listed = known.find((entry) => entry.name === name);
    if (known.length > 0 ? listed === undefined || !listed.enabled || listed.hierarchy === 0 : !isV1ControllerName(name)) continue;
    const mount = pickMount(v1Mounts.filter((entry) => entry.superOptions.includes(name)));
    if (mount) controllers.set(name, { version: 1, mountPath: join(root, mount.mountPoint), mountRoot: mount.mountRoot });
  }

  const unifiedMount = pickMount(mounts.filter((entry) => entry.fsType === "cgroup2"));
  const unified = unifiedMount ? { mountPath: join(root, unifiedMount.mountPoint), mountRoot: unifiedMount.mountRoot } : undefined;
  if (unified) {
    for (const name of input.v2Controllers.trim().split(/\s+/)) {
      if (name === "" || controllers.has(name) || disabled.has(name)) continue;
      controllers.set(name, { version: 2, ...unified });
    }
  }
  return { controllers, unified };
}

/** Names a v1 mount's super options may carry that are controllers, for kernels without /proc/cgroups. */
function isV1ControllerName(name: string): boolean {
  return /^(cpu|cpuacct|cpuset|memory|devices|freezer|net_cls|net_prio|blkio|perf_event|hugetlb|pids|rdma|misc)$/.test(name);
}

/**
 * Reads the three files from the live host (or from under `root`) and computes the layout. Missing
 * files read as empty: a host without cgroups simply has no controllers.
 *
 * @param root where `/proc` and the cgroup mounts are found. @default "/"
 */
export async function readCgroupLayout(root = "/"): Promise<CgroupLayout> {
  const read = (path: string) => readFile(path, "utf8").catch(() => "");
  const mountinfo = await read(join(root, "proc/self/mountinfo"));
  const procCgroups = await read(join(root, "proc/cgroups"));
  const unified = computeCgroupLayout({ mountinfo, procCgroups, v2Controllers: "", root }).unified;
  const v2Controllers = unified ? await read(join(unified.mountPath, "cgroup.controllers")) : "";
  return computeCgroupLayout({ mountinfo, procCgroups, v2Controllers, root });
}

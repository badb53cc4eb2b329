/**
 * A small cgroups abstraction for the Linux containerizer, with a v1 and a v2 implementation of the
 * same operations: create a container's cgroup, set its limits, name the `cgroup.procs` files a
 * process writes its own pid into to enter it, read its statistics and OOM-kill count, kill every
 * process in it, and remove it.
 *
 * Cgroups are named by a path relative to each hierarchy's mount point (e.g. `corral/<container>`), so
 * the same name works on every hierarchy of a v1 host and on a v2 host alike, and a restarted agent can
 * find a container's cgroups again from its id alone.
 *
 * All file access goes through {@link CgroupFs}, so the code paths can be exercised on a tree of plain
 * files (the v2 path is tested that way on hosts that have no v2 controllers).
 *
 * @module
 */
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CLOCK_TICKS_PER_SECOND, sendSignal } from "./common.ts";
import type { CgroupLayout, CgroupVersion } from "./cgroups-layout.ts";

/** Controllers the containerizer cannot do without: they enforce the task's resources. */
export const REQUIRED_CONTROLLERS = ["memory", "cpu", "pids"] as const;
/** Controllers used when present: cpuacct for v1 user/system time, freezer for an atomic v1 kill. */
export const OPTIONAL_CONTROLLERS = ["cpuacct", "freezer"] as const;

/** A controller this module manages. */
export type ManagedController = (typeof REQUIRED_CONTROLLERS)[number] | (typeof OPTIONAL_CONTROLLERS)[number];

/** What one container's cgroup enforces. */
export interface CgroupLimits {
  /** Hard memory limit in bytes; swap is turned off for the cgroup. */
  memoryBytes: number;
  /** CPUs, in cores: sets the relative weight (cpu.shares on v1, cpu.weight on v2). */
  cpus: number;
  /** Whether to cap the cgroup at `cpus` cores with a CFS quota (throttling), not just weigh it. */
  cpuQuota: boolean;
  /** CFS period in microseconds; the quota is `cpus * cfsPeriodUs`. */
  cfsPeriodUs: number;
  /** Maximum number of processes (threads count too), or null for no limit. */
  pidsMax: number | null;
}

/** A snapshot of one cgroup's counters; a counter the host does not provide reads as 0 or undefined. */
export interface CgroupStats {
  /** Cumulative user CPU time, seconds. */
  cpuUserSecs: number;
  /** Cumulative system CPU time, seconds. */
  cpuSystemSecs: number;
  /** CFS periods that have elapsed while the cgroup had runnable tasks. */
  cpuNrPeriods: number;
  /** Periods in which the cgroup was throttled. */
  cpuNrThrottled: number;
  /** Total time the cgroup was throttled, seconds. */
  cpuThrottledSecs: number;
  /** Memory charged now (anonymous, page cache, tmpfs, kernel), bytes. */
  memoryCurrentBytes: number;
  /** Highest `memoryCurrentBytes` seen, bytes; undefined where the kernel does not keep it (v2 before 5.19). */
  memoryPeakBytes: number | undefined;
  /** Anonymous (RSS) memory, bytes. */
  memoryRssBytes: number;
  /** The memory limit in force, bytes; undefined when unlimited. */
  memoryLimitBytes: number | undefined;
  /** Processes (v1: tasks) currently in the cgroup. */
  pids: number;
}

/** The file operations cgroups need; the default is node:fs on the real cgroupfs. */
export interface CgroupFs {
  readFile(path: string): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  /** Creates a directory and its missing parents; an existing directory is fine. */
  mkdir(path: string): Promise<void>;
  /** Removes one (cgroup) directory. */
  rmdir(path: string): Promise<void>;
}

/** {@link CgroupFs} on the real file system. */
export const nodeCgroupFs: CgroupFs = {
  readFile: (path) => readFile(path, "utf8"),
  writeFile: (path, data) => writeFile(path, data),
  mkdir: async (path) => void (await mkdir(path, { recursive: true })),
  rmdir: (path) => rmdir(path),
};

/** Options shared by the implementations. */
export interface CgroupsOptions {
  /** File access. @default nodeCgroupFs */
  fs?: CgroupFs;
  /** How long {@link Cgroups.killAll} waits for the cgroup to empty before it gives up. @default 5000 */
  killTimeoutMs?: number;
  /** How long {@link Cgroups.remove} retries a busy cgroup directory. @default 2000 */
  removeTimeoutMs?: number;
  /** Sends a signal to a host pid; injectable so a fake tree never signals real processes. @default process.kill */
  signal?: (pid: number, signal: NodeJS.Signals) => void;
}

/** One container's cgroups, whatever the version: the operations the containerizer needs. */
export interface Cgroups {
  /** Versions in use: one of them on a pure host, both on a host that splits controllers. */
  readonly versions: ReadonlySet<CgroupVersion>;
  /** Creates the cgroup `name` (and missing ancestors) in every hierarchy in use. */
  create(name: string): Promise<void>;
  /** Writes the limits; rejects naming the file when a required limit cannot be set. */
  setLimits(name: string, limits: CgroupLimits): Promise<void>;
  /**
   * The `cgroup.procs` files a process writes its own pid into, in order, to enter the cgroup in every
   * hierarchy. A process that enters itself before it execs the workload cannot race its own children
   * out of the cgroup, unlike a parent that moves a child after spawning it.
   */
  enterPaths(name: string): string[];
  /** Host pids of the processes in the cgroup (union over hierarchies). */
  procs(name: string): Promise<number[]>;
  /** Reads the cgroup's counters. */
  stats(name: string): Promise<CgroupStats>;
  /** How many processes of the cgroup the kernel's OOM killer has killed so far. */
  oomKillCount(name: string): Promise<number>;
  /** Kills every process in the cgroup and resolves once it is empty; rejects if it does not empty in time. */
  killAll(name: string): Promise<void>;
  /** Removes the cgroup directories, retrying while the kernel still counts exiting processes; a missing one is fine. */
  remove(name: string): Promise<void>;
}

const DEFAULT_KILL_TIMEOUT_MS = 5000;
const DEFAULT_REMOVE_TIMEOUT_MS = 2000;

/** Reads `key value` lines (cpu.stat, memory.stat, memory.events, memory.oom_control) into a map. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key !== undefined && key !== "" && value !== undefined && /^-?\d+$/.test(value)) values.set(key, Number(value));
  }
  return values;
}

/** Parses a cgroup.procs file. */
export function parsePids(text: string): number[] {
  return text
    .split("\n")
    .filter((line) => /^\d+$/.test(line.trim()))
    .map((line) => Number(line.trim()));
}

/** cpu.shares for `cpus` cores, as Mesos and Kubernetes compute it (1024 per core, at least 2). */
export function cpuShares(cpus: number): number {
  return Math.max(2, Math.round(cpus * 1024));
}

/** cgroup v2 cpu.weight (1..10000) for the same shares, with the conversion runc and Kubernetes use. */
export function cpuWeight(cpus: number): number {
  const shares = Math.min(cpuShares(cpus), 262144);
  return Math.min(10000, Math.max(1, 1 + Math.floor(((shares - 2) * 9999) / 262142)));
}

/** The CFS quota for `cpus` cores; the kernel refuses quotas under 1 ms. */
export function cfsQuotaUs(cpus: number, periodUs: number): number {
  return Math.max(1000, Math.round(cpus * periodUs));
}

function isErrno(error: unknown, ...codes: string[]): boolean {
  return codes.includes((error as NodeJS.ErrnoException)?.code ?? "");
}

function defaultSignal(pid: number, signal: NodeJS.Signals): void {
  sendSignal(pid, signal);
}

/** Reads a number file (`max` reads as undefined). */
async function readNumber(fs: CgroupFs, path: string): Promise<number | undefined> {
  const text = (await fs.readFile(path).catch(() => "")).trim();
  return /^\d+$/.test(text) ? Number(text) : undefined;
}

/** Writes a limit and names the file when the kernel refuses it. */
async function writeLimit(fs: CgroupFs, path: string, value: string): Promise<void> {
  try {
    await fs.writeFile(path, value);
  } catch (error) {
    throw new Error(`cannot write ${JSON.stringify(value)} to ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Writes a setting the host may not have (swap accounting off, old kernel); absence is not an error. */
async function writeOptional(fs: CgroupFs, path: string, value: string): Promise<void> {
  await fs.writeFile(path, value).catch((error: unknown) => {
    if (!isErrno(error, "ENOENT", "EINVAL", "EACCES", "EPERM")) throw error;
  });
}

async function removeWithRetries(fs: CgroupFs, path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delayMs = 1; ; delayMs = Math.min(delayMs * 2, 50)) {
    try {
      await fs.rmdir(path);
      return;
    } catch (error) {
      if (isErrno(error, "ENOENT")) return;
      // EBUSY: processes have been killed but the kernel has not finished tearing them down.
      if (!isErrno(error, "EBUSY") || Date.now() >= deadline) throw error;
    }
    await sleep(delayMs);
  }
}

/**
 * Polls `isEmpty` until true, re-running `kill` each round (a fork may slip past one round). An
 * empty cgroup (the usual case once a container's supervisor has ended) costs one read, no freeze.
 */
async function killUntilEmpty(kill: () => Promise<void>, isEmpty: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  if (await isEmpty()) return;
  const deadline = Date.now() + timeoutMs;
  for (let delayMs = 1; ; delayMs = Math.min(delayMs * 2, 50)) {
    await kill();
    if (await isEmpty()) return;
    if (Date.now() >= deadline) throw new Error(`processes of ${what} survive SIGKILL after ${timeoutMs} ms`);
    await sleep(delayMs);
  }
}

/**
 * cgroup v1: one directory per hierarchy (controllers that share a mount, like a co-mounted
 * `cpu,cpuacct`, share a directory).
 */
export class CgroupsV1 implements Cgroups {
  readonly versions: ReadonlySet<CgroupVersion> = new Set([1]);
  private readonly fs: CgroupFs;
  private readonly killTimeoutMs: number;
  private readonly removeTimeoutMs: number;
  private readonly signal: (pid: number, signal: NodeJS.Signals) => void;

  /** @param mounts mount point of each controller to manage; required ones missing here are simply not enforced. */
  constructor(
    private readonly mounts: Partial<Record<ManagedController, string>>,
    options: CgroupsOptions = {},
  ) {
    this.fs = options.fs ?? nodeCgroupFs;
    this.killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
    this.removeTimeoutMs = options.removeTimeoutMs ?? DEFAULT_REMOVE_TIMEOUT_MS;
    this.signal = options.signal ?? defaultSignal;
  }

  private dir(controller: ManagedController, name: string): string | undefined {
    const mount = this.mounts[controller];
    return mount === undefined ? undefined : join(mount, name);
  }

  private dirs(name: string): string[] {
    return [...new Set(Object.values(this.mounts).map((mount) => join(mount, name)))];
  }

  async create(name: string): Promise<void> {
    for (const dir of this.dirs(name)) await this.fs.mkdir(dir);
  }

  async setLimits(name: string, limits: CgroupLimits): Promise<void> {
    const memory = this.dir("memory", name);
    if (memory !== undefined) {
      await writeLimit(this.fs, join(memory, "memory.limit_in_bytes"), String(limits.memoryBytes));
      // memsw is memory + swap: equal to the memory limit means no swap at all. Absent without swap accounting.
      await writeOptional(this.fs, join(memory, "memory.memsw.limit_in_bytes"), String(limits.memoryBytes));
      await writeOptional(this.fs, join(memory, "memory.swappiness"), "0");
    }
    const cpu = this.dir("cpu", name);
    if (cpu !== undefined) {
      await writeLimit(this.fs, join(cpu, "cpu.shares"), String(cpuShares(limits.cpus)));
      await writeLimit(this.fs, join(cpu, "cpu.cfs_period_us"), String(limits.cfsPeriodUs));
      await writeLimit(this.fs, join(cpu, "cpu.cfs_quota_us"), limits.cpuQuota ? String(cfsQuotaUs(limits.cpus, limits.cfsPeriodUs)) : "-1");
    }
    const pids = this.dir("pids", name);
    if (pids !== undefined) await writeLimit(this.fs, join(pids, "pids.max"), limits.pidsMax === null ? "max" : String(limits.pidsMax));
  }

  enterPaths(name: string): string[] {
    return this.dirs(name).map((dir) => join(dir, "cgroup.procs"));
  }

  async procs(name: string): Promise<number[]> {
    const all = new Set<number>();
    for (const dir of this.dirs(name)) {
      for (const pid of parsePids(await this.fs.readFile(join(dir, "cgroup.procs")).catch(() => ""))) all.add(pid);
    }
    return [...all];
  }

  async stats(name: string): Promise<CgroupStats> {
    const read = (controller: ManagedController, file: string) => {
      const dir = this.dir(controller, name);
      return dir === undefined ? Promise.resolve("") : this.fs.readFile(join(dir, file)).catch(() => "");
    };
    const cpuacct = parseFlatKeyed(await read("cpuacct", "cpuacct.stat"));
    const cpu = parseFlatKeyed(await read("cpu", "cpu.stat"));
    const memoryStat = parseFlatKeyed(await read("memory", "memory.stat"));
    const number = async (controller: ManagedController, file: string) => {
      const text = (await read(controller, file)).trim();
      return /^\d+$/.test(text) ? Number(text) : undefined;
    };
    const limit = await number("memory", "memory.limit_in_bytes");
    return {
      cpuUserSecs: (cpuacct.get("user") ?? 0) / CLOCK_TICKS_PER_SECOND,
      cpuSystemSecs: (cpuacct.get("system") ?? 0) / CLOCK_TICKS_PER_SECOND,
      cpuNrPeriods: cpu.get("nr_periods") ?? 0,
      cpuNrThrottled: cpu.get("nr_throttled") ?? 0,
      cpuThrottledSecs: (cpu.get("throttled_time") ?? 0) / 1e9,
      memoryCurrentBytes: (await number("memory", "memory.usage_in_bytes")) ?? 0,
      memoryPeakBytes: await number("memory", "memory.max_usage_in_bytes"),
      memoryRssBytes: memoryStat.get("total_rss") ?? memoryStat.get("rss") ?? 0,
      // v1 reports "unlimited" as a huge page-aligned number.
      memoryLimitBytes: limit !== undefined && limit < 2 ** 62 ? limit : undefined,
      pids: (await number("pids", "pids.current")) ?? (await this.procs(name)).length,
    };
  }

  async oomKillCount(name: string): Promise<number> {
    const memory = this.dir("memory", name);
    if (memory === undefined) return 0;
    // memory.failcnt is no use: it counts hitting the limit (reclaim), not kills, and does not move on some kernels.
    return parseFlatKeyed(await this.fs.readFile(join(memory, "memory.oom_control")).catch(() => "")).get("oom_kill") ?? 0;
  }

  async killAll(name: string): Promise<void> {
    const freezer = this.dir("freezer", name);
    const killRound = async () => {
      // Frozen, nothing can fork between reading cgroup.procs and the kills; thawing delivers them.
      if (freezer !== undefined) await this.freeze(freezer);
      try {
        for (const pid of await this.procs(name)) this.signal(pid, "SIGKILL");
      } finally {
        if (freezer !== undefined) await this.fs.writeFile(join(freezer, "freezer.state"), "THAWED").catch(() => undefined);
      }
    };
    await killUntilEmpty(killRound, async () => (await this.procs(name)).length === 0, this.killTimeoutMs, `cgroup ${name}`);
  }

  /** FROZEN is reached asynchronously (FREEZING first); a stuck freeze still lets the kill proceed. */
  private async freeze(dir: string): Promise<void> {
    const state = join(dir, "freezer.state");
    const ok = await this.fs.writeFile(state, "FROZEN").then(
      () => true,
      () => false,
    );
    if (!ok) return;
    for (let attempt = 0; attempt < 50; attempt++) {
      if ((await this.fs.readFile(state).catch(() => "FROZEN")).trim() === "FROZEN") return;
      await sleep(2);
    }
  }

  async remove(name: string): Promise<void> {
    for (const dir of this.dirs(name)) await removeWithRetries(this.fs, dir, this.removeTimeoutMs);
  }
}

/** cgroup v2: one directory in the unified hierarchy; controllers are enabled top-down through `cgroup.subtree_control`. */
export class CgroupsV2 implements Cgroups {
  readonly versions: ReadonlySet<CgroupVersion> = new Set([2]);
  private readonly fs: CgroupFs;
  private readonly killTimeoutMs: number;
  private readonly removeTimeoutMs: number;
  private readonly signal: (pid: number, signal: NodeJS.Signals) => void;
  private readonly controllers: ManagedController[];

  /**
   * @param mountPath the cgroup2 mount point.
   * @param controllers the controllers to manage on v2 (enabled for the subtree down to each container).
   */
  constructor(
    private readonly mountPath: string,
    controllers: readonly ManagedController[],
    options: CgroupsOptions = {},
  ) {
    this.fs = options.fs ?? nodeCgroupFs;
    this.killTimeoutMs = options.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
    this.removeTimeoutMs = options.removeTimeoutMs ?? DEFAULT_REMOVE_TIMEOUT_MS;
    this.signal = options.signal ?? defaultSignal;
    // cpuacct and freezer are v1 names: v2 has cpu.stat and cgroup.freeze/cgroup.kill built in.
    this.controllers = controllers.filter((c) => c !== "cpuacct" && c !== "freezer");
  }

  private dir(name: string): string {
    return join(this.mountPath, name);
  }

  private has(controller: ManagedController): boolean {
    return this.controllers.includes(controller);
  }

  /**
   * A v2 controller works in a cgroup only when every ancestor enables it for its children, so each
   * level from the mount point down to the parent gets `+memory +cpu +pids` in its subtree_control.
   * (The kernel refuses that on a non-root cgroup that holds processes: the "no internal processes"
   * rule. Corral's own parent directory holds none; the mount root is exempt.)
   */
  async create(name: string): Promise<void> {
    const parts = name.split("/").filter((part) => part !== "");
    let dir = this.mountPath;
    for (const part of parts) {
      await this.enableForChildren(dir);
      dir = join(dir, part);
      await this.fs.mkdir(dir);
    }
  }

  private async enableForChildren(dir: string): Promise<void> {
    if (this.controllers.length === 0) return;
    const file = join(dir, "cgroup.subtree_control");
    // The kernel lists enabled controllers bare ("memory cpu"); tolerate the "+" form we write.
    const enabled = new Set((await this.fs.readFile(file).catch(() => "")).trim().split(/\s+/).map((name) => name.replace(/^\+/, "")));
    const missing = this.controllers.filter((controller) => !enabled.has(controller));
    if (missing.length > 0) await writeLimit(this.fs, file, missing.map((controller) => `+${controller}`).join(" "));
  }

  async setLimits(name: string, limits: CgroupLimits): Promise<void> {
    const dir = this.dir(name);
    if (this.has("memory")) {
      await writeLimit(this.fs, join(dir, "memory.max"), String(limits.memoryBytes));
      await writeOptional(this.fs, join(dir, "memory.swap.max"), "0");
      // Kill the whole container on OOM rather than one arbitrary process of it: the task has failed either way.
      await writeOptional(this.fs, join(dir, "memory.oom.group"), "1");
    }
    if (this.has("cpu")) {
      await writeLimit(this.fs, join(dir, "cpu.weight"), String(cpuWeight(limits.cpus)));
      const quota = limits.cpuQuota ? String(cfsQuotaUs(limits.cpus, limits.cfsPeriodUs)) : "max";
      await writeLimit(this.fs, join(dir, "cpu.max"), `${quota} ${limits.cfsPeriodUs}`);
    }
    if (this.has("pids")) await writeLimit(this.fs, join(dir, "pids.max"), limits.pidsMax === null ? "max" : String(limits.pidsMax));
  }

  enterPaths(name: string): string[] {
    return [join(this.dir(name), "cgroup.procs")];
  }

  async procs(name: string): Promise<number[]> {
    return parsePids(await this.fs.readFile(join(this.dir(name), "cgroup.procs")).catch(() => ""));
  }

  async stats(name: string): Promise<CgroupStats> {
    const dir = this.dir(name);
    const cpu = parseFlatKeyed(await this.fs.readFile(join(dir, "cpu.stat")).catch(() => ""));
    const memoryStat = parseFlatKeyed(await this.fs.readFile(join(dir, "memory.stat")).catch(() => ""));
    return {
      cpuUserSecs: (cpu.get("user_usec") ?? 0) / 1e6,
      cpuSystemSecs: (cpu.get("system_usec") ?? 0) / 1e6,
      cpuNrPeriods: cpu.get("nr_periods") ?? 0,
      cpuNrThrottled: cpu.get("nr_throttled") ?? 0,
      cpuThrottledSecs: (cpu.get("throttled_usec") ?? 0) / 1e6,
      memoryCurrentBytes: (await readNumber(this.fs, join(dir, "memory.current"))) ?? 0,
      memoryPeakBytes: await readNumber(this.fs, join(dir, "memory.peak")),
      memoryRssBytes: memoryStat.get("anon") ?? 0,
      memoryLimitBytes: await readNumber(this.fs, join(dir, "memory.max")),
      pids: (await readNumber(this.fs, join(dir, "pids.current"))) ?? (await this.procs(name)).length,
    };
  }

  async oomKillCount(name: string): Promise<number> {
    return parseFlatKeyed(await this.fs.readFile(join(this.dir(name), "memory.events")).catch(() => "")).get("oom_kill") ?? 0;
  }

  async killAll(name: string): Promise<void> {
    const dir = this.dir(name);
    // cgroup.kill (Linux 5.14) kills the whole subtree atomically, forks included; older kernels freeze first.
    const hasKill = await this.fs.readFile(join(dir, "cgroup.kill")).then(
      () => true,
      (error: unknown) => !isErrno(error, "ENOENT"),
    );
    const killRound = hasKill
      ? () => this.fs.writeFile(join(dir, "cgroup.kill"), "1")
      : async () => {
          await this.fs.writeFile(join(dir, "cgroup.freeze"), "1").catch(() => undefined);
          try {
            for (const pid of await this.procs(name)) this.signal(pid, "SIGKILL");
          } finally {
            await this.fs.writeFile(join(dir, "cgroup.freeze"), "0").catch(() => undefined);
          }
        };
    await killUntilEmpty(killRound, async () => (await this.procs(name)).length === 0, this.killTimeoutMs, `cgroup ${name}`);
  }

  async remove(name: string): Promise<void> {
    await removeWithRetries(this.fs, this.dir(name), this.removeTimeoutMs);
  }
}

/** A host that splits the managed controllers between v1 and v2: each operation runs on both halves. */
export class MixedCgroups implements Cgroups {
  readonly versions: ReadonlySet<CgroupVersion> = new Set([1, 2]);

  constructor(private readonly parts: readonly Cgroups[]) {}

  async create(name: string): Promise<void> {
    for (const part of this.parts) await part.create(name);
  }

  async setLimits(name: string, limits: CgroupLimits): Promise<void> {
    for (const part of this.parts) await part.setLimits(name, limits);
  }

  enterPaths(name: string): string[] {
    return this.parts.flatMap((part) => part.enterPaths(name));
  }

  async procs(name: string): Promise<number[]> {
    return [...new Set((await Promise.all(this.parts.map((part) => part.procs(name)))).flat())];
  }

  async stats(name: string): Promise<CgroupStats> {
    const all = await Promise.all(this.parts.map((part) => part.stats(name)));
    // Each counter is only non-zero on the half that holds its controller; pids is a count of the same processes.
    const sum = (key: keyof CgroupStats) => all.reduce((total, stats) => total + (stats[key] ?? 0), 0);
    const first = (key: "memoryPeakBytes" | "memoryLimitBytes") => all.find((stats) => stats[key] !== undefined)?.[key];
    return {
      cpuUserSecs: sum("cpuUserSecs"),
      cpuSystemSecs: sum("cpuSystemSecs"),
      cpuNrPeriods: sum("cpuNrPeriods"),
      cpuNrThrottled: sum("cpuNrThrottled"),
      cpuThrottledSecs: sum("cpuThrottledSecs"),
      memoryCurrentBytes: sum("memoryCurrentBytes"),
      memoryPeakBytes: first("memoryPeakBytes"),
      memoryRssBytes: sum("memoryRssBytes"),
      memoryLimitBytes: first("memoryLimitBytes"),
      pids: Math.max(...all.map((stats) => stats.pids)),
    };
  }

  async oomKillCount(name: string): Promise<number> {
    return (await Promise.all(this.parts.map((part) => part.oomKillCount(name)))).reduce((a, b) => a + b, 0);
  }

  async killAll(name: string): Promise<void> {
    for (const part of this.parts) await part.killAll(name);
  }

  async remove(name: string): Promise<void> {
    for (const part of this.parts) await part.remove(name);
  }
}

/**
 * Builds the {@link Cgroups} for a host layout: v1, v2 or mixed, by where each managed controller is.
 * Returns a reason instead when a required controller is missing altogether.
 */
export function cgroupsForLayout(layout: CgroupLayout, options: CgroupsOptions = {}): Cgroups | { missing: string[] } {
  const missing = REQUIRED_CONTROLLERS.filter((controller) => !layout.controllers.has(controller));
  if (missing.length > 0) return { missing };
  const v1: Partial<Record<ManagedController, string>> = {};
  const v2: ManagedController[] = [];
  for (const controller of [...REQUIRED_CONTROLLERS, ...OPTIONAL_CONTROLLERS]) {
    const mount = layout.controllers.get(controller);
    if (mount?.version === 1) v1[controller] = mount.mountPath;
    else if (mount?.version === 2) v2.push(controller);
  }
  const parts: Cgroups[] = [];
  if (Object.keys(v1).length > 0) parts.push(new CgroupsV1(v1, options));
  if (v2.length > 0 && layout.unified) parts.push(new CgroupsV2(layout.unified.mountPath, v2, options));
  return parts.length === 1 ? parts[0]! : new MixedCgroups(parts);
}

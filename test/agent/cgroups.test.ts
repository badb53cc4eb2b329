import { writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { computeCgroupLayout, parseMountInfo, parseProcCgroups } from "../../agent/containerizer/cgroups-layout.ts";
import {
  CgroupsV1,
  CgroupsV2,
  MixedCgroups,
  cfsQuotaUs,
  cgroupsForLayout,
  cpuShares,
  cpuWeight,
  nodeCgroupFs,
  type CgroupFs,
  type CgroupLimits,
} from "../../agent/containerizer/cgroups.ts";

// ------------------------------------------------------------------------------------------------
// fixtures: the texts of /proc/self/mountinfo and /proc/cgroups on three kinds of host
// ------------------------------------------------------------------------------------------------

/** systemd's hybrid layout: every controller on v1, a controller-less v2 for tracking (this CI machine's). */
const HYBRID_MOUNTINFO = `21 26 0:20 / /proc rw,relatime - proc proc rw
26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const HYBRID_PROC_CGROUPS = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	2	1	1
memory	4	24	1
freezer	6	1	1
net_cls	0	1	1
pids	8	1	1
`;

/** A modern distribution: cgroup2 only, at /sys/fs/cgroup. */
const PURE_V2_MOUNTINFO = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;
const PURE_V2_PROC_CGROUPS = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	0	80	1
cpu	0	80	1
cpuacct	0	80	1
memory	0	80	1
pids	0	80	1
hugetlb	0	80	1
`;
const PURE_V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n";

/** Older v1 layout: cpu and cpuacct co-mounted; a path with a space; memory disabled on the kernel command line. */
const COMOUNTED_MOUNTINFO = `31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 /docker/abc /sys/fs/cgroup/my\\040memory rw,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
`;

describe("cgroup layout (pure)", () => {
  it("parses mountinfo lines, optional fields and octal escapes included", () => {
    const entries = parseMountInfo(PURE_V2_MOUNTINFO + COMOUNTED_MOUNTINFO + "garbage line\n");
    expect(entries).toHaveLength(6);
    expect(entries[1]).toEqual({
      id: 25,
      parentId: 22,
      mountRoot: "/",
      mountPoint: "/sys/fs/cgroup",
      mountOptions: ["rw", "nosuid", "nodev", "noexec", "relatime"],
      fsType: "cgroup2",
      superOptions: ["rw", "nsdelegate", "memory_recursiveprot"],
    });
    expect(entries[3]!.mountPoint).toBe("/sys/fs/cgroup/my memory");
    expect(entries[3]!.mountRoot).toBe("/docker/abc");
  });

  it("parses /proc/cgroups, skipping the header", () => {
    expect(parseProcCgroups(HYBRID_PROC_CGROUPS)).toContainEqual({ name: "memory", hierarchy: 4, enabled: true });
    expect(parseProcCgroups("#subsys_name\thierarchy\tnum_cgroups\tenabled\nbad\n")).toEqual([]);
  });

  it("hybrid host: every controller on v1, nothing on the controller-less v2 mount", () => {
    const layout = computeCgroupLayout({ mountinfo: HYBRID_MOUNTINFO, procCgroups: HYBRID_PROC_CGROUPS, v2Controllers: "" });
    expect(layout.controllers.get("memory")).toEqual({ version: 1, mountPath: "/sys/fs/cgroup/memory", mountRoot: "/" });
    expect(layout.controllers.get("cpuacct")?.mountPath).toBe("/sys/fs/cgroup/cpuacct");
    expect(layout.controllers.get("pids")?.version).toBe(1);
    // name=systemd is a named hierarchy, not a controller; net_cls is not mounted anywhere.
    expect(layout.controllers.has("name=systemd")).toBe(false);
    expect(layout.controllers.has("net_cls")).toBe(false);
    expect(layout.unified?.mountPath).toBe("/sys/fs/cgroup/unified");
    expect(cgroupsForLayout(layout)).toBeInstanceOf(CgroupsV1);
  });

  it("pure v2 host: controllers from cgroup.controllers, all on the unified mount", () => {
    const layout = computeCgroupLayout({ mountinfo: PURE_V2_MOUNTINFO, procCgroups: PURE_V2_PROC_CGROUPS, v2Controllers: PURE_V2_CONTROLLERS });
    for (const controller of ["memory", "cpu", "pids", "io"]) {
      expect(layout.controllers.get(controller)).toEqual({ version: 2, mountPath: "/sys/fs/cgroup", mountRoot: "/" });
    }
    const cgroups = cgroupsForLayout(layout);
    expect(cgroups).toBeInstanceOf(CgroupsV2);
    expect("versions" in cgroups && [...cgroups.versions]).toEqual([2]);
  });

  it("pure v2 host without /proc/cgroups (newer kernels may hide it): the v2 list alone decides", () => {
    const layout = computeCgroupLayout({ mountinfo: PURE_V2_MOUNTINFO, procCgroups: "", v2Controllers: PURE_V2_CONTROLLERS });
    expect(layout.controllers.get("memory")?.version).toBe(2);
  });

  it("co-mounted v1 hierarchies share a mount; the whole-hierarchy mount wins over a sub-tree bind", () => {
    const procCgroups = "cpu\t1\t1\t1\ncpuacct\t1\t1\t1\nmemory\t4\t1\t1\npids\t8\t1\t1\n";
    const layout = computeCgroupLayout({ mountinfo: COMOUNTED_MOUNTINFO, procCgroups, v2Controllers: "", root: "/fake" });
    expect(layout.controllers.get("cpu")?.mountPath).toBe("/fake/sys/fs/cgroup/cpu,cpuacct");
    expect(layout.controllers.get("cpuacct")?.mountPath).toBe("/fake/sys/fs/cgroup/cpu,cpuacct");
    expect(layout.controllers.get("memory")?.mountPath).toBe("/fake/sys/fs/cgroup/memory");
    const v1 = cgroupsForLayout(layout) as CgroupsV1;
    // One directory per hierarchy: cpu and cpuacct are entered once.
    expect(v1.enterPaths("corral/c1")).toEqual([
      "/fake/sys/fs/cgroup/memory/corral/c1/cgroup.procs",
      "/fake/sys/fs/cgroup/cpu,cpuacct/corral/c1/cgroup.procs",
      "/fake/sys/fs/cgroup/pids/corral/c1/cgroup.procs",
    ]);
  });

  it("leaves out disabled controllers and reports missing required ones", () => {
    const procCgroups = "cpu\t1\t1\t1\ncpuacct\t1\t1\t1\nmemory\t4\t1\t0\npids\t8\t1\t1\n";
    const layout = computeCgroupLayout({ mountinfo: COMOUNTED_MOUNTINFO, procCgroups, v2Controllers: "" });
    expect(layout.controllers.has("memory")).toBe(false);
    expect(cgroupsForLayout(layout)).toEqual({ missing: ["memory"] });
  });

  it("a host that splits controllers between v1 and v2 gets the mixed implementation", () => {
    const mountinfo = `34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
`;
    const procCgroups = "cpu\t0\t1\t1\nmemory\t4\t1\t1\npids\t0\t1\t1\n";
    const layout = computeCgroupLayout({ mountinfo, procCgroups, v2Controllers: "cpu pids" });
    expect(layout.controllers.get("memory")?.version).toBe(1);
    expect(layout.controllers.get("cpu")?.version).toBe(2);
    const cgroups = cgroupsForLayout(layout) as MixedCgroups;
    expect(cgroups).toBeInstanceOf(MixedCgroups);
    expect(cgroups.enterPaths("corral/x")).toEqual(["/sys/fs/cgroup/memory/corral/x/cgroup.procs", "/sys/fs/cgroup/unified/corral/x/cgroup.procs"]);
  });
});

describe("cpu conversions", () => {
  it("shares, weight and quota follow the Mesos/runc formulas", () => {
    expect(cpuShares(1)).toBe(1024);
    expect(cpuShares(0.001)).toBe(2);
    expect(cpuWeight(1)).toBe(39); // runc: 1 + ((1024 - 2) * 9999) / 262142
    expect(cpuWeight(0.001)).toBe(1);
    expect(cfsQuotaUs(0.5, 100_000)).toBe(50_000);
    expect(cfsQuotaUs(0.001, 100_000)).toBe(1000);
  });

  it("weight is within 1..10000 and never decreases with cpus", () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 512, noNaN: true }), fc.double({ min: 0, max: 512, noNaN: true }), (a, b) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        expect(cpuWeight(lo)).toBeGreaterThanOrEqual(1);
        expect(cpuWeight(hi)).toBeLessThanOrEqual(10000);
        expect(cpuWeight(lo)).toBeLessThanOrEqual(cpuWeight(hi));
      }),
    );
  });
});

// ------------------------------------------------------------------------------------------------
// the implementations on a fake cgroupfs: a temp dir of plain files
// ------------------------------------------------------------------------------------------------

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "corral-cgroupfs-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/**
 * Plain files stand in for the kernel's: rmdir must remove the files a real cgroup directory would
 * show, and writing `cgroup.kill` (or thawing a frozen cgroup after the kills) empties `cgroup.procs`,
 * as the kernel would once the processes are dead. `onKill` must empty it before it returns (a
 * write left running raced the containerizer's next look and made it kill a second time).
 */
function fakeFs(options: { onKill?: (dir: string) => void } = {}): CgroupFs & { writes: string[] } {
  const writes: string[] = [];
  return {
    writes,
    readFile: nodeCgroupFs.readFile,
    mkdir: nodeCgroupFs.mkdir,
    rmdir: (path) => rm(path, { recursive: true }),
    async writeFile(path, data) {
      writes.push(`${path.slice(root.length)}=${data}`);
      await nodeCgroupFs.writeFile(path, data);
      if (path.endsWith("/cgroup.kill") || (path.endsWith("/freezer.state") && data === "THAWED") || (path.endsWith("/cgroup.freeze") && data === "0")) {
        options.onKill?.(dirname(path));
      }
    },
  };
}

async function put(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}

const LIMITS: CgroupLimits = { memoryBytes: 64 * 1024 * 1024, cpus: 0.5, cpuQuota: true, cfsPeriodUs: 100_000, pidsMax: 100 };

describe("CgroupsV2 on a fake tree", () => {
  it("creates the cgroup, enabling the controllers on every ancestor, and writes the limits", async () => {
    await put(join(root, "cgroup.subtree_control"), "");
    const fs = fakeFs();
    const cgroups = new CgroupsV2(root, ["memory", "cpu", "pids", "cpuacct", "freezer"], { fs });
    await cgroups.create("corral/c1");
    await cgroups.setLimits("corral/c1", LIMITS);
    const dir = join(root, "corral/c1");
    expect(await readFile(join(root, "cgroup.subtree_control"), "utf8")).toBe("+memory +cpu +pids");
    expect(await readFile(join(root, "corral/cgroup.subtree_control"), "utf8")).toBe("+memory +cpu +pids");
    expect(await readFile(join(dir, "memory.max"), "utf8")).toBe(String(64 * 1024 * 1024));
    expect(await readFile(join(dir, "memory.swap.max"), "utf8")).toBe("0");
    expect(await readFile(join(dir, "memory.oom.group"), "utf8")).toBe("1");
    expect(await readFile(join(dir, "cpu.weight"), "utf8")).toBe(String(cpuWeight(0.5)));
    expect(await readFile(join(dir, "cpu.max"), "utf8")).toBe("50000 100000");
    expect(await readFile(join(dir, "pids.max"), "utf8")).toBe("100");
    expect(cgroups.enterPaths("corral/c1")).toEqual([join(dir, "cgroup.procs")]);

    // A second container does not rewrite what is already enabled.
    fs.writes.length = 0;
    await cgroups.create("corral/c2");
    expect(fs.writes.filter((w) => w.includes("subtree_control"))).toEqual([]);
  });

  it("writes no quota when the quota is off and no pids limit when there is none", async () => {
    const cgroups = new CgroupsV2(root, ["memory", "cpu", "pids"], { fs: fakeFs() });
    await cgroups.create("corral/c1");
    await cgroups.setLimits("corral/c1", { ...LIMITS, cpuQuota: false, pidsMax: null });
    expect(await readFile(join(root, "corral/c1/cpu.max"), "utf8")).toBe("max 100000");
    expect(await readFile(join(root, "corral/c1/pids.max"), "utf8")).toBe("max");
  });

  it("reads statistics and the OOM-kill counter from memory.events", async () => {
    const cgroups = new CgroupsV2(root, ["memory", "cpu", "pids"], { fs: fakeFs() });
    await cgroups.create("corral/c1");
    const dir = join(root, "corral/c1");
    await put(join(dir, "cpu.stat"), "usage_usec 3500000\nuser_usec 3000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 12\nthrottled_usec 250000\n");
    await put(join(dir, "memory.current"), "1048576\n");
    await put(join(dir, "memory.peak"), "2097152\n");
    await put(join(dir, "memory.max"), "max\n");
    await put(join(dir, "memory.stat"), "anon 524288\nfile 4096\n");
    await put(join(dir, "pids.current"), "3\n");
    await put(join(dir, "memory.events"), "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n");
    expect(await cgroups.stats("corral/c1")).toEqual({
      cpuUserSecs: 3,
      cpuSystemSecs: 0.5,
      cpuNrPeriods: 40,
      cpuNrThrottled: 12,
      cpuThrottledSecs: 0.25,
      memoryCurrentBytes: 1048576,
      memoryPeakBytes: 2097152,
      memoryRssBytes: 524288,
      memoryLimitBytes: undefined,
      pids: 3,
    });
    expect(await cgroups.oomKillCount("corral/c1")).toBe(1);
    expect(await cgroups.oomKillCount("corral/absent")).toBe(0);
  });

  it("kill-all writes cgroup.kill and waits for the cgroup to empty; remove deletes it", async () => {
    const fs = fakeFs({ onKill: (dir) => writeFileSync(join(dir, "cgroup.procs"), "") });
    const signalled: number[] = [];
    const cgroups = new CgroupsV2(root, ["memory", "cpu", "pids"], { fs, signal: (pid) => signalled.push(pid) });
    await cgroups.create("corral/c1");
    const dir = join(root, "corral/c1");
    await put(join(dir, "cgroup.kill"), "");
    await put(join(dir, "cgroup.procs"), "101\n102\n");
    expect(await cgroups.procs("corral/c1")).toEqual([101, 102]);
    await cgroups.killAll("corral/c1");
    expect(fs.writes).toContain("/corral/c1/cgroup.kill=1");
    expect(signalled).toEqual([]); // the kernel does it
    await cgroups.remove("corral/c1");
    await expect(readFile(join(dir, "cgroup.procs"))).rejects.toMatchObject({ code: "ENOENT" });
    await cgroups.remove("corral/c1"); // already gone is fine
  });

  it("kill-all without cgroup.kill (before Linux 5.14) freezes, signals every pid, and thaws", async () => {
    const fs = fakeFs({ onKill: (dir) => writeFileSync(join(dir, "cgroup.procs"), "") });
    const signalled: [number, string][] = [];
    const cgroups = new CgroupsV2(root, ["memory", "cpu", "pids"], { fs, signal: (pid, signal) => signalled.push([pid, signal]) });
    await cgroups.create("corral/c1");
    await put(join(root, "corral/c1/cgroup.procs"), "7\n8\n");
    await cgroups.killAll("corral/c1");
    expect(signalled).toEqual([
      [7, "SIGKILL"],
      [8, "SIGKILL"],
    ]);
    expect(fs.writes.filter((w) => w.includes("cgroup.freeze"))).toEqual(["/corral/c1/cgroup.freeze=1", "/corral/c1/cgroup.freeze=0"]);
  });

  it("kill-all gives up with an error when processes survive", async () => {
    const cgroups = new CgroupsV2(root, ["memory"], { fs: fakeFs(), killTimeoutMs: 30, signal: () => undefined });
    await cgroups.create("corral/c1");
    await put(join(root, "corral/c1/cgroup.procs"), "9\n");
    await expect(cgroups.killAll("corral/c1")).rejects.toThrow(/survive SIGKILL/);
  });

  it("names the file when the kernel refuses a limit", async () => {
    const fs = fakeFs();
    const failing: CgroupFs = {
      ...fs,
      writeFile: async (path, data) => {
        if (path.endsWith("memory.max")) throw Object.assign(new Error("EINVAL: invalid argument"), { code: "EINVAL" });
        await fs.writeFile(path, data);
      },
    };
    const cgroups = new CgroupsV2(root, ["memory"], { fs: failing });
    await cgroups.create("corral/c1");
    await expect(cgroups.setLimits("corral/c1", LIMITS)).rejects.toThrow(/memory\.max/);
  });
});

describe("CgroupsV1 on a fake tree", () => {
  function v1(fs: CgroupFs, signal?: (pid: number, signal: NodeJS.Signals) => void): CgroupsV1 {
    const mounts = {
      memory: join(root, "memory"),
      cpu: join(root, "cpu"),
      cpuacct: join(root, "cpuacct"),
      pids: join(root, "pids"),
      freezer: join(root, "freezer"),
    };
    return new CgroupsV1(mounts, { fs, ...(signal ? { signal } : {}) });
  }

  it("creates one directory per hierarchy and writes the v1 limit files, swap off", async () => {
    const cgroups = v1(fakeFs());
    await cgroups.create("corral/c1");
    await cgroups.setLimits("corral/c1", LIMITS);
    const read = (path: string) => readFile(join(root, path), "utf8");
    expect(await read("memory/corral/c1/memory.limit_in_bytes")).toBe(String(64 * 1024 * 1024));
    expect(await read("memory/corral/c1/memory.memsw.limit_in_bytes")).toBe(String(64 * 1024 * 1024));
    expect(await read("memory/corral/c1/memory.swappiness")).toBe("0");
    expect(await read("cpu/corral/c1/cpu.shares")).toBe("512");
    expect(await read("cpu/corral/c1/cpu.cfs_period_us")).toBe("100000");
    expect(await read("cpu/corral/c1/cpu.cfs_quota_us")).toBe("50000");
    expect(await read("pids/corral/c1/pids.max")).toBe("100");
    expect(cgroups.enterPaths("corral/c1")).toHaveLength(5);
  });

  it("turns the quota off with -1", async () => {
    const cgroups = v1(fakeFs());
    await cgroups.create("corral/c1");
    await cgroups.setLimits("corral/c1", { ...LIMITS, cpuQuota: false });
    expect(await readFile(join(root, "cpu/corral/c1/cpu.cfs_quota_us"), "utf8")).toBe("-1");
  });

  it("reads v1 statistics (cpuacct ticks, throttled ns) and the oom_kill counter of memory.oom_control", async () => {
    const cgroups = v1(fakeFs());
    await cgroups.create("corral/c1");
    await put(join(root, "cpuacct/corral/c1/cpuacct.stat"), "user 150\nsystem 25\n");
    await put(join(root, "cpu/corral/c1/cpu.stat"), "nr_periods 20\nnr_throttled 9\nthrottled_time 450000000\n");
    await put(join(root, "memory/corral/c1/memory.usage_in_bytes"), "4096000\n");
    await put(join(root, "memory/corral/c1/memory.max_usage_in_bytes"), "8192000\n");
    await put(join(root, "memory/corral/c1/memory.limit_in_bytes"), "9223372036854771712\n");
    await put(join(root, "memory/corral/c1/memory.stat"), "cache 0\nrss 100\ntotal_rss 2048000\n");
    await put(join(root, "pids/corral/c1/pids.current"), "4\n");
    await put(join(root, "memory/corral/c1/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    expect(await cgroups.stats("corral/c1")).toEqual({
      cpuUserSecs: 1.5,
      cpuSystemSecs: 0.25,
      cpuNrPeriods: 20,
      cpuNrThrottled: 9,
      cpuThrottledSecs: 0.45,
      memoryCurrentBytes: 4096000,
      memoryPeakBytes: 8192000,
      memoryRssBytes: 2048000,
      memoryLimitBytes: undefined,
      pids: 4,
    });
    expect(await cgroups.oomKillCount("corral/c1")).toBe(2);
  });

  it("kill-all freezes, SIGKILLs the union of cgroup.procs, then thaws", async () => {
    const fs = fakeFs({
      onKill: () => {
        for (const hierarchy of ["memory", "cpu", "cpuacct", "pids", "freezer"]) writeFileSync(join(root, hierarchy, "corral/c1/cgroup.procs"), "");
      },
    });
    const signalled: number[] = [];
    const cgroups = v1(fs, (pid) => signalled.push(pid));
    await cgroups.create("corral/c1");
    await put(join(root, "freezer/corral/c1/freezer.state"), "THAWED");
    await put(join(root, "memory/corral/c1/cgroup.procs"), "11\n12\n");
    await put(join(root, "pids/corral/c1/cgroup.procs"), "12\n13\n");
    await cgroups.killAll("corral/c1");
    expect(signalled.sort()).toEqual([11, 12, 13]);
    const freezerWrites = fs.writes.filter((w) => w.includes("freezer.state"));
    expect(freezerWrites).toEqual(["/freezer/corral/c1/freezer.state=FROZEN", "/freezer/corral/c1/freezer.state=THAWED"]);
    await cgroups.remove("corral/c1");
    for (const hierarchy of ["memory", "cpu", "cpuacct", "pids", "freezer"]) {
      await expect(readFile(join(root, hierarchy, "corral/c1/cgroup.procs"))).rejects.toMatchObject({ code: "ENOENT" });
    }
  });
});

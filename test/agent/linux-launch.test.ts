import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeShellStatus } from "../../agent/containerizer/common.ts";
import { containerCgroupName, handlesSigterm } from "../../agent/containerizer/linux.ts";
import { parseMountInfo } from "../../agent/containerizer/cgroups-layout.ts";
import { containerCommand, containerHostname, execCommand, mountsToProtect, parseCredentials, splitEnvironment, workloadArgv, type LaunchPlan } from "../../agent/containerizer/linux-launch.ts";
import type { ContainerSpec } from "../../agent/containerizer/types.ts";

const TOOLS = {
  bwrap: "/usr/bin/bwrap",
  unshare: "/usr/bin/unshare",
  setpriv: "/usr/bin/setpriv",
  tini: "/usr/bin/tini",
  mount: "/usr/bin/mount",
  mkdir: "/usr/bin/mkdir",
  hostname: "/usr/bin/hostname",
  env: "/usr/bin/env",
};

const SPEC: ContainerSpec = {
  containerId: "c1",
  taskId: "web.1",
  frameworkId: "fw",
  command: { shell: true, value: "echo hi" },
  env: {},
  sandboxDir: "/var/lib/corral/runs/c1",
  resources: { cpus: 1, memMb: 64, diskMb: 10, ports: [] },
};

function plan(overrides: Partial<LaunchPlan> = {}): LaunchPlan {
  return {
    launcher: "bwrap",
    tools: TOOLS,
    privilege: "root",
    agentIsRoot: true,
    identity: { uid: 65534, gid: 65534, name: "nobody" },
    hostname: "web-1",
    tmpfsBytes: 1024,
    tmpfsDirs: ["/tmp", "/dev/shm"],
    ulimits: ["-n", "1024"],
    enterPaths: ["/sys/fs/cgroup/memory/corral/c1/cgroup.procs"],
    metaDir: "/var/lib/corral/runs/c1/.corral",
    workloadOnlyEnv: {},
    ...overrides,
  };
}

/** Positions of the programs the chain execs, in order. */
function order(args: string[], programs: string[]): number[] {
  return programs.map((program) => args.indexOf(program));
}

describe("launch argv (pure)", () => {
  it("root + bwrap: enter cgroups, then namespaces, then drop to the user, then tini, then the workload", () => {
    const args = containerCommand(plan(), SPEC);
    const positions = order(args, ["corral-enter", "/sys/fs/cgroup/memory/corral/c1/cgroup.procs", "/usr/bin/bwrap", "/usr/bin/setpriv", "/usr/bin/tini", "echo hi"]);
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    const setpriv = args.slice(args.indexOf("/usr/bin/setpriv"), args.indexOf("/usr/bin/tini"));
    expect(setpriv.join(" ")).toBe(
      "/usr/bin/setpriv --reuid 65534 --regid 65534 --init-groups --no-new-privs --bounding-set -all --inh-caps -all --ambient-caps -all --pdeathsig keep --",
    );
    const bwrap = args.slice(args.indexOf("/usr/bin/bwrap"), args.indexOf("/usr/bin/setpriv")).join(" ");
    expect(bwrap).toContain("--unshare-pid --unshare-uts --unshare-ipc");
    expect(bwrap).toContain("--hostname web-1");
    expect(bwrap).toContain("--ro-bind / /");
    expect(bwrap).toContain("--perms 1777 --size 1024 --tmpfs /tmp --perms 1777 --size 1024 --tmpfs /dev/shm");
    expect(bwrap).toContain(`--bind ${SPEC.sandboxDir} ${SPEC.sandboxDir} --ro-bind ${SPEC.sandboxDir}/.corral ${SPEC.sandboxDir}/.corral --chdir ${SPEC.sandboxDir}`);
    expect(bwrap).not.toContain("--unshare-user");
    expect(args.slice(args.indexOf("/usr/bin/tini"))).toEqual(["/usr/bin/tini", "-s", "-g", "--", "/bin/sh", "-c", "echo hi"]);
  });

  it("userns as root: drop to the user first, then an unprivileged bwrap maps it", () => {
    const args = containerCommand(plan({ privilege: "userns" }), SPEC);
    expect(args.indexOf("/usr/bin/setpriv")).toBeLessThan(args.indexOf("/usr/bin/bwrap"));
    const bwrap = args.slice(args.indexOf("/usr/bin/bwrap")).join(" ");
    expect(bwrap).toContain("--unshare-user --uid 65534 --gid 65534 --disable-userns");
    expect(bwrap).toContain("--cap-drop ALL");
  });

  it("unshare path: the setup shell mounts, then setpriv; with userns the caps kept for setup are dropped", () => {
    const root = containerCommand(plan({ launcher: "unshare" }), SPEC);
    expect(root).not.toContain("/usr/bin/bwrap");
    expect(root.slice(root.indexOf("/usr/bin/unshare"), root.indexOf("corral-setup")).join(" ")).toContain("--pid --fork --kill-child --mount --uts --ipc");
    const afterSetup = root.slice(root.indexOf("corral-setup"));
    expect(afterSetup.slice(1, 7)).toEqual(["/usr/bin/mount", "/usr/bin/mkdir", "/usr/bin/hostname", SPEC.sandboxDir, "web-1", "1024"]);
    const userns = containerCommand(plan({ launcher: "unshare", privilege: "userns" }), SPEC);
    const setprivs = userns.flatMap((arg, index) => (arg === "/usr/bin/setpriv" ? [index] : []));
    expect(setprivs).toHaveLength(2);
    expect(setprivs[0]).toBeLessThan(userns.indexOf("/usr/bin/unshare"));
    expect(setprivs[1]).toBeGreaterThan(userns.indexOf("corral-setup"));
    expect(userns.join(" ")).toContain("--user --map-user=65534 --map-group=65534 --keep-caps");
  });

  it("unshare path: every reachable host mount that is not read-only already is remounted so, / first", () => {
    // A VM whose root was switched to after /proc, /sys and /dev were mounted; devpts and /dev/shm
    // mounted twice; /data mounted, then a file system mounted over /srv hides /srv/old.
    const mountinfo = [
      "22 27 0:21 / /proc rw,relatime - proc proc rw",
      "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw",
      "24 27 0:6 / /dev rw,relatime - devtmpfs udev rw",
      "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw",
      "26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw",
      "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
      "28 27 0:25 / /opt/tools ro,nosuid,nodev,relatime - squashfs /dev/vdb ro",
      "29 26 0:26 / /dev/pts rw,relatime - devpts devpts rw",
      "30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw",
      "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw",
      "32 31 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
      "33 22 0:40 / /proc/sys/fs/binfmt_misc rw,relatime - binfmt_misc binfmt_misc rw",
      "34 27 0:41 / /srv/old rw,relatime - tmpfs tmpfs rw",
      "35 27 0:42 / /srv rw,relatime - tmpfs tmpfs rw",
      "36 28 0:43 / /opt/tools/cache rw,relatime - tmpfs tmpfs rw",
      "37 27 0:44 / /run/lock\\040x rw,nosuid,nodev - tmpfs tmpfs rw",
    ].join("\n");
    expect(mountsToProtect(parseMountInfo(mountinfo))).toEqual(["/", "/sys", "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/dev", "/dev/shm", "/dev/pts", "/opt/tools/cache", "/srv", "/run/lock x"]);
    expect(mountsToProtect([])).toEqual(["/"]);

    const args = containerCommand(plan({ launcher: "unshare", readOnlyMounts: ["/", "/run/lock x"] }), SPEC);
    const afterSetup = args.slice(args.indexOf("corral-setup"));
    expect(afterSetup.slice(7, 13)).toEqual(["/", "/run/lock x", "--", "/tmp", "/dev/shm", "--"]);
  });

  it("without tini, a shell init is pid 1; argv commands keep their arguments", () => {
    const spec: ContainerSpec = { ...SPEC, command: { shell: false, value: "python3", arguments: ["python3", "-m", "http.server"] } };
    const args = containerCommand(plan({ tools: { ...TOOLS, tini: undefined } }), spec);
    expect(args).not.toContain("/usr/bin/tini");
    expect(args.slice(args.indexOf("corral-init"))).toEqual(["corral-init", "python3", "-m", "http.server"]);
    expect(workloadArgv({ ...SPEC, command: { shell: false, value: "true" } })).toEqual(["true"]);
  });

  it("variables that steer privileged programs reach only the workload, after the privilege drop", () => {
    const { privileged, workloadOnly } = splitEnvironment(
      { LD_PRELOAD: "/sandbox/evil.so", BASH_ENV: "/x", PATH: "/opt/bin", "BASH_FUNC_ulimit%%": "() { :; }", SECRET: "s3cret", LANG: "C.UTF-8" },
    );
    expect(privileged).toEqual({ SECRET: "s3cret", LANG: "C.UTF-8", PATH: "/opt/bin" });
    expect(Object.keys(workloadOnly).sort()).toEqual(["BASH_ENV", "BASH_FUNC_ulimit%%", "LD_PRELOAD"]);
    const args = containerCommand(plan({ workloadOnlyEnv: workloadOnly }), SPEC);
    const env = args.indexOf("/usr/bin/env");
    expect(env).toBeGreaterThan(args.indexOf("/usr/bin/setpriv"));
    expect(args.slice(env, env + 3)).toEqual(["/usr/bin/env", "--", "LD_PRELOAD=/sandbox/evil.so"]);
    // Secrets stay out of argv, which every user can read in /proc.
    expect(args.join(" ")).not.toContain("s3cret");
  });

  it("host names are DNS labels derived from the task id", () => {
    expect(containerHostname("web.instance-3f2a")).toBe("web-instance-3f2a");
    expect(containerHostname("/Prod/API_v2")).toBe("prod-api-v2");
    expect(containerHostname("___")).toBe("corral-task");
    fc.assert(
      fc.property(fc.string(), (taskId) => {
        expect(containerHostname(taskId)).toMatch(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/);
      }),
    );
  });

  it("cgroup names are the container id when safe, a sanitised id plus a hash otherwise", () => {
    expect(containerCgroupName("corral", "web.1-abc")).toBe("corral/web.1-abc");
    const odd = containerCgroupName("corral", "../etc/x y");
    expect(odd).toMatch(/^corral\/\.\._etc_x_y-[0-9a-f]{16}$/);
    expect(containerCgroupName("corral", "..")).not.toBe("corral/..");
    expect(containerCgroupName("corral", "a/b")).not.toBe(containerCgroupName("corral", "a_b"));
  });

  it("exit statuses above 128 decode to signals", () => {
    expect(decodeShellStatus(0)).toEqual({ exitCode: 0, signal: null });
    expect(decodeShellStatus(3)).toEqual({ exitCode: 3, signal: null });
    expect(decodeShellStatus(137)).toEqual({ exitCode: null, signal: "SIGKILL" });
    expect(decodeShellStatus(143)).toEqual({ exitCode: null, signal: "SIGTERM" });
    expect(decodeShellStatus(255)).toEqual({ exitCode: 255, signal: null });
  });

  it("reads a SIGTERM handler from a /proc status mask", () => {
    expect(handlesSigterm("SigCgt:\t0000000000004002\n")).toBe(true);
    expect(handlesSigterm("SigCgt:\t0000000000010002\n")).toBe(false);
    expect(handlesSigterm("")).toBe(false);
  });
});

describe("execCommand (a command run inside a running container)", () => {
  it("enters the cgroups first, then the init's namespaces as root, then drops to the task's user and runs the command", () => {
    const args = execCommand(
      {
        tools: { ...TOOLS, nsenter: "/usr/bin/nsenter" },
        initPid: 4242,
        credentials: { uid: 65534, gid: 65534, groups: [65534, 100] },
        cwd: SPEC.sandboxDir,
        ulimits: ["-n", "1024"],
        enterPaths: ["/sys/fs/cgroup/memory/corral/c1/cgroup.procs"],
        workloadOnlyEnv: { LD_PRELOAD: "x.so" },
      },
      "curl -f localhost:$PORT0",
    );
    expect(args.slice(3, 10)).toEqual(["corral-exec", "-n", "1024", "--", "/sys/fs/cgroup/memory/corral/c1/cgroup.procs", "--", "/usr/bin/nsenter"]);
    const rest = args.slice(9).join(" ");
    expect(rest).toBe(
      `/usr/bin/nsenter --target 4242 --pid --mount --uts --ipc --root --wd=${SPEC.sandboxDir} -- ` +
        "/usr/bin/setpriv --reuid 65534 --regid 65534 --groups 65534,100 --no-new-privs --bounding-set -all --inh-caps -all --ambient-caps -all -- " +
        "/usr/bin/env -- LD_PRELOAD=x.so /bin/sh -c curl -f localhost:$PORT0",
    );
    expect(() => execCommand({ tools: TOOLS, initPid: 1, credentials: { uid: 1, gid: 1, groups: [] }, cwd: "/", ulimits: [], enterPaths: [], workloadOnlyEnv: {} }, "true")).toThrow(/nsenter/);
  });

  it("reads a process's credentials from /proc/<pid>/status", () => {
    expect(parseCredentials("Name:\ttini\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t65534 \n")).toEqual({ uid: 65534, gid: 65534, groups: [65534] });
    expect(parseCredentials("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n")).toEqual({ uid: 0, gid: 0, groups: [] });
    expect(parseCredentials("")).toBeUndefined();
  });
});

/**
 * The Linux containerizer against the real kernel: cgroups, namespaces, user switch. These tests need
 * root (and, for the cgroup ones, writable cgroups); elsewhere they are reported as skipped, with the
 * reason in their titles and a warning on the console.
 */
import { chmod, lstat, mkdtemp, readFile, readdir, readlink, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { execFile } from "node:child_process";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCgroupLayout } from "../../agent/containerizer/cgroups-layout.ts";
import {
  LinuxContainerizer,
  containerCgroupName,
  type LinuxContainerizerOptions,
} from "../../agent/containerizer/linux.ts";
import type { ContainerSpec } from "../../agent/containerizer/types.ts";
import { eventually } from "../harness/events.ts";

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const NEEDS_ROOT = "needs root: namespaces, cgroups and the user switch";
if (!isRoot) console.warn(`[linux-containerizer.test] SKIPPING real-isolation tests: ${NEEDS_ROOT} (running as uid ${process.getuid?.()})`);

const CGROUPS_ROOT = `corral-test-${process.pid}`;
const CONTROLLERS = ["memory", "cpu", "cpuacct", "pids", "freezer"];

let root: string;
let containerizer: LinuxContainerizer;
let counter = 0;
const extras: LinuxContainerizer[] = [];

/** Another containerizer (for options that differ); destroyed after the file. */
async function another(options: LinuxContainerizerOptions): Promise<LinuxContainerizer> {
  const created = await LinuxContainerizer.create({ cgroupsRoot: CGROUPS_ROOT, ...options });
  extras.push(created);
  return created;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "corral-linux-"));
  // The task's user must reach its sandbox through this directory.
  await chmod(root, 0o755);
  if (!isRoot) return;
  containerizer = await another({ hostname: "agent-1.test", diskPollIntervalMs: 100, oomPollIntervalMs: 100, allowedUsers: ["daemon"] });
});

afterAll(async () => {
  await Promise.all(extras.map((c) => c.destroyAll()));
  if (isRoot) {
    const layout = await readCgroupLayout();
    const mounts = new Set(CONTROLLERS.map((c) => layout.controllers.get(c)?.mountPath).filter((m) => m !== undefined));
    for (const mount of mounts) await rmdir(join(mount, CGROUPS_ROOT)).catch(() => undefined);
  }
  await rm(root, { recursive: true, force: true });
});

function spec(value: string, overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  counter += 1;
  const containerId = `c${counter}-${process.pid}`;
  return {
    containerId,
    taskId: `app.task-${counter}`,
    frameworkId: "fw-1",
    command: { shell: true, value },
    env: {},
    sandboxDir: join(root, "runs", containerId),
    resources: { cpus: 1, memMb: 128, diskMb: 64, ports: [] },
    ...overrides,
  };
}

const text = (s: ContainerSpec, file: "stdout" | "stderr") => readFile(join(s.sandboxDir, file), "utf8");

/** Runs a task to its end and returns its termination and output. */
async function run(c: LinuxContainerizer, s: ContainerSpec) {
  await c.launch(s);
  const termination = await c.wait(s.containerId);
  return { termination, stdout: await text(s, "stdout"), stderr: await text(s, "stderr") };
}

const stdoutContains = (s: ContainerSpec, marker: string) =>
  eventually(async () => ((await text(s, "stdout").catch(() => "")).includes(marker)), 5000, `"${marker}" in stdout`);

/**
 * Gone = no such process, not even a zombie: a container's processes are reaped within its own tree
 * (the launcher reaps the init, the supervisor the launcher), never left to the host's init.
 */
async function expectGone(pids: number[]): Promise<void> {
  // The /proc stat line (state, parent) is in the comparison so a failure says what is left.
  const left = await Promise.all(pids.map(async (pid) => readFile(`/proc/${pid}/stat`, "utf8").catch(() => "")));
  expect(left.filter((line) => line !== "")).toEqual([]);
}

async function cgroupDirs(containerId: string): Promise<string[]> {
  const layout = await readCgroupLayout();
  const name = containerCgroupName(CGROUPS_ROOT, containerId);
  return [...new Set(CONTROLLERS.map((c) => layout.controllers.get(c)?.mountPath).filter((m) => m !== undefined))].map((mount) => join(mount!, name));
}

async function cgroupPids(containerId: string): Promise<number[]> {
  const [memory] = await cgroupDirs(containerId);
  return (await readFile(join(memory!, "cgroup.procs"), "utf8")).split("\n").filter(Boolean).map(Number);
}

const exists = (path: string) => stat(path).then(() => true, () => false);

describe(`LinuxContainerizer with real isolation${isRoot ? "" : ` (skipped: ${NEEDS_ROOT})`}`, () => {
  it.skipIf(!isRoot)("uses cgroups, with bubblewrap and tini where installed (scripts/ensure-isolation.sh)", async () => {
    const installed = async (name: string) => (await Promise.all(["/usr/bin", "/usr/local/bin", "/bin"].map((dir) => exists(join(dir, name))))).some(Boolean);
    expect(containerizer.isolation).toMatch(/^cgroups-v[12]$/);
    expect(containerizer.launcher).toEqual({ tool: (await installed("bwrap")) ? "bwrap" : "unshare", init: (await installed("tini")) ? "tini" : "sh" });
  });

  it.skipIf(!isRoot)("runs as nobody with no capabilities, in its own pid/uts namespaces and a read-only root", async () => {
    const s = spec(
      [
        "id -u",
        "hostname",
        "ls /proc | grep -c '^[0-9]'",
        "cat /proc/1/comm",
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
        "echo nofile=$(ulimit -n)",
        "touch /etc/corral-test 2>/dev/null && echo etc-writable || echo etc-readonly",
        "touch in-sandbox && echo sandbox-writable",
        "touch /tmp/t /dev/shm/t && echo tmp-writable",
        "df -k /tmp /dev/shm | tail -n +2",
        "pwd",
      ].join("; "),
      { resources: { cpus: 1, memMb: 48, diskMb: 64, ports: [] } },
    );
    const { termination, stdout } = await run(containerizer, s);
    expect(termination).toEqual({ exitCode: 0, signal: null, killed: false, message: "Command exited with status 0" });
    const lines = stdout.trim().split("\n");
    expect(lines[0]).toBe("65534");
    expect(lines[1]).toBe("app-task-" + s.taskId.split("-")[1]);
    expect(lines[1]).not.toBe(hostname());
    // tini, sh, ls and grep (or fewer, if one has already exited): nothing of the host's.
    expect(Number(lines[2])).toBeLessThanOrEqual(5);
    expect(lines[3]).toBe(containerizer.launcher.init === "tini" ? "tini" : "sh");
    for (const field of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) expect(stdout).toMatch(new RegExp(`${field}:\\s+0+\\n`));
    expect(stdout).toMatch(/NoNewPrivs:\s+1/);
    expect(Number(/nofile=(\d+)/.exec(stdout)?.[1])).toBeLessThanOrEqual(65536);
    expect(stdout).toContain("etc-readonly");
    expect(stdout).toContain("sandbox-writable");
    expect(stdout).toContain("tmp-writable");
    // Private tmpfs, capped at the task's memory (48 MiB).
    const tmpfs = lines.filter((line) => line.startsWith("tmpfs"));
    expect(tmpfs).toHaveLength(2);
    for (const line of tmpfs) expect(Number(line.split(/\s+/)[1])).toBe(48 * 1024);
    expect(lines[lines.length - 1]).toBe(s.sandboxDir);
    expect(await exists("/etc/corral-test")).toBe(false);
  });

  it.skipIf(!isRoot)("sets the Corral/Mesos environment; loader variables reach the workload; the agent's do not", async () => {
    process.env.CORRAL_TEST_AGENT_SECRET = "must-not-leak";
    const s = spec("env", {
      env: { FOO: "bar", MESOS_SANDBOX: "/elsewhere", LD_LIBRARY_PATH: "/opt/lib" },
      resources: { cpus: 1.5, memMb: 256, diskMb: 10, ports: [31001, 31007] },
    });
    const { termination, stdout } = await run(containerizer, s);
    delete process.env.CORRAL_TEST_AGENT_SECRET;
    expect(termination.exitCode).toBe(0);
    const env = Object.fromEntries(stdout.trim().split("\n").map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]));
    expect(env).toMatchObject({
      FOO: "bar",
      LD_LIBRARY_PATH: "/opt/lib",
      MESOS_SANDBOX: s.sandboxDir,
      CORRAL_SANDBOX: s.sandboxDir,
      CORRAL_TASK_ID: s.taskId,
      MESOS_TASK_ID: s.taskId,
      PORT0: "31001",
      PORT1: "31007",
      PORTS: "31001,31007",
      HOST: "agent-1.test",
      CORRAL_CPUS: "1.5",
      CORRAL_MEM_MB: "256",
    });
    expect(env.PATH).toBe(process.env.PATH);
    expect(env.CORRAL_TEST_AGENT_SECRET).toBeUndefined();
  });

  it.skipIf(!isRoot)("hands over environment values exactly (quotes, dollars, newlines) and notices a supervisor killed without a word", async () => {
    const weird = "it's \"$HOME\" `id`\nsecond line\\";
    const s = spec('printf %s "$WEIRD"', { env: { WEIRD: weird } });
    expect((await run(containerizer, s)).stdout).toBe(weird);

    // The supervisor reports the end itself; killed, it cannot, and the liveness sweep notices.
    const sleeper = spec("exec sleep 300");
    const handle = await containerizer.launch(sleeper);
    process.kill(handle.pid!, "SIGKILL");
    const termination = await containerizer.wait(sleeper.containerId);
    expect(termination).toMatchObject({ exitCode: null, signal: null, killed: false, message: expect.stringContaining("without recording an exit status") });
    for (const dir of await cgroupDirs(sleeper.containerId)) expect(await exists(dir)).toBe(false);
  });

  it.skipIf(!isRoot)("reports exit statuses, runs argv commands, records the status in the sandbox for re-attachment", async () => {
    const failing = spec("echo out; echo err >&2; exit 3");
    const { termination, stdout, stderr } = await run(containerizer, failing);
    expect(termination).toEqual({ exitCode: 3, signal: null, killed: false, message: "Command exited with status 3" });
    expect([stdout, stderr]).toEqual(["out\n", "err\n"]);
    expect(await readFile(join(failing.sandboxDir, ".corral", "exit_status"), "utf8")).toBe("3\n");
    const meta = JSON.parse(await readFile(join(failing.sandboxDir, ".corral", "container.json"), "utf8"));
    expect(meta).toMatchObject({ containerId: failing.containerId, cgroup: containerCgroupName(CGROUPS_ROOT, failing.containerId) });
    expect(meta.supervisorPid).toBeGreaterThan(0);

    const argv = spec("", { command: { shell: false, value: "printf", arguments: ["printf", "%s-%s", "a b", "$HOME"] } });
    expect((await run(containerizer, argv)).stdout).toBe("a b-$HOME");

    const missing = spec("", { command: { shell: false, value: "corral-no-such-program" } });
    await expect(containerizer.launch(missing)).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED", message: expect.stringContaining("corral-no-such-program") });
  });

  it.skipIf(!isRoot)("a task that swaps its output files for links cannot make the next launch in its sandbox write or chown host files", async () => {
    // The sandbox is keyed by task id: a framework that reuses one launches into the last run's sandbox.
    const victim = join(root, "victim");
    await writeFile(victim, "original\n", { mode: 0o644 });
    const first = spec(`rm -f stdout stderr; ln -s ${victim} stdout; ln -s ${victim} stderr; ln ${victim} hard 2>/dev/null; true`);
    await containerizer.launch(first);
    expect((await containerizer.wait(first.containerId)).exitCode).toBe(0);
    expect((await lstat(join(first.sandboxDir, "stdout"))).isSymbolicLink()).toBe(true);

    const second = spec("echo out; echo err >&2", { sandboxDir: first.sandboxDir, taskId: first.taskId });
    const { termination, stdout, stderr } = await run(containerizer, second);
    expect(termination.exitCode).toBe(0);
    expect([stdout, stderr]).toEqual(["out\n", "err\n"]);
    expect((await lstat(join(first.sandboxDir, "stdout"))).isFile()).toBe(true);
    expect(await readFile(victim, "utf8")).toBe("original\n");
    expect(await stat(victim)).toMatchObject({ uid: 0, gid: 0 });
  });

  it.skipIf(!isRoot)("descriptors the agent inherited from whoever started it do not reach the task", async () => {
    // An agent started with extra open descriptors, as a careless wrapper leaves them. (Node marks low
    // inherited ones close-on-exec itself, not high ones.)
    const s = spec("ls -l /proc/self/fd");
    const script = [
      `import { LinuxContainerizer } from ${JSON.stringify(new URL("../../agent/containerizer/linux.ts", import.meta.url).pathname)};`,
      `const c = await LinuxContainerizer.create({ cgroupsRoot: ${JSON.stringify(CGROUPS_ROOT)} });`,
      `await c.launch(${JSON.stringify(s)});`,
      `await c.wait(${JSON.stringify(s.containerId)});`,
      "await c.close();",
      "process.exit(0);",
    ].join("\n");
    const register = new URL("../../scripts/ts/register.mjs", import.meta.url).pathname;
    // A shell opens them without close-on-exec and execs the agent's Node process.
    const wrapper = 'exec 200>/dev/null 240</etc/hostname; exec "$0" "$@"';
    const { stderr } = await execFileAsync("/bin/bash", ["-c", wrapper, process.execPath, "--import", register, "--input-type=module", "-e", script], { timeout: 20_000 });
    expect(stderr).toBe("");
    const targets = (await text(s, "stdout")).split("\n").filter((line) => / -> /.test(line)).map((line) => line.replace(/^.* (\d+) -> /, "$1 -> "));
    // 0-2 and the descriptor ls reads the listing through: nothing else.
    expect(targets.filter((target) => !/^[012] -> /.test(target) && !/ -> \/proc\/\d+\/fd$/.test(target))).toEqual([]);
  });

  it.skipIf(!isRoot)("refuses root and users outside the allow-list; honours an allowed user", async () => {
    await expect(containerizer.launch(spec("id -u", { user: "root" }))).rejects.toMatchObject({
      code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED",
      message: expect.stringContaining("refusing to run a task as root"),
    });
    await expect(containerizer.launch(spec("id -u", { user: "0" }))).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED" });
    await expect(containerizer.launch(spec("id -u", { user: "bin" }))).rejects.toMatchObject({
      message: expect.stringContaining('user "bin" is not allowed'),
    });
    const allowed = spec("id -u", { user: "daemon" });
    expect((await run(containerizer, allowed)).stdout.trim()).toBe("1");
    expect(containerizer.containers()).toEqual([]);
  });

  it.skipIf(!isRoot)("a memory hog over its limit ends with REASON_CONTAINER_LIMITATION_MEMORY, limit and peak in the message", async () => {
    // tail buffers a "line" that never ends: memory grows until the OOM killer stops it.
    const s = spec("tail /dev/zero", { resources: { cpus: 1, memMb: 32, diskMb: 64, ports: [] } });
    const { termination } = await run(containerizer, s);
    expect(termination).toMatchObject({ killed: false, reason: "REASON_CONTAINER_LIMITATION_MEMORY" });
    expect(termination.message).toMatch(/^Memory limit exceeded: Requested: 32MB Maximum Used: \d+MB$/);
  });

  it.skipIf(!isRoot)("a cpu spinner with cpus 0.5 gets about half a core and is throttled", async () => {
    const s = spec("echo spinning; while :; do :; done", { resources: { cpus: 0.5, memMb: 64, diskMb: 64, ports: [] } });
    await containerizer.launch(s);
    await stdoutContains(s, "spinning");
    // Throttling shows once the spinner got more than its quota in some period, which a machine busy
    // with other work (other test files, in parallel) may delay.
    await eventually(async () => (await containerizer.usage(s.containerId)).cpusNrThrottled > 0, 20_000, "the spinner throttled by its quota");
    const before = await containerizer.usage(s.containerId);
    const wallStart = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const after = await containerizer.usage(s.containerId);
    const seconds = (performance.now() - wallStart) / 1000;
    const cores = (after.cpusUserTimeSecs + after.cpusSystemTimeSecs - before.cpusUserTimeSecs - before.cpusSystemTimeSecs) / seconds;
    expect(cores).toBeGreaterThan(0.1);
    expect(cores).toBeLessThan(0.7);
    expect(after.cpusThrottledTimeSecs).toBeGreaterThan(0);
    expect(after.cpusNrThrottled).toBeGreaterThan(0);
    expect(after.cpusLimit).toBe(0.5);
    expect(after.memLimitBytes).toBe(64 * 1024 * 1024);
    expect(after.memTotalBytes).toBeGreaterThan(0);
    expect(after.processes).toBeGreaterThanOrEqual(2);
    expect((await containerizer.kill(s.containerId, 1000)).signal).toBe("SIGTERM");
  });

  it.skipIf(!isRoot)("a fork loop stops at the pids limit with EAGAIN", async () => {
    const limited = await another({ pidsMax: 16 });
    const s = spec("i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); echo $i; done");
    const { termination, stdout, stderr } = await run(limited, s);
    const started = Number(stdout.trim().split("\n").pop());
    expect(started).toBeGreaterThan(0);
    // The launcher, tini and the shell count too.
    expect(started).toBeLessThanOrEqual(16 - 3);
    expect(stderr).toMatch(/fork/i);
    expect(termination.exitCode).not.toBe(0);
  });

  it.skipIf(!isRoot)("kill: SIGTERM to the init; a task that ignores it loses every process and its cgroups after the grace period", async () => {
    const polite = spec("echo ready; sleep 1000");
    await containerizer.launch(polite);
    await stdoutContains(polite, "ready");
    expect(await containerizer.kill(polite.containerId, 10_000)).toEqual({ exitCode: null, signal: "SIGTERM", killed: true, message: "Command terminated with signal SIGTERM" });

    const stubborn = spec("trap '' TERM; sleep 1000 & (trap '' TERM; sleep 1000) & echo ready; wait");
    await containerizer.launch(stubborn);
    await stdoutContains(stubborn, "ready");
    const pids = await cgroupPids(stubborn.containerId);
    expect(pids.length).toBeGreaterThanOrEqual(4);
    const started = Date.now();
    const termination = await containerizer.kill(stubborn.containerId, 300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(termination).toMatchObject({ signal: "SIGKILL", killed: true });
    await expectGone(pids);
    for (const dir of await cgroupDirs(stubborn.containerId)) expect(await exists(dir)).toBe(false);
    // Late callers get the same answer.
    expect(await containerizer.wait(stubborn.containerId)).toEqual(termination);
  });

  it.skipIf(!isRoot)("a sandbox that outgrows its disk is destroyed with REASON_CONTAINER_LIMITATION_DISK", async () => {
    const s = spec("head -c 12000000 /dev/zero > big; echo written; sleep 1000", { resources: { cpus: 1, memMb: 64, diskMb: 5, ports: [] } });
    const { termination } = await run(containerizer, s);
    expect(termination).toMatchObject({ killed: false, reason: "REASON_CONTAINER_LIMITATION_DISK" });
    expect(termination.message).toMatch(/^Disk usage \(\d+MB\) exceeds quota \(5MB\)$/);
  });

  it.skipIf(!isRoot)("falls back to unshare + setpriv with a shell init when bwrap and tini are not there", async () => {
    const fallback = await another({ tools: { bwrap: null, tini: null } });
    expect(fallback.launcher).toEqual({ tool: "unshare", init: "sh" });
    const s = spec("id -u; hostname; ls /proc | grep -c '^[0-9]'; touch /etc/corral-test 2>/dev/null || echo etc-readonly; df -k /tmp | tail -1");
    const { termination, stdout } = await run(fallback, s);
    expect(termination.exitCode).toBe(0);
    const lines = stdout.trim().split("\n");
    expect(lines.slice(0, 2)).toEqual(["65534", s.taskId.replace(".", "-")]);
    expect(Number(lines[2])).toBeLessThanOrEqual(5);
    expect(lines[3]).toBe("etc-readonly");
    expect(lines[4]).toMatch(/^tmpfs\s+131072\s/);

    const stubborn = spec("trap '' TERM; sleep 1000 & echo ready; wait");
    await fallback.launch(stubborn);
    await stdoutContains(stubborn, "ready");
    const pids = await cgroupPids(stubborn.containerId);
    expect((await fallback.kill(stubborn.containerId, 200)).signal).toBe("SIGKILL");
    await expectGone(pids);
    for (const dir of await cgroupDirs(stubborn.containerId)) expect(await exists(dir)).toBe(false);
  });

  it.skipIf(!isRoot)("the host's other mounts are read-only inside too, with bwrap and with unshare", async () => {
    // A world-writable file system mounted below / (as /run/lock is on Debian): the task must not write
    // there. Not below /tmp: the container has its own /tmp.
    const shared = await mkdtemp("/mnt/corral test-");
    await execFileAsync("mount", ["-t", "tmpfs", "-o", "mode=1777,size=1m", "tmpfs", shared]);
    try {
      const viaUnshare = await another({ tools: { bwrap: null } });
      for (const c of [containerizer, viaUnshare]) {
        const s = spec(`touch '${shared}/x' 2>&1 || true; touch in-sandbox /tmp/t && echo still-writable`);
        const { termination, stdout } = await run(c, s);
        expect(termination.exitCode).toBe(0);
        expect(stdout).toContain("Read-only file system");
        expect(stdout).toContain("still-writable");
      }
      expect(await readdir(shared)).toEqual([]);
    } finally {
      await execFileAsync("umount", [shared]);
      await rmdir(shared);
    }
  });

  it.skipIf(!isRoot)('degrades to "userns" (namespaces, rlimits) and to "posix" (process group, rlimits) when asked', async () => {
    const userns = await another({ isolation: "userns", pidsMax: 64 });
    expect(userns.isolation).toBe("userns");
    const s = spec("id -u; cat /proc/1/comm; ulimit -p; ulimit -v; echo ready; sleep 1000");
    await userns.launch(s);
    await stdoutContains(s, "ready");
    expect((await text(s, "stdout")).split("\n").slice(0, 4)).toEqual(["65534", userns.launcher.init, "64", String(128 * 1024)]);
    expect((await userns.usage(s.containerId)).processes).toBeGreaterThanOrEqual(2);
    expect(await userns.kill(s.containerId, 5000)).toMatchObject({ signal: "SIGTERM", killed: true });

    const posix = await another({ isolation: "posix" });
    expect(posix.isolation).toBe("posix");
    const p = spec("id -u; echo $CORRAL_TASK_ID");
    await posix.launch(p);
    expect((await posix.wait(p.containerId)).exitCode).toBe(0);
    expect((await text(p, "stdout")).split("\n").slice(0, 2)).toEqual(["65534", p.taskId]);
    await expect(posix.launch(spec("true", { user: "root" }))).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED" });
  });

  it.skipIf(!isRoot)("destroyAll kills every container, a launch in progress included, and leaves no process or cgroup", async () => {
    const own = await another({});
    const specs = [spec("echo ready; sleep 1000"), spec("trap '' TERM; sleep 1000 & echo ready; wait")];
    await Promise.all(specs.map((s) => own.launch(s)));
    await Promise.all(specs.map((s) => stdoutContains(s, "ready")));
    const pids = (await Promise.all(specs.map((s) => cgroupPids(s.containerId)))).flat();
    const late = spec("sleep 1000");
    const launching = own.launch(late);
    await own.destroyAll();
    await launching;
    await expectGone(pids);
    for (const s of [...specs, late]) {
      expect((await own.wait(s.containerId)).killed).toBe(true);
      for (const dir of await cgroupDirs(s.containerId)) expect(await exists(dir)).toBe(false);
    }
    expect(own.containers()).toEqual([]);
    await expect(own.launch(spec("true"))).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINERIZER_CLOSED" });
  });

  it.skipIf(!isRoot)("runs a command inside a running container: its namespaces, files, user, environment, sandbox and cgroups (bwrap and unshare)", async () => {
    const viaUnshare = await another({ tools: { bwrap: null } });
    expect(viaUnshare.launcher.tool).toBe("unshare");
    for (const c of [containerizer, viaUnshare]) {
      const s = spec("echo secret > /tmp/mark; echo ready; exec sleep 1000");
      await c.launch(s);
      await stdoutContains(s, "ready");
      // The workload's host pid (the cgroup also holds bwrap or unshare, in the host's namespaces).
      // "ready" comes just before the shell execs sleep, so the sleep may not be there yet.
      const taskPid = await eventually(async () => {
        const cmdlines = await Promise.all((await cgroupPids(s.containerId)).map(async (pid) => [pid, await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")] as const));
        return cmdlines.find(([, cmdline]) => cmdline === "sleep\u00001000\u0000")?.[0];
      }, 5000, "the workload's sleep in the container's cgroup");
      expect(taskPid).toBeDefined();
      const report = join(s.sandboxDir, "check-report");
      const command = [
        "cat /tmp/mark",
        "hostname",
        "id -u",
        "pwd",
        'echo "value=$CHECK_VALUE"',
        "readlink /proc/self/ns/pid /proc/self/ns/mnt /proc/self/ns/uts /proc/self/ns/ipc",
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
        "grep memory /proc/self/cgroup",
      ].join("; ");
      // Relative: inside the container the sandbox is the working directory (the path above it may not be traversable).
      const result = await c.exec!(s.containerId, { command: `{ ${command}; } > check-report`, env: { PATH: "/usr/bin:/bin", CHECK_VALUE: "from the check" }, timeoutMs: 20_000 });
      expect(result).toEqual({ exitCode: 0, signal: null, timedOut: false });
      const lines = (await readFile(report, "utf8")).trim().split("\n");
      const hostNamespaces = await Promise.all(["pid", "mnt", "uts", "ipc"].map((ns) => readlink(`/proc/${taskPid}/ns/${ns}`)));
      expect(lines.slice(0, 9)).toEqual(["secret", "app-task-" + s.taskId.split("-")[1], "65534", s.sandboxDir, "value=from the check", ...hostNamespaces]);
      expect(lines.slice(9, 12)).toEqual(["CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"]);
      expect(lines[12]).toContain(containerCgroupName(CGROUPS_ROOT, s.containerId));
      expect(await exists("/tmp/mark") && (await readFile("/tmp/mark", "utf8")) === "secret\n").toBe(false); // the task's /tmp is its own
      expect((await c.exec!(s.containerId, { command: "exit 3", env: {}, timeoutMs: 20_000 })).exitCode).toBe(3);
      await c.kill(s.containerId, 0);
      await expect(c.exec!(s.containerId, { command: "true", env: {}, timeoutMs: 1000 })).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
    }
  });

  it.skipIf(!isRoot)("kills a command run inside a container, and all it started there, at its timeout; the task lives on", async () => {
    const s = spec("echo ready; exec sleep 1000");
    await containerizer.launch(s);
    await stdoutContains(s, "ready");
    const before = await cgroupPids(s.containerId);
    const result = await containerizer.exec!(s.containerId, { command: "sleep 1001 & sleep 1002; echo never > late", env: { PATH: "/usr/bin:/bin" }, timeoutMs: 300 });
    expect(result).toEqual({ exitCode: null, signal: "SIGKILL", timedOut: true });
    // Both sleeps ran in the container's cgroup and went with the check.
    await eventually(async () => (await cgroupPids(s.containerId)).length === before.length, 5000, "the check's processes gone");
    expect(await cgroupPids(s.containerId)).toEqual(before);
    expect(await exists(join(s.sandboxDir, "late"))).toBe(false);
    expect(containerizer.containers()).toContain(s.containerId);
    await containerizer.kill(s.containerId, 0);
  });

  it.skipIf(!isRoot)("offers no exec without cgroups: userns and posix isolation leave commands to the host", async () => {
    expect((await another({ isolation: "userns" })).exec).toBeUndefined();
    expect((await another({ isolation: "posix" })).exec).toBeUndefined();
  });

  it.skipIf(!isRoot)("leaves no cgroup of its own behind", async () => {
    const layout = await readCgroupLayout();
    const mount = layout.controllers.get("memory")!.mountPath;
    const left = (await readdir(join(mount, CGROUPS_ROOT), { withFileTypes: true }).catch(() => [])).filter((entry) => entry.isDirectory());
    // Only the containers of this file that still run (none by now).
    expect(left.map((entry) => entry.name)).toEqual([]);
  });
});

/**
 * `LinuxContainerizer.recover` and the agent's checkpoint store, on real processes and cgroups: a
 * second containerizer instance stands in for a restarted agent. The Linux cases need root; they are
 * skipped visibly otherwise.
 */
import { mkdir, mkdtemp, chmod, readFile, readdir, rm, rmdir, writeFile } from "node:fs/promises";
import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointStore, CHECKPOINT_VERSION, fileName, frameworkDirName, type TaskCheckpoint } from "../../agent/checkpoint.ts";
import { readProcStat } from "../../agent/containerizer/common.ts";
import { readCgroupLayout } from "../../agent/containerizer/cgroups-layout.ts";
import { LinuxContainerizer, sameProcess } from "../../agent/containerizer/linux.ts";
import type { ContainerHandle, ContainerSpec } from "../../agent/containerizer/types.ts";
import { eventually } from "../harness/events.ts";

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const NEEDS_ROOT = "needs root: namespaces and cgroups";
if (!isRoot) console.warn(`[recovery-linux.test] SKIPPING Linux recovery tests: ${NEEDS_ROOT}`);

const CGROUPS_ROOT = `corral-rtest-${process.pid}`;
const CONTROLLERS = ["memory", "cpu", "cpuacct", "pids", "freezer"];
let root: string;
let counter = 0;
const created: LinuxContainerizer[] = [];

async function containerizer(): Promise<LinuxContainerizer> {
  const c = await LinuxContainerizer.create({ cgroupsRoot: CGROUPS_ROOT, defaultGracePeriodMs: 200 });
  created.push(c);
  return c;
}

function spec(value: string, sandboxRoot = root): ContainerSpec {
  counter += 1;
  const containerId = `r${counter}-${process.pid}`;
  return {
    containerId,
    taskId: `task-${counter}`,
    frameworkId: "fw-1",
    command: { shell: true, value },
    env: {},
    sandboxDir: join(sandboxRoot, "runs", containerId),
    resources: { cpus: 0.5, memMb: 64, diskMb: 64, ports: [] },
  };
}

async function startTicks(pid: number): Promise<number> {
  return Number((await readProcStat(pid))!.fields[19]);
}

async function cgroupExists(name: string): Promise<boolean> {
  const layout = await readCgroupLayout();
  const mount = layout.controllers.get("pids")?.mountPath ?? layout.controllers.get("memory")?.mountPath;
  return readdir(join(mount!, name)).then(() => true, () => false);
}

/** Launches `s` from a separate Node process (an agent that then goes away) and returns its handle. */
async function launchInAnotherProcess(s: ContainerSpec): Promise<ContainerHandle> {
  const script = [
    `import { LinuxContainerizer } from ${JSON.stringify(new URL("../../agent/containerizer/linux.ts", import.meta.url).pathname)};`,
    `const c = await LinuxContainerizer.create({ cgroupsRoot: ${JSON.stringify(CGROUPS_ROOT)} });`,
    `const handle = await c.launch(${JSON.stringify(s)});`,
    "await c.close();",
    // Exit as an agent does: the supervisors still hold the report pipe open.
    "process.stdout.write(JSON.stringify(handle), () => process.exit(0));",
  ].join("\n");
  const register = new URL("../../scripts/ts/register.mjs", import.meta.url).pathname;
  const { stdout } = await execFileAsync(process.execPath, ["--import", register, "--input-type=module", "-e", script], { timeout: 20_000 });
  return JSON.parse(stdout) as ContainerHandle;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "corral-recover-"));
  await chmod(root, 0o755);
});

afterAll(async () => {
  await Promise.all(created.map((c) => c.destroyAll()));
  if (isRoot) {
    const layout = await readCgroupLayout();
    const mounts = new Set(CONTROLLERS.map((c) => layout.controllers.get(c)?.mountPath).filter((m) => m !== undefined));
    for (const mount of mounts) await rmdir(join(mount, CGROUPS_ROOT)).catch(() => undefined);
  }
  await rm(root, { recursive: true, force: true });
});

describe("LinuxContainerizer.recover", () => {
  it.skipIf(!isRoot)("adopts a running container (same pid and start time); kills still work through its cgroup", async () => {
    const before = await containerizer();
    const s = spec("sleep 30");
    const handle = await before.launch(s);
    expect(handle.cgroup).toBe(`${CGROUPS_ROOT}/${s.containerId}`);
    const after = await containerizer();
    const [found] = await after.recover([{ containerId: s.containerId, sandboxDir: s.sandboxDir, pid: handle.pid!, pidStartTicks: await startTicks(handle.pid!), cgroup: handle.cgroup! }]);
    expect(found).toEqual({ containerId: s.containerId, running: true });
    expect(after.containers()).toEqual([s.containerId]);
    const termination = await after.kill(s.containerId, 100);
    expect(termination.killed).toBe(true);
    expect(await after.wait(s.containerId)).toEqual(termination);
    expect(await cgroupExists(handle.cgroup!)).toBe(false);
  });

  it.skipIf(!isRoot)("reads container.json when the agent checkpointed less, and notices an adopted container's own end", async () => {
    const before = await containerizer();
    const s = spec("sleep 1; exit 5");
    await before.launch(s);
    const after = await containerizer();
    const [found] = await after.recover([{ containerId: s.containerId, sandboxDir: s.sandboxDir }]);
    expect(found!.running).toBe(true);
    const termination = await after.wait(s.containerId);
    expect(termination).toMatchObject({ exitCode: 5, signal: null, killed: false });
  });

  it.skipIf(!isRoot)("reports a container that ended meanwhile by its exit_status, and one without as lost", async () => {
    const before = await containerizer();
    const s = spec("exit 7");
    const handle = await before.launch(s);
    await before.wait(s.containerId);
    const lostSandbox = join(root, "runs", "gone");
    await mkdir(join(lostSandbox, ".corral"), { recursive: true });
    const after = await containerizer();
    const found = await after.recover([
      { containerId: s.containerId, sandboxDir: s.sandboxDir, pid: handle.pid!, pidStartTicks: 1 },
      // A reused pid (this very process, with another start time) must not be adopted, nor killed.
      { containerId: "gone-1", sandboxDir: lostSandbox, pid: process.pid, pidStartTicks: 1 },
    ]);
    expect(found[0]).toMatchObject({ running: false, termination: { exitCode: 7, signal: null, killed: false } });
    expect(found[1]).toMatchObject({ running: false, termination: { exitCode: null, signal: null, killed: false } });
    expect(await after.wait("gone-1")).toMatchObject({ exitCode: null, signal: null });
    expect(await sameProcess(process.pid, await startTicks(process.pid))).toBe(true);
  });

  it.skipIf(!isRoot)("a container killed by its memory limit while the agent was down is still reported as REASON_CONTAINER_LIMITATION_MEMORY", async () => {
    // A real agent restart: the first containerizer lives in a process that exits once the container
    // runs; only then does the task outgrow its memory, with nobody watching.
    const s = spec("until [ -e go ]; do sleep 0.05; done; tail /dev/zero");
    const handle = await launchInAnotherProcess(s);
    await writeFile(join(s.sandboxDir, "go"), "");
    await eventually(() => readFile(join(s.sandboxDir, ".corral", "exit_status"), "utf8").then(() => true, () => undefined), 10_000, "the supervisor's exit status");
    const after = await containerizer();
    const [found] = await after.recover([{ containerId: s.containerId, sandboxDir: s.sandboxDir, pid: handle.pid!, pidStartTicks: 1, cgroup: handle.cgroup! }]);
    expect(found).toMatchObject({ running: false, termination: { killed: false, reason: "REASON_CONTAINER_LIMITATION_MEMORY" } });
    expect(found!.termination!.message).toMatch(/^Memory limit exceeded: Requested: 64MB Maximum Used: \d+MB$/);
    expect(await cgroupExists(handle.cgroup!)).toBe(false);
  });

  it.skipIf(!isRoot)("destroys orphan cgroups of its own sandbox root only", async () => {
    const mine = join(root, "mine");
    const theirs = join(root, "theirs");
    const owner = await containerizer();
    const orphan = spec("sleep 30", mine);
    const foreign = spec("sleep 30", theirs);
    const orphanHandle = await owner.launch(orphan);
    await owner.launch(foreign);
    // launch resolves once the supervisor runs; an empty young cgroup is a launch in progress, which recovery spares.
    const layout = await readCgroupLayout();
    const procs = join(layout.controllers.get("memory")!.mountPath, orphanHandle.cgroup!, "cgroup.procs");
    await eventually(async () => (await readFile(procs, "utf8")).trim() !== "", 10_000, "the orphan's processes in its cgroup");
    const after = await containerizer();
    expect(await after.recover([], { orphanSandboxRoot: mine })).toEqual([]);
    expect(await owner.wait(orphan.containerId)).toMatchObject({ killed: false, signal: "SIGKILL" });
    expect(await cgroupExists(orphanHandle.cgroup!)).toBe(false);
    expect(owner.containers()).toEqual([foreign.containerId]);
    await owner.kill(foreign.containerId, 0);
  });
});

/** A TaskInfo as the agent checkpoints it: one that came off the wire. */
function taskInfo(taskId: string): TaskCheckpoint["task"] {
  return { taskId, name: taskId, agentId: "a1", resources: [], command: { value: "sleep 1", arguments: [], shell: true, environment: {}, user: "" }, labels: {} };
}

describe("CheckpointStore", () => {
  it("writes atomically, loads what it wrote, and skips (reporting) unusable files", async () => {
    const dir = join(root, "ckpt");
    const store = new CheckpointStore(dir);
    const latest = { taskId: "../x", frameworkId: "fw", agentId: "a1", state: "TASK_RUNNING" as const, uuid: "ab", timestampMs: 1 };
    const task: TaskCheckpoint = {
      version: CHECKPOINT_VERSION,
      frameworkId: "fw",
      taskId: "../x",
      framework: { id: "fw", name: "f", roles: ["*"], principal: "", checkpoint: true, failoverTimeoutSeconds: 0, partitionAware: false, hostname: "" },
      task: taskInfo("../x"),
      sandbox: "/s",
      containerId: "c",
      pid: 12,
      pidStartTicks: 34,
      latest,
    };
    store.writeTask(task);
    store.writeStream("fw", "../x", { taskId: "../x", frameworkId: "fw", pending: [latest], acknowledged: ["aa"] });
    expect(fileName("../x")).toBe("t-..%2Fx.json");
    expect(frameworkDirName("..")).toBe("f-..");
    const tasksDir = join(dir, "frameworks", "f-fw", "tasks");
    await writeFile(join(tasksDir, "t-bad.json"), "{ torn");
    await writeFile(join(tasksDir, "t-partial.json.tmp"), "{ torn");
    // Parses, but would not make a TaskInfo or a TaskStatus on the wire.
    await writeFile(join(tasksDir, "t-y.json"), JSON.stringify({ ...task, taskId: "y", task: { ...taskInfo("y"), resources: "cpus:1" } }));
    await writeFile(join(tasksDir, "t-z.json"), JSON.stringify({ ...task, taskId: "z", task: taskInfo("z"), latest: { ...latest, taskId: "z", uuid: "not hex" } }));
    const loaded = await store.load();
    expect(loaded.tasks).toEqual([task]);
    expect(loaded.streams).toEqual([{ taskId: "../x", frameworkId: "fw", pending: [latest], acknowledged: ["aa"] }]);
    expect(loaded.problems).toEqual([
      expect.stringMatching(/t-bad\.json: /),
      expect.stringMatching(/t-y\.json: task: .*resources: must be an array/),
      expect.stringMatching(/t-z\.json: latest: .*not lower-case hex/),
    ]);
    store.writeStream("fw", "../x", null);
    expect((await store.load()).streams).toEqual([]);
    store.removeTask("fw", "../x");
    expect((await store.load()).tasks).toEqual([]);
    expect(await new CheckpointStore(join(root, "none")).load()).toEqual({ tasks: [], streams: [], problems: [] });
  });

  it("keeps the same task id of two frameworks apart, and removes one without the other", async () => {
    const dir = join(root, "ckpt-two");
    const store = new CheckpointStore(dir);
    const checkpoint = (frameworkId: string): TaskCheckpoint => ({
      version: CHECKPOINT_VERSION,
      frameworkId,
      taskId: "j1.0.0",
      framework: undefined,
      task: taskInfo("j1.0.0"),
      sandbox: `/s/${frameworkId}`,
      containerId: `c-${frameworkId}`,
      latest: { taskId: "j1.0.0", frameworkId, agentId: "a1", state: "TASK_RUNNING", uuid: frameworkId === "etl" ? "e7" : "5d", timestampMs: 1 },
    });
    const stream = (frameworkId: string) => ({ taskId: "j1.0.0", frameworkId, pending: [checkpoint(frameworkId).latest!], acknowledged: [] });
    for (const fw of ["etl", "slowpoke"]) {
      store.writeTask(checkpoint(fw));
      store.writeStream(fw, "j1.0.0", stream(fw));
    }
    const both = await new CheckpointStore(dir).load();
    expect(both).toEqual({ tasks: [checkpoint("etl"), checkpoint("slowpoke")], streams: [stream("etl"), stream("slowpoke")], problems: [] });

    store.removeTask("etl", "j1.0.0");
    expect(await new CheckpointStore(dir).load()).toEqual({ tasks: [checkpoint("slowpoke")], streams: [stream("slowpoke")], problems: [] });
    // A framework with no task left leaves no directory behind; writing again recreates it.
    expect(await readdir(join(dir, "frameworks"))).toEqual(["f-slowpoke"]);
    store.writeTask(checkpoint("etl"));
    expect((await store.load()).tasks.map((t) => t.frameworkId)).toEqual(["etl", "slowpoke"]);
  });

  it("reports, and does not recover, files in the wrong place and checkpoints of the earlier layout", async () => {
    const dir = join(root, "ckpt-misplaced");
    const store = new CheckpointStore(dir);
    const latest = { taskId: "t", frameworkId: "fw-a", agentId: "a1", state: "TASK_RUNNING" as const, uuid: "ab", timestampMs: 1 };
    store.writeStream("fw-a", "t", { taskId: "t", frameworkId: "fw-a", pending: [latest], acknowledged: [] });
    // fw-a's stream copied under fw-b: removing fw-b's task would never delete it.
    await mkdir(join(dir, "frameworks", "f-fw-b", "streams"), { recursive: true });
    await writeFile(join(dir, "frameworks", "f-fw-b", "streams", "t-t.json"), JSON.stringify({ taskId: "t", frameworkId: "fw-a", pending: [latest], acknowledged: [] }));
    await mkdir(join(dir, "tasks"), { recursive: true });
    const loaded = await store.load();
    expect(loaded.streams.map((s) => s.frameworkId)).toEqual(["fw-a"]);
    expect(loaded.problems).toEqual([
      expect.stringMatching(/\/tasks: checkpoints of the layout before .* are not recovered$/),
      expect.stringMatching(/f-fw-b\/streams\/t-t\.json: holds task t of framework fw-a, which belongs elsewhere$/),
    ]);
  });
});

import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PosixContainerizer } from "../../agent/containerizer/posix.ts";
import { ContainerizerError, type ContainerSpec } from "../../agent/containerizer/types.ts";

let root: string;
let containerizer: PosixContainerizer;
let counter = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "corral-posix-"));
  // Lets a task switched to another user reach its sandbox.
  await chmod(root, 0o755);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

beforeEach(() => {
  containerizer = new PosixContainerizer({ hostname: "agent-1.test" });
});

afterEach(async () => {
  await containerizer.destroyAll();
});

function spec(value: string, overrides: Partial<ContainerSpec> = {}): ContainerSpec {
  counter += 1;
  const containerId = `c${counter}`;
  return {
    containerId,
    taskId: `task-${counter}`,
    frameworkId: "fw-1",
    command: { shell: true, value },
    env: {},
    sandboxDir: join(root, "runs", containerId),
    resources: { cpus: 0.5, memMb: 128, diskMb: 64, ports: [] },
    ...overrides,
  };
}

async function sandboxText(s: ContainerSpec, file: "stdout" | "stderr"): Promise<string> {
  return readFile(join(s.sandboxDir, file), "utf8");
}

/** Polls until `probe` returns a value, or fails after `timeoutMs`. Only for observing other processes. */
async function eventually<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Resolves once the task has written `marker` to its stdout, i.e. it got past its setup. */
function stdoutContains(s: ContainerSpec, marker: string): Promise<string> {
  return eventually(async () => {
    const text = await sandboxText(s, "stdout").catch(() => "");
    return text.includes(marker) ? text : undefined;
  }, `"${marker}" in ${s.containerId}'s stdout`);
}

/** State letter from /proc/<pid>/stat, or undefined when the process is gone. */
async function procState(pid: number): Promise<{ state: string; pgrp: number } | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (stat === undefined) return undefined;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0]!, pgrp: Number(fields[2]) };
}

/** Alive = exists and is not a zombie (a zombie waits for a reaper that may not be us). */
async function isAlive(pid: number): Promise<boolean> {
  const info = await procState(pid);
  return info !== undefined && info.state !== "Z";
}

async function liveGroupMembers(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const info = await procState(Number(entry));
    if (info && info.pgrp === pgid && info.state !== "Z") members.push(Number(entry));
  }
  return members;
}

describe("PosixContainerizer", () => {
  it("runs a shell command and reports its exit status; stdout lands in the sandbox", async () => {
    const s = spec("echo hi; echo oops >&2; exit 3");
    const handle = await containerizer.launch(s);
    expect(handle.pid).toBeGreaterThan(0);
    expect(handle.sandboxDir).toBe(s.sandboxDir);
    const termination = await containerizer.wait(s.containerId);
    expect(termination).toEqual({ exitCode: 3, signal: null, killed: false, message: "Command exited with status 3" });
    expect(await sandboxText(s, "stdout")).toBe("hi\n");
    expect(await sandboxText(s, "stderr")).toBe("oops\n");
    expect(containerizer.containers()).toEqual([]);
  });

  it("runs argv commands without a shell", async () => {
    const s = spec("", { command: { shell: false, value: "printf", arguments: ["printf", "%s-%s", "a b", "$HOME"] } });
    await containerizer.launch(s);
    expect((await containerizer.wait(s.containerId)).exitCode).toBe(0);
    expect(await sandboxText(s, "stdout")).toBe("a b-$HOME");
  });

  it("sets the sandbox as cwd and the Corral/Mesos environment, which the task cannot override", async () => {
    process.env.CORRAL_TEST_AGENT_SECRET = "must-not-leak";
    const s = spec("pwd; env", {
      env: { FOO: "bar", MESOS_SANDBOX: "/elsewhere" },
      resources: { cpus: 1.5, memMb: 256, diskMb: 10, ports: [31001, 31007] },
    });
    await containerizer.launch(s);
    expect((await containerizer.wait(s.containerId)).exitCode).toBe(0);
    const [cwd, ...lines] = (await sandboxText(s, "stdout")).trim().split("\n");
    const env = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]));
    expect(cwd).toBe(s.sandboxDir);
    expect(env).toMatchObject({
      FOO: "bar",
      MESOS_SANDBOX: s.sandboxDir,
      CORRAL_SANDBOX: s.sandboxDir,
      CORRAL_TASK_ID: s.taskId,
      MESOS_TASK_ID: s.taskId,
      PORT0: "31001",
      PORT1: "31007",
      PORT: "31001",
      PORTS: "31001,31007",
      HOST: "agent-1.test",
      CORRAL_CPUS: "1.5",
      CORRAL_MEM_MB: "256",
    });
    expect(env.PATH).toBeDefined();
    expect(env.CORRAL_TEST_AGENT_SECRET).toBeUndefined();
    delete process.env.CORRAL_TEST_AGENT_SECRET;
  });

  it("kill sends SIGTERM to the group and reports the task killed", async () => {
    const s = spec("sleep 1000");
    await containerizer.launch(s);
    const termination = await containerizer.kill(s.containerId, 10_000);
    expect(termination).toEqual({ exitCode: null, signal: "SIGTERM", killed: true, message: "Command terminated with signal SIGTERM" });
    // Late callers get the same answer.
    expect(await containerizer.wait(s.containerId)).toEqual(termination);
    expect(await containerizer.kill(s.containerId)).toEqual(termination);
  });

  it("escalates to SIGKILL after the grace period when SIGTERM is ignored", async () => {
    const s = spec("trap '' TERM; echo ready; sleep 1000");
    await containerizer.launch(s);
    await stdoutContains(s, "ready");
    const started = Date.now();
    const termination = await containerizer.kill(s.containerId, 300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(termination).toMatchObject({ signal: "SIGKILL", exitCode: null, killed: true, message: "Command terminated with signal SIGKILL" });
  });

  it("a second kill with a shorter grace period brings SIGKILL forward", async () => {
    const s = spec("trap '' TERM; echo ready; sleep 1000");
    await containerizer.launch(s);
    await stdoutContains(s, "ready");
    const slow = containerizer.kill(s.containerId, 60_000);
    const fast = containerizer.kill(s.containerId, 0);
    expect((await fast).signal).toBe("SIGKILL");
    expect(await slow).toEqual(await fast);
  });

  it("kills the task's children with it (process group)", async () => {
    const s = spec("sleep 1000 & echo child=$!; sleep 1000");
    const handle = await containerizer.launch(s);
    const out = await stdoutContains(s, "child=");
    const child = Number(/child=(\d+)/.exec(out)![1]);
    expect(await isAlive(child)).toBe(true);
    expect((await procState(child))!.pgrp).toBe(handle.pid);
    await containerizer.kill(s.containerId, 5000);
    expect(await isAlive(child)).toBe(false);
    expect(await liveGroupMembers(handle.pid!)).toEqual([]);
  });

  it("reaps leftovers of a task whose main process exited on its own", async () => {
    const s = spec("sleep 1000 & echo child=$!; exit 0");
    await containerizer.launch(s);
    const termination = await containerizer.wait(s.containerId);
    expect(termination.exitCode).toBe(0);
    const child = Number(/child=(\d+)/.exec(await sandboxText(s, "stdout"))![1]);
    expect(await isAlive(child)).toBe(false);
  });

  it("destroyAll kills every group, stubborn ones included, and leaves no process", async () => {
    const specs = [spec("echo ready; sleep 1000"), spec("trap '' TERM; echo ready; sleep 1000"), spec("sleep 1000 & echo ready; sleep 1000")];
    const handles = await Promise.all(specs.map((s) => containerizer.launch(s)));
    await Promise.all(specs.map((s) => stdoutContains(s, "ready")));
    const pids = (await Promise.all(handles.map((h) => liveGroupMembers(h.pid!)))).flat();
    expect(pids.length).toBeGreaterThanOrEqual(4);
    const started = Date.now();
    await containerizer.destroyAll();
    expect(Date.now() - started).toBeLessThan(2000);
    for (const pid of pids) expect(await isAlive(pid)).toBe(false);
    for (const h of handles) expect(await liveGroupMembers(h.pid!)).toEqual([]);
    expect(containerizer.containers()).toEqual([]);
    for (const s of specs) expect((await containerizer.wait(s.containerId)).killed).toBe(true);
    await expect(containerizer.launch(spec("true"))).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINERIZER_CLOSED" });
  });

  it("destroyAll also catches a launch that is still in progress", async () => {
    const s = spec("sleep 1000");
    const launching = containerizer.launch(s);
    await containerizer.destroyAll();
    const handle = await launching;
    expect((await containerizer.wait(s.containerId)).signal).toBe("SIGKILL");
    expect(await liveGroupMembers(handle.pid!)).toEqual([]);
  });

  it("a kill issued before the process exists is applied once it does", async () => {
    const s = spec("sleep 1000");
    const launching = containerizer.launch(s);
    const killed = containerizer.kill(s.containerId, 5000);
    await launching;
    expect(await killed).toMatchObject({ signal: "SIGTERM", killed: true });
  });

  it("rejects with a clear error when the program does not exist", async () => {
    const s = spec("", { command: { shell: false, value: "corral-no-such-program" } });
    const failure = containerizer.launch(s);
    await expect(failure).rejects.toBeInstanceOf(ContainerizerError);
    await expect(failure).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED", message: expect.stringContaining("corral-no-such-program") });
    expect(containerizer.containers()).toEqual([]);
    // The id is not burnt: the agent may retry.
    await expect(containerizer.wait(s.containerId)).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
  });

  it("rejects with a clear error when the sandbox cannot be created", async () => {
    const file = join(root, "a-file");
    await writeFile(file, "x");
    const s = spec("true", { sandboxDir: join(file, "sandbox") });
    await expect(containerizer.launch(s)).rejects.toMatchObject({
      code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED",
      message: expect.stringContaining(`cannot create sandbox ${s.sandboxDir}`),
    });
    await expect(containerizer.launch(spec("true", { sandboxDir: "relative/dir" }))).rejects.toMatchObject({
      code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED",
      message: expect.stringContaining("sandboxDir must be an absolute path"),
    });
  });

  it("refuses a reused container id and answers unknown ids with NOT_FOUND", async () => {
    const s = spec("true");
    await containerizer.launch(s);
    await expect(containerizer.launch({ ...s })).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_EXISTS" });
    await containerizer.wait(s.containerId);
    await expect(containerizer.launch({ ...s })).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_EXISTS" });
    await expect(containerizer.wait("nope")).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
    await expect(containerizer.kill("nope")).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
    await expect(containerizer.usage(s.containerId)).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
  });

  it("samples usage over the whole group", async () => {
    const s = spec("sleep 1000 & echo ready; sleep 1000");
    await containerizer.launch(s);
    await stdoutContains(s, "ready");
    const usage = await containerizer.usage(s.containerId);
    expect(usage.containerId).toBe(s.containerId);
    expect(usage.processes).toBeGreaterThanOrEqual(2);
    expect(usage.memRssBytes).toBeGreaterThan(0);
    expect(usage.cpusUserTimeSecs).toBeGreaterThanOrEqual(0);
    expect(containerizer.containers()).toEqual([s.containerId]);
  });

  it("forgets the oldest terminations beyond maxRememberedTerminations", async () => {
    const small = new PosixContainerizer({ maxRememberedTerminations: 1 });
    const first = spec("true");
    const second = spec("true");
    await small.launch(first);
    await small.wait(first.containerId);
    await small.launch(second);
    await small.wait(second.containerId);
    await expect(small.wait(first.containerId)).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
    await small.destroyAll();
  });

  it.skipIf(process.getuid?.() !== 0)("runs the task as another user when asked (agent is root)", async () => {
    const s = spec("id -u; touch written-by-task", { user: "nobody" });
    await containerizer.launch(s);
    expect((await containerizer.wait(s.containerId)).exitCode).toBe(0);
    expect((await sandboxText(s, "stdout")).trim()).toBe("65534");
    await expect(containerizer.launch(spec("true", { user: "corral-no-such-user" }))).rejects.toMatchObject({
      code: "CORRAL_ERR_CONTAINER_LAUNCH_FAILED",
      message: expect.stringContaining("corral-no-such-user"),
    });
  });

  it.skipIf(process.getuid?.() !== 0)("a task that left a symlink as stdout cannot make the next launch in its sandbox write or chown a host file", async () => {
    const victim = join(root, "victim");
    await writeFile(victim, "original\n", { mode: 0o644 });
    const first = spec(`rm -f stdout; ln -s ${victim} stdout`, { user: "nobody" });
    await containerizer.launch(first);
    expect((await containerizer.wait(first.containerId)).exitCode).toBe(0);
    const second = spec("echo out", { user: "nobody", sandboxDir: first.sandboxDir });
    await containerizer.launch(second);
    expect((await containerizer.wait(second.containerId)).exitCode).toBe(0);
    expect(await sandboxText(second, "stdout")).toBe("out\n");
    expect(await readFile(victim, "utf8")).toBe("original\n");
    expect((await stat(victim)).uid).toBe(0);
  });
});

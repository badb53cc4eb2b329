/**
 * Agent-run health checks: the pure schedule (Mesos's delay, interval, grace period and what gets
 * reported), the runner on injected timers, COMMAND checks as real processes, and a real agent on a
 * real cluster reporting `healthy` in TASK_RUNNING updates to a framework.
 */
import { chmod, chown, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { systemTimers, type Clock, type TimerHandle, type Timers } from "../../sdk/clock.ts";
import { Resources } from "../../sdk/resources.ts";
import { decodeMessage, encodeMessage, validateMessage } from "../../sdk/wire/codec.ts";
import type { TaskInfo } from "../../sdk/wire/types.ts";
import { taskInfoFromSpec } from "../../sdk/scheduler.ts";
import { lookupUser } from "../../agent/containerizer/common.ts";
import {
  commandCheckTarget,
  healthCheckTiming,
  HealthCheckRunner,
  HealthCheckSchedule,
  HEALTH_CHECK_DEFAULTS,
  MIN_CHECK_INTERVAL_MS,
  runCommandCheck,
  type CheckOutcome,
  type HealthVerdict,
} from "../../agent/health-checks.ts";
import { useNats } from "../harness/nats.ts";
import { eventually } from "../harness/events.ts";
import { recordingFramework, startCluster, type TestCluster } from "../harness/cluster.ts";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "corral-hc-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Virtual time: timers fire when the test advances the clock. */
class VirtualTime implements Clock, Timers {
  private t = 0;
  private pending: Array<{ at: number; fn: () => void; live: boolean }> = [];
  now(): number {
    return this.t;
  }
  set(delayMs: number, fn: () => void): TimerHandle {
    const entry = { at: this.t + Math.max(0, delayMs), fn, live: true };
    this.pending.push(entry);
    return { cancel: () => void (entry.live = false) };
  }
  /** Moves to `ms` later, firing what falls due, in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = this.pending.filter((p) => p.live && p.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      next.live = false;
      this.t = next.at;
      next.fn();
    }
    this.t = end;
    this.pending = this.pending.filter((p) => p.live);
  }
  armed(): number {
    return this.pending.filter((p) => p.live).length;
  }
}

const TIMING = { delayMs: 1000, intervalMs: 2000, timeoutMs: 500, gracePeriodMs: 5000 };

describe("HealthCheckSchedule", () => {
  it("waits delaySeconds, then checks every interval after the previous check ended", () => {
    const s = new HealthCheckSchedule(TIMING, 10_000);
    expect(s.dueAtMs()).toBe(11_000);
    s.begin();
    expect(s.dueAtMs()).toBeUndefined();
    s.end(true, 11_300, "ok");
    expect(s.dueAtMs()).toBe(13_300);
  });

  it("ignores failures in the grace period until the first pass, then reports every failure and the recovery", () => {
    const s = new HealthCheckSchedule(TIMING, 0);
    s.begin();
    expect(s.end(false, 1000, "exit 1")).toBeUndefined(); // in grace, never healthy
    s.begin();
    expect(s.end(true, 3000, "ok")).toEqual({ healthy: true, consecutiveFailures: 0, message: "Health check passed" });
    s.begin();
    expect(s.end(true, 4000, "ok")).toBeUndefined(); // still healthy: nothing new to say
    s.begin();
    const first = s.end(false, 4500, "exited with status 1"); // within grace, but it passed once: counts
    expect(first).toMatchObject({ healthy: false, consecutiveFailures: 1 });
    expect(first!.message).toContain("exited with status 1");
    s.begin();
    expect(s.end(false, 7000, "x")).toMatchObject({ healthy: false, consecutiveFailures: 2 });
    s.begin();
    expect(s.end(true, 9000, "ok")).toMatchObject({ healthy: true, consecutiveFailures: 0 });
  });

  it("counts failures after the grace period even if the task never passed", () => {
    const s = new HealthCheckSchedule({ ...TIMING, gracePeriodMs: 0 }, 0);
    s.begin();
    expect(s.end(false, 1000, "x")).toMatchObject({ healthy: false, consecutiveFailures: 1 });
  });

  it("resumes a task's checks after an agent restart: no new grace period, and only changes reported", () => {
    // Mesos's checks run in the executor and outlive an agent restart; ours restart with the agent,
    // from the verdict last reported.
    const wasHealthy = new HealthCheckSchedule(TIMING, 10_000, { healthy: true });
    expect(wasHealthy.dueAtMs()).toBe(12_000); // an interval on, not the delay again
    wasHealthy.begin();
    expect(wasHealthy.end(true, 12_000, "ok")).toBeUndefined(); // still healthy: nothing new
    wasHealthy.begin();
    expect(wasHealthy.end(false, 14_000, "exit 1")).toMatchObject({ healthy: false, consecutiveFailures: 1 }); // within 5 s of the restart: counts

    const wasSick = new HealthCheckSchedule(TIMING, 10_000, { healthy: false });
    wasSick.begin();
    expect(wasSick.end(false, 12_000, "exit 1")).toMatchObject({ healthy: false, consecutiveFailures: 1 });
    wasSick.begin();
    expect(wasSick.end(true, 14_000, "ok")).toMatchObject({ healthy: true }); // the recovery is news
  });

  it("fills Mesos's defaults and keeps intervals from spinning", () => {
    const command = { value: "true", arguments: [], shell: true, environment: {}, user: "" };
    expect(healthCheckTiming({ kind: "command", command })).toEqual({
      delayMs: HEALTH_CHECK_DEFAULTS.delaySeconds * 1000,
      intervalMs: HEALTH_CHECK_DEFAULTS.intervalSeconds * 1000,
      timeoutMs: HEALTH_CHECK_DEFAULTS.timeoutSeconds * 1000,
      gracePeriodMs: HEALTH_CHECK_DEFAULTS.gracePeriodSeconds * 1000,
    });
    expect(healthCheckTiming({ kind: "command", command, intervalSeconds: 0, delaySeconds: 0 }).intervalMs).toBe(MIN_CHECK_INTERVAL_MS);
  });
});

describe("HealthCheckRunner", () => {
  it("runs checks on time, reports verdicts, and stops with the task", async () => {
    const time = new VirtualTime();
    const verdicts: Array<[string, HealthVerdict]> = [];
    const runner = new HealthCheckRunner({ clock: time, timers: time, report: (id, v) => verdicts.push([id, v]) });
    const outcomes: boolean[] = [true, false, false];
    const calls: number[] = [];
    runner.start("t1", { ...TIMING, gracePeriodMs: 0 }, 0, async (timeoutMs): Promise<CheckOutcome> => {
      calls.push(timeoutMs);
      return { passed: outcomes.shift() ?? true, detail: "scripted" };
    });
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    time.advance(999);
    expect(calls).toEqual([]);
    time.advance(1);
    await settle();
    expect(calls).toEqual([500]);
    expect(verdicts.map(([, v]) => v.healthy)).toEqual([true]);
    time.advance(2000);
    await settle();
    time.advance(2000);
    await settle();
    expect(verdicts.map(([, v]) => [v.healthy, v.consecutiveFailures])).toEqual([[true, 0], [false, 1], [false, 2]]);
    runner.stop("t1");
    time.advance(10_000);
    await settle();
    expect(calls).toHaveLength(3);
    expect(runner.size()).toBe(0);
    expect(time.armed()).toBe(0);
  });

  it("runs at most maxConcurrentChecks at once; the rest wait their turn", async () => {
    const time = new VirtualTime();
    const runner = new HealthCheckRunner({ clock: time, timers: time, report: () => undefined, maxConcurrentChecks: 1 });
    const release: Array<() => void> = [];
    const started: string[] = [];
    for (const id of ["a", "b"]) {
      runner.start(id, TIMING, 0, () => {
        started.push(id);
        return new Promise<CheckOutcome>((resolve) => release.push(() => resolve({ passed: true, detail: "" })));
      });
    }
    time.advance(1000);
    expect(started).toEqual(["a"]);
    release.shift()!();
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual(["a", "b"]);
    runner.stopAll();
  });
});

describe("COMMAND checks as processes", () => {
  it("pass on exit 0, fail with the status otherwise, in the given directory and environment", async () => {
    const dir = await tempDir();
    const base = { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", FOO: "bar" }, cwd: dir };
    expect(await runCommandCheck({ ...base, command: `test "$FOO" = bar && test "$(pwd)" = "${dir}"` }, 5000, systemTimers)).toEqual({ passed: true, detail: "exited with status 0" });
    expect(await runCommandCheck({ ...base, command: "exit 3" }, 5000, systemTimers)).toEqual({ passed: false, detail: "exited with status 3" });
    expect((await runCommandCheck({ ...base, cwd: join(dir, "missing"), command: "true" }, 5000, systemTimers)).passed).toBe(false);
  });

  it("kill the whole process group of a check that times out", async () => {
    const dir = await tempDir();
    const pidFile = join(dir, "child.pid");
    const outcome = await runCommandCheck({ env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, cwd: dir, command: `sleep 30 & echo $! > ${pidFile}; wait` }, 300, systemTimers);
    expect(outcome).toEqual({ passed: false, detail: "timed out after 0.3 s" });
    const child = Number((await readFile(pidFile, "utf8")).trim());
    await eventually(() => {
      try {
        process.kill(child, 0);
        return false;
      } catch {
        return true;
      }
    }, 5000, "the check's child to be gone");
  });

  it("run in the task's sandbox with its environment, as the user owning the sandbox", async () => {
    const sandbox = await tempDir();
    const nobody = await lookupUser("nobody");
    if (process.getuid?.() === 0) await chown(sandbox, nobody.uid, nobody.gid);
    const task: TaskInfo = taskInfoFromSpec({
      taskId: "t1",
      agentId: "a1",
      resources: "cpus:0.1;mem:32;ports:[31005-31005]",
      command: "sleep 100",
      env: { GREETING: "hi" },
      healthCheck: { command: 'test "$GREETING" = hi && test "$PORT0" = 31005 && test "$MESOS_SANDBOX" = "$(pwd)"' },
    });
    const record = { taskId: "t1", frameworkId: "f1", task, sandbox, containerId: "c1", resources: Resources.parse("cpus:0.1;mem:32;ports:[31005-31005]") };
    const target = await commandCheckTarget(record, "agent.test");
    expect(target).toBeDefined();
    expect(target!.env.HOST).toBe("agent.test");
    expect(target!.cwd).toBe(sandbox);
    if (process.getuid?.() === 0) expect(target!.uid).toBe(nobody.uid);
    expect(await runCommandCheck(target!, 5000, systemTimers)).toMatchObject({ passed: true });
    const uid = process.getuid?.() === 0 ? nobody.uid : process.getuid?.();
    expect(await runCommandCheck({ ...target!, command: `test "$(id -u)" = ${uid}` }, 5000, systemTimers)).toMatchObject({ passed: true });
    expect(await commandCheckTarget({ ...record, sandbox: null }, "x")).toBeUndefined();
  });
});

describe("the wire", () => {
  it("carries a health check in TaskInfo and refuses negative durations", () => {
    const task = taskInfoFromSpec({ taskId: "t", agentId: "a", resources: "cpus:1", command: "x", healthCheck: { command: "true", intervalSeconds: 1, timeoutSeconds: 0.5 } });
    expect(decodeMessage("TaskInfo", encodeMessage("TaskInfo", task))).toEqual(task);
    expect(validateMessage("TaskInfo", { ...task, healthCheck: { ...task.healthCheck!, intervalSeconds: -1 } })).toEqual(["healthCheck.intervalSeconds: must be >= 0, got -1"]);
    expect(validateMessage("TaskInfo", { ...task, healthCheck: { intervalSeconds: 1 } })).toEqual(["healthCheck.kind: must be set"]);
    expect(() => taskInfoFromSpec({ taskId: "t", agentId: "a", resources: "cpus:1", command: "x", healthCheck: { command: "" } })).toThrow(/healthCheck.command/);
  });
});

describe("a real agent", () => {
  const nats = useNats();
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.stop();
    cluster = undefined;
  });

  it.skipIf(process.getuid?.() !== 0)("runs COMMAND checks inside a Linux container (its /tmp, host name and user), and fails a check at its timeout", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [] });
    const workDir = await tempDir();
    await chmod(workDir, 0o755); // tasks run as nobody and must reach their sandboxes
    const agent = await cluster.spawnAgent("cpus:1;mem:256;disk:256", "isolated", { workDir });
    cleanups.push(async () => void agent.kill("SIGKILL"));
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "hc-inside" });
    await fw.driver.start();
    const offer = await fw.offers.waitFor((o) => o.hostname === "isolated", 30_000, "an offer of the isolated agent");
    // The mark is in the task's private /tmp: a check on the host would not find it.
    const mark = `/tmp/corral-hc-mark-${process.pid}`;
    const timing = { delaySeconds: 0, intervalSeconds: 0.2, gracePeriodSeconds: 0 };
    await fw.driver.launch(offer, [
      {
        taskId: "inside",
        resources: "cpus:0.1;mem:32",
        command: `echo ok > ${mark}; exec sleep 1000`,
        healthCheck: { command: `test -e ${mark} && test "$(hostname)" = inside && test "$(id -u)" = 65534`, timeoutSeconds: 10, ...timing },
      },
      { taskId: "slow", resources: "cpus:0.1;mem:32", command: "exec sleep 1000", healthCheck: { command: "sleep 30", timeoutSeconds: 0.3, ...timing } },
    ]);
    const healthy = await fw.updates.waitFor((u) => u.taskId === "inside" && u.healthy === true, 30_000, "the check inside to pass");
    expect(healthy.state).toBe("TASK_RUNNING");
    const timedOut = await fw.updates.waitFor((u) => u.taskId === "slow" && u.healthy === false, 30_000, "the slow check to fail");
    expect(timedOut.message).toContain("timed out after 0.3 s");
    expect(timedOut.message).toContain("1 time(s)");
    for (const taskId of ["inside", "slow"]) await fw.driver.kill(taskId, offer.agentId);
    await fw.updates.waitFor((u) => u.taskId === "inside" && u.state === "TASK_KILLED", 30_000, "inside killed");
    await fw.updates.waitFor((u) => u.taskId === "slow" && u.state === "TASK_KILLED", 30_000, "slow killed");
    await fw.driver.stop({ teardown: true });
  });

  it("reports healthy, then every failure, in TASK_RUNNING updates with the health-check reason", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "hc", checkpoint: true });
    await fw.driver.start();
    const offer = await fw.offers.waitFor(() => true, 10_000, "an offer");
    const dir = await tempDir();
    const flag = join(dir, "sick");
    await fw.driver.launch(offer, [
      {
        taskId: "checked",
        resources: "cpus:0.1;mem:32",
        command: "sleep 1000",
        healthCheck: { command: `test ! -e ${flag}`, delaySeconds: 0, intervalSeconds: 0.2, timeoutSeconds: 5, gracePeriodSeconds: 0 },
      },
    ]);
    const healthy = await fw.updates.waitFor((s) => s.taskId === "checked" && s.healthy === true, 15_000, "a healthy update");
    expect(healthy.state).toBe("TASK_RUNNING");
    expect(healthy.reason).toBe("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED");
    await writeFile(flag, "");
    const second = await fw.updates.waitFor((s) => s.taskId === "checked" && s.healthy === false && s.message.includes("2 time(s)"), 15_000, "a second failure");
    expect(second.state).toBe("TASK_RUNNING");
    expect(second.reason).toBe("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED");
    expect(second.message).toContain("exited with status 1");
    await rm(flag);
    await fw.updates.waitFor((s) => s.taskId === "checked" && s.healthy === true && s.timestamp > second.timestamp, 15_000, "healthy again");
    // The agent's own view (and what it would re-register with) carries the verdict too.
    await fw.driver.kill("checked", offer.agentId);
    const end = await fw.updates.waitFor((s) => s.taskId === "checked" && s.state === "TASK_KILLED", 15_000, "killed");
    expect(end.healthy).toBeUndefined();
    await fw.driver.stop({ teardown: true });
  });
});

/**
 * The pure core's readiness decisions (which instances to probe, when a deployment may move on)
 * and its launch delays surviving a restart through the store's records.
 */
import { describe, expect, it } from "vitest";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { MarathonCore, type CoreOffer, type Instance, type LaunchTask, type MarathonEffect } from "../../../frameworks/marathon/core.ts";
import { taskJson } from "../../../frameworks/marathon/http.ts";
import { MemoryMarathonStore } from "../../../frameworks/marathon/store.ts";

function app(body: Record<string, unknown>): NormalizedApp {
  const result = validateApp({ cpus: 0.1, mem: 16, cmd: "sleep 1000", ...body });
  if (!result.ok) throw new Error(JSON.stringify(result.body));
  return result.app;
}

let offerSeq = 0;
function offer(hostname = "h1"): CoreOffer {
  return { id: `o${++offerSeq}`, agentId: `agent-${hostname}`, hostname, role: "default", resources: Resources.parse("cpus:8;mem:8192;disk:1000;ports:[31000-31999]"), attributes: {} };
}

const launches = (effects: MarathonEffect[]): LaunchTask[] => effects.flatMap((e) => (e.type === "launch" ? e.tasks : []));
const kills = (effects: MarathonEffect[]): string[] => effects.flatMap((e) => (e.type === "kill" ? [e.taskId] : []));
const succeeded = (effects: MarathonEffect[]) => effects.some((e) => e.type === "event" && e.event.eventType === "deployment_success");

const READY_APP = {
  id: "web",
  instances: 2,
  portDefinitions: [{ port: 0, name: "metrics" }, { port: 0, name: "http-api" }],
  readinessChecks: [{ path: "/ready", portName: "http-api", intervalSeconds: 2, timeoutSeconds: 1, httpStatusCodesForReady: [200, 204], preserveLastResponse: true }],
};

function world() {
  const core = new MarathonCore(new SeededRng(3));
  let now = 5_000_000;
  return {
    core,
    now: () => now,
    advance: (ms: number) => (now += ms),
    put: (a: NormalizedApp, restart = false) => core.putApp(a, restart ? { restart: true } : {}, now),
    offers: () => core.offers([offer()], now),
    run: (taskId: string) => core.statusUpdate({ taskId, state: "TASK_RUNNING", agentId: "agent-h1" }, now),
    end: (taskId: string) => core.statusUpdate({ taskId, state: "TASK_KILLED", agentId: "agent-h1" }, now),
    ready: (taskId: string, ready: boolean, status = ready ? 200 : 503) =>
      core.readinessResult(taskId, { ready, response: { status, contentType: "text/plain", body: ready ? "ok" : "warming up" } }, now),
  };
}

describe("readiness checks in the core", () => {
  it("a start deployment ends only when every new instance is ready; the probe uses the port named by portName", () => {
    const w = world();
    w.put(app(READY_APP));
    const tasks = launches(w.offers());
    expect(tasks).toHaveLength(2);
    expect(w.core.readinessTargets()).toEqual([]); // not running yet
    for (const t of tasks) w.run(t.taskId);
    const targets = w.core.readinessTargets();
    expect(targets.map((t) => t.instance.id).sort()).toEqual(tasks.map((t) => t.taskId).sort());
    for (const target of targets) expect(target.port).toBe(target.instance.hostPorts[1]);
    expect(targets[0]!.check.path).toBe("/ready");
    expect(w.core.deploymentList()).toHaveLength(1);

    expect(succeeded(w.ready(tasks[0]!.taskId, false))).toBe(false);
    const [deployment] = w.core.deploymentList();
    const action = (w.core.deploymentJson(deployment!).currentActions as Array<{ readinessCheckResults: unknown[] }>)[0]!;
    expect(action.readinessCheckResults).toEqual([
      { name: "readinessCheck", taskId: tasks[0]!.taskId, ready: false, lastResponse: { status: 503, contentType: "text/plain", body: "warming up" } },
    ]);
    expect(succeeded(w.ready(tasks[0]!.taskId, true, 204))).toBe(false);
    // Ready once is ready for good: it is probed no more, and a later answer changes nothing.
    expect(w.core.readinessTargets().map((t) => t.instance.id)).toEqual([tasks[1]!.taskId]);
    w.ready(tasks[0]!.taskId, false);
    expect(w.core.readinessResults("/web").find((r) => r.taskId === tasks[0]!.taskId)?.ready).toBe(true);
    expect(succeeded(w.ready(tasks[1]!.taskId, true))).toBe(true);
    expect(w.core.readinessTargets()).toEqual([]);
    expect(w.core.readinessResults("/web")).toEqual([]); // shown only while a deployment waits
  });

  it("a rolling restart kills an old instance only once a new one is ready", () => {
    const w = world();
    w.put(app({ ...READY_APP, instances: 1, upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 } }));
    const [old] = launches(w.offers());
    w.run(old!.taskId);
    w.ready(old!.taskId, true);
    expect(w.core.deploymentList()).toHaveLength(0);

    w.advance(1000);
    w.put(app({ ...READY_APP, instances: 1, cmd: "sleep 2000", upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 } }));
    // The old instance needs no readiness: it is not the deployment's.
    expect(w.core.readinessTargets()).toEqual([]);
    const [fresh] = launches(w.offers());
    expect(kills(w.run(fresh!.taskId))).toEqual([]);
    expect(w.core.readinessTargets().map((t) => t.instance.id)).toEqual([fresh!.taskId]);
    expect(kills(w.ready(fresh!.taskId, false))).toEqual([]);
    w.advance(5000);
    expect(kills(w.core.tick(w.now()))).toEqual([]);
    expect(w.core.instance(old!.taskId)?.goal).toBe("running");
    expect(kills(w.ready(fresh!.taskId, true))).toEqual([old!.taskId]);
    expect(succeeded(w.end(old!.taskId))).toBe(true);
  });

  it("with health checks, probes readiness only once healthy; without a deployment, needs none", () => {
    const w = world();
    w.put(app({ ...READY_APP, instances: 1, healthChecks: [{ protocol: "TCP", portIndex: 0 }] }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    expect(w.core.readinessTargets()).toEqual([]);
    w.core.health(task!.taskId, 0, true, w.now());
    expect(w.core.readinessTargets()).toHaveLength(1);
    expect(w.core.isReady(w.core.instance(task!.taskId)!)).toBe(false);
    w.ready(task!.taskId, true);
    expect(w.core.deploymentList()).toHaveLength(0);

    // A replacement outside any deployment counts as soon as it is healthy.
    w.end(task!.taskId);
    w.advance(60_000);
    const [replacement] = launches(w.offers());
    w.run(replacement!.taskId);
    w.core.health(replacement!.taskId, 0, true, w.now());
    expect(w.core.readinessTargets()).toEqual([]);
    expect(w.core.isReady(w.core.instance(replacement!.taskId) as Instance)).toBe(true);
  });

  it("ignores probe answers for instances nobody waits for", () => {
    const w = world();
    w.put(app({ id: "plain", instances: 1 }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    expect(w.ready(task!.taskId, false)).toEqual([]);
    expect(w.ready("nope", true)).toEqual([]);
    expect(w.core.readinessResults("/plain")).toEqual([]);
  });
});

describe("launch delays in the store", () => {
  it("are written on failure, reloaded by a restarted core, and forgotten on a reset", async () => {
    const store = new MemoryMarathonStore();
    const apply = async (effects: MarathonEffect[]) => {
      for (const e of effects) {
        if (e.type === "putApp") await store.put("app", e.record.app.id, e.record);
        if (e.type === "putInstance") await store.put("instance", e.instance.id, e.instance);
        if (e.type === "deleteInstance") await store.delete("instance", e.id);
        if (e.type === "putDelay") await store.put("delay", e.appId, { appId: e.appId, delay: e.delay });
        if (e.type === "deleteDelay") await store.delete("delay", e.appId);
      }
    };
    const w = world();
    await apply(w.put(app({ id: "crash", instances: 1, backoffSeconds: 30 })).effects);
    const [task] = launches(w.offers());
    await apply(w.core.statusUpdate({ taskId: task!.taskId, state: "TASK_FAILED", agentId: "agent-h1" }, w.now()));
    const delay = w.core.delayOf("/crash", w.now());
    expect(delay?.delayMs).toBe(30_000);

    const state = await store.load();
    expect(state.delays).toEqual([{ appId: "/crash", delay }]);
    const restarted = new MarathonCore(new SeededRng(4));
    restarted.recover(state, w.now() + 1000);
    expect(restarted.delayOf("/crash", w.now() + 1000)).toEqual(delay);
    expect(launches(restarted.offers([offer()], w.now() + 1000))).toEqual([]);
    expect(restarted.queue(w.now() + 1000)[0]!.delay).toEqual({ timeLeftSeconds: 29, overdue: false });

    const reset = restarted.resetDelay("/crash", w.now() + 2000);
    expect(reset).toContainEqual({ type: "deleteDelay", appId: "/crash" });
    await apply(reset);
    expect((await store.load()).delays).toEqual([]);
  });

  it("drops a stored delay of an older config or of a removed app", () => {
    const w = world();
    const { effects } = w.put(app({ id: "a", instances: 0 }));
    const record = effects.flatMap((e) => (e.type === "putApp" ? [e.record] : []))[0]!;
    const stale = { configVersion: "1999-01-01T00:00:00.000Z", sinceMs: w.now(), delayMs: 10_000, maxDelayMs: 300_000, failures: 1 };
    const core = new MarathonCore(new SeededRng(5));
    const out = core.recover({ apps: [record], deployments: [], instances: [], delays: [{ appId: "/a", delay: stale }, { appId: "/gone", delay: stale }] }, w.now());
    expect(core.delayOf("/a", w.now())).toBeUndefined();
    expect(out.filter((e) => e.type === "deleteDelay")).toEqual([{ type: "deleteDelay", appId: "/a" }, { type: "deleteDelay", appId: "/gone" }]);
  });
});

describe("health answers of the checks Marathon runs (pure core)", () => {
  const healthEvents = (effects: MarathonEffect[]) => effects.filter((e) => e.type === "event" && e.event.eventType === "health_status_changed_event").length;

  it("ignores failures in the grace period, waits for every check's first answer, and kills after maxConsecutiveFailures", () => {
    const w = world();
    const checks = [
      { protocol: "TCP", portIndex: 0, gracePeriodSeconds: 10, maxConsecutiveFailures: 2 },
      { protocol: "HTTP", portIndex: 0, path: "/health", gracePeriodSeconds: 10, maxConsecutiveFailures: 2 },
    ];
    w.put(app({ id: "checked", instances: 1, portDefinitions: [{ port: 0 }], healthChecks: checks }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    const instance = () => w.core.instance(task!.taskId)!;

    // In the grace period a failure counts for nothing.
    expect(w.core.health(task!.taskId, 0, false, w.now())).toEqual([]);
    expect(instance().healthy).toBeUndefined();
    // One check passed, the other has not answered: not healthy yet.
    w.core.health(task!.taskId, 0, true, w.now());
    expect(instance().healthy).toBeUndefined();
    expect(healthEvents(w.core.health(task!.taskId, 1, true, w.now()))).toBe(1);
    expect(instance().healthy).toBe(true);

    // Once healthy, the grace period no longer shields failures: two in a row kill it.
    const first = w.core.health(task!.taskId, 1, false, w.now());
    expect(instance().healthy).toBe(false);
    expect(kills(first)).toEqual([]);
    expect(kills(w.core.health(task!.taskId, 1, false, w.now()))).toEqual([task!.taskId]);
  });

  it("backs the app off after a kill for failed health checks, as after a crash (Marathon's backoff applies to both)", () => {
    const w = world();
    w.put(app({ id: "sick", instances: 1, portDefinitions: [{ port: 0 }], backoffSeconds: 10, healthChecks: [{ protocol: "TCP", portIndex: 0, gracePeriodSeconds: 0, maxConsecutiveFailures: 1 }] }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    expect(kills(w.core.health(task!.taskId, 0, false, w.now()))).toEqual([task!.taskId]);
    w.end(task!.taskId);
    expect(w.core.delayOf("/sick", w.now())).toMatchObject({ delayMs: 10_000, failures: 1 });
    expect(launches(w.offers())).toEqual([]);
    w.advance(10_000);
    expect(launches(w.offers())).toHaveLength(1);
  });

  it("records a kill for failed health checks as the app's lastTaskFailure (TASK_KILLED), which the task's end does not overwrite", () => {
    const w = world();
    w.put(app({ id: "flaky", instances: 1, portDefinitions: [{ port: 0 }], healthChecks: [{ protocol: "TCP", portIndex: 0, gracePeriodSeconds: 0, maxConsecutiveFailures: 2 }] }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    const version = w.core.instance(task!.taskId)!.version;
    w.core.health(task!.taskId, 0, false, w.now());
    expect(w.core.lastTaskFailure("/flaky")).toBeUndefined();
    w.advance(1_000);
    const killedAt = new Date(w.now()).toISOString();
    expect(kills(w.core.health(task!.taskId, 0, false, w.now()))).toEqual([task!.taskId]);
    const failure = {
      appId: "/flaky",
      taskId: task!.taskId,
      host: "h1",
      slaveId: "agent-h1",
      state: "TASK_KILLED",
      message: "Killed for failing its TCP health check 2 times in a row",
      timestamp: killedAt,
      version,
    };
    expect(w.core.lastTaskFailure("/flaky")).toEqual(failure);
    w.advance(1_000);
    w.end(task!.taskId);
    expect(w.core.lastTaskFailure("/flaky")).toEqual(failure);
  });

  it("with a COMMAND check beside checks Marathon runs, the instance is healthy only while every check passes", () => {
    const w = world();
    const checks = [
      { protocol: "HTTP", portIndex: 0, path: "/health", gracePeriodSeconds: 0, maxConsecutiveFailures: 0 },
      { protocol: "COMMAND", command: { value: "test -e ready" }, gracePeriodSeconds: 0, maxConsecutiveFailures: 0 },
    ];
    w.put(app({ id: "both", instances: 1, portDefinitions: [{ port: 0 }], healthChecks: checks }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    const healthy = () => w.core.instance(task!.taskId)!.healthy;
    const agent = (ok: boolean) => {
      w.advance(1_000);
      return w.core.statusUpdate({ taskId: task!.taskId, state: "TASK_RUNNING", agentId: "agent-h1", healthy: ok, reason: "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED", timestampMs: w.now() }, w.now());
    };
    const probe = (ok: boolean) => w.core.health(task!.taskId, 0, ok, w.now());

    agent(true);
    expect(healthy()).toBeUndefined(); // the HTTP check has not answered yet
    expect(healthEvents(probe(true))).toBe(1);
    expect(healthy()).toBe(true);
    expect(w.core.taskCounts("/both")).toMatchObject({ tasksHealthy: 1, tasksUnhealthy: 0 });

    // A failing HTTP check is not undone by the agent's pass...
    probe(false);
    expect(healthy()).toBe(false);
    expect(healthEvents(agent(true))).toBe(0);
    expect(healthy()).toBe(false);
    probe(true);
    expect(healthy()).toBe(true);

    // ...nor a failing COMMAND check by Marathon's.
    agent(false);
    expect(healthy()).toBe(false);
    expect(healthEvents(probe(true))).toBe(0);
    expect(healthy()).toBe(false);
    expect(w.core.taskCounts("/both")).toMatchObject({ tasksHealthy: 0, tasksUnhealthy: 1 });
    expect(healthEvents(agent(true))).toBe(1);
    expect(healthy()).toBe(true);
  });

  it("with only checks Corral does not run (MESOS_HTTP/HTTPS/TCP), an app behaves as one without health checks", () => {
    const w = world();
    const strategy = { minimumHealthCapacity: 1, maximumOverCapacity: 1 };
    const spec = (cmd: string) => ({
      id: "mesos-checked",
      instances: 2,
      cmd,
      upgradeStrategy: strategy,
      portDefinitions: [{ port: 0 }],
      healthChecks: [{ protocol: "MESOS_HTTP", portIndex: 0, path: "/health", gracePeriodSeconds: 0, maxConsecutiveFailures: 1 }],
    });
    w.put(app(spec("sleep 1000")));
    const old = launches(w.offers());
    expect(old).toHaveLength(2);
    expect(succeeded(w.run(old[0]!.taskId))).toBe(false);
    expect(succeeded(w.run(old[1]!.taskId))).toBe(true); // running is enough: no check ever answers
    expect(w.core.isReady(w.core.instance(old[0]!.taskId)!)).toBe(true);
    expect(w.core.taskCounts("/mesos-checked")).toEqual({ tasksStaged: 0, tasksRunning: 2, tasksHealthy: 0, tasksUnhealthy: 0 });
    // No check runs, so the API shows no health results (as for an app without checks).
    expect(taskJson(w.core, w.core.instance(old[0]!.taskId)!)).not.toHaveProperty("healthCheckResults");

    // A rolling restart keeps both old instances (they count as healthy) until new ones run.
    w.advance(1000);
    expect(kills(w.put(app(spec("sleep 2000"))).effects)).toEqual([]);
    const fresh = launches(w.offers());
    expect(fresh).toHaveLength(2);
    expect(kills(w.run(fresh[0]!.taskId))).toHaveLength(1);
    expect(kills(w.run(fresh[1]!.taskId))).toHaveLength(1);
    for (const t of old) w.end(t.taskId);
    expect(w.core.deploymentList()).toEqual([]);
  });

  it("judges an instance by the health checks of its own version: adding a check in a restart does not make the old instances unhealthy", () => {
    const w = world();
    const strategy = { minimumHealthCapacity: 1, maximumOverCapacity: 1 };
    const base = { id: "grown", instances: 2, portDefinitions: [{ port: 0 }], upgradeStrategy: strategy };
    w.put(app(base));
    const old = launches(w.offers());
    for (const t of old) w.run(t.taskId);
    expect(w.core.deploymentList()).toEqual([]);

    w.advance(1000);
    const put = w.put(app({ ...base, healthChecks: [{ protocol: "TCP", portIndex: 0, gracePeriodSeconds: 0, maxConsecutiveFailures: 0 }] }));
    // The old instances have no check: running, they are as good as healthy, and none is killed before a new one is.
    expect(kills(put.effects)).toEqual([]);
    expect(w.core.isReady(w.core.instance(old[0]!.taskId)!)).toBe(true);
    const fresh = launches(w.offers());
    expect(fresh).toHaveLength(2);
    for (const t of fresh) expect(kills(w.run(t.taskId))).toEqual([]);
    expect(kills(w.core.health(fresh[0]!.taskId, 0, false, w.now()))).toEqual([]);
    expect(kills(w.core.health(fresh[0]!.taskId, 0, true, w.now()))).toHaveLength(1);
    expect(kills(w.core.health(fresh[1]!.taskId, 0, true, w.now()))).toHaveLength(1);
    // Probe answers are read against the instance's own checks: the old ones have none.
    expect(w.core.healthChecksOf(w.core.instance(old[0]!.taskId)!)).toEqual([]);
  });

  it("counts failures after the grace period even without a pass, and ignores unknown instances and checks", () => {
    const w = world();
    w.put(app({ id: "late", instances: 1, portDefinitions: [{ port: 0 }], healthChecks: [{ protocol: "TCP", portIndex: 0, gracePeriodSeconds: 5, maxConsecutiveFailures: 1 }] }));
    const [task] = launches(w.offers());
    w.run(task!.taskId);
    expect(w.core.health("no-such-task", 0, false, w.now())).toEqual([]);
    expect(w.core.health(task!.taskId, 3, false, w.now())).toEqual([]);
    w.advance(6_000);
    expect(kills(w.core.health(task!.taskId, 0, false, w.now()))).toEqual([task!.taskId]);
  });
});

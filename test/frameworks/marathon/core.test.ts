/** The pure Marathon core: no I/O, time passed in, effects out. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { validateApp, type NormalizedApp } from "../../../frameworks/marathon/app-spec.ts";
import { ConflictError, MarathonCore, type CoreOffer, type LaunchTask, type MarathonEffect } from "../../../frameworks/marathon/core.ts";

function app(body: Record<string, unknown>): NormalizedApp {
  const result = validateApp({ cpus: 0.1, mem: 16, cmd: "sleep 1000", ...body });
  if (!result.ok) throw new Error(JSON.stringify(result.body));
  return result.app;
}

let offerSeq = 0;
function offer(hostname = "h1", resources = "cpus:8;mem:8192;disk:1000;ports:[31000-31999]", attributes: Record<string, string> = {}): CoreOffer {
  return { id: `o${++offerSeq}`, agentId: `agent-${hostname}`, hostname, role: "default", resources: Resources.parse(resources), attributes };
}

const launches = (effects: MarathonEffect[]): LaunchTask[] => effects.flatMap((e) => (e.type === "launch" ? e.tasks : []));
const kills = (effects: MarathonEffect[]): string[] => effects.flatMap((e) => (e.type === "kill" ? [e.taskId] : []));
const events = (effects: MarathonEffect[], type: string) => effects.flatMap((e) => (e.type === "event" && e.event.eventType === type ? [e.event] : []));

/** A core plus a tiny world: launched tasks run when told, kills end them. */
function world(config: ConstructorParameters<typeof MarathonCore>[1] = {}) {
  const core = new MarathonCore(new SeededRng(7), config);
  let now = 1_000_000;
  const all: MarathonEffect[] = [];
  const track = (effects: MarathonEffect[]) => (all.push(...effects), effects);
  return {
    core,
    all,
    now: () => now,
    advance: (ms: number) => (now += ms),
    put: (a: NormalizedApp, options: { force?: boolean; restart?: boolean } = {}) => {
      const out = core.putApp(a, options, now);
      track(out.effects);
      return out;
    },
    offers: (...list: CoreOffer[]) => track(core.offers(list, now)),
    status: (taskId: string, state: string, extra: { healthy?: boolean } = {}) => track(core.statusUpdate({ taskId, state, agentId: core.instance(taskId)?.agentId ?? "a", ...extra }, now)),
    tick: () => track(core.tick(now)),
  };
}

describe("launching", () => {
  it("launches the wanted instances with ports in the environment, persisting each before its launch", () => {
    const w = world();
    const put = w.put(app({ id: "web", instances: 3, portDefinitions: [{ port: 0 }, { port: 0 }] }));
    expect(put.effects.map((e) => e.type)).toContain("putDeployment");
    // A new framework is offered resources already: no REVIVE needed, and no SUPPRESS while waiting.
    expect(put.effects.some((e) => e.type === "suppress" || e.type === "revive")).toBe(false);
    const effects = w.offers(offer());
    const tasks = launches(effects);
    expect(tasks).toHaveLength(3);
    const launchIndex = effects.findIndex((e) => e.type === "launch");
    for (const t of tasks) {
      expect(t.taskId).toMatch(/^web\.[0-9a-f-]{36}$/);
      expect(effects.findIndex((e) => e.type === "putInstance" && e.instance.id === t.taskId)).toBeLessThan(launchIndex);
      expect(Number(t.env.PORT0)).toBeGreaterThanOrEqual(31000);
      expect(t.env.PORT1).toBeDefined();
      expect(t.env.PORT0).not.toBe(t.env.PORT1);
      expect(t.env.MARATHON_APP_ID).toBe("/web");
    }
    // Ports are not handed out twice within one offer.
    expect(new Set(tasks.flatMap((t) => [t.env.PORT0, t.env.PORT1])).size).toBe(6);
    // Nothing waits any more: SUPPRESS.
    expect(effects.some((e) => e.type === "suppress")).toBe(true);
  });

  it("names ports in the environment as Marathon does: PORT_<NAME> by port name, PORT_<port> by declared (or, for port 0, assigned) port", () => {
    const w = world();
    w.put(app({ id: "named", instances: 1, portDefinitions: [{ port: 0, name: "http" }, { port: 8080, name: "admin-api" }, { port: 0 }] }));
    const [task] = launches(w.offers(offer()));
    const [http, admin, plain] = [task!.env.PORT0!, task!.env.PORT1!, task!.env.PORT2!];
    const ports = Object.fromEntries(Object.entries(task!.env).filter(([k]) => k.startsWith("PORT")));
    expect(ports).toEqual({
      PORT0: http,
      PORT1: admin,
      PORT2: plain,
      PORT: http,
      PORTS: `${http},${admin},${plain}`,
      PORT_HTTP: http,
      "PORT_ADMIN-API": admin,
      PORT_8080: admin,
      [`PORT_${http}`]: http,
      [`PORT_${plain}`]: plain,
    });
  });

  it("puts every label in the environment as Marathon does: the name's other characters made '_', upper-cased, listed in MARATHON_APP_LABELS", () => {
    const w = world();
    const long = "x".repeat(600);
    w.put(app({ id: "labelled", instances: 1, labels: { "com.example/team": "ops", tier: "web", "HAPROXY_0_VHOST": "a.example", big: long, [long]: "too long a name" } }));
    const [task] = launches(w.offers(offer()));
    const labels = Object.fromEntries(Object.entries(task!.env).filter(([k]) => k.startsWith("MARATHON_APP_LABEL")));
    expect(labels).toEqual({
      MARATHON_APP_LABELS: "COM_EXAMPLE_TEAM TIER HAPROXY_0_VHOST",
      MARATHON_APP_LABEL_COM_EXAMPLE_TEAM: "ops",
      MARATHON_APP_LABEL_TIER: "web",
      MARATHON_APP_LABEL_HAPROXY_0_VHOST: "a.example",
    });
  });

  it("completes the start deployment once every instance runs, and declines idle offers for long", () => {
    const w = world();
    const { result } = w.put(app({ id: "web", instances: 2 }));
    const tasks = launches(w.offers(offer()));
    w.status(tasks[0]!.taskId, "TASK_RUNNING");
    expect(w.core.deploymentList()).toHaveLength(1);
    const done = w.status(tasks[1]!.taskId, "TASK_RUNNING");
    expect(events(done, "deployment_success").map((e) => e.id)).toEqual([result.deploymentId]);
    expect(w.core.deploymentList()).toHaveLength(0);
    const idle = w.offers(offer());
    expect(idle).toContainEqual(expect.objectContaining({ type: "decline", refuseSeconds: 120 }));
  });

  it("respects maxInstancesPerOffer, resources and acceptedResourceRoles", () => {
    const w = world({ maxInstancesPerOffer: 2 });
    w.put(app({ id: "web", instances: 5, cpus: 1 }));
    expect(launches(w.offers(offer("h1")))).toHaveLength(2);
    expect(launches(w.offers(offer("h2", "cpus:1.5;mem:1024;ports:[1-10]")))).toHaveLength(1);
    const w2 = world();
    w2.put(app({ id: "res", instances: 1, acceptedResourceRoles: ["ops"] }));
    const unreserved = w2.offers(offer("h1"));
    expect(launches(unreserved)).toHaveLength(0);
    expect(unreserved).toContainEqual(expect.objectContaining({ type: "decline", refuseSeconds: 5 }));
    expect(w2.core.queue(w2.now())[0]!.stats.reasons.get("UnfulfilledRole")).toBe(1);
    const reserved = launches(w2.offers(offer("h1", "cpus(ops):1;mem(ops):64;ports(ops):[5-6]")));
    expect(reserved).toHaveLength(1);
    expect(reserved[0]!.resources.entries.every((e) => e.role === "ops")).toBe(true);
  });

  it("places one UNIQUE-hostname instance per host and says why the rest wait", () => {
    const w = world();
    w.put(app({ id: "u", instances: 3, constraints: [["hostname", "UNIQUE"]] }));
    expect(launches(w.offers(offer("h1")))).toHaveLength(1);
    expect(launches(w.offers(offer("h1")))).toHaveLength(0);
    expect(launches(w.offers(offer("h2")))).toHaveLength(1);
    const [entry] = w.core.queue(w.now());
    expect(entry!.count).toBe(1);
    expect(entry!.stats.reasons.get("UnfulfilledConstraint")).toBe(1);
    expect(entry!.stats.lastUnused[0]!.detail).toContain("hostname");
  });

  it("leaves unreachable instances out of constraint checks, as Marathon does with lost instances", () => {
    const w = world();
    w.put(app({ id: "u", instances: 1, constraints: [["hostname", "UNIQUE"]], unreachableStrategy: { inactiveAfterSeconds: 10, expungeAfterSeconds: 600 } }));
    const [first] = launches(w.offers(offer("h1")));
    w.status(first!.taskId, "TASK_RUNNING");
    w.status(first!.taskId, "TASK_UNREACHABLE");
    w.advance(10_000);
    w.tick();
    expect(w.core.instance(first!.taskId)!.inactive).toBe(true);
    // The replacement may go to the lost instance's host; a running instance there still blocks it.
    const [replacement] = launches(w.offers(offer("h1")));
    expect(replacement).toBeDefined();
    w.put(app({ id: "v", instances: 2, constraints: [["hostname", "UNIQUE"]] }));
    const [onH2] = launches(w.offers(offer("h2")));
    w.status(onH2!.taskId, "TASK_RUNNING");
    expect(launches(w.offers(offer("h2")))).toHaveLength(0);
  });

  it("kills tasks it does not know and tasks stuck staging past the launch timeout", () => {
    const w = world({ taskLaunchTimeoutMs: 10_000 });
    expect(kills(w.core.statusUpdate({ taskId: "ghost", state: "TASK_RUNNING", agentId: "a" }, w.now()))).toEqual(["ghost"]);
    w.put(app({ id: "web", instances: 1 }));
    const [task] = launches(w.offers(offer()));
    w.advance(5_000);
    expect(kills(w.tick())).toEqual([]);
    w.advance(6_000);
    expect(kills(w.tick())).toEqual([task!.taskId]);
    w.status(task!.taskId, "TASK_KILLED");
    expect(w.core.queueCount("/web")).toBe(1);
    expect(w.core.delayOf("/web", w.now())).toBeUndefined(); // our own kill is no failure
  });
});

describe("unreachable instances", () => {
  it("replaces an unreachable instance after inactiveAfterSeconds, expunges it after expungeAfterSeconds, and keeps it with the strategy disabled", () => {
    const w = world();
    w.put(app({ id: "web", instances: 1, unreachableStrategy: { inactiveAfterSeconds: 10, expungeAfterSeconds: 20 } }));
    const [task] = launches(w.offers(offer()));
    w.status(task!.taskId, "TASK_RUNNING");
    w.status(task!.taskId, "TASK_UNREACHABLE");
    expect(w.core.queueCount("/web")).toBe(0);
    // Inactive: a replacement is launched, the unreachable instance is kept (not killed).
    w.advance(10_000);
    const inactive = w.tick();
    expect(kills(inactive)).toEqual([]);
    expect(w.core.instance(task!.taskId)!.inactive).toBe(true);
    expect(events(inactive, "instance_changed_event").map((e) => e.condition)).toEqual(["UnreachableInactive"]);
    expect(inactive.some((e) => e.type === "putInstance" && e.instance.id === task!.taskId && e.instance.inactive === true)).toBe(true);
    expect(w.core.queueCount("/web")).toBe(1);
    const [replacement] = launches(w.offers(offer("h2")));
    expect(replacement).toBeDefined();
    w.status(replacement!.taskId, "TASK_RUNNING");
    // Expunged: killed in case its agent comes back, and forgotten.
    w.advance(10_000);
    const gone = w.tick();
    expect(kills(gone)).toEqual([task!.taskId]);
    expect(w.core.instance(task!.taskId)).toBeUndefined();
    expect(w.core.queueCount("/web")).toBe(0);

    // Back before it is expunged: it counts again, and the surplus (the younger one, by default) is killed.
    const b = world();
    b.put(app({ id: "back", instances: 1, unreachableStrategy: { inactiveAfterSeconds: 10, expungeAfterSeconds: 600 } }));
    const [first] = launches(b.offers(offer()));
    b.status(first!.taskId, "TASK_RUNNING");
    b.status(first!.taskId, "TASK_UNREACHABLE");
    b.advance(10_000);
    b.tick();
    b.advance(1_000);
    const [second] = launches(b.offers(offer("h2")));
    b.status(second!.taskId, "TASK_RUNNING");
    const back = b.status(first!.taskId, "TASK_RUNNING");
    expect(b.core.instance(first!.taskId)!.inactive).toBeUndefined();
    expect(kills(back)).toEqual([second!.taskId]);

    const d = world();
    d.put(app({ id: "keep", instances: 1, unreachableStrategy: "disabled" }));
    const [kept] = launches(d.offers(offer()));
    d.status(kept!.taskId, "TASK_UNREACHABLE");
    d.advance(1_000_000);
    expect(kills(d.tick())).toEqual([]);
    d.status(kept!.taskId, "TASK_RUNNING");
    expect(d.core.instance(kept!.taskId)!.state).toBe("running");
  });
});

describe("failures and backoff", () => {
  it("replaces failed tasks after a growing delay, and forgets the delay on a new config", () => {
    const w = world();
    w.put(app({ id: "crash", instances: 1, backoffSeconds: 1, backoffFactor: 2 }));
    let [task] = launches(w.offers(offer()));
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      const failed = w.status(task!.taskId, "TASK_FAILED");
      expect(failed.some((e) => e.type === "revive")).toBe(false); // delayed: nothing to launch yet, stay suppressed
      expect(w.core.isSuppressed()).toBe(true);
      const delay = w.core.delayOf("/crash", w.now())!;
      delays.push(delay.delayMs);
      expect(launches(w.offers(offer()))).toHaveLength(0);
      w.advance(delay.delayMs - 1);
      expect(w.tick().some((e) => e.type === "revive")).toBe(false);
      w.advance(1);
      expect(w.tick().some((e) => e.type === "revive")).toBe(true);
      [task] = launches(w.offers(offer()));
      expect(task).toBeDefined();
    }
    expect(delays).toEqual([1000, 2000, 4000]);
    w.status(task!.taskId, "TASK_FAILED");
    expect(w.core.delayOf("/crash", w.now())).toBeDefined();
    w.put(app({ id: "crash", instances: 1, backoffSeconds: 1, backoffFactor: 2, cmd: "sleep 5" }), { force: true });
    expect(w.core.delayOf("/crash", w.now())).toBeUndefined();
    expect(launches(w.offers(offer()))).toHaveLength(1);
  });

  it("keeps a crash-looping app at the ceiling: the delay is remembered from the latest launch or start, not only from the latest failure", () => {
    const w = world();
    w.put(app({ id: "loop", instances: 1, backoffSeconds: 1, backoffFactor: 2, maxLaunchDelaySeconds: 8 }));
    let [task] = launches(w.offers(offer()));
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      // Each task runs for a second, then crashes.
      w.advance(1_000);
      w.status(task!.taskId, "TASK_RUNNING");
      w.status(task!.taskId, "TASK_FAILED");
      const delay = w.core.delayOf("/loop", w.now())!;
      delays.push(delay.delayMs);
      w.advance(delay.delayMs);
      w.tick();
      [task] = launches(w.offers(offer()));
      expect(task).toBeDefined();
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 8000, 8000, 8000]);
    // A task that then runs for longer than the ceiling was viable: its next failure starts afresh.
    w.status(task!.taskId, "TASK_RUNNING");
    w.advance(8_001);
    w.status(task!.taskId, "TASK_FAILED");
    expect(w.core.delayOf("/loop", w.now())).toMatchObject({ delayMs: 1000, failures: 1 });
  });
});

describe("lastTaskFailure", () => {
  /** An app of one instance that runs until `state` ends it, with `message`; answers the app's lastTaskFailure after. */
  function endWith(w: ReturnType<typeof world>, state: string, message = `ended: ${state}`) {
    w.advance(60_000); // past any launch delay
    w.tick();
    const [task] = launches(w.offers(offer()));
    w.status(task!.taskId, "TASK_RUNNING");
    w.core.statusUpdate({ taskId: task!.taskId, state, agentId: "agent-h1", message }, w.now());
    return { taskId: task!.taskId, failure: w.core.lastTaskFailure("/ends") };
  }

  it("is recorded for a failure state, as Marathon's, and not for a task that finished or was killed (which is still replaced)", () => {
    const w = world();
    w.put(app({ id: "ends", instances: 1, backoffSeconds: 1 }));
    expect(endWith(w, "TASK_FINISHED").failure).toBeUndefined();
    expect(w.core.queueCount("/ends")).toBe(1);
    expect(endWith(w, "TASK_KILLED").failure).toBeUndefined();

    const failed = endWith(w, "TASK_FAILED", "Command exited with status 1");
    expect(failed.failure).toMatchObject({ appId: "/ends", taskId: failed.taskId, state: "TASK_FAILED", message: "Command exited with status 1", host: "h1", slaveId: "agent-h1" });
    // A later clean end does not overwrite it.
    endWith(w, "TASK_FINISHED");
    expect(endWith(w, "TASK_KILLED").failure).toEqual(failed.failure);
    for (const state of ["TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"]) {
      const ended = endWith(w, state);
      expect(ended.failure).toMatchObject({ taskId: ended.taskId, state });
    }
  });
});

describe("scaling and deployments", () => {
  it("scales down youngest first and finishes when the killed ones are gone", () => {
    const w = world();
    w.put(app({ id: "web", instances: 3 }));
    const tasks = launches(w.offers(offer()));
    for (const [i, t] of tasks.entries()) {
      w.advance(10);
      w.status(t.taskId, "TASK_RUNNING");
      void i;
    }
    const { effects, result } = w.put(app({ id: "web", instances: 1 }));
    const killed = kills(effects);
    expect(killed).toEqual([tasks[2]!.taskId, tasks[1]!.taskId]);
    w.status(killed[0]!, "TASK_KILLED");
    expect(w.core.deployment(result.deploymentId)).toBeDefined();
    expect(events(w.status(killed[1]!, "TASK_KILLED"), "deployment_success")).toHaveLength(1);
  });

  it("waits, in a scale, for the instances it starts and the kills it makes, not for the health of instances it keeps (as Marathon's scaling does)", () => {
    const w = world();
    const checks = [{ protocol: "COMMAND", command: { value: "false" }, maxConsecutiveFailures: 0 }];
    const sickApp = (instances: number) => app({ id: "sick", instances, healthChecks: checks });
    w.put(sickApp(3));
    const tasks = launches(w.offers(offer()));
    for (const t of tasks) w.status(t.taskId, "TASK_RUNNING", { healthy: false });
    // Never healthy: the start waits (Marathon's start does too); take it over.
    w.advance(1_000);
    const down = w.put(sickApp(2), { force: true });
    const [killed] = kills(down.effects);
    expect(w.core.deployment(down.result.deploymentId)).toBeDefined();
    expect(events(w.status(killed!, "TASK_KILLED"), "deployment_success").map((e) => e.id)).toEqual([down.result.deploymentId]);
    // Scaling up waits for the new instance only.
    const up = w.put(sickApp(3));
    const [added] = launches(w.offers(offer()));
    w.status(added!.taskId, "TASK_RUNNING", { healthy: false });
    expect(w.core.deployment(up.result.deploymentId)).toBeDefined();
    expect(events(w.status(added!.taskId, "TASK_RUNNING", { healthy: true }), "deployment_success").map((e) => e.id)).toEqual([up.result.deploymentId]);
  });

  it("refuses a write to a locked app unless forced, and rollback restores the previous version", () => {
    const w = world();
    w.put(app({ id: "web", instances: 1 }));
    const first = launches(w.offers(offer()));
    w.status(first[0]!.taskId, "TASK_RUNNING");
    const scale = w.put(app({ id: "web", instances: 4 }));
    expect(() => w.put(app({ id: "web", instances: 2 }))).toThrow(ConflictError);
    try {
      w.put(app({ id: "web", instances: 2 }));
    } catch (err) {
      expect((err as ConflictError).deploymentIds).toEqual([scale.result.deploymentId]);
    }
    const rollback = w.core.cancelDeployment(scale.result.deploymentId, {}, w.now());
    expect(events(rollback.effects, "deployment_failed")).toHaveLength(1);
    expect(w.core.app("/web")!.app.instances).toBe(1);
    expect(w.core.queueCount("/web")).toBe(0);
  });

  it("calls a config change a restart and a change of instances alone a scale, with or without running instances, in a dry run as in the deployment", () => {
    const w = world();
    w.put(app({ id: "idle", instances: 0 }));
    /** The actions of the dry run, then those of the deployment (none once it ended at once). */
    const action = (a: NormalizedApp) => {
      const planned = w.core.planSteps([{ app: a }]).flatMap((s) => s.actions.map((x) => x.action));
      const deployment = w.core.deployment(w.put(a, { force: true }).result.deploymentId);
      const steps = deployment ? (w.core.deploymentJson(deployment).steps as Array<{ actions: Array<{ action: string }> }>) : [];
      return { planned, deployed: steps.flatMap((s) => s.actions.map((x) => x.action)) };
    };
    // Marathon: a changed definition is RestartApplication; only a changed `instances` is ScaleApplication.
    expect(action(app({ id: "idle", instances: 0, cmd: "sleep 2" }))).toEqual({ planned: ["RestartApplication"], deployed: [] });
    expect(action(app({ id: "idle", instances: 2, cmd: "sleep 3" }))).toEqual({ planned: ["RestartApplication"], deployed: ["RestartApplication"] });
    expect(action(app({ id: "idle", instances: 3, cmd: "sleep 3" }))).toEqual({ planned: ["ScaleApplication"], deployed: ["ScaleApplication"] });
    // The restart with nothing to replace starts the instances as a scale would.
    const tasks = launches(w.offers(offer()));
    expect(tasks).toHaveLength(3);
    for (const t of tasks) w.status(t.taskId, "TASK_RUNNING");
    expect(w.core.deploymentList()).toEqual([]);
  });

  it("deletes an app: kills all, then forgets it", () => {
    const w = world();
    w.put(app({ id: "web", instances: 2 }));
    const tasks = launches(w.offers(offer()));
    const del = w.core.deleteApp("/web", { force: true }, w.now());
    expect(kills(del.effects).sort()).toEqual(tasks.map((t) => t.taskId).sort());
    w.status(tasks[0]!.taskId, "TASK_KILLED");
    const last = w.status(tasks[1]!.taskId, "TASK_KILLED");
    expect(last).toContainEqual({ type: "deleteApp", appId: "/web" });
    expect(w.core.app("/web")).toBeUndefined();
  });
});

describe("multi-app deployments", () => {
  it("deploys apps in dependency order, one step after the other", () => {
    const w = world();
    const db = app({ id: "/g/db", instances: 1 });
    const web = app({ id: "/g/web", instances: 2, dependencies: ["/g/db"] });
    const out = w.core.deploy([{ app: web }, { app: db }], {}, w.now());
    const deployment = w.core.deployment(out.result.deploymentId)!;
    expect(deployment.steps).toEqual([["/g/db"], ["/g/web"]]);
    expect(w.core.deploymentJson(deployment)).toMatchObject({ currentStep: 1, totalSteps: 2, affectedApps: ["/g/db", "/g/web"] });
    expect(w.core.queueCount("/g/web")).toBe(0); // waits for its step
    const first = launches(w.offers(offer()));
    expect(first.map((t) => t.name)).toEqual(["g_db"]);
    const next = w.status(first[0]!.taskId, "TASK_RUNNING");
    expect(events(next, "deployment_step_success")).toHaveLength(1);
    // As Marathon, each step that starts is announced: deployment_info with that step.
    expect(events(next, "deployment_info").map((e) => e.currentStep)).toEqual([{ actions: [{ action: "StartApplication", app: "/g/web" }] }]);
    expect(next.findIndex((e) => e.type === "event" && e.event.eventType === "deployment_info")).toBeGreaterThan(next.findIndex((e) => e.type === "event" && e.event.eventType === "deployment_step_success"));
    expect(w.core.queueCount("/g/web")).toBe(2);
    const second = launches(w.offers(offer()));
    expect(second.map((t) => t.name)).toEqual(["g_web", "g_web"]);
    w.status(second[0]!.taskId, "TASK_RUNNING");
    expect(events(w.status(second[1]!.taskId, "TASK_RUNNING"), "deployment_success").map((e) => e.id)).toEqual([out.result.deploymentId]);
    // Both apps are locked while it runs; an empty deployment ends at once.
    const empty = w.core.deploy([], {}, w.now());
    expect(events(empty.effects, "deployment_success")).toHaveLength(1);
  });

  it("leaves an app the write does not change alone, as Marathon's plan does: no action, no new version, no lock", () => {
    const w = world();
    const a = app({ id: "/g/a", instances: 1 });
    const b = app({ id: "/g/b", instances: 1 });
    w.core.deploy([{ app: a }, { app: b }], {}, w.now());
    for (const t of launches(w.offers(offer()))) w.status(t.taskId, "TASK_RUNNING");
    expect(w.core.deploymentList()).toEqual([]);
    // /g/a scales up and cannot finish (no offers come).
    w.advance(1_000);
    const a3 = app({ id: "/g/a", instances: 3 });
    const scale = w.core.deploy([{ app: a3 }], {}, w.now());
    const aVersions = w.core.app("/g/a")!.versions.length;
    // A write of the whole group that changes only /g/b: /g/a is given as it now is.
    w.advance(1_000);
    const b2 = app({ id: "/g/b", instances: 1, cmd: "sleep 2" });
    expect(w.core.planSteps([{ app: a3 }, { app: b2 }])).toEqual([{ actions: [{ action: "RestartApplication", app: "/g/b" }] }]);
    const write = w.core.deploy([{ app: a3 }, { app: b2 }], {}, w.now());
    const deployment = w.core.deployment(write.result.deploymentId)!;
    expect(w.core.deploymentJson(deployment)).toMatchObject({ affectedApps: ["/g/b"], steps: [{ actions: [{ action: "RestartApplication", app: "/g/b" }] }] });
    // /g/a keeps its version and its own deployment, which goes on.
    expect(w.core.app("/g/a")!.versions).toHaveLength(aVersions);
    expect(w.core.deploymentOf("/g/a")?.id).toBe(scale.result.deploymentId);
    expect(w.core.queueCount("/g/a")).toBe(2);
  });

  it("rolls back a removal that already finished: the app comes back, is deployed and is in the current root version", () => {
    const w = world();
    const a = app({ id: "/g/a", instances: 1 });
    // A second app keeps the removal's deployment open after /g/a is gone.
    w.core.deploy([{ app: a }], {}, w.now());
    const [first] = launches(w.offers(offer()));
    w.status(first!.taskId, "TASK_RUNNING");
    w.advance(1_000);
    const removal = w.core.deploy([{ remove: "/g/a" }, { app: app({ id: "/g/b", instances: 1 }) }], {}, w.now());
    w.status(first!.taskId, "TASK_KILLED");
    expect(w.core.app("/g/a")).toBeUndefined();
    w.advance(1_000);
    const rollback = w.core.cancelDeployment(removal.result.deploymentId, {}, w.now());
    const back = w.core.deployment(rollback.result!.deploymentId)!;
    expect(w.core.deploymentJson(back).affectedApps).toEqual(["/g/a", "/g/b"]);
    expect(w.core.rootAt(w.core.rootVersions()[0]!)!.apps.has("/g/a")).toBe(true);
    const [again] = launches(w.offers(offer()));
    expect(again?.name).toBe("g_a");
  });

  it("rolls a multi-app deployment back: created apps are removed", () => {
    const w = world();
    const out = w.core.deploy([{ app: app({ id: "/g/a", instances: 1 }) }, { app: app({ id: "/g/b", instances: 1 }) }], {}, w.now());
    const tasks = launches(w.offers(offer()));
    expect(() => w.put(app({ id: "/g/b", instances: 3 }))).toThrow(ConflictError);
    const rollback = w.core.cancelDeployment(out.result.deploymentId, {}, w.now());
    expect(kills(rollback.effects).sort()).toEqual(tasks.map((t) => t.taskId).sort());
    for (const t of tasks) w.status(t.taskId, "TASK_KILLED");
    expect(w.core.appList()).toEqual([]);
    expect(w.core.deploymentList()).toEqual([]);
  });

  it("rolls back the group records a deployment wrote: created groups go, changed dependencies come back", () => {
    const w = world();
    // A group /g with its own record (dependencies), and a group /g/keep below it from before.
    w.core.deploy([{ app: app({ id: "/db", instances: 1 }) }], {}, w.now(), { put: [{ id: "/g", dependencies: ["/db"] }, { id: "/g/keep", dependencies: [] }] });
    for (const t of launches(w.offers(offer()))) w.status(t.taskId, "TASK_RUNNING");
    expect(w.core.deploymentList()).toEqual([]);
    // One write changes /g's dependencies, creates /g/new, and starts an app that cannot launch yet.
    w.advance(1_000);
    const out = w.core.deploy([{ app: app({ id: "/g/web", instances: 1 }) }], {}, w.now(), { put: [{ id: "/g", dependencies: [] }, { id: "/g/new", dependencies: ["/db"] }] });
    expect(w.core.groupRecord("/g")!.dependencies).toEqual([]);
    w.advance(1_000);
    w.core.cancelDeployment(out.result.deploymentId, {}, w.now());
    expect(w.core.groupRecord("/g")!.dependencies).toEqual(["/db"]);
    expect(w.core.groupRecord("/g/new")).toBeUndefined();
    expect(w.core.groupRecord("/g/keep")).toBeDefined();
    expect(w.core.appList().map((a) => a.app.id)).toEqual(["/db"]);

    // A write that removed a group: the rollback brings its record back.
    w.advance(1_000);
    const removal = w.core.deploy([{ app: app({ id: "/g/web2", instances: 1 }) }], {}, w.now(), { remove: ["/g/keep"] });
    expect(w.core.groupRecord("/g/keep")).toBeUndefined();
    w.advance(1_000);
    w.core.cancelDeployment(removal.result.deploymentId, {}, w.now());
    expect(w.core.groupRecord("/g/keep")).toEqual(expect.objectContaining({ id: "/g/keep", dependencies: [] }));
  });
});

/** Drives a rolling restart to its end; checks the bounds at every step. */
function rollout(n: number, minimumHealthCapacity: number, maximumOverCapacity: number, health: boolean, seed: number) {
  const w = world();
  const rng = new SeededRng(seed);
  const spec = { id: "roll", instances: n, upgradeStrategy: { minimumHealthCapacity, maximumOverCapacity }, ...(health ? { healthChecks: [{ protocol: "COMMAND", command: { value: "true" } }] } : {}) };
  w.put(app(spec));
  while (w.core.queueCount("/roll") > 0) {
    for (const t of launches(w.offers(offer("h", "cpus:100;mem:100000;ports:[1-60000]")))) w.status(t.taskId, "TASK_RUNNING", health ? { healthy: true } : {});
  }
  expect(w.core.deploymentList()).toHaveLength(0);
  const { result } = w.put(app({ ...spec, cmd: "sleep 2000" }));
  const minHealthy = Math.ceil(n * minimumHealthCapacity);
  let maxCapacity = Math.floor(n * (1 + maximumOverCapacity));
  if (minHealthy === maxCapacity) maxCapacity++;
  let peak = 0;
  let lowest = Infinity;
  const pending = new Set<string>();
  for (let step = 0; step < 10_000 && w.core.deployment(result.deploymentId); step++) {
    const list = w.core.instancesOf("/roll");
    peak = Math.max(peak, list.length);
    lowest = Math.min(lowest, list.filter((i) => w.core.isReady(i)).length);
    // The world does one random thing: an offer, a launched task turning healthy, a kill completing.
    const killing = list.filter((i) => i.goal !== "running" && i.state === "killing");
    const starting = list.filter((i) => i.goal === "running" && i.state !== "running");
    const choice = rng.int(3);
    if (choice === 0) launches(w.offers(offer("h", "cpus:100;mem:100000;ports:[1-60000]"))).forEach((t) => pending.add(t.taskId));
    else if (choice === 1 && starting.length > 0) w.status(starting[rng.int(starting.length)]!.id, "TASK_RUNNING", health ? { healthy: true } : {});
    else if (choice === 2 && killing.length > 0) w.status(killing[rng.int(killing.length)]!.id, "TASK_KILLED");
  }
  expect(w.core.deployment(result.deploymentId)).toBeUndefined();
  const final = w.core.instancesOf("/roll");
  expect(final).toHaveLength(n);
  expect(final.every((i) => i.configVersion === w.core.app("/roll")!.versionInfo.lastConfigChangeAt)).toBe(true);
  return { peak, lowest, minHealthy, maxCapacity };
}

describe("rolling restart", () => {
  it.each([
    [10, 1, 1, 20],
    [10, 1, 0, 11],
    [10, 0.5, 0, 10],
    [10, 0, 0, 10],
  ])("(%d, %d, %d) peaks at %d instances", (n, mhc, moc, peak) => {
    const r = rollout(n, mhc, moc, false, 1);
    expect(r.peak).toBe(peak);
    expect(r.lowest).toBeGreaterThanOrEqual(Math.min(r.minHealthy, n));
  });

  it("keeps minHealthy ready and maxCapacity alive under any order of events", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.constantFrom(0, 0.25, 0.5, 0.75, 1), fc.constantFrom(0, 0.25, 0.5, 1), fc.boolean(), fc.integer(), (n, mhc, moc, health, seed) => {
        const r = rollout(n, mhc, moc, health, seed);
        expect(r.peak).toBeLessThanOrEqual(r.maxCapacity);
        expect(r.lowest).toBeGreaterThanOrEqual(Math.min(r.minHealthy, n));
      }),
      { numRuns: 150 },
    );
  });
});

describe("a forced deployment during a rolling restart", () => {
  it("keeps minimumHealthCapacity: new instances already running count as healthy, not as leave to kill old ones at once (Marathon counts every healthy instance, old and new, when it plans a restart)", () => {
    const w = world();
    const strategy = { minimumHealthCapacity: 1, maximumOverCapacity: 0 };
    const spec = (cmd: string) => app({ id: "web", instances: 4, cmd, upgradeStrategy: strategy });
    const runAll = () => {
      for (const t of launches(w.offers(offer()))) w.status(t.taskId, "TASK_RUNNING");
    };
    w.put(spec("sleep 1"));
    runAll();
    expect(w.core.deploymentList()).toHaveLength(0);
    // Restart to a new config; replace two of the four, one at a time.
    w.advance(1_000);
    w.put(spec("sleep 2"));
    for (let replaced = 0; replaced < 2; replaced++) {
      const [fresh] = launches(w.offers(offer()));
      const [old] = kills(w.status(fresh!.taskId, "TASK_RUNNING"));
      w.status(old!, "TASK_KILLED");
    }
    const config = () => w.core.app("/web")!.versionInfo.lastConfigChangeAt;
    const byConfig = () => {
      const list = w.core.instancesOf("/web").filter((i) => i.goal === "running");
      return { old: list.filter((i) => i.configVersion !== config()).length, fresh: list.filter((i) => i.configVersion === config()).length };
    };
    expect(byConfig()).toEqual({ old: 2, fresh: 2 });
    // The restart is taken over by a forced write of the same config: 4 ready instances must stay.
    w.advance(1_000);
    const forced = w.put(spec("sleep 2"), { force: true });
    expect(kills(forced.effects)).toEqual([]);
    expect(byConfig()).toEqual({ old: 2, fresh: 2 });
    // As at the start of a restart with (1, 0): one instance over, then one old one per new one ready.
    const [third] = launches(w.offers(offer()));
    expect(third).toBeDefined();
    const [old3] = kills(w.status(third!.taskId, "TASK_RUNNING"));
    expect(old3).toBeDefined();
    w.status(old3!, "TASK_KILLED");
    const [fourth] = launches(w.offers(offer()));
    const [old4] = kills(w.status(fourth!.taskId, "TASK_RUNNING"));
    expect(events(w.status(old4!, "TASK_KILLED"), "deployment_success").map((e) => e.id)).toEqual([forced.result.deploymentId]);
    expect(byConfig()).toEqual({ old: 0, fresh: 4 });
  });
});

describe("recovery", () => {
  it("resumes from persisted state without launching duplicates", () => {
    const w = world();
    w.put(app({ id: "web", instances: 3, constraints: [["hostname", "UNIQUE"]] }));
    const tasks = [...launches(w.offers(offer("h1"))), ...launches(w.offers(offer("h2")))];
    for (const t of tasks) w.status(t.taskId, "TASK_RUNNING");
    // Replay the persisted writes into a fresh core, as the shell's store would.
    const apps = new Map<string, unknown>();
    const deployments = new Map<string, unknown>();
    const instances = new Map<string, unknown>();
    for (const e of w.all) {
      if (e.type === "putApp") apps.set(e.record.app.id, structuredClone(e.record));
      if (e.type === "deleteApp") apps.delete(e.appId);
      if (e.type === "putDeployment") deployments.set(e.deployment.id, structuredClone(e.deployment));
      if (e.type === "deleteDeployment") deployments.delete(e.id);
      if (e.type === "putInstance") instances.set(e.instance.id, structuredClone(e.instance));
      if (e.type === "deleteInstance") instances.delete(e.id);
    }
    const fresh = new MarathonCore(new SeededRng(8));
    const resumed = fresh.recover({ apps: [...apps.values()] as never, deployments: [...deployments.values()] as never, instances: [...instances.values()] as never }, w.now());
    expect(resumed.some((e) => e.type === "revive")).toBe(true);
    expect(fresh.instancesOf("/web").map((i) => i.id).sort()).toEqual(tasks.map((t) => t.taskId).sort());
    expect(fresh.queueCount("/web")).toBe(1);
    expect(launches(fresh.offers([offer("h1")], w.now()))).toHaveLength(0);
    const last = launches(fresh.offers([offer("h3")], w.now()));
    expect(last).toHaveLength(1);
    expect(events(fresh.statusUpdate({ taskId: last[0]!.taskId, state: "TASK_RUNNING", agentId: "agent-h3" }, w.now()), "deployment_success")).toHaveLength(1);
  });
});

describe("any sequence of inputs", () => {
  type Op =
    | { op: "put"; id: string; instances: number; cmd: string; mhc: number; moc: number; force: boolean }
    | { op: "delete"; id: string; force: boolean }
    | { op: "kill"; pick: number; scale: boolean; wipe: boolean }
    | { op: "status"; pick: number; state: string }
    | { op: "offer"; host: string }
    | { op: "tick"; ms: number }
    | { op: "cancel"; pick: number; force: boolean }
    | { op: "group"; instances: number; force: boolean };
  const ids = fc.constantFrom("/a", "/b", "/g/c");
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ op: fc.constant("put" as const), id: ids, instances: fc.integer({ min: 0, max: 4 }), cmd: fc.constantFrom("sleep 1", "sleep 2"), mhc: fc.constantFrom(0, 0.5, 1), moc: fc.constantFrom(0, 0.5, 1), force: fc.boolean() }),
    fc.record({ op: fc.constant("delete" as const), id: ids, force: fc.boolean() }),
    fc.record({ op: fc.constant("kill" as const), pick: fc.nat(), scale: fc.boolean(), wipe: fc.boolean() }),
    fc.record({ op: fc.constant("status" as const), pick: fc.nat(), state: fc.constantFrom("TASK_STARTING", "TASK_RUNNING", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_FINISHED", "TASK_UNREACHABLE", "TASK_GONE") }),
    fc.record({ op: fc.constant("offer" as const), host: fc.constantFrom("h1", "h2", "h3") }),
    fc.record({ op: fc.constant("tick" as const), ms: fc.integer({ min: 0, max: 400_000 }) }),
    fc.record({ op: fc.constant("cancel" as const), pick: fc.nat(), force: fc.boolean() }),
    fc.record({ op: fc.constant("group" as const), instances: fc.integer({ min: 0, max: 3 }), force: fc.boolean() }),
  );
  const EXPECTED = new Set(["ConflictError", "NotFoundError", "RefusedError"]);

  it("never throws anything but API refusals, keeps its invariants, and converges once the world settles", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), fc.integer(), (ops, seed) => {
        const core = new MarathonCore(new SeededRng(seed), { taskLaunchTimeoutMs: 300_000 });
        let now = 1_000_000;
        const instances = () => core.allInstances();
        const pick = <T,>(list: T[], n: number): T | undefined => (list.length === 0 ? undefined : list[n % list.length]);
        for (const o of ops) {
          try {
            switch (o.op) {
              case "put":
                core.putApp(app({ id: o.id, instances: o.instances, cmd: o.cmd, upgradeStrategy: { minimumHealthCapacity: o.mhc, maximumOverCapacity: o.moc } }), { force: o.force }, now);
                break;
              case "delete":
                core.deleteApp(o.id, { force: o.force }, now);
                break;
              case "kill": {
                const i = pick(instances(), o.pick);
                if (i) core.killInstances([i.id], { scale: o.scale, wipe: o.wipe }, now);
                break;
              }
              case "status": {
                const i = pick(instances(), o.pick);
                if (i) core.statusUpdate({ taskId: i.id, state: o.state, agentId: i.agentId }, now);
                break;
              }
              case "offer":
                core.offers([offer(o.host)], now);
                break;
              case "tick":
                now += o.ms;
                core.tick(now);
                break;
              case "cancel": {
                const d = pick(core.deploymentList(), o.pick);
                if (d) core.cancelDeployment(d.id, { force: o.force }, now);
                break;
              }
              case "group":
                core.deploy([{ app: app({ id: "/g/c", instances: o.instances }) }, { app: app({ id: "/g/d", instances: 1, dependencies: ["/g/c"] }) }], { force: o.force }, now);
                break;
            }
          } catch (err) {
            if (!EXPECTED.has((err as Error).name)) throw err;
          }
          for (const i of instances()) expect(core.app(i.appId)).toBeDefined();
          for (const r of core.appList()) expect(core.queueCount(r.app.id)).toBeGreaterThanOrEqual(0);
        }
        // The world settles: tasks start, kills complete, offers come, time passes.
        for (let round = 0; round < 200; round++) {
          core.offers([offer("h1"), offer("h2")], now);
          for (const i of instances()) {
            if (i.goal !== "running") core.statusUpdate({ taskId: i.id, state: "TASK_KILLED", agentId: i.agentId }, now);
            else if (i.state !== "running") core.statusUpdate({ taskId: i.id, state: "TASK_RUNNING", agentId: i.agentId }, now);
          }
          const settled = core.deploymentList().length === 0 && core.appList().every((r) => core.instancesOf(r.app.id).length === r.app.instances && core.instancesOf(r.app.id).every((i) => i.state === "running" && i.goal === "running"));
          if (settled) return;
          now += 301_000;
          core.tick(now);
        }
        throw new Error(`did not converge: ${JSON.stringify(core.deploymentList().map((d) => core.deploymentJson(d)))} ${JSON.stringify(core.appList().map((r) => [r.app.id, r.app.instances, core.instancesOf(r.app.id).map((i) => [i.state, i.goal])]))}`);
      }),
      { numRuns: 300 },
    );
  });
});

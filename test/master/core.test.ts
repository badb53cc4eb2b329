import { describe, expect, it } from "vitest";
import { Resources } from "../../sdk/resources.ts";
import { SeededRng } from "../../sdk/rng.ts";
import { resourcesFromWire, resourcesToWire } from "../../sdk/wire/resources.ts";
import type { FrameworkInfo, Offer, SchedulerCall, SchedulerCallBody, TaskInfo, TaskState, TaskStatus } from "../../sdk/wire/types.ts";
import { createMasterCore, type MasterCore, type MasterEffect, type MasterConfig } from "../../master/core.ts";

/** Drives a master core by hand: a tiny cluster with a virtual clock. */
class Bench {
  readonly core: MasterCore;
  now = 0;
  readonly effects: MasterEffect[] = [];
  private callSeq = 0;
  /** The instance that subscribed each framework last. */
  private readonly subscribers = new Map<string, string>();

  constructor(config: Partial<MasterConfig> = {}) {
    this.core = createMasterCore({ masterId: "m1", agentPingIntervalMs: 60_000, maxMissedPings: 3, frameworkHeartbeatIntervalMs: 1000, ...config }, new SeededRng(7));
  }

  run(effects: MasterEffect[]): MasterEffect[] {
    this.effects.push(...effects);
    return effects;
  }

  tick(toMs: number): MasterEffect[] {
    this.now = toMs;
    return this.run(this.core.handle({ type: "tick" }, this.now));
  }

  addAgent(instance: string, resources = "cpus:4;mem:4096;ports:[31000-31010]", hostname = `${instance}.local`): string {
    const effects = this.run(
      this.core.handle(
        {
          type: "agent-message",
          senderId: instance,
          callId: `${instance}-reg`,
          message: { kind: "register", register: { version: "test", agentInfo: { id: "", hostname, resources: resourcesToWire(Resources.parse(resources)), attributes: [], httpEndpoint: "" } } },
        },
        this.now,
      ),
    );
    const reply = effects.find((e) => e.type === "reply");
    if (reply?.type !== "reply" || reply.payload.payload !== "masterToAgent" || reply.payload.masterToAgent.kind !== "registered") throw new Error("no registration");
    const agentId = reply.payload.masterToAgent.registered.agentId;
    this.pong(agentId);
    return agentId;
  }

  pong(agentId: string): MasterEffect[] {
    return this.run(this.core.handle({ type: "agent-message", senderId: agentId, callId: "", message: { kind: "pong", pong: { seq: 0 } } }, this.now));
  }

  /** Calls as `senderId`, by default the instance that subscribed the framework last. */
  call(frameworkId: string, body: SchedulerCallBody, senderId = this.subscribers.get(frameworkId) ?? "driver"): MasterEffect[] {
    const effects = this.run(this.core.handle({ type: "scheduler-call", senderId, callId: `c${++this.callSeq}`, call: { frameworkId, ...body } as SchedulerCall }, this.now));
    const reply = effects.find((e) => e.type === "reply");
    if (reply?.type === "reply" && reply.payload.payload === "schedulerEvent" && reply.payload.schedulerEvent.kind === "subscribed") {
      this.subscribers.set(reply.payload.schedulerEvent.subscribed.frameworkId, senderId);
    }
    return effects;
  }

  subscribe(name: string, extra: Partial<FrameworkInfo> = {}, senderId = `${name}-driver`): string {
    const info: FrameworkInfo = { id: "", name, roles: ["web"], principal: "", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: true, hostname: "", ...extra };
    const effects = this.call(extra.id ?? "", { kind: "subscribe", subscribe: { frameworkInfo: info } }, senderId);
    const reply = effects.find((e) => e.type === "reply");
    if (reply?.type !== "reply" || reply.payload.payload !== "schedulerEvent" || reply.payload.schedulerEvent.kind !== "subscribed") {
      throw new Error(`subscribe failed: ${JSON.stringify(reply)}`);
    }
    const frameworkId = reply.payload.schedulerEvent.subscribed.frameworkId;
    this.call(frameworkId, { kind: "heartbeat", heartbeat: {} }, senderId); // ready for offers
    return frameworkId;
  }

  /** A status update from an agent; `latestState` is its stream's newest state (absent: an agent too old to say). */
  agentMessage(agentId: string, status: Partial<TaskStatus> & { taskId: string; state: TaskState }, frameworkId: string, uuid = new Uint8Array([1, 2, 3]), latestState?: TaskState): MasterEffect[] {
    const full: TaskStatus = { message: "", source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId, frameworkId, uuid, timestamp: this.now / 1000, ...status };
    const statusUpdate = { frameworkId, status: full, ...(latestState === undefined ? {} : { latestState }) };
    return this.run(this.core.handle({ type: "agent-message", senderId: agentId, callId: "", message: { kind: "statusUpdate", statusUpdate } }, this.now));
  }

  /** The task as `/state` shows it, with where it is listed. */
  taskInState(frameworkId: string, taskId: string): { list: "tasks" | "completedTasks"; state: string } | undefined {
    const framework = this.core.state().frameworks.find((f) => f.id === frameworkId);
    for (const list of ["tasks", "completedTasks"] as const) {
      const found = (framework?.[list] as Array<{ id: string; state: string }> | undefined)?.find((t) => t.id === taskId);
      if (found) return { list, state: found.state };
    }
    return undefined;
  }

  offersFor(frameworkId: string, effects: MasterEffect[] = this.effects): Offer[] {
    return effects.flatMap((e) => (e.type === "to-framework" && e.frameworkId === frameworkId && e.event.kind === "offers" ? e.event.offers.offers : []));
  }

  updatesFor(frameworkId: string, effects: MasterEffect[] = this.effects): TaskStatus[] {
    return effects.flatMap((e) => (e.type === "to-framework" && e.frameworkId === frameworkId && e.event.kind === "update" && e.event.update.status ? [e.event.update.status] : []));
  }

  replyOf(effects: MasterEffect[]) {
    const reply = effects.find((e) => e.type === "reply");
    return reply?.type === "reply" && reply.payload.payload === "callResponse" ? reply.payload.callResponse : undefined;
  }
}

function task(taskId: string, resources: string, command = "sleep 1"): TaskInfo {
  return { taskId, name: taskId, agentId: "", resources: resourcesToWire(Resources.parse(resources)), command: { value: command, arguments: [], shell: true, environment: {}, user: "" }, labels: {} };
}

describe("master core", () => {
  it("offers a listening agent to a ready framework and launches a valid task", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const agentId = bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    expect(offer).toBeDefined();
    expect(resourcesFromWire(offer!.resources).toString()).toBe("cpus:4;mem:4096;ports:[31000-31010]");
    const effects = bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1;mem:128")] } }] } });
    expect(bench.replyOf(effects)?.ok).toBe(true);
    const run = effects.find((e) => e.type === "to-agent" && e.message.kind === "runTask");
    expect(run).toMatchObject({ agentId, message: { runTask: { task: { taskId: "t1", agentId } } } });
    // The rest was declined with the default 5 s filter: no re-offer at the next run...
    expect(bench.offersFor(frameworkId, bench.tick(1000))).toEqual([]);
    // ...but after it, the remainder comes back (the framework keeps heartbeating meanwhile).
    bench.now = 5000;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    const later = bench.offersFor(frameworkId, bench.tick(6000));
    expect(later.map((o) => resourcesFromWire(o.resources).toString())).toEqual(["cpus:3;mem:3968;ports:[31000-31010]"]);
    // RUNNING then FINISHED are forwarded; FINISHED gives the resources back.
    expect(bench.updatesFor(frameworkId, bench.agentMessage(agentId, { taskId: "t1", state: "TASK_RUNNING" }, frameworkId)).map((s) => s.state)).toEqual(["TASK_RUNNING"]);
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_FINISHED", exitCode: 0 }, frameworkId, new Uint8Array([9]));
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(3); // only the outstanding offer
  });

  it("does not offer an agent before its first pong, nor a framework before its first call", () => {
    const bench = new Bench();
    const info: FrameworkInfo = { id: "", name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: true, hostname: "" };
    const sub = bench.call("", { kind: "subscribe", subscribe: { frameworkInfo: info } });
    const reply = sub.find((e) => e.type === "reply");
    const frameworkId = reply?.type === "reply" && reply.payload.payload === "schedulerEvent" && reply.payload.schedulerEvent.kind === "subscribed" ? reply.payload.schedulerEvent.subscribed.frameworkId : "";
    const reg = bench.core.handle({ type: "agent-message", senderId: "inst", callId: "x", message: { kind: "register", register: { version: "", agentInfo: { id: "", hostname: "h", resources: resourcesToWire(Resources.parse("cpus:1;mem:256")), attributes: [], httpEndpoint: "" } } } }, 0);
    expect(bench.offersFor(frameworkId, [...sub, ...reg, ...bench.tick(0)])).toEqual([]);
    const agentReply = reg.find((e) => e.type === "reply");
    const agentId = agentReply?.type === "reply" && agentReply.payload.payload === "masterToAgent" && agentReply.payload.masterToAgent.kind === "registered" ? agentReply.payload.masterToAgent.registered.agentId : "";
    expect(bench.offersFor(frameworkId, bench.pong(agentId))).toEqual([]); // framework not ready yet
    expect(bench.offersFor(frameworkId, bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} }))).toHaveLength(1);
  });

  it("answers invalid launches with TASK_ERROR and bad offers with TASK_DROPPED", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    bench.addAgent("a1", "cpus:2;mem:1024");
    const [offer] = bench.offersFor(frameworkId);
    const effects = bench.call(frameworkId, {
      kind: "accept",
      accept: {
        offerIds: [offer!.id],
        operations: [{ kind: "launch", launch: { taskInfos: [task("big", "cpus:3;mem:10"), task("bad/id", "cpus:1"), task("ok", "cpus:1;mem:64"), task("ok", "cpus:0.5")] } }],
      },
    });
    const updates = bench.updatesFor(frameworkId, effects);
    expect(updates.map((u) => [u.taskId, u.state, u.reason])).toEqual([
      ["big", "TASK_ERROR", "REASON_TASK_INVALID"],
      ["bad/id", "TASK_ERROR", "REASON_TASK_INVALID"],
      ["ok", "TASK_ERROR", "REASON_TASK_INVALID"], // the second "ok": duplicate id
    ]);
    expect(updates[0]!.message).toContain("only cpus:2;mem:1024 is left");
    expect(effects.filter((e) => e.type === "to-agent" && e.message.kind === "runTask")).toHaveLength(1);
    // The offer is used up: accepting it again drops the task.
    const again = bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("late", "cpus:0.1")] } }] } });
    expect(bench.updatesFor(frameworkId, again).map((u) => [u.state, u.reason])).toEqual([["TASK_DROPPED", "REASON_INVALID_OFFERS"]]);
    // Task ids follow the agents' sandbox-directory rule: one an agent would refuse (longer than
    // 200 characters) is a TASK_ERROR here, and one it takes ('@', '+') is launched.
    const fresh = new Bench();
    const freshId = fresh.subscribe("fw");
    fresh.addAgent("a1", "cpus:2;mem:1024");
    const [second] = fresh.offersFor(freshId);
    const ids = fresh.call(freshId, { kind: "accept", accept: { offerIds: [second!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("x".repeat(201), "cpus:0.1"), task("me@host+1", "cpus:0.1;mem:32")] } }] } });
    const idUpdates = fresh.updatesFor(freshId, ids);
    expect(idUpdates.map((u) => [u.taskId.length, u.state])).toEqual([[201, "TASK_ERROR"]]);
    expect(idUpdates[0]!.message).toContain("must be at most 200 characters");
    expect(ids.filter((e) => e.type === "to-agent" && e.message.kind === "runTask").map((e) => (e as { message: { runTask: { task: { taskId: string } } } }).message.runTask.task.taskId)).toEqual(["me@host+1"]);
  });

  it("sends the agent each task with the role of its offers, and fails a task that names another", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw", { roles: ["web", "batch"] });
    bench.addAgent("a1", "cpus:2;mem:1024");
    const [offer] = bench.offersFor(frameworkId);
    const other = offer!.role === "web" ? "batch" : "web";
    const effects = bench.call(frameworkId, {
      kind: "accept",
      accept: {
        offerIds: [offer!.id],
        operations: [{ kind: "launch", launch: { taskInfos: [task("plain", "cpus:0.5"), { ...task("same", "cpus:0.5"), allocationRole: offer!.role }, { ...task("other", "cpus:0.5"), allocationRole: other }] } }],
      },
    });
    const runs = effects.flatMap((e) => (e.type === "to-agent" && e.message.kind === "runTask" ? [e.message.runTask.task!] : []));
    expect(runs.map((t) => [t.taskId, t.allocationRole])).toEqual([
      ["plain", offer!.role],
      ["same", offer!.role],
    ]);
    const updates = bench.updatesFor(frameworkId, effects);
    expect(updates.map((u) => [u.taskId, u.state, u.reason])).toEqual([["other", "TASK_ERROR", "REASON_TASK_INVALID"]]);
    expect(updates[0]!.message).toBe(`task.allocationRole '${other}' differs from the offers' role '${offer!.role}'`);
  });

  it("answers an ACCEPT that names one offer twice with TASK_DROPPED and gives the offer back once", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    bench.addAgent("a1", "cpus:2;mem:1024");
    const [offer] = bench.offersFor(frameworkId);
    const effects = bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id, offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }] } });
    expect(bench.replyOf(effects)).toEqual({ ok: true, errorCode: "", message: "" });
    expect(bench.updatesFor(frameworkId, effects).map((u) => [u.taskId, u.state, u.reason, u.message])).toEqual([["t1", "TASK_DROPPED", "REASON_INVALID_OFFERS", "accept.offerIds: must be distinct"]]);
    expect(effects.filter((e) => e.type === "to-agent")).toEqual([]);
    // The offer's resources are back, unfiltered: offered again at the next allocation.
    expect(bench.core.allocator.frameworkAllocation(frameworkId).isEmpty()).toBe(true);
    expect(bench.offersFor(frameworkId, bench.tick(1000)).map((o) => resourcesFromWire(o.resources).toString())).toEqual(["cpus:2;mem:1024"]);
  });

  it("takes a negative refuse_seconds as the default filter, as Mesos does, not as no filter", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    bench.addAgent("a1", "cpus:2;mem:1024");
    const [offer] = bench.offersFor(frameworkId);
    const effects = bench.call(frameworkId, { kind: "decline", decline: { offerIds: [offer!.id], filters: { refuseSeconds: -1 } } });
    expect(bench.replyOf(effects)?.ok).toBe(true);
    // Filtered for the default 5 s: not offered again at the next allocation runs...
    expect(bench.offersFor(frameworkId, bench.tick(1000))).toEqual([]);
    bench.now = 4000;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    expect(bench.offersFor(frameworkId, bench.tick(4000))).toEqual([]);
    // ...and offered again after them.
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    expect(bench.offersFor(frameworkId, bench.tick(6000))).toHaveLength(1);
  });

  it("answers a redelivered call without applying it twice", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    const call = { type: "scheduler-call" as const, senderId: "fw-driver", callId: "same", call: { frameworkId, kind: "accept" as const, accept: { offerIds: [offer!.id], operations: [{ kind: "launch" as const, launch: { taskInfos: [task("t1", "cpus:1")] } }] } } };
    const first = bench.core.handle(call, 0);
    const second = bench.core.handle(call, 0);
    expect(first.filter((e) => e.type === "to-agent")).toHaveLength(1);
    expect(second).toEqual([{ type: "reply", payload: { payload: "callResponse", callResponse: { ok: true, errorCode: "", message: "" } } }]);
  });

  it("reconciles as Mesos does, for partition-aware and other frameworks", () => {
    const bench = new Bench({ agentPingIntervalMs: 1000 });
    const aware = bench.subscribe("aware", { partitionAware: true });
    const plain = bench.subscribe("plain", { partitionAware: false, roles: ["other"] });
    const agentId = bench.addAgent("a1");
    bench.addAgent("a2"); // one agent per framework: offers are coarse-grained
    const ask = (frameworkId: string, tasks: Array<{ taskId: string; agentId: string }>) =>
      bench.updatesFor(frameworkId, bench.call(frameworkId, { kind: "reconcile", reconcile: { tasks } })).map((u) => [u.taskId, u.state, u.reason]);
    expect(ask(aware, [{ taskId: "x", agentId }])).toEqual([["x", "TASK_GONE", "REASON_RECONCILIATION"]]);
    expect(ask(aware, [{ taskId: "y", agentId: "nobody" }])).toEqual([["y", "TASK_UNKNOWN", "REASON_RECONCILIATION"]]);
    expect(ask(plain, [{ taskId: "x", agentId }])).toEqual([["x", "TASK_LOST", "REASON_RECONCILIATION"]]);
    // A known task: its latest state, explicitly and implicitly.
    const [offer] = bench.offersFor(aware);
    bench.call(aware, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }] } });
    const taskAgent = offer!.agentId;
    bench.agentMessage(taskAgent, { taskId: "t1", state: "TASK_RUNNING" }, aware);
    expect(ask(aware, [{ taskId: "t1", agentId: taskAgent }])).toEqual([["t1", "TASK_RUNNING", "REASON_RECONCILIATION"]]);
    expect(ask(aware, [])).toEqual([["t1", "TASK_RUNNING", "REASON_RECONCILIATION"]]);
    // The agent goes silent: UNREACHABLE for the partition-aware framework.
    bench.tick(2000);
    bench.call(aware, { kind: "heartbeat", heartbeat: {} });
    bench.call(plain, { kind: "heartbeat", heartbeat: {} });
    const afterLoss = bench.tick(3500);
    expect(bench.updatesFor(aware, afterLoss).map((u) => [u.taskId, u.state])).toEqual([["t1", "TASK_UNREACHABLE"]]);
    expect(ask(aware, [{ taskId: "zz", agentId }])).toEqual([["zz", "TASK_UNREACHABLE", "REASON_RECONCILIATION"]]);
    expect(ask(plain, [{ taskId: "zz", agentId }])).toEqual([["zz", "TASK_LOST", "REASON_RECONCILIATION"]]);
  });

  it("kills an unknown task by answering with reconciliation", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const effects = bench.call(frameworkId, { kind: "kill", kill: { taskId: "ghost", agentId: "" } });
    expect(bench.updatesFor(frameworkId, effects).map((u) => u.state)).toEqual(["TASK_UNKNOWN"]);
  });

  it("keeps tasks across a failover within the timeout and tears down after it", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw", { failoverTimeoutSeconds: 10 }, "first");
    const agentId = bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }] } }, "first");
    // The first driver goes silent; 5 missed heartbeats of 1 s = disconnected after 5 s.
    bench.tick(6000);
    expect(bench.core.state().frameworks[0]!.connected).toBe(false);
    // A new instance re-subscribes with the same id within the failover timeout: the old one is told.
    const sub = bench.call(frameworkId, { kind: "subscribe", subscribe: { frameworkInfo: { id: frameworkId, name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 10, checkpoint: false, partitionAware: true, hostname: "" } } }, "second");
    expect(sub.some((e) => e.type === "to-framework" && e.event.kind === "error" && e.event.error.message === "CORRAL_ERR_FRAMEWORK_FAILED_OVER second")).toBe(true);
    expect(bench.core.state().frameworks[0]!.tasks).toHaveLength(1);
    // It then goes silent too and does not come back: torn down after the failover timeout.
    bench.tick(12_000);
    const teardown = bench.tick(23_000);
    expect(teardown).toContainEqual({ type: "to-agent", agentId, message: { kind: "shutdownFramework", shutdownFramework: { frameworkId } } });
    const refused = bench.call(frameworkId, { kind: "subscribe", subscribe: { frameworkInfo: { id: frameworkId, name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 10, checkpoint: false, partitionAware: true, hostname: "" } } }, "third");
    expect(bench.replyOf(refused)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_REMOVED" });
  });

  it("offers a re-subscribed framework the agents its disconnected instance declined", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw", { failoverTimeoutSeconds: 60 }, "first");
    bench.addAgent("a1", "cpus:2;mem:1024");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "decline", decline: { offerIds: [offer!.id], filters: { refuseSeconds: 3600 } } }, "first");
    // The first instance goes silent and is disconnected (5 missed heartbeats of 1 s).
    bench.tick(6000);
    expect(bench.core.state().frameworks[0]!.connected).toBe(false);
    // A new instance subscribes: Mesos clears the filters of a deactivated framework, so it is offered the agent.
    const since = bench.effects.length;
    bench.call(frameworkId, { kind: "subscribe", subscribe: { frameworkInfo: { id: frameworkId, name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 60, checkpoint: false, partitionAware: true, hostname: "" } } }, "second");
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} }, "second");
    bench.tick(7000);
    const offers = bench.offersFor(frameworkId, bench.effects.slice(since));
    expect(offers.map((o) => resourcesFromWire(o.resources).toString())).toEqual(["cpus:2;mem:1024"]);
  });

  it("refuses the calls of an instance replaced by a failover, which no longer keep the framework alive", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw", { failoverTimeoutSeconds: 10 }, "first");
    const agentId = bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }] } }, "first");
    // A second instance takes over while the first still runs.
    bench.call(frameworkId, { kind: "subscribe", subscribe: { frameworkInfo: { id: frameworkId, name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 10, checkpoint: false, partitionAware: true, hostname: "" } } }, "second");
    const bodies: SchedulerCallBody[] = [
      { kind: "heartbeat", heartbeat: {} },
      { kind: "kill", kill: { taskId: "t1", agentId } },
      { kind: "revive", revive: { roles: [] } },
      { kind: "acknowledge", acknowledge: { agentId, taskId: "t1", uuid: new Uint8Array([1]) } },
      { kind: "reconcile", reconcile: { tasks: [] } },
      { kind: "teardown", teardown: {} },
    ];
    for (const body of bodies) {
      const effects = bench.call(frameworkId, body, "first");
      expect(bench.replyOf(effects), body.kind).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_FAILED_OVER" });
      expect(effects.filter((e) => e.type !== "reply"), body.kind).toEqual([]);
    }
    expect(bench.core.state().frameworks[0]).toMatchObject({ id: frameworkId, connected: true });
    expect(bench.core.state().frameworks[0]!.tasks).toHaveLength(1);
    // The first instance keeps heartbeating, the second stays silent: the framework disconnects.
    for (let t = 1000; t <= 6000; t += 1000) {
      bench.now = t;
      bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} }, "first");
      bench.tick(t);
    }
    expect(bench.core.state().frameworks[0]!.connected).toBe(false);
    // The current instance's calls are served as ever.
    expect(bench.replyOf(bench.call(frameworkId, { kind: "subscribe", subscribe: { frameworkInfo: { id: frameworkId, name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 10, checkpoint: false, partitionAware: true, hostname: "" } } }, "second"))).toBeUndefined();
    expect(bench.replyOf(bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} }, "second"))).toMatchObject({ ok: true });
  });

  it("after a master failover, answers every instance NOT_SUBSCRIBED until the framework re-subscribes", () => {
    const bench = new Bench();
    const info: FrameworkInfo = { id: "fw-9", name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 60, checkpoint: false, partitionAware: true, hostname: "" };
    bench.core.recover([{ kind: "framework", id: "fw-9", info }], 0);
    for (const sender of ["old", "new"]) {
      expect(bench.replyOf(bench.call("fw-9", { kind: "heartbeat", heartbeat: {} }, sender))).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_NOT_SUBSCRIBED" });
    }
    bench.call("fw-9", { kind: "subscribe", subscribe: { frameworkInfo: info } }, "new");
    expect(bench.replyOf(bench.call("fw-9", { kind: "heartbeat", heartbeat: {} }, "new"))).toMatchObject({ ok: true });
    expect(bench.replyOf(bench.call("fw-9", { kind: "heartbeat", heartbeat: {} }, "old"))).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_FAILED_OVER" });
  });

  it("rescinds offers of an agent that goes unreachable and reports LOST to frameworks that are not partition-aware", () => {
    const bench = new Bench({ agentPingIntervalMs: 1000 });
    const frameworkId = bench.subscribe("fw", { partitionAware: false });
    const agentId = bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }], filters: { refuseSeconds: 0 } } });
    const second = bench.offersFor(frameworkId, bench.tick(1000));
    expect(second).toHaveLength(1);
    // Keep the framework alive, let the agent miss 3 pings of 1 s.
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    bench.now = 3500;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    const effects = bench.tick(3500);
    expect(effects).toContainEqual({ type: "to-framework", frameworkId, event: { kind: "rescind", rescind: { offerId: second[0]!.id } } });
    expect(bench.updatesFor(frameworkId, effects).map((u) => [u.taskId, u.state])).toEqual([["t1", "TASK_LOST"]]);
    // When it comes back reporting the task, the task is killed (it was already reported LOST).
    const rereg = bench.core.handle(
      {
        type: "agent-message",
        senderId: agentId,
        callId: "",
        message: {
          kind: "reregister",
          reregister: {
            version: "",
            agentInfo: { id: agentId, hostname: "a1.local", resources: resourcesToWire(Resources.parse("cpus:4;mem:4096;ports:[31000-31010]")), attributes: [], httpEndpoint: "" },
            tasks: [{ frameworkId, task: { ...task("t1", "cpus:1"), agentId }, status: { taskId: "t1", state: "TASK_RUNNING", message: "", source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId, frameworkId, uuid: new Uint8Array(0), timestamp: 0 } }],
            frameworks: [],
          },
        },
      },
      3600,
    );
    expect(rereg).toContainEqual({ type: "to-agent", agentId, message: { kind: "killTask", killTask: { frameworkId, taskId: "t1" } } });
  });

  it("refuses bad subscriptions and calls from unknown frameworks", () => {
    const bench = new Bench();
    const bad = bench.call("", { kind: "subscribe", subscribe: { frameworkInfo: { id: "", name: "", roles: ["web"], principal: "", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: true, hostname: "" } } });
    expect(bench.replyOf(bad)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "subscribe.frameworkInfo.name: must not be empty" });
    const badRole = bench.call("", { kind: "subscribe", subscribe: { frameworkInfo: { id: "", name: "x", roles: [".."], principal: "", failoverTimeoutSeconds: 0, checkpoint: false, partitionAware: true, hostname: "" } } });
    expect(bench.replyOf(badRole)?.message).toContain("roles(0)");
    expect(bench.replyOf(bench.call("nope", { kind: "heartbeat", heartbeat: {} }))).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_NOT_SUBSCRIBED" });
    expect(bench.core.state().frameworks).toEqual([]);
  });
});

describe("a task's latest state (the agent's latest_state)", () => {
  /** A framework running `t1` on the whole of a one-task agent; the framework has not acknowledged anything. */
  function wholeAgentTask(config: Partial<MasterConfig> = {}) {
    const bench = new Bench(config);
    const frameworkId = bench.subscribe("fw");
    const agentId = bench.addAgent("a1", "cpus:2;mem:1024");
    const [offer] = bench.offersFor(frameworkId);
    const launched = bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:2;mem:1024")] } }], filters: { refuseSeconds: 0 } } });
    expect(bench.replyOf(launched)?.ok).toBe(true);
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(2);
    return { bench, frameworkId, agentId };
  }
  const STARTING = new Uint8Array([1]);
  const RUNNING = new Uint8Array([2]);
  const FINISHED = new Uint8Array([3]);

  it("frees the resources of a task whose stream ends terminal at once, while the framework is sent the head of the stream as before", () => {
    const { bench, frameworkId, agentId } = wholeAgentTask();
    // An agent too old to say behaves as before: the head alone counts.
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING);
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(2);
    // The task finished while STARTING waits for its acknowledgement: the re-sent head says so.
    const effects = bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING, "TASK_FINISHED");
    expect(bench.updatesFor(frameworkId, effects).map((u) => [u.state, [...u.uuid]])).toEqual([["TASK_STARTING", [1]]]);
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(0);
    expect(bench.taskInState(frameworkId, "t1")).toEqual({ list: "tasks", state: "TASK_FINISHED" });
    expect(bench.core.allocator.checkInvariants()).toEqual([]);
    // Nobody acknowledges, yet the agent is offered again (whole) at the next allocation.
    const offers = bench.offersFor(frameworkId, bench.tick(1000));
    expect(offers.map((o) => resourcesFromWire(o.resources).toString())).toEqual(["cpus:2;mem:1024"]);
    // Copies of the head, then the rest of the stream as the framework acknowledges: nothing is
    // given back twice, and the task stays until its terminal update arrives.
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING, "TASK_FINISHED");
    expect(bench.updatesFor(frameworkId, bench.agentMessage(agentId, { taskId: "t1", state: "TASK_RUNNING" }, frameworkId, RUNNING, "TASK_FINISHED")).map((u) => u.state)).toEqual(["TASK_RUNNING"]);
    expect(bench.taskInState(frameworkId, "t1")).toEqual({ list: "tasks", state: "TASK_FINISHED" });
    expect(bench.updatesFor(frameworkId, bench.agentMessage(agentId, { taskId: "t1", state: "TASK_FINISHED" }, frameworkId, FINISHED, "TASK_FINISHED")).map((u) => u.state)).toEqual(["TASK_FINISHED"]);
    expect(bench.taskInState(frameworkId, "t1")).toEqual({ list: "completedTasks", state: "TASK_FINISHED" });
    // What is allocated is the outstanding offer, once.
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(2);
    expect(bench.core.allocator.checkInvariants()).toEqual([]);
    expect(bench.core.state().agents[0]).toMatchObject({ tasks: 0, used: {}, offered: { cpus: 2, mem: 1024 } });
    expect(bench.effects.filter((e) => e.type === "log" && e.level === "warn")).toEqual([]);
  });

  it("shows a newer non-terminal state without freeing anything, and answers reconciliation with the state last sent to the framework, as Mesos does", () => {
    const { bench, frameworkId, agentId } = wholeAgentTask();
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING, "TASK_RUNNING");
    expect(bench.taskInState(frameworkId, "t1")).toEqual({ list: "tasks", state: "TASK_RUNNING" });
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(2);
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING, "TASK_FAILED");
    // Reconciliation must not run ahead of the update stream (a framework told FAILED would then
    // be sent STARTING and RUNNING): Mesos answers with the state of the last update it forwarded.
    const reconciled = (tasks: Array<{ taskId: string; agentId: string }>) =>
      bench.updatesFor(frameworkId, bench.call(frameworkId, { kind: "reconcile", reconcile: { tasks } })).map((u) => [u.taskId, u.state]);
    expect(reconciled([{ taskId: "t1", agentId }])).toEqual([["t1", "TASK_STARTING"]]);
    expect(reconciled([])).toEqual([["t1", "TASK_STARTING"]]);
    expect(bench.core.taskCounts()).toEqual({ TASK_FAILED: 1 });
  });

  it("lets what the master decides (UNREACHABLE, LOST) override a newer state the agent reported, but not an end", () => {
    const { bench, frameworkId, agentId } = wholeAgentTask({ agentPingIntervalMs: 1000 });
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING, "TASK_RUNNING");
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    bench.now = 3500;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    bench.tick(3500);
    expect(bench.taskInState(frameworkId, "t1")).toEqual({ list: "tasks", state: "TASK_UNREACHABLE" });
  });

  it("gives nothing back twice when the agent of a task whose end it knows is lost, and lets the agent's report end it", () => {
    const { bench, frameworkId, agentId } = wholeAgentTask({ agentPingIntervalMs: 1000 });
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_STARTING" }, frameworkId, STARTING, "TASK_KILLED");
    expect(bench.core.allocator.frameworkAllocation(frameworkId).scalar("cpus")).toBe(0);
    // The agent misses its pings: it is removed with everything on it; the framework is told.
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    bench.now = 3500;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    const lost = bench.tick(3500);
    expect(bench.updatesFor(frameworkId, lost).map((u) => [u.taskId, u.state])).toEqual([["t1", "TASK_UNREACHABLE"]]);
    expect(bench.core.allocator.checkInvariants()).toEqual([]);
    // It comes back reporting the task ended: it is completed, and holds nothing.
    const back = bench.run(
      bench.core.handle(
        {
          type: "agent-message",
          senderId: agentId,
          callId: "",
          message: {
            kind: "reregister",
            reregister: {
              version: "",
              listening: true,
              agentInfo: { id: agentId, hostname: "a1.local", resources: resourcesToWire(Resources.parse("cpus:2;mem:1024")), attributes: [], httpEndpoint: "" },
              tasks: [{ frameworkId, task: { ...task("t1", "cpus:2;mem:1024"), agentId, allocationRole: "web" }, status: { taskId: "t1", state: "TASK_KILLED", message: "", source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId, frameworkId, uuid: new Uint8Array([4]), timestamp: 3 } }],
              frameworks: [],
            },
          },
        },
        3600,
      ),
    );
    expect(back.find((e) => e.type === "reply")).toMatchObject({ payload: { masterToAgent: { kind: "reregistered" } } });
    expect(bench.taskInState(frameworkId, "t1")).toEqual({ list: "completedTasks", state: "TASK_KILLED" });
    expect(bench.core.allocator.checkInvariants()).toEqual([]);
    expect(bench.core.state().agents[0]).toMatchObject({ tasks: 0, used: {} });
  });
});

describe("subscribe ids", () => {
  it("refuses a SUBSCRIBE whose call names another framework id than its FrameworkInfo, as Mesos does", () => {
    const bench = new Bench();
    const a = bench.subscribe("a", { failoverTimeoutSeconds: 60 });
    const b = bench.subscribe("b", { failoverTimeoutSeconds: 60 });
    const info: FrameworkInfo = { id: b, name: "b", roles: ["web"], principal: "", failoverTimeoutSeconds: 60, checkpoint: false, partitionAware: true, hostname: "" };
    const before = bench.core.state().frameworks;
    const refused = bench.call(a, { kind: "subscribe", subscribe: { frameworkInfo: info } }, "intruder");
    expect(bench.replyOf(refused)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: `frameworkId: '${a}' differs from subscribe.frameworkInfo.id '${b}'` });
    expect(bench.core.state().frameworks).toEqual(before);
    // Either id alone, or both the same, still subscribes (fails over) as before.
    expect(bench.call(a, { kind: "subscribe", subscribe: { frameworkInfo: { ...info, id: a, name: "a" } } }, "a-driver-2").find((e) => e.type === "reply")).toMatchObject({ payload: { payload: "schedulerEvent" } });
    expect(bench.call("", { kind: "subscribe", subscribe: { frameworkInfo: info } }, "b-driver-2").find((e) => e.type === "reply")).toMatchObject({ payload: { payload: "schedulerEvent" } });
  });
});

describe("master core robustness", () => {
  const agentInfo = (id: string, resources = "cpus:1;mem:256") => ({ id, hostname: "h", resources: resourcesToWire(Resources.parse(resources)), attributes: [], httpEndpoint: "" });
  const fwInfo = (id: string, roles: string[]): FrameworkInfo => ({ id, name: "x", roles, principal: "", failoverTimeoutSeconds: 60, checkpoint: false, partitionAware: true, hostname: "" });

  it("ignores a bad framework reported by a re-registering agent and keeps ticking", () => {
    const bench = new Bench();
    const effects = bench.core.handle({ type: "agent-message", senderId: "m1-S9", callId: "", message: { kind: "reregister", reregister: { version: "", agentInfo: agentInfo("m1-S9"), tasks: [], frameworks: [fwInfo("f1", ["bad role"])] } } }, 0);
    expect(effects.some((e) => e.type === "reply" && e.payload.payload === "masterToAgent" && e.payload.masterToAgent.kind === "reregistered")).toBe(true);
    expect(() => bench.tick(1000)).not.toThrow();
    const frameworkId = bench.subscribe("after");
    bench.pong("m1-S9");
    expect(bench.offersFor(frameworkId).length).toBeGreaterThan(0);
  });

  it("refuses ids that cannot be subjects", () => {
    const bench = new Bench();
    const sub = bench.call("bad.id", { kind: "subscribe", subscribe: { frameworkInfo: fwInfo("bad.id", ["web"]) } });
    expect(bench.replyOf(sub)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL" });
    // A valid subject token that cannot name a sandbox directory: refused at SUBSCRIBE, not per task.
    const slash = bench.call("team/web", { kind: "subscribe", subscribe: { frameworkInfo: fwInfo("team/web", ["web"]) } });
    expect(bench.replyOf(slash)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: expect.stringContaining("frameworkId 'team/web': use only letters") });
    expect(bench.core.sizes().frameworks).toBe(0);
    const rereg = bench.core.handle({ type: "agent-message", senderId: "x", callId: "", message: { kind: "reregister", reregister: { version: "", agentInfo: agentInfo("a.b"), tasks: [], frameworks: [] } } }, 0);
    expect(rereg).toContainEqual(expect.objectContaining({ type: "reply", payload: expect.objectContaining({ payload: "callResponse" }) }));
    expect(bench.core.sizes().agents).toBe(0);
  });

  it("refuses a re-registration in another agent's name, and keeps that agent and its tasks", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const victim = bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }] } });
    const intruder = bench.addAgent("a2");
    const effects = bench.core.handle({ type: "agent-message", senderId: intruder, callId: "", message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: agentInfo(victim), tasks: [], frameworks: [] } } }, bench.now);
    expect(effects).toContainEqual({ type: "reply", payload: { payload: "callResponse", callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: `agentInfo.id: '${victim}' differs from the sender '${intruder}'; an agent re-registers only itself` } } });
    expect(bench.core.state().frameworks[0]!.tasks).toMatchObject([{ id: "t1", agentId: victim }]);
    expect(bench.core.state().agents.find((a) => a.id === victim)).toMatchObject({ tasks: 1 });
  });

  it("answers a bad registration with a refusal instead of silence", () => {
    const bench = new Bench();
    const effects = bench.core.handle({ type: "agent-message", senderId: "inst", callId: "", message: { kind: "register", register: { version: "", agentInfo: { ...agentInfo(""), hostname: "" } } } }, 0);
    expect(effects).toContainEqual({ type: "reply", payload: { payload: "callResponse", callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "agentInfo.hostname: must not be empty" } } });
  });

  it("does not reuse ids handed out before a restart, and expires agents that never come back", () => {
    const bench = new Bench({ agentReregisterTimeoutMs: 5000 });
    bench.core.recover([{ kind: "framework", id: "m1-F3", info: fwInfo("m1-F3", ["web"]) }, { kind: "agent", id: "m1-S7", info: agentInfo("m1-S7") }, { kind: "torn-down", id: "m1-F4" }], 0);
    const fresh = bench.subscribe("new");
    expect(fresh).toBe("m1-F5");
    expect(bench.addAgent("inst")).toBe("m1-S8");
    // Until it re-registers (or times out), reconciliation says nothing about tasks on m1-S7.
    expect(bench.updatesFor(fresh, bench.call(fresh, { kind: "reconcile", reconcile: { tasks: [{ taskId: "t", agentId: "m1-S7" }] } }))).toEqual([]);
    bench.call(fresh, { kind: "heartbeat", heartbeat: {} });
    bench.now = 4000;
    bench.call(fresh, { kind: "heartbeat", heartbeat: {} });
    const expired = bench.tick(5000);
    expect(expired).toContainEqual({ type: "unpersist", kind: "agent", id: "m1-S7" });
    bench.call(fresh, { kind: "heartbeat", heartbeat: {} });
    expect(bench.updatesFor(fresh, bench.call(fresh, { kind: "reconcile", reconcile: { tasks: [{ taskId: "t", agentId: "m1-S7" }] } })).map((u) => u.state)).toEqual(["TASK_UNREACHABLE"]);
  });

  it("refuses a re-registration whose tasks use more than the agent has, and changes nothing", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw", { partitionAware: false });
    const agentId = bench.addAgent("a1", "cpus:4;mem:4096");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1;mem:128")] } }] } });
    const before = bench.core.state();
    const allocatedBefore = bench.core.allocator.frameworkAllocation(frameworkId).toString();
    const running: TaskStatus = { taskId: "t1", state: "TASK_RUNNING", message: "", source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId, frameworkId, uuid: new Uint8Array(0), timestamp: 0 };
    const effects = bench.run(
      bench.core.handle(
        {
          type: "agent-message",
          senderId: agentId,
          callId: "",
          message: {
            kind: "reregister",
            reregister: { version: "", listening: true, agentInfo: { ...agentInfo(agentId, "cpus:4;mem:4096"), hostname: "a1.local" }, tasks: [{ frameworkId, task: { ...task("t1", "cpus:40;mem:128"), agentId }, status: running }], frameworks: [] },
          },
        },
        bench.now,
      ),
    );
    expect(bench.replyOf(effects)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "tasks(0): task 't1' uses cpus:40;mem:128, but only cpus:4;mem:4096 of the agent's total cpus:4;mem:4096 is left" });
    // Nothing was applied: the agent, its task and what the allocator counts are as they were.
    expect(effects.filter((e) => e.type !== "reply" && e.type !== "log")).toEqual([]);
    expect(bench.core.state()).toEqual(before);
    expect(bench.core.allocator.frameworkAllocation(frameworkId).toString()).toBe(allocatedBefore);
  });

  it("refuses a re-registration whose tasks hold the same port, and takes the agent back once its report is sound", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const agentId = "m1-S7";
    const reported = (taskId: string) => ({
      frameworkId,
      task: { ...task(taskId, "cpus:0.5;mem:64;ports:[31000-31000]"), agentId },
      status: { taskId, state: "TASK_RUNNING" as const, message: "", source: "SOURCE_AGENT" as const, reason: "REASON_UNSPECIFIED" as const, agentId, frameworkId, uuid: new Uint8Array(0), timestamp: 0 },
    });
    const reregister = (tasks: Array<ReturnType<typeof reported>>) =>
      bench.run(bench.core.handle({ type: "agent-message", senderId: agentId, callId: "", message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: agentInfo(agentId, "cpus:4;mem:4096;ports:[31000-31010]"), tasks, frameworks: [] } } }, bench.now));
    const refused = reregister([reported("t1"), reported("t2")]);
    expect(bench.replyOf(refused)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: expect.stringMatching(/^tasks\(1\): task 't2' uses cpus:0.5;mem:64;ports:\[31000-31000\], but only .*ports:\[31001-31010\]/) });
    expect(bench.core.sizes().agents).toBe(0);
    expect(bench.core.state().frameworks[0]!.tasks).toEqual([]);
    // The same agent with a sound report is taken back.
    const accepted = reregister([reported("t1")]);
    expect(accepted).toContainEqual(expect.objectContaining({ type: "reply", payload: expect.objectContaining({ payload: "masterToAgent" }) }));
    expect(bench.core.state().agents.map((a) => [a.id, a.tasks])).toEqual([[agentId, 1]]);
  });

  it("refuses a re-registration that reports one task twice, instead of counting its resources twice", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const agentId = "m1-S7";
    const running: TaskStatus = { taskId: "t1", state: "TASK_RUNNING", message: "", source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId, frameworkId, uuid: new Uint8Array(0), timestamp: 0 };
    const record = { frameworkId, task: { ...task("t1", "cpus:1;mem:128"), agentId }, status: running };
    const effects = bench.run(
      bench.core.handle(
        { type: "agent-message", senderId: agentId, callId: "", message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: agentInfo(agentId, "cpus:4;mem:4096"), tasks: [record, record], frameworks: [] } } },
        bench.now,
      ),
    );
    expect(bench.replyOf(effects)).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: `tasks(1): task 't1' of framework '${frameworkId}' is reported twice (also at tasks(0))` });
    expect(bench.core.sizes().agents).toBe(0);
    expect(bench.core.allocator.frameworkAllocation(frameworkId).isEmpty()).toBe(true);
  });

  it("kills a task an agent reports back when the framework runs a task of that id on another agent", () => {
    const bench = new Bench({ agentPingIntervalMs: 1000 });
    const frameworkId = bench.subscribe("fw", { partitionAware: false });
    const first = bench.addAgent("a1", "cpus:1;mem:256");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1;mem:128")] } }] } });
    // The first agent goes silent: t1 is LOST, and the framework launches t1 again on a second agent.
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    bench.tick(2000);
    bench.now = 3500;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    expect(bench.updatesFor(frameworkId, bench.tick(3500)).map((u) => [u.taskId, u.state])).toEqual([["t1", "TASK_LOST"]]);
    const second = bench.addAgent("a2", "cpus:1;mem:256");
    const again = bench.offersFor(frameworkId).find((o) => o.agentId === second);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [again!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1;mem:128")] } }] } });
    // The first agent comes back with its old t1: that copy is killed, the new one stays where it runs.
    const running: TaskStatus = { taskId: "t1", state: "TASK_RUNNING", message: "", source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId: first, frameworkId, uuid: new Uint8Array(0), timestamp: 0 };
    const rereg = bench.run(
      bench.core.handle(
        {
          type: "agent-message",
          senderId: first,
          callId: "",
          message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: { ...agentInfo(first, "cpus:1;mem:256"), hostname: "a1.local" }, tasks: [{ frameworkId, task: { ...task("t1", "cpus:1;mem:128"), agentId: first }, status: running }], frameworks: [] } },
        },
        bench.now,
      ),
    );
    expect(rereg).toContainEqual({ type: "to-agent", agentId: first, message: { kind: "killTask", killTask: { frameworkId, taskId: "t1" } } });
    const state = bench.core.state();
    expect(state.frameworks[0]!.tasks).toMatchObject([{ id: "t1", agentId: second, state: "TASK_STAGING" }]);
    expect(state.agents.map((a) => [a.id, a.tasks])).toEqual([
      [second, 1],
      [first, 0],
    ]);
  });

  it("drops a status update from an agent it does not know and asks that agent to re-register, as Mesos does", () => {
    const bench = new Bench({ agentPingIntervalMs: 1000 });
    const frameworkId = bench.subscribe("fw", { partitionAware: false });
    const agentId = bench.addAgent("a1");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1")] } }] } });
    // The agent is cut off: t1 is reported LOST.
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    bench.tick(2000);
    bench.now = 3500;
    bench.call(frameworkId, { kind: "heartbeat", heartbeat: {} });
    expect(bench.updatesFor(frameworkId, bench.tick(3500)).map((u) => [u.taskId, u.state])).toEqual([["t1", "TASK_LOST"]]);
    // Its retried update arrives before it re-registers: the framework must not hear RUNNING for a task it was told is lost.
    const late = bench.agentMessage(agentId, { taskId: "t1", state: "TASK_RUNNING" }, frameworkId);
    expect(bench.updatesFor(frameworkId, late)).toEqual([]);
    expect(late).toContainEqual({ type: "to-agent", agentId, message: { kind: "reregisterRequest", reregisterRequest: {} } });
    expect(late).toContainEqual(expect.objectContaining({ type: "log", level: "warn", fields: expect.objectContaining({ agentId, taskId: "t1" }) }));
    expect(bench.core.counters.invalidStatusUpdates).toBe(1);
    // A stranger's update is dropped the same way.
    expect(bench.updatesFor(frameworkId, bench.agentMessage("stranger", { taskId: "t1", state: "TASK_FAILED" }, frameworkId))).toEqual([]);
    expect(bench.core.counters.invalidStatusUpdates).toBe(2);
  });

  it("counts a task an agent reports back in a terminal state as completed, not as holding resources", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const agentId = bench.addAgent("a1", "cpus:4;mem:4096");
    const [offer] = bench.offersFor(frameworkId);
    bench.call(frameworkId, { kind: "accept", accept: { offerIds: [offer!.id], operations: [{ kind: "launch", launch: { taskInfos: [task("t1", "cpus:1;mem:128"), task("t2", "cpus:1;mem:128")] } }] } });
    bench.agentMessage(agentId, { taskId: "t1", state: "TASK_RUNNING" }, frameworkId);
    bench.agentMessage(agentId, { taskId: "t2", state: "TASK_RUNNING" }, frameworkId);
    // The agent restarts while t1 finishes and before its FINISHED is acknowledged; it reports t2
    // running and t1 finished, plus t3, which ended while the master did not know it (after a failover).
    const reported = (taskId: string, state: TaskState) => ({
      frameworkId,
      task: { ...task(taskId, "cpus:1;mem:128"), agentId },
      status: { taskId, state, message: "", source: "SOURCE_AGENT" as const, reason: "REASON_UNSPECIFIED" as const, agentId, frameworkId, uuid: new Uint8Array([4]), timestamp: 0 },
    });
    const rereg = bench.run(
      bench.core.handle(
        {
          type: "agent-message",
          senderId: agentId,
          callId: "",
          message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: agentInfo(agentId, "cpus:4;mem:4096"), tasks: [reported("t1", "TASK_FINISHED"), reported("t2", "TASK_RUNNING"), reported("t3", "TASK_FAILED")], frameworks: [] } },
        },
        bench.now,
      ),
    );
    // The agent re-sends its unacknowledged FINISHED and FAILED: the master does not tell them first.
    expect(bench.updatesFor(frameworkId, rereg)).toEqual([]);
    const state = bench.core.state();
    expect(state.frameworks[0]!.tasks).toMatchObject([{ id: "t2", state: "TASK_RUNNING" }]);
    expect((state.frameworks[0]!.completedTasks as Array<{ id: string; state: string }>).map((t) => [t.id, t.state]).sort()).toEqual([
      ["t1", "TASK_FINISHED"],
      ["t3", "TASK_FAILED"],
    ]);
    expect(state.agents).toMatchObject([{ id: agentId, tasks: 1, used: { cpus: 1, mem: 128 } }]);
    // Only t2 is allocated outside offers: what is offered now is the rest of the agent.
    expect(resourcesFromWire(bench.offersFor(frameworkId, rereg)[0]!.resources).toString()).toBe("cpus:3;mem:3968");
    // The re-sent updates reach the framework once each, and change nothing more.
    expect(bench.updatesFor(frameworkId, bench.agentMessage(agentId, { taskId: "t1", state: "TASK_FINISHED" }, frameworkId, new Uint8Array([4]))).map((u) => [u.taskId, u.state])).toEqual([["t1", "TASK_FINISHED"]]);
    expect(bench.updatesFor(frameworkId, bench.agentMessage(agentId, { taskId: "t3", state: "TASK_FAILED" }, frameworkId, new Uint8Array([4]))).map((u) => [u.taskId, u.state])).toEqual([["t3", "TASK_FAILED"]]);
    expect(bench.core.state().agents).toMatchObject([{ id: agentId, tasks: 1, used: { cpus: 1, mem: 128 } }]);
    expect(bench.core.allocator.checkInvariants()).toEqual([]);
  });

  it("skips, with a log line, a task an agent reports back under an id the launch rule refuses", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const agentId = "m1-S7";
    const reported = (taskId: string) => ({
      frameworkId,
      task: { ...task(taskId, "cpus:1;mem:128"), agentId },
      status: { taskId, state: "TASK_RUNNING" as const, message: "", source: "SOURCE_AGENT" as const, reason: "REASON_UNSPECIFIED" as const, agentId, frameworkId, uuid: new Uint8Array(0), timestamp: 0 },
    });
    const effects = bench.run(
      bench.core.handle(
        {
          type: "agent-message",
          senderId: agentId,
          callId: "",
          message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: agentInfo(agentId, "cpus:4;mem:4096"), tasks: [reported("ok"), reported(".."), reported("a/b"), reported("")], frameworks: [] } },
        },
        bench.now,
      ),
    );
    expect(effects).toContainEqual(expect.objectContaining({ type: "reply", payload: expect.objectContaining({ payload: "masterToAgent" }) }));
    expect(bench.core.state().frameworks[0]!.tasks).toMatchObject([{ id: "ok" }]);
    expect(bench.core.state().agents).toMatchObject([{ id: agentId, tasks: 1, used: { cpus: 1, mem: 128 } }]);
    const skipped = effects.flatMap((e) => (e.type === "log" && e.msg === "ignoring a task reported by a re-registering agent" ? [e.fields] : []));
    expect(skipped).toEqual([
      expect.objectContaining({ agentId, frameworkId, taskId: "..", problem: 'tasks(1): task.taskId: must not be ".."' }),
      expect.objectContaining({ agentId, frameworkId, taskId: "a/b", problem: "tasks(2): task.taskId: use only letters, digits, '_', '.', '@', '+' or '-'" }),
      expect.objectContaining({ agentId, frameworkId, taskId: "", problem: "tasks(3): task.taskId: must not be empty" }),
    ]);
  });

  it("skips a reported task whose status names another task, and keeps a status under the reporting agent and framework", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("fw");
    const agentId = "m1-S7";
    const reported = (taskId: string, status: Partial<TaskStatus>) => ({
      frameworkId,
      task: { ...task(taskId, "cpus:1;mem:128"), agentId },
      status: { taskId, state: "TASK_RUNNING" as const, message: "", source: "SOURCE_AGENT" as const, reason: "REASON_UNSPECIFIED" as const, agentId, frameworkId, uuid: new Uint8Array(0), timestamp: 0, ...status },
    });
    const effects = bench.run(
      bench.core.handle(
        {
          type: "agent-message",
          senderId: agentId,
          callId: "",
          message: { kind: "reregister", reregister: { version: "", listening: true, agentInfo: agentInfo(agentId, "cpus:4;mem:4096"), tasks: [reported("t1", { taskId: "t9" }), reported("t2", { agentId: "m1-S99", frameworkId: "other" })], frameworks: [] } },
        },
        bench.now,
      ),
    );
    const skipped = effects.flatMap((e) => (e.type === "log" && e.msg === "ignoring a task reported by a re-registering agent" ? [e.fields] : []));
    expect(skipped).toEqual([expect.objectContaining({ taskId: "t1", problem: "tasks(0).status.taskId: 't9' differs from task.taskId 't1'" })]);
    expect(bench.core.state().frameworks[0]!.tasks).toMatchObject([{ id: "t2", agentId }]);
    // Reconciliation tells the task's status as the master keeps it: on the agent that reported it.
    const reconciled = bench.updatesFor(frameworkId, bench.call(frameworkId, { kind: "reconcile", reconcile: { tasks: [] } }));
    expect(reconciled.map((u) => [u.taskId, u.agentId, u.frameworkId])).toEqual([["t2", agentId, frameworkId]]);
  });

  it("persists the torn-down marker before forgetting the framework", () => {
    const bench = new Bench();
    const frameworkId = bench.subscribe("short-lived");
    const effects = bench.call(frameworkId, { kind: "teardown", teardown: {} });
    const writes = effects.filter((e) => e.type === "persist" || e.type === "unpersist").map((e) => e.type);
    expect(writes).toEqual(["persist", "unpersist"]);
  });
});

describe("master core: principals and the role ACL", () => {
  const info = (extra: Partial<FrameworkInfo> = {}): FrameworkInfo => ({ id: "", name: "fw", roles: ["web"], principal: "", failoverTimeoutSeconds: 60, checkpoint: false, partitionAware: true, hostname: "", ...extra });
  let seq = 0;
  /** A call as it comes from the bus: `principal` is the token of the subject it came on (undefined: the shared subject). */
  const callAs = (bench: Bench, principal: string | undefined, frameworkId: string, body: SchedulerCallBody, senderId: string): MasterEffect[] =>
    bench.run(bench.core.handle({ type: "scheduler-call", senderId, callId: `p${++seq}`, call: { frameworkId, ...body } as SchedulerCall, ...(principal !== undefined ? { principal } : {}) }, bench.now));
  const subscribeAs = (bench: Bench, principal: string | undefined, extra: Partial<FrameworkInfo>, senderId: string) =>
    callAs(bench, principal, extra.id ?? "", { kind: "subscribe", subscribe: { frameworkInfo: info(extra) } }, senderId);
  const subscribedId = (effects: MasterEffect[]): string => {
    const reply = effects.find((e) => e.type === "reply");
    if (reply?.type !== "reply" || reply.payload.payload !== "schedulerEvent" || reply.payload.schedulerEvent.kind !== "subscribed") throw new Error(`not subscribed: ${JSON.stringify(reply)}`);
    return reply.payload.schedulerEvent.subscribed.frameworkId;
  };
  const refusal = (bench: Bench, effects: MasterEffect[]) => {
    const r = bench.replyOf(effects);
    return r && !r.ok ? { errorCode: r.errorCode, message: r.message } : undefined;
  };

  it("takes a framework's principal from the subject it calls on, and sends its events under that principal", () => {
    const bench = new Bench();
    // A framework that names no principal gets its subject's, as Mesos fills in the authenticated one.
    const frameworkId = subscribedId(subscribeAs(bench, "team-a", {}, "a-driver"));
    expect(bench.core.state().frameworks.find((f) => f.id === frameworkId)).toMatchObject({ principal: "team-a" });
    expect(bench.effects).toContainEqual(expect.objectContaining({ type: "persist", record: expect.objectContaining({ id: frameworkId, info: expect.objectContaining({ principal: "team-a" }) }) }));
    callAs(bench, "team-a", frameworkId, { kind: "heartbeat", heartbeat: {} }, "a-driver");
    bench.addAgent("a1");
    const offers = bench.effects.filter((e) => e.type === "to-framework" && e.event.kind === "offers");
    expect(offers).toHaveLength(1);
    expect(offers[0]).toMatchObject({ frameworkId, principal: "team-a" });
    // A framework without a principal gets events without one.
    const anonymous = bench.subscribe("anon");
    const heartbeat = bench.tick(1_000).filter((e) => e.type === "to-framework" && e.frameworkId === anonymous);
    expect(heartbeat.length).toBeGreaterThan(0);
    expect(heartbeat.every((e) => e.type === "to-framework" && e.principal === undefined)).toBe(true);
  });

  it("refuses a SUBSCRIBE naming another principal than the one it came under, and registers nothing", () => {
    const bench = new Bench();
    expect(refusal(bench, subscribeAs(bench, "team-a", { principal: "team-b" }, "d1"))).toEqual({
      errorCode: "CORRAL_ERR_UNAUTHORIZED",
      message: "subscribe.frameworkInfo.principal: 'team-b' differs from the principal the call came under ('team-a'); a framework subscribes under its own principal only",
    });
    // On the shared subject a principal is a claim nobody vouches for.
    expect(refusal(bench, subscribeAs(bench, undefined, { principal: "team-a" }, "d2"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHENTICATED", message: expect.stringMatching(/^subscribe\.frameworkInfo\.principal: 'team-a' came on the shared subject/) });
    expect(bench.core.state().frameworks).toEqual([]);
    expect(bench.effects.filter((e) => e.type === "persist")).toEqual([]);
  });

  it("refuses a failover, or any call, for a framework registered under another principal", () => {
    const bench = new Bench();
    const owned = subscribedId(subscribeAs(bench, "team-a", { name: "owned" }, "a-driver"));
    callAs(bench, "team-a", owned, { kind: "heartbeat", heartbeat: {} }, "a-driver");
    const anonymous = bench.subscribe("anon");
    const before = bench.effects.length;
    const takeover = (principal: string | undefined, frameworkId: string) => refusal(bench, subscribeAs(bench, principal, { id: frameworkId, name: "thief" }, "thief-driver"));
    expect(takeover("team-b", owned)).toEqual({
      errorCode: "CORRAL_ERR_UNAUTHORIZED",
      message: `frameworkId: framework '${owned}' is registered under principal 'team-a', and this call came under principal 'team-b'; a framework's principal cannot change`,
    });
    expect(takeover(undefined, owned)).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED", message: expect.stringContaining("this call came under no principal") });
    expect(takeover("team-a", anonymous)).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED", message: expect.stringContaining(`'${anonymous}' is registered under no principal`) });
    // Calls other than SUBSCRIBE are refused alike, even with the subscribed instance's sender id.
    expect(refusal(bench, callAs(bench, "team-b", owned, { kind: "teardown", teardown: {} }, "a-driver"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED" });
    expect(refusal(bench, callAs(bench, undefined, owned, { kind: "teardown", teardown: {} }, "a-driver"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED" });
    // Nothing changed hands: no failover notice went out, and the owners carry on.
    const since = bench.effects.slice(before);
    expect(since.filter((e) => e.type === "to-framework" || e.type === "persist" || e.type === "unpersist")).toEqual([]);
    expect(bench.replyOf(callAs(bench, "team-a", owned, { kind: "heartbeat", heartbeat: {} }, "a-driver"))?.ok).toBe(true);
    expect(bench.replyOf(bench.call(anonymous, { kind: "heartbeat", heartbeat: {} }))?.ok).toBe(true);
    expect(bench.core.state().frameworks.map((f) => [f.id, f.name, f.principal])).toEqual([
      [owned, "owned", "team-a"],
      [anonymous, "anon", ""],
    ]);
    // Its own principal fails over as before.
    expect(subscribedId(subscribeAs(bench, "team-a", { id: owned, name: "owned" }, "a-driver-2"))).toBe(owned);
  });

  it("with requirePrincipal, refuses every call on the shared subject", () => {
    const bench = new Bench({ requirePrincipal: true });
    expect(refusal(bench, subscribeAs(bench, undefined, {}, "d1"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHENTICATED", message: expect.stringContaining("requirePrincipal") });
    const frameworkId = subscribedId(subscribeAs(bench, "team-a", {}, "d2"));
    expect(refusal(bench, callAs(bench, undefined, frameworkId, { kind: "heartbeat", heartbeat: {} }, "d2"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHENTICATED" });
    expect(bench.replyOf(callAs(bench, "team-a", frameworkId, { kind: "heartbeat", heartbeat: {} }, "d2"))?.ok).toBe(true);
  });

  it("lets each principal subscribe only with the roles the role ACL gives it, on every SUBSCRIBE", () => {
    const bench = new Bench({ roleAcl: { principals: { "team-a": ["web"], ops: "ANY" }, permissive: false } });
    const web = subscribedId(subscribeAs(bench, "team-a", { roles: ["web"] }, "a1"));
    expect(refusal(bench, subscribeAs(bench, "team-a", { roles: ["web", "batch"] }, "a2"))).toEqual({
      errorCode: "CORRAL_ERR_UNAUTHORIZED",
      message: "subscribe.frameworkInfo.roles: principal 'team-a' may not subscribe with role 'batch' (the role ACL allows it 'web')",
    });
    // A re-subscription may change roles: it is checked too, and a refused one changes nothing.
    expect(refusal(bench, subscribeAs(bench, "team-a", { id: web, roles: ["batch"] }, "a1"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED" });
    expect(bench.core.state().frameworks.find((f) => f.id === web)).toMatchObject({ roles: ["web"] });
    subscribedId(subscribeAs(bench, "ops", { roles: ["batch", "eng/web"] }, "o1"));
    expect(refusal(bench, subscribeAs(bench, "team-c", {}, "c1"))).toEqual({
      errorCode: "CORRAL_ERR_UNAUTHORIZED",
      message: "subscribe.frameworkInfo.roles: principal 'team-c' may not subscribe with role 'web': the role ACL does not list it and is not permissive",
    });
    expect(refusal(bench, subscribeAs(bench, undefined, {}, "n1"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED", message: expect.stringContaining("a framework without a principal may not subscribe with role 'web'") });
    // Permissive (the default): whoever is not listed may use any role; who is listed is still held to the list.
    const permissive = new Bench({ roleAcl: { principals: { "team-a": ["web"] } } });
    subscribedId(subscribeAs(permissive, "team-c", { roles: ["batch"] }, "c1"));
    subscribedId(subscribeAs(permissive, undefined, { roles: ["batch"] }, "n1"));
    expect(refusal(permissive, subscribeAs(permissive, "team-a", { roles: ["batch"] }, "a1"))).toMatchObject({ errorCode: "CORRAL_ERR_UNAUTHORIZED" });
  });

  it("refuses an ACL that is not one, naming the field", () => {
    expect(() => new Bench({ roleAcl: { principals: { "team-a": ["web", ".."] } } })).toThrow("roleAcl: principals.team-a[1]: role path components must not be '..'");
    expect(() => new Bench({ roleAcl: { principals: { "team.a": ["web"] } } })).toThrow(/^roleAcl: principals\["team.a"\]: a principal must not contain "."/);
  });
});

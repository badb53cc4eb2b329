/**
 * What a new leader (or a restarted master) does with the registry: the core on virtual time, fed
 * the records an old leader persisted. No bus, no store: effects are checked as values.
 */
import { describe, expect, it } from "vitest";
import { Resources } from "../../sdk/resources.ts";
import { SeededRng } from "../../sdk/rng.ts";
import { resourcesToWire } from "../../sdk/wire/resources.ts";
import type { AgentInfo, FrameworkInfo, TaskInfo, TaskStatus } from "../../sdk/wire/types.ts";
import { createMasterCore, type MasterConfig, type MasterCore, type MasterEffect, type RegistryRecord } from "../../master/core.ts";

const agentInfo = (id: string, resources = "cpus:4;mem:4096"): AgentInfo => ({ id, hostname: `${id}.local`, resources: resourcesToWire(Resources.parse(resources)), attributes: [], httpEndpoint: "" });
const fwInfo = (id: string, partitionAware = true, failoverTimeoutSeconds = 60): FrameworkInfo => ({ id, name: id, roles: ["web"], principal: "", failoverTimeoutSeconds, checkpoint: true, partitionAware, hostname: "" });
const taskInfo = (taskId: string, agentId: string): TaskInfo => ({
  taskId,
  name: taskId,
  agentId,
  resources: resourcesToWire(Resources.parse("cpus:1;mem:1024")),
  command: { value: "sleep 100", arguments: [], shell: true, environment: {}, user: "" },
  labels: {},
});
const running = (taskId: string, agentId: string, frameworkId: string): TaskStatus => ({
  taskId,
  state: "TASK_RUNNING",
  message: "",
  source: "SOURCE_AGENT",
  reason: "REASON_UNSPECIFIED",
  agentId,
  frameworkId,
  uuid: new Uint8Array(0),
  timestamp: 0,
});

/** A new master's core, the driving helpers, and everything it emitted. */
class NewLeader {
  readonly core: MasterCore;
  readonly effects: MasterEffect[] = [];
  now = 100_000;
  private seq = 0;

  constructor(config: Partial<MasterConfig> = {}) {
    this.core = createMasterCore({ masterId: "m2", agentPingIntervalMs: 1000, frameworkHeartbeatIntervalMs: 1000, allocationIntervalMs: 1000, ...config }, new SeededRng(3));
  }

  recover(records: RegistryRecord[]): MasterEffect[] {
    const effects = this.core.recover(records, this.now);
    this.effects.push(...effects);
    return effects;
  }

  run(effects: MasterEffect[]): MasterEffect[] {
    this.effects.push(...effects);
    return effects;
  }

  tick(atMs: number): MasterEffect[] {
    this.now = atMs;
    return this.run(this.core.handle({ type: "tick" }, atMs));
  }

  /** An agent re-registers; unless it says it is `listening` already, it then sends its first pong. */
  reregister(agentId: string, tasks: Array<{ frameworkId: string; taskId: string }> = [], frameworks: FrameworkInfo[] = [], options: { listening?: boolean; pong?: boolean } = {}): MasterEffect[] {
    const reported = tasks.map((t) => ({ frameworkId: t.frameworkId, task: taskInfo(t.taskId, agentId), status: running(t.taskId, agentId, t.frameworkId) }));
    const reregister = { version: "", agentInfo: agentInfo(agentId), tasks: reported, frameworks, ...(options.listening !== undefined ? { listening: options.listening } : {}) };
    const effects = this.run(this.core.handle({ type: "agent-message", senderId: agentId, callId: `r${++this.seq}`, message: { kind: "reregister", reregister } }, this.now));
    if (options.pong ?? true) this.run(this.core.handle({ type: "agent-message", senderId: agentId, callId: "", message: { kind: "pong", pong: { seq: 0 } } }, this.now));
    return effects;
  }

  resubscribe(frameworkId: string, partitionAware = true): void {
    this.run(this.core.handle({ type: "scheduler-call", senderId: `${frameworkId}-driver`, callId: `s${++this.seq}`, call: { frameworkId, kind: "subscribe", subscribe: { frameworkInfo: fwInfo(frameworkId, partitionAware) } } }, this.now));
    this.run(this.core.handle({ type: "scheduler-call", senderId: `${frameworkId}-driver`, callId: `h${++this.seq}`, call: { frameworkId, kind: "heartbeat", heartbeat: {} } }, this.now));
  }

  reconcile(frameworkId: string, taskId: string, agentId: string): TaskStatus[] {
    const effects = this.run(
      this.core.handle({ type: "scheduler-call", senderId: `${frameworkId}-driver`, callId: `c${++this.seq}`, call: { frameworkId, kind: "reconcile", reconcile: { tasks: [{ taskId, agentId }] } } }, this.now),
    );
    return effects.flatMap((e) => (e.type === "to-framework" && e.event.kind === "update" ? [e.event.update.status!] : []));
  }

  offers(): string[] {
    return this.effects.flatMap((e) => (e.type === "to-framework" && e.event.kind === "offers" ? e.event.offers.offers.map((o) => o.agentId) : []));
  }
}

const REGISTRY: RegistryRecord[] = [
  { kind: "agent", id: "m1-S1", info: agentInfo("m1-S1") },
  { kind: "agent", id: "m1-S2", info: agentInfo("m1-S2") },
  { kind: "framework", id: "m1-F1", info: fwInfo("m1-F1") },
];

describe("a new leader recovering the registry", () => {
  it("asks every agent of the registry to re-register and tells every framework of its epoch", () => {
    const leader = new NewLeader();
    const effects = leader.recover(REGISTRY);
    expect(effects).toContainEqual({ type: "to-agent", agentId: "m1-S1", message: { kind: "reregisterRequest", reregisterRequest: {} } });
    expect(effects).toContainEqual({ type: "to-agent", agentId: "m1-S2", message: { kind: "reregisterRequest", reregisterRequest: {} } });
    expect(effects).toContainEqual({ type: "to-framework", frameworkId: "m1-F1", event: { kind: "heartbeat", heartbeat: {} } });
    expect(leader.core.state().recovery).toEqual({ agentsPending: 2, offersHeld: false });
  });

  it("offers each agent as soon as it is back with its tasks, never one still to re-register (no quota: no hold, as Mesos)", () => {
    const leader = new NewLeader();
    leader.recover(REGISTRY);
    expect(leader.core.state().recovery).toEqual({ agentsPending: 2, offersHeld: false });
    leader.resubscribe("m1-F1");
    leader.tick(leader.now + 1000);
    expect(leader.offers()).toEqual([]);
    leader.reregister("m1-S1", [{ frameworkId: "m1-F1", taskId: "t1" }]);
    leader.tick(leader.now + 1000);
    // m1-S1's free part is offered; m1-S2, whose tasks are not known yet, is not.
    expect(leader.offers()).toEqual(["m1-S1"]);
    expect(leader.core.state().agents.find((a) => a.id === "m1-S1")!.offered).toEqual({ cpus: 3, mem: 3072 });
    leader.reregister("m1-S2", [1, 2, 3, 4].map((n) => ({ frameworkId: "m1-F1", taskId: `u${n}` })));
    leader.tick(leader.now + 1000);
    // m1-S2 came back with all of its cpus in use: nothing of it is offered.
    expect(leader.offers()).toEqual(["m1-S1"]);
    expect((leader.core.state().frameworks[0]!.tasks as unknown[]).length).toBe(5);
    // Agents that came back as the registry has them cost no registry write.
    expect(leader.effects.filter((e) => (e.type === "persist" && e.record.kind !== "framework") || e.type === "unpersist")).toEqual([]);
  });

  it("offers an agent that re-registers as `listening` at once, and one that does not only after its first pong", () => {
    const leader = new NewLeader();
    leader.recover(REGISTRY);
    leader.resubscribe("m1-F1");
    leader.reregister("m1-S1", [], [], { listening: true, pong: false });
    expect(leader.offers()).toEqual(["m1-S1"]);
    leader.reregister("m1-S2", [], [], { listening: false, pong: false });
    leader.tick(leader.now + 1000);
    expect(leader.offers()).toEqual(["m1-S1"]);
    leader.run(leader.core.handle({ type: "agent-message", senderId: "m1-S2", callId: "", message: { kind: "pong", pong: { seq: 0 } } }, leader.now));
    expect(leader.offers()).toEqual(["m1-S1", "m1-S2"]);
  });

  it("with recoveryAgentFraction 1, makes no offer until every agent is back with its tasks", () => {
    const leader = new NewLeader({ recoveryAgentFraction: 1 });
    leader.recover(REGISTRY);
    expect(leader.core.state().recovery).toEqual({ agentsPending: 2, offersHeld: true });
    leader.resubscribe("m1-F1");
    leader.reregister("m1-S1", [{ frameworkId: "m1-F1", taskId: "t1" }]);
    leader.tick(leader.now + 1500);
    expect(leader.offers()).toEqual([]);
    // The last agent re-registers with a task using all of its cpus: offers resume at once, and
    // neither agent's running tasks are offered.
    leader.reregister("m1-S2", [1, 2, 3, 4].map((n) => ({ frameworkId: "m1-F1", taskId: `u${n}` })));
    expect(leader.core.state().recovery).toEqual({ agentsPending: 0, offersHeld: false, lastOfferHoldMs: 1500 });
    expect(leader.offers()).toEqual(["m1-S1"]);
    expect(leader.core.state().agents.find((a) => a.id === "m1-S1")!.offered).toEqual({ cpus: 3, mem: 3072 });
  });

  it("holds offers until 80% of the agents are back when a role has a quota (Mesos's recovery factor)", () => {
    const agents = Array.from({ length: 10 }, (_, i) => `m1-S${i + 1}`);
    const records: RegistryRecord[] = [
      ...agents.map((id): RegistryRecord => ({ kind: "agent", id, info: agentInfo(id) })),
      { kind: "framework", id: "m1-F1", info: fwInfo("m1-F1") },
      { kind: "quota", id: "web", guarantees: { cpus: 2 }, limits: {} },
    ];
    const leader = new NewLeader();
    leader.recover(records);
    expect(leader.core.allocator.getQuotas().get("web")).toEqual({ guarantees: { cpus: 2 }, limits: {} });
    leader.resubscribe("m1-F1");
    for (const id of agents.slice(0, 7)) leader.reregister(id);
    leader.tick(leader.now + 1000);
    expect(leader.core.state().recovery).toMatchObject({ agentsPending: 3, offersHeld: true });
    expect(leader.offers()).toEqual([]);
    leader.reregister(agents[7]!);
    expect(leader.core.state().recovery).toMatchObject({ agentsPending: 2, offersHeld: false });
    leader.tick(leader.now + 1000);
    // Offers cover the eight agents that are back, and none of the two still missing.
    expect(new Set(leader.offers())).toEqual(new Set(agents.slice(0, 8)));
  });

  it("gives a framework with failover timeout 0 (the SDK's and Mesos's default) the keepalive window to re-subscribe before its failover timeout runs", () => {
    // Heartbeats every 1 s, 5 may be missed: a framework connected to the old leader has 5 s to reach this one.
    const leader = new NewLeader();
    leader.recover([
      { kind: "agent", id: "m1-S1", info: agentInfo("m1-S1") },
      { kind: "framework", id: "m1-F0", info: fwInfo("m1-F0", true, 0) },
    ]);
    leader.reregister("m1-S1", [{ frameworkId: "m1-F0", taskId: "t1" }]);
    // The first ticks of the new leader come at once: nothing is torn down, no task killed.
    const early = [...leader.tick(leader.now), ...leader.tick(leader.now + 4000)];
    expect(early.filter((e) => e.type === "to-agent" && (e.message.kind === "shutdownFramework" || e.message.kind === "killTask"))).toEqual([]);
    expect(early).not.toContainEqual({ type: "persist", record: { kind: "torn-down", id: "m1-F0" } });
    leader.resubscribe("m1-F0");
    expect(leader.core.state().frameworks).toMatchObject([{ id: "m1-F0", connected: true }]);
    expect((leader.core.state().frameworks[0]!.tasks as unknown[]).length).toBe(1);
  });

  it("tears a recovered framework down once the keepalive window and its failover timeout have passed without it", () => {
    const leader = new NewLeader();
    leader.recover([
      { kind: "agent", id: "m1-S1", info: agentInfo("m1-S1") },
      { kind: "framework", id: "m1-F0", info: fwInfo("m1-F0", true, 0) },
      { kind: "framework", id: "m1-F3", info: fwInfo("m1-F3", true, 3) },
    ]);
    leader.reregister("m1-S1", [{ frameworkId: "m1-F0", taskId: "t1" }]);
    const start = leader.now;
    expect(leader.tick(start + 4999).filter((e) => e.type === "persist" && e.record.kind === "torn-down")).toEqual([]);
    const atWindow = leader.tick(start + 5000);
    expect(atWindow).toContainEqual({ type: "persist", record: { kind: "torn-down", id: "m1-F0" } });
    expect(atWindow).toContainEqual({ type: "to-agent", agentId: "m1-S1", message: { kind: "shutdownFramework", shutdownFramework: { frameworkId: "m1-F0" } } });
    expect(leader.tick(start + 7999)).not.toContainEqual({ type: "persist", record: { kind: "torn-down", id: "m1-F3" } });
    expect(leader.tick(start + 8000)).toContainEqual({ type: "persist", record: { kind: "torn-down", id: "m1-F3" } });
  });

  it("tells connected frameworks of an agent that never re-registers, as of one lost to missed pings (Mesos's agent lost)", () => {
    const leader = new NewLeader({ agentReregisterTimeoutMs: 60_000 });
    leader.recover(REGISTRY);
    leader.resubscribe("m1-F1");
    leader.reregister("m1-S1", [{ frameworkId: "m1-F1", taskId: "t1" }]);
    const start = leader.now;
    // Heartbeats and pongs keep the framework and m1-S1 in while the new leader waits for m1-S2.
    for (let t = start + 1000; t < start + 60_000; t += 1000) {
      leader.tick(t);
      leader.run(leader.core.handle({ type: "scheduler-call", senderId: "m1-F1-driver", callId: `hb${t}`, call: { frameworkId: "m1-F1", kind: "heartbeat", heartbeat: {} } }, t));
      leader.run(leader.core.handle({ type: "agent-message", senderId: "m1-S1", callId: "", message: { kind: "pong", pong: { seq: 0 } } }, t));
    }
    expect(leader.effects.filter((e) => e.type === "to-framework" && e.event.kind === "failure")).toEqual([]);
    const expired = leader.tick(start + 60_000);
    expect(expired).toContainEqual({ type: "unpersist", kind: "agent", id: "m1-S2" });
    expect(expired).toContainEqual({ type: "to-framework", frameworkId: "m1-F1", event: { kind: "failure", failure: { agentId: "m1-S2" } } });
    expect(leader.core.state().recovery.agentsPending).toBe(0);
  });

  it("says nothing about an unknown task named without its agent while agents of the registry are still to re-register, as Mesos", () => {
    const leader = new NewLeader({ agentReregisterTimeoutMs: 60_000 });
    leader.recover([...REGISTRY, { kind: "framework", id: "m1-F2", info: fwInfo("m1-F2", false) }]);
    leader.resubscribe("m1-F1");
    leader.resubscribe("m1-F2", false);
    // t1 may well run on m1-S1 or m1-S2, which have not re-registered: LOST would have it replaced.
    expect(leader.reconcile("m1-F2", "t1", "")).toEqual([]);
    expect(leader.reconcile("m1-F1", "t1", "")).toEqual([]);
    leader.reregister("m1-S1", [{ frameworkId: "m1-F2", taskId: "t1" }]);
    expect(leader.reconcile("m1-F2", "t1", "").map((s) => s.state)).toEqual(["TASK_RUNNING"]);
    expect(leader.reconcile("m1-F2", "t2", "")).toEqual([]);
    // Once no agent is in transition, an unknown task is answered.
    leader.reregister("m1-S2");
    expect(leader.reconcile("m1-F2", "t2", "").map((s) => s.state)).toEqual(["TASK_LOST"]);
    expect(leader.reconcile("m1-F1", "t2", "").map((s) => s.state)).toEqual(["TASK_UNKNOWN"]);
  });

  it("restores operator-set weights and quotas from the registry, and persists new ones", () => {
    const leader = new NewLeader();
    leader.recover([...REGISTRY, { kind: "weight", id: "web", weight: 3 }, { kind: "quota", id: "batch", guarantees: { cpus: 1 }, limits: { cpus: 4 } }]);
    expect(leader.core.allocator.getWeights().get("web")).toBe(3);
    expect(leader.core.allocator.getQuotas().get("batch")).toEqual({ guarantees: { cpus: 1 }, limits: { cpus: 4 } });
    expect(leader.core.setWeights([{ role: "batch", weight: 2 }])).toEqual([{ type: "persist", record: { kind: "weight", id: "batch", weight: 2 } }]);
    expect(leader.core.setQuotas([{ role: "web", guarantees: { mem: 512 } }, { role: "batch" }])).toEqual([
      { type: "persist", record: { kind: "quota", id: "web", guarantees: { mem: 512 }, limits: {} } },
      { type: "unpersist", kind: "quota", id: "batch" },
    ]);
  });

  it("keeps an unreachable agent's lost tasks dead when it comes back after a failover", () => {
    // The old leader marked m1-S3 unreachable and told a framework that is not partition-aware its task was LOST.
    const leader = new NewLeader();
    leader.recover([{ kind: "unreachable-agent", id: "m1-S3", info: agentInfo("m1-S3"), sinceMs: 90_000 }, { kind: "framework", id: "m1-F2", info: fwInfo("m1-F2", false) }]);
    expect(leader.core.state().recovery.offersHeld).toBe(false);
    expect(leader.core.state().unreachableAgents).toEqual([{ id: "m1-S3", hostname: "m1-S3.local", sinceMs: 90_000 }]);
    leader.resubscribe("m1-F2", false);
    expect(leader.reconcile("m1-F2", "lost", "m1-S3").map((s) => s.state)).toEqual(["TASK_LOST"]);
    const effects = leader.reregister("m1-S3", [{ frameworkId: "m1-F2", taskId: "lost" }]);
    expect(effects).toContainEqual({ type: "to-agent", agentId: "m1-S3", message: { kind: "killTask", killTask: { frameworkId: "m1-F2", taskId: "lost" } } });
    expect(effects).toContainEqual({ type: "unpersist", kind: "unreachable-agent", id: "m1-S3" });
    expect(effects.findIndex((e) => e.type === "persist" && e.record.kind === "agent")).toBeLessThan(effects.findIndex((e) => e.type === "unpersist"));
  });

  it("prefers the removal when a crash left both an agent and its unreachable record", () => {
    const leader = new NewLeader();
    leader.recover([{ kind: "agent", id: "m1-S4", info: agentInfo("m1-S4") }, { kind: "unreachable-agent", id: "m1-S4", info: agentInfo("m1-S4"), sinceMs: 1 }]);
    expect(leader.core.state().recovery.agentsPending).toBe(0);
    expect(leader.core.sizes().unreachableAgents).toBe(1);
  });

  it("answers reconciliation for a gone agent's task with GONE, and forgets removed agents after the retention", () => {
    const leader = new NewLeader({ removedAgentRetentionMs: 60_000 });
    leader.recover([
      { kind: "gone-agent", id: "m1-S5", info: agentInfo("m1-S5"), sinceMs: 95_000 },
      { kind: "unreachable-agent", id: "m1-S6", info: agentInfo("m1-S6"), sinceMs: 99_000 },
      { kind: "framework", id: "m1-F1", info: fwInfo("m1-F1") },
    ]);
    leader.resubscribe("m1-F1");
    expect(leader.reconcile("m1-F1", "t", "m1-S5").map((s) => [s.state, s.message])).toEqual([["TASK_GONE", "Reconciliation: agent is gone"]]);
    const pruned = leader.tick(156_000);
    expect(pruned).toContainEqual({ type: "unpersist", kind: "gone-agent", id: "m1-S5" });
    expect(pruned).not.toContainEqual({ type: "unpersist", kind: "unreachable-agent", id: "m1-S6" });
    expect(leader.tick(220_000)).toContainEqual({ type: "unpersist", kind: "unreachable-agent", id: "m1-S6" });
    expect(leader.core.sizes()).toMatchObject({ goneAgents: 0, unreachableAgents: 0 });
  });
});

describe("what a leader persists about removed agents", () => {
  it("records an agent that missed its pings as unreachable (marker first), and one that left as gone", () => {
    const core = createMasterCore({ masterId: "m1", agentPingIntervalMs: 1000, maxMissedPings: 2 }, new SeededRng(5));
    const register = (instance: string) => {
      const effects = core.handle({ type: "agent-message", senderId: instance, callId: instance, message: { kind: "register", register: { version: "", agentInfo: agentInfo("") } } }, 0);
      const reply = effects.find((e) => e.type === "reply");
      if (reply?.type !== "reply" || reply.payload.payload !== "masterToAgent" || reply.payload.masterToAgent.kind !== "registered") throw new Error("no registration");
      return reply.payload.masterToAgent.registered.agentId;
    };
    const silent = register("a");
    const leaving = register("b");
    const left = core.handle({ type: "agent-message", senderId: leaving, callId: "", message: { kind: "unregisterNotice", unregisterNotice: { reason: "shutting down" } } }, 500);
    expect(left.filter((e) => e.type === "persist" || e.type === "unpersist")).toEqual([
      { type: "persist", record: { kind: "gone-agent", id: leaving, info: expect.objectContaining({ id: leaving }), sinceMs: 500 } },
      { type: "unpersist", kind: "agent", id: leaving },
    ]);
    const lost = core.handle({ type: "tick" }, 2500);
    expect(lost.filter((e) => e.type === "persist" || e.type === "unpersist")).toEqual([
      { type: "persist", record: { kind: "unreachable-agent", id: silent, info: expect.objectContaining({ id: silent }), sinceMs: 2500 } },
      { type: "unpersist", kind: "agent", id: silent },
    ]);
  });
});

describe("tasks of a framework with several roles, after a failover", () => {
  const multiInfo = (id = ""): FrameworkInfo => ({ id, name: "multi", roles: ["web", "batch"], principal: "", failoverTimeoutSeconds: 60, checkpoint: true, partitionAware: true, hostname: "" });
  /** What each role's tasks take, different per role so that charging one role's task to the other shows. */
  const SIZES: Record<string, string> = { web: "cpus:1;mem:1024", batch: "cpus:2;mem:512" };

  /** What `frameworkId` holds on `agentId`, by role, as the allocator counts it. */
  function perRole(core: MasterCore, agentId: string, frameworkId: string): Record<string, string> {
    const byRole = core.allocator.agentView(agentId)?.allocations.get(frameworkId) ?? new Map<string, Resources>();
    return Object.fromEntries([...byRole].map(([role, resources]) => [role, resources.toString()]).sort());
  }

  /**
   * The old leader: a two-role framework launches one task per role on one agent, through offers,
   * then declines what is left. Answers what the agent was sent (and reports back when it
   * re-registers, as the real agent reports the TaskInfo it checkpointed), the registry the old
   * leader wrote, and its allocation by role.
   */
  function oldLeader() {
    const core = createMasterCore({ masterId: "m1", agentPingIntervalMs: 1000, frameworkHeartbeatIntervalMs: 1000, allocationIntervalMs: 1000 }, new SeededRng(4));
    const effects: MasterEffect[] = [];
    let now = 0;
    const handle = (input: Parameters<MasterCore["handle"]>[0]) => {
      const out = core.handle(input, now);
      effects.push(...out);
      return out;
    };
    const subscribed = handle({ type: "scheduler-call", senderId: "multi-driver", callId: "s1", call: { frameworkId: "", kind: "subscribe", subscribe: { frameworkInfo: multiInfo() } } });
    const reply = subscribed.find((e) => e.type === "reply");
    if (reply?.type !== "reply" || reply.payload.payload !== "schedulerEvent" || reply.payload.schedulerEvent.kind !== "subscribed") throw new Error("no subscription");
    const frameworkId = reply.payload.schedulerEvent.subscribed.frameworkId;
    const call = (body: Record<string, unknown>, id: string) => handle({ type: "scheduler-call", senderId: "multi-driver", callId: id, call: { frameworkId, ...body } as never });
    call({ kind: "heartbeat", heartbeat: {} }, "h1");
    const registered = handle({ type: "agent-message", senderId: "inst-1", callId: "r1", message: { kind: "register", register: { version: "", agentInfo: agentInfo("") } } });
    const agentReply = registered.find((e) => e.type === "reply");
    if (agentReply?.type !== "reply" || agentReply.payload.payload !== "masterToAgent" || agentReply.payload.masterToAgent.kind !== "registered") throw new Error("no registration");
    const agentId = agentReply.payload.masterToAgent.registered.agentId;
    handle({ type: "agent-message", senderId: agentId, callId: "", message: { kind: "pong", pong: { seq: 0 } } });
    const launched = new Set<string>();
    const answered = new Set<string>();
    for (let round = 0; round < 10 && launched.size < 2; round++) {
      now += 1000;
      handle({ type: "tick" });
      call({ kind: "heartbeat", heartbeat: {} }, `h${round + 2}`);
      for (const e of [...effects]) {
        if (e.type !== "to-framework" || e.event.kind !== "offers") continue;
        for (const offer of e.event.offers.offers) {
          if (answered.has(offer.id)) continue;
          answered.add(offer.id);
          // One task per role; what is left comes back at the next run (refuse 0), for the other role.
          const tasks = launched.has(offer.role) ? [] : [{ ...taskInfo(`${offer.role}-1`, agentId), resources: resourcesToWire(Resources.parse(SIZES[offer.role]!)) }];
          launched.add(offer.role);
          call({ kind: "accept", accept: { offerIds: [offer.id], operations: [{ kind: "launch", launch: { taskInfos: tasks } }], filters: { refuseSeconds: launched.size < 2 ? 0 : 3600 } } }, `a-${offer.id}`);
        }
      }
    }
    // Whatever is still offered goes back, so the allocator holds the two tasks only.
    for (const e of [...effects]) {
      if (e.type !== "to-framework" || e.event.kind !== "offers") continue;
      for (const offer of e.event.offers.offers) if (!answered.has(offer.id)) call({ kind: "decline", decline: { offerIds: [offer.id], filters: { refuseSeconds: 3600 } } }, `d-${offer.id}`);
    }
    const runTasks = effects.flatMap((e) => (e.type === "to-agent" && e.message.kind === "runTask" ? [e.message.runTask] : []));
    const registry = effects.flatMap((e) => (e.type === "persist" ? [e.record] : []));
    return { core, frameworkId, agentId, runTasks, registry, before: perRole(core, agentId, frameworkId) };
  }

  /** The agent re-registers with the new leader, reporting what it was sent, each task RUNNING. */
  function reregisterWith(leader: NewLeader, agentId: string, frameworkId: string, tasks: TaskInfo[], frameworks: FrameworkInfo[]): MasterEffect[] {
    const reported = tasks.map((task) => ({ frameworkId, task, status: running(task.taskId, agentId, frameworkId) }));
    return leader.run(leader.core.handle({ type: "agent-message", senderId: agentId, callId: "rr", message: { kind: "reregister", reregister: { version: "", agentInfo: agentInfo(agentId), tasks: reported, frameworks, listening: true } } }, leader.now));
  }

  it("charges each task to the role it was launched in, as before the failover", () => {
    const old = oldLeader();
    expect(old.before).toEqual({ batch: SIZES.batch, web: SIZES.web });
    expect(old.runTasks.map((r) => r.task!.taskId).sort()).toEqual(["batch-1", "web-1"]);
    const leader = new NewLeader();
    leader.recover(old.registry);
    reregisterWith(leader, old.agentId, old.frameworkId, old.runTasks.map((r) => r.task!), [old.runTasks[0]!.framework!]);
    expect(perRole(leader.core, old.agentId, old.frameworkId)).toEqual(old.before);
    const tasks = leader.core.state().frameworks[0]!.tasks as Array<{ id: string; role: string }>;
    expect(tasks.map((t) => [t.id, t.role]).sort()).toEqual([["batch-1", "batch"], ["web-1", "web"]]);
  });

  it("charges them so too when the new leader learns of the framework only from the agent", () => {
    const old = oldLeader();
    const leader = new NewLeader();
    leader.recover(old.registry.filter((r) => r.kind !== "framework"));
    reregisterWith(leader, old.agentId, old.frameworkId, old.runTasks.map((r) => r.task!), [old.runTasks[0]!.framework!]);
    expect(leader.core.state().frameworks.map((f) => f.id)).toEqual([old.frameworkId]);
    expect(perRole(leader.core, old.agentId, old.frameworkId)).toEqual(old.before);
  });

  it("charges a task an older agent reports without its role to the framework's first role, and says so", () => {
    const old = oldLeader();
    const leader = new NewLeader();
    leader.recover(old.registry);
    const tasks = old.runTasks.map((r) => r.task!);
    const batch = tasks.find((t) => t.taskId === "batch-1")!;
    const { allocationRole: _dropped, ...withoutRole } = batch;
    const effects = reregisterWith(leader, old.agentId, old.frameworkId, [...tasks.filter((t) => t !== batch), withoutRole], []);
    expect(perRole(leader.core, old.agentId, old.frameworkId)).toEqual({ web: "cpus:3;mem:1536" });
    expect(effects).toContainEqual({
      type: "log",
      level: "warn",
      msg: "tasks reported without their allocation role are charged to their framework's first role",
      fields: { agentId: old.agentId, count: 1, tasks: [`${old.frameworkId}/batch-1`] },
    });
  });

  it("skips, and logs, a task reported with a role that is no role name; admits the agent with the others", () => {
    const old = oldLeader();
    const leader = new NewLeader();
    leader.recover(old.registry);
    const tasks = old.runTasks.map((r) => (r.task!.taskId === "batch-1" ? { ...r.task!, allocationRole: "../etc" } : r.task!));
    const effects = reregisterWith(leader, old.agentId, old.frameworkId, tasks, []);
    expect(effects.some((e) => e.type === "reply" && e.payload.payload === "masterToAgent" && e.payload.masterToAgent.kind === "reregistered")).toBe(true);
    expect(perRole(leader.core, old.agentId, old.frameworkId)).toEqual({ web: SIZES.web });
    const skipped = effects.find((e) => e.type === "log" && e.msg === "ignoring a task reported by a re-registering agent");
    expect(skipped).toMatchObject({ level: "warn", fields: { taskId: "batch-1", problem: expect.stringContaining("task.allocationRole '../etc': role path components must not be '..'") } });
  });

  it("keeps a task charged to a role its framework has left since, until the task ends (as Mesos tracks it there)", () => {
    const old = oldLeader();
    const leader = new NewLeader();
    // The framework re-subscribed with web alone after launching batch-1: the registry has that.
    leader.recover(old.registry.map((r) => (r.kind === "framework" ? { ...r, info: { ...r.info, roles: ["web"] } } : r)));
    reregisterWith(leader, old.agentId, old.frameworkId, old.runTasks.map((r) => r.task!), []);
    expect(perRole(leader.core, old.agentId, old.frameworkId)).toEqual(old.before);
    const finished = { ...running("batch-1", old.agentId, old.frameworkId), state: "TASK_FINISHED" as const, uuid: new Uint8Array([1]) };
    leader.run(leader.core.handle({ type: "agent-message", senderId: old.agentId, callId: "", message: { kind: "statusUpdate", statusUpdate: { frameworkId: old.frameworkId, status: finished } } }, leader.now));
    expect(perRole(leader.core, old.agentId, old.frameworkId)).toEqual({ web: SIZES.web });
    expect(leader.core.allocator.knownRoles()).toEqual(["web"]);
  });
});

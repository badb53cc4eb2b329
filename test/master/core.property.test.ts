/**
 * Property tests of the master core (fast-check): random sequences of calls and agent messages,
 * many of them hostile (unknown or foreign offer ids, offers named twice, tasks bigger than their
 * offers or holding the same port, duplicate task ids, updates from strangers, re-registrations
 * with made-up tasks or in another agent's name, calls from scheduler instances replaced by a
 * failover), thrown at one core. Whatever arrives, the core must answer or drop it
 * without throwing (a throw is a dropped message whose effects are lost after the state changed),
 * everything it sends must be encodable, and its books must stay consistent.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Resources } from "../../sdk/resources.ts";
import { SeededRng } from "../../sdk/rng.ts";
import { encodeEnvelope, type EnvelopePayload } from "../../sdk/wire/codec.ts";
import { resourcesToWire } from "../../sdk/wire/resources.ts";
import { TERMINAL_TASK_STATES, type AgentInfo, type FrameworkInfo, type TaskInfo, type TaskState, type TaskStatus } from "../../sdk/wire/types.ts";
import { createMasterCore, type MasterCore, type MasterEffect, type MasterInput } from "../../master/core.ts";

const AGENT_RESOURCES = ["cpus:4;mem:4096;ports:[31000-31010]", "cpus:1;mem:256", "cpus:4;cpus(web):2;mem:4096"];
const TASK_RESOURCES = ["cpus:1;mem:128", "cpus:100;mem:1", "cpus:0.5;mem:64;ports:[31000-31000]", "cpus(web):1;mem:32", "cpus:1;mem:128;disk:5"];
const TASK_IDS = ["t1", "t2", "t3"];
const STATES: TaskState[] = ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED"];

/** One input, with indexes into the ids seen so far (taken modulo their number, so any index is usable). */
type Step =
  | { kind: "register"; instance: number; resources: number }
  | { kind: "reregister"; agent: number; resources: number; listening: boolean; tasks: Array<{ framework: number; task: number; resources: number; state: number }>; reportFramework: boolean; impostor: number | undefined }
  | { kind: "pong"; agent: number }
  | { kind: "status"; agent: number; framework: number; task: number; state: number; uuid: number; latest: number | undefined }
  /** An update of a task the master has active, from its own agent: the head's state and the stream's latest state. */
  | { kind: "progress"; task: number; state: number; uuid: number; latest: number | undefined }
  /** Accepts an outstanding offer (as its framework's current instance) with one task. */
  | { kind: "launch"; offer: number; task: number; resources: number }
  | { kind: "unregister"; agent: number }
  | { kind: "subscribe"; framework: number; failover: boolean; roles: number; partitionAware: boolean; sender: number }
  | { kind: "accept"; framework: number; offers: number[]; tasks: Array<{ task: number; resources: number; agent: number }>; refuseSeconds: number | undefined; sender: number }
  | { kind: "decline"; framework: number; offer: number; sender: number }
  | { kind: "revive" | "suppress"; framework: number; roles: number; sender: number }
  | { kind: "kill" | "reconcile" | "acknowledge" | "teardown" | "heartbeat"; framework: number; task: number; agent: number; sender: number }
  | { kind: "tick"; advanceMs: number };

const idx = fc.nat(20);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant("register" as const), instance: fc.nat(3), resources: idx }),
  fc.record({
    kind: fc.constant("reregister" as const),
    agent: idx,
    resources: idx,
    listening: fc.boolean(),
    tasks: fc.array(fc.record({ framework: idx, task: idx, resources: idx, state: idx }), { maxLength: 3 }),
    reportFramework: fc.boolean(),
    impostor: fc.option(idx, { nil: undefined, freq: 4 }),
  }),
  fc.record({ kind: fc.constant("pong" as const), agent: idx }),
  fc.record({ kind: fc.constant("status" as const), agent: idx, framework: idx, task: idx, state: idx, uuid: fc.nat(255), latest: fc.option(idx, { nil: undefined }) }),
  fc.record({ kind: fc.constant("progress" as const), task: idx, state: idx, uuid: fc.nat(255), latest: fc.option(idx, { nil: undefined }) }),
  fc.record({ kind: fc.constant("launch" as const), offer: idx, task: idx, resources: idx }),
  fc.record({ kind: fc.constant("unregister" as const), agent: idx }),
  fc.record({ kind: fc.constant("subscribe" as const), framework: idx, failover: fc.boolean(), roles: idx, partitionAware: fc.boolean(), sender: fc.nat(3) }),
  fc.record({
    kind: fc.constant("accept" as const),
    framework: idx,
    offers: fc.array(idx, { minLength: 1, maxLength: 3 }),
    tasks: fc.array(fc.record({ task: idx, resources: idx, agent: idx }), { maxLength: 3 }),
    refuseSeconds: fc.option(fc.constantFrom(0, 1, -1, 1e9), { nil: undefined }),
    sender: fc.nat(3),
  }),
  fc.record({ kind: fc.constant("decline" as const), framework: idx, offer: idx, sender: fc.nat(3) }),
  fc.record({ kind: fc.constantFrom("revive" as const, "suppress" as const), framework: idx, roles: idx, sender: fc.nat(3) }),
  fc.record({ kind: fc.constantFrom("kill" as const, "reconcile" as const, "acknowledge" as const, "teardown" as const, "heartbeat" as const), framework: idx, task: idx, agent: idx, sender: fc.nat(3) }),
  fc.record({ kind: fc.constant("tick" as const), advanceMs: fc.nat(4000) }),
);

const at = <T,>(list: readonly T[], i: number): T => list[i % list.length]!;
const ROLE_SETS = [["web"], ["web", "batch"], ["batch"]];

/** Plays `steps` on a fresh core and checks the properties after each one. */
function play(steps: Step[], offerTimeoutMs: number | undefined): void {
  const core = createMasterCore({ masterId: "m1", agentPingIntervalMs: 1000, maxMissedPings: 3, frameworkHeartbeatIntervalMs: 1000, maxTasksPerAgent: 3, offerTimeoutMs }, new SeededRng(1));
  // Ids the master handed out, plus ones it never did.
  const agents = ["stranger"];
  const frameworks = ["no-such-framework"];
  const offers = ["no-such-offer"];
  const uuids: Uint8Array[] = [new Uint8Array([1])];
  let now = 0;
  let call = 0;
  const agentInfo = (id: string, resources: number): AgentInfo => ({ id, hostname: "h", resources: resourcesToWire(Resources.parse(at(AGENT_RESOURCES, resources))), attributes: [], httpEndpoint: "" });
  const taskInfo = (taskId: string, resources: number, agentId: string): TaskInfo => ({
    taskId,
    name: taskId,
    agentId,
    resources: resourcesToWire(Resources.parse(at(TASK_RESOURCES, resources))),
    command: { value: "x", arguments: [], shell: true, environment: {}, user: "" },
    labels: {},
  });
  const status = (taskId: string, frameworkId: string, agentId: string, state: number, uuid: Uint8Array): TaskStatus => ({
    taskId,
    state: at(STATES, state),
    message: "",
    source: "SOURCE_AGENT",
    reason: "REASON_UNSPECIFIED",
    agentId,
    frameworkId,
    uuid,
    timestamp: 0,
  });
  const frameworkInfo = (id: string, roles: number, partitionAware: boolean): FrameworkInfo => ({
    id,
    name: "fw",
    roles: at(ROLE_SETS, roles),
    principal: "",
    failoverTimeoutSeconds: 5,
    checkpoint: true,
    partitionAware,
    hostname: "",
  });
  // The instance that subscribed each framework last, as the master's replies tell.
  const subscribers = new Map<string, string>();
  /**
   * A call's sender: for SUBSCRIBE one of four instances; for other calls mostly (0, 1) the
   * framework's current subscriber, sometimes (2, 3) an instance that may have been replaced.
   */
  const senderOf = (sender: number, frameworkId: string, subscribe: boolean): string =>
    subscribe ? `driver-${sender}` : sender < 2 ? (subscribers.get(frameworkId) ?? "driver-0") : `driver-${sender - 2}`;
  const schedulerCall = (sender: number, frameworkId: string, body: Record<string, unknown>): MasterInput =>
    ({ type: "scheduler-call", senderId: senderOf(sender, frameworkId, body.kind === "subscribe"), callId: `c${++call}`, call: { frameworkId, ...body } }) as MasterInput;

  for (const step of steps) {
    let input: MasterInput;
    switch (step.kind) {
      case "register":
        input = { type: "agent-message", senderId: `instance-${step.instance}`, callId: `r${++call}`, message: { kind: "register", register: { version: "", agentInfo: agentInfo("", step.resources) } } };
        break;
      case "reregister": {
        const agentId = at(agents, step.agent);
        const tasks = step.tasks.map((t) => {
          const frameworkId = at(frameworks, t.framework);
          const taskId = at(TASK_IDS, t.task);
          return { frameworkId, task: taskInfo(taskId, t.resources, agentId), status: status(taskId, frameworkId, agentId, t.state, new Uint8Array(0)) };
        });
        const reported = step.reportFramework && tasks[0] ? [frameworkInfo(tasks[0].frameworkId, 0, false)] : [];
        // Now and then sent by another agent, in this one's name.
        const senderId = step.impostor === undefined ? agentId : at(agents, step.impostor);
        input = { type: "agent-message", senderId, callId: `r${++call}`, message: { kind: "reregister", reregister: { version: "", listening: step.listening, agentInfo: agentInfo(agentId, step.resources), tasks, frameworks: reported } } };
        break;
      }
      case "pong":
        input = { type: "agent-message", senderId: at(agents, step.agent), callId: "", message: { kind: "pong", pong: { seq: 0 } } };
        break;
      case "status": {
        const agentId = at(agents, step.agent);
        const frameworkId = at(frameworks, step.framework);
        const s = status(at(TASK_IDS, step.task), frameworkId, agentId, step.state, new Uint8Array([step.uuid]));
        // The stream's latest state, from an agent that says (any state, also one behind the head), or none from an older one.
        const latest = step.latest === undefined ? {} : { latestState: at(STATES, step.latest) };
        input = { type: "agent-message", senderId: agentId, callId: "", message: { kind: "statusUpdate", statusUpdate: { frameworkId, status: s, ...latest } } };
        break;
      }
      case "progress": {
        // The master's active tasks, as it shows them; without any, an update of an unknown task.
        const active = core.state().frameworks.flatMap((f) => (f.tasks as Array<{ id: string; agentId: string }>).map((t) => ({ frameworkId: String(f.id), taskId: t.id, agentId: t.agentId })));
        const target = active.length > 0 ? at(active, step.task) : { frameworkId: at(frameworks, 0), taskId: at(TASK_IDS, step.task), agentId: at(agents, 0) };
        const s = status(target.taskId, target.frameworkId, target.agentId, step.state, new Uint8Array([step.uuid]));
        const latest = step.latest === undefined ? {} : { latestState: at(STATES, step.latest) };
        input = { type: "agent-message", senderId: target.agentId, callId: "", message: { kind: "statusUpdate", statusUpdate: { frameworkId: target.frameworkId, status: s, ...latest } } };
        break;
      }
      case "launch": {
        const outstanding = core.state().frameworks.flatMap((f) => (f.offers as Array<{ id: string }>).map((o) => ({ frameworkId: String(f.id), offerId: o.id })));
        const chosen = outstanding.length > 0 ? at(outstanding, step.offer) : { frameworkId: at(frameworks, 0), offerId: at(offers, step.offer) };
        const taskInfos = [taskInfo(at(TASK_IDS, step.task), step.resources, "")];
        input = schedulerCall(0, chosen.frameworkId, { kind: "accept", accept: { offerIds: [chosen.offerId], operations: [{ kind: "launch", launch: { taskInfos } }], filters: { refuseSeconds: 0 } } });
        break;
      }
      case "unregister":
        input = { type: "agent-message", senderId: at(agents, step.agent), callId: "", message: { kind: "unregisterNotice", unregisterNotice: { reason: "" } } };
        break;
      case "subscribe": {
        const id = step.failover ? at(frameworks, step.framework) : "";
        input = schedulerCall(step.sender, id, { kind: "subscribe", subscribe: { frameworkInfo: frameworkInfo(id, step.roles, step.partitionAware) } });
        break;
      }
      case "accept": {
        const taskInfos = step.tasks.map((t) => taskInfo(at(TASK_IDS, t.task), t.resources, at(agents, t.agent)));
        const filters = step.refuseSeconds === undefined ? {} : { filters: { refuseSeconds: step.refuseSeconds } };
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "accept", accept: { offerIds: step.offers.map((o) => at(offers, o)), operations: [{ kind: "launch", launch: { taskInfos } }], ...filters } });
        break;
      }
      case "decline":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "decline", decline: { offerIds: [at(offers, step.offer)], filters: { refuseSeconds: 1 } } });
        break;
      case "revive":
      case "suppress":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: step.kind, [step.kind]: { roles: at([[], ["web"], ["other"]], step.roles) } });
        break;
      case "kill":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "kill", kill: { taskId: at(TASK_IDS, step.task), agentId: at(agents, step.agent) } });
        break;
      case "reconcile":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "reconcile", reconcile: { tasks: step.task % 2 === 0 ? [] : [{ taskId: at(TASK_IDS, step.task), agentId: at(agents, step.agent) }] } });
        break;
      case "acknowledge":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "acknowledge", acknowledge: { taskId: at(TASK_IDS, step.task), agentId: at(agents, step.agent), uuid: at(uuids, step.task) } });
        break;
      case "teardown":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "teardown", teardown: {} });
        break;
      case "heartbeat":
        input = schedulerCall(step.sender, at(frameworks, step.framework), { kind: "heartbeat", heartbeat: {} });
        break;
      case "tick":
        now += step.advanceMs;
        input = { type: "tick" };
        break;
    }
    const before = input.type === "scheduler-call" || input.type === "agent-message" ? JSON.stringify(core.state()) : "";
    let effects: MasterEffect[] = [];
    expect(() => (effects = core.handle(input, now)), `handling ${step.kind}`).not.toThrow();
    if (input.type === "scheduler-call") checkSubscriberRule(input, effects, subscribers, before, JSON.stringify(core.state()));
    if (input.type === "agent-message" && input.message.kind === "reregister" && input.message.reregister.agentInfo?.id !== input.senderId) {
      // An agent re-registers only itself: one claiming another's id is refused and changes nothing.
      expect(effects.filter((e) => e.type !== "log")).toEqual([{ type: "reply", payload: { payload: "callResponse", callResponse: expect.objectContaining({ ok: false, errorCode: "CORRAL_ERR_INVALID_CALL" }) } }]);
      expect(JSON.stringify(core.state()), "state after a refused re-registration").toBe(before);
    }
    for (const effect of effects) {
      learnIds(effect, agents, frameworks, offers, uuids);
      const payload = sentPayload(effect);
      if (payload) expect(() => encodeEnvelope({ senderId: "m1", ...payload }), `encoding ${effect.type}`).not.toThrow();
    }
    // A task's resources go back to the allocator once: a second time would be refused, or taken
    // from what has been allocated since.
    expect(effects.filter((e) => e.type === "log" && e.msg === "task resources were not allocated"), `after ${step.kind}`).toEqual([]);
    expect(bookProblems(core), `after ${step.kind}`).toEqual([]);
  }
}

/**
 * Only the instance that subscribed a framework last may call for it: another one's call (other
 * than SUBSCRIBE, which is how a failover happens) is refused, and changes nothing.
 */
function checkSubscriberRule(input: Extract<MasterInput, { type: "scheduler-call" }>, effects: MasterEffect[], subscribers: Map<string, string>, before: string, after: string): void {
  const reply = effects.find((e) => e.type === "reply")?.payload;
  const { frameworkId, kind } = input.call;
  if (kind === "subscribe") {
    if (reply?.payload === "schedulerEvent" && reply.schedulerEvent.kind === "subscribed") subscribers.set(reply.schedulerEvent.subscribed.frameworkId, input.senderId);
    return;
  }
  const response = reply?.payload === "callResponse" ? reply.callResponse : undefined;
  const current = subscribers.get(frameworkId);
  if (current !== undefined && current !== input.senderId) {
    expect(response?.ok, `${kind} from replaced instance ${input.senderId}`).toBe(false);
    expect(["CORRAL_ERR_FRAMEWORK_FAILED_OVER", "CORRAL_ERR_NOT_SUBSCRIBED", "CORRAL_ERR_FRAMEWORK_REMOVED"]).toContain(response?.errorCode);
  }
  if (response?.errorCode === "CORRAL_ERR_FRAMEWORK_FAILED_OVER") {
    expect(current, `${kind} refused as failed over`).not.toBe(input.senderId);
    expect(effects.filter((e) => e.type !== "reply"), `effects of a refused ${kind}`).toEqual([]);
    expect(after, `state after a refused ${kind}`).toBe(before);
  }
}

function learnIds(effect: MasterEffect, agents: string[], frameworks: string[], offers: string[], uuids: Uint8Array[]): void {
  if (effect.type === "reply" && effect.payload.payload === "schedulerEvent" && effect.payload.schedulerEvent.kind === "subscribed") frameworks.push(effect.payload.schedulerEvent.subscribed.frameworkId);
  if (effect.type === "reply" && effect.payload.payload === "masterToAgent" && effect.payload.masterToAgent.kind === "registered") agents.push(effect.payload.masterToAgent.registered.agentId);
  if (effect.type === "to-framework" && effect.event.kind === "offers") offers.push(...effect.event.offers.offers.map((o) => o.id));
  if (effect.type === "to-framework" && effect.event.kind === "update" && effect.event.update.status?.uuid.length) uuids.push(effect.event.update.status.uuid);
}

function sentPayload(effect: MasterEffect): EnvelopePayload | undefined {
  if (effect.type === "reply") return effect.payload;
  if (effect.type === "to-framework") return { payload: "schedulerEvent", schedulerEvent: effect.event };
  if (effect.type === "to-agent") return { payload: "masterToAgent", masterToAgent: effect.message };
  return undefined;
}

/**
 * What would show the master's books disagreeing: the allocator's own invariants, an active task
 * on an agent the master does not have (only an UNREACHABLE one may be, or one whose end its agent
 * reported before the agent was lost), an agent whose task count differs from the frameworks'
 * tasks on it, or what is allocated outside offers on an agent differing from what its tasks
 * hold. An active task in a terminal state is one whose end the agent reported ahead of its
 * terminal update (its latest state): it is counted on its agent but holds nothing.
 */
function bookProblems(core: MasterCore): string[] {
  const problems = [...core.allocator.checkInvariants()];
  const state = core.state();
  const held = new Map<string, { count: number; resources: Record<string, number> }>();
  const agentIds = new Set(state.agents.map((a) => String(a.id)));
  for (const framework of state.frameworks) {
    for (const task of framework.tasks as Array<{ id: string; agentId: string; state: string; resources: Record<string, number> }>) {
      const ended = TERMINAL_TASK_STATES.has(task.state as TaskState);
      if (task.state === "TASK_UNREACHABLE" || (ended && !agentIds.has(task.agentId))) continue;
      const entry = held.get(task.agentId) ?? { count: 0, resources: {} };
      entry.count++;
      if (!ended) for (const [name, value] of Object.entries(task.resources)) entry.resources[name] = (entry.resources[name] ?? 0) + value;
      held.set(task.agentId, entry);
    }
  }
  for (const agentId of held.keys()) if (!agentIds.has(agentId)) problems.push(`tasks on agent ${agentId}, which the master does not have`);
  for (const agent of state.agents) {
    const entry = held.get(String(agent.id)) ?? { count: 0, resources: {} };
    if (agent.tasks !== entry.count) problems.push(`agent ${String(agent.id)} counts ${String(agent.tasks)} tasks, the frameworks ${entry.count}`);
    const used = agent.used as Record<string, number>;
    for (const name of new Set([...Object.keys(used), ...Object.keys(entry.resources)])) {
      if (Math.abs((used[name] ?? 0) - (entry.resources[name] ?? 0)) > 1e-6) problems.push(`agent ${String(agent.id)}: ${used[name] ?? 0} ${name} allocated outside offers, its tasks hold ${entry.resources[name] ?? 0}`);
    }
  }
  return problems;
}

/**
 * A world where tasks run: two agents, a partition-aware framework and one that is not, each
 * launching on its offers; random steps follow it, so that updates of live tasks (and their
 * latest states) meet kills, agent losses, re-registrations and teardowns.
 */
const BUSY_WORLD: Step[] = [
  { kind: "register", instance: 0, resources: 0 },
  { kind: "register", instance: 1, resources: 0 },
  { kind: "pong", agent: 1 },
  { kind: "pong", agent: 2 },
  { kind: "subscribe", framework: 0, failover: false, roles: 0, partitionAware: true, sender: 0 },
  { kind: "subscribe", framework: 0, failover: false, roles: 0, partitionAware: false, sender: 1 },
  { kind: "heartbeat", framework: 1, task: 0, agent: 0, sender: 0 },
  { kind: "heartbeat", framework: 2, task: 0, agent: 0, sender: 0 },
  { kind: "tick", advanceMs: 1000 },
  ...[0, 1, 2].flatMap((task): Step[] => [
    { kind: "launch", offer: 0, task, resources: 0 },
    { kind: "launch", offer: 1, task, resources: 2 },
    // What is left is offered again at the next allocation; the agents answer their pings.
    { kind: "tick", advanceMs: 1000 },
    { kind: "pong", agent: 1 },
    { kind: "pong", agent: 2 },
  ]),
];

describe("master core properties (fast-check)", () => {
  it("answers or drops any sequence of calls and agent messages without throwing, and keeps its books consistent", () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 150 }), fc.option(fc.constant(2000), { nil: undefined }), (steps, offerTimeoutMs) => play(steps, offerTimeoutMs)),
      { numRuns: 200 },
    );
  });

  it("keeps its books consistent while running tasks' updates, with the latest states of their streams, meet every other input", () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 10, maxLength: 100 }), fc.option(fc.constant(2000), { nil: undefined }), (steps, offerTimeoutMs) => play([...BUSY_WORLD, ...steps], offerTimeoutMs)),
      { numRuns: 150 },
    );
  });
});

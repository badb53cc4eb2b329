import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { SeededRng } from "../../sdk/rng.ts";
import { Resources } from "../../sdk/resources.ts";
import { isTransportError } from "../../sdk/transport.ts";
import { SCHEMA_VERSION, decodeEnvelope, encodeEnvelope, wireRoot } from "../../sdk/wire/codec.ts";
import { resourcesFromWire, resourcesToWire } from "../../sdk/wire/resources.ts";
import { masterAgentSubject, masterSchedulerSubject } from "../../sdk/wire/subjects.ts";
import type { TaskInfo } from "../../sdk/wire/types.ts";
import type { MasterConfig, RegistryRecord } from "../../master/core.ts";
import { createMaster, registryBucketName, type Master, type MasterOptions } from "../../master/shell.ts";
import { JetStreamRegistryStore, MemoryRegistryStore, type RegistryKind, type RegistryStore } from "../../master/store.ts";
import { within } from "../harness/events.ts";
import { useNats } from "../harness/nats.ts";
import { recordingFramework, startCluster } from "../harness/cluster.ts";
import { FakeAgent, FakeFramework, eventually, memoryLog } from "./fakes.ts";

const nats = useNats();

/** Fast protocol timers so a test sees pings and heartbeats within milliseconds. */
const FAST: Partial<MasterConfig> = {
  agentPingIntervalMs: 100,
  maxMissedPings: 100,
  frameworkHeartbeatIntervalMs: 200,
  maxMissedFrameworkHeartbeats: 100,
  allocationIntervalMs: 100,
};

const transports: NatsTransport[] = [];
const masters: Master[] = [];

afterEach(async () => {
  await Promise.all(masters.splice(0).map((m) => m.stop()));
  await Promise.all(transports.splice(0).map((t) => t.close()));
});

async function bus(name: string): Promise<NatsTransport> {
  const t = await connectNats({ servers: nats.url, name });
  transports.push(t);
  return t;
}

async function startMaster(options: Partial<MasterOptions> & { cluster: string }): Promise<Master> {
  const master = createMaster({
    transport: await bus(`master-${options.cluster}`),
    log: memoryLog("warn").log,
    config: FAST,
    rng: new SeededRng(options.cluster),
    ...options,
  });
  masters.push(master);
  await master.start();
  return master;
}

let clusters = 0;
function cluster(): string {
  return `shell${++clusters}x${process.pid}`;
}

function task(taskId: string, agentId: string, resources = "cpus:0.5;mem:128"): TaskInfo {
  return {
    taskId,
    name: taskId,
    agentId,
    resources: resourcesToWire(Resources.parse(resources)),
    command: { value: "sleep 60", arguments: [], shell: true, environment: {}, user: "" },
    labels: {},
  };
}

async function metricsOf(master: Master): Promise<string> {
  const response = await fetch(`${master.httpUrl()}/metrics`);
  expect(response.status).toBe(200);
  return response.text();
}

describe("master shell on a real nats-server", () => {
  it("registers and pings an agent, offers it, launches a task, routes its update and the acknowledgement", async () => {
    const name = cluster();
    const master = await startMaster({ cluster: name });
    const agent = await FakeAgent.register(await bus("agent"), name, { resources: "cpus:2;mem:1024" });
    expect(agent.agentId.startsWith(master.masterId)).toBe(true);
    expect(agent.registration).toMatchObject({ masterId: master.masterId, pingIntervalSeconds: 0.1, pingTimeoutSeconds: 10 });

    // The master pings (the fake agent pongs); commands carry the master's id and epoch.
    const ping = await agent.next("ping");
    expect(ping.message.ping.seq).toBeGreaterThan(0);
    expect(ping).toMatchObject({ senderId: master.masterId, epoch: 1 });

    const framework = new FakeFramework(await bus("framework"), name);
    expect(await framework.subscribe()).toBeUndefined();
    expect(framework.frameworkId.startsWith(master.masterId)).toBe(true);

    const offers = await framework.next("offers", (e) => e.offers.offers.some((o) => o.agentId === agent.agentId));
    expect(offers).toMatchObject({ senderId: master.masterId, epoch: 1 });
    const offer = offers.event.offers.offers.find((o) => o.agentId === agent.agentId)!;
    expect(resourcesFromWire(offer.resources).toString()).toBe("cpus:2;mem:1024");
    expect(offer.hostname).toBe("agent-1.test");

    const accepted = await framework.callResponse({
      kind: "accept",
      accept: { offerIds: [offer.id], operations: [{ kind: "launch", launch: { taskInfos: [task("web-1", agent.agentId)] } }] },
    });
    expect(accepted).toEqual({ ok: true, errorCode: "", message: "" });

    const run = await agent.next("runTask");
    expect(run.message.runTask.task).toMatchObject({ taskId: "web-1", agentId: agent.agentId });
    expect(run.message.runTask.framework?.id).toBe(framework.frameworkId);

    agent.sendStatus(framework.frameworkId, { taskId: "web-1", state: "TASK_RUNNING" });
    const update = await framework.next("update", (e) => e.update.status?.taskId === "web-1");
    const status = update.event.update.status!;
    expect(status).toMatchObject({ state: "TASK_RUNNING", agentId: agent.agentId, frameworkId: framework.frameworkId });
    expect(status.uuid.length).toBe(16);

    const acked = await framework.callResponse({ kind: "acknowledge", acknowledge: { agentId: agent.agentId, taskId: "web-1", uuid: status.uuid } });
    expect(acked.ok).toBe(true);
    const ack = await agent.next("statusUpdateAck");
    expect(ack.message.statusUpdateAck).toEqual({ frameworkId: framework.frameworkId, taskId: "web-1", uuid: status.uuid });

    // Ticks keep coming: the master's own heartbeat events reach the framework.
    await framework.next("heartbeat");

    const state = (await (await fetch(`${master.httpUrl()}/state`)).json()) as { frameworks: Array<{ id: string; tasks: Array<{ id: string; state: string }> }> };
    expect(state.frameworks.find((f) => f.id === framework.frameworkId)?.tasks).toMatchObject([{ id: "web-1", state: "TASK_RUNNING" }]);
  });

  it("answers a redelivered request with the same call id without applying it twice", async () => {
    const name = cluster();
    const master = await startMaster({ cluster: name });
    const transport = await bus("dup");
    const request = encodeEnvelope({
      senderId: "driver-dup",
      callId: "call-1",
      payload: "schedulerCall",
      schedulerCall: { frameworkId: "", kind: "subscribe", subscribe: { frameworkInfo: FakeFramework.info() } },
    });
    const first = decodeEnvelope("_INBOX.x", await transport.request(masterSchedulerSubject(name), request));
    const second = decodeEnvelope("_INBOX.x", await transport.request(masterSchedulerSubject(name), request));
    expect(first.callId).toBe("call-1");
    expect(first.senderId).toBe(master.masterId);
    expect(first.epoch).toBe(1);
    expect(second).toEqual(first);
    expect(master.core.sizes().frameworks).toBe(1);
  });

  it("drops garbage and misplaced payloads, counts and logs them, and keeps answering", async () => {
    const name = cluster();
    const { log, lines } = memoryLog("warn");
    const master = await startMaster({ cluster: name, log });
    const transport = await bus("vandal");
    const garbage = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff]);

    transport.publish(masterSchedulerSubject(name), garbage);
    // An agent's message on the framework subject, and a framework call on the agent subject.
    transport.publish(masterSchedulerSubject(name), encodeEnvelope({ senderId: "x", payload: "agentToMaster", agentToMaster: { kind: "pong", pong: { seq: 1 } } }));
    transport.publish(masterAgentSubject(name, "x"), garbage);
    transport.publish(
      masterAgentSubject(name, "x"),
      encodeEnvelope({ senderId: "x", payload: "schedulerCall", schedulerCall: { frameworkId: "f", kind: "heartbeat", heartbeat: {} } }),
    );
    transport.publish(masterAgentSubject(name, "x"), encodeEnvelope({ senderId: "x", schemaVersion: 99, payload: "agentToMaster", agentToMaster: { kind: "pong", pong: { seq: 1 } } }));

    // Requests on the same connection and subjects are handled after the junk (NATS keeps order).
    const framework = new FakeFramework(transport, name);
    expect(await framework.subscribe()).toBeUndefined();
    const agent = await FakeAgent.register(transport, name);
    expect(agent.agentId).not.toBe("");

    expect(master.drops.count({ kind: "master.scheduler", reason: "decode_error" })).toBe(1);
    expect(master.drops.count({ kind: "master.scheduler", reason: "wrong_payload" })).toBe(1);
    expect(master.drops.count({ kind: "master.agent", reason: "decode_error" })).toBe(1);
    expect(master.drops.count({ kind: "master.agent", reason: "wrong_payload" })).toBe(1);
    expect(master.drops.count({ kind: "master.agent", reason: "schema_version" })).toBe(1);
    const text = await metricsOf(master);
    expect(text).toContain('corral_bus_dropped_messages_total{kind="master.scheduler",reason="decode_error"} 1');
    expect(text).toContain('corral_bus_dropped_messages_total{kind="master.agent",reason="wrong_payload"} 1');
    expect(lines.filter((l) => l.msg === "dropped bus message").length).toBe(5);
    expect(lines.every((l) => l.component === "master")).toBe(true);
  });

  it("answers a framework request that decodes but breaks a field rule with an error naming the field, and still counts and logs it", async () => {
    const name = cluster();
    const { log, lines } = memoryLog("warn");
    const master = await startMaster({ cluster: name, log });
    const transport = await bus("rule-breaker");
    // A sender that skips the codec's checks: a HEARTBEAT without its framework id, and an ACCEPT without offer ids.
    const Envelope = wireRoot.lookupType("corral.v1.Envelope");
    const raw = (callId: string, schedulerCall: Record<string, unknown>) =>
      Envelope.encode(Envelope.fromObject({ schemaVersion: SCHEMA_VERSION, senderId: "driver-x", callId, schedulerCall })).finish();
    const heartbeat = decodeEnvelope("_INBOX.x", await transport.request(masterSchedulerSubject(name), raw("call-1", { heartbeat: {} }), { timeoutMs: 2000 }));
    expect(heartbeat).toMatchObject({
      senderId: master.masterId,
      callId: "call-1",
      payload: "callResponse",
      callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "schedulerCall.frameworkId: must not be empty for heartbeat" },
    });
    const accept = decodeEnvelope("_INBOX.x", await transport.request(masterSchedulerSubject(name), raw("call-2", { frameworkId: "f1", accept: {} }), { timeoutMs: 2000 }));
    expect(accept).toMatchObject({ callId: "call-2", callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: expect.stringContaining("offerIds") } });
    expect(master.drops.count({ kind: "master.scheduler", reason: "invalid" })).toBe(2);
    expect(lines.filter((l) => l.msg === "dropped bus message").length).toBe(2);
    // Undecodable bytes are still only dropped: nothing can say which call they were.
    await expect(transport.request(masterSchedulerSubject(name), new Uint8Array([0xff, 0xff, 0xff]), { timeoutMs: 300 })).rejects.toSatisfy((err) => isTransportError(err, "CORRAL_ERR_REQUEST_TIMEOUT"));
    expect(master.drops.count({ kind: "master.scheduler", reason: "decode_error" })).toBe(1);
  });

  it("answers an agent's registration request that breaks a field rule with an error naming the field", async () => {
    const name = cluster();
    const master = await startMaster({ cluster: name });
    const transport = await bus("bad-agent");
    const Envelope = wireRoot.lookupType("corral.v1.Envelope");
    // A re-registration without the agent's id, which the codec refuses.
    const bytes = Envelope.encode(
      Envelope.fromObject({ schemaVersion: SCHEMA_VERSION, senderId: "inst-1", callId: "reg-1", agentToMaster: { reregister: { agentInfo: { hostname: "h", resources: [] } } } }),
    ).finish();
    const reply = decodeEnvelope("_INBOX.x", await transport.request(masterAgentSubject(name, "inst-1"), bytes, { timeoutMs: 2000 }));
    expect(reply).toMatchObject({
      callId: "reg-1",
      payload: "callResponse",
      callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "agentToMaster.reregister.agentInfo.id: must not be empty when re-registering" },
    });
    expect(master.drops.count({ kind: "master.agent", reason: "invalid" })).toBe(1);
    expect(master.core.sizes().agents).toBe(0);
  });

  it("drops, counts and logs a message an agent sends in another agent's name", async () => {
    const name = cluster();
    const { log, lines } = memoryLog("warn");
    const master = await startMaster({ cluster: name, log });
    const victim = await FakeAgent.register(await bus("victim"), name);
    const transport = await bus("intruder");
    const intruder = await FakeAgent.register(transport, name);
    // On the intruder's own subject, a leave notice and a status update that claim to be the victim's.
    const claim = (agentToMaster: Parameters<FakeAgent["send"]>[0]) => encodeEnvelope({ senderId: victim.agentId, payload: "agentToMaster", agentToMaster });
    transport.publish(masterAgentSubject(name, intruder.agentId), claim({ kind: "unregisterNotice", unregisterNotice: { reason: "" } }));
    transport.publish(masterAgentSubject(name, intruder.agentId), claim({ kind: "pong", pong: { seq: 0 } }));
    // A registration request on a subject that is not its sender's is answered, so its sender learns why.
    const misplaced = decodeEnvelope(
      "_INBOX.x",
      await transport.request(masterAgentSubject(name, victim.agentId), encodeEnvelope({ senderId: "inst-3", callId: "reg-3", payload: "agentToMaster", agentToMaster: { kind: "register", register: { version: "", agentInfo: victim.info } } }), { timeoutMs: 2000 }),
    );
    expect(misplaced).toMatchObject({
      callId: "reg-3",
      callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: `senderId: 'inst-3' may not publish on ${masterAgentSubject(name, victim.agentId)}, which is for '${victim.agentId}' only` },
    });
    // NATS keeps one connection's order: the claims were handled before the answer came.
    expect(master.drops.count({ kind: "master.agent", reason: "wrong_sender" })).toBe(3);
    expect(master.core.state().agents.map((a) => a.id)).toContain(victim.agentId);
    expect(master.core.sizes().goneAgents).toBe(0);
    // Logged at the 1st, 2nd, 4th... drop, naming the rule broken.
    const logged = lines.filter((l) => l.msg === "dropped bus message" && l.reason === "wrong_sender");
    expect(logged).toHaveLength(2);
    expect(logged[0]!.problems).toEqual([`senderId: '${victim.agentId}' may not publish on ${masterAgentSubject(name, intruder.agentId)}, which is for '${intruder.agentId}' only`]);
    expect(await metricsOf(master)).toContain('corral_bus_dropped_messages_total{kind="master.agent",reason="wrong_sender"} 3');
  });

  it("refuses a framework id that cannot be a subject token, and carries on", async () => {
    const name = cluster();
    const master = await startMaster({ cluster: name });
    const transport = await bus("bad-ids");
    // An id with a dot could never receive events on `framework.<id>.events`: refused up front.
    const refused = await new FakeFramework(transport, name).call({ kind: "subscribe", subscribe: { frameworkInfo: FakeFramework.info() } }, "bad.id");
    expect(refused).toMatchObject({ payload: "callResponse", callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL" } });
    expect((refused as { callResponse: { message: string } }).callResponse.message).toContain("bad.id");
    expect(await metricsOf(master)).toContain("corral_master_invalid_calls_total 1");
    // ...and the master carries on.
    expect(await new FakeFramework(transport, name).subscribe()).toBeUndefined();
  });

  it("keeps its registry across a restart: a known framework re-subscribes, a torn-down one is refused", async () => {
    const name = cluster();
    const first = await startMaster({ cluster: name });
    const agent = await FakeAgent.register(await bus("agent"), name);
    const keep = new FakeFramework(await bus("keep"), name);
    expect(await keep.subscribe(FakeFramework.info({ name: "keep" }))).toBeUndefined();
    const gone = new FakeFramework(await bus("gone"), name);
    expect(await gone.subscribe(FakeFramework.info({ name: "gone" }))).toBeUndefined();
    expect(await gone.callResponse({ kind: "teardown", teardown: {} })).toMatchObject({ ok: true });
    await first.stop(); // flushes the registry writes

    // What the bucket holds, read with a store of its own.
    const reader = await JetStreamRegistryStore.open((await bus("reader")).connection, { bucket: registryBucketName(name) });
    const stored = (await reader.load()).map((r) => `${r.kind}:${r.id}`).sort();
    expect(stored).toEqual([`agent:${agent.agentId}`, `framework:${keep.frameworkId}`, `torn-down:${gone.frameworkId}`].sort());

    const second = await startMaster({ cluster: name, rng: new SeededRng(`${name}-second`) });
    expect(second.masterId).not.toBe(first.masterId);
    const state = (await (await fetch(`${second.httpUrl()}/state`)).json()) as { frameworks: Array<{ id: string; connected: boolean }>; completedFrameworks: unknown[] };
    expect(state.frameworks).toMatchObject([{ id: keep.frameworkId, connected: false }]);

    const keepAgain = new FakeFramework(await bus("keep-again"), name);
    expect(await keepAgain.subscribe(FakeFramework.info({ name: "keep" }), keep.frameworkId)).toBeUndefined();
    expect(keepAgain.frameworkId).toBe(keep.frameworkId);

    const refused = await new FakeFramework(await bus("gone-again"), name).subscribe(FakeFramework.info({ name: "gone" }), gone.frameworkId);
    expect(refused).toMatchObject({ ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_REMOVED" });

    // The agent is unknown to the new master until it re-registers: a pong gets it asked to.
    agent.send({ kind: "pong", pong: { seq: 0 } });
    const request = await agent.next("reregisterRequest");
    expect(request.senderId).toBe(second.masterId);
  });

  it("keeps a framework whose failover timeout is 0 across a restart until its driver has had time to re-subscribe", async () => {
    const name = cluster();
    const first = await startMaster({ cluster: name });
    const framework = new FakeFramework(await bus("zero"), name);
    // 0 is the SDK's default failover timeout, as it is Mesos's.
    expect(await framework.subscribe(FakeFramework.info({ name: "zero", failoverTimeoutSeconds: 0 }))).toBeUndefined();
    await first.stop({ handover: false }); // as a crash: no goodbye to the framework

    const second = await startMaster({ cluster: name, rng: new SeededRng(`${name}-second`) });
    // The new leader's first ticks (an allocation run comes after the frameworks' timeouts are checked).
    await eventually("the new leader's first allocation run", async () => /corral_master_allocation_runs_total [1-9]/.test(await metricsOf(second)));
    const again = new FakeFramework(await bus("zero-again"), name);
    expect(await again.subscribe(FakeFramework.info({ name: "zero", failoverTimeoutSeconds: 0 }), framework.frameworkId)).toBeUndefined();
    expect(again.frameworkId).toBe(framework.frameworkId);
  });

  it("keeps operator-set weights and quotas across a restart (they are in the registry)", async () => {
    const name = cluster();
    const first = await startMaster({ cluster: name });
    const put = (path: string, body: unknown) => fetch(`${first.httpUrl()}${path}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    expect((await put("/weights", [{ role: "web", weight: 3 }])).status).toBe(200);
    expect((await put("/quota", [{ role: "batch", guarantees: { cpus: 2 }, limits: { cpus: 8 } }, { role: "gone", guarantees: { cpus: 1 } }])).status).toBe(200);
    // An empty quota removes the role's quota, here and in the registry.
    expect((await put("/quota", [{ role: "gone" }])).status).toBe(200);
    await first.stop(); // flushes the registry writes

    const second = await startMaster({ cluster: name, rng: new SeededRng(`${name}-second`) });
    expect(await (await fetch(`${second.httpUrl()}/weights`)).json()).toContainEqual({ role: "web", weight: 3 });
    const quotas = (await (await fetch(`${second.httpUrl()}/quota`)).json()) as Array<{ role: string }>;
    expect(quotas).toEqual([{ role: "batch", guarantees: { cpus: 2 }, limits: { cpus: 8 } }]);
  });

  it("charges each task of a framework with several roles to its own role again after a restart, from the agent's report", async () => {
    const name = cluster();
    const first = await startMaster({ cluster: name });
    const agent = await FakeAgent.register(await bus("agent"), name, { resources: "cpus:4;mem:2048" });
    const framework = new FakeFramework(await bus("multi"), name);
    expect(await framework.subscribe(FakeFramework.info({ name: "multi", roles: ["web", "batch"] }))).toBeUndefined();
    const sizes: Record<string, string> = { web: "cpus:1;mem:512", batch: "cpus:2;mem:256" };
    const launched = new Set<string>();
    while (launched.size < 2) {
      // Each offer carries all that is free; one task per role, and the rest comes back at once for the other role.
      const { event } = await framework.next("offers");
      for (const offer of event.offers.offers) {
        const taskInfos = launched.has(offer.role) ? [] : [task(`${offer.role}-1`, agent.agentId, sizes[offer.role])];
        launched.add(offer.role);
        const answer = await framework.callResponse({ kind: "accept", accept: { offerIds: [offer.id], operations: [{ kind: "launch", launch: { taskInfos } }], filters: { refuseSeconds: 0 } } });
        expect(answer.ok).toBe(true);
      }
    }
    const sent = [(await agent.next("runTask")).message.runTask, (await agent.next("runTask")).message.runTask];
    expect(sent.map((r) => [r.task!.taskId, r.task!.allocationRole]).sort()).toEqual([["batch-1", "batch"], ["web-1", "web"]]);
    await first.stop({ handover: false });

    const second = await startMaster({ cluster: name, rng: new SeededRng(`${name}-second`) });
    // The agent re-registers with the new leader, reporting the tasks as it was sent them.
    const tasks = sent.map((r) => ({ frameworkId: framework.frameworkId, task: r.task!, status: { taskId: r.task!.taskId, state: "TASK_RUNNING" as const, message: "", source: "SOURCE_AGENT" as const, reason: "REASON_UNSPECIFIED" as const, agentId: agent.agentId, frameworkId: framework.frameworkId, uuid: new Uint8Array(0), timestamp: 0 } }));
    const reply = await FakeAgent.request(await bus("agent-again"), name, agent.agentId, {
      payload: "agentToMaster",
      agentToMaster: { kind: "reregister", reregister: { agentInfo: agent.info, version: "test", tasks, frameworks: [sent[0]!.framework!], listening: true } },
    });
    expect(reply).toMatchObject({ payload: "masterToAgent", masterToAgent: { kind: "reregistered" } });
    const byRole = second.core.allocator.agentView(agent.agentId)!.allocations.get(framework.frameworkId)!;
    expect(Object.fromEntries([...byRole].map(([role, resources]) => [role, resources.toString()]))).toEqual(sizes);
    const state = (await (await fetch(`${second.httpUrl()}/state`)).json()) as { frameworks: Array<{ tasks: Array<{ id: string; role: string }> }>; roles: Array<{ role: string; share: number }> };
    expect(state.frameworks[0]!.tasks.map((t) => [t.id, t.role]).sort()).toEqual([["batch-1", "batch"], ["web-1", "web"]]);
    expect(state.roles.map((r) => [r.role, r.share])).toEqual([["batch", 0.5], ["web", 0.25]]);
  });

  it("keeps answering while registry writes fail, and retries them until they land", async () => {
    const name = cluster();
    const store = new FlakyStore(2);
    const master = await startMaster({ cluster: name, store });
    const framework = new FakeFramework(await bus("framework"), name);
    expect(await framework.subscribe()).toBeUndefined(); // answered although the write failed
    const record = await store.firstPut;
    expect(record).toMatchObject({ kind: "framework", id: framework.frameworkId });
    expect(store.attempts).toBe(3);
    const text = await metricsOf(master);
    expect(text).toContain("corral_master_registry_write_failures_total 2");
    expect(text).toContain("corral_master_registry_writes_total 1");
    await master.stop();
    expect(store.closed).toBe(false); // a store passed in belongs to the caller
    expect((await store.load()).map((r) => r.id)).toEqual([framework.frameworkId]);
  });

  it("persists a teardown whole or not at all: while the torn-down marker cannot be written, the framework record stays", async () => {
    const name = cluster();
    const bucket = await JetStreamRegistryStore.open((await bus("registry")).connection, { bucket: registryBucketName(name) });
    const store = new MarkerOutageStore(bucket);
    const first = await startMaster({ cluster: name, store });
    const framework = new FakeFramework(await bus("doomed"), name);
    expect(await framework.subscribe()).toBeUndefined();
    expect(await framework.callResponse({ kind: "teardown", teardown: {} })).toMatchObject({ ok: true });
    // The marker's first write and its first retry both fail; then the master crashes.
    await within(store.failedTwice, 10_000, "two failed writes of the torn-down marker");
    await first.stop({ handover: false });

    // The bucket holds what it held before the teardown, not a framework forgotten without a marker.
    expect((await bucket.load()).map((r) => `${r.kind}:${r.id}`)).toEqual([`framework:${framework.frameworkId}`]);
    const second = await startMaster({ cluster: name, store: bucket, rng: new SeededRng(`${name}-second`) });
    expect(second.core.state().frameworks).toMatchObject([{ id: framework.frameworkId, connected: false }]);
  });

  it("stops cleanly: unsubscribes, leaves the transport open, and is idempotent", async () => {
    const name = cluster();
    const transport = await bus("owner");
    const master = await startMaster({ cluster: name, transport, store: new MemoryRegistryStore() });
    const url = master.httpUrl();
    await Promise.all([master.stop(), master.stop()]);
    await master.stop();
    expect(() => master.httpUrl()).toThrow(/not listening/);
    await expect(fetch(`${url}/health`)).rejects.toThrow();
    // Nobody answers framework calls any more, yet the caller's transport still works.
    const error = await transport
      .request(masterSchedulerSubject(name), encodeEnvelope({ senderId: "d", callId: randomUUID(), payload: "schedulerCall", schedulerCall: { frameworkId: "f", kind: "heartbeat", heartbeat: {} } }), { timeoutMs: 2_000 })
      .then(() => undefined, (err: unknown) => err);
    expect(isTransportError(error, "CORRAL_ERR_NO_RESPONDERS")).toBe(true);
    await expect(master.start()).rejects.toThrow(/cannot start/);
  });

  it("splits an offers event that would not fit in one message", async () => {
    const name = cluster();
    // With a 1-byte limit every multi-offer event is split down to single offers.
    const master = await startMaster({ cluster: name, store: new MemoryRegistryStore(), maxMessageBytes: 1 });
    const agentBus = await bus("agents");
    const agents = [await FakeAgent.register(agentBus, name, { hostname: "a1" }), await FakeAgent.register(agentBus, name, { hostname: "a2" })];
    await eventually("both agents to be offerable", () => master.core.state().agents.filter((a) => a.active).length === 2);
    const framework = new FakeFramework(await bus("framework"), name);
    expect(await framework.subscribe()).toBeUndefined();
    const first = await framework.next("offers");
    const second = await framework.next("offers");
    expect([first, second].map((e) => e.event.offers.offers.length)).toEqual([1, 1]);
    expect([first, second].map((e) => e.event.offers.offers[0]!.agentId).sort()).toEqual(agents.map((a) => a.agentId).sort());
    expect(await metricsOf(master)).toContain("corral_master_offer_events_split_total 1");
  });

  it("numbers the events it publishes to a framework, split ones each, and tells a re-subscribing framework where the numbering stands", async () => {
    const name = cluster();
    const master = await startMaster({ cluster: name, store: new MemoryRegistryStore(), maxMessageBytes: 1 });
    const agentBus = await bus("agents");
    await FakeAgent.register(agentBus, name, { hostname: "a1" });
    await FakeAgent.register(agentBus, name, { hostname: "a2" });
    await eventually("both agents to be offerable", () => master.core.state().agents.filter((a) => a.active).length === 2);
    const framework = new FakeFramework(await bus("framework"), name);
    expect(await framework.subscribe()).toBeUndefined();
    // One offers event split in two: two messages, two numbers, the first event being number 1.
    const first = await framework.next("offers");
    const second = await framework.next("offers");
    expect([first.event.seq, second.event.seq]).toEqual([1, 2]);
    const heartbeat = await framework.next("heartbeat");
    expect(heartbeat.event.seq).toBe(3);

    // A re-subscription (the master rescinds the two offers) is told the number of the last
    // event published before its reply; what comes next carries the number after it.
    const reply = await framework.call({ kind: "subscribe", subscribe: { frameworkInfo: { ...FakeFramework.info(), id: framework.frameworkId } } });
    if (reply.payload !== "schedulerEvent" || reply.schedulerEvent.kind !== "subscribed") throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
    const last = reply.schedulerEvent.subscribed.lastEventSeq!;
    expect(last).toBeGreaterThanOrEqual(3);
    expect(reply.schedulerEvent.seq).toBeUndefined();
    const after = await framework.events.take((e) => (e.event.seq ?? 0) > last, "the first event after the re-subscription");
    expect(after.event.seq).toBe(last + 1);
  });

  it("marks a silent agent unreachable through its own ticks", async () => {
    const name = cluster();
    const master = await startMaster({ cluster: name, store: new MemoryRegistryStore(), config: { ...FAST, maxMissedPings: 3 } });
    const agent = await FakeAgent.register(await bus("agent"), name);
    const framework = new FakeFramework(await bus("framework"), name);
    expect(await framework.subscribe()).toBeUndefined();
    await framework.next("offers");
    agent.silence();
    const rescind = await framework.next("rescind");
    expect(rescind.event.rescind.offerId).toContain(master.masterId);
    await framework.next("failure", (e) => e.failure.agentId === agent.agentId);
    await eventually("the agent to be unreachable", () => master.core.sizes().unreachableAgents === 1);
  });
});

describe("a real agent and a framework that does not acknowledge", () => {
  it("offers a task's resources again as soon as the agent reports the task ended, though its updates wait for acknowledgements", async () => {
    const test = await startCluster({ natsUrl: nats.url, agents: [{ resources: "cpus:1;mem:256;disk:64;ports:[31000-31001]", statusUpdateRetry: { initialMs: 50, maxMs: 100 } }] });
    try {
      const fw = recordingFramework(await test.connect("slow-framework"), test.cluster, { name: "slow" }, { autoAcknowledge: false });
      await fw.driver.start();
      const offer = await fw.offers.waitFor(() => true, 10_000, "an offer");
      expect(offer.resources.scalar("cpus")).toBe(1);
      await fw.driver.launch(offer, [{ taskId: "quick", resources: "cpus:1;mem:256", command: "exit 0" }], { refuseSeconds: 0 });
      // The task ends at once, but its STARTING is never acknowledged: the framework sees nothing
      // else, and the whole agent is offered again all the same.
      const again = await fw.offers.waitFor((o) => o.id !== offer.id && o.resources.scalar("cpus") === 1, 10_000, "the task's resources offered again");
      expect(again.agentId).toBe(offer.agentId);
      expect(new Set(fw.updates.items.map((s) => s.state))).toEqual(new Set(["TASK_STARTING"]));
      const view = test.master.core.state().frameworks[0]!;
      expect((view.tasks as Array<{ id: string; state: string }>).map((t) => [t.id, t.state])).toEqual([["quick", "TASK_FINISHED"]]);
      expect(test.master.core.allocator.checkInvariants()).toEqual([]);
      // Acknowledged one by one, the framework gets the rest of the stream in order; the task is
      // then completed, and nothing was given back twice.
      for (const state of ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"] as const) {
        const update = await fw.updates.waitFor((s) => s.taskId === "quick" && s.state === state, 10_000, state);
        await fw.driver.acknowledge(update);
      }
      await eventually("the task completed", () => (test.master.core.state().frameworks[0]!.completedTasks as Array<{ id: string }>).some((t) => t.id === "quick"));
      expect(test.master.core.allocator.checkInvariants()).toEqual([]);
      expect(test.master.core.state().agents[0]).toMatchObject({ tasks: 0 });
      await fw.driver.stop({ teardown: true });
    } finally {
      await test.stop();
    }
  });
});

/** A store whose first `failures` puts fail; resolves `firstPut` with the first record that lands. */
/** The registry in JetStream, except that writing a torn-down marker fails (an outage of that one write). */
class MarkerOutageStore implements RegistryStore {
  readonly failedTwice: Promise<void>;
  private failures = 0;
  private failedAgain!: () => void;

  constructor(private readonly inner: RegistryStore) {
    this.failedTwice = new Promise((resolve) => (this.failedAgain = resolve));
  }

  load(): Promise<RegistryRecord[]> {
    return this.inner.load();
  }

  async put(record: RegistryRecord): Promise<void> {
    if (record.kind === "torn-down") {
      if (++this.failures === 2) this.failedAgain();
      throw new Error("simulated failure of the marker's write");
    }
    await this.inner.put(record);
  }

  delete(kind: RegistryKind, id: string): Promise<void> {
    return this.inner.delete(kind, id);
  }

  async close(): Promise<void> {}
}

class FlakyStore implements RegistryStore {
  private readonly inner = new MemoryRegistryStore();
  attempts = 0;
  closed = false;
  readonly firstPut: Promise<RegistryRecord>;
  private landed!: (record: RegistryRecord) => void;

  constructor(private failures: number) {
    this.firstPut = new Promise((resolve) => (this.landed = resolve));
  }

  load(): Promise<RegistryRecord[]> {
    return this.inner.load();
  }

  async put(record: RegistryRecord): Promise<void> {
    this.attempts++;
    if (this.failures > 0) {
      this.failures--;
      throw new Error("simulated store outage");
    }
    await this.inner.put(record);
    this.landed(record);
  }

  delete(kind: RegistryKind, id: string): Promise<void> {
    return this.inner.delete(kind, id);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

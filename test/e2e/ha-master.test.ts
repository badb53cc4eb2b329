/**
 * Several masters of one cluster on a real nats-server: leader election through the registry's
 * KV lease, failover while tasks run (real `corral master --ha` processes killed with SIGKILL, and
 * in-process masters whose lease store is cut off), standbys pointing to the leader, and a deposed
 * leader's messages ignored by real agents and SDK frameworks.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { describe, expect, it } from "vitest";
import { createAgent, type Agent } from "../../agent/agent.ts";
import { createMaster, registryBucketName, type Master } from "../../master/shell.ts";
import { JetStreamRegistryStore } from "../../master/store.ts";
import type { LeaseStore } from "../../sdk/leader-lease.ts";
import type { NatsTransport } from "../../sdk/nats-transport.ts";
import { encodeEnvelope } from "../../sdk/wire/codec.ts";
import { resourcesToWire } from "../../sdk/wire/resources.ts";
import { agentCmdSubject, frameworkEventsSubject } from "../../sdk/wire/subjects.ts";
import { recordingFramework, type RecordingFramework } from "../harness/cluster.ts";
import { EventLog, eventually } from "../harness/events.ts";
import { connectBus, freePort, useNats } from "../harness/nats.ts";
import { useCleanups } from "../harness/cleanups.ts";
import { spawnCorral } from "../harness/processes.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";

const nats = useNats();
const QUIET = pino({ level: "error" });
const TERMINAL: ReadonlySet<string> = TERMINAL_TASK_STATES;

let clusterSeq = 0;
const defer = useCleanups();

const bus = (name: string): Promise<NatsTransport> => connectBus(nats, name, defer);

async function startAgents(cluster: string, count: number): Promise<Agent[]> {
  const agents: Agent[] = [];
  for (let i = 0; i < count; i++) {
    const workDir = await mkdtemp(join(tmpdir(), "corral-ha-agent-"));
    const agent = createAgent({ cluster, transport: await bus(`agent${i}`), workDir, resources: "cpus:2;mem:1024;disk:1024;ports:[31000-31099]", hostname: `host${i + 1}`, log: QUIET });
    defer(async () => {
      await agent.stop();
      await rm(workDir, { recursive: true, force: true });
    });
    await agent.start();
    agents.push(agent);
  }
  return agents;
}

interface Health {
  masterId: string;
  leader: boolean;
  epoch: number;
  leaderInfo: { id: string; url: string; term?: number } | null;
}

async function health(url: string): Promise<Health | undefined> {
  try {
    const response = await fetch(`${url}/health`);
    return response.ok ? ((await response.json()) as Health) : undefined;
  } catch {
    return undefined;
  }
}

/** A `corral master --ha` process; its JSON log lines (stderr) are recorded with their arrival time. */
interface MasterProcess {
  child: ChildProcess;
  url: string;
  log: EventLog<Record<string, unknown>>;
}

async function spawnMaster(cluster: string): Promise<MasterProcess> {
  const port = await freePort();
  const args = ["master", "--ha", "--nats", nats.url, "--cluster", cluster, "--port", String(port), "--log-level", "info"];
  // Fast pings so the agents' liveness is checked often; the lease keeps its defaults (1500 ms).
  args.push("--agent-ping-interval", "200ms", "--max-missed-pings", "25", "--allocation-interval", "100ms");
  const proc = spawnCorral(args);
  defer(() => proc.kill());
  const { child, log } = proc;
  return { child, url: `http://127.0.0.1:${port}`, log };
}

/** A pino logger whose lines (with pino's `time`) land in an EventLog. */
function recordedLog(): { log: Logger; lines: EventLog<Record<string, unknown>> } {
  const lines = new EventLog<Record<string, unknown>>();
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  return { log: pino({ level: "info" }, stream), lines };
}

function noTerminalUpdates(fw: RecordingFramework, taskIds: string[]): void {
  const ended = fw.updates.filter((s) => taskIds.includes(s.taskId) && TERMINAL.has(s.state)).map((s) => `${s.taskId}:${s.state}`);
  expect(ended).toEqual([]);
}

describe("masters in HA", () => {
  it("survives SIGKILL of the leading master process: a standby leads, agents and the framework follow, no task is killed or launched twice", async () => {
    const cluster = `ha${process.pid}x${++clusterSeq}`;
    const first = await spawnMaster(cluster);
    const leaderHealth = await eventually(async () => ((await health(first.url))?.leader ? health(first.url) : undefined), 60_000, "the first master to lead");
    const standbys = [await spawnMaster(cluster), await spawnMaster(cluster)];
    for (const standby of standbys) {
      await eventually(async () => (await health(standby.url))?.leaderInfo?.id === leaderHealth!.masterId, 60_000, "a standby to see the leader");
    }

    const agents = await startAgents(cluster, 2);
    const fw = recordingFramework(await bus("framework"), cluster, { name: "ha-e2e", failoverTimeoutSeconds: 120 });
    await fw.driver.start();
    const offerA = await fw.offers.waitFor(() => true, 20_000, "an offer");
    const offerB = await fw.offers.waitFor((o) => o.agentId !== offerA.agentId, 20_000, "an offer from the other agent");
    await fw.driver.launch(offerA, [{ taskId: "web-1", resources: "cpus:0.5;mem:64", command: "sleep 1000" }]);
    await fw.driver.launch(offerB, [{ taskId: "web-2", resources: "cpus:0.5;mem:64", command: "sleep 1000" }]);
    for (const taskId of ["web-1", "web-2"]) await fw.updates.waitFor((s) => s.taskId === taskId && s.state === "TASK_RUNNING", 20_000, `${taskId} RUNNING`);
    const containersBefore = agents.flatMap((a) => a.state().tasks.map((t) => `${t.taskId}@${t.containerId}`)).sort();
    expect(containersBefore).toHaveLength(2);

    // A standby points to the leader, and redirects /state and operator writes to it, without reading the body.
    expect(await health(standbys[0]!.url)).toMatchObject({ leader: false, leaderInfo: { url: first.url } });
    const standbyState = await fetch(`${standbys[0]!.url}/state`, { redirect: "manual" });
    expect(standbyState.status).toBe(307);
    expect(standbyState.headers.get("location")).toBe(`${first.url}/state`);
    const redirected = await fetch(`${standbys[0]!.url}/weights?x=1`, { method: "PUT", headers: { "content-type": "application/json" }, body: "not even json", redirect: "manual" });
    expect(redirected.status).toBe(307);
    expect(redirected.headers.get("location")).toBe(`${first.url}/weights?x=1`);

    const killedAt = Date.now();
    first.child.kill("SIGKILL");
    const [newLeader, newLeaderHealth] = await eventually(async () => {
      for (const standby of standbys) {
        const h = await health(standby.url);
        if (h?.leader) return [standby, h] as const;
      }
      return undefined;
    }, 30_000, "a standby to take over");
    const takeoverMs = Date.now() - killedAt;
    const newOffer = await fw.offers.waitFor((o) => o.id.startsWith(`${newLeaderHealth.masterId}-O`), 30_000, "an offer from the new leader");
    const firstOfferMs = Date.now() - killedAt;
    const leads = await newLeader.log.waitFor((l) => l.msg === "master leads: serving the bus", 5_000, "the new leader's log line");
    console.log(
      `HA failover (SIGKILL of the leading master process): new leader serving after ${takeoverMs} ms, first offer after ${firstOfferMs} ms ` +
        `(the new leader logged: previous record unchanged for ${String(leads.previousRecordUnchangedForMs)} ms, registry loaded in ${String(leads.registryLoadMs)} ms, serving ${String(leads.serveAfterElectionMs)} ms after its election)`,
    );
    expect(newLeaderHealth.epoch).toBeGreaterThan(leaderHealth!.epoch);

    // The agents re-registered with their tasks, and the framework re-subscribed with its id.
    for (const agent of agents) await eventually(() => agent.state().masterEpoch === newLeaderHealth.epoch && agent.state().registered, 20_000, "the agents on the new leader");
    expect(fw.driver.stats().highestEpoch).toBe(newLeaderHealth.epoch);
    const state = (await (await fetch(`${newLeader.url}/state`)).json()) as { frameworks: Array<{ id: string; connected: boolean; tasks: Array<{ id: string; state: string }> }> };
    expect(state.frameworks).toHaveLength(1);
    expect(state.frameworks[0]!).toMatchObject({ id: fw.driver.frameworkId(), connected: true });
    expect(state.frameworks[0]!.tasks.map((t) => `${t.id}:${t.state}`).sort()).toEqual(["web-1:TASK_RUNNING", "web-2:TASK_RUNNING"]);

    // Nothing was killed or launched again: the same containers run, no task ended.
    const containersAfter = agents.flatMap((a) => a.state().tasks.map((t) => `${t.taskId}@${t.containerId}`)).sort();
    expect(containersAfter).toEqual(containersBefore);
    expect(agents.flatMap((a) => a.state().tasks.map((t) => t.state))).toEqual(["TASK_RUNNING", "TASK_RUNNING"]);
    noTerminalUpdates(fw, ["web-1", "web-2"]);

    // The new offer is usable: a task launches on the new leader.
    await fw.driver.launch(newOffer, [{ taskId: "after", resources: "cpus:0.1;mem:32", command: "true" }]);
    expect((await fw.updates.waitFor((s) => s.taskId === "after" && TERMINAL.has(s.state), 20_000)).state).toBe("TASK_FINISHED");

    // The remaining standby now points to the new leader; a redirected write lands there.
    const remaining = standbys.find((s) => s !== newLeader)!;
    await eventually(async () => (await health(remaining.url))?.leaderInfo?.url === newLeader.url, 10_000, "the standby to point to the new leader");
    const put = await fetch(`${remaining.url}/weights`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify([{ role: "ha", weight: 3 }]) });
    expect(put.status).toBe(200);
    expect(await (await fetch(`${newLeader.url}/weights`)).json()).toContainEqual({ role: "ha", weight: 3 });
    await fw.driver.stop({ teardown: true });
  }, 180_000);

  it("steps a leader that cannot renew its lease down before a standby takes over; the deposed leader's messages are ignored", async () => {
    const cluster = `ha${process.pid}x${++clusterSeq}`;
    const timings = { leaseMs: 1000, renewIntervalMs: 200, stepDownMarginMs: 200, pollIntervalMs: 50 };
    // A's way to the lease can be cut (its renewals fail) while the rest of its bus works.
    const registry = await JetStreamRegistryStore.open((await bus("lease")).connection, { bucket: registryBucketName(cluster) });
    const lease = new CuttableLeaseStore(registry.leaseStore());
    const logA = recordedLog();
    const logB = recordedLog();
    const a = createMaster({ cluster, transport: await bus("master-a"), log: logA.log, election: { timings, store: lease }, config: { agentPingIntervalMs: 200, maxMissedPings: 25 } });
    defer(() => a.stop());
    await a.start();
    expect(a.isLeader()).toBe(true);
    const b = createMaster({ cluster, transport: await bus("master-b"), log: logB.log, election: { timings }, config: { agentPingIntervalMs: 200, maxMissedPings: 25 } });
    defer(() => b.stop());
    await b.start();
    expect(b.isLeader()).toBe(false);
    expect(b.leader()?.id).toBe(a.masterId);

    const [agent] = await startAgents(cluster, 1);
    const fw = recordingFramework(await bus("framework"), cluster, { name: "ha-fence", failoverTimeoutSeconds: 120 });
    const { frameworkId } = await fw.driver.start();
    const offer = await fw.offers.waitFor(() => true, 20_000, "an offer");
    await fw.driver.launch(offer, [{ taskId: "keep", resources: "cpus:0.5;mem:64", command: "sleep 1000" }]);
    await fw.updates.waitFor((s) => s.taskId === "keep" && s.state === "TASK_RUNNING", 20_000, "keep RUNNING");
    const container = agent!.state().tasks[0]!.containerId;
    const oldEpoch = a.epoch();

    lease.cut = true;
    const steppedDown = await logA.lines.waitFor((l) => l.msg === "master stepped down: no longer serving the bus", 10_000, "A to step down");
    const elected = await logB.lines.waitFor((l) => l.msg === "master: elected leader", 10_000, "B to win");
    expect(steppedDown.reason).toBe("lapsed");
    // The order that matters: A stopped acting before B could start.
    expect(steppedDown.time as number).toBeLessThan(elected.time as number);
    await eventually(() => b.isLeader(), 10_000, "B to serve");
    console.log(`HA lease loss: A stepped down ${(elected.time as number) - (steppedDown.time as number)} ms before B was elected (epoch ${oldEpoch} -> ${b.epoch()})`);
    expect(a.isLeader()).toBe(false);
    expect(b.epoch()).toBeGreaterThan(oldEpoch);

    await eventually(() => agent!.state().masterEpoch === b.epoch() && agent!.state().registered, 20_000, "the agent on B");
    await eventually(() => fw.driver.stats().highestEpoch === b.epoch() && b.core.state().frameworks[0]?.connected === true, 20_000, "the framework on B");
    expect(b.core.state().frameworks[0]!.tasks).toMatchObject([{ id: "keep", state: "TASK_RUNNING" }]);

    // Messages of the deposed term (as if they had been in flight): the agent and the driver drop them.
    const attacker = await bus("stale");
    attacker.publish(agentCmdSubject(cluster, agent!.agentId()!), encodeEnvelope({ senderId: a.masterId, epoch: oldEpoch, payload: "masterToAgent", masterToAgent: { kind: "killTask", killTask: { frameworkId, taskId: "keep" } } }));
    const staleOffer = { id: `${a.masterId}-O999`, frameworkId, agentId: offer.agentId, hostname: offer.hostname, role: offer.role, resources: resourcesToWire(offer.resources), attributes: [] };
    attacker.publish(frameworkEventsSubject(cluster, frameworkId), encodeEnvelope({ senderId: a.masterId, epoch: oldEpoch, payload: "schedulerEvent", schedulerEvent: { kind: "offers", offers: { offers: [staleOffer] } } }));
    await attacker.flush();
    const staleOnAgent = async () => /corral_agent_stale_epoch_messages_total [1-9]/.test(await (await fetch(`${agent!.httpUrl()}/metrics`)).text());
    await eventually(staleOnAgent, 10_000, "the agent to drop the stale kill");
    await eventually(() => fw.driver.stats().staleEventsIgnored >= 1, 10_000, "the driver to drop the stale offer");
    expect(fw.offers.filter((o) => o.id === staleOffer.id)).toEqual([]);
    expect(agent!.state().tasks).toMatchObject([{ taskId: "keep", state: "TASK_RUNNING", containerId: container }]);
    noTerminalUpdates(fw, ["keep"]);

    // Reconnected to the lease, A stays a standby and points to B.
    lease.cut = false;
    await eventually(() => a.leader()?.id === b.masterId, 10_000, "A to see B lead");
    expect(a.isLeader()).toBe(false);
    await fw.driver.stop({ teardown: true });
  }, 120_000);

  it("hands over at once on a clean stop, and a standby with no known leader answers writes with 503", async () => {
    const cluster = `ha${process.pid}x${++clusterSeq}`;
    const timings = { leaseMs: 3000, renewIntervalMs: 300, stepDownMarginMs: 300, pollIntervalMs: 50 };
    const a = createMaster({ cluster, transport: await bus("master-a"), log: QUIET, election: { timings } });
    defer(() => a.stop());
    await a.start();
    const b = createMaster({ cluster, transport: await bus("master-b"), log: QUIET, election: { timings } });
    defer(() => b.stop());
    await b.start();
    const stoppedAt = Date.now();
    await a.stop();
    await eventually(() => b.isLeader(), 5_000, "B to lead");
    // Well within the lease: the released key is taken at B's next read.
    expect(Date.now() - stoppedAt).toBeLessThan(timings.leaseMs);

    // A master that cannot reach the lease at all knows no leader.
    const lonelyRegistry = await JetStreamRegistryStore.open((await bus("lease")).connection, { bucket: registryBucketName(`${cluster}-lonely`) });
    const cut = new CuttableLeaseStore(lonelyRegistry.leaseStore());
    cut.cut = true;
    const lonely = createMaster({ cluster: `${cluster}-lonely`, transport: await bus("lonely"), log: QUIET, election: { timings, store: cut } });
    defer(() => lonely.stop());
    await lonely.start();
    expect(await health(lonely.httpUrl())).toMatchObject({ leader: false, leaderInfo: null });
    const refused = await fetch(`${lonely.httpUrl()}/quota`, { method: "PUT", headers: { "content-type": "application/json" }, body: "[]", redirect: "manual" });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ code: "CORRAL_ERR_NO_LEADER" });
    expect((await fetch(`${lonely.httpUrl()}/metrics`)).status).toBe(200);
  }, 60_000);
});

describe("a master that wins but cannot serve", () => {
  it("resigns at once (a standby takes over without waiting for the lease) and campaigns again later", async () => {
    const cluster = `ha${process.pid}x${++clusterSeq}`;
    // A long lease, so that "taken over at once" and "after the lease" cannot be confused under load.
    const timings = { leaseMs: 6000, renewIntervalMs: 300, stepDownMarginMs: 300, pollIntervalMs: 50 };
    const registry = await JetStreamRegistryStore.open((await bus("registry")).connection, { bucket: registryBucketName(cluster) });
    // A's registry read hangs until the test fails it: A wins the free lease, B stands by, then A
    // cannot take the term up.
    let failLoad: (err: Error) => void = () => {};
    const loading = new Promise<never>((_resolve, reject) => (failLoad = reject));
    const unreadable = { load: () => loading, put: registry.put.bind(registry), delete: registry.delete.bind(registry), close: async () => {} };
    const logA = recordedLog();
    const a = createMaster({ cluster, transport: await bus("master-a"), log: logA.log, store: unreadable, election: { timings, store: registry.leaseStore() } });
    defer(() => a.stop());
    const b = createMaster({ cluster, transport: await bus("master-b"), log: QUIET, election: { timings } });
    defer(() => b.stop());
    const aStarted = a.start();
    await logA.lines.waitFor((l) => l.msg === "master: elected leader", 10_000, "A to win");
    await b.start();
    expect(b.leader()?.id).toBe(a.masterId);
    const failedAt = Date.now();
    failLoad(new Error("registry unreadable (test)"));
    await aStarted;
    await logA.lines.waitFor((l) => l.msg === "master: lost leadership" && l.reason === "resigned", 10_000, "A to resign");
    expect(a.isLeader()).toBe(false);
    await eventually(() => b.isLeader(), 10_000, "B to lead");
    // Released, not lapsed: B did not wait out the 6 s lease.
    expect(Date.now() - failedAt).toBeLessThan(timings.leaseMs);
    await eventually(() => a.leader()?.id === b.masterId, 20_000, "A to see B lead");
  }, 60_000);
});

/** A real lease store whose operations fail while `cut` is set (a master cut off from the KV). */
class CuttableLeaseStore implements LeaseStore {
  cut = false;
  constructor(private readonly inner: LeaseStore) {}
  private check(): void {
    if (this.cut) throw new Error("lease store unreachable (cut by the test)");
  }
  async leaseRead() {
    this.check();
    return this.inner.leaseRead();
  }
  async leaseCreate(value: string) {
    this.check();
    return this.inner.leaseCreate(value);
  }
  async leaseUpdate(value: string, revision: number) {
    this.check();
    return this.inner.leaseUpdate(value, revision);
  }
  async leaseRelease(revision: number) {
    this.check();
    return this.inner.leaseRelease(revision);
  }
}

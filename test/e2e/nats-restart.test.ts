/**
 * The bus goes away under load and comes back: nats-server is stopped while two masters (with
 * leader election), two agents, an SDK framework launching short tasks and Marathon work, then
 * started again on the same port with the same JetStream store. Every component must reconnect
 * and resume by itself, no status update may be lost (the agents retry until acknowledged), the
 * JetStream state must be intact, and new work must run afterwards.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { createAgent, type Agent } from "../../agent/agent.ts";
import { createMarathon } from "../../frameworks/marathon/marathon.ts";
import { JetStreamMarathonStore, marathonBucket } from "../../frameworks/marathon/store.ts";
import { createMaster, registryBucketName, type Master } from "../../master/shell.ts";
import { JetStreamRegistryStore, registryKey } from "../../master/store.ts";
import type { NatsTransport, NatsTransportEvent } from "../../sdk/nats-transport.ts";
import { Resources } from "../../sdk/resources.ts";
import { createSchedulerDriver, type OfferView, type SchedulerDriver, type TaskStatus } from "../../sdk/scheduler.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";
import { EventLog, eventually } from "../harness/events.ts";
import { useCleanups } from "../harness/cleanups.ts";
import { connectBus, useNats } from "../harness/nats.ts";

const nats = useNats();
const QUIET = pino({ level: "error" });
const TERMINAL: ReadonlySet<string> = TERMINAL_TASK_STATES;
const CLUSTER = `nr${process.pid}`;
const STEP_MS = 60_000;
const TASK = "cpus:0.1;mem:32";
const TASK_RESOURCES = Resources.parse(TASK);
/** Load tasks running at once at most, and in all. */
const MAX_LOAD_IN_FLIGHT = 9;
const MAX_LOAD_TASKS = 400;

/** A framework that keeps launching short tasks while `running`, and records every update. */
interface LoadFramework {
  readonly driver: SchedulerDriver;
  readonly updates: EventLog<TaskStatus>;
  /** Tasks whose launch the master answered with success. */
  readonly accepted: Set<string>;
  /** Tasks whose launch failed or got no answer (the bus was down): they may or may not exist. */
  readonly uncertain: Set<string>;
  running: boolean;
}

function loadFramework(transport: NatsTransport): LoadFramework {
  const updates = new EventLog<TaskStatus>();
  const accepted = new Set<string>();
  const uncertain = new Set<string>();
  let seq = 0;
  const fw: LoadFramework = {
    driver: undefined as unknown as SchedulerDriver,
    updates,
    accepted,
    uncertain,
    running: true,
  };
  const driver = createSchedulerDriver({
    transport,
    cluster: CLUSTER,
    framework: { name: "load", failoverTimeoutSeconds: 600 },
    log: QUIET,
    callbacks: {
      offers: async (offers: OfferView[]) => {
        for (const offer of offers) {
          // Up to three short tasks per offer: launches, runs and endings overlap all the time.
          // Bounded (in flight and in total): agents spawn in this process, and the machine is shared.
          const ended = new Set(updates.filter((s) => TERMINAL.has(s.state)).map((s) => s.taskId));
          const inFlight = [...accepted, ...uncertain].filter((id) => !ended.has(id)).length;
          let fit = 0;
          const room0 = Math.min(3, MAX_LOAD_IN_FLIGHT - inFlight, MAX_LOAD_TASKS - seq);
          for (let room = offer.resources; fit < room0 && room.contains(TASK_RESOURCES); fit++) room = room.subtract(TASK_RESOURCES);
          if (!fw.running || fit === 0) {
            await driver.decline([offer.id], { refuseSeconds: 0.2 }).catch(() => undefined);
            continue;
          }
          const ids = Array.from({ length: fit }, () => `load-${++seq}`);
          try {
            await driver.launch(offer, ids.map((taskId) => ({ taskId, resources: TASK, command: "sleep 0.3" })), { refuseSeconds: 0.1 });
            for (const id of ids) accepted.add(id);
          } catch {
            // The bus is down or the offer went with the master's term: the call may or may not
            // have reached the master. Hand the offer back in case it did not.
            for (const id of ids) uncertain.add(id);
            await driver.decline([offer.id]).catch(() => undefined);
          }
        }
      },
      update: (status) => updates.push(status),
    },
  });
  (fw as { driver: SchedulerDriver }).driver = driver;
  return fw;
}

describe("a nats-server restart under load", () => {
  const defer = useCleanups();

  it("every component reconnects and resumes, no status update is lost, JetStream state survives, and new work runs", async () => {
    const events: Array<{ component: string; event: NatsTransportEvent }> = [];
    const bus = async (component: string) => {
      const transport = await connectBus(nats, component, defer);
      transport.onEvent((event) => events.push({ component, event }));
      return transport;
    };

    // --- the cluster ----------------------------------------------------------------------------
    const timings = { leaseMs: 1500, renewIntervalMs: 250, stepDownMarginMs: 250, pollIntervalMs: 50 };
    const config = { allocationIntervalMs: 100, agentPingIntervalMs: 300, maxMissedPings: 10, frameworkHeartbeatIntervalMs: 300, maxMissedFrameworkHeartbeats: 10 };
    const masters: Master[] = [];
    for (const name of ["master-a", "master-b"]) {
      const master = createMaster({ cluster: CLUSTER, transport: await bus(name), log: QUIET, election: { timings }, config });
      defer(() => master.stop());
      await master.start();
      masters.push(master);
    }
    const leader = () => masters.find((m) => m.isLeader());
    const firstLeader = await eventually(() => leader(), STEP_MS, "a leading master");
    const termBefore = { id: firstLeader.masterId, epoch: firstLeader.epoch() };

    const agents: Agent[] = [];
    for (const i of [1, 2]) {
      const workDir = await mkdtemp(join(tmpdir(), "corral-nr-agent-"));
      const agent = createAgent({ cluster: CLUSTER, transport: await bus(`agent${i}`), workDir, resources: "cpus:2;mem:1024;disk:1024;ports:[31000-31099]", hostname: `host${i}`, log: QUIET });
      defer(async () => {
        await agent.stop();
        await rm(workDir, { recursive: true, force: true });
      });
      await agent.start();
      agents.push(agent);
    }
    await eventually(() => agents.every((a) => a.state().registered), STEP_MS, "agents registered");

    const marathon = createMarathon({ transport: await bus("marathon"), cluster: CLUSTER, httpPort: 0, log: QUIET, tickIntervalMs: 100, failoverTimeoutSeconds: 600 });
    await marathon.start();
    defer(() => marathon.stop());
    const api = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${marathon.httpUrl()}${path}`, { method, signal: AbortSignal.timeout(20_000), ...(body ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}) });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const runningWeb = async () => (((await api("GET", "/v2/apps/web/tasks")).body.tasks ?? []) as Array<{ id: string; state: string }>).filter((t) => t.state === "TASK_RUNNING");
    expect((await api("POST", "/v2/apps", { id: "/web", cmd: "sleep 1000", instances: 2, cpus: 0.1, mem: 32 })).status).toBe(201);
    const webBefore = await eventually(async () => ((await runningWeb()).length === 2 ? runningWeb() : undefined), STEP_MS, "the app's 2 instances");

    const load = loadFramework(await bus("load"));
    await load.driver.start();
    defer(() => load.driver.stop({ teardown: true }));
    const finished = () => load.updates.filter((s) => s.state === "TASK_FINISHED").length;
    await eventually(() => finished() >= 6, STEP_MS, "load tasks finishing");

    // What JetStream holds before the outage, read as a new leader reads it. (Not `kv.keys()`: its
    // listing can hang while the leader lease in the same bucket is renewed; see the stores' load.)
    const stored = async () => {
      const transport = await bus("kv-reader");
      const registry = await JetStreamRegistryStore.open(transport.connection, { bucket: registryBucketName(CLUSTER) });
      const marathonStore = await JetStreamMarathonStore.open(transport.connection, { bucket: marathonBucket(CLUSTER) });
      const records = (await registry.load()).map((r) => registryKey(r.kind, r.id)).sort();
      const marathonState = await marathonStore.load();
      await transport.close();
      return { records, apps: marathonState.apps.map((a) => a.app.id).sort(), instances: marathonState.instances.map((i) => i.id).sort() };
    };
    const storedBefore = await stored();
    expect(storedBefore.records.filter((k) => k.startsWith("agent."))).toHaveLength(2);
    expect(storedBefore.apps).toEqual(["/web"]);
    expect(storedBefore.instances).toEqual(webBefore.map((t) => t.id).sort());

    // --- the outage -------------------------------------------------------------------------------
    const eventsBeforeOutage = events.length;
    await nats.server.kill();
    const components = ["master-a", "master-b", "agent1", "agent2", "marathon", "load"];
    await eventually(() => components.every((c) => events.slice(eventsBeforeOutage).some((e) => e.component === c && e.event.type === "disconnect")), STEP_MS, "every component to notice the outage");
    // Tasks keep ending while the bus is down: their updates wait at the agents, unacknowledged.
    await eventually(() => agents.some((a) => a.state().tasks.some((t) => TERMINAL.has(t.state) && !t.completed)), STEP_MS, "a task ending during the outage");
    await nats.server.start();
    await eventually(() => components.every((c) => events.slice(eventsBeforeOutage).some((e) => e.component === c && e.event.type === "reconnect")), STEP_MS, "every component to reconnect");

    // --- resumed by itself --------------------------------------------------------------------
    const newLeader = await eventually(() => leader(), STEP_MS, "a leading master after the restart");
    expect(masters.filter((m) => m.isLeader())).toHaveLength(1);
    await eventually(() => agents.every((a) => a.state().registered && a.state().masterEpoch === newLeader.epoch()), STEP_MS, "agents registered with the leader");
    await eventually(() => newLeader.core.state().frameworks.filter((f) => f.connected).length === 2, STEP_MS, "both frameworks subscribed to the leader");

    // Let the load run on after the restart, then stop it and let every task end.
    const finishedAtRestart = finished();
    await eventually(() => finished() >= finishedAtRestart + 6, STEP_MS, "load tasks finishing after the restart");
    load.running = false;
    await eventually(() => [...load.accepted].every((id) => load.updates.items.some((s) => s.taskId === id && TERMINAL.has(s.state))), STEP_MS, "a final update for every accepted task");
    // Nothing is stuck at an agent: every update was acknowledged.
    await eventually(() => agents.every((a) => a.state().statusUpdates === 0), STEP_MS, "no unacknowledged status update at the agents");

    // No update lost: every accepted task was seen RUNNING, then FINISHED (not LOST or FAILED);
    // or, launched from an offer of a master term that ended meanwhile, it was never run and the
    // master said so (Mesos: TASK_DROPPED, REASON_INVALID_OFFERS, to a partition-aware framework).
    let dropped = 0;
    for (const id of load.accepted) {
      const updates = load.updates.filter((s) => s.taskId === id);
      const states = updates.map((s) => s.state);
      const final = updates.find((s) => TERMINAL.has(s.state));
      if (final?.state === "TASK_DROPPED") {
        dropped++;
        expect({ id, states, reason: final.reason }).toEqual({ id, states: ["TASK_DROPPED"], reason: "REASON_INVALID_OFFERS" });
        continue;
      }
      expect({ id, states, running: states.includes("TASK_RUNNING"), final: final?.state }).toEqual({ id, states, running: true, final: "TASK_FINISHED" });
      expect(states.indexOf("TASK_RUNNING")).toBeLessThan(states.indexOf("TASK_FINISHED"));
    }
    // A launch whose answer the outage swallowed either ran to its end or is unknown to the
    // master (Mesos answers TASK_UNKNOWN to a partition-aware framework for a task it never saw).
    const reconciledFrom = load.updates.items.length;
    if (load.uncertain.size > 0) await load.driver.reconcile([...load.uncertain].map((taskId) => ({ taskId })));
    for (const id of load.uncertain) {
      const answer = await load.updates.waitFor((s) => s.taskId === id && load.updates.items.indexOf(s) >= reconciledFrom, STEP_MS, `the reconciliation answer for ${id}`);
      const ran = load.updates.items.some((s) => s.taskId === id && s.state === "TASK_RUNNING");
      expect({ id, ran, state: answer.state }).toEqual({ id, ran, state: ran ? "TASK_FINISHED" : "TASK_UNKNOWN" });
    }
    // Every task an agent ran reached the framework with its final state.
    for (const agent of agents) {
      for (const task of agent.state().tasks.filter((t) => t.taskId.startsWith("load-"))) {
        expect({ id: task.taskId, seen: load.updates.items.some((s) => s.taskId === task.taskId && s.state === task.state) }).toEqual({ id: task.taskId, seen: true });
      }
    }
    console.log(`nats restart under load: leader ${termBefore.id} (epoch ${termBefore.epoch}) -> ${newLeader.masterId} (epoch ${newLeader.epoch()}); ${load.accepted.size} tasks accepted (${dropped} dropped: offers of an ended term), ${load.uncertain.size} launches unanswered during the outage, ${finished()} FINISHED updates`);

    // JetStream state intact: the same records (plus those written since), and Marathon's app.
    const storedAfter = await stored();
    for (const key of storedBefore.records) expect(storedAfter.records).toContain(key);
    expect(storedAfter.apps).toEqual(storedBefore.apps);
    expect(storedAfter.instances).toEqual(storedBefore.instances);

    // Marathon kept its instances (the same tasks) and new work runs: scale up.
    expect((await runningWeb()).map((t) => t.id).sort()).toEqual(webBefore.map((t) => t.id).sort());
    expect((await api("PUT", "/v2/apps/web", { instances: 3 })).status).toBe(200);
    await eventually(async () => (await runningWeb()).length === 3, STEP_MS, "Marathon to scale to 3 after the restart");
  }, 300_000);
});

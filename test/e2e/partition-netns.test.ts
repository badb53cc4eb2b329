/**
 * A network partition between real hosts (network namespaces, test/harness/netns.ts): nats-server,
 * the master and two agents run as processes on their own simulated hosts; two SDK frameworks
 * (one partition-aware, one not) and Marathon (partition-aware, as the real one registers) run in
 * the test process and reach the bus through a forwarded port. Agent 1's link is cut for longer
 * than the master's ping timeout, then restored, and each party must see what Mesos and Marathon
 * promise:
 *
 * - cut: the master marks agent 1 unreachable; the partition-aware framework is told
 *   TASK_UNREACHABLE, the other TASK_LOST; Marathon replaces its instances on agent 2 once they
 *   were unreachable for the app's `unreachableStrategy`.
 * - restored: agent 1 re-registers; the task of the framework that is not partition-aware is
 *   killed there (it was reported LOST, so it must never come back); the partition-aware task is
 *   reconciled back to TASK_RUNNING in the same container; Marathon kills the instances it
 *   expunged and runs exactly the app's instance count.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { createMarathon, type Marathon } from "../../frameworks/marathon/marathon.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { Resources } from "../../sdk/resources.ts";
import { createSchedulerDriver, type OfferView, type SchedulerDriver, type TaskSpec, type TaskStatus } from "../../sdk/scheduler.ts";
import { EventLog, eventually, within } from "../harness/events.ts";
import { findNatsServer } from "../harness/nats.ts";
import { createNetwork, netnsUnavailableReason, type HostProcess, type TestNetwork } from "../harness/netns.ts";

const unavailable = netnsUnavailableReason();
if (unavailable) console.warn(`partition tests skipped: ${unavailable}`);

const QUIET = pino({ level: "error" });
const CLUSTER = `part${process.pid}`;
const NATS_PORT = 4222;
const MASTER_PORT = 5050;
const AGENT_PORT = 5051;
/** The master's ping timeout is PING_INTERVAL x MAX_MISSED_PINGS. */
const PING_INTERVAL = "300ms";
const MAX_MISSED_PINGS = "5";
/** Generous: the machine is shared and every step crosses processes. */
const STEP_MS = 60_000;

interface MasterState {
  agents: Array<{ id: string; hostname: string }>;
  unreachableAgents: Array<{ id: string; hostname: string }>;
}
interface AgentState {
  id: string | null;
  registered: boolean;
  tasks: Array<{ frameworkId: string; taskId: string; state: string; containerId: string | null }>;
}

async function getJson<T>(url: string): Promise<T | undefined> {
  try {
    // A request that stalls is a failed probe (retried), not a wait without end.
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return response.ok ? ((await response.json()) as T) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * An SDK framework that launches what the test asks for on the host it names and declines every
 * other offer for a second (so that it never sits on resources Marathon needs).
 */
interface SteeredFramework {
  readonly driver: SchedulerDriver;
  readonly updates: EventLog<TaskStatus>;
  /** Launches `task` on the first offer from `hostname`; resolves once it is RUNNING. */
  run(hostname: string, task: TaskSpec): Promise<TaskStatus>;
}

function steeredFramework(transport: NatsTransport, name: string, partitionAware: boolean): SteeredFramework {
  const updates = new EventLog<TaskStatus>();
  const wanted: Array<{ hostname: string; task: TaskSpec }> = [];
  const driver: SchedulerDriver = createSchedulerDriver({
    transport,
    cluster: CLUSTER,
    framework: { name, partitionAware, failoverTimeoutSeconds: 600 },
    log: QUIET,
    callbacks: {
      offers: async (offers: OfferView[]) => {
        for (const offer of offers) {
          const i = wanted.findIndex((w) => w.hostname === offer.hostname && offer.resources.contains(Resources.parse(String(w.task.resources))));
          if (i < 0) {
            await driver.decline([offer.id], { refuseSeconds: 1 }).catch(() => undefined);
            continue;
          }
          const [want] = wanted.splice(i, 1);
          await driver.launch(offer, [want!.task], { refuseSeconds: 1 });
        }
      },
      update: (status) => updates.push(status),
    },
  });
  return {
    driver,
    updates,
    async run(hostname, task) {
      wanted.push({ hostname, task });
      await within(driver.revive(), STEP_MS, `${name}'s REVIVE`);
      return updates.waitFor((s) => s.taskId === task.taskId && s.state === "TASK_RUNNING", STEP_MS, `${name}'s ${task.taskId} RUNNING`);
    },
  };
}

describe.skipIf(unavailable !== undefined)(`a partitioned agent${unavailable ? ` (skipped: ${unavailable})` : ""}`, () => {
  let network: TestNetwork | undefined;
  const cleanups: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await network?.destroy();
  });

  it("is marked unreachable, its tasks are reported per partition-awareness and replaced by Marathon; back, it re-registers and Mesos's and Marathon's rules settle its tasks", async () => {
    network = await createNetwork({ hosts: ["nats", "master", "agent1", "agent2"] });
    const net = network;
    const natsUrl = `nats://${net.address("nats")}:${NATS_PORT}`;
    const corral = join(process.cwd(), "bin/corral");

    // --- the hosts ---------------------------------------------------------------------------
    const storeDir = await mkdtemp(join(tmpdir(), "corral-part-nats-"));
    cleanups.push(() => rm(storeDir, { recursive: true, force: true }));
    const nats = net.spawn("nats", findNatsServer(), ["-a", "0.0.0.0", "-p", String(NATS_PORT), "-js", "-sd", storeDir]);
    await nats.log.waitFor((l) => typeof l.msg === "string" && l.msg.includes("Server is ready"), STEP_MS, "nats-server ready");
    const master = net.spawn("master", corral, [
      ...["master", "--nats", natsUrl, "--cluster", CLUSTER, "--port", String(MASTER_PORT), "--log-level", "info"],
      ...["--agent-ping-interval", PING_INTERVAL, "--max-missed-pings", MAX_MISSED_PINGS, "--allocation-interval", "100ms"],
    ]);
    const masterUrl = `http://127.0.0.1:${await net.forward("master", MASTER_PORT)}`;
    await eventually(() => getJson(`${masterUrl}/health`), STEP_MS, "the master's HTTP");
    const spawnAgent = async (host: string, hostname: string): Promise<{ process: HostProcess; url: string }> => {
      const workDir = await mkdtemp(join(tmpdir(), `corral-part-${host}-`));
      cleanups.push(() => rm(workDir, { recursive: true, force: true }));
      const agentProcess = net.spawn(host, corral, [
        ...["agent", "--nats", natsUrl, "--cluster", CLUSTER, "--work-dir", workDir, "--hostname", hostname, "--port", String(AGENT_PORT)],
        // Plain process groups: what is under test is the network, and they start fastest.
        ...["--resources", "cpus:4;mem:2048;disk:1024;ports:[31000-31099]", "--isolation", "posix", "--log-level", "info"],
      ]);
      const url = `http://127.0.0.1:${await net.forward(host, AGENT_PORT)}`;
      await eventually(async () => (await getJson<AgentState>(`${url}/state`))?.registered, STEP_MS, `${host} registered`);
      return { process: agentProcess, url };
    };
    const agent1 = await spawnAgent("agent1", "host1");
    const agent1Id = (await getJson<AgentState>(`${agent1.url}/state`))!.id!;

    // --- the frameworks (in this process, through a forwarded port to nats-server) ------------
    const busUrl = `nats://127.0.0.1:${await net.forward("nats", NATS_PORT)}`;
    const bus = async (name: string) => {
      const transport = await connectNats({ servers: busUrl, name });
      cleanups.push(() => transport.close());
      return transport;
    };
    const aware = steeredFramework(await bus("aware"), "aware", true);
    const plain = steeredFramework(await bus("plain"), "plain", false);
    for (const fw of [aware, plain]) {
      await within(fw.driver.start(), STEP_MS, "a framework subscribed");
      cleanups.push(() => fw.driver.stop({ teardown: true }));
    }
    await aware.run("host1", { taskId: "aware-1", resources: "cpus:0.1;mem:32", command: "sleep 1000" });
    await plain.run("host1", { taskId: "plain-1", resources: "cpus:0.1;mem:32", command: "sleep 1000" });

    const marathon: Marathon = createMarathon({ transport: await bus("marathon"), cluster: CLUSTER, httpPort: 0, log: QUIET, tickIntervalMs: 100, failoverTimeoutSeconds: 600 });
    await within(marathon.start(), STEP_MS, "Marathon started");
    cleanups.push(() => marathon.stop());
    const api = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${marathon.httpUrl()}${path}`, { method, signal: AbortSignal.timeout(10_000), ...(body ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}) });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const marathonTasks = async () => ((await api("GET", "/v2/apps/web/tasks")).body.tasks ?? []) as Array<{ id: string; host: string; state: string }>;
    const app = { id: "/web", cmd: "sleep 1000", instances: 2, cpus: 0.1, mem: 32, unreachableStrategy: { inactiveAfterSeconds: 1, expungeAfterSeconds: 2 } };
    expect((await api("POST", "/v2/apps", app)).status).toBe(201);
    const originals = await eventually(async () => {
      const tasks = (await marathonTasks()).filter((t) => t.state === "TASK_RUNNING");
      return tasks.length === 2 ? tasks : undefined;
    }, STEP_MS, "the app's 2 instances RUNNING on host1");
    expect(originals.map((t) => t.host)).toEqual(["host1", "host1"]);

    // Only now a second agent: the replacements have somewhere to go.
    const agent2 = await spawnAgent("agent2", "host2");
    const agent1Before = (await getJson<AgentState>(`${agent1.url}/state`))!;
    const containerOf = (state: AgentState, taskId: string) => state.tasks.find((t) => t.taskId === taskId)?.containerId;
    const awareContainer = containerOf(agent1Before, "aware-1");
    expect(awareContainer).toBeTruthy();

    // --- cut agent 1 off -----------------------------------------------------------------------
    await net.cut("agent1");
    await eventually(async () => (await getJson<MasterState>(`${masterUrl}/state`))?.unreachableAgents.some((a) => a.id === agent1Id), STEP_MS, "the master to mark agent1 unreachable");
    await master.log.waitFor((l) => l.msg === "agent unreachable (missed pings)" && l.agentId === agent1Id, STEP_MS, "the master's log line");
    const unreachable = await aware.updates.waitFor((s) => s.taskId === "aware-1" && s.state === "TASK_UNREACHABLE", STEP_MS, "TASK_UNREACHABLE for the partition-aware framework");
    expect(unreachable.agentId).toBe(agent1Id);
    const lost = await plain.updates.waitFor((s) => s.taskId === "plain-1" && s.state === "TASK_LOST", STEP_MS, "TASK_LOST for the framework that is not partition-aware");
    expect(lost.agentId).toBe(agent1Id);
    expect(plain.updates.filter((s) => s.state === "TASK_UNREACHABLE")).toEqual([]);

    // Marathon: the unreachable instances are given up and replaced on host2.
    const replacements = await eventually(async () => {
      const tasks = await marathonTasks();
      const running = tasks.filter((t) => t.state === "TASK_RUNNING");
      return running.length === 2 && running.every((t) => t.host === "host2") && tasks.length === 2 ? running : undefined;
    }, STEP_MS, "Marathon's 2 replacements RUNNING on host2, the originals expunged");
    expect(replacements.map((t) => t.id).filter((id) => originals.some((o) => o.id === id))).toEqual([]);
    // Still cut: agent 1 is unreachable throughout what was asserted above.
    expect((await getJson<MasterState>(`${masterUrl}/state`))!.unreachableAgents.map((a) => a.id)).toContain(agent1Id);

    // --- restore the link ---------------------------------------------------------------------
    const updatesBeforeRestore = { aware: aware.updates.items.length, plain: plain.updates.items.length };
    const agent1LogBeforeRestore = agent1.process.log.items.length;
    await net.restore("agent1");
    await eventually(async () => {
      const state = await getJson<MasterState>(`${masterUrl}/state`);
      return state && state.agents.some((a) => a.id === agent1Id) && !state.unreachableAgents.some((a) => a.id === agent1Id);
    }, STEP_MS, "agent1 to re-register");
    // As itself (same id), and after the link came back (not its first registration).
    await agent1.process.log.waitFor((l) => l.msg === "registered with the master" && l.agentId === agent1Id && agent1.process.log.items.indexOf(l) >= agent1LogBeforeRestore, STEP_MS, "agent1's re-registration log line");

    // The framework that is not partition-aware was told LOST: its task is killed, never back.
    const agent1After = await eventually(async () => {
      const state = await getJson<AgentState>(`${agent1.url}/state`);
      const plainTask = state?.tasks.find((t) => t.taskId === "plain-1");
      return plainTask && plainTask.state === "TASK_KILLED" ? state : undefined;
    }, STEP_MS, "plain-1 killed on agent1");
    expect(plain.updates.items.slice(updatesBeforeRestore.plain).filter((s) => s.taskId === "plain-1" && !["TASK_KILLED", "TASK_KILLING", "TASK_LOST"].includes(s.state))).toEqual([]);

    // The partition-aware task is reconciled back to RUNNING, in the very same container.
    expect(containerOf(agent1After!, "aware-1")).toBe(awareContainer);
    expect(agent1After!.tasks.find((t) => t.taskId === "aware-1")?.state).toBe("TASK_RUNNING");
    await within(aware.driver.reconcile([{ taskId: "aware-1", agentId: agent1Id }]), STEP_MS, "the reconcile call");
    await aware.updates.waitFor((s) => s.taskId === "aware-1" && s.state === "TASK_RUNNING" && aware.updates.items.indexOf(s) >= updatesBeforeRestore.aware, STEP_MS, "aware-1 reconciled to RUNNING");

    // Marathon kills the originals it expunged and keeps exactly the app's 2 instances.
    await eventually(async () => {
      const state = await getJson<AgentState>(`${agent1.url}/state`);
      const originalsThere = state?.tasks.filter((t) => originals.some((o) => o.id === t.taskId)) ?? [];
      return originalsThere.length === 2 && originalsThere.every((t) => t.state === "TASK_KILLED");
    }, STEP_MS, "Marathon's expunged originals killed on agent1");
    const final = await marathonTasks();
    expect(final.map((t) => `${t.id}@${t.host}:${t.state}`).sort()).toEqual(replacements.map((t) => `${t.id}@${t.host}:TASK_RUNNING`).sort());
    const agent2State = (await getJson<AgentState>(`${agent2.url}/state`))!;
    expect(agent2State.tasks.filter((t) => t.state === "TASK_RUNNING").map((t) => t.taskId).sort()).toEqual(replacements.map((t) => t.id).sort());
  }, 300_000);
});

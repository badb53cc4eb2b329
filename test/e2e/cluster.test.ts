/**
 * Issue 3's end-to-end behaviour on a real nats-server: a real master, real agents running real
 * processes, and frameworks built on the SDK.
 */
import { afterEach, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { encodeEnvelope } from "../../sdk/wire/codec.ts";
import { agentCmdSubject, frameworkEventsSubject, masterAgentSubject, masterSchedulerSubject } from "../../sdk/wire/subjects.ts";
import { useNats } from "../harness/nats.ts";
import { eventually } from "../harness/events.ts";
import { recordingFramework, startCluster, type TestCluster } from "../harness/cluster.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";

const nats = useNats();
let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

const TERMINAL: ReadonlySet<string> = TERMINAL_TASK_STATES;

describe("a framework on a real cluster", () => {
  it("gets offers from two agents and runs tasks to FINISHED and FAILED with the exit code", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{}, {}] });
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "e2e" });
    await fw.driver.start();
    const first = await fw.offers.waitFor(() => true, 10_000, "an offer");
    const second = await fw.offers.waitFor((o) => o.agentId !== first.agentId, 10_000, "an offer from the other agent");
    await fw.driver.launch(first, [{ taskId: "ok", resources: "cpus:0.5;mem:64", command: "echo hello" }]);
    await fw.driver.launch(second, [{ taskId: "bad", resources: "cpus:0.5;mem:64", command: "exit 3" }]);
    const done = await fw.updates.waitFor((s) => s.taskId === "ok" && TERMINAL.has(s.state), 15_000, "ok to end");
    const failed = await fw.updates.waitFor((s) => s.taskId === "bad" && TERMINAL.has(s.state), 15_000, "bad to end");
    expect(done.state).toBe("TASK_FINISHED");
    expect(failed.state).toBe("TASK_FAILED");
    expect(failed.exitCode).toBe(3);
    expect(failed.message).toContain("3");
    for (const taskId of ["ok", "bad"]) {
      const states = fw.updates.filter((s) => s.taskId === taskId).map((s) => s.state);
      expect(states.indexOf("TASK_RUNNING")).toBeGreaterThanOrEqual(0);
      expect(states.indexOf("TASK_RUNNING")).toBeLessThan(states.findIndex((s) => TERMINAL.has(s)));
    }
    expect(first.agentId).not.toBe(second.agentId);
    await fw.driver.stop({ teardown: true });
  });

  it("kills a running task: KILL gives KILLED", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "killer" });
    await fw.driver.start();
    const offer = await fw.offers.waitFor(() => true);
    await fw.driver.launch(offer, [{ taskId: "sleeper", resources: "cpus:0.1;mem:32", command: "sleep 1000", killGracePeriodSeconds: 1 }]);
    await fw.updates.waitFor((s) => s.taskId === "sleeper" && s.state === "TASK_RUNNING");
    await fw.driver.kill("sleeper", offer.agentId);
    const end = await fw.updates.waitFor((s) => s.taskId === "sleeper" && TERMINAL.has(s.state));
    expect(end.state).toBe("TASK_KILLED");
    await fw.driver.stop({ teardown: true });
  });

  it("does not re-offer a declined agent to the decliner within refuse_seconds, but offers it to another framework", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const a = recordingFramework(await cluster.connect(), cluster.cluster, { name: "a" });
    await a.driver.start();
    const offer = await a.offers.waitFor(() => true);
    await a.driver.decline([offer.id], { refuseSeconds: 60 });
    const b = recordingFramework(await cluster.connect(), cluster.cluster, { name: "b" });
    await b.driver.start();
    const toB = await b.offers.waitFor(() => true, 10_000, "the declined agent offered to b");
    expect(toB.agentId).toBe(offer.agentId);
    await b.driver.decline([toB.id], { refuseSeconds: 0.2 });
    // Let many allocation runs pass (the observable clock of the allocator) while b keeps
    // declining: a, filtered for 60 s, must not see the agent again.
    const runs = cluster.master.core.counters.allocationRuns;
    await eventually(() => cluster!.master.core.counters.allocationRuns >= runs + 10, 10_000, "10 allocation runs");
    expect(a.offers.items).toHaveLength(1);
    expect(b.offers.items.length).toBeGreaterThan(1);
    await a.driver.stop({ teardown: true });
    await b.driver.stop({ teardown: true });
  });

  it("answers reconciliation as Mesos does", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "reconciler" });
    await fw.driver.start();
    const offer = await fw.offers.waitFor(() => true);
    await fw.driver.launch(offer, [{ taskId: "r1", resources: "cpus:0.1;mem:32", command: "sleep 1000" }]);
    await fw.updates.waitFor((s) => s.taskId === "r1" && s.state === "TASK_RUNNING");
    await fw.driver.reconcile([{ taskId: "r1", agentId: offer.agentId }, { taskId: "ghost", agentId: offer.agentId }, { taskId: "nowhere" }]);
    const r1 = await fw.updates.waitFor((s) => s.taskId === "r1" && s.reason === "REASON_RECONCILIATION");
    const ghost = await fw.updates.waitFor((s) => s.taskId === "ghost");
    const nowhere = await fw.updates.waitFor((s) => s.taskId === "nowhere");
    expect(r1.state).toBe("TASK_RUNNING");
    expect(ghost.state).toBe("TASK_GONE"); // the agent is registered but does not know the task
    expect(nowhere.state).toBe("TASK_UNKNOWN");
    const before = fw.updates.filter((s) => s.taskId === "r1" && s.reason === "REASON_RECONCILIATION").length;
    await fw.driver.reconcile(); // implicit: every task the master knows
    await eventually(() => fw.updates.filter((s) => s.taskId === "r1" && s.reason === "REASON_RECONCILIATION").length > before);
    await fw.driver.stop({ teardown: true });
  });

  it("re-sends an unacknowledged update until it is acknowledged", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [{ statusUpdateRetry: { initialMs: 100, maxMs: 200 } }] });
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "slow-acker" }, { autoAcknowledge: false });
    await fw.driver.start();
    const offer = await fw.offers.waitFor(() => true);
    await fw.driver.launch(offer, [{ taskId: "u1", resources: "cpus:0.1;mem:32", command: "sleep 1000" }]);
    // The first update (STARTING or RUNNING) is the head of the stream; unacknowledged, it comes again.
    const head = await fw.updates.waitFor((s) => s.taskId === "u1");
    const sameUuid = (s: { taskId: string; uuid: Uint8Array }) => s.taskId === "u1" && Buffer.from(s.uuid).equals(Buffer.from(head.uuid));
    await eventually(() => fw.updates.filter(sameUuid).length >= 3, 10_000, "three deliveries of the same update");
    await fw.driver.acknowledge(head);
    // After the ack, the stream moves on: the next state arrives with a new uuid.
    const next = await fw.updates.waitFor((s) => s.taskId === "u1" && !Buffer.from(s.uuid).equals(Buffer.from(head.uuid)) && s.uuid.length > 0);
    expect(next.state).not.toBe(head.state);
    await fw.driver.stop({ teardown: true });
  });
});

describe("failures", () => {
  it("reports the tasks of a SIGKILLed agent process as UNREACHABLE within the ping timeout", async () => {
    cluster = await startCluster({ natsUrl: nats.url, agents: [] });
    // A plain process group is enough here (and leaves no container cgroup behind the dead agent).
    const child = await cluster.spawnAgent("cpus:1;mem:256", "doomed", { isolation: "none" });
    await eventually(() => cluster!.master.core.sizes().agents === 1, 20_000, "the agent process to register");
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "watcher" });
    await fw.driver.start();
    const offer = await fw.offers.waitFor(() => true, 10_000);
    // A duration no other process uses marks the task's process: the task runs detached from
    // the agent, so it outlives it and the test must clean it up, also when it fails.
    const marker = `sleep 1000.${process.pid}${Date.now() % 100000}`;
    try {
      await fw.driver.launch(offer, [{ taskId: "orphan", resources: "cpus:0.1;mem:32", command: `exec ${marker}` }]);
      await fw.updates.waitFor((s) => s.taskId === "orphan" && s.state === "TASK_RUNNING", 15_000);
      const killedAt = Date.now();
      child.kill("SIGKILL");
      const lost = await fw.updates.waitFor((s) => s.taskId === "orphan" && s.state === "TASK_UNREACHABLE", 10_000, "TASK_UNREACHABLE");
      // Ping timeout: 3 missed pings of 200 ms, checked on the master's tick.
      expect(Date.now() - killedAt).toBeLessThan(5_000);
      expect(lost.reason).toBe("REASON_AGENT_REMOVED");
    } finally {
      spawnSync("pkill", ["-f", marker]);
    }
    await fw.driver.stop({ teardown: true });
  });

  it("keeps the tasks of a framework that fails over within its timeout, and kills those of one that does not", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const first = recordingFramework(await cluster.connect(), cluster.cluster, { name: "phoenix", failoverTimeoutSeconds: 3 });
    const { frameworkId } = await first.driver.start();
    const offer = await first.offers.waitFor(() => true);
    await first.driver.launch(offer, [{ taskId: "keep", resources: "cpus:0.1;mem:32", command: "sleep 1000" }]);
    await first.updates.waitFor((s) => s.taskId === "keep" && s.state === "TASK_RUNNING");
    await first.driver.stop(); // gone without teardown: the master counts it disconnected after 1 s
    await eventually(() => cluster!.master.core.state().frameworks.find((f) => f.id === frameworkId)?.connected === false, 10_000, "disconnection");

    const second = recordingFramework(await cluster.connect(), cluster.cluster, { name: "phoenix", failoverTimeoutSeconds: 3, id: frameworkId });
    await second.driver.start();
    await second.driver.reconcile([{ taskId: "keep", agentId: offer.agentId }]);
    const kept = await second.updates.waitFor((s) => s.taskId === "keep");
    expect(kept.state).toBe("TASK_RUNNING");

    await second.driver.stop(); // and this time nobody comes back
    const agent = cluster.agents[0]!;
    await eventually(() => agent.state().tasks.find((t) => t.taskId === "keep" && t.state === "TASK_KILLED"), 15_000, "the task killed after the failover timeout");
    expect(cluster.master.core.state().completedFrameworks.map((f) => f.id)).toContain(frameworkId);
  });
});

describe("bad input on the bus", () => {
  it("drops and counts garbage and wrong-schema messages on every subject while the cluster keeps serving", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    const fw = recordingFramework(await cluster.connect(), cluster.cluster, { name: "survivor" });
    const { frameworkId } = await fw.driver.start();
    const agentId = cluster.agents[0]!.agentId()!;
    const attacker = await cluster.connect("attacker");
    const garbage = new Uint8Array([0xff, 0x00, 0x13, 0x37, 0x42]);
    const wrongSchema = encodeEnvelope({ senderId: "x", schemaVersion: 99, payload: "schedulerEvent", schedulerEvent: { kind: "heartbeat", heartbeat: {} } });
    const wrongPayload = encodeEnvelope({ senderId: "x", payload: "masterInfo", masterInfo: { id: "m", epoch: 1, hostname: "h", httpEndpoint: "", version: "" } });
    const subjects = [masterSchedulerSubject(cluster.cluster), masterAgentSubject(cluster.cluster, agentId), frameworkEventsSubject(cluster.cluster, frameworkId), agentCmdSubject(cluster.cluster, agentId)];
    for (const subject of subjects) for (const bytes of [garbage, wrongSchema, wrongPayload]) attacker.publish(subject, bytes);
    await attacker.flush();

    const metrics = async () => (await fetch(`${cluster!.master.httpUrl()}/metrics`)).text();
    const droppedAt = (text: string, kind: string) =>
      text
        .split("\n")
        .filter((line) => line.startsWith("corral_bus_dropped_messages_total") && line.includes(`kind="${kind}"`))
        .reduce((sum, line) => sum + Number(line.split(" ").pop()), 0);
    await eventually(async () => {
      const text = await metrics();
      return droppedAt(text, "master.scheduler") >= 3 && droppedAt(text, "master.agent") >= 3;
    }, 10_000, "the master to count 3 drops per subject");
    await eventually(() => fw.driver.drops.count() >= 3, 10_000, "the framework to count 3 drops");
    await eventually(async () => droppedAt(await (await fetch(`${cluster!.agents[0]!.httpUrl()}/metrics`)).text(), "agent.cmd") >= 3, 10_000, "the agent to count 3 drops");

    // Still serving: a task runs end to end.
    const offer = await fw.offers.waitFor(() => true);
    await fw.driver.launch(offer, [{ taskId: "after", resources: "cpus:0.1;mem:32", command: "true" }]);
    expect((await fw.updates.waitFor((s) => s.taskId === "after" && TERMINAL.has(s.state))).state).toBe("TASK_FINISHED");
    await fw.driver.stop({ teardown: true });
  });
});

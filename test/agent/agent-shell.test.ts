/**
 * The agent shell against a real nats-server: the test plays the master with a plain transport.
 * Synchronisation is by awaiting messages (and "barriers": a ping whose pong proves the agent has
 * handled everything published before it), never by sleeping.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createAgent, MAX_CONCURRENT_SANDBOX_REMOVALS, type Agent, type AgentOptions } from "../../agent/agent.ts";
import { InstantContainerizer } from "../../agent/containerizer/instant.ts";
import type { Containerizer } from "../../agent/containerizer/types.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { encodeEnvelope } from "../../sdk/wire/codec.ts";
import { masterAgentSubject } from "../../sdk/wire/subjects.ts";
import type { AgentToMaster, TaskInfo } from "../../sdk/wire/types.ts";
import { useNats } from "../harness/nats.ts";
import { eventually } from "../harness/events.ts";
import { capturingLogger, Collector, FakeMaster, shellTask, SurvivingHost, type Received } from "./agent-harness.ts";

const nats = useNats({ jetstream: false });

let clusterSeq = 0;
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "corral-agent-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Setup {
  cluster: string;
  master: FakeMaster;
  workDir: string;
}

async function setup(): Promise<Setup> {
  const cluster = `t${process.pid}x${++clusterSeq}`;
  const master = await FakeMaster.connect(nats.url, cluster);
  cleanups.push(() => master.close());
  return { cluster, master, workDir: await tempDir() };
}

async function startAgent(s: Setup, options: Partial<AgentOptions> = {}): Promise<{ agent: Agent; transport: NatsTransport }> {
  const transport = await connectNats({ servers: nats.url, name: `agent-${s.cluster}` });
  const agent = createAgent({
    cluster: s.cluster,
    transport,
    workDir: s.workDir,
    resources: "cpus:2;mem:1024;disk:2048;ports:[31000-31010]",
    attributes: "rack:r1;zone:a",
    hostname: "agent.test",
    log: pino({ level: "silent" }),
    registrationBackoffMs: 20,
    ...options,
  });
  cleanups.push(async () => {
    await agent.stop();
    await transport.close();
  });
  await agent.start();
  return { agent, transport };
}

/** A registered agent with a listening, auto-registering master. */
async function registeredAgent(options: Partial<AgentOptions> = {}, autoAck = true) {
  const s = await setup();
  s.master.autoRegister = { agentId: "agent-1" };
  s.master.autoAck = autoAck;
  await s.master.listen();
  const { agent, transport } = await startAgent(s, options);
  await s.master.waitForPong(0);
  return { ...s, agent, transport };
}

let barrierSeq = 1000;
/** Resolves once the agent has handled every command published before it. */
async function barrier(master: FakeMaster, agentId = "agent-1"): Promise<Received> {
  const seq = ++barrierSeq;
  master.send(agentId, { kind: "ping", ping: { seq } });
  return master.waitForPong(seq);
}

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

async function getText(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return res.text();
}

function kinds(items: Received[]): string[] {
  return items.map((r) => r.message.kind);
}

describe("registration", () => {
  it("registers, persists its id, listens, pongs 0 and answers pings", async () => {
    const { master, agent, workDir } = await registeredAgent();
    const register = master.received.items.find((r) => r.message.kind === "register")!;
    const info = (register.message as Extract<AgentToMaster, { kind: "register" }>).register.agentInfo!;
    expect(info.id).toBe("");
    expect(info.hostname).toBe("agent.test");
    expect(info.httpEndpoint).toBe(agent.httpUrl());
    expect(info.attributes).toEqual([
      { name: "rack", text: "r1" },
      { name: "zone", text: "a" },
    ]);
    expect(info.resources.map((r) => r.name).sort()).toEqual(["cpus", "disk", "mem", "ports"]);

    const pong0 = await master.waitForPong(0);
    expect(pong0.senderId).toBe("agent-1");
    expect(agent.agentId()).toBe("agent-1");
    // Each agent speaks on its own subject: under its instance id until the master has given it an id.
    expect(register.senderId).toMatch(/^agent-[0-9a-f-]{36}$/);
    expect(register.subject).toBe(masterAgentSubject(master.cluster, register.senderId));
    expect(pong0.subject).toBe(masterAgentSubject(master.cluster, "agent-1"));
    expect((await readFile(join(workDir, "agent.id"), "utf8")).trim()).toBe("agent-1");

    master.send("agent-1", { kind: "ping", ping: { seq: 7 } });
    const pong7 = await master.waitForPong(7);
    expect(pong7.senderId).toBe("agent-1");
  });

  it("serves /health, /state and /metrics", async () => {
    const { agent } = await registeredAgent();
    expect(await getJson(`${agent.httpUrl()}/health`)).toEqual({ status: 200, body: { status: "ok" } });
    const { status, body } = await getJson(`${agent.httpUrl()}/state`);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      id: "agent-1",
      hostname: "agent.test",
      attributes: { rack: "r1", zone: "a" },
      isolation: "posix",
      registered: true,
      masterId: "master-1",
      tasks: [],
      statusUpdates: 0,
    });
    expect(body.resources.text).toBe("cpus:2;disk:2048;mem:1024;ports:[31000-31010]");
    expect(body.resources.json).toContainEqual({ name: "cpus", type: "SCALAR", scalar: { value: 2 } });
    const metrics = await getText(`${agent.httpUrl()}/metrics`);
    expect(metrics).toContain("corral_agent_registered 1");
    expect(metrics).toContain('corral_agent_tasks{state="TASK_RUNNING"} 0');
    expect(metrics).toContain("corral_agent_status_updates_pending 0");
    expect(metrics).toContain("# TYPE corral_bus_dropped_messages_total counter");
  });

  it("detects the resources the operator leaves out", async () => {
    const { agent } = await registeredAgent({ resources: "cpus:3" });
    const text = agent.state().resources!.text;
    expect(text).toMatch(/^cpus:3;disk:\d+;mem:\d+;ports:\[31000-32000\]$/);
  });

  it("refuses port numbers outside 1-65535 in the operator's resources", async () => {
    const s = await setup();
    const transport = await connectNats({ servers: nats.url, name: `agent-${s.cluster}` });
    cleanups.push(() => transport.close());
    for (const ports of ["[0-0]", "[31000-70000]"]) {
      expect(() => createAgent({ cluster: s.cluster, transport, workDir: s.workDir, resources: `cpus:1;ports:${ports}` })).toThrow(`resources: ports ${ports}: port numbers are 1 to 65535`);
    }
  });

  it("retries registration until a master appears", async () => {
    const s = await setup();
    const { log, records } = capturingLogger();
    const { agent } = await startAgent(s, { log });
    // Two failed attempts prove it retried while nobody listened.
    await records.waitFor((r) => r.msg === "registration attempt failed" && Number(r.attempt) >= 2, "two failed registration attempts");
    expect(agent.state().registered).toBe(false);
    s.master.autoRegister = { agentId: "agent-9" };
    await s.master.listen();
    await s.master.waitForPong(0);
    expect(agent.agentId()).toBe("agent-9");
    expect(agent.state().registered).toBe(true);
  });

  it("re-registers with its persisted id after a restart, reporting no tasks", async () => {
    const s = await setup();
    s.master.autoRegister = { agentId: "agent-1" };
    s.master.autoAck = true;
    await s.master.listen();
    const first = await startAgent(s);
    await s.master.waitForPong(0);
    s.master.runTask("agent-1", shellTask("long", "agent-1", "sleep 1000"));
    await s.master.waitForStatus("long", "TASK_RUNNING");
    // RUNNING must be acknowledged first: only the head of a stream is ever sent.
    await barrier(s.master);
    await first.agent.stop();
    // Stopping kills the tasks, and the final update goes out (once; nobody acknowledges it).
    await s.master.waitForStatus("long", "TASK_KILLED");

    const seen = s.master.received.items.length;
    const second = await startAgent(s);
    const rereg = await s.master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
    const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
    expect(body.agentInfo!.id).toBe("agent-1");
    expect(body.tasks).toEqual([]);
    // A restarted agent is not subscribed to its commands before the master answers.
    expect(body.listening).toBe(false);
    expect(rereg.senderId).toBe("agent-1");
    await s.master.received.waitFor((r) => r.index > rereg.index && r.message.kind === "pong", "pong after REREGISTER");
    expect(second.agent.agentId()).toBe("agent-1");
  });

  it("re-registers when no ping arrives within ping_timeout_seconds", async () => {
    const s = await setup();
    s.master.autoRegister = { agentId: "agent-1", pingTimeoutSeconds: 0.2 };
    await s.master.listen();
    const { agent } = await startAgent(s);
    const pong = await s.master.waitForPong(0);
    const rereg = await s.master.received.waitFor((r) => r.index > pong.index && r.message.kind === "reregister", "REREGISTER after ping timeout");
    expect((rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister.agentInfo!.id).toBe("agent-1");
    await s.master.received.waitFor((r) => r.index > rereg.index && r.message.kind === "pong", "pong after REREGISTER");
    expect(agent.state().registered).toBe(true);
  });

  it("re-registers on reregister_request, reporting its live tasks", async () => {
    const { master } = await registeredAgent();
    master.runTask("agent-1", shellTask("live", "agent-1", "sleep 1000"));
    await master.waitForStatus("live", "TASK_RUNNING");
    const seen = master.received.items.length;
    master.send("agent-1", { kind: "reregisterRequest", reregisterRequest: {} });
    const rereg = await master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
    const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
    expect(body.tasks).toHaveLength(1);
    expect(body.tasks[0]).toMatchObject({ frameworkId: "fw-1", task: { taskId: "live" }, status: { state: "TASK_RUNNING" } });
    expect(body.frameworks.map((f) => f.id)).toEqual(["fw-1"]);
    // Still subscribed under its id: the master may offer it without waiting for a pong.
    expect(body.listening).toBe(true);
  });

  it("ignores commands from a master with a lower epoch", async () => {
    const s = await setup();
    s.master.autoRegister = { agentId: "agent-1", epoch: 5 };
    await s.master.listen();
    const { agent } = await startAgent(s);
    await s.master.waitForPong(0);
    s.master.send("agent-1", { kind: "ping", ping: { seq: 111 } }, 3);
    s.master.send("agent-1", { kind: "ping", ping: { seq: 222 } }, 5);
    await s.master.waitForPong(222);
    s.master.send("agent-1", { kind: "ping", ping: { seq: 333 } }, 6);
    s.master.send("agent-1", { kind: "ping", ping: { seq: 444 } }, 5);
    s.master.send("agent-1", { kind: "ping", ping: { seq: 555 } }, 6);
    await s.master.waitForPong(555);
    const pongs = s.master.received.filter((r) => r.message.kind === "pong").map((r) => (r.message as Extract<AgentToMaster, { kind: "pong" }>).pong.seq);
    expect(pongs).toEqual([0, 222, 333, 555]);
    expect(agent.state().masterEpoch).toBe(6);
    expect(await getText(`${agent.httpUrl()}/metrics`)).toContain("corral_agent_stale_epoch_messages_total 2");
  });
});

describe("tasks", () => {
  it("reports STARTING, RUNNING, FAILED with the exit code, in order", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask("t3", "agent-1", "echo hi; exit 3"));
    const failed = await master.waitForStatus("t3", "TASK_FAILED");
    const states = master.statuses("t3").map((s) => s.state);
    expect([...new Set(states)]).toEqual(["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]);
    expect(failed).toMatchObject({
      exitCode: 3,
      reason: "REASON_COMMAND_EXECUTOR_FAILED",
      source: "SOURCE_AGENT",
      agentId: "agent-1",
      frameworkId: "fw-1",
      message: "Command exited with status 3",
    });
    expect(failed.uuid).toHaveLength(16);
    expect(failed.timestamp).toBeGreaterThan(1_600_000_000);
    expect(new Set(master.statuses("t3").map((s) => Buffer.from(s.uuid).toString("hex"))).size).toBe(3);

    const read = await getJson(`${agent.httpUrl()}/files/read?frameworkId=fw-1&taskId=t3&path=stdout`);
    expect(read).toEqual({ status: 200, body: { data: "hi\n", offset: 0, length: 3, totalSize: 3 } });
    const tail = await getJson(`${agent.httpUrl()}/files/read?frameworkId=fw-1&taskId=t3&path=stdout&offset=1&length=1`);
    expect(tail.body).toMatchObject({ data: "i", offset: 1, length: 1 });

    // Once the final update is acknowledged the task is only remembered, as completed.
    await barrier(master);
    const state = agent.state();
    expect(state.tasks).toMatchObject([{ taskId: "t3", state: "TASK_FAILED", exitCode: 3, completed: true, sandbox: expect.stringContaining("sandboxes/fw-1/t3") }]);
    expect(state.statusUpdates).toBe(0);
  });

  it("finishes a task that exits 0, with its environment, ports and sandbox", async () => {
    const { master, agent, workDir } = await registeredAgent();
    master.runTask("agent-1", shellTask("ok", "agent-1", 'echo "$GREETING $PORT0 $PORT1 $MESOS_TASK_ID"; pwd'));
    const finished = await master.waitForStatus("ok", "TASK_FINISHED");
    expect(finished.exitCode).toBe(0);
    const stdout = await readFile(join(workDir, "sandboxes", "fw-1", "ok", "stdout"), "utf8");
    expect(stdout).toBe(`hi 31000 31001 ok\n${join(workDir, "sandboxes", "fw-1", "ok")}\n`);
    await barrier(master);
    expect(agent.state().tasks).toMatchObject([{ taskId: "ok", state: "TASK_FINISHED", completed: true }]);
  });

  it("re-sends an unacknowledged update until it is acknowledged, then moves on", async () => {
    const { master, agent } = await registeredAgent({ statusUpdateRetry: { initialMs: 100, maxMs: 200 } }, false);
    master.runTask("agent-1", shellTask("r", "agent-1", "sleep 1000"));
    const starting = await master.waitForStatus("r", "TASK_STARTING");
    const startingHex = Buffer.from(starting.uuid).toString("hex");
    const copies = (hex: string) => master.statuses("r").filter((s) => Buffer.from(s.uuid).toString("hex") === hex).length;
    // Re-sent with the same uuid while unacknowledged.
    await master.received.waitFor(() => copies(startingHex) >= 3, "three copies of STARTING");
    expect(agent.state().statusUpdates).toBeGreaterThanOrEqual(2); // STARTING and RUNNING queued

    master.ack(starting);
    const running = await master.waitForStatus("r", "TASK_RUNNING");
    const runningAt = master.received.items.find((r) => r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.state === "TASK_RUNNING")!.index;
    // Only the head of a stream is in flight: once RUNNING went out, STARTING never comes again.
    expect(
      master.received.filter((r) => r.index > runningAt && r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.state === "TASK_STARTING"),
    ).toEqual([]);

    master.ack(running);
    const fence = await barrier(master);
    expect(agent.state().statusUpdates).toBe(0);
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "r" } });
    const killed = await master.waitForStatus("r", "TASK_KILLED");
    const killedHex = Buffer.from(killed.uuid).toString("hex");
    // KILLED is itself retried (proving the retry timer is live) while RUNNING no longer is.
    await master.received.waitFor(() => copies(killedHex) >= 2, "a re-sent KILLED");
    const runningAfterAck = master.received.filter(
      (r) => r.index > fence.index && r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.state === "TASK_RUNNING",
    );
    expect(runningAfterAck).toEqual([]);
    master.ack(killed);
    await barrier(master);
    expect(agent.state().statusUpdates).toBe(0);
    expect(agent.state().tasks).toMatchObject([{ taskId: "r", state: "TASK_KILLED", completed: true }]);
  });

  it("tells the master, with every copy of an unacknowledged head, the newest state queued for the task", async () => {
    const { master } = await registeredAgent({ statusUpdateRetry: { initialMs: 50, maxMs: 100 } }, false);
    master.runTask("agent-1", shellTask("quick", "agent-1", "exit 0"));
    /** The status updates of the task as sent: the head's state and the stream's latest state. */
    const sent = () =>
      master.received.items.flatMap((r) =>
        r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.taskId === "quick" ? [[r.message.statusUpdate.status.state, r.message.statusUpdate.latestState]] : [],
      );
    // STARTING is not acknowledged, so it stays the head; its copies come to say the task finished.
    await master.received.waitFor(() => sent().some(([state, latest]) => state === "TASK_STARTING" && latest === "TASK_FINISHED"), "a copy of STARTING saying the task finished");
    expect(sent()[0]).toEqual(["TASK_STARTING", "TASK_STARTING"]);
    expect(new Set(sent().map(([state]) => state))).toEqual(new Set(["TASK_STARTING"]));
    // The rest of the stream carries the same latest state, one acknowledgement at a time.
    master.ack(master.statuses("quick")[0]!);
    const running = await master.waitForStatus("quick", "TASK_RUNNING");
    master.ack(running);
    const finished = await master.waitForStatus("quick", "TASK_FINISHED");
    master.ack(finished);
    const later = [...new Set(sent().filter(([state]) => state !== "TASK_STARTING").map((pair) => pair.join(" with latest ")))];
    expect(later).toEqual(["TASK_RUNNING with latest TASK_FINISHED", "TASK_FINISHED with latest TASK_FINISHED"]);
  });

  it("kills a task: TASK_KILLED", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask("k", "agent-1", "sleep 1000"));
    await master.waitForStatus("k", "TASK_RUNNING");
    expect(agent.state().tasks).toMatchObject([{ taskId: "k", state: "TASK_RUNNING", completed: false }]);
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "k" } });
    const killed = await master.waitForStatus("k", "TASK_KILLED");
    expect(killed.message).toBe("Command terminated with signal SIGTERM");
    expect(killed.exitCode).toBeUndefined();
  });

  it("kills a task whose container is still being launched: TASK_KILLED / REASON_TASK_KILLED_DURING_LAUNCH, never RUNNING", async () => {
    // Launches wait until the test lets them go, as a slow container start would.
    const containers = new InstantContainerizer();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const containerizer: Containerizer = {
      launch: async (spec) => {
        await released;
        return containers.launch(spec);
      },
      kill: (id) => containers.kill(id),
      wait: (id) => containers.wait(id),
      usage: (id) => containers.usage(id),
      containers: () => containers.containers(),
      destroyAll: () => containers.destroyAll(),
    };
    const { master, agent } = await registeredAgent({ containerizer });
    master.runTask("agent-1", shellTask("slow", "agent-1", "sleep 1000"));
    await master.waitForStatus("slow", "TASK_STARTING");
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "slow" } });
    await barrier(master); // the kill is in before the container exists
    release();
    const killed = await master.waitForStatus("slow", "TASK_KILLED");
    expect(killed.reason).toBe("REASON_TASK_KILLED_DURING_LAUNCH");
    await barrier(master);
    expect(master.statuses("slow").map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_KILLED"]);
    expect(containers.containers()).toEqual([]);
    expect(agent.state().tasks).toMatchObject([{ taskId: "slow", state: "TASK_KILLED", completed: true }]);
  });

  it("escalates to SIGKILL after the kill's grace period", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask("stubborn", "agent-1", "trap '' TERM; echo trapped; sleep 1000", { killGracePeriodSeconds: 30 }));
    await master.waitForStatus("stubborn", "TASK_RUNNING");
    // RUNNING means the shell started, not that it ignores SIGTERM yet: wait until it says so.
    await eventually(async () => {
      const sandbox = agent.state().tasks.find((t) => t.taskId === "stubborn")?.sandbox;
      return sandbox ? (await readFile(join(sandbox, "stdout"), "utf8").catch(() => "")).includes("trapped") : false;
    }, 10_000, "the task to ignore SIGTERM");
    // The kill's own grace period (0.2 s) wins over the task's (30 s).
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "stubborn", killGracePeriodSeconds: 0.2 } });
    const killed = await master.waitForStatus("stubborn", "TASK_KILLED");
    expect(killed.message).toBe("Command terminated with signal SIGKILL");
  });

  it("kills every task of a framework on shutdown_framework", async () => {
    const { master } = await registeredAgent();
    master.runTask("agent-1", shellTask("a", "agent-1", "sleep 1000"), "fw-2");
    master.runTask("agent-1", shellTask("b", "agent-1", "sleep 1000"), "fw-2");
    master.runTask("agent-1", shellTask("c", "agent-1", "sleep 1000"), "fw-3");
    await Promise.all(["a", "b", "c"].map((t) => master.waitForStatus(t, "TASK_RUNNING")));
    master.send("agent-1", { kind: "shutdownFramework", shutdownFramework: { frameworkId: "fw-2" } });
    await Promise.all(["a", "b"].map((t) => master.waitForStatus(t, "TASK_KILLED")));
    await barrier(master);
    expect(master.statuses("c").map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING"]);
  });

  it("ignores a run_task for a task it already has", async () => {
    const { master } = await registeredAgent();
    const task = shellTask("dup", "agent-1", "exit 0");
    master.runTask("agent-1", task);
    master.runTask("agent-1", task);
    await master.waitForStatus("dup", "TASK_FINISHED");
    master.runTask("agent-1", task); // also after it finished
    await barrier(master);
    expect(master.statuses("dup").map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]);
  });

  it("refuses tasks beyond maxTasks", async () => {
    const { master, agent } = await registeredAgent({ maxTasks: 1 });
    master.runTask("agent-1", shellTask("first", "agent-1", "sleep 1000"));
    master.runTask("agent-1", shellTask("second", "agent-1", "sleep 1000"));
    const refused = await master.waitForStatus("second", "TASK_FAILED");
    expect(refused.message).toMatch(/maxTasks/);
    await master.waitForStatus("first", "TASK_RUNNING");
    await barrier(master);
    expect(agent.state().tasks.map((t) => t.taskId)).toEqual(["first"]);
  });

  it("reports a launch failure as TASK_FAILED / REASON_CONTAINER_LAUNCH_FAILED", async () => {
    const { master } = await registeredAgent();
    const task = shellTask("nolaunch", "agent-1", "/nonexistent/program");
    task.command = { ...task.command!, shell: false };
    master.runTask("agent-1", task);
    const failed = await master.waitForStatus("nolaunch", "TASK_FAILED");
    expect(failed.reason).toBe("REASON_CONTAINER_LAUNCH_FAILED");
    expect(failed.message).toContain("/nonexistent/program");
    expect(master.statuses("nolaunch").map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_FAILED"]);
  });

  it("refuses invalid tasks with TASK_FAILED / REASON_TASK_INVALID", async () => {
    const { master, workDir } = await registeredAgent();
    master.runTask("agent-1", shellTask("../escape", "agent-1", "touch pwned"));
    master.runTask("agent-1", shellTask("other-agent", "agent-2", "exit 0"));
    master.runTask("agent-1", shellTask("bad-ports", "agent-1", "exit 0", { resources: [{ name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 0, end: 2 }] } }] }));
    for (const [taskId, rule] of [
      ["../escape", "taskId"],
      ["other-agent", "agentId"],
      ["bad-ports", "ports"],
    ] as const) {
      const failed = await master.waitForStatus(taskId, "TASK_FAILED");
      expect(failed.reason).toBe("REASON_TASK_INVALID");
      expect(failed.message).toContain(rule);
    }
    await expect(readFile(join(workDir, "sandboxes", "pwned"))).rejects.toThrow();
  });
});

describe("bad input", () => {
  it("drops and counts garbage on the command subject and keeps answering", async () => {
    const { master, agent } = await registeredAgent();
    master.sendRaw("agent-1", new Uint8Array([1, 2, 3, 255, 0]));
    master.sendRaw("agent-1", encodeEnvelope({ senderId: "x", payload: "schedulerEvent", schedulerEvent: { kind: "heartbeat", heartbeat: {} } }));
    master.sendRaw("agent-1", encodeEnvelope({ senderId: "x", schemaVersion: 99, payload: "masterToAgent", masterToAgent: { kind: "ping", ping: { seq: 1 } } }));
    await barrier(master);
    const metrics = await getText(`${agent.httpUrl()}/metrics`);
    expect(metrics).toContain('corral_bus_dropped_messages_total{kind="agent.cmd",reason="decode_error"} 1');
    expect(metrics).toContain('corral_bus_dropped_messages_total{kind="agent.cmd",reason="wrong_payload"} 1');
    expect(metrics).toContain('corral_bus_dropped_messages_total{kind="agent.cmd",reason="schema_version"} 1');
    expect(kinds(master.received.filter((r) => r.message.kind === "pong" && r.message.pong.seq === 1))).toEqual([]);
  });

  it("ignores kills and acknowledgements for unknown tasks", async () => {
    const { master, agent } = await registeredAgent();
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "ghost" } });
    master.send("agent-1", { kind: "statusUpdateAck", statusUpdateAck: { frameworkId: "fw-1", taskId: "ghost", uuid: new Uint8Array(16) } });
    await barrier(master);
    expect(master.statuses("ghost")).toEqual([]);
    expect(agent.state().registered).toBe(true);
  });

  it("answers bad /files/read requests with 4xx and a code", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask("f", "agent-1", "echo out"));
    await master.waitForStatus("f", "TASK_FINISHED");
    const base = `${agent.httpUrl()}/files/read?frameworkId=fw-1&taskId=f`;
    const cases: Array<[string, number, string]> = [
      [`${base}&path=../../agent.id`, 400, "CORRAL_ERR_PATH_OUTSIDE_SANDBOX"],
      [`${base}&path=/etc/passwd`, 400, "CORRAL_ERR_PATH_OUTSIDE_SANDBOX"],
      [`${base}&path=nope`, 404, "CORRAL_ERR_NOT_FOUND"],
      [`${base}`, 400, "CORRAL_ERR_BAD_REQUEST"],
      [`${base}&path=stdout&offset=abc`, 400, "CORRAL_ERR_BAD_RANGE"],
      [`${base}&path=stdout&offset=0x2`, 400, "CORRAL_ERR_BAD_RANGE"],
      [`${base}&path=stdout&offset=1e3`, 400, "CORRAL_ERR_BAD_RANGE"],
      [`${base}&path=stdout&offset=%20`, 400, "CORRAL_ERR_BAD_RANGE"],
      [`${base}&path=stdout&length=Infinity`, 400, "CORRAL_ERR_BAD_RANGE"],
      [`${base}&path=stdout&path=stderr`, 400, "CORRAL_ERR_BAD_REQUEST"],
      [`${agent.httpUrl()}/files/read?frameworkId=..&taskId=f&path=stdout`, 400, "CORRAL_ERR_BAD_REQUEST"],
      [`${agent.httpUrl()}/files/read?frameworkId=fw-1&taskId=missing&path=stdout`, 404, "CORRAL_ERR_NOT_FOUND"],
      [`${agent.httpUrl()}/no/such/route`, 404, "CORRAL_ERR_NOT_FOUND"],
    ];
    for (const [url, status, code] of cases) {
      const res = await getJson(url);
      expect({ url, status: res.status, code: res.body.code }).toEqual({ url, status, code });
      expect(typeof res.body.message).toBe("string");
    }
    expect((await getJson(`${base}&path=stdout&offset=0x2`)).body.message).toBe("offset: must be a whole number in decimal digits, got '0x2'");
    expect((await getJson(`${base}&path=stdout`)).body.data).toBe("out\n");
    expect((await getJson(`${base}&path=stdout&offset=-1&length=`)).body).toMatchObject({ data: "", offset: 4 });
    // Mesos's pailer asks for the size with length=-1, then reads with it: "no length".
    expect(await getJson(`${base}&path=stdout&offset=-1&length=-1`)).toEqual({ status: 200, body: { data: "", offset: 4, length: 0, totalSize: 4 } });
    expect(await getJson(`${base}&path=stdout&offset=1&length=-1`)).toEqual({ status: 200, body: { data: "ut\n", offset: 1, length: 3, totalSize: 4 } });
    const negative = await getJson(`${base}&path=stdout&length=-2`);
    expect({ status: negative.status, code: negative.body.code }).toEqual({ status: 400, code: "CORRAL_ERR_BAD_RANGE" });
    expect(negative.body.message).toMatch(/^length must be an integer >= 0 \(or -1 for no length\), got -2$/);
  });
});

describe("container statistics", () => {
  it("serves each running container's usage on /monitor/statistics and in /metrics", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask("busy", "agent-1", "sleep 1000"));
    await master.waitForStatus("busy", "TASK_RUNNING");
    const stats = await eventually(async () => {
      const body = (await (await fetch(`${agent.httpUrl()}/monitor/statistics`)).json()) as Array<{ executor_id: string; framework_id: string; statistics: Record<string, number> }>;
      return body.find((c) => c.executor_id === "busy" && c.statistics.mem_rss_bytes! > 0);
    }, 10_000, "usage of the running task");
    expect(stats.framework_id).toBe("fw-1");
    expect(stats.statistics.processes).toBeGreaterThanOrEqual(1);
    expect(stats.statistics.cpus_user_time_secs).toBeGreaterThanOrEqual(0);
    expect(stats.statistics.timestamp).toBeGreaterThan(1_600_000_000);
    const metrics = await (await fetch(`${agent.httpUrl()}/metrics`)).text();
    expect(metrics).toMatch(/^corral_agent_container_mem_rss_bytes\{framework_id="fw-1",task_id="busy"\} \d+$/m);
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "busy", killGracePeriodSeconds: 0 } });
    await master.waitForStatus("busy", "TASK_KILLED");
    const after = (await (await fetch(`${agent.httpUrl()}/monitor/statistics`)).json()) as unknown[];
    expect(after).toEqual([]);
  });
});

describe("the same task id in two frameworks", () => {
  // Task ids are unique only within a framework: two batch frameworks both name their first task
  // j1.0.0 (found in the simulator, where etl's never got a status on the agent slowpoke's ran on).
  const TASK = "j1.0.0";
  const etl = { frameworkId: "etl", taskId: TASK };
  const slowpoke = { frameworkId: "slowpoke", taskId: TASK };
  const hex = (status: { uuid: Uint8Array }) => Buffer.from(status.uuid).toString("hex");

  it("runs both, each with its own sandbox and status updates, and reports both when re-registering", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask(TASK, "agent-1", "echo etl; sleep 1000"), "etl");
    master.runTask("agent-1", shellTask(TASK, "agent-1", "echo slowpoke; sleep 1000"), "slowpoke");
    const [a, b] = await Promise.all([master.waitForStatus(etl, "TASK_RUNNING"), master.waitForStatus(slowpoke, "TASK_RUNNING")]);
    expect(master.statuses(etl).map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING"]);
    expect(master.statuses(slowpoke).map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING"]);
    expect(hex(a)).not.toBe(hex(b));

    const views = agent.state().tasks;
    expect(views.map((t) => [t.frameworkId, t.taskId, t.state])).toEqual([
      ["etl", TASK, "TASK_RUNNING"],
      ["slowpoke", TASK, "TASK_RUNNING"],
    ]);
    expect(views[0]!.sandbox).toContain(join("sandboxes", "etl", TASK));
    expect(views[1]!.sandbox).toContain(join("sandboxes", "slowpoke", TASK));
    expect(views[0]!.containerId).not.toBe(views[1]!.containerId);
    for (const fw of ["etl", "slowpoke"]) {
      const stdout = await eventually(async () => {
        const read = await getJson(`${agent.httpUrl()}/files/read?frameworkId=${fw}&taskId=${TASK}&path=stdout`);
        return read.status === 200 && read.body.data !== "" ? read.body.data : undefined;
      }, 10_000, `${fw}'s stdout`);
      expect(stdout).toBe(`${fw}\n`);
    }

    const seen = master.received.items.length;
    master.send("agent-1", { kind: "reregisterRequest", reregisterRequest: {} });
    const rereg = await master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
    const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
    expect(body.tasks.map((t) => [t.frameworkId, t.task!.taskId, t.status!.state])).toEqual([
      ["etl", TASK, "TASK_RUNNING"],
      ["slowpoke", TASK, "TASK_RUNNING"],
    ]);
    expect(body.frameworks.map((f) => f.id)).toEqual(["etl", "slowpoke"]);
  });

  it("retires an update only on the acknowledgement of its own framework", async () => {
    const { master, agent } = await registeredAgent({ statusUpdateRetry: { initialMs: 100, maxMs: 200 } }, false);
    master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000"), "etl");
    master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000"), "slowpoke");
    const [etlStarting, slowStarting] = await Promise.all([master.waitForStatus(etl, "TASK_STARTING"), master.waitForStatus(slowpoke, "TASK_STARTING")]);
    const copies = (task: typeof etl, uuid: string) => master.statuses(task).filter((s) => hex(s) === uuid).length;

    // etl's uuid acknowledged under slowpoke's name retires nothing: both keep re-sending STARTING.
    master.send("agent-1", { kind: "statusUpdateAck", statusUpdateAck: { frameworkId: "slowpoke", taskId: TASK, uuid: etlStarting.uuid } });
    const fence = await barrier(master);
    const startingAfter = (task: typeof etl, uuid: string) => master.received.filter((r) => r.index > fence.index && r.message.kind === "statusUpdate" && isOf(r, task) && hex(r.message.statusUpdate.status!) === uuid).length;
    await master.received.waitFor(() => startingAfter(etl, hex(etlStarting)) >= 1 && startingAfter(slowpoke, hex(slowStarting)) >= 1, "both STARTINGs re-sent");
    expect(master.statuses(etl).map((s) => s.state)).not.toContain("TASK_RUNNING");
    expect(master.statuses(slowpoke).map((s) => s.state)).not.toContain("TASK_RUNNING");

    // etl's own acknowledgement moves etl on, and only etl.
    master.ack(etlStarting);
    const etlRunning = await master.waitForStatus(etl, "TASK_RUNNING");
    const etlRunningAt = master.received.items.findIndex((r) => r.message.kind === "statusUpdate" && hex(r.message.statusUpdate.status!) === hex(etlRunning));
    const slowCopiesThen = copies(slowpoke, hex(slowStarting));
    await master.received.waitFor(() => copies(slowpoke, hex(slowStarting)) > slowCopiesThen, "slowpoke's STARTING re-sent after etl's acknowledgement");
    expect(master.statuses(slowpoke).map((s) => s.state)).not.toContain("TASK_RUNNING");
    expect(
      master.received.filter((r) => r.index > etlRunningAt && r.message.kind === "statusUpdate" && isOf(r, etl) && r.message.statusUpdate.status!.state === "TASK_STARTING"),
    ).toEqual([]);

    master.ack(slowStarting);
    const slowRunning = await master.waitForStatus(slowpoke, "TASK_RUNNING");
    master.ack(etlRunning);
    master.ack(slowRunning);
    await barrier(master);
    expect(agent.state().statusUpdates).toBe(0);
  });

  it("kills only the task of the framework the kill names", async () => {
    const { master, agent } = await registeredAgent();
    master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000"), "etl");
    master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000"), "slowpoke");
    await Promise.all([master.waitForStatus(etl, "TASK_RUNNING"), master.waitForStatus(slowpoke, "TASK_RUNNING")]);
    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "etl", taskId: TASK, killGracePeriodSeconds: 0 } });
    await master.waitForStatus(etl, "TASK_KILLED");
    await barrier(master);
    expect(master.statuses(slowpoke).map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING"]);
    expect(agent.state().tasks.map((t) => [t.frameworkId, t.state, t.completed])).toEqual([
      ["slowpoke", "TASK_RUNNING", false],
      ["etl", "TASK_KILLED", true],
    ]);
  });

  it("checks the health of each on its own and reports each verdict to its own framework", async () => {
    const { master } = await registeredAgent();
    const check = (command: string) => ({
      healthCheck: {
        kind: "command" as const,
        command: { value: command, arguments: [], shell: true, environment: {}, user: "" },
        delaySeconds: 0,
        intervalSeconds: 0.2,
        timeoutSeconds: 5,
        gracePeriodSeconds: 0,
      },
    });
    master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000", check("exit 0")), "etl");
    master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000", check("exit 1")), "slowpoke");
    // slowpoke's second failure proves its checks keep running after etl's passed.
    const [healthy, sick] = await Promise.all([
      master.received.waitFor((r) => isOf(r, etl) && healthOf(r) === true, "etl's task healthy"),
      master.received.waitFor((r) => isOf(r, slowpoke) && healthOf(r) === false && messageOf(r).includes("2 time(s)"), "slowpoke's task failing twice"),
    ]);
    expect([healthy, sick].map((r) => (r.message as Extract<AgentToMaster, { kind: "statusUpdate" }>).statusUpdate.status!.state)).toEqual(["TASK_RUNNING", "TASK_RUNNING"]);
    expect(master.statuses(etl).filter((st) => st.healthy === false)).toEqual([]);
    expect(master.statuses(slowpoke).filter((st) => st.healthy === true)).toEqual([]);
  });

  it("ignores a repeated run_task of the same framework, but runs the same id of another framework after it finished", async () => {
    const { master } = await registeredAgent();
    const task = shellTask(TASK, "agent-1", "exit 0");
    master.runTask("agent-1", task, "etl");
    master.runTask("agent-1", task, "etl");
    await master.waitForStatus(etl, "TASK_FINISHED");
    await barrier(master); // FINISHED acknowledged: etl's task is only remembered as completed
    master.runTask("agent-1", task, "etl");
    master.runTask("agent-1", task, "slowpoke");
    await master.waitForStatus(slowpoke, "TASK_FINISHED");
    await barrier(master);
    expect(master.statuses(etl).map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]);
    expect(master.statuses(slowpoke).map((s) => s.state)).toEqual(["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]);
  });

  it("keeps both apart through a restart: checkpoints, re-registration, re-sent updates, kills", async () => {
    const s = await setup();
    s.master.autoRegister = { agentId: "agent-1" };
    await s.master.listen();
    const host = new SurvivingHost();
    const checkpointing = { checkpoint: true } as const;
    const first = await startAgent(s, { containerizer: host.view(), checkpoint: true });
    await s.master.waitForPong(0);
    s.master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000"), "etl", checkpointing);
    s.master.runTask("agent-1", shellTask(TASK, "agent-1", "sleep 1000"), "slowpoke", checkpointing);
    // etl acknowledges everything up to RUNNING; slowpoke nothing: STARTING and RUNNING stay queued.
    s.master.ack(await s.master.waitForStatus(etl, "TASK_STARTING"));
    s.master.ack(await s.master.waitForStatus(etl, "TASK_RUNNING"));
    const slowStarting = await s.master.waitForStatus(slowpoke, "TASK_STARTING");
    await barrier(s.master);
    expect(first.agent.state().statusUpdates).toBe(2);
    const frameworkDirs = join(s.workDir, "checkpoint", "frameworks");
    expect((await readdir(frameworkDirs)).sort()).toEqual(["f-etl", "f-slowpoke"]);

    await first.agent.stop({ killTasks: false });
    await first.transport.close();
    expect(host.running()).toHaveLength(2);

    const seen = s.master.received.items.length;
    const second = await startAgent(s, { containerizer: host.view(), checkpoint: true });
    const rereg = await s.master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
    const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
    expect(body.tasks.map((t) => [t.frameworkId, t.task!.taskId, t.status!.state]).sort()).toEqual([
      ["etl", TASK, "TASK_RUNNING"],
      ["slowpoke", TASK, "TASK_RUNNING"],
    ]);
    // slowpoke's unacknowledged STARTING comes again, with its uuid; etl's acknowledged updates do not.
    const again = await s.master.received.waitFor(
      (r) => r.index > rereg.index && r.message.kind === "statusUpdate" && isOf(r, slowpoke),
      "slowpoke's STARTING again",
    );
    expect(hex((again.message as Extract<AgentToMaster, { kind: "statusUpdate" }>).statusUpdate.status!)).toBe(hex(slowStarting));
    await barrier(s.master);
    expect(s.master.received.filter((r) => r.index > seen && r.message.kind === "statusUpdate" && isOf(r, etl))).toEqual([]);

    // The recovered tasks are still told apart: a kill of etl's leaves slowpoke's running.
    s.master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "etl", taskId: TASK } });
    const killed = await s.master.waitForStatus(etl, "TASK_KILLED");
    expect(host.running()).toHaveLength(1);
    expect(second.agent.state().tasks.find((t) => t.frameworkId === "slowpoke")).toMatchObject({ state: "TASK_RUNNING" });
    // etl's final acknowledgement removes etl's checkpoints only.
    s.master.ack(killed);
    await eventually(async () => (await readdir(frameworkDirs)).join() === "f-slowpoke", 10_000, "etl's checkpoints to go");
    // slowpoke's stream goes on in order from where it stood.
    s.master.ack(slowStarting);
    const slowRunning = await s.master.waitForStatus(slowpoke, "TASK_RUNNING");
    s.master.ack(slowRunning);
    await barrier(s.master);
    expect(second.agent.state().statusUpdates).toBe(0);
    expect(s.master.statuses(slowpoke).map((st) => st.state).filter((st, i, all) => all.indexOf(st) === i)).toEqual(["TASK_STARTING", "TASK_RUNNING"]);
  });
});

function healthOf(r: Received): boolean | undefined {
  return r.message.kind === "statusUpdate" ? r.message.statusUpdate.status?.healthy : undefined;
}

function messageOf(r: Received): string {
  return r.message.kind === "statusUpdate" ? (r.message.statusUpdate.status?.message ?? "") : "";
}

/** Whether an arrival is a status update of `task` (framework and task id). */
function isOf(r: Received, task: { frameworkId: string; taskId: string }): boolean {
  const status = r.message.kind === "statusUpdate" ? r.message.statusUpdate.status : undefined;
  return status?.frameworkId === task.frameworkId && status.taskId === task.taskId;
}


/**
 * A checkpointing agent runs `taskIds` of fw-1 and stops, leaving them running; then `change`
 * edits the checkpoint file of `changedId`, as a crash or a bad disk might. Answers the setup and
 * the host the tasks survive on, for a second agent to recover from.
 */
async function checkpointedThenChanged(taskIds: string[], changedId: string, change: (checkpoint: Record<string, any>) => unknown, extra: Partial<TaskInfo> = {}) {
  const s = await setup();
  s.master.autoRegister = { agentId: "agent-1" };
  s.master.autoAck = true;
  await s.master.listen();
  const host = new SurvivingHost();
  const first = await startAgent(s, { containerizer: host.view(), checkpoint: true });
  await s.master.waitForPong(0);
  for (const id of taskIds) s.master.runTask("agent-1", shellTask(id, "agent-1", "sleep 1000", extra), "fw-1", { checkpoint: true });
  for (const id of taskIds) await s.master.waitForStatus(id, "TASK_RUNNING");
  await first.agent.stop({ killTasks: false });
  await first.transport.close();
  const file = join(s.workDir, "checkpoint", "frameworks", "f-fw-1", "tasks", `t-${changedId}.json`);
  const checkpoint = JSON.parse(await readFile(file, "utf8")) as Record<string, any>;
  change(checkpoint);
  await writeFile(file, JSON.stringify(checkpoint));
  return { s, host };
}

describe("health checks across an agent restart", () => {
  it("go on where they were: a recovered task that was healthy is reported unhealthy at its first failure, not after a new grace period", async () => {
    const s = await setup();
    s.master.autoRegister = { agentId: "agent-1" };
    s.master.autoAck = true;
    await s.master.listen();
    const host = new SurvivingHost();
    // The in-memory host makes no sandbox; the check runs in it on the host.
    await mkdir(join(s.workDir, "sandboxes", "fw-1", "web"), { recursive: true });
    const sick = join(s.workDir, "sick");
    const healthCheck = { kind: "command" as const, command: { value: `test ! -e ${sick}`, arguments: [], shell: true, environment: {}, user: "" }, delaySeconds: 0, intervalSeconds: 0.1, timeoutSeconds: 5, gracePeriodSeconds: 600 };
    const first = await startAgent(s, { containerizer: host.view(), checkpoint: true });
    await s.master.waitForPong(0);
    s.master.runTask("agent-1", shellTask("web", "agent-1", "serve", { healthCheck }), "fw-1", { checkpoint: true });
    await s.master.received.waitFor((r) => r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.healthy === true, "healthy before the restart");
    await barrier(s.master);
    await first.agent.stop({ killTasks: false });
    await first.transport.close();

    await writeFile(sick, "");
    const seen = s.master.received.items.length;
    await startAgent(s, { containerizer: host.view(), checkpoint: true });
    const unhealthy = await s.master.received.waitFor(
      (r) => r.index >= seen && r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.healthy === false,
      "unhealthy well within the 600 s grace period",
    );
    expect((unhealthy.message as Extract<AgentToMaster, { kind: "statusUpdate" }>).statusUpdate.status!.message).toContain("failed 1 time(s)");
    // Nothing re-announced the health it had before the restart.
    const after = s.master.received.items.filter((r) => r.index >= seen && r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.healthy === true);
    expect(after).toEqual([]);
  });
});

describe("a task's allocation role", () => {
  it("is checkpointed with the task and reported when re-registering; a checkpoint from before it recovers without it", async () => {
    // The master sent both with a role; "old" lost it, as a checkpoint written before the field.
    const { s, host } = await checkpointedThenChanged(["new", "old"], "old", (checkpoint) => delete checkpoint.task.allocationRole, { allocationRole: "batch" });
    const seen = s.master.received.items.length;
    await startAgent(s, { containerizer: host.view(), checkpoint: true });
    const rereg = await s.master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
    const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
    expect(body.tasks.map((t) => [t.task!.taskId, t.task!.allocationRole, t.status!.state]).sort()).toEqual([
      ["new", "batch", "TASK_RUNNING"],
      ["old", undefined, "TASK_RUNNING"],
    ]);
  });
});

describe("damaged checkpoints", () => {
  // Each file parses as JSON and names the right task, but a field has the wrong shape: the kind of
  // damage a hand edit, a disk error or a future format leaves behind.
  const damages: Array<[string, (checkpoint: Record<string, any>) => void]> = [
    ["a status uuid that is not hex", (c) => (c.latest.uuid = "zz")],
    ["resources that are not a list", (c) => (c.task.resources = "cpus:1")],
    ["labels that are a list", (c) => (c.task.labels = [1, 2])],
    ["an exit code that is text", (c) => (c.latest.exitCode = "x")],
  ];

  for (const [what, damage] of damages) {
    it(`starts and re-registers despite ${what}, skipping only that task`, async () => {
      const { s, host } = await checkpointedThenChanged(["bad", "good"], "bad", damage);

      const seen = s.master.received.items.length;
      const { log, records } = capturingLogger();
      const second = await startAgent(s, { containerizer: host.view(), checkpoint: true, log });
      const rereg = await s.master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
      const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
      expect(body.tasks.map((t) => [t.task!.taskId, t.status!.state])).toEqual([["good", "TASK_RUNNING"]]);
      await s.master.received.waitFor((r) => r.index > rereg.index && r.message.kind === "pong", "pong after re-registering");
      expect(second.agent.state().registered).toBe(true);
      await records.waitFor((r) => r.msg === "unusable checkpoint skipped" && String(r.problem).includes("t-bad.json"), "the damaged file reported");
    });
  }

  it("fills in what the wire would default (a command's missing arguments) and recovers the task", async () => {
    const { s, host } = await checkpointedThenChanged(["t"], "t", (checkpoint) => (checkpoint.task.command = { value: "sleep 1000", shell: true }));

    const seen = s.master.received.items.length;
    await startAgent(s, { containerizer: host.view(), checkpoint: true });
    const rereg = await s.master.received.waitFor((r) => r.index >= seen && r.message.kind === "reregister", "REREGISTER");
    const body = (rereg.message as Extract<AgentToMaster, { kind: "reregister" }>).reregister;
    expect(body.tasks.map((t) => [t.task!.taskId, t.task!.command!.arguments, t.status!.state])).toEqual([["t", [], "TASK_RUNNING"]]);
  });
});

/** A disk usage reading the test sets, and a log of the agent's readings (their count, in order). */
function diskGauge(usage: number) {
  const reads = new Collector<number>();
  const gauge = {
    usage,
    reads,
    read: async () => {
      reads.push(reads.items.length + 1);
      return gauge.usage;
    },
    /**
     * Resolves once the agent has started `n` more readings: each starts after the one before it
     * has been applied (its removals ended), so after two, one whole check ran after this call.
     */
    readings: (n: number) => {
      const target = reads.items.length + n;
      return reads.waitFor((count) => count >= target, `${n} more disk usage readings`);
    },
  };
  return gauge;
}

describe("sandbox garbage collection", () => {
  const removedOf = (path: string) => (r: Record<string, unknown>) => r.msg === "sandbox removed" && r.sandbox === path;

  /** Acknowledges a task's updates up to (not including) its terminal one, which it returns. */
  async function ackUntilTerminal(master: FakeMaster, taskId: string, terminal: "TASK_FINISHED" | "TASK_KILLED") {
    master.ack(await master.waitForStatus(taskId, "TASK_STARTING"));
    master.ack(await master.waitForStatus(taskId, "TASK_RUNNING"));
    return master.waitForStatus(taskId, terminal);
  }

  it("keeps a finished task's sandbox, and serves it, until its final update is acknowledged, even on a full disk", async () => {
    const gauge = diskGauge(1); // full: anything scheduled would go at the next reading
    const { log, records } = capturingLogger();
    const { master, agent, workDir } = await registeredAgent({ log, gcDelayMs: 3_600_000, diskWatchIntervalMs: 20, diskUsage: gauge.read }, false);
    master.runTask("agent-1", shellTask("done", "agent-1", "echo bye"));
    const finished = await ackUntilTerminal(master, "done", "TASK_FINISHED");
    const sandbox = join(workDir, "sandboxes", "fw-1", "done");
    await gauge.readings(2);
    expect(existsSync(sandbox)).toBe(true);
    expect(await getJson(`${agent.httpUrl()}/files/read?frameworkId=fw-1&taskId=done&path=stdout`)).toEqual({ status: 200, body: { data: "bye\n", offset: 0, length: 4, totalSize: 4 } });

    master.ack(finished);
    await records.waitFor(removedOf(sandbox), "the sandbox removed");
    expect(existsSync(sandbox)).toBe(false);
    const gone = await getJson(`${agent.httpUrl()}/files/read?frameworkId=fw-1&taskId=done&path=stdout`);
    expect(gone).toMatchObject({ status: 404, body: { code: "CORRAL_ERR_NOT_FOUND" } });
    // The task is still listed as completed, with the path its sandbox had.
    expect(agent.state().tasks).toMatchObject([{ taskId: "done", state: "TASK_FINISHED", completed: true, sandbox }]);
  });

  it("removes it gcDelayMs after the acknowledgement when the disk has room", async () => {
    const gauge = diskGauge(0);
    const { log, records } = capturingLogger();
    const { master, workDir } = await registeredAgent({ log, gcDelayMs: 1000, gcDiskHeadroom: 0, diskWatchIntervalMs: 20, diskUsage: gauge.read });
    master.runTask("agent-1", shellTask("done", "agent-1", "echo bye"));
    await master.waitForStatus("done", "TASK_FINISHED");
    await barrier(master); // acknowledged
    const sandbox = join(workDir, "sandboxes", "fw-1", "done");
    expect(existsSync(sandbox)).toBe(true);
    const removed = await records.waitFor(removedOf(sandbox), "the sandbox removed");
    expect(removed.ageMs).toBeGreaterThanOrEqual(1000);
    expect(existsSync(sandbox)).toBe(false);
  });

  it("removes it sooner as the disk fills: older than gcDelay * (1 - headroom - usage)", async () => {
    const gauge = diskGauge(0.5); // 1 h * (1 - 0.1 - 0.5): sandboxes older than 24 min go
    const { log, records } = capturingLogger();
    const { master, workDir } = await registeredAgent({ log, gcDelayMs: 3_600_000, gcDiskHeadroom: 0.1, diskWatchIntervalMs: 20, diskUsage: gauge.read });
    master.runTask("agent-1", shellTask("done", "agent-1", "echo bye"));
    await master.waitForStatus("done", "TASK_FINISHED");
    await barrier(master);
    const sandbox = join(workDir, "sandboxes", "fw-1", "done");
    await gauge.readings(2);
    expect(existsSync(sandbox)).toBe(true);
    expect(records.filter((r) => r.msg === "disk usage checked" && r.usage === 0.5).at(-1)).toMatchObject({ maxAgeMs: expect.closeTo(0.4 * 3_600_000, 3) });

    gauge.usage = 0.9; // 1 - headroom: no sandbox may stay
    const removed = await records.waitFor(removedOf(sandbox), "the sandbox removed under disk pressure");
    expect(removed.ageMs).toBeLessThan(3_600_000);
    expect(existsSync(sandbox)).toBe(false);
  });

  it("keeps the sandbox of a new task that reuses the id of a finished one still scheduled", async () => {
    const gauge = diskGauge(0);
    const { log, records } = capturingLogger();
    // No completed tasks remembered: the same id runs again at once.
    const { master, workDir } = await registeredAgent({ log, gcDelayMs: 3_600_000, diskWatchIntervalMs: 20, diskUsage: gauge.read, maxCompletedTasks: 0 });
    const sandbox = join(workDir, "sandboxes", "fw-1", "again");
    master.runTask("agent-1", shellTask("again", "agent-1", "echo first"));
    await master.waitForStatus("again", "TASK_FINISHED");
    const mark = (await barrier(master)).index; // acknowledged: the sandbox is scheduled
    master.runTask("agent-1", shellTask("again", "agent-1", "echo second; sleep 1000"));
    const statusAfterMark = (state: string) => (r: Received) => r.index > mark && r.message.kind === "statusUpdate" && r.message.statusUpdate.status?.taskId === "again" && r.message.statusUpdate.status.state === state;
    await master.received.waitFor(statusAfterMark("TASK_RUNNING"), "the second task running");
    await records.waitFor((r) => r.msg === "sandbox reused by a new task; no longer scheduled for removal" && r.sandbox === sandbox, "the removal cancelled");

    gauge.usage = 1; // anything still scheduled would go now
    await gauge.readings(2);
    expect(existsSync(sandbox)).toBe(true);
    await eventually(async () => (await readFile(join(sandbox, "stdout"), "utf8")).includes("second"), 10_000, "the second task's output");

    master.send("agent-1", { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "again" } });
    await master.received.waitFor(statusAfterMark("TASK_KILLED"), "the second task killed");
    await records.waitFor(removedOf(sandbox), "the sandbox removed once the second task ended");
    expect(existsSync(sandbox)).toBe(false);
  });

  it("after a restart, schedules the sandboxes no recovered task owns from their modification time", async () => {
    const s = await setup();
    s.master.autoRegister = { agentId: "agent-1" };
    s.master.autoAck = true;
    await s.master.listen();
    const host = new SurvivingHost();
    const hour = 3_600_000;
    const options = { checkpoint: true, gcDelayMs: hour, diskWatchIntervalMs: 20 } as const;
    const first = await startAgent(s, { ...options, containerizer: host.view(), diskUsage: diskGauge(0).read });
    await s.master.waitForPong(0);
    s.master.runTask("agent-1", shellTask("live", "agent-1", "sleep 1000"), "fw-1", { checkpoint: true });
    await s.master.waitForStatus("live", "TASK_RUNNING");
    await first.agent.stop({ killTasks: false });
    await first.transport.close();

    // The in-memory host makes no directories: lay out what a real one would have left.
    const root = join(s.workDir, "sandboxes", "fw-1");
    const twoHoursAgo = new Date(Date.now() - 2 * hour);
    // More old ones than are removed at once (MAX_CONCURRENT_SANDBOX_REMOVALS): the rest queue.
    const old = Array.from({ length: 2 * MAX_CONCURRENT_SANDBOX_REMOVALS + 1 }, (_, i) => `old-${i}`);
    for (const name of ["live", "recent", ...old]) await mkdir(join(root, name), { recursive: true });
    for (const name of ["live", ...old]) await writeFile(join(root, name, "stdout"), "output\n");
    for (const name of ["live", ...old]) await utimes(join(root, name), twoHoursAgo, twoHoursAgo);

    const gauge = diskGauge(0);
    const { log, records } = capturingLogger();
    await startAgent(s, { ...options, containerizer: host.view(), diskUsage: gauge.read, log });
    await records.waitFor((r) => r.msg === "sandboxes left on disk scheduled for removal from their last modification" && r.sandboxes === old.length + 1, "the leftovers scheduled");
    // Older than the delay already: removed at once; the recent one waits.
    for (const name of old) await records.waitFor(removedOf(join(root, name)), `${name} removed`);
    expect((await readdir(root)).sort()).toEqual(["live", "recent"]);
    await gauge.readings(2);
    expect(existsSync(join(root, "recent"))).toBe(true);
    // A full disk removes every scheduled sandbox, never the recovered task's.
    gauge.usage = 1;
    await records.waitFor(removedOf(join(root, "recent")), "the recent leftover removed under disk pressure");
    await gauge.readings(2);
    expect(existsSync(join(root, "live"))).toBe(true);
    expect(host.running()).toHaveLength(1);
  });
});

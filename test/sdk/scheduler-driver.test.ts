import { afterEach, describe, expect, it } from "vitest";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { Resources } from "../../sdk/resources.ts";
import { SeededRng } from "../../sdk/rng.ts";
import {
  createSchedulerDriver,
  isSchedulerError,
  SchedulerError,
  type Acknowledger,
  type OfferView,
  type SchedulerCallbacks,
  type SchedulerDriver,
  type SchedulerDriverOptions,
  type SubscribedInfo,
} from "../../sdk/scheduler.ts";
import { silentLogger } from "../../sdk/transport.ts";
import { encodeEnvelope } from "../../sdk/wire/codec.ts";
import type { Offer, TaskStatus } from "../../sdk/wire/types.ts";
import { useNats } from "../harness/nats.ts";
import { ManualTimers, OK, ScriptedMaster, until, wireOffer as scriptedOffer } from "./scripted-master.ts";

const nats = useNats({ jetstream: false });

const transports: NatsTransport[] = [];
const drivers: SchedulerDriver[] = [];
afterEach(async () => {
  await Promise.all(drivers.splice(0).map((d) => d.stop()));
  await Promise.all(transports.splice(0).map((t) => t.close()));
});

let clusterSeq = 0;

/** What each test gets: a scripted master on a fresh cluster name and a driver recording its callbacks. */
interface Setup {
  master: ScriptedMaster;
  driver: SchedulerDriver;
  seen: {
    subscribed: SubscribedInfo[];
    offers: OfferView[];
    rescinded: string[];
    updates: Array<{ status: TaskStatus; ack: Acknowledger | undefined }>;
    errors: string[];
    disconnected: string[];
  };
}

async function setup(
  overrides: Partial<SchedulerDriverOptions> = {},
  prepare: (master: ScriptedMaster) => void = () => undefined,
  callbacks: SchedulerCallbacks = {},
): Promise<Setup> {
  const cluster = `sched${++clusterSeq}`;
  const [masterBus, frameworkBus] = await Promise.all([
    connectNats({ servers: nats.url, name: "scripted-master" }),
    connectNats({ servers: nats.url, name: "framework" }),
  ]);
  transports.push(masterBus, frameworkBus);
  const master = new ScriptedMaster(masterBus, cluster);
  prepare(master);
  await master.listen();
  const seen: Setup["seen"] = { subscribed: [], offers: [], rescinded: [], updates: [], errors: [], disconnected: [] };
  const driver = createSchedulerDriver({
    cluster,
    transport: frameworkBus,
    framework: { name: "test-framework", hostname: "fw.example" },
    rng: new SeededRng(`driver-${clusterSeq}`),
    callbacks: {
      subscribed: (info) => void seen.subscribed.push(info),
      offers: (offers) => void seen.offers.push(...offers),
      rescind: (offerId) => void seen.rescinded.push(offerId),
      update: (status, ack) => void seen.updates.push({ status, ack }),
      error: (message) => void seen.errors.push(message),
      disconnected: (reason) => void seen.disconnected.push(reason),
      ...callbacks,
    },
    ...overrides,
  });
  drivers.push(driver);
  return { master, driver, seen };
}

/** The driver tests' offer: 2 cpus, 1024 mem, 10 ports, on rack r1 in zone eu-1a. */
function wireOffer(id: string, agentId = "agent-1"): Offer {
  return scriptedOffer(id, agentId, "cpus:2;mem:1024;ports:[31000-31009]", [
    { name: "rack", text: "r1" },
    { name: "zone", text: "eu-1a" },
  ]);
}

function status(taskId: string, uuid: number[] = [], state: TaskStatus["state"] = "TASK_RUNNING"): TaskStatus {
  return {
    taskId,
    state,
    message: "",
    source: "SOURCE_AGENT",
    reason: "REASON_UNSPECIFIED",
    agentId: "agent-1",
    frameworkId: "fw-1",
    uuid: new Uint8Array(uuid),
    timestamp: 1_700_000_000,
  };
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/**
 * A round trip through the driver's connection: everything the driver published before it has
 * reached the master by the time it is answered (NATS keeps one connection's messages in order).
 */
async function barrier(driver: SchedulerDriver): Promise<void> {
  await driver.reconcile([{ taskId: "barrier" }]);
}

describe("SchedulerDriver against a scripted master on a real nats-server", () => {
  it("subscribes, listens, then sends the first heartbeat call, and only then resolves start()", async () => {
    const { master, driver, seen } = await setup({}, (m) => {
      // The master may publish as soon as the first call after SUBSCRIBED arrives.
      m.beforeAnswer = (call) => {
        if (call.kind === "heartbeat" && m.callsOf("heartbeat").length === 1) m.publish({ kind: "offers", offers: { offers: [wireOffer("o-early")] } });
      };
    });
    expect(driver.state()).toBe("idle");
    const info = await driver.start();
    expect(info).toEqual({ frameworkId: "fw-1", masterId: "master-1", heartbeatIntervalSeconds: 30, reconnected: false });
    expect(driver.state()).toBe("subscribed");
    expect(driver.frameworkId()).toBe("fw-1");

    const [subscribe, heartbeat] = master.calls;
    expect(subscribe!.call).toEqual({
      frameworkId: "",
      kind: "subscribe",
      subscribe: {
        frameworkInfo: {
          id: "",
          name: "test-framework",
          roles: ["default"],
          principal: "",
          failoverTimeoutSeconds: 0,
          checkpoint: false,
          partitionAware: true,
          hostname: "fw.example",
        },
      },
    });
    expect(heartbeat!.call).toEqual({ frameworkId: "fw-1", kind: "heartbeat", heartbeat: {} });
    expect(master.calls.map((c) => c.senderId)).toEqual([driver.instanceId, driver.instanceId]);
    expect(subscribe!.callId).toMatch(/^[0-9a-f-]{36}$/);
    expect(subscribe!.callId).not.toBe(heartbeat!.callId);

    await until(() => seen.offers.length === 1, "the offer published on the first call");
    expect(seen.offers[0]!.id).toBe("o-early");
    expect(seen.subscribed).toEqual([info]);
    // start() is idempotent.
    await expect(driver.start()).resolves.toEqual(info);
    expect(master.callsOf("subscribe")).toHaveLength(1);
  });

  it("hands offers to the callback with Resources and attributes, and forgets rescinded ones", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-1"), wireOffer("o-2", "agent-2")] } });
    await until(() => seen.offers.length === 2, "two offers");
    const [o1, o2] = seen.offers;
    expect(o1!.resources).toBeInstanceOf(Resources);
    expect(o1!.resources.equals(Resources.parse("cpus:2;mem:1024;ports:[31000-31009]"))).toBe(true);
    expect(o1!.resources.rangesSize("ports")).toBe(10);
    expect(o1!.attributes).toEqual({ rack: "r1", zone: "eu-1a" });
    expect(o2).toMatchObject({ id: "o-2", agentId: "agent-2", hostname: "agent-2.example", role: "default", frameworkId: "fw-1" });

    master.publish({ kind: "rescind", rescind: { offerId: "o-2" } });
    await until(() => seen.rescinded.length === 1, "the rescind");
    expect(seen.rescinded).toEqual(["o-2"]);
    // A rescinded offer is no longer known, so its agent cannot be defaulted.
    await expect(driver.accept(["o-2"], [{ taskId: "t", resources: "cpus:1", command: "true" }])).rejects.toMatchObject({
      code: "CORRAL_ERR_INVALID_CALL",
      message: expect.stringContaining("tasks[0].agentId"),
    });
  });

  it("accept and launch send the exact wire TaskInfo", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-1"), wireOffer("o-2", "agent-2")] } });
    await until(() => seen.offers.length === 2, "offers");

    await driver.launch(
      seen.offers[0]!,
      [
        {
          taskId: "t1",
          resources: "cpus:0.5;mem:128;ports:[31000-31000]",
          command: "echo hi",
          env: { GREETING: "hi" },
          labels: { team: "infra" },
          killGracePeriodSeconds: 2,
        },
      ],
      { refuseSeconds: 5 },
    );
    expect(master.callsOf("accept")[0]).toEqual({
      frameworkId: "fw-1",
      kind: "accept",
      accept: {
        offerIds: ["o-1"],
        operations: [
          {
            kind: "launch",
            launch: {
              taskInfos: [
                {
                  taskId: "t1",
                  name: "t1",
                  agentId: "agent-1",
                  resources: [
                    { name: "cpus", role: "*", value: "scalar", scalar: 0.5 },
                    { name: "mem", role: "*", value: "scalar", scalar: 128 },
                    { name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 31000, end: 31000 }] } },
                  ],
                  command: { value: "echo hi", arguments: [], shell: true, environment: { GREETING: "hi" }, user: "" },
                  killGracePeriodSeconds: 2,
                  labels: { team: "infra" },
                },
              ],
            },
          },
        ],
        filters: { refuseSeconds: 5 },
      },
    });

    // accept() by offer id: the agent comes from the offer; an exec-style command.
    await driver.accept(["o-2"], [{ taskId: "t2", name: "second", resources: Resources.scalar("cpus", 1), command: { value: "/bin/echo", arguments: ["a", "b"], shell: false }, user: "nobody" }]);
    const second = master.callsOf("accept")[1]!.accept;
    expect(second.filters).toBeUndefined();
    expect(second.operations[0]!.launch.taskInfos[0]).toEqual({
      taskId: "t2",
      name: "second",
      agentId: "agent-2",
      resources: [{ name: "cpus", role: "*", value: "scalar", scalar: 1 }],
      command: { value: "/bin/echo", arguments: ["a", "b"], shell: false, environment: {}, user: "nobody" },
      labels: {},
    });
  });

  it("refuses, without sending, accepts that cannot be right", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-1"), wireOffer("o-2", "agent-2")] } });
    await until(() => seen.offers.length === 2, "offers");
    const offer = seen.offers[0]!;
    const tooBig = driver.launch(offer, [{ taskId: "big", resources: "cpus:4", command: "true" }]);
    await expect(tooBig).rejects.toBeInstanceOf(SchedulerError);
    await expect(tooBig).rejects.toMatchObject({ code: "CORRAL_ERR_INVALID_CALL", message: expect.stringContaining("need cpus:4") });
    await expect(driver.launch(offer, [{ taskId: "x", resources: "cpus:lots", command: "true" }])).rejects.toMatchObject({
      message: expect.stringContaining("tasks[0].resources"),
    });
    await expect(driver.launch(offer, [{ taskId: "x", resources: "cpus:1", command: "" }])).rejects.toMatchObject({
      message: expect.stringContaining("tasks[0].command"),
    });
    // Two tasks on one port: the offer holds it once.
    const samePort = driver.launch(offer, [
      { taskId: "p1", resources: "cpus:0.1;ports:[31000-31000]", command: "true" },
      { taskId: "p2", resources: "cpus:0.1;ports:[31000-31000]", command: "true" },
    ]);
    await expect(samePort).rejects.toMatchObject({ code: "CORRAL_ERR_INVALID_CALL", message: expect.stringMatching(/^tasks\[1\]: need cpus:0.1;ports:\[31000-31000\] but the offers hold only .*ports:\[31001-31009\] after the tasks before it/) });
    const twice = { taskId: "dup", resources: "cpus:0.1", command: "true" };
    await expect(driver.launch(offer, [twice, twice])).rejects.toMatchObject({ message: expect.stringContaining("tasks[1].taskId") });
    await expect(driver.accept(["o-1", "o-2"], [])).rejects.toMatchObject({ message: expect.stringContaining("one agent") });
    await expect(driver.decline([])).rejects.toMatchObject({ code: "CORRAL_ERR_INVALID_CALL" });
    await expect(driver.decline(["o-1"], { refuseSeconds: -1 })).rejects.toMatchObject({ message: expect.stringContaining("refuseSeconds") });
    await expect(driver.suppress(["other-role"])).rejects.toMatchObject({ message: expect.stringContaining("not one of the framework's roles") });
    await expect(driver.acknowledge(status("t1"))).rejects.toMatchObject({ message: expect.stringContaining("status.uuid") });
    await barrier(driver);
    expect(master.calls.map((c) => c.call.kind)).toEqual(["subscribe", "heartbeat", "reconcile"]);
  });

  it("sends decline, revive, suppress, kill, reconcile and teardown as the protocol says", async () => {
    const { master, driver } = await setup();
    await driver.start();
    await driver.decline(["o-9"], { refuseSeconds: 60 });
    await driver.revive();
    await driver.suppress(["default"]);
    await driver.kill("t1", "agent-1", 0.5);
    await driver.kill("t2");
    await driver.reconcile();
    await driver.reconcile([{ taskId: "t1", agentId: "agent-1" }, { taskId: "t2" }]);
    await expect(driver.teardown()).resolves.toEqual(OK);
    expect(driver.state()).toBe("stopped");
    expect(master.calls.slice(2).map((c) => c.call)).toEqual([
      { frameworkId: "fw-1", kind: "decline", decline: { offerIds: ["o-9"], filters: { refuseSeconds: 60 } } },
      { frameworkId: "fw-1", kind: "revive", revive: { roles: [] } },
      { frameworkId: "fw-1", kind: "suppress", suppress: { roles: ["default"] } },
      { frameworkId: "fw-1", kind: "kill", kill: { taskId: "t1", agentId: "agent-1", killGracePeriodSeconds: 0.5 } },
      { frameworkId: "fw-1", kind: "kill", kill: { taskId: "t2", agentId: "" } },
      { frameworkId: "fw-1", kind: "reconcile", reconcile: { tasks: [] } },
      { frameworkId: "fw-1", kind: "reconcile", reconcile: { tasks: [{ taskId: "t1", agentId: "agent-1" }, { taskId: "t2", agentId: "" }] } },
      { frameworkId: "fw-1", kind: "teardown", teardown: {} },
    ]);
    await expect(driver.revive()).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
  });

  it("auto-acknowledges an update with a uuid exactly once, after the callback's promise resolves", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const updates: TaskStatus[] = [];
    const { master, driver } = await setup({}, undefined, {
      update: async (s) => {
        updates.push(s);
        if (s.taskId === "t1") await gate;
      },
    });
    await driver.start();
    master.publish({ kind: "update", update: { status: status("t1", [1, 2, 3, 4]) } });
    await until(() => updates.length === 1, "the update callback");
    await barrier(driver);
    expect(master.callsOf("acknowledge")).toHaveLength(0); // the callback has not finished
    release();
    await until(() => master.callsOf("acknowledge").length === 1, "the acknowledgement");
    expect(master.callsOf("acknowledge")[0]).toEqual({
      frameworkId: "fw-1",
      kind: "acknowledge",
      acknowledge: { agentId: "agent-1", taskId: "t1", uuid: new Uint8Array([1, 2, 3, 4]) },
    });
    // A later update is acknowledged too, and the first one not again.
    master.publish({ kind: "update", update: { status: status("t2", [9, 9]) } });
    await until(() => master.callsOf("acknowledge").length === 2, "the second acknowledgement");
    await barrier(driver);
    expect(master.callsOf("acknowledge").map((c) => hex(c.acknowledge.uuid))).toEqual(["01020304", "0909"]);
  });

  it("does not acknowledge updates without a uuid, nor updates whose callback threw", async () => {
    const { master, driver } = await setup({}, undefined, {
      update: (s) => {
        if (s.taskId === "throws") throw new Error("framework bug");
      },
    });
    await driver.start();
    master.publish({ kind: "update", update: { status: status("from-master", [], "TASK_LOST") } });
    master.publish({ kind: "update", update: { status: status("throws", [7]) } });
    master.publish({ kind: "update", update: { status: status("t1", [8]) } });
    await until(() => master.callsOf("acknowledge").length === 1, "the acknowledgement of t1");
    await barrier(driver);
    expect(master.callsOf("acknowledge").map((c) => c.acknowledge.taskId)).toEqual(["t1"]);
    expect(driver.stats().callbackErrors).toBe(1);
    expect(driver.state()).toBe("subscribed");
  });

  it("with autoAcknowledge off, hands out an Acknowledger that sends one acknowledgement", async () => {
    const { master, driver, seen } = await setup({ autoAcknowledge: false });
    await driver.start();
    master.publish({ kind: "update", update: { status: status("t0") } });
    master.publish({ kind: "update", update: { status: status("t1", [5, 6]) } });
    await until(() => seen.updates.length === 2, "two updates");
    expect(seen.updates[0]!.ack).toBeUndefined(); // nothing to acknowledge
    const ack = seen.updates[1]!.ack!;
    expect(ack).toBeDefined();
    await barrier(driver);
    expect(master.callsOf("acknowledge")).toHaveLength(0);
    await Promise.all([ack.acknowledge(), ack.acknowledge()]);
    await barrier(driver);
    expect(master.callsOf("acknowledge").map((c) => c.acknowledge)).toEqual([{ agentId: "agent-1", taskId: "t1", uuid: new Uint8Array([5, 6]) }]);
  });

  it("sends a heartbeat call every heartbeat interval", async () => {
    const timers = new ManualTimers();
    const { master, driver } = await setup({ clock: timers, timers }, (m) => (m.heartbeatIntervalSeconds = 10));
    await driver.start();
    expect(master.callsOf("heartbeat")).toHaveLength(1);
    timers.advance(9_999);
    await barrier(driver);
    expect(master.callsOf("heartbeat")).toHaveLength(1);
    for (let n = 2; n <= 4; n++) {
      timers.advance(n === 2 ? 1 : 10_000);
      await until(() => master.callsOf("heartbeat").length === n, `heartbeat call ${n}`);
    }
    const beats = master.seenOf("heartbeat");
    expect(new Set(beats.map((b) => b.callId)).size).toBe(4);
    expect(beats.every((b) => b.senderId === driver.instanceId && b.call.frameworkId === "fw-1")).toBe(true);
    expect(driver.state()).toBe("subscribed");
  });

  it("re-subscribes with the same id after missing the master's heartbeats", async () => {
    const timers = new ManualTimers();
    const { master, driver, seen } = await setup({ clock: timers, timers, maxMissedMasterHeartbeats: 3, resubscribeBackoffMs: 100 }, (m) => (m.heartbeatIntervalSeconds = 10));
    await driver.start();
    timers.advance(20_000);
    master.publish({ kind: "heartbeat", heartbeat: {} });
    await until(() => driver.stats().eventsReceived === 1, "the master's heartbeat");
    timers.advance(29_999); // 3 intervals after the last event, minus 1 ms
    expect(driver.state()).toBe("subscribed");
    timers.advance(1);
    expect(driver.state()).toBe("disconnected");
    await until(() => seen.disconnected.length === 1, "the disconnected callback");
    expect(seen.disconnected[0]).toMatch(/3 heartbeat intervals/);

    timers.advance(100); // the backoff
    await until(() => driver.state() === "subscribed", "the re-subscription");
    const subscribes = master.seenOf("subscribe");
    expect(subscribes).toHaveLength(2);
    const again = subscribes[1]!;
    expect(again.senderId).toBe(driver.instanceId);
    expect(again.call).toMatchObject({ frameworkId: "fw-1", subscribe: { frameworkInfo: { id: "fw-1", name: "test-framework" } } });
    expect(master.calls.at(-1)!.call.kind).toBe("heartbeat");
    await until(() => seen.subscribed.length === 2, "the second subscribed callback");
    expect(seen.subscribed[1]).toMatchObject({ frameworkId: "fw-1", reconnected: true });
    expect(driver.stats().disconnections).toBe(1);
  });

  it("re-subscribes on its own timers when the master goes quiet (system timers)", async () => {
    const { master, driver, seen } = await setup({ maxMissedMasterHeartbeats: 2, resubscribeBackoffMs: 10 }, (m) => (m.heartbeatIntervalSeconds = 0.05));
    await driver.start();
    await until(() => master.callsOf("subscribe").length >= 2 && seen.subscribed.length >= 2, "a re-subscription");
    expect(seen.disconnected.length).toBeGreaterThanOrEqual(1);
    expect(master.callsOf("subscribe")[1]!.frameworkId).toBe("fw-1");
    expect(master.callsOf("heartbeat").length).toBeGreaterThanOrEqual(2);
  });

  it("re-subscribes when a call times out or the master says it is not subscribed", async () => {
    const timers = new ManualTimers();
    const { master, driver, seen } = await setup({ clock: timers, timers, requestTimeoutMs: 500, resubscribeBackoffMs: 50 }, (m) => {
      m.script = (call) => {
        if (call.kind === "kill") return "silent";
        if (call.kind === "revive") return { response: { ok: false, errorCode: "CORRAL_ERR_NOT_SUBSCRIBED", message: "who are you?" } };
        return undefined;
      };
    });
    await driver.start();
    await expect(driver.kill("t1")).rejects.toMatchObject({ code: "CORRAL_ERR_REQUEST_TIMEOUT" });
    expect(driver.state()).toBe("disconnected");
    await until(() => seen.disconnected.length === 1, "disconnected after the timeout");
    timers.advance(50);
    await until(() => driver.state() === "subscribed", "re-subscribed");

    const refused = driver.revive();
    await expect(refused).rejects.toMatchObject({ code: "CORRAL_ERR_NOT_SUBSCRIBED", message: "who are you?" });
    expect(driver.state()).toBe("disconnected");
    timers.advance(100);
    await until(() => driver.state() === "subscribed", "re-subscribed again");
    expect(master.callsOf("subscribe").map((c) => c.frameworkId)).toEqual(["", "fw-1", "fw-1"]);
  });

  it("when failing over to a known id, listens before subscribing", async () => {
    const { master, driver, seen } = await setup({ framework: { name: "test-framework", id: "fw-9", failoverTimeoutSeconds: 3600 } }, (m) => {
      m.frameworkId = "fw-9";
      // The master publishes (e.g. re-sent updates) before it even answers SUBSCRIBE.
      m.beforeAnswer = async (call) => {
        if (call.kind !== "subscribe") return;
        m.publish({ kind: "offers", offers: { offers: [wireOffer("o-failover")] } });
        m.publish({ kind: "error", error: { message: `CORRAL_ERR_FRAMEWORK_FAILED_OVER ${driver.instanceId}` } });
        await m.transport.flush();
      };
    });
    expect(driver.frameworkId()).toBe("fw-9");
    const info = await driver.start();
    expect(info.frameworkId).toBe("fw-9");
    expect(master.callsOf("subscribe")[0]).toMatchObject({ frameworkId: "fw-9", subscribe: { frameworkInfo: { id: "fw-9", failoverTimeoutSeconds: 3600 } } });
    await until(() => seen.offers.length === 1, "the offer published before SUBSCRIBED");
    // Our own failover notice is not a reason to stop.
    expect(seen.errors).toEqual([]);
    expect(driver.state()).toBe("subscribed");
  });

  it("stops when another instance fails over, calling error", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    master.publish({ kind: "error", error: { message: `CORRAL_ERR_FRAMEWORK_FAILED_OVER ${driver.instanceId}` } });
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-1")] } });
    await until(() => seen.offers.length === 1, "the offer after our own failover notice");
    expect(driver.state()).toBe("subscribed");

    master.publish({ kind: "error", error: { message: "CORRAL_ERR_FRAMEWORK_FAILED_OVER another-instance" } });
    await until(() => seen.errors.length === 1, "the error callback");
    expect(seen.errors[0]).toBe("CORRAL_ERR_FRAMEWORK_FAILED_OVER another-instance");
    expect(driver.state()).toBe("stopped");
    const late = driver.decline(["o-1"]);
    await expect(late).rejects.toBeInstanceOf(SchedulerError);
    await expect(late).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
    await expect(driver.start()).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" }); // no restart
  });

  it("stops when the framework was removed", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    master.publish({ kind: "error", error: { message: "CORRAL_ERR_FRAMEWORK_REMOVED torn down by operator" } });
    await until(() => seen.errors.length === 1, "the error callback");
    expect(driver.state()).toBe("stopped");
  });

  it("stops when a call is answered CORRAL_ERR_FRAMEWORK_REMOVED", async () => {
    const { driver, seen } = await setup({}, (m) => {
      m.script = (call) => (call.kind === "revive" ? { response: { ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_REMOVED", message: "gone" } } : undefined);
    });
    await driver.start();
    await expect(driver.revive()).rejects.toMatchObject({ code: "CORRAL_ERR_FRAMEWORK_REMOVED" });
    expect(driver.state()).toBe("stopped");
    await until(() => seen.errors.length === 1, "the error callback");
  });

  it("stops, without re-subscribing, when a call is answered CORRAL_ERR_FRAMEWORK_FAILED_OVER", async () => {
    const { master, driver, seen } = await setup({}, (m) => {
      m.script = (call) => (call.kind === "revive" ? { response: { ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_FAILED_OVER", message: "another instance subscribed" } } : undefined);
    });
    await driver.start();
    await expect(driver.revive()).rejects.toMatchObject({ code: "CORRAL_ERR_FRAMEWORK_FAILED_OVER" });
    expect(driver.state()).toBe("stopped");
    await until(() => seen.errors.length === 1, "the error callback");
    expect(seen.errors[0]).toBe("CORRAL_ERR_FRAMEWORK_FAILED_OVER: another instance subscribed");
    expect(master.callsOf("subscribe")).toHaveLength(1); // it did not take the framework back
  });

  it("drops and counts garbage events without missing the next good one", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    master.publishRaw(new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]));
    master.publishRaw(encodeEnvelope({ senderId: "master-1", epoch: 1, payload: "callResponse", callResponse: OK }));
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-after")] } });
    await until(() => seen.offers.length === 1, "the good offer");
    expect(seen.offers[0]!.id).toBe("o-after");
    expect(driver.drops.count({ kind: "framework.events" })).toBe(2);
    expect(driver.drops.count({ kind: "framework.events", reason: "decode_error" })).toBe(1);
    expect(driver.drops.count({ kind: "framework.events", reason: "wrong_payload" })).toBe(1);
    expect(driver.state()).toBe("subscribed");
  });

  it("declines and counts an offer whose resources are unusable", async () => {
    const { master, driver, seen } = await setup();
    await driver.start();
    const bad = wireOffer("o-bad");
    bad.resources = [{ name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 1, end: 10 }, { begin: 5, end: 20 }] } }];
    master.publish({ kind: "offers", offers: { offers: [bad, wireOffer("o-good")] } });
    await until(() => seen.offers.length === 1 && master.callsOf("decline").length === 1, "the good offer and the decline");
    expect(seen.offers[0]!.id).toBe("o-good");
    expect(master.callsOf("decline")[0]!.decline.offerIds).toEqual(["o-bad"]);
    expect(driver.drops.count({ reason: "invalid" })).toBe(1);
  });

  it("ignores events from a lower epoch than the highest seen", async () => {
    const { master, driver, seen } = await setup({}, (m) => (m.epoch = 2));
    await driver.start();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("stale-1")] } }, 1);
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-2")] } }, 2);
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-3")] } }, 3); // a new leader
    master.publish({ kind: "offers", offers: { offers: [wireOffer("stale-2")] } }, 2);
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-4")] } }, 3);
    await until(() => seen.offers.some((o) => o.id === "o-4"), "the last offer");
    expect(seen.offers.map((o) => o.id)).toEqual(["o-2", "o-3", "o-4"]);
    expect(driver.stats()).toMatchObject({ staleEventsIgnored: 2, highestEpoch: 3 });
  });

  it("rejects with a SchedulerError carrying the master's code when a call is refused", async () => {
    const { driver } = await setup({}, (m) => {
      m.script = (call) =>
        call.kind === "decline" ? { response: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "offerIds[0]: unknown offer o-x" } } : undefined;
    });
    await driver.start();
    const err = await driver.decline(["o-x"]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchedulerError);
    expect(isSchedulerError(err, "CORRAL_ERR_INVALID_CALL")).toBe(true);
    expect(err).toMatchObject({
      code: "CORRAL_ERR_INVALID_CALL",
      message: "offerIds[0]: unknown offer o-x",
      response: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "offerIds[0]: unknown offer o-x" },
    });
    expect(driver.state()).toBe("subscribed"); // a refused call is not a lost connection
  });

  it("rejects start() when the master refuses the subscription", async () => {
    const { driver } = await setup({}, (m) => {
      m.script = (call) =>
        call.kind === "subscribe" ? { response: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: "framework_info.roles[0]: unknown role" } } : undefined;
    });
    await expect(driver.start()).rejects.toMatchObject({ code: "CORRAL_ERR_INVALID_CALL", message: "framework_info.roles[0]: unknown role" });
    expect(driver.state()).toBe("stopped");
  });

  it("keeps trying to subscribe until a master answers, and stop() ends the attempts", async () => {
    const timers = new ManualTimers();
    const warnings: Array<{ obj: Record<string, unknown>; msg?: string }> = [];
    const log = { ...silentLogger, warn: (obj: object, msg?: string) => void warnings.push({ obj: obj as Record<string, unknown>, msg }) };
    const { master, driver } = await setup({ clock: timers, timers, requestTimeoutMs: 300, resubscribeBackoffMs: 10, log }, (m) => {
      m.script = (call) => (call.kind === "subscribe" && m.callsOf("subscribe").length < 3 ? "silent" : undefined);
    });
    const started = driver.start();
    for (let n = 2; n <= 3; n++) {
      await until(() => timers.armed() > 0 && master.callsOf("subscribe").length === n - 1, `backoff before attempt ${n}`);
      timers.advance(20 * 2 ** n);
    }
    await expect(started).resolves.toMatchObject({ frameworkId: "fw-1", reconnected: false });
    expect(master.callsOf("subscribe")).toHaveLength(3);
    // Waiting for a master is expected: one line per attempt with the code, no error and stack.
    const retries = warnings.filter((w) => w.msg === "subscribe attempt failed; retrying");
    expect(retries.map((w) => [w.obj.attempt, w.obj.code, "err" in w.obj])).toEqual([
      [0, "CORRAL_ERR_REQUEST_TIMEOUT", false],
      [1, "CORRAL_ERR_REQUEST_TIMEOUT", false],
    ]);

    const { driver: other } = await setup({ requestTimeoutMs: 100 }, (m) => (m.script = () => "silent"));
    const never = other.start();
    await other.stop();
    await expect(never).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
  });

  it("stop({ teardown: true }) tears the framework down quietly; calls before start are refused", async () => {
    const { master, driver, seen } = await setup({}, (m) => {
      // Like the real master: the removal notice goes out before the answer to TEARDOWN.
      m.beforeAnswer = async (call) => {
        if (call.kind !== "teardown") return;
        m.publish({ kind: "error", error: { message: "CORRAL_ERR_FRAMEWORK_REMOVED: torn down by the framework" } });
        await m.transport.flush();
      };
    });
    await expect(driver.revive()).rejects.toMatchObject({ code: "CORRAL_ERR_NOT_SUBSCRIBED" });
    await driver.start();
    await driver.stop({ teardown: true });
    expect(master.callsOf("teardown")).toHaveLength(1);
    expect(driver.state()).toBe("stopped");
    expect(seen.errors).toEqual([]); // our own teardown is not an error
    await driver.stop(); // idempotent
    await expect(driver.start()).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
  });

  it("validates its options up front", async () => {
    const [bus] = await Promise.all([connectNats({ servers: nats.url, name: "options" })]);
    transports.push(bus);
    const make = (o: Partial<SchedulerDriverOptions>) => () => createSchedulerDriver({ transport: bus, framework: { name: "f" }, ...o });
    expect(make({ framework: { name: "" } })).toThrow(/framework.name: must not be empty/);
    expect(make({ framework: { name: "f", roles: ["*"] } })).toThrow(/framework.roles\[0\]/);
    expect(make({ framework: { name: "f", roles: [] } })).toThrow(/at least one role/);
    expect(make({ framework: { name: "f", failoverTimeoutSeconds: -1 } })).toThrow(/failoverTimeoutSeconds/);
    expect(make({ framework: { name: "f", id: "a.b" } })).toThrow(/framework.id/);
    // The master would refuse these at SUBSCRIBE: they cannot name a sandbox directory.
    expect(make({ framework: { name: "f", id: "fw#1" } })).toThrow(/framework.id: use only letters/);
    expect(make({ framework: { name: "f", id: "x".repeat(129) } })).toThrow(/framework.id: must be at most 128/);
    // A principal names the subjects the framework calls and listens on.
    expect(make({ framework: { name: "f", principal: "team.a" } })).toThrow('framework.principal: must not contain "." (dots, wildcards, whitespace and control characters are not allowed) (a principal names the subjects the framework uses)');
    expect(make({ framework: { name: "f", principal: "team a" } })).toThrow(/framework.principal: /);
    expect(make({ cluster: "has space" })).toThrow(/cluster/);
    expect(make({ requestTimeoutMs: 0 })).toThrow(/requestTimeoutMs/);
    expect(make({ maxMissedMasterHeartbeats: 1.5 })).toThrow(/maxMissedMasterHeartbeats/);
    try {
      make({ framework: { name: "" } })();
    } catch (err) {
      expect(isSchedulerError(err, "CORRAL_ERR_INVALID_OPTIONS")).toBe(true);
    }
    const d = make({})();
    expect(d.state()).toBe("idle");
    expect(d.frameworkId()).toBeUndefined();
    await d.stop();
  });
});

describe("SchedulerDriver edge cases a Mesos framework author relies on", () => {
  it("refuses, without sending, a call made while failing over to a known id before SUBSCRIBED, and the failover still succeeds", async () => {
    let releaseSubscribe!: () => void;
    const subscribeGate = new Promise<void>((resolve) => (releaseSubscribe = resolve));
    const { master, driver, seen } = await setup({ framework: { name: "test-framework", id: "fw-9", failoverTimeoutSeconds: 3600 } }, (m) => {
      m.frameworkId = "fw-9";
      m.beforeAnswer = async (call) => {
        if (call.kind === "subscribe") await subscribeGate;
      };
      // Like the real master while the previous instance is still its subscriber.
      m.script = (call) =>
        call.kind === "reconcile" && m.callsOf("heartbeat").length === 0
          ? { response: { ok: false, errorCode: "CORRAL_ERR_FRAMEWORK_FAILED_OVER", message: "subscribed by another instance" } }
          : undefined;
    });
    const started = driver.start();
    await until(() => master.callsOf("subscribe").length === 1, "the SUBSCRIBE");
    await expect(driver.reconcile()).rejects.toMatchObject({ code: "CORRAL_ERR_NOT_SUBSCRIBED", message: expect.stringContaining("before start() has subscribed") });
    releaseSubscribe();
    await expect(started).resolves.toMatchObject({ frameworkId: "fw-9" });
    expect(driver.state()).toBe("subscribed");
    expect(seen.errors).toEqual([]);
    expect(master.callsOf("reconcile")).toHaveLength(0);
  });

  it("stop() while SUBSCRIBE is in flight: nothing more is sent and start() rejects", async () => {
    let releaseSubscribe!: () => void;
    const subscribeGate = new Promise<void>((resolve) => (releaseSubscribe = resolve));
    const { master, driver, seen } = await setup({}, (m) => {
      m.beforeAnswer = async (call) => {
        if (call.kind === "subscribe") await subscribeGate;
      };
    });
    const started = driver.start();
    await until(() => master.callsOf("subscribe").length === 1, "the SUBSCRIBE");
    await driver.stop();
    releaseSubscribe();
    await expect(started).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
    // start() settles only after the driver has dealt with the answer: had it sent the
    // handshake heartbeat, the master would have it by now.
    expect(master.calls.map((c) => c.call.kind)).toEqual(["subscribe"]);
    expect(seen.subscribed).toEqual([]);
    expect(driver.state()).toBe("stopped");
  });

  it("declines the offers of an event it drops because callbacks are not keeping up, instead of holding them", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const got: string[] = [];
    const { master, driver } = await setup({ maxPendingCallbacks: 1 }, undefined, {
      offers: async (offers) => {
        got.push(...offers.map((o) => o.id));
        if (offers.some((o) => o.id === "o-busy")) await gate;
      },
    });
    await driver.start();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-busy")] } });
    await until(() => got.length === 1, "the first offers callback");
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-dropped-1"), wireOffer("o-dropped-2", "agent-2")] } });
    await until(() => master.callsOf("decline").length === 1, "the decline of the dropped offers");
    expect(master.callsOf("decline")[0]!.decline.offerIds).toEqual(["o-dropped-1", "o-dropped-2"]);
    expect(driver.stats().callbacksDropped).toBe(1);
    release();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-later")] } });
    await until(() => got.includes("o-later"), "offers again once the callback caught up");
    expect(got).toEqual(["o-busy", "o-later"]);
  });

  it("when the handshake heartbeat fails after SUBSCRIBED, says disconnected before the next subscribed", async () => {
    const timers = new ManualTimers();
    const order: string[] = [];
    const { master, driver } = await setup({ clock: timers, timers, requestTimeoutMs: 200, resubscribeBackoffMs: 10 }, (m) => {
      m.script = (call) => (call.kind === "heartbeat" && m.callsOf("heartbeat").length === 1 ? "silent" : undefined);
    }, {
      subscribed: (info) => void order.push(`subscribed reconnected=${info.reconnected}`),
      disconnected: () => void order.push("disconnected"),
    });
    const started = driver.start();
    await until(() => master.callsOf("heartbeat").length === 1 && timers.armed() > 0, "the unanswered heartbeat, then the backoff");
    timers.advance(20);
    const info = await started;
    expect(master.calls.map((c) => c.call.kind)).toEqual(["subscribe", "heartbeat", "subscribe", "heartbeat"]);
    await until(() => order.length === 3, "three callbacks");
    expect(order).toEqual(["subscribed reconnected=false", "disconnected", "subscribed reconnected=true"]);
    expect(info).toMatchObject({ frameworkId: "fw-1", reconnected: true });
    expect(driver.stats().disconnections).toBe(1);
    expect(driver.state()).toBe("subscribed");
  });

  it("an Acknowledger used after stop() rejects like every other call, and sends nothing", async () => {
    const { master, driver, seen } = await setup({ autoAcknowledge: false });
    await driver.start();
    master.publish({ kind: "update", update: { status: status("t1", [3, 4]) } });
    await until(() => seen.updates.length === 1, "the update");
    await driver.stop();
    await expect(seen.updates[0]!.ack!.acknowledge()).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
    await expect(driver.acknowledge(seen.updates[0]!.status)).rejects.toMatchObject({ code: "CORRAL_ERR_DRIVER_STOPPED" });
    expect(master.callsOf("acknowledge")).toHaveLength(0);
  });

  it("re-subscribes once, at once and with the same id, when events of a new master (higher epoch) arrive", async () => {
    const timers = new ManualTimers();
    const { master, driver, seen } = await setup({ clock: timers, timers, resubscribeBackoffMs: 60_000 });
    await driver.start();
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-old")] } });
    await until(() => seen.offers.length === 1, "the old master's offer");
    master.epoch = 2;
    master.masterId = "master-2";
    master.publish({ kind: "heartbeat", heartbeat: {} });
    master.publish({ kind: "heartbeat", heartbeat: {} });
    master.publish({ kind: "offers", offers: { offers: [wireOffer("o-new")] } });
    // No timer is advanced: a new leader is there, so no backoff is waited out.
    await until(() => seen.subscribed.length === 2 && driver.state() === "subscribed", "the re-subscription to the new master");
    expect(seen.subscribed[1]).toMatchObject({ frameworkId: "fw-1", masterId: "master-2", reconnected: true });
    expect(seen.disconnected).toHaveLength(1);
    expect(master.callsOf("subscribe").map((c) => c.subscribe.frameworkInfo!.id)).toEqual(["", "fw-1"]);
    await barrier(driver);
    expect(master.callsOf("subscribe")).toHaveLength(2);
    // The old master's offer is void: an accept of it no longer finds its agent.
    await expect(driver.accept(["o-old"], [{ taskId: "t", resources: "cpus:1", command: "true" }])).rejects.toMatchObject({ message: expect.stringContaining("agentId") });
  });

  it("drops a numbered event seen already or sent before its subscription, and re-subscribes at once when a number is skipped", async () => {
    const timers = new ManualTimers();
    const { master, driver, seen } = await setup({ clock: timers, timers, resubscribeBackoffMs: 60_000 });
    master.lastEventSeq = 4;
    await driver.start();
    const offer = (seq: number, id: string) => master.publish({ seq, kind: "offers", offers: { offers: [wireOffer(id)] } });
    offer(3, "sent-before-subscribing");
    offer(5, "o-5");
    offer(5, "o-5-again");
    offer(6, "o-6");
    await until(() => seen.offers.some((o) => o.id === "o-6"), "the sixth event");
    expect(driver.state()).toBe("subscribed");
    // Event 7 was lost on the bus (an offer nobody would ever answer, say): 8 shows it.
    master.lastEventSeq = 8;
    offer(8, "o-8");
    await until(() => seen.subscribed.length === 2 && driver.state() === "subscribed", "the re-subscription");
    expect(seen.disconnected).toEqual([expect.stringContaining("events 7 of the master never arrived (got 8)")]);
    expect(seen.subscribed[1]).toMatchObject({ frameworkId: "fw-1", reconnected: true });
    expect(master.callsOf("subscribe").map((c) => c.subscribe.frameworkInfo!.id)).toEqual(["", "fw-1"]);
    offer(9, "o-9");
    await until(() => seen.offers.some((o) => o.id === "o-9"), "the first event after the re-subscription");
    expect(seen.offers.map((o) => o.id)).toEqual(["o-5", "o-6", "o-9"]);
    expect(driver.stats()).toMatchObject({ duplicateEventsIgnored: 2, eventGaps: 1, disconnections: 1 });
  });

  it("judges the events that arrive before a re-subscription's reply once the reply says where numbering stands", async () => {
    const timers = new ManualTimers();
    const { master, driver, seen } = await setup({ clock: timers, timers, resubscribeBackoffMs: 60_000 });
    master.lastEventSeq = 0;
    // Re-subscribing (it listens already), events published before the reply reach the driver
    // before it: here 11 and 13 of a master whose last event before the reply was 10.
    master.beforeAnswer = (call) => {
      if (call.kind !== "subscribe" || master.callsOf("subscribe").length !== 2) return;
      master.lastEventSeq = 10;
      master.publish({ seq: 11, kind: "heartbeat", heartbeat: {} });
      master.publish({ seq: 13, kind: "heartbeat", heartbeat: {} });
    };
    await driver.start();
    master.publish({ seq: 2, kind: "heartbeat", heartbeat: {} }); // event 1 never came
    await until(() => seen.subscribed.length === 3 && driver.state() === "subscribed", "two re-subscriptions");
    expect(seen.disconnected).toEqual([expect.stringContaining("events 1 of the master never arrived (got 2)"), "events of the master went missing while subscribing"]);
    expect(driver.stats()).toMatchObject({ eventGaps: 2, disconnections: 2 });
  });

  it("while disconnected, sends calls as they are and a refused one does not start a second re-subscription", async () => {
    const timers = new ManualTimers();
    const { master, driver, seen } = await setup({ clock: timers, timers, maxMissedMasterHeartbeats: 2, resubscribeBackoffMs: 100 }, (m) => {
      m.heartbeatIntervalSeconds = 10;
      m.script = (call) =>
        call.kind === "kill" ? { response: { ok: false, errorCode: "CORRAL_ERR_NOT_SUBSCRIBED", message: "framework 'fw-1' is not subscribed" } } : undefined;
    });
    await driver.start();
    timers.advance(20_000);
    expect(driver.state()).toBe("disconnected");
    await expect(driver.decline(["o-1"])).resolves.toEqual(OK);
    await expect(driver.kill("t1")).rejects.toMatchObject({ code: "CORRAL_ERR_NOT_SUBSCRIBED" });
    expect(driver.state()).toBe("disconnected");
    timers.advance(100);
    await until(() => driver.state() === "subscribed", "the re-subscription");
    await barrier(driver);
    expect(master.calls.map((c) => c.call.kind)).toEqual(["subscribe", "heartbeat", "heartbeat", "decline", "kill", "subscribe", "heartbeat", "reconcile"]);
    expect(seen.disconnected).toHaveLength(1);
    expect(seen.subscribed).toHaveLength(2);
  });
});

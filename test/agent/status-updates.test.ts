import { describe, expect, it } from "vitest";
import {
  createStatusUpdateManager,
  isTaskState,
  isTerminalState,
  StatusUpdateError,
  TASK_STATES,
  type StatusUpdate,
  type StatusUpdateEffect,
  type TaskState,
} from "../../agent/status-updates.ts";

let seq = 0;
function update(taskId: string, state: TaskState, uuid = `u${++seq}`, frameworkId = "fw-1"): StatusUpdate {
  return { taskId, frameworkId, agentId: "agent-1", state, uuid, timestampMs: 0 };
}

const sends = (effects: StatusUpdateEffect[]) => effects.filter((e) => e.type === "send").map((e) => e.update.uuid);
const arms = (effects: StatusUpdateEffect[]) => effects.filter((e) => e.type === "arm-timer").map((e) => e.atMs);

describe("task states", () => {
  it("classifies terminal states as Mesos does", () => {
    const terminal = TASK_STATES.filter(isTerminalState);
    expect(terminal.sort()).toEqual(
      ["TASK_DROPPED", "TASK_ERROR", "TASK_FAILED", "TASK_FINISHED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_KILLED", "TASK_LOST"].sort(),
    );
    expect(isTerminalState("TASK_UNREACHABLE")).toBe(false);
    expect(isTaskState("TASK_RUNNING")).toBe(true);
    expect(isTaskState("RUNNING")).toBe(false);
  });
});

describe("status update manager", () => {
  it("sends only the head of a stream, in enqueue order, one after each ack", () => {
    const m = createStatusUpdateManager();
    const [a, b, c] = [update("t1", "TASK_STARTING"), update("t1", "TASK_RUNNING"), update("t1", "TASK_FINISHED")];
    expect(m.enqueue(a, 1000)).toEqual([
      { type: "send", update: a, latestState: "TASK_STARTING" },
      { type: "arm-timer", frameworkId: "fw-1", taskId: "t1", atMs: 11_000 },
    ]);
    expect(m.enqueue(b, 1001)).toEqual([]);
    expect(m.enqueue(c, 1002)).toEqual([]);
    expect(m.pending()[0]!.pending.map((u) => u.uuid)).toEqual([a.uuid, b.uuid, c.uuid]);

    const afterA = m.acknowledge("fw-1", "t1", a.uuid, 2000);
    expect(sends(afterA)).toEqual([b.uuid]);
    expect(arms(afterA)).toEqual([12_000]);
    // The master learns the task already finished even though RUNNING is still unacknowledged.
    expect(afterA.find((e) => e.type === "send")).toMatchObject({ latestState: "TASK_FINISHED" });
    expect(sends(m.acknowledge("fw-1", "t1", b.uuid, 3000))).toEqual([c.uuid]);
  });

  it("keeps streams of different tasks independent", () => {
    const m = createStatusUpdateManager();
    const a = update("t1", "TASK_RUNNING");
    const b = update("t2", "TASK_RUNNING");
    expect(sends(m.enqueue(a, 0))).toEqual([a.uuid]);
    expect(sends(m.enqueue(b, 0))).toEqual([b.uuid]);
    expect(m.acknowledge("fw-1", "t2", a.uuid, 1)).toEqual([]);
    expect(m.stats().ignoredAcks).toBe(1);
  });

  it("re-sends the head with doubling backoff up to the cap", () => {
    const m = createStatusUpdateManager({ initialRetryMs: 100, maxRetryMs: 1000 });
    const a = update("t1", "TASK_RUNNING");
    let now = 0;
    let effects = m.enqueue(a, now);
    const intervals: number[] = [];
    for (let i = 0; i < 7; i++) {
      const at = arms(effects)[0]!;
      intervals.push(at - now);
      now = at;
      effects = m.timerFired("fw-1", "t1", now);
      expect(sends(effects)).toEqual([a.uuid]);
    }
    expect(intervals).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    expect(m.stats().retried).toBe(7);
  });

  it("uses Mesos's defaults: 10 s first retry, capped at 10 min", () => {
    const m = createStatusUpdateManager();
    let now = 0;
    let effects = m.enqueue(update("t1", "TASK_RUNNING"), now);
    const intervals: number[] = [];
    for (let i = 0; i < 8; i++) {
      const at = arms(effects)[0]!;
      intervals.push(at - now);
      now = at;
      effects = m.timerFired("fw-1", "t1", now);
    }
    expect(intervals).toEqual([10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000]);
  });

  it("resets the backoff for the next head after an ack", () => {
    const m = createStatusUpdateManager({ initialRetryMs: 100, maxRetryMs: 1000 });
    const [a, b] = [update("t1", "TASK_STARTING"), update("t1", "TASK_RUNNING")];
    m.enqueue(a, 0);
    m.enqueue(b, 0);
    m.timerFired("fw-1", "t1", 100);
    m.timerFired("fw-1", "t1", 300);
    expect(arms(m.acknowledge("fw-1", "t1", a.uuid, 350))).toEqual([450]);
  });

  it("ignores early and stale timer callbacks", () => {
    const m = createStatusUpdateManager({ initialRetryMs: 100 });
    const a = update("t1", "TASK_RUNNING");
    m.enqueue(a, 0);
    expect(m.timerFired("fw-1", "t1", 99)).toEqual([]);
    expect(m.timerFired("fw-1", "nope", 1000)).toEqual([]);
    expect(m.stats().ignoredTimers).toBe(2);
  });

  it("ignores acks that do not name the head, and counts them", () => {
    const m = createStatusUpdateManager();
    const [a, b] = [update("t1", "TASK_STARTING"), update("t1", "TASK_RUNNING")];
    m.enqueue(a, 0);
    m.enqueue(b, 0);
    expect(m.acknowledge("fw-1", "t1", b.uuid, 1)).toEqual([]); // queued but not in flight
    expect(m.acknowledge("fw-1", "t1", "never-seen", 1)).toEqual([]);
    expect(m.acknowledge("fw-1", "other-task", a.uuid, 1)).toEqual([]);
    expect(m.pending()[0]!.pending.map((u) => u.uuid)).toEqual([a.uuid, b.uuid]);
    m.acknowledge("fw-1", "t1", a.uuid, 2);
    expect(m.acknowledge("fw-1", "t1", a.uuid, 3)).toEqual([]); // duplicate ack
    expect(m.stats()).toMatchObject({ ignoredAcks: 3, unknownTaskAcks: 1, acknowledged: 1 });
  });

  it("closes and forgets the stream once a terminal update is acknowledged", () => {
    const m = createStatusUpdateManager();
    const [a, b] = [update("t1", "TASK_RUNNING"), update("t1", "TASK_FAILED")];
    m.enqueue(a, 0);
    m.enqueue(b, 0);
    m.acknowledge("fw-1", "t1", a.uuid, 1);
    expect(m.acknowledge("fw-1", "t1", b.uuid, 2)).toEqual([
      { type: "cancel-timer", frameworkId: "fw-1", taskId: "t1" },
      { type: "stream-closed", taskId: "t1", frameworkId: "fw-1", finalState: "TASK_FAILED" },
    ]);
    expect(m.pending()).toEqual([]);
    expect(m.timerFired("fw-1", "t1", 1_000_000)).toEqual([]);
  });

  it("keeps a stream open after a non-terminal ack, with no timer armed", () => {
    const m = createStatusUpdateManager();
    const a = update("t1", "TASK_RUNNING");
    m.enqueue(a, 0);
    expect(m.acknowledge("fw-1", "t1", a.uuid, 1)).toEqual([{ type: "cancel-timer", frameworkId: "fw-1", taskId: "t1" }]);
    expect(m.pending()).toEqual([{ taskId: "t1", frameworkId: "fw-1", pending: [], acknowledged: [a.uuid] }]);
    const b = update("t1", "TASK_KILLED");
    expect(sends(m.enqueue(b, 2))).toEqual([b.uuid]);
  });

  it("ignores duplicate enqueues (queued or already acknowledged) and anything after a terminal update", () => {
    const m = createStatusUpdateManager();
    const [a, b] = [update("t1", "TASK_RUNNING"), update("t1", "TASK_FINISHED")];
    m.enqueue(a, 0);
    expect(m.enqueue({ ...a }, 0)).toEqual([]);
    m.acknowledge("fw-1", "t1", a.uuid, 1);
    expect(m.enqueue({ ...a }, 2)).toEqual([]);
    m.enqueue(b, 3);
    expect(m.enqueue(update("t1", "TASK_RUNNING"), 4)).toEqual([]);
    expect(m.pending()[0]!.pending.map((u) => u.uuid)).toEqual([b.uuid]);
    expect(m.stats()).toMatchObject({ duplicateUpdates: 2, updatesAfterTerminal: 1, enqueued: 2 });
  });

  it("restores checkpointed streams after a restart and re-sends every head with a fresh backoff", () => {
    const before = createStatusUpdateManager({ initialRetryMs: 100 });
    const [a, b, c] = [update("t1", "TASK_STARTING"), update("t1", "TASK_RUNNING"), update("t2", "TASK_RUNNING")];
    before.enqueue(a, 0);
    before.enqueue(b, 0);
    before.enqueue(c, 0);
    before.acknowledge("fw-1", "t1", a.uuid, 10);
    before.timerFired("fw-1", "t1", 110);
    const saved = JSON.parse(JSON.stringify(before.pending()));

    const after = createStatusUpdateManager({ initialRetryMs: 100 });
    const effects = after.restore(saved, 5000);
    expect(effects).toEqual([
      { type: "send", update: b, latestState: "TASK_RUNNING" },
      { type: "arm-timer", frameworkId: "fw-1", taskId: "t1", atMs: 5100 },
      { type: "send", update: c, latestState: "TASK_RUNNING" },
      { type: "arm-timer", frameworkId: "fw-1", taskId: "t2", atMs: 5100 },
    ]);
    // The acknowledged uuid survives the restart, so a replay of it is recognised.
    expect(after.enqueue({ ...a }, 5001)).toEqual([]);
    expect(sends(after.acknowledge("fw-1", "t1", b.uuid, 5002))).toEqual([]);
  });

  it("emits checkpoints before the sends they cover when asked to", () => {
    const m = createStatusUpdateManager({ checkpoint: true });
    const a = update("t1", "TASK_FINISHED");
    const enqueued = m.enqueue(a, 0);
    expect(enqueued.map((e) => e.type)).toEqual(["checkpoint", "send", "arm-timer"]);
    expect(enqueued[0]).toEqual({ type: "checkpoint", frameworkId: "fw-1", taskId: "t1", stream: { taskId: "t1", frameworkId: "fw-1", pending: [a], acknowledged: [] } });
    expect(m.acknowledge("fw-1", "t1", a.uuid, 1)[0]).toEqual({ type: "checkpoint", frameworkId: "fw-1", taskId: "t1", stream: null });
  });

  it("holds sends while paused and flushes every head on resume", () => {
    const m = createStatusUpdateManager({ initialRetryMs: 100 });
    const a = update("t1", "TASK_RUNNING");
    m.enqueue(a, 0);
    expect(m.pause()).toEqual([{ type: "cancel-timer", frameworkId: "fw-1", taskId: "t1" }]);
    expect(m.paused).toBe(true);
    const b = update("t2", "TASK_RUNNING");
    expect(m.enqueue(b, 10)).toEqual([]);
    expect(m.timerFired("fw-1", "t1", 1000)).toEqual([]);
    const resumed = m.resume(2000);
    expect(sends(resumed)).toEqual([a.uuid, b.uuid]);
    expect(arms(resumed)).toEqual([2100, 2100]);
  });

  it("refuses to grow a stream beyond maxUpdatesPerStream", () => {
    const m = createStatusUpdateManager({ maxUpdatesPerStream: 3 });
    for (let i = 0; i < 3; i++) m.enqueue(update("t1", "TASK_RUNNING"), i);
    expect(() => m.enqueue(update("t1", "TASK_RUNNING"), 4)).toThrow(StatusUpdateError);
    expect(() => m.enqueue(update("t1", "TASK_RUNNING"), 4)).toThrow(/maxUpdatesPerStream/);
    try {
      m.enqueue(update("t1", "TASK_RUNNING"), 4);
    } catch (error) {
      expect(error).toMatchObject({ code: "CORRAL_ERR_STREAM_FULL", taskId: "t1" });
    }
  });

  it("always takes the terminal update of a full stream, so a task's end is never lost, and delivers it last", () => {
    // A framework away for hours while a failing health check reports every 10 s fills the stream.
    const m = createStatusUpdateManager({ maxUpdatesPerStream: 3 });
    const queued = [update("t1", "TASK_RUNNING"), update("t1", "TASK_RUNNING"), update("t1", "TASK_RUNNING")];
    for (const u of queued) m.enqueue(u, 0);
    expect(() => m.enqueue(update("t1", "TASK_RUNNING"), 1)).toThrow(expect.objectContaining({ code: "CORRAL_ERR_STREAM_FULL" }));
    const end = update("t1", "TASK_FAILED");
    expect(m.enqueue(end, 2)).toEqual([]); // queued behind the head in flight
    expect(m.pending()[0]!.pending.map((u) => u.uuid)).toEqual([...queued, end].map((u) => u.uuid));
    // Nothing more after it, as for any stream that holds its terminal update.
    expect(m.enqueue(update("t1", "TASK_RUNNING"), 3)).toEqual([]);
    for (const u of queued) m.acknowledge("fw-1", "t1", u.uuid, 4);
    expect(m.pending()[0]!.pending.map((u) => u.uuid)).toEqual([end.uuid]);
    expect(m.acknowledge("fw-1", "t1", end.uuid, 5)).toContainEqual({ type: "stream-closed", frameworkId: "fw-1", taskId: "t1", finalState: "TASK_FAILED" });

    // A checkpoint of such a stream is restored whole.
    const restored = createStatusUpdateManager({ maxUpdatesPerStream: 3 });
    const full = createStatusUpdateManager({ maxUpdatesPerStream: 3 });
    for (const u of queued) full.enqueue(u, 0);
    full.enqueue(end, 0);
    expect(sends(restored.restore(full.pending(), 10))).toEqual([queued[0]!.uuid]);
    expect(restored.pending()[0]!.pending.map((u) => u.uuid)).toEqual([...queued, end].map((u) => u.uuid));
  });

  it("refuses more than maxStreams open streams", () => {
    const m = createStatusUpdateManager({ maxStreams: 1 });
    m.enqueue(update("t1", "TASK_RUNNING"), 0);
    expect(() => m.enqueue(update("t2", "TASK_RUNNING"), 0)).toThrow(expect.objectContaining({ code: "CORRAL_ERR_TOO_MANY_STREAMS" }));
  });

  it("rejects malformed updates with clear errors", () => {
    const m = createStatusUpdateManager();
    expect(() => m.enqueue({ ...update("t1", "TASK_RUNNING"), uuid: "" }, 0)).toThrow(/uuid must be a non-empty string/);
    expect(() => m.enqueue({ ...update("t1", "TASK_RUNNING"), state: "RUNNING" as TaskState }, 0)).toThrow(/state must be one of/);
    expect(() => m.enqueue({ ...update("t1", "TASK_RUNNING"), frameworkId: "" }, 0)).toThrow(/frameworkId must be a non-empty string/);
  });

  it("validates its options", () => {
    expect(() => createStatusUpdateManager({ initialRetryMs: 0 })).toThrow(/initialRetryMs/);
    expect(() => createStatusUpdateManager({ initialRetryMs: 1000, maxRetryMs: 10 })).toThrow(/maxRetryMs/);
    expect(() => createStatusUpdateManager({ maxUpdatesPerStream: 1.5 })).toThrow(/maxUpdatesPerStream/);
  });

  it("does not let callers mutate its state through effects or snapshots", () => {
    const m = createStatusUpdateManager();
    const a = update("t1", "TASK_RUNNING");
    const sent = m.enqueue(a, 0)[0] as Extract<StatusUpdateEffect, { type: "send" }>;
    sent.update.state = "TASK_FAILED";
    m.pending()[0]!.pending[0]!.state = "TASK_FAILED";
    a.state = "TASK_FAILED";
    expect(m.pending()[0]!.pending[0]!.state).toBe("TASK_RUNNING");
  });
});

describe("status update manager with one task id in two frameworks", () => {
  // Task ids are unique only within a framework: two batch frameworks both name a task j1.0.0.
  const etl = (state: TaskState) => update("j1.0.0", state, undefined, "etl");
  const slow = (state: TaskState) => update("j1.0.0", state, undefined, "slowpoke");

  it("opens a stream per framework, each sent and timed on its own", () => {
    const m = createStatusUpdateManager({ initialRetryMs: 100 });
    const [a, b] = [etl("TASK_RUNNING"), slow("TASK_RUNNING")];
    expect(m.enqueue(a, 0)).toEqual([
      { type: "send", update: a, latestState: "TASK_RUNNING" },
      { type: "arm-timer", frameworkId: "etl", taskId: "j1.0.0", atMs: 100 },
    ]);
    expect(m.enqueue(b, 50)).toEqual([
      { type: "send", update: b, latestState: "TASK_RUNNING" },
      { type: "arm-timer", frameworkId: "slowpoke", taskId: "j1.0.0", atMs: 150 },
    ]);
    expect(m.pending().map((p) => [p.frameworkId, p.pending.map((u) => u.uuid)])).toEqual([
      ["etl", [a.uuid]],
      ["slowpoke", [b.uuid]],
    ]);
    // etl's timer re-sends etl's head only; slowpoke's is not due yet.
    expect(sends(m.timerFired("etl", "j1.0.0", 100))).toEqual([a.uuid]);
    expect(m.timerFired("slowpoke", "j1.0.0", 100)).toEqual([]);
  });

  it("retires an update only on an acknowledgement naming its own framework", () => {
    const m = createStatusUpdateManager();
    const [a, b] = [etl("TASK_RUNNING"), slow("TASK_RUNNING")];
    m.enqueue(a, 0);
    m.enqueue(b, 0);
    // etl's uuid acknowledged as if for slowpoke's task: slowpoke's head is another update.
    expect(m.acknowledge("slowpoke", "j1.0.0", a.uuid, 1)).toEqual([]);
    expect(m.pending().map((p) => p.pending.length)).toEqual([1, 1]);
    expect(m.acknowledge("etl", "j1.0.0", a.uuid, 2)).toEqual([{ type: "cancel-timer", frameworkId: "etl", taskId: "j1.0.0" }]);
    expect(m.pending().map((p) => [p.frameworkId, p.pending.map((u) => u.uuid)])).toEqual([
      ["etl", []],
      ["slowpoke", [b.uuid]],
    ]);
    expect(m.stats()).toMatchObject({ acknowledged: 1, ignoredAcks: 1 });
  });

  it("closes one framework's stream on its terminal acknowledgement and leaves the other's open", () => {
    const m = createStatusUpdateManager({ checkpoint: true });
    const [done, running] = [etl("TASK_FINISHED"), slow("TASK_RUNNING")];
    m.enqueue(done, 0);
    m.enqueue(running, 0);
    expect(m.acknowledge("etl", "j1.0.0", done.uuid, 1)).toEqual([
      { type: "checkpoint", frameworkId: "etl", taskId: "j1.0.0", stream: null },
      { type: "cancel-timer", frameworkId: "etl", taskId: "j1.0.0" },
      { type: "stream-closed", frameworkId: "etl", taskId: "j1.0.0", finalState: "TASK_FINISHED" },
    ]);
    expect(m.pending()).toEqual([{ taskId: "j1.0.0", frameworkId: "slowpoke", pending: [running], acknowledged: [] }]);
    // A terminal update of slowpoke's task is not "after a terminal update": etl's ended, not this one.
    const killed = slow("TASK_KILLED");
    m.enqueue(killed, 2);
    expect(m.pending()[0]!.pending.map((u) => u.uuid)).toEqual([running.uuid, killed.uuid]);
    expect(m.stats().updatesAfterTerminal).toBe(0);
  });

  it("restores both streams from checkpoints without mixing them", () => {
    const before = createStatusUpdateManager({ initialRetryMs: 100 });
    const [a, b, c] = [etl("TASK_STARTING"), etl("TASK_RUNNING"), slow("TASK_STARTING")];
    before.enqueue(a, 0);
    before.enqueue(b, 0);
    before.enqueue(c, 0);
    before.acknowledge("etl", "j1.0.0", a.uuid, 1);
    const after = createStatusUpdateManager({ initialRetryMs: 100 });
    expect(sends(after.restore(JSON.parse(JSON.stringify(before.pending())), 1000))).toEqual([b.uuid, c.uuid]);
    expect(sends(after.acknowledge("slowpoke", "j1.0.0", c.uuid, 1001))).toEqual([]);
    expect(after.pending().map((p) => [p.frameworkId, p.pending.map((u) => u.uuid)])).toEqual([
      ["etl", [b.uuid]],
      ["slowpoke", []],
    ]);
  });
});

describe("status update manager after a stream closed", () => {
  it("ignores a late replay of an update whose stream is closed, but opens a new stream for a new uuid", () => {
    const m = createStatusUpdateManager({ maxClosedUuids: 2 });
    const a = update("t1", "TASK_RUNNING");
    const b = update("t1", "TASK_FINISHED");
    m.enqueue(a, 0);
    m.acknowledge("fw-1", "t1", a.uuid, 1);
    m.enqueue(b, 2);
    m.acknowledge("fw-1", "t1", b.uuid, 3);
    expect(m.enqueue({ ...a }, 4)).toEqual([]);
    expect(m.enqueue({ ...b }, 4)).toEqual([]);
    expect(m.pending()).toEqual([]);
    const relaunched = update("t1", "TASK_STARTING");
    expect(sends(m.enqueue(relaunched, 5))).toEqual([relaunched.uuid]);
  });
});

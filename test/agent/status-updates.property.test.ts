import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createStatusUpdateManager,
  isTerminalState,
  type StatusUpdateEffect,
  type StatusUpdateManager,
  type StatusUpdateStreamSnapshot,
  type TaskState,
} from "../../agent/status-updates.ts";
import { taskKey, type TaskRef } from "../../sdk/task-key.ts";

/**
 * The tasks the ops pick from. `t0` exists in two frameworks, as when two batch frameworks both
 * name a task `j1.0.0`: their streams must not interfere.
 */
const TASKS: readonly TaskRef[] = [
  { frameworkId: "fw-a", taskId: "t0" },
  { frameworkId: "fw-a", taskId: "t1" },
  { frameworkId: "fw-b", taskId: "t0" },
];
/** For each entry of TASKS, the index of the same task id in the other framework, if any. */
const TWIN = TASKS.map((t) => TASKS.findIndex((o) => o.taskId === t.taskId && o.frameworkId !== t.frameworkId));
const INITIAL_RETRY_MS = 100;
const MAX_RETRY_MS = 800;

type Op =
  | { kind: "enqueue"; task: number; state: TaskState }
  | { kind: "enqueue-duplicate"; task: number; pick: number }
  | { kind: "ack-head"; task: number }
  | { kind: "ack-any"; task: number; pick: number }
  /** The in-flight uuid of a task, acknowledged as if for the same task id of another framework. */
  | { kind: "ack-twin"; task: number }
  | { kind: "timer"; task: number; early: boolean }
  | { kind: "advance"; ms: number }
  | { kind: "restart" }
  | { kind: "pause" }
  | { kind: "resume" };

const task = fc.integer({ min: 0, max: TASKS.length - 1 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant("enqueue" as const), task, state: fc.constantFrom<TaskState>("TASK_STARTING", "TASK_RUNNING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED", "TASK_UNREACHABLE") }), weight: 6 },
  { arbitrary: fc.record({ kind: fc.constant("enqueue-duplicate" as const), task, pick: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant("ack-head" as const), task }), weight: 5 },
  { arbitrary: fc.record({ kind: fc.constant("ack-any" as const), task, pick: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant("ack-twin" as const), task }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant("timer" as const), task, early: fc.boolean() }), weight: 4 },
  { arbitrary: fc.record({ kind: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 2000 }) }), weight: 2 },
  { arbitrary: fc.constant({ kind: "restart" as const }), weight: 1 },
  { arbitrary: fc.constant({ kind: "pause" as const }), weight: 1 },
  { arbitrary: fc.constant({ kind: "resume" as const }), weight: 1 },
);

/** Drives a manager the way a shell would and checks every effect against the delivery rules. */
class Harness {
  manager: StatusUpdateManager = this.fresh();
  now = 0;
  private uuidCounter = 0;
  // Every per-task map is keyed by taskKey(frameworkId, taskId).
  /** Per task: uuids the manager must deliver, in enqueue order (a reference model of acceptance). */
  readonly accepted = new Map<string, string[]>();
  /** Per task: distinct uuids in the order they were first sent (or acknowledged unsent). */
  readonly firstSent = new Map<string, string[]>();
  /** Per task: the uuid most recently sent (the one in flight). */
  readonly inFlight = new Map<string, string>();
  readonly acknowledged = new Set<string>();
  readonly armed = new Map<string, number>();
  /** Model: does the open stream of this task already hold a terminal update? */
  private readonly terminalQueued = new Set<string>();
  private readonly states = new Map<string, TaskState>();
  private readonly everEnqueued = new Map<string, string[]>();
  /** Per task: uuids enqueued since its stream last closed (a replay of an older one is a new update). */
  private readonly currentStream = new Map<string, string[]>();
  private lastSendAt = new Map<string, number>();

  private fresh(): StatusUpdateManager {
    return createStatusUpdateManager({ initialRetryMs: INITIAL_RETRY_MS, maxRetryMs: MAX_RETRY_MS, maxUpdatesPerStream: 10_000 });
  }

  apply(o: Op): void {
    switch (o.kind) {
      case "enqueue": {
        const task = TASKS[o.task]!;
        const key = keyOf(task);
        const uuid = `u${++this.uuidCounter}`;
        this.states.set(uuid, o.state);
        push(this.everEnqueued, key, uuid);
        push(this.currentStream, key, uuid);
        if (!this.terminalQueued.has(key)) {
          push(this.accepted, key, uuid);
          if (isTerminalState(o.state)) this.terminalQueued.add(key);
        }
        this.run(this.manager.enqueue(this.update(task, uuid, o.state), this.now));
        return;
      }
      case "enqueue-duplicate": {
        const task = TASKS[o.task]!;
        const earlier = this.currentStream.get(keyOf(task)) ?? [];
        if (earlier.length === 0) return;
        const uuid = earlier[o.pick % earlier.length]!;
        // A replay, whether queued, acknowledged or refused after a terminal update, changes nothing.
        expect(this.manager.enqueue(this.update(task, uuid, this.states.get(uuid)!), this.now)).toEqual([]);
        return;
      }
      case "ack-head": {
        const task = TASKS[o.task]!;
        const uuid = this.inFlight.get(keyOf(task));
        if (uuid !== undefined) this.ack(task, uuid);
        return;
      }
      case "ack-any": {
        const task = TASKS[o.task]!;
        const all = this.everEnqueued.get(keyOf(task)) ?? [];
        this.ack(task, all.length === 0 ? "unknown" : all[o.pick % all.length]!);
        return;
      }
      case "ack-twin": {
        const twin = TWIN[o.task]!;
        const uuid = this.inFlight.get(keyOf(TASKS[o.task]!));
        // Names the twin's stream, whose head is another uuid: ignored (checked in ack), and the
        // task's own head stays queued (checked by checkQueues).
        if (twin >= 0 && uuid !== undefined) this.ack(TASKS[twin]!, uuid);
        return;
      }
      case "timer": {
        const task = TASKS[o.task]!;
        const at = this.armed.get(keyOf(task));
        if (!o.early && at !== undefined) this.now = Math.max(this.now, at);
        this.run(this.manager.timerFired(task.frameworkId, task.taskId, this.now), keyOf(task));
        return;
      }
      case "advance":
        this.now += o.ms;
        return;
      case "restart": {
        // Checkpoint, lose every timer, come back: the way an agent restart looks to the core.
        const saved: StatusUpdateStreamSnapshot[] = JSON.parse(JSON.stringify(this.manager.pending()));
        const wasPaused = this.manager.paused;
        this.manager = this.fresh();
        this.armed.clear();
        this.inFlight.clear();
        this.run(this.manager.restore(saved, this.now));
        if (wasPaused) this.run(this.manager.pause());
        return;
      }
      case "pause":
        this.run(this.manager.pause());
        return;
      case "resume":
        this.run(this.manager.resume(this.now));
        return;
    }
  }

  private update(task: TaskRef, uuid: string, state: TaskState) {
    return { ...task, agentId: "a1", state, uuid, timestampMs: this.now };
  }

  private ack(task: TaskRef, uuid: string): void {
    const key = keyOf(task);
    // The head may not have been sent yet (paused): an ack for it is still valid, e.g. for a
    // send made before the agent restarted.
    const head = this.manager.pending().find((s) => keyOf(s) === key)?.pending[0]?.uuid;
    const effects = this.manager.acknowledge(task.frameworkId, task.taskId, uuid, this.now);
    if (head !== uuid) {
      expect(effects).toEqual([]);
      return;
    }
    expect(this.acknowledged.has(uuid)).toBe(false);
    this.acknowledged.add(uuid);
    this.inFlight.delete(key);
    const delivered = this.firstSent.get(key) ?? [];
    if (delivered[delivered.length - 1] !== uuid) {
      expect(uuid).toBe(this.accepted.get(key)![delivered.length]);
      push(this.firstSent, key, uuid);
    }
    if (isTerminalState(this.states.get(uuid)!)) this.terminalQueued.delete(key);
    this.run(effects);
  }

  /**
   * The manager's queues match the model: per task, exactly the accepted updates not yet
   * acknowledged, in order; a task whose terminal update was acknowledged has no stream.
   */
  checkQueues(): void {
    const streams = new Map(this.manager.pending().map((s) => [keyOf(s), s.pending.map((u) => u.uuid)]));
    for (const key of TASKS.map(keyOf)) {
      const expected = (this.accepted.get(key) ?? []).filter((uuid) => !this.acknowledged.has(uuid));
      expect(streams.get(key) ?? []).toEqual(expected);
      const last = this.firstSent.get(key)?.at(-1);
      const closed = last !== undefined && this.acknowledged.has(last) && isTerminalState(this.states.get(last)!);
      if (closed && expected.length === 0) expect(streams.has(key)).toBe(false);
    }
  }

  /** Applies effects as a shell would, asserting the rules on each. */
  run(effects: StatusUpdateEffect[], timerTask?: string): void {
    for (const [i, effect] of effects.entries()) {
      switch (effect.type) {
        case "send": {
          const { frameworkId, taskId, uuid } = effect.update;
          const key = taskKey(frameworkId, taskId);
          expect(this.manager.paused).toBe(false);
          // Nothing acknowledged is ever sent again.
          expect(this.acknowledged.has(uuid)).toBe(false);
          const sent = this.firstSent.get(key) ?? [];
          if (sent[sent.length - 1] !== uuid) {
            // A new head: exactly the next accepted update of this task (in order, none skipped).
            expect(uuid).toBe(this.accepted.get(key)![sent.length]);
            push(this.firstSent, key, uuid);
          } else if (timerTask === key) {
            // A re-send from the timer: backoff within bounds.
            const gap = this.now - this.lastSendAt.get(key)!;
            expect(gap).toBeGreaterThanOrEqual(INITIAL_RETRY_MS);
          }
          this.inFlight.set(key, uuid);
          this.lastSendAt.set(key, this.now);
          // Every send comes with its retry timer.
          const next = effects[i + 1];
          expect(next).toMatchObject({ type: "arm-timer", frameworkId, taskId });
          if (next?.type === "arm-timer") {
            expect(next.atMs - this.now).toBeGreaterThanOrEqual(INITIAL_RETRY_MS);
            expect(next.atMs - this.now).toBeLessThanOrEqual(MAX_RETRY_MS);
          }
          break;
        }
        case "arm-timer":
          this.armed.set(keyOf(effect), effect.atMs);
          break;
        case "cancel-timer":
          this.armed.delete(keyOf(effect));
          break;
        case "stream-closed":
          this.armed.delete(keyOf(effect));
          this.currentStream.delete(keyOf(effect));
          break;
        case "checkpoint":
          break;
      }
    }
  }

  /** Resumes and acknowledges every head until nothing is left in flight. */
  drain(): void {
    this.run(this.manager.resume(this.now));
    for (let guard = 0; guard < 100_000 && this.inFlight.size > 0; guard++) {
      const [key, uuid] = this.inFlight.entries().next().value!;
      this.ack(TASKS.find((t) => keyOf(t) === key)!, uuid);
    }
  }
}

function keyOf(task: TaskRef): string {
  return taskKey(task.frameworkId, task.taskId);
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

describe("status update manager properties", () => {
  it("delivers each stream in enqueue order, never re-sends what was acknowledged, and loses nothing", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const h = new Harness();
        for (const o of ops) {
          h.apply(o);
          h.checkQueues();
        }
        h.drain();
        h.checkQueues();
        // Everything accepted was eventually sent, in order, and acknowledged.
        for (const key of TASKS.map(keyOf)) {
          expect(h.firstSent.get(key) ?? []).toEqual(h.accepted.get(key) ?? []);
        }
        for (const uuids of h.accepted.values()) for (const uuid of uuids) expect(h.acknowledged.has(uuid)).toBe(true);
        // No stream still holds an update, and closed streams are gone.
        for (const stream of h.manager.pending()) expect(stream.pending).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it("is deterministic: the same inputs give the same effects", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 100 }), (ops) => {
        const record = () => {
          const h = new Harness();
          const log: StatusUpdateEffect[][] = [];
          const original = h.run.bind(h);
          h.run = (effects, timerTask) => {
            log.push(effects);
            original(effects, timerTask);
          };
          for (const o of ops) h.apply(o);
          return log;
        };
        expect(record()).toEqual(record());
      }),
      { numRuns: 100 },
    );
  });
});

/**
 * The agent's task status-update manager, as a pure core.
 *
 * Semantics follow Mesos's task status update manager: every task has one stream; updates are
 * queued in the order the agent produced them; only the head of a stream is in flight and it is
 * re-sent, with doubling backoff, until the framework acknowledges it by uuid; then the next one
 * goes out. Once a terminal update is acknowledged the stream is closed and forgotten. This gives
 * frameworks at-least-once, in-order delivery per task across lost messages and master failovers.
 *
 * A task is named by its framework and its id together (`../sdk/task-key.ts`): task ids are unique
 * only within a framework, so two frameworks' tasks of the same id have two independent streams,
 * and every input and effect that concerns one stream carries both ids.
 *
 * The core does no I/O and reads no clock: every call takes `now` and returns {@link StatusUpdateEffect}s
 * for the shell to carry out (publish on the bus, arm or cancel the one retry timer of a task,
 * persist a stream).
 *
 * @module
 */

import { taskKey } from "../sdk/task-key.ts";
import { TASK_STATES, TERMINAL_TASK_STATES, type TaskState } from "../sdk/wire/types.ts";

/** Mesos task states, by their protobuf names (the wire contract's list). */
export { TASK_STATES, type TaskState };

const TERMINAL_STATES = TERMINAL_TASK_STATES;

/**
 * True for states a task never leaves (as Mesos's `isTerminalState`). UNREACHABLE and UNKNOWN are
 * not terminal: the task may come back.
 */
export function isTerminalState(state: TaskState): boolean {
  return TERMINAL_STATES.has(state);
}

/** Type guard for untrusted input. */
export function isTaskState(value: unknown): value is TaskState {
  return typeof value === "string" && (TASK_STATES as readonly string[]).includes(value);
}

/** Who produced an update, as in Mesos's `TaskStatus.Source`. */
export type StatusUpdateSource = "SOURCE_MASTER" | "SOURCE_AGENT" | "SOURCE_EXECUTOR";

/** One task status update as the agent sends it towards the framework. */
export interface StatusUpdate {
  taskId: string;
  frameworkId: string;
  agentId: string;
  state: TaskState;
  /** Identifies this update; the framework acknowledges by it. Unique per update. */
  uuid: string;
  message?: string;
  /** A Mesos `TaskStatus.Reason` name, e.g. `"REASON_COMMAND_EXECUTOR_FAILED"`. */
  reason?: string;
  exitCode?: number;
  /** When the agent produced the update. */
  timestampMs: number;
  source?: StatusUpdateSource;
  /** A health check's verdict; only on TASK_RUNNING updates a check produced. */
  healthy?: boolean;
}

/** What the shell must do after a call into the manager, in order. */
export type StatusUpdateEffect =
  /**
   * Publish `update` towards the master. `latestState` is the state of the newest update queued
   * for the task (Mesos's `latest_state`), so the master learns a task ended even while an older
   * update is still awaiting acknowledgement.
   */
  | { type: "send"; update: StatusUpdate; latestState: TaskState }
  /** Call `timerFired(frameworkId, taskId, t)` at `atMs`. Replaces any timer armed earlier for the same task. */
  | { type: "arm-timer"; frameworkId: string; taskId: string; atMs: number }
  /** The task's retry timer is no longer needed. */
  | { type: "cancel-timer"; frameworkId: string; taskId: string }
  /**
   * Persist the task's stream (only with `checkpoint: true`); `stream: null` means delete it.
   * Comes before the `send` it covers, so nothing is published that a restart could forget.
   */
  | { type: "checkpoint"; frameworkId: string; taskId: string; stream: StatusUpdateStreamSnapshot | null }
  /** A terminal update was acknowledged: the agent may forget the task and collect its sandbox. */
  | { type: "stream-closed"; taskId: string; frameworkId: string; finalState: TaskState };

/** A stream as persisted or inspected: what is still unacknowledged, head first. */
export interface StatusUpdateStreamSnapshot {
  taskId: string;
  frameworkId: string;
  /** Unacknowledged updates, in order; the first is the one in flight. */
  pending: StatusUpdate[];
  /** Recently acknowledged uuids, oldest first, so duplicates are still recognised after a restart. */
  acknowledged: string[];
}

/** Options of {@link createStatusUpdateManager}. */
export interface StatusUpdateManagerOptions {
  /** Delay before the first re-send of an unacknowledged update. @default 10_000 */
  initialRetryMs?: number;
  /** The backoff doubles after every re-send up to this. @default 600_000 */
  maxRetryMs?: number;
  /**
   * How many unacknowledged updates one task may have queued; more is refused, except the task's
   * terminal update, which is always queued (so a stream holds at most one more).
   * @default 1000
   */
  maxUpdatesPerStream?: number;
  /** How many acknowledged uuids each stream remembers to recognise late duplicates. @default 100 */
  maxAcknowledgedPerStream?: number;
  /** How many tasks (of all frameworks) may have open streams at once. @default 100_000 */
  maxStreams?: number;
  /**
   * How many acknowledged uuids of closed streams are remembered, so a late replay of an update
   * for a finished task does not open a new stream and reach the framework again. Not checkpointed.
   * @default 10_000
   */
  maxClosedUuids?: number;
  /** Emit `checkpoint` effects so the shell can persist streams. @default false */
  checkpoint?: boolean;
}

/** Counters of inputs the manager ignored, for metrics and tests. */
export interface StatusUpdateManagerStats {
  /** Updates enqueued (accepted). */
  enqueued: number;
  /** `send` effects produced (first sends and re-sends). */
  sent: number;
  /** Re-sends after a retry timer. */
  retried: number;
  /** Acknowledgements that popped a head. */
  acknowledged: number;
  /** Enqueues of a uuid already queued or acknowledged. */
  duplicateUpdates: number;
  /** Enqueues after the stream already holds a terminal update. */
  updatesAfterTerminal: number;
  /** Acks whose uuid is not the head of the stream (stale, duplicate or unknown uuid). */
  ignoredAcks: number;
  /** Acks for a task with no stream. */
  unknownTaskAcks: number;
  /** Timer callbacks that came early, for a closed stream, or while paused. */
  ignoredTimers: number;
}

/** Stable error codes thrown by the manager (only for caller bugs, never for bus input). */
export type StatusUpdateErrorCode = "CORRAL_ERR_INVALID_STATUS_UPDATE" | "CORRAL_ERR_STREAM_FULL" | "CORRAL_ERR_TOO_MANY_STREAMS";

/** Thrown on an invalid update or when a bound is exceeded. */
export class StatusUpdateError extends Error {
  readonly code: StatusUpdateErrorCode;
  readonly frameworkId: string | undefined;
  readonly taskId: string | undefined;

  constructor(code: StatusUpdateErrorCode, message: string, task?: { frameworkId?: string; taskId?: string }) {
    super(message);
    this.name = "StatusUpdateError";
    this.code = code;
    this.frameworkId = task?.frameworkId;
    this.taskId = task?.taskId;
  }
}

/** The manager; see the module documentation for the semantics. */
export interface StatusUpdateManager {
  /**
   * Queues an update. If it becomes the head of its stream it is sent at once (unless paused).
   * A uuid already queued or acknowledged is ignored, as is anything after a terminal update.
   * @throws StatusUpdateError `CORRAL_ERR_STREAM_FULL` beyond `maxUpdatesPerStream` (never for a
   *   terminal update),
   *   `CORRAL_ERR_TOO_MANY_STREAMS` beyond `maxStreams`, `CORRAL_ERR_INVALID_STATUS_UPDATE` for a
   *   malformed update.
   */
  enqueue(update: StatusUpdate, now: number): StatusUpdateEffect[];
  /**
   * Handles the framework's acknowledgement of its task `taskId`. Only the head's uuid counts;
   * others are ignored, and so is an acknowledgement naming another framework's task.
   */
  acknowledge(frameworkId: string, taskId: string, uuid: string, now: number): StatusUpdateEffect[];
  /** The task's retry timer fired: re-sends the head if it is due. Early or stale calls are ignored. */
  timerFired(frameworkId: string, taskId: string, now: number): StatusUpdateEffect[];
  /**
   * Stops sending (the agent lost its master). Queuing and acknowledgements continue; retry
   * timers do nothing until {@link resume}.
   */
  pause(): StatusUpdateEffect[];
  /** Re-sends every head at once with a fresh backoff (the agent (re)registered). */
  resume(now: number): StatusUpdateEffect[];
  /** Copies of every open stream, for checkpointing and inspection. */
  pending(): StatusUpdateStreamSnapshot[];
  /**
   * Loads streams after an agent restart, replacing any open stream of the same task (same
   * framework, same id), and re-sends
   * every head (unless paused). Streams with nothing pending stay open: they remember acknowledged
   * uuids until their task's terminal update is acknowledged.
   */
  restore(streams: readonly StatusUpdateStreamSnapshot[], now: number): StatusUpdateEffect[];
  /** Whether `pause` is in effect. */
  readonly paused: boolean;
  /** Counters; a fresh copy each call. */
  stats(): StatusUpdateManagerStats;
}

interface Stream {
  taskId: string;
  frameworkId: string;
  queue: StatusUpdate[];
  /** uuids in `queue`, for O(1) duplicate detection. */
  queued: Set<string>;
  /** Recently acknowledged uuids; Set iteration order is insertion order, oldest first. */
  acknowledged: Set<string>;
  /** Current backoff; doubles after each re-send of the same head. */
  retryMs: number;
  /** When the head is next due for a re-send; undefined when nothing is in flight. */
  nextRetryAtMs: number | undefined;
}

/** Creates a status-update manager. Deterministic: equal inputs give equal effects. */
export function createStatusUpdateManager(options: StatusUpdateManagerOptions = {}): StatusUpdateManager {
  const initialRetryMs = positive(options.initialRetryMs ?? 10_000, "initialRetryMs");
  const maxRetryMs = positive(options.maxRetryMs ?? 600_000, "maxRetryMs");
  if (maxRetryMs < initialRetryMs) throw new RangeError(`maxRetryMs (${maxRetryMs}) must be >= initialRetryMs (${initialRetryMs})`);
  const maxUpdatesPerStream = positiveInteger(options.maxUpdatesPerStream ?? 1000, "maxUpdatesPerStream");
  const maxAcknowledgedPerStream = positiveInteger(options.maxAcknowledgedPerStream ?? 100, "maxAcknowledgedPerStream");
  const maxStreams = positiveInteger(options.maxStreams ?? 100_000, "maxStreams");
  const maxClosedUuids = positiveInteger(options.maxClosedUuids ?? 10_000, "maxClosedUuids");
  const checkpoint = options.checkpoint ?? false;

  /** Open streams by {@link taskKey}. */
  const streams = new Map<string, Stream>();
  /** Acknowledged uuids of closed streams, oldest first (Set iteration is insertion order). */
  const closedUuids = new Set<string>();
  let paused = false;
  const stats: StatusUpdateManagerStats = {
    enqueued: 0,
    sent: 0,
    retried: 0,
    acknowledged: 0,
    duplicateUpdates: 0,
    updatesAfterTerminal: 0,
    ignoredAcks: 0,
    unknownTaskAcks: 0,
    ignoredTimers: 0,
  };

  function checkpointEffect(stream: Stream, closed = false): StatusUpdateEffect[] {
    if (!checkpoint) return [];
    return [{ type: "checkpoint", frameworkId: stream.frameworkId, taskId: stream.taskId, stream: closed ? null : snapshot(stream) }];
  }

  /** Sends the head now and arms its retry at the current backoff. */
  function sendHead(stream: Stream, now: number): StatusUpdateEffect[] {
    const head = stream.queue[0];
    if (head === undefined || paused) {
      stream.nextRetryAtMs = undefined;
      return [];
    }
    const latest = stream.queue[stream.queue.length - 1]!;
    stream.nextRetryAtMs = now + stream.retryMs;
    stats.sent += 1;
    return [
      { type: "send", update: structuredClone(head), latestState: latest.state },
      { type: "arm-timer", frameworkId: stream.frameworkId, taskId: stream.taskId, atMs: stream.nextRetryAtMs },
    ];
  }

  function openStream(update: StatusUpdate): Stream {
    if (streams.size >= maxStreams) {
      throw new StatusUpdateError("CORRAL_ERR_TOO_MANY_STREAMS", `cannot track task ${update.taskId} of framework ${update.frameworkId}: ${streams.size} streams open (maxStreams)`, update);
    }
    const stream = newStream(update.taskId, update.frameworkId, initialRetryMs);
    streams.set(taskKey(update.frameworkId, update.taskId), stream);
    return stream;
  }

  function enqueue(update: StatusUpdate, now: number): StatusUpdateEffect[] {
    validateUpdate(update);
    const existing = streams.get(taskKey(update.frameworkId, update.taskId));
    if (!existing && closedUuids.has(update.uuid)) {
      stats.duplicateUpdates += 1;
      return [];
    }
    if (existing) {
      if (existing.queued.has(update.uuid) || existing.acknowledged.has(update.uuid)) {
        stats.duplicateUpdates += 1;
        return [];
      }
      if (existing.queue.some((queued) => isTerminalState(queued.state))) {
        stats.updatesAfterTerminal += 1;
        return [];
      }
      // The terminal update is taken even by a full stream: it is the one the framework (and the
      // master, to free the task's resources) cannot do without, and nothing can follow it, so the
      // stream holds at most one more than the bound.
      if (existing.queue.length >= maxUpdatesPerStream && !isTerminalState(update.state)) {
        throw new StatusUpdateError(
          "CORRAL_ERR_STREAM_FULL",
          `task ${update.taskId} of framework ${update.frameworkId} already has ${existing.queue.length} unacknowledged status updates (maxUpdatesPerStream); is the framework acknowledging?`,
          update,
        );
      }
    }
    const stream = existing ?? openStream(update);
    stream.queue.push(structuredClone(update));
    stream.queued.add(update.uuid);
    stats.enqueued += 1;
    const effects = checkpointEffect(stream);
    if (stream.queue.length === 1) effects.push(...sendHead(stream, now));
    return effects;
  }

  function acknowledge(frameworkId: string, taskId: string, uuid: string, now: number): StatusUpdateEffect[] {
    const key = taskKey(frameworkId, taskId);
    const stream = streams.get(key);
    if (!stream) {
      stats.unknownTaskAcks += 1;
      return [];
    }
    const head = stream.queue[0];
    if (head === undefined || head.uuid !== uuid) {
      stats.ignoredAcks += 1;
      return [];
    }
    stats.acknowledged += 1;
    stream.queue.shift();
    stream.queued.delete(uuid);
    rememberAck(stream, uuid, maxAcknowledgedPerStream);
    stream.retryMs = initialRetryMs;
    if (isTerminalState(head.state)) {
      // Anything queued after a terminal update was refused, so the stream is empty now.
      streams.delete(key);
      for (const acked of stream.acknowledged) remember(closedUuids, acked, maxClosedUuids);
      return [
        ...checkpointEffect(stream, true),
        { type: "cancel-timer", frameworkId, taskId },
        { type: "stream-closed", frameworkId, taskId, finalState: head.state },
      ];
    }
    const effects = checkpointEffect(stream);
    const next = sendHead(stream, now);
    return next.length > 0 ? [...effects, ...next] : [...effects, { type: "cancel-timer", frameworkId, taskId }];
  }

  function timerFired(frameworkId: string, taskId: string, now: number): StatusUpdateEffect[] {
    const stream = streams.get(taskKey(frameworkId, taskId));
    if (!stream || paused || stream.nextRetryAtMs === undefined || now < stream.nextRetryAtMs) {
      stats.ignoredTimers += 1;
      return [];
    }
    stream.retryMs = Math.min(stream.retryMs * 2, maxRetryMs);
    stats.retried += 1;
    return sendHead(stream, now);
  }

  function pause(): StatusUpdateEffect[] {
    paused = true;
    const effects: StatusUpdateEffect[] = [];
    for (const stream of streams.values()) {
      if (stream.nextRetryAtMs === undefined) continue;
      stream.nextRetryAtMs = undefined;
      effects.push({ type: "cancel-timer", frameworkId: stream.frameworkId, taskId: stream.taskId });
    }
    return effects;
  }

  function resume(now: number): StatusUpdateEffect[] {
    paused = false;
    const effects: StatusUpdateEffect[] = [];
    for (const stream of streams.values()) {
      stream.retryMs = initialRetryMs;
      effects.push(...sendHead(stream, now));
    }
    return effects;
  }

  function restore(snapshots: readonly StatusUpdateStreamSnapshot[], now: number): StatusUpdateEffect[] {
    const effects: StatusUpdateEffect[] = [];
    for (const saved of snapshots) {
      const stream = fromSnapshot(saved, initialRetryMs, maxUpdatesPerStream, maxAcknowledgedPerStream);
      const key = taskKey(stream.frameworkId, stream.taskId);
      if (!streams.has(key) && streams.size >= maxStreams) {
        throw new StatusUpdateError("CORRAL_ERR_TOO_MANY_STREAMS", `cannot restore task ${stream.taskId} of framework ${stream.frameworkId}: ${streams.size} streams open (maxStreams)`, stream);
      }
      streams.set(key, stream);
      effects.push(...sendHead(stream, now));
    }
    return effects;
  }

  return {
    enqueue,
    acknowledge,
    timerFired,
    pause,
    resume,
    restore,
    pending: () => [...streams.values()].map(snapshot),
    get paused() {
      return paused;
    },
    stats: () => ({ ...stats }),
  };
}

function newStream(taskId: string, frameworkId: string, initialRetryMs: number): Stream {
  return {
    taskId,
    frameworkId,
    queue: [],
    queued: new Set(),
    acknowledged: new Set(),
    retryMs: initialRetryMs,
    nextRetryAtMs: undefined,
  };
}

function rememberAck(stream: Stream, uuid: string, max: number): void {
  remember(stream.acknowledged, uuid, max);
}

/** Adds to an insertion-ordered set, evicting the oldest entries beyond `max`. */
function remember(set: Set<string>, value: string, max: number): void {
  set.delete(value);
  set.add(value);
  for (const oldest of set) {
    if (set.size <= max) break;
    set.delete(oldest);
  }
}

function snapshot(stream: Stream): StatusUpdateStreamSnapshot {
  return {
    taskId: stream.taskId,
    frameworkId: stream.frameworkId,
    pending: structuredClone(stream.queue),
    acknowledged: [...stream.acknowledged],
  };
}

/** Rebuilds a stream from a checkpoint, re-applying the rules a live stream obeys. */
function fromSnapshot(saved: StatusUpdateStreamSnapshot, initialRetryMs: number, maxUpdates: number, maxAcks: number): Stream {
  const stream = newStream(saved.taskId, saved.frameworkId, initialRetryMs);
  for (const uuid of saved.acknowledged ?? []) rememberAck(stream, uuid, maxAcks);
  for (const update of saved.pending) {
    validateUpdate(update);
    if (update.taskId !== saved.taskId || update.frameworkId !== saved.frameworkId) {
      throw new StatusUpdateError(
        "CORRAL_ERR_INVALID_STATUS_UPDATE",
        `checkpointed stream of task ${saved.taskId} of framework ${saved.frameworkId} holds update ${update.uuid} for task ${update.taskId} of framework ${update.frameworkId}`,
        saved,
      );
    }
    if (stream.queued.has(update.uuid) || stream.acknowledged.has(update.uuid)) continue;
    if (stream.queue.length >= maxUpdates && !isTerminalState(update.state)) {
      throw new StatusUpdateError("CORRAL_ERR_STREAM_FULL", `checkpointed stream of task ${saved.taskId} of framework ${saved.frameworkId} holds more than ${maxUpdates} updates (maxUpdatesPerStream)`, saved);
    }
    stream.queue.push(structuredClone(update));
    stream.queued.add(update.uuid);
    if (isTerminalState(update.state)) break;
  }
  return stream;
}

function validateUpdate(update: StatusUpdate): void {
  const problems: string[] = [];
  if (typeof update?.taskId !== "string" || update.taskId === "") problems.push("taskId must be a non-empty string");
  if (typeof update?.frameworkId !== "string" || update.frameworkId === "") problems.push("frameworkId must be a non-empty string");
  if (typeof update?.agentId !== "string" || update.agentId === "") problems.push("agentId must be a non-empty string");
  if (typeof update?.uuid !== "string" || update.uuid === "") problems.push("uuid must be a non-empty string");
  if (!isTaskState(update?.state)) problems.push(`state must be one of ${TASK_STATES.join(", ")}`);
  if (!Number.isFinite(update?.timestampMs)) problems.push("timestampMs must be a finite number");
  if (problems.length > 0) {
    throw new StatusUpdateError("CORRAL_ERR_INVALID_STATUS_UPDATE", `invalid status update: ${problems.join("; ")}`, update);
  }
}

function positive(value: number, name: string): number {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a finite number > 0, got ${value}`);
  return value;
}

function positiveInteger(value: number, name: string): number {
  if (!(Number.isInteger(value) && value > 0)) throw new RangeError(`${name} must be an integer > 0, got ${value}`);
  return value;
}

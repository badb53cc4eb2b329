/**
 * The framework author's side of Corral: a {@link SchedulerDriver} speaks the scheduler protocol of
 * `docs/protocol.md` over a {@link Transport} and turns it into typed calls and callbacks, the way
 * a Mesos `SchedulerDriver` does for a Mesos framework.
 *
 * ```ts
 * const driver = createSchedulerDriver({
 *   transport: await connectNats({ servers: "nats://127.0.0.1:4222", name: "my-framework" }),
 *   framework: { name: "my-framework" },
 *   callbacks: {
 *     offers: async (offers) => {
 *       for (const offer of offers) {
 *         await driver.launch(offer, [{ taskId: "hello", resources: "cpus:0.1;mem:32", command: "echo hi" }]);
 *       }
 *     },
 *     update: (status) => console.log(status.taskId, status.state),
 *   },
 * });
 * await driver.start();
 * ```
 *
 * What the driver does for you: subscribing (and listening before the master may publish),
 * heartbeat calls, watching the master's heartbeats and re-subscribing with the same framework id
 * when they stop, ignoring a deposed master (lower epoch), re-subscribing at once when a new one
 * leads (a higher epoch), acknowledging status updates, stopping
 * when another instance of the framework takes over, and dropping (and counting) malformed
 * messages. Callbacks run one at a time, in arrival order; a callback that returns a promise is
 * awaited before the next one runs.
 *
 * @module
 */

import { randomUUID } from "node:crypto";
import { hostname as osHostname } from "node:os";
import { SilenceWatch, systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "./clock.ts";
import { Resources, ResourceError } from "./resources.ts";
import { SeededRng, type Rng } from "./rng.ts";
import { roleNameError } from "./roles.ts";
import { pathIdProblem } from "./task-key.ts";
import { TransportError, silentLogger, type Logger, type Subscription, type Transport } from "./transport.ts";
import { DropCounter, WireError, encodeEnvelope, handleSafely, safeDecode } from "./wire/codec.ts";
import { resourcesFromWire, resourcesToWire } from "./wire/resources.ts";
import { clusterSubjects, isValidToken, tokenProblem, type ClusterSubjects } from "./wire/subjects.ts";
import type {
  CallResponse,
  CommandInfo,
  EnvelopeOf,
  Filters,
  FrameworkInfo,
  HealthCheck,
  Offer,
  PayloadKind,
  SchedulerCallBody,
  SchedulerEvent,
  TaskInfo,
  TaskStatus,
} from "./wire/types.ts";
import { componentField } from "./log.ts";

export type { CallResponse, Filters, TaskState, TaskStatus } from "./wire/types.ts";

// ------------------------------------------------------------------------------------------------
// Defaults
// ------------------------------------------------------------------------------------------------

/** Default cluster name (the `<cluster>` token of every subject). */
export const DEFAULT_CLUSTER = "corral";
/** Role a framework subscribes with when it names none. (`*` means "unreserved", not a role.) */
export const DEFAULT_FRAMEWORK_ROLE = "default";
/** Heartbeat interval used when the master announces none (0), as Mesos's default. */
export const FALLBACK_HEARTBEAT_INTERVAL_SECONDS = 15;
/** Default of {@link SchedulerDriverOptions.requestTimeoutMs}. */
export const DEFAULT_SCHEDULER_REQUEST_TIMEOUT_MS = 5_000;
/** Default of {@link SchedulerDriverOptions.maxMissedMasterHeartbeats}. */
export const DEFAULT_MAX_MISSED_MASTER_HEARTBEATS = 5;
/** Default of {@link SchedulerDriverOptions.resubscribeBackoffMs}. */
export const DEFAULT_RESUBSCRIBE_BACKOFF_MS = 1_000;
/** Default of {@link SchedulerDriverOptions.maxResubscribeBackoffMs}. */
export const DEFAULT_MAX_RESUBSCRIBE_BACKOFF_MS = 30_000;
/** Default of {@link SchedulerDriverOptions.maxTrackedOffers}. */
export const DEFAULT_MAX_TRACKED_OFFERS = 10_000;
/** Default of {@link SchedulerDriverOptions.maxPendingCallbacks}. */
export const DEFAULT_MAX_PENDING_CALLBACKS = 10_000;

/** Prefix of the `error` event a master publishes when another instance subscribes with our id. */
export const FAILED_OVER_ERROR = "CORRAL_ERR_FRAMEWORK_FAILED_OVER";

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/**
 * Codes of {@link SchedulerError}. The first four come from the master (`CallResponse.error_code`,
 * see docs/protocol.md); the master may send further `CORRAL_ERR_*` codes, which are passed through.
 * The rest are raised by the driver itself.
 */
export type SchedulerErrorCode =
  /** The master does not consider the framework subscribed; the driver re-subscribes. */
  | "CORRAL_ERR_NOT_SUBSCRIBED"
  /** The framework was torn down; its id can never subscribe again. The driver stops. */
  | "CORRAL_ERR_FRAMEWORK_REMOVED"
  /** Another instance has subscribed with the framework's id since; this one's calls are refused. The driver stops. */
  | "CORRAL_ERR_FRAMEWORK_FAILED_OVER"
  /** The call breaks a rule; the message names the field and the rule. */
  | "CORRAL_ERR_INVALID_CALL"
  /** The master serves only frameworks with a principal, or the principal came on the shared subject. The driver stops. */
  | "CORRAL_ERR_UNAUTHENTICATED"
  /**
   * The framework's principal may not do this: subscribe with a role the master's role ACL refuses
   * it, or use a framework id registered under another principal. The driver stops.
   */
  | "CORRAL_ERR_UNAUTHORIZED"
  /** No reply within `requestTimeoutMs`; the driver re-subscribes. */
  | "CORRAL_ERR_REQUEST_TIMEOUT"
  /** No master listens on the cluster's scheduler subject (wrong cluster name, or no leader). */
  | "CORRAL_ERR_NO_RESPONDERS"
  /** The transport was closed. */
  | "CORRAL_ERR_TRANSPORT_CLOSED"
  /** Any other transport failure. */
  | "CORRAL_ERR_TRANSPORT"
  /** The reply could not be decoded or was not the expected answer (counted in `drops`). */
  | "CORRAL_ERR_BAD_REPLY"
  /** The reply came from a deposed master (an epoch lower than one already seen). */
  | "CORRAL_ERR_STALE_MASTER"
  /** The driver was stopped (by {@link SchedulerDriver.stop}, a teardown or a fatal error). */
  | "CORRAL_ERR_DRIVER_STOPPED"
  /** {@link createSchedulerDriver} was given an unusable option; the message names it. */
  | "CORRAL_ERR_INVALID_OPTIONS";

/** The one error type the driver raises (rejects with). Branch on {@link SchedulerError.code}. */
export class SchedulerError extends Error {
  /** A {@link SchedulerErrorCode}, or another stable `CORRAL_ERR_*` code sent by the master. */
  readonly code: SchedulerErrorCode | (string & {});
  /** The master's answer, when the error is a refusal (`ok: false`). */
  readonly response: CallResponse | undefined;

  constructor(code: SchedulerErrorCode | (string & {}), message: string, options?: { response?: CallResponse; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SchedulerError";
    this.code = code;
    this.response = options?.response;
  }
}

/** True when `err` is a {@link SchedulerError}, optionally with the given code. */
export function isSchedulerError(err: unknown, code?: SchedulerErrorCode | (string & {})): err is SchedulerError {
  return err instanceof SchedulerError && (code === undefined || err.code === code);
}

function invalidCall(message: string): SchedulerError {
  return new SchedulerError("CORRAL_ERR_INVALID_CALL", message);
}

function invalidOption(field: string, rule: string): SchedulerError {
  return new SchedulerError("CORRAL_ERR_INVALID_OPTIONS", `${field}: ${rule}`);
}

function stoppedError(): SchedulerError {
  return new SchedulerError("CORRAL_ERR_DRIVER_STOPPED", "the scheduler driver is stopped");
}

// ------------------------------------------------------------------------------------------------
// Public types
// ------------------------------------------------------------------------------------------------

/** Who the framework is; sent to the master as `FrameworkInfo` on every subscribe. */
export interface FrameworkOptions {
  /** Shown in the master's state and UI; required, non-empty. */
  name: string;
  /**
   * Roles the framework is offered resources for (unreserved resources plus reservations for
   * these roles). `*` is not a role.
   * @default ["default"]
   */
  roles?: readonly string[];
  /**
   * The framework's identity for authorization. A framework with a principal calls the master on
   * `corral.<cluster>.master.scheduler.<principal>` and hears its events on
   * `corral.<cluster>.framework.<principal>.<frameworkId>.events`; NATS permissions
   * (`permissionsFor("framework", cluster, { principal })`) give each principal's user those
   * subjects only, and the master takes the principal from the subject. It must therefore be usable
   * as a subject token (no `.`, `*`, `>` or whitespace, at most 128 characters). Without one, the
   * framework uses the subjects shared by all frameworks without a principal.
   * @default "" (none)
   */
  principal?: string;
  /**
   * How long the master keeps the framework (and its tasks) after losing contact with it, for
   * a new instance to fail over. As in Mesos, 0 tears the framework down, killing its tasks, as
   * soon as the master counts it disconnected; a long-running framework wants days here.
   * @default 0
   */
  failoverTimeoutSeconds?: number;
  /** Whether agents checkpoint the framework's tasks so they survive an agent restart. @default false */
  checkpoint?: boolean;
  /**
   * Whether the framework understands TASK_UNREACHABLE / TASK_GONE (Mesos's PARTITION_AWARE);
   * otherwise it is told TASK_LOST.
   * @default true
   */
  partitionAware?: boolean;
  /** Host the scheduler runs on, for operators. @default os.hostname() */
  hostname?: string;
  /**
   * The id of an existing framework to fail over to (e.g. read back from your own store after a
   * restart). The previous instance, if still running, is told it was failed over and stops.
   * @default undefined (the master assigns a new id; read it with `frameworkId()`)
   */
  id?: string;
}

/** What {@link SchedulerCallbacks.subscribed} and {@link SchedulerDriver.start} report. */
export interface SubscribedInfo {
  readonly frameworkId: string;
  readonly masterId: string;
  /** How often the master publishes heartbeat events and expects heartbeat calls. */
  readonly heartbeatIntervalSeconds: number;
  /**
   * False for the subscription made by `start()`, true for re-subscriptions after a disconnection
   * (every `subscribed` callback after the first comes after a `disconnected` one).
   */
  readonly reconnected: boolean;
}

/** An offer with its resources in the {@link Resources} algebra. */
export interface OfferView {
  readonly id: string;
  readonly frameworkId: string;
  readonly agentId: string;
  readonly hostname: string;
  /** The role the resources are allocated to. */
  readonly role: string;
  readonly resources: Resources;
  /** The agent's attributes (rack, zone...) by name. */
  readonly attributes: Readonly<Record<string, string>>;
}

/** Handed to the `update` callback when the update must be acknowledged by hand. */
export interface Acknowledger {
  /**
   * Acknowledges the update: publishes the acknowledgement without waiting for the master's
   * answer (at thousands of updates per second the answers would cost as much as the updates;
   * an acknowledgement that is lost makes the agent send the update again). Calling it again
   * returns the first call's promise. Once the driver has stopped it sends nothing and rejects
   * with `CORRAL_ERR_DRIVER_STOPPED`, as every call does.
   */
  acknowledge(): Promise<void>;
}

/** A framework message from the framework's component on an agent. */
export interface FrameworkMessageView {
  readonly agentId: string;
  readonly data: Uint8Array;
}

/** An agent was lost (no `status`) or a process on it exited (with its exit `status`). */
export interface FailureView {
  readonly agentId: string;
  readonly status?: number;
}

/** A callback's result: nothing, or a promise the driver awaits before the next callback. */
export type CallbackResult = void | Promise<void>;

/**
 * What the framework hears. All optional. Callbacks are called one at a time in the order the
 * events arrived; an exception or rejection is logged and does not stop the driver.
 */
export interface SchedulerCallbacks {
  /** The master accepted the subscription (after `start()`, and again after each re-subscription). */
  subscribed?(info: SubscribedInfo): CallbackResult;
  /**
   * New offers. Answer each with `launch`/`accept` or `decline` (unanswered offers hold
   * resources back from other frameworks until the master rescinds them).
   */
  offers?(offers: OfferView[]): CallbackResult;
  /** The offer is gone (used elsewhere, agent lost, framework failed over); accepting it fails. */
  rescind?(offerId: string): CallbackResult;
  /**
   * A task's status changed. With `autoAcknowledge` (the default) the driver acknowledges the
   * update once this callback returned (or its promise resolved) and `ack` is undefined; if the
   * callback throws, the update is not acknowledged and the agent will send it again. With
   * `autoAcknowledge: false`, `ack` is given for updates that need acknowledging (non-empty uuid)
   * and the agent re-sends the update until `ack.acknowledge()` is called.
   */
  update?(status: TaskStatus, ack: Acknowledger | undefined): CallbackResult;
  /** A framework message from an agent's executor (none yet: Corral runs no custom executors). */
  message?(message: FrameworkMessageView): CallbackResult;
  /** An agent was lost or a process exited. */
  failure?(failure: FailureView): CallbackResult;
  /**
   * Fatal: the master refuses to deal with this instance any longer (another instance failed
   * over, the framework was removed). The driver has already stopped when this is called.
   */
  error?(message: string): CallbackResult;
  /**
   * Contact with the master was lost (missed heartbeats, a call timed out, the master said
   * "not subscribed"). The driver re-subscribes on its own; outstanding offers are void.
   */
  disconnected?(reason: string): CallbackResult;
}

/** Friendly form of a task's command. */
export type TaskCommand =
  /** A shell command line, run with `/bin/sh -c`. */
  | string
  | {
      /** Shell command line when `shell` is true, else the program to execute. */
      value: string;
      /** Arguments when `shell` is false. @default [] */
      arguments?: readonly string[];
      /** @default true */
      shell?: boolean;
    };

/** A task to launch; converted to the wire `TaskInfo` by {@link taskInfoFromSpec}. */
export interface TaskSpec {
  /** Unique among the framework's live tasks. */
  taskId: string;
  /** @default taskId */
  name?: string;
  /** @default the agent of the offer(s) the task is launched on */
  agentId?: string;
  /** What the task consumes, as a value or in Mesos text form (`"cpus:0.5;mem:128"`). */
  resources: Resources | string;
  command: TaskCommand;
  /** Environment variables. @default {} */
  env?: Readonly<Record<string, string>>;
  /** Unix user to run as. @default the agent's default user */
  user?: string;
  /** Time between SIGTERM and SIGKILL when killed. @default the agent's default (3 s) */
  killGracePeriodSeconds?: number;
  /** Free-form labels. @default {} */
  labels?: Readonly<Record<string, string>>;
  /**
   * A command health check the agent runs; the task's updates then carry `healthy`.
   * @default none
   */
  healthCheck?: HealthCheckSpec;
}

/** A command health check of a {@link TaskSpec}; see `HealthCheck` in corral.proto. */
export interface HealthCheckSpec {
  /** Shell command line; exit status 0 is healthy. */
  command: string;
  /** Seconds from the task's start to the first check. @default 15 */
  delaySeconds?: number;
  /** Seconds from the end of one check to the next. @default 10 */
  intervalSeconds?: number;
  /** Seconds after which a check counts as failed. @default 20 */
  timeoutSeconds?: number;
  /** Seconds after the start in which failures do not count until a check passed. @default 10 */
  gracePeriodSeconds?: number;
}

/** A task to reconcile; `agentId` speeds the answer up when known. */
export interface ReconcileTaskSpec {
  taskId: string;
  /** @default "" (unknown) */
  agentId?: string;
}

/** Options of {@link SchedulerDriver.stop}. */
export interface StopOptions {
  /**
   * Tear the framework down first (the master kills its tasks and forgets it). Without it the
   * master keeps the framework for `failoverTimeoutSeconds`, so a new instance can fail over.
   * @default false
   */
  teardown?: boolean;
}

/**
 * Where the driver is:
 * `idle` (created), `subscribing` (first subscription in progress), `subscribed`,
 * `disconnected` (re-subscribing after losing the master), `stopped` (for good).
 */
export type DriverState = "idle" | "subscribing" | "subscribed" | "disconnected" | "stopped";

/** Counters of a driver, for logs and metrics. */
export interface DriverStats {
  /** Valid events accepted (any kind, including heartbeats). */
  eventsReceived: number;
  /** Events ignored because they came from a deposed master (lower epoch). */
  staleEventsIgnored: number;
  /**
   * Numbered events dropped as seen already (a duplicate) or sent before the current
   * subscription (see {@link SchedulerEvent}'s `seq`).
   */
  duplicateEventsIgnored: number;
  /** Times a numbered event showed that earlier ones never arrived; each made the driver re-subscribe. */
  eventGaps: number;
  /** Calls sent (including subscribes and heartbeats). */
  callsSent: number;
  /** Times contact with the master was lost. */
  disconnections: number;
  /** Callbacks that threw or rejected. */
  callbackErrors: number;
  /** Events dropped because `maxPendingCallbacks` callbacks were already waiting. */
  callbacksDropped: number;
  /** The highest master epoch seen. */
  highestEpoch: number;
}

/** Options of {@link createSchedulerDriver}. */
export interface SchedulerDriverOptions {
  /** Cluster name: the `<cluster>` token of every subject. @default "corral" */
  cluster?: string;
  /** The bus, e.g. from `connectNats`. Not closed by the driver. */
  transport: Transport;
  framework: FrameworkOptions;
  /** @default {} */
  callbacks?: SchedulerCallbacks;
  /** Acknowledge status updates after the `update` callback returns. @default true */
  autoAcknowledge?: boolean;
  /** @default systemClock */
  clock?: Clock;
  /** @default systemTimers */
  timers?: Timers;
  /** Source of the instance id, call ids and backoff jitter. @default a generator seeded from crypto.randomUUID() */
  rng?: Rng;
  /** A pino logger works. @default silentLogger */
  log?: Logger;
  /** How long a call waits for the master's reply. @default 5000 */
  requestTimeoutMs?: number;
  /** Heartbeat intervals without any event from the master before re-subscribing. @default 5 */
  maxMissedMasterHeartbeats?: number;
  /** Base of the randomised exponential backoff between subscribe attempts. @default 1000 */
  resubscribeBackoffMs?: number;
  /** Cap of that backoff. @default 30000 (or resubscribeBackoffMs, if larger) */
  maxResubscribeBackoffMs?: number;
  /**
   * Offers remembered (to default a task's agent id in `accept`); beyond it the oldest are
   * forgotten (they stay valid at the master).
   * @default 10000
   */
  maxTrackedOffers?: number;
  /**
   * Events waiting for a busy callback; beyond it new events are dropped and counted (the offers
   * of a dropped event are declined; a dropped update is not acknowledged, so the agent sends it
   * again).
   * @default 10000
   */
  maxPendingCallbacks?: number;
  /** Counter of dropped bus messages, to share with other components. @default a new DropCounter */
  drops?: DropCounter;
}

/**
 * A framework's connection to the master. Create with {@link createSchedulerDriver}.
 *
 * Calls (accept, decline, revive, suppress, kill, acknowledge, reconcile, sendMessage,
 * teardown) are never queued:
 * - before a master has answered `start()`'s SUBSCRIBE they reject with
 *   `CORRAL_ERR_NOT_SUBSCRIBED` and nothing is sent (from the `subscribed` callback on, they go out);
 * - while `disconnected` (re-subscribing) they are sent as they are, and the master answers them
 *   or they reject (`CORRAL_ERR_NOT_SUBSCRIBED` from a new master, `CORRAL_ERR_REQUEST_TIMEOUT`,
 *   `CORRAL_ERR_NO_RESPONDERS`); repeat what matters after the next `subscribed` callback;
 * - once stopped they reject with `CORRAL_ERR_DRIVER_STOPPED`.
 */
export interface SchedulerDriver {
  /** A uuid for this driver instance; the `sender_id` of everything it sends. */
  readonly instanceId: string;
  /** Malformed messages dropped by this driver, by subject kind and reason. */
  readonly drops: DropCounter;

  /**
   * Subscribes (failing over when `framework.id` was given) and resolves once SUBSCRIBED and the
   * first heartbeat call have been answered. Unanswered attempts (no master yet, timeouts) are
   * retried with backoff until `stop()`; a refusal rejects with the master's code. Calling it
   * again returns the same promise; once the driver has stopped it rejects with
   * `CORRAL_ERR_DRIVER_STOPPED` (a stopped driver cannot be restarted: create a new one, with
   * `framework.id` to keep the framework).
   */
  start(): Promise<SubscribedInfo>;
  /** Stops the driver for good (optionally tearing the framework down first). Idempotent. */
  stop(options?: StopOptions): Promise<void>;

  /**
   * Uses offers (all from one agent) to launch `tasks`; what they leave unused is declined with
   * `filters`. A task without `agentId` gets the offers' agent.
   */
  accept(offerIds: readonly string[], tasks: readonly TaskSpec[], filters?: Filters): Promise<CallResponse>;
  /** `accept([offer.id], tasks, filters)`, checking first that the tasks fit the offer. */
  launch(offer: OfferView, tasks: readonly TaskSpec[], filters?: Filters): Promise<CallResponse>;
  /** Declines offers; the master does not re-offer their resources for `filters.refuseSeconds` (default 5 s). */
  decline(offerIds: readonly string[], filters?: Filters): Promise<CallResponse>;
  /** Clears decline filters and resumes offers for `roles`. @param roles @default all the framework's roles */
  revive(roles?: readonly string[]): Promise<CallResponse>;
  /**
   * Stops offers for `roles` until `revive`, or until the next subscription: a re-subscription
   * (after `disconnected`, or to a new master) starts with every role unsuppressed, as a Mesos v1
   * SUBSCRIBE without `suppressed_roles` does, and the driver does not re-apply it (libmesos has
   * done so since Mesos 1.9). Suppress again from the `subscribed` callback if nothing waits.
   * @param roles @default all the framework's roles
   */
  suppress(roles?: readonly string[]): Promise<CallResponse>;
  /**
   * Kills a task (SIGTERM, then SIGKILL after the grace period).
   * @param agentId speeds the kill up when the master does not know the task. @default ""
   * @param gracePeriodSeconds overrides the task's grace period. @default the task's
   */
  kill(taskId: string, agentId?: string, gracePeriodSeconds?: number): Promise<CallResponse>;
  /** Acknowledges a status update (only needed with `autoAcknowledge: false`). */
  acknowledge(status: TaskStatus): Promise<CallResponse>;
  /**
   * Asks for the latest state of `tasks` (explicit) or, when empty, of all the framework's tasks
   * (implicit); answers arrive as `update` callbacks.
   * @param tasks @default [] (implicit)
   */
  reconcile(tasks?: readonly ReconcileTaskSpec[]): Promise<CallResponse>;
  /**
   * Sends opaque bytes to the framework's executor on an agent. Corral runs no custom executors
   * yet, so the master refuses it with `CORRAL_ERR_UNSUPPORTED` (kept for the protocol's sake).
   */
  sendMessage(agentId: string, data: Uint8Array): Promise<CallResponse>;
  /** Tears the framework down (the master kills its tasks and forgets it), then stops the driver. */
  teardown(): Promise<CallResponse>;

  /** The framework id once subscribed (or the one given to fail over to), else undefined. */
  frameworkId(): string | undefined;
  state(): DriverState;
  /** A snapshot of the driver's counters. */
  stats(): DriverStats;
}

// ------------------------------------------------------------------------------------------------
// Conversions
// ------------------------------------------------------------------------------------------------

/** Reads a wire offer into an {@link OfferView}. @throws ResourceError on unusable resources */
export function offerView(offer: Offer): OfferView {
  const attributes: Record<string, string> = {};
  for (const a of offer.attributes) attributes[a.name] = a.text;
  return {
    id: offer.id,
    frameworkId: offer.frameworkId,
    agentId: offer.agentId,
    hostname: offer.hostname,
    role: offer.role,
    resources: resourcesFromWire(offer.resources),
    attributes,
  };
}

function commandInfo(command: TaskCommand, spec: TaskSpec, where: string): CommandInfo {
  const base = typeof command === "string" ? { value: command, arguments: [], shell: true } : command;
  if (typeof base.value !== "string" || base.value.length === 0) throw invalidCall(`${where}.command: must not be empty`);
  return {
    value: base.value,
    arguments: [...(base.arguments ?? [])],
    shell: base.shell ?? true,
    environment: { ...(spec.env ?? {}) },
    user: spec.user ?? "",
  };
}

/** Parses a task's resources, naming the task on failure. */
function taskResources(spec: TaskSpec, where: string): Resources {
  try {
    const resources = typeof spec.resources === "string" ? Resources.parse(spec.resources) : spec.resources;
    if (!(resources instanceof Resources)) throw invalidCall(`${where}.resources: must be a Resources value or a string`);
    if (resources.isEmpty()) throw invalidCall(`${where}.resources: must not be empty`);
    return resources;
  } catch (err) {
    if (err instanceof ResourceError) throw invalidCall(`${where}.resources: ${err.message}`);
    throw err;
  }
}

/**
 * Converts a {@link TaskSpec} to the wire `TaskInfo`.
 * @param defaultAgentId used when the spec names no agent
 * @param where the spec's position for error messages, e.g. `"tasks[2]"`
 * @throws {SchedulerError} `CORRAL_ERR_INVALID_CALL` naming the field and the rule
 */
export function taskInfoFromSpec(spec: TaskSpec, defaultAgentId?: string, where = "task"): TaskInfo {
  if (typeof spec.taskId !== "string" || spec.taskId.length === 0) throw invalidCall(`${where}.taskId: must not be empty`);
  const agentId = spec.agentId ?? defaultAgentId;
  if (!agentId) throw invalidCall(`${where}.agentId: unknown; name the agent or launch on an offer this driver received`);
  const grace = spec.killGracePeriodSeconds;
  if (grace !== undefined && !(Number.isFinite(grace) && grace >= 0)) {
    throw invalidCall(`${where}.killGracePeriodSeconds: must be a finite number >= 0, got ${grace}`);
  }
  const info: TaskInfo = {
    taskId: spec.taskId,
    name: spec.name ?? spec.taskId,
    agentId,
    resources: resourcesToWire(taskResources(spec, where)),
    command: commandInfo(spec.command, spec, where),
    labels: { ...(spec.labels ?? {}) },
  };
  if (grace !== undefined) info.killGracePeriodSeconds = grace;
  if (spec.healthCheck !== undefined) info.healthCheck = healthCheckInfo(spec.healthCheck, `${where}.healthCheck`);
  return info;
}

function healthCheckInfo(check: HealthCheckSpec, where: string): HealthCheck {
  if (typeof check.command !== "string" || check.command.length === 0) throw invalidCall(`${where}.command: must not be empty`);
  const out: HealthCheck = { kind: "command", command: { value: check.command, arguments: [], shell: true, environment: {}, user: "" } };
  for (const field of ["delaySeconds", "intervalSeconds", "timeoutSeconds", "gracePeriodSeconds"] as const) {
    const seconds = check[field];
    if (seconds === undefined) continue;
    if (!(Number.isFinite(seconds) && seconds >= 0)) throw invalidCall(`${where}.${field}: must be a finite number >= 0, got ${seconds}`);
    out[field] = seconds;
  }
  return out;
}

function checkFilters(filters: Filters | undefined): void {
  const refuse = filters?.refuseSeconds;
  if (refuse !== undefined && !(Number.isFinite(refuse) && refuse >= 0)) {
    throw invalidCall(`filters.refuseSeconds: must be a finite number >= 0, got ${refuse}`);
  }
}

function checkOfferIds(offerIds: readonly string[]): void {
  if (!Array.isArray(offerIds) || offerIds.length === 0) throw invalidCall("offerIds: must not be empty");
  offerIds.forEach((id, i) => {
    if (typeof id !== "string" || id.length === 0) throw invalidCall(`offerIds[${i}]: must be a non-empty string`);
  });
}

// ------------------------------------------------------------------------------------------------
// The driver
// ------------------------------------------------------------------------------------------------

/** Codes after which a subscribe attempt is worth repeating. */
/** Most event numbers remembered while a subscription is being made (see `seenWhileSubscribing`). */
const MAX_EARLY_EVENTS = 10_000;

const RETRYABLE_SUBSCRIBE_CODES: ReadonlySet<string> = new Set([
  "CORRAL_ERR_REQUEST_TIMEOUT",
  "CORRAL_ERR_NO_RESPONDERS",
  "CORRAL_ERR_TRANSPORT",
  "CORRAL_ERR_BAD_REPLY",
  "CORRAL_ERR_STALE_MASTER",
  "CORRAL_ERR_NOT_SUBSCRIBED",
]);

/** Codes of a failed call that mean the master lost us (or we lost it). */
const CONNECTION_LOST_CODES: ReadonlySet<string> = new Set([
  "CORRAL_ERR_REQUEST_TIMEOUT",
  "CORRAL_ERR_NO_RESPONDERS",
  "CORRAL_ERR_NOT_SUBSCRIBED",
]);

/** Stands in for the request inbox when counting dropped replies (its kind is "reply"). */
const REPLY_SUBJECT = "_INBOX.reply";

function fromTransportError(err: unknown): SchedulerError {
  if (err instanceof SchedulerError) return err;
  if (err instanceof TransportError) return new SchedulerError(err.code, err.message, { cause: err });
  return new SchedulerError("CORRAL_ERR_TRANSPORT", err instanceof Error ? err.message : String(err), { cause: err });
}

function positive(value: number | undefined, fallback: number, field: string, integer = false): number {
  const v = value ?? fallback;
  if (!(Number.isFinite(v) && v > 0) || (integer && !Number.isInteger(v))) {
    throw invalidOption(field, `must be a positive ${integer ? "integer" : "number"}, got ${String(value)}`);
  }
  return v;
}

/** The framework options with defaults applied; `id` is the one to fail over to, if any. */
type ResolvedFramework = Omit<FrameworkInfo, "id"> & { id: string | undefined };

/** Validates the framework options and fills in the defaults. */
function frameworkDefaults(f: FrameworkOptions): ResolvedFramework {
  if (typeof f?.name !== "string" || f.name.trim() === "") throw invalidOption("framework.name", "must not be empty");
  const roles = [...(f.roles ?? [DEFAULT_FRAMEWORK_ROLE])];
  if (roles.length === 0) throw invalidOption("framework.roles", "must name at least one role");
  roles.forEach((role, i) => {
    const problem = roleNameError(role);
    if (problem !== null) throw invalidOption(`framework.roles[${i}]`, problem);
  });
  if (new Set(roles).size !== roles.length) throw invalidOption("framework.roles", "must not repeat a role");
  const failover = f.failoverTimeoutSeconds ?? 0;
  if (!(Number.isFinite(failover) && failover >= 0)) {
    throw invalidOption("framework.failoverTimeoutSeconds", `must be a finite number >= 0, got ${failover}`);
  }
  if (f.principal !== undefined && f.principal !== "") {
    const principalProblem = tokenProblem(f.principal);
    if (principalProblem !== undefined) throw invalidOption("framework.principal", `${principalProblem} (a principal names the subjects the framework uses)`);
  }
  if (f.id !== undefined) {
    // The master's rule at SUBSCRIBE: a subject token that can also name a sandbox directory.
    const idProblem = tokenProblem(f.id) ?? pathIdProblem(f.id);
    if (idProblem !== undefined) throw invalidOption("framework.id", idProblem);
  }
  return {
    name: f.name,
    roles,
    principal: f.principal ?? "",
    failoverTimeoutSeconds: failover,
    checkpoint: f.checkpoint ?? false,
    partitionAware: f.partitionAware ?? true,
    hostname: f.hostname ?? osHostname(),
    id: f.id,
  };
}

/**
 * Creates a driver; nothing is sent until {@link SchedulerDriver.start}.
 * @throws {SchedulerError} `CORRAL_ERR_INVALID_OPTIONS` naming the offending option
 */
export function createSchedulerDriver(options: SchedulerDriverOptions): SchedulerDriver {
  return new Driver(options);
}

type Job = { callback: keyof SchedulerCallbacks; run: () => CallbackResult; final: boolean };

class Driver implements SchedulerDriver {
  readonly instanceId: string;
  readonly drops: DropCounter;

  private readonly transport: Transport;
  private readonly subjects: ClusterSubjects;
  private readonly framework: ResolvedFramework;
  private readonly callbacks: SchedulerCallbacks;
  private readonly autoAcknowledge: boolean;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly rng: Rng;
  private readonly log: Logger;
  /** How this driver names itself in log lines without repeating a component its logger binds. */
  private readonly componentField: { component?: string; subcomponent?: string };
  private readonly requestTimeoutMs: number;
  private readonly maxMissed: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly maxTrackedOffers: number;
  private readonly maxPendingCallbacks: number;

  private current: DriverState = "idle";
  private fwId: string | undefined;
  private starting: Promise<SubscribedInfo> | undefined;
  /** Bumped whenever the connection changes, so timers and calls of an older one do nothing. */
  private session = 0;
  private heartbeatMs = FALLBACK_HEARTBEAT_INTERVAL_SECONDS * 1000;
  private events: { frameworkId: string; sub: Subscription } | undefined;
  private heartbeatTimer: TimerHandle | undefined;
  /** Re-subscribes when no event arrived for `maxMissedMasterHeartbeats` intervals; every event feeds it. */
  private readonly watchdog: SilenceWatch;
  private backoffWait: { timer: TimerHandle; wake: () => void } | undefined;
  /** Offers received and not yet answered or rescinded, oldest first. */
  private readonly offers = new Map<string, OfferView>();
  private chain: Promise<void> = Promise.resolve();
  private pendingCallbacks = 0;
  /** A teardown call is in flight, so the master's removal notice is expected, not fatal. */
  private tearingDown = false;
  /**
   * A master has answered one of our SUBSCRIBEs with SUBSCRIBED. Until then no call may leave:
   * when failing over to a known id, the master still counts the previous instance as the
   * subscriber and would answer CORRAL_ERR_FRAMEWORK_FAILED_OVER, which stops this driver.
   */
  private everSubscribed = false;
  /** A `subscribed` callback has been queued: any later one is a re-subscription. */
  private announcedSubscribed = false;
  /**
   * Where the master's event numbering (`SchedulerEvent.seq`) stands for the current subscription:
   * the number the next event must carry, for events of that master's epoch. Undefined with a
   * master that does not number its events.
   */
  private numbering: { epoch: number; next: number } | undefined;
  /**
   * Numbers of events that arrived while a subscription was being made: the client may hand over
   * events that follow the SUBSCRIBED reply before the reply itself is seen.
   */
  private seenWhileSubscribing: Array<{ epoch: number; seq: number }> = [];
  /** Events went missing while the subscription was being made: re-subscribe once it is made. */
  private gapWhileSubscribing = false;
  private readonly counters: DriverStats = {
    eventsReceived: 0,
    staleEventsIgnored: 0,
    duplicateEventsIgnored: 0,
    eventGaps: 0,
    callsSent: 0,
    disconnections: 0,
    callbackErrors: 0,
    callbacksDropped: 0,
    highestEpoch: 0,
  };

  constructor(o: SchedulerDriverOptions) {
    if (o?.transport === undefined) throw invalidOption("transport", "is required");
    const cluster = o.cluster ?? DEFAULT_CLUSTER;
    const clusterProblem = tokenProblem(cluster);
    if (clusterProblem !== undefined) throw invalidOption("cluster", clusterProblem);
    this.transport = o.transport;
    this.subjects = clusterSubjects(cluster);
    this.framework = frameworkDefaults(o.framework);
    this.fwId = this.framework.id;
    this.callbacks = o.callbacks ?? {};
    this.autoAcknowledge = o.autoAcknowledge ?? true;
    this.clock = o.clock ?? systemClock;
    this.timers = o.timers ?? systemTimers;
    this.rng = o.rng ?? new SeededRng(randomUUID());
    this.log = o.log ?? silentLogger;
    this.componentField = componentField(this.log, "scheduler-driver");
    this.requestTimeoutMs = positive(o.requestTimeoutMs, DEFAULT_SCHEDULER_REQUEST_TIMEOUT_MS, "requestTimeoutMs");
    this.maxMissed = positive(o.maxMissedMasterHeartbeats, DEFAULT_MAX_MISSED_MASTER_HEARTBEATS, "maxMissedMasterHeartbeats", true);
    // Stopped at every change of session, so it only ever speaks for the current one.
    this.watchdog = new SilenceWatch(this.clock, this.timers, (limitMs) =>
      this.lostMaster(`no event from the master for ${this.maxMissed} heartbeat intervals (${limitMs} ms)`, this.session),
    );
    this.backoffBaseMs = positive(o.resubscribeBackoffMs, DEFAULT_RESUBSCRIBE_BACKOFF_MS, "resubscribeBackoffMs");
    this.backoffMaxMs = positive(o.maxResubscribeBackoffMs, Math.max(DEFAULT_MAX_RESUBSCRIBE_BACKOFF_MS, this.backoffBaseMs), "maxResubscribeBackoffMs");
    this.maxTrackedOffers = positive(o.maxTrackedOffers, DEFAULT_MAX_TRACKED_OFFERS, "maxTrackedOffers", true);
    this.maxPendingCallbacks = positive(o.maxPendingCallbacks, DEFAULT_MAX_PENDING_CALLBACKS, "maxPendingCallbacks", true);
    this.drops = o.drops ?? new DropCounter();
    this.instanceId = this.rng.uuid();
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle
  // ---------------------------------------------------------------------------------------------

  start(): Promise<SubscribedInfo> {
    if (this.current === "stopped") return Promise.reject(stoppedError());
    if (this.starting) return this.starting;
    this.current = "subscribing";
    this.starting = this.subscribeLoop(false).catch((err: unknown) => {
      // A refused first subscription leaves nothing to run.
      this.shutdown();
      throw err;
    });
    return this.starting;
  }

  async stop(options: StopOptions = {}): Promise<void> {
    if (this.current === "stopped") return;
    let failure: unknown;
    if (options.teardown === true && this.fwId !== undefined && this.current !== "idle") {
      try {
        await this.teardown();
      } catch (err) {
        failure = err;
      }
    }
    this.shutdown();
    if (failure !== undefined) throw failure;
  }

  frameworkId(): string | undefined {
    return this.fwId;
  }

  state(): DriverState {
    return this.current;
  }

  stats(): DriverStats {
    return { ...this.counters };
  }

  private get stopped(): boolean {
    return this.current === "stopped";
  }

  /** Ends everything that keeps the driver going. */
  private shutdown(): void {
    if (this.stopped) return;
    this.current = "stopped";
    this.session += 1;
    this.cancelTimers();
    this.backoffWait?.timer.cancel();
    this.backoffWait?.wake();
    this.events?.sub.unsubscribe();
    this.events = undefined;
    this.offers.clear();
    this.log.info(this.bindings(), "scheduler driver stopped");
  }

  private cancelTimers(): void {
    this.heartbeatTimer?.cancel();
    this.watchdog.stop();
    this.heartbeatTimer = undefined;
  }

  /** Stops for good and tells the framework why. */
  private fatal(message: string): void {
    if (this.stopped) return;
    this.log.error({ ...this.bindings(), error: message }, "scheduler driver stopping on a fatal error");
    this.shutdown();
    this.enqueue("error", () => this.callbacks.error?.(message), true);
  }

  // ---------------------------------------------------------------------------------------------
  // Subscribing
  // ---------------------------------------------------------------------------------------------

  /** Subscribes until it works, a refusal that retrying cannot fix, or `stop()`. */
  private async subscribeLoop(reconnected: boolean, immediate = false): Promise<SubscribedInfo> {
    for (let attempt = 0; ; attempt++) {
      if ((reconnected && !immediate) || attempt > 0) await this.backoff(attempt);
      if (this.stopped) throw stoppedError();
      try {
        return await this.subscribeOnce();
      } catch (err) {
        if (this.stopped) throw stoppedError();
        if (!(isSchedulerError(err) && RETRYABLE_SUBSCRIBE_CODES.has(err.code))) {
          this.log.warn({ ...this.bindings(), err, attempt, retry: false }, "subscribe attempt failed");
          throw err;
        }
        // An expected condition (no master yet, a failover): one line per attempt, no stack.
        this.log.warn({ ...this.bindings(), attempt, retry: true, code: err.code, reason: err.message }, "subscribe attempt failed; retrying");
      }
    }
  }

  /** Randomised exponential backoff ("full jitter"); `stop()` cuts it short. */
  private backoff(attempt: number): Promise<void> {
    const ceiling = Math.min(this.backoffBaseMs * 2 ** Math.min(attempt, 30), this.backoffMaxMs);
    const delayMs = this.rng.next() * ceiling;
    return new Promise<void>((resolve) => {
      const wake = () => {
        this.backoffWait = undefined;
        resolve();
      };
      this.backoffWait = { timer: this.timers.set(delayMs, wake), wake };
    });
  }

  /** One SUBSCRIBE, listen, heartbeat handshake (docs/protocol.md, steps 1-3). */
  private async subscribeOnce(): Promise<SubscribedInfo> {
    const known = this.fwId;
    // Events go unjudged until this attempt's reply says where the numbering stands.
    this.numbering = undefined;
    // Failing over: listen first, so nothing the master publishes on SUBSCRIBED is missed.
    if (known !== undefined) await this.listen(known);
    if (this.stopped) throw stoppedError();
    const frameworkInfo: FrameworkInfo = { ...this.framework, id: known ?? "" };
    const env = await this.roundTrip({ kind: "subscribe", subscribe: { frameworkInfo } }, known ?? "", ["schedulerEvent", "callResponse"]);
    // stop() may have come while we waited: neither listen (a subscription nobody would end)
    // nor send the handshake heartbeat for a driver that is gone.
    if (this.stopped) throw stoppedError();
    const subscribed = this.subscribedFrom(env);
    if (known !== undefined && subscribed.frameworkId !== known) {
      this.log.warn({ ...this.bindings(), assigned: subscribed.frameworkId }, "master assigned a different framework id");
    }
    this.fwId = subscribed.frameworkId;
    this.everSubscribed = true;
    this.startNumbering(env.epoch, subscribed.lastEventSeq);
    await this.listen(subscribed.frameworkId);
    if (this.stopped) throw stoppedError();
    const seconds = subscribed.heartbeatIntervalSeconds > 0 ? subscribed.heartbeatIntervalSeconds : FALLBACK_HEARTBEAT_INTERVAL_SECONDS;
    this.heartbeatMs = seconds * 1000;
    this.watchdog.heard();
    const reconnected = this.announcedSubscribed;
    const info: SubscribedInfo = { frameworkId: subscribed.frameworkId, masterId: subscribed.masterId, heartbeatIntervalSeconds: seconds, reconnected };
    this.log.info({ ...this.bindings(), masterId: info.masterId, reconnected }, "subscribed");
    // Announced now, before the master may offer anything, so `subscribed` comes before `offers`.
    this.announcedSubscribed = true;
    this.enqueue("subscribed", () => this.callbacks.subscribed?.(info));
    try {
      // The master offers resources only after the first call following SUBSCRIBED.
      await this.expectOk(await this.roundTrip({ kind: "heartbeat", heartbeat: {} }, subscribed.frameworkId, ["callResponse"]));
    } catch (err) {
      // The framework was told it is subscribed: when the loop tries again it must first hear
      // that the connection is gone, as after any other loss, not a second `subscribed`.
      if (!this.stopped && isSchedulerError(err) && RETRYABLE_SUBSCRIBE_CODES.has(err.code)) this.announceLoss(`${err.code}: ${err.message}`);
      throw err;
    }
    if (this.stopped) throw stoppedError();
    this.enterSubscribed();
    if (this.gapWhileSubscribing) this.lostMaster("events of the master went missing while subscribing", this.session, true);
    return info;
  }

  /**
   * Takes the numbering from a SUBSCRIBED reply (`lastEventSeq`, on a master of `epoch`), counting
   * in the events of that master that arrived before the reply was seen.
   */
  private startNumbering(epoch: number, lastEventSeq: number | undefined): void {
    const early = this.seenWhileSubscribing.filter((e) => e.epoch === epoch).map((e) => e.seq);
    this.seenWhileSubscribing = [];
    this.gapWhileSubscribing = false;
    if (lastEventSeq === undefined) {
      this.numbering = undefined;
      return;
    }
    let next = lastEventSeq + 1;
    for (const seq of early.filter((n) => n >= next).sort((a, b) => a - b)) {
      if (seq > next) {
        this.counters.eventGaps += 1;
        this.gapWhileSubscribing = true;
      }
      if (seq >= next) next = seq + 1;
    }
    this.numbering = { epoch, next };
  }

  /**
   * Whether a numbered event is the next one (see `SchedulerEvent.seq`): an older number is a
   * duplicate, or an event sent before this subscription, and is dropped; a newer one means
   * events were lost on the bus (an offer that would never be answered, a rescind, an update
   * the agent will send again), so the driver re-subscribes at once: the master then rescinds
   * every outstanding offer and starts afresh. An error event is handed on all the same.
   */
  private inSequence(epoch: number, event: SchedulerEvent): boolean {
    const seq = event.seq;
    if (seq === undefined) return true;
    const numbering = this.numbering;
    if (numbering === undefined || numbering.epoch !== epoch) {
      // Cannot be judged before a SUBSCRIBED reply says where the numbering stands.
      if (this.current !== "subscribed" && this.seenWhileSubscribing.length < MAX_EARLY_EVENTS) this.seenWhileSubscribing.push({ epoch, seq });
      return true;
    }
    if (seq < numbering.next) {
      this.counters.duplicateEventsIgnored += 1;
      return false;
    }
    if (seq === numbering.next) {
      numbering.next = seq + 1;
      return true;
    }
    const missed = seq === numbering.next + 1 ? `${numbering.next}` : `${numbering.next}..${seq - 1}`;
    numbering.next = seq + 1;
    this.counters.eventGaps += 1;
    if (event.kind === "error") return true;
    // Before the handshake is done there is no subscription to give up yet: do it right after.
    if (this.current === "subscribed") this.lostMaster(`events ${missed} of the master never arrived (got ${seq})`, this.session, true);
    else this.gapWhileSubscribing = true;
    return false;
  }

  private subscribedFrom(env: EnvelopeOf<"schedulerEvent" | "callResponse">): { frameworkId: string; heartbeatIntervalSeconds: number; masterId: string; lastEventSeq?: number } {
    if (env.payload === "callResponse") {
      const r = env.callResponse;
      if (!r.ok) throw new SchedulerError(r.errorCode, r.message || `subscribe refused: ${r.errorCode}`, { response: r });
      throw new SchedulerError("CORRAL_ERR_BAD_REPLY", "subscribe was answered ok without SUBSCRIBED", { response: r });
    }
    const event = env.schedulerEvent;
    if (event.kind !== "subscribed") throw new SchedulerError("CORRAL_ERR_BAD_REPLY", `subscribe was answered with a ${event.kind} event`);
    if (!isValidToken(event.subscribed.frameworkId)) {
      throw new SchedulerError("CORRAL_ERR_BAD_REPLY", `subscribe was answered with an unusable framework id ${JSON.stringify(event.subscribed.frameworkId)}`);
    }
    return event.subscribed;
  }

  /** Subscribes to the framework's events subject (once per id) and flushes. */
  private async listen(frameworkId: string): Promise<void> {
    if (this.events?.frameworkId !== frameworkId) {
      this.events?.sub.unsubscribe();
      const subject = this.subjects.frameworkEvents(frameworkId, this.framework.principal);
      const handler = handleSafely<"schedulerEvent">(this.log, this.drops, (env) => this.onEvent(env), { expect: ["schedulerEvent"] });
      try {
        this.events = { frameworkId, sub: this.transport.subscribe(subject, handler) };
      } catch (err) {
        throw fromTransportError(err);
      }
    }
    try {
      await this.transport.flush();
    } catch (err) {
      throw fromTransportError(err);
    }
  }

  private enterSubscribed(): void {
    this.current = "subscribed";
    this.session += 1;
    const session = this.session;
    this.cancelTimers();
    this.armHeartbeat(session);
    this.watchdog.start(this.maxMissed * this.heartbeatMs);
  }

  /** Heartbeat calls every interval; a failure is handled by `call` (re-subscribe on timeout). */
  private armHeartbeat(session: number): void {
    this.heartbeatTimer = this.timers.set(this.heartbeatMs, () => {
      if (session !== this.session) return;
      this.armHeartbeat(session);
      this.heartbeat().catch((err: unknown) => this.log.debug({ ...this.bindings(), err }, "heartbeat call failed"));
    });
  }

  private heartbeat(): Promise<CallResponse> {
    return this.call({ kind: "heartbeat", heartbeat: {} });
  }

  /** Contact lost: tell the framework and re-subscribe with the same id. */
  private lostMaster(reason: string, session: number, immediate = false): void {
    if (session !== this.session || this.current !== "subscribed") return;
    this.current = "disconnected";
    this.session += 1;
    this.cancelTimers();
    this.announceLoss(reason);
    this.subscribeLoop(true, immediate).catch((err: unknown) => {
      if (!isSchedulerError(err, "CORRAL_ERR_DRIVER_STOPPED")) this.fatal(err instanceof Error ? err.message : String(err));
    });
  }

  /** Counts a lost connection, voids the offers and tells the framework. */
  private announceLoss(reason: string): void {
    this.counters.disconnections += 1;
    this.numbering = undefined;
    this.offers.clear(); // the master rescinds them when we come back
    this.log.warn({ ...this.bindings(), reason }, "lost contact with the master; re-subscribing");
    this.enqueue("disconnected", () => this.callbacks.disconnected?.(reason));
  }

  // ---------------------------------------------------------------------------------------------
  // Calls
  // ---------------------------------------------------------------------------------------------

  /** Sends one call and returns the decoded reply; every failure is a {@link SchedulerError}. */
  private async roundTrip<K extends PayloadKind>(body: SchedulerCallBody, frameworkId: string, expect: K[]): Promise<EnvelopeOf<K>> {
    let bytes: Uint8Array;
    const callId = this.rng.uuid();
    try {
      bytes = encodeEnvelope({ senderId: this.instanceId, callId, payload: "schedulerCall", schedulerCall: { frameworkId, ...body } }, this.transport);
    } catch (err) {
      if (err instanceof WireError) throw new SchedulerError("CORRAL_ERR_INVALID_CALL", err.problems.join("; "), { cause: err });
      throw err;
    }
    this.counters.callsSent += 1;
    let reply: Uint8Array;
    try {
      reply = await this.transport.request(this.subjects.masterScheduler(this.framework.principal), bytes, { timeoutMs: this.requestTimeoutMs });
    } catch (err) {
      throw fromTransportError(err);
    }
    const decoded = safeDecode<K>(REPLY_SUBJECT, reply, { expect });
    if (!decoded.ok) {
      this.drops.record(REPLY_SUBJECT, decoded.error.reason);
      throw new SchedulerError("CORRAL_ERR_BAD_REPLY", `bad reply to ${body.kind} (${callId}): ${decoded.error.message}`, { cause: decoded.error });
    }
    const env = decoded.envelope;
    if (env.epoch < this.counters.highestEpoch) {
      throw new SchedulerError("CORRAL_ERR_STALE_MASTER", `reply to ${body.kind} from epoch ${env.epoch} < ${this.counters.highestEpoch}`);
    }
    this.counters.highestEpoch = env.epoch;
    return env;
  }

  /**
   * Automatic acknowledgements are published without a reply inbox: nobody would wait for the
   * answer (an update whose acknowledgement is lost is simply sent again by the agent), and at
   * thousands of updates per second the replies cost the master as much as the updates.
   */
  private publishAcknowledgement(status: TaskStatus): void {
    const frameworkId = this.fwId;
    if (this.stopped || frameworkId === undefined || !status.agentId) return;
    try {
      const bytes = encodeEnvelope({
        senderId: this.instanceId,
        payload: "schedulerCall",
        schedulerCall: { frameworkId, kind: "acknowledge", acknowledge: { agentId: status.agentId, taskId: status.taskId, uuid: status.uuid } },
      }, this.transport);
      this.counters.callsSent += 1;
      this.transport.publish(this.subjects.masterScheduler(this.framework.principal), bytes);
    } catch (err) {
      this.log.warn({ ...this.bindings(), err, taskId: status.taskId }, "acknowledgement not sent; the agent will send the update again");
    }
  }

  private expectOk(env: EnvelopeOf<"callResponse">): CallResponse {
    const r = env.callResponse;
    if (!r.ok) throw new SchedulerError(r.errorCode, r.message || r.errorCode, { response: r });
    return r;
  }

  /** A call of a subscribed framework; reacts to failures that mean the connection is gone. */
  private async call(body: SchedulerCallBody): Promise<CallResponse> {
    if (this.stopped) throw stoppedError();
    const frameworkId = this.fwId;
    if (frameworkId === undefined || !this.everSubscribed) {
      throw new SchedulerError("CORRAL_ERR_NOT_SUBSCRIBED", `cannot ${body.kind} before start() has subscribed`);
    }
    const session = this.session;
    try {
      return this.expectOk(await this.roundTrip(body, frameworkId, ["callResponse"]));
    } catch (err) {
      if (isSchedulerError(err)) this.onCallFailure(err, session);
      throw err;
    }
  }

  private onCallFailure(err: SchedulerError, session: number): void {
    if (err.code === "CORRAL_ERR_FRAMEWORK_REMOVED") this.fatal(err.message);
    // Another instance subscribed since: re-subscribing would take the framework back from it,
    // and the two would steal it from each other. This instance stops, as on the failover event,
    // whose message also starts with the code.
    else if (err.code === FAILED_OVER_ERROR) this.fatal(`${FAILED_OVER_ERROR}: ${err.message}`);
    else if (CONNECTION_LOST_CODES.has(err.code)) this.lostMaster(`${err.code}: ${err.message}`, session);
  }

  async accept(offerIds: readonly string[], tasks: readonly TaskSpec[], filters?: Filters): Promise<CallResponse> {
    checkOfferIds(offerIds);
    const known = offerIds.map((id) => this.offers.get(id));
    const agents = new Set(known.filter((o) => o !== undefined).map((o) => o.agentId));
    if (agents.size > 1) throw invalidCall(`offerIds: offers of one accept must come from one agent, got ${[...agents].join(", ")}`);
    const offered = known.every((o) => o !== undefined) ? known.map((o) => o.resources) : undefined;
    return this.acceptOn(offerIds, tasks, filters, [...agents][0], offered);
  }

  async launch(offer: OfferView, tasks: readonly TaskSpec[], filters?: Filters): Promise<CallResponse> {
    if (typeof offer?.id !== "string" || !(offer.resources instanceof Resources)) {
      throw invalidCall("offer: must be an offer received by the offers callback");
    }
    return this.acceptOn([offer.id], tasks, filters, offer.agentId, [offer.resources]);
  }

  /** Validates (including that the tasks fit, when the offers are known) and sends ACCEPT. */
  private acceptOn(
    offerIds: readonly string[],
    tasks: readonly TaskSpec[],
    filters: Filters | undefined,
    agentId: string | undefined,
    offered: readonly Resources[] | undefined,
  ): Promise<CallResponse> {
    checkFilters(filters);
    const taskInfos = this.taskInfos(tasks, agentId);
    if (offered !== undefined) checkFits(offered, taskInfos);
    for (const id of offerIds) this.offers.delete(id); // an offer is used up once answered
    const operations = taskInfos.length === 0 ? [] : [{ kind: "launch" as const, launch: { taskInfos } }];
    return this.call({ kind: "accept", accept: { offerIds: [...offerIds], operations, ...(filters ? { filters } : {}) } });
  }

  private taskInfos(tasks: readonly TaskSpec[], agentId: string | undefined): TaskInfo[] {
    if (!Array.isArray(tasks)) throw invalidCall("tasks: must be an array");
    const seen = new Set<string>();
    return tasks.map((spec, i) => {
      const info = taskInfoFromSpec(spec, agentId, `tasks[${i}]`);
      if (seen.has(info.taskId)) throw invalidCall(`tasks[${i}].taskId: ${info.taskId} is launched twice`);
      seen.add(info.taskId);
      return info;
    });
  }

  async decline(offerIds: readonly string[], filters?: Filters): Promise<CallResponse> {
    checkOfferIds(offerIds);
    checkFilters(filters);
    for (const id of offerIds) this.offers.delete(id);
    return this.call({ kind: "decline", decline: { offerIds: [...offerIds], ...(filters ? { filters } : {}) } });
  }

  async revive(roles: readonly string[] = []): Promise<CallResponse> {
    return this.call({ kind: "revive", revive: { roles: this.ownRoles(roles) } });
  }

  async suppress(roles: readonly string[] = []): Promise<CallResponse> {
    return this.call({ kind: "suppress", suppress: { roles: this.ownRoles(roles) } });
  }

  private ownRoles(roles: readonly string[]): string[] {
    roles.forEach((role, i) => {
      if (!this.framework.roles.includes(role)) {
        throw invalidCall(`roles[${i}]: ${JSON.stringify(role)} is not one of the framework's roles (${this.framework.roles.join(", ")})`);
      }
    });
    return [...roles];
  }

  async kill(taskId: string, agentId = "", gracePeriodSeconds?: number): Promise<CallResponse> {
    if (typeof taskId !== "string" || taskId.length === 0) throw invalidCall("taskId: must not be empty");
    if (gracePeriodSeconds !== undefined && !(Number.isFinite(gracePeriodSeconds) && gracePeriodSeconds >= 0)) {
      throw invalidCall(`gracePeriodSeconds: must be a finite number >= 0, got ${gracePeriodSeconds}`);
    }
    const kill = gracePeriodSeconds === undefined ? { taskId, agentId } : { taskId, agentId, killGracePeriodSeconds: gracePeriodSeconds };
    return this.call({ kind: "kill", kill });
  }

  async acknowledge(status: TaskStatus): Promise<CallResponse> {
    if (!(status?.uuid instanceof Uint8Array) || status.uuid.length === 0) {
      throw invalidCall("status.uuid: is empty; updates without a uuid need no acknowledgement");
    }
    if (!status.agentId) throw invalidCall("status.agentId: must not be empty");
    return this.call({ kind: "acknowledge", acknowledge: { agentId: status.agentId, taskId: status.taskId, uuid: status.uuid } });
  }

  async reconcile(tasks: readonly ReconcileTaskSpec[] = []): Promise<CallResponse> {
    const list = tasks.map((t, i) => {
      if (typeof t?.taskId !== "string" || t.taskId.length === 0) throw invalidCall(`tasks[${i}].taskId: must not be empty`);
      return { taskId: t.taskId, agentId: t.agentId ?? "" };
    });
    return this.call({ kind: "reconcile", reconcile: { tasks: list } });
  }

  async sendMessage(agentId: string, data: Uint8Array): Promise<CallResponse> {
    if (typeof agentId !== "string" || agentId.length === 0) throw invalidCall("agentId: must not be empty");
    return this.call({ kind: "message", message: { agentId, data } });
  }

  async teardown(): Promise<CallResponse> {
    this.tearingDown = true;
    try {
      const response = await this.call({ kind: "teardown", teardown: {} });
      this.shutdown();
      return response;
    } finally {
      this.tearingDown = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Events
  // ---------------------------------------------------------------------------------------------

  private onEvent(env: EnvelopeOf<"schedulerEvent">): void {
    if (this.stopped) return;
    if (env.epoch < this.counters.highestEpoch) {
      this.counters.staleEventsIgnored += 1;
      this.log.debug({ ...this.bindings(), epoch: env.epoch, highestEpoch: this.counters.highestEpoch }, "ignored an event from a deposed master");
      return;
    }
    const newLeader = this.counters.highestEpoch > 0 && env.epoch > this.counters.highestEpoch;
    this.counters.highestEpoch = env.epoch;
    this.counters.eventsReceived += 1;
    this.watchdog.heard();
    if (newLeader) this.onNewLeader(env.epoch);
    if (!this.inSequence(env.epoch, env.schedulerEvent)) return;
    this.dispatch(env.schedulerEvent);
  }

  /** A newer epoch is a new leading master, which knows the framework only once it re-subscribes: do so now. */
  private onNewLeader(epoch: number): void {
    if (this.current === "subscribed") {
      this.lostMaster(`a new master leads (epoch ${epoch})`, this.session, true);
      return;
    }
    // Already re-subscribing: stop waiting out the backoff, a master is there.
    const wait = this.backoffWait;
    wait?.timer.cancel();
    wait?.wake();
  }

  private dispatch(event: SchedulerEvent): void {
    switch (event.kind) {
      case "heartbeat":
        return;
      case "subscribed":
        // Only meaningful as the reply to SUBSCRIBE.
        this.log.debug(this.bindings(), "ignored a subscribed event on the events subject");
        return;
      case "offers":
        return this.onOffers(event.offers.offers);
      case "rescind":
        this.offers.delete(event.rescind.offerId);
        void this.enqueue("rescind", () => this.callbacks.rescind?.(event.rescind.offerId));
        return;
      case "update":
        return this.onUpdate(event.update.status!);
      case "message": {
        const message: FrameworkMessageView = { agentId: event.message.agentId, data: event.message.data };
        void this.enqueue("message", () => this.callbacks.message?.(message));
        return;
      }
      case "failure": {
        const { agentId, status } = event.failure;
        const failure: FailureView = status === undefined ? { agentId } : { agentId, status };
        void this.enqueue("failure", () => this.callbacks.failure?.(failure));
        return;
      }
      case "error":
        return this.onErrorEvent(event.error.message);
    }
  }

  private onOffers(offers: readonly Offer[]): void {
    const views: OfferView[] = [];
    for (const offer of offers) {
      let view: OfferView;
      try {
        view = offerView(offer);
      } catch (err) {
        // Unusable: hand it back rather than hold the agent's resources until it times out.
        this.drops.record(this.subjects.frameworkEvents(this.fwId ?? "unknown", this.framework.principal), "invalid");
        this.log.warn({ ...this.bindings(), err, offerId: offer.id }, "declining an offer with unusable resources");
        this.decline([offer.id]).catch(() => undefined);
        continue;
      }
      this.trackOffer(view);
      views.push(view);
    }
    if (views.length === 0 || this.enqueue("offers", () => this.callbacks.offers?.(views))) return;
    // Nobody will see these offers: held, they would keep the agents' resources from every
    // framework until the master rescinds them (never, without an offer timeout). Hand them back.
    const ids = views.map((v) => v.id);
    for (const id of ids) this.offers.delete(id);
    this.decline(ids).catch((err: unknown) => this.log.warn({ ...this.bindings(), err, offerIds: ids }, "dropped offers not declined"));
  }

  private trackOffer(offer: OfferView): void {
    this.offers.delete(offer.id);
    this.offers.set(offer.id, offer);
    if (this.offers.size > this.maxTrackedOffers) this.offers.delete(this.offers.keys().next().value!);
  }

  private onUpdate(status: TaskStatus): void {
    const needsAck = status.uuid.length > 0;
    let ack: Acknowledger | undefined;
    if (needsAck && !this.autoAcknowledge) {
      let sent: Promise<void> | undefined;
      // Published like automatic acknowledgements, without waiting for the master's answer.
      ack = {
        acknowledge: () => (sent ??= this.stopped ? Promise.reject(stoppedError()) : Promise.resolve(this.publishAcknowledgement(status))),
      };
    }
    this.enqueue("update", async () => {
      const pending = this.callbacks.update?.(status, ack);
      // Only a promise is awaited, so the acknowledgement leaves as soon as a plain callback returns.
      if (pending !== undefined) await pending;
      if (needsAck && this.autoAcknowledge) this.publishAcknowledgement(status);
    });
  }

  private onErrorEvent(message: string): void {
    if (this.tearingDown && message.startsWith("CORRAL_ERR_FRAMEWORK_REMOVED")) {
      // The master confirming our own teardown (it may publish this before answering the call).
      this.shutdown();
      return;
    }
    const failedOver = new RegExp(`^${FAILED_OVER_ERROR}(?:\\s+(\\S+))?`).exec(message);
    if (failedOver && failedOver[1] === this.instanceId) {
      // Our own (re-)subscription with a known id: the master tells the "previous" instance.
      this.log.debug(this.bindings(), "ignored the failover notice of our own subscription");
      return;
    }
    this.fatal(message);
  }

  /**
   * Runs callbacks one at a time, in order; a failing callback is logged and counted.
   * @returns false when the event was dropped (`maxPendingCallbacks` already waiting)
   */
  private enqueue(callback: keyof SchedulerCallbacks, run: () => CallbackResult, final = false): boolean {
    if (!final && this.pendingCallbacks >= this.maxPendingCallbacks) {
      this.counters.callbacksDropped += 1;
      this.log.warn({ ...this.bindings(), callback, pending: this.pendingCallbacks }, "callbacks are not keeping up; event dropped");
      return false;
    }
    this.pendingCallbacks += 1;
    const job: Job = { callback, run, final };
    this.chain = this.chain.then(() => this.runJob(job));
    return true;
  }

  private async runJob(job: Job): Promise<void> {
    try {
      if (this.stopped && !job.final) return;
      await job.run();
    } catch (err) {
      this.counters.callbackErrors += 1;
      this.log.error({ ...this.bindings(), err, callback: job.callback }, "scheduler callback failed");
    } finally {
      this.pendingCallbacks -= 1;
    }
  }

  private bindings(): { component?: string; subcomponent?: string; frameworkId: string | undefined; instanceId: string } {
    return { ...this.componentField, frameworkId: this.fwId, instanceId: this.instanceId };
  }
}

/** Throws `CORRAL_ERR_INVALID_CALL` when the tasks need more than the offers hold. */
function checkFits(offered: readonly Resources[], tasks: readonly TaskInfo[]): void {
  let left = offered.reduce((sum, r) => sum.add(r), Resources.empty());
  // Each task is taken from what is left in turn, as the master does: a sum would merge two
  // tasks' overlapping port ranges and let both through.
  for (const [i, t] of tasks.entries()) {
    let needed: Resources;
    try {
      needed = resourcesFromWire(t.resources);
    } catch (err) {
      if (err instanceof ResourceError) throw invalidCall(`tasks[${i}]: ${err.message}`);
      throw err;
    }
    const rest = left.trySubtract(needed);
    if (rest === null) {
      const after = i > 0 ? " after the tasks before it" : "";
      throw invalidCall(`tasks[${i}]: need ${needed.toString()} but the offers hold only ${left.toString()}${after} (reservations must match)`);
    }
    left = rest;
  }
}

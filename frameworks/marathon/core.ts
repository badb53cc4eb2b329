/**
 * Marathon's scheduling core: a deterministic state machine with no I/O (DESIGN.md §1).
 *
 * It holds the app definitions (with their versions), the instances of every app, the launch
 * queue (instances wanted minus instances active), launch delays and deployments. Every input
 * (an API write, offers, a status update, a health verdict, a timer tick) takes the current time
 * and returns {@link MarathonEffect}s for the shell to carry out: launches, declines, kills,
 * SUPPRESS/REVIVE, writes to the store and events for `/v2/events`.
 *
 * A deployment changes one app (`/v2/apps`) or several (`/v2/groups`, in steps that follow the
 * apps' dependencies). An app belongs to at most one deployment: a write to an app held by a
 * running deployment is refused ({@link ConflictError}) unless forced, which cancels the running
 * one. Deployments are re-evaluated after every input, so they resume from persisted state alone.
 *
 * @module
 */

import type { Rng } from "../../sdk/rng.ts";
import type { HealthCheckSpec } from "../../sdk/scheduler.ts";
import { Resources, type ResourceEntry } from "../../sdk/resources.ts";
import { UNRESERVED_ROLE } from "../../sdk/roles.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";
import type { HealthCheck, NormalizedApp, ReadinessCheck } from "./app-spec.ts";
import { formatPathId, isSelfOrAncestorId, parentId, pathSegments } from "./path-id.ts";
import { activeDelay, canLaunch, launchAllowedAtMs, queueDelayInfo, recordActivity, recordFailure, type LaunchDelay, type QueueDelayInfo } from "./backoff.ts";
import { checkConstraints, DEFAULT_MAX_INSTANCES_PER_OFFER, type Placement } from "./constraints.ts";
import { selectInstancesToKill, type KillCandidate } from "./kill-order.ts";
import { pickPorts } from "./ports.ts";
import { computeRestartPlan, isRolloutComplete, rolloutStep, type RestartPlan, type RolloutState } from "./upgrade.ts";

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/** Tunables of the core. */
export interface MarathonCoreConfig {
  /** Instances launched on one offer per pass (Marathon's `--max_instances_per_offer`). @default 5 */
  maxInstancesPerOffer: number;
  /** Refusal for offers declined while nothing waits to launch (Marathon's decline duration). @default 120 */
  idleDeclineRefuseSeconds: number;
  /** Refusal for offers that did not fit while something waits. @default 5 */
  unfitDeclineRefuseSeconds: number;
  /** A task still staging (not RUNNING) after this long is killed and replaced. @default 300000 */
  taskLaunchTimeoutMs: number;
  /** Versions kept per app for `/v2/apps/{id}/versions`. @default 50 */
  maxVersionsPerApp: number;
  /** Unused-offer records kept per app for `/v2/queue`. @default 10 */
  maxUnusedOffersPerApp: number;
  /** Apps at most. @default 10000 */
  maxApps: number;
  /** Instances at most (all apps). @default 100000 */
  maxInstances: number;
  /** Groups created through `/v2/groups` at most. @default 10000 */
  maxGroups: number;
  /**
   * Versions of the root group kept for `/v2/groups/versions` and group rollback (Marathon's
   * `zk_max_versions`). Keep it at most `maxVersionsPerApp`: an older root version refers to app
   * versions the apps' histories no longer hold. @default 50
   */
  maxGroupVersions: number;
}

/** How the core is built, apart from its tunables. */
export interface MarathonCoreOptions {
  /**
   * Visit every app on every input and every instance on every tick, rather than only the apps
   * and instances whose state changed since the last input (see {@link MarathonCore.lastEvaluateVisits}).
   * Same effects, far slower: the plain reference that tests compare the change tracking against.
   * @default false
   */
  fullScan?: boolean;
}

export const DEFAULT_CORE_CONFIG: MarathonCoreConfig = {
  maxInstancesPerOffer: DEFAULT_MAX_INSTANCES_PER_OFFER,
  idleDeclineRefuseSeconds: 120,
  unfitDeclineRefuseSeconds: 5,
  taskLaunchTimeoutMs: 300_000,
  maxVersionsPerApp: 50,
  maxUnusedOffersPerApp: 10,
  maxApps: 10_000,
  maxInstances: 100_000,
  maxGroups: 10_000,
  maxGroupVersions: 50,
};

// ------------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------------

export interface VersionInfo {
  lastScalingAt: string;
  lastConfigChangeAt: string;
}

/** One stored version of an app. */
export interface AppVersion {
  app: NormalizedApp;
  version: string;
  versionInfo: VersionInfo;
}

/** An app with its current version and its history (oldest first, current last). Persisted. */
export interface AppRecord extends AppVersion {
  versions: AppVersion[];
}

/** What Marathon thinks an instance is doing. */
export type InstanceState = "staging" | "starting" | "running" | "killing" | "unreachable";

/**
 * One instance (one task). Persisted before its launch, so that after a restart Marathon knows
 * every task it may have started.
 */
export interface Instance {
  /** Also the task id: `<app path with '_'>.<uuid>`, as Marathon. */
  id: string;
  appId: string;
  /** The app version it was launched with. */
  version: string;
  /** The config version (lastConfigChangeAt) it was launched with; differs from the app's = old. */
  configVersion: string;
  agentId: string;
  hostname: string;
  attributes: Record<string, string>;
  hostPorts: number[];
  state: InstanceState;
  /** Desired state: keep running; stop for good; or stop and let the queue replace it. */
  goal: "running" | "stopped" | "replace";
  /** Health verdict; undefined while unknown or when the app has no health checks. */
  healthy?: boolean;
  stagedAtMs: number;
  startedAtMs?: number;
  /** Last Mesos state seen. */
  mesosState: string;
  /** When the instance became unreachable (cleared when it is seen again). */
  unreachableSinceMs?: number;
  /**
   * Unreachable for longer than the app's `inactiveAfterSeconds`: it no longer counts toward the
   * app's instances (a replacement is launched), but it is kept until `expungeAfterSeconds`, and
   * counts again if it comes back (the surplus is then killed). Cleared when it is seen again.
   */
  inactive?: boolean;
}

export type DeploymentKind = "start" | "scale" | "restart" | "stop";

/** One app's part of a deployment. */
export interface DeploymentPart {
  appId: string;
  kind: DeploymentKind;
  /** The app before the deployment (undefined when the deployment created it), for rollback. */
  original?: AppRecord;
  /** Restarts: the fixed numbers of the rollout. */
  plan?: RestartPlan;
  /** Restarts: old instances told to stop so far. */
  oldKillsIssued: number;
  /** Restarts: new instances allowed so far. */
  newAllowed: number;
  /** The app reached its target; it stays locked until the whole deployment ends. */
  done: boolean;
}

/** A running deployment of one or more apps. Persisted; resumed after a restart. */
export interface Deployment {
  id: string;
  /** The version it deploys (ISO time). */
  version: string;
  /** App ids per step; a step starts once every app of the previous one is done. */
  steps: string[][];
  /** Index into `steps`. */
  currentStep: number;
  parts: DeploymentPart[];
  startedAtMs: number;
}

/**
 * A group that exists in its own right, created through `/v2/groups`: it outlives its apps (an
 * empty group stays) and keeps its dependencies. Groups that only hold apps exist through their
 * ids and need no record. Persisted.
 */
export interface GroupRecord {
  id: string;
  /** Absolute ids of apps or groups that every app below waits for in deployments. */
  dependencies: string[];
  /** The version of the write that last set it. */
  version: string;
}

/**
 * What one write did to the tree of apps and groups: the root group's version it made, and what
 * each app and group record it changed was before (`null`: absent). The tree at an older version
 * is the current tree with the newer changes undone, so a write stores only what it changed,
 * however many apps there are. Persisted.
 */
export interface RootVersionChange {
  /** The root group's version this write made (ISO time, also the deployment's version). */
  version: string;
  /** The version each changed app had before, by app id; `null`: the app did not exist. */
  appsBefore: Record<string, string | null>;
  /** The record each changed group had before, by group id; `null`: it had none. */
  groupsBefore: Record<string, GroupRecord | null>;
}

/** The tree of apps and groups at one version of the root group. */
export interface RootGroupSnapshot {
  version: string;
  /** Every app of the tree as it was then, by id. */
  apps: Map<string, AppVersion>;
  /** The group records of the time, by id. */
  groups: Map<string, GroupRecord>;
}

/** A deployment's steps as a dry run shows them (`PUT /v2/groups/{id}?dryRun=true`). */
export type PlannedStep = { actions: Array<{ action: string; app: string }> };

/** Group records to set or forget along with a deployment. */
export interface GroupChanges {
  /** Groups to create or replace (after the removals). @default [] */
  put?: ReadonlyArray<{ id: string; dependencies: readonly string[] }>;
  /** Groups to forget, each with every group record below it. @default [] */
  remove?: readonly string[];
}

/** One change of a deployment: an app to create or update, or an app id to remove. */
export type AppChange = { app: NormalizedApp; restart?: boolean } | { remove: string };

function changeId(change: AppChange): string {
  return "remove" in change ? change.remove : change.app.id;
}

const ACTION_NAMES: Record<DeploymentKind, string> = {
  start: "StartApplication",
  scale: "ScaleApplication",
  restart: "RestartApplication",
  stop: "StopApplication",
};

/** Offer as the core needs it. */
export interface CoreOffer {
  id: string;
  agentId: string;
  hostname: string;
  /** The role the offer was allocated to. */
  role: string;
  resources: Resources;
  attributes: Readonly<Record<string, string>>;
}

/** A task to launch, fully resolved. */
export interface LaunchTask {
  taskId: string;
  name: string;
  agentId: string;
  resources: Resources;
  command: string | { value: string; arguments: string[]; shell: false };
  env: Record<string, string>;
  user?: string;
  killGracePeriodSeconds?: number;
  labels: Record<string, string>;
  /** The app's COMMAND health check, run by the agent. */
  healthCheck?: HealthCheckSpec;
}

/** A Marathon event (`/v2/events`), with its `eventType` and `timestamp`. */
export interface MarathonEvent {
  eventType: string;
  timestamp: string;
  [field: string]: unknown;
}

export type MarathonEffect =
  | { type: "launch"; offerId: string; agentId: string; tasks: LaunchTask[] }
  | { type: "decline"; offerIds: string[]; refuseSeconds: number }
  | { type: "kill"; taskId: string; agentId: string; gracePeriodSeconds?: number }
  | { type: "suppress" }
  | { type: "revive" }
  | { type: "putApp"; record: AppRecord }
  | { type: "deleteApp"; appId: string }
  | { type: "putDeployment"; deployment: Deployment }
  | { type: "deleteDeployment"; id: string }
  | { type: "putInstance"; instance: Instance }
  | { type: "deleteInstance"; id: string }
  | { type: "putGroup"; group: GroupRecord }
  | { type: "deleteGroup"; id: string }
  | { type: "putRootVersion"; change: RootVersionChange }
  | { type: "deleteRootVersion"; version: string }
  | { type: "putRetiredApp"; record: AppRecord }
  | { type: "deleteRetiredApp"; appId: string }
  | { type: "putDelay"; appId: string; delay: LaunchDelay }
  | { type: "deleteDelay"; appId: string }
  | { type: "event"; event: MarathonEvent };

/** A write refused because deployments hold the app; answer 409 with their ids. */
export class ConflictError extends Error {
  constructor(readonly deploymentIds: string[]) {
    super(`App is locked by one or more deployments. Override with the option '?force=true'. Deployments: ${deploymentIds.join(", ")}`);
    this.name = "ConflictError";
  }
}

/** A request about something that does not exist; answer 404. */
export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotFoundError";
  }
}

/** A request breaking a limit or a rule the validators do not see; answer 422. */
export class RefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RefusedError";
  }
}

/** Why an offer was not used for an app (Marathon's reject reasons). */
export type RejectReason =
  | "UnfulfilledRole"
  | "UnfulfilledConstraint"
  | "InsufficientCpus"
  | "InsufficientMemory"
  | "InsufficientDisk"
  | "InsufficientGpus"
  | "InsufficientPorts";

interface QueueStats {
  since: number;
  processed: number;
  unused: number;
  lastUsedAtMs?: number;
  lastUnusedAtMs?: number;
  reasons: Map<RejectReason, number>;
  lastUnused: Array<{ offerId: string; agentId: string; hostname: string; timestampMs: number; reason: RejectReason; detail: string }>;
}

/** `lastTaskFailure` of `/v2/apps/{id}`. */
export interface TaskFailure {
  appId: string;
  taskId: string;
  host: string;
  slaveId: string;
  state: string;
  message: string;
  timestamp: string;
  version: string;
}

/** The last answer of an instance's readiness check, as `readinessCheckResults` shows it. */
export interface ReadinessResult {
  /** The check's name. */
  name: string;
  taskId: string;
  ready: boolean;
  /** The last HTTP answer, kept only with the check's `preserveLastResponse`. */
  lastResponse?: { status: number; contentType: string; body: string };
}

/** What a readiness probe found (the shell's HTTP request). */
export interface ReadinessProbe {
  ready: boolean;
  /** The HTTP answer, when there was one. */
  response?: { status: number; contentType: string; body: string };
}

/** An instance whose readiness the shell should probe, with the check and the port to use. */
export interface ReadinessTarget {
  instance: Instance;
  check: ReadinessCheck;
  /** The host port named by the check's `portName`; undefined when the instance has none. */
  port: number | undefined;
}

/** Result of a write: what `/v2` answers with. */
export interface WriteResult {
  deploymentId: string;
  version: string;
}

/** TaskStatus fields the core reads. */
export interface CoreStatus {
  taskId: string;
  state: string;
  agentId: string;
  message?: string;
  reason?: string;
  healthy?: boolean;
  timestampMs?: number;
}

/** States after which an instance is gone for Marathon: Mesos's terminal states, and UNKNOWN (the master has never heard of it). */
const TERMINAL: ReadonlySet<string> = new Set<string>([...TERMINAL_TASK_STATES, "TASK_UNKNOWN"]);

/**
 * The ends of a task Marathon records as its app's `lastTaskFailure`: failures, not a clean
 * finish or a kill (a kill for failing health checks is recorded where it is decided).
 */
const FAILURE_STATES: ReadonlySet<string> = new Set(["TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"]);

/** One answer of a health check Marathon runs: passed, failed, or discarded (a 1xx with `ignoreHttp1xx`). */
export type HealthAnswer = boolean | "ignored";

/** Health checks Marathon itself runs (the others are run by agents and reported in status updates). */
export const MARATHON_HEALTH_PROTOCOLS = new Set(["HTTP", "HTTPS", "TCP"]);

/** The check a task carries for its agent to run, as in Mesos only one: the app's first COMMAND check. */
function agentRunCheck(app: NormalizedApp): HealthCheck | undefined {
  return app.healthChecks.find((c) => c.protocol === "COMMAND" && c.command !== undefined);
}

/**
 * True when some health check of the app is run: one Marathon runs or the agent-run one. The
 * others (MESOS_HTTP/HTTPS/TCP, further COMMAND checks) are accepted but never answer, so an app
 * with only those is treated as one without health checks (else it would never be healthy).
 */
function hasRunHealthChecks(app: NormalizedApp): boolean {
  return runsMarathonChecks(app) || agentRunCheck(app) !== undefined;
}

/** True when Marathon itself runs some health check of the app (HTTP, HTTPS, TCP). */
function runsMarathonChecks(app: NormalizedApp): boolean {
  return app.healthChecks.some((c) => MARATHON_HEALTH_PROTOCOLS.has(c.protocol));
}

/** The task-id prefix of an app: its path without the leading `/`, `/` written `_`. */
export function appIdToTaskPrefix(appId: string): string {
  return appId.replace(/^\//, "").replaceAll("/", "_");
}

/** ISO time of epoch ms. */
export function iso(ms: number): string {
  // One input stamps thousands of events with the same time: format it once.
  if (ms !== lastIso.ms) lastIso = { ms, text: new Date(ms).toISOString() };
  return lastIso.text;
}

let lastIso = { ms: Number.NaN, text: "" };

// ------------------------------------------------------------------------------------------------
// The core
// ------------------------------------------------------------------------------------------------

export class MarathonCore {
  readonly config: MarathonCoreConfig;
  private readonly apps = new Map<string, AppRecord>();
  /**
   * Each app's place in the insertion order of `apps` (a key set again keeps its place, one
   * deleted and set again goes last), so the few apps an input changed converge in the order a
   * walk over `apps` would visit them without that walk.
   */
  private readonly appRank = new Map<string, number>();
  private nextAppRank = 0;
  private readonly instances = new Map<string, Instance>();
  /** Each instance's place in the insertion order of `instances` (see `appRank`). */
  private readonly instanceRank = new Map<string, number>();
  private nextInstanceRank = 0;
  /** Instance ids by app id, so per-app questions do not scan every instance. */
  private readonly byApp = new Map<string, Set<string>>();
  /** Ids of the instances in state `unreachable`: what a tick's unreachable strategy looks at. */
  private readonly unreachableIds = new Set<string>();
  /** Ids of the instances staging or starting: what a tick's launch timeout looks at. */
  private readonly launchingIds = new Set<string>();
  private readonly deployments = new DeploymentMap((appId) => this.touch(appId));
  /**
   * Apps to converge at the next evaluation (see {@link touch}). What makes skipping the others
   * exact: an app neither here nor held by an unfinished deployment part has no more counting
   * instances than it wants, so converging it does nothing, and its launch-queue count is the
   * one in `queued`.
   */
  private readonly dirtyApps = new Set<string>();
  /**
   * The launch-queue count of every app with one above 0, as of the last refresh; apps in
   * `dirtyApps` or in a running deployment are recounted before it is read ({@link launchQueue}).
   */
  private readonly queued = new Map<string, number>();
  /** Ids of the apps with health checks Marathon runs itself, in their current version or an old instance's (see {@link hasMarathonHealthChecks}). */
  private readonly probedApps = new Set<string>();
  /** Converge calls of the last evaluation (see {@link lastEvaluateVisits}). */
  private evaluateVisits = 0;
  private readonly fullScan: boolean;
  private readonly delays = new Map<string, LaunchDelay>();
  private readonly groups = new Map<string, GroupRecord>();
  /** Versions of the root group, oldest first, at most `maxGroupVersions`; the newest is the current tree. */
  private readonly rootChanges: RootVersionChange[] = [];
  /** The version of each app of the current tree, by id (an app being removed is no longer in it). */
  private readonly tipApps = new Map<string, string>();
  /** How many kept root changes name an app as it was before (an older tree holds it then), by id. */
  private readonly rootRefs = new Map<string, number>();
  /** The histories of removed apps that kept root versions still hold, by id (bounded by those versions). */
  private readonly retired = new Map<string, AppRecord>();
  private readonly queueStats = new Map<string, QueueStats>();
  /** Readiness of instances launched by running deployments, by instance id (bounded by the instances). */
  private readonly readiness = new Map<string, ReadinessResult>();
  /**
   * Agent-run (COMMAND) health verdicts per instance: consecutive failures, and the timestamp of
   * the latest update counted, so a re-delivered update is not counted twice. Bounded by the instances.
   */
  private readonly agentHealth = new Map<string, { failures: number; lastMs: number }>();
  /** The latest verdict of the agent-run (COMMAND) check per instance (bounded by the instances). */
  private readonly agentVerdicts = new Map<string, boolean>();
  /** The answers of the checks Marathon runs, per instance and check index (bounded by the instances). */
  private readonly probeHealth = new Map<string, { failures: number; passed: boolean | undefined; everHealthy: boolean }[]>();
  /** The latest failure of a task per app (`lastTaskFailure`), bounded by the apps. */
  private readonly lastFailures = new Map<string, TaskFailure>();
  /** Whether we told the master to stop sending offers. */
  private suppressed = false;
  /** Set while {@link statusUpdates} applies its updates: the apps converge once, after the last. */
  private deferEvaluate = false;
  private lastVersionMs = 0;
  /** Counters for `/metrics`. */
  readonly counters = { launched: 0, killed: 0, failed: 0, offersProcessed: 0, offersDeclined: 0, deploymentsSucceeded: 0, deploymentsFailed: 0 };

  constructor(
    private readonly rng: Rng,
    config: Partial<MarathonCoreConfig> = {},
    options: MarathonCoreOptions = {},
  ) {
    this.config = { ...DEFAULT_CORE_CONFIG, ...config };
    this.fullScan = options.fullScan ?? false;
  }

  // ---------------------------------------------------------------------------------------------
  // Recovery
  // ---------------------------------------------------------------------------------------------

  /** Loads persisted state (before any other input). Returns the effects to resume. */
  recover(
    state: { apps: AppRecord[]; deployments: Deployment[]; instances: Instance[]; delays?: Array<{ appId: string; delay: LaunchDelay }>; groups?: GroupRecord[]; rootVersions?: RootVersionChange[]; retiredApps?: AppRecord[] },
    nowMs: number,
  ): MarathonEffect[] {
    for (const record of state.apps) this.setAppRecord(record);
    for (const group of state.groups ?? []) this.groups.set(group.id, group);
    // A delay of an app that is gone, or of an older config, is dropped (and forgotten in the store).
    const staleDelays: string[] = [];
    for (const { appId, delay } of state.delays ?? []) {
      const record = this.apps.get(appId);
      if (record && delay.configVersion === record.versionInfo.lastConfigChangeAt) this.delays.set(appId, delay);
      else staleDelays.push(appId);
    }
    for (const instance of state.instances) {
      if (this.apps.has(instance.appId)) this.addInstance(instance);
    }
    for (const deployment of state.deployments) {
      // A removal that finished before the crash is done; a deployment with nothing left is over.
      for (const part of deployment.parts) if (!this.apps.has(part.appId)) part.done = true;
      if (deployment.parts.some((p) => !p.done)) this.deployments.set(deployment.id, deployment);
    }
    for (const record of state.apps) this.lastVersionMs = Math.max(this.lastVersionMs, Date.parse(record.version) || 0);
    // Unknown whether offers are suppressed at the master: start revived.
    this.suppressed = true;
    const effects: MarathonEffect[] = staleDelays.map((appId) => ({ type: "deleteDelay", appId }));
    this.recoverRootVersions(state.rootVersions ?? [], state.retiredApps ?? [], effects);
    // Instances of deleted apps were dropped above; orphans of those are killed by reconciliation.
    for (const instance of state.instances) if (!this.apps.has(instance.appId)) effects.push({ type: "deleteInstance", id: instance.id });
    this.evaluate(nowMs, effects);
    return effects;
  }

  // ---------------------------------------------------------------------------------------------
  // Reads
  // ---------------------------------------------------------------------------------------------

  app(appId: string): AppRecord | undefined {
    return this.apps.get(appId);
  }

  /** The record of a group created through `/v2/groups`, if any. */
  groupRecord(id: string): GroupRecord | undefined {
    return this.groups.get(id);
  }

  /**
   * True when the group exists: the root always; a group with a record; a group above a group
   * with a record; a group above an app.
   */
  groupExists(id: string): boolean {
    return treeHasGroup(id, this.groups.keys(), this.apps.keys());
  }

  /** The groups directly below `id` (with records, or implied by deeper groups and apps), sorted. */
  childGroups(id: string): string[] {
    return treeChildGroups(id, this.groups.keys(), this.apps.keys());
  }

  /** The versions of the root group kept, newest first (the first is the current tree). */
  rootVersions(): string[] {
    return this.rootChanges.map((c) => c.version).reverse();
  }

  /** The versions of the root group at which the group `id` existed, newest first. */
  groupVersions(id: string): string[] {
    const out: string[] = [];
    this.walkBack((version, apps, groups) => {
      if (treeHasGroup(id, groups.keys(), apps.keys())) out.push(version);
      return true;
    });
    return out;
  }

  /**
   * The tree of apps and groups at a kept version of the root group, or undefined when that
   * version is not kept.
   * @throws NotFoundError when an app of that tree has lost the definition (`maxVersionsPerApp` below `maxGroupVersions`)
   */
  rootAt(version: string): RootGroupSnapshot | undefined {
    let found: RootGroupSnapshot | undefined;
    this.walkBack((v, apps, groups) => {
      if (v !== version) return true;
      const resolved = new Map<string, AppVersion>();
      for (const [appId, appVersion] of apps) {
        const definition = this.appAtVersion(appId, appVersion);
        if (!definition) throw new NotFoundError(`App '${appId}' is no longer kept in version ${appVersion}`);
        resolved.set(appId, definition);
      }
      found = { version, apps: resolved, groups: new Map(groups) };
      return false;
    });
    return found;
  }

  /**
   * The changes that bring group `id` (its apps, subgroups and their dependencies) back to how it
   * was at a kept root version (`PUT /v2/groups/{id}` with `{"version": ...}`): apps absent then
   * are removed, apps that differ get their definition of then (apps removed since come back),
   * and the group records below `id` become those of then. Apps that are as they were are left
   * alone. Changes nothing itself: hand the result to {@link deploy} or {@link planSteps}.
   * @throws NotFoundError when the version is not kept, or the group did not exist at it
   */
  groupRollback(id: string, version: string): { changes: AppChange[]; groups: GroupChanges } {
    const then = this.rootAt(version);
    if (!then || !treeHasGroup(id, then.groups.keys(), then.apps.keys())) throw new NotFoundError(`Group '${id}' does not exist in version ${version}`);
    const below = (appId: string) => appId !== id && isSelfOrAncestorId(id, appId);
    const changes: AppChange[] = [];
    // Apps already being removed are left to that removal.
    for (const appId of this.tipApps.keys()) if (below(appId) && !then.apps.has(appId)) changes.push({ remove: appId });
    for (const [appId, past] of then.apps) {
      if (!below(appId)) continue;
      const current = this.apps.get(appId);
      const unchanged = current !== undefined && this.tipApps.has(appId) && stableJson(current.app) === stableJson(past.app);
      if (!unchanged) changes.push({ app: past.app });
    }
    changes.sort((a, b) => cmp(changeId(a), changeId(b)));
    const put = [...then.groups.values()].filter((g) => isSelfOrAncestorId(id, g.id)).map((g) => ({ id: g.id, dependencies: g.dependencies }));
    return { changes, groups: { remove: [id], put } };
  }

  appList(): AppRecord[] {
    return [...this.apps.values()].sort((a, b) => cmp(a.app.id, b.app.id));
  }

  instancesOf(appId: string): Instance[] {
    return this.unorderedInstancesOf(appId).sort((a, b) => a.stagedAtMs - b.stagedAtMs || cmp(a.id, b.id));
  }

  /** The app's instances in the order they were added: for counting, where order does not matter (no sort). */
  private unorderedInstancesOf(appId: string): Instance[] {
    const out: Instance[] = [];
    for (const id of this.byApp.get(appId) ?? []) out.push(this.instances.get(id)!);
    return out;
  }

  /** How many of the app's instances satisfy `test` (no list, no sort). */
  private countInstances(appId: string, test: (i: Instance) => boolean): number {
    let n = 0;
    for (const id of this.byApp.get(appId) ?? []) if (test(this.instances.get(id)!)) n++;
    return n;
  }

  allInstances(): Instance[] {
    return [...this.unorderedInstances()].sort((a, b) => cmp(a.appId, b.appId) || a.stagedAtMs - b.stagedAtMs || cmp(a.id, b.id));
  }

  /** Every instance, in no particular order: for the periodic work (checks, metrics) that needs none (no sort). */
  unorderedInstances(): IterableIterator<Instance> {
    return this.instances.values();
  }

  instance(id: string): Instance | undefined {
    return this.instances.get(id);
  }

  deploymentList(): Deployment[] {
    return [...this.deployments.values()].sort((a, b) => a.startedAtMs - b.startedAtMs || cmp(a.id, b.id));
  }

  /** The deployment holding the app, if any. */
  deploymentOf(appId: string): Deployment | undefined {
    return this.partOf(appId)?.deployment;
  }

  deployment(id: string): Deployment | undefined {
    return this.deployments.get(id);
  }

  isSuppressed(): boolean {
    return this.suppressed;
  }

  /**
   * How many times the last evaluation (the convergence every input ends with) converged an app,
   * over all its passes: what the input cost. An app is converged only when something about it
   * changed or a running deployment holds it, so with every app at rest a tick visits none
   * (with `fullScan`, every app once per pass).
   */
  lastEvaluateVisits(): number {
    return this.evaluateVisits;
  }

  /** True when some instance may have a health check that Marathon runs itself (HTTP, HTTPS, TCP): the shell's health checker has work. */
  hasMarathonHealthChecks(): boolean {
    return this.probedApps.size > 0;
  }

  /**
   * The health checks of an instance: those of the app version it was launched with. As in
   * Marathon, an old instance keeps its own checks during a restart (a new check path the old
   * version does not serve must not get it killed).
   */
  healthChecksOf(instance: Instance): readonly HealthCheck[] {
    const record = this.apps.get(instance.appId);
    return record ? this.launchedApp(instance, record).healthChecks : [];
  }

  /** Whether some health check of the instance's own app version is run (so its health is known in time). */
  isHealthChecked(instance: Instance): boolean {
    const record = this.apps.get(instance.appId);
    return record !== undefined && hasRunHealthChecks(this.launchedApp(instance, record));
  }

  /**
   * The app definition an instance was launched with: the kept version of its config (every
   * version of one config has the same checks), or the current one should that be gone.
   */
  private launchedApp(instance: Instance, record: AppRecord): NormalizedApp {
    if (instance.configVersion === record.versionInfo.lastConfigChangeAt) return record.app;
    return record.versions.find((v) => v.versionInfo.lastConfigChangeAt === instance.configVersion)?.app ?? record.app;
  }

  /**
   * The verdict used by deployments: running, healthy when the app has health checks that run, and ready
   * when a running deployment launched it and the app has a readiness check.
   */
  isReady(instance: Instance): boolean {
    const record = this.apps.get(instance.appId);
    if (instance.state !== "running" || instance.goal !== "running") return false;
    if (!record) return true;
    if (hasRunHealthChecks(this.launchedApp(instance, record)) && instance.healthy !== true) return false;
    return !this.needsReadiness(instance, record) || this.readiness.get(instance.id)?.ready === true;
  }

  /**
   * Marathon checks readiness only for the instances a deployment launches (of the app's current
   * config, staged after the deployment began), and only while the deployment still waits for
   * the app: a replacement launched outside a deployment, or an old instance, needs none.
   */
  private needsReadiness(instance: Instance, record: AppRecord): boolean {
    if (record.app.readinessChecks.length === 0 || instance.configVersion !== record.versionInfo.lastConfigChangeAt) return false;
    const found = this.partOf(instance.appId);
    if (!found || found.part.done || found.part.kind === "stop") return false;
    return instance.stagedAtMs >= found.deployment.startedAtMs;
  }

  /**
   * The instances whose readiness the shell should probe now: launched by a running deployment,
   * running, healthy (when the app has health checks that run) and not yet found ready.
   */
  readinessTargets(): ReadinessTarget[] {
    const out: ReadinessTarget[] = [];
    for (const deployment of this.deployments.values()) {
      for (const part of deployment.parts) {
        const record = this.apps.get(part.appId);
        const check = record?.app.readinessChecks[0];
        if (!record || !check || part.done || part.kind === "stop") continue;
        const portIndex = record.app.portDefinitions.findIndex((p) => p.name === check.portName);
        for (const instance of this.instancesOf(part.appId)) {
          if (instance.state !== "running" || instance.goal !== "running" || !this.needsReadiness(instance, record)) continue;
          if (hasRunHealthChecks(record.app) && instance.healthy !== true) continue;
          if (this.readiness.get(instance.id)?.ready === true) continue;
          out.push({ instance, check, port: portIndex >= 0 ? instance.hostPorts[portIndex] : undefined });
        }
      }
    }
    return out;
  }

  /** Readiness results of the app's instances that a running deployment waits for. */
  readinessResults(appId: string): ReadinessResult[] {
    const record = this.apps.get(appId);
    if (!record || record.app.readinessChecks.length === 0) return [];
    return this.instancesOf(appId).flatMap((i) => {
      const result = this.readiness.get(i.id);
      return result && this.needsReadiness(i, record) ? [result] : [];
    });
  }

  /** Task counts as `/v2/apps` shows them. */
  taskCounts(appId: string): { tasksStaged: number; tasksRunning: number; tasksHealthy: number; tasksUnhealthy: number } {
    const record = this.apps.get(appId);
    const checkedNow = record !== undefined && hasRunHealthChecks(record.app);
    // One pass, no list: `GET /v2/apps` asks this of every app.
    const counts = { tasksStaged: 0, tasksRunning: 0, tasksHealthy: 0, tasksUnhealthy: 0 };
    for (const id of this.byApp.get(appId) ?? []) {
      const i = this.instances.get(id)!;
      if (i.state === "staging" || i.state === "starting") counts.tasksStaged++;
      else if (i.state === "running" || i.state === "killing") counts.tasksRunning++;
      const checked = record !== undefined && (i.configVersion === record.versionInfo.lastConfigChangeAt ? checkedNow : hasRunHealthChecks(this.launchedApp(i, record)));
      if (checked && i.healthy === true) counts.tasksHealthy++;
      else if (checked && i.healthy === false) counts.tasksUnhealthy++;
    }
    return counts;
  }

  /** Instances the app still wants launched now (its launch-queue count). */
  queueCount(appId: string): number {
    const record = this.apps.get(appId);
    if (!record) return 0;
    const found = this.partOf(appId);
    if (found && !found.part.done) {
      if (found.part.kind === "stop" || found.step > found.deployment.currentStep) return 0;
      if (found.part.kind === "restart") {
        const active = this.countInstances(appId, (i) => counts(i) && i.configVersion === record.versionInfo.lastConfigChangeAt);
        return Math.max(0, found.part.newAllowed - active);
      }
    }
    const active = this.countInstances(appId, counts);
    return Math.max(0, record.app.instances - active);
  }

  /** Instances waiting to launch, all apps together: the sum of {@link queueCount} over the apps, without asking each. */
  queuedInstances(): number {
    let n = 0;
    for (const count of this.launchQueue().values()) n += count;
    return n;
  }

  /** The `GET /v2/queue` entries (apps with instances waiting to launch). */
  queue(nowMs: number): Array<{ record: AppRecord; count: number; delay: QueueDelayInfo; since: number; stats: QueueStats }> {
    const out = [];
    for (const record of this.appList()) {
      const count = this.queueCount(record.app.id);
      if (count === 0) continue;
      const stats = this.statsOf(record.app.id, nowMs);
      out.push({ record, count, delay: queueDelayInfo(this.delays.get(record.app.id), record.versionInfo.lastConfigChangeAt, nowMs), since: stats.since, stats });
    }
    return out;
  }

  /** The latest failure of one of the app's tasks: a failure state, or a kill for failing health checks. */
  lastTaskFailure(appId: string): TaskFailure | undefined {
    return this.lastFailures.get(appId);
  }

  /** The app's current launch delay, if any. */
  delayOf(appId: string, nowMs: number): LaunchDelay | undefined {
    const record = this.apps.get(appId);
    return record ? activeDelay(this.delays.get(appId), record.versionInfo.lastConfigChangeAt, nowMs) : undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // API writes
  // ---------------------------------------------------------------------------------------------

  /**
   * Creates or replaces an app (`POST /v2/apps`, `PUT /v2/apps/{id}`). A change of anything but
   * `instances` is a new config version and restarts the app; a change of `instances` alone scales.
   * @throws ConflictError when a deployment holds the app and `force` is not set
   */
  putApp(app: NormalizedApp, options: { force?: boolean; restart?: boolean }, nowMs: number): { result: WriteResult; effects: MarathonEffect[] } {
    return this.deploy([{ app, ...(options.restart ? { restart: true } : {}) }], options, nowMs);
  }

  /** Deletes an app (`DELETE /v2/apps/{id}`): kills its instances, then forgets it. */
  deleteApp(appId: string, options: { force?: boolean }, nowMs: number): { result: WriteResult; effects: MarathonEffect[] } {
    return this.deploy([{ remove: appId }], options, nowMs);
  }

  /**
   * Applies several app changes as one deployment (`/v2/groups` writes, rollbacks): removals
   * first, then the apps in dependency order, one step per layer (an app waits for the apps it
   * depends on, directly or through a group id, or through the dependencies of the groups it is
   * in). `groups` are the group records the write sets or forgets, applied with it.
   * @throws ConflictError when a deployment holds one of the apps and `force` is not set
   * @throws NotFoundError when a removed app does not exist
   * @throws RefusedError beyond `maxApps` or `maxGroups`
   */
  deploy(allChanges: readonly AppChange[], options: { force?: boolean }, nowMs: number, groups: GroupChanges = {}): { result: WriteResult; effects: MarathonEffect[] } {
    const effects: MarathonEffect[] = [];
    this.checkChanges(allChanges, groups);
    const changes = this.effectiveChanges(allChanges);
    const ids = changes.map(changeId);
    // The apps whose place in the tree this write may change: its own, and those of deployments
    // a forced write cancels (an app they were removing stays).
    const touched = new Set(ids);
    for (const d of this.deployments.values()) for (const p of d.parts) touched.add(p.appId);
    this.checkLock(ids, options.force ?? false, nowMs, effects);
    const version = this.nextVersion(nowMs);
    const groupsBefore = this.groupRecordsTouched(groups);
    this.applyGroupChanges(groups, version, effects);
    const parts: DeploymentPart[] = [];
    for (const change of changes) {
      if ("remove" in change) {
        parts.push({ appId: change.remove, kind: "stop", original: this.apps.get(change.remove)!, oldKillsIssued: 0, newAllowed: 0, done: false });
        continue;
      }
      const { app } = change;
      const existing = this.apps.get(app.id);
      const configChanged = existing === undefined || change.restart === true || !sameConfig(existing.app, app);
      const versionInfo: VersionInfo = configChanged
        ? { lastScalingAt: version, lastConfigChangeAt: version }
        : { lastScalingAt: version, lastConfigChangeAt: existing.versionInfo.lastConfigChangeAt };
      const current: AppVersion = { app, version, versionInfo };
      const record: AppRecord = { ...current, versions: [...(existing?.versions ?? []), current].slice(-this.config.maxVersionsPerApp) };
      this.setAppRecord(record);
      if (configChanged) this.clearDelay(app.id, effects); // a new config starts without backoff
      effects.push({ type: "putApp", record });
      parts.push(this.newPart(record, existing, configChanged));
    }
    const deployment: Deployment = { id: this.rng.uuid(), version, steps: this.orderSteps(parts, (id) => this.apps.get(id)!.app, this.groups, [...this.apps.keys()]), currentStep: 0, parts, startedAtMs: nowMs };
    this.deployments.set(deployment.id, deployment);
    effects.push({ type: "putDeployment", deployment: structuredClone(deployment) }, this.deploymentInfoEvent(deployment, nowMs));
    this.recordRootVersion(version, touched, groupsBefore, effects);
    if (parts.length === 0) this.advance(deployment, nowMs, effects); // nothing to do: done at once
    this.evaluate(nowMs, effects);
    return { result: { deploymentId: deployment.id, version }, effects };
  }

  /**
   * The steps {@link deploy} would take for these changes, without taking them (a dry run): no
   * state changes and nothing is persisted. Locks are not checked (a dry run deploys nothing).
   * @throws NotFoundError when a removed app does not exist
   * @throws RefusedError beyond `maxApps` or `maxGroups`
   */
  planSteps(allChanges: readonly AppChange[], groups: GroupChanges = {}): PlannedStep[] {
    this.checkChanges(allChanges, groups);
    const changes = this.effectiveChanges(allChanges);
    const targetGroups = new Map(this.groups);
    for (const removed of groups.remove ?? []) for (const id of [...targetGroups.keys()]) if (isSelfOrAncestorId(removed, id)) targetGroups.delete(id);
    for (const g of groups.put ?? []) targetGroups.set(g.id, { id: g.id, dependencies: [...g.dependencies], version: "" });
    const targets = new Map<string, NormalizedApp>();
    const kinds = new Map<string, DeploymentKind>();
    for (const change of changes) {
      if ("remove" in change) {
        kinds.set(change.remove, "stop");
        continue;
      }
      targets.set(change.app.id, change.app);
      kinds.set(change.app.id, this.plannedKind(change));
    }
    const parts = changes.map((c) => ({ appId: changeId(c), kind: kinds.get(changeId(c))! }));
    const tree = new Set([...this.apps.keys(), ...targets.keys()]);
    const appOf = (id: string) => targets.get(id) ?? this.apps.get(id)!.app;
    return this.orderSteps(parts, appOf, targetGroups, [...tree]).map((step) => ({ actions: step.map((app) => ({ action: ACTION_NAMES[kinds.get(app)!], app })) }));
  }

  /**
   * Kills instances (`POST /v2/tasks/delete`, `DELETE /v2/apps/{id}/tasks[/{taskId}]`). With
   * `scale`, the app's `instances` shrink by the number killed (a new version and a deployment);
   * without, the killed instances are replaced. `wipe` forgets them at once.
   */
  killInstances(ids: readonly string[], options: { scale?: boolean; wipe?: boolean; force?: boolean }, nowMs: number): { result?: WriteResult; killed: Instance[]; effects: MarathonEffect[] } {
    const effects: MarathonEffect[] = [];
    const found = ids.map((id) => this.instances.get(id)).filter((i): i is Instance => i !== undefined);
    if (options.scale) {
      const byApp = new Map<string, Instance[]>();
      for (const i of found) byApp.set(i.appId, [...(byApp.get(i.appId) ?? []), i]);
      if (byApp.size === 0) return { killed: [], effects };
      this.checkLock([...byApp.keys()], options.force ?? false, nowMs, effects);
      for (const list of byApp.values()) for (const i of list) this.stopInstance(i, "stopped", effects, nowMs);
      const changes = [...byApp].map(([appId, list]) => {
        const record = this.apps.get(appId)!;
        return { app: { ...record.app, instances: Math.max(0, record.app.instances - list.length) } };
      });
      const put = this.deploy(changes, { force: true }, nowMs);
      return { result: put.result, killed: found, effects: [...effects, ...put.effects] };
    }
    for (const i of found) {
      this.stopInstance(i, "replace", effects, nowMs);
      if (options.wipe) this.expunge(i, effects, nowMs);
    }
    this.evaluate(nowMs, effects);
    return { killed: found, effects };
  }

  /** `DELETE /v2/queue/{id}/delay`: launch again without waiting. */
  resetDelay(appId: string, nowMs: number): MarathonEffect[] {
    if (!this.apps.has(appId)) throw new NotFoundError(`App '${appId}' does not exist`);
    const effects: MarathonEffect[] = [];
    this.clearDelay(appId, effects);
    this.evaluate(nowMs, effects);
    return effects;
  }

  /**
   * `DELETE /v2/deployments/{id}`: without `force`, rolls back (a new deployment restoring the
   * apps and group records as they were before: created ones are removed, removed ones come back,
   * changed dependencies are restored); with `force`, just stops the deployment where it is.
   */
  cancelDeployment(id: string, options: { force?: boolean }, nowMs: number): { result?: WriteResult; effects: MarathonEffect[] } {
    const deployment = this.deployments.get(id);
    if (!deployment) throw new NotFoundError(`DeploymentPlan ${id} does not exist`);
    const effects: MarathonEffect[] = [];
    this.endDeployment(deployment, "failed", nowMs, effects, "canceled");
    if (options.force) {
      this.evaluate(nowMs, effects);
      return { effects };
    }
    const changes: AppChange[] = [];
    for (const part of deployment.parts) {
      if (part.original === undefined) {
        if (this.apps.has(part.appId)) changes.push({ remove: part.appId });
        continue;
      }
      // A removal already finished: the app comes back with its history.
      if (!this.apps.has(part.appId)) this.setAppRecord(part.original);
      changes.push({ app: part.original.app });
    }
    const groups = this.groupsBeforeDeployment(deployment);
    if (changes.length === 0 && !groups.put?.length && !groups.remove?.length) {
      this.evaluate(nowMs, effects);
      return { effects };
    }
    const restored = this.deploy(changes, { force: true }, nowMs, groups);
    return { result: restored.result, effects: [...effects, ...restored.effects] };
  }

  /**
   * The group changes that undo what the deployment's write did to group records (from the root
   * version it made): groups it created are removed (records below them that it did not create
   * are put back), groups it changed or removed get their dependencies back. Nothing when the
   * write touched no group record or its root version is no longer kept.
   */
  private groupsBeforeDeployment(deployment: Deployment): GroupChanges {
    const change = this.rootChanges.find((c) => c.version === deployment.version);
    if (!change) return {};
    const remove: string[] = [];
    const put: Array<{ id: string; dependencies: string[] }> = [];
    for (const [id, before] of Object.entries(change.groupsBefore)) {
      if (before === null) remove.push(id);
      else put.push({ id, dependencies: [...before.dependencies] });
    }
    // A removal takes every record below it: keep those the write did not create.
    for (const [id, record] of this.groups) {
      if (id in change.groupsBefore) continue;
      if (remove.some((removed) => isSelfOrAncestorId(removed, id))) put.push({ id, dependencies: [...record.dependencies] });
    }
    return { remove, put };
  }

  // ---------------------------------------------------------------------------------------------
  // Mesos inputs
  // ---------------------------------------------------------------------------------------------

  /** New offers: launches what waits (in app-id order), declines the rest. */
  offers(offers: readonly CoreOffer[], nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    const unused: string[] = [];
    let anyWaiting = false;
    // The apps that wait (in id order) and their queue counts, computed once for all the offers
    // of this batch: thousands of apps with nothing to launch then cost nothing per offer.
    const pass: MatchPass = { apps: [], wanted: new Map() };
    const queue = this.launchQueue();
    for (const appId of [...queue.keys()].sort(cmp)) {
      pass.apps.push(this.apps.get(appId)!);
      pass.wanted.set(appId, queue.get(appId)!);
    }
    // Statistics are kept only while an app waits.
    for (const appId of this.queueStats.keys()) if (!queue.has(appId) && this.apps.has(appId)) this.queueStats.delete(appId);
    for (const offer of offers) {
      this.counters.offersProcessed++;
      const tasks = this.matchOffer(offer, nowMs, pass);
      if (tasks.waiting) anyWaiting = true;
      if (tasks.tasks.length > 0) {
        // Persisted before the launch: a restarted Marathon must know every task it may have started.
        for (const task of tasks.tasks) {
          const instance = this.instances.get(task.taskId)!;
          effects.push({ type: "putInstance", instance: { ...instance } }, instanceChanged(instance, "Created", nowMs));
          this.noteActivity(instance, nowMs, effects);
        }
        effects.push({ type: "launch", offerId: offer.id, agentId: offer.agentId, tasks: tasks.tasks });
      }
      else unused.push(offer.id);
    }
    if (unused.length > 0) {
      this.counters.offersDeclined += unused.length;
      effects.push({ type: "decline", offerIds: unused, refuseSeconds: anyWaiting ? this.config.unfitDeclineRefuseSeconds : this.config.idleDeclineRefuseSeconds });
    }
    this.evaluate(nowMs, effects);
    return effects;
  }

  /** A launch could not be sent (offer gone, master refused): forget the instances, relaunch later. */
  launchFailed(taskIds: readonly string[], nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    for (const id of taskIds) {
      const instance = this.instances.get(id);
      if (instance) this.remove(instance, effects);
    }
    this.evaluate(nowMs, effects);
    return effects;
  }

  /**
   * Several task status updates as one input: each is applied in turn and the apps converge once,
   * after the last, rather than after each (which costs a pass over every instance of every app).
   */
  statusUpdates(statuses: readonly CoreStatus[], nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    this.deferEvaluate = true;
    try {
      for (const status of statuses) for (const effect of this.statusUpdate(status, nowMs)) effects.push(effect);
    } finally {
      this.deferEvaluate = false;
    }
    this.evaluate(nowMs, effects);
    return effects;
  }

  /** A task status update (also reconciliation answers). */
  statusUpdate(status: CoreStatus, nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    const instance = this.instances.get(status.taskId);
    if (!instance) {
      // A task we do not know (launched before a crash and never persisted, or of a deleted app).
      if (!TERMINAL.has(status.state) && status.agentId) effects.push({ type: "kill", taskId: status.taskId, agentId: status.agentId });
      return effects;
    }
    const record = this.apps.get(instance.appId);
    if (status.agentId && !instance.agentId) instance.agentId = status.agentId;
    instance.mesosState = status.state;
    const before = { state: instance.state, healthy: instance.healthy };
    if (TERMINAL.has(status.state)) {
      effects.push(this.statusEvent(instance, status, nowMs));
      if (instance.goal === "running" && record) {
        this.counters.failed++;
        if (FAILURE_STATES.has(status.state)) this.lastFailures.set(instance.appId, { appId: instance.appId, taskId: instance.id, host: instance.hostname, slaveId: instance.agentId, state: status.state, message: status.message ?? "", timestamp: iso(nowMs), version: instance.version });
        this.backOff(record, nowMs, effects);
      }
      this.remove(instance, effects);
      effects.push(instanceChanged(instance, status.state === "TASK_FINISHED" ? "Finished" : "Failed", nowMs));
      this.evaluate(nowMs, effects);
      return effects;
    }
    switch (status.state) {
      case "TASK_STAGING":
        break;
      case "TASK_STARTING":
        if (instance.state === "staging") this.setState(instance, "starting");
        break;
      case "TASK_RUNNING":
        delete instance.unreachableSinceMs;
        if (instance.inactive) this.touch(instance.appId); // counts again
        delete instance.inactive;
        if (instance.state !== "killing") this.setState(instance, "running");
        if (before.state !== "running" && instance.state === "running") this.noteActivity(instance, nowMs, effects);
        instance.startedAtMs ??= status.timestampMs ?? nowMs;
        break;
      case "TASK_UNREACHABLE":
        if (instance.state !== "killing") this.setState(instance, "unreachable");
        instance.unreachableSinceMs ??= nowMs;
        this.applyUnreachableStrategy(instance, nowMs, effects);
        if (!this.instances.has(instance.id)) {
          this.evaluate(nowMs, effects);
          return effects;
        }
        break;
      case "TASK_KILLING":
        this.setState(instance, "killing");
        break;
    }
    const launched = record && this.launchedApp(instance, record);
    const agentCheck = launched && agentRunCheck(launched);
    if (launched && agentCheck && status.healthy !== undefined) {
      this.agentVerdicts.set(instance.id, status.healthy);
      instance.healthy = this.combinedHealth(instance, launched) ?? instance.healthy;
    }
    if (before.state !== instance.state || before.healthy !== instance.healthy) {
      effects.push(this.statusEvent(instance, status, nowMs));
      // Staging to starting is not persisted (a store write per launch less): a restarted
      // Marathon treats both alike, and reconciliation tells it where each task really is.
      const durable = !(before.state === "staging" && instance.state === "starting" && before.healthy === instance.healthy);
      if (durable) effects.push({ type: "putInstance", instance: { ...instance } });
      if (before.state !== instance.state) effects.push(instanceChanged(instance, conditionOf(instance), nowMs));
      if (before.healthy !== instance.healthy && instance.healthy !== undefined) effects.push(healthChanged(instance, nowMs));
    }
    if (status.healthy !== undefined && agentCheck && status.reason === "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED") {
      this.countAgentVerdict(instance, status.healthy, status.timestampMs ?? nowMs, agentCheck.protocol, agentCheck.maxConsecutiveFailures, nowMs, effects);
    }
    this.evaluate(nowMs, effects);
    return effects;
  }

  /**
   * The agent reports every counted failure of its check (and the first pass after failures):
   * Marathon counts them as it counts its own checks' and kills the instance, to be replaced,
   * after `maxConsecutiveFailures` in a row (0: never). An update older than the last one counted
   * is a re-delivery (or a reconciliation answer) and counts nothing.
   */
  private countAgentVerdict(instance: Instance, healthy: boolean, atMs: number, protocol: string, maxFailures: number, nowMs: number, effects: MarathonEffect[]): void {
    const seen = this.agentHealth.get(instance.id);
    if (seen && atMs <= seen.lastMs) return;
    const failures = healthy ? 0 : (seen?.failures ?? 0) + 1;
    this.agentHealth.set(instance.id, { failures, lastMs: atMs });
    if (!healthy && maxFailures > 0 && failures >= maxFailures && instance.goal === "running") this.killUnhealthy(instance, `${protocol} health check ${failures} times in a row`, nowMs, effects);
  }

  /**
   * Kills an instance that failed its health checks (`failed` says which and how often); as a
   * crash does, this backs the app's launches off, and, as in Marathon, it is the app's
   * `lastTaskFailure` (the replaced task's own end is not counted as one).
   */
  private killUnhealthy(instance: Instance, failed: string, nowMs: number, effects: MarathonEffect[]): void {
    effects.push({ type: "event", event: { eventType: "unhealthy_instance_kill_event", timestamp: iso(nowMs), appId: instance.appId, taskId: instance.id, instanceId: instance.id, version: instance.version, reason: "health check failed", host: instance.hostname, slaveId: instance.agentId } });
    this.lastFailures.set(instance.appId, { appId: instance.appId, taskId: instance.id, host: instance.hostname, slaveId: instance.agentId, state: "TASK_KILLED", message: `Killed for failing its ${failed}`, timestamp: iso(nowMs), version: instance.version });
    const record = this.apps.get(instance.appId);
    if (record) this.backOff(record, nowMs, effects);
    this.stopInstance(instance, "replace", effects, nowMs);
  }

  /** Records a failure of the app's current config: its launches wait one more backoff step. */
  private backOff(record: AppRecord, nowMs: number, effects: MarathonEffect[]): void {
    const appId = record.app.id;
    const delay = recordFailure(this.delays.get(appId), record.app, record.versionInfo.lastConfigChangeAt, nowMs);
    this.delays.set(appId, delay);
    effects.push({ type: "putDelay", appId, delay });
  }

  /**
   * One answer of a health check Marathon runs (HTTP, HTTPS, TCP; `checkIndex` into the
   * `healthChecks` of the app version the instance was launched with), with Marathon's semantics:
   * a failure within `gracePeriodSeconds` of the task's start does not count until the instance
   * was healthy once; the instance is healthy once every check (these and the agent-run one) last
   * passed, and is killed (to be replaced) after `maxConsecutiveFailures` failures in a row (0:
   * never). An answer Marathon discards changes nothing.
   */
  health(instanceId: string, checkIndex: number, answer: HealthAnswer, nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    if (answer === "ignored") return effects;
    const ok = answer;
    const instance = this.instances.get(instanceId);
    const record = instance && this.apps.get(instance.appId);
    const app = record && this.launchedApp(instance, record);
    const checks = app?.healthChecks;
    const check = checks?.[checkIndex];
    if (!instance || instance.goal !== "running" || !app || !checks || !check || !MARATHON_HEALTH_PROTOCOLS.has(check.protocol)) return effects;
    let states = this.probeHealth.get(instanceId);
    if (!states || states.length !== checks.length) {
      states = checks.map(() => ({ failures: 0, passed: undefined, everHealthy: false }));
      this.probeHealth.set(instanceId, states);
    }
    const state = states[checkIndex]!;
    if (ok) {
      state.failures = 0;
      state.passed = true;
      state.everHealthy = true;
    } else {
      const inGrace = !state.everHealthy && nowMs - (instance.startedAtMs ?? instance.stagedAtMs) < check.gracePeriodSeconds * 1000;
      if (inGrace) return effects;
      state.failures++;
      state.passed = false;
    }
    const healthy = this.combinedHealth(instance, app);
    if (healthy === undefined) return effects; // every check's first answer first (a failure is never undefined)
    if (instance.healthy !== healthy) {
      instance.healthy = healthy;
      effects.push(healthChanged(instance, nowMs));
    }
    if (!ok && check.maxConsecutiveFailures > 0 && state.failures >= check.maxConsecutiveFailures) {
      this.killUnhealthy(instance, `${check.protocol} health check ${state.failures} times in a row`, nowMs, effects);
    }
    this.evaluate(nowMs, effects);
    return effects;
  }

  /**
   * An instance's health from the latest verdict of each of its checks (those Marathon runs and
   * the one the agent runs), combined as Marathon does: healthy only while every one passes,
   * unhealthy as soon as one fails; undefined (the health stays as it was) while none failed and
   * some has not answered yet.
   */
  private combinedHealth(instance: Instance, app: NormalizedApp): boolean | undefined {
    const states = this.probeHealth.get(instance.id);
    const probes = states?.length === app.healthChecks.length ? states : undefined;
    const verdicts = app.healthChecks.flatMap((c, i) => (MARATHON_HEALTH_PROTOCOLS.has(c.protocol) ? [probes?.[i]!.passed] : []));
    if (agentRunCheck(app)) verdicts.push(this.agentVerdicts.get(instance.id));
    if (verdicts.some((v) => v === false)) return false;
    return verdicts.length > 0 && verdicts.every((v) => v === true) ? true : undefined;
  }

  /**
   * What a readiness probe of an instance found. Once ready, an instance stays ready (Marathon
   * stops checking it); a deployment waiting for it moves on.
   */
  readinessResult(instanceId: string, probe: ReadinessProbe, nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    const instance = this.instances.get(instanceId);
    const record = instance && this.apps.get(instance.appId);
    const check = record?.app.readinessChecks[0];
    if (!instance || !record || !check || !this.needsReadiness(instance, record)) return effects;
    if (this.readiness.get(instanceId)?.ready === true) return effects;
    this.readiness.set(instanceId, {
      name: check.name,
      taskId: instanceId,
      ready: probe.ready,
      ...(check.preserveLastResponse && probe.response ? { lastResponse: probe.response } : {}),
    });
    if (probe.ready) this.evaluate(nowMs, effects);
    return effects;
  }

  /**
   * The driver (re-)subscribed: the master's idea of our suppression is unknown, so say it again.
   */
  subscribed(nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    this.evaluate(nowMs, effects);
    const waiting = this.waitingForOffers(nowMs);
    if (!effects.some((e) => e.type === "suppress" || e.type === "revive")) effects.push(waiting ? { type: "revive" } : { type: "suppress" });
    this.suppressed = !waiting;
    return effects;
  }

  /** Periodic: launch timeouts, delays running out, unreachable instances, deployment progress. */
  tick(nowMs: number): MarathonEffect[] {
    const effects: MarathonEffect[] = [];
    for (const instance of this.instancesToCheck(this.unreachableIds)) if (instance.state === "unreachable") this.applyUnreachableStrategy(instance, nowMs, effects);
    for (const instance of this.instancesToCheck(this.launchingIds)) {
      if ((instance.state === "staging" || instance.state === "starting") && instance.goal === "running" && nowMs - instance.stagedAtMs > this.config.taskLaunchTimeoutMs) {
        this.stopInstance(instance, "replace", effects, nowMs);
      }
    }
    this.evaluate(nowMs, effects);
    return effects;
  }

  /**
   * The instances of `ids` in the order of `instances` (what a walk over every instance would
   * visit of them); all instances with `fullScan`. A list: the caller may change the set.
   */
  private instancesToCheck(ids: ReadonlySet<string>): Instance[] {
    if (this.fullScan) return [...this.instances.values()];
    const list = [...ids];
    if (list.length > 1) list.sort((a, b) => this.instanceRank.get(a)! - this.instanceRank.get(b)!);
    return list.map((id) => this.instances.get(id)!);
  }

  /** When the next tick is useful (a launch delay running out), epoch ms; undefined: no need. */
  nextWakeMs(nowMs: number): number | undefined {
    let next: number | undefined;
    for (const appId of this.launchQueue().keys()) {
      const record = this.apps.get(appId)!;
      const at = launchAllowedAtMs(this.delays.get(appId), record.versionInfo.lastConfigChangeAt, nowMs);
      if (at > nowMs && (next === undefined || at < next)) next = at;
    }
    return next;
  }

  // ---------------------------------------------------------------------------------------------
  // Internals: deployments
  // ---------------------------------------------------------------------------------------------

  private checkLock(appIds: readonly string[], force: boolean, nowMs: number, effects: MarathonEffect[]): void {
    const wanted = new Set(appIds);
    const holding = [...this.deployments.values()].filter((d) => d.parts.some((p) => wanted.has(p.appId)));
    if (holding.length === 0) return;
    if (!force) throw new ConflictError(holding.map((d) => d.id));
    for (const d of holding) this.endDeployment(d, "failed", nowMs, effects, "superseded by a forced deployment");
  }

  /**
   * The part a write gives an app: a new app starts; a new config restarts (as in Marathon, even
   * with no instance to replace: the restart then just starts the new ones); otherwise the app
   * scales, unless instances of an older config are left to replace.
   */
  private newPart(record: AppRecord, existing: AppRecord | undefined, configChanged: boolean): DeploymentPart {
    const active = this.instancesOf(record.app.id).filter(counts);
    const stale = active.filter((i) => i.configVersion !== record.versionInfo.lastConfigChangeAt);
    const kind: DeploymentKind = existing === undefined ? "start" : configChanged || stale.length > 0 ? "restart" : "scale";
    const part: DeploymentPart = { appId: record.app.id, kind, ...(existing ? { original: existing } : {}), oldKillsIssued: 0, newAllowed: 0, done: false };
    if (kind === "restart") {
      const healthy = stale.filter((i) => this.isReady(i)).length;
      // New instances already running (a forced re-deployment of the same config) count as
      // started, and those ready as healthy: as in Marathon, they keep old ones from going at once.
      const fresh = active.filter((i) => i.configVersion === record.versionInfo.lastConfigChangeAt);
      const started = Math.min(record.app.instances, fresh.length);
      const ready = Math.min(started, fresh.filter((i) => this.isReady(i)).length);
      part.plan = computeRestartPlan(record.app.instances, record.app.upgradeStrategy, stale.length, healthy, { started, ready });
      part.newAllowed = started;
    }
    return part;
  }

  private applyGroupChanges(groups: GroupChanges, version: string, effects: MarathonEffect[]): void {
    for (const removed of groups.remove ?? []) {
      for (const id of [...this.groups.keys()]) {
        if (!isSelfOrAncestorId(removed, id)) continue;
        this.groups.delete(id);
        effects.push({ type: "deleteGroup", id });
      }
    }
    for (const g of groups.put ?? []) {
      const record: GroupRecord = { id: g.id, dependencies: [...g.dependencies], version };
      this.groups.set(g.id, record);
      effects.push({ type: "putGroup", group: record });
    }
  }

  /**
   * What an app waits for in a deployment: its own dependencies and, as in Marathon, those of the
   * groups it is in (a group's dependency on a group that holds the app itself is no wait).
   */
  private dependenciesOf(app: NormalizedApp, groups: ReadonlyMap<string, GroupRecord>): string[] {
    const out = [...app.dependencies];
    for (let id = parentId(app.id); ; id = parentId(id)) {
      for (const d of groups.get(id)?.dependencies ?? []) if (!isSelfOrAncestorId(d, app.id)) out.push(d);
      if (id === "/") break;
    }
    return out;
  }

  /**
   * Removals first; then layers of apps, each after the apps (or groups) it depends on, directly
   * or through apps of the tree the deployment leaves alone (Marathon orders by the dependency
   * graph of the whole target tree). `appOf` answers for every app of `treeIds`, the target tree
   * (the apps being removed are left out of it here).
   */
  private orderSteps(parts: ReadonlyArray<{ appId: string; kind: DeploymentKind }>, appOf: (appId: string) => NormalizedApp, groups: ReadonlyMap<string, GroupRecord>, treeIds: readonly string[]): string[][] {
    const steps: string[][] = [];
    const stops = parts.filter((p) => p.kind === "stop").map((p) => p.appId);
    if (stops.length > 0) steps.push(stops);
    let left = parts.filter((p) => p.kind !== "stop").map((p) => appOf(p.appId));
    const removed = new Set(stops);
    const tree = treeIds.filter((id) => !removed.has(id));
    const deployed = new Set(left.map((a) => a.id));
    const covered = new Map<string, string[]>();
    const appsUnder = (dependency: string) => {
      let ids = covered.get(dependency);
      if (ids === undefined) covered.set(dependency, (ids = tree.filter((id) => isSelfOrAncestorId(dependency, id))));
      return ids;
    };
    const deps = new Map(left.map((a) => [a, this.deployedDependencies(a, deployed, appOf, groups, appsUnder)]));
    while (left.length > 0) {
      const waiting = (a: NormalizedApp) => left.some((b) => b !== a && deps.get(a)!.has(b.id));
      let layer = left.filter((a) => !waiting(a));
      if (layer.length === 0) layer = left; // a cycle (validation refuses them): no order to keep
      steps.push(layer.map((a) => a.id).sort(cmp));
      left = left.filter((a) => !layer.includes(a));
    }
    return steps;
  }

  /**
   * The apps of a deployment (`deployed`) that `app` waits for: those its dependencies name, and
   * those the apps it depends on outside the deployment depend on, and so on. Not followed
   * through apps of the deployment: they wait for theirs themselves, a step earlier.
   */
  private deployedDependencies(app: NormalizedApp, deployed: ReadonlySet<string>, appOf: (appId: string) => NormalizedApp, groups: ReadonlyMap<string, GroupRecord>, appsUnder: (dependency: string) => readonly string[]): Set<string> {
    const out = new Set<string>();
    const seen = new Set<string>([app.id]);
    const pending = [app];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      for (const dependency of this.dependenciesOf(next, groups)) {
        for (const id of appsUnder(dependency)) {
          if (seen.has(id)) continue;
          seen.add(id);
          if (deployed.has(id)) out.add(id);
          else pending.push(appOf(id));
        }
      }
    }
    return out;
  }

  /** Sets an app's record; every write of `apps` goes through here or {@link deleteAppRecord}. */
  private setAppRecord(record: AppRecord): void {
    const appId = record.app.id;
    if (!this.apps.has(appId)) this.appRank.set(appId, this.nextAppRank++);
    this.apps.set(appId, record);
    this.refreshProbed(appId);
    this.touch(appId);
  }

  /**
   * Whether the app goes in `probedApps`: its current version has a check Marathon runs, or an
   * instance of an older config (during a restart) still runs one of its own.
   */
  private refreshProbed(appId: string): void {
    const record = this.apps.get(appId);
    const probed =
      record !== undefined &&
      (runsMarathonChecks(record.app) ||
        [...(this.byApp.get(appId) ?? [])].some((id) => {
          const i = this.instances.get(id)!;
          return i.configVersion !== record.versionInfo.lastConfigChangeAt && runsMarathonChecks(this.launchedApp(i, record));
        }));
    if (probed) this.probedApps.add(appId);
    else this.probedApps.delete(appId);
  }

  private deleteAppRecord(appId: string): void {
    this.apps.delete(appId);
    this.appRank.delete(appId);
    this.probedApps.delete(appId);
    this.touch(appId);
  }

  private partOf(appId: string): DeploymentHold | undefined {
    return this.deployments.holding(appId);
  }

  private endDeployment(deployment: Deployment, outcome: "success" | "failed", nowMs: number, effects: MarathonEffect[], reason?: string): void {
    this.deployments.delete(deployment.id);
    // Readiness matters only while a deployment waits for it.
    for (const part of deployment.parts) for (const id of this.byApp.get(part.appId) ?? []) this.readiness.delete(id);
    effects.push({ type: "deleteDeployment", id: deployment.id });
    const plan = this.deploymentPlanJson(deployment);
    if (outcome === "success") {
      this.counters.deploymentsSucceeded++;
      effects.push({ type: "event", event: { eventType: "deployment_success", timestamp: iso(nowMs), id: deployment.id, plan } });
    } else {
      this.counters.deploymentsFailed++;
      effects.push({ type: "event", event: { eventType: "deployment_failed", timestamp: iso(nowMs), id: deployment.id, plan, ...(reason ? { reason } : {}) } });
    }
  }

  /** Moves to the next step when every part of the current one is done; ends the deployment after the last. */
  private advance(deployment: Deployment, nowMs: number, effects: MarathonEffect[]): boolean {
    let moved = false;
    while (deployment.currentStep < deployment.steps.length) {
      const step = deployment.steps[deployment.currentStep]!;
      if (!step.every((id) => deployment.parts.find((p) => p.appId === id)?.done ?? true)) break;
      effects.push({ type: "event", event: { eventType: "deployment_step_success", timestamp: iso(nowMs), plan: this.deploymentPlanJson(deployment), currentStep: this.stepJson(deployment, step) } });
      deployment.currentStep++;
      moved = true;
      // Marathon announces every step as it starts, not only the first.
      if (deployment.currentStep < deployment.steps.length) effects.push(this.deploymentInfoEvent(deployment, nowMs));
    }
    if (deployment.currentStep >= deployment.steps.length) this.endDeployment(deployment, "success", nowMs, effects);
    else if (moved) effects.push({ type: "putDeployment", deployment: structuredClone(deployment) });
    return moved;
  }

  private deploymentInfoEvent(deployment: Deployment, nowMs: number): MarathonEffect {
    const plan = this.deploymentPlanJson(deployment);
    return { type: "event", event: { eventType: "deployment_info", timestamp: iso(nowMs), plan, currentStep: plan.steps[deployment.currentStep] ?? { actions: [] } } };
  }

  private stepJson(deployment: Deployment, step: readonly string[]): { actions: Array<{ action: string; app: string }> } {
    return { actions: step.map((appId) => ({ action: ACTION_NAMES[deployment.parts.find((p) => p.appId === appId)?.kind ?? "scale"], app: appId })) };
  }

  /** The deployment as `GET /v2/deployments` shows it. */
  deploymentJson(deployment: Deployment): Record<string, unknown> {
    const steps = deployment.steps.map((s) => this.stepJson(deployment, s));
    const current = steps[Math.min(deployment.currentStep, steps.length - 1)] ?? { actions: [] };
    return {
      id: deployment.id,
      version: deployment.version,
      affectedApps: deployment.parts.map((p) => p.appId).sort(cmp),
      affectedPods: [],
      steps,
      currentActions: current.actions.map((a) => ({ ...a, readinessCheckResults: this.readinessResults(a.app) })),
      currentStep: Math.min(deployment.currentStep + 1, steps.length),
      totalSteps: steps.length,
    };
  }

  private deploymentPlanJson(deployment: Deployment): { id: string; version: string; steps: Array<{ actions: Array<{ action: string; app: string }> }>; original: unknown; target: unknown } {
    return {
      id: deployment.id,
      version: deployment.version,
      steps: deployment.steps.map((s) => this.stepJson(deployment, s)),
      original: { apps: deployment.parts.flatMap((p) => (p.original ? [p.original.app] : [])) },
      target: { apps: deployment.parts.flatMap((p) => (p.kind === "stop" ? [] : [this.apps.get(p.appId)?.app ?? []].flat())) },
    };
  }

  /**
   * Converges every app toward its goal and moves deployments on; also SUPPRESS/REVIVE. Called
   * at the end of every input, so the whole machine is a function of the state, not of history.
   */
  private evaluate(nowMs: number, effects: MarathonEffect[]): void {
    // The marks made meanwhile stay until the evaluation that follows the batch.
    if (this.deferEvaluate) return;
    // A finished step starts the next one, whose apps converge in another pass.
    let visits = 0;
    for (let pass = 0; pass < 64; pass++) {
      let moved = false;
      for (const record of this.convergeTargets()) {
        visits++;
        if (this.converge(record, nowMs, effects)) moved = true;
      }
      if (!moved) break;
    }
    this.evaluateVisits = visits;
    this.settleDirtyApps();
    const waiting = this.waitingForOffers(nowMs);
    if (waiting && this.suppressed) {
      this.suppressed = false;
      effects.push({ type: "revive" });
    } else if (!waiting && !this.suppressed) {
      this.suppressed = true;
      effects.push({ type: "suppress" });
    }
  }

  /**
   * The apps one pass of {@link evaluate} converges, in the order of `apps`: those marked since
   * they were last found at rest, and those an unfinished deployment part holds (its step may
   * start, its readiness or health may change). Converging any other app does nothing (see
   * `dirtyApps`), so skipping it changes no effect.
   */
  private convergeTargets(): AppRecord[] {
    if (this.fullScan) return [...this.apps.values()];
    const ids = new Set<string>();
    for (const appId of this.dirtyApps) if (this.apps.has(appId)) ids.add(appId);
    for (const deployment of this.deployments.values()) for (const part of deployment.parts) if (!part.done && this.apps.has(part.appId)) ids.add(part.appId);
    if (ids.size === 0) return [];
    return [...ids].sort((a, b) => this.appRank.get(a)! - this.appRank.get(b)!).map((appId) => this.apps.get(appId)!);
  }

  /**
   * Marks an app whose next {@link converge} or launch-queue count may differ: one of its
   * instances was added or removed or changed goal, state or `inactive`, its record was set or
   * deleted, it entered or left a deployment, or its part finished. Health and readiness matter
   * only to apps an unfinished part holds, which every evaluation visits anyway.
   */
  private touch(appId: string): void {
    this.dirtyApps.add(appId);
  }

  /** Marks a deployment part done; the app then converges as an app at rest. */
  private finishPart(part: DeploymentPart): void {
    part.done = true;
    this.touch(part.appId);
  }

  /**
   * After an evaluation: recounts the launch queue of the marked apps, and unmarks those that
   * are at rest without surplus (the rest, such as an app whose restart just finished with
   * instances to spare, converge again at the next evaluation, as every app did before).
   */
  private settleDirtyApps(): void {
    for (const appId of this.dirtyApps) {
      this.recountQueue(appId);
      const record = this.apps.get(appId);
      const hold = this.partOf(appId);
      if (record === undefined || (hold !== undefined && !hold.part.done) || this.countInstances(appId, counts) <= record.app.instances) this.dirtyApps.delete(appId);
    }
  }

  private recountQueue(appId: string): void {
    const count = this.queueCount(appId);
    if (count > 0) this.queued.set(appId, count);
    else this.queued.delete(appId);
  }

  /**
   * The launch-queue count of every app with one above 0 (by app id, in no particular order).
   * Kept between inputs: only the marked apps and those of running deployments (whose steps and
   * restarts move the count) are recounted.
   */
  private launchQueue(): ReadonlyMap<string, number> {
    if (this.fullScan) {
      const all = new Map<string, number>();
      for (const appId of this.apps.keys()) {
        const count = this.queueCount(appId);
        if (count > 0) all.set(appId, count);
      }
      return all;
    }
    for (const appId of this.dirtyApps) this.recountQueue(appId);
    for (const deployment of this.deployments.values()) for (const part of deployment.parts) this.recountQueue(part.appId);
    return this.queued;
  }

  /** True when some app has instances to launch now (not held back by a delay). */
  private waitingForOffers(nowMs: number): boolean {
    for (const appId of this.launchQueue().keys()) {
      const record = this.apps.get(appId)!;
      if (canLaunch(this.delays.get(appId), record.versionInfo.lastConfigChangeAt, nowMs)) return true;
    }
    return false;
  }

  /** Converges one app; true when its deployment moved to another step. */
  private converge(record: AppRecord, nowMs: number, effects: MarathonEffect[]): boolean {
    const appId = record.app.id;
    const found = this.partOf(appId);
    const part = found && !found.part.done ? found.part : undefined;
    if (found && part && found.step > found.deployment.currentStep) return false; // waits for its step
    // An app at rest without surplus: nothing to do. Evaluations skip the apps known to be so
    // (see `dirtyApps`); this test is what that knowledge stands for.
    if (!part && this.countInstances(appId, counts) <= record.app.instances) return false;
    // Stops and restarts act on instances in order; starts and scales only count them (no list).
    const list = part?.kind === "stop" || part?.kind === "restart" ? this.instancesOf(appId) : [];
    if (found && part?.kind === "stop") {
      for (const i of list) if (i.goal !== "stopped") this.stopInstance(i, "stopped", effects, nowMs);
      if (list.length > 0) return false;
      this.deleteAppRecord(appId);
      this.retire(record, effects);
      this.clearDelay(appId, effects);
      this.queueStats.delete(appId);
      this.lastFailures.delete(appId);
      effects.push({ type: "deleteApp", appId });
      effects.push({ type: "event", event: { eventType: "app_terminated_event", timestamp: iso(nowMs), appId } });
      this.finishPart(part);
      return this.advance(found.deployment, nowMs, effects);
    }
    if (found && part?.kind === "restart" && part.plan) {
      if (!this.convergeRestart(record, found.deployment, part, part.plan, list, nowMs, effects)) return false;
      this.finishPart(part);
      return this.advance(found.deployment, nowMs, effects);
    }
    const surplus = this.countInstances(appId, counts) - record.app.instances;
    if (surplus > 0) {
      const active = this.unorderedInstancesOf(appId).filter(counts);
      const chosen = selectInstancesToKill(active.map(candidate), surplus, { killSelection: record.app.killSelection, constraints: record.app.constraints });
      for (const c of chosen) this.stopInstance(this.instances.get(c.id)!, "stopped", effects, nowMs);
    }
    if (found && part) {
      // Exactly `instances` instances (the surplus is gone; an inactive one waiting to be
      // expunged is not one of them), and every one this deployment launched is ready. As in
      // Marathon's scaling, instances it found and keeps are not waited for, healthy or not.
      const startedAtMs = found.deployment.startedAtMs;
      const count = this.countInstances(appId, (i) => !i.inactive);
      const waiting = this.countInstances(appId, (i) => !i.inactive && i.stagedAtMs >= startedAtMs && !this.isReady(i));
      const done = count === record.app.instances && waiting === 0;
      if (done) {
        this.finishPart(part);
        return this.advance(found.deployment, nowMs, effects);
      }
    }
    return false;
  }

  /** Carries a rolling restart on; true when it is complete. */
  private convergeRestart(record: AppRecord, deployment: Deployment, part: DeploymentPart, plan: RestartPlan, list: Instance[], nowMs: number, effects: MarathonEffect[]): boolean {
    const config = record.versionInfo.lastConfigChangeAt;
    const old = list.filter((i) => i.configVersion !== config && counts(i));
    const fresh = list.filter((i) => i.configVersion === config && counts(i));
    const state: RolloutState = {
      oldRunning: old.length,
      oldHealthy: old.filter((i) => this.isReady(i)).length,
      oldStopping: list.filter((i) => i.configVersion !== config && i.goal === "stopped").length,
      oldKillsIssued: part.oldKillsIssued,
      newStarted: part.newAllowed,
      newHealthy: fresh.filter((i) => this.isReady(i)).length,
    };
    if (isRolloutComplete(plan, state) && list.every((i) => i.goal !== "stopped")) return true;
    const step = rolloutStep(plan, state);
    if (step.killOld > 0) {
      const chosen = selectInstancesToKill(old.map(candidate), step.killOld, { killSelection: record.app.killSelection });
      for (const c of chosen) this.stopInstance(this.instances.get(c.id)!, "stopped", effects, nowMs);
      part.oldKillsIssued += chosen.length;
    }
    if (step.startNew > 0) part.newAllowed += step.startNew;
    if (step.killOld > 0 || step.startNew > 0) effects.push({ type: "putDeployment", deployment: structuredClone(deployment) });
    return false;
  }

  // ---------------------------------------------------------------------------------------------
  // Internals: instances
  // ---------------------------------------------------------------------------------------------

  private stopInstance(instance: Instance, goal: "stopped" | "replace", effects: MarathonEffect[], nowMs: number): void {
    if (instance.goal === "stopped") return;
    const first = instance.goal === "running";
    instance.goal = goal;
    this.touch(instance.appId);
    if (first || instance.state !== "killing") {
      this.setState(instance, "killing");
      this.counters.killed++;
      const record = this.apps.get(instance.appId);
      const grace = record?.app.taskKillGracePeriodSeconds;
      effects.push({ type: "kill", taskId: instance.id, agentId: instance.agentId, ...(grace !== undefined ? { gracePeriodSeconds: grace } : {}) });
      effects.push({ type: "putInstance", instance: { ...instance } });
      effects.push(instanceChanged(instance, "Killing", nowMs));
    }
  }

  /**
   * Marathon's `unreachableStrategy`: unreachable for `inactiveAfterSeconds`, an instance becomes
   * inactive (a replacement is launched; it is kept in case it comes back); unreachable for
   * `expungeAfterSeconds`, it is given up: killed (in case its agent comes back) and forgotten.
   * `"disabled"` keeps waiting for it.
   */
  private applyUnreachableStrategy(instance: Instance, nowMs: number, effects: MarathonEffect[]): void {
    const strategy = this.apps.get(instance.appId)?.app.unreachableStrategy;
    if (strategy === undefined || strategy === "disabled" || instance.unreachableSinceMs === undefined) return;
    const unreachableMs = nowMs - instance.unreachableSinceMs;
    if (unreachableMs >= strategy.expungeAfterSeconds * 1000) {
      effects.push({ type: "kill", taskId: instance.id, agentId: instance.agentId });
      this.expunge(instance, effects, nowMs);
    } else if (unreachableMs >= strategy.inactiveAfterSeconds * 1000 && !instance.inactive) {
      instance.inactive = true;
      this.touch(instance.appId);
      effects.push({ type: "putInstance", instance: { ...instance } });
      effects.push(instanceChanged(instance, conditionOf(instance), nowMs));
    }
  }

  /**
   * An instance of the app's current config was launched or started: its launch delay, if any, is
   * remembered for its ceiling from now (see {@link recordActivity}).
   */
  private noteActivity(instance: Instance, nowMs: number, effects: MarathonEffect[]): void {
    const record = this.apps.get(instance.appId);
    if (!record || instance.configVersion !== record.versionInfo.lastConfigChangeAt) return;
    const delay = recordActivity(this.delays.get(instance.appId), instance.configVersion, nowMs);
    if (delay === undefined) return;
    this.delays.set(instance.appId, delay);
    effects.push({ type: "putDelay", appId: instance.appId, delay });
  }

  /** Forgets the app's launch delay, here and in the store. */
  private clearDelay(appId: string, effects: MarathonEffect[]): void {
    if (this.delays.delete(appId)) effects.push({ type: "deleteDelay", appId });
  }

  private addInstance(instance: Instance): void {
    if (!this.instances.has(instance.id)) this.instanceRank.set(instance.id, this.nextInstanceRank++);
    this.instances.set(instance.id, instance);
    let ids = this.byApp.get(instance.appId);
    if (!ids) this.byApp.set(instance.appId, (ids = new Set()));
    ids.add(instance.id);
    this.trackState(instance);
    // One of an older config (recovered mid-restart) may have checks the current version has not.
    const record = this.apps.get(instance.appId);
    if (record && runsMarathonChecks(this.launchedApp(instance, record))) this.probedApps.add(instance.appId);
    this.touch(instance.appId);
  }

  /** Sets what Marathon thinks the instance is doing; every change of `state` goes through here. */
  private setState(instance: Instance, state: InstanceState): void {
    instance.state = state;
    this.trackState(instance);
    this.touch(instance.appId);
  }

  /** Keeps the instance in the sets by state that ticks walk instead of every instance. */
  private trackState(instance: Instance): void {
    if (instance.state === "unreachable") this.unreachableIds.add(instance.id);
    else this.unreachableIds.delete(instance.id);
    if (instance.state === "staging" || instance.state === "starting") this.launchingIds.add(instance.id);
    else this.launchingIds.delete(instance.id);
  }

  private expunge(instance: Instance, effects: MarathonEffect[], nowMs: number): void {
    this.remove(instance, effects);
    effects.push(instanceChanged(instance, "Killed", nowMs));
  }

  private remove(instance: Instance, effects: MarathonEffect[]): void {
    this.instances.delete(instance.id);
    this.readiness.delete(instance.id);
    this.agentHealth.delete(instance.id);
    this.agentVerdicts.delete(instance.id);
    this.probeHealth.delete(instance.id);
    this.instanceRank.delete(instance.id);
    this.unreachableIds.delete(instance.id);
    this.launchingIds.delete(instance.id);
    const ids = this.byApp.get(instance.appId);
    ids?.delete(instance.id);
    if (ids?.size === 0) this.byApp.delete(instance.appId);
    const record = this.apps.get(instance.appId);
    if (record && instance.configVersion !== record.versionInfo.lastConfigChangeAt) this.refreshProbed(instance.appId);
    this.touch(instance.appId);
    effects.push({ type: "deleteInstance", id: instance.id });
  }

  // ---------------------------------------------------------------------------------------------
  // Internals: offers
  // ---------------------------------------------------------------------------------------------

  private statsOf(appId: string, nowMs: number): QueueStats {
    let stats = this.queueStats.get(appId);
    if (!stats) {
      stats = { since: nowMs, processed: 0, unused: 0, reasons: new Map(), lastUnused: [] };
      this.queueStats.set(appId, stats);
    }
    return stats;
  }

  private matchOffer(offer: CoreOffer, nowMs: number, pass: MatchPass): { tasks: LaunchTask[]; waiting: boolean } {
    let remaining = offer.resources;
    const tasks: LaunchTask[] = [];
    let waiting = false;
    const placement: Placement = { hostname: offer.hostname, attributes: offer.attributes };
    for (const record of pass.apps) {
      const app = record.app;
      // Each launch lowers the queue count by one, so the pass keeps it instead of recounting.
      let wanted = pass.wanted.get(app.id) ?? this.queueCount(app.id);
      pass.wanted.set(app.id, wanted);
      if (wanted === 0) {
        this.queueStats.delete(app.id);
        continue;
      }
      if (!canLaunch(this.delays.get(app.id), record.versionInfo.lastConfigChangeAt, nowMs)) continue;
      if (this.instances.size >= this.config.maxInstances) break;
      waiting = true;
      const stats = this.statsOf(app.id, nowMs);
      stats.processed++;
      let placedHere = 0;
      let rejected: { reason: RejectReason; detail: string } | undefined;
      while (wanted > 0 && tasks.length < this.config.maxInstancesPerOffer) {
        const placed = app.constraints.length === 0 ? [] : this.unorderedInstancesOf(app.id).filter(constrainsPlacement).map((i) => ({ hostname: i.hostname, attributes: i.attributes }));
        const decision = checkConstraints(app.constraints, placement, placed);
        if (!decision.allowed) {
          rejected = { reason: "UnfulfilledConstraint", detail: decision.reason };
          break;
        }
        const fit = fitApp(app, remaining, this.rng);
        if (!fit.ok) {
          rejected = { reason: fit.reason, detail: fit.detail };
          break;
        }
        remaining = remaining.subtract(fit.resources);
        const task = this.launchInstance(record, offer, fit.resources, fit.hostPorts, nowMs);
        tasks.push(task);
        wanted--;
        placedHere++;
      }
      pass.wanted.set(app.id, wanted);
      if (placedHere > 0) stats.lastUsedAtMs = nowMs;
      if (placedHere === 0 && rejected) {
        stats.unused++;
        stats.lastUnusedAtMs = nowMs;
        stats.reasons.set(rejected.reason, (stats.reasons.get(rejected.reason) ?? 0) + 1);
        stats.lastUnused.push({ offerId: offer.id, agentId: offer.agentId, hostname: offer.hostname, timestampMs: nowMs, ...rejected });
        if (stats.lastUnused.length > this.config.maxUnusedOffersPerApp) stats.lastUnused.shift();
      }
      if (tasks.length >= this.config.maxInstancesPerOffer) break;
    }
    return { tasks, waiting };
  }

  private launchInstance(record: AppRecord, offer: CoreOffer, resources: Resources, hostPorts: number[], nowMs: number): LaunchTask {
    const app = record.app;
    const id = `${appIdToTaskPrefix(app.id)}.${this.rng.uuid()}`;
    const instance: Instance = {
      id,
      appId: app.id,
      version: record.version,
      configVersion: record.versionInfo.lastConfigChangeAt,
      agentId: offer.agentId,
      hostname: offer.hostname,
      attributes: { ...offer.attributes },
      hostPorts,
      state: "staging",
      goal: "running",
      stagedAtMs: nowMs,
      mesosState: "TASK_STAGING",
    };
    this.addInstance(instance);
    this.counters.launched++;
    const env: Record<string, string> = {
      ...app.env,
      MARATHON_APP_ID: app.id,
      MARATHON_APP_VERSION: record.version,
      MESOS_TASK_ID: id,
      HOST: offer.hostname,
      ...portEnv(hostPorts, app.portDefinitions),
    };
    Object.assign(env, labelEnv(app.labels));
    const commandCheck = agentRunCheck(app);
    return {
      taskId: id,
      name: appIdToTaskPrefix(app.id),
      agentId: offer.agentId,
      resources,
      command: app.cmd !== undefined ? app.cmd : { value: app.args![0]!, arguments: app.args!.slice(1), shell: false },
      env,
      ...(app.user !== undefined ? { user: app.user } : {}),
      ...(app.taskKillGracePeriodSeconds !== undefined ? { killGracePeriodSeconds: app.taskKillGracePeriodSeconds } : {}),
      labels: { ...app.labels },
      ...(commandCheck
        ? {
            healthCheck: {
              command: commandCheck.command!.value,
              delaySeconds: commandCheck.delaySeconds,
              intervalSeconds: commandCheck.intervalSeconds,
              timeoutSeconds: commandCheck.timeoutSeconds,
              gracePeriodSeconds: commandCheck.gracePeriodSeconds,
            },
          }
        : {}),
    };
  }

  private statusEvent(instance: Instance, status: CoreStatus, nowMs: number): MarathonEffect {
    return {
      type: "event",
      event: {
        eventType: "status_update_event",
        timestamp: iso(nowMs),
        slaveId: instance.agentId,
        taskId: instance.id,
        instanceId: instance.id,
        taskStatus: status.state,
        message: status.message ?? "",
        appId: instance.appId,
        host: instance.hostname,
        ipAddresses: [],
        ports: instance.hostPorts,
        version: instance.version,
      },
    };
  }

  /** The checks {@link deploy} and {@link planSteps} share; returns the app ids of the changes. */
  private checkChanges(changes: readonly AppChange[], groups: GroupChanges): string[] {
    const ids = changes.map(changeId);
    if (new Set(ids).size !== ids.length) throw new RefusedError("an app may appear only once in a deployment");
    for (const c of changes) if ("remove" in c && !this.apps.has(c.remove)) throw new NotFoundError(`App '${c.remove}' does not exist`);
    const added = changes.filter((c) => "app" in c && !this.apps.has(c.app.id)).length;
    if (this.apps.size + added > this.config.maxApps) throw new RefusedError(`at most ${this.config.maxApps} apps (maxApps)`);
    const newGroups = new Set((groups.put ?? []).map((g) => g.id).filter((id) => !this.groups.has(id))).size;
    if (this.groups.size + newGroups > this.config.maxGroups) throw new RefusedError(`at most ${this.config.maxGroups} groups (maxGroups)`);
    this.checkTreeIds(changes, groups);
    return ids;
  }

  /**
   * Marathon's rule that an id names an app or a group, never both, in the tree a write leaves:
   * no app it puts may sit below an app or where a group is (a record, or apps below it), and no
   * group record it puts may sit at or below an app. An app being removed by an earlier
   * deployment still counts (a rollback could bring it back).
   * @throws RefusedError naming the id
   */
  private checkTreeIds(changes: readonly AppChange[], groups: GroupChanges): void {
    const putApps = changes.flatMap((c) => ("app" in c ? [c.app.id] : []));
    const putGroups = (groups.put ?? []).map((g) => g.id);
    if (putApps.length === 0 && putGroups.length === 0) return;
    const removed = new Set(changes.flatMap((c) => ("remove" in c ? [c.remove] : [])));
    const apps = new Set([...this.apps.keys()].filter((id) => !removed.has(id)));
    for (const id of putApps) apps.add(id);
    const removedGroups = groups.remove ?? [];
    const records = [...this.groups.keys()].filter((id) => !removedGroups.some((r) => isSelfOrAncestorId(r, id)));
    // Every group of that tree: the records and all above them, and all above an app.
    const groupIds = new Set<string>();
    const addGroups = (id: string, withSelf: boolean) => {
      const segments = pathSegments(id);
      for (let n = withSelf ? segments.length : segments.length - 1; n >= 1; n--) {
        const group = formatPathId(segments.slice(0, n));
        if (groupIds.has(group)) break; // and so is everything above it
        groupIds.add(group);
      }
    };
    for (const id of [...records, ...putGroups]) addGroups(id, true);
    for (const id of apps) addGroups(id, false);
    const appAtOrAbove = (id: string, withSelf: boolean): string | undefined => {
      const segments = pathSegments(id);
      for (let n = withSelf ? segments.length : segments.length - 1; n >= 1; n--) {
        const above = formatPathId(segments.slice(0, n));
        if (apps.has(above)) return above;
      }
      return undefined;
    };
    const rule = "Groups and Applications may not have the same identifier";
    for (const id of putApps) {
      if (groupIds.has(id)) throw new RefusedError(`${rule}: ${id} would be an app and a group`);
      const app = appAtOrAbove(id, false);
      if (app !== undefined) throw new RefusedError(`${rule}: ${id} would be in ${app}, which is an app`);
    }
    for (const id of putGroups) {
      const app = appAtOrAbove(id, true);
      if (app === id) throw new RefusedError(`${rule}: ${id} would be a group and an app`);
      if (app !== undefined) throw new RefusedError(`${rule}: group ${id} would be in ${app}, which is an app`);
    }
  }

  /**
   * The changes that change something. As in Marathon, whose plan has no action for an app the
   * write gives as it is (a group write names all its apps): such an app keeps its version, is
   * not locked (a deployment holding it is neither refused nor cancelled) and is not in the
   * deployment. An app that still runs instances of an older config, or that is not in the
   * current tree (a deployment is removing it, a rollback brings it back), is changed by being
   * written again.
   */
  private effectiveChanges(changes: readonly AppChange[]): AppChange[] {
    return changes.filter((change) => {
      if ("remove" in change || change.restart === true) return true;
      const existing = this.apps.get(change.app.id);
      if (existing === undefined || stableJson(existing.app) !== stableJson(change.app)) return true;
      // Not in the current tree: being removed, or brought back by a rollback.
      if (!this.tipApps.has(change.app.id)) return true;
      const config = existing.versionInfo.lastConfigChangeAt;
      return this.countInstances(change.app.id, (i) => counts(i) && i.configVersion !== config) > 0;
    });
  }

  /** What {@link newPart} would make of a change, without the change made. */
  private plannedKind(change: { app: NormalizedApp; restart?: boolean }): DeploymentKind {
    const existing = this.apps.get(change.app.id);
    if (!existing) return "start";
    const active = this.unorderedInstancesOf(existing.app.id).filter(counts);
    const configChanged = change.restart === true || !sameConfig(existing.app, change.app);
    if (configChanged) return "restart";
    return active.some((i) => i.configVersion !== existing.versionInfo.lastConfigChangeAt) ? "restart" : "scale";
  }

  // ---------------------------------------------------------------------------------------------
  // Internals: versions of the root group
  // ---------------------------------------------------------------------------------------------

  /** The app's version in the current tree: none while it does not exist or is being removed. */
  private tipVersionOf(appId: string): string | undefined {
    const record = this.apps.get(appId);
    if (!record) return undefined;
    const hold = this.partOf(appId);
    return hold && hold.part.kind === "stop" && !hold.part.done ? undefined : record.version;
  }

  /** The records, before a write, of the groups the write sets or forgets. */
  private groupRecordsTouched(groups: GroupChanges): Map<string, GroupRecord | null> {
    const before = new Map<string, GroupRecord | null>();
    for (const removed of groups.remove ?? []) for (const [id, record] of this.groups) if (isSelfOrAncestorId(removed, id)) before.set(id, record);
    for (const g of groups.put ?? []) if (!before.has(g.id)) before.set(g.id, this.groups.get(g.id) ?? null);
    return before;
  }

  /** Records the root version a write made: what it changed, against the tree before it. */
  private recordRootVersion(version: string, touched: ReadonlySet<string>, groupsBefore: ReadonlyMap<string, GroupRecord | null>, effects: MarathonEffect[]): void {
    const change: RootVersionChange = { version, appsBefore: {}, groupsBefore: {} };
    for (const appId of [...touched].sort(cmp)) {
      const before = this.tipApps.get(appId);
      const after = this.tipVersionOf(appId);
      if (before === after) continue;
      change.appsBefore[appId] = before ?? null;
      if (after === undefined) this.tipApps.delete(appId);
      else this.tipApps.set(appId, after);
    }
    for (const [id, before] of groupsBefore) {
      const after = this.groups.get(id);
      if (before === null && after === undefined) continue;
      if (before !== null && after !== undefined && stableJson(before.dependencies) === stableJson(after.dependencies)) continue;
      change.groupsBefore[id] = before;
    }
    this.addRootChange(change);
    effects.push({ type: "putRootVersion", change });
    this.trimRootVersions(effects);
  }

  private addRootChange(change: RootVersionChange): void {
    this.rootChanges.push(change);
    for (const [appId, before] of Object.entries(change.appsBefore)) if (before !== null) this.rootRefs.set(appId, (this.rootRefs.get(appId) ?? 0) + 1);
  }

  /** Forgets the oldest root versions beyond `maxGroupVersions`, and removed apps none of the rest holds. */
  private trimRootVersions(effects: MarathonEffect[]): void {
    while (this.rootChanges.length > Math.max(1, this.config.maxGroupVersions)) {
      const dropped = this.rootChanges.shift()!;
      effects.push({ type: "deleteRootVersion", version: dropped.version });
      for (const [appId, before] of Object.entries(dropped.appsBefore)) {
        if (before === null) continue;
        const left = (this.rootRefs.get(appId) ?? 1) - 1;
        if (left > 0) {
          this.rootRefs.set(appId, left);
          continue;
        }
        this.rootRefs.delete(appId);
        if (this.retired.delete(appId)) effects.push({ type: "deleteRetiredApp", appId });
      }
    }
  }

  /**
   * Walks the kept root versions from the newest back, with the tree at each (app versions and
   * group records by id; the maps are reused from one call to the next); stops when `visit`
   * answers false.
   */
  private walkBack(visit: (version: string, apps: ReadonlyMap<string, string>, groups: ReadonlyMap<string, GroupRecord>) => boolean): void {
    const apps = new Map(this.tipApps);
    const groups = new Map(this.groups);
    for (let k = this.rootChanges.length - 1; k >= 0; k--) {
      const change = this.rootChanges[k]!;
      if (!visit(change.version, apps, groups)) return;
      for (const [appId, before] of Object.entries(change.appsBefore)) {
        if (before === null) apps.delete(appId);
        else apps.set(appId, before);
      }
      for (const [id, before] of Object.entries(change.groupsBefore)) {
        if (before === null) groups.delete(id);
        else groups.set(id, before);
      }
    }
  }

  /** An app's definition at one of its versions, from its history or, once removed, from its retired history. */
  private appAtVersion(appId: string, version: string): AppVersion | undefined {
    return this.apps.get(appId)?.versions.find((v) => v.version === version) ?? this.retired.get(appId)?.versions.find((v) => v.version === version);
  }

  /** Keeps the versions of a removed app that kept root versions refer to, to bring it back by a group rollback. */
  private retire(record: AppRecord, effects: MarathonEffect[]): void {
    const appId = record.app.id;
    const wanted = new Set<string>();
    for (const change of this.rootChanges) {
      const before = change.appsBefore[appId];
      if (typeof before === "string") wanted.add(before);
    }
    const earlier = this.retired.get(appId)?.versions ?? [];
    const seen = new Set<string>();
    const versions = [...earlier, ...record.versions].filter((v) => wanted.has(v.version) && !seen.has(v.version) && seen.add(v.version)).sort((a, b) => cmp(a.version, b.version));
    if (versions.length === 0) {
      if (this.retired.delete(appId)) effects.push({ type: "deleteRetiredApp", appId });
      return;
    }
    const retired: AppRecord = { ...record, versions };
    this.retired.set(appId, retired);
    effects.push({ type: "putRetiredApp", record: retired });
  }

  /** Reloads the root versions and retired apps (after the apps and deployments). */
  private recoverRootVersions(changes: readonly RootVersionChange[], retiredApps: readonly AppRecord[], effects: MarathonEffect[]): void {
    for (const appId of this.apps.keys()) {
      const version = this.tipVersionOf(appId);
      if (version !== undefined) this.tipApps.set(appId, version);
    }
    for (const record of retiredApps) this.retired.set(record.app.id, record);
    for (const change of [...changes].sort((a, b) => cmp(a.version, b.version))) {
      this.addRootChange(change);
      this.lastVersionMs = Math.max(this.lastVersionMs, Date.parse(change.version) || 0);
    }
    this.trimRootVersions(effects);
    for (const appId of [...this.retired.keys()]) {
      if ((this.rootRefs.get(appId) ?? 0) > 0) continue;
      this.retired.delete(appId);
      effects.push({ type: "deleteRetiredApp", appId });
    }
  }

  private nextVersion(nowMs: number): string {
    // Versions are times; two writes in one millisecond still get distinct, ordered versions.
    const ms = Math.max(nowMs, this.lastVersionMs + 1);
    this.lastVersionMs = ms;
    return iso(ms);
  }
}

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/**
 * True when `id` is a group of a tree with these group records and app ids: the root always; a
 * group with a record; a group above a group with a record; a group above an app.
 */
export function treeHasGroup(id: string, groupIds: Iterable<string>, appIds: Iterable<string>): boolean {
  if (id === "/") return true;
  for (const g of groupIds) if (isSelfOrAncestorId(id, g)) return true;
  for (const appId of appIds) if (appId !== id && isSelfOrAncestorId(id, appId)) return true;
  return false;
}

/** The groups directly below `id` in a tree with these group records and app ids, sorted. */
export function treeChildGroups(id: string, groupIds: Iterable<string>, appIds: Iterable<string>): string[] {
  const depth = pathSegments(id).length;
  const out = new Set<string>();
  const add = (below: string, isApp: boolean) => {
    const segments = pathSegments(below);
    if (!isSelfOrAncestorId(id, below) || segments.length <= depth + (isApp ? 1 : 0)) return;
    out.add(formatPathId(segments.slice(0, depth + 1)));
  };
  for (const g of groupIds) add(g, false);
  for (const appId of appIds) add(appId, true);
  return [...out].sort(cmp);
}

/** The deployment holding an app, the app's part of it and the index of the step it is in. */
interface DeploymentHold {
  deployment: Deployment;
  part: DeploymentPart;
  step: number;
}

/**
 * Deployments by id that also index, by app id, the deployment holding each app: every input
 * asks this of every app, which a scan of all deployments would make cost apps × deployments.
 * Assumes what the core keeps true: an app is in at most one deployment, whose parts and steps
 * do not change once it is stored. Tells `held` of every app a stored or removed deployment
 * holds or held: an app entering or leaving a deployment converges differently.
 */
class DeploymentMap extends Map<string, Deployment> {
  private readonly byApp = new Map<string, DeploymentHold>();

  constructor(private readonly held: (appId: string) => void) {
    super();
  }

  override set(id: string, deployment: Deployment): this {
    this.delete(id);
    super.set(id, deployment);
    const stepOf = new Map<string, number>();
    deployment.steps.forEach((step, i) => step.forEach((appId) => stepOf.has(appId) || stepOf.set(appId, i)));
    for (const part of deployment.parts) {
      this.byApp.set(part.appId, { deployment, part, step: stepOf.get(part.appId) ?? -1 });
      this.held(part.appId);
    }
    return this;
  }

  override delete(id: string): boolean {
    const deployment = super.get(id);
    if (deployment === undefined) return false;
    for (const part of deployment.parts) {
      if (this.byApp.get(part.appId)?.deployment === deployment) this.byApp.delete(part.appId);
      this.held(part.appId);
    }
    return super.delete(id);
  }

  override clear(): void {
    for (const appId of this.byApp.keys()) this.held(appId);
    this.byApp.clear();
    super.clear();
  }

  /** The deployment holding `appId`, if any. */
  holding(appId: string): DeploymentHold | undefined {
    return this.byApp.get(appId);
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Equal configs, `instances` aside. */
export function sameConfig(a: NormalizedApp, b: NormalizedApp): boolean {
  return stableJson({ ...a, instances: 0 }) === stableJson({ ...b, instances: 0 });
}

function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([x], [y]) => cmp(x, y))) : v,
  );
}

function candidate(i: Instance): KillCandidate {
  return {
    id: i.id,
    state: i.state === "running" || i.state === "killing" ? "running" : i.state === "unreachable" ? "unreachable" : i.state === "starting" ? "starting" : "staging",
    ...(i.healthy !== undefined ? { healthy: i.healthy } : {}),
    sinceMs: i.startedAtMs ?? i.stagedAtMs,
    placement: { hostname: i.hostname, attributes: i.attributes },
  };
}

function conditionOf(i: Instance): string {
  switch (i.state) {
    case "staging":
      return "Staging";
    case "starting":
      return "Starting";
    case "running":
      return "Running";
    case "killing":
      return "Killing";
    case "unreachable":
      return i.inactive ? "UnreachableInactive" : "Unreachable";
  }
}

/**
 * Whether an instance takes part in its app's placement constraints: not stopped for good and not
 * unreachable. Marathon leaves lost instances out of constraint checks, so that a replacement for
 * an unreachable instance may go where the lost one was.
 */
function constrainsPlacement(i: Instance): boolean {
  return i.goal !== "stopped" && i.state !== "unreachable";
}

/** Whether an instance counts toward its app's instances: not stopped for good, not inactive. */
function counts(i: Instance): boolean {
  return i.goal !== "stopped" && !i.inactive;
}

function instanceChanged(i: Instance, condition: string, nowMs: number): MarathonEffect {
  return {
    type: "event",
    event: { eventType: "instance_changed_event", timestamp: iso(nowMs), instanceId: i.id, condition, runSpecId: i.appId, agentId: i.agentId, host: i.hostname, runSpecVersion: i.version, goal: i.goal === "running" ? "Running" : i.goal === "stopped" ? "Stopped" : "Decommissioned" },
  };
}

function healthChanged(i: Instance, nowMs: number): MarathonEffect {
  return { type: "event", event: { eventType: "health_status_changed_event", timestamp: iso(nowMs), appId: i.appId, instanceId: i.id, taskId: i.id, version: i.version, alive: i.healthy === true } };
}

/**
 * `$PORT0`, `$PORT1`, ..., `$PORT`, `$PORTS` and, as Marathon sets them, `$PORT_<NAME>` for each
 * named port definition (the name upper-cased, nothing else changed) and `$PORT_<n>` for each
 * declared port `n` (for a port declared 0, the host port it was given).
 */
export function portEnv(hostPorts: readonly number[], definitions: ReadonlyArray<{ port: number; name?: string }> = []): Record<string, string> {
  const env: Record<string, string> = {};
  hostPorts.forEach((p, i) => (env[`PORT${i}`] = String(p)));
  hostPorts.forEach((p, i) => {
    const declared = definitions[i]?.port ?? 0;
    env[`PORT_${declared === 0 ? p : declared}`] = String(p);
  });
  hostPorts.forEach((p, i) => {
    const name = definitions[i]?.name;
    if (name !== undefined && name !== "") env[`PORT_${name.toUpperCase()}`] = String(p);
  });
  if (hostPorts.length > 0) {
    env.PORT = String(hostPorts[0]);
    env.PORTS = hostPorts.join(",");
  }
  return env;
}

/** Longest environment variable (name or value) Marathon puts a label into, in characters. */
const MAX_LABEL_ENV_LENGTH = 512;

/**
 * `$MARATHON_APP_LABEL_<NAME>` for each label and `$MARATHON_APP_LABELS` listing the names, as
 * Marathon sets them: each run of characters other than letters, digits and `_` in a label's name
 * becomes `_`, the name is upper-cased; labels whose name or value would be too long are left out.
 */
export function labelEnv(labels: Readonly<Record<string, string>>): Record<string, string> {
  const prefix = "MARATHON_APP_LABEL_";
  const names: string[] = [];
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    if (key.length >= MAX_LABEL_ENV_LENGTH - prefix.length || value.length >= MAX_LABEL_ENV_LENGTH) continue;
    const name = key.replace(/[^a-zA-Z0-9_]+/g, "_").toUpperCase();
    if (!(`${prefix}${name}` in env)) names.push(name);
    env[`${prefix}${name}`] = value;
  }
  return { MARATHON_APP_LABELS: names.join(" "), ...env };
}

/** What one `offers` input computes once for all its offers. */
interface MatchPass {
  /** The apps with instances to launch, in id order. */
  apps: AppRecord[];
  /** Queue counts by app id, lowered as instances are placed. */
  wanted: Map<string, number>;
}

type Fit = { ok: true; resources: Resources; hostPorts: number[] } | { ok: false; reason: RejectReason; detail: string };

/** Roles an app may use resources of: its acceptedResourceRoles, else unreserved and its own role. */
export function acceptedRoles(app: NormalizedApp): string[] {
  return app.acceptedResourceRoles ?? [...new Set([UNRESERVED_ROLE, app.role])];
}

const SCALARS: Array<[keyof NormalizedApp & ("cpus" | "mem" | "disk" | "gpus"), RejectReason]> = [
  ["cpus", "InsufficientCpus"],
  ["mem", "InsufficientMemory"],
  ["disk", "InsufficientDisk"],
  ["gpus", "InsufficientGpus"],
];

/**
 * Carves one instance out of `offer`: each scalar from a single usable role (reserved first),
 * then ports. Answers the resources to launch with, or the first shortfall.
 */
export function fitApp(app: NormalizedApp, offer: Resources, rng?: Rng): Fit {
  const roles = acceptedRoles(app);
  const usable = offer.filter((e) => roles.includes(e.role));
  if (usable.isEmpty() && !offer.isEmpty()) return { ok: false, reason: "UnfulfilledRole", detail: `no resources of the accepted roles ${roles.join(",")}` };
  const parts: ResourceEntry[] = [];
  for (const [name, reason] of SCALARS) {
    const amount = app[name];
    if (!(amount > 0)) continue;
    const millis = Math.round(amount * 1000);
    const candidates = usable.entries
      .filter((e): e is Extract<ResourceEntry, { kind: "scalar" }> => e.kind === "scalar" && e.name === name && e.millis >= millis)
      .sort((a, b) => Number(a.role === UNRESERVED_ROLE) - Number(b.role === UNRESERVED_ROLE));
    const pick = candidates[0];
    if (!pick) return { ok: false, reason, detail: `needs ${name} ${amount}, offer has ${usable.scalar(name)}` };
    parts.push({ kind: "scalar", name, role: pick.role, millis });
  }
  const ports = pickPorts(app, usable, { acceptedRoles: roles, ...(rng ? { rng } : {}) });
  if (!ports.ok) return { ok: false, reason: "InsufficientPorts", detail: ports.reason };
  const resources = Resources.of(parts).add(ports.resources);
  return { ok: true, resources, hostPorts: ports.hostPorts };
}

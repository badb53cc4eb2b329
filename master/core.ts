/**
 * The master's core: a deterministic state machine over the wire contract. It takes one input
 * (a framework call, an agent message, a tick) and the current time, and returns effects (send
 * this event, answer that request, persist this record). It never reads the clock, never touches
 * NATS or the disk; `master/shell.ts` carries its effects out, and the simulator runs it as is.
 *
 * It keeps Mesos's semantics: coarse-grained offers from the hierarchical DRF allocator, offers
 * rescinded when their agent goes, launches validated against the offers, status updates routed
 * to frameworks (every copy forwarded, each state change applied once), explicit and implicit
 * reconciliation, framework failover timeouts and agents marked unreachable after missed pings.
 */
import { LRUCache } from "lru-cache";
import { Resources, ResourceError, addQuantities, fromMillis } from "../sdk/resources.ts";
import type { Rng } from "../sdk/rng.ts";
import { roleNameError } from "../sdk/roles.ts";
import { resourcesFromWire, resourcesToWire } from "../sdk/wire/resources.ts";
import { TimedHeap } from "../sdk/time-heap.ts";
import { pathIdProblem, splitTaskKey, taskKey } from "../sdk/task-key.ts";
import { tokenProblem } from "../sdk/wire/subjects.ts";
import { TERMINAL_TASK_STATES } from "../sdk/wire/types.ts";
import type {
  AgentInfo,
  AgentToMaster,
  CallResponse,
  EnvelopePayload,
  FrameworkInfo,
  MasterToAgent,
  Offer,
  SchedulerCall,
  SchedulerEvent,
  TaskInfo,
  TaskState,
  TaskStatus,
  TaskStatusReason,
} from "../sdk/wire/types.ts";
import { AllocatorError, createAllocator, type HierarchicalAllocator, type OfferPlan } from "./allocator/index.ts";
import { roleAclProblem, roleAuthorizationProblem, type FrameworkRoleAcl } from "./authz.ts";

/** Tunables of the master. Every duration is in milliseconds. */
/** Default of `agentPingIntervalMs` (Mesos' agent_ping_timeout, 15 s). */
export const DEFAULT_AGENT_PING_INTERVAL_MS = 15_000;
/** Default of `maxMissedPings` (Mesos' max_agent_ping_timeouts, 5). */
export const DEFAULT_MAX_MISSED_PINGS = 5;

export interface MasterConfig {
  /** This master's id; prefixes agent, framework and offer ids. */
  masterId: string;
  /** Periodic allocation run. @default 1000 */
  allocationIntervalMs?: number;
  /** How often agents are pinged. @default 15000 (Mesos) */
  agentPingIntervalMs?: number;
  /** Pings an agent may miss before it is marked unreachable. @default 5 (Mesos) */
  maxMissedPings?: number;
  /** Heartbeat interval told to frameworks; also the master's heartbeat event period. @default 15000 */
  frameworkHeartbeatIntervalMs?: number;
  /** Heartbeat intervals a framework may miss before it counts as disconnected. @default 5 */
  maxMissedFrameworkHeartbeats?: number;
  /** Rescind offers not answered within this time; `undefined` keeps offers until answered. @default undefined */
  offerTimeoutMs?: number;
  /** Filter installed by a DECLINE or ACCEPT without explicit filters. @default 5 (Mesos) */
  defaultRefuseSeconds?: number;
  /** Completed tasks kept per framework for `/state` and reconciliation. @default 1000 */
  maxCompletedTasksPerFramework?: number;
  /** Torn-down frameworks kept for `/state`. @default 100 */
  maxCompletedFrameworks?: number;
  /** Unreachable agents remembered for reconciliation answers. @default 10000 */
  maxUnreachableAgents?: number;
  /** Answers to recent calls, so a redelivered call is answered, not applied twice. @default 10000 */
  recentCallCacheSize?: number;
  /** Outstanding offers above which allocation pauses. @default 100000 */
  maxOutstandingOffers?: number;
  /** Active tasks per agent; launches beyond it get TASK_ERROR. @default 10000 */
  maxTasksPerAgent?: number;
  /** Minimum offer size, passed to the allocator. @default [{cpus: 0.01}, {mem: 32}] */
  minAllocatable?: Array<Record<string, number>>;
  /**
   * After a master restart, how long an agent from the registry has to re-register before it is
   * counted unreachable. @default 600000 (Mesos's agent_reregister_timeout)
   */
  agentReregisterTimeoutMs?: number;
  /** Torn-down framework ids remembered (and refused); the oldest are forgotten first. @default 100000 */
  maxTornDownFrameworks?: number;
  /**
   * After a restart or failover, the longest time offers wait for the registry's agents to
   * re-register (see `recoveryAgentFraction`). An agent's own resources are never offered before it
   * has re-registered with what it runs, hold or no hold.
   * @default 10000
   */
  recoveryOfferHoldMs?: number;
  /**
   * After a restart or failover, offers wait (at most `recoveryOfferHoldMs`) until this fraction of
   * the registry's agents has re-registered, so that the first allocations see most of what runs.
   * Mesos's allocator does the same, and only when some role has a quota (whose headroom cannot be
   * computed from a partial view); without quota it offers each agent as soon as it is back.
   * @default 0.8 when a recovered role has a quota, otherwise 0 (no hold)
   */
  recoveryAgentFraction?: number;
  /** Agents that left (unregistered) remembered, and kept in the registry, for reconciliation answers. @default 10000 */
  maxGoneAgents?: number;
  /**
   * Refuse every call that comes on the shared call subject (`CORRAL_ERR_UNAUTHENTICATED`), so that
   * only frameworks with a principal, calling on their principal's subject, are served (Mesos's
   * `--authenticate_frameworks`). With per-principal NATS permissions this is what keeps a
   * framework from acting without a principal the bus vouches for.
   * @default false (frameworks without a principal are served on the shared subject)
   */
  requirePrincipal?: boolean;
  /**
   * Which roles each principal's frameworks may subscribe with (Mesos's `register_frameworks`
   * ACL); checked on every SUBSCRIBE, re-subscriptions (which may change roles) included.
   * @default undefined (every framework may use every role, as Mesos's permissive default)
   */
  roleAcl?: FrameworkRoleAcl;
  /**
   * How long unreachable and gone agents are remembered (in memory and in the registry) before
   * they are forgotten. @default 1209600000 (14 days, Mesos's registry_max_agent_age)
   */
  removedAgentRetentionMs?: number;
}

/** One input to the core. */
export type MasterInput =
  | {
      type: "scheduler-call";
      call: SchedulerCall;
      senderId: string;
      callId: string;
      /**
       * The principal the bus vouches for: the `<principal>` token of the per-principal call
       * subject the call came on. Absent for a call on the shared subject (no principal).
       */
      principal?: string;
    }
  | { type: "agent-message"; message: AgentToMaster; senderId: string; callId: string }
  | { type: "tick" };

/** What the core asks its shell to do. */
export type MasterEffect =
  /** Answer the request that carried the input being handled. */
  | { type: "reply"; payload: EnvelopePayload }
  /** `principal`: the framework's, when it has one (its events subject is under it). */
  | { type: "to-framework"; frameworkId: string; event: SchedulerEvent; principal?: string }
  | { type: "to-agent"; agentId: string; message: MasterToAgent }
  | { type: "persist"; record: RegistryRecord }
  | { type: "unpersist"; kind: RegistryRecord["kind"]; id: string }
  | { type: "log"; level: "info" | "warn"; msg: string; fields: Record<string, unknown> };

/**
 * What the master keeps durably: what cannot be rebuilt from agents re-registering. Unreachable
 * and gone agents are kept for a bounded time (count and age), so that a new leader still knows
 * which tasks were reported lost and answers reconciliation as the old one would have.
 */
export type RegistryRecord =
  | { kind: "agent"; id: string; info: AgentInfo }
  | { kind: "framework"; id: string; info: FrameworkInfo }
  | { kind: "torn-down"; id: string }
  | { kind: "unreachable-agent"; id: string; info: AgentInfo; sinceMs: number }
  | { kind: "gone-agent"; id: string; info: AgentInfo; sinceMs: number }
  /** An operator-set role weight (id: the role), so a new leader divides resources as the old one did. */
  | { kind: "weight"; id: string; weight: number }
  /** An operator-set role quota (id: the role). */
  | { kind: "quota"; id: string; guarantees: Record<string, number>; limits: Record<string, number> };

/** Stable error codes in call responses. */
export type MasterErrorCode =
  | "CORRAL_ERR_NOT_SUBSCRIBED"
  | "CORRAL_ERR_FRAMEWORK_REMOVED"
  /** The call comes from an instance other than the one that subscribed the framework last. */
  | "CORRAL_ERR_FRAMEWORK_FAILED_OVER"
  | "CORRAL_ERR_INVALID_CALL"
  /** The call came on the shared subject, and the master serves only frameworks with a principal (`requirePrincipal`). */
  | "CORRAL_ERR_UNAUTHENTICATED"
  /**
   * The principal the call came under may not do this: subscribe naming another principal, act
   * for a framework registered under another principal, or use a role the role ACL refuses it.
   */
  | "CORRAL_ERR_UNAUTHORIZED"
  | "CORRAL_ERR_UNSUPPORTED";

interface AgentRecord {
  info: AgentInfo;
  total: Resources;
  /** False until the agent's first pong: only then is it listening for commands. */
  listening: boolean;
  lastHeardMs: number;
  nextPingMs: number;
  pingSeq: number;
  /** Keys (`frameworkId/taskId`) of its active tasks. */
  tasks: Set<string>;
  /** Ids of its outstanding offers (so that rescinding them or showing them needs no scan). */
  offers: Set<string>;
  registeredAtMs: number;
}

/**
 * When an agent next needs looking at: its next ping, or the moment its silence would exceed the
 * ping timeout. Entries are not updated when the agent is heard from (that would cost a heap
 * operation per message); a due entry re-reads the record and files the next one.
 */
interface AgentCheck {
  timeMs: number;
  seq: number;
  agentId: string;
  /** The record this entry was filed for; a removed or re-admitted agent's old entries are dropped. */
  record: AgentRecord;
}

interface TaskRecord {
  frameworkId: string;
  agentId: string;
  info: TaskInfo;
  role: string;
  resources: Resources;
  /** The last update sent to the framework for the task (Mesos's status_update_state); reconciliation answers with it. */
  status: TaskStatus;
  /**
   * The newest state the agent has reported for the task (Mesos's `latest_state`) while its
   * framework has not acknowledged the updates before it; `/state` shows it. Once terminal it
   * stays: the task's resources were given back then, and it only waits for its terminal update.
   */
  latestState?: TaskState;
}

/** The state a task is in as far as the master knows, which may be ahead of what its framework has been sent. */
function latestStateOf(task: TaskRecord): TaskState {
  return task.latestState ?? task.status.state;
}

/** Whether the task's end is known from its agent's latest state, and its resources given back already. */
function endedAhead(task: TaskRecord): boolean {
  return task.latestState !== undefined && isTerminal(task.latestState);
}

/**
 * Records a status the master decided on (an end, or UNREACHABLE) as the task's: it overrides
 * what the agent's stream said was newer, except an end, which nothing overrides (as in Mesos).
 */
function setMasterStatus(task: TaskRecord, status: TaskStatus): void {
  task.status = status;
  if (!endedAhead(task)) delete task.latestState;
}

interface FrameworkRecord {
  info: FrameworkInfo;
  /** The driver instance that subscribed last (envelope sender id). */
  senderId: string;
  connected: boolean;
  /** False between SUBSCRIBED and the framework's next call (it may not be listening yet). */
  ready: boolean;
  lastCallMs: number;
  /** When it counted (or, for one not heard from since a recovery, will count) as disconnected; its failover timeout runs from here. */
  disconnectedAtMs: number | undefined;
  nextHeartbeatMs: number;
  registeredAtMs: number;
  /** Active and unreachable tasks by id. */
  tasks: Map<string, TaskRecord>;
  completed: LRUCache<string, TaskRecord>;
  offers: Set<string>;
}

interface OfferRecord {
  id: string;
  frameworkId: string;
  agentId: string;
  role: string;
  resources: Resources;
  createdAtMs: number;
}

function isTerminal(state: TaskState): boolean {
  return TERMINAL_TASK_STATES.has(state);
}

/** A JSON-friendly view of the master for `/state`. */
export interface MasterStateView {
  masterId: string;
  agents: Array<Record<string, unknown>>;
  unreachableAgents: Array<{ id: string; hostname: string; sinceMs: number }>;
  goneAgents: Array<{ id: string; hostname: string; sinceMs: number }>;
  /** After a restart or failover: agents of the registry not re-registered yet, whether offers wait for them, how long they did. */
  recovery: { agentsPending: number; offersHeld: boolean; lastOfferHoldMs?: number };
  frameworks: Array<Record<string, unknown>>;
  completedFrameworks: Array<{ id: string; name: string }>;
  roles: Array<{ role: string; weight: number; share: number; quota?: { guarantees: Record<string, number>; limits: Record<string, number> } }>;
  offers: number;
}

/** Counters for `/metrics`. */
export interface MasterCounters {
  offersMade: number;
  offersDeclined: number;
  offersRescinded: number;
  tasksLaunched: number;
  statusUpdates: number;
  /** Status updates dropped because their agent is not registered (unreachable, gone, or not yet re-registered). */
  invalidStatusUpdates: number;
  invalidCalls: number;
  allocationRuns: number;
  allocationRunMsTotal: number;
  /** Agents the allocation runs visited, in all (a run visits only agents that changed). */
  allocationAgentsVisited: number;
}

/**
 * The master core. Create with {@link createMasterCore}; feed it with {@link MasterCore.handle}.
 * Not thread-safe by design: the shell calls it from one place, in arrival order.
 */
export class MasterCore {
  readonly masterId: string;
  readonly allocator: HierarchicalAllocator;
  readonly counters: MasterCounters = {
    offersMade: 0,
    offersDeclined: 0,
    offersRescinded: 0,
    tasksLaunched: 0,
    statusUpdates: 0,
    invalidStatusUpdates: 0,
    invalidCalls: 0,
    allocationRuns: 0,
    allocationRunMsTotal: 0,
    allocationAgentsVisited: 0,
  };

  private readonly allocationIntervalMs: number;
  private readonly pingIntervalMs: number;
  private readonly pingTimeoutMs: number;
  private readonly heartbeatIntervalMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly offerTimeoutMs: number | undefined;
  private readonly defaultRefuseSeconds: number;
  private readonly maxCompletedTasksPerFramework: number;
  private readonly maxOutstandingOffers: number;
  private readonly maxTasksPerAgent: number;
  private readonly agentReregisterTimeoutMs: number;
  private readonly recoveryOfferHoldMs: number;
  private readonly recoveryAgentFraction: number | undefined;
  private readonly removedAgentRetentionMs: number;
  private readonly requirePrincipal: boolean;
  private readonly roleAcl: FrameworkRoleAcl | undefined;

  private readonly agents = new Map<string, AgentRecord>();
  private readonly unreachableAgents: LRUCache<string, { info: AgentInfo; sinceMs: number }>;
  private readonly goneAgents: LRUCache<string, { info: AgentInfo; sinceMs: number }>;
  /** Offers wait until this time while agents of the registry have not re-registered (0: no hold). */
  private offerHoldUntilMs = 0;
  /** The hold ends once no more than this many of the registry's agents are still to re-register. */
  private offerHoldPendingAgents = 0;
  private recoveredAtMs = 0;
  /** How long offers were held after the last recovery (undefined: not yet over, or none). */
  private lastOfferHoldMs: number | undefined;
  private nextPruneMs = 0;
  /** Agents known from the registry after a restart that have not re-registered yet. */
  private readonly recoveredAgents = new Map<string, { info: AgentInfo; sinceMs: number }>();
  private readonly frameworks = new Map<string, FrameworkRecord>();
  private readonly completedFrameworks: LRUCache<string, FrameworkInfo>;
  private readonly tornDown: LRUCache<string, true>;
  private readonly offers = new Map<string, OfferRecord>();
  /** Scalars of all outstanding offers in millis by name, kept as offers come and go (read by /metrics and the simulator's samples). */
  private readonly offeredTotals = new Map<string, number>();
  /** Agents' next checks, earliest first: a tick visits the agents that are due, not all of them. */
  private readonly agentChecks = new TimedHeap<AgentCheck>();
  private agentCheckSeq = 0;
  private readonly recentCalls: LRUCache<string, EnvelopePayload>;
  /** Instance id of a registering agent -> the id it was given, so a retried REGISTER is answered alike. */
  private readonly registrations: LRUCache<string, string>;

  private agentCounter = 0;
  private frameworkCounter = 0;
  private offerCounter = 0;
  private nextAllocationMs = 0;
  private allocationWanted: "all" | Set<string> | null = null;
  private out: MasterEffect[] = [];
  private now = 0;
  /** See {@link MasterCore.changeCount}. */
  private changes = 0;

  constructor(
    config: MasterConfig,
    private readonly rng: Rng,
    private readonly measureMs: () => number = () => 0,
  ) {
    this.masterId = config.masterId;
    this.allocationIntervalMs = config.allocationIntervalMs ?? 1000;
    this.pingIntervalMs = config.agentPingIntervalMs ?? DEFAULT_AGENT_PING_INTERVAL_MS;
    this.pingTimeoutMs = this.pingIntervalMs * (config.maxMissedPings ?? DEFAULT_MAX_MISSED_PINGS);
    this.heartbeatIntervalMs = config.frameworkHeartbeatIntervalMs ?? 15_000;
    this.keepaliveTimeoutMs = this.heartbeatIntervalMs * (config.maxMissedFrameworkHeartbeats ?? 5);
    this.offerTimeoutMs = config.offerTimeoutMs;
    this.defaultRefuseSeconds = config.defaultRefuseSeconds ?? 5;
    this.maxCompletedTasksPerFramework = config.maxCompletedTasksPerFramework ?? 1000;
    this.maxOutstandingOffers = config.maxOutstandingOffers ?? 100_000;
    this.maxTasksPerAgent = config.maxTasksPerAgent ?? 10_000;
    // Forgetting an unreachable or gone agent also forgets its registry record, so both stay bounded.
    this.unreachableAgents = new LRUCache({
      max: config.maxUnreachableAgents ?? 10_000,
      dispose: (_value, id, reason) => {
        if (reason === "evict") this.out.push({ type: "unpersist", kind: "unreachable-agent", id });
      },
    });
    this.goneAgents = new LRUCache({
      max: config.maxGoneAgents ?? 10_000,
      dispose: (_value, id, reason) => {
        if (reason === "evict") this.out.push({ type: "unpersist", kind: "gone-agent", id });
      },
    });
    this.recoveryOfferHoldMs = config.recoveryOfferHoldMs ?? 10_000;
    if (config.recoveryAgentFraction !== undefined && !(config.recoveryAgentFraction >= 0 && config.recoveryAgentFraction <= 1)) {
      throw new Error(`recoveryAgentFraction: must be a number from 0 to 1, got ${config.recoveryAgentFraction}`);
    }
    this.recoveryAgentFraction = config.recoveryAgentFraction;
    this.removedAgentRetentionMs = config.removedAgentRetentionMs ?? 14 * 24 * 3_600_000;
    this.requirePrincipal = config.requirePrincipal ?? false;
    if (config.roleAcl !== undefined) {
      const problem = roleAclProblem(config.roleAcl);
      if (problem) throw new Error(`roleAcl: ${problem}`);
    }
    this.roleAcl = config.roleAcl;
    this.completedFrameworks = new LRUCache({ max: config.maxCompletedFrameworks ?? 100 });
    this.recentCalls = new LRUCache({ max: config.recentCallCacheSize ?? 10_000 });
    this.registrations = new LRUCache({ max: 10_000 });
    this.agentReregisterTimeoutMs = config.agentReregisterTimeoutMs ?? 600_000;
    // Forgetting a torn-down id also forgets its registry marker, so both stay bounded.
    this.tornDown = new LRUCache({
      max: config.maxTornDownFrameworks ?? 100_000,
      dispose: (_value, id, reason) => {
        if (reason === "evict") this.out.push({ type: "unpersist", kind: "torn-down", id });
      },
    });
    this.allocator = createAllocator({
      rng: rng.fork("allocator"),
      allocationIntervalMs: this.allocationIntervalMs,
      ...(config.minAllocatable ? { minAllocatable: config.minAllocatable } : {}),
    });
  }

  /** Handles one input at time `nowMs` and returns the effects to carry out, in order. */
  handle(input: MasterInput, nowMs: number): MasterEffect[] {
    this.changes++;
    this.now = nowMs;
    this.out = [];
    switch (input.type) {
      case "scheduler-call":
        this.onSchedulerCall(input.call, input.senderId, input.callId, input.principal);
        break;
      case "agent-message":
        this.onAgentMessage(input.message, input.senderId);
        break;
      case "tick":
        this.onTick();
        break;
    }
    this.runWantedAllocation();
    const effects = this.out;
    this.out = [];
    return effects;
  }

  /** The earliest time at which a tick has something to do (the shell arms its timer for it). */
  nextTickMs(): number {
    const hold = this.holdingOffers() ? this.offerHoldUntilMs : Infinity;
    return Math.min(this.nextAllocationMs, hold, this.now + Math.min(this.pingIntervalMs, this.heartbeatIntervalMs, 1000));
  }

  /**
   * Restores what the registry kept (after a master restart or failover) and returns the effects
   * that announce the new master: frameworks wait to re-subscribe within their failover timeout
   * (the whole timeout, counted from now) and are sent a heartbeat event, which tells a driver
   * that has seen an older epoch to re-subscribe; agents are asked to re-register, and offers
   * wait for them (at most `recoveryOfferHoldMs`); torn-down ids stay refused; unreachable and
   * gone agents are remembered as such.
   */
  recover(records: RegistryRecord[], nowMs: number): MasterEffect[] {
    this.changes++;
    this.now = nowMs;
    this.out = [];
    this.recoveredAtMs = nowMs;
    this.nextPruneMs = nowMs;
    const removed = new Set<string>();
    for (const record of records) {
      if (record.kind === "torn-down") this.tornDown.set(record.id, true);
      if (record.kind === "unreachable-agent" || record.kind === "gone-agent") removed.add(record.id);
      this.advanceCounters(record.id);
    }
    for (const record of records) {
      switch (record.kind) {
        case "agent":
          // Both records exist only when a crash came between two writes: the removal is the later fact.
          if (!removed.has(record.id)) this.recoveredAgents.set(record.id, { info: record.info, sinceMs: nowMs });
          break;
        case "unreachable-agent":
          this.unreachableAgents.set(record.id, { info: record.info, sinceMs: record.sinceMs });
          break;
        case "gone-agent":
          this.goneAgents.set(record.id, { info: record.info, sinceMs: record.sinceMs });
          break;
        case "framework":
          if (!this.tornDown.has(record.id)) {
            this.frameworks.set(record.id, this.awaitedFrameworkRecord(record.info));
            this.allocator.addFramework(record.id, { roles: this.rolesOf(record.info), active: false });
          }
          break;
        case "weight":
          this.recoverRoleSetting(record, () => this.allocator.setWeight(record.id, record.weight));
          break;
        case "quota":
          this.recoverRoleSetting(record, () => this.allocator.setQuota(record.id, { guarantees: record.guarantees, limits: record.limits }));
          break;
        case "torn-down":
          break;
      }
    }
    const fraction = this.recoveryAgentFraction ?? (this.allocator.getQuotas().size > 0 ? 0.8 : 0);
    const agentsToWaitFor = Math.ceil(this.recoveredAgents.size * fraction - 1e-9);
    if (agentsToWaitFor > 0) {
      this.offerHoldUntilMs = nowMs + this.recoveryOfferHoldMs;
      this.offerHoldPendingAgents = this.recoveredAgents.size - agentsToWaitFor;
    }
    for (const agentId of this.recoveredAgents.keys()) this.toAgent(agentId, { kind: "reregisterRequest", reregisterRequest: {} });
    for (const frameworkId of this.frameworks.keys()) this.toFramework(frameworkId, { kind: "heartbeat", heartbeat: {} });
    this.log("info", "registry recovered", {
      agents: this.recoveredAgents.size,
      frameworks: this.frameworks.size,
      unreachableAgents: this.unreachableAgents.size,
      goneAgents: this.goneAgents.size,
      offersHeldMs: this.holdingOffers() ? this.recoveryOfferHoldMs : 0,
    });
    const effects = this.out;
    this.out = [];
    return effects;
  }

  /** True while offers wait for agents of the registry to re-register. */
  private holdingOffers(): boolean {
    return this.offerHoldUntilMs > 0;
  }

  /** A weight or quota from the registry; one the allocator refuses is logged and skipped. */
  private recoverRoleSetting(record: RegistryRecord, apply: () => void): void {
    try {
      apply();
    } catch (err) {
      this.log("warn", "registry record ignored: the allocator refuses it", { kind: record.kind, role: record.id, error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** Ends the hold once enough recovered agents are back (see `recoveryAgentFraction`), or its time is up. */
  private checkOfferHold(): void {
    if (!this.holdingOffers()) return;
    if (this.recoveredAgents.size > this.offerHoldPendingAgents && this.now < this.offerHoldUntilMs) return;
    this.offerHoldUntilMs = 0;
    this.lastOfferHoldMs = this.now - this.recoveredAtMs;
    const fields = { waitedMs: this.now - this.recoveredAtMs, agentsPending: this.recoveredAgents.size };
    if (this.recoveredAgents.size === 0) this.log("info", "every agent re-registered; offers resume", fields);
    else if (this.recoveredAgents.size <= this.offerHoldPendingAgents) this.log("info", "enough agents re-registered; offers resume", fields);
    else this.log("warn", "offers resume before enough agents re-registered", fields);
    this.wantAllocation("all");
  }

  /** Keeps generated ids from colliding with ids this master (same id) handed out before a restart. */
  private advanceCounters(id: string): void {
    const match = new RegExp(`^${this.masterId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-([FS])(\\d+)$`).exec(id);
    if (!match) return;
    const n = Number(match[2]);
    if (match[1] === "F") this.frameworkCounter = Math.max(this.frameworkCounter, n);
    else this.agentCounter = Math.max(this.agentCounter, n);
  }

  // ---- framework calls ------------------------------------------------------------------------

  private onSchedulerCall(call: SchedulerCall, senderId: string, callId: string, principal: string | undefined): void {
    // The principal is part of the key: an answer given under one principal is never replayed under another.
    const cacheKey = callId ? `${principal ?? ""}/${senderId}/${callId}` : "";
    const cached = cacheKey ? this.recentCalls.get(cacheKey) : undefined;
    if (cached) {
      this.out.push({ type: "reply", payload: cached });
      return;
    }
    const reply = this.applySchedulerCall(call, senderId, principal);
    if (cacheKey) this.recentCalls.set(cacheKey, reply);
    this.out.push({ type: "reply", payload: reply });
  }

  private applySchedulerCall(call: SchedulerCall, senderId: string, principal: string | undefined): EnvelopePayload {
    if (principal === undefined && this.requirePrincipal) {
      return this.refuse("CORRAL_ERR_UNAUTHENTICATED", "this master serves only frameworks with a principal (requirePrincipal): call on the subject master.scheduler.<principal>, not the shared master.scheduler");
    }
    if (call.kind === "subscribe") return this.subscribe(call.frameworkId, call.subscribe.frameworkInfo, senderId, principal ?? "");
    if (this.tornDown.has(call.frameworkId)) return this.refuse("CORRAL_ERR_FRAMEWORK_REMOVED", `framework '${call.frameworkId}' has been torn down`);
    const framework = this.frameworks.get(call.frameworkId);
    // Checked before anything else about the framework, so that another principal learns nothing of it.
    if (framework && framework.info.principal !== (principal ?? "")) return this.refuse("CORRAL_ERR_UNAUTHORIZED", this.otherPrincipal(call.frameworkId, framework.info.principal, principal ?? ""));
    if (!framework || !framework.connected) return this.refuse("CORRAL_ERR_NOT_SUBSCRIBED", `framework '${call.frameworkId}' is not subscribed; SUBSCRIBE first`);
    // As Mesos ties calls to the current subscription: an instance replaced by a failover neither
    // acts for the framework nor keeps it alive. The refusal does not name the current instance.
    if (senderId !== framework.senderId) {
      return this.refuse("CORRAL_ERR_FRAMEWORK_FAILED_OVER", `framework '${call.frameworkId}' is subscribed by another scheduler instance since a failover; this instance's calls are refused`);
    }
    this.keepalive(call.frameworkId, framework);
    switch (call.kind) {
      case "heartbeat":
        return this.ok();
      case "teardown":
        this.teardown(call.frameworkId, "CORRAL_ERR_FRAMEWORK_REMOVED: torn down by the framework");
        return this.ok();
      case "accept":
        return this.accept(call.frameworkId, framework, call.accept.offerIds, call.accept.operations.flatMap((op) => op.launch.taskInfos), this.refuseSecondsOf(call.frameworkId, call.accept.filters?.refuseSeconds));
      case "decline":
        return this.decline(call.frameworkId, call.decline.offerIds, this.refuseSecondsOf(call.frameworkId, call.decline.filters?.refuseSeconds));
      case "revive":
        return this.guarded(() => {
          this.allocator.reviveRoles(call.frameworkId, call.revive.roles.length > 0 ? call.revive.roles : undefined);
          this.wantAllocation("all");
        });
      case "suppress":
        return this.guarded(() => this.allocator.suppressRoles(call.frameworkId, call.suppress.roles.length > 0 ? call.suppress.roles : undefined));
      case "kill":
        this.kill(call.frameworkId, framework, call.kill.taskId, call.kill.agentId, call.kill.killGracePeriodSeconds);
        return this.ok();
      case "acknowledge":
        return this.acknowledge(call.frameworkId, call.acknowledge.agentId, call.acknowledge.taskId, call.acknowledge.uuid);
      case "reconcile":
        this.reconcile(call.frameworkId, framework, call.reconcile.tasks);
        return this.ok();
      case "message":
        return this.refuse("CORRAL_ERR_UNSUPPORTED", "framework messages need a custom executor, which Corral does not run yet");
    }
  }

  /**
   * `principal`: the one the call came under (`""` on the shared subject). As Mesos fills in the
   * authenticated principal of a framework that names none, and refuses one that names another.
   */
  private subscribe(requestedId: string, info: FrameworkInfo | undefined, senderId: string, principal: string): EnvelopePayload {
    const problem = this.frameworkInfoProblem(info);
    if (problem) return this.refuse("CORRAL_ERR_INVALID_CALL", problem);
    const frameworkInfo = info!;
    if (frameworkInfo.principal !== "" && frameworkInfo.principal !== principal) {
      if (principal === "") {
        return this.refuse(
          "CORRAL_ERR_UNAUTHENTICATED",
          `subscribe.frameworkInfo.principal: '${frameworkInfo.principal}' came on the shared subject master.scheduler, which is for frameworks without a principal; a framework with a principal subscribes on master.scheduler.<principal>`,
        );
      }
      return this.refuse("CORRAL_ERR_UNAUTHORIZED", `subscribe.frameworkInfo.principal: '${frameworkInfo.principal}' differs from the principal the call came under ('${principal}'); a framework subscribes under its own principal only`);
    }
    // As Mesos: when both name an id they must agree, else which framework is meant is unclear.
    if (requestedId && frameworkInfo.id && requestedId !== frameworkInfo.id) {
      return this.refuse("CORRAL_ERR_INVALID_CALL", `frameworkId: '${requestedId}' differs from subscribe.frameworkInfo.id '${frameworkInfo.id}'`);
    }
    const id = requestedId || frameworkInfo.id || "";
    // A framework id is a subject token and names a sandbox directory on every agent that runs its
    // tasks: one an agent would refuse is refused here, once, instead of failing each task.
    const idProblem = id ? (tokenProblem(id) ?? pathIdProblem(id)) : undefined;
    if (idProblem) return this.refuse("CORRAL_ERR_INVALID_CALL", `frameworkId '${id}': ${idProblem}`);
    if (id && this.tornDown.has(id)) return this.refuse("CORRAL_ERR_FRAMEWORK_REMOVED", `framework '${id}' has been torn down and cannot subscribe again`);
    const existing = id ? this.frameworks.get(id) : undefined;
    // As Mesos: a framework's principal never changes, so a failover cannot take it to another one.
    if (existing && existing.info.principal !== principal) return this.refuse("CORRAL_ERR_UNAUTHORIZED", this.otherPrincipal(id, existing.info.principal, principal));
    const roleProblem = roleAuthorizationProblem(this.roleAcl, principal, this.rolesOf(frameworkInfo));
    if (roleProblem) return this.refuse("CORRAL_ERR_UNAUTHORIZED", `subscribe.frameworkInfo.roles: ${roleProblem}`);
    const frameworkId = id || `${this.masterId}-F${++this.frameworkCounter}`;
    const stored: FrameworkInfo = { ...frameworkInfo, id: frameworkId, principal };
    if (existing) {
      this.failover(frameworkId, existing, stored, senderId);
    } else {
      const framework = this.newFrameworkRecord(stored, senderId);
      this.frameworks.set(frameworkId, framework);
      try {
        this.allocator.addFramework(frameworkId, { roles: this.rolesOf(stored), active: false });
      } catch (error) {
        this.frameworks.delete(frameworkId);
        return this.refuse("CORRAL_ERR_INVALID_CALL", (error as Error).message);
      }
      this.log("info", "framework subscribed", { frameworkId, name: stored.name, roles: stored.roles });
    }
    this.out.push({ type: "persist", record: { kind: "framework", id: frameworkId, info: stored } });
    return {
      payload: "schedulerEvent",
      schedulerEvent: { kind: "subscribed", subscribed: { frameworkId, heartbeatIntervalSeconds: this.heartbeatIntervalMs / 1000, masterId: this.masterId } },
    };
  }

  /** The refusal of a call for `frameworkId` under another principal than the one it is registered under. */
  private otherPrincipal(frameworkId: string, registered: string, caller: string): string {
    const name = (p: string) => (p === "" ? "no principal" : `principal '${p}'`);
    return `frameworkId: framework '${frameworkId}' is registered under ${name(registered)}, and this call came under ${name(caller)}; a framework's principal cannot change`;
  }

  private failover(frameworkId: string, framework: FrameworkRecord, info: FrameworkInfo, senderId: string): void {
    for (const offerId of [...framework.offers]) this.rescindOffer(offerId, true);
    if (framework.senderId && framework.senderId !== senderId) {
      this.toFramework(frameworkId, { kind: "error", error: { message: `CORRAL_ERR_FRAMEWORK_FAILED_OVER ${senderId}` } });
    }
    framework.info = info;
    framework.senderId = senderId;
    framework.connected = true;
    framework.ready = false;
    framework.disconnectedAtMs = undefined;
    framework.lastCallMs = this.now;
    framework.nextHeartbeatMs = this.now + this.heartbeatIntervalMs;
    this.allocator.updateFramework(frameworkId, { roles: this.rolesOf(info), active: false });
    this.log("info", "framework re-subscribed", { frameworkId, senderId });
  }

  private newFrameworkRecord(info: FrameworkInfo, senderId: string): FrameworkRecord {
    return {
      info,
      senderId,
      connected: true,
      ready: false,
      lastCallMs: this.now,
      disconnectedAtMs: undefined,
      nextHeartbeatMs: this.now + this.heartbeatIntervalMs,
      registeredAtMs: this.now,
      tasks: new Map(),
      completed: new LRUCache({ max: this.maxCompletedTasksPerFramework }),
      offers: new Set(),
    };
  }

  /**
   * A framework this master knows from the registry or from an agent's report but has not heard
   * from yet. Its driver may well be connected, to the old leader: it counts as disconnected only
   * once the keepalive window (the time any connected framework has between two calls) has passed
   * from now, and its failover timeout runs from then. Counting it disconnected at once would tear
   * down, on the first tick, every framework whose failover timeout is 0 (the SDK's and Mesos's
   * default) with its tasks, before its driver could re-subscribe; Mesos never tears a framework
   * down for a master failover.
   */
  private awaitedFrameworkRecord(info: FrameworkInfo): FrameworkRecord {
    const framework = this.newFrameworkRecord(info, "");
    framework.connected = false;
    framework.disconnectedAtMs = this.now + this.keepaliveTimeoutMs;
    return framework;
  }

  private frameworkInfoProblem(info: FrameworkInfo | undefined): string | undefined {
    if (!info) return "subscribe.frameworkInfo: must be set";
    if (!info.name) return "subscribe.frameworkInfo.name: must not be empty";
    for (const [i, role] of info.roles.entries()) {
      const problem = roleNameError(role, true);
      if (problem) return `subscribe.frameworkInfo.roles(${i}): ${problem}`;
    }
    if (new Set(info.roles).size !== info.roles.length) return "subscribe.frameworkInfo.roles: must be distinct";
    if (!(Number.isFinite(info.failoverTimeoutSeconds) && info.failoverTimeoutSeconds >= 0)) {
      return "subscribe.frameworkInfo.failoverTimeoutSeconds: must be a finite number >= 0";
    }
    return undefined;
  }

  private rolesOf(info: FrameworkInfo): string[] {
    return info.roles.length > 0 ? [...info.roles] : ["*"];
  }

  /** Any call is a keepalive; the first one after SUBSCRIBED makes the framework offerable. */
  private keepalive(frameworkId: string, framework: FrameworkRecord): void {
    framework.lastCallMs = this.now;
    if (!framework.ready) {
      framework.ready = true;
      this.allocator.activateFramework(frameworkId);
      this.wantAllocation("all");
    }
  }

  private accept(frameworkId: string, framework: FrameworkRecord, offerIds: string[], tasks: TaskInfo[], refuseSeconds: number): EnvelopePayload {
    const offers = offerIds.map((id) => this.offers.get(id));
    const invalid = this.invalidOffersReason(frameworkId, offerIds, offers);
    // Each offer once, however often it is named (naming one twice makes the call invalid).
    const valid = [...new Set(offers)].filter((o): o is OfferRecord => o !== undefined && o.frameworkId === frameworkId);
    for (const offer of valid) this.removeOffer(offer);
    if (invalid) {
      // Mesos's rule: nothing launches from a bad set of offers, and the good ones come back.
      for (const offer of valid) this.allocator.recoverResources(frameworkId, offer.agentId, offer.role, offer.resources);
      const state: TaskState = framework.info.partitionAware ? "TASK_DROPPED" : "TASK_LOST";
      for (const task of tasks) this.sendMasterUpdate(frameworkId, task.taskId, task.agentId, state, "REASON_INVALID_OFFERS", invalid);
      this.counters.invalidCalls++;
      return this.ok();
    }
    const agentId = valid[0]!.agentId;
    const role = valid[0]!.role;
    let pool = Resources.empty();
    for (const offer of valid) pool = pool.add(offer.resources);
    for (const task of tasks) pool = this.launch(frameworkId, framework, agentId, role, pool, task);
    if (!pool.isEmpty()) {
      this.allocator.recoverResources(frameworkId, agentId, role, pool, { refuseSeconds, nowMs: this.now });
    }
    return this.ok();
  }

  private invalidOffersReason(frameworkId: string, offerIds: string[], offers: Array<OfferRecord | undefined>): string | undefined {
    if (offerIds.length === 0) return "accept.offerIds: must not be empty";
    if (new Set(offerIds).size !== offerIds.length) return "accept.offerIds: must be distinct";
    for (const [i, offer] of offers.entries()) {
      if (!offer) return `offer '${offerIds[i]}' is no longer valid (unknown, rescinded or already answered)`;
      if (offer.frameworkId !== frameworkId) return `offer '${offer.id}' belongs to another framework`;
    }
    const first = offers[0]!;
    if (offers.some((o) => o!.agentId !== first.agentId)) return "accept: all offers must come from one agent";
    if (offers.some((o) => o!.role !== first.role)) return "accept: all offers must be allocated to one role";
    if (!this.agents.has(first.agentId)) return `agent '${first.agentId}' is gone`;
    return undefined;
  }

  /** Validates one task against the remaining pool; launches it or answers TASK_ERROR. */
  private launch(frameworkId: string, framework: FrameworkRecord, agentId: string, role: string, pool: Resources, task: TaskInfo): Resources {
    const error = (message: string) => {
      this.sendMasterUpdate(frameworkId, task.taskId, agentId, "TASK_ERROR", "REASON_TASK_INVALID", message);
      this.counters.invalidCalls++;
      return pool;
    };
    const taskIdProblem = pathIdProblem(task.taskId);
    if (taskIdProblem) return error(`taskId '${task.taskId}': ${taskIdProblem}`);
    if (framework.tasks.has(task.taskId)) return error(`taskId '${task.taskId}' is already used by an active task of this framework`);
    if (task.agentId && task.agentId !== agentId) return error(`task.agentId '${task.agentId}' differs from the offers' agent '${agentId}'`);
    if (!task.command || (!task.command.value && task.command.arguments.length === 0)) return error("task.command: a command value or arguments are required");
    if (task.allocationRole !== undefined && task.allocationRole !== role) return error(`task.allocationRole '${task.allocationRole}' differs from the offers' role '${role}'`);
    let resources: Resources;
    try {
      resources = resourcesFromWire(task.resources);
    } catch (e) {
      return error(`task.resources: ${(e as ResourceError).message}`);
    }
    if (resources.isEmpty()) return error("task.resources: must not be empty");
    const rest = pool.trySubtract(resources);
    if (rest === null) return error(`task uses ${resources} but only ${pool} is left in the offers`);
    const agent = this.agents.get(agentId)!;
    if (agent.tasks.size >= this.maxTasksPerAgent) return error(`agent '${agentId}' already runs maxTasksPerAgent (${this.maxTasksPerAgent}) tasks`);

    // The role travels with the task to the agent and back when it re-registers: a new leader
    // charges the task to it (masters do not persist tasks).
    const info: TaskInfo = { ...task, agentId, allocationRole: role };
    const status: TaskStatus = this.status(frameworkId, task.taskId, agentId, "TASK_STAGING", "REASON_UNSPECIFIED", "");
    framework.tasks.set(task.taskId, { frameworkId, agentId, info, role, resources, status });
    agent.tasks.add(taskKey(frameworkId, task.taskId));
    this.counters.tasksLaunched++;
    this.toAgent(agentId, { kind: "runTask", runTask: { framework: framework.info, task: info } });
    return rest;
  }

  /** The filter of an ACCEPT or DECLINE: absent or negative means the default, as in Mesos (which also logs the negative one). */
  private refuseSecondsOf(frameworkId: string, given: number | undefined): number {
    if (given === undefined) return this.defaultRefuseSeconds;
    if (given < 0) {
      this.log("warn", "negative refuse_seconds; the default filter applies", { frameworkId, refuseSeconds: given, defaultRefuseSeconds: this.defaultRefuseSeconds });
      return this.defaultRefuseSeconds;
    }
    return given;
  }

  private decline(frameworkId: string, offerIds: string[], refuseSeconds: number): EnvelopePayload {
    for (const offerId of offerIds) {
      const offer = this.offers.get(offerId);
      // Declining an offer that is gone is harmless (it may have been rescinded meanwhile).
      if (!offer || offer.frameworkId !== frameworkId) continue;
      this.removeOffer(offer);
      this.counters.offersDeclined++;
      this.allocator.recoverResources(frameworkId, offer.agentId, offer.role, offer.resources, {
        refuseSeconds,
        nowMs: this.now,
      });
    }
    return this.ok();
  }

  private kill(frameworkId: string, framework: FrameworkRecord, taskId: string, agentId: string, graceSeconds: number | undefined): void {
    const task = framework.tasks.get(taskId);
    if (!task) {
      // Mesos answers a kill of a task it does not know with what reconciliation would say.
      this.reconcileOne(frameworkId, framework, taskId, agentId);
      return;
    }
    this.toAgent(task.agentId, {
      kind: "killTask",
      killTask: { frameworkId, taskId, ...(graceSeconds !== undefined ? { killGracePeriodSeconds: graceSeconds } : {}) },
    });
  }

  private acknowledge(frameworkId: string, agentId: string, taskId: string, uuid: Uint8Array): EnvelopePayload {
    if (uuid.length === 0) return this.refuse("CORRAL_ERR_INVALID_CALL", "acknowledge.uuid: must not be empty");
    if (this.agents.has(agentId)) this.toAgent(agentId, { kind: "statusUpdateAck", statusUpdateAck: { frameworkId, taskId, uuid } });
    return this.ok();
  }

  private reconcile(frameworkId: string, framework: FrameworkRecord, tasks: Array<{ taskId: string; agentId: string }>): void {
    if (tasks.length === 0) {
      for (const task of framework.tasks.values()) this.sendReconciled(frameworkId, task.status);
      return;
    }
    for (const { taskId, agentId } of tasks) this.reconcileOne(frameworkId, framework, taskId, agentId);
  }

  private reconcileOne(frameworkId: string, framework: FrameworkRecord, taskId: string, agentId: string): void {
    const known = framework.tasks.get(taskId) ?? framework.completed.get(taskId);
    if (known) {
      this.sendReconciled(frameworkId, known.status);
      return;
    }
    const partitionAware = framework.info.partitionAware;
    // An agent from the registry that has not re-registered yet may still report the task: as
    // Mesos does, say nothing until it re-registers or times out. Without an agent id the task
    // may be on any of them, so nothing is said while one is still awaited (which is why Mesos
    // asks frameworks to name the agent: their answers then come sooner).
    if (agentId ? this.recoveredAgents.has(agentId) : this.recoveredAgents.size > 0) return;
    let state: TaskState;
    let message: string;
    if (agentId && this.agents.has(agentId)) {
      state = partitionAware ? "TASK_GONE" : "TASK_LOST";
      message = "Reconciliation: task is unknown to the agent";
    } else if (agentId && this.unreachableAgents.has(agentId)) {
      state = partitionAware ? "TASK_UNREACHABLE" : "TASK_LOST";
      message = "Reconciliation: agent is unreachable";
    } else if (agentId && this.goneAgents.has(agentId)) {
      state = partitionAware ? "TASK_GONE" : "TASK_LOST";
      message = "Reconciliation: agent is gone";
    } else {
      state = partitionAware ? "TASK_UNKNOWN" : "TASK_LOST";
      message = "Reconciliation: task is unknown";
    }
    this.sendMasterUpdate(frameworkId, taskId, agentId, state, "REASON_RECONCILIATION", message);
  }

  private sendReconciled(frameworkId: string, status: TaskStatus): void {
    this.toFramework(frameworkId, {
      kind: "update",
      update: { status: { ...status, reason: "REASON_RECONCILIATION", uuid: new Uint8Array(0), source: "SOURCE_MASTER", timestamp: this.now / 1000 } },
    });
  }

  private teardown(frameworkId: string, why: string): void {
    const framework = this.frameworks.get(frameworkId);
    if (!framework) return;
    for (const offerId of [...framework.offers]) this.rescindOffer(offerId, false);
    const agentsWithTasks = new Set<string>();
    for (const task of framework.tasks.values()) {
      agentsWithTasks.add(task.agentId);
      this.agents.get(task.agentId)?.tasks.delete(taskKey(frameworkId, task.info.taskId));
    }
    for (const agentId of agentsWithTasks) {
      if (this.agents.has(agentId)) this.toAgent(agentId, { kind: "shutdownFramework", shutdownFramework: { frameworkId } });
    }
    this.allocator.removeFramework(frameworkId);
    this.frameworks.delete(frameworkId);
    this.tornDown.set(frameworkId, true);
    this.completedFrameworks.set(frameworkId, framework.info);
    // The marker first: a crash between the two writes must not forget that the id is gone.
    this.out.push({ type: "persist", record: { kind: "torn-down", id: frameworkId } });
    this.out.push({ type: "unpersist", kind: "framework", id: frameworkId });
    this.log("info", "framework torn down", { frameworkId, why });
  }

  // ---- agent messages -------------------------------------------------------------------------

  private onAgentMessage(message: AgentToMaster, senderId: string): void {
    switch (message.kind) {
      case "register":
        this.register(message.register.agentInfo, senderId);
        break;
      case "reregister":
        this.reregister(message.reregister.agentInfo, message.reregister.tasks, message.reregister.frameworks, message.reregister.listening === true, senderId);
        break;
      case "pong":
        this.pong(senderId);
        break;
      case "statusUpdate":
        if (message.statusUpdate.status) this.statusUpdate(senderId, message.statusUpdate.frameworkId, message.statusUpdate.status, message.statusUpdate.latestState);
        break;
      case "unregisterNotice":
        if (this.agents.has(senderId)) this.removeAgent(senderId, "REASON_AGENT_REMOVED", "agent shut down");
        break;
    }
  }

  private register(info: AgentInfo | undefined, senderId: string): void {
    const parsed = this.parseAgentInfo(info);
    if (typeof parsed === "string") {
      this.refuseAgent("registration", senderId, parsed);
      return;
    }
    const previous = this.registrations.get(senderId);
    const agentId = previous && this.agents.has(previous) ? previous : `${this.masterId}-S${++this.agentCounter}`;
    if (!this.agents.has(agentId)) {
      const refused = this.admitAgent(agentId, { ...info!, id: agentId }, parsed, []);
      if (refused) {
        this.refuseAgent("registration", senderId, refused);
        return;
      }
      this.registrations.set(senderId, agentId);
    }
    this.out.push({ type: "reply", payload: { payload: "masterToAgent", masterToAgent: { kind: "registered", registered: this.registration(agentId) } } });
  }

  /**
   * An agent coming back (after its restart, a lost master or a failover), as itself (`senderId`).
   * One that says it is `listening` already on its command subject is offered at once; any other
   * after its first pong.
   */
  private reregister(info: AgentInfo | undefined, reported: Array<{ frameworkId: string; task?: TaskInfo; status?: TaskStatus }>, frameworks: FrameworkInfo[], listening: boolean, senderId: string): void {
    const parsed = this.parseAgentInfo(info);
    // The sender is the agent whose subject the message came on (the codec checks): it may not
    // take another agent's place, with that agent's tasks.
    const idProblem = !info?.id ? "must be set" : (tokenProblem(info.id) ?? (info.id === senderId ? undefined : `'${info.id}' differs from the sender '${senderId}'; an agent re-registers only itself`));
    if (typeof parsed === "string" || idProblem) {
      this.refuseAgent("re-registration", info?.id ?? "", typeof parsed === "string" ? parsed : `agentInfo.id: ${idProblem}`);
      return;
    }
    const agentId = info!.id;
    const wasUnreachable = this.unreachableAgents.has(agentId);
    const wasGone = this.goneAgents.has(agentId);
    const duplicate = duplicateTaskProblem(reported);
    if (duplicate) {
      this.refuseAgent("re-registration", agentId, duplicate);
      return;
    }
    // Decided before anything changes, so that a refused re-registration leaves the master as it was.
    const joining = new Map<string, FrameworkInfo>();
    for (const frameworkInfo of frameworks) if (this.joinsFromAgent(frameworkInfo) && !joining.has(frameworkInfo.id)) joining.set(frameworkInfo.id, frameworkInfo);
    const fates = reported.map((record, i) => this.reportedTaskFate(agentId, i, record, wasUnreachable, joining));
    // Taken from the total one task at a time: a sum would merge two tasks' overlapping port ranges.
    let left: Resources = parsed;
    for (const [i, fate] of fates.entries()) {
      if (!(fate instanceof Resources)) continue;
      const rest = left.trySubtract(fate);
      if (rest === null) {
        const problem = `tasks(${i}): task '${reported[i]!.task!.taskId}' uses ${fate.toString()}, but only ${left.toString()} of the agent's total ${parsed.toString()} is left`;
        this.refuseAgent("re-registration", agentId, problem);
        return;
      }
      left = rest;
    }
    // An agent of the registry coming back as it was stored needs no write (1,000 of them after a failover).
    const stored = this.recoveredAgents.get(agentId);
    const unchanged = stored !== undefined && JSON.stringify(stored.info) === JSON.stringify(info);
    const known = this.agents.get(agentId);
    if (known) {
      // Restarted agent or lost master: start from what it reports now.
      this.dropAgentForReregistration(agentId, known, reported);
    }
    this.unreachableAgents.delete(agentId);
    this.goneAgents.delete(agentId);
    this.recoveredAgents.delete(agentId);
    if (wasUnreachable) this.endUnreportedTasks(agentId, reported);
    for (const frameworkInfo of frameworks) this.ensureFrameworkFromAgent(frameworkInfo);
    const tasks: TaskRecord[] = [];
    const roleGuessed: string[] = [];
    for (const [i, record] of reported.entries()) {
      const fate = fates[i]!;
      // The status is kept as the task's, on the agent reporting it (as forwarded updates are).
      const status = (): TaskStatus => ({ ...record.status!, agentId, frameworkId: record.frameworkId });
      if (fate === "kill") this.toAgent(agentId, { kind: "killTask", killTask: { frameworkId: record.frameworkId, taskId: record.task!.taskId } });
      else if (fate === "completed") this.adoptEndedTask(agentId, record.frameworkId, record.task!, status());
      else if (fate instanceof Resources) tasks.push(this.adoptReportedTask(agentId, record.frameworkId, record.task!, status(), fate, roleGuessed));
      else this.log("warn", "ignoring a task reported by a re-registering agent", { agentId, frameworkId: record.frameworkId, taskId: record.task?.taskId, problem: fate.skip });
    }
    if (roleGuessed.length > 0) {
      // One line per agent, not per task: after an upgrade every task of an older agent lands here.
      this.log("warn", "tasks reported without their allocation role are charged to their framework's first role", { agentId, count: roleGuessed.length, tasks: roleGuessed.slice(0, 10) });
    }
    const refused = this.admitAgent(agentId, info!, parsed, tasks, !unchanged);
    if (refused) {
      this.refuseAgent("re-registration", agentId, refused);
      return;
    }
    // After the agent record: a crash between the two writes leaves the agent admitted.
    if (wasUnreachable) this.out.push({ type: "unpersist", kind: "unreachable-agent", id: agentId });
    if (wasGone) this.out.push({ type: "unpersist", kind: "gone-agent", id: agentId });
    if (listening) this.markListening(agentId, this.agents.get(agentId)!);
    this.checkOfferHold();
    this.out.push({ type: "reply", payload: { payload: "masterToAgent", masterToAgent: { kind: "reregistered", reregistered: this.registration(agentId) } } });
  }

  /**
   * What becomes of a task an agent reports when it re-registers, decided before anything changes:
   * its resources when it stays, "completed" when it has ended (its terminal update is not
   * acknowledged yet), "kill" when its framework is gone or has replaced it, `skip` (why) when the
   * report `tasks(i)` cannot be used. `joining` are the frameworks the agent reports that will be added.
   */
  private reportedTaskFate(
    agentId: string,
    i: number,
    record: { frameworkId: string; task?: TaskInfo; status?: TaskStatus },
    wasUnreachable: boolean,
    joining: ReadonlyMap<string, FrameworkInfo>,
  ): Resources | "completed" | "kill" | { skip: string } {
    if (!record.task) return { skip: `tasks(${i}).task: must be set` };
    if (!record.status) return { skip: `tasks(${i}).status: must be set` };
    const frameworkIdProblem = tokenProblem(record.frameworkId);
    if (frameworkIdProblem) return { skip: `tasks(${i}).frameworkId: ${frameworkIdProblem}` };
    // The rule a launch's task id is held to (it names the task's sandbox on the agent).
    const taskIdProblem = pathIdProblem(record.task.taskId);
    if (taskIdProblem) return { skip: `tasks(${i}): task.taskId: ${taskIdProblem}` };
    if (record.status.taskId !== record.task.taskId) return { skip: `tasks(${i}).status.taskId: '${record.status.taskId}' differs from task.taskId '${record.task.taskId}'` };
    // As in Mesos, an ended task holds no resources: it is kept as completed, and the agent re-sends
    // its terminal update, which reaches the framework (to acknowledge) the usual way.
    if (isTerminal(record.status.state)) return "completed";
    const framework = this.frameworks.get(record.frameworkId);
    const info = framework?.info ?? joining.get(record.frameworkId);
    if (!info || this.tornDown.has(record.frameworkId)) return "kill";
    if (wasUnreachable && !info.partitionAware && !framework?.tasks.has(record.task.taskId)) {
      // It was reported LOST when the agent went away; a framework that is not partition-aware
      // has already replaced it, so it must not come back.
      return "kill";
    }
    // The framework runs a task of this id elsewhere (it replaced this one meanwhile): task ids are
    // unique among a framework's active tasks, so this copy goes rather than take the other's place.
    const active = framework?.tasks.get(record.task.taskId);
    if (active && active.agentId !== agentId) return "kill";
    const role = record.task.allocationRole;
    const roleProblem = role === undefined ? null : roleNameError(role, true);
    if (roleProblem) return { skip: `tasks(${i}).task.allocationRole '${role}': ${roleProblem}` };
    try {
      return resourcesFromWire(record.task.resources);
    } catch (error) {
      return { skip: `tasks(${i}).task.resources: ${(error as Error).message}` };
    }
  }

  /**
   * Takes a task an agent reports back (its fate decided by {@link reportedTaskFate}), charged to
   * the role it was launched in: the one this master knows, else the one the agent reports (also
   * when the framework has left that role since: as in Mesos, its allocation stays there until the
   * task ends), else, from an agent too old to report it, the framework's first role (the task goes
   * into `roleGuessed`).
   */
  private adoptReportedTask(agentId: string, frameworkId: string, info: TaskInfo, status: TaskStatus, resources: Resources, roleGuessed: string[]): TaskRecord {
    const framework = this.frameworks.get(frameworkId)!;
    const previous = framework.tasks.get(info.taskId);
    let role = previous?.role ?? info.allocationRole;
    if (role === undefined) {
      role = this.rolesOf(framework.info)[0]!;
      roleGuessed.push(`${frameworkId}/${info.taskId}`);
    }
    const task: TaskRecord = { frameworkId, agentId, info, role, resources, status };
    framework.tasks.set(info.taskId, task);
    if (previous && previous.status.state !== status.state) {
      this.toFramework(frameworkId, { kind: "update", update: { status: { ...status, uuid: new Uint8Array(0), reason: "REASON_AGENT_REREGISTERED" } } });
    }
    return task;
  }

  /**
   * Keeps a task an agent reports as ended among its framework's completed tasks (the active
   * record of it on this agent, if any, ends). Nothing is sent: the agent re-sends the update. A
   * framework that is gone, or runs a task of this id elsewhere, has nothing to keep.
   */
  private adoptEndedTask(agentId: string, frameworkId: string, info: TaskInfo, status: TaskStatus): void {
    const framework = this.frameworks.get(frameworkId);
    if (!framework || this.tornDown.has(frameworkId)) return;
    const active = framework.tasks.get(info.taskId);
    if (active) {
      if (active.agentId === agentId) this.finishTask(framework, active, status, true);
      return;
    }
    let resources: Resources;
    try {
      resources = resourcesFromWire(info.resources);
    } catch {
      resources = Resources.empty();
    }
    // An ended task holds nothing: its role is only shown, so a bad one is not worth refusing.
    const reportedRole = info.allocationRole !== undefined && roleNameError(info.allocationRole, true) === null ? info.allocationRole : undefined;
    const role = framework.completed.get(info.taskId)?.role ?? reportedRole ?? this.rolesOf(framework.info)[0]!;
    framework.completed.set(info.taskId, { frameworkId, agentId, info, role, resources, status });
  }

  /**
   * An unreachable agent is back without some of the tasks it had (it restarted while cut off):
   * those are gone. Without this they would stay UNREACHABLE in their framework for good, on an
   * agent that no longer counts them.
   */
  private endUnreportedTasks(agentId: string, reported: Array<{ frameworkId: string; task?: TaskInfo }>): void {
    const stillThere = new Set(reported.filter((r) => r.task).map((r) => taskKey(r.frameworkId, r.task!.taskId)));
    for (const [frameworkId, framework] of this.frameworks) {
      for (const task of [...framework.tasks.values()]) {
        if (task.agentId !== agentId || stillThere.has(taskKey(frameworkId, task.info.taskId))) continue;
        const state: TaskState = framework.info.partitionAware ? "TASK_GONE" : "TASK_LOST";
        this.finishTask(framework, task, this.status(frameworkId, task.info.taskId, agentId, state, "REASON_AGENT_RESTARTED", "task was not reported by the re-registering agent"), false);
      }
    }
  }

  private dropAgentForReregistration(agentId: string, agent: AgentRecord, reported: Array<{ frameworkId: string; task?: TaskInfo }>): void {
    const stillThere = new Set(reported.filter((r) => r.task).map((r) => taskKey(r.frameworkId, r.task!.taskId)));
    for (const key of agent.tasks) {
      if (stillThere.has(key)) continue;
      const { frameworkId, taskId } = splitTaskKey(key);
      const framework = this.frameworks.get(frameworkId);
      const task = framework?.tasks.get(taskId);
      if (!framework || !task) continue;
      const state: TaskState = framework.info.partitionAware ? "TASK_GONE" : "TASK_LOST";
      this.finishTask(framework, task, this.status(frameworkId, taskId, agentId, state, "REASON_AGENT_RESTARTED", "task was not reported by the re-registering agent"), false);
    }
    for (const offerId of [...agent.offers]) this.rescindOffer(offerId, true);
    this.allocator.removeAgent(agentId);
    this.agents.delete(agentId);
  }

  /** Whether a framework a re-registering agent reports is one the master does not know and will add. */
  private joinsFromAgent(info: FrameworkInfo): boolean {
    if (!info.id || this.frameworks.has(info.id) || this.tornDown.has(info.id)) return false;
    return (tokenProblem(info.id) ?? this.frameworkInfoProblem(info)) === undefined;
  }

  private ensureFrameworkFromAgent(info: FrameworkInfo): void {
    if (!info.id || this.frameworks.has(info.id) || this.tornDown.has(info.id)) return;
    const problem = tokenProblem(info.id) ?? this.frameworkInfoProblem(info);
    if (problem) {
      this.log("warn", "ignoring a framework reported by an agent", { frameworkId: info.id, problem });
      return;
    }
    // A framework the master has not heard from yet (it restarted): wait for it to re-subscribe.
    this.allocator.addFramework(info.id, { roles: this.rolesOf(info), active: false });
    this.frameworks.set(info.id, this.awaitedFrameworkRecord(info));
  }

  private refuseAgent(what: string, agentId: string, problem: string): void {
    this.log("warn", `agent ${what} refused`, { agentId, problem });
    this.out.push({ type: "reply", payload: { payload: "callResponse", callResponse: { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: problem } } });
  }

  /** Admits an agent with its running tasks; answers the reason when the allocator refuses it. */
  private admitAgent(agentId: string, info: AgentInfo, total: Resources, tasks: TaskRecord[], persist = true): string | undefined {
    const usedByFramework = new Map<string, { frameworkId: string; role: string; resources: Resources }>();
    for (const task of tasks) {
      const key = `${task.frameworkId}\u0000${task.role}`;
      const entry = usedByFramework.get(key) ?? { frameworkId: task.frameworkId, role: task.role, resources: Resources.empty() };
      entry.resources = entry.resources.add(task.resources);
      usedByFramework.set(key, entry);
    }
    try {
      this.allocator.addAgent(agentId, { total, attributes: Object.fromEntries(info.attributes.map((a) => [a.name, a.text])), used: [...usedByFramework.values()], active: false });
    } catch (error) {
      if (!(error instanceof AllocatorError)) throw error;
      return error.message;
    }
    const record: AgentRecord = {
      info,
      total,
      listening: false,
      lastHeardMs: this.now,
      nextPingMs: this.now + this.pingIntervalMs,
      pingSeq: 0,
      tasks: new Set(tasks.map((t) => taskKey(t.frameworkId, t.info.taskId))),
      offers: new Set(),
      registeredAtMs: this.now,
    };
    this.agents.set(agentId, record);
    this.fileAgentCheck(agentId, record);
    if (persist) this.out.push({ type: "persist", record: { kind: "agent", id: agentId, info } });
    this.log("info", "agent admitted", { agentId, hostname: info.hostname, resources: total.toString(), tasks: tasks.length });
    return undefined;
  }

  private parseAgentInfo(info: AgentInfo | undefined): Resources | string {
    if (!info) return "agentInfo: must be set";
    if (!info.hostname) return "agentInfo.hostname: must not be empty";
    try {
      const total = resourcesFromWire(info.resources);
      if (total.isEmpty()) return "agentInfo.resources: must not be empty";
      return total;
    } catch (error) {
      return `agentInfo.resources: ${(error as Error).message}`;
    }
  }

  private registration(agentId: string) {
    return { agentId, pingIntervalSeconds: this.pingIntervalMs / 1000, pingTimeoutSeconds: this.pingTimeoutMs / 1000, masterId: this.masterId };
  }

  private pong(agentId: string): void {
    const agent = this.agents.get(agentId);
    if (!agent) {
      // An agent we do not know (we restarted, or marked it unreachable): have it re-register.
      this.toAgent(agentId, { kind: "reregisterRequest", reregisterRequest: {} });
      return;
    }
    agent.lastHeardMs = this.now;
    this.markListening(agentId, agent);
  }

  /** The agent receives commands now: its resources may be offered. */
  private markListening(agentId: string, agent: AgentRecord): void {
    if (agent.listening) return;
    agent.listening = true;
    this.allocator.activateAgent(agentId);
    this.wantAllocation(agentId);
  }

  /**
   * An update from an agent: `status` is the head of the task's stream, forwarded to the framework
   * (which acknowledges it); `latestState` the state of the newest update in that stream, absent
   * from agents older than the field.
   */
  private statusUpdate(agentId: string, frameworkId: string, status: TaskStatus, latestState: TaskState | undefined): void {
    this.counters.statusUpdates++;
    const agent = this.agents.get(agentId);
    if (!agent) {
      // As in Mesos, an agent the master does not know (marked unreachable, gone, or not back since
      // a restart) is not believed: its tasks may have been reported lost already. It is asked to
      // re-register, and re-sends its unacknowledged updates once it has.
      this.counters.invalidStatusUpdates++;
      this.log("warn", "status update from an unknown agent dropped; asking it to re-register", { agentId, frameworkId, taskId: status.taskId, state: status.state });
      this.toAgent(agentId, { kind: "reregisterRequest", reregisterRequest: {} });
      return;
    }
    agent.lastHeardMs = this.now;
    const framework = this.frameworks.get(frameworkId);
    if (!framework) {
      // Nobody will acknowledge for a framework that is gone: do it, so the agent stops retrying.
      if (status.uuid.length > 0) this.toAgent(agentId, { kind: "statusUpdateAck", statusUpdateAck: { frameworkId, taskId: status.taskId, uuid: status.uuid } });
      return;
    }
    const task = framework.tasks.get(status.taskId);
    if (task && task.agentId === agentId) {
      if (isTerminal(status.state)) this.finishTask(framework, task, status, true);
      else {
        task.status = status;
        this.noteLatestState(task, latestState);
      }
    }
    this.toFramework(frameworkId, { kind: "update", update: { status: { ...status, agentId, frameworkId } } });
  }

  /**
   * Takes the agent's word for the task's newest state, as Mesos's master takes `latest_state`.
   * When it is terminal the task's resources are given back now, once, rather than when the
   * framework has acknowledged every update before the terminal one (which may be never, for a
   * framework that is away): the task stays among the active ones, holding nothing, until its
   * terminal update arrives, so the framework still gets every update in order.
   */
  private noteLatestState(task: TaskRecord, latestState: TaskState | undefined): void {
    // Nothing follows an end; a late copy naming an older state changes nothing.
    if (endedAhead(task)) return;
    if (latestState === undefined || latestState === task.status.state) delete task.latestState;
    else task.latestState = latestState;
    if (endedAhead(task)) this.recoverTaskResources(task);
  }

  private recoverTaskResources(task: TaskRecord): void {
    try {
      this.allocator.recoverResources(task.frameworkId, task.agentId, task.role, task.resources);
    } catch (error) {
      if (!(error instanceof AllocatorError)) throw error;
      this.log("warn", "task resources were not allocated", { taskId: task.info.taskId, error: error.message });
    }
  }

  /** Moves a task to the completed set and gives its resources back, unless its latest state did already. */
  private finishTask(framework: FrameworkRecord, task: TaskRecord, status: TaskStatus, fromAgent: boolean): void {
    setMasterStatus(task, status);
    framework.tasks.delete(task.info.taskId);
    framework.completed.set(task.info.taskId, task);
    const agent = this.agents.get(task.agentId);
    if (agent?.tasks.delete(taskKey(task.frameworkId, task.info.taskId)) && !endedAhead(task)) this.recoverTaskResources(task);
    if (!fromAgent) this.toFramework(task.frameworkId, { kind: "update", update: { status } });
  }

  // ---- time -----------------------------------------------------------------------------------

  private onTick(): void {
    this.checkOfferHold();
    this.pruneRemovedAgents();
    this.checkAgents();
    this.checkFrameworks();
    this.checkOffers();
    if (this.now >= this.nextAllocationMs) {
      this.wantAllocation("all");
      this.nextAllocationMs = this.now + this.allocationIntervalMs;
    }
  }

  private checkAgents(): void {
    for (const [agentId, recovered] of [...this.recoveredAgents]) {
      if (this.now - recovered.sinceMs < this.agentReregisterTimeoutMs) continue;
      this.recoveredAgents.delete(agentId);
      this.unreachableAgents.set(agentId, { info: recovered.info, sinceMs: this.now });
      this.out.push({ type: "persist", record: { kind: "unreachable-agent", id: agentId, info: recovered.info, sinceMs: this.now } });
      this.out.push({ type: "unpersist", kind: "agent", id: agentId });
      this.log("warn", "agent did not re-register after the master restarted", { agentId });
      // As for an agent lost to missed pings (Mesos does the same after its agent_reregister_timeout):
      // frameworks learn of the loss even though this master never knew the agent's tasks.
      this.tellAgentLost(agentId);
    }
    // Only agents whose next ping or ping timeout has come are visited: with thousands of agents
    // a scan of all of them on every tick cost more than the pings themselves.
    const notYet: AgentCheck[] = [];
    for (let check = this.agentChecks.peek(); check !== undefined && check.timeMs <= this.now; check = this.agentChecks.peek()) {
      this.agentChecks.pop();
      const agent = this.agents.get(check.agentId);
      if (agent !== check.record) continue;
      if (this.now - agent.lastHeardMs > this.pingTimeoutMs) {
        this.markUnreachable(check.agentId, agent);
        continue;
      }
      if (this.now >= agent.nextPingMs) {
        agent.pingSeq++;
        agent.nextPingMs = this.now + this.pingIntervalMs;
        this.toAgent(check.agentId, { kind: "ping", ping: { seq: agent.pingSeq } });
      }
      const next = { timeMs: this.nextAgentCheckMs(agent), seq: this.agentCheckSeq++, agentId: check.agentId, record: agent };
      // Silent for exactly the timeout is not yet past it: such an agent is looked at again on
      // the next tick, as a scan of every agent on every tick would.
      if (next.timeMs <= this.now) notYet.push(next);
      else this.agentChecks.push(next);
    }
    for (const check of notYet) this.agentChecks.push(check);
  }

  /** When an agent next needs a look: its next ping, or when its silence would reach the ping timeout. */
  private nextAgentCheckMs(record: AgentRecord): number {
    return Math.min(record.nextPingMs, record.lastHeardMs + this.pingTimeoutMs);
  }

  private fileAgentCheck(agentId: string, record: AgentRecord): void {
    this.agentChecks.push({ timeMs: this.nextAgentCheckMs(record), seq: this.agentCheckSeq++, agentId, record });
  }

  private checkFrameworks(): void {
    for (const [frameworkId, framework] of [...this.frameworks]) {
      if (framework.connected && this.now - framework.lastCallMs > this.keepaliveTimeoutMs) {
        this.disconnect(frameworkId, framework);
      }
      if (!framework.connected && framework.disconnectedAtMs !== undefined && this.now - framework.disconnectedAtMs >= framework.info.failoverTimeoutSeconds * 1000) {
        this.teardown(frameworkId, "failover timeout expired");
        continue;
      }
      if (framework.connected && this.now >= framework.nextHeartbeatMs) {
        framework.nextHeartbeatMs = this.now + this.heartbeatIntervalMs;
        this.toFramework(frameworkId, { kind: "heartbeat", heartbeat: {} });
      }
    }
  }

  private disconnect(frameworkId: string, framework: FrameworkRecord): void {
    framework.connected = false;
    framework.ready = false;
    framework.disconnectedAtMs = this.now;
    for (const offerId of [...framework.offers]) this.rescindOffer(offerId, false);
    this.allocator.deactivateFramework(frameworkId);
    this.log("warn", "framework disconnected (missed heartbeats)", { frameworkId, failoverTimeoutSeconds: framework.info.failoverTimeoutSeconds });
  }

  private checkOffers(): void {
    if (this.offerTimeoutMs === undefined) return;
    for (const offer of [...this.offers.values()]) {
      if (this.now - offer.createdAtMs >= this.offerTimeoutMs) this.rescindOffer(offer.id, true);
    }
  }

  private markUnreachable(agentId: string, agent: AgentRecord): void {
    this.log("warn", "agent unreachable (missed pings)", { agentId, hostname: agent.info.hostname });
    this.removeAgent(agentId, "REASON_AGENT_REMOVED", "agent is unreachable", true);
    this.unreachableAgents.set(agentId, { info: agent.info, sinceMs: this.now });
    // The marker first: a crash between the two writes must not forget that the agent was lost.
    this.out.push({ type: "persist", record: { kind: "unreachable-agent", id: agentId, info: agent.info, sinceMs: this.now } });
    this.out.push({ type: "unpersist", kind: "agent", id: agentId });
  }

  /** Forgets unreachable and gone agents older than `removedAgentRetentionMs` (checked once a minute). */
  private pruneRemovedAgents(): void {
    if (this.now < this.nextPruneMs) return;
    this.nextPruneMs = this.now + 60_000;
    for (const [cache, kind] of [
      [this.unreachableAgents, "unreachable-agent"],
      [this.goneAgents, "gone-agent"],
    ] as const) {
      for (const [agentId, entry] of [...cache.entries()]) {
        if (this.now - entry.sinceMs < this.removedAgentRetentionMs) continue;
        cache.delete(agentId);
        this.out.push({ type: "unpersist", kind, id: agentId });
      }
    }
  }

  /** Takes an agent out: offers rescinded, tasks UNREACHABLE/LOST (or GONE when it left). */
  private removeAgent(agentId: string, reason: TaskStatusReason, message: string, unreachable = false): void {
    const agent = this.agents.get(agentId);
    if (!agent) return;
    for (const offerId of [...agent.offers]) this.rescindOffer(offerId, true);
    for (const key of agent.tasks) {
      const { frameworkId, taskId } = splitTaskKey(key);
      const framework = this.frameworks.get(frameworkId);
      const task = framework?.tasks.get(taskId);
      if (!framework || !task) continue;
      const partitionAware = framework.info.partitionAware;
      if (unreachable && partitionAware) {
        setMasterStatus(task, this.status(task.frameworkId, task.info.taskId, agentId, "TASK_UNREACHABLE", reason, message));
        this.toFramework(task.frameworkId, { kind: "update", update: { status: task.status } });
      } else {
        const state: TaskState = partitionAware ? "TASK_GONE" : "TASK_LOST";
        const status = this.status(task.frameworkId, task.info.taskId, agentId, state, reason, message);
        setMasterStatus(task, status);
        framework.tasks.delete(task.info.taskId);
        framework.completed.set(task.info.taskId, task);
        this.toFramework(task.frameworkId, { kind: "update", update: { status } });
      }
    }
    this.allocator.removeAgent(agentId);
    this.agents.delete(agentId);
    this.tellAgentLost(agentId);
    if (!unreachable) {
      this.goneAgents.set(agentId, { info: agent.info, sinceMs: this.now });
      this.out.push({ type: "persist", record: { kind: "gone-agent", id: agentId, info: agent.info, sinceMs: this.now } });
      this.out.push({ type: "unpersist", kind: "agent", id: agentId });
    }
  }

  /** The agent-lost event (`failure` with the agent's id) to every connected framework. */
  private tellAgentLost(agentId: string): void {
    for (const [frameworkId, framework] of this.frameworks) {
      if (framework.connected) this.toFramework(frameworkId, { kind: "failure", failure: { agentId } });
    }
  }

  // ---- offers ---------------------------------------------------------------------------------

  private wantAllocation(agentId: string | "all"): void {
    const wanted = this.allocationWanted;
    if (agentId === "all" || wanted === "all") {
      this.allocationWanted = "all";
      return;
    }
    if (wanted === null) this.allocationWanted = new Set([agentId]);
    else wanted.add(agentId);
  }

  private runWantedAllocation(): void {
    const wanted = this.allocationWanted;
    if (wanted === null) return;
    this.allocationWanted = null;
    // Re-registering agents report what they run; until they have, nothing is offered (the hold's end wants a full run).
    if (this.holdingOffers()) return;
    if (this.offers.size >= this.maxOutstandingOffers) {
      this.log("warn", "allocation paused: too many outstanding offers", { offers: this.offers.size, maxOutstandingOffers: this.maxOutstandingOffers });
      return;
    }
    const start = this.measureMs();
    const plans = this.allocator.allocate(this.now, wanted === "all" ? undefined : wanted);
    this.counters.allocationRuns++;
    this.counters.allocationRunMsTotal += this.measureMs() - start;
    this.counters.allocationAgentsVisited += this.allocator.lastRunCandidates();
    this.makeOffers(plans);
  }

  private makeOffers(plans: OfferPlan[]): void {
    const byFramework = new Map<string, Offer[]>();
    for (const plan of plans) {
      const agent = this.agents.get(plan.agentId)!;
      const framework = this.frameworks.get(plan.frameworkId)!;
      const id = `${this.masterId}-O${++this.offerCounter}`;
      this.offers.set(id, { id, frameworkId: plan.frameworkId, agentId: plan.agentId, role: plan.role, resources: plan.resources, createdAtMs: this.now });
      addQuantities(this.offeredTotals, plan.resources.quantities(), 1);
      framework.offers.add(id);
      agent.offers.add(id);
      this.counters.offersMade++;
      const list = byFramework.get(plan.frameworkId) ?? [];
      list.push({
        id,
        frameworkId: plan.frameworkId,
        agentId: plan.agentId,
        hostname: agent.info.hostname,
        role: plan.role,
        resources: resourcesToWire(plan.resources),
        attributes: agent.info.attributes,
      });
      byFramework.set(plan.frameworkId, list);
    }
    for (const [frameworkId, offers] of byFramework) this.toFramework(frameworkId, { kind: "offers", offers: { offers } });
  }

  private removeOffer(offer: OfferRecord): void {
    if (this.offers.delete(offer.id)) addQuantities(this.offeredTotals, offer.resources.quantities(), -1);
    this.frameworks.get(offer.frameworkId)?.offers.delete(offer.id);
    this.agents.get(offer.agentId)?.offers.delete(offer.id);
  }

  /** Takes an offer back; `tell` sends RESCIND (not needed when the framework is gone or disconnected). */
  private rescindOffer(offerId: string, tell: boolean): void {
    const offer = this.offers.get(offerId);
    if (!offer) return;
    this.removeOffer(offer);
    this.counters.offersRescinded++;
    this.allocator.recoverResources(offer.frameworkId, offer.agentId, offer.role, offer.resources);
    if (tell) this.toFramework(offer.frameworkId, { kind: "rescind", rescind: { offerId } });
  }

  // ---- helpers --------------------------------------------------------------------------------

  private status(frameworkId: string, taskId: string, agentId: string, state: TaskState, reason: TaskStatusReason, message: string): TaskStatus {
    return { taskId, state, message, source: "SOURCE_MASTER", reason, agentId, frameworkId, uuid: new Uint8Array(0), timestamp: this.now / 1000 };
  }

  private sendMasterUpdate(frameworkId: string, taskId: string, agentId: string, state: TaskState, reason: TaskStatusReason, message: string): void {
    this.toFramework(frameworkId, { kind: "update", update: { status: this.status(frameworkId, taskId, agentId, state, reason, message) } });
  }

  private toFramework(frameworkId: string, event: SchedulerEvent): void {
    // A torn-down framework's last words go where its events always went.
    const principal = (this.frameworks.get(frameworkId)?.info ?? this.completedFrameworks.peek(frameworkId))?.principal;
    this.out.push(principal ? { type: "to-framework", frameworkId, event, principal } : { type: "to-framework", frameworkId, event });
  }

  private toAgent(agentId: string, message: MasterToAgent): void {
    this.out.push({ type: "to-agent", agentId, message });
  }

  private log(level: "info" | "warn", msg: string, fields: Record<string, unknown>): void {
    this.out.push({ type: "log", level, msg, fields });
  }

  private ok(): EnvelopePayload {
    return { payload: "callResponse", callResponse: { ok: true, errorCode: "", message: "" } };
  }

  private refuse(code: MasterErrorCode, message: string): EnvelopePayload {
    this.counters.invalidCalls++;
    const callResponse: CallResponse = { ok: false, errorCode: code, message };
    return { payload: "callResponse", callResponse };
  }

  private guarded(action: () => void): EnvelopePayload {
    try {
      action();
      return this.ok();
    } catch (error) {
      if (error instanceof AllocatorError) return this.refuse("CORRAL_ERR_INVALID_CALL", error.message);
      throw error;
    }
  }

  // ---- views ----------------------------------------------------------------------------------

  /** Everything `/state` shows. */
  state(): MasterStateView {
    const agents = [...this.agents.entries()].map(([id, agent]) => {
      const view = this.allocator.agentView(id);
      let offered = Resources.empty();
      for (const offerId of agent.offers) offered = offered.add(this.offers.get(offerId)!.resources);
      return {
        id,
        hostname: agent.info.hostname,
        httpEndpoint: agent.info.httpEndpoint,
        active: view?.active ?? false,
        attributes: Object.fromEntries(agent.info.attributes.map((a) => [a.name, a.text])),
        resources: agent.total.scalarSummary(),
        used: view ? view.allocated.subtract(offered).scalarSummary() : {},
        offered: offered.scalarSummary(),
        reserved: agent.total.reserved().scalarSummary(),
        resourcesText: agent.total.toString(),
        tasks: agent.tasks.size,
        registeredAtMs: agent.registeredAtMs,
      };
    });
    const frameworks = [...this.frameworks.entries()].map(([id, framework]) => this.frameworkView(id, framework));
    const weights = this.allocator.getWeights();
    const quotas = this.allocator.getQuotas();
    const roles = this.allocator.knownRoles().map((role) => ({
      role,
      weight: weights.get(role) ?? 1,
      share: this.allocator.roleShare(role),
      ...(quotas.has(role) ? { quota: quotas.get(role)! } : {}),
    }));
    for (const [role, quota] of quotas) if (!roles.some((r) => r.role === role)) roles.push({ role, weight: weights.get(role) ?? 1, share: 0, quota });
    return {
      masterId: this.masterId,
      agents,
      unreachableAgents: [...this.unreachableAgents.entries()].map(([id, u]) => ({ id, hostname: u.info.hostname, sinceMs: u.sinceMs })),
      goneAgents: [...this.goneAgents.entries()].map(([id, g]) => ({ id, hostname: g.info.hostname, sinceMs: g.sinceMs })),
      recovery: this.recoveryStatus(),
      frameworks,
      completedFrameworks: [...this.completedFrameworks.entries()].map(([id, info]) => ({ id, name: info.name })),
      roles,
      offers: this.offers.size,
    };
  }

  /** One framework as `/state` shows it. */
  private frameworkView(id: string, framework: FrameworkRecord) {
    const offered = new Map<string, number>();
    for (const offerId of framework.offers) {
      for (const [name, millis] of this.offers.get(offerId)!.resources.quantities()) offered.set(name, (offered.get(name) ?? 0) + millis);
    }
    const used = new Map(this.allocator.frameworkScalars(id));
    for (const [name, millis] of offered) used.set(name, (used.get(name) ?? 0) - millis);
    return {
      id,
      name: framework.info.name,
      roles: this.rolesOf(framework.info),
      principal: framework.info.principal,
      connected: framework.connected,
      active: framework.connected && framework.ready,
      failoverTimeoutSeconds: framework.info.failoverTimeoutSeconds,
      partitionAware: framework.info.partitionAware,
      dominantShares: Object.fromEntries(this.rolesOf(framework.info).map((role) => [role, this.allocator.frameworkShare(id, role)])),
      // The allocator counts offers as allocated; /state shows used and offered apart, as for agents.
      used: nonZeroSummary(used),
      offered: nonZeroSummary(offered),
      offers: [...framework.offers].map((offerId) => {
        const offer = this.offers.get(offerId)!;
        return { id: offerId, agentId: offer.agentId, role: offer.role, resources: offer.resources.toString() };
      }),
      tasks: [...framework.tasks.values()].map((t) => this.taskView(t)),
      completedTasks: [...framework.completed.values()].map((t) => this.taskView(t)),
    };
  }

  private taskView(task: TaskRecord) {
    return {
      id: task.info.taskId,
      name: task.info.name,
      agentId: task.agentId,
      state: latestStateOf(task),
      reason: task.status.reason,
      message: task.status.message,
      role: task.role,
      resources: task.resources.scalarSummary(),
      ...(task.status.exitCode !== undefined ? { exitCode: task.status.exitCode } : {}),
    };
  }

  /** Task counts by state over active, unreachable and remembered completed tasks. */
  taskCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const framework of this.frameworks.values()) {
      for (const task of framework.tasks.values()) counts[latestStateOf(task)] = (counts[latestStateOf(task)] ?? 0) + 1;
      for (const task of framework.completed.values()) counts[latestStateOf(task)] = (counts[latestStateOf(task)] ?? 0) + 1;
    }
    return counts;
  }

  /** Cluster totals and what is allocated, by scalar name (names with nothing are left out). */
  resourceTotals(): { total: Record<string, number>; used: Record<string, number>; offered: Record<string, number> } {
    // The allocator keeps the totals as they change: summing thousands of agents' resources on
    // every ask was most of the cost of /metrics and of the simulator's samples.
    const { total, allocated } = this.allocator.scalarTotals();
    const offered = this.offeredTotals;
    const used = new Map(allocated);
    for (const [name, millis] of offered) used.set(name, (used.get(name) ?? 0) - millis);
    return { total: nonZeroSummary(total), used: nonZeroSummary(used), offered: nonZeroSummary(offered) };
  }

  /**
   * After a restart or failover: agents of the registry not re-registered yet, whether offers
   * wait for them, and how long they waited after the last recovery (once over).
   */
  recoveryStatus(): { agentsPending: number; offersHeld: boolean; lastOfferHoldMs?: number } {
    return { agentsPending: this.recoveredAgents.size, offersHeld: this.holdingOffers(), ...(this.lastOfferHoldMs !== undefined ? { lastOfferHoldMs: this.lastOfferHoldMs } : {}) };
  }

  /**
   * How many calls that may change the core it has taken ({@link handle}, {@link recover},
   * {@link setWeights}, {@link setQuotas}, {@link teardownFramework}; counted on entry). Equal
   * counts mean nothing the core keeps changed in between, its allocator's state aside (it has its
   * own {@link HierarchicalAllocator.changeCount}, since `allocator` can be called directly): a
   * reader that recomputes figures from scratch, such as the simulator's invariant checks after
   * every event, may skip the recomputation.
   */
  changeCount(): number {
    return this.changes;
  }

  /** Numbers of agents, frameworks and outstanding offers. */
  sizes(): { agents: number; unreachableAgents: number; goneAgents: number; frameworks: number; offers: number } {
    return { agents: this.agents.size, unreachableAgents: this.unreachableAgents.size, goneAgents: this.goneAgents.size, frameworks: this.frameworks.size, offers: this.offers.size };
  }

  /**
   * Sets role weights (operator API); all or nothing. Returns the registry writes that keep them
   * across a restart or failover (the shell carries them out).
   */
  setWeights(weights: Array<{ role: string; weight: number }>): MasterEffect[] {
    this.changes++;
    const before = new Map(this.allocator.getWeights());
    try {
      for (const { role, weight } of weights) this.allocator.setWeight(role, weight);
    } catch (error) {
      for (const { role } of weights) this.allocator.setWeight(role, before.get(role) ?? 1);
      throw error;
    }
    this.wantAllocation("all");
    return weights.map(({ role, weight }) => ({ type: "persist", record: { kind: "weight", id: role, weight } }));
  }

  /**
   * Tears a framework down at an operator's request (`POST /teardown`), as its own TEARDOWN call
   * or an expired failover timeout would: offers rescinded, agents told to shut its tasks down, its
   * id refused from then on. The framework is sent an error event first, so that its driver stops
   * rather than learn of it from its next call. Returns the effects to carry out, or why nothing
   * was done.
   */
  teardownFramework(frameworkId: string): { ok: true; effects: MasterEffect[] } | { ok: false; reason: "unknown" | "torn-down" } {
    this.changes++;
    if (!this.frameworks.has(frameworkId)) return { ok: false, reason: this.tornDown.has(frameworkId) ? "torn-down" : "unknown" };
    this.out = [];
    this.toFramework(frameworkId, { kind: "error", error: { message: "CORRAL_ERR_FRAMEWORK_REMOVED: torn down by the operator" } });
    this.teardown(frameworkId, "torn down by the operator");
    // What it held is free again: offer it at once rather than at the next interval.
    this.wantAllocation("all");
    const effects = this.out;
    this.out = [];
    return { ok: true, effects };
  }

  /**
   * Sets quotas (operator API); all or nothing. Returns the registry writes that keep them across a
   * restart or failover; a quota with neither guarantees nor limits is removed from the registry.
   */
  setQuotas(quotas: Array<{ role: string; guarantees?: Record<string, number>; limits?: Record<string, number> }>): MasterEffect[] {
    this.changes++;
    const before = this.allocator.getQuotas();
    try {
      // Neither guarantees nor limits: no quota at all (as Mesos's UPDATE_QUOTA with an empty config).
      for (const q of quotas) this.allocator.setQuota(q.role, isEmptyQuota(q) ? null : { guarantees: q.guarantees ?? {}, limits: q.limits ?? {} });
    } catch (error) {
      for (const q of quotas) this.allocator.setQuota(q.role, before.get(q.role) ?? null);
      throw error;
    }
    this.wantAllocation("all");
    return quotas.map((q): MasterEffect =>
      isEmptyQuota(q) ? { type: "unpersist", kind: "quota", id: q.role } : { type: "persist", record: { kind: "quota", id: q.role, guarantees: q.guarantees ?? {}, limits: q.limits ?? {} } },
    );
  }
}

/** The first task a re-registering agent reports twice (same framework and task id), as a refusal. */
function duplicateTaskProblem(reported: ReadonlyArray<{ frameworkId: string; task?: TaskInfo }>): string | undefined {
  const seen = new Map<string, number>();
  for (const [i, record] of reported.entries()) {
    if (!record.task) continue;
    const key = taskKey(record.frameworkId, record.task.taskId);
    const earlier = seen.get(key);
    if (earlier !== undefined) return `tasks(${i}): task '${record.task.taskId}' of framework '${record.frameworkId}' is reported twice (also at tasks(${earlier}))`;
    seen.set(key, i);
  }
  return undefined;
}

/** A quota entry with neither guarantees nor limits. */
function isEmptyQuota(q: { guarantees?: Record<string, number>; limits?: Record<string, number> }): boolean {
  return Object.keys(q.guarantees ?? {}).length === 0 && Object.keys(q.limits ?? {}).length === 0;
}

/** Creates a master core. `measureMs` times allocation runs for metrics (the shell passes a clock). */
export function createMasterCore(config: MasterConfig, rng: Rng, measureMs?: () => number): MasterCore {
  return new MasterCore(config, rng, measureMs);
}

/** Decimal amounts of the non-zero millis, by name in name order. */
function nonZeroSummary(millis: ReadonlyMap<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of [...millis.keys()].sort()) {
    const value = millis.get(name)!;
    if (value !== 0) out[name] = fromMillis(value);
  }
  return out;
}

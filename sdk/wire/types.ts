/**
 * TypeScript shapes of the wire contract in `sdk/proto/corral.proto`.
 *
 * These are plain objects (no protobufjs classes), exactly what {@link decodeEnvelope} returns and
 * what {@link encodeEnvelope} takes:
 *
 * - field names are the proto names in camelCase (`task_id` becomes `taskId`);
 * - proto3 scalars are always present on decoded objects (absent on the wire means the zero value),
 *   so they are required properties here; senders must spell them out too, which keeps "I forgot
 *   a field" a compile error rather than a silent zero;
 * - singular message fields and proto3 `optional` scalars may be absent, so they are `?`;
 * - 64-bit integers are `number` (the codec rejects values beyond `Number.MAX_SAFE_INTEGER`);
 * - enums are their value names as strings;
 * - each `oneof` is a discriminated union: a property named after the oneof holds the camelCase
 *   name of the member that is set, and that member is the only one present. For example
 *   `{ kind: "accept", accept: {...} }`.
 *
 * @module
 */

// ------------------------------------------------------------------------------------------------
// Common
// ------------------------------------------------------------------------------------------------

/** An inclusive range `[begin, end]`. */
export interface Range {
  begin: number;
  end: number;
}

export interface Ranges {
  range: Range[];
}

/** The proto message `Set` (renamed here so it does not shadow the global `Set`). */
export interface ValueSet {
  item: string[];
}

/** The role name meaning "unreserved". */
export const UNRESERVED_ROLE = "*";

/** One named resource value; exactly one of `scalar`, `ranges`, `set` is present. */
export type Resource = { name: string; /** `"*"` = unreserved. */ role: string } & (
  | { value: "scalar"; scalar: number }
  | { value: "ranges"; ranges: Ranges }
  | { value: "set"; set: ValueSet }
);

export interface Attribute {
  name: string;
  text: string;
}

export interface Filters {
  /** Absent means the master's default (5 s, as in Mesos). */
  refuseSeconds?: number;
}

export interface CommandInfo {
  /** Shell string when `shell` is true, else the program to execute. */
  value: string;
  arguments: string[];
  shell: boolean;
  environment: Record<string, string>;
  /** Empty = the agent's default user. */
  user: string;
}

/**
 * A health check the agent runs on a task (see `HealthCheck` in corral.proto). Absent durations
 * take Mesos's defaults.
 */
export type HealthCheck = {
  /** Seconds from the task's start to the first check. @default 15 */
  delaySeconds?: number;
  /** Seconds from the end of one check to the next. @default 10 */
  intervalSeconds?: number;
  /** Seconds after which a check counts as failed. @default 20 */
  timeoutSeconds?: number;
  /** Seconds after the start in which failures do not count until a check passed. @default 10 */
  gracePeriodSeconds?: number;
} & { kind: "command"; command: CommandInfo };

export interface TaskInfo {
  taskId: string;
  name: string;
  agentId: string;
  resources: Resource[];
  command?: CommandInfo;
  /** Absent = the agent's default grace period. */
  killGracePeriodSeconds?: number;
  labels: Record<string, string>;
  /** Absent = no agent-run health check. */
  healthCheck?: HealthCheck;
  /**
   * The role the task's resources are allocated to (Mesos's `Resource.allocation_info.role`): set
   * by the master on `run_task` from the offers' role, kept by the agent with the task and reported
   * when re-registering, so that a new master charges the task to that role. A framework may leave
   * it out (the master fills it in) or name the offers' role; any other role fails the launch with
   * TASK_ERROR. Absent = unknown (an older agent or checkpoint): the master charges the framework's
   * first role.
   * @default absent
   */
  allocationRole?: string;
}

/** All task states, in proto order (the UNSPECIFIED zero is never valid on the wire). */
export const TASK_STATES = [
  "TASK_STAGING",
  "TASK_STARTING",
  "TASK_RUNNING",
  "TASK_KILLING",
  "TASK_FINISHED",
  "TASK_FAILED",
  "TASK_KILLED",
  "TASK_ERROR",
  "TASK_LOST",
  "TASK_DROPPED",
  "TASK_UNREACHABLE",
  "TASK_GONE",
  "TASK_GONE_BY_OPERATOR",
  "TASK_UNKNOWN",
] as const;
export type TaskState = (typeof TASK_STATES)[number];

/**
 * Terminal states, as Mesos counts them: the task's resources are given back and its update
 * stream ends. TASK_LOST is among them (a framework that is not partition-aware is told LOST
 * and replaces the task); UNREACHABLE and UNKNOWN are not, since the task may still be running.
 */
export const TERMINAL_TASK_STATES: ReadonlySet<TaskState> = new Set<TaskState>([
  "TASK_FINISHED",
  "TASK_FAILED",
  "TASK_KILLED",
  "TASK_ERROR",
  "TASK_LOST",
  "TASK_DROPPED",
  "TASK_GONE",
  "TASK_GONE_BY_OPERATOR",
]);

export type TaskStatusSource = "SOURCE_MASTER" | "SOURCE_AGENT" | "SOURCE_EXECUTOR";

/** Reasons, as in Mesos; `REASON_UNSPECIFIED` means "no particular reason". */
export const TASK_STATUS_REASONS = [
  "REASON_UNSPECIFIED",
  "REASON_COMMAND_EXECUTOR_FAILED",
  "REASON_CONTAINER_LAUNCH_FAILED",
  "REASON_CONTAINER_LIMITATION",
  "REASON_CONTAINER_LIMITATION_DISK",
  "REASON_CONTAINER_LIMITATION_MEMORY",
  "REASON_CONTAINER_PREEMPTED",
  "REASON_EXECUTOR_TERMINATED",
  "REASON_EXECUTOR_UNREGISTERED",
  "REASON_FRAMEWORK_REMOVED",
  "REASON_GC_ERROR",
  "REASON_INVALID_FRAMEWORKID",
  "REASON_INVALID_OFFERS",
  "REASON_MASTER_DISCONNECTED",
  "REASON_RECONCILIATION",
  "REASON_RESOURCES_UNKNOWN",
  "REASON_AGENT_DISCONNECTED",
  "REASON_AGENT_REMOVED",
  "REASON_AGENT_REMOVED_BY_OPERATOR",
  "REASON_AGENT_REREGISTERED",
  "REASON_AGENT_RESTARTED",
  "REASON_AGENT_UNKNOWN",
  "REASON_TASK_INVALID",
  "REASON_TASK_UNAUTHORIZED",
  "REASON_TASK_UNKNOWN",
  "REASON_TASK_KILLED_DURING_LAUNCH",
  "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
  "REASON_MAX_COMPLETION_TIME_REACHED",
] as const;
export type TaskStatusReason = (typeof TASK_STATUS_REASONS)[number];

export interface TaskStatus {
  taskId: string;
  state: TaskState;
  message: string;
  source: TaskStatusSource;
  reason: TaskStatusReason;
  agentId: string;
  frameworkId: string;
  /** Non-empty on updates that must be acknowledged. */
  uuid: Uint8Array;
  /** Seconds since the Unix epoch. */
  timestamp: number;
  exitCode?: number;
  /** Absent when the task has no health check. */
  healthy?: boolean;
}

export interface Offer {
  id: string;
  frameworkId: string;
  agentId: string;
  hostname: string;
  /** The role the resources are allocated to. */
  role: string;
  resources: Resource[];
  attributes: Attribute[];
}

export interface FrameworkInfo {
  /** Empty on the first SUBSCRIBE. */
  id: string;
  name: string;
  roles: string[];
  principal: string;
  failoverTimeoutSeconds: number;
  checkpoint: boolean;
  partitionAware: boolean;
  hostname: string;
}

export interface AgentInfo {
  /** Empty on the first REGISTER. */
  id: string;
  hostname: string;
  resources: Resource[];
  attributes: Attribute[];
  httpEndpoint: string;
}

export interface MasterInfo {
  id: string;
  epoch: number;
  hostname: string;
  httpEndpoint: string;
  version: string;
}

export interface CallResponse {
  ok: boolean;
  /** A stable `CORRAL_ERR_*` code when `ok` is false. */
  errorCode: string;
  message: string;
}

// ------------------------------------------------------------------------------------------------
// Framework -> master
// ------------------------------------------------------------------------------------------------

export type Operation = { kind: "launch"; launch: { taskInfos: TaskInfo[] } };

export interface ReconcileTask {
  taskId: string;
  agentId: string;
}

/** Members of `SchedulerCall.kind`. */
export type SchedulerCallBody =
  | { kind: "subscribe"; subscribe: { frameworkInfo?: FrameworkInfo } }
  | { kind: "teardown"; teardown: Record<string, never> }
  | { kind: "accept"; accept: { offerIds: string[]; operations: Operation[]; filters?: Filters } }
  | { kind: "decline"; decline: { offerIds: string[]; filters?: Filters } }
  | { kind: "revive"; revive: { roles: string[] } }
  | { kind: "suppress"; suppress: { roles: string[] } }
  | { kind: "kill"; kill: { taskId: string; agentId: string; killGracePeriodSeconds?: number } }
  | { kind: "acknowledge"; acknowledge: { agentId: string; taskId: string; uuid: Uint8Array } }
  | { kind: "reconcile"; reconcile: { tasks: ReconcileTask[] } }
  | { kind: "message"; message: { agentId: string; data: Uint8Array } }
  | { kind: "heartbeat"; heartbeat: Record<string, never> };

/** A framework's request to the master. `frameworkId` is empty only on the first subscribe. */
export type SchedulerCall = { frameworkId: string } & SchedulerCallBody;
export type SchedulerCallKind = SchedulerCallBody["kind"];

// ------------------------------------------------------------------------------------------------
// Master -> framework
// ------------------------------------------------------------------------------------------------

/**
 * An event of the master to a framework. `seq` numbers the events published on the framework's
 * events subject (1, 2, ... with no gap; see the .proto): a skipped number is a lost event.
 * Absent on the SUBSCRIBED reply, which says in `lastEventSeq` where the numbering stands.
 */
export type SchedulerEvent = { seq?: number } & SchedulerEventBody;

/** Members of `SchedulerEvent.kind`. */
export type SchedulerEventBody =
  | {
      kind: "subscribed";
      subscribed: { frameworkId: string; heartbeatIntervalSeconds: number; masterId: string; lastEventSeq?: number };
    }
  | { kind: "offers"; offers: { offers: Offer[] } }
  | { kind: "rescind"; rescind: { offerId: string } }
  | { kind: "update"; update: { status?: TaskStatus } }
  | { kind: "message"; message: { agentId: string; data: Uint8Array } }
  | { kind: "failure"; failure: { agentId: string; status?: number } }
  | { kind: "error"; error: { message: string } }
  | { kind: "heartbeat"; heartbeat: Record<string, never> };
export type SchedulerEventKind = SchedulerEvent["kind"];

// ------------------------------------------------------------------------------------------------
// Agent <-> master
// ------------------------------------------------------------------------------------------------

/** A task an agent reports when re-registering. */
export interface AgentTaskRecord {
  frameworkId: string;
  task?: TaskInfo;
  status?: TaskStatus;
}

export type AgentToMaster =
  | { kind: "register"; register: { agentInfo?: AgentInfo; version: string } }
  | {
      kind: "reregister";
      reregister: {
        agentInfo?: AgentInfo;
        version: string;
        tasks: AgentTaskRecord[];
        frameworks: FrameworkInfo[];
        /** Already listening on its command subject under this id: no pong needed before offers. */
        listening?: boolean;
      };
    }
  | { kind: "pong"; pong: { seq: number } }
  | {
      kind: "statusUpdate";
      statusUpdate: {
        frameworkId: string;
        /** The head of the task's stream: the oldest update its framework has not acknowledged. */
        status?: TaskStatus;
        /**
         * The state of the newest update the agent has queued for the task (Mesos's
         * `latest_state`); absent from agents older than the field.
         */
        latestState?: TaskState;
      };
    }
  | { kind: "unregisterNotice"; unregisterNotice: { reason: string } };
export type AgentToMasterKind = AgentToMaster["kind"];

/** Body of REGISTERED and REREGISTERED. */
export interface AgentRegistration {
  agentId: string;
  pingIntervalSeconds: number;
  pingTimeoutSeconds: number;
  masterId: string;
}

export type MasterToAgent =
  | { kind: "registered"; registered: AgentRegistration }
  | { kind: "reregistered"; reregistered: AgentRegistration }
  | { kind: "ping"; ping: { seq: number } }
  | { kind: "runTask"; runTask: { framework?: FrameworkInfo; task?: TaskInfo } }
  | {
      kind: "killTask";
      killTask: { frameworkId: string; taskId: string; killGracePeriodSeconds?: number };
    }
  | { kind: "shutdownFramework"; shutdownFramework: { frameworkId: string } }
  | { kind: "statusUpdateAck"; statusUpdateAck: { frameworkId: string; taskId: string; uuid: Uint8Array } }
  | { kind: "reregisterRequest"; reregisterRequest: Record<string, never> };
export type MasterToAgentKind = MasterToAgent["kind"];

// ------------------------------------------------------------------------------------------------
// Envelope
// ------------------------------------------------------------------------------------------------

/** Members of `Envelope.payload`. */
export type EnvelopePayload =
  | { payload: "schedulerCall"; schedulerCall: SchedulerCall }
  | { payload: "schedulerEvent"; schedulerEvent: SchedulerEvent }
  | { payload: "callResponse"; callResponse: CallResponse }
  | { payload: "agentToMaster"; agentToMaster: AgentToMaster }
  | { payload: "masterToAgent"; masterToAgent: MasterToAgent }
  | { payload: "masterInfo"; masterInfo: MasterInfo };
export type PayloadKind = EnvelopePayload["payload"];

/** Every payload kind, for exhaustive tables and tests. */
export const PAYLOAD_KINDS: readonly PayloadKind[] = [
  "schedulerCall",
  "schedulerEvent",
  "callResponse",
  "agentToMaster",
  "masterToAgent",
  "masterInfo",
];

export interface EnvelopeHeader {
  senderId: string;
  /** The master's leader epoch; 0 from non-masters. */
  epoch: number;
  schemaVersion: number;
  /** Correlation id; may be empty. */
  callId: string;
}

/** The one top-level message on the bus. */
export type Envelope = EnvelopeHeader & EnvelopePayload;

/** An envelope whose payload is known to be of kind `K`. */
export type EnvelopeOf<K extends PayloadKind> = EnvelopeHeader & Extract<EnvelopePayload, { payload: K }>;

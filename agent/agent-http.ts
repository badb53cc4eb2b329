/**
 * The agent's HTTP endpoints (fastify): `/health`, `/state`, `/metrics` and `/files/read`, plus
 * the pure rendering of its Prometheus metrics.
 *
 * @module
 */
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import type { ResourceJson } from "../sdk/resources.ts";
import type { Logger } from "../sdk/transport.ts";
import type { DropCounter } from "../sdk/wire/codec.ts";
import { TASK_STATES, type TaskState } from "../sdk/wire/types.ts";
import { pathIdProblem } from "../sdk/task-key.ts";
import { SandboxFileError, readSandboxFile, type SandboxFileErrorCode } from "./sandbox-files.ts";
import type { StatusUpdateManagerStats } from "./status-updates.ts";

/** Resources in both of Mesos's forms. */
export interface ResourcesView {
  /** Mesos text form, e.g. `cpus:2;mem:1024;ports:[31000-31009]`. */
  text: string;
  /** Mesos-style JSON objects. */
  json: ResourceJson[];
}

/** One task as `/state` shows it. */
export interface TaskView {
  frameworkId: string;
  taskId: string;
  state: TaskState;
  /** Absolute sandbox path; null for a task refused before it got one. */
  sandbox: string | null;
  resources: ResourcesView;
  /** The container running the task; null when none was started. */
  containerId: string | null;
  /** Message of the latest status. */
  message: string;
  /** Exit status, once the task has ended with one. */
  exitCode: number | null;
  /**
   * True once the task's final status update was acknowledged: the agent no longer holds it and
   * only remembers it (boundedly) for `/state` and to ignore a repeated `run_task`.
   */
  completed: boolean;
}

/** What `GET /state` answers (and `agent.state()` returns). */
export interface AgentStateView {
  /** The agent id; null until the first registration. */
  id: string | null;
  hostname: string;
  /** Where this HTTP server listens, e.g. `http://127.0.0.1:5051`; "" before start. */
  httpUrl: string;
  /** Total resources; null until start() resolved them. */
  resources: ResourcesView | null;
  attributes: Record<string, string>;
  /** Isolation mechanism of the containerizer, e.g. `"posix"`. */
  isolation: string;
  /** Whether the agent is registered with a live master right now. */
  registered: boolean;
  /** Id of the master that last registered the agent; null before. */
  masterId: string | null;
  /** Highest master epoch seen. */
  masterEpoch: number;
  /**
   * The tasks the agent holds (running, or ended with an update not yet acknowledged), then the
   * recently completed ones (`completed: true`, oldest first, bounded by `maxCompletedTasks`).
   */
  tasks: TaskView[];
  /** Status updates waiting for acknowledgement, over all tasks. */
  statusUpdates: number;
}

/** Inputs of {@link renderAgentMetrics}. */
export interface AgentMetricsInput {
  tasks: ReadonlyArray<{ state: TaskState }>;
  pendingStatusUpdates: number;
  registered: boolean;
  statusUpdateStats: StatusUpdateManagerStats;
  registrationAttempts: number;
  staleEpochMessages: number;
  drops: DropCounter;
}

function metric(lines: string[], name: string, help: string, type: "gauge" | "counter", samples: Array<[string, number]>): void {
  lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
}

/** The agent's metrics in Prometheus text exposition format. Every task state is always listed. */
export function renderAgentMetrics(input: AgentMetricsInput): string {
  const byState = new Map<TaskState, number>();
  for (const task of input.tasks) byState.set(task.state, (byState.get(task.state) ?? 0) + 1);
  const lines: string[] = [];
  metric(lines, "corral_agent_tasks", "Tasks the agent holds, by latest state.", "gauge",
    TASK_STATES.map((state) => [`{state="${state}"}`, byState.get(state) ?? 0]));
  metric(lines, "corral_agent_status_updates_pending", "Status updates not yet acknowledged.", "gauge", [["", input.pendingStatusUpdates]]);
  metric(lines, "corral_agent_registered", "1 while the agent is registered with a master.", "gauge", [["", input.registered ? 1 : 0]]);
  metric(lines, "corral_agent_status_updates_sent_total", "Status update sends, re-sends included.", "counter", [["", input.statusUpdateStats.sent]]);
  metric(lines, "corral_agent_status_updates_retried_total", "Status update re-sends after a retry timer.", "counter", [["", input.statusUpdateStats.retried]]);
  metric(lines, "corral_agent_status_updates_acknowledged_total", "Status updates acknowledged.", "counter", [["", input.statusUpdateStats.acknowledged]]);
  metric(lines, "corral_agent_registration_attempts_total", "REGISTER/REREGISTER requests sent.", "counter", [["", input.registrationAttempts]]);
  metric(lines, "corral_agent_stale_epoch_messages_total", "Master commands ignored for a lower epoch.", "counter", [["", input.staleEpochMessages]]);
  return `${lines.join("\n")}\n${input.drops.toPrometheus()}`;
}

/** What the routes need from the agent. */
export interface AgentHttpDeps {
  state(): AgentStateView;
  metrics(): string;
  /** Resource usage of every running container, for `/monitor/statistics` and `/metrics`. */
  statistics(): Promise<ContainerStatistics[]>;
  /** Sandbox path of a task; the ids have been checked with `pathIdProblem`. */
  sandboxOf(frameworkId: string, taskId: string): string;
  log: Logger;
}

/** One container's usage in `/monitor/statistics`, with Mesos's field names. */
export interface ContainerStatistics {
  framework_id: string;
  executor_id: string;
  container_id: string;
  statistics: Record<string, number>;
}

/** Mesos's names for the figures a containerizer reports (`ContainerUsage` and its Linux extension). */
const MESOS_STATISTIC_NAMES: Record<string, string> = {
  cpusUserTimeSecs: "cpus_user_time_secs",
  cpusSystemTimeSecs: "cpus_system_time_secs",
  cpusLimit: "cpus_limit",
  cpusNrPeriods: "cpus_nr_periods",
  cpusNrThrottled: "cpus_nr_throttled",
  cpusThrottledTimeSecs: "cpus_throttled_time_secs",
  memRssBytes: "mem_rss_bytes",
  memTotalBytes: "mem_total_bytes",
  memPeakBytes: "mem_max_bytes",
  memLimitBytes: "mem_limit_bytes",
  processes: "processes",
};

/** Converts a containerizer's usage sample to Mesos's statistics object (seconds since the epoch in `timestamp`). */
export function mesosStatistics(usage: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  if (typeof usage.timestampMs === "number") out.timestamp = usage.timestampMs / 1000;
  for (const [field, name] of Object.entries(MESOS_STATISTIC_NAMES)) {
    const value = usage[field];
    if (typeof value === "number" && Number.isFinite(value)) out[name] = value;
  }
  return out;
}

/**
 * The Prometheus family of each Mesos statistic. `/monitor/statistics` keeps Mesos's names; the
 * metrics follow Prometheus's rules instead: a figure that only grows (cpu time, CFS periods) is a
 * counter, named in its base unit (seconds, not secs) and ending in `_total`, so that `rate()`
 * applies to it; the others are gauges and do not end in `_total`.
 */
const CONTAINER_METRICS: ReadonlyArray<{ statistic: string; name: string; type: "counter" | "gauge"; help: string }> = [
  { statistic: "cpus_user_time_secs", name: "cpus_user_seconds_total", type: "counter", help: "CPU time the container's processes spent in user mode." },
  { statistic: "cpus_system_time_secs", name: "cpus_system_seconds_total", type: "counter", help: "CPU time the container's processes spent in the kernel." },
  { statistic: "cpus_nr_periods", name: "cpus_periods_total", type: "counter", help: "CFS enforcement periods the container has run in." },
  { statistic: "cpus_nr_throttled", name: "cpus_throttled_periods_total", type: "counter", help: "CFS periods in which the container was throttled for using up its cpu quota." },
  { statistic: "cpus_throttled_time_secs", name: "cpus_throttled_seconds_total", type: "counter", help: "Time the container spent throttled by its CFS cpu quota." },
  { statistic: "cpus_limit", name: "cpus_limit", type: "gauge", help: "The container's cpu limit, in cpus." },
  { statistic: "mem_rss_bytes", name: "mem_rss_bytes", type: "gauge", help: "Resident memory of the container's processes." },
  { statistic: "mem_total_bytes", name: "mem_total_bytes", type: "gauge", help: "Memory charged to the container (page cache included)." },
  { statistic: "mem_max_bytes", name: "mem_max_bytes", type: "gauge", help: "The most memory ever charged to the container." },
  { statistic: "mem_limit_bytes", name: "mem_limit_bytes", type: "gauge", help: "The container's memory limit." },
  { statistic: "processes", name: "processes", type: "gauge", help: "Processes in the container." },
];

/** Prometheus series of container usage, one per (statistic, task); a family is listed when some container reports it. */
export function renderContainerMetrics(containers: readonly ContainerStatistics[]): string {
  const lines: string[] = [];
  for (const { statistic, name, type, help } of CONTAINER_METRICS) {
    const samples = containers.filter((c) => c.statistics[statistic] !== undefined);
    if (samples.length === 0) continue;
    const metric = `corral_agent_container_${name}`;
    lines.push(`# HELP ${metric} ${help}`, `# TYPE ${metric} ${type}`);
    for (const c of samples) lines.push(`${metric}{framework_id="${c.framework_id}",task_id="${c.executor_id}"} ${c.statistics[statistic]}`);
  }
  return lines.length > 0 ? `${lines.join("\n")}\n` : "";
}

/** Error body of every 4xx/5xx answer. */
export interface HttpErrorBody {
  code: string;
  message: string;
}

const SANDBOX_ERROR_STATUS: Record<SandboxFileErrorCode, number> = {
  CORRAL_ERR_PATH_OUTSIDE_SANDBOX: 400,
  CORRAL_ERR_NOT_FOUND: 404,
  CORRAL_ERR_NOT_A_FILE: 400,
  CORRAL_ERR_BAD_RANGE: 400,
};

function fail(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).send({ code, message } satisfies HttpErrorBody);
}

/** A single query parameter: undefined when absent, an error string when repeated or not text. */
function queryParam(query: unknown, name: string): string | undefined | { error: string } {
  const value = (query as Record<string, unknown> | undefined)?.[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") return { error: `${name}: must be given once` };
  return value;
}

/** An optional integer query parameter in decimal digits; "" counts as absent. */
function intParam(name: string, raw: string | undefined): number | undefined | { error: string } {
  if (raw === undefined || raw === "") return undefined;
  // Number() would also take " ", "0x10", "1e3" and "Infinity".
  if (!/^-?\d+$/.test(raw)) return { error: `${name}: must be a whole number in decimal digits, got '${raw}'` };
  return Number(raw);
}

/** Builds the fastify instance (not yet listening). */
export function createAgentHttp(deps: AgentHttpDeps): FastifyInstance {
  const app = Fastify({ logger: false });

  app.setErrorHandler((err: { statusCode?: number; message?: string }, _req, reply) => {
    const status = typeof err.statusCode === "number" && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) deps.log.error({ err }, "http handler failed");
    return fail(reply, status, status === 500 ? "CORRAL_ERR_INTERNAL" : "CORRAL_ERR_BAD_REQUEST", err.message ?? "error");
  });
  app.setNotFoundHandler((req, reply) => fail(reply, 404, "CORRAL_ERR_NOT_FOUND", `no route ${req.method} ${req.url}`));

  app.get("/health", async () => ({ status: "ok" }));
  app.get("/state", async () => deps.state());
  app.get("/metrics", async (_req, reply) =>
    reply.type("text/plain; version=0.0.4; charset=utf-8").send(deps.metrics() + renderContainerMetrics(await deps.statistics())),
  );
  app.get("/monitor/statistics", async () => deps.statistics());

  app.get("/files/read", async (req, reply) => {
    const params: Record<string, string | undefined> = {};
    for (const name of ["frameworkId", "taskId", "path", "offset", "length"]) {
      const value = queryParam(req.query, name);
      if (typeof value === "object") return fail(reply, 400, "CORRAL_ERR_BAD_REQUEST", value.error);
      params[name] = value;
    }
    for (const name of ["frameworkId", "taskId"] as const) {
      const problem = pathIdProblem(params[name] ?? "");
      if (problem !== undefined) return fail(reply, 400, "CORRAL_ERR_BAD_REQUEST", `${name}: ${problem}`);
    }
    if (params.path === undefined || params.path === "") return fail(reply, 400, "CORRAL_ERR_BAD_REQUEST", "path: required, e.g. path=stdout");
    const offset = intParam("offset", params.offset);
    const length = intParam("length", params.length);
    for (const value of [offset, length]) {
      if (typeof value === "object") return fail(reply, 400, "CORRAL_ERR_BAD_RANGE", value.error);
    }
    const sandbox = deps.sandboxOf(params.frameworkId!, params.taskId!);
    try {
      return await readSandboxFile(sandbox, params.path, { offset: offset as number | undefined, length: length as number | undefined });
    } catch (err) {
      if (err instanceof SandboxFileError) return fail(reply, SANDBOX_ERROR_STATUS[err.code], err.code, err.message);
      throw err;
    }
  });
  return app;
}

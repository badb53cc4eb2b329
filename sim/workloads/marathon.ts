/**
 * `marathon` frameworks in a simulation: the REAL Marathon of frameworks/marathon (its shell
 * `createMarathon` without HTTP, its pure core, a `MemoryMarathonStore`) on the simulated network,
 * virtual clock and timers. This file only plays the operator and records what happened:
 *
 * - The scenario's app specs go in as `POST /v2/apps` does it (Marathon's `validateApp`, then
 *   `core.putApp` through the shell's input queue); updates as `PUT /v2/apps/{id}` (a partial
 *   update: `validateAppUpdate`, `core.putApp`), scale changes as a `PUT` of `{"instances": n}`,
 *   deletions as `DELETE /v2/apps/{id}` (`core.deleteApp`, forced as the API's default). Nothing
 *   of Marathon's logic is repeated here.
 * - Tasks run until killed; with `taskMttfSeconds` each one fails by itself (exit 1) after an
 *   exponential run time drawn by the simulated agent (see `SIM_MTTF_ENV` in sim/cluster.ts).
 * - Per app: the time from each action to the end of the deployment it started (Marathon's
 *   `deployment_success`), the instances running at every sample, and, for apps short of their
 *   instances at the end, what Marathon's launch queue (`GET /v2/queue`) says about why.
 *
 * @module
 */

import { validateApp, validateAppUpdate } from "../../frameworks/marathon/app-spec.ts";
import { ConflictError, type MarathonEvent, type WriteResult } from "../../frameworks/marathon/core.ts";
import { createMarathon, type Marathon } from "../../frameworks/marathon/marathon.ts";
import { MemoryMarathonStore } from "../../frameworks/marathon/store.ts";
import { Resources } from "../../sdk/resources.ts";
import type { Rng } from "../../sdk/rng.ts";
import type { TaskStatus } from "../../sdk/scheduler.ts";
import { SIM_EXIT_CODE_ENV, SIM_MTTF_ENV, type SimCluster } from "../cluster.ts";
import type { FrameworkSpec } from "../scenario.ts";
import type { MarathonAction, MarathonAppJson } from "./marathon-spec.ts";

/** What became of one action (or of the deployment of an app at the framework's start). */
export interface MarathonActionRecord {
  /** When it was due, scenario seconds. */
  atSeconds: number;
  type: MarathonAction["type"];
  appId: string;
  /** The deployment the write started; null when Marathon refused the write. */
  deploymentId: string | null;
  /**
   * `reached`: the deployment succeeded (every instance of the new definition running, old ones
   * gone); `superseded`: a later write replaced or cancelled it; `refused`: Marathon refused the
   * write (`error` says why, as the API would answer); `pending`: not done by the end.
   */
  outcome: "reached" | "superseded" | "refused" | "pending";
  /** From `atSeconds` to the deployment's success; null unless `reached`. */
  reachedAfterSeconds: number | null;
  error?: string;
}

/** Why an app's instances wait in Marathon's launch queue, as `GET /v2/queue` shows it. */
export interface MarathonQueueInfo {
  /** Instances waiting to be launched. */
  count: number;
  /** Launch backoff: seconds until launching may resume; `overdue` when not backed off. */
  delay: { timeLeftSeconds: number; overdue: boolean };
  processedOffers: number;
  unusedOffers: number;
  /** Per reject reason (`InsufficientCpus`, `UnfulfilledConstraint`...), offers declined for it. */
  rejectSummary: Array<{ reason: string; declined: number }>;
  /** The latest unused offers' reasons and details (at most Marathon's `maxUnusedOffersPerApp`). */
  lastUnusedOffers: Array<{ hostname: string; reason: string; detail: string }>;
}

/** One app of a `marathon` framework in the result. */
export interface MarathonAppReport {
  framework: string;
  appId: string;
  /** Instances its last definition asks for (0 once deleted). */
  instances: number;
  /** Instances running at the end (0 when the framework left). */
  running: number;
  deleted: boolean;
  actions: MarathonActionRecord[];
  /** [virtual seconds, instances running, instances wanted] at every sample of the report. */
  samples: Array<[number, number, number]>;
  /** The launch queue at the end, when instances still wait in it. */
  queue: MarathonQueueInfo | null;
}

/** An app short of its instances at the end, with Marathon's reasons. */
export interface UnplacedMarathonApp {
  framework: string;
  appId: string;
  instances: number;
  running: number;
  /** Human-readable: the queue's reject reasons with their counts, the launch delay, the latest details. */
  reasons: string[];
}

/** Distinct details of the latest unused offers quoted in an unplaced app's reasons. */
const MAX_DETAILS = 3;

/** Marathon's own names for the parts of its reject summary, as readable words. */
const REASON_WORDS: Record<string, string> = {
  UnfulfilledRole: "no offer of a role the app accepts",
  UnfulfilledConstraint: "constraints not met",
  InsufficientCpus: "not enough cpus",
  InsufficientMemory: "not enough mem",
  InsufficientDisk: "not enough disk",
  InsufficientGpus: "not enough gpus",
  InsufficientPorts: "not enough ports",
};

/** See the module comment. Built by `SimCluster` for frameworks of kind `marathon`. */
export class MarathonSimFramework {
  readonly node: string;
  readonly role: string;
  readonly refuseSeconds: number;
  /** The Marathon; set by {@link start}. */
  marathon: Marathon | undefined;
  /** Every action (the start's deployments first), in the order they were issued. */
  readonly actions: MarathonActionRecord[] = [];

  private started: Promise<boolean> | undefined;
  private stoppedAtMs: number | undefined;
  private readonly rng: Rng;
  /** Action records waiting for their deployment to end, by deployment id. */
  private readonly waiting = new Map<string, { record: MarathonActionRecord; dueMs: number }>();
  /** Deployments that ended before their write returned its id (an immediate success). */
  private readonly endedEarly = new Map<string, { outcome: "reached" | "superseded"; atMs: number }>();
  /** Every app id the framework ever had, in first-seen order (for the report). */
  private readonly appIds: string[] = [];
  private readonly samples = new Map<string, Array<[number, number, number]>>();

  constructor(
    private readonly cluster: SimCluster,
    readonly spec: FrameworkSpec,
    rng: Rng,
  ) {
    this.node = `fw-${spec.name}`;
    this.role = spec.role ?? "default";
    this.refuseSeconds = spec.refuseSeconds ?? 5;
    this.rng = rng;
  }

  /** What the report's sampler reads: the framework id (for the role's share). */
  get driver(): { frameworkId(): string | undefined } | undefined {
    const marathon = this.marathon;
    return marathon ? { frameworkId: () => marathon.frameworkId() } : undefined;
  }

  /** Instances waiting in Marathon's launch queue (0 after the framework left). */
  queued(): number {
    const marathon = this.marathon;
    if (!marathon || this.stoppedAtMs !== undefined) return 0;
    return marathon.core.queuedInstances();
  }

  /**
   * Instances waiting in the launch queue of apps last changed (deployed, updated, scaled) before
   * `ms` (virtual ms since the epoch): Marathon instances have no submission time of their own,
   * so an app's are as old as its latest action — the rule `allMarathonAppsPlaced` judges by.
   */
  queuedSubmittedBefore(ms: number): number {
    const marathon = this.marathon;
    if (!marathon || this.stoppedAtMs !== undefined) return 0;
    const changedMs = new Map<string, number>();
    for (const a of this.actions) changedMs.set(a.appId, Math.max(changedMs.get(a.appId) ?? -Infinity, this.cluster.startMs + a.atSeconds * 1000));
    let n = 0;
    for (const q of marathon.core.queue(this.cluster.engine.now())) if ((changedMs.get(q.record.app.id) ?? -Infinity) < ms) n += q.count;
    return n;
  }

  /** Starts Marathon, deploys the scenario's apps and schedules the actions. */
  start(): void {
    const cluster = this.cluster;
    const marathon = createMarathon({
      transport: cluster.network.endpoint(this.node),
      http: false,
      store: new MemoryMarathonStore(),
      clock: cluster.engine.clock,
      timers: cluster.engine.timers,
      rng: this.rng.fork("marathon"),
      frameworkName: this.spec.name,
      role: this.role,
      core: { unfitDeclineRefuseSeconds: this.refuseSeconds },
      ...(cluster.audit ? { onStatusUpdate: (frameworkId: string, status: TaskStatus) => cluster.audit!.deliveredTo(frameworkId, status) } : {}),
    });
    this.marathon = marathon;
    marathon.onEvent((event) => this.record(event));
    this.started = marathon.start().then(
      () => true,
      (err: unknown) => {
        cluster.emit("marathon-start-failed", { fw: this.spec.name, error: err instanceof Error ? err.message : String(err) });
        return false;
      },
    );
    cluster.emit("framework-started", { fw: this.spec.name, role: this.role });
    const workload = this.spec.marathon ?? {};
    const nowSeconds = cluster.elapsedMs() / 1000;
    for (const app of workload.apps ?? []) void this.act({ atSeconds: nowSeconds, type: "deploy", app });
    for (const action of workload.actions ?? []) {
      this.cluster.engine.after(Math.max(0, action.atSeconds * 1000 - cluster.elapsedMs()), () => void this.act(action));
    }
  }

  /**
   * Stops Marathon. A framework that leaves (`stopSeconds`, a stop-framework event) is torn down:
   * the master kills its tasks, as for every other kind.
   * @param emit false when the whole cluster shuts down (then nothing is torn down). @default true
   */
  async stop(emit = true): Promise<void> {
    if (this.stoppedAtMs !== undefined) return;
    this.stoppedAtMs = this.cluster.engine.now();
    if (emit) this.cluster.emit("framework-stopped", { fw: this.spec.name });
    await this.started;
    await this.marathon?.stop({ teardown: emit }).catch(() => undefined);
  }

  /** Whether the framework was stopped (torn down: its tasks killed, its updates no longer awaited). */
  isStopped(): boolean {
    return this.stoppedAtMs !== undefined;
  }

  /** Appends [t, running, wanted] of every app to its series (the report's sampler; reads only). */
  sample(tSeconds: number): void {
    const core = this.marathon?.core;
    if (!core) return;
    for (const id of this.appIds) {
      const record = core.app(id);
      const gone = this.stoppedAtMs !== undefined;
      const running = record && !gone ? core.taskCounts(id).tasksRunning : 0;
      this.samples.get(id)!.push([tSeconds, running, record && !gone ? record.app.instances : 0]);
    }
  }

  /** Every app's report; call at the end of the run. */
  report(): MarathonAppReport[] {
    const core = this.marathon?.core;
    const nowMs = this.cluster.engine.now();
    const queue = new Map((core?.queue(nowMs) ?? []).map((q) => [q.record.app.id, q]));
    return this.appIds.map((appId): MarathonAppReport => {
      const record = core?.app(appId);
      const gone = this.stoppedAtMs !== undefined;
      const q = gone ? undefined : queue.get(appId);
      return {
        framework: this.spec.name,
        appId,
        instances: record ? record.app.instances : 0,
        running: record && !gone && core ? core.taskCounts(appId).tasksRunning : 0,
        deleted: record === undefined,
        actions: this.actions.filter((a) => a.appId === appId),
        samples: this.samples.get(appId) ?? [],
        queue: q
          ? {
              count: q.count,
              delay: { timeLeftSeconds: q.delay.timeLeftSeconds, overdue: q.delay.overdue },
              processedOffers: q.stats.processed,
              unusedOffers: q.stats.unused,
              rejectSummary: [...q.stats.reasons].map(([reason, declined]) => ({ reason, declined })),
              lastUnusedOffers: q.stats.lastUnused.map((u) => ({ hostname: u.hostname, reason: u.reason, detail: u.detail })),
            }
          : null,
      };
    });
  }

  /** Apps short of their instances at the end, with Marathon's reasons (none once the framework left). */
  unplaced(reports: MarathonAppReport[] = this.report()): UnplacedMarathonApp[] {
    // A framework that left took its apps with it: nothing of it is short of anything.
    if (this.stoppedAtMs !== undefined) return [];
    const out: UnplacedMarathonApp[] = [];
    for (const app of reports) {
      if (app.deleted || app.running >= app.instances) continue;
      const reasons: string[] = [];
      const tooBig = this.tooBigForEveryClass(app.appId);
      if (tooBig) reasons.push(tooBig);
      const q = app.queue;
      if (q) {
        for (const r of [...q.rejectSummary].sort((a, b) => b.declined - a.declined)) {
          reasons.push(`${r.reason} (${REASON_WORDS[r.reason] ?? r.reason}): ${r.declined} of ${q.processedOffers} offers`);
        }
        if (!q.delay.overdue && q.delay.timeLeftSeconds > 0) reasons.push(`launch backoff after task failures: ${q.delay.timeLeftSeconds} s left`);
        const details = [...new Set(q.lastUnusedOffers.map((u) => u.detail).filter((d) => d !== ""))];
        if (details.length > 0) reasons.push(`latest offers: ${details.slice(0, MAX_DETAILS).join(" | ")}`);
        if (q.processedOffers === 0) reasons.push("no offer reached Marathon for it since it was queued (the cluster is full, or other roles' shares come first)");
      }
      const open = app.actions.find((a) => a.outcome === "pending");
      if (open) reasons.push(`its ${open.type} at ${open.atSeconds} s is still deploying`);
      if (reasons.length === 0) reasons.push(`${app.instances - app.running} instances not running (staging, or being replaced)`);
      out.push({ framework: app.framework, appId: app.appId, instances: app.instances, running: app.running, reasons });
    }
    return out;
  }

  /** Why no agent class could ever hold one instance of the app, if so. */
  private tooBigForEveryClass(appId: string): string | undefined {
    const app = this.marathon?.core.app(appId)?.app;
    const classes = Object.values(this.cluster.scenario.cluster.agentClasses).map((c) => Resources.parse(c.resources));
    if (!app || classes.length === 0) return undefined;
    const maxCpus = Math.max(...classes.map((r) => r.scalar("cpus")));
    const maxMem = Math.max(...classes.map((r) => r.scalar("mem")));
    if (app.cpus <= maxCpus && app.mem <= maxMem) return undefined;
    return `no agent class is large enough: an instance needs cpus ${app.cpus}, mem ${app.mem}; the largest agents have cpus ${maxCpus}, mem ${maxMem}`;
  }

  // ---- the operator ------------------------------------------------------------------------------

  /** Issues one action through Marathon's validation and core, as its HTTP route would. */
  private async act(action: MarathonAction): Promise<void> {
    const cluster = this.cluster;
    const appId = resolveId("app" in action ? String(action.app.id) : action.appId);
    const record: MarathonActionRecord = { atSeconds: round3(action.atSeconds), type: action.type, appId, deploymentId: null, outcome: "pending", reachedAfterSeconds: null };
    this.actions.push(record);
    this.track(appId);
    const dueMs = cluster.startMs + action.atSeconds * 1000;
    if (!(await this.started) || this.stoppedAtMs !== undefined) return this.refused(record, "Marathon is not running");
    const marathon = this.marathon!;
    const core = marathon.core;
    const now = () => cluster.engine.now();
    let write: WriteResult;
    try {
      write = await this.write(action, marathon, now);
    } catch (err) {
      return this.refused(record, err instanceof ConflictError ? `409: ${err.message}` : err instanceof Error ? err.message : String(err));
    }
    record.deploymentId = write.deploymentId;
    cluster.emit("marathon-action", { fw: this.spec.name, action: action.type, app: appId, deployment: write.deploymentId, instances: core.app(appId)?.app.instances ?? 0 });
    const early = this.endedEarly.get(write.deploymentId);
    if (early) {
      this.endedEarly.delete(write.deploymentId);
      this.settle(record, dueMs, early.outcome, early.atMs);
    } else this.waiting.set(write.deploymentId, { record, dueMs });
  }

  /** The write itself: the same validation and core call as the route of `action`. */
  private async write(action: MarathonAction, marathon: Marathon, now: () => number): Promise<WriteResult> {
    const core = marathon.core;
    const force = "force" in action ? action.force === true : false;
    switch (action.type) {
      case "deploy": {
        const v = validateApp(this.withFailureModel(action.app), { defaultRole: "*" });
        if (!v.ok) throw new Error(`${v.status}: ${JSON.stringify(v.body)}`);
        if (core.app(v.app.id)) throw new Error(`409: An app with id [${v.app.id}] already exists.`);
        return (await marathon.input(() => core.putApp(v.app, { force }, now()))).result;
      }
      case "update":
      case "scale": {
        const body = action.type === "update" ? this.withFailureModel(action.app, false) : { instances: action.instances };
        const id = resolveId(action.type === "update" ? String(action.app.id) : action.appId);
        const existing = core.app(id);
        if (!existing) throw new Error(`404: App '${id}' does not exist`);
        const v = validateAppUpdate(existing.app, body, { defaultRole: "*" });
        if (!v.ok) throw new Error(`${v.status}: ${JSON.stringify(v.body)}`);
        return (await marathon.input(() => core.putApp(v.app, { force }, now()))).result;
      }
      case "delete": {
        const id = resolveId(action.appId);
        if (!core.app(id)) throw new Error(`404: App '${action.appId}' does not exist`);
        return (await marathon.input(() => core.deleteApp(id, { force: true }, now()))).result;
      }
    }
  }

  /**
   * The app spec with the task failure model as task environment (read by the simulated agents'
   * containerizer). On an update it is added only when the update replaces `env`: otherwise the
   * app keeps the env it has, marker included.
   */
  private withFailureModel(app: MarathonAppJson, always = true): MarathonAppJson {
    const mttf = this.spec.marathon?.taskMttfSeconds;
    if (mttf === undefined || (!always && app.env === undefined)) return app;
    const env = typeof app.env === "object" && app.env !== null ? (app.env as Record<string, unknown>) : {};
    return { ...app, env: { ...env, [SIM_MTTF_ENV]: String(mttf * 1000), [SIM_EXIT_CODE_ENV]: "1" } };
  }

  private refused(record: MarathonActionRecord, error: string): void {
    record.outcome = "refused";
    record.error = error;
    this.cluster.emit("marathon-action-refused", { fw: this.spec.name, action: record.type, app: record.appId, error });
  }

  private settle(record: MarathonActionRecord, dueMs: number, outcome: "reached" | "superseded", atMs: number): void {
    record.outcome = outcome;
    if (outcome === "reached") record.reachedAfterSeconds = round3((atMs - dueMs) / 1000);
    this.cluster.emit("marathon-deployment", { fw: this.spec.name, app: record.appId, action: record.type, deployment: record.deploymentId, outcome, afterSeconds: record.reachedAfterSeconds });
  }

  private track(appId: string): void {
    if (this.samples.has(appId)) return;
    this.appIds.push(appId);
    this.samples.set(appId, []);
  }

  // ---- Marathon's events -------------------------------------------------------------------------

  private record(event: MarathonEvent): void {
    const cluster = this.cluster;
    const fw = this.spec.name;
    switch (event.eventType) {
      case "instance_changed_event":
        if (event.condition !== "Created") return;
        {
          const stats = cluster.stats;
          stats.launched++;
          const second = Math.floor(cluster.elapsedMs() / 1000);
          stats.launchesPerSecond[second] = (stats.launchesPerSecond[second] ?? 0) + 1;
          cluster.emit("accept", { fw, agent: event.agentId, tasks: [event.instanceId] });
          cluster.emit("launch", { fw, task: event.instanceId, agent: event.agentId, host: event.host, app: event.runSpecId });
        }
        return;
      case "status_update_event":
        cluster.emit("status", { fw, task: event.taskId, state: event.taskStatus, agent: event.slaveId });
        return;
      case "deployment_success":
      case "deployment_failed": {
        const id = String(event.id);
        const outcome = event.eventType === "deployment_success" ? "reached" : "superseded";
        const waiting = this.waiting.get(id);
        if (!waiting) {
          this.endedEarly.set(id, { outcome, atMs: cluster.engine.now() });
          return;
        }
        this.waiting.delete(id);
        this.settle(waiting.record, waiting.dueMs, outcome, cluster.engine.now());
        return;
      }
    }
  }
}

/** An app id as Marathon keeps it (absolute, normalised by its own validation). */
function resolveId(id: string): string {
  const v = validateApp({ id, cmd: "x" }, { defaultRole: "*" });
  return v.ok ? v.app.id : id;
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/**
 * A simulated cluster built from the REAL shells: `createMaster` (no HTTP, a memory registry),
 * `createAgent` (no HTTP, an {@link InstantContainerizer} on virtual timers, the agent id kept in
 * memory so nothing touches the disk) and frameworks on the SDK's `createSchedulerDriver`, all on
 * one {@link SimEngine} and {@link SimNetwork}. Every component is its own network node, so a
 * partition or a crash can cut one agent off.
 *
 * The synthetic frameworks (`tasks`, `greedy`, `decliner`) record what a capacity planner wants
 * to know (launches, completions, failures, wait from submission to RUNNING) in {@link SimStats},
 * and every offer, accept, decline, launch and status change in the optional event log.
 *
 * @module
 */

import { pino, type Logger as PinoLogger } from "pino";
import { InstantContainerizer } from "../agent/containerizer/instant.ts";
import { MemoryAgentIdStore, createAgent, type Agent } from "../agent/agent.ts";
import { createMaster, type Master } from "../master/shell.ts";
import { MemoryRegistryStore } from "../master/store.ts";
import { Resources } from "../sdk/resources.ts";
import { SeededRng, type Rng } from "../sdk/rng.ts";
import { createSchedulerDriver, type OfferView, type SchedulerDriver, type TaskSpec, type TaskStatus } from "../sdk/scheduler.ts";
import { SimEngine } from "./engine.ts";
import { SimNetwork, type SimTransport } from "./network.ts";
import { rackOf, type AgentClassSpec, type DurationSpec, type FrameworkSpec, type Scenario, type ScenarioEvent } from "./scenario.ts";
import { BatchSimFramework } from "./workloads/batch.ts";
import { MarathonSimFramework } from "./workloads/marathon.ts";

class StopRun extends Error {}

/** Node name of the master on the simulated network. */
export const MASTER_NODE = "master";
/** Task environment the instant containerizer reads: run time in ms (absent: until killed). */
export const SIM_DURATION_ENV = "CORRAL_SIM_DURATION_MS";
/** Task environment the instant containerizer reads: exit code when the run time is over. */
export const SIM_EXIT_CODE_ENV = "CORRAL_SIM_EXIT_CODE";
/**
 * Task environment the simulated agents read: the task runs for an exponential time with this
 * mean (ms), drawn when it launches, then exits with `SIM_EXIT_CODE_ENV` (a task failure model
 * for long-running tasks; `SIM_DURATION_ENV` wins when both are given).
 */
export const SIM_MTTF_ENV = "CORRAL_SIM_MTTF_MS";
const ENV_DURATION = SIM_DURATION_ENV;
const ENV_EXIT = SIM_EXIT_CODE_ENV;

/** Counters the simulated frameworks keep. */
export interface SimStats {
  submitted: number;
  launched: number;
  completed: number;
  failed: number;
  /** Failed or lost tasks submitted again. */
  retried: number;
  /** Tasks given up on after their retries. */
  abandoned: number;
  /** Wait from submission to RUNNING, ms, per task that ran. */
  waitsMs: number[];
  /** Launches per whole simulated second since the start (index = second). */
  launchesPerSecond: number[];
  agentFailures: number;
  agentRestarts: number;
}

/** One line of the JSONL event log. `t` is virtual ms since the start of the run. */
export type SimLogEvent = { t: number; type: string } & Record<string, unknown>;

interface PendingTask {
  id: string;
  cpus: number;
  mem: number;
  durationMs: number;
  submittedMs: number;
  attempt: number;
  /** RUNNING was seen (for any attempt): its wait, from the first submission, is recorded once. */
  ran: boolean;
}

interface SimAgentSlot {
  node: string;
  cls: string;
  spec: AgentClassSpec;
  resources: string;
  idStore: MemoryAgentIdStore;
  rng: Rng;
  agent: Agent | undefined;
  transport: SimTransport | undefined;
  /** Up and not removed. */
  up: boolean;
  removed: boolean;
  incarnation: number;
}

/** Options of {@link SimCluster}. */
export interface SimClusterOptions {
  /** Receives every event-log line (offers, accepts, declines, launches, status changes). @default none */
  eventLog?: (event: SimLogEvent) => void;
  /** Pino level of the shells' logs (to stderr). @default "silent" */
  logLevel?: string;
  /** Called after every engine event (fault checks). @default none */
  afterEvent?: () => void;
}

/** See the module comment. Build with a validated scenario, then {@link SimCluster.run}. */
export class SimCluster {
  readonly engine: SimEngine;
  readonly network: SimNetwork;
  readonly master: Master;
  readonly stats: SimStats = {
    submitted: 0,
    launched: 0,
    completed: 0,
    failed: 0,
    retried: 0,
    abandoned: 0,
    waitsMs: [],
    launchesPerSecond: [],
    agentFailures: 0,
    agentRestarts: 0,
  };
  readonly agents: SimAgentSlot[] = [];
  readonly frameworks = new Map<string, SimFramework | BatchSimFramework | MarathonSimFramework>();
  readonly startMs: number;

  private readonly rng: SeededRng;
  private readonly log: PinoLogger;
  private readonly classCounters = new Map<string, number>();
  /**
   * Run times of tasks with `SIM_MTTF_ENV`, drawn at launch. Seeded on its own (not forked from
   * the cluster's generator) so that scenarios without it draw exactly what they drew before.
   */
  private readonly taskLifetimes: SeededRng;

  constructor(
    readonly scenario: Scenario,
    private readonly options: SimClusterOptions = {},
  ) {
    this.rng = new SeededRng(scenario.seed);
    this.taskLifetimes = new SeededRng(`${scenario.seed}:task-lifetimes`);
    this.engine = new SimEngine();
    this.startMs = this.engine.now();
    const clock = this.engine.clock;
    // Log lines carry virtual time, so a log reads like the run it describes.
    this.log = pino({ level: options.logLevel ?? "silent", timestamp: () => `,"time":${clock.now()}` }, pino.destination(2));
    const net = scenario.network ?? {};
    this.network = new SimNetwork(this.engine, {
      rng: this.rng.fork("network"),
      ...(net.latency ? { latency: net.latency } : {}),
      ...(net.lossRate !== undefined ? { lossRate: net.lossRate } : {}),
      ...(net.duplicateRate !== undefined ? { duplicateRate: net.duplicateRate } : {}),
    });
    const c = scenario.cluster;
    this.master = createMaster({
      transport: this.network.endpoint(MASTER_NODE),
      masterId: "m-sim",
      http: false,
      store: new MemoryRegistryStore(),
      clock: this.engine.clock,
      timers: this.engine.timers,
      rng: this.rng.fork("master"),
      log: this.log,
      config: {
        ...(c.allocationIntervalMs !== undefined ? { allocationIntervalMs: c.allocationIntervalMs } : {}),
        ...(c.offerTimeoutMs !== undefined ? { offerTimeoutMs: c.offerTimeoutMs } : {}),
      },
    });
  }

  /** Virtual ms since the start. */
  elapsedMs(): number {
    return this.engine.now() - this.startMs;
  }

  /** Writes one event-log line (no-op without a log). */
  emit(type: string, fields: Record<string, unknown>): void {
    this.options.eventLog?.({ t: Math.round(this.elapsedMs() * 1000) / 1000, type, ...fields });
  }

  /** Starts the master, agents and frameworks, schedules the events, and runs to `endSeconds`. */
  async run(): Promise<{ events: number; wallMs: number; eventsPerSecond: number }> {
    const s = this.scenario;
    const c = s.cluster;
    const weights = Object.entries(c.roleWeights ?? {}).map(([role, weight]) => ({ role, weight }));
    if (weights.length > 0) this.master.core.setWeights(weights);
    const quotas = Object.entries(c.quota ?? {}).map(([role, q]) => ({ role, ...q }));
    if (quotas.length > 0) this.master.core.setQuotas(quotas);
    const masterStarted = this.master.start();
    // The master's start awaits its store; let it finish before anything else talks to it.
    await this.engine.run({ untilMs: this.engine.now() });
    await masterStarted;
    for (const [cls, spec] of Object.entries(c.agentClasses)) for (let i = 0; i < spec.count; i++) this.addAgent(cls, spec);
    for (const f of s.frameworks) {
      const rng = this.rng.fork(`framework:${f.name}`);
      const fw = f.kind === "batch" ? new BatchSimFramework(this, f, rng) : f.kind === "marathon" ? new MarathonSimFramework(this, f, rng) : new SimFramework(this, f, rng);
      this.frameworks.set(f.name, fw);
      this.engine.after((f.startSeconds ?? 0) * 1000, () => fw.start());
      if (f.stopSeconds !== undefined) this.engine.after(f.stopSeconds * 1000, () => void fw.stop());
    }
    for (const e of s.events ?? []) this.engine.after(e.atSeconds * 1000, () => this.apply(e));
    const stats = await this.engine.run({
      untilMs: this.startMs + s.endSeconds * 1000,
      ...(this.options.afterEvent ? { afterEvent: this.options.afterEvent } : {}),
    });
    return stats;
  }

  /**
   * Stops every component after a run: frameworks tear down, agents stop, the master stops. The
   * shells wait on virtual timers while stopping, so the engine runs on (at most `graceMs` of
   * virtual time) while they do.
   */
  async shutdown(graceMs = 30_000): Promise<void> {
    let done = false;
    const stopping = (async () => {
      for (const fw of this.frameworks.values()) await fw.stop(false);
      for (const slot of this.agents) if (slot.agent) await slot.agent.stop({ killTasks: false }).catch(() => undefined);
      await this.master.stop();
      done = true;
    })();
    await this.engine.run({ untilMs: this.engine.now() + graceMs, afterEvent: () => {
      if (done) throw new StopRun();
    } }).catch((err: unknown) => {
      if (!(err instanceof StopRun)) throw err;
    });
    if (done) await stopping;
  }

  // ---- agents ------------------------------------------------------------------------------------

  /** Adds and starts one agent of class `cls`. */
  addAgent(cls: string, spec: AgentClassSpec): SimAgentSlot {
    const n = this.classCounters.get(cls) ?? 0;
    this.classCounters.set(cls, n + 1);
    const node = `agent-${cls}-${n}`;
    const slot: SimAgentSlot = {
      node,
      cls,
      spec,
      resources: withStandardResources(spec.resources),
      idStore: new MemoryAgentIdStore(),
      rng: this.rng.fork(`agent:${node}`),
      agent: undefined,
      transport: undefined,
      up: false,
      removed: false,
      incarnation: 0,
    };
    this.agents.push(slot);
    this.bootAgent(slot);
    return slot;
  }

  private bootAgent(slot: SimAgentSlot): void {
    slot.incarnation++;
    this.network.setDown(slot.node, false);
    const transport = this.network.endpoint(slot.node);
    const rng = slot.rng.fork(`incarnation:${slot.incarnation}`);
    const containerizer = new InstantContainerizer({
      clock: this.engine.clock,
      timers: this.engine.timers,
      durationMs: (spec) => {
        const ms = Number(spec.env[ENV_DURATION]);
        if (Number.isFinite(ms)) return ms;
        const mttfMs = Number(spec.env[SIM_MTTF_ENV]);
        return mttfMs > 0 ? exponential(this.taskLifetimes, mttfMs) : undefined;
      },
      exitCode: (spec) => Number(spec.env[ENV_EXIT] ?? 0) || 0,
    });
    const agent = createAgent({
      transport,
      workDir: `/sim/${slot.node}`,
      agentIdStore: slot.idStore,
      resources: slot.resources,
      attributes: slot.spec.attributes ?? "",
      hostname: slot.node,
      http: false,
      containerizer,
      isolation: "sim",
      clock: this.engine.clock,
      timers: this.engine.timers,
      rng,
      log: this.log,
    });
    slot.agent = agent;
    slot.transport = transport;
    slot.up = true;
    agent.start().catch((err: unknown) => this.log.error({ err, node: slot.node }, "agent start failed"));
    this.armFailure(slot);
  }

  /** Schedules the next random failure of an agent whose class has an MTBF. */
  private armFailure(slot: SimAgentSlot): void {
    const mtbf = slot.spec.mtbfSeconds;
    if (mtbf === undefined) return;
    const incarnation = slot.incarnation;
    const upForMs = exponential(slot.rng, mtbf * 1000);
    this.engine.after(upForMs, () => {
      if (slot.incarnation !== incarnation || !slot.up || slot.removed) return;
      const downMs = exponential(slot.rng, (slot.spec.mttrSeconds ?? 300) * 1000);
      this.crashAgent(slot, downMs);
    });
  }

  /** Crashes an agent: its node goes silent at once, its tasks die; it boots again after `downMs`. */
  crashAgent(slot: SimAgentSlot, downMs: number | undefined): void {
    if (!slot.up) return;
    slot.up = false;
    this.stats.agentFailures++;
    this.network.setDown(slot.node, true);
    this.emit("agent-failed", { agent: slot.node, downMs: downMs ?? null });
    const agent = slot.agent;
    const transport = slot.transport;
    slot.agent = undefined;
    slot.transport = undefined;
    void (async () => {
      await agent?.stop({ killTasks: true }).catch(() => undefined);
      await transport?.close();
    })();
    if (downMs !== undefined) {
      this.engine.after(downMs, () => {
        if (slot.removed || slot.up) return;
        this.stats.agentRestarts++;
        this.emit("agent-restarted", { agent: slot.node });
        this.bootAgent(slot);
      });
    }
  }

  /** Removes an agent for good: it unregisters and its tasks are killed. */
  removeAgent(slot: SimAgentSlot): void {
    slot.removed = true;
    if (!slot.up) return;
    slot.up = false;
    this.emit("agent-removed", { agent: slot.node });
    const agent = slot.agent;
    const transport = slot.transport;
    slot.agent = undefined;
    void (async () => {
      await agent?.stop({ killTasks: true, unregister: true }).catch(() => undefined);
      await transport?.close();
    })();
  }

  /** Crashes every running agent whose class has the attribute `rack:<rack>` (a `fail-rack` event). */
  failRack(rack: string, downSeconds: number | undefined): void {
    const hit = this.agents.filter((a) => a.up && rackOf(a.spec.attributes) === rack);
    this.emit("rack-failed", { rack, agents: hit.map((a) => a.node), downMs: downSeconds === undefined ? null : downSeconds * 1000 });
    for (const slot of hit) this.crashAgent(slot, downSeconds === undefined ? undefined : downSeconds * 1000);
  }

  /** Running agents of a class, newest first (the order timed events pick them in). */
  liveAgents(cls: string): SimAgentSlot[] {
    return this.agents.filter((a) => a.cls === cls && a.up).reverse();
  }

  private apply(event: ScenarioEvent): void {
    switch (event.type) {
      case "add-agents": {
        const spec = this.scenario.cluster.agentClasses[event.class]!;
        this.emit("agents-added", { class: event.class, count: event.count });
        for (let i = 0; i < event.count; i++) this.addAgent(event.class, spec);
        return;
      }
      case "remove-agents":
        for (const slot of this.liveAgents(event.class).slice(0, event.count)) this.removeAgent(slot);
        return;
      case "fail-agents":
        for (const slot of this.liveAgents(event.class).slice(0, event.count)) this.crashAgent(slot, event.downSeconds === undefined ? undefined : event.downSeconds * 1000);
        return;
      case "partition-agents": {
        const cut = this.liveAgents(event.class).slice(0, event.count).map((a) => a.node);
        const others = [MASTER_NODE, ...[...this.frameworks.values()].map((f) => f.node)];
        this.network.partition([others, cut]);
        this.emit("partition", { agents: cut, durationMs: event.durationSeconds * 1000 });
        this.engine.after(event.durationSeconds * 1000, () => {
          this.network.heal();
          this.emit("partition-healed", { agents: cut });
        });
        return;
      }
      case "fail-rack":
        this.failRack(event.rack, event.downSeconds);
        return;
      case "stop-framework":
        void this.frameworks.get(event.name)?.stop();
        return;
    }
  }
}

/**
 * A synthetic framework on the real SDK driver. `tasks` packs queued tasks into each offer,
 * `greedy` runs one queued task per offer on the whole offer, `decliner` declines everything.
 */
export class SimFramework {
  readonly node: string;
  readonly role: string;
  readonly refuseSeconds: number;
  driver: SchedulerDriver | undefined;
  private queue: PendingTask[] = [];
  private head = 0;
  private readonly inFlight = new Map<string, PendingTask>();
  private declinedSinceRevive = false;
  private lastReviveMs = -Infinity;
  private stopped = false;
  private submittedCount = 0;
  private readonly maxRetries: number;

  constructor(
    private readonly cluster: SimCluster,
    readonly spec: FrameworkSpec,
    private readonly rng: Rng,
  ) {
    this.node = `fw-${spec.name}`;
    this.role = spec.role ?? "default";
    this.refuseSeconds = spec.refuseSeconds ?? 5;
    this.maxRetries = spec.tasks?.maxRetries ?? 3;
  }

  /** Tasks waiting for an offer. */
  queued(): number {
    return this.queue.length - this.head;
  }

  /** Tasks waiting for an offer that were first submitted before `ms` (virtual ms since the epoch; a report reads it). */
  queuedSubmittedBefore(ms: number): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if (this.queue[i]!.submittedMs < ms) n++;
    return n;
  }

  /** Subscribes and starts submitting its workload. */
  start(): void {
    const cluster = this.cluster;
    this.driver = createSchedulerDriver({
      transport: cluster.network.endpoint(this.node),
      framework: { name: this.spec.name, roles: [this.role], hostname: this.node, failoverTimeoutSeconds: 3600 },
      clock: cluster.engine.clock,
      timers: cluster.engine.timers,
      rng: this.rng.fork("driver"),
      callbacks: {
        offers: (offers) => this.onOffers(offers),
        rescind: (offerId) => cluster.emit("rescind", { fw: this.spec.name, offer: offerId }),
        update: (status) => this.onUpdate(status),
      },
    });
    this.driver.start().catch(() => undefined);
    cluster.emit("framework-started", { fw: this.spec.name, role: this.role });
    this.scheduleArrivals();
  }

  /** Tears the framework down (its tasks are killed). */
  async stop(emit = true): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (emit) this.cluster.emit("framework-stopped", { fw: this.spec.name });
    await this.driver?.stop({ teardown: true }).catch(() => undefined);
  }

  private scheduleArrivals(): void {
    const t = this.spec.tasks;
    if (!t || t.count === 0) return;
    const engine = this.cluster.engine;
    if ("at" in t.arrival) {
      engine.after(t.arrival.at * 1000, () => {
        for (let i = 0; i < t.count; i++) this.submit();
      });
      return;
    }
    const meanGapMs = 1000 / t.arrival.poisson.ratePerSecond;
    // One arrival timer at a time: the heap never holds the whole workload.
    const next = (): void => {
      if (this.stopped || this.submittedCount >= t.count) return;
      this.submit();
      engine.after(exponential(this.rng, meanGapMs), next);
    };
    engine.after(exponential(this.rng, meanGapMs), next);
  }

  private submit(): void {
    const t = this.spec.tasks!;
    const n = this.submittedCount++;
    this.cluster.stats.submitted++;
    this.enqueue({
      id: `${this.spec.name}-${n}`,
      cpus: t.cpus,
      mem: t.mem,
      durationMs: sampleDurationMs(t.durationSeconds, this.rng),
      submittedMs: this.cluster.engine.now(),
      attempt: 0,
      ran: false,
    });
  }

  private enqueue(task: PendingTask): void {
    if (this.stopped) return;
    this.queue.push(task);
    // New work after declines: revive (clearing our decline filters), but at most once per
    // min(refuseSeconds, 5 s), or a steady trickle of arrivals would have every agent re-offered
    // each time.
    const now = this.cluster.engine.now();
    const reviveGapMs = Math.min(this.refuseSeconds, 5) * 1000;
    if (this.declinedSinceRevive && now - this.lastReviveMs >= reviveGapMs && this.driver?.state() === "subscribed") {
      this.declinedSinceRevive = false;
      this.lastReviveMs = now;
      this.driver.revive().catch(() => undefined);
    }
  }

  private take(fits: (task: PendingTask) => boolean): PendingTask | undefined {
    const task = this.queue[this.head];
    if (task === undefined || !fits(task)) return undefined;
    this.queue[this.head] = undefined as unknown as PendingTask;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return task;
  }

  private async onOffers(offers: OfferView[]): Promise<void> {
    const cluster = this.cluster;
    const driver = this.driver!;
    const filters = { refuseSeconds: this.refuseSeconds };
    const calls: Promise<unknown>[] = [];
    for (const offer of offers) {
      let cpus = offer.resources.scalar("cpus");
      let mem = offer.resources.scalar("mem");
      cluster.emit("offer", { fw: this.spec.name, offer: offer.id, agent: offer.agentId, cpus, mem });
      const chosen: PendingTask[] = [];
      if (this.spec.kind === "tasks" && !this.stopped) {
        for (;;) {
          const task = this.take((t) => t.cpus <= cpus + 1e-9 && t.mem <= mem + 1e-9);
          if (!task) break;
          cpus -= task.cpus;
          mem -= task.mem;
          chosen.push(task);
        }
      } else if (this.spec.kind === "greedy" && !this.stopped && cpus > 0 && mem > 0) {
        const task = this.take(() => true);
        if (task) chosen.push({ ...task, cpus, mem });
      }
      if (chosen.length === 0) {
        this.declinedSinceRevive = true;
        cluster.emit("decline", { fw: this.spec.name, offer: offer.id });
        calls.push(driver.decline([offer.id], filters).catch(() => undefined));
        continue;
      }
      const specs: TaskSpec[] = chosen.map((task) => ({
        taskId: task.attempt === 0 ? task.id : `${task.id}.r${task.attempt}`,
        resources: `cpus:${round3(task.cpus)};mem:${round3(task.mem)}`,
        command: "sim",
        env: { [ENV_DURATION]: String(task.durationMs) },
      }));
      cluster.emit("accept", { fw: this.spec.name, offer: offer.id, agent: offer.agentId, tasks: specs.map((s) => s.taskId) });
      for (let i = 0; i < chosen.length; i++) this.inFlight.set(specs[i]!.taskId, chosen[i]!);
      calls.push(
        driver.accept([offer.id], specs, filters).then(
          () => {
            for (const spec of specs) {
              cluster.stats.launched++;
              const second = Math.floor(cluster.elapsedMs() / 1000);
              cluster.stats.launchesPerSecond[second] = (cluster.stats.launchesPerSecond[second] ?? 0) + 1;
              cluster.emit("launch", { fw: this.spec.name, task: spec.taskId, agent: offer.agentId });
            }
          },
          (err: unknown) => {
            // The offer was gone (rescinded, agent lost): queue the tasks again, in front.
            cluster.emit("accept-failed", { fw: this.spec.name, offer: offer.id, error: (err as { code?: string }).code ?? String(err) });
            for (const spec of specs) this.inFlight.delete(spec.taskId);
            this.queue.splice(this.head, 0, ...chosen);
          },
        ),
      );
    }
    await Promise.all(calls);
  }

  private onUpdate(status: TaskStatus): void {
    const cluster = this.cluster;
    cluster.emit("status", { fw: this.spec.name, task: status.taskId, state: status.state, agent: status.agentId });
    const task = this.inFlight.get(status.taskId);
    if (!task) return;
    switch (status.state) {
      case "TASK_STAGING":
      case "TASK_STARTING":
      case "TASK_KILLING":
        return;
      case "TASK_RUNNING":
        if (!task.ran) cluster.stats.waitsMs.push(cluster.engine.now() - task.submittedMs);
        task.ran = true;
        return;
      case "TASK_FINISHED":
        this.inFlight.delete(status.taskId);
        cluster.stats.completed++;
        return;
      default: {
        this.inFlight.delete(status.taskId);
        cluster.stats.failed++;
        if (task.attempt < this.maxRetries && !this.stopped) {
          cluster.stats.retried++;
          this.enqueue({ ...task, attempt: task.attempt + 1 });
        } else cluster.stats.abandoned++;
      }
    }
  }
}

/** Adds `disk` and `ports` when missing, so the agent never probes the host. */
export function withStandardResources(text: string): string {
  const r = Resources.parse(text);
  const names = new Set(r.entries.map((e) => e.name));
  let out = text;
  if (!names.has("disk")) out += ";disk:10240";
  if (!names.has("ports")) out += ";ports:[31000-32000]";
  return out;
}

function exponential(rng: Rng, mean: number): number {
  return -Math.log(1 - rng.next()) * mean;
}

/** Samples a task duration in ms. */
export function sampleDurationMs(spec: DurationSpec, rng: Rng): number {
  if (typeof spec === "number") return spec * 1000;
  if (spec.dist === "exp") return exponential(rng, spec.meanSeconds * 1000);
  return (spec.minSeconds + rng.next() * (spec.maxSeconds - spec.minSeconds)) * 1000;
}

function round3(n: number): number {
  return Math.floor(n * 1000) / 1000;
}

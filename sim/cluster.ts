/**
 * A simulated cluster built from the REAL shells: `createMaster` (no HTTP, a memory registry),
 * `createAgent` (no HTTP, an {@link InstantContainerizer} on virtual timers, the agent id kept in
 * memory so nothing touches the disk) and frameworks on the SDK's `createSchedulerDriver`, all on
 * one {@link SimEngine} and {@link SimNetwork}. Every component is its own network node, so a
 * partition or a crash can cut one agent off.
 *
 * The synthetic frameworks (`tasks`, `greedy`, `decliner`; `./workloads/tasks.ts`) record what a capacity planner wants
 * to know (launches, completions, failures, wait from submission to RUNNING) in {@link SimStats},
 * and every offer, accept, decline, launch and status change in the optional event log.
 *
 * @module
 */

import { pino, type Logger as PinoLogger } from "pino";
import { InstantContainerizer } from "../agent/containerizer/instant.ts";
import { MemoryAgentIdStore, createAgent, type Agent } from "../agent/agent.ts";
import type { Master } from "../master/shell.ts";
import { Resources } from "../sdk/resources.ts";
import { SeededRng, type Rng } from "../sdk/rng.ts";
import { SimEngine } from "./engine.ts";
import type { TaskStatus } from "../sdk/scheduler.ts";
import { StatusDeliveryAudit } from "./audit.ts";
import { SimMasters } from "./masters.ts";
import { SimNetwork, type SimTransport } from "./network.ts";
import { rackOf, type AgentClassSpec, type Scenario, type ScenarioEvent } from "./scenario.ts";
import { BatchSimFramework } from "./workloads/batch.ts";
import { MarathonSimFramework } from "./workloads/marathon.ts";
import { SimFramework, exponential, type TaskFrameworkHost } from "./workloads/tasks.ts";

export { SimFramework, sampleDurationMs } from "./workloads/tasks.ts";

class StopRun extends Error {}

export { MASTER_NODE } from "./masters.ts";
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
/** Completed tasks a simulated agent remembers (see where agents are created). */
const SIM_COMPLETED_TASKS_PER_AGENT = 10;
/** Acknowledged update uuids of finished tasks a simulated agent remembers (see where agents are created). */
const SIM_CLOSED_UPDATE_UUIDS_PER_AGENT = 16;
/**
 * Ended containers a simulated agent's containerizer remembers (see where agents are created).
 * Each costs about 300 bytes, mostly its id: at 10,000 agents, 32 of them held about 100 MB.
 */
const SIM_TERMINATIONS_PER_AGENT = 8;

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
  /**
   * Keep the {@link StatusDeliveryAudit} (`SimCluster.audit`): what each framework was given and
   * what each agent's acknowledgements retired (fault checks). @default false
   */
  auditStatusUpdates?: boolean;
  /**
   * Folder that relative trace file names of the scenario are read from (the scenario file's
   * folder, when it came from a file). @default the current directory
   */
  baseDir?: string;
}

/** See the module comment. Build with a validated scenario, then {@link SimCluster.run}. */
export class SimCluster {
  readonly engine: SimEngine;
  readonly network: SimNetwork;
  /** With {@link SimClusterOptions.auditStatusUpdates}: delivered and acknowledged status updates. */
  readonly audit: StatusDeliveryAudit | undefined;
  /** The masters: one, or several electing a leader (see `./masters.ts`). */
  readonly masters: SimMasters;
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
  /** The agents of each `partition-agents` event in force, in start order. */
  private readonly cuts: string[][] = [];
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
      ...(net.wire !== undefined ? { wire: net.wire } : {}),
    });
    this.audit = options.auditStatusUpdates ? new StatusDeliveryAudit() : undefined;
    this.masters = new SimMasters({
      scenario,
      engine: this.engine,
      network: this.network,
      log: this.log,
      rng: this.rng.fork("master"),
      elapsedMs: () => this.elapsedMs(),
      emit: (type, fields) => this.emit(type, fields),
    });
  }

  /** The master that leads, or led last (see {@link SimMasters}). */
  get master(): Master {
    return this.masters.master;
  }

  /** The master leading now; undefined between a master's crash and a standby's takeover. */
  leader(): Master | undefined {
    return this.masters.leader();
  }

  /** Where relative trace file names are read from; see {@link SimClusterOptions.baseDir}. */
  get baseDir(): string | undefined {
    return this.options.baseDir;
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
    const masterStarted = this.masters.start();
    // The master's start awaits its store; let it finish before anything else talks to it.
    await this.engine.run({ untilMs: this.engine.now() });
    await masterStarted;
    for (const [cls, spec] of Object.entries(c.agentClasses)) for (let i = 0; i < spec.count; i++) this.addAgent(cls, spec);
    for (const f of s.frameworks) {
      const rng = this.rng.fork(`framework:${f.name}`);
      const fw = f.kind === "batch" ? new BatchSimFramework(this, f, rng) : f.kind === "marathon" ? new MarathonSimFramework(this, f, rng) : new SimFramework(this.frameworkHost(), f, rng);
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
      await this.masters.stop();
      done = true;
    })();
    await this.engine.run({ untilMs: this.engine.now() + graceMs, afterEvent: () => {
      if (done) throw new StopRun();
    } }).catch((err: unknown) => {
      if (!(err instanceof StopRun)) throw err;
    });
    if (done) await stopping;
  }

  /** What the synthetic frameworks run on here: virtual time, the simulated network, this cluster's records. */
  private frameworkHost(): TaskFrameworkHost {
    return {
      clock: this.engine.clock,
      timers: this.engine.timers,
      connect: (node) => this.network.endpoint(node),
      stats: this.stats,
      elapsedMs: () => this.elapsedMs(),
      emit: (type, fields) => this.emit(type, fields),
      taskCommand: (task) => ({ command: "sim", env: { [ENV_DURATION]: String(task.durationMs) } }),
      ...(this.audit ? { onUpdateDelivered: (frameworkId: string, status: TaskStatus) => this.audit!.deliveredTo(frameworkId, status) } : {}),
    };
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
      // Terminations are asked for right after a container ends (the agent waits on every one it
      // launched), or by a kill racing the end: a few per agent are enough, and the default
      // (10,000) kept every task of a week-long 10,000-agent run.
      maxRememberedTerminations: SIM_TERMINATIONS_PER_AGENT,
    });
    const agent = createAgent({
      transport,
      workDir: `/sim/${slot.node}`,
      agentIdStore: slot.idStore,
      resources: slot.resources,
      attributes: slot.spec.attributes ?? "",
      hostname: slot.node,
      http: false,
      // The completed-task list is for the agent's /state, which a simulated agent does not serve;
      // it also answers a duplicate run_task of a task that has already ended, which the network's
      // duplicates do within milliseconds. With every agent in one process, Corral's default of
      // 1,000 per agent held every task of a week-long run at 10,000 agents (~2.8 KB each).
      maxCompletedTasks: SIM_COMPLETED_TASKS_PER_AGENT,
      // Likewise the uuids of finished tasks' acknowledged updates: they catch replays from a
      // checkpoint after a restart, and simulated agents keep no checkpoints.
      maxClosedUpdateUuids: SIM_CLOSED_UPDATE_UUIDS_PER_AGENT,
      // The instant containerizer makes no sandbox directories: nothing to collect, and no disk to
      // read (the agentIdStore turns it off too; said here so that a run never touches the disk).
      sandboxGc: false,
      containerizer,
      isolation: "sim",
      clock: this.engine.clock,
      timers: this.engine.timers,
      rng,
      log: this.log,
      ...(this.audit ? { onStatusUpdateAcknowledged: (ack: { frameworkId: string; taskId: string; uuid: string }) => this.audit!.retired({ agent: slot.node, ...ack }) } : {}),
    });
    slot.agent = agent;
    slot.transport = transport;
    slot.up = true;
    agent.start().catch((err: unknown) => this.log.error({ err, node: slot.node }, "agent start failed"));
    this.armFailure(slot);
  }

  /**
   * Schedules the next random failure of an agent whose class has an MTBF, if it falls before the
   * class's `failuresUntilSeconds`; a repair that would last past that time ends at it. The draws
   * are the same with or without that bound, so it changes nothing before it.
   */
  private armFailure(slot: SimAgentSlot): void {
    const mtbf = slot.spec.mtbfSeconds;
    if (mtbf === undefined) return;
    const incarnation = slot.incarnation;
    const upForMs = exponential(slot.rng, mtbf * 1000);
    const untilMs = slot.spec.failuresUntilSeconds === undefined ? Infinity : slot.spec.failuresUntilSeconds * 1000;
    if (this.elapsedMs() + upForMs >= untilMs) return;
    this.engine.after(upForMs, () => {
      if (slot.incarnation !== incarnation || !slot.up || slot.removed) return;
      const downMs = exponential(slot.rng, (slot.spec.mttrSeconds ?? 300) * 1000);
      this.crashAgent(slot, Math.min(downMs, untilMs - this.elapsedMs()));
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

  /**
   * The network as the partitions in force say: the agents of every one of them on one side, the
   * masters and frameworks on the other (the network holds one partition at a time, so each start
   * and each end recomputes it from all those still in force: one partition neither heals another
   * nor is healed by it).
   */
  private applyCuts(): void {
    if (this.cuts.length === 0) return this.network.heal();
    const others = [...this.masters.nodes(), ...[...this.frameworks.values()].map((f) => f.node)];
    this.network.partition([others, [...new Set(this.cuts.flat())]]);
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
        this.cuts.push(cut);
        this.applyCuts();
        this.emit("partition", { agents: cut, durationMs: event.durationSeconds * 1000 });
        this.engine.after(event.durationSeconds * 1000, () => {
          this.cuts.splice(this.cuts.indexOf(cut), 1);
          this.applyCuts();
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
      case "master-failover":
        this.masters.crashLeader(event.downSeconds === undefined ? undefined : event.downSeconds * 1000);
        return;
      case "set-network": {
        const faults = {
          ...(event.latency !== undefined ? { latency: event.latency } : {}),
          ...(event.lossRate !== undefined ? { lossRate: event.lossRate } : {}),
          ...(event.duplicateRate !== undefined ? { duplicateRate: event.duplicateRate } : {}),
        };
        this.network.setFaults(faults);
        this.emit("network-changed", faults);
        return;
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

/**
 * Seeded fault injection (`corral sim check --seeds 1..N`): each seed draws a random small world
 * and random faults (agent crashes and restarts, message loss, duplication and delay,
 * partitions, master failovers), which all stop at {@link faultsEndSeconds} so the run ends with a
 * quiet tail; it runs it on the real shells, and checks after EVERY engine event that
 *
 * - the allocator's own invariants hold (`allocator.checkInvariants()`), and
 * - no resource is in two outstanding offers: per agent, what is offered is contained in what
 *   is allocated (offers count as allocated), so the same resources were not offered twice;
 * - a task's resources are counted exactly once ({@link accountingProblems});
 * - every acknowledged status update reached its framework (`./audit.ts`).
 * - after the faults stop, every Marathon app reaches its instance count within a bound
 *   ({@link MarathonConvergenceCheck}).
 *
 * The master checks look at the leading master only: between a leader's crash and a standby's
 * takeover nobody allocates, and the crashed master's state is what it was.
 *
 * A failure names the seed, the virtual time, the problem and the command that reproduces it.
 *
 * @module
 */

import { Resources } from "../sdk/resources.ts";
import { SeededRng } from "../sdk/rng.ts";
import { TERMINAL_TASK_STATES, type TaskState } from "../sdk/wire/types.ts";
import type { SimCluster, SimLogEvent } from "./cluster.ts";
import { runScenario } from "./report.ts";
import type { FrameworkSpec, Scenario, ScenarioEvent } from "./scenario.ts";
import { MAX_SEED } from "./scenario.ts";
import { MarathonSimFramework } from "./workloads/marathon.ts";

/** What one seed's check found. */
export type CheckOutcome =
  | {
      ok: true;
      seed: number;
      events: number;
      launched: number;
      faults: number;
      /** Virtual seconds the Marathon convergence check judged the apps ({@link MarathonConvergenceCheck.judgedMs}). */
      appsJudgedSeconds: number;
    }
  | { ok: false; seed: number; atMs: number; problem: string; reproduce: string };

/** Options of {@link runCheck}. */
export interface CheckOptions {
  /** Agents in the world, at least 2 (two classes of at least one agent each). @default 6 */
  agents?: number;
  /** Simulated seconds. @default 600 */
  seconds?: number;
}

class InvariantViolation extends Error {}

/** Parses `7`, `1..20` or `1,5,9` into seeds. @throws on anything else */
export function parseSeeds(text: string): number[] {
  const range = /^(\d+)\.\.(\d+)$/.exec(text);
  if (range) {
    const from = Number(range[1]);
    const to = Number(range[2]);
    if (to < from) throw new Error(`--seeds: the range ${text} runs backwards (A..B needs A <= B)`);
    if (to - from > 100_000) throw new Error(`--seeds: the range ${text} holds more than 100001 seeds`);
    if (to > MAX_SEED) throw new Error(`--seeds: seeds must be <= ${MAX_SEED}, got ${text}`);
    return Array.from({ length: to - from + 1 }, (_, i) => from + i);
  }
  if (/^\d+(,\d+)*$/.test(text)) {
    const seeds = text.split(",").map(Number);
    if (seeds.some((s) => s > MAX_SEED)) throw new Error(`--seeds: seeds must be <= ${MAX_SEED}, got ${text}`);
    return seeds;
  }
  throw new Error(`--seeds: must be N, A..B or A,B,C, got ${JSON.stringify(text)}`);
}

/**
 * The quiet tail of a fault world: the last seconds of the run, which no fault touches, so that
 * {@link MarathonConvergenceCheck} judges every app after the faults. 240 s cover the master
 * noticing an agent it lost touch with (5 missed pings of 15 s), the convergence bound
 * ({@link MARATHON_CONVERGENCE_SLACK_MS}) and a few of Marathon's launch backoffs, with some of the
 * tail left in which the check judges. A run shorter than twice this gets half its time instead.
 */
export const CHECK_QUIET_TAIL_SECONDS = 240;

/**
 * When every fault of a fault world has stopped (scenario seconds): the timed faults are over (a
 * crashed agent or master back, a partition healed), class `a` fails no more and its agents are
 * back, and the network neither loses nor duplicates messages from then on. The run's last
 * `min(CHECK_QUIET_TAIL_SECONDS, seconds / 2)` seconds are quiet.
 */
export function faultsEndSeconds(seconds: number): number {
  return seconds - Math.min(CHECK_QUIET_TAIL_SECONDS, seconds / 2);
}

/** The random world and faults of `seed` (a valid scenario); every fault stops at {@link faultsEndSeconds}. */
export function faultScenario(seed: number, options: CheckOptions = {}): Scenario {
  const rng = new SeededRng(`check:${seed}`);
  const agents = options.agents ?? 6;
  // Each class holds at least one agent: fewer than two would silently become two.
  if (!Number.isInteger(agents) || agents < 2) throw new RangeError(`agents: must be an integer >= 2 (one agent in each of the two classes), got ${agents}`);
  const seconds = options.seconds ?? 600;
  const quietFrom = faultsEndSeconds(seconds);
  const half = Math.max(1, Math.floor(agents / 2));
  const events: ScenarioEvent[] = [];
  const faults = 2 + rng.int(5);
  // What a fault drew as its length, cut short so that it is over by `quietFrom` (at least 0.2 × quietFrom away).
  const within = (atSeconds: number, drawn: number): number => Math.min(drawn, quietFrom - atSeconds);
  for (let i = 0; i < faults; i++) {
    const atSeconds = Math.floor(rng.next() * quietFrom * 0.8);
    const cls = rng.next() < 0.5 ? "a" : "b";
    const count = 1 + rng.int(Math.max(1, Math.min(2, half)));
    const kind = rng.int(4);
    if (kind === 3) events.push({ atSeconds, type: "master-failover", ...(rng.next() < 0.5 ? { downSeconds: within(atSeconds, 5 + rng.int(60)) } : {}) });
    else if (kind === 0) events.push({ atSeconds, type: "fail-agents", class: cls, count, downSeconds: within(atSeconds, 5 + rng.int(120)) });
    else if (kind === 1) events.push({ atSeconds, type: "partition-agents", class: cls, count, durationSeconds: within(atSeconds, 5 + rng.int(120)) });
    else events.push({ atSeconds, type: "add-agents", class: cls, count: 1 });
  }
  const scenario: Scenario = {
    name: `check-${seed}`,
    seed,
    endSeconds: seconds,
    sampleIntervalSeconds: seconds,
    cluster: {
      agentClasses: {
        a: { count: half, resources: "cpus:4;mem:8192", mtbfSeconds: 200 + rng.int(1000), mttrSeconds: 10 + rng.int(100), failuresUntilSeconds: quietFrom },
        b: { count: Math.max(1, agents - half), resources: "cpus:2;mem:4096" },
      },
      roleWeights: { r1: 1 + rng.int(3), r2: 1 },
      // A standby or two, so a failover always has someone to take over.
      masters: 2 + rng.int(2),
      allocationIntervalMs: 200 + rng.int(1000),
      ...(rng.next() < 0.5 ? { offerTimeoutMs: 2000 + rng.int(20_000) } : {}),
    },
    network: {
      latency: { dist: "exp", minMs: 0.1, meanMs: 1 + rng.next() * 50 },
      lossRate: rng.next() * 0.02,
      duplicateRate: rng.next() * 0.01,
    },
    frameworks: [
      {
        name: "t1",
        kind: "tasks",
        role: "r1",
        refuseSeconds: 1 + rng.int(5),
        tasks: { count: 100, cpus: 0.5, mem: 256, durationSeconds: { dist: "exp", meanSeconds: 20 }, arrival: { poisson: { ratePerSecond: 0.5 } } },
      },
      {
        name: "t2",
        kind: "greedy",
        role: "r2",
        refuseSeconds: 2,
        // Within the run (a start at or after the end is refused); the draw is kept for long runs.
        startSeconds: Math.min(rng.int(60), Math.floor(seconds / 2)),
        tasks: { count: 30, cpus: 1, mem: 512, durationSeconds: 30, arrival: { at: 0 } },
      },
      { name: "d", kind: "decliner", role: "r1", refuseSeconds: 1 },
      CHECK_MARATHON,
    ],
    events,
  };
  // A master crashed for good leaves the others; were every master gone, nothing could be launched
  // again, a fault that never ends. Those beyond the standbys come back by `quietFrom`.
  let standbys = (scenario.cluster.masters ?? 1) - 1;
  for (const e of events) {
    if (e.type !== "master-failover" || e.downSeconds !== undefined) continue;
    if (standbys > 0) standbys--;
    else e.downSeconds = quietFrom - e.atSeconds;
  }
  // The network's loss and duplication stop with the other faults (its latency stays: it keeps
  // each link's order, a delay rather than a fault).
  events.push({ atSeconds: quietFrom, type: "set-network", lossRate: 0, duplicateRate: 0 });
  return scenario;
}

/**
 * The small Marathon workload of every fault scenario (no random draw: adding it left the other
 * frameworks' draws as they were): a plain app and one spread one instance per host.
 */
const CHECK_MARATHON: FrameworkSpec = {
  name: "mara",
  kind: "marathon",
  role: "svc",
  marathon: {
    apps: [
      { id: "/web", cmd: "serve", cpus: 0.25, mem: 128, instances: 3 },
      { id: "/spread", cmd: "serve", cpus: 0.1, mem: 64, instances: 2, constraints: [["hostname", "UNIQUE"]] },
    ],
  },
};

/**
 * How long after the last fault ends (every crashed agent back, every partition healed) a
 * Marathon app may take to have all its instances running again, beyond Marathon's own clocks.
 * What it covers: the agent re-registering (1 s backoff, 5 s request timeout per lost attempt),
 * the status updates of the lost tasks reaching Marathon (the agents retry after 10 s, then 20 s),
 * Marathon's filter on offers it declined as unfit (5 s), a few allocation intervals (at most
 * 1.2 s in these worlds), with room for two lost messages in a row on the lossy network.
 * Marathon's own clocks are added per app, read from its core when the check runs: the launch
 * backoff after task failures (up to `maxLaunchDelaySeconds`, 300 s by default) and, for an
 * instance stuck staging (its launch lost on the way to an agent), the launch timeout after which
 * Marathon replaces it (`taskLaunchTimeoutMs`, 300 s).
 */
export const MARATHON_CONVERGENCE_SLACK_MS = 90_000;

/**
 * Checks that every Marathon app reaches its instance count within a bound after the faults stop
 * (see {@link MARATHON_CONVERGENCE_SLACK_MS}). Feed it every event-log line ({@link observe}) and
 * ask it after every engine event ({@link problems}). A quiet period starts when the last
 * transient fault ends (a crashed agent back, a partition healed; an agent removed or crashed for
 * good ends its fault at once: what is left is lost capacity), or when a Marathon framework
 * starts or acts. Marathon may learn of a loss after the fault ended (the master notices a silent
 * agent late, a status update is retried): the bound then also counts from the latest task end
 * Marathon was told of, so each loss gets the same slack from the moment it is known.
 */
export class MarathonConvergenceCheck {
  private readonly down = new Set<string>();
  /** Per agent, the partitions in force that cut it (overlapping partitions may cut one agent twice). */
  private readonly cut = new Map<string, number>();
  /** Virtual ms since the start when the current quiet period began. */
  private quietSinceMs = 0;
  /** Per framework, when it was last told of a task that ended (virtual ms since the start). */
  private readonly lastEndMs = new Map<string, number>();
  /** Since when some app has been short in the current quiet period. */
  private shortSinceMs: number | null = null;
  /** The latest time the apps went from short to complete while no fault lasted (virtual ms since the start). */
  lastRecovery: { shortFromMs: number; completeAtMs: number } | null = null;
  /**
   * Virtual ms during which the check judged the apps: no fault lasted, a Marathon framework led,
   * and the bound had passed for each, so an app short then (and not backed off or staging) would
   * have been reported. Zero means the check could not have caught anything.
   */
  judgedMs = 0;
  /** When {@link problems} last ran, and whether it judged then. */
  private lastAsked: { atMs: number; judging: boolean } | null = null;

  observe(e: SimLogEvent): void {
    const faulty = this.faulty();
    switch (e.type) {
      case "status":
        if (TERMINAL_TASK_STATES.has(e.state as TaskState)) this.lastEndMs.set(String(e.fw), e.t);
        return;
      case "agent-failed":
        if (e.downMs !== null) this.down.add(String(e.agent));
        else this.quietSinceMs = Math.max(this.quietSinceMs, e.t);
        break;
      case "agent-restarted":
        this.down.delete(String(e.agent));
        break;
      case "agent-removed":
        this.down.delete(String(e.agent));
        this.quietSinceMs = Math.max(this.quietSinceMs, e.t);
        break;
      case "partition":
        for (const a of (e.agents as string[] | undefined) ?? []) this.cut.set(a, (this.cut.get(a) ?? 0) + 1);
        break;
      case "partition-healed":
        for (const a of (e.agents as string[] | undefined) ?? []) {
          const left = (this.cut.get(a) ?? 0) - 1;
          if (left > 0) this.cut.set(a, left);
          else this.cut.delete(a);
        }
        break;
      case "framework-started":
      case "marathon-action":
        this.quietSinceMs = Math.max(this.quietSinceMs, e.t);
        return;
      default:
        return;
    }
    if (faulty && !this.faulty()) this.quietSinceMs = e.t;
  }

  /** Apps past their bound right now (none while a fault lasts). */
  problems(cluster: SimCluster): string[] {
    const nowMs = cluster.elapsedMs();
    if (this.lastAsked?.judging) this.judgedMs += nowMs - this.lastAsked.atMs;
    this.lastAsked = { atMs: nowMs, judging: false };
    if (this.faulty()) {
      this.shortSinceMs = null;
      return [];
    }
    const problems: string[] = [];
    let short = 0;
    // Every leading Marathon past its bound (and at least one).
    let judging = true;
    let leaders = 0;
    for (const fw of cluster.frameworks.values()) {
      if (!(fw instanceof MarathonSimFramework) || !fw.marathon?.isLeader()) continue;
      leaders++;
      const fromMs = Math.max(this.quietSinceMs, this.lastEndMs.get(fw.spec.name) ?? 0);
      if (nowMs <= fromMs + MARATHON_CONVERGENCE_SLACK_MS) judging = false;
      const core = fw.marathon.core;
      for (const record of core.appList()) {
        const running = core.taskCounts(record.app.id).tasksRunning;
        if (running >= record.app.instances) continue;
        short++;
        // Marathon's own clocks, in virtual ms since the start.
        const delay = core.delayOf(record.app.id, cluster.engine.now());
        const backoffEndsMs = delay ? delay.sinceMs + delay.delayMs - cluster.startMs : 0;
        let launchTimeoutMs = 0;
        for (const i of core.instancesOf(record.app.id)) {
          if (i.state === "staging" || i.state === "starting") launchTimeoutMs = Math.max(launchTimeoutMs, i.stagedAtMs + core.config.taskLaunchTimeoutMs - cluster.startMs);
        }
        const deadlineMs = Math.max(fromMs, backoffEndsMs, launchTimeoutMs) + MARATHON_CONVERGENCE_SLACK_MS;
        if (nowMs > deadlineMs) {
          problems.push(
            `marathon app ${fw.spec.name}${record.app.id}: ${running} of ${record.app.instances} instances running ${Math.round((nowMs - fromMs) / 1000)} s after the faults ended ` +
              `(bound: ${MARATHON_CONVERGENCE_SLACK_MS / 1000} s after the later of that, the launch backoff and the launch timeout of staging instances)`,
          );
        }
      }
    }
    this.lastAsked.judging = judging && leaders > 0;
    if (short > 0) this.shortSinceMs ??= nowMs;
    else if (this.shortSinceMs !== null) {
      this.lastRecovery = { shortFromMs: this.shortSinceMs, completeAtMs: nowMs };
      this.shortSinceMs = null;
    }
    return problems;
  }

  private faulty(): boolean {
    return this.down.size > 0 || this.cut.size > 0;
  }
}

/**
 * The invariant problems of the cluster right now (empty when all hold), recomputed from scratch
 * on every call. {@link InvariantChecker} finds the same ones for much less after every event;
 * this is what it is held to.
 */
export function invariantProblems(cluster: SimCluster): string[] {
  const problems = [...agentProblems(cluster), ...deliveryProblems(cluster)];
  const core = cluster.leader()?.core;
  if (!core) return problems;
  problems.push(...core.allocator.checkInvariants(), ...offerProblems(core), ...accountingProblems(core));
  return problems;
}

/**
 * The problems {@link invariantProblems} finds, found after every event at a fraction of the cost
 * (the full recomputation was nearly all the time of a `sim check`; with this a check costs a few
 * times a plain run). Two savings, neither of which leaves anything out:
 *
 * - The master's checks ({@link offerProblems}, {@link accountingProblems} and the allocator's
 *   own) read nothing but the leading core and its allocator, so their answer stands until one of
 *   them takes a call that may change it: they run again only when the leader is another core or
 *   {@link MasterCore.changeCount} or {@link HierarchicalAllocator.changeCount} moved. About a
 *   third of the events reach the leading master.
 * - The agents' side ({@link agentProblems}) runs on every event, on the agents' live task records
 *   ({@link Agent.heldResources}) instead of the views of `state()`, which rendered every task's
 *   resources as text and JSON each time.
 *
 * The delivery check is incremental already. Problems come in the order, and with the words, of
 * {@link invariantProblems}. One checker per run (it remembers the last answer of the master's
 * checks).
 */
export class InvariantChecker {
  private master: { core: Core; coreChanges: number; allocatorChanges: number; problems: readonly string[] } | undefined;

  /** The invariant problems of the cluster right now (empty when all hold). */
  problems(cluster: SimCluster): readonly string[] {
    const agents = heldProblems(cluster);
    const delivery = deliveryProblems(cluster);
    const core = cluster.leader()?.core;
    const master = core ? this.masterProblems(core) : NONE;
    if (agents.length === 0 && delivery.length === 0 && master.length === 0) return NONE;
    return [...agents, ...delivery, ...master];
  }

  private masterProblems(core: Core): readonly string[] {
    const coreChanges = core.changeCount();
    const allocatorChanges = core.allocator.changeCount();
    const last = this.master;
    if (last && last.core === core && last.coreChanges === coreChanges && last.allocatorChanges === allocatorChanges) return last.problems;
    // One view for both checks that read it. Should building it throw, each check builds its own
    // as the full checks do, to report (or throw) the same.
    let state: MasterState | undefined;
    try {
      state = core.state();
    } catch {
      state = undefined;
    }
    const problems = [...core.allocator.checkInvariants(), ...offerProblems(core, state), ...accountingProblems(core, state)];
    this.master = { core, coreChanges, allocatorChanges, problems };
    return problems;
  }
}

const NONE: readonly string[] = Object.freeze([]);

/**
 * "No resource in two outstanding offers" on a master's core (see the module comment).
 * `state` is `core.state()` when the caller has it already. @default core.state(), when needed
 */
export function offerProblems(core: Core, state?: MasterState): string[] {
  const problems: string[] = [];
  const sizes = core.sizes();
  if (sizes.offers === 0) {
    const kept = Object.entries(core.resourceTotals().offered);
    if (kept.length > 0) problems.push(`no offer is outstanding but the master's running offered total is ${JSON.stringify(Object.fromEntries(kept))}`);
    return problems;
  }
  try {
    state ??= core.state();
  } catch (err) {
    // state() subtracts offered from allocated per agent: it throws when they overlap wrongly.
    return [...problems, `offered resources are not contained in the allocation: ${err instanceof Error ? err.message : String(err)}`];
  }
  const seen = new Set<string>();
  for (const fw of state.frameworks) {
    for (const offer of fw.offers as Array<{ id: string }>) {
      if (seen.has(offer.id)) problems.push(`offer ${offer.id} is outstanding for two frameworks`);
      seen.add(offer.id);
    }
  }
  const offeredSum: Record<string, number> = {};
  for (const agent of state.agents) {
    const resources = agent.resources as Record<string, number>;
    const offered = agent.offered as Record<string, number>;
    const used = agent.used as Record<string, number>;
    for (const [name, value] of Object.entries(offered)) {
      offeredSum[name] = (offeredSum[name] ?? 0) + value;
      if (value > (resources[name] ?? 0) + 1e-6) problems.push(`agent ${String(agent.id)}: ${value} ${name} offered but it has ${resources[name] ?? 0}`);
      if ((used[name] ?? 0) < -1e-6) problems.push(`agent ${String(agent.id)}: ${name} is in two outstanding offers (offered exceeds allocated)`);
    }
  }
  // The master keeps the offered totals as offers come and go: they must be the sum of the offers.
  const kept = core.resourceTotals().offered;
  for (const name of new Set([...Object.keys(kept), ...Object.keys(offeredSum)])) {
    if (Math.abs((kept[name] ?? 0) - (offeredSum[name] ?? 0)) > 1e-6) problems.push(`offered ${name}: the master's running total is ${kept[name] ?? 0}, its offers sum to ${offeredSum[name] ?? 0}`);
  }
  return problems;
}

type Core = SimCluster["master"]["core"];
type MasterState = ReturnType<Core["state"]>;
const TERMINAL: ReadonlySet<string> = TERMINAL_TASK_STATES;
const EPSILON = 1e-6;

/**
 * "A task's resources are counted exactly once", on the leading master. For every registered
 * agent: what the allocator has allocated on it, minus its outstanding offers, equals the sum of
 * the resources of the master's active tasks on it (no task counted twice or left out, nothing
 * allocated that no task or offer holds), and the agent's task list names exactly those tasks.
 * An active task in a terminal state is one whose end the agent reported as its stream's latest
 * state before its framework acknowledged the updates ahead of it: its resources went back then,
 * so it is on the agent's list but holds nothing.
 * Every task the master knows is active on one agent by construction (one `agentId`); the
 * agents' side of "exactly once" is in {@link agentProblems}. Nothing is legitimately in flight
 * here: the master updates tasks, offers and the allocator in one step. `given` is `core.state()`
 * when the caller has it already. @default core.state()
 */
export function accountingProblems(core: Core, given?: MasterState): string[] {
  const problems: string[] = [];
  const state = given ?? core.state();
  const onAgent = new Map<string, { count: number; sum: Record<string, number> }>();
  for (const fw of state.frameworks) {
    for (const task of fw.tasks as Array<{ id: string; agentId: string; state: string; resources: Record<string, number> }>) {
      const entry = onAgent.get(task.agentId) ?? { count: 0, sum: {} };
      entry.count++;
      if (!TERMINAL.has(task.state)) for (const [name, value] of Object.entries(task.resources)) entry.sum[name] = (entry.sum[name] ?? 0) + value;
      onAgent.set(task.agentId, entry);
    }
  }
  for (const agent of state.agents) {
    const id = String(agent.id);
    const tasks = onAgent.get(id) ?? { count: 0, sum: {} };
    const used = agent.used as Record<string, number>;
    for (const name of new Set([...Object.keys(used), ...Object.keys(tasks.sum)])) {
      const allocated = used[name] ?? 0;
      const counted = tasks.sum[name] ?? 0;
      if (Math.abs(allocated - counted) > EPSILON) problems.push(`agent ${id}: ${allocated} ${name} allocated outside offers, but its active tasks hold ${counted}`);
    }
    if (agent.tasks !== tasks.count) problems.push(`agent ${id}: lists ${String(agent.tasks)} active tasks, the frameworks ${tasks.count}`);
  }
  return problems;
}

/** cpus and mem of Mesos resource text, parsed once per distinct text. */
const scalarsOfText = new Map<string, { cpus: number; mem: number }>();
function scalarsOf(text: string): { cpus: number; mem: number } {
  let scalars = scalarsOfText.get(text);
  if (!scalars) {
    const r = Resources.parse(text);
    scalars = { cpus: r.scalar("cpus"), mem: r.scalar("mem") };
    if (scalarsOfText.size < 10_000) scalarsOfText.set(text, scalars);
  }
  return scalars;
}

/**
 * The agents' side, on every running agent: no agent runs more than it has (the cpus and mem of
 * its tasks not yet ended stay within its total), and no task is running on two agents at once
 * (task ids are never reused by the simulated frameworks: a retry is a new id). Ended tasks that
 * wait for their last update to be acknowledged hold nothing and are left out.
 */
export function agentProblems(cluster: SimCluster): string[] {
  const problems: string[] = [];
  const runningOn = new Map<string, string>();
  for (const slot of cluster.agents) {
    if (!slot.up || !slot.agent) continue;
    const view = slot.agent.state();
    if (!view.resources) continue;
    const total = scalarsOf(view.resources.text);
    let cpus = 0;
    let mem = 0;
    for (const task of view.tasks) {
      if (task.completed || TERMINAL.has(task.state)) continue;
      const r = scalarsOf(task.resources.text);
      cpus += r.cpus;
      mem += r.mem;
      const key = `${task.frameworkId}/${task.taskId}`;
      const other = runningOn.get(key);
      if (other !== undefined) problems.push(`task ${key} runs on two agents: ${other} and ${slot.node}`);
      runningOn.set(key, slot.node);
    }
    if (cpus > total.cpus + EPSILON || mem > total.mem + EPSILON) problems.push(`agent ${slot.node} is over-allocated: its tasks hold cpus ${cpus}, mem ${mem} of cpus ${total.cpus}, mem ${total.mem}`);
  }
  return problems;
}

/**
 * {@link agentProblems}, read from the agents' live task records ({@link Agent.heldResources})
 * rather than from the views of `state()`: the same facts (a task's latest state and resources,
 * the agent's total), the same problems in the same order and words, without rendering every
 * task's resources on every event.
 */
function heldProblems(cluster: SimCluster): readonly string[] {
  let problems: string[] | undefined;
  // Framework id -> task id -> agent: no key strings built on every event.
  const runningOn = new Map<string, Map<string, string>>();
  for (const slot of cluster.agents) {
    if (!slot.up || !slot.agent) continue;
    const held = slot.agent.heldResources();
    if (!held.total) continue;
    let cpus = 0;
    let mem = 0;
    for (const task of held.tasks) {
      if (TERMINAL.has(task.state)) continue;
      cpus += task.resources.scalar("cpus");
      mem += task.resources.scalar("mem");
      let ofFramework = runningOn.get(task.frameworkId);
      if (!ofFramework) runningOn.set(task.frameworkId, (ofFramework = new Map()));
      const other = ofFramework.get(task.taskId);
      if (other !== undefined) (problems ??= []).push(`task ${task.frameworkId}/${task.taskId} runs on two agents: ${other} and ${slot.node}`);
      ofFramework.set(task.taskId, slot.node);
    }
    const totalCpus = held.total.scalar("cpus");
    const totalMem = held.total.scalar("mem");
    if (cpus > totalCpus + EPSILON || mem > totalMem + EPSILON) {
      (problems ??= []).push(`agent ${slot.node} is over-allocated: its tasks hold cpus ${cpus}, mem ${mem} of cpus ${totalCpus}, mem ${totalMem}`);
    }
  }
  return problems ?? NONE;
}

/**
 * "Every acknowledged status update reached its framework": each update an agent's status-update
 * manager retired on an acknowledgement since the last check was given to that framework's update
 * callback before. Frameworks the scenario tore down are excused (the master acknowledges for a
 * framework that is gone). In flight is only the other order — given, not yet acknowledged — which
 * the invariant allows.
 */
export function deliveryProblems(cluster: SimCluster): string[] {
  if (!cluster.audit) return [];
  return cluster.audit.problems((frameworkId) => {
    for (const fw of cluster.frameworks.values()) if (fw.driver?.frameworkId() === frameworkId) return fw.isStopped();
    return false;
  });
}

/** The command that reruns one seed of a check with the same options. */
export function reproduceCommand(seed: number, options: CheckOptions = {}): string {
  return `corral sim check --seeds ${seed} --agents ${options.agents ?? 6} --seconds ${options.seconds ?? 600}`;
}

/** Runs one seed with invariants checked after every event. */
export async function runCheck(seed: number, options: CheckOptions = {}): Promise<CheckOutcome> {
  const scenario = faultScenario(seed, options);
  let atMs = 0;
  const convergence = new MarathonConvergenceCheck();
  const invariants = new InvariantChecker();
  try {
    const result = await runScenario(scenario, {
      auditStatusUpdates: true,
      eventLog: (e) => convergence.observe(e),
      afterEvent: (cluster) => {
        const problems = [...invariants.problems(cluster), ...convergence.problems(cluster)];
        if (problems.length > 0) {
          atMs = cluster.elapsedMs();
          throw new InvariantViolation(`seed ${seed}: ${problems.join("; ")} (reproduce: ${reproduceCommand(seed, options)})`);
        }
      },
    });
    return {
      ok: true,
      seed,
      events: result.engine.events,
      launched: result.tasks.launched,
      // The network's change at the end of the faults is not one.
      faults: (scenario.events ?? []).filter((e) => e.type !== "set-network").length + result.agents.failures,
      appsJudgedSeconds: Math.round(convergence.judgedMs / 1000),
    };
  } catch (err) {
    const reproduce = reproduceCommand(seed, options);
    if (err instanceof InvariantViolation) return { ok: false, seed, atMs: Math.round(atMs), problem: err.message, reproduce };
    return { ok: false, seed, atMs: Math.round(atMs), problem: `seed ${seed}: the run threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)} (reproduce: ${reproduce})`, reproduce };
  }
}

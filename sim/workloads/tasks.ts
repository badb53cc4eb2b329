/**
 * The synthetic frameworks of the simulator (`tasks`, `greedy`, `decliner`) on the real SDK driver.
 * They only need a {@link TaskFrameworkHost} — a clock, timers, a bus connection and somewhere to
 * record — so the same code runs on the simulated network and virtual clock (SimCluster is the host)
 * and on a real cluster over NATS with the system clock (the fidelity test's host): a comparison of
 * the two compares the cluster, not two versions of the framework.
 *
 * @module
 */

import type { Clock, Timers } from "../../sdk/clock.ts";
import type { Rng } from "../../sdk/rng.ts";
import { createSchedulerDriver, type OfferView, type SchedulerDriver, type TaskSpec, type TaskStatus } from "../../sdk/scheduler.ts";
import type { Transport } from "../../sdk/transport.ts";
import type { SimStats } from "../cluster.ts";
import type { DurationSpec, FrameworkSpec } from "../scenario.ts";

/** One task of the workload, as the framework queues it. */
export interface PendingTask {
  id: string;
  cpus: number;
  mem: number;
  durationMs: number;
  submittedMs: number;
  attempt: number;
  /** RUNNING was seen (for any attempt): its wait, from the first submission, is recorded once. */
  ran: boolean;
}

/** What a {@link SimFramework} runs on: time, a bus connection, and where to record what it does. */
export interface TaskFrameworkHost {
  readonly clock: Clock;
  readonly timers: Timers;
  /** Cluster name of the bus subjects. @default "corral" */
  readonly clusterName?: string;
  /** The framework's own connection to the bus, named after its node (`fw-<name>`). */
  connect(node: string): Transport;
  /** Counters shared by the host's frameworks (launches, completions, waits). */
  readonly stats: SimStats;
  /** Ms since the run started (launches are counted per whole second of it). */
  elapsedMs(): number;
  /** Writes one event-log line. */
  emit(type: string, fields: Record<string, unknown>): void;
  /** The command and environment a launched task runs (the simulator: an instant container told its duration; a real agent: `sleep`). */
  taskCommand(task: PendingTask): Pick<TaskSpec, "command" | "env">;
  /** Sees every status update as the framework's callback is given it, first thing (audits). @default none */
  onUpdateDelivered?(frameworkId: string, status: TaskStatus): void;
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
    private readonly host: TaskFrameworkHost,
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

  /** Tasks waiting for an offer that were first submitted before `ms` (host clock ms; a report reads it). */
  queuedSubmittedBefore(ms: number): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if (this.queue[i]!.submittedMs < ms) n++;
    return n;
  }

  /** Subscribes and starts submitting its workload. */
  start(): void {
    const host = this.host;
    this.driver = createSchedulerDriver({
      transport: host.connect(this.node),
      ...(host.clusterName !== undefined ? { cluster: host.clusterName } : {}),
      framework: { name: this.spec.name, roles: [this.role], hostname: this.node, failoverTimeoutSeconds: 3600 },
      clock: host.clock,
      timers: host.timers,
      rng: this.rng.fork("driver"),
      callbacks: {
        offers: (offers) => this.onOffers(offers),
        rescind: (offerId) => host.emit("rescind", { fw: this.spec.name, offer: offerId }),
        update: (status) => this.onUpdate(status),
      },
    });
    this.driver.start().catch(() => undefined);
    host.emit("framework-started", { fw: this.spec.name, role: this.role });
    this.scheduleArrivals();
  }

  /** Tears the framework down (its tasks are killed). */
  async stop(emit = true): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (emit) this.host.emit("framework-stopped", { fw: this.spec.name });
    await this.driver?.stop({ teardown: true }).catch(() => undefined);
  }

  /** Whether {@link stop} was called (its tasks are killed, its updates no longer awaited). */
  isStopped(): boolean {
    return this.stopped;
  }

  private scheduleArrivals(): void {
    const t = this.spec.tasks;
    if (!t || t.count === 0) return;
    const timers = this.host.timers;
    if ("at" in t.arrival) {
      timers.set(t.arrival.at * 1000, () => {
        for (let i = 0; i < t.count; i++) this.submit();
      });
      return;
    }
    const meanGapMs = 1000 / t.arrival.poisson.ratePerSecond;
    // One arrival timer at a time: the heap never holds the whole workload.
    const next = (): void => {
      if (this.stopped || this.submittedCount >= t.count) return;
      this.submit();
      timers.set(exponential(this.rng, meanGapMs), next);
    };
    timers.set(exponential(this.rng, meanGapMs), next);
  }

  private submit(): void {
    const t = this.spec.tasks!;
    const n = this.submittedCount++;
    this.host.stats.submitted++;
    this.enqueue({
      id: `${this.spec.name}-${n}`,
      cpus: t.cpus,
      mem: t.mem,
      durationMs: sampleDurationMs(t.durationSeconds, this.rng),
      submittedMs: this.host.clock.now(),
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
    const now = this.host.clock.now();
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
    const host = this.host;
    const driver = this.driver!;
    const filters = { refuseSeconds: this.refuseSeconds };
    const calls: Promise<unknown>[] = [];
    for (const offer of offers) {
      let cpus = offer.resources.scalar("cpus");
      let mem = offer.resources.scalar("mem");
      host.emit("offer", { fw: this.spec.name, offer: offer.id, agent: offer.agentId, cpus, mem });
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
        host.emit("decline", { fw: this.spec.name, offer: offer.id });
        calls.push(driver.decline([offer.id], filters).catch(() => undefined));
        continue;
      }
      const specs: TaskSpec[] = chosen.map((task) => ({
        taskId: task.attempt === 0 ? task.id : `${task.id}.r${task.attempt}`,
        resources: `cpus:${round3(task.cpus)};mem:${round3(task.mem)}`,
        ...host.taskCommand(task),
      }));
      host.emit("accept", { fw: this.spec.name, offer: offer.id, agent: offer.agentId, tasks: specs.map((s) => s.taskId) });
      for (let i = 0; i < chosen.length; i++) this.inFlight.set(specs[i]!.taskId, chosen[i]!);
      calls.push(
        driver.accept([offer.id], specs, filters).then(
          () => {
            for (const spec of specs) {
              host.stats.launched++;
              const second = Math.floor(host.elapsedMs() / 1000);
              host.stats.launchesPerSecond[second] = (host.stats.launchesPerSecond[second] ?? 0) + 1;
              host.emit("launch", { fw: this.spec.name, task: spec.taskId, agent: offer.agentId, host: offer.hostname });
            }
          },
          (err: unknown) => {
            // The offer was gone (rescinded, agent lost): queue the tasks again, in front.
            host.emit("accept-failed", { fw: this.spec.name, offer: offer.id, error: (err as { code?: string }).code ?? String(err) });
            for (const spec of specs) this.inFlight.delete(spec.taskId);
            this.queue.splice(this.head, 0, ...chosen);
          },
        ),
      );
    }
    await Promise.all(calls);
  }

  private onUpdate(status: TaskStatus): void {
    const host = this.host;
    host.onUpdateDelivered?.(this.driver?.frameworkId() ?? "", status);
    host.emit("status", { fw: this.spec.name, task: status.taskId, state: status.state, agent: status.agentId });
    const task = this.inFlight.get(status.taskId);
    if (!task) return;
    switch (status.state) {
      case "TASK_STAGING":
      case "TASK_STARTING":
      case "TASK_KILLING":
        return;
      case "TASK_RUNNING":
        if (!task.ran) host.stats.waitsMs.push(host.clock.now() - task.submittedMs);
        task.ran = true;
        return;
      case "TASK_FINISHED":
        this.inFlight.delete(status.taskId);
        host.stats.completed++;
        return;
      default: {
        this.inFlight.delete(status.taskId);
        host.stats.failed++;
        if (task.attempt < this.maxRetries && !this.stopped) {
          host.stats.retried++;
          this.enqueue({ ...task, attempt: task.attempt + 1 });
        } else host.stats.abandoned++;
      }
    }
  }
}

/** A draw from the exponential distribution of mean `mean`. */
export function exponential(rng: Rng, mean: number): number {
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

/**
 * The masters of a simulated cluster, built by the real `createMaster` like everything else.
 *
 * - One master (the default): it leads alone from start to stop, as `corral master` does.
 * - Several (`cluster.masters` > 1), or a scenario with a `master-failover` event: each master is
 *   its own network node (`master-0`, `master-1`, ...) and campaigns for the leader lease
 *   (`sdk/leader-lease.ts`, a {@link MemoryLeaseStore} on virtual time), all sharing one
 *   {@link MemoryRegistryStore} — the production HA path (`corral master --ha`) with the JetStream
 *   bucket replaced by memory. A failover crashes the leader (node down, no drain, lease left to
 *   lapse); a standby wins the lease once it lapses, recovers the registry, asks the agents to
 *   re-register and tells the frameworks its epoch; the crashed master may come back as a standby.
 *
 * The scenario's role weights and quotas are in the registry from the start, as an operator's
 * `PUT /weights` and `PUT /quota` would have left them, so every master (the first one, and each
 * new leader) recovers them from there as in production.
 *
 * @module
 */

import type { Logger as PinoLogger } from "pino";
import { createMaster, type Master } from "../master/shell.ts";
import type { MasterCore, RegistryRecord } from "../master/core.ts";
import { MemoryRegistryStore } from "../master/store.ts";
import { MemoryLeaseStore } from "../sdk/leader-lease.ts";
import type { Rng } from "../sdk/rng.ts";
import type { SimEngine } from "./engine.ts";
import type { SimNetwork, SimTransport } from "./network.ts";
import { electsMasters, type Scenario } from "./scenario.ts";

/** Node name of the master when it is the only one (several are `master-<i>`). */
export const MASTER_NODE = "master";
/** How often, in virtual ms, a failover's new leader is looked at for its first offer (the recovery time's resolution). */
export const FAILOVER_POLL_MS = 10;
/** A new leader not offering within this long after its election gets recovery null. */
const FAILOVER_WATCH_LIMIT_MS = 3_600_000;

/** One master failover and how the cluster came back from it. */
export interface MasterFailoverRecord {
  /** When the leader crashed, virtual seconds since the start. */
  atSeconds: number;
  /** Node of the master that crashed. */
  crashed: string;
  /** Node of the master that took over; null when none did by the end. */
  leader: string | null;
  /** The new leader's epoch (its lease term); null when none took over. */
  epoch: number | null;
  /** Crash → the new leader serving the bus (the lease lapsed, the registry recovered); null when none did. */
  electionSeconds: number | null;
  /**
   * Crash → the new leader's first offer (agents re-registered, offers no longer held), to
   * {@link FAILOVER_POLL_MS}; null when it made none by the end.
   */
  recoverySeconds: number | null;
}

interface MasterSlot {
  node: string;
  index: number;
  incarnation: number;
  master: Master;
  transport: SimTransport;
  up: boolean;
}

/** What {@link SimMasters} needs from its cluster. */
export interface SimMastersHost {
  readonly scenario: Scenario;
  readonly engine: SimEngine;
  readonly network: SimNetwork;
  readonly log: PinoLogger;
  /** The cluster's fork for the masters (`rng.fork("master")`). */
  readonly rng: Rng;
  elapsedMs(): number;
  emit(type: string, fields: Record<string, unknown>): void;
}

/** See the module comment. */
export class SimMasters {
  /** Whether the masters elect a leader (several of them, or a failover in the scenario). */
  readonly electing: boolean;
  readonly failovers: MasterFailoverRecord[] = [];
  private readonly slots: MasterSlot[] = [];
  private readonly registry = new MemoryRegistryStore();
  private readonly lease = new MemoryLeaseStore();
  /** The master that leads, or led last. */
  private current: MasterSlot;
  /** Every term's core, in order (offer counters start at 0 in each). */
  private readonly terms: MasterCore[] = [];
  /** The failover whose new leader is awaited. */
  private open: { record: MasterFailoverRecord; crashedAtMs: number } | undefined;

  constructor(private readonly host: SimMastersHost) {
    const scenario = host.scenario;
    this.electing = electsMasters(scenario);
    // Synchronous under the promise: the store holds them before any master loads it.
    for (const record of operatorSettingRecords(scenario)) void this.registry.put(record);
    const count = this.electing ? Math.max(1, scenario.cluster.masters ?? 1) : 1;
    for (let index = 0; index < count; index++) {
      const node = this.electing ? `master-${index}` : MASTER_NODE;
      const slot = { node, index, incarnation: 0 } as MasterSlot;
      this.build(slot);
      this.slots.push(slot);
    }
    this.current = this.slots[0]!;
  }

  /** The master that leads now, or led last (a crashed one until a standby takes over). */
  get master(): Master {
    return this.current.master;
  }

  /** The master leading now, if any (none between a crash and the takeover). */
  leader(): Master | undefined {
    const slot = this.current;
    return slot.up && slot.master.isLeader() ? slot.master : undefined;
  }

  /** Offers made, declined and rescinded over every term (each new leader's core counts from 0). */
  offerCounters(): { made: number; declined: number; rescinded: number } {
    const cores = this.electing ? this.terms : [this.master.core];
    const sum = { made: 0, declined: 0, rescinded: 0 };
    for (const core of cores) {
      sum.made += core.counters.offersMade;
      sum.declined += core.counters.offersDeclined;
      sum.rescinded += core.counters.offersRescinded;
    }
    return sum;
  }

  /** Network nodes of every master. */
  nodes(): string[] {
    return this.slots.map((s) => s.node);
  }

  /** Starts every master; the first campaigns first, so it leads. */
  start(): Promise<void> {
    return Promise.all(this.slots.map((s) => s.master.start())).then(() => undefined);
  }

  /** Stops every master that is up. */
  async stop(): Promise<void> {
    for (const slot of this.slots) if (slot.up) await slot.master.stop();
  }

  /**
   * Crashes the leader (a `master-failover` event): its node goes silent, it stops as a crash
   * would (no registry drain, the lease left to lapse), and comes back as a new incarnation after
   * `downMs`, if given.
   */
  crashLeader(downMs: number | undefined): void {
    const slot = this.slots.find((s) => s.up && s.master.isLeader());
    if (!slot) {
      // Between a crash and the takeover there is no leader to crash.
      this.host.emit("master-failover-skipped", { reason: "no master leads" });
      return;
    }
    slot.up = false;
    this.host.network.setDown(slot.node, true);
    const record: MasterFailoverRecord = { atSeconds: r4(this.host.elapsedMs() / 1000), crashed: slot.node, leader: null, epoch: null, electionSeconds: null, recoverySeconds: null };
    this.failovers.push(record);
    this.open = { record, crashedAtMs: this.host.engine.now() };
    this.host.emit("master-failed", { master: slot.node, epoch: slot.master.epoch(), downMs: downMs ?? null });
    const { master, transport } = slot;
    void (async () => {
      await master.stop({ handover: false }).catch(() => undefined);
      await transport.close();
    })();
    if (downMs !== undefined) {
      this.host.engine.after(downMs, () => {
        this.host.emit("master-restarted", { master: slot.node });
        this.build(slot);
        slot.master.start().catch((err: unknown) => this.host.log.error({ err, node: slot.node }, "master start failed"));
      });
    }
  }

  /** A new incarnation of the slot's master (up, on a fresh endpoint of its node). */
  private build(slot: MasterSlot): void {
    const host = this.host;
    const c = host.scenario.cluster;
    slot.incarnation++;
    slot.up = true;
    host.network.setDown(slot.node, false);
    slot.transport = host.network.endpoint(slot.node);
    const config = {
      ...(c.allocationIntervalMs !== undefined ? { allocationIntervalMs: c.allocationIntervalMs } : {}),
      ...(c.offerTimeoutMs !== undefined ? { offerTimeoutMs: c.offerTimeoutMs } : {}),
      ...(c.agentPingIntervalMs !== undefined ? { agentPingIntervalMs: c.agentPingIntervalMs } : {}),
      ...(c.maxMissedPings !== undefined ? { maxMissedPings: c.maxMissedPings } : {}),
    };
    if (!this.electing) {
      // The single master of every scenario without failover: exactly as it always was built.
      slot.master = createMaster({ transport: slot.transport, masterId: "m-sim", http: false, store: this.registry, clock: host.engine.clock, timers: host.engine.timers, rng: host.rng, log: host.log, config });
      return;
    }
    slot.master = createMaster({
      transport: slot.transport,
      // Each incarnation its own id: a new core numbers agents, frameworks and offers from 1.
      masterId: `m-sim-${slot.index}-${slot.incarnation}`,
      http: false,
      store: this.registry,
      election: { store: this.lease },
      clock: host.engine.clock,
      timers: host.engine.timers,
      rng: host.rng.fork(`${slot.node}:${slot.incarnation}`),
      log: host.log,
      config,
      onServing: (term, core) => this.serving(slot, term, core),
    });
  }

  /** Follows a failover's recovery. */
  private serving(slot: MasterSlot, term: number, core: MasterCore): void {
    this.current = slot;
    this.terms.push(core);
    const open = this.open;
    const afterMs = open ? this.host.engine.now() - open.crashedAtMs : null;
    this.host.emit("master-elected", { master: slot.node, epoch: term, afterFailureMs: afterMs === null ? null : r4(afterMs) });
    if (!open) return;
    this.open = undefined;
    const { record, crashedAtMs } = open;
    record.leader = slot.node;
    record.epoch = term;
    record.electionSeconds = r4(afterMs! / 1000);
    const electedAtMs = this.host.engine.now();
    // Read-only polls (no settle turn), so watching never changes the run.
    const watch = (): void => {
      if (!slot.up || slot.master.core !== core) return;
      if (core.counters.offersMade > 0) {
        record.recoverySeconds = r4((this.host.engine.now() - crashedAtMs) / 1000);
        return;
      }
      if (this.host.engine.now() - electedAtMs < FAILOVER_WATCH_LIMIT_MS) this.host.engine.after(FAILOVER_POLL_MS, watch, { settle: false });
    };
    watch();
  }
}

/** The scenario's role weights and quotas as the registry records the master keeps them in. */
function operatorSettingRecords(scenario: Scenario): RegistryRecord[] {
  const c = scenario.cluster;
  return [
    ...Object.entries(c.roleWeights ?? {}).map(([role, weight]): RegistryRecord => ({ kind: "weight", id: role, weight })),
    ...Object.entries(c.quota ?? {}).map(([role, q]): RegistryRecord => ({ kind: "quota", id: role, guarantees: q.guarantees ?? {}, limits: q.limits ?? {} })),
  ];
}

function r4(n: number): number {
  return Math.round(n * 10_000) / 10_000;
}

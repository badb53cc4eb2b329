/**
 * Leader election among several Marathons of one cluster (DESIGN.md §4), on the shared lease of
 * `sdk/leader-lease.ts`: one key in the store holds the leader, written with compare-and-set. The
 * leader rewrites it every `leaseMs / 3`; a standby that sees the key unchanged for `leaseMs` (by
 * its own clock: no clocks are compared) takes it over with a compare-and-set on the revision it
 * saw, so two standbys cannot both win. A leader whose renewal fails (someone else took over), or
 * that could not renew for `leaseMs - leaseMs / 6`, is deposed and must stop acting.
 *
 * @module
 */

import type { Clock, Timers } from "../../sdk/clock.ts";
import { LeaseElection, type LeaderInfo, type LeaseStore } from "../../sdk/leader-lease.ts";
import type { Logger } from "../../sdk/transport.ts";

export type { LeaderInfo, LeaseStore } from "../../sdk/leader-lease.ts";

export interface LeaderElectionOptions {
  store: LeaseStore;
  self: LeaderInfo;
  clock: Clock;
  timers: Timers;
  log: Logger;
  /** A leader silent for this long is replaced. @default 5000 */
  leaseMs?: number;
  onElected(): void;
  onDeposed(): void;
}

export class LeaderElection extends LeaseElection {
  constructor(o: LeaderElectionOptions) {
    const leaseMs = o.leaseMs ?? 5000;
    const renewIntervalMs = Math.max(10, Math.floor(leaseMs / 3));
    super({
      store: o.store,
      self: o.self,
      clock: o.clock,
      timers: o.timers,
      log: o.log,
      label: "marathon",
      timings: { leaseMs, renewIntervalMs, pollIntervalMs: renewIntervalMs, stepDownMarginMs: Math.max(1, Math.floor(leaseMs / 6)) },
      onElected: () => o.onElected(),
      onDeposed: () => o.onDeposed(),
    });
  }
}

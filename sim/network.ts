/**
 * A simulated bus over the {@link SimEngine}: every component gets its own endpoint (a named
 * node) implementing the SDK's {@link Transport} exactly, so the real shells run on it unchanged.
 *
 * Semantics follow NATS where the shells can tell: subjects with `*`/`>` wildcards, queue groups
 * (one member per group gets each message), request/reply through a private inbox with a timeout
 * on virtual time, `CORRAL_ERR_NO_RESPONDERS` when nobody subscribes to a request's subject, and
 * per-(sender, receiver) FIFO order. On top of that the network injects faults, all drawn from one
 * seeded {@link Rng}: per-message latency, loss and duplication, partitions (groups of nodes that
 * cannot reach each other) and nodes that are down (a crashed process: it neither sends nor hears).
 *
 * Subscribers are resolved when a message is published (as the NATS server does on arrival, with
 * no extra hop), and a delivery to a subscription that ended meanwhile is dropped.
 *
 * @module
 */

import type { TimerHandle } from "../sdk/clock.ts";
import type { Rng } from "../sdk/rng.ts";
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  TransportError,
  deliverSafely,
  silentLogger,
  type IncomingMessage,
  type Logger,
  type MessageHandler,
  type RequestOptions,
  type SubscribeOptions,
  type Subscription,
  type Transport,
} from "../sdk/transport.ts";
import type { SimEngine } from "./engine.ts";

/** A latency distribution in virtual milliseconds. */
export type LatencySpec =
  | { dist: "fixed"; ms: number }
  | { dist: "uniform"; minMs: number; maxMs: number }
  /** `minMs` plus an exponential with mean `meanMs - minMs`. */
  | { dist: "exp"; minMs: number; meanMs: number };

/** Options of {@link SimNetwork}. */
export interface SimNetworkOptions {
  /** Randomness for latency, loss, duplication and queue-group choice. */
  rng: Rng;
  /** One-way latency of every message. @default { dist: "uniform", minMs: 0.2, maxMs: 1 } */
  latency?: LatencySpec;
  /** Probability that a message is lost. @default 0 */
  lossRate?: number;
  /** Probability that a message is delivered twice. @default 0 */
  duplicateRate?: number;
  /** Keep per-(sender, receiver) order, as NATS does. @default true */
  fifo?: boolean;
  /** Where handler failures are logged. @default silentLogger */
  log?: Logger;
  /**
   * What a message travels as. `"messages"`: senders hand over their checked message instead of
   * its bytes ({@link Transport.inProcess}); the codec's rules still run on both sides and each
   * receiver decodes its own copy, only protobuf's serialization and parsing are skipped.
   * `"bytes"`: every message is serialized and parsed, as on a real bus.
   * @default "messages"
   */
  wire?: WireForm;
}

/** See {@link SimNetworkOptions.wire}. */
export type WireForm = "messages" | "bytes";

/** The values of {@link WireForm}. */
export const WIRE_FORMS: readonly WireForm[] = ["messages", "bytes"];

/** Counters of a {@link SimNetwork}. */
export interface NetworkStats {
  published: number;
  delivered: number;
  lost: number;
  duplicated: number;
  /** Dropped because sender and receiver were partitioned or one of them was down. */
  cut: number;
}

interface SimSub {
  readonly node: string;
  readonly subject: string;
  readonly tokens: string[] | undefined;
  readonly queue: string | undefined;
  readonly handler: MessageHandler;
  active: boolean;
}

/** Whether `subject` matches `pattern` (NATS wildcards: `*` one token, `>` the rest). */
export function subjectMatches(pattern: string, subject: string): boolean {
  return tokensMatch(pattern.split("."), subject.split("."));
}

function tokensMatch(pattern: string[], subject: string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p === ">") return subject.length > i;
    if (i >= subject.length) return false;
    if (p !== "*" && p !== subject[i]) return false;
  }
  return pattern.length === subject.length;
}

function hasWildcard(subject: string): boolean {
  return subject.split(".").some((t) => t === "*" || t === ">");
}

const NO_SUBS: SimSub[] = [];
/** Bound of {@link SimNetwork}'s subject-to-subscriptions cache (a few per agent are live). */
const MAX_MATCHED_SUBJECTS = 100_000;

/** See the module comment. */
export class SimNetwork {
  readonly stats: NetworkStats = { published: 0, delivered: 0, lost: 0, duplicated: 0, cut: 0 };

  private readonly exact = new Map<string, SimSub[]>();
  private readonly wildcard: SimSub[] = [];
  /**
   * Subscriptions by subject, exact and wildcard together, while there are wildcard ones (the
   * master's `master.agent.*`): matching every message's tokens against them cost a split per
   * message. Kept in step with every subscription change; inbox subjects (one per request) are
   * not kept.
   */
  private readonly matched = new Map<string, SimSub[]>();
  private readonly down = new Set<string>();
  /** Node -> partition group; nodes in different groups cannot talk. Nodes in no group reach everyone not cut off. */
  private groupOf = new Map<string, number>();
  /** Sender -> receiver -> arrival time of the last message scheduled between them (FIFO). */
  private readonly lastArrival = new Map<string, Map<string, number>>();
  private readonly endpoints = new Map<string, SimTransport>();
  private latency: LatencySpec;
  private lossRate: number;
  private duplicateRate: number;
  private readonly fifo: boolean;
  private readonly rng: Rng;
  readonly log: Logger;
  /** Whether endpoints take envelopes that carry their message ({@link SimNetworkOptions.wire}). */
  readonly inProcess: boolean;

  constructor(
    readonly engine: SimEngine,
    options: SimNetworkOptions,
  ) {
    this.rng = options.rng;
    this.latency = options.latency ?? { dist: "uniform", minMs: 0.2, maxMs: 1 };
    this.lossRate = options.lossRate ?? 0;
    this.duplicateRate = options.duplicateRate ?? 0;
    this.fifo = options.fifo ?? true;
    this.log = options.log ?? silentLogger;
    this.inProcess = (options.wire ?? "messages") === "messages";
  }

  /** The transport of node `name`; a closed endpoint's node gets a fresh one. */
  endpoint(name: string): SimTransport {
    const existing = this.endpoints.get(name);
    if (existing && !existing.closed) return existing;
    const transport = new SimTransport(this, name);
    this.endpoints.set(name, transport);
    return transport;
  }

  /** Changes the fault settings mid-run (for fault injection). */
  setFaults(faults: { latency?: LatencySpec; lossRate?: number; duplicateRate?: number }): void {
    if (faults.latency) this.latency = faults.latency;
    if (faults.lossRate !== undefined) this.lossRate = faults.lossRate;
    if (faults.duplicateRate !== undefined) this.duplicateRate = faults.duplicateRate;
  }

  /** A down node neither sends nor receives (a crashed or powered-off machine). */
  setDown(node: string, down: boolean): void {
    if (down) this.down.add(node);
    else this.down.delete(node);
  }

  isDown(node: string): boolean {
    return this.down.has(node);
  }

  /**
   * Splits the network: nodes in different `groups` cannot reach each other; nodes named in no
   * group stay reachable from everyone. Replaces any earlier partition.
   */
  partition(groups: ReadonlyArray<readonly string[]>): void {
    const map = new Map<string, number>();
    groups.forEach((group, i) => group.forEach((node) => map.set(node, i)));
    this.groupOf = map;
  }

  /** Ends the partition. */
  heal(): void {
    this.groupOf = new Map();
  }

  /** Whether a message from `from` can reach `to` right now. */
  reachable(from: string, to: string): boolean {
    if (this.down.size === 0 && this.groupOf.size === 0) return true; // the usual case: no fault
    if (this.down.has(from) || this.down.has(to)) return false;
    const a = this.groupOf.get(from);
    const b = this.groupOf.get(to);
    return a === undefined || b === undefined || a === b;
  }

  // ---- used by SimTransport ------------------------------------------------------------------

  /** @internal */
  addSub(sub: SimSub): void {
    this.forgetMatches(sub);
    if (sub.tokens) this.wildcard.push(sub);
    else {
      const list = this.exact.get(sub.subject);
      if (list) list.push(sub);
      else this.exact.set(sub.subject, [sub]);
    }
  }

  /** @internal */
  removeSub(sub: SimSub): void {
    sub.active = false;
    this.forgetMatches(sub);
    if (sub.tokens) {
      const i = this.wildcard.indexOf(sub);
      if (i >= 0) this.wildcard.splice(i, 1);
      return;
    }
    const list = this.exact.get(sub.subject);
    if (!list) return;
    const i = list.indexOf(sub);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.exact.delete(sub.subject);
  }

  /** A wildcard subscription may change what any subject matches; an exact one only its own. */
  private forgetMatches(sub: SimSub): void {
    if (sub.tokens) this.matched.clear();
    else this.matched.delete(sub.subject);
  }

  /** @internal Whether anybody (reachable or not) subscribes to `subject`. */
  hasSubscribers(subject: string): boolean {
    if (this.exact.has(subject)) return true;
    if (this.wildcard.length === 0) return false;
    const tokens = subject.split(".");
    return this.wildcard.some((s) => tokensMatch(s.tokens!, tokens));
  }

  /** @internal Sends one message from `from`; resolves receivers now, delivers after latency. */
  send(from: string, subject: string, data: Uint8Array, reply: string | undefined): void {
    this.stats.published++;
    const receivers = this.receivers(subject);
    if (receivers.length === 0) return;
    const msg: IncomingMessage = reply === undefined ? { subject, data } : { subject, data, reply };
    for (const sub of receivers) {
      if (!this.reachable(from, sub.node)) {
        this.stats.cut++;
        continue;
      }
      if (this.lossRate > 0 && this.rng.next() < this.lossRate) {
        this.stats.lost++;
        continue;
      }
      this.schedule(from, sub, msg);
      if (this.duplicateRate > 0 && this.rng.next() < this.duplicateRate) {
        this.stats.duplicated++;
        this.schedule(from, sub, msg);
      }
    }
  }

  /** The subscriptions a message on `subject` goes to; the caller must not change the list. */
  private receivers(subject: string): readonly SimSub[] {
    const exact = this.exact.get(subject);
    // Without wildcard subscribers the exact list itself serves (send only reads it).
    let all: SimSub[] = exact ?? NO_SUBS;
    if (this.wildcard.length > 0) {
      const known = this.matched.get(subject);
      if (known !== undefined) all = known;
      else {
        const tokens = subject.split(".");
        for (const s of this.wildcard) {
          if (!tokensMatch(s.tokens!, tokens)) continue;
          if (all === exact || all === NO_SUBS) all = all.slice();
          all.push(s);
        }
        if (!subject.startsWith("_INBOX.")) {
          if (this.matched.size >= MAX_MATCHED_SUBJECTS) this.matched.clear();
          this.matched.set(subject, all);
        }
      }
    }
    if (all.length <= 1 || !all.some((s) => s.queue !== undefined)) return all;
    // Queue groups: one member of each group, chosen at random.
    const groups = new Map<string, SimSub[]>();
    const plain: SimSub[] = [];
    for (const s of all) {
      if (s.queue === undefined) plain.push(s);
      else {
        const g = groups.get(s.queue);
        if (g) g.push(s);
        else groups.set(s.queue, [s]);
      }
    }
    all = plain;
    for (const members of groups.values()) all.push(members[this.rng.int(members.length)]!);
    return all;
  }

  private sampleLatency(): number {
    const l = this.latency;
    switch (l.dist) {
      case "fixed":
        return l.ms;
      case "uniform":
        return l.minMs + this.rng.next() * (l.maxMs - l.minMs);
      case "exp":
        return l.minMs - Math.log(1 - this.rng.next()) * Math.max(0, l.meanMs - l.minMs);
    }
  }

  private schedule(from: string, sub: SimSub, msg: IncomingMessage): void {
    let arrival = this.engine.now() + this.sampleLatency();
    if (this.fifo) {
      let bySender = this.lastArrival.get(from);
      if (bySender === undefined) this.lastArrival.set(from, (bySender = new Map()));
      const last = bySender.get(sub.node);
      if (last !== undefined && last > arrival) arrival = last;
      bySender.set(sub.node, arrival);
    }
    this.engine.at(arrival, () => {
      // A node that went down (or got cut off) while the message was in flight never hears it.
      if (!sub.active || !this.reachable(from, sub.node)) {
        this.stats.cut++;
        return;
      }
      this.stats.delivered++;
      deliverSafely(sub.handler, msg, this.log);
    });
  }
}

/** One node's {@link Transport} on a {@link SimNetwork}. */
export class SimTransport implements Transport {
  closed = false;
  readonly inProcess: boolean;
  private readonly subs = new Set<SimSub>();
  private inboxCounter = 0;

  constructor(
    private readonly network: SimNetwork,
    /** The node name (used by partitions and {@link SimNetwork.setDown}). */
    readonly node: string,
  ) {
    this.inProcess = network.inProcess;
  }

  publish(subject: string, data: Uint8Array): void {
    this.assertOpen(subject);
    this.network.send(this.node, subject, data, undefined);
  }

  subscribe(subject: string, handler: MessageHandler, opts: SubscribeOptions = {}): Subscription {
    this.assertOpen(subject);
    const sub: SimSub = {
      node: this.node,
      subject,
      tokens: hasWildcard(subject) ? subject.split(".") : undefined,
      queue: opts.queue,
      handler,
      active: true,
    };
    this.subs.add(sub);
    this.network.addSub(sub);
    return {
      unsubscribe: () => {
        if (!sub.active) return;
        this.subs.delete(sub);
        this.network.removeSub(sub);
      },
    };
  }

  request(subject: string, data: Uint8Array, opts: RequestOptions = {}): Promise<Uint8Array> {
    try {
      this.assertOpen(subject);
    } catch (err) {
      return Promise.reject(err);
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    if (!this.network.hasSubscribers(subject)) {
      return Promise.reject(new TransportError("CORRAL_ERR_NO_RESPONDERS", `no responders on ${subject}`, { subject }));
    }
    const inbox = `_INBOX.${this.node}.${++this.inboxCounter}`;
    return new Promise<Uint8Array>((resolve, reject) => {
      let timer: TimerHandle | undefined;
      const sub = this.subscribe(inbox, (msg) => {
        sub.unsubscribe();
        timer?.cancel();
        resolve(msg.data);
      });
      timer = this.network.engine.after(timeoutMs, () => {
        sub.unsubscribe();
        reject(new TransportError("CORRAL_ERR_REQUEST_TIMEOUT", `request on ${subject} timed out after ${timeoutMs} ms`, { subject }));
      });
      this.network.send(this.node, subject, data, inbox);
    });
  }

  respond(msg: IncomingMessage, data: Uint8Array): void {
    if (msg.reply === undefined || msg.reply === "") return;
    this.publish(msg.reply, data);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new TransportError("CORRAL_ERR_TRANSPORT_CLOSED", "transport is closed");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sub of this.subs) this.network.removeSub(sub);
    this.subs.clear();
  }

  private assertOpen(subject: string): void {
    if (this.closed) throw new TransportError("CORRAL_ERR_TRANSPORT_CLOSED", `transport of ${this.node} is closed`, { subject });
  }
}

/**
 * The master's shell: the only master code that does I/O. It feeds bus messages, timer ticks and
 * operator requests into the pure core (`master/core.ts`) and carries the core's effects out, in
 * order: replies and events on NATS, registry writes to JetStream KV, logs to pino. HTTP (`/state`,
 * `/metrics`, operator endpoints) is served by fastify.
 *
 * Nothing that arrives may crash the process: bus handlers sit behind `handleSafely` (bad messages
 * and handler failures are counted drops), each effect is carried out on its own (a failure is
 * logged and counted, the rest still go out), and registry writes run in the background, ordered
 * per key and retried, so a store failure never blocks the bus or leaves the core half-applied.
 *
 * @module
 */

import { randomUUID } from "node:crypto";
import { pino, type Logger as PinoLogger } from "pino";
import type { FastifyInstance } from "fastify";
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../sdk/clock.ts";
import type { NatsTransport } from "../sdk/nats-transport.ts";
import { SeededRng, type Rng } from "../sdk/rng.ts";
import type { IncomingMessage, Subscription, Transport } from "../sdk/transport.ts";
import { DropCounter, encodeEnvelope, handleSafely, type EnvelopePayload } from "../sdk/wire/codec.ts";
import { SubjectTokenError, agentCmdSubject, assertToken, frameworkEventsSubject, masterAgentSubject, masterSchedulerSubject } from "../sdk/wire/subjects.ts";
import type { SchedulerEvent } from "../sdk/wire/types.ts";
import { createMasterCore, type MasterConfig, type MasterCore, type MasterEffect, type MasterInput, type RegistryRecord } from "./core.ts";
import { createMasterHttp } from "./http.ts";
import { renderMasterMetrics, type ShellCounters } from "./metrics.ts";
import { JetStreamRegistryStore, RegistryWriter, registryRecordProblem, type RegistryStore } from "./store.ts";

/** Options of {@link createMaster}. */
export interface MasterOptions {
  /** Cluster name: the namespace of every subject and of the default registry bucket. @default "corral" */
  cluster?: string;
  /**
   * The bus. The caller connects it before {@link Master.start} and closes it after
   * {@link Master.stop}. The default registry store needs a {@link NatsTransport} (JetStream).
   */
  transport: Transport | NatsTransport;
  /**
   * This master's id; prefixes agent, framework and offer ids. Give each incarnation its own: the
   * core numbers ids from 1 after a restart, so a pinned id would reuse recovered ids.
   * @default `config.masterId`, else `m-<8 hex digits from rng>`
   */
  masterId?: string;
  /** Core tunables (see {@link MasterConfig}); `masterId` here is overridden by {@link masterId}. @default {} (the core's defaults) */
  config?: Partial<MasterConfig>;
  /** Serve the HTTP API. The simulator turns it off. @default true */
  http?: boolean;
  /** Address the HTTP API listens on. @default "127.0.0.1" */
  httpHost?: string;
  /** Port of the HTTP API; 0 picks a free one (Mesos's and the CLI's is 5050). @default 0 */
  httpPort?: number;
  /** Time source. @default systemClock */
  clock?: Clock;
  /** Timer source for ticks and store retries. @default systemTimers */
  timers?: Timers;
  /** Randomness for the master id and the core. @default a SeededRng with a random seed */
  rng?: Rng;
  /** Logger; the master logs through a child with `component: "master"`. @default pino() (info, stdout) */
  log?: PinoLogger;
  /**
   * Registry storage. A store passed in belongs to the caller (it is not closed by stop, like the
   * transport). @default a JetStream KV bucket `corral_<cluster>_registry`, created if missing and
   * closed by stop
   */
  store?: RegistryStore;
  /** Longest time between two ticks, whatever the core's next deadline. @default 250 */
  tickIntervalMs?: number;
  /**
   * Leader epoch stamped on every message this master sends. A seam for leader election (a later
   * issue), which will own and raise it. @default 1
   */
  epoch?: number;
  /** How long stop() waits for queued registry writes before giving up on them. @default 5000 */
  storeDrainTimeoutMs?: number;
  /**
   * Largest message the bus accepts; bigger offers events are split in several. @default the NATS
   * server's max_payload, else 1048576
   */
  maxMessageBytes?: number;
}

/** A master built by {@link createMaster}. */
export interface Master {
  /** Loads the registry, recovers the core, subscribes to the bus, serves HTTP, starts ticking. */
  start(): Promise<void>;
  /** Unsubscribes, stops ticking, closes HTTP, flushes registry writes (bounded) and closes an owned store. Idempotent. */
  stop(): Promise<void>;
  /** Base URL of the HTTP API, e.g. `http://127.0.0.1:40123`. Throws before start() or without HTTP. */
  httpUrl(): string;
  readonly core: MasterCore;
  readonly masterId: string;
  readonly cluster: string;
  /** The leader epoch this master serves. */
  epoch(): number;
  /** Dropped bus messages by subject kind and reason. */
  readonly drops: DropCounter;
  /** The Prometheus exposition served at `/metrics`. */
  metrics(): string;
}

/** Defaults of {@link MasterOptions}. */
export const MASTER_DEFAULTS = {
  cluster: "corral",
  httpHost: "127.0.0.1",
  httpPort: 0,
  tickIntervalMs: 250,
  epoch: 1,
  storeDrainTimeoutMs: 5_000,
  maxMessageBytes: 1_048_576,
} as const;

/** The default registry bucket of a cluster. */
export function registryBucketName(cluster: string): string {
  return `corral_${cluster}_registry`;
}

/** Creates a master; nothing happens until {@link Master.start}. */
export function createMaster(options: MasterOptions): Master {
  return new MasterShell(options);
}

function hex8(rng: Rng): string {
  return rng.int(0x1_0000_0000).toString(16).padStart(8, "0");
}

function hasConnection(transport: Transport): transport is NatsTransport {
  return "connection" in transport && (transport as NatsTransport).connection !== undefined;
}

type Lifecycle = "new" | "starting" | "running" | "stopping" | "stopped";

class MasterShell implements Master {
  readonly core: MasterCore;
  readonly masterId: string;
  readonly cluster: string;
  readonly drops = new DropCounter();

  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly log: PinoLogger;
  private readonly tickIntervalMs: number;
  private readonly currentEpoch: number;
  private readonly counters: ShellCounters = {
    effectErrors: {},
    tickErrors: 0,
    storeWriteFailures: 0,
    storeWrites: 0,
    storePendingKeys: 0,
    offerEventsSplit: 0,
  };

  private lifecycle: Lifecycle = "new";
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private store: RegistryStore | undefined;
  private ownsStore = false;
  private writer: RegistryWriter | undefined;
  private subscriptions: Subscription[] = [];
  private http: FastifyInstance | undefined;
  private url: string | undefined;
  private timer: TimerHandle | undefined;
  private timerDueMs = Infinity;
  private startedAtMs = 0;
  private maxMessageBytes: number;

  constructor(private readonly options: MasterOptions) {
    this.cluster = options.cluster ?? MASTER_DEFAULTS.cluster;
    assertToken(this.cluster, "cluster");
    this.transport = options.transport;
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    const rng = options.rng ?? new SeededRng(randomUUID());
    this.masterId = options.masterId ?? options.config?.masterId ?? `m-${hex8(rng)}`;
    assertToken(this.masterId, "masterId");
    this.tickIntervalMs = options.tickIntervalMs ?? MASTER_DEFAULTS.tickIntervalMs;
    if (!(this.tickIntervalMs > 0)) throw new RangeError(`tickIntervalMs: must be > 0, got ${this.tickIntervalMs}`);
    this.currentEpoch = options.epoch ?? MASTER_DEFAULTS.epoch;
    if (!Number.isSafeInteger(this.currentEpoch) || this.currentEpoch < 0) throw new RangeError(`epoch: must be a safe integer >= 0, got ${this.currentEpoch}`);
    this.maxMessageBytes = options.maxMessageBytes ?? MASTER_DEFAULTS.maxMessageBytes;
    this.log = (options.log ?? pino()).child({ component: "master", masterId: this.masterId });
    this.core = createMasterCore({ ...options.config, masterId: this.masterId }, rng.fork("master-core"), () => performance.now());
  }

  epoch(): number {
    return this.currentEpoch;
  }

  httpUrl(): string {
    if (this.url === undefined) throw new Error("the master's HTTP API is not listening (not started, stopped, or http: false)");
    return this.url;
  }

  metrics(): string {
    this.counters.storeWriteFailures = this.writer?.failures ?? 0;
    this.counters.storeWrites = this.writer?.applied ?? 0;
    this.counters.storePendingKeys = this.writer?.pendingKeys ?? 0;
    return renderMasterMetrics(this.core, this.drops, this.counters, { epoch: this.currentEpoch });
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  start(): Promise<void> {
    if (this.lifecycle !== "new") return Promise.reject(new Error(`master ${this.masterId} cannot start: it is ${this.lifecycle}`));
    this.lifecycle = "starting";
    this.starting = this.doStart().then(
      () => {
        this.lifecycle = "running";
      },
      async (err) => {
        await this.release();
        this.lifecycle = "stopped";
        throw err;
      },
    );
    return this.starting;
  }

  private async doStart(): Promise<void> {
    this.store = await this.openStore();
    const records = this.usableRecords(await this.store.load());
    const now = this.clock.now();
    // Recovery comes before subscribing, so no call is handled by a master that forgot its registry.
    this.core.recover(records, now);
    this.startedAtMs = now;
    this.writer = new RegistryWriter({ store: this.store, timers: this.timers, log: this.log });
    if (this.options.maxMessageBytes === undefined && hasConnection(this.transport)) {
      this.maxMessageBytes = this.transport.connection.info?.max_payload ?? this.maxMessageBytes;
    }
    this.subscriptions.push(
      this.transport.subscribe(
        masterSchedulerSubject(this.cluster),
        handleSafely<"schedulerCall">(this.log, this.drops, (envelope, msg) =>
          this.dispatch({ type: "scheduler-call", call: envelope.schedulerCall, senderId: envelope.senderId, callId: envelope.callId }, msg),
        ),
      ),
      this.transport.subscribe(
        masterAgentSubject(this.cluster),
        handleSafely<"agentToMaster">(this.log, this.drops, (envelope, msg) =>
          this.dispatch({ type: "agent-message", message: envelope.agentToMaster, senderId: envelope.senderId, callId: envelope.callId }, msg),
        ),
      ),
    );
    await this.transport.flush();
    if (this.options.http ?? true) await this.startHttp();
    this.arm(this.clock.now());
    this.log.info(
      { cluster: this.cluster, epoch: this.currentEpoch, recovered: records.length, http: this.url },
      "master started",
    );
  }

  private async openStore(): Promise<RegistryStore> {
    if (this.options.store) return this.options.store;
    if (!hasConnection(this.transport)) {
      throw new Error("createMaster: without a NATS transport (JetStream) a `store` must be given, e.g. a MemoryRegistryStore");
    }
    const store = await JetStreamRegistryStore.open(this.transport.connection, { bucket: registryBucketName(this.cluster), log: this.log });
    this.ownsStore = true;
    return store;
  }

  /** Drops records the core could not recover (another version, a hand edit) instead of failing half-way. */
  private usableRecords(records: RegistryRecord[]): RegistryRecord[] {
    return records.filter((record) => {
      const problem = registryRecordProblem(record);
      if (problem) this.log.warn({ problem, kind: (record as { kind?: unknown }).kind, id: (record as { id?: unknown }).id }, "skipping unusable registry record");
      return problem === undefined;
    });
  }

  private async startHttp(): Promise<void> {
    const app = createMasterHttp({
      core: this.core,
      log: this.log,
      info: () => ({ masterId: this.masterId, cluster: this.cluster, epoch: this.currentEpoch, leader: true, startedAtMs: this.startedAtMs }),
      metrics: () => this.metrics(),
      afterChange: () => this.tick(),
    });
    this.http = app;
    await app.listen({ host: this.options.httpHost ?? MASTER_DEFAULTS.httpHost, port: this.options.httpPort ?? MASTER_DEFAULTS.httpPort });
    const address = app.server.address();
    if (address === null || typeof address === "string") throw new Error(`unexpected HTTP address ${String(address)}`);
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    this.url = `http://${host}:${address.port}`;
  }

  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      if (this.starting) await this.starting.catch(() => undefined);
      if (this.lifecycle === "stopped") return;
      this.lifecycle = "stopping";
      await this.release();
      this.lifecycle = "stopped";
      this.log.info({}, "master stopped");
    })();
    return this.stopping;
  }

  /** Undoes whatever start() got to; every step runs even if an earlier one fails. */
  private async release(): Promise<void> {
    for (const sub of this.subscriptions.splice(0)) sub.unsubscribe();
    this.timer?.cancel();
    this.timer = undefined;
    this.timerDueMs = Infinity;
    if (this.http) {
      await this.http.close().catch((err: unknown) => this.log.error({ err }, "closing the HTTP server failed"));
      this.http = undefined;
      this.url = undefined;
    }
    if (this.writer) {
      const drained = await this.writer.drain(this.options.storeDrainTimeoutMs ?? MASTER_DEFAULTS.storeDrainTimeoutMs);
      if (!drained) this.log.warn({ pendingKeys: this.writer.pendingKeys }, "registry writes still pending at stop; they are lost");
      this.writer.stop();
    }
    if (this.store && this.ownsStore) await this.store.close().catch((err: unknown) => this.log.error({ err }, "closing the registry store failed"));
  }

  // ---- inputs ---------------------------------------------------------------------------------

  /** Hands one input to the core and carries out its effects; a throw here is a counted drop. */
  private dispatch(input: MasterInput, msg: IncomingMessage | undefined): void {
    if (this.lifecycle !== "running" && this.lifecycle !== "starting") return;
    const now = this.clock.now();
    try {
      this.execute(this.core.handle(input, now), msg, input.type === "tick" ? "" : input.callId);
    } finally {
      this.arm(now);
    }
  }

  /** Runs a tick now (timer fired, or an operator change wants an allocation run). */
  private tick(): void {
    try {
      this.dispatch({ type: "tick" }, undefined);
    } catch (err) {
      const count = ++this.counters.tickErrors;
      // 1st, 2nd, 4th, 8th...: a core that fails on every tick must not flood the log.
      if ((count & (count - 1)) === 0) this.log.error({ err, tickErrors: count }, "tick failed");
    }
  }

  /** Keeps one timer armed for the core's next deadline, at most tickIntervalMs away. */
  private arm(now: number): void {
    if (this.lifecycle !== "running" && this.lifecycle !== "starting") return;
    const due = Math.min(this.core.nextTickMs(), now + this.tickIntervalMs);
    if (this.timer !== undefined && this.timerDueMs <= due) return;
    this.timer?.cancel();
    this.timerDueMs = due;
    this.timer = this.timers.set(Math.max(0, due - now), () => {
      this.timer = undefined;
      this.timerDueMs = Infinity;
      this.tick();
    });
  }

  // ---- effects --------------------------------------------------------------------------------

  /** Carries out effects in order; one that fails is logged and counted, the rest still go out. */
  private execute(effects: MasterEffect[], msg: IncomingMessage | undefined, callId: string): void {
    for (const effect of effects) {
      try {
        this.carryOut(effect, msg, callId);
      } catch (err) {
        this.counters.effectErrors[effect.type] = (this.counters.effectErrors[effect.type] ?? 0) + 1;
        const fields: Record<string, unknown> = { err, effect: effect.type };
        if (effect.type === "to-agent") fields.agentId = effect.agentId;
        if (effect.type === "to-framework") fields.frameworkId = effect.frameworkId;
        if (err instanceof SubjectTokenError) this.log.warn(fields, "effect not carried out: the id cannot be used in a subject");
        else this.log.error(fields, "effect not carried out");
      }
    }
  }

  private carryOut(effect: MasterEffect, msg: IncomingMessage | undefined, callId: string): void {
    switch (effect.type) {
      case "reply":
        if (!msg) throw new Error("the core asked to reply, but the input carried no message");
        // A call published without a reply inbox (e.g. an automatic acknowledgement) wants none.
        if (msg.reply) this.transport.respond(msg, this.envelope(effect.payload, callId));
        return;
      case "to-framework": {
        const subject = frameworkEventsSubject(this.cluster, effect.frameworkId);
        for (const bytes of this.encodeEvent(effect.event)) this.transport.publish(subject, bytes);
        return;
      }
      case "to-agent": {
        const subject = agentCmdSubject(this.cluster, effect.agentId);
        this.transport.publish(subject, this.envelope({ payload: "masterToAgent", masterToAgent: effect.message }, ""));
        return;
      }
      case "persist":
        this.writer!.enqueue({ type: "put", record: effect.record });
        return;
      case "unpersist":
        this.writer!.enqueue({ type: "delete", kind: effect.kind, id: effect.id });
        return;
      case "log":
        this.log[effect.level](effect.fields, effect.msg);
        return;
    }
  }

  private envelope(payload: EnvelopePayload, callId: string): Uint8Array {
    return encodeEnvelope({ senderId: this.masterId, epoch: this.currentEpoch, callId, ...payload });
  }

  /**
   * Encodes an event; an offers event too big for one message is split into several (each a valid
   * offers event), so a big cluster never silently loses offers to the bus's size limit.
   */
  private encodeEvent(event: SchedulerEvent): Uint8Array[] {
    const bytes = this.envelope({ payload: "schedulerEvent", schedulerEvent: event }, "");
    if (bytes.length <= this.maxMessageBytes || event.kind !== "offers" || event.offers.offers.length < 2) return [bytes];
    this.counters.offerEventsSplit++;
    const offers = event.offers.offers;
    const half = Math.ceil(offers.length / 2);
    return [
      ...this.encodeEvent({ kind: "offers", offers: { offers: offers.slice(0, half) } }),
      ...this.encodeEvent({ kind: "offers", offers: { offers: offers.slice(half) } }),
    ];
  }
}

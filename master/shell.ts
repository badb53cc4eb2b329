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
 * With `election`, several masters share a cluster: they campaign for a lease in the registry
 * bucket (`sdk/leader-lease.ts`). Only the leader subscribes to the bus subjects, so agents and
 * frameworks reach it without knowing which master it is; its term (the lease revision) is the
 * epoch on everything it sends. On winning, a master loads the registry into a fresh core, asks the
 * registry's agents to re-register and its frameworks (by a heartbeat event carrying the new epoch)
 * to re-subscribe, and holds offers until the agents are back. On losing the lease (or failing to
 * renew it in time) it unsubscribes at once, drops its pending registry writes and serves HTTP as a
 * standby: `/health` points to the leader, `/state` and operator endpoints are redirected to it.
 *
 * @module
 */

import { randomUUID } from "node:crypto";
import { hostname as osHostname } from "node:os";
import { pino, type Logger as PinoLogger } from "pino";
import type { FastifyInstance } from "fastify";
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../sdk/clock.ts";
import type { NatsConnection } from "@nats-io/transport-node";
import { componentLogger } from "../sdk/log.ts";
import type { NatsTransport } from "../sdk/nats-transport.ts";
import { LeaseElection, type LeaderInfo, type LeaseStore, type LeaseTimings } from "../sdk/leader-lease.ts";
import { SeededRng, type Rng } from "../sdk/rng.ts";
import type { IncomingMessage, Subscription, Transport } from "../sdk/transport.ts";
import { DropCounter, encodeEnvelope, handleSafely, wireLength, type EnvelopePayload, type WireError } from "../sdk/wire/codec.ts";
import { SubjectTokenError, assertToken, clusterSubjects, parseSubject, subjectWildcard, type ClusterSubjects } from "../sdk/wire/subjects.ts";
import type { SchedulerEvent } from "../sdk/wire/types.ts";
import { createMasterCore, type MasterConfig, type MasterCore, type MasterEffect, type MasterInput, type RegistryRecord } from "./core.ts";
import { createMasterHttp } from "./http.ts";
import { renderMasterMetrics, type ShellCounters } from "./metrics.ts";
import { JetStreamRegistryStore, RegistryWriter, registryRecordProblem, type RegistryStore } from "./store.ts";

/** An http(s) URL with a host: what a Location header can send a client to. */
const HTTP_URL = /^https?:\/\/[^/\s]+/;

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
  /** Logger; the master logs through a child with `component: "master"` (bound once: a logger that already has it keeps it). @default pino() (info, stdout) */
  log?: PinoLogger;
  /**
   * Registry storage. A store passed in belongs to the caller (it is not closed by stop, like the
   * transport). @default a JetStream KV bucket `corral_<cluster>_registry`, created if missing and
   * closed by stop
   */
  store?: RegistryStore;
  /**
   * Replicas of the registry bucket when the master creates it (JetStream; 3 on a three-node NATS
   * cluster, so the registry survives the loss of a server). An existing bucket keeps its own.
   * @default 1
   */
  storeReplicas?: number;
  /** Longest time between two ticks, whatever the core's next deadline. @default 250 */
  tickIntervalMs?: number;
  /**
   * Leader epoch stamped on every message this master sends when it leads alone (no
   * {@link election}); with an election the epoch is the term won, and this must not be given.
   * @default 1
   */
  epoch?: number;
  /**
   * Run as one of several masters of the cluster: campaign for the leader lease and serve the bus
   * only while holding it (see {@link MasterElectionOptions}). `true` takes every default.
   * @default false (this master leads alone, from start to stop)
   */
  election?: MasterElectionOptions | boolean;
  /**
   * Longest run of bus inputs handled before the master yields to the event loop, so that its
   * timers (lease renewals above all) keep their time under a flood such as a thousand agents
   * re-registering after a failover; inputs arriving meanwhile wait, in order. 0 handles every
   * input as it arrives.
   * @default 20 with the system timers; 0 with injected timers (so the simulator stays deterministic)
   */
  inputSliceMs?: number;
  /** Bus inputs waiting their turn beyond which new ones are dropped and counted (senders retry). @default 100000 */
  maxQueuedInputs?: number;
  /** How long stop() waits for queued registry writes before giving up on them. @default 5000 */
  storeDrainTimeoutMs?: number;
  /**
   * Called when this master starts serving a term: the term's core has recovered the registry and
   * nothing from the bus has been handled yet. An embedding applies here what the registry does not
   * keep (the simulator: the scenario's role weights and quotas, for every new leader). A throw is
   * logged; the term goes on.
   * @default none
   */
  onServing?: (term: number, core: MasterCore) => void;
  /**
   * Largest message the bus accepts; bigger offers events are split in several. @default the NATS
   * server's max_payload, else 1048576
   */
  maxMessageBytes?: number;
}

/** Options of a master's leader election ({@link MasterOptions.election}). */
export interface MasterElectionOptions {
  /**
   * The lease's clock; see `sdk/leader-lease.ts` for the arithmetic.
   * @default { leaseMs: 1500, renewIntervalMs: 250, stepDownMarginMs: 250, pollIntervalMs: 100 }
   */
  timings?: Partial<LeaseTimings>;
  /**
   * Where the lease lives. A busy leader's renewals must not queue behind bus traffic on one
   * connection (a thousand agents re-registering after a failover take a second to handle), so
   * production gives the lease a NATS connection of its own: {@link openMasterLeaseStore}, as
   * `corral master --ha` does. @default the key `leader` of the registry bucket, on the
   * transport's connection (needs the default JetStream store)
   */
  store?: LeaseStore;
  /**
   * The URL standbys point clients to (written in the lease record): an http(s) URL.
   * @default {@link Master.httpUrl}, with this machine's host name in place of a wildcard listen
   * address (0.0.0.0, ::), which would send another machine's client to itself
   */
  advertisedUrl?: string;
}

/** Options of {@link Master.stop}. */
export interface MasterStopOptions {
  /**
   * Drain registry writes and release the lease, so a standby takes over at once. `false` stops
   * as a crash would (no drain, the lease left to lapse): for tests of failover.
   * @default true
   */
  handover?: boolean;
}

/** A master built by {@link createMaster}. */
export interface Master {
  /**
   * Serves HTTP and, leading alone, loads the registry, recovers the core, subscribes to the bus
   * and starts ticking. With an election it campaigns; it resolves after the first attempt (and,
   * when that won, once the master serves).
   */
  start(): Promise<void>;
  /** Unsubscribes, stops ticking, closes HTTP, flushes registry writes (bounded), releases the lease and closes an owned store. Idempotent. */
  stop(options?: MasterStopOptions): Promise<void>;
  /** Base URL of the HTTP API, e.g. `http://127.0.0.1:40123`. Throws before start() or without HTTP. */
  httpUrl(): string;
  /** The core of the current term (a standby's is empty; a new term gets a new core). */
  readonly core: MasterCore;
  readonly masterId: string;
  readonly cluster: string;
  /** The leader epoch this master serves (leading), or served last. */
  epoch(): number;
  /** Whether this master leads (and holds its lease) now. */
  isLeader(): boolean;
  /** The leader as this master knows it (itself when leading); undefined while none is known. */
  leader(): LeaderInfo | undefined;
  /** Terms this master has won since start. */
  terms(): number;
  /** Dropped bus messages by subject kind and reason. */
  readonly drops: DropCounter;
  /** The Prometheus exposition served at `/metrics`. */
  metrics(): string;
}

/** The version masters announce on the leader subject. */
export const MASTER_VERSION = "0.1.0";

/** Defaults of {@link MasterOptions}. */
export const MASTER_DEFAULTS = {
  cluster: "corral",
  httpHost: "127.0.0.1",
  httpPort: 0,
  tickIntervalMs: 250,
  epoch: 1,
  storeDrainTimeoutMs: 5_000,
  maxMessageBytes: 1_048_576,
  inputSliceMs: 20,
  maxQueuedInputs: 100_000,
} as const;

/** The default registry bucket of a cluster. */
export function registryBucketName(cluster: string): string {
  return `corral_${cluster}_registry`;
}

/** The masters' leader lease of `cluster` (the key `leader` of its registry bucket) on `connection`. */
export async function openMasterLeaseStore(connection: NatsConnection, cluster: string, replicas?: number): Promise<LeaseStore> {
  return (await JetStreamRegistryStore.open(connection, { bucket: registryBucketName(cluster), ...(replicas !== undefined ? { replicas } : {}) })).leaseStore();
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
  readonly masterId: string;
  readonly cluster: string;
  readonly drops = new DropCounter();
  /** The cluster's subjects, each built once. */
  private readonly subjects: ClusterSubjects;

  private readonly transport: Transport;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly rng: Rng;
  private readonly log: PinoLogger;
  private readonly tickIntervalMs: number;
  private readonly electionOptions: MasterElectionOptions | undefined;
  private currentEpoch: number;
  private readonly counters: ShellCounters = {
    effectErrors: {},
    tickErrors: 0,
    storeWriteFailures: 0,
    storeWrites: 0,
    storePendingKeys: 0,
    offerEventsSplit: 0,
    inputsShed: 0,
  };

  /**
   * Per framework, the `seq` of the last event published to it (see {@link encodeEvent}). Kept
   * across terms: a framework re-subscribing learns where the numbering stands from its reply.
   */
  private readonly eventSeqs = new Map<string, number>();
  private currentCore: MasterCore;
  private readonly inputSliceMs: number;
  private readonly maxQueuedInputs: number;
  /**
   * Bus messages waiting for the next slice (not even decoded yet), one FIFO lane for frameworks'
   * calls and one for agents' messages, taken in turn: after a failover, a thousand queued agent
   * re-registrations must not keep the frameworks' re-subscriptions waiting (nor the reverse
   * under a flood of declines). Order only matters within a sender, and each sender uses one lane.
   */
  private readonly lanes = { scheduler: new InputLane(), agent: new InputLane() };
  /** The lane the pump takes from next when both have work. */
  private nextLane: "scheduler" | "agent" = "scheduler";
  private sliceStartedAt: number | undefined;
  private pumpTimer: TimerHandle | undefined;
  /** The constructor's core has not served a term yet (it may hold settings made before start). */
  private coreUnused = true;
  private leading = false;
  private termsWon = 0;
  private election: LeaseElection | undefined;
  /** Elections and step-downs are carried out one at a time, in order. */
  private transitions: Promise<void> = Promise.resolve();
  private lifecycle: Lifecycle = "new";
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private store: RegistryStore | undefined;
  private ownsStore = false;
  private writer: RegistryWriter | undefined;
  private subscriptions: Subscription[] = [];
  private http: FastifyInstance | undefined;
  private url: string | undefined;
  /** Where clients elsewhere reach this master's HTTP API, unless `election.advertisedUrl` says. */
  private defaultAdvertisedUrl: string | undefined;
  private timer: TimerHandle | undefined;
  private timerDueMs = Infinity;
  private startedAtMs = 0;
  private maxMessageBytes: number;

  constructor(private readonly options: MasterOptions) {
    this.cluster = options.cluster ?? MASTER_DEFAULTS.cluster;
    this.subjects = clusterSubjects(this.cluster);
    this.transport = options.transport;
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.rng = options.rng ?? new SeededRng(randomUUID());
    this.masterId = options.masterId ?? options.config?.masterId ?? `m-${hex8(this.rng)}`;
    assertToken(this.masterId, "masterId");
    this.tickIntervalMs = options.tickIntervalMs ?? MASTER_DEFAULTS.tickIntervalMs;
    if (!(this.tickIntervalMs > 0)) throw new RangeError(`tickIntervalMs: must be > 0, got ${this.tickIntervalMs}`);
    this.electionOptions = options.election === true ? {} : options.election || undefined;
    if (this.electionOptions && options.epoch !== undefined) throw new RangeError("epoch: must not be given with election (the epoch is the term won)");
    const advertised = this.electionOptions?.advertisedUrl;
    if (advertised !== undefined && !HTTP_URL.test(advertised)) throw new RangeError(`election.advertisedUrl: must be an http(s) URL such as http://master-1:5050, got '${advertised}'`);
    this.currentEpoch = this.electionOptions ? 0 : (options.epoch ?? MASTER_DEFAULTS.epoch);
    if (!Number.isSafeInteger(this.currentEpoch) || this.currentEpoch < 0) throw new RangeError(`epoch: must be a safe integer >= 0, got ${this.currentEpoch}`);
    this.maxMessageBytes = options.maxMessageBytes ?? MASTER_DEFAULTS.maxMessageBytes;
    this.inputSliceMs = options.inputSliceMs ?? (options.timers === undefined ? MASTER_DEFAULTS.inputSliceMs : 0);
    this.maxQueuedInputs = options.maxQueuedInputs ?? MASTER_DEFAULTS.maxQueuedInputs;
    if (!(this.inputSliceMs >= 0)) throw new RangeError(`inputSliceMs: must be >= 0, got ${this.inputSliceMs}`);
    if (!(this.maxQueuedInputs >= 1)) throw new RangeError(`maxQueuedInputs: must be >= 1, got ${this.maxQueuedInputs}`);
    this.log = componentLogger(options.log ?? pino(), "master", { masterId: this.masterId });
    this.currentCore = this.newCore("master-core");
  }

  get core(): MasterCore {
    return this.currentCore;
  }

  private newCore(fork: string): MasterCore {
    return createMasterCore({ ...this.options.config, masterId: this.masterId }, this.rng.fork(fork), () => performance.now());
  }

  epoch(): number {
    return this.currentEpoch;
  }

  terms(): number {
    return this.termsWon;
  }

  isLeader(): boolean {
    return this.serving(this.clock.now());
  }

  leader(): LeaderInfo | undefined {
    if (!this.election) return this.lifecycle === "running" ? { id: this.masterId, url: this.url ?? "", term: this.currentEpoch } : undefined;
    return this.election.leader();
  }

  /** Leading, and (with an election) still within the lease: the fence of every bus action. */
  private serving(nowMs: number): boolean {
    if (!this.leading || (this.lifecycle !== "running" && this.lifecycle !== "starting")) return false;
    return this.election === undefined || this.election.holds(nowMs);
  }

  httpUrl(): string {
    if (this.url === undefined) throw new Error("the master's HTTP API is not listening (not started, stopped, or http: false)");
    return this.url;
  }

  metrics(): string {
    this.counters.storeWriteFailures = this.writer?.failures ?? 0;
    this.counters.storeWrites = this.writer?.applied ?? 0;
    this.counters.storePendingKeys = this.writer?.pendingKeys ?? 0;
    return renderMasterMetrics(this.currentCore, this.drops, this.counters, { epoch: this.currentEpoch, leader: this.isLeader(), terms: this.termsWon });
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
        await this.release(true);
        this.lifecycle = "stopped";
        throw err;
      },
    );
    return this.starting;
  }

  private async doStart(): Promise<void> {
    this.store = await this.openStore();
    this.startedAtMs = this.clock.now();
    if (this.options.maxMessageBytes === undefined && hasConnection(this.transport)) {
      this.maxMessageBytes = this.transport.connection.info?.max_payload ?? this.maxMessageBytes;
    }
    if (this.options.http ?? true) await this.startHttp();
    if (!this.electionOptions) {
      await this.lead(this.currentEpoch);
      return;
    }
    this.election = new LeaseElection({
      store: this.openLeaseStore(this.electionOptions),
      self: { id: this.masterId, url: this.electionOptions.advertisedUrl ?? this.defaultAdvertisedUrl ?? "" },
      clock: this.clock,
      timers: this.timers,
      log: this.log,
      label: "master",
      ...(this.electionOptions.timings ? { timings: this.electionOptions.timings } : {}),
      onElected: (term, takeover) => this.enqueueTransition(() => this.lead(term, takeover)),
      onDeposed: (reason) => this.stepDown(reason),
    });
    await this.election.start();
    // A lease won on the first attempt: start() resolves once this master serves.
    await this.transitions;
    if (!this.leading) this.log.info({ cluster: this.cluster, leader: this.election.leader()?.id, http: this.url }, "master started as a standby");
  }

  private enqueueTransition(step: () => Promise<void>): void {
    this.transitions = this.transitions.then(step).catch(async (err: unknown) => {
      this.log.error({ err }, "taking over as the leader failed (e.g. the registry could not be read); resigning");
      this.stepDown("failed");
      // Give the lease back at once rather than hold it without serving until it lapses.
      await this.election?.resign();
    });
  }

  /**
   * Starts serving a term: a fresh core recovers the registry, the bus subjects are subscribed,
   * and the registry's agents and frameworks are told of the new epoch. Every await may lose the
   * lease; the term is then abandoned.
   */
  private async lead(term: number, takeover?: { from: LeaderInfo | undefined; unchangedForMs: number }): Promise<void> {
    const electedAtMs = this.clock.now();
    const stillOurs = () =>
      (this.lifecycle === "running" || this.lifecycle === "starting") && (this.election === undefined || (this.election.holds() && this.election.term() === term));
    if (!stillOurs()) return;
    const records = this.usableRecords(await this.store!.load());
    const loadMs = this.clock.now() - electedAtMs;
    if (!stillOurs()) return;
    const core = this.coreUnused ? this.currentCore : this.newCore(`master-core-${term}`);
    this.coreUnused = false;
    const now = this.clock.now();
    // Recovery comes before subscribing, so no call is handled by a master that forgot its registry.
    const announcements = core.recover(records, now);
    this.currentCore = core;
    this.currentEpoch = term;
    this.leading = true;
    this.termsWon++;
    try {
      this.options.onServing?.(term, core);
    } catch (err) {
      this.log.error({ err, epoch: term }, "onServing failed");
    }
    this.writer = new RegistryWriter({ store: this.store!, timers: this.timers, log: this.log });
    const shared = this.subjects.masterScheduler();
    const onSchedulerCall = handleSafely<"schedulerCall">(
      this.log,
      this.drops,
      (envelope, msg) => {
        // The principal is the subject's (which NATS permissions tie to a user), never the message's.
        const principal = msg.subject === shared ? undefined : parseSubject(msg.subject)?.principal;
        // A token the table refuses (too long, say) must not pass for the shared subject: drop it.
        if (msg.subject !== shared && principal === undefined) throw new Error(`no principal can be read from the subject ${msg.subject}`);
        this.dispatch({ type: "scheduler-call", call: envelope.schedulerCall, senderId: envelope.senderId, callId: envelope.callId, ...(principal !== undefined ? { principal } : {}) }, msg);
      },
      // As Mesos answers an invalid call with 400 and the reason: a driver waiting for the reply
      // hears what is wrong rather than timing out (and re-subscribing) for nothing.
      { onRefused: (error, msg) => this.answerRefusedCall(error, msg) },
    );
    const onAgentMessage = handleSafely<"agentToMaster">(
      this.log,
      this.drops,
      (envelope, msg) => this.dispatch({ type: "agent-message", message: envelope.agentToMaster, senderId: envelope.senderId, callId: envelope.callId }, msg),
      // A (re-)registration request is answered too: the agent logs why instead of timing out.
      { onRefused: (error, msg) => this.answerRefusedCall(error, msg) },
    );
    this.subscriptions.push(
      this.transport.subscribe(shared, (msg) => this.receive(this.lanes.scheduler, onSchedulerCall, msg)),
      // Frameworks with a principal call on a subject of their principal's (see `principalScheduler`).
      this.transport.subscribe(subjectWildcard("principalScheduler", this.cluster), (msg) => this.receive(this.lanes.scheduler, onSchedulerCall, msg)),
      // Every agent publishes on a subject of its own; the codec drops a message whose sender is not that agent.
      this.transport.subscribe(subjectWildcard("masterAgent", this.cluster), (msg) => this.receive(this.lanes.agent, onAgentMessage, msg)),
    );
    await this.transport.flush();
    if (!this.leading || this.currentEpoch !== term || !this.serving(this.clock.now())) return;
    this.execute(announcements, undefined, "");
    this.announce();
    this.arm(this.clock.now());
    this.log.info(
      {
        cluster: this.cluster,
        epoch: term,
        recovered: records.length,
        http: this.url,
        registryLoadMs: loadMs,
        serveAfterElectionMs: this.clock.now() - electedAtMs,
        ...(takeover ? { previousLeader: takeover.from?.id, previousRecordUnchangedForMs: takeover.unchangedForMs } : {}),
      },
      this.election ? "master leads: serving the bus" : "master started",
    );
  }

  /** Answers a request (a framework call, an agent registration) the codec refused with the field and rule it breaks. */
  private answerRefusedCall(error: WireError, msg: IncomingMessage): void {
    // Answered only by a master that may still serve (as `dispatch` decides for every input).
    if (!msg.reply || !this.serving(this.clock.now())) return;
    const callResponse = { ok: false, errorCode: "CORRAL_ERR_INVALID_CALL", message: error.problems.join("; ") };
    this.transport.respond(msg, this.envelope({ payload: "callResponse", callResponse }, error.callId ?? ""));
  }

  /** Publishes this master's MasterInfo on the leader subject (operators and tools may listen). */
  private announce(): void {
    if (!this.election) return;
    try {
      const masterInfo = { id: this.masterId, epoch: this.currentEpoch, hostname: osHostname(), httpEndpoint: this.election.leader()?.url ?? this.defaultAdvertisedUrl ?? "", version: MASTER_VERSION };
      this.transport.publish(this.subjects.masterLeader(), encodeEnvelope({ senderId: this.masterId, epoch: this.currentEpoch, payload: "masterInfo", masterInfo }, this.transport));
    } catch (err) {
      this.log.warn({ err }, "cannot announce the new leader");
    }
  }

  /** Leaves the bus subjects and drops queued input and the allocation tick. */
  private stopServing(): void {
    this.leading = false;
    for (const sub of this.subscriptions.splice(0)) sub.unsubscribe();
    this.dropInbox();
    this.timer?.cancel();
    this.timer = undefined;
    this.timerDueMs = Infinity;
  }

  /** Stops serving at once: no subject, no tick, no registry write of the old term. */
  private stepDown(reason: string): void {
    if (!this.leading) return;
    this.stopServing();
    const pending = this.writer?.pendingKeys ?? 0;
    // A deposed master must not write the registry: the new leader owns it.
    this.writer?.stop();
    this.writer = undefined;
    this.currentCore = this.newCore(`master-core-standby-${this.termsWon}`);
    this.log.warn({ reason, epoch: this.currentEpoch, droppedRegistryWrites: pending }, "master stepped down: no longer serving the bus");
  }

  private async openStore(): Promise<RegistryStore> {
    if (this.options.store) return this.options.store;
    if (!hasConnection(this.transport)) {
      throw new Error("createMaster: without a NATS transport (JetStream) a `store` must be given, e.g. a MemoryRegistryStore");
    }
    const replicas = this.options.storeReplicas;
    const store = await JetStreamRegistryStore.open(this.transport.connection, { bucket: registryBucketName(this.cluster), log: this.log, ...(replicas !== undefined ? { replicas } : {}) });
    this.ownsStore = true;
    return store;
  }

  private openLeaseStore(options: MasterElectionOptions): LeaseStore {
    if (options.store) return options.store;
    if (this.store instanceof JetStreamRegistryStore) return this.store.leaseStore();
    throw new Error("createMaster: election needs a lease store: give election.store, or use the default JetStream registry");
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
      core: () => this.currentCore,
      log: this.log,
      info: () => {
        const leader = this.isLeader();
        const pointer = this.leader();
        return {
          masterId: this.masterId,
          cluster: this.cluster,
          epoch: leader ? this.currentEpoch : (pointer?.term ?? this.currentEpoch),
          leader,
          leaderInfo: pointer && pointer.url !== "" ? { id: pointer.id, url: pointer.url, ...(pointer.term !== undefined ? { term: pointer.term } : {}) } : undefined,
          startedAtMs: this.startedAtMs,
        };
      },
      metrics: () => this.metrics(),
      afterChange: (effects) => {
        this.execute(effects, undefined, "");
        this.tick();
      },
    });
    this.http = app;
    await app.listen({ host: this.options.httpHost ?? MASTER_DEFAULTS.httpHost, port: this.options.httpPort ?? MASTER_DEFAULTS.httpPort });
    const address = app.server.address();
    if (address === null || typeof address === "string") throw new Error(`unexpected HTTP address ${String(address)}`);
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    this.url = `http://${host}:${address.port}`;
    const wildcard = address.address === "0.0.0.0" || address.address === "::";
    this.defaultAdvertisedUrl = wildcard ? `http://${osHostname()}:${address.port}` : this.url;
  }

  stop(options: MasterStopOptions = {}): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      if (this.starting) await this.starting.catch(() => undefined);
      if (this.lifecycle === "stopped") return;
      this.lifecycle = "stopping";
      await this.release(options.handover ?? true);
      this.lifecycle = "stopped";
      this.log.info({ handover: options.handover ?? true }, "master stopped");
    })();
    return this.stopping;
  }

  /** Undoes whatever start() got to; every step runs even if an earlier one fails. */
  private async release(handover: boolean): Promise<void> {
    this.stopServing();
    if (this.writer) {
      if (handover) {
        const drained = await this.writer.drain(this.options.storeDrainTimeoutMs ?? MASTER_DEFAULTS.storeDrainTimeoutMs);
        if (!drained) this.log.warn({ pendingKeys: this.writer.pendingKeys }, "registry writes still pending at stop; they are lost");
      }
      this.writer.stop();
    }
    // Released after the last write, so the successor loads everything this master wrote.
    if (this.election) await this.election.stop({ release: handover });
    if (this.http) {
      await this.http.close().catch((err: unknown) => this.log.error({ err }, "closing the HTTP server failed"));
      this.http = undefined;
      this.url = undefined;
      this.defaultAdvertisedUrl = undefined;
    }
    if (this.store && this.ownsStore) await this.store.close().catch((err: unknown) => this.log.error({ err }, "closing the registry store failed"));
  }

  // ---- inputs ---------------------------------------------------------------------------------

  /**
   * A bus message: decoded and handled at once while the current run of work is shorter than
   * `inputSliceMs`, else queued in its lane (in order, undecoded: decoding is work too) for the
   * next slice, after the event loop has come round.
   */
  private receive(lane: InputLane, handle: (msg: IncomingMessage) => void, msg: IncomingMessage): void {
    if (!this.leading) return;
    if (this.inputSliceMs <= 0 || (lane.size() === 0 && this.withinSlice())) {
      handle(msg);
      return;
    }
    if (this.queuedInputs() >= this.maxQueuedInputs) {
      const shed = ++this.counters.inputsShed;
      if ((shed & (shed - 1)) === 0) this.log.warn({ shed, maxQueuedInputs: this.maxQueuedInputs }, "master overloaded: bus input dropped (the sender retries)");
      return;
    }
    lane.push(handle, msg);
    this.schedulePump();
  }

  /** Whether the current run of work may go on; the first input of a run starts it. */
  private withinSlice(): boolean {
    const now = performance.now();
    if (this.sliceStartedAt === undefined) {
      this.sliceStartedAt = now;
      // The run ends when the event loop comes round again.
      this.timers.set(0, () => (this.sliceStartedAt = undefined));
      return true;
    }
    return now - this.sliceStartedAt < this.inputSliceMs;
  }

  private schedulePump(): void {
    if (this.pumpTimer !== undefined) return;
    this.pumpTimer = this.timers.set(0, () => {
      this.pumpTimer = undefined;
      this.pump();
    });
  }

  /** Handles queued inputs for one slice, taking from the lanes in turn, then yields again if some are left. */
  private pump(): void {
    const started = performance.now();
    while (this.queuedInputs() > 0 && performance.now() - started < this.inputSliceMs) {
      const lane = this.lanes[this.nextLane].size() > 0 ? this.nextLane : this.nextLane === "scheduler" ? "agent" : "scheduler";
      this.nextLane = lane === "scheduler" ? "agent" : "scheduler";
      this.lanes[lane].handleNext();
    }
    if (this.queuedInputs() > 0) this.schedulePump();
  }

  private queuedInputs(): number {
    return this.lanes.scheduler.size() + this.lanes.agent.size();
  }

  private dropInbox(): void {
    this.lanes.scheduler.clear();
    this.lanes.agent.clear();
    this.pumpTimer?.cancel();
    this.pumpTimer = undefined;
  }

  /** Hands one input to the core and carries out its effects; a throw here is a counted drop. */
  private dispatch(input: MasterInput, msg: IncomingMessage | undefined): void {
    const now = this.clock.now();
    if (!this.serving(now)) {
      // The lease ran out before the timer said so: step down now rather than act on it.
      if (this.leading && this.election) this.election.poke();
      return;
    }
    try {
      this.execute(this.currentCore.handle(input, now), msg, input.type === "tick" ? "" : input.callId);
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
    if (!this.leading || (this.lifecycle !== "running" && this.lifecycle !== "starting")) return;
    const due = Math.min(this.currentCore.nextTickMs(), now + this.tickIntervalMs);
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
        if (msg.reply) this.transport.respond(msg, this.envelope(this.withEventSeq(effect.payload), callId));
        return;
      case "to-framework": {
        const subject = this.subjects.frameworkEvents(effect.frameworkId, effect.principal);
        for (const bytes of this.encodeEvent(effect.event, effect.frameworkId)) this.transport.publish(subject, bytes);
        return;
      }
      case "to-agent": {
        const subject = this.subjects.agentCmd(effect.agentId);
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
    return encodeEnvelope({ senderId: this.masterId, epoch: this.currentEpoch, callId, ...payload }, this.transport);
  }

  /**
   * Encodes an event to `frameworkId`, numbered (`seq`) after the last one published to it; an
   * offers event too big for one message is split into several (each a valid, numbered offers
   * event), so a big cluster never silently loses offers to the bus's size limit. The numbers are
   * the bus's business, not the core's: they count messages as published, splits included, so a
   * framework can tell that one never arrived (core NATS delivers at most once).
   */
  private encodeEvent(event: SchedulerEvent, frameworkId: string): Uint8Array[] {
    const seq = (this.eventSeqs.get(frameworkId) ?? 0) + 1;
    const bytes = this.envelope({ payload: "schedulerEvent", schedulerEvent: { ...event, seq } }, "");
    if (event.kind !== "offers" || event.offers.offers.length < 2 || wireLength(bytes) <= this.maxMessageBytes) {
      this.eventSeqs.set(frameworkId, seq);
      return [bytes];
    }
    this.counters.offerEventsSplit++;
    const offers = event.offers.offers;
    const half = Math.ceil(offers.length / 2);
    return [
      ...this.encodeEvent({ kind: "offers", offers: { offers: offers.slice(0, half) } }, frameworkId),
      ...this.encodeEvent({ kind: "offers", offers: { offers: offers.slice(half) } }, frameworkId),
    ];
  }

  /** A SUBSCRIBED reply says where its framework's event numbering stands (see {@link encodeEvent}). */
  private withEventSeq(payload: EnvelopePayload): EnvelopePayload {
    if (payload.payload !== "schedulerEvent" || payload.schedulerEvent.kind !== "subscribed") return payload;
    const subscribed = payload.schedulerEvent.subscribed;
    return { payload: "schedulerEvent", schedulerEvent: { kind: "subscribed", subscribed: { ...subscribed, lastEventSeq: this.eventSeqs.get(subscribed.frameworkId) ?? 0 } } };
  }
}

/** A FIFO of bus messages waiting to be handled; taking one is O(1) (a head index, compacted now and then). */
class InputLane {
  private items: Array<{ handle: (msg: IncomingMessage) => void; msg: IncomingMessage } | undefined> = [];
  private head = 0;

  size(): number {
    return this.items.length - this.head;
  }

  push(handle: (msg: IncomingMessage) => void, msg: IncomingMessage): void {
    this.items.push({ handle, msg });
  }

  /** Handles the oldest message. Only called when the lane is not empty. */
  handleNext(): void {
    const next = this.items[this.head]!;
    this.items[this.head++] = undefined;
    if (this.head >= this.items.length) this.clear();
    else if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    next.handle(next.msg);
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

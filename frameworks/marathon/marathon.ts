/**
 * Marathon's shell: the only I/O of the Marathon framework. It feeds offers, status updates,
 * HTTP requests, health-check results and timer ticks into the pure {@link MarathonCore}, one at
 * a time, and carries the core's effects out: writes to the store (awaited, and before any launch
 * that depends on them), launches, declines, kills and SUPPRESS/REVIVE through the SDK's
 * scheduler driver, and events to `/v2/events` listeners.
 *
 * On start it reloads its state, re-subscribes with the stored framework id (a failover, so the
 * master keeps its tasks), reconciles every task (explicitly those it knows, implicitly the rest:
 * a task it does not know is killed) and resumes its deployments.
 *
 * @module
 */

import type { FastifyInstance } from "fastify";
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from "../../sdk/clock.ts";
import { SeededRng, type Rng } from "../../sdk/rng.ts";
import { createSchedulerDriver, DEFAULT_CLUSTER, DEFAULT_FRAMEWORK_ROLE, type Acknowledger, type OfferView, type SchedulerDriver, type TaskStatus } from "../../sdk/scheduler.ts";
import { silentLogger, type Logger, type Transport } from "../../sdk/transport.ts";
import type { NatsTransport } from "../../sdk/nats-transport.ts";
import { MarathonCore, type CoreStatus, type MarathonCoreConfig, type MarathonEffect, type MarathonEvent } from "./core.ts";
import { createMarathonHttp } from "./http.ts";
import { HealthChecker, type HealthCheckerOptions } from "./health.ts";
import { ReadinessChecker } from "./readiness.ts";
import { LeaderElection, type LeaseStore } from "./leader.ts";
import { JetStreamMarathonStore, marathonBucket, type MarathonStore } from "./store.ts";

/** Options of {@link createMarathon}. */
export interface MarathonOptions {
  /** The bus. A NATS transport also gives the JetStream store when no `store` is given. */
  transport: Transport;
  /** Cluster name (the `<cluster>` of every subject). @default "corral" */
  cluster?: string;
  /**
   * Serve the v2 REST API. Without it (the simulator), requests go through {@link Marathon.input}
   * with the same validation and core calls the routes use; `httpUrl()` is then "".
   * @default true
   */
  http?: boolean;
  /** @default "127.0.0.1" */
  httpHost?: string;
  /** 0 picks a free port (read `httpUrl()`). @default 8080 */
  httpPort?: number;
  /** @default a JetStream KV bucket `corral_<cluster>_marathon` on the transport's connection */
  store?: MarathonStore;
  /** @default systemClock */
  clock?: Clock;
  /** @default systemTimers */
  timers?: Timers;
  /** Ids (task, deployment), random ports. @default a generator seeded from crypto.randomUUID() */
  rng?: Rng;
  /** A pino logger works. @default silentLogger */
  log?: Logger;
  /** @default "marathon" */
  frameworkName?: string;
  /**
   * The framework's role. The SDK refuses `*` (it names no role); apps still get unreserved
   * resources, which every role is offered.
   * @default "default"
   */
  role?: string;
  /**
   * The framework's principal (Marathon's `--mesos_authentication_principal`): Marathon then calls
   * and listens on its principal's subjects, which NATS permissions can give its user alone, and
   * the master's role ACL applies to it by that name.
   * @default "" (none: the subjects shared by frameworks without a principal)
   */
  principal?: string;
  /** How long the master keeps Marathon's tasks while it is away. @default 604800 (one week) */
  failoverTimeoutSeconds?: number;
  /** How often the core's timers (launch timeout, delays, health checks) are looked at. @default 1000 */
  tickIntervalMs?: number;
  /** Core tunables. @default DEFAULT_CORE_CONFIG */
  core?: Partial<MarathonCoreConfig>;
  /**
   * Health checks Marathon runs (HTTP/TCP). `host` and `maxConcurrentChecks` apply to readiness
   * checks too.
   * @default {}
   */
  healthChecks?: HealthCheckerOptions;
  /**
   * Replicas of Marathon's state bucket when Marathon creates it (JetStream; 3 on a three-node NATS
   * cluster). An existing bucket keeps its own. @default 1
   */
  storeReplicas?: number;
  /** Master request timeout of the driver, ms. @default 5000 */
  requestTimeoutMs?: number;
  /**
   * Sees every status update as the driver hands it to Marathon, before it is applied (an
   * observation hook for embedders, e.g. the simulator's delivery audit). @default none
   */
  onStatusUpdate?: (frameworkId: string, status: TaskStatus) => void;
  /**
   * Run several Marathons: one leads (elected through a lease in the store), the others proxy
   * HTTP requests to it and take over when it stops renewing the lease for `leaseMs`.
   * @default undefined (a single Marathon, which leads at once)
   */
  leaderElection?: { leaseMs?: number };
  /**
   * The URL other Marathons and clients reach this instance at: what the lease names when it
   * leads (standbys forward to it) and its `X-Marathon-Leader` header. Give it when the listen
   * address is not reachable from elsewhere (`0.0.0.0`, a NAT, a proxy in front).
   * @default the listen URL, e.g. `http://127.0.0.1:8080`
   */
  advertisedUrl?: string;
}

/** A running Marathon. */
export interface Marathon {
  start(): Promise<void>;
  /**
   * Stops. By default the framework is not torn down: its tasks keep running for a successor.
   * With `teardown` the master kills every task and forgets the framework (Marathon leaves the
   * cluster for good; the simulator's stop-framework).
   */
  stop(options?: { teardown?: boolean }): Promise<void>;
  /** The HTTP base URL once started, e.g. `http://127.0.0.1:8080`. */
  httpUrl(): string;
  frameworkId(): string | undefined;
  /** True while this instance leads (and acts); standbys only proxy HTTP. */
  isLeader(): boolean;
  /**
   * Resolves once this instance has stopped: by `stop()`, or on its own when it was deposed or
   * could not take the leadership up (a process should then exit, as Marathon does, and be
   * restarted by its supervisor to stand by again).
   */
  whenStopped(): Promise<void>;
  /** The core (read only: tests and metrics). */
  readonly core: MarathonCore;
  /** Listens to Marathon events (as on `/v2/events`); returns the unsubscribe function. */
  onEvent(listener: (event: MarathonEvent) => void): () => void;
  /**
   * Runs one core input (what the HTTP routes call, e.g. `core.putApp`) and carries its effects
   * out, serialised with every other input. For callers without HTTP (the simulator).
   */
  input<T extends MarathonEffect[] | { effects: MarathonEffect[] }>(fn: () => T): Promise<T>;
}

export const MARATHON_DEFAULTS = {
  httpHost: "127.0.0.1",
  httpPort: 8080,
  frameworkName: "marathon",
  failoverTimeoutSeconds: 604_800,
  tickIntervalMs: 1000,
} as const;

export function createMarathon(options: MarathonOptions): Marathon {
  return new MarathonShell(options);
}

/** Status updates received and not yet applied at most; more are dropped (and sent again by the agents). */
const MAX_PENDING_STATUS_UPDATES = 200_000;

/** The fields of a status update the core reads. */
function coreStatus(status: TaskStatus): CoreStatus {
  return {
    taskId: status.taskId,
    state: status.state,
    agentId: status.agentId,
    message: status.message,
    reason: status.reason,
    ...(status.healthy !== undefined ? { healthy: status.healthy } : {}),
    ...(status.timestamp ? { timestampMs: Math.round(status.timestamp * 1000) } : {}),
  };
}

/** A launch the master did not take (or whose instances were not persisted). */
interface LaunchFailure {
  effect: Extract<MarathonEffect, { type: "launch" }>;
  err: unknown;
}

/**
 * The store record an effect writes (`<kind>.<id>`), or undefined for effects that write none.
 * Writes to one record are applied in order; writes to different records may overlap.
 */
function storeKeyOf(effect: MarathonEffect): string | undefined {
  switch (effect.type) {
    case "putApp":
      return `app.${effect.record.app.id}`;
    case "deleteApp":
      return `app.${effect.appId}`;
    case "putDeployment":
      return `deployment.${effect.deployment.id}`;
    case "deleteDeployment":
      return `deployment.${effect.id}`;
    case "putInstance":
      return `instance.${effect.instance.id}`;
    case "deleteInstance":
      return `instance.${effect.id}`;
    case "putDelay":
    case "deleteDelay":
      return `delay.${effect.appId}`;
    case "putGroup":
      return `group.${effect.group.id}`;
    case "deleteGroup":
      return `group.${effect.id}`;
    case "putRootVersion":
      return `rootversion.${effect.change.version}`;
    case "deleteRootVersion":
      return `rootversion.${effect.version}`;
    case "putRetiredApp":
      return `retiredapp.${effect.record.app.id}`;
    case "deleteRetiredApp":
      return `retiredapp.${effect.appId}`;
    default:
      return undefined;
  }
}

function hasConnection(transport: Transport): transport is NatsTransport {
  return "connection" in transport && (transport as NatsTransport).connection !== undefined;
}

/** Serialises async work: inputs reach the core, and effects leave it, in order. */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.tail.then(work, work);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

class MarathonShell implements Marathon {
  readonly core: MarathonCore;
  private readonly cluster: string;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly rng: Rng;
  private readonly log: Logger;
  private readonly queue = new SerialQueue();
  private readonly offers = new Map<string, OfferView>();
  private readonly listeners = new Set<(event: MarathonEvent) => void>();
  private driver: SchedulerDriver | undefined;
  private store: MarathonStore | undefined;
  private http: FastifyInstance | undefined;
  private health: HealthChecker | undefined;
  private readiness: ReadinessChecker | undefined;
  private url = "";
  private fwId: string | undefined;
  private ticker: TimerHandle | undefined;
  private stopped = false;
  private leading = false;
  private election: LeaderElection | undefined;
  private readonly instanceId: string;
  private startedAtMs = 0;
  private markStopped: () => void = () => {};
  private readonly stoppedPromise = new Promise<void>((resolve) => (this.markStopped = resolve));
  /** Counters for `/metrics`. */
  readonly stats = { effectErrors: 0, launchFailures: 0, updatesDropped: 0 };
  /** Status updates waiting for the input that takes them (see onUpdate). */
  private updateBatch: Array<{ status: CoreStatus; ack: Acknowledger | undefined }> | undefined;
  /** Status updates received and not yet applied. */
  private updatesPending = 0;

  constructor(private readonly options: MarathonOptions) {
    this.cluster = options.cluster ?? DEFAULT_CLUSTER;
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.rng = options.rng ?? new SeededRng(crypto.randomUUID());
    this.log = options.log ?? silentLogger;
    this.core = new MarathonCore(this.rng.fork("marathon-core"), options.core);
    this.instanceId = this.rng.fork("instance").uuid();
  }

  httpUrl(): string {
    return this.url;
  }

  frameworkId(): string | undefined {
    return this.fwId;
  }

  onEvent(listener: (event: MarathonEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(): Promise<void> {
    this.startedAtMs = this.clock.now();
    this.store = await this.openStore();
    if (!this.options.leaderElection) {
      await this.loadState();
      await this.startHttp();
      await this.startDriver();
      return;
    }
    // Several Marathons: serve HTTP (standbys proxy to the leader) and campaign.
    await this.startHttp();
    const lease = this.store as Partial<LeaseStore>;
    if (typeof lease.leaseRead !== "function") throw new Error("createMarathon: leaderElection needs a store with a lease (JetStream or memory)");
    this.election = new LeaderElection({
      store: lease as LeaseStore,
      self: { id: this.instanceId, url: this.selfUrl() },
      clock: this.clock,
      timers: this.timers,
      log: this.log,
      ...(this.options.leaderElection.leaseMs !== undefined ? { leaseMs: this.options.leaderElection.leaseMs } : {}),
      onElected: () => void this.lead(),
      onDeposed: () => void this.abdicate(),
    });
    await this.election.start();
  }

  /** Elected: load the state and take the framework over. */
  private async lead(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.loadState();
      await this.startDriver();
    } catch (err) {
      this.log.error({ err }, "marathon: could not take over as leader");
      await this.abdicate();
    }
  }

  /** Deposed (another Marathon leads): stop acting at once; this instance is done. */
  private async abdicate(): Promise<void> {
    this.leading = false;
    await this.stop();
  }

  private async loadState(): Promise<void> {
    const loadStartedMs = this.clock.now();
    const state = await this.store!.load();
    this.fwId = state.frameworkId;
    // What a new leader took over, for the operator reading the log after a failover.
    this.log.info(
      { frameworkId: state.frameworkId, apps: state.apps.length, instances: state.instances.length, deployments: state.deployments.length, loadMs: this.clock.now() - loadStartedMs },
      "marathon: state loaded",
    );
    await this.input(() => this.core.recover(state, this.clock.now()));
    this.health = new HealthChecker(this.core, this.options.healthChecks ?? {}, (id, checkIndex, ok) =>
      void this.input(() => this.core.health(id, checkIndex, ok, this.clock.now())),
    );
    this.readiness = new ReadinessChecker(this.core, this.options.healthChecks ?? {}, (id, probe) =>
      void this.input(() => this.core.readinessResult(id, probe, this.clock.now())),
    );
    this.leading = true;
  }

  private async startHttp(): Promise<void> {
    if (this.options.http === false) return;
    this.http = createMarathonHttp({
      core: this.core,
      clock: this.clock,
      input: (fn) => this.input(fn),
      info: () => ({ frameworkId: this.fwId, url: this.url, frameworkName: this.options.frameworkName ?? MARATHON_DEFAULTS.frameworkName, role: this.role(), cluster: this.cluster, startedAtMs: this.startedAtMs }),
      leadership: () => ({ leading: this.leading && !this.stopped, leaderUrl: this.options.leaderElection ? this.election?.leader()?.url : this.selfUrl(), selfUrl: this.selfUrl() }),
      onEvent: (l) => this.onEvent(l),
      emit: (e) => this.emit(e),
      metrics: () => this.metrics(),
      log: this.log,
    });
    await this.http.listen({ host: this.options.httpHost ?? MARATHON_DEFAULTS.httpHost, port: this.options.httpPort ?? MARATHON_DEFAULTS.httpPort });
    const address = this.http.server.address();
    if (address === null || typeof address === "string") throw new Error(`unexpected HTTP address ${String(address)}`);
    this.url = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
  }

  private async startDriver(): Promise<void> {
    if (this.stopped) return;
    this.driver = createSchedulerDriver({
      transport: this.options.transport,
      cluster: this.cluster,
      framework: {
        name: this.options.frameworkName ?? MARATHON_DEFAULTS.frameworkName,
        roles: [this.role()],
        ...(this.options.principal ? { principal: this.options.principal } : {}),
        failoverTimeoutSeconds: this.options.failoverTimeoutSeconds ?? MARATHON_DEFAULTS.failoverTimeoutSeconds,
        checkpoint: true,
        ...(this.fwId ? { id: this.fwId } : {}),
      },
      clock: this.clock,
      timers: this.timers,
      rng: this.rng.fork("driver"),
      log: this.log,
      ...(this.options.requestTimeoutMs ? { requestTimeoutMs: this.options.requestTimeoutMs } : {}),
      // Updates are acknowledged once their batch is applied (see onUpdate).
      autoAcknowledge: false,
      callbacks: {
        subscribed: (info) => this.subscribed(info.frameworkId),
        offers: (offers) => this.onOffers(offers),
        rescind: (offerId) => void this.offers.delete(offerId),
        update: (status, ack) => {
          this.options.onStatusUpdate?.(this.driver?.frameworkId() ?? this.fwId ?? "", status);
          this.onUpdate(status, ack);
        },
        error: (message) => this.log.error({ message }, "marathon: the master refused this instance"),
        disconnected: () => this.offers.clear(),
      },
    });
    await this.driver.start();
    this.scheduleTick();
    this.log.info({ url: this.url, frameworkId: this.fwId }, "marathon started");
  }

  /** The URL this instance is known by (see {@link MarathonOptions.advertisedUrl}). */
  private selfUrl(): string {
    return (this.options.advertisedUrl ?? this.url).replace(/\/+$/, "");
  }

  whenStopped(): Promise<void> {
    return this.stoppedPromise;
  }

  /** True while this instance leads (always, without leader election, once started). */
  isLeader(): boolean {
    return this.leading && !this.stopped;
  }

  async stop(options: { teardown?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.ticker?.cancel();
    this.health?.stop();
    this.readiness?.stop();
    await this.driver?.stop(options.teardown ? { teardown: true } : undefined).catch(() => undefined);
    // Released after the driver stopped, so the successor's failover finds us gone.
    await this.election?.stop().catch(() => undefined);
    await this.http?.close().catch(() => undefined);
    await this.queue.run(async () => undefined);
    await this.store?.close().catch(() => undefined);
    this.markStopped();
  }

  private role(): string {
    return this.options.role ?? DEFAULT_FRAMEWORK_ROLE;
  }

  private async openStore(): Promise<MarathonStore> {
    if (this.options.store) return this.options.store;
    if (!hasConnection(this.options.transport)) throw new Error("createMarathon: without a NATS transport a `store` must be given");
    const replicas = this.options.storeReplicas;
    return JetStreamMarathonStore.open(this.options.transport.connection, { bucket: marathonBucket(this.cluster), log: this.log, ...(replicas !== undefined ? { replicas } : {}) });
  }

  /** Runs one core input and carries its effects out, in order, after the previous input's. */
  input<T extends MarathonEffect[] | { effects: MarathonEffect[] }>(fn: () => T): Promise<T> {
    return this.queue.run(async () => {
      const result = fn();
      const effects = Array.isArray(result) ? result : result.effects;
      await this.apply(effects);
      return result;
    });
  }

  /**
   * Carries effects out in order without waiting for each in turn (a store round trip per
   * instance would bound the launch rate): store writes leave at once, those to one key one after
   * the other; a launch waits for the writes of its own instances only (an instance whose write
   * failed must not be launched: after a restart Marathon would not know it); the input is done
   * once every write and launch is. Failed launches are then abandoned one by one.
   */
  private async apply(effects: MarathonEffect[]): Promise<void> {
    const writes = new Map<string, Promise<boolean>>(); // by store key: did its last write succeed?
    const launches: Array<Promise<LaunchFailure | undefined>> = [];
    for (const effect of effects) {
      if (effect.type === "launch") {
        const saved = Promise.all(effect.tasks.map((t) => writes.get(`instance.${t.taskId}`) ?? true));
        launches.push(saved.then((ok) => (ok.every(Boolean) ? this.sendLaunch(effect) : { effect, err: new Error("the instances could not be persisted") })));
        continue;
      }
      const key = storeKeyOf(effect);
      if (key === undefined) {
        try {
          await this.applyOne(effect);
        } catch (err) {
          this.stats.effectErrors++;
          this.log.warn({ err, effect: effect.type }, "marathon: effect failed");
        }
        continue;
      }
      const previous = writes.get(key);
      const write = previous === undefined ? this.applyOne(effect) : previous.then(() => this.applyOne(effect));
      writes.set(
        key,
        write.then(
          () => true,
          (err: unknown) => {
            this.stats.effectErrors++;
            this.log.warn({ err, effect: effect.type }, "marathon: effect failed");
            return false;
          },
        ),
      );
    }
    await Promise.all(writes.values());
    for (const failed of await Promise.all(launches)) if (failed) await this.abandonLaunch(failed.effect, failed.err);
  }

  private async abandonLaunch(effect: Extract<MarathonEffect, { type: "launch" }>, err: unknown): Promise<void> {
    this.stats.launchFailures++;
    const taskIds = effect.tasks.map((t) => t.taskId);
    this.log.warn({ err, offerId: effect.offerId, taskIds }, "marathon: launch failed; the instances go back to the queue");
    void this.driver?.decline([effect.offerId], { refuseSeconds: this.core.config.unfitDeclineRefuseSeconds }).catch(() => undefined);
    // Not through input(): we are inside the queue already.
    await this.apply(this.core.launchFailed(taskIds, this.clock.now()));
  }

  private async applyOne(effect: MarathonEffect): Promise<void> {
    const store = this.store!;
    switch (effect.type) {
      case "putApp":
        return store.put("app", effect.record.app.id, effect.record);
      case "deleteApp":
        return store.delete("app", effect.appId);
      case "putDeployment":
        return store.put("deployment", effect.deployment.id, effect.deployment);
      case "deleteDeployment":
        return store.delete("deployment", effect.id);
      case "putInstance":
        return store.put("instance", effect.instance.id, effect.instance);
      case "deleteInstance":
        return store.delete("instance", effect.id);
      case "putGroup":
        return store.put("group", effect.group.id, effect.group);
      case "deleteGroup":
        return store.delete("group", effect.id);
      case "putRootVersion":
        return store.put("rootversion", effect.change.version, effect.change);
      case "deleteRootVersion":
        return store.delete("rootversion", effect.version);
      case "putRetiredApp":
        return store.put("retiredapp", effect.record.app.id, effect.record);
      case "deleteRetiredApp":
        return store.delete("retiredapp", effect.appId);
      case "putDelay":
        return store.put("delay", effect.appId, { appId: effect.appId, delay: effect.delay });
      case "deleteDelay":
        return store.delete("delay", effect.appId);
      case "event":
        return this.emit(effect.event);
      case "suppress":
        void this.driver?.suppress().catch((err: unknown) => this.log.warn({ err }, "suppress failed"));
        return;
      case "revive":
        void this.driver?.revive().catch((err: unknown) => this.log.warn({ err }, "revive failed"));
        return;
      case "decline":
        for (const id of effect.offerIds) this.offers.delete(id);
        void this.driver?.decline(effect.offerIds, { refuseSeconds: effect.refuseSeconds }).catch(() => undefined);
        return;
      case "kill":
        void this.driver?.kill(effect.taskId, effect.agentId || undefined, effect.gracePeriodSeconds).catch((err: unknown) => this.log.warn({ err, taskId: effect.taskId }, "kill failed"));
        return;
      case "launch":
        return this.launch(effect);
    }
  }

  private async launch(effect: Extract<MarathonEffect, { type: "launch" }>): Promise<void> {
    const failed = await this.sendLaunch(effect);
    if (failed) await this.abandonLaunch(failed.effect, failed.err);
  }

  /** Sends the launch; answers how it failed, if it did. */
  private async sendLaunch(effect: Extract<MarathonEffect, { type: "launch" }>): Promise<LaunchFailure | undefined> {
    this.offers.delete(effect.offerId);
    const driver = this.driver;
    try {
      if (!driver) throw new Error("no driver");
      // As Marathon: what the launch leaves of the offer comes back in the next allocation
      // cycle (no filter), so an agent keeps taking maxInstancesPerOffer per cycle.
      await driver.accept([effect.offerId], effect.tasks, { refuseSeconds: 0 });
      return undefined;
    } catch (err) {
      return { effect, err };
    }
  }

  private emit(event: MarathonEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.warn({ err }, "event listener failed");
      }
    }
  }

  private async subscribed(frameworkId: string): Promise<void> {
    if (this.fwId !== frameworkId) {
      this.fwId = frameworkId;
      await this.store!.setFrameworkId(frameworkId);
    }
    // Learn the truth about every task: ours explicitly (unknown ones come back GONE/UNKNOWN and
    // are replaced), all of the master's implicitly (those we do not know are killed).
    const known = [...this.core.unorderedInstances()].map((i) => ({ taskId: i.id, agentId: i.agentId }));
    const driver = this.driver;
    if (!driver) return;
    // Sent after the callback returns: the driver's own calls wait for the subscription to settle.
    this.timers.set(0, () => {
      if (known.length > 0) void driver.reconcile(known).catch((err: unknown) => this.log.warn({ err }, "reconcile failed"));
      void driver.reconcile().catch((err: unknown) => this.log.warn({ err }, "implicit reconcile failed"));
      void this.input(() => this.core.subscribed(this.clock.now()));
    });
  }

  /**
   * Queued as an input without holding the driver up until the launches are written and sent:
   * status updates keep arriving (and batching) meanwhile. The input queue keeps the order.
   */
  private onOffers(offers: OfferView[]): void {
    for (const o of offers) this.offers.set(o.id, o);
    void this.input(() => this.core.offers(offers.map((o) => ({ id: o.id, agentId: o.agentId, hostname: o.hostname, role: o.role, resources: o.resources, attributes: o.attributes })), this.clock.now())).catch(
      (err: unknown) => this.log.warn({ err }, "marathon: offers not processed"),
    );
  }

  /**
   * Status updates are applied in batches: every update that arrives while earlier inputs are
   * being applied joins one input, so the core converges once per batch rather than once per
   * update. Each is acknowledged once its batch is applied (persisted); one that is dropped or
   * fails is not, and the agent sends it again.
   */
  private onUpdate(status: TaskStatus, ack: Acknowledger | undefined): void {
    if (this.updatesPending >= MAX_PENDING_STATUS_UPDATES) {
      this.stats.updatesDropped++;
      this.log.warn({ taskId: status.taskId, pending: this.updatesPending }, "marathon: too many status updates pending; the agent will send this one again");
      return;
    }
    this.updatesPending++;
    const entry = { status: coreStatus(status), ack };
    if (this.updateBatch) {
      this.updateBatch.push(entry);
      return;
    }
    const batch = [entry];
    this.updateBatch = batch;
    void this.input(() => {
      if (this.updateBatch === batch) this.updateBatch = undefined;
      return this.core.statusUpdates(batch.map((e) => e.status), this.clock.now());
    })
      .then(
        () => {
          for (const e of batch) void e.ack?.acknowledge().catch((err: unknown) => this.log.debug({ err, taskId: e.status.taskId }, "acknowledgement failed"));
        },
        (err: unknown) => this.log.warn({ err }, "marathon: status updates not applied; the agents will send them again"),
      )
      .finally(() => (this.updatesPending -= batch.length));
  }

  private scheduleTick(): void {
    if (this.stopped) return;
    const interval = this.options.tickIntervalMs ?? MARATHON_DEFAULTS.tickIntervalMs;
    const now = this.clock.now();
    const wake = this.core.nextWakeMs(now);
    const delay = wake === undefined ? interval : Math.max(10, Math.min(interval, wake - now + 5));
    this.ticker = this.timers.set(delay, () => {
      void this.input(() => this.core.tick(this.clock.now()))
        .then(() => {
          this.health?.poll(this.clock.now());
          this.readiness?.poll(this.clock.now());
        })
        .catch((err: unknown) => this.log.warn({ err }, "tick failed"))
        .finally(() => this.scheduleTick());
    });
  }

  private metrics(): string {
    const c = this.core.counters;
    const apps = this.core.appList();
    const instances = [...this.core.unorderedInstances()];
    const lines = [
      "# HELP marathon_apps Apps defined.",
      "# TYPE marathon_apps gauge",
      `marathon_apps ${apps.length}`,
      "# HELP marathon_instances Instances known, by state.",
      "# TYPE marathon_instances gauge",
      ...["staging", "starting", "running", "killing", "unreachable"].map((s) => `marathon_instances{state="${s}"} ${instances.filter((i) => i.state === s).length}`),
      "# HELP marathon_deployments Running deployments.",
      "# TYPE marathon_deployments gauge",
      `marathon_deployments ${this.core.deploymentList().length}`,
      "# HELP marathon_launch_queue_instances Instances waiting to launch.",
      "# TYPE marathon_launch_queue_instances gauge",
      `marathon_launch_queue_instances ${this.core.queuedInstances()}`,
    ];
    const counters: Array<[string, string, number]> = [
      ["marathon_tasks_launched_total", "Tasks launched.", c.launched],
      ["marathon_tasks_killed_total", "Kills issued.", c.killed],
      ["marathon_tasks_failed_total", "Tasks that ended unexpectedly.", c.failed],
      ["marathon_offers_processed_total", "Offers processed.", c.offersProcessed],
      ["marathon_offers_declined_total", "Offers declined.", c.offersDeclined],
      ["marathon_deployments_succeeded_total", "Deployments that reached their goal.", c.deploymentsSucceeded],
      ["marathon_deployments_failed_total", "Deployments canceled or superseded.", c.deploymentsFailed],
      ["marathon_launch_failures_total", "Launches the master refused or that timed out.", this.stats.launchFailures],
      ["marathon_effect_errors_total", "Effects that failed (store writes, calls).", this.stats.effectErrors],
      ["marathon_status_updates_dropped_total", "Status updates dropped unacknowledged because too many were pending.", this.stats.updatesDropped],
    ];
    for (const [name, help, value] of counters) lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${value}`);
    return lines.join("\n") + "\n";
  }
}

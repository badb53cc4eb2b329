/**
 * {@link Transport} over a real NATS connection (`@nats-io/transport-node`).
 *
 * @module
 */

import {
  connect,
  errors as natsErrors,
  type Msg,
  type NatsConnection,
  type NodeConnectionOptions,
  type Status,
} from "@nats-io/transport-node";
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
} from "./transport.ts";

/** Reconnect policy of {@link connectNats}. */
export interface ReconnectOptions {
  /**
   * Attempts per server before giving up for good; -1 never gives up, which is what long-running
   * components want: they must outlive a nats-server restart or upgrade.
   * @default -1
   */
  maxAttempts?: number;
  /** Pause between attempts against the same server. @default 1000 */
  timeWaitMs?: number;
  /** Random extra pause (0..jitterMs) so a fleet does not reconnect in lockstep. @default 250 */
  jitterMs?: number;
  /**
   * Keep retrying when the very first connection fails instead of rejecting. Off by default so a
   * wrong `--nats` URL gives an immediate, clear error.
   * @default false
   */
  waitOnFirstConnect?: boolean;
}

/** Options of {@link connectNats}. */
export interface NatsTransportOptions {
  /** `nats://host:port` URL(s) of the NATS cluster. */
  servers: string | string[];
  /** Client name shown by the server's monitoring, e.g. `"corral-agent-7"`. */
  name: string;
  /** Where connection events and handler failures are logged. @default silentLogger */
  log?: Logger;
  /** @default { maxAttempts: -1, timeWaitMs: 1000, jitterMs: 250, waitOnFirstConnect: false } */
  reconnect?: ReconnectOptions;
  /** How long one connection handshake may take. @default 5000 */
  connectTimeoutMs?: number;
  /** Timeout for {@link Transport.request} when the call gives none. @default 5000 */
  requestTimeoutMs?: number;
  /** How long {@link Transport.close} waits for an orderly drain before closing hard. @default 2000 */
  closeTimeoutMs?: number;
  /**
   * Further options passed to the NATS client as they are (credentials, TLS, inbox prefix...).
   * Corral's own options above win on conflict.
   * @default {}
   */
  nats?: Partial<NodeConnectionOptions>;
}

/** A connection event, simplified from the NATS client's status stream. */
export type NatsTransportEvent =
  | { type: "disconnect"; server: string }
  | { type: "reconnecting" }
  | { type: "reconnect"; server: string }
  | { type: "error"; error: Error }
  | { type: "close" };

/** A {@link Transport} that also exposes the NATS connection underneath. */
export interface NatsTransport extends Transport {
  /** The underlying connection, for JetStream and KV users. Do not close it directly. */
  readonly connection: NatsConnection;
  /**
   * Calls `listener` on every connection event (after it happened), e.g. to log or to
   * re-announce after a reconnect. Returns a function that removes the listener.
   */
  onEvent(listener: (event: NatsTransportEvent) => void): () => void;
}

/** Default of {@link NatsTransportOptions.reconnect}. */
export const DEFAULT_RECONNECT: Required<ReconnectOptions> = {
  maxAttempts: -1,
  timeWaitMs: 1_000,
  jitterMs: 250,
  waitOnFirstConnect: false,
};

/**
 * Connects to NATS and returns a {@link NatsTransport}.
 * @throws whatever the NATS client throws when the first connection fails (unless
 * `reconnect.waitOnFirstConnect`).
 */
export async function connectNats(options: NatsTransportOptions): Promise<NatsTransport> {
  const log = options.log ?? silentLogger;
  const reconnect = { ...DEFAULT_RECONNECT, ...options.reconnect };
  const connection = await connect({
    // Every request would otherwise capture a stack trace up front, for the rare one that times
    // out: measurable at thousands of calls per second. Our errors name the subject instead.
    noAsyncTraces: true,
    ...options.nats,
    servers: options.servers,
    name: options.name,
    timeout: options.connectTimeoutMs ?? 5_000,
    reconnect: true,
    maxReconnectAttempts: reconnect.maxAttempts,
    reconnectTimeWait: reconnect.timeWaitMs,
    reconnectJitter: reconnect.jitterMs,
    waitOnFirstConnect: reconnect.waitOnFirstConnect,
  });
  return new NatsTransportImpl(connection, options, log);
}

class NatsTransportImpl implements NatsTransport {
  readonly connection: NatsConnection;
  private readonly log: Logger;
  private readonly requestTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly listeners = new Set<(event: NatsTransportEvent) => void>();
  private closing: Promise<void> | undefined;

  constructor(connection: NatsConnection, options: NatsTransportOptions, log: Logger) {
    this.connection = connection;
    this.log = log;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 2_000;
    void this.watchStatus();
    void connection.closed().then((err) => {
      if (err) log.error({ err }, "nats connection closed with an error");
      this.emit({ type: "close" });
    });
  }

  publish(subject: string, data: Uint8Array): void {
    this.ensureOpen(subject);
    try {
      this.connection.publish(subject, data);
    } catch (err) {
      throw translateError(err, subject);
    }
  }

  subscribe(subject: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription {
    this.ensureOpen(subject);
    const log = this.log;
    let sub;
    try {
      sub = this.connection.subscribe(subject, {
        ...(opts?.queue === undefined ? {} : { queue: opts.queue }),
        // The callback form delivers synchronously from the client's read loop, in order, with no
        // per-subscription iterator to drain; deliverSafely keeps handler failures out of it.
        callback: (err: Error | null, msg: Msg) => {
          if (err) {
            log.warn({ err, subject }, "nats subscription error");
            return;
          }
          deliverSafely(handler, toIncoming(msg), log);
        },
      });
    } catch (err) {
      throw translateError(err, subject);
    }
    return {
      unsubscribe: () => {
        if (sub.isClosed() || this.connection.isClosed()) return;
        try {
          sub.unsubscribe();
        } catch (err) {
          log.debug({ err, subject }, "unsubscribe after close ignored");
        }
      },
    };
  }

  async request(subject: string, data: Uint8Array, opts?: RequestOptions): Promise<Uint8Array> {
    this.ensureOpen(subject);
    const timeout = opts?.timeoutMs ?? this.requestTimeoutMs;
    try {
      const reply = await this.connection.request(subject, data, { timeout });
      return reply.data;
    } catch (err) {
      throw translateError(err, subject);
    }
  }

  respond(msg: IncomingMessage, data: Uint8Array): void {
    if (!msg.reply) return;
    this.publish(msg.reply, data);
  }

  async flush(): Promise<void> {
    this.ensureOpen(undefined);
    try {
      await this.connection.flush();
    } catch (err) {
      throw translateError(err, undefined);
    }
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  onEvent(listener: (event: NatsTransportEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Drains (finishing queued deliveries and sends) when it can, closes hard when it cannot. */
  private async shutdown(): Promise<void> {
    const nc = this.connection;
    if (nc.isClosed()) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.closeTimeoutMs);
    });
    try {
      const outcome = await Promise.race([nc.drain().then(() => "drained" as const), deadline]);
      if (outcome === "timeout") this.log.warn({ timeoutMs: this.closeTimeoutMs }, "nats drain timed out; closing");
    } catch (err) {
      this.log.debug({ err }, "nats drain failed; closing");
    } finally {
      clearTimeout(timer);
    }
    if (!nc.isClosed()) await nc.close();
  }

  private ensureOpen(subject: string | undefined): void {
    if (this.closing !== undefined || this.connection.isClosed()) {
      throw new TransportError("CORRAL_ERR_TRANSPORT_CLOSED", "transport is closed", subject === undefined ? {} : { subject });
    }
  }

  private async watchStatus(): Promise<void> {
    try {
      for await (const status of this.connection.status()) {
        const event = toEvent(status);
        if (event === undefined) continue;
        this.logEvent(event);
        this.emit(event);
      }
    } catch (err) {
      this.log.debug({ err }, "nats status stream ended");
    }
  }

  private logEvent(event: NatsTransportEvent): void {
    switch (event.type) {
      case "disconnect":
        this.log.warn({ server: event.server }, "nats disconnected");
        break;
      case "reconnect":
        this.log.info({ server: event.server }, "nats reconnected");
        break;
      case "error":
        this.log.error({ err: event.error }, "nats error");
        break;
      default:
        this.log.debug({ event: event.type }, "nats status");
    }
  }

  private emit(event: NatsTransportEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err, event: event.type }, "transport event listener failed");
      }
    }
  }
}

function toIncoming(msg: Msg): IncomingMessage {
  return msg.reply ? { subject: msg.subject, data: msg.data, reply: msg.reply } : { subject: msg.subject, data: msg.data };
}

function toEvent(status: Status): NatsTransportEvent | undefined {
  switch (status.type) {
    case "disconnect":
      return { type: "disconnect", server: status.server };
    case "reconnecting":
      return { type: "reconnecting" };
    case "reconnect":
      return { type: "reconnect", server: status.server };
    case "error":
      return { type: "error", error: status.error };
    default:
      // Pings, cluster updates and the like are noise to components.
      return undefined;
  }
}

/** Maps the NATS client's errors onto stable {@link TransportError} codes. */
function translateError(err: unknown, subject: string | undefined): TransportError {
  if (err instanceof TransportError) return err;
  const where = subject === undefined ? {} : { subject };
  // Request failures arrive wrapped in a RequestError whose cause says what really happened.
  const root = err instanceof natsErrors.RequestError && err.cause !== undefined ? err.cause : err;
  const noResponders =
    root instanceof natsErrors.NoRespondersError || (err instanceof natsErrors.RequestError && err.isNoResponders());
  if (noResponders) {
    return new TransportError("CORRAL_ERR_NO_RESPONDERS", `no responders on ${subject}`, { ...where, cause: err });
  }
  if (root instanceof natsErrors.TimeoutError) {
    return new TransportError("CORRAL_ERR_REQUEST_TIMEOUT", `request to ${subject} timed out`, { ...where, cause: err });
  }
  if (root instanceof natsErrors.ClosedConnectionError || root instanceof natsErrors.DrainingConnectionError) {
    return new TransportError("CORRAL_ERR_TRANSPORT_CLOSED", "transport is closed", { ...where, cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new TransportError("CORRAL_ERR_TRANSPORT", message, { ...where, cause: err });
}

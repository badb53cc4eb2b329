/**
 * The message bus as components see it. Production implements it over NATS
 * (`sdk/nats-transport.ts`); the simulator implements it over its simulated network. Shells only
 * ever talk to this interface, so the same shell code runs in both.
 *
 * @module
 */

/** A message as delivered to a subscription handler. */
export interface IncomingMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Where to send an answer, when the sender made a request. */
  readonly reply?: string;
}

/** A live subscription. */
export interface Subscription {
  /** Stops delivery. Calling it again, or after the transport closed, does nothing. */
  unsubscribe(): void;
}

/**
 * Handles one message. May be async; a thrown exception or a rejected promise is caught and logged
 * by the transport and never ends the subscription. Messages of one subscription are handed over
 * in arrival order, but the transport does not wait for an async handler before the next one.
 */
export type MessageHandler = (msg: IncomingMessage) => void | Promise<void>;

/** Options of {@link Transport.subscribe}. */
export interface SubscribeOptions {
  /**
   * Queue group: each message goes to one member of the group instead of every subscriber.
   * @default undefined (every subscriber gets every message)
   */
  queue?: string;
}

/** Options of {@link Transport.request}. */
export interface RequestOptions {
  /** How long to wait for the reply. @default 5000 */
  timeoutMs?: number;
}

/** The default of {@link RequestOptions.timeoutMs}. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

/**
 * The bus. Delivery is at-most-once: a message published while nobody listens, or while the
 * connection is down for longer than the client buffers, is gone. Everything that must arrive is
 * retried by the protocol above (status updates until acknowledged, registrations until answered).
 */
export interface Transport {
  /**
   * True for a transport whose messages never leave this process (the simulator's network):
   * senders, which pass the transport to `encodeEnvelope`, then hand it envelopes that carry their
   * checked message instead of its bytes, sparing a serialization and a parse per message.
   * @default undefined (bytes only)
   */
  readonly inProcess?: boolean;

  /**
   * Sends `data` to `subject`. Never waits; during a reconnect the message is buffered.
   * @throws {TransportError} `CORRAL_ERR_TRANSPORT_CLOSED` after {@link close}.
   */
  publish(subject: string, data: Uint8Array): void;

  /**
   * Delivers messages on `subject` (NATS wildcards allowed) to `handler` until unsubscribed.
   * Subscriptions survive reconnects.
   */
  subscribe(subject: string, handler: MessageHandler, opts?: SubscribeOptions): Subscription;

  /**
   * Sends `data` as a request and resolves with the first reply's bytes.
   * @throws {TransportError} `CORRAL_ERR_REQUEST_TIMEOUT`, `CORRAL_ERR_NO_RESPONDERS` (nobody
   * subscribes to `subject`) or `CORRAL_ERR_TRANSPORT_CLOSED`.
   */
  request(subject: string, data: Uint8Array, opts?: RequestOptions): Promise<Uint8Array>;

  /** Answers a request: publishes `data` to `msg.reply`. Does nothing when there is no reply subject. */
  respond(msg: IncomingMessage, data: Uint8Array): void;

  /** Resolves once everything published so far has reached the server (or its equivalent). */
  flush(): Promise<void>;

  /** Stops all subscriptions and releases the connection. Idempotent. */
  close(): Promise<void>;
}

/** Stable codes of {@link TransportError}. */
export type TransportErrorCode =
  | "CORRAL_ERR_REQUEST_TIMEOUT"
  | "CORRAL_ERR_NO_RESPONDERS"
  | "CORRAL_ERR_TRANSPORT_CLOSED"
  | "CORRAL_ERR_TRANSPORT";

/**
 * The one error type transports raise, so callers branch on `code` rather than on a client
 * library's classes (the simulator raises the same codes).
 */
export class TransportError extends Error {
  readonly code: TransportErrorCode;
  readonly subject: string | undefined;
  constructor(code: TransportErrorCode, message: string, options?: { subject?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TransportError";
    this.code = code;
    this.subject = options?.subject;
  }
}

/** True when `err` is a {@link TransportError}, optionally with the given code. */
export function isTransportError(err: unknown, code?: TransportErrorCode): err is TransportError {
  return err instanceof TransportError && (code === undefined || err.code === code);
}

/**
 * The logging surface the bus layer needs; a pino logger satisfies it. Kept structural so the SDK
 * does not force a logging library on framework authors.
 */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A logger that discards everything. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/**
 * Calls `handler` with `msg`, catching both a synchronous throw and a rejected promise and logging
 * them. Transport implementations deliver through this so that one bad handler can never break a
 * subscription or the client library's read loop.
 *
 * @returns `false` if the handler threw synchronously (a rejection is only logged later).
 */
export function deliverSafely(handler: MessageHandler, msg: IncomingMessage, log: Logger): boolean {
  try {
    const result = handler(msg);
    if (result !== undefined && typeof (result as Promise<void>).then === "function") {
      // The closure is made only for async handlers: this runs once per bus message.
      (result as Promise<void>).then(undefined, (err: unknown) => reportHandlerFailure(log, msg.subject, err));
    }
    return true;
  } catch (err) {
    reportHandlerFailure(log, msg.subject, err);
    return false;
  }
}

function reportHandlerFailure(log: Logger, subject: string, err: unknown): void {
  log.error({ err, subject }, "message handler failed");
}

/**
 * Where the master keeps its registry (what cannot be rebuilt from agents re-registering: admitted
 * agents, subscribed frameworks, torn-down framework ids). Production uses a JetStream key-value
 * bucket on the same NATS cluster as the bus; the simulator uses {@link MemoryRegistryStore}.
 *
 * The core emits `persist`/`unpersist` effects; the shell hands them to a {@link RegistryWriter},
 * which applies them in order per key, coalesces superseded writes and retries failed ones, so a
 * slow or failing store never blocks, reorders or corrupts the core.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import type { TimerHandle, Timers } from "../sdk/clock.ts";
import { KvLeaseStore } from "../sdk/leader-lease.ts";
import { roleNameError } from "../sdk/roles.ts";
import type { Logger } from "../sdk/transport.ts";
import { validateMessage } from "../sdk/wire/codec.ts";
import type { RegistryRecord } from "./core.ts";

/** The kinds of registry records. */
export type RegistryKind = RegistryRecord["kind"];

export const REGISTRY_KINDS: readonly RegistryKind[] = ["agent", "framework", "torn-down", "unreachable-agent", "gone-agent", "weight", "quota"];

/** The key of the masters' leader lease in the registry bucket (see `sdk/leader-lease.ts`); not a record. */
export const LEADER_LEASE_KEY = "leader";

/** Durable storage of the master's registry. Implementations need not serialise calls themselves. */
export interface RegistryStore {
  /** Every record currently stored (a corrupt one is skipped and logged, never returned half-read). */
  load(): Promise<RegistryRecord[]>;
  /** Creates or replaces the record with the same kind and id. */
  put(record: RegistryRecord): Promise<void>;
  /** Removes a record; removing one that does not exist is not an error. */
  delete(kind: RegistryKind, id: string): Promise<void>;
  /** Releases what the store holds. Idempotent. */
  close(): Promise<void>;
}

// ------------------------------------------------------------------------------------------------
// Keys and record validation
// ------------------------------------------------------------------------------------------------

/**
 * Escapes an id for a KV key: letters, digits, `_` and `-` stay, every other UTF-8 byte becomes
 * `=XX`. Master-generated ids (`m-1a2b3c4d-S1`) therefore stay readable, while an id chosen by a
 * framework can never produce an invalid or ambiguous key.
 */
export function escapeKeyToken(id: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(id)) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(ch) ? ch : `=${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Reverses {@link escapeKeyToken}; `undefined` when `token` is not a valid escaped id. */
export function unescapeKeyToken(token: string): string | undefined {
  if (!/^(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+$/.test(token)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < token.length; i++) {
    if (token[i] === "=") {
      bytes.push(parseInt(token.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(token.charCodeAt(i));
    }
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
  } catch {
    return undefined;
  }
}

/** The key of a record: `<kind>.<id>`, e.g. `agent.<id>` or `torn-down.<id>` (id escaped). */
export function registryKey(kind: RegistryKind, id: string): string {
  return `${kind}.${escapeKeyToken(id)}`;
}

/** Splits a key made by {@link registryKey}; `undefined` for anything else. */
export function parseRegistryKey(key: string): { kind: RegistryKind; id: string } | undefined {
  const dot = key.indexOf(".");
  if (dot < 0) return undefined;
  const kind = key.slice(0, dot) as RegistryKind;
  if (!REGISTRY_KINDS.includes(kind)) return undefined;
  const id = unescapeKeyToken(key.slice(dot + 1));
  return id === undefined ? undefined : { kind, id };
}

/**
 * Checks a record read back from storage (which may have been written by another version or by
 * hand); returns the problem, or `undefined` when the core can recover it without throwing.
 */
export function registryRecordProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "record: must be an object";
  const record = value as Record<string, unknown>;
  if (typeof record.id !== "string" || record.id === "") return "id: must be a non-empty string";
  switch (record.kind) {
    case "torn-down":
      return undefined;
    case "agent": {
      const problems = validateMessage("AgentInfo", record.info);
      return problems.length > 0 ? `info: ${problems.join("; ")}` : undefined;
    }
    case "unreachable-agent":
    case "gone-agent": {
      const problems = validateMessage("AgentInfo", record.info);
      if (problems.length > 0) return `info: ${problems.join("; ")}`;
      return typeof record.sinceMs === "number" && Number.isFinite(record.sinceMs) ? undefined : "sinceMs: must be a finite number";
    }
    case "framework": {
      const problems = validateMessage("FrameworkInfo", record.info);
      if (problems.length > 0) return `info: ${problems.join("; ")}`;
      const roles = (record.info as { roles: string[] }).roles;
      for (const [i, role] of roles.entries()) {
        const problem = roleNameError(role, true);
        if (problem) return `info.roles[${i}]: ${problem}`;
      }
      if (new Set(roles).size !== roles.length) return "info.roles: must be distinct";
      return undefined;
    }
    case "weight":
      return typeof record.weight === "number" && Number.isFinite(record.weight) && record.weight > 0 ? (roleNameError(record.id, false) ?? undefined) : "weight: must be a finite number > 0";
    case "quota": {
      for (const field of ["guarantees", "limits"] as const) {
        const quantities = record[field];
        if (typeof quantities !== "object" || quantities === null || Array.isArray(quantities)) return `${field}: must be an object of resource quantities`;
        for (const [name, value] of Object.entries(quantities)) {
          if (typeof value !== "number" || !Number.isFinite(value) || value < 0) return `${field}.${name}: must be a finite number >= 0`;
        }
      }
      return roleNameError(record.id, false) ?? undefined;
    }
    default:
      return `kind: must be one of ${REGISTRY_KINDS.join(", ")}`;
  }
}

/** Parses one stored value; throws an Error naming the problem. */
function decodeRecord(key: string, text: string): RegistryRecord {
  const parsedKey = parseRegistryKey(key);
  if (!parsedKey) throw new Error(`key '${key}' is not a registry key`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`value is not JSON: ${(err as Error).message}`);
  }
  const problem = registryRecordProblem(value);
  if (problem) throw new Error(problem);
  const record = value as RegistryRecord;
  if (record.kind !== parsedKey.kind || record.id !== parsedKey.id) throw new Error(`record ${record.kind}/${record.id} is stored under key '${key}'`);
  return record;
}

// ------------------------------------------------------------------------------------------------
// In memory
// ------------------------------------------------------------------------------------------------

/**
 * A registry in process memory, for the simulator and tests. Records are copied in and out, so
 * callers can never change stored state by mutating an object. The data outlives {@link close}:
 * a simulated master restart can hand the same store to a new master.
 */
export class MemoryRegistryStore implements RegistryStore {
  private readonly records = new Map<string, RegistryRecord>();

  async load(): Promise<RegistryRecord[]> {
    return [...this.records.values()].map((r) => structuredClone(r));
  }

  async put(record: RegistryRecord): Promise<void> {
    const problem = registryRecordProblem(record);
    if (problem) throw new Error(`invalid registry record: ${problem}`);
    this.records.set(registryKey(record.kind, record.id), structuredClone(record));
  }

  async delete(kind: RegistryKind, id: string): Promise<void> {
    this.records.delete(registryKey(kind, id));
  }

  /** Nothing to release; the data stays. */
  async close(): Promise<void> {}

  /** Number of stored records. */
  get size(): number {
    return this.records.size;
  }
}

// ------------------------------------------------------------------------------------------------
// JetStream KV
// ------------------------------------------------------------------------------------------------

/** Options of {@link JetStreamRegistryStore.open}. */
export interface JetStreamRegistryStoreOptions {
  /** Bucket name (letters, digits, `_`, `-`). */
  bucket: string;
  /** Replicas of the bucket's stream in a clustered JetStream. @default 1 */
  replicas?: number;
  /** Where corrupt records met by {@link RegistryStore.load} are reported. @default silent */
  log?: Logger;
}

/**
 * The registry in a JetStream key-value bucket (created when missing). Keys are `<kind>.<id>`
 * (see {@link REGISTRY_KINDS}); values are the records as JSON. The bucket also holds the masters'
 * leader lease under {@link LEADER_LEASE_KEY} ({@link JetStreamRegistryStore.leaseStore}), so the
 * leader epoch (a revision of this bucket) lives and dies with the registry it guards.
 */
export class JetStreamRegistryStore implements RegistryStore {
  private closed = false;

  private constructor(
    private readonly kv: KV,
    readonly bucket: string,
    private readonly log: Logger | undefined,
  ) {}

  /** Opens (creating if needed) the bucket on `connection`. */
  static async open(connection: NatsConnection, options: JetStreamRegistryStoreOptions): Promise<JetStreamRegistryStore> {
    if (!/^[-\w]+$/.test(options.bucket)) {
      throw new Error(`bucket: '${options.bucket}' is not a valid KV bucket name (letters, digits, '_' and '-' only)`);
    }
    const kv = await new Kvm(connection).create(options.bucket, { history: 1, replicas: options.replicas ?? 1 });
    return new JetStreamRegistryStore(kv, options.bucket, options.log);
  }

  /** The leader lease kept in this bucket. */
  leaseStore(options: { timeoutMs?: number } = {}): KvLeaseStore {
    return new KvLeaseStore(this.kv, { key: LEADER_LEASE_KEY, ...options });
  }

  /**
   * Reads every record in one pass over the bucket's stream (one consumer, not one request per
   * key: a new leader loads thousands of records in tens of milliseconds). Records have two-token
   * keys (`<kind>.<id>`), so the consumer's filter `*.>` leaves out the one-token leader lease:
   * the lease is renewed every few hundred ms, also while a new leader loads, and a key rewritten
   * during the pass can keep the client's "no more pending" end from ever coming (seen with
   * Marathon's bucket, whose lease shares it the same way).
   */
  async load(): Promise<RegistryRecord[]> {
    this.assertOpen();
    const latest = new Map<string, { revision: number; operation: string; text: () => string }>();
    for await (const entry of await this.kv.history({ key: "*.>" })) {
      if (entry.key === LEADER_LEASE_KEY) continue;
      const seen = latest.get(entry.key);
      if (!seen || seen.revision < entry.revision) latest.set(entry.key, { revision: entry.revision, operation: entry.operation, text: () => entry.string() });
    }
    const records: RegistryRecord[] = [];
    for (const key of [...latest.keys()].sort()) {
      const entry = latest.get(key)!;
      if (entry.operation !== "PUT") continue;
      try {
        records.push(decodeRecord(key, entry.text()));
      } catch (err) {
        this.log?.warn({ bucket: this.bucket, key, problem: (err as Error).message }, "skipping corrupt registry record");
      }
    }
    return records;
  }

  async put(record: RegistryRecord): Promise<void> {
    this.assertOpen();
    await this.kv.put(registryKey(record.kind, record.id), JSON.stringify(record));
  }

  async delete(kind: RegistryKind, id: string): Promise<void> {
    this.assertOpen();
    await this.kv.delete(registryKey(kind, id));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`registry store '${this.bucket}' is closed`);
  }
}

// ------------------------------------------------------------------------------------------------
// Ordered, coalescing, retrying writes
// ------------------------------------------------------------------------------------------------

/** One write the core asked for. */
export type RegistryWrite = { type: "put"; record: RegistryRecord } | { type: "delete"; kind: RegistryKind; id: string };

/** Options of {@link RegistryWriter}. */
export interface RegistryWriterOptions {
  store: RegistryStore;
  timers: Timers;
  log: Logger;
  /** First retry delay after a failed write; doubles per failure. @default 100 */
  retryInitialMs?: number;
  /** Longest retry delay. @default 30000 */
  retryMaxMs?: number;
}

/** A write with its place in the order writes were asked for. */
interface Queued {
  write: RegistryWrite;
  seq: number;
}

interface Slot {
  /** The write to apply next (the newest one asked for; older pending ones are superseded). */
  next: Queued | undefined;
  failures: number;
  done: Promise<void>;
}

/**
 * Applies registry writes in the background. Writes to one key happen one at a time and in the
 * order asked; while one is in flight only the newest pending write is kept (it supersedes the
 * others), so at most two writes per key exist at any time. A failed write is retried with
 * doubling backoff until it succeeds or a newer write for its key replaces it.
 *
 * Across keys, puts run side by side, but a delete waits until every put asked for before it
 * (and not superseded since) has landed. The core writes a marker before it removes what the
 * marker replaces (`torn-down` before the framework goes, `unreachable-agent` before the agent
 * goes): were the removal to land while the marker's put is failing, a crash would leave neither,
 * and a new leader would forget the framework was torn down or the agent was lost.
 */
export class RegistryWriter {
  private readonly slots = new Map<string, Slot>();
  private readonly waits = new Set<{ handle: TimerHandle; resolve: () => void }>();
  /**
   * Numbers of the puts asked for and not landed (nor superseded) yet. Numbers only grow and each
   * is added once, so the Set's first entry is the oldest.
   */
  private readonly pendingPuts = new Set<number>();
  /** Deletes waiting for earlier puts, woken when a put stops being pending. */
  private putWaiters: Array<{ seq: number; wake: () => void }> = [];
  private seq = 0;
  private stopped = false;
  /** Failed write attempts so far (for metrics). */
  failures = 0;
  /** Writes applied so far. */
  applied = 0;

  constructor(private readonly options: RegistryWriterOptions) {}

  /** Queues `write`; never throws and never waits. */
  enqueue(write: RegistryWrite): void {
    if (this.stopped) {
      this.options.log.warn({ write: describe(write) }, "registry write after stop ignored");
      return;
    }
    const key = write.type === "put" ? registryKey(write.record.kind, write.record.id) : registryKey(write.kind, write.id);
    const queued = { write, seq: ++this.seq };
    if (write.type === "put") this.pendingPuts.add(queued.seq);
    const slot = this.slots.get(key);
    if (slot) {
      const superseded = slot.next;
      slot.next = queued;
      if (superseded) this.putDone(superseded);
      return;
    }
    const fresh: Slot = { next: queued, failures: 0, done: Promise.resolve() };
    this.slots.set(key, fresh);
    fresh.done = this.pump(key, fresh);
  }

  /** Writes not yet applied (keys with a pending or in-flight write). */
  get pendingKeys(): number {
    return this.slots.size;
  }

  /** Resolves once every queued write is applied, or after `timeoutMs` (false then). */
  async drain(timeoutMs: number): Promise<boolean> {
    let handle: TimerHandle | undefined;
    const timedOut = new Promise<false>((resolve) => {
      handle = this.options.timers.set(timeoutMs, () => resolve(false));
    });
    const settled = (async () => {
      while (this.slots.size > 0) await Promise.all([...this.slots.values()].map((s) => s.done));
      return true as const;
    })();
    const result = await Promise.race([settled, timedOut]);
    handle?.cancel();
    return result;
  }

  /** Stops retrying and accepting writes; in-flight ones finish on their own. */
  stop(): void {
    this.stopped = true;
    for (const wait of this.waits) {
      wait.handle.cancel();
      wait.resolve();
    }
    this.waits.clear();
    this.pendingPuts.clear();
    this.wakePutWaiters();
  }

  private async pump(key: string, slot: Slot): Promise<void> {
    while (slot.next !== undefined && !this.stopped) {
      if (slot.next.write.type === "delete" && this.putPendingBefore(slot.next.seq)) {
        const seq = slot.next.seq;
        await new Promise<void>((wake) => this.putWaiters.push({ seq, wake }));
        continue; // the slot's next write may have changed meanwhile
      }
      const queued = slot.next;
      slot.next = undefined;
      const write = queued.write;
      try {
        await this.apply(write);
        this.applied++;
        slot.failures = 0;
      } catch (err) {
        this.failures++;
        slot.failures++;
        // Log the 1st, 2nd, 4th, 8th... failure of a key so an outage cannot flood the log.
        if ((slot.failures & (slot.failures - 1)) === 0) {
          this.options.log.error({ err, key, write: describe(write), failures: slot.failures }, "registry write failed; will retry");
        }
        if (slot.next === undefined) slot.next = queued;
        if (slot.next !== queued) this.putDone(queued);
        await this.backoff(slot.failures);
        continue;
      }
      this.putDone(queued);
    }
    this.slots.delete(key);
  }

  /** Whether a put asked for before write number `seq` has yet to land. */
  private putPendingBefore(seq: number): boolean {
    const oldest = this.pendingPuts.values().next();
    return !oldest.done && oldest.value < seq;
  }

  /** A write landed or was superseded: when it was a put, deletes that waited for it may go. */
  private putDone(queued: Queued): void {
    if (queued.write.type !== "put") return;
    this.pendingPuts.delete(queued.seq);
    this.wakePutWaiters();
  }

  private wakePutWaiters(): void {
    if (this.putWaiters.length === 0) return;
    const waiting = this.putWaiters;
    this.putWaiters = [];
    for (const waiter of waiting) {
      if (this.stopped || !this.putPendingBefore(waiter.seq)) waiter.wake();
      else this.putWaiters.push(waiter);
    }
  }

  private apply(write: RegistryWrite): Promise<void> {
    return write.type === "put" ? this.options.store.put(write.record) : this.options.store.delete(write.kind, write.id);
  }

  private backoff(failures: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    const initial = this.options.retryInitialMs ?? 100;
    const delay = Math.min(this.options.retryMaxMs ?? 30_000, initial * 2 ** Math.min(failures - 1, 20));
    return new Promise((resolve) => {
      const wait = {
        handle: this.options.timers.set(delay, () => {
          this.waits.delete(wait);
          resolve();
        }),
        resolve,
      };
      this.waits.add(wait);
    });
  }
}

function describe(write: RegistryWrite): string {
  return write.type === "put" ? `put ${write.record.kind}/${write.record.id}` : `delete ${write.kind}/${write.id}`;
}

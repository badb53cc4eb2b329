/**
 * Where Marathon keeps what it must not forget: app definitions with their versions, running
 * deployments, the instances it launched (written before the launch, so a restarted Marathon
 * knows every task it may have started), the apps' launch delays (so a restart does not lift a
 * backoff), the groups created through `/v2/groups` (so empty ones survive, with their
 * dependencies), the versions of the root group (each as what its write changed) with the
 * histories of removed apps that those versions still hold, and its framework id. Production uses a JetStream
 * key-value bucket (`corral_<cluster>_marathon`); tests and the simulator may use
 * {@link MemoryMarathonStore}.
 *
 * Keys: `app.<id>`, `deployment.<id>`, `instance.<id>`, `delay.<app id>`, `group.<id>`,
 * `rootversion.<version>`, `retiredapp.<app id>` (ids escaped as in the master's store) and
 * `framework-id`. Values are JSON. A record that does not read back is skipped and logged.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { escapeKeyToken, unescapeKeyToken } from "../../master/store.ts";
import type { Logger } from "../../sdk/transport.ts";
import type { LaunchDelay } from "./backoff.ts";
import type { AppRecord, Deployment, GroupRecord, Instance, RootVersionChange } from "./core.ts";
import type { LeaseStore } from "./leader.ts";

/** Everything a Marathon reloads on start. */
export interface MarathonState {
  frameworkId?: string;
  apps: AppRecord[];
  deployments: Deployment[];
  instances: Instance[];
  /** Launch delays by app (the backoff of crashing apps). */
  delays: StoredDelay[];
  /** Groups created through `/v2/groups`. */
  groups: GroupRecord[];
  /** Versions of the root group, each as what its write changed (in no particular order). */
  rootVersions: RootVersionChange[];
  /** Histories of removed apps that kept root versions still hold. */
  retiredApps: AppRecord[];
}

/** A launch delay as stored under `delay.<app id>`. */
export interface StoredDelay {
  appId: string;
  delay: LaunchDelay;
}

export type MarathonRecordKind = "app" | "deployment" | "instance" | "delay" | "group" | "rootversion" | "retiredapp";

/** Durable storage of Marathon's state. */
export interface MarathonStore {
  load(): Promise<MarathonState>;
  put(kind: MarathonRecordKind, id: string, value: unknown): Promise<void>;
  delete(kind: MarathonRecordKind, id: string): Promise<void>;
  setFrameworkId(id: string): Promise<void>;
  close(): Promise<void>;
}

const FRAMEWORK_ID_KEY = "framework-id";
/** The key of the leader lease (see leader.ts); not part of the loaded state. */
const LEADER_KEY = "leader";

/** The default bucket name of a cluster. */
export function marathonBucket(cluster: string): string {
  return `corral_${cluster}_marathon`;
}

function key(kind: MarathonRecordKind, id: string): string {
  return `${kind}.${escapeKeyToken(id)}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isGroupRecord(v: unknown): v is GroupRecord {
  return isObject(v) && typeof v.id === "string" && Array.isArray(v.dependencies) && v.dependencies.every((d) => typeof d === "string") && typeof v.version === "string";
}

function isAppRecord(v: unknown): v is AppRecord {
  return isObject(v) && isObject(v.app) && typeof v.version === "string" && Array.isArray(v.versions);
}

function isRootVersionChange(v: unknown): v is RootVersionChange {
  if (!isObject(v) || typeof v.version !== "string" || !isObject(v.appsBefore) || !isObject(v.groupsBefore)) return false;
  return Object.values(v.appsBefore).every((a) => a === null || typeof a === "string") && Object.values(v.groupsBefore).every((g) => g === null || isGroupRecord(g));
}

function isLaunchDelay(v: unknown): v is LaunchDelay {
  if (!isObject(v) || typeof v.configVersion !== "string") return false;
  return [v.sinceMs, v.delayMs, v.maxDelayMs, v.failures, v.activeAtMs ?? 0].every((n) => typeof n === "number" && Number.isFinite(n) && n >= 0);
}

/** Sorts decoded records into a state; malformed ones are reported through `skip`. */
function collect(entries: Array<[string, string]>, skip: (key: string, problem: string) => void): MarathonState {
  const state: MarathonState = { apps: [], deployments: [], instances: [], delays: [], groups: [], rootVersions: [], retiredApps: [] };
  for (const [k, text] of entries) {
    if (k === FRAMEWORK_ID_KEY) {
      state.frameworkId = text;
      continue;
    }
    if (k === LEADER_KEY) continue;
    const dot = k.indexOf(".");
    const kind = k.slice(0, dot);
    const id = dot > 0 ? unescapeKeyToken(k.slice(dot + 1)) : undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      skip(k, "not JSON");
      continue;
    }
    if (id === undefined || !isObject(value)) {
      skip(k, "bad key or value");
      continue;
    }
    if (kind === "app" && isAppRecord(value)) state.apps.push(value);
    else if (kind === "deployment" && typeof value.id === "string" && Array.isArray(value.parts) && Array.isArray(value.steps)) state.deployments.push(value as unknown as Deployment);
    else if (kind === "instance" && typeof value.id === "string" && typeof value.appId === "string") state.instances.push(value as unknown as Instance);
    else if (kind === "delay" && typeof value.appId === "string" && isLaunchDelay(value.delay)) state.delays.push({ appId: value.appId, delay: value.delay });
    else if (kind === "group" && isGroupRecord(value)) state.groups.push({ id: value.id, dependencies: value.dependencies, version: value.version });
    else if (kind === "rootversion" && isRootVersionChange(value)) state.rootVersions.push(value);
    else if (kind === "retiredapp" && isAppRecord(value)) state.retiredApps.push(value);
    else skip(k, "unexpected record");
  }
  return state;
}

/** In-memory store (tests, simulator). Survives a Marathon restart within one process. */
export class MemoryMarathonStore implements MarathonStore, LeaseStore {
  private readonly data = new Map<string, string>();
  private lease: { value: string; revision: number } | undefined;
  private leaseRevision = 0;

  async leaseRead(): Promise<{ value: string; revision: number } | undefined> {
    return this.lease;
  }

  async leaseCreate(value: string): Promise<number | undefined> {
    if (this.lease) return undefined;
    this.lease = { value, revision: ++this.leaseRevision };
    return this.lease.revision;
  }

  async leaseUpdate(value: string, revision: number): Promise<number | undefined> {
    if (this.lease?.revision !== revision) return undefined;
    this.lease = { value, revision: ++this.leaseRevision };
    return this.lease.revision;
  }

  async leaseRelease(revision: number): Promise<void> {
    if (this.lease?.revision === revision) this.lease = undefined;
  }

  async load(): Promise<MarathonState> {
    return collect([...this.data.entries()], () => undefined);
  }

  async put(kind: MarathonRecordKind, id: string, value: unknown): Promise<void> {
    this.data.set(key(kind, id), JSON.stringify(value));
  }

  async delete(kind: MarathonRecordKind, id: string): Promise<void> {
    this.data.delete(key(kind, id));
  }

  async setFrameworkId(id: string): Promise<void> {
    this.data.set(FRAMEWORK_ID_KEY, id);
  }

  async close(): Promise<void> {}

  /** Number of records (tests: "nothing persisted"). */
  size(): number {
    return this.data.size;
  }
}

/** The store in a JetStream KV bucket (created when missing). */
export class JetStreamMarathonStore implements MarathonStore, LeaseStore {
  private constructor(
    private readonly kv: KV,
    readonly bucket: string,
    private readonly log: Logger | undefined,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(connection: NatsConnection, options: { bucket: string; replicas?: number; log?: Logger }): Promise<JetStreamMarathonStore> {
    if (!/^[-\w]+$/.test(options.bucket)) throw new Error(`bucket: '${options.bucket}' is not a valid KV bucket name`);
    const kv = await new Kvm(connection).create(options.bucket, { history: 1, replicas: options.replicas ?? 1 });
    return new JetStreamMarathonStore(kv, options.bucket, options.log, await jetstreamManager(connection));
  }

  /**
   * Every key of the bucket (deleted ones included: their markers stay), from one snapshot of the
   * stream's subjects that the server answers (the client pages it). Not `kv.keys()`: its consumer
   * decides it has seen every key from a heartbeat or a zero pending count, and while other keys
   * are written during the listing (the leader lease is, every few hundred ms) it was seen to hang
   * and to repeat keys; a standby taking over must load everything, or it kills the tasks of the
   * instances it missed as unknown.
   */
  private async listKeys(): Promise<string[]> {
    const prefix = `$KV.${this.bucket}.`;
    const info = await this.jsm.streams.info(`KV_${this.bucket}`, { subjects_filter: `${prefix}>` });
    return Object.keys(info.state.subjects ?? {})
      .filter((subject) => subject.startsWith(prefix))
      .map((subject) => subject.slice(prefix.length));
  }

  async load(): Promise<MarathonState> {
    const keys = await this.listKeys();
    keys.sort();
    const entries: Array<[string, string]> = [];
    for (const k of keys) {
      const entry = await this.kv.get(k);
      if (entry && entry.operation === "PUT") entries.push([k, entry.string()]);
    }
    return collect(entries, (k, problem) => this.log?.warn({ bucket: this.bucket, key: k, problem }, "skipping corrupt marathon record"));
  }

  async put(kind: MarathonRecordKind, id: string, value: unknown): Promise<void> {
    await this.kv.put(key(kind, id), JSON.stringify(value));
  }

  async delete(kind: MarathonRecordKind, id: string): Promise<void> {
    await this.kv.delete(key(kind, id));
  }

  async setFrameworkId(id: string): Promise<void> {
    await this.kv.put(FRAMEWORK_ID_KEY, id);
  }

  async leaseRead(): Promise<{ value: string; revision: number } | undefined> {
    const entry = await this.kv.get(LEADER_KEY);
    return entry && entry.operation === "PUT" ? { value: entry.string(), revision: entry.revision } : undefined;
  }

  // Compare-and-set failures are answers, not errors: someone else holds (or took) the lease.
  async leaseCreate(value: string): Promise<number | undefined> {
    return this.kv.create(LEADER_KEY, value).catch(() => undefined);
  }

  async leaseUpdate(value: string, revision: number): Promise<number | undefined> {
    return this.kv.update(LEADER_KEY, value, revision).catch(() => undefined);
  }

  async leaseRelease(revision: number): Promise<void> {
    await this.kv.delete(LEADER_KEY, { previousSeq: revision }).catch(() => undefined);
  }

  /** Number of keys holding a value (tests: "nothing persisted"). */
  async size(): Promise<number> {
    let n = 0;
    for (const k of await this.listKeys()) {
      const entry = await this.kv.get(k);
      if (entry && entry.operation === "PUT") n++;
    }
    return n;
  }

  async close(): Promise<void> {}
}

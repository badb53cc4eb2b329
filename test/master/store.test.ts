import fc from "fast-check";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TimerHandle, Timers } from "../../sdk/clock.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import { silentLogger } from "../../sdk/transport.ts";
import type { RegistryRecord } from "../../master/core.ts";
import {
  JetStreamRegistryStore,
  MemoryRegistryStore,
  RegistryWriter,
  escapeKeyToken,
  parseRegistryKey,
  registryKey,
  unescapeKeyToken,
  type RegistryKind,
  type RegistryStore,
} from "../../master/store.ts";
import { useNats } from "../harness/nats.ts";
import { FakeFramework, memoryLog } from "./fakes.ts";

const nats = useNats();
let transport: NatsTransport;
beforeAll(async () => {
  transport = await connectNats({ servers: nats.url, name: "store-test" });
});
afterAll(async () => {
  await transport?.close();
});

const agentRecord = (id: string): RegistryRecord => ({
  kind: "agent",
  id,
  info: { id, hostname: `${id}.test`, resources: [{ name: "cpus", role: "*", value: "scalar", scalar: 2 }, { name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 31000, end: 31005 }] } }], attributes: [{ name: "rack", text: "r1" }], httpEndpoint: "http://a:5051" },
});
const frameworkRecord = (id: string): RegistryRecord => ({ kind: "framework", id, info: { ...FakeFramework.info({ id, name: `fw ${id}` }) } });

describe("registry keys", () => {
  it("escape any id into a valid, reversible KV key token", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 64, unit: "grapheme" }), (id) => {
        const token = escapeKeyToken(id);
        expect(token).toMatch(/^[-\w=]+$/);
        expect(unescapeKeyToken(token)).toBe(id);
        expect(parseRegistryKey(registryKey("framework", id))).toEqual({ kind: "framework", id });
      }),
    );
  });

  it("keep master-generated ids readable and reject foreign keys", () => {
    expect(registryKey("agent", "m-0badf00d-S12")).toBe("agent.m-0badf00d-S12");
    expect(registryKey("torn-down", "a.b")).toBe("torn-down.a=2Eb");
    expect(parseRegistryKey("other.x")).toBeUndefined();
    expect(parseRegistryKey("agent.a.b")).toBeUndefined();
    expect(parseRegistryKey("agent.=ZZ")).toBeUndefined();
  });
});

describe("JetStreamRegistryStore", () => {
  it("puts, loads and deletes records, ids of any shape included", async () => {
    const store = await JetStreamRegistryStore.open(transport.connection, { bucket: "registry_roundtrip" });
    const odd = "fw one/ä.x*>";
    await store.put(agentRecord("m-1-S1"));
    await store.put(frameworkRecord(odd));
    await store.put({ kind: "torn-down", id: "m-1-F9" });
    await store.put(frameworkRecord("m-1-F2"));
    await store.delete("framework", "m-1-F2");
    await store.delete("agent", "never-there");
    const loaded = await store.load();
    expect(loaded.sort((a, b) => a.kind.localeCompare(b.kind))).toEqual([agentRecord("m-1-S1"), frameworkRecord(odd), { kind: "torn-down", id: "m-1-F9" }]);
    // Opening again finds the same bucket and data.
    const again = await JetStreamRegistryStore.open(transport.connection, { bucket: "registry_roundtrip" });
    expect(await again.load()).toHaveLength(3);
    await store.close();
    await expect(store.put(agentRecord("x"))).rejects.toThrow(/closed/);
  });

  it("loads every record while the leader lease in the same bucket is renewed all along", async () => {
    const store = await JetStreamRegistryStore.open(transport.connection, { bucket: "registry_lease_renewed" });
    const count = 300;
    for (let i = 0; i < count; i++) await store.put(agentRecord(`m-1-S${i}`));
    const lease = store.leaseStore();
    let revision = (await lease.leaseCreate(JSON.stringify({ id: "m-1" })))!;
    let renewing = true;
    const renewals = (async () => {
      while (renewing) revision = (await lease.leaseUpdate(JSON.stringify({ id: "m-1", n: revision }), revision)) ?? revision;
    })();
    try {
      for (let round = 0; round < 15; round++) expect((await store.load()).map((r) => r.id).sort()).toEqual(Array.from({ length: count }, (_, i) => `m-1-S${i}`).sort());
    } finally {
      renewing = false;
      await renewals;
    }
  }, 120_000);

  it("skips corrupt records with a warning instead of returning them", async () => {
    const { log, lines } = memoryLog("warn");
    const store = await JetStreamRegistryStore.open(transport.connection, { bucket: "registry_corrupt", log });
    await store.put(agentRecord("good"));
    const kv = await new Kvm(transport.connection).open("registry_corrupt");
    await kv.put("agent.notjson", "{");
    await kv.put("framework.noname", JSON.stringify({ kind: "framework", id: "noname", info: { ...FakeFramework.info(), name: "" } }));
    await kv.put("agent.elsewhere", JSON.stringify(agentRecord("other")));
    await kv.put("unrelated", "x");
    expect(await store.load()).toEqual([agentRecord("good")]);
    // A one-token key ("unrelated", like the leader lease) is no registry key and is not even read.
    expect(lines.filter((l) => l.msg === "skipping corrupt registry record").map((l) => l.key).sort()).toEqual(["agent.elsewhere", "agent.notjson", "framework.noname"]);
  });

  it("refuses a bucket name KV cannot have", async () => {
    await expect(JetStreamRegistryStore.open(transport.connection, { bucket: "a.b" })).rejects.toThrow(/bucket/);
  });
});

describe("MemoryRegistryStore", () => {
  it("copies records in and out and keeps them across close", async () => {
    const store = new MemoryRegistryStore();
    const record = agentRecord("a1");
    await store.put(record);
    (record as { info: { hostname: string } }).info.hostname = "changed";
    const [loaded] = await store.load();
    expect(loaded).toEqual(agentRecord("a1"));
    (loaded as { info: { hostname: string } }).info.hostname = "changed";
    await store.close();
    expect(await store.load()).toEqual([agentRecord("a1")]);
    await expect(store.put({ kind: "framework", id: "f", info: { ...FakeFramework.info(), roles: ["a", "a"] } })).rejects.toThrow(/distinct/);
  });
});

/** Timers fired by hand. */
class ManualTimers implements Timers {
  readonly pending = new Set<{ delayMs: number; callback: () => void }>();
  set(delayMs: number, callback: () => void): TimerHandle {
    const entry = { delayMs, callback };
    this.pending.add(entry);
    return { cancel: () => this.pending.delete(entry) };
  }
  fireAll(): number[] {
    const entries = [...this.pending];
    this.pending.clear();
    for (const e of entries) e.callback();
    return entries.map((e) => e.delayMs);
  }
}

/** A store whose operations complete only when the test says so. */
class GatedStore implements RegistryStore {
  readonly log: string[] = [];
  readonly waiting: Array<{ op: string; resolve: () => void; reject: (err: Error) => void }> = [];
  readonly data = new MemoryRegistryStore();

  private gate(op: string, apply: () => Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({
        op,
        resolve: () => {
          this.log.push(op);
          void apply().then(resolve, reject);
        },
        reject,
      });
    });
  }
  load() {
    return this.data.load();
  }
  put(record: RegistryRecord) {
    return this.gate(`put ${record.id} ${record.kind === "agent" ? record.info.hostname : ""}`, () => this.data.put(record));
  }
  delete(kind: RegistryKind, id: string) {
    return this.gate(`delete ${id}`, () => this.data.delete(kind, id));
  }
  async close() {}
  /** Lets the oldest waiting operation complete, then lets the writer react. */
  async release(fail = false): Promise<string> {
    const next = this.waiting.shift();
    if (!next) throw new Error("nothing waiting");
    if (fail) next.reject(new Error("outage"));
    else next.resolve();
    await new Promise((r) => setImmediate(r));
    return next.op;
  }
}

describe("RegistryWriter", () => {
  const host = (id: string, hostname: string): RegistryRecord => ({ ...agentRecord(id), info: { ...(agentRecord(id) as { info: object }).info, hostname } } as RegistryRecord);

  it("applies writes to one key in order, one at a time, keeping only the newest pending one", async () => {
    const store = new GatedStore();
    const writer = new RegistryWriter({ store, timers: new ManualTimers(), log: silentLogger });
    writer.enqueue({ type: "put", record: host("a", "v1") });
    writer.enqueue({ type: "put", record: host("a", "v2") });
    writer.enqueue({ type: "delete", kind: "agent", id: "a" });
    writer.enqueue({ type: "put", record: host("a", "v3") });
    writer.enqueue({ type: "put", record: host("b", "b1") });
    expect(store.waiting.map((w) => w.op)).toEqual(["put a v1", "put b b1"]); // one in flight per key
    const drained = writer.drain(60_000);
    await store.release(); // a v1 lands; v2 and the delete were superseded by v3
    await store.release(); // b
    expect(store.waiting.map((w) => w.op)).toEqual(["put a v3"]);
    await store.release();
    expect(await drained).toBe(true);
    expect(store.log).toEqual(["put a v1", "put b b1", "put a v3"]);
    expect((await store.load()).map((r) => (r as { info: { hostname: string } }).info.hostname).sort()).toEqual(["b1", "v3"]);
    expect(writer.pendingKeys).toBe(0);
  });

  it("retries a failed write with doubling backoff unless a newer write replaces it", async () => {
    const store = new GatedStore();
    const timers = new ManualTimers();
    const writer = new RegistryWriter({ store, timers, log: silentLogger, retryInitialMs: 10, retryMaxMs: 25 });
    writer.enqueue({ type: "put", record: host("a", "v1") });
    await store.release(true);
    expect(timers.fireAll()).toEqual([10]);
    await new Promise((r) => setImmediate(r));
    await store.release(true);
    expect(timers.fireAll()).toEqual([20]);
    await new Promise((r) => setImmediate(r));
    await store.release(true);
    writer.enqueue({ type: "put", record: host("a", "v2") }); // supersedes the failed v1
    expect(timers.fireAll()).toEqual([25]);
    await new Promise((r) => setImmediate(r));
    expect(await store.release()).toBe("put a v2");
    expect(writer.failures).toBe(3);
    expect(writer.applied).toBe(1);
    expect(await writer.drain(1_000)).toBe(true);
  });

  it("never lands a delete before the puts asked for earlier: a failed marker put holds back the removal it guards", async () => {
    const store = new GatedStore();
    const timers = new ManualTimers();
    const writer = new RegistryWriter({ store, timers, log: silentLogger, retryInitialMs: 10 });
    await store.data.put(frameworkRecord("f1"));
    // The core's teardown: the torn-down marker first, then the framework record goes.
    writer.enqueue({ type: "put", record: { kind: "torn-down", id: "f1" } });
    writer.enqueue({ type: "delete", kind: "framework", id: "f1" });
    expect(store.waiting.map((w) => w.op)).toEqual(["put f1 "]);
    expect(await store.release(true)).toBe("put f1 "); // the marker's write fails...
    // ...so the delete waits: a crash now leaves the framework as it was, not forgotten.
    expect(store.waiting).toEqual([]);
    expect((await store.load()).map((r) => `${r.kind}:${r.id}`)).toEqual(["framework:f1"]);
    expect(timers.fireAll()).toEqual([10]);
    await new Promise((r) => setImmediate(r));
    expect(await store.release()).toBe("put f1 "); // the retry lands
    await new Promise((r) => setImmediate(r));
    expect(await store.release()).toBe("delete f1");
    expect(await writer.drain(1_000)).toBe(true);
    expect((await store.load()).map((r) => `${r.kind}:${r.id}`)).toEqual(["torn-down:f1"]);
    // A delete asked for before a put does not wait for it.
    writer.enqueue({ type: "delete", kind: "torn-down", id: "f1" });
    writer.enqueue({ type: "put", record: frameworkRecord("f2") });
    expect(store.waiting.map((w) => w.op).sort()).toEqual(["delete f1", "put f2 "]);
    writer.stop();
  });

  it("releases a delete waiting on a failing put when stopped", async () => {
    const store = new GatedStore();
    const timers = new ManualTimers();
    const writer = new RegistryWriter({ store, timers, log: silentLogger });
    writer.enqueue({ type: "put", record: { kind: "torn-down", id: "f1" } });
    writer.enqueue({ type: "delete", kind: "framework", id: "f1" });
    await store.release(true);
    writer.stop();
    await new Promise((r) => setImmediate(r));
    expect(writer.pendingKeys).toBe(0);
    expect(store.waiting).toEqual([]);
  });

  it("gives up draining at the deadline and stops retrying when stopped", async () => {
    const store = new GatedStore();
    const timers = new ManualTimers();
    const writer = new RegistryWriter({ store, timers, log: silentLogger });
    writer.enqueue({ type: "put", record: host("a", "v1") });
    const drained = writer.drain(5_000);
    timers.fireAll(); // the deadline passes
    expect(await drained).toBe(false);
    await store.release(true);
    writer.stop(); // cancels the pending retry
    await new Promise((r) => setImmediate(r));
    expect(writer.pendingKeys).toBe(0);
    writer.enqueue({ type: "put", record: host("b", "b1") });
    expect(store.waiting).toEqual([]);
  });
});

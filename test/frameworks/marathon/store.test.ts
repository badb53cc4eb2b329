/**
 * Marathon's JetStream store on a real nats-server: a standby that takes over loads every record,
 * also while the leader lease in the same bucket is being renewed during the load.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Instance } from "../../../frameworks/marathon/core.ts";
import { JetStreamMarathonStore } from "../../../frameworks/marathon/store.ts";
import { connectNats, type NatsTransport } from "../../../sdk/nats-transport.ts";
import { useNats } from "../../harness/nats.ts";

const nats = useNats();
let transport: NatsTransport;
beforeAll(async () => {
  transport = await connectNats({ servers: nats.url, name: "store-test" });
});
afterAll(async () => {
  await transport?.close();
});

function instance(i: number): Instance {
  return {
    id: `web.${String(i).padStart(4, "0")}`, appId: "/web", version: "v1", configVersion: "v1", agentId: "a1", hostname: "h1",
    attributes: {}, hostPorts: [31000 + i], state: "running", goal: "running", stagedAtMs: 1, startedAtMs: 2, mesosState: "TASK_RUNNING",
  };
}

describe("JetStreamMarathonStore", () => {
  it("loads every record, once, while the lease in the same bucket is renewed", async () => {
    const store = await JetStreamMarathonStore.open(transport.connection, { bucket: "marathon_store_test_lease" });
    const count = 300;
    for (let i = 0; i < count; i++) await store.put("instance", instance(i).id, instance(i));
    await store.put("instance", "gone.1", instance(9999));
    await store.delete("instance", "gone.1");
    await store.setFrameworkId("fw-1");
    let revision = (await store.leaseCreate(JSON.stringify({ id: "leader", url: "http://127.0.0.1:1" })))!;
    expect(revision).toBeGreaterThan(0);

    // The leader renews its lease all along, as a live leader does while a standby reads the store.
    let renewing = true;
    const renewals = (async () => {
      while (renewing) revision = (await store.leaseUpdate(JSON.stringify({ id: "leader", url: "http://127.0.0.1:1", n: revision }), revision)) ?? revision;
    })();
    try {
      for (let round = 0; round < 15; round++) {
        const state = await store.load();
        expect(state.frameworkId).toBe("fw-1");
        expect(state.instances.map((x) => x.id)).toEqual(Array.from({ length: count }, (_, i) => instance(i).id));
      }
    } finally {
      renewing = false;
      await renewals;
    }
    expect(await store.size()).toBe(count + 2); // the instances, the framework id and the lease
  }, 120_000);
});

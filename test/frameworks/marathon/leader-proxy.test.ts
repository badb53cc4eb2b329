/**
 * Several Marathons on a real cluster: the leader names itself in `X-Marathon-Leader` on every
 * answer, a standby forwards /v2 requests to it and marks the answers with `X-Marathon-Via`, and a
 * request that already passed through a standby is refused as a loop (Marathon's leader proxy).
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { eventually } from "../../harness/events.ts";
import { startCluster, type TestCluster } from "../../harness/cluster.ts";
import { freePort, useNats } from "../../harness/nats.ts";
import { LEADER_HEADER, VIA_HEADER } from "../../../frameworks/marathon/http.ts";
import { JetStreamMarathonStore, marathonBucket } from "../../../frameworks/marathon/store.ts";
import { startMarathon, waitForRunning, type TestMarathon } from "./marathon-harness.ts";

vi.setConfig({ testTimeout: 90_000, hookTimeout: 60_000 });

const nats = useNats();
let cluster: TestCluster | undefined;
const marathons: TestMarathon[] = [];
afterEach(async () => {
  const leader = marathons.find((m) => m.marathon.isLeader());
  if (leader) await leader.api("DELETE", "/v2/apps/proxied?force=true").catch(() => undefined);
  for (const m of marathons.splice(0)) await m.stop();
  await cluster?.stop();
  cluster = undefined;
});

describe("Marathon's leader proxy headers", () => {
  it("marks the leader's answers with X-Marathon-Leader, forwarded ones with X-Marathon-Via, and refuses a proxy loop", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    // The leader listens on every address and advertises one the standby must use.
    const leaderPort = await freePort();
    const advertised = `http://127.0.0.2:${leaderPort}`;
    const leader = await startMarathon(cluster, { leaderElection: { leaseMs: 1500 }, httpHost: "0.0.0.0", httpPort: leaderPort, advertisedUrl: `${advertised}/` });
    marathons.push(leader);
    await eventually(() => leader.marathon.isLeader(), 10_000, "the first Marathon to lead");
    const standby = await startMarathon(cluster, { leaderElection: { leaseMs: 1500 } });
    marathons.push(standby);
    expect(standby.marathon.isLeader()).toBe(false);
    await eventually(async () => (await standby.api("GET", "/v2/leader")).body?.leader === `127.0.0.2:${leaderPort}`, 10_000, "the standby to know the advertised leader");

    // The leader names itself on successes, on errors and outside /v2.
    for (const [path, status] of [["/v2/apps", 200], ["/v2/apps/nope", 404], ["/ping", 200]] as const) {
      const answer = await fetch(`${advertised}${path}`);
      expect(answer.status).toBe(status);
      expect(answer.headers.get(LEADER_HEADER)).toBe(advertised);
      expect(answer.headers.get(VIA_HEADER)).toBeNull();
    }

    // Through the standby: the leader's answer (status, body, headers) plus the standby's Via.
    const standbyHostPort = standby.url.replace("http://", "");
    const created = await fetch(`${standby.url}/v2/apps`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "proxied", instances: 1, cmd: "sleep 1000", cpus: 0.1, mem: 32 }),
    });
    expect(created.status).toBe(201);
    const body = (await created.json()) as { id: string; deployments: Array<{ id: string }> };
    expect(body.id).toBe("/proxied");
    expect(created.headers.get("marathon-deployment-id")).toBe(body.deployments[0]!.id);
    expect(created.headers.get(LEADER_HEADER)).toBe(advertised);
    expect(created.headers.get(VIA_HEADER)).toBe(`1.1 ${standbyHostPort}`);
    await waitForRunning(standby, "/proxied", 1);
    const missing = await fetch(`${standby.url}/v2/apps/nope`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get(LEADER_HEADER)).toBe(advertised);
    expect(missing.headers.get(VIA_HEADER)).toBe(`1.1 ${standbyHostPort}`);
    // An invalid spec is the leader's 422, passed back unchanged; nothing is created.
    const invalid = await fetch(`${standby.url}/v2/apps`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: "bad", instances: -1, cmd: "true" }) });
    expect(invalid.status).toBe(422);
    expect(((await invalid.json()) as { details: Array<{ path: string }> }).details.map((d) => d.path)).toContain("/instances");
    expect(leader.marathon.core.app("/bad")).toBeUndefined();

    // A request that already came through this standby went round in a circle: refused, not sent again.
    const looped = await fetch(`${standby.url}/v2/apps`, { headers: { [VIA_HEADER]: `1.1 10.0.0.9:8080, 1.1 ${standbyHostPort}` } });
    expect(looped.status).toBe(502);
    expect(await looped.json()).toEqual({ message: "Detected proxying loop." });
    // Another proxy's Via is kept and extended, not mistaken for a loop.
    const chained = await fetch(`${standby.url}/v2/apps`, { headers: { [VIA_HEADER]: "1.1 10.0.0.9:8080" } });
    expect(chained.status).toBe(200);
    expect(chained.headers.get(VIA_HEADER)).toBe(`1.1 ${standbyHostPort}`);
  });

  it("answers 502 while the lease names a leader that does not answer, and serves itself once it took the lease over", async () => {
    cluster = await startCluster({ natsUrl: nats.url });
    // A leader that died without releasing its lease: its record stays until the lease runs out.
    const deadUrl = `http://127.0.0.1:${await freePort()}`;
    const store = await JetStreamMarathonStore.open((await cluster.connect("ghost")).connection, { bucket: marathonBucket(cluster.cluster) });
    expect(await store.leaseCreate(JSON.stringify({ id: "ghost", url: deadUrl }))).toBeDefined();
    const leaseMs = 3000;
    const standby = await startMarathon(cluster, { leaderElection: { leaseMs } });
    marathons.push(standby);
    expect(standby.marathon.isLeader()).toBe(false);
    const refused = await fetch(`${standby.url}/v2/apps`);
    expect(refused.status).toBe(502);
    expect(await refused.json()).toEqual({ message: "Connection to leader refused." });
    expect(refused.headers.get(LEADER_HEADER)).toBeNull();

    await eventually(() => standby.marathon.isLeader(), 20_000, "the standby to take the lapsed lease over");
    const served = await fetch(`${standby.url}/v2/apps`);
    expect(served.status).toBe(200);
    expect(served.headers.get(LEADER_HEADER)).toBe(standby.url);
    expect(served.headers.get(VIA_HEADER)).toBeNull();
    await store.close();
  });
});

import { afterEach, describe, expect, it } from "vitest";
import { runCopies } from "../../../frameworks/examples/run-copies.ts";
import { connectNats, type NatsTransport } from "../../../sdk/nats-transport.ts";
import type { Offer, TaskState } from "../../../sdk/wire/types.ts";
import { useNats } from "../../harness/nats.ts";
import { ScriptedMaster, wireOffer } from "../../sdk/scripted-master.ts";

const nats = useNats({ jetstream: false });
const transports: NatsTransport[] = [];
afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
});

const offer = (id: string, agentId: string, cpus: number): Offer => wireOffer(id, agentId, `cpus:${cpus};mem:1024`);

describe("frameworks/examples/run-copies", () => {
  it("launches one copy per offer, declines the rest, suppresses, and reports how the copies ended", async () => {
    const [masterBus, frameworkBus] = await Promise.all([
      connectNats({ servers: nats.url, name: "scripted-master" }),
      connectNats({ servers: nats.url, name: "run-copies" }),
    ]);
    transports.push(masterBus, frameworkBus);
    const master = new ScriptedMaster(masterBus, "copies");
    let uuid = 0;
    const update = (taskId: string, agentId: string, state: TaskState, message = "") =>
      master.publish({
        kind: "update",
        update: {
          status: { taskId, state, message, source: "SOURCE_AGENT", reason: "REASON_UNSPECIFIED", agentId, frameworkId: "fw-1", uuid: new Uint8Array([++uuid]), timestamp: 0 },
        },
      });
    master.beforeAnswer = (call) => {
      if (call.kind === "heartbeat" && master.callsOf("heartbeat").length === 1) {
        master.publish({ kind: "offers", offers: { offers: [offer("o-1", "a1", 2), offer("o-small", "a2", 0.1), offer("o-2", "a3", 1), offer("o-3", "a4", 1)] } });
      }
      if (call.kind === "accept") {
        const task = call.accept.operations[0]!.launch.taskInfos[0]!;
        update(task.taskId, task.agentId, "TASK_RUNNING");
        update(task.taskId, task.agentId, task.agentId === "a1" ? "TASK_FINISHED" : "TASK_FAILED", task.agentId === "a1" ? "" : "exited with status 3");
      }
    };
    await master.listen();

    const summary = await runCopies({ transport: frameworkBus, cluster: "copies", command: "echo hi", instances: 2, cpus: 0.5, mem: 64 });

    expect(summary).toEqual({
      frameworkId: "fw-1",
      copies: [
        { taskId: "run-copies-0", agentId: "a1", state: "TASK_FINISHED", message: "" },
        { taskId: "run-copies-1", agentId: "a3", state: "TASK_FAILED", message: "exited with status 3" },
      ],
      finished: 1,
      failed: 1,
    });
    const accepts = master.callsOf("accept").map((c) => c.accept);
    expect(accepts.map((a) => a.offerIds)).toEqual([["o-1"], ["o-2"]]);
    expect(accepts[0]!.filters).toEqual({ refuseSeconds: 5 });
    expect(accepts[0]!.operations[0]!.launch.taskInfos[0]).toMatchObject({
      command: { value: "echo hi", shell: true },
      resources: [
        { name: "cpus", value: "scalar", scalar: 0.5 },
        { name: "mem", value: "scalar", scalar: 64 },
      ],
    });
    expect(master.callsOf("decline").map((c) => c.decline)).toEqual([
      { offerIds: ["o-small"], filters: { refuseSeconds: 5 } },
      { offerIds: ["o-3"], filters: { refuseSeconds: 5 } },
    ]);
    const kinds = master.calls.map((c) => c.call.kind);
    expect(kinds).toContain("suppress");
    expect(kinds.indexOf("suppress")).toBeGreaterThan(kinds.lastIndexOf("accept"));
    // Every update acknowledged (the last one as the callback returned), then the teardown.
    expect(master.callsOf("acknowledge")).toHaveLength(4);
    expect(kinds.at(-1)).toBe("teardown");
  });
});

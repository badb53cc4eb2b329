/**
 * Issue 4, agent recovery, end to end: a real `corral agent` process (Linux containerizer) on a real
 * nats-server is SIGKILLed while tasks run and restarted on the same work dir. Checkpointed tasks
 * stay RUNNING and finish later, a task that ended while the agent was down reports its real exit
 * code, an update unacknowledged at the crash is delivered again, and a task of a framework that
 * does not checkpoint is killed. Needs root (detached supervisors in cgroups); skipped otherwise.
 */
import { spawnSync, type ChildProcess } from "node:child_process";
import { chmod, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { TaskStatus } from "../../sdk/scheduler.ts";
import { eventually } from "../harness/events.ts";
import { recordingFramework, startCluster, type RecordingFramework, type TestCluster } from "../harness/cluster.ts";
import { useNats } from "../harness/nats.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";

const nats = useNats();
const isRoot = process.getuid?.() === 0;
const NEEDS_ROOT = "needs root: the Linux containerizer's detached supervisors, namespaces and cgroups";
const RESOURCES = "cpus:4;mem:1024;disk:1024;ports:[31000-31010]";

let cluster: TestCluster | undefined;
let workDir: string | undefined;
const markers: string[] = [];

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
  // Tasks run detached from the agent: whatever a failed test left running must go too.
  for (const marker of markers.splice(0)) spawnSync("pkill", ["-KILL", "-f", marker]);
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
  workDir = undefined;
});

/** A `sleep` with a duration no other process uses, so the test can find (and clean up) its process. */
function uniqueSleep(seconds: number): string {
  const marker = `sleep ${seconds}.${process.pid % 1000}${String(Date.now() % 100000).padStart(5, "0")}${markers.length}`;
  markers.push(marker);
  return marker;
}

function running(marker: string): boolean {
  return spawnSync("pgrep", ["-f", `^${marker}$`]).status === 0;
}

async function stopGracefully(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
}

const TERMINAL: ReadonlySet<string> = TERMINAL_TASK_STATES;
const sameUuid = (a: TaskStatus, b: TaskStatus) => Buffer.from(a.uuid).equals(Buffer.from(b.uuid));

/** The task checkpoint files under `workDir`, of every framework. */
async function checkpointedTaskFiles(workDir: string): Promise<string[]> {
  const root = join(workDir, "checkpoint", "frameworks");
  const frameworks = await readdir(root).catch(() => []);
  const files = await Promise.all(frameworks.map((fw) => readdir(join(root, fw, "tasks")).catch(() => [])));
  return files.flat().filter((f) => f.endsWith(".json"));
}

/** Updates of `fw` that arrived after the first `mark` ones. */
function after(fw: RecordingFramework, mark: number, predicate: (s: TaskStatus) => boolean): (s: TaskStatus) => boolean {
  return (s) => fw.updates.items.indexOf(s) >= mark && predicate(s);
}

describe("agent recovery after SIGKILL (Linux containerizer, real processes)", () => {
  it.skipIf(!isRoot)(
    `re-attaches running tasks, reports ones that ended meanwhile, re-sends unacknowledged updates, kills tasks of non-checkpointing frameworks (${isRoot ? "root" : NEEDS_ROOT})`,
    async () => {
      // The agent is down for a few seconds: long pings keep the master from counting it unreachable.
      cluster = await startCluster({ natsUrl: nats.url, agents: [], master: { agentPingIntervalMs: 200, maxMissedPings: 75 } });
      workDir = await mkdtemp(join(tmpdir(), "corral-recovery-"));
      await chmod(workDir, 0o755); // tasks run as nobody and must reach their sandboxes
      const first = await cluster.spawnAgent(RESOURCES, "phoenix", { workDir });
      await eventually(() => cluster!.master.core.sizes().agents === 1, 30_000, "the agent process to register");

      const longA = uniqueSleep(9);
      const shortB = uniqueSleep(1);
      const longC = uniqueSleep(9);
      const foreverD = uniqueSleep(300);

      // A framework that checkpoints: A outlives the agent's downtime, B ends (exit 7) during it.
      const ckpt = recordingFramework(await cluster.connect(), cluster.cluster, { name: "ckpt", checkpoint: true });
      await ckpt.driver.start();
      const offerA = await ckpt.offers.waitFor(() => true, 10_000, "an offer for ckpt");
      await ckpt.driver.launch(offerA, [
        { taskId: "A", resources: "cpus:0.1;mem:32", command: `exec ${longA}` },
        { taskId: "B", resources: "cpus:0.1;mem:32", command: `${shortB}; exit 7` },
      ]);
      // One that checkpoints but acknowledges by hand: its first update stays unacknowledged. Its
      // task is named A too: task ids are unique only within a framework, and recovery must keep
      // manual's A (long C) apart from ckpt's A (long A).
      const manual = recordingFramework(await cluster.connect(), cluster.cluster, { name: "manual", checkpoint: true }, { autoAcknowledge: false });
      await manual.driver.start();
      const offerC = await manual.offers.waitFor(() => true, 10_000, "an offer for manual");
      await manual.driver.launch(offerC, [{ taskId: "A", resources: "cpus:0.1;mem:32", command: `exec ${longC}` }]);
      // One that does not checkpoint: its task must not survive the agent.
      const plain = recordingFramework(await cluster.connect(), cluster.cluster, { name: "plain", checkpoint: false });
      await plain.driver.start();
      const offerD = await plain.offers.waitFor(() => true, 10_000, "an offer for plain");
      await plain.driver.launch(offerD, [{ taskId: "D", resources: "cpus:0.1;mem:32", command: `exec ${foreverD}` }]);

      for (const taskId of ["A", "B"]) await ckpt.updates.waitFor((s) => s.taskId === taskId && s.state === "TASK_RUNNING", 15_000, `${taskId} RUNNING`);
      await plain.updates.waitFor((s) => s.taskId === "D" && s.state === "TASK_RUNNING", 15_000, "D RUNNING");
      const unacked = await manual.updates.waitFor((s) => s.taskId === "A", 15_000, "manual's first update");
      await eventually(() => running(longC) && running(longA) && running(foreverD), 10_000, "the task processes");

      // Crash, and stay down until B has ended.
      first.kill("SIGKILL");
      await new Promise<void>((resolve) => first.once("exit", () => resolve()));
      const marks = { ckpt: ckpt.updates.items.length, manual: manual.updates.items.length, plain: plain.updates.items.length };
      await eventually(() => !running(shortB), 5_000, "B's sleep to end while the agent is down");
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(running(longA)).toBe(true); // detached: the tasks outlive the agent

      const restartedAt = Date.now();
      const second = await cluster.spawnAgent(RESOURCES, "phoenix", { workDir });
      try {
        // B ended while the agent was down: FAILED with its real exit code.
        const failed = await ckpt.updates.waitFor(after(ckpt, marks.ckpt, (s) => s.taskId === "B" && TERMINAL.has(s.state)), 30_000, "B's final update");
        expect(failed.state).toBe("TASK_FAILED");
        expect(failed.exitCode).toBe(7);

        // The update left unacknowledged at the crash comes again (same uuid), after the restart.
        const again = await manual.updates.waitFor(after(manual, marks.manual, (s) => s.taskId === "A" && sameUuid(s, unacked)), 30_000, "manual's unacknowledged update again");
        expect(again.state).toBe(unacked.state);

        // The non-checkpointing framework's task is killed.
        const killed = await plain.updates.waitFor(after(plain, marks.plain, (s) => s.taskId === "D" && TERMINAL.has(s.state)), 30_000, "D's final update");
        expect(killed.state).toBe("TASK_KILLED");
        await eventually(() => !running(foreverD), 10_000, "D's process to be gone");

        // A is still RUNNING: re-attached, not relaunched.
        expect(running(longA)).toBe(true);
        await ckpt.driver.reconcile([{ taskId: "A", agentId: offerA.agentId }]);
        const reconciled = await ckpt.updates.waitFor(after(ckpt, marks.ckpt, (s) => s.taskId === "A"), 10_000, "A reconciled");
        expect(reconciled.state).toBe("TASK_RUNNING");
        expect(spawnSync("pgrep", ["-c", "-f", `^${longA}$`]).stdout.toString().trim()).toBe("1");

        // A ends on its own, after the restart: FINISHED, exit code 0.
        const finished = await ckpt.updates.waitFor(after(ckpt, marks.ckpt, (s) => s.taskId === "A" && TERMINAL.has(s.state)), 20_000, "A's final update");
        expect(finished.state).toBe("TASK_FINISHED");
        expect(finished.exitCode).toBe(0);
        expect(Date.now()).toBeGreaterThan(restartedAt);

        // manual's stream goes on once acknowledged, in order, to FINISHED.
        const seen: string[] = [];
        let head: TaskStatus = again;
        for (;;) {
          seen.push(head.state);
          await manual.driver.acknowledge(head);
          if (TERMINAL.has(head.state)) break;
          const current = head;
          head = await manual.updates.waitFor(after(manual, manual.updates.items.indexOf(current) + 1, (s) => s.taskId === "A" && !sameUuid(s, current)), 20_000, "manual's next update");
        }
        expect(seen.at(-1)).toBe("TASK_FINISHED");
        expect(seen).toContain("TASK_RUNNING");

        // Acknowledged to the end: nothing of the tasks is left in the checkpoint.
        await eventually(async () => (await checkpointedTaskFiles(workDir!)).length === 0, 10_000, "the checkpoints to be removed");
      } finally {
        await stopGracefully(second);
      }
      for (const fw of [ckpt, manual, plain]) await fw.driver.stop({ teardown: true });
    },
    90_000,
  );
});

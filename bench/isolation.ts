/**
 * The isolation benchmark (issue 4): one real agent process with full isolation (the Linux
 * containerizer: cgroups, namespaces, unprivileged user), a real master and an SDK framework.
 * Measures accept-to-RUNNING latency over 200 tasks launched one at a time; then 1,000 sleeping
 * isolated tasks on the one agent: time until all are RUNNING and until all are torn down; and
 * the agent's memory. Needs root (cgroups); elsewhere it measures the degraded isolation it gets.
 *
 * Options: `--quick` (50 sequential tasks, 100 sleeping tasks); `--sequential N` and `--sleeping N`
 * set the two counts directly. `BENCH_AGENT_LOG=<file>` keeps the agent's log (level info) there.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, open, rm, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { createMaster } from "../master/shell.ts";
import { startNats } from "../cli/nats-server.ts";
import { connectNats } from "../sdk/nats-transport.ts";
import type { Transport } from "../sdk/transport.ts";
import { Resources } from "../sdk/resources.ts";
import { createSchedulerDriver, type OfferView, type SchedulerDriver, type TaskStatus } from "../sdk/scheduler.ts";
import { EventLog } from "../test/harness/events.ts";
import { elapsedMs, parseBenchArgs, percentile, processMemoryMb, PROJECT_ROOT, TS_LOADER, type BenchResult } from "./lib.ts";
import { TERMINAL_TASK_STATES } from "../sdk/wire/types.ts";

const CLUSTER = "isobench";
const TASK = Resources.parse("cpus:0.05;mem:32");
const TERMINAL: ReadonlySet<string> = TERMINAL_TASK_STATES;

export async function runIsolationBench(args: string[]): Promise<BenchResult[]> {
  const flags = parseBenchArgs(args, { quick: "boolean", sequential: "integer > 0", sleeping: "integer > 0" });
  const quick = flags.on("quick");
  const sequentialCount = flags.number("sequential") ?? (quick ? 50 : 200);
  const sleepingCount = flags.number("sleeping") ?? (quick ? 100 : 1_000);
  const agentLogPath = process.env.BENCH_AGENT_LOG;
  const nats = await startNats();
  const workDir = await mkdtemp(join(tmpdir(), "corral-isobench-"));
  const quiet = pino({ level: "error" });
  let stopping = false;
  const transport = await connectNats({ servers: nats.url, name: "isobench" });
  const master = createMaster({ cluster: CLUSTER, transport, http: false, log: quiet, config: { allocationIntervalMs: 20 } });
  await master.start();
  let agent: ChildProcess | undefined;
  let agentLog: FileHandle | undefined;
  let driver: SchedulerDriver | undefined;
  let frameworkTransport: Transport | undefined;
  try {
    agentLog = agentLogPath === undefined ? undefined : await open(agentLogPath, "w");
    agent = spawn(
      process.execPath,
      ["--import", TS_LOADER, join(PROJECT_ROOT, "cli/corral.ts"), "agent", "--nats", nats.url, "--cluster", CLUSTER, "--work-dir", workDir, "--port", "0", "--log-level", agentLog ? "info" : "error", "--isolation", "auto", "--resources", "cpus:64;mem:65536;disk:100000;ports:[31000-32000]"],
      { stdio: ["ignore", agentLog ? agentLog.fd : "ignore", agentLog ? agentLog.fd : "inherit"] },
    );
    agent.once("exit", (code, signal) => {
      if (!stopping) console.error(`the agent exited during the benchmark (code ${code}, signal ${signal})`);
    });
    const offers: OfferView[] = [];
    const offerArrived = new EventLog<OfferView>();
    const updates = new EventLog<TaskStatus>();
    const sentAt = new Map<string, bigint>();
    const latencies: number[] = [];
    let running = 0;
    let ended = 0;
    frameworkTransport = await connectNats({ servers: nats.url, name: "isobench-fw" });
    driver = createSchedulerDriver({
      transport: frameworkTransport,
      cluster: CLUSTER,
      framework: { name: "isolation-bench" },
      maxPendingCallbacks: 100_000,
      callbacks: {
        offers: (list) => {
          for (const offer of list) {
            offers.push(offer);
            offerArrived.push(offer);
          }
        },
        update: (status) => {
          if (status.state === "TASK_RUNNING") {
            running++;
            const start = sentAt.get(status.taskId);
            if (start !== undefined) latencies.push(elapsedMs(start));
          }
          if (TERMINAL.has(status.state)) ended++;
          updates.push(status);
        },
      },
    });
    await driver.start();
    const nextOffer = async () => {
      if (offers.length === 0) await offerArrived.waitFor(() => offers.length > 0, 30_000, "an offer");
      return offers.shift()!;
    };

    // 1. Latency: one task at a time, accept to RUNNING.
    for (let i = 0; i < sequentialCount; i++) {
      const offer = await nextOffer();
      const taskId = `lat-${i}`;
      const isRunning = updates.waitFor((s) => s.taskId === taskId && (s.state === "TASK_RUNNING" || TERMINAL.has(s.state)), 30_000, `${taskId} RUNNING`);
      sentAt.set(taskId, process.hrtime.bigint());
      await driver.accept([offer.id], [{ taskId, resources: TASK, command: "exec sleep 3600" }], { refuseSeconds: 0 });
      await isRunning;
      await driver.kill(taskId);
    }
    await updates.waitFor(() => ended >= sequentialCount, 60_000, "the latency tasks to end");

    // 2. Many sleeping tasks on the one agent: launch them all, then tear them all down.
    running = 0;
    ended = 0;
    let launched = 0;
    const launchStart = process.hrtime.bigint();
    while (launched < sleepingCount) {
      const offer = await nextOffer();
      const fit = Math.min(sleepingCount - launched, Math.floor(offer.resources.scalarMillis("cpus") / TASK.scalarMillis("cpus")), Math.floor(offer.resources.scalarMillis("mem") / TASK.scalarMillis("mem")));
      const tasks = Array.from({ length: fit }, (_, k) => ({ taskId: `sleep-${launched + k}`, resources: TASK, command: "exec sleep 3600" }));
      launched += fit;
      await driver.accept([offer.id], tasks, { refuseSeconds: 0 });
    }
    await updates.waitFor(() => running >= sleepingCount, 300_000, `${sleepingCount} tasks RUNNING`);
    const launchAllMs = elapsedMs(launchStart);
    const memory = processMemoryMb(agent.pid!);
    const teardownStart = process.hrtime.bigint();
    for (let i = 0; i < sleepingCount; i++) void driver.kill(`sleep-${i}`, undefined, 0);
    await updates.waitFor(() => ended >= sleepingCount, 300_000, `${sleepingCount} tasks torn down`);
    const teardownMs = elapsedMs(teardownStart);

    const latencyCase = `${sequentialCount} tasks one at a time, one agent`;
    const bulkCase = `${sleepingCount} sleeping tasks, one agent`;
    return [
      { case: latencyCase, metric: "accept to RUNNING p50", unit: "ms", value: percentile(latencies, 0.5), target: 40, better: "lower" },
      { case: latencyCase, metric: "accept to RUNNING p99", unit: "ms", value: percentile(latencies, 0.99), target: 100, better: "lower" },
      { case: bulkCase, metric: "time to all RUNNING", unit: "s", value: launchAllMs / 1000, target: sleepingCount === 1000 ? 20 : null, better: "lower" },
      { case: bulkCase, metric: "time to all torn down", unit: "s", value: teardownMs / 1000, target: sleepingCount === 1000 ? 10 : null, better: "lower" },
      { case: bulkCase, metric: "agent RSS with all running", unit: "MiB", value: memory.rssMb, target: null, better: "lower" },
    ];
  } finally {
    stopping = true;
    await driver?.stop({ teardown: true }).catch(() => undefined);
    // Left open, its reconnect timer would keep the process alive once nats-server is gone.
    await frameworkTransport?.close();
    if (agent && agent.exitCode === null) {
      const exited = new Promise((resolve) => agent!.once("exit", resolve));
      agent.kill("SIGTERM");
      await exited;
    }
    await master.stop();
    await transport.close();
    await nats.stop();
    await agentLog?.close();
    await rm(workDir, { recursive: true, force: true });
  }
}

/**
 * The launch benchmark (issue 3): the real master (its own process) over a real nats-server,
 * N emulated agents (the real agent shell with an instant in-memory containerizer, many per
 * process) and one SDK framework launching tasks as fast as offers allow. Measures tasks per
 * second from the first accept to the last RUNNING update acknowledged, and the master's RSS.
 *
 * Options: `--quick` (100 agents, 10,000 tasks), `--agents N --tasks M` (one custom case).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { createAgent, type Agent } from "../agent/agent.ts";
import { InstantContainerizer } from "../agent/containerizer/instant.ts";
import { startNats } from "../cli/nats-server.ts";
import { connectNats, type NatsTransport } from "../sdk/nats-transport.ts";
import { Resources } from "../sdk/resources.ts";
import { createSchedulerDriver, type SchedulerDriver } from "../sdk/scheduler.ts";
import { elapsedMs, parseBenchArgs, processMemoryMb, PROJECT_ROOT, TS_LOADER, PROFILE_FLAGS, startChild, stopChild, type BenchResult } from "./lib.ts";

const CLUSTER = "bench";
const AGENT_RESOURCES = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]";
const TASK_RESOURCES = Resources.parse("cpus:0.1;mem:32");
const AGENTS_PER_CONNECTION = 100;
/** `BENCH_PROFILE_DIR=/tmp/p npm run bench -- launch` writes a CPU profile of every child there. */

interface Case {
  agents: number;
  tasks: number;
}



async function runCase(c: Case): Promise<{ tasksPerSecond: number; launchMs: number; master: { rssMb: number; peakMb: number } }> {
  const nats = await startNats();
  const children: ChildProcess[] = [];
  const transports: NatsTransport[] = [];
  try {
    // The master is ready once it answers registrations, which the agents' process waits for.
    const masterChild = spawn(process.execPath, [...PROFILE_FLAGS, "--import", TS_LOADER, join(PROJECT_ROOT, "cli/corral.ts"), "master", "--nats", nats.url, "--cluster", CLUSTER, "--port", "0", "--log-level", "error"], { stdio: "inherit" });
    children.push(masterChild);
    const agents = (await startChild([fileURLToPath(import.meta.url), "--agents-child", nats.url, String(c.agents)], "AGENTS READY", 300_000, PROFILE_FLAGS)).child;
    children.push(agents);

    const transport = await connectNats({ servers: nats.url, name: "bench-framework" });
    transports.push(transport);
    let launched = 0;
    let running = 0;
    let firstAcceptAt: bigint | undefined;
    let finish: (ms: number) => void = () => {};
    const done = new Promise<number>((resolve) => (finish = resolve));
    const driver: SchedulerDriver = createSchedulerDriver({
      transport,
      cluster: CLUSTER,
      framework: { name: "launch-bench" },
      maxPendingCallbacks: 1_000_000,
      callbacks: {
        offers: async (offers) => {
          for (const offer of offers) {
            const fit = Math.min(
              Math.floor(offer.resources.scalarMillis("cpus") / TASK_RESOURCES.scalarMillis("cpus")),
              Math.floor(offer.resources.scalarMillis("mem") / TASK_RESOURCES.scalarMillis("mem")),
              c.tasks - launched,
            );
            if (fit <= 0) {
              await driver.decline([offer.id], { refuseSeconds: 3600 });
              continue;
            }
            const tasks = Array.from({ length: fit }, () => ({ taskId: `t${launched++}`, resources: TASK_RESOURCES, command: "instant" }));
            firstAcceptAt ??= process.hrtime.bigint();
            void driver.accept([offer.id], tasks, { refuseSeconds: 0 });
          }
        },
        update: (status) => {
          if (status.state !== "TASK_RUNNING") return;
          running++;
          if (running === c.tasks) finish(elapsedMs(firstAcceptAt!));
        },
      },
    });
    await driver.start();
    const launchMs = await done;
    const masterMemory = processMemoryMb(masterChild.pid!);
    await driver.stop();
    return { tasksPerSecond: c.tasks / (launchMs / 1000), launchMs, master: masterMemory };
  } finally {
    // SIGTERM first: the children exit cleanly (and write CPU profiles when asked to).
    await Promise.all(children.map((child) => stopChild(child)));
    for (const transport of transports) await transport.close().catch(() => undefined);
    await nats.stop();
  }
}

/** The agents' process: N emulated agents sharing a few NATS connections. */
async function agentsChild(natsUrl: string, count: number): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "corral-bench-agents-"));
  const quiet = pino({ level: "error" });
  const agents: Agent[] = [];
  let transport: NatsTransport | undefined;
  for (let i = 0; i < count; i++) {
    if (i % AGENTS_PER_CONNECTION === 0) transport = await connectNats({ servers: natsUrl, name: `bench-agents-${i}` });
    const agent = createAgent({
      cluster: CLUSTER,
      transport: transport!,
      workDir: join(dir, `a${i}`),
      resources: AGENT_RESOURCES,
      hostname: `host${i}`,
      http: false,
      containerizer: new InstantContainerizer(),
      sandboxGc: false, // emulated tasks leave no sandboxes; spare the bench a disk reading per agent
      log: quiet,
    });
    await agent.start();
    agents.push(agent);
  }
  // Registered once every agent has its id (the master answered).
  while (agents.some((a) => a.agentId() === undefined)) await new Promise((resolve) => setTimeout(resolve, 100));
  console.log("AGENTS READY");
  process.once("SIGTERM", () => void rm(dir, { recursive: true, force: true }).then(() => process.exit(0)));
}

export async function runLaunchBench(args: string[]): Promise<BenchResult[]> {
  const flags = parseBenchArgs(args, { quick: "boolean", agents: "integer > 0", tasks: "integer > 0" });
  const agents = flags.number("agents");
  const custom = agents !== undefined ? [{ agents, tasks: flags.number("tasks") ?? 100_000 }] : undefined;
  const cases: Array<Case & { rssTarget: number | null; rateTarget: number | null }> = custom
    ? custom.map((c) => ({ ...c, rssTarget: null, rateTarget: null }))
    : flags.on("quick")
      ? [{ agents: 100, tasks: 10_000, rssTarget: null, rateTarget: null }]
      : [
          { agents: 1_000, tasks: 100_000, rssTarget: null, rateTarget: 4_000 },
          { agents: 10_000, tasks: 100_000, rssTarget: 1024, rateTarget: null },
        ];
  const results: BenchResult[] = [];
  for (const c of cases) {
    const name = `${c.agents} agents, ${c.tasks} tasks`;
    console.log(`running ${name}...`);
    const outcome = await runCase(c);
    console.log(`${name}: ${outcome.tasksPerSecond.toFixed(0)} tasks/s over ${(outcome.launchMs / 1000).toFixed(1)} s, master RSS ${outcome.master.rssMb.toFixed(0)} MiB (peak ${outcome.master.peakMb.toFixed(0)} MiB)`);
    results.push(
      { case: name, metric: "launch rate (accept to RUNNING acknowledged)", unit: "tasks/s", value: outcome.tasksPerSecond, target: c.rateTarget, better: "higher" },
      { case: name, metric: "time to all RUNNING", unit: "s", value: outcome.launchMs / 1000, target: null, better: "lower" },
      { case: name, metric: "master peak RSS", unit: "MiB", value: outcome.master.peakMb, target: c.rssTarget, better: "lower" },
    );
  }
  return results;
}

if (process.argv[2] === "--agents-child") {
  await agentsChild(process.argv[3]!, Number(process.argv[4]));
}

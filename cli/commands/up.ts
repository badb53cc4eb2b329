/**
 * `corral up`: a whole local cluster in one command — an embedded nats-server (JetStream on,
 * loopback only), a master (or, with `--masters N`, an HA set of N that elect a leader), N agents with their own work dirs, HTTP ports and port ranges, and
 * Marathon (or, with `--marathons N`, N Marathons that elect a leader) — printed with its URLs and stopped cleanly on Ctrl-C. With `--demo` it also deploys
 * the example app `examples/apps/hello.json` through Marathon and prints where it answers.
 */
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { createAgent, type Agent } from "../../agent/agent.ts";
import { createMaster, openMasterLeaseStore, type Master } from "../../master/shell.ts";
import { fileURLToPath } from "node:url";
import { MarathonClient } from "../../frameworks/marathon/client.ts";
import { createMarathon, type Marathon } from "../../frameworks/marathon/marathon.ts";
import type { NatsTransport } from "../../sdk/nats-transport.ts";
import { portInUse, preferredOrFreePort, startNats, type NatsServer } from "../nats-server.ts";
import { clusterFilePath, corralHome, lockWorkDir, readClusterFile, removeClusterFile, writeClusterFile } from "../cluster-file.ts";
import { connect, makeLogger, untilSignal } from "../common.ts";
import { containerizerFromFlags, ISOLATION_FLAGS } from "../containerizer.ts";
import { durationFlag, envName, numberFlag, parseFlags, portFlag, UsageError, type FlagSpec } from "../options.ts";

export const UP_FLAGS: Record<string, FlagSpec> = {
  nats: { type: "string", help: "use this NATS instead of starting one" },
  cluster: { type: "string", help: "cluster name", default: "corral" },
  agents: { type: "string", help: "number of agents", default: "2" },
  masters: { type: "string", help: "number of masters; more than one runs an HA set (one leads, the others stand by)", default: "1" },
  "work-dir": { type: "string", help: "state of the local cluster (default: $CORRAL_HOME/up)" },
  "master-port": { type: "string", help: "master HTTP port (with --masters N, N consecutive ports)", default: "5050" },
  marathons: { type: "string", help: "number of Marathons; more than one elect a leader (the others forward the API to it)", default: "1" },
  "marathon-port": { type: "string", help: "Marathon's HTTP port (its v2 REST API; with --marathons N, N consecutive ports)", default: "8080" },
  "nats-port": { type: "string", help: "port of the embedded nats-server; 0 for any free one (default: 4222 if free)" },
  "allocation-interval": { type: "string", help: "periodic allocation run", default: "1s" },
  "log-level": { type: "string", help: "level of the log file <work-dir>/corral.log", default: "info" },
  demo: { type: "boolean", help: "also deploy examples/apps/hello.json (two web servers with a health check) through Marathon" },
  ...ISOLATION_FLAGS,
};

/** Splits this machine between `count` local agents, each with its own port range. */
export function localAgentResources(count: number, index: number, host = { cpus: cpus().length, memMb: Math.floor(totalmem() / 1048576) }): string {
  const cpusEach = Math.max(1, Math.floor(host.cpus / count));
  const memEach = Math.max(256, Math.floor((host.memMb - 1024) / count));
  const firstPort = 31000 + index * 500;
  return `cpus:${cpusEach};mem:${memEach};disk:${4096};ports:[${firstPort}-${firstPort + 499}]`;
}

/** Thrown inside `corral up`'s start-up when a stop was asked for meanwhile: what started is stopped. */
class StartupInterrupted extends Error {}

/** Deploys the example app through Marathon and prints its URLs once its instances are healthy. */
async function deployDemo(client: MarathonClient, checkpoint: () => void): Promise<void> {
  const path = fileURLToPath(new URL("../../examples/apps/hello.json", import.meta.url));
  const app = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown> & { id: string; instances: number };
  const { deploymentId } = await client.deploy(app, { force: true });
  console.log(`\nDeploying ${app.id} (examples/apps/hello.json) through Marathon...`);
  const deadline = Date.now() + 120_000;
  // Watching the deployment through Marathon's API: the interval is the refresh rate.
  while ((await client.deploymentRunning(deploymentId)) && Date.now() < deadline) {
    checkpoint();
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  for (const task of await client.tasks(app.id)) {
    const port = (task.ports as number[] | undefined)?.[0];
    console.log(`  ${app.id}: ${String(task.id)} serving http://${String(task.host)}:${port ?? "?"}`);
  }
}

/** The Marathon that leads, once one does (a lone Marathon leads once started). */
async function firstLeader(marathons: Marathon[], checkpoint: () => void, timeoutMs = 30_000): Promise<Marathon> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    checkpoint();
    const leader = marathons.find((m) => m.isLeader());
    if (leader) return leader;
    if (Date.now() > deadline) throw new Error(`no Marathon took the leadership up within ${timeoutMs} ms (see the log)`);
    // Leadership is in-process state with no event to await here: look again shortly.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export async function upCommand(args: string[]): Promise<number> {
  const { values } = parseFlags(args, UP_FLAGS);
  const agentCount = numberFlag(values, "agents") ?? 2;
  if (!Number.isInteger(agentCount) || agentCount < 1 || agentCount > 64) throw new UsageError("--agents must be an integer from 1 to 64");
  const masterCount = numberFlag(values, "masters") ?? 1;
  if (!Number.isInteger(masterCount) || masterCount < 1 || masterCount > 9) throw new UsageError("--masters must be an integer from 1 to 9");
  const marathonCount = numberFlag(values, "marathons") ?? 1;
  if (!Number.isInteger(marathonCount) || marathonCount < 1 || marathonCount > 9) throw new UsageError("--marathons must be an integer from 1 to 9");
  // Checked before anything starts: a bad port must not leave half a cluster behind.
  const natsPort = portFlag(values, "nats-port");
  const masterPort = portFlag(values, "master-port") ?? 5050;
  const marathonPort = portFlag(values, "marathon-port") ?? 8080;
  for (const [flag, port, count] of [["master-port", masterPort, masterCount], ["marathon-port", marathonPort, marathonCount]] as const) {
    if (port + count - 1 > 65535) throw new UsageError(`--${flag} ${port}: ${count} consecutive ports from it would pass 65535`);
  }
  const workDir = (values["work-dir"] as string | undefined) ?? join(corralHome(), "up");
  // One `corral up` per cluster file: a second one would take it over, and client commands would
  // lose the first cluster (and find none at all once the second stopped).
  const running = readClusterFile();
  if (running && running.pid !== process.pid) {
    throw new Error(
      `a cluster started by corral up (pid ${running.pid}, master ${running.masterUrl}) is running, and ${clusterFilePath()} names it; ` +
        `stop it first (Ctrl-C in its terminal, or kill -INT ${running.pid}), or start this one with another CORRAL_HOME`,
    );
  }
  // A taken port would otherwise be found only once the master or Marathon listens, after the
  // nats-server and the agents have started, and be reported as a bare EADDRINUSE.
  for (const [flag, port, count] of [["master-port", masterPort, masterCount], ["marathon-port", marathonPort, marathonCount]] as const) {
    for (let i = 0; port !== 0 && i < count; i++) {
      if (await portInUse(port + i)) {
        throw new Error(`--${flag} ${port}: 127.0.0.1:${port + i} is in use (another corral up, or another program); choose another port, or 0 for any free one`);
      }
    }
  }
  // Checked before anything starts: a second nats-server on the same JetStream store, or agents on
  // the same work dirs, would corrupt the first cluster's state and kill its tasks.
  const unlock = lockWorkDir(workDir);
  const cluster = values.cluster as string;
  const logFile = join(workDir, "corral.log");
  const log = makeLogger(values["log-level"] as string, logFile);

  const stops: Array<() => Promise<unknown>> = [async () => unlock()];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((error) => log.warn({ err: error }, "stop failed"));
  };
  // Listened for from here on, not only once the cluster is up: without a handler a signal kills
  // the process at once, leaving behind what had started (the nats-server, in its own process
  // group, and tasks), even a signal sent the moment "Press Ctrl-C" was printed. SIGHUP: the
  // terminal was closed.
  let stopSignal: NodeJS.Signals | undefined;
  const stopRequested = untilSignal(["SIGINT", "SIGTERM", "SIGHUP"]).then((signal) => (stopSignal = signal));
  const checkpoint = () => {
    if (stopSignal !== undefined) throw new StartupInterrupted(stopSignal);
  };
  try {
    let nats = values.nats as string | undefined;
    let server: NatsServer | undefined;
    // CORRAL_NATS, exported for client commands, also reaches corral up and replaces its embedded
    // nats-server: said first, as the cause of whatever connecting to that NATS does next.
    const natsSource = args.some((a) => a === "--nats" || a.startsWith("--nats=")) ? "--nats" : envName("nats");
    if (nats) process.stderr.write(`corral up: using the NATS at ${nats} (from ${natsSource}) instead of starting one; unset ${envName("nats")} (or drop --nats) for an embedded nats-server\n`);
    if (!nats) {
      server = await startNats({ storeDir: join(workDir, "nats"), port: natsPort ?? (await preferredOrFreePort(4222)), ownProcessGroup: true });
      nats = server.url;
      stops.push(() => server!.stop());
    }
    checkpoint();
    const transports: NatsTransport[] = [];
    const open = async (name: string) => {
      checkpoint();
      const transport = await connect(nats!, name, log);
      transports.push(transport);
      stops.push(() => transport.close());
      return transport;
    };

    // Several masters elect a leader (the first one started wins a free lease); each its own connection.
    const masters: Master[] = [];
    for (let i = 0; i < masterCount; i++) {
      const m = createMaster({
        cluster,
        transport: await open(masterCount > 1 ? `corral-master-${i + 1}` : "corral-master"),
        httpPort: masterPort === 0 ? 0 : masterPort + i,
        log: log.child({ component: "master" }),
        ...(masterCount > 1 ? { election: { store: await openMasterLeaseStore((await open(`corral-master-${i + 1}-lease`)).connection, cluster) } } : {}),
        config: { allocationIntervalMs: durationFlag(values, "allocation-interval") ?? 1000 },
      });
      await m.start();
      stops.push(() => m.stop());
      masters.push(m);
    }
    const master = masters.find((m) => m.isLeader()) ?? masters[0]!;

    const agents: Agent[] = [];
    for (let i = 1; i <= agentCount; i++) {
      // Each local agent advertises its own loopback address (127.0.0.1, 127.0.0.2, ...), so
      // hostname constraints see distinct hosts and every task's URL is reachable.
      const agentLog = log.child({ component: "agent", agent: i });
      const { containerizer, isolation } = await containerizerFromFlags(values, agentLog, `127.0.0.${i}`);
      const agent = createAgent({
        containerizer,
        isolation,
        cluster,
        transport: await open(`corral-agent-${i}`),
        workDir: join(workDir, `agent-${i}`),
        hostname: `127.0.0.${i}`,
        resources: localAgentResources(agentCount, i - 1),
        attributes: `name:agent-${i}`,
        httpPort: 0,
        log: agentLog,
      });
      await agent.start();
      stops.push(() => agent.stop());
      agents.push(agent);
    }

    // Several Marathons elect a leader (the first one started wins a free lease); each its own connection.
    const marathons: Marathon[] = [];
    for (let i = 0; i < marathonCount; i++) {
      const m = createMarathon({
        transport: await open(marathonCount > 1 ? `corral-marathon-${i + 1}` : "corral-marathon"),
        cluster,
        httpPort: marathonPort === 0 ? 0 : marathonPort + i,
        log: log.child({ component: "marathon", ...(marathonCount > 1 ? { marathon: i + 1 } : {}) }),
        ...(marathonCount > 1 ? { leaderElection: {} } : {}),
      });
      await m.start();
      stops.push(() => m.stop());
      marathons.push(m);
    }
    // The leader takes the framework up after its election: wait for it, so the printout is true.
    const marathon = await firstLeader(marathons, checkpoint);

    const file = writeClusterFile({
      cluster,
      nats,
      masterUrl: master.httpUrl(),
      agentUrls: agents.map((a) => a.httpUrl()),
      marathonUrl: marathon.httpUrl(),
      pid: process.pid,
      startedAt: new Date().toISOString(),
    });
    stops.push(async () => removeClusterFile(process.pid));
    console.log(`Corral is up (cluster "${cluster}").`);
    console.log(`  NATS      ${nats}${server ? " (embedded)" : ` (external, from ${natsSource})`}`);
    if (masterCount === 1) console.log(`  master    ${master.httpUrl()}  (/state, /metrics)`);
    else masters.forEach((m, i) => console.log(`  master ${i + 1}  ${m.httpUrl()}  (${m.isLeader() ? "leader" : "standby: /state and writes redirect to the leader"})`));
    agents.forEach((a, i) => console.log(`  agent ${i + 1}   ${a.httpUrl()}  (isolation: ${a.state().isolation})`));
    if (marathonCount === 1) console.log(`  marathon  ${marathon.httpUrl()}  (/v2/apps, /v2/deployments, /v2/events)`);
    else marathons.forEach((m, i) => console.log(`  marathon ${i + 1} ${m.httpUrl()}  (${m === marathon ? "leader: /v2/apps, /v2/deployments, /v2/events" : "standby: forwards the API to the leader"})`));
    console.log(`  logs      ${logFile}`);
    console.log(`  cluster   ${file} (read by corral state / corral run)`);
    console.log(`\nTry: corral run -- 'echo hello from $HOST'    corral app deploy examples/apps/shop-group.json    corral state`);

    if (values.demo) await deployDemo(new MarathonClient(marathon.httpUrl()), checkpoint);
    checkpoint();
    console.log("Press Ctrl-C to stop.");
    await stopRequested;
  } catch (error) {
    if (!(error instanceof StartupInterrupted)) throw error;
  } finally {
    // After SIGHUP the terminal is gone: writing to it would fail (EIO) in the middle of stopping.
    if (stopSignal !== undefined && stopSignal !== "SIGHUP") console.log("\nStopping...");
    await stopAll();
    log.flush();
  }
  return 0;
}

/**
 * The Marathon benchmark (Marathon issue): the real Marathon (`createMarathon`, its own process,
 * with its JetStream store and its HTTP API) on a real master (its own process), a real
 * nats-server and emulated agents (the launch benchmark's agents process: the real agent shell
 * with the instant containerizer, 16 cpus and 64 GiB each). Everything is measured through
 * Marathon's HTTP API with real requests:
 *
 * - time from `POST /v2/apps` (one app, `cpus` 0.1, `mem` 32, one host port) until Marathon
 *   reports the app's deployment successful (`deployment_success` on `/v2/events`, which Marathon
 *   sends once every instance is RUNNING as it observes them; checked afterwards with the app's
 *   `tasksRunning` in `GET /v2/apps?id=`), for 10,000 instances over 1,000 agents and for 50,000
 *   instances over the same 1,000 agents (50 per agent, a third of what one agent holds: the case
 *   then differs from the first only in the number of instances, and 5,000 emulated agents
 *   would cost the benchmark machine more than the Marathon it measures);
 * - `GET /v2/apps` latency (200 sequential requests after 20 warm-up ones; each reads the whole
 *   body, about 1.5 MB, without decoding it) with 2,000 apps of one running instance each,
 *   created by `POST /v2/apps` (8 requests in flight);
 * - the Marathon process's peak RSS in each case;
 * - Marathon's CPU time (from /proc): from the POST to all running, and per `GET /v2/apps` (with
 *   its use at rest for comparison). On a shared machine these vary less than the times, and
 *   they tell Marathon's own cost from that of the master, the agents and nats-server, which
 *   share the machine's cores.
 *
 * Before a launch is measured, a 10-instance app is deployed (and left running) to warm Marathon
 * up: the first request otherwise pays for loading and compiling code (TypeScript through tsx,
 * the JSON schema of apps), which a long-running Marathon pays once.
 *
 * Each case gets a fresh nats-server, master, agents and Marathon.
 *
 * Options: `--quick` (100 agents: 1,000 and 5,000 instances, 200 apps); `--cases 10k,50k,get`
 * (a subset); `--agents N --instances M` (one custom launch case); `--apps N` (the GET case with
 * N apps). `BENCH_PROFILE_DIR=/tmp/p` writes a CPU profile of the Marathon process there;
 * `BENCH_MARATHON_LOG=warn` sets its log level (default error; the log goes to stderr),
 * `BENCH_MASTER_LOG=warn` the master's.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { get as httpGet, type IncomingMessage } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startNats } from "../cli/nats-server.ts";
import { createMarathon } from "../frameworks/marathon/marathon.ts";
import { connectNats } from "../sdk/nats-transport.ts";
import { CLOCK_TICKS_PER_SECOND } from "../agent/containerizer/common.ts";
import { BenchUsageError, elapsedMs, parseBenchArgs, percentile, processMemoryMb, PROJECT_ROOT, TS_LOADER, PROFILE_FLAGS, startChild, stopChild, type BenchResult } from "./lib.ts";

/** The cluster name the launch benchmark's agents process registers with. */
const CLUSTER = "bench";
const LAUNCH_BENCH = join(PROJECT_ROOT, "bench/launch.ts");
const GET_WARMUP = 20;
const GET_SAMPLES = 200;
const CREATE_CONCURRENCY = 8;
/** How long Marathon's CPU use at rest is sampled before the GET requests. */
const IDLE_SAMPLE_MS = 3_000;
const PROGRESS_INTERVAL_MS = 10_000;
const WARM_UP_INSTANCES = 10;

interface MarathonEventJson {
  eventType: string;
  [field: string]: unknown;
}

/** A running test cluster: nats-server, master, agents and Marathon, each in its own process. */
interface Cluster {
  marathonUrl: string;
  marathon: ChildProcess;
  stop(): Promise<void>;
}



async function startCluster(agents: number): Promise<Cluster> {
  const nats = await startNats();
  const children: ChildProcess[] = [];
  const stop = async () => {
    // Marathon first (it writes its CPU profile on SIGTERM), then the rest.
    for (const child of [...children].reverse()) await stopChild(child, 20_000);
    await nats.stop();
  };
  try {
    const master = spawn(process.execPath, ["--import", TS_LOADER, join(PROJECT_ROOT, "cli/corral.ts"), "master", "--nats", nats.url, "--cluster", CLUSTER, "--port", "0", "--log-level", process.env.BENCH_MASTER_LOG ?? "error"], { stdio: "inherit" });
    children.push(master);
    // The agents' process reports ready once the master has registered every agent.
    children.push((await startChild([LAUNCH_BENCH, "--agents-child", nats.url, String(agents)], "AGENTS READY", 600_000)).child);
    const started = await startChild([fileURLToPath(import.meta.url), "--marathon-child", nats.url], "MARATHON READY", 120_000, PROFILE_FLAGS);
    children.push(started.child);
    const marathonUrl = started.line.trim().split(" ").pop()!;
    return { marathonUrl, marathon: started.child, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * `/v2/events` filtered to some event types, over node:http (no body timeout: a filtered stream
 * may stay silent for minutes). Keeps the events and wakes whoever waits for one.
 */
class EventStream {
  private readonly seen: MarathonEventJson[] = [];
  private readonly waiters = new Set<() => void>();
  private response: IncomingMessage | undefined;

  private constructor() {}

  static open(baseUrl: string, types: string[]): Promise<EventStream> {
    const stream = new EventStream();
    const query = types.map((t) => `event_type=${encodeURIComponent(t)}`).join("&");
    return new Promise((resolve, reject) => {
      const req = httpGet(`${baseUrl}/v2/events?${query}`, { headers: { accept: "text/event-stream" } }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`/v2/events answered ${res.statusCode}`));
        stream.response = res;
        res.setEncoding("utf8");
        let buffer = "";
        let attached = false;
        res.on("data", (chunk: string) => {
          buffer += chunk;
          let end: number;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block.split("\n").find((l) => l.startsWith("data: "));
            if (data === undefined) continue;
            const event = JSON.parse(data.slice(6)) as MarathonEventJson;
            if (event.eventType === "event_stream_attached") {
              if (!attached) resolve(stream);
              attached = true;
              continue;
            }
            stream.seen.push(event);
            for (const wake of [...stream.waiters]) wake();
          }
        });
        res.on("error", () => undefined);
      });
      req.on("error", reject);
    });
  }

  /** Resolves once `done(events so far)` holds; rejects after `timeoutMs`, describing `progress()`. */
  async until(done: (events: readonly MarathonEventJson[]) => boolean, timeoutMs: number, progress: () => Promise<string>): Promise<void> {
    const start = process.hrtime.bigint();
    let timer: NodeJS.Timeout | undefined;
    let ticker: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        const check = () => {
          try {
            if (!done(this.seen)) return;
            this.waiters.delete(check);
            resolve();
          } catch (err) {
            this.waiters.delete(check);
            reject(err);
          }
        };
        this.waiters.add(check);
        check();
        timer = setTimeout(() => {
          this.waiters.delete(check);
          void progress().then((p) => reject(new Error(`not done within ${timeoutMs} ms: ${p}`)), reject);
        }, timeoutMs);
        ticker = setInterval(() => void progress().then((p) => console.log(`  ${(elapsedMs(start) / 1000).toFixed(0)} s: ${p}`), () => undefined), PROGRESS_INTERVAL_MS);
      });
    } finally {
      clearTimeout(timer);
      clearInterval(ticker);
    }
  }

  close(): void {
    this.response?.destroy();
  }
}

async function api(baseUrl: string, method: string, path: string, body?: unknown): Promise<{ status: number; headers: Headers; json: unknown }> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: text === "" ? undefined : JSON.parse(text) };
}

/** The app every case deploys: small, with one host port, as a typical Marathon app. */
function benchApp(id: string, instances: number): Record<string, unknown> {
  return { id, cmd: "sleep 3600", instances, cpus: 0.1, mem: 32 };
}

/**
 * The app's task counts, from the app list filtered by id: `GET /v2/apps/{id}` would embed every
 * task (megabytes for 50,000), making the measurement cost Marathon more than a glance.
 */
async function appCounts(baseUrl: string, appId: string): Promise<{ tasksRunning: number; tasksStaged: number } | undefined> {
  const { json } = await api(baseUrl, "GET", `/v2/apps?id=${encodeURIComponent(appId)}`);
  return (json as { apps: Array<{ id: string; tasksRunning: number; tasksStaged: number }> }).apps.find((a) => a.id === appId);
}

async function appProgress(baseUrl: string, appId: string): Promise<string> {
  const app = await appCounts(baseUrl, appId);
  return app ? `${app.tasksRunning} running, ${app.tasksStaged} staged` : "app not found";
}

/**
 * Deploys a small app first (and leaves it running), so that the measured deployment does not
 * pay for loading and compiling code on first use (the app-spec schema, the HTTP routes).
 */
async function warmUp(url: string, events: EventStream): Promise<void> {
  const posted = await api(url, "POST", "/v2/apps", benchApp("/bench/warm-up", WARM_UP_INSTANCES));
  if (posted.status !== 201) throw new Error(`POST /v2/apps answered ${posted.status}: ${JSON.stringify(posted.json)}`);
  const deploymentId = posted.headers.get("Marathon-Deployment-Id")!;
  await events.until((seen) => seen.some((e) => e.id === deploymentId), 120_000, () => appProgress(url, "/bench/warm-up"));
}

/** CPU time (user + system) a process has used so far, in seconds (from /proc). */
function processCpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

interface LaunchOutcome {
  seconds: number;
  /** Marathon's CPU time from the POST to all running: its own cost, less noisy than the time on a busy machine. */
  cpuSeconds: number;
  peakRssMb: number;
}

/** One app of `instances` on `agents` agents: POST until Marathon's deployment_success. */
async function runLaunchCase(agents: number, instances: number, timeoutMs: number): Promise<LaunchOutcome> {
  const cluster = await startCluster(agents);
  try {
    const url = cluster.marathonUrl;
    const events = await EventStream.open(url, ["deployment_success", "deployment_failed"]);
    await warmUp(url, events);
    const appId = `/bench/app-${instances}`;
    const cpuBefore = processCpuSeconds(cluster.marathon.pid!);
    const start = process.hrtime.bigint();
    const posted = await api(url, "POST", "/v2/apps", benchApp(appId, instances));
    if (posted.status !== 201) throw new Error(`POST /v2/apps answered ${posted.status}: ${JSON.stringify(posted.json)}`);
    const deploymentId = posted.headers.get("Marathon-Deployment-Id")!;
    let endMs = 0;
    let cpuSeconds = 0;
    await events.until(
      (seen) => {
        const mine = seen.find((e) => e.id === deploymentId);
        if (mine?.eventType === "deployment_failed") throw new Error(`deployment ${deploymentId} failed`);
        if (mine !== undefined && endMs === 0) {
          endMs = elapsedMs(start);
          cpuSeconds = processCpuSeconds(cluster.marathon.pid!) - cpuBefore;
        }
        return mine !== undefined;
      },
      timeoutMs,
      () => appProgress(url, appId),
    );
    events.close();
    const running = (await appCounts(url, appId))?.tasksRunning;
    if (running !== instances) throw new Error(`deployment_success with ${running} of ${instances} instances running`);
    return { seconds: endMs / 1000, cpuSeconds, peakRssMb: processMemoryMb(cluster.marathon.pid!).peakMb };
  } finally {
    await cluster.stop();
  }
}

interface GetOutcome {
  createSeconds: number;
  p50Ms: number;
  p99Ms: number;
  /** Marathon's CPU time over the measured requests, per request (includes its background work: ticks, heartbeats). */
  cpuMsPerGet: number;
  /** Marathon's CPU use at rest with the apps running, % of one core. */
  idleCpuPercent: number;
  bodyKiB: number;
  peakRssMb: number;
}

/** `apps` apps of one instance each, then sequential `GET /v2/apps`. */
async function runGetCase(agents: number, apps: number, timeoutMs: number): Promise<GetOutcome> {
  const cluster = await startCluster(agents);
  try {
    const url = cluster.marathonUrl;
    const events = await EventStream.open(url, ["deployment_success", "deployment_failed"]);
    const deploymentIds = new Set<string>();
    const start = process.hrtime.bigint();
    let next = 0;
    const post = async () => {
      while (next < apps) {
        const i = next++;
        const posted = await api(url, "POST", "/v2/apps", benchApp(`/bench/g${Math.floor(i / 100)}/app-${i}`, 1));
        if (posted.status !== 201) throw new Error(`POST /v2/apps answered ${posted.status}: ${JSON.stringify(posted.json)}`);
        deploymentIds.add(posted.headers.get("Marathon-Deployment-Id")!);
      }
    };
    await Promise.all(Array.from({ length: CREATE_CONCURRENCY }, post));
    await events.until(
      (seen) => seen.filter((e) => e.eventType === "deployment_success" && deploymentIds.has(e.id as string)).length === apps,
      timeoutMs,
      async () => {
        const { json } = await api(url, "GET", "/v2/deployments");
        return `${deploymentIds.size} apps posted, ${(json as unknown[]).length} deployments running`;
      },
    );
    const createSeconds = elapsedMs(start) / 1000;
    events.close();
    // Marathon's own background work (ticks over every app, heartbeats), for comparison.
    const idleCpuBefore = processCpuSeconds(cluster.marathon.pid!);
    const idleStart = process.hrtime.bigint();
    await new Promise((resolve) => setTimeout(resolve, IDLE_SAMPLE_MS));
    const idleCpuPercent = ((processCpuSeconds(cluster.marathon.pid!) - idleCpuBefore) * 100_000) / elapsedMs(idleStart);
    const samples: number[] = [];
    let bytes = 0;
    let cpuBefore = 0;
    for (let i = 0; i < GET_WARMUP + GET_SAMPLES; i++) {
      if (i === GET_WARMUP) cpuBefore = processCpuSeconds(cluster.marathon.pid!);
      const t = process.hrtime.bigint();
      // The whole body is read, chunk by chunk: decoding or even joining it would time the
      // client (undici's text() alone takes about 10 ms for 1.5 MB here, more than Marathon
      // takes to answer). The first answer is checked in full.
      const response = await fetch(`${url}/v2/apps`);
      const chunks: Uint8Array[] = [];
      bytes = 0;
      for await (const chunk of response.body!) {
        bytes += chunk.length;
        if (i === 0) chunks.push(chunk);
      }
      const ms = elapsedMs(t);
      if (response.status !== 200) throw new Error(`GET /v2/apps answered ${response.status}`);
      if (i === 0) {
        const listed = (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { apps: unknown[] }).apps.length;
        if (listed !== apps) throw new Error(`GET /v2/apps lists ${listed} apps, expected ${apps}`);
      }
      if (i >= GET_WARMUP) samples.push(ms);
    }
    const cpuMsPerGet = ((processCpuSeconds(cluster.marathon.pid!) - cpuBefore) * 1000) / GET_SAMPLES;
    return { createSeconds, p50Ms: percentile(samples, 0.5), p99Ms: percentile(samples, 0.99), cpuMsPerGet, idleCpuPercent, bodyKiB: bytes / 1024, peakRssMb: processMemoryMb(cluster.marathon.pid!).peakMb };
  } finally {
    await cluster.stop();
  }
}

interface LaunchCase {
  kind: "launch";
  name: string;
  agents: number;
  instances: number;
  target: number | null;
  timeoutMs: number;
}

interface GetCase {
  kind: "get";
  name: string;
  agents: number;
  apps: number;
  target: number | null;
  timeoutMs: number;
}

function chooseCases(args: string[]): Array<LaunchCase | GetCase> {
  const flags = parseBenchArgs(args, { quick: "boolean", instances: "integer > 0", agents: "integer > 0", apps: "integer > 0", cases: "text" });
  const custom: Array<LaunchCase | GetCase> = [];
  const instances = flags.number("instances");
  if (instances !== undefined) {
    const agents = flags.number("agents") ?? 1_000;
    custom.push({ kind: "launch", name: `${instances} instances / ${agents} agents`, agents, instances, target: null, timeoutMs: 1_800_000 });
  }
  const apps = flags.number("apps");
  if (apps !== undefined) custom.push({ kind: "get", name: `GET /v2/apps with ${apps} apps`, agents: flags.number("agents") ?? 100, apps, target: null, timeoutMs: 1_800_000 });
  if (custom.length > 0) return custom;
  const quick = flags.on("quick");
  const all: Record<string, LaunchCase | GetCase> = quick
    ? {
        "10k": { kind: "launch", name: "1k instances / 100 agents", agents: 100, instances: 1_000, target: null, timeoutMs: 120_000 },
        "50k": { kind: "launch", name: "5k instances / 100 agents", agents: 100, instances: 5_000, target: null, timeoutMs: 300_000 },
        get: { kind: "get", name: "GET /v2/apps with 200 apps", agents: 100, apps: 200, target: null, timeoutMs: 300_000 },
      }
    : {
        "10k": { kind: "launch", name: "10k instances / 1k agents", agents: 1_000, instances: 10_000, target: 10, timeoutMs: 600_000 },
        "50k": { kind: "launch", name: "50k instances", agents: 1_000, instances: 50_000, target: 45, timeoutMs: 1_800_000 },
        get: { kind: "get", name: "GET /v2/apps with 2,000 apps", agents: 100, apps: 2_000, target: 50, timeoutMs: 1_800_000 },
      };
  const names = flags.text("cases")?.split(",") ?? Object.keys(all);
  for (const n of names) if (!(n in all)) throw new BenchUsageError(`--cases: unknown case '${n}' (known: ${Object.keys(all).join(", ")})`);
  return names.map((n) => all[n]!);
}

/** Runs the cases `args` select and returns their figures. */
export async function runMarathonBench(args: string[]): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (const c of chooseCases(args)) {
    console.log(`running ${c.name} (${c.agents} agents)...`);
    if (c.kind === "launch") {
      const out = await runLaunchCase(c.agents, c.instances, c.timeoutMs);
      console.log(`${c.name}: all ${c.instances} RUNNING ${out.seconds.toFixed(2)} s after POST /v2/apps (Marathon CPU ${out.cpuSeconds.toFixed(1)} s); Marathon peak RSS ${out.peakRssMb.toFixed(0)} MiB`);
      results.push(
        { case: c.name, metric: "time-to-all-running", unit: "s", value: out.seconds, target: c.target, better: "lower" },
        { case: c.name, metric: "Marathon CPU time, POST to all running", unit: "s", value: out.cpuSeconds, target: null, better: "lower" },
        { case: c.name, metric: "Marathon peak RSS", unit: "MiB", value: out.peakRssMb, target: null, better: "lower" },
      );
    } else {
      const out = await runGetCase(c.agents, c.apps, c.timeoutMs);
      console.log(`${c.name}: created and running in ${out.createSeconds.toFixed(1)} s; GET p50 ${out.p50Ms.toFixed(1)} ms, p99 ${out.p99Ms.toFixed(1)} ms (${out.bodyKiB.toFixed(0)} KiB, Marathon CPU ${out.cpuMsPerGet.toFixed(1)} ms per request, ${out.idleCpuPercent.toFixed(1)}% of a core at rest); Marathon peak RSS ${out.peakRssMb.toFixed(0)} MiB`);
      results.push(
        { case: c.name, metric: "p50", unit: "ms", value: out.p50Ms, target: null, better: "lower" },
        { case: c.name, metric: "p99", unit: "ms", value: out.p99Ms, target: c.target, better: "lower" },
        { case: c.name, metric: "Marathon CPU time per GET /v2/apps", unit: "ms", value: out.cpuMsPerGet, target: null, better: "lower" },
        { case: c.name, metric: "Marathon CPU at rest (no requests)", unit: "% of a core", value: out.idleCpuPercent, target: null, better: "lower" },
        { case: c.name, metric: "time to create the apps and run them", unit: "s", value: out.createSeconds, target: null, better: "lower" },
        { case: c.name, metric: "Marathon peak RSS", unit: "MiB", value: out.peakRssMb, target: null, better: "lower" },
      );
    }
  }
  return results;
}

/** The Marathon process: the real Marathon with its JetStream store, on a free HTTP port. */
async function marathonChild(natsUrl: string): Promise<void> {
  const transport = await connectNats({ servers: natsUrl, name: "bench-marathon" });
  const marathon = createMarathon({ transport, cluster: CLUSTER, httpPort: 0, log: pino({ level: process.env.BENCH_MARATHON_LOG ?? "error" }, pino.destination(2)) });
  await marathon.start();
  console.log(`MARATHON READY ${marathon.httpUrl()}`);
  // A clean exit on SIGTERM, so that --cpu-prof writes its profile.
  process.once("SIGTERM", () => void marathon.stop().finally(() => void transport.close().finally(() => process.exit(0))));
}

if (process.argv[2] === "--marathon-child") {
  await marathonChild(process.argv[3]!);
}

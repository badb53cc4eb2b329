/**
 * Runs a real nats-server as a child process: the embedded bus of `corral up`, and the bus of
 * every integration test (each test file gets its own server on a free loopback port with its own
 * JetStream store, so files can run in parallel and never see each other's messages or streams).
 *
 * @module
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { connect } from "@nats-io/transport-node";

/** Options of {@link startNats}. */
export interface StartNatsOptions {
  /** Path of the nats-server binary. @default found on PATH, else /usr/sbin or /usr/local/bin */
  binary?: string;
  /** Port to listen on; 0 means any free one. @default a free loopback port */
  port?: number;
  /** Enable JetStream. @default true */
  jetstream?: boolean;
  /**
   * Where JetStream keeps its data. A given dir is kept on stop (the cluster's state survives a
   * restart of `corral up`); without one a temp dir is made and removed on stop.
   * @default a fresh temp dir
   */
  storeDir?: string;
  /**
   * nats-server configuration text (e.g. an `authorization` block), written to the temp dir and
   * passed with `-c`. Command-line flags (address, port, JetStream) take precedence over it.
   * @default none
   */
  config?: string;
  /** How long to wait for the server to accept connections. @default 15000 */
  startTimeoutMs?: number;
  /** How long to wait after SIGTERM before SIGKILL. @default 5000 */
  stopTimeoutMs?: number;
  /** Extra command-line arguments. @default [] */
  args?: string[];
  /** Client credentials used by the readiness probe when the config requires auth. @default none */
  probeAuth?: { user: string; pass: string };
  /**
   * Run the server in a process group (and session) of its own. A Ctrl-C at a terminal signals
   * the whole foreground group; `corral up` sets this so that its bus is not killed by that
   * Ctrl-C before the components using it have stopped: it stops the server itself, last.
   * @default false
   */
  ownProcessGroup?: boolean;
}

/** A running nats-server. */
export interface NatsServer {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Dir holding the JetStream store (`<dir>/jetstream`) and config; a temp one is removed by stop(). */
  readonly storeDir: string;
  /** PID of the current process, undefined while stopped. */
  readonly pid: number | undefined;
  /** Kills the server (SIGTERM, then SIGKILL) and removes its temp dir, if it made one. Idempotent. */
  stop(): Promise<void>;
  /** Stops the process and starts a new one on the same port and store dir (JetStream state survives). */
  restart(): Promise<void>;
  /** Stops the process only (keeps the store dir); `start()` brings it back. For outage tests. */
  kill(): Promise<void>;
  /** Starts the process again after kill(). */
  start(): Promise<void>;
  /** The server's recent stderr output, for failure messages. */
  logTail(): string;
}

const DEFAULT_START_TIMEOUT_MS = 15_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const PORT_ATTEMPTS = 5;
const LOG_TAIL_CHARS = 8_000;

/** Locates nats-server: PATH first, then the usual install locations. */
export function findNatsServer(): string {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  for (const dir of [...dirs, "/usr/sbin", "/usr/local/bin", "/usr/bin"]) {
    const candidate = join(dir, "nats-server");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error("nats-server not found on PATH, /usr/sbin or /usr/local/bin; run scripts/ensure-nats.sh (Debian: apt-get install nats-server)");
}

/**
 * Binds `port` on loopback and releases it at once: the port it got (the kernel's choice for 0),
 * or undefined when that port is taken.
 */
function probePort(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(undefined));
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      const bound = typeof address === "object" && address ? address.port : undefined;
      server.close(() => resolve(bound));
    });
  });
}

/** A port the kernel considers free right now (it may be taken again before we bind it; callers retry). */
export async function freePort(): Promise<number> {
  const port = await probePort(0);
  if (port === undefined) throw new Error("could not determine a free port");
  return port;
}

/** Whether `port` on loopback is taken right now (it may change before anyone binds it). */
export async function portInUse(port: number): Promise<boolean> {
  return (await probePort(port)) === undefined;
}

/** `preferred` when it is free right now, else any free port. */
export async function preferredOrFreePort(preferred: number): Promise<number> {
  return (await probePort(preferred)) ?? freePort();
}

// Children still alive when the test worker exits are killed, so no server outlives its tests.
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const c of liveChildren) c.kill("SIGKILL");
    });
  }
  liveChildren.add(child);
  child.once("exit", () => liveChildren.delete(child));
}

class AddressInUseError extends Error {}

class NatsServerImpl implements NatsServer {
  readonly storeDir: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private log = "";
  private stopped = false;
  private currentPort: number;

  constructor(
    private readonly binary: string,
    storeDir: string,
    port: number,
    private readonly configPath: string | undefined,
    private readonly options: StartNatsOptions,
    private readonly removeStoreOnStop: boolean,
  ) {
    this.storeDir = storeDir;
    this.currentPort = port;
  }

  get port(): number {
    return this.currentPort;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.currentPort}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  logTail(): string {
    return this.log;
  }

  /** Starts on the current port; with `pickPorts`, moves to another free port when it is taken. */
  async startOnFreePort(pickPorts: boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.start();
        return;
      } catch (err) {
        if (!(err instanceof AddressInUseError) || !pickPorts || attempt >= PORT_ATTEMPTS) throw err;
        this.currentPort = await freePort();
      }
    }
  }

  async start(): Promise<void> {
    if (this.stopped) throw new Error("nats-server was stopped for good; start a new one");
    if (this.child) return;
    const args = ["-a", "127.0.0.1", "-p", String(this.currentPort)];
    if (this.options.jetstream ?? true) args.push("-js", "-sd", this.storeDir);
    if (this.configPath) args.push("-c", this.configPath);
    args.push(...(this.options.args ?? []));
    const child = spawn(this.binary, args, { stdio: ["ignore", "pipe", "pipe"], detached: this.options.ownProcessGroup ?? false });
    track(child);
    const append = (chunk: Buffer) => {
      this.log = (this.log + chunk.toString("utf8")).slice(-LOG_TAIL_CHARS);
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    this.child = child;
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", (err) => {
        append(Buffer.from(`spawn error: ${err.message}\n`));
        resolve();
      });
    });
    try {
      await this.waitUntilReady(child);
    } catch (err) {
      await this.kill();
      throw err;
    }
  }

  /** Polls with real client connections until one succeeds, the process dies or time runs out. */
  private async waitUntilReady(child: ChildProcess): Promise<void> {
    const timeoutMs = this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    let died = false;
    void this.exited!.then(() => (died = true));
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (died || child.exitCode !== null) {
        if (/address already in use/i.test(this.log)) throw new AddressInUseError(`port ${this.currentPort} is taken`);
        throw new Error(`nats-server exited during startup (code ${child.exitCode}):\n${this.log}`);
      }
      try {
        const nc = await connect({
          servers: this.url,
          reconnect: false,
          timeout: 1_000,
          ...(this.options.probeAuth ?? {}),
        });
        const jetstreamOk = !(this.options.jetstream ?? true) || nc.info?.jetstream === true;
        await nc.close();
        if (jetstreamOk) return;
      } catch (err) {
        lastError = err;
      }
      // A short pause between probes; the probe itself is the synchronisation.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`nats-server did not accept connections within ${timeoutMs} ms (last error: ${String(lastError)}):\n${this.log}`);
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = this.exited!;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), this.options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    this.child = undefined;
    this.exited = undefined;
  }

  async restart(): Promise<void> {
    await this.kill();
    // Same port: clients reconnect to the URL they know.
    await this.startOnFreePort(false);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    await this.kill();
    this.stopped = true;
    if (this.removeStoreOnStop) await rm(this.storeDir, { recursive: true, force: true });
  }
}

/**
 * Starts a nats-server (JetStream on, loopback only) and resolves once it accepts client
 * connections.
 */
export async function startNats(options: StartNatsOptions = {}): Promise<NatsServer> {
  const binary = options.binary ?? findNatsServer();
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), "corral-nats-")));
  if (options.storeDir) await mkdir(storeDir, { recursive: true });
  let configPath: string | undefined;
  if (options.config !== undefined) {
    configPath = join(storeDir, "nats.conf");
    await writeFile(configPath, options.config, "utf8");
  }
  // 0 asks for any free port, as for a listening socket: nats-server would take one too, but
  // the readiness probe must know which, so the port is chosen here.
  const anyPort = options.port === undefined || options.port === 0;
  const server = new NatsServerImpl(binary, storeDir, anyPort ? await freePort() : options.port!, configPath, options, options.storeDir === undefined);
  try {
    await server.startOnFreePort(anyPort);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}


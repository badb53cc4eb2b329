/**
 * Simulated hosts for multi-host tests: one Linux network namespace per host, all plugged into a
 * bridge that lives in a namespace of its own (the "switch"), so that the test creates and
 * changes no interface, route or address of the machine's own namespace.
 *
 * ```
 *   [corral-t<pid>-<n>-nats]  eth0 10.77.0.1 ─┐
 *   [corral-t<pid>-<n>-agent1] eth0 10.77.0.2 ─┼─ p1..pN ── br0   [corral-t<pid>-<n>-switch]
 *   ...                                       ─┘
 * ```
 *
 * A host's link is cut by taking its port on the switch down (`ip link set pN down`): the cable
 * pulled at the switch. The host keeps its address and its open TCP connections, which stall and
 * resume as on a real partition.
 *
 * Processes run inside a host with `nsenter --net=...` (only the network namespace changes: the
 * process still sees the machine's /sys and cgroups, which `ip netns exec` would remount).
 * The test process itself stays outside; it reaches a port inside a host through
 * {@link TestNetwork.forward}: a loopback listener of the test process, a Unix socket, and a
 * relay process inside the namespace (`netns-relay.mjs`) that connects to the port on the host's
 * loopback.
 *
 * Namespaces are named `corral-t<pid>-<n>-<host>`: {@link TestNetwork.destroy} (and an exit hook,
 * for interrupted runs) removes them, and every new network first sweeps the leftovers of test
 * processes that are gone.
 *
 * @module
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect as connectUnix, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { EventLog } from "./events.ts";

const run = promisify(execFile);

/** Every namespace this harness makes starts with this; the leftover sweep looks for it. */
export const NETNS_PREFIX = "corral-t";
/** Where `ip netns` keeps its named namespaces. */
const NETNS_DIR = "/run/netns";
const RELAY_SCRIPT = join(import.meta.dirname, "netns-relay.mjs");

let probed: string | null | undefined;

/**
 * Why multi-host tests cannot run here (not root, `ip` or `nsenter` missing, namespaces not
 * permitted), or undefined when they can. Probes once, by really adding and removing a namespace.
 */
export function netnsUnavailableReason(): string | undefined {
  if (probed !== undefined) return probed ?? undefined;
  probed = probe();
  return probed ?? undefined;
}

function probe(): string | null {
  if (process.platform !== "linux") return "network namespaces need Linux";
  if (process.getuid?.() !== 0) return "network namespaces need root (run the tests as root)";
  for (const tool of ["ip", "nsenter"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `${tool} not found (Debian: apt-get install ${tool === "ip" ? "iproute2" : "util-linux"}; scripts/ensure-deps.sh does it)`;
    }
  }
  const name = `${NETNS_PREFIX}${process.pid}-probe`;
  try {
    execFileSync("ip", ["netns", "add", name], { stdio: "pipe" });
    execFileSync("ip", ["netns", "del", name], { stdio: "pipe" });
  } catch (err) {
    return `cannot create network namespaces here: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
  return null;
}

/** Options of {@link createNetwork}. */
export interface NetworkOptions {
  /** Names of the simulated hosts (letters, digits, dashes; at most 20 characters). */
  hosts: string[];
  /**
   * First three octets of the hosts' /24. It exists only inside the network's own namespaces,
   * so networks of concurrent test files may use the same one.
   * @default "10.77.0"
   */
  subnet?: string;
}

/** A process started inside a host, with its output lines recorded. */
export interface HostProcess {
  readonly child: ChildProcess;
  /** stdout and stderr lines; JSON lines (pino logs) parsed, others as `{ msg }`. */
  readonly log: EventLog<Record<string, unknown>>;
  /** SIGKILL (or `signal`) and wait for the exit. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A set of simulated hosts on one switch. */
export interface TestNetwork {
  /** `corral-t<pid>-<n>-`: the start of every namespace name of this network. */
  readonly prefix: string;
  readonly hosts: readonly string[];
  /** The host's address on the switch, e.g. `10.77.0.2`. */
  address(host: string): string;
  /** The host's namespace name (for `ip netns exec`). */
  namespace(host: string): string;
  /** Starts `command args` inside the host's network namespace; killed by {@link destroy}. */
  spawn(host: string, command: string, args: string[], options?: SpawnOptions): HostProcess;
  /** Takes the host's port on the switch down: the host is cut off from every other one. */
  cut(host: string): Promise<void>;
  /** Brings the host's port on the switch up again. */
  restore(host: string): Promise<void>;
  /**
   * A loopback port of the test process that reaches `port` on the host's own loopback (services
   * listening on 0.0.0.0 or 127.0.0.1 inside it). Unaffected by {@link cut}.
   */
  forward(host: string, port: number): Promise<number>;
  /** Kills every process started in the network's namespaces and deletes them. Idempotent. */
  destroy(): Promise<void>;
}

let networkSeq = 0;
/** Namespaces of this process not deleted yet, for the exit hook. */
const liveNamespaces = new Set<string>();
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Deletes what is left when the test process ends without `destroy` (a crash, Ctrl-C, a timeout). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const cleanupSync = () => {
    for (const child of liveChildren) child.kill("SIGKILL");
    for (const ns of [...liveNamespaces].reverse()) deleteNamespaceSync(ns);
  };
  process.once("exit", cleanupSync);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      cleanupSync();
      // Die of the signal as we would have without this hook.
      process.kill(process.pid, signal);
    });
  }
}

/** Kills whatever runs in the namespace (tasks started by agents too) and deletes it. */
function deleteNamespaceSync(ns: string): void {
  try {
    const pids = execFileSync("ip", ["netns", "pids", ns], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // already gone
      }
    }
  } catch {
    // no such namespace any more
  }
  try {
    execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  } catch {
    // already deleted
  }
  liveNamespaces.delete(ns);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Deletes namespaces `corral-t<pid>-...` whose test process `<pid>` is gone (left by a run that
 * was killed before it could clean up). Answers the names it deleted.
 */
export function sweepLeftoverNamespaces(): string[] {
  let names: string[];
  try {
    names = execFileSync("ip", ["netns", "list"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
      .split("\n")
      .map((line) => line.split(" ")[0]!)
      .filter(Boolean);
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const name of names) {
    const match = new RegExp(`^${NETNS_PREFIX}(\\d+)-`).exec(name);
    if (!match || pidAlive(Number(match[1]))) continue;
    deleteNamespaceSync(name);
    swept.push(name);
  }
  return swept;
}

const HOST_NAME = /^[a-z0-9][a-z0-9-]{0,19}$/;

/**
 * Creates the namespaces, the switch and the links; loopback and eth0 up in every host. On any
 * failure what was made is deleted again before the error is thrown.
 */
export async function createNetwork(options: NetworkOptions): Promise<TestNetwork> {
  const reason = netnsUnavailableReason();
  if (reason) throw new Error(`createNetwork: ${reason}`);
  const hosts = [...options.hosts];
  if (hosts.length === 0 || hosts.length > 250) throw new Error("createNetwork: hosts must hold 1 to 250 names");
  for (const host of hosts) if (!HOST_NAME.test(host) || host === "switch") throw new Error(`createNetwork: bad host name ${JSON.stringify(host)} (letters, digits, dashes; not "switch")`);
  if (new Set(hosts).size !== hosts.length) throw new Error("createNetwork: host names must be distinct");
  const subnet = options.subnet ?? "10.77.0";
  if (!/^10\.\d{1,3}\.\d{1,3}$/.test(subnet)) throw new Error(`createNetwork: subnet must be three octets of 10.0.0.0/8, got ${subnet}`);
  installExitHook();
  sweepLeftoverNamespaces();
  const network = new Network(`${NETNS_PREFIX}${process.pid}-${++networkSeq}-`, hosts, subnet);
  try {
    await network.build();
  } catch (err) {
    await network.destroy();
    throw err;
  }
  return network;
}

class Network implements TestNetwork {
  private readonly switchNs: string;
  private readonly processes = new Set<HostProcess>();
  private readonly relays = new Map<string, Promise<string>>();
  private readonly listeners: Server[] = [];
  private socketDir: string | undefined;
  private destroyed: Promise<void> | undefined;

  constructor(
    readonly prefix: string,
    readonly hosts: readonly string[],
    private readonly subnet: string,
  ) {
    this.switchNs = `${prefix}switch`;
  }

  address(host: string): string {
    return `${this.subnet}.${this.index(host) + 1}`;
  }

  namespace(host: string): string {
    this.index(host);
    return `${this.prefix}${host}`;
  }

  /** Switch port of the host's link (interface names are at most 15 characters). */
  private port(host: string): string {
    return `p${this.index(host) + 1}`;
  }

  private index(host: string): number {
    const i = this.hosts.indexOf(host);
    if (i < 0) throw new Error(`no host ${JSON.stringify(host)} in this network (hosts: ${this.hosts.join(", ")})`);
    return i;
  }

  async build(): Promise<void> {
    this.socketDir = await mkdtemp(join(tmpdir(), "corral-netns-"));
    await this.addNamespace(this.switchNs);
    await ip("-n", this.switchNs, "link", "add", "br0", "type", "bridge");
    await ip("-n", this.switchNs, "link", "set", "br0", "up");
    for (const host of this.hosts) {
      const ns = this.namespace(host);
      await this.addNamespace(ns);
      // Both ends are created from the switch side: no interface ever exists in our own namespace.
      await ip("-n", this.switchNs, "link", "add", this.port(host), "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ip("-n", this.switchNs, "link", "set", this.port(host), "master", "br0");
      await ip("-n", this.switchNs, "link", "set", this.port(host), "up");
      await ip("-n", ns, "addr", "add", `${this.address(host)}/24`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("-n", ns, "link", "set", "eth0", "up");
    }
  }

  private async addNamespace(ns: string): Promise<void> {
    await ip("netns", "add", ns);
    liveNamespaces.add(ns);
  }

  spawn(host: string, command: string, args: string[], options: SpawnOptions = {}): HostProcess {
    if (this.destroyed) throw new Error("the network is destroyed");
    const ns = this.namespace(host);
    const child = spawn("nsenter", [`--net=${join(NETNS_DIR, ns)}`, "--", command, ...args], { stdio: ["ignore", "pipe", "pipe"], ...options });
    liveChildren.add(child);
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    void exited.then(() => liveChildren.delete(child));
    const log = new EventLog<Record<string, unknown>>();
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on("line", (line) => {
        try {
          const parsed: unknown = JSON.parse(line);
          log.push(typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : { msg: line });
        } catch {
          log.push({ msg: line });
        }
      });
    }
    const processHandle: HostProcess = {
      child,
      log,
      stop: async (signal = "SIGKILL") => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        await exited;
      },
    };
    this.processes.add(processHandle);
    return processHandle;
  }

  async cut(host: string): Promise<void> {
    await ip("-n", this.switchNs, "link", "set", this.port(host), "down");
  }

  async restore(host: string): Promise<void> {
    await ip("-n", this.switchNs, "link", "set", this.port(host), "up");
  }

  async forward(host: string, port: number): Promise<number> {
    const socketPath = await this.relay(host);
    const server = createServer((local) => {
      const remote = connectUnix(socketPath, () => {
        remote.write(`${port}\n`);
        local.pipe(remote);
        remote.pipe(local);
      });
      remote.on("error", () => local.destroy());
      local.on("error", () => remote.destroy());
      remote.on("close", () => local.destroy());
      local.on("close", () => remote.destroy());
    });
    this.listeners.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (typeof address !== "object" || address === null) throw new Error("forward: no port");
    return address.port;
  }

  /** The relay of a host (one per host, started on first use); resolves with its socket path. */
  private relay(host: string): Promise<string> {
    let ready = this.relays.get(host);
    if (!ready) {
      const socketPath = join(this.socketDir!, `${host}.sock`);
      const relay = this.spawn(host, process.execPath, [RELAY_SCRIPT, socketPath]);
      ready = relay.log.waitFor((l) => l.msg === "relay ready", 30_000, `the relay in ${host}`).then(() => socketPath);
      this.relays.set(host, ready);
    }
    return ready;
  }

  destroy(): Promise<void> {
    this.destroyed ??= this.teardown();
    return this.destroyed;
  }

  private async teardown(): Promise<void> {
    for (const server of this.listeners) server.close();
    await Promise.all([...this.processes].map((p) => p.stop("SIGKILL")));
    // Hosts first, then the switch (deleting a namespace deletes the veth ends inside it).
    for (const ns of [...liveNamespaces].filter((n) => n.startsWith(this.prefix)).reverse()) deleteNamespaceSync(ns);
    if (this.socketDir) await rm(this.socketDir, { recursive: true, force: true });
  }
}

async function ip(...args: string[]): Promise<void> {
  try {
    await run("ip", args);
  } catch (err) {
    throw new Error(`ip ${args.join(" ")} failed: ${String((err as { stderr?: string }).stderr ?? err).trim()}`);
  }
}

/** True when a named namespace of this process still exists (for tests of the harness). */
export function namespaceExists(ns: string): boolean {
  return existsSync(join(NETNS_DIR, ns));
}

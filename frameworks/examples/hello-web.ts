/**
 * Example framework: keeps `instances` small web servers running, one per offer, relaunching any
 * that ends. It shows the whole SDK loop in one page: subscribe, take offers, pick a port from the
 * offer, launch, follow status updates, decline what is not needed, suppress when satisfied.
 *
 * Run it against a cluster: `tsx frameworks/examples/hello-web.ts --nats nats://127.0.0.1:4222`.
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { connectNats } from "../../sdk/nats-transport.ts";
import { Resources } from "../../sdk/resources.ts";
import { TERMINAL_TASK_STATES } from "../../sdk/wire/types.ts";
import { createSchedulerDriver, type OfferView, type SchedulerDriver, type TaskStatus } from "../../sdk/scheduler.ts";
import type { Transport } from "../../sdk/transport.ts";

/** Options of {@link runHelloWeb}. */
export interface HelloWebOptions {
  transport: Transport;
  /** @default "corral" */
  cluster?: string;
  /** How many servers to keep running. @default 2 */
  instances?: number;
  /** Per server. @default 0.1 */
  cpus?: number;
  /** Per server, in MB (Node needs about 50 MB). @default 128 */
  mem?: number;
  /** Called when a server is up, with the URL it answers on. */
  onUp?: (url: string, taskId: string) => void;
  /** Called on every status update, for logs. */
  onUpdate?: (status: TaskStatus) => void;
}

/** The command each task runs: Node's own http module, so nothing but node is needed on agents. */
const SERVER = `exec node -e "require('http').createServer((q,s)=>s.end('hello from '+process.env.CORRAL_TASK_ID+' on '+process.env.HOST+'\\\\n')).listen(+process.env.PORT0)"`;

/** Starts the framework; resolves with its driver once subscribed. Stop it with `driver.stop({ teardown: true })`. */
export async function runHelloWeb(options: HelloWebOptions): Promise<SchedulerDriver> {
  const wanted = options.instances ?? 2;
  // A NaN would never be reached, and a server would be launched on every offer.
  if (!Number.isInteger(wanted) || wanted < 0) throw new RangeError(`instances: must be an integer >= 0, got ${wanted}`);
  const perTask = Resources.parse(`cpus:${options.cpus ?? 0.1};mem:${options.mem ?? 128}`);
  /** Live (launched, not yet ended) tasks, with the URL they will serve. */
  const live = new Map<string, string>();
  let sequence = 0;
  let suppressed = false;

  const driver: SchedulerDriver = createSchedulerDriver({
    transport: options.transport,
    cluster: options.cluster ?? "corral",
    framework: { name: "hello-web", failoverTimeoutSeconds: 60 },
    callbacks: {
      offers: async (offers: OfferView[]) => {
        for (const offer of offers) {
          const port = offer.resources.ranges("ports")[0]?.begin;
          if (live.size >= wanted || port === undefined || !offer.resources.contains(perTask)) {
            // A failed decline only leaves the offer to time out at the master: go on.
            await driver.decline([offer.id], { refuseSeconds: 30 }).catch(() => undefined);
            continue;
          }
          const taskId = `hello-web-${++sequence}`;
          live.set(taskId, `http://${offer.hostname}:${port}`);
          try {
            await driver.launch(offer, [{ taskId, resources: perTask.add(Resources.ranges("ports", [{ begin: port, end: port }])), command: SERVER }], { refuseSeconds: 5 });
          } catch {
            // Refused (the offer was rescinded, say): the server never started, so it must not
            // count, or it would never be replaced. A later offer will do.
            live.delete(taskId);
          }
        }
        if (live.size >= wanted && !suppressed) {
          suppressed = true;
          await driver.suppress();
        }
      },
      update: async (status) => {
        options.onUpdate?.(status);
        if (status.state === "TASK_RUNNING" && live.has(status.taskId)) options.onUp?.(live.get(status.taskId)!, status.taskId);
        if (TERMINAL_TASK_STATES.has(status.state)) {
          live.delete(status.taskId);
          if (suppressed) {
            suppressed = false;
            await driver.revive();
          }
        }
      },
    },
  });
  await driver.start();
  return driver;
}

/** `tsx frameworks/examples/hello-web.ts [--nats URL] [--cluster NAME] [--instances N]`; Ctrl-C tears it down. */
async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      nats: { type: "string", default: "nats://127.0.0.1:4222" },
      cluster: { type: "string", default: "corral" },
      instances: { type: "string", default: "2" },
    },
  });
  const transport = await connectNats({ servers: values.nats!, name: "hello-web" });
  const driver = await runHelloWeb({
    transport,
    cluster: values.cluster!,
    instances: Number(values.instances),
    onUp: (url, taskId) => console.log(`${taskId} serving ${url}`),
  });
  await new Promise((resolve) => process.once("SIGINT", resolve));
  await driver.stop({ teardown: true });
  await transport.close();
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 2;
  });
}

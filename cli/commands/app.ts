/**
 * `corral app deploy|list|show|scale|restart|rm`: Marathon's apps from the command line, through
 * its REST API (the local cluster's Marathon by default, or `--marathon URL`).
 */
import { readFile } from "node:fs/promises";
import { MarathonApiError, MarathonClient } from "../../frameworks/marathon/client.ts";
import { resolvePathId } from "../../frameworks/marathon/path-id.ts";
import { readClusterFile } from "../cluster-file.ts";
import { explainFetchError } from "../common.ts";
import { durationFlag, parseFlags, UsageError, type FlagSpec } from "../options.ts";

export const APP_FLAGS: Record<string, FlagSpec> = {
  marathon: { type: "string", help: "Marathon URL (default: the cluster `corral up` started)" },
  force: { type: "boolean", help: "override a deployment that holds the app" },
  "no-wait": { type: "boolean", help: "return once the deployment is accepted (deploy, scale, restart, rm)" },
  timeout: { type: "string", help: "how long to follow a deployment", default: "5m" },
};

export const APP_USAGE = `usage: corral app <command> [flags]

  deploy <file.json>     create or update an app (or a group: a file with "apps"/"groups"), and follow the deployment
  list                   apps with their instances
  show <id>              one app as JSON, with its tasks
  scale <id> <n>         change the number of instances
  restart <id>           rolling restart
  rm <id>                delete the app and wait until its tasks are killed`;

function marathonUrl(values: Record<string, string | boolean | undefined>): string {
  const url = (values.marathon as string | undefined) ?? readClusterFile()?.marathonUrl;
  if (!url) throw new UsageError("no Marathon: pass --marathon http://host:8080 (or set CORRAL_MARATHON), or start a cluster with `corral up`");
  if (!/^https?:\/\/[^/\s]+/.test(url)) throw new UsageError(`--marathon must be an http(s) URL such as http://host:8080, got '${url}'`);
  return url.replace(/\/+$/, "");
}

/**
 * The full ids of a group file's apps, its subgroups' included. Ids in a group may be relative to
 * the group that holds them (`"db"` in `/shop` is `/shop/db`), as Marathon resolves them; Marathon
 * has validated the file by the time this runs, so an id that does not resolve is left as written.
 */
function groupAppIds(group: Record<string, unknown>, base: string): string[] {
  const resolve = (id: unknown, against: string) => {
    const resolved = resolvePathId(String(id), { base: against, allowRoot: true });
    return resolved.ok ? resolved.id : String(id);
  };
  const groupId = resolve(group.id, base);
  const apps = Array.isArray(group.apps) ? (group.apps as Array<Record<string, unknown>>).map((app) => resolve(app.id, groupId)) : [];
  const nested = Array.isArray(group.groups) ? (group.groups as Array<Record<string, unknown>>).flatMap((sub) => groupAppIds(sub, groupId)) : [];
  return [...apps, ...nested];
}

/** Prints the deployment's progress until it is done (or the timeout), from `/v2/deployments`. */
async function follow(client: MarathonClient, deploymentId: string, appId: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    const app = await client.show(appId).catch(() => undefined);
    const line = app
      ? `  ${appId}: ${String(app.tasksRunning ?? 0)} running, ${String(app.tasksHealthy ?? 0)} healthy, ${String(app.tasksStaged ?? 0)} staged of ${String(app.instances)}`
      : `  ${appId}: waiting`;
    if (line !== last) console.log(line);
    last = line;
    if (!(await client.deploymentRunning(deploymentId))) return true;
    if (Date.now() > deadline) return false;
    // Following a deployment is watching a remote state; the interval is the refresh rate.
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Waits until the deployment is done (true) or the timeout (false), without progress lines: for an app that is gone. */
async function awaitDeployment(client: MarathonClient, deploymentId: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await client.deploymentRunning(deploymentId)) {
    if (Date.now() > deadline) return false;
    // Watching a remote state, as follow() does.
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return true;
}

export async function appCommand(args: string[]): Promise<number> {
  const { values, rest } = parseFlags(args, APP_FLAGS);
  const [sub, ...params] = rest;
  if (!sub) throw new UsageError(APP_USAGE);
  const client = new MarathonClient(marathonUrl(values));
  const force = values.force === true;
  const wait = values["no-wait"] !== true;
  const timeoutMs = durationFlag(values, "timeout") ?? 300_000;
  try {
    switch (sub) {
      case "deploy": {
        if (!params[0]) throw new UsageError("deploy needs a file: corral app deploy app.json");
        let definition: Record<string, unknown>;
        try {
          definition = JSON.parse(await readFile(params[0], "utf8")) as Record<string, unknown>;
        } catch (error) {
          throw new UsageError(`cannot read ${params[0]}: ${(error as Error).message}`);
        }
        const isGroup = Array.isArray(definition.apps) || Array.isArray(definition.groups);
        const ref = isGroup ? await client.deployGroup(definition, { force }) : await client.deploy(definition, { force });
        console.log(`deployment ${ref.deploymentId} (version ${ref.version})`);
        if (!wait) return 0;
        const id = String(definition.id);
        const apps = isGroup ? groupAppIds(definition, "/") : [id];
        let done = true;
        for (const appId of apps) done = (await follow(client, ref.deploymentId, appId, timeoutMs)) && done;
        if (!done) {
          console.error(`deployment ${ref.deploymentId} still running after ${timeoutMs / 1000} s; see corral app show`);
          return 1;
        }
        for (const appId of apps) {
          for (const task of await client.tasks(appId)) console.log(`  ${String(task.id)}  ${String(task.host)}:${(task.ports as number[] | undefined)?.join(",") ?? ""}`);
        }
        console.log("deployed");
        return 0;
      }
      case "list":
        for (const app of await client.list()) {
          console.log(`${String(app.id).padEnd(30)} ${String(app.tasksRunning ?? 0)}/${String(app.instances)} running  ${String(app.tasksHealthy ?? 0)} healthy  ${app.cmd ? String(app.cmd).slice(0, 60) : ""}`);
        }
        return 0;
      case "show": {
        if (!params[0]) throw new UsageError("show needs an app id");
        console.log(JSON.stringify({ ...(await client.show(params[0])), tasks: await client.tasks(params[0]) }, null, 2));
        return 0;
      }
      case "scale": {
        const n = Number(params[1]);
        if (!params[0] || !Number.isInteger(n) || n < 0) throw new UsageError("scale needs an app id and a whole number: corral app scale /hello 3");
        const ref = await client.scale(params[0], n, { force });
        console.log(`deployment ${ref.deploymentId}`);
        return wait && !(await follow(client, ref.deploymentId, params[0], timeoutMs)) ? 1 : 0;
      }
      case "restart": {
        if (!params[0]) throw new UsageError("restart needs an app id");
        const ref = await client.restart(params[0], { force });
        console.log(`deployment ${ref.deploymentId}`);
        return wait && !(await follow(client, ref.deploymentId, params[0], timeoutMs)) ? 1 : 0;
      }
      case "rm": {
        if (!params[0]) throw new UsageError("rm needs an app id");
        const ref = await client.remove(params[0]);
        // As deploy, scale and restart do: the app is gone from /v2/apps at once, but its tasks
        // are killed by the deployment, and returning before it ends left them running.
        if (!wait) {
          console.log(`deployment ${ref.deploymentId}: removing ${params[0]} (not waiting for its tasks to be killed)`);
          return 0;
        }
        console.log(`deployment ${ref.deploymentId}: removing ${params[0]}, killing its tasks`);
        if (!(await awaitDeployment(client, ref.deploymentId, timeoutMs))) {
          console.error(`deployment ${ref.deploymentId} still running after ${timeoutMs / 1000} s; see /v2/deployments`);
          return 1;
        }
        console.log(`${params[0]} removed, its tasks killed`);
        return 0;
      }
      default:
        throw new UsageError(`unknown app command '${sub}'\n\n${APP_USAGE}`);
    }
  } catch (error) {
    if (error instanceof MarathonApiError) {
      const message = error.status === 0 && error.cause !== undefined ? `cannot reach Marathon at ${client.baseUrl}: ${explainFetchError(error.cause)}` : error.message;
      console.error(`corral app ${sub}: ${message}`);
      for (const line of error.detailLines()) console.error(`  ${line}`);
      return error.status >= 400 && error.status < 500 ? 2 : 1;
    }
    throw error;
  }
}

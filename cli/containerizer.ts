/** Builds an agent's containerizer from `corral agent` / `corral up` flags. */
import type { Logger as PinoLogger } from "pino";
import { lookupUser } from "../agent/containerizer/common.ts";
import { LinuxContainerizer } from "../agent/containerizer/linux.ts";
import { PosixContainerizer } from "../agent/containerizer/posix.ts";
import type { Containerizer } from "../agent/containerizer/types.ts";
import { numberFlag, UsageError, type FlagSpec } from "./options.ts";

export const ISOLATION_FLAGS: Record<string, FlagSpec> = {
  isolation: { type: "string", help: "auto (cgroups and namespaces, degrading when not available), userns, posix, or none (plain process groups)", default: "auto" },
  "default-user": { type: "string", help: "user tasks run as", default: "nobody" },
  "allowed-users": { type: "string", help: "comma-separated users a task may ask to run as" },
  "allow-root": { type: "boolean", help: "let tasks run as root (refused by default)" },
  "no-cpu-quota": { type: "boolean", help: "cpu shares only, no hard CFS quota" },
  "pids-max": { type: "string", help: "process limit per container", default: "1024" },
};

/** The containerizer the flags ask for, and the isolation name to report in `/state`. */
export async function containerizerFromFlags(
  values: Record<string, string | boolean | undefined>,
  log: PinoLogger,
  hostname?: string,
): Promise<{ containerizer: Containerizer; isolation: string }> {
  const isolation = values.isolation as string;
  // Tasks read HOST: it must be the hostname the agent advertises, not the machine's name.
  const host = hostname ? { hostname } : {};
  const pidsMax = numberFlag(values, "pids-max") ?? 1024;
  if (!(Number.isSafeInteger(pidsMax) && pidsMax > 0)) throw new UsageError(`--pids-max must be a positive integer, got '${String(values["pids-max"])}'`);
  if (isolation === "none") return { containerizer: new PosixContainerizer({ log, ...host }), isolation: "posix" };
  if (!["auto", "userns", "posix"].includes(isolation)) throw new UsageError(`--isolation must be auto, userns, posix or none, got '${isolation}'`);
  const allowedUsers = ((values["allowed-users"] as string | undefined) ?? "").split(",").map((u) => u.trim()).filter(Boolean);
  await checkUsersExist(values["default-user"] as string, allowedUsers);
  const containerizer = await LinuxContainerizer.create({
    isolation: isolation as "auto" | "userns" | "posix",
    defaultUser: values["default-user"] as string,
    allowedUsers,
    allowRoot: values["allow-root"] === true,
    cpuQuota: values["no-cpu-quota"] !== true,
    pidsMax,
    log,
    ...host,
  });
  return { containerizer, isolation: containerizer.isolation };
}

/**
 * An agent running as root switches each task to its user: one this host does not know would fail
 * every task it launches (REASON_CONTAINER_LAUNCH_FAILED), so it is refused at start instead.
 * Without root no task switches user and the names are not used.
 */
async function checkUsersExist(defaultUser: string, allowedUsers: readonly string[]): Promise<void> {
  if (process.getuid?.() !== 0) return;
  for (const [flag, user] of [["default-user", defaultUser] as const, ...allowedUsers.map((u) => ["allowed-users", u] as const)]) {
    try {
      await lookupUser(user);
    } catch (error) {
      throw new UsageError(`--${flag}: ${(error as Error).message}`);
    }
  }
}

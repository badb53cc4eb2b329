/**
 * Flag parsing for `corral`: `--name value` or `--name=value`, with every flag also readable from
 * a `CORRAL_<NAME>` environment variable (`--work-dir` <- `CORRAL_WORK_DIR`). Flags win.
 */
import { parseArgs } from "node:util";

/** One flag of a command. */
export interface FlagSpec {
  type: "string" | "boolean";
  /** Shown in `--help`. */
  help: string;
  /** Value when neither the flag nor its environment variable is given. */
  default?: string | boolean;
}

/** Thrown for a bad command line; `corral` prints it with the usage and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The environment variable of a flag: `work-dir` -> `CORRAL_WORK_DIR`. */
export function envName(flag: string): string {
  return `CORRAL_${flag.toUpperCase().replace(/-/g, "_")}`;
}

/** Parses `args` against `specs`; the words after `--` (or other positionals) come back in `rest`. */
export function parseFlags(
  args: string[],
  specs: Record<string, FlagSpec>,
  env: NodeJS.ProcessEnv = process.env,
): { values: Record<string, string | boolean | undefined>; rest: string[] } {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, { type: spec.type }])),
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const values: Record<string, string | boolean | undefined> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const given = (parsed.values as Record<string, string | boolean | undefined>)[name];
    const fromEnv = env[envName(name)];
    if (given !== undefined) values[name] = given;
    else if (fromEnv !== undefined) values[name] = spec.type === "boolean" ? !/^(0|false|no|)$/i.test(fromEnv) : fromEnv;
    else values[name] = spec.default;
  }
  return { values, rest: parsed.positionals };
}

/** A number flag: `--cpus 0.5`. */
export function numberFlag(values: Record<string, string | boolean | undefined>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined || raw === "") return undefined;
  const value = Number(raw);
  if (typeof raw !== "string" || !Number.isFinite(value)) throw new UsageError(`--${name} must be a number, got '${String(raw)}'`);
  return value;
}

/** A TCP port flag: a whole number from 0 (any free port) to 65535. */
export function portFlag(values: Record<string, string | boolean | undefined>, name: string): number | undefined {
  const raw = values[name];
  const port = raw === undefined || raw === "" ? undefined : Number(raw);
  if (port !== undefined && !(typeof raw === "string" && /^\s*\d+\s*$/.test(raw) && port <= 65535)) {
    throw new UsageError(`--${name} must be a port number from 0 to 65535, got '${String(raw)}'`);
  }
  return port;
}

/** A duration flag in Mesos style: `500ms`, `1s`, `2m`, `1h`, `2d`, `1w`, or plain milliseconds. */
export function durationFlag(values: Record<string, string | boolean | undefined>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined || raw === "") return undefined;
  const match = typeof raw === "string" ? /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$/.exec(raw.trim()) : null;
  if (!match) throw new UsageError(`--${name} must be a duration like 500ms, 1s or 2m, got '${String(raw)}'`);
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[match[2] ?? "ms"]!;
  return Number(match[1]) * scale;
}

/** The usage text of a command's flags. */
export function flagHelp(specs: Record<string, FlagSpec>): string {
  return Object.entries(specs)
    .map(([name, spec]) => {
      const shown = `--${name}${spec.type === "string" ? " <value>" : ""}`;
      const def = spec.default === undefined || spec.default === false ? "" : ` (default: ${String(spec.default)})`;
      return `  ${shown.padEnd(28)} ${spec.help}${def}  [${envName(name)}]`;
    })
    .join("\n");
}

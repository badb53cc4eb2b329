/**
 * `corral`: the command line. It only parses flags and calls factories; every behaviour lives in
 * the components.
 */
import { agentCommand, AGENT_FLAGS } from "./commands/agent.ts";
import { appCommand, APP_FLAGS, APP_USAGE } from "./commands/app.ts";
import { jobCommand, JOB_FLAGS, JOB_USAGE } from "./commands/job.ts";
import { marathonCommand, MARATHON_FLAGS } from "./commands/marathon.ts";
import { masterCommand, MASTER_FLAGS } from "./commands/master.ts";
import { runCommand, RUN_FLAGS } from "./commands/run.ts";
import { stateCommand, STATE_FLAGS } from "./commands/state.ts";
import { upCommand, UP_FLAGS } from "./commands/up.ts";
import { simCommand, SIM_USAGE } from "../sim/cli.ts";
import { flagHelp, UsageError, type FlagSpec } from "./options.ts";

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; flags: Record<string, FlagSpec>; summary: string }> = {
  up: { run: upCommand, flags: UP_FLAGS, summary: "start a local cluster (embedded NATS, a master, agents)" },
  master: { run: masterCommand, flags: MASTER_FLAGS, summary: "run a master on an existing NATS" },
  agent: { run: agentCommand, flags: AGENT_FLAGS, summary: "run an agent on an existing NATS" },
  marathon: { run: marathonCommand, flags: MARATHON_FLAGS, summary: "run Marathon (the v2 REST API) on an existing NATS; --ha for one of several" },
  state: { run: stateCommand, flags: STATE_FLAGS, summary: "show agents, frameworks and tasks" },
  run: { run: runCommand, flags: RUN_FLAGS, summary: "run one command as a task and stream its output" },
  app: { run: appCommand, flags: APP_FLAGS, summary: "deploy and manage Marathon apps (deploy, list, show, scale, restart, rm)" },
  job: { run: jobCommand, flags: JOB_FLAGS, summary: "run batch jobs from a job file (job run job.json)" },
  sim: { run: simCommand, flags: {}, summary: "simulate a scenario (sim run), check invariants under faults (sim check), size a cluster (sim plan)" },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `usage: corral <command> [flags]\n\n${lines.join("\n")}\n\ncorral <command> --help lists its flags; every flag can also be set as CORRAL_<FLAG>.`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`corral: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  const subcommandUsage: Record<string, [string, Record<string, FlagSpec>]> = { app: [APP_USAGE, APP_FLAGS], job: [JOB_USAGE, JOB_FLAGS] };
  const withSubcommands = subcommandUsage[name];
  if (withSubcommands && (args.length === 0 || args[0] === "--help" || args[0] === "-h")) {
    console.log(`${withSubcommands[0]}\n\n${flagHelp(withSubcommands[1])}`);
    return args.length === 0 ? 2 : 0;
  }
  if (name === "sim" && (args.length === 0 || args.includes("--help") || args.includes("-h"))) {
    console.log(SIM_USAGE);
    return args.length === 0 ? 2 : 0;
  }
  if (args.includes("--help") || args.includes("-h")) {
    console.log(`usage: corral ${name} [flags]${name === "run" ? " -- <command>" : ""}\n\n${flagHelp(command.flags)}`);
    return 0;
  }
  try {
    return await command.run(args);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`corral ${name}: ${error.message}`);
      return 2;
    }
    console.error(`corral ${name}: ${(error as Error).message}`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

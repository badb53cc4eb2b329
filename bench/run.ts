/**
 * `npm run bench -- <name>`: runs one benchmark, prints its table and writes
 * `bench/results/<name>.json`. Benchmarks are never part of `npm test`.
 *
 * The npm script starts node with a young generation of 256 MB semi-spaces (V8's default is 16),
 * as `corral sim` does: the simulator allocates a few short-lived objects per message, and with
 * small semi-spaces scavenges came so often that many of them were promoted before they died.
 * The full-size simulator case ran in 987 and 1,102 s with 64 MB, 715 and 794 s with 256 MB (peak
 * RSS 2,746-2,861 and 3,398-3,422 MiB), two runs each on the same 2-core machine.
 */
import { BenchUsageError, report, type BenchResult } from "./lib.ts";

const benchmarks: Record<string, () => Promise<BenchResult[]>> = {
  allocator: async () => (await import("./allocator.ts")).runAllocatorBench(process.argv.slice(3)),
  launch: async () => (await import("./launch.ts")).runLaunchBench(process.argv.slice(3)),
  isolation: async () => (await import("./isolation.ts")).runIsolationBench(process.argv.slice(3)),
  sim: async () => (await import("./sim.ts")).runSimBench(process.argv.slice(3)),
  failover: async () => (await import("./failover.ts")).runFailoverBench(process.argv.slice(3)),
  marathon: async () => (await import("./marathon.ts")).runMarathonBench(process.argv.slice(3)),
  codec: async () => (await import("./codec.ts")).runCodecBench(process.argv.slice(3)),
};

const name = process.argv[2];
if (!name || !(name in benchmarks)) {
  console.error(`usage: npm run bench -- <name> [options]\n  names: ${Object.keys(benchmarks).join(", ")}`);
  process.exit(2);
}
let results: BenchResult[];
try {
  results = await benchmarks[name]!();
} catch (err) {
  if (!(err instanceof BenchUsageError)) throw err;
  console.error(`npm run bench -- ${name}: ${err.message}`);
  process.exit(2);
}
report(name, results);

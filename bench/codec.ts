/**
 * The wire codec's speed (`npm run bench -- codec`): nanoseconds to encode (check, convert,
 * serialize) and to decode (parse, convert, check) one envelope, per kind of message the busiest
 * paths carry. Every message on the bus, real or simulated, goes through both, so this is a floor
 * under the cost of each message in the master, the agents and the simulator.
 *
 * The last rows take the five kinds in turn as the simulator sends them by default: handed over
 * in process (`encodeEnvelope` to an in-process transport), checked and converted but never
 * serialized or parsed.
 *
 * Options: `--messages N` (per kind and round; default 200000). Each figure is the median of
 * three rounds after a warm-up round. No issue names a target for it.
 */
import { encodeEnvelope, safeDecode, type EnvelopeInput } from "../sdk/wire/codec.ts";
import { agentCmdSubject, frameworkEventsSubject, masterAgentSubject, masterSchedulerSubject } from "../sdk/wire/subjects.ts";
import { everyPayload } from "../test/sdk/fixtures.ts";
import { parseBenchArgs, type BenchResult } from "./lib.ts";

const CLUSTER = "bench";
/** The destination of the in-process rows: what the simulator's transports say of themselves. */
const IN_PROCESS = { inProcess: true } as const;

/** Kinds of message and the subject each travels on. */
const KINDS: ReadonlyArray<readonly [string, string]> = [
  ["agentToMaster.pong", masterAgentSubject(CLUSTER, "agent-1")],
  ["agentToMaster.statusUpdate", masterAgentSubject(CLUSTER, "agent-1")],
  ["masterToAgent.runTask", agentCmdSubject(CLUSTER, "agent-1")],
  ["schedulerEvent.offers", frameworkEventsSubject(CLUSTER, "fw-1")],
  ["schedulerCall.accept", masterSchedulerSubject(CLUSTER)],
];

function nsPerMessage(count: number, body: () => void): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) body();
  return Number(process.hrtime.bigint() - started) / count;
}

function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
}

/** The encode and decode rows of one case: a warm-up round each, then the median of three. */
function measure(name: string, count: number, encode: () => void, decode: () => void): BenchResult[] {
  nsPerMessage(count, encode);
  nsPerMessage(count, decode);
  const row = (metric: string, body: () => void): BenchResult => ({
    case: name,
    metric,
    unit: "ns/message",
    value: Math.round(median([0, 1, 2].map(() => nsPerMessage(count, body)))),
    target: null,
    better: "lower",
  });
  return [row("encode", encode), row("decode", decode)];
}

export async function runCodecBench(args: string[]): Promise<BenchResult[]> {
  const flags = parseBenchArgs(args, { messages: "integer > 0" });
  const count = flags.number("messages") ?? 200_000;
  const messages = KINDS.map(([kind, subject]) => {
    const input: EnvelopeInput = everyPayload[kind]!;
    const bytes = encodeEnvelope(input);
    const carried = encodeEnvelope(input, IN_PROCESS);
    for (const encoded of [bytes, carried]) {
      const decoded = safeDecode(subject, encoded);
      if (!decoded.ok) throw new Error(`${kind}: does not decode on ${subject}: ${decoded.error.message}`);
    }
    return { kind, subject, input, bytes, carried };
  });
  const decodeOne = (message: (typeof messages)[number], encoded = message.bytes) => {
    if (!safeDecode(message.subject, encoded).ok) throw new Error(`${message.kind}: decoding failed`);
  };
  const results = messages.flatMap((message) =>
    measure(`${message.kind} (${message.bytes.length} bytes)`, count, () => void encodeEnvelope(message.input), () => decodeOne(message)),
  );
  // Real traffic mixes the kinds, which is harder on V8's caches than one kind at a time.
  let next = 0;
  results.push(
    ...measure("the five kinds in turn", count, () => void encodeEnvelope(messages[next++ % messages.length]!.input), () => decodeOne(messages[next++ % messages.length]!)),
    ...measure(
      "the five kinds in turn, in process",
      count,
      () => void encodeEnvelope(messages[next++ % messages.length]!.input, IN_PROCESS),
      () => {
        const message = messages[next++ % messages.length]!;
        decodeOne(message, message.carried);
      },
    ),
  );
  return results;
}

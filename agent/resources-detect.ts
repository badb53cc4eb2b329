/**
 * What an agent offers when the operator does not say: Mesos's defaults, computed from a probe of
 * the host. {@link detectResources} and {@link parseAttributes} are pure; {@link probeHost} is the
 * only part that touches the machine.
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import { cpus as osCpus, totalmem } from "node:os";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Raw facts about the host, as measured by {@link probeHost}. */
export interface HostFacts {
  /** Online CPUs. */
  cpus: number;
  /** Total physical memory, in bytes. */
  memBytes: number;
  /**
   * Size of the file system holding the agent's work directory, in bytes: its total, not what is
   * free, as Mesos takes it, so that what an agent offers does not shrink as its tasks fill the disk
   * (a restarted agent would otherwise count its running tasks' bytes twice).
   */
  diskBytes: number;
}

/** An inclusive port range. */
export interface PortRange {
  begin: number;
  end: number;
}

/**
 * Overrides for individual resources (what an operator sets with `--resources`); anything not
 * given is detected.
 */
export interface DetectResourcesOptions {
  /** @default the host's CPU count */
  cpus?: number;
  /** @default total memory minus 1 GiB, or half of it when the host has less than 2 GiB */
  memMb?: number;
  /** @default the work directory's file system size minus 5 GiB, or half of it under 10 GiB */
  diskMb?: number;
  /** @default [{ begin: 31000, end: 32000 }] */
  ports?: PortRange[];
}

/** The agent's total resources, structured and in Mesos's text form. */
export interface DetectedResources {
  cpus: number;
  /** Whole MiB (Mesos's "MB"). */
  memMb: number;
  /** Whole MiB (Mesos's "MB"). */
  diskMb: number;
  ports: PortRange[];
  /** e.g. `cpus:8;mem:15008;disk:95000;ports:[31000-32000]`, as the agent's `--resources` flag takes it. */
  text: string;
}

/** Mesos's default port range for agents. */
export const DEFAULT_PORT_RANGES: readonly PortRange[] = [{ begin: 31000, end: 32000 }];

/**
 * Computes the agent's resources the way a Mesos agent does without `--resources`: all CPUs;
 * memory less 1 GiB for the system (or half of it on hosts under 2 GiB); the size of the work
 * directory's file system less 5 GiB (or half of it under 10 GiB); ports 31000-32000. Memory and
 * disk are rounded down to whole MiB so the text form stays integral.
 *
 * @throws RangeError naming the field when a fact or an override is not a finite non-negative number,
 *   or a port range is malformed.
 */
export function detectResources(host: HostFacts, options: DetectResourcesOptions = {}): DetectedResources {
  const cpus = options.cpus ?? nonNegative(host.cpus, "host.cpus");
  const memMb = options.memMb ?? Math.floor(defaultMemBytes(nonNegative(host.memBytes, "host.memBytes")) / MiB);
  const diskMb = options.diskMb ?? Math.floor(defaultDiskBytes(nonNegative(host.diskBytes, "host.diskBytes")) / MiB);
  nonNegative(cpus, "cpus");
  nonNegative(memMb, "memMb");
  nonNegative(diskMb, "diskMb");
  const ports = (options.ports ?? DEFAULT_PORT_RANGES).map((range, index) => checkRange(range, index));
  const text = `cpus:${cpus};mem:${memMb};disk:${diskMb};ports:[${ports.map((r) => `${r.begin}-${r.end}`).join(", ")}]`;
  return { cpus, memMb, diskMb, ports, text };
}

function defaultMemBytes(total: number): number {
  return total >= 2 * GiB ? total - GiB : total / 2;
}

function defaultDiskBytes(size: number): number {
  return size >= 10 * GiB ? size - 5 * GiB : size / 2;
}

function checkRange(range: PortRange, index: number): PortRange {
  const { begin, end } = range;
  const valid = Number.isInteger(begin) && Number.isInteger(end) && begin >= 1 && end <= 65535 && begin <= end;
  if (!valid) throw new RangeError(`ports[${index}] must be integers with 1 <= begin <= end <= 65535, got ${begin}-${end}`);
  return { begin, end };
}

function nonNegative(value: number, name: string): number {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  return value;
}

/** Measures the host: CPU count, total memory and the size of `workDir`'s file system. */
export async function probeHost(workDir: string): Promise<HostFacts> {
  const fs = await statfs(workDir);
  return {
    // os.cpus() is empty on some platforms when /proc/cpuinfo is unreadable; a host has at least one.
    cpus: Math.max(1, osCpus().length),
    memBytes: totalmem(),
    diskBytes: fs.blocks * fs.bsize,
  };
}

/** One agent attribute, e.g. `{ name: "rack", value: "r1" }`. */
export interface Attribute {
  name: string;
  value: string;
}

/** Thrown by {@link parseAttributes}; `token` is the offending `name:value` piece. */
export class AttributeParseError extends Error {
  readonly code = "CORRAL_ERR_BAD_ATTRIBUTES";
  readonly token: string;

  constructor(token: string, rule: string) {
    super(`invalid agent attribute "${token}": ${rule}`);
    this.name = "AttributeParseError";
    this.token = token;
  }
}

/**
 * Parses agent attributes in Mesos's flag form, `rack:r1;zone:a`. Pieces are separated by `;`
 * (empty pieces are skipped, as Mesos does); each is `name:value` split at the first `:`, so values
 * may contain `:`. Names and values are trimmed. Values stay text: Marathon constraints compare them
 * as strings or parse them as they need.
 *
 * @throws AttributeParseError naming the bad piece: missing `:`, empty name, empty value, or a name
 *   given twice.
 */
export function parseAttributes(text: string): Attribute[] {
  const attributes: Attribute[] = [];
  const seen = new Set<string>();
  for (const raw of text.split(";")) {
    const token = raw.trim();
    if (token === "") continue;
    const colon = token.indexOf(":");
    if (colon < 0) throw new AttributeParseError(token, 'expected "name:value" (missing ":")');
    const name = token.slice(0, colon).trim();
    const value = token.slice(colon + 1).trim();
    if (name === "") throw new AttributeParseError(token, "empty name");
    if (value === "") throw new AttributeParseError(token, `empty value for "${name}"`);
    if (seen.has(name)) throw new AttributeParseError(token, `duplicate name "${name}"`);
    seen.add(name);
    attributes.push({ name, value });
  }
  return attributes;
}

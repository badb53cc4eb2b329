/**
 * Reading trace files: `.csv` or gzip-compressed `.csv.gz`, one record per line, fields separated
 * by commas. Fields may be double-quoted (RFC 4180: `""` is a quote inside quotes); quoted fields
 * may not span lines (the traces never need it). Files are read whole before a run starts, so a
 * replay never waits on the disk in the middle of virtual time.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";

/** A malformed trace; `problems` are `file:line: column N (name): rule`. */
export class TraceError extends Error {
  readonly code = "CORRAL_ERR_INVALID_TRACE";
  constructor(readonly problems: string[]) {
    super(`invalid trace:\n  ${problems.join("\n  ")}`);
    this.name = "TraceError";
  }
}

/** Problems reported before a trace is given up on. */
export const MAX_REPORTED_PROBLEMS = 20;

/** The text of a `.csv` or `.csv.gz` file. */
export function readTraceText(path: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new TraceError([`${path}: cannot read (${err instanceof Error ? err.message : String(err)})`]);
  }
  if (path.endsWith(".gz") || (bytes[0] === 0x1f && bytes[1] === 0x8b)) {
    try {
      bytes = gunzipSync(bytes);
    } catch (err) {
      throw new TraceError([`${path}: not valid gzip (${err instanceof Error ? err.message : String(err)})`]);
    }
  }
  return bytes.toString("utf8");
}

/** Splits one CSV line into fields. @returns the fields, or a string describing the problem. */
export function splitCsvLine(line: string): string[] | string {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let value = "";
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) return "a quoted field is not closed";
        value += line.slice(i, q);
        if (line[q + 1] === '"') {
          value += '"';
          i = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      fields.push(value);
      if (i === line.length) return fields;
      if (line[i] !== ",") return `expected a comma after a quoted field at character ${i + 1}`;
      i++;
      continue;
    }
    const comma = line.indexOf(",", i);
    if (comma < 0) {
      fields.push(line.slice(i));
      return fields;
    }
    fields.push(line.slice(i, comma));
    i = comma + 1;
  }
}

/** One record with where it came from, for error messages. */
export interface CsvRecord {
  fields: string[];
  /** `file:line`. */
  where: string;
}

/**
 * Calls `onRecord` for each non-empty line of `path` (a trailing `\r` is dropped). A line that
 * cannot be split is a problem, collected in `problems`.
 */
export function forEachRecord(path: string, problems: string[], onRecord: (record: CsvRecord) => void): void {
  const text = readTraceText(path);
  let start = 0;
  let line = 0;
  while (start < text.length && problems.length < MAX_REPORTED_PROBLEMS) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    line++;
    let raw = text.slice(start, end);
    start = end + 1;
    if (raw.endsWith("\r")) raw = raw.slice(0, -1);
    if (raw.trim() === "") continue;
    const where = `${path}:${line}`;
    const fields = splitCsvLine(raw);
    if (typeof fields === "string") problems.push(`${where}: ${fields}`);
    else onRecord({ fields, where });
  }
}

/** A column of a trace table: its 1-based number in the schema and its name. */
export interface Column {
  index: number;
  name: string;
}

/** Reads typed fields of a record, collecting problems that name the column and the rule. */
export class FieldReader {
  constructor(
    private readonly problems: string[],
    private readonly record: CsvRecord,
  ) {}

  private fail(column: Column, rule: string, raw: string): undefined {
    this.problems.push(`${this.record.where}: column ${column.index} (${column.name}): ${rule}, got ${JSON.stringify(raw)}`);
    return undefined;
  }

  raw(column: Column): string {
    return this.record.fields[column.index - 1] ?? "";
  }

  /** A finite number; empty is `undefined` unless required. */
  number(column: Column, rule: { required?: boolean; min?: number; max?: number; int?: boolean } = {}): number | undefined {
    const raw = this.raw(column).trim();
    if (raw === "") return rule.required ? this.fail(column, "is required", raw) : undefined;
    const n = Number(raw);
    if (!Number.isFinite(n)) return this.fail(column, "must be a number", raw);
    if (rule.int && !Number.isInteger(n)) return this.fail(column, "must be an integer", raw);
    if (rule.min !== undefined && n < rule.min) return this.fail(column, `must be >= ${rule.min}`, raw);
    if (rule.max !== undefined && n > rule.max) return this.fail(column, `must be <= ${rule.max}`, raw);
    return n;
  }

  /** A non-empty string (when required). */
  text(column: Column, required = true): string | undefined {
    const raw = this.raw(column).trim();
    if (raw === "" && required) return this.fail(column, "is required", raw);
    return raw;
  }

  /** Checks the number of fields. */
  columns(count: number, table: string): boolean {
    const n = this.record.fields.length;
    if (n === count) return true;
    this.problems.push(`${this.record.where}: ${table} rows have ${count} columns, this one has ${n}`);
    return false;
  }
}

/**
 * The progress display of long simulator runs (`corral sim run`, `npm run bench -- sim`): a bar
 * redrawn in place on a terminal, or a plain line now and then when the output is a log file.
 * It is fed by `runScenario`'s `onProgress` (after every sample) and only ever writes; the wall
 * clock it shows comes from the caller, so the display itself is deterministic.
 *
 * @module
 */
import type { SimProgress } from "./report.ts";

/** Options of {@link ProgressDisplay}. */
export interface ProgressDisplayOptions {
  /** Where the text goes (stderr in the CLI). */
  write: (text: string) => void;
  /** Wall-clock milliseconds (any origin): for the elapsed and remaining time. */
  nowMs: () => number;
  /** `"bar"`: one line redrawn in place (a terminal); `"lines"`: a new line per update (a log). */
  mode: "bar" | "lines";
  /**
   * Least wall time between two updates, ms.
   * @default 250 for `"bar"`, 30,000 for `"lines"`
   */
  intervalMs?: number;
  /** Width of the bar, characters. @default 30 */
  width?: number;
}

/** Shows a run's progress; see the module comment. */
export class ProgressDisplay {
  private readonly startedMs: number;
  private readonly intervalMs: number;
  private readonly width: number;
  private lastShownMs = -Infinity;
  private last: SimProgress | undefined;
  private drawn = false;
  private finished = false;

  constructor(private readonly options: ProgressDisplayOptions) {
    this.startedMs = options.nowMs();
    this.intervalMs = options.intervalMs ?? (options.mode === "bar" ? 250 : 30_000);
    this.width = options.width ?? 30;
  }

  /** Takes the latest progress; shows it unless the last update is too recent. */
  update(progress: SimProgress): void {
    if (this.finished) return;
    this.last = progress;
    const now = this.options.nowMs();
    if (now - this.lastShownMs < this.intervalMs) return;
    this.lastShownMs = now;
    this.show(now);
  }

  /**
   * Shows the final state and ends the bar's line, so that what follows starts on a fresh one.
   * Later updates and calls do nothing.
   */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.last !== undefined) this.show(this.options.nowMs());
    if (this.options.mode === "bar" && this.drawn) this.options.write("\n");
  }

  private show(now: number): void {
    const text = formatProgress(this.last!, now - this.startedMs, this.width);
    // `\x1b[K` clears what a longer earlier line left to the right.
    this.options.write(this.options.mode === "bar" ? `\r${text}\x1b[K` : `${text}\n`);
    this.drawn = true;
  }
}

/** A display on stderr: a bar on a terminal, else a line every 30 s. */
export function stderrProgress(): ProgressDisplay {
  return new ProgressDisplay({
    write: (text) => void process.stderr.write(text),
    nowMs: () => performance.now(),
    mode: process.stderr.isTTY ? "bar" : "lines",
  });
}

/**
 * One progress line, for example
 * `[###############...............]  50%  3.5 of 7 d  18.2M events (35.1k/s)  8m 40s, about 8m 40s left`.
 */
export function formatProgress(progress: SimProgress, wallMs: number, width = 30): string {
  const fraction = progress.endMs > 0 ? Math.min(1, Math.max(0, progress.virtualMs / progress.endMs)) : 1;
  const filled = Math.round(fraction * width);
  const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const unit = virtualUnit(progress.endMs);
  const virtual = `${trim(progress.virtualMs / unit.ms)} of ${trim(progress.endMs / unit.ms)} ${unit.name}`;
  const rate = wallMs > 0 ? ` (${count((progress.events / wallMs) * 1000)}/s)` : "";
  const left = fraction > 0 && fraction < 1 ? `, about ${duration((wallMs * (1 - fraction)) / fraction)} left` : "";
  return `${bar} ${percent}  ${virtual}  ${count(progress.events)} events${rate}  ${duration(wallMs)}${left}`;
}

/** The unit virtual time is shown in: the largest that the end is at least two of. */
function virtualUnit(endMs: number): { name: string; ms: number } {
  if (endMs >= 2 * 86_400_000) return { name: "d", ms: 86_400_000 };
  if (endMs >= 2 * 3_600_000) return { name: "h", ms: 3_600_000 };
  if (endMs >= 2 * 60_000) return { name: "min", ms: 60_000 };
  return { name: "s", ms: 1000 };
}

/** At most one decimal, none when whole. */
function trim(value: number): string {
  const rounded = Math.round(value * 10) / 10;
  return Number.isInteger(rounded) ? String(rounded) : rounded.toFixed(1);
}

/** 950, 12.3k, 18.2M. */
function count(n: number): string {
  if (n >= 1e6) return `${trim(n / 1e6)}M`;
  if (n >= 1e3) return `${trim(n / 1e3)}k`;
  return String(Math.round(n));
}

/** 42s, 8m 40s, 1h 05m. */
function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

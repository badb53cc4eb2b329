/**
 * Bounded reads of files in a task's sandbox, the backend of the agent's `/files/read` endpoint
 * (what `corral task log` and UIs use to tail `stdout`/`stderr`).
 *
 * The path comes from a remote user and the sandbox's contents from the task, so both are
 * untrusted: absolute paths, `..` escapes and symlinks pointing outside the sandbox are refused,
 * and the check is made on the descriptor actually opened, so a task swapping a directory for a
 * symlink between check and open gains nothing.
 *
 * @module
 */
import { constants as fsConstants } from "node:fs";
import { open, readlink, realpath, stat, type FileHandle } from "node:fs/promises";
import { isAbsolute, join, normalize, relative, sep } from "node:path";

/** Reads return at most this many bytes when no `length` is given (64 KiB). */
export const DEFAULT_READ_LENGTH = 64 * 1024;
/** Upper bound on `length` (1 MiB); larger requests are cut to it. */
export const MAX_READ_LENGTH = 1024 * 1024;

/** Stable error codes of {@link readSandboxFile}. */
export type SandboxFileErrorCode =
  | "CORRAL_ERR_PATH_OUTSIDE_SANDBOX"
  | "CORRAL_ERR_NOT_FOUND"
  | "CORRAL_ERR_NOT_A_FILE"
  | "CORRAL_ERR_BAD_RANGE";

/** Why a sandbox read was refused; `code` is stable, `message` is for people. */
export class SandboxFileError extends Error {
  readonly code: SandboxFileErrorCode;
  readonly path: string;

  constructor(code: SandboxFileErrorCode, path: string, message: string) {
    super(message);
    this.name = "SandboxFileError";
    this.code = code;
    this.path = path;
  }
}

/** Which part of the file to read. */
export interface ReadRange {
  /**
   * Byte offset to start at. `-1` asks only for the file's size (empty `data`, `offset` = size), as
   * Mesos's `/files/read` does, so a tailer can start at the end.
   * @default 0
   */
  offset?: number;
  /**
   * Maximum bytes to return; capped at {@link MAX_READ_LENGTH}. `-1` is the same as leaving it out,
   * as in Mesos's `/files/read` (whose web UI pailer sends `length=-1`).
   * @default DEFAULT_READ_LENGTH (64 KiB)
   */
  length?: number;
}

/** The bytes read, shaped like Mesos's `/files/read` answer. */
export interface SandboxRead {
  /**
   * The bytes read, decoded as UTF-8. A multi-byte character cut by the end of the range is left
   * for the next read (unless it is all there is to read); one cut by the start decodes lossily.
   */
  data: string;
  /** Where `data` starts (the file size for `offset: -1`). */
  offset: number;
  /** How many bytes of the file `data` holds (at most `length`): add it to `offset` to continue. */
  length: number;
  /** The file's size at the time of the read. */
  totalSize: number;
}

/**
 * Reads part of a regular file inside `sandboxDir`.
 *
 * An `offset` at or past the end returns empty `data` (the file may still grow).
 *
 * @param relativePath a path relative to the sandbox, e.g. `stdout` or `logs/app.log`.
 * @throws SandboxFileError `CORRAL_ERR_PATH_OUTSIDE_SANDBOX` for absolute paths, `..` escapes and
 *   symlinks resolving outside; `CORRAL_ERR_NOT_FOUND` when the file (or sandbox) does not exist;
 *   `CORRAL_ERR_NOT_A_FILE` for directories, FIFOs and devices; `CORRAL_ERR_BAD_RANGE` for a
 *   negative (other than -1) or non-integer offset or length.
 */
export async function readSandboxFile(sandboxDir: string, relativePath: string, range: ReadRange = {}): Promise<SandboxRead> {
  const { offset, length } = checkRange(relativePath, range);
  const lexical = checkLexically(relativePath);
  const root = await realpathOr(sandboxDir, relativePath, `sandbox ${sandboxDir} does not exist`);
  const target = await realpathOr(join(root, lexical), relativePath, `no such file in the sandbox: ${relativePath}`);
  if (target === root) throw new SandboxFileError("CORRAL_ERR_NOT_A_FILE", relativePath, `not a regular file: ${relativePath} (the sandbox itself)`);
  if (!isInside(root, target)) throw outside(relativePath, "resolves outside the sandbox");

  const handle = await openRegular(target, relativePath);
  try {
    await checkOpenedInside(handle, root, target, relativePath);
    const info = await handle.stat();
    if (!info.isFile()) throw new SandboxFileError("CORRAL_ERR_NOT_A_FILE", relativePath, `not a regular file: ${relativePath}`);
    const totalSize = info.size;
    if (offset === -1) return { data: "", offset: totalSize, length: 0, totalSize };
    const wanted = Math.max(0, Math.min(length, totalSize - offset));
    const buffer = Buffer.alloc(wanted);
    const { bytesRead } = wanted > 0 ? await handle.read(buffer, 0, wanted, offset) : { bytesRead: 0 };
    const whole = wholeCharactersLength(buffer, bytesRead);
    return { data: buffer.subarray(0, whole).toString("utf8"), offset, length: whole, totalSize };
  } finally {
    await handle.close();
  }
}

/**
 * How many of the first `n` bytes of `bytes` to return so that a UTF-8 character cut by the end of
 * the read is left for the next one (the reader goes on from `offset + length`) rather than
 * decoded into replacement characters on both sides of the cut: `n` less an incomplete trailing
 * sequence, unless that would leave nothing.
 */
function wholeCharactersLength(bytes: Uint8Array, n: number): number {
  for (let i = n - 1; i >= Math.max(0, n - 4); i--) {
    const byte = bytes[i]!;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: look further back for its lead
    const size = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return i + size > n && i > 0 ? i : n;
  }
  return n;
}

function checkRange(path: string, range: ReadRange): { offset: number; length: number } {
  const offset = range.offset ?? 0;
  const length = range.length === undefined || range.length === -1 ? DEFAULT_READ_LENGTH : range.length;
  if (!Number.isSafeInteger(offset) || offset < -1) {
    throw new SandboxFileError("CORRAL_ERR_BAD_RANGE", path, `offset must be an integer >= 0 (or -1 for the size), got ${offset}`);
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new SandboxFileError("CORRAL_ERR_BAD_RANGE", path, `length must be an integer >= 0 (or -1 for no length), got ${length}`);
  }
  return { offset, length: Math.min(length, MAX_READ_LENGTH) };
}

/** Refuses what can be refused without touching the disk; returns the normalised relative path. */
function checkLexically(relativePath: string): string {
  if (typeof relativePath !== "string" || relativePath === "") {
    throw new SandboxFileError("CORRAL_ERR_NOT_FOUND", String(relativePath), "a file path relative to the sandbox is required");
  }
  if (relativePath.includes("\0")) throw outside(relativePath, "contains a NUL byte");
  if (isAbsolute(relativePath)) throw outside(relativePath, "is absolute; give a path relative to the sandbox");
  const normalised = normalize(relativePath);
  if (normalised === ".." || normalised.startsWith(`..${sep}`)) throw outside(relativePath, "escapes the sandbox with '..'");
  return normalised;
}

async function realpathOr(path: string, requested: string, missing: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new SandboxFileError("CORRAL_ERR_NOT_FOUND", requested, missing);
    if (code === "ELOOP") throw new SandboxFileError("CORRAL_ERR_NOT_FOUND", requested, `symlink loop: ${requested}`);
    throw error;
  }
}

/**
 * Opens without following a final symlink (realpath already resolved them all, so one appearing now
 * is a swap) and without blocking on a FIFO the task may have planted.
 */
async function openRegular(target: string, requested: string): Promise<FileHandle> {
  try {
    return await open(target, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new SandboxFileError("CORRAL_ERR_NOT_FOUND", requested, `no such file in the sandbox: ${requested}`);
    if (code === "ELOOP") throw outside(requested, "changed into a symlink while being opened");
    if (code === "EISDIR") throw new SandboxFileError("CORRAL_ERR_NOT_A_FILE", requested, `not a regular file: ${requested}`);
    throw error;
  }
}

/** Verifies that the opened descriptor is the file that was checked, not one swapped in since. */
async function checkOpenedInside(handle: FileHandle, root: string, target: string, requested: string): Promise<void> {
  const viaProc = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
  if (viaProc !== undefined) {
    if (!isInside(root, viaProc)) throw outside(requested, "resolves outside the sandbox");
    return;
  }
  // Without /proc: the descriptor must be the same inode the checked path names now.
  const [opened, named] = await Promise.all([handle.stat(), stat(target).catch(() => undefined)]);
  if (!named || opened.dev !== named.dev || opened.ino !== named.ino) throw outside(requested, "changed while being opened");
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

function outside(path: string, why: string): SandboxFileError {
  return new SandboxFileError("CORRAL_ERR_PATH_OUTSIDE_SANDBOX", path, `path ${JSON.stringify(path)} ${why}`);
}

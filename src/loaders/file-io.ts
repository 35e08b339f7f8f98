/**
 * Whole-buffer file reads and writes for checkpoints of any size.
 */
import { closeSync, openSync, readSync, renameSync, rmSync, writeSync } from "node:fs";

/** fs.readSync and writeSync take lengths below 2 GiB, so big buffers move in chunks. */
const IO_CHUNK_BYTES = 1 << 30;

/**
 * Fills `target` from `position`, looping because a read may return fewer bytes than asked.
 * Returns the bytes read: fewer than target's length only where the file ended.
 */
export function readFully(fd: number, target: Uint8Array, position: number): number {
  let done = 0;
  while (done < target.byteLength) {
    const n = readSync(fd, target, done, Math.min(target.byteLength - done, IO_CHUNK_BYTES), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * Writes a file through `<path>.partial`, renamed into place only when complete, so an
 * interrupted or failed write never leaves a truncated checkpoint behind. Calls `body` with a
 * function that appends bytes; removes the partial file if `body` throws.
 */
export function writeAtomically(path: string, body: (write: (bytes: Uint8Array) => void) => void): void {
  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  const write = (bytes: Uint8Array): void => {
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, IO_CHUNK_BYTES));
  };
  try {
    body(write);
  } catch (error) {
    closeSync(fd);
    rmSync(partial, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(partial, path);
}

/**
 * A download's progress bar on stderr: bytes, rate and time left, rewritten in place on a
 * terminal (output.ts's status line, so never in a pipe or a file, and uncoloured with NO_COLOR).
 */
import type { DownloadProgress } from "../hub/resolve-model.js";
import { formatBytes, status } from "./output.js";

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * The status text for `p`, `seconds` after the download started with `startBytes` already there:
 * a bar as wide as what else fits in `columns` leaves room for (none when under 5).
 */
export function progressText(p: DownloadProgress, seconds: number, startBytes: number, columns: number): string {
  const rate = seconds > 0 ? (p.bytes - startBytes) / seconds : 0;
  const eta = rate > 0 ? (p.totalBytes - p.bytes) / rate : Infinity;
  const figures = `${formatBytes(p.bytes)} / ${formatBytes(p.totalBytes)}  ${formatBytes(rate)}/s  ETA ${formatSeconds(eta)}`;
  const head = `downloading ${p.repo} `;
  const width = Math.min(30, columns - 1 - head.length - figures.length - 3);
  if (width < 5) return head + figures;
  const filled = Math.round((p.totalBytes > 0 ? Math.min(1, p.bytes / p.totalBytes) : 0) * width);
  return `${head}[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${figures}`;
}

/** A callback that shows each DownloadProgress on the status line, and clears it when all bytes are in. */
export function downloadBar(): (p: DownloadProgress) => void {
  let started: number | undefined;
  let startBytes = 0;
  return (p) => {
    const now = performance.now();
    if (started === undefined) [started, startBytes] = [now, p.bytes];
    if (p.bytes >= p.totalBytes) return status.clear();
    status.show(progressText(p, (now - started) / 1000, startBytes, process.stderr.columns || 80), false);
  };
}

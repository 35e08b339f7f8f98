/**
 * A download's progress bar on stderr: bytes, rate and time left, rewritten in place on a
 * terminal (output.ts's status line, so never in a pipe or a file, and uncoloured with NO_COLOR).
 */
import type { DownloadProgress } from "../hub/resolve-model.js";
import { formatBytes, status } from "./output.js";

const BAR = 24;

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** The bar's text for `p`, `seconds` after the download started with `startBytes` already there. */
export function progressText(p: DownloadProgress, seconds: number, startBytes: number): string {
  const fraction = p.totalBytes > 0 ? Math.min(1, p.bytes / p.totalBytes) : 0;
  const filled = Math.round(fraction * BAR);
  const rate = seconds > 0 ? (p.bytes - startBytes) / seconds : 0;
  const eta = rate > 0 ? (p.totalBytes - p.bytes) / rate : Infinity;
  return (
    `downloading ${p.repo} [${"#".repeat(filled)}${"-".repeat(BAR - filled)}] ` +
    `${formatBytes(p.bytes)} / ${formatBytes(p.totalBytes)}  ${formatBytes(rate)}/s  ETA ${formatSeconds(eta)}  ${p.file}`
  );
}

/** A callback that shows each DownloadProgress on the status line, and clears it when all bytes are in. */
export function downloadBar(): (p: DownloadProgress) => void {
  let started: number | undefined;
  let startBytes = 0;
  return (p) => {
    const now = performance.now();
    if (started === undefined) [started, startBytes] = [now, p.bytes];
    if (p.bytes >= p.totalBytes) return status.clear();
    status.show(progressText(p, (now - started) / 1000, startBytes), false);
  };
}

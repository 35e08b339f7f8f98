import { readFileSync } from "node:fs";

/**
 * This process's peak resident set size in bytes.
 *
 * Linux's getrusage() maximum (process.resourceUsage().maxRSS) survives exec: a child started by
 * a parent holding a gigabyte reports at least that gigabyte. The address space's own high-water
 * mark (VmHWM in /proc/self/status) starts afresh with the new program, so it is read where the
 * system has it.
 */
export function peakRssBytes(): number {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const hwm = /^VmHWM:\s*(\d+) kB$/m.exec(status);
    if (hwm !== null) return Number(hwm[1]) * 1024;
  } catch {
    // No procfs: not Linux.
  }
  return process.resourceUsage().maxRSS * 1024;
}

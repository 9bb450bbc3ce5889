export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`

/** What a benchmark measured, for `--json`: figures in ms (or the unit its name says) and ratios. */
export type Summary = Record<string, number | string>

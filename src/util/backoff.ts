// How long to wait before trying again: doubling from a first delay up to a cap, with jitter so
// that the many clients of one registry that failed together do not all retry together
// (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).

export interface Backoff {
  firstMs: number;
  maxMs: number;
  /** The delay is spread this far either side (0.25: from 75% to 125%); 0 for none. */
  jitter: number;
}

export function backoffDelay(attempt: number, { firstMs, maxMs, jitter }: Backoff): number {
  return Math.min(maxMs, firstMs * 2 ** attempt) * (1 - jitter + Math.random() * 2 * jitter);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

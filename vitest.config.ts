import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores on CI: conversions run tar2sqfs with its own threads, so keep files parallel but few.
    maxWorkers: 2,
    cacheDir: process.env.VITEST_CACHE_DIR,
  },
});

import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Fails any test file whose browser side received, or whose logs contain, an issued token.
    setupFiles: ['test/support/leak-guard.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Each file starts its own provider and upstream on free ports; two cores, so keep it modest.
    maxWorkers: 2,
  },
});

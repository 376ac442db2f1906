// native/contract.h is generated from src/plan/contract.ts (build.mjs); the committed header must
// be what the TypeScript says, or the helper and the plugin would disagree with berth (#18).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { contractHeader } from '../../src/plan/contract.js';
import { ROOT } from '../helpers.js';

it('native/contract.h is the header src/plan/contract.ts makes', () => {
  expect(readFileSync(path.join(ROOT, 'native', 'contract.h'), 'utf8')).toBe(contractHeader());
});

// Bundles the compiled CLI into one CommonJS file, dist/berth.cjs: Node 20 starts it ~35 ms
// sooner than the ESM module graph (one file, no ESM loader), and every container started
// from the command line pays Node's start. tsc still compiles and type-checks (dist/*.js).
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

// The launcher, first in the file. Node 20 reads some of its own options (--env-file) from
// anywhere in its argv, past the script's name, so `#!/usr/bin/env node` would let
// `berth exec --env-file FILE ...` steer Node itself. So the file starts as a shell script that
// runs `node -- FILE ARGS`: after `--` Node reads nothing more as its own. It does so through
// berth-helper --launch where the helper of this very build is (native/build/ beside dist/;
// never $BERTH_HELPER, which may be another version): the helper runs Node and then becomes the
// container Node planned (native/helper/launch.c). To Node the second line is a string and a
// comment (`':' //`), and the shebang line is ignored.
const LAUNCHER = `#!/bin/sh
':' //; s=$0; [ -L "$s" ] && s=$(readlink -f -- "$s"); h=\${s%/*}/../native/build/berth-helper; [ -x "$h" ] && exec "$h" --launch "$s" "$@"; exec node -- "$s" "$@"
`;

await build({
  entryPoints: ['dist/main.js'],
  outfile: 'dist/berth.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // import.meta.url has no CommonJS equivalent of its own: give it the bundle's.
  banner: { js: `${LAUNCHER}const import_meta_url = require('node:url').pathToFileURL(__filename).href;` },
  define: { 'import.meta.url': 'import_meta_url' },
  // Loaded from node_modules only when needed: a configuration file (src/config/load.ts), ssh, a
  // cosign key file (src/signature/cosign-key.ts), berth build's Dockerfile and .dockerignore.
  external: ['yaml', 'ssh2', 'tweetnacl', 'dockerfile-ast', '@balena/dockerignore'],
  logLevel: 'warning',
});
chmodSync('dist/berth.cjs', 0o755);

// What C shares with the TypeScript (exit statuses, the default PATH, a step plan's Slurm
// inputs): native/contract.h, from src/plan/contract.ts. Written only when it changes, so that
// make rebuilds nothing otherwise; committed, so that native/ builds without Node.
const { contractHeader } = await import('./dist/plan/contract.js');
const header = contractHeader();
if (!existsSync('native/contract.h') || readFileSync('native/contract.h', 'utf8') !== header) writeFileSync('native/contract.h', header);

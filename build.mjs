// Bundles the compiled CLI into one CommonJS file, dist/berth-main.cjs: Node 20 starts it ~35 ms
// sooner than the ESM module graph (one file, no ESM loader), and every container started
// from the command line pays Node's start. tsc still compiles and type-checks (dist/*.js).
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
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

// Node modules that berth's start does not need, and that cost it ~15-20 ms each to load (they
// are not in Node's own startup snapshot): child_process (commander requires it at once; a
// container handed to the launcher spawns nothing), http and https (pulls only). Each becomes
// an object of getters that loads the real module on first use, so nothing else changes.
const LAZY_BUILTINS = ['child_process', 'http', 'https', 'crypto', 'readline', 'net', 'stream', 'stream/promises', 'fs/promises', 'zlib', 'tls', 'dns'];
const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(b) {
    const filter = new RegExp(`^(node:)?(${LAZY_BUILTINS.join('|')})$`);
    b.onResolve({ filter }, (args) => (args.namespace === 'lazy-builtin'
      ? { path: args.path, external: true } // the getters' own require: the real module
      : { path: args.path.replace(/^node:/, ''), namespace: 'lazy-builtin' }));
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => {
      const names = Object.keys(createRequire(import.meta.url)(`node:${args.path}`));
      return {
        loader: 'js',
        contents: `let real; const load = () => (real ??= require('node:${args.path}'));\n` +
          `for (const name of ${JSON.stringify(names)}) Object.defineProperty(exports, name, { enumerable: true, get: () => load()[name] });\n`,
      };
    });
  },
};

await build({
  entryPoints: ['dist/main.js'],
  plugins: [lazyBuiltins],
  outfile: 'dist/berth-main.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // import.meta.url has no CommonJS equivalent of its own: give it the bundle's.
  banner: { js: "const import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': 'import_meta_url' },
  // Loaded from node_modules only when needed: a configuration file (src/config/load.ts), ssh, a
  // cosign key file (src/signature/cosign-key.ts), berth build's Dockerfile and .dockerignore.
  external: ['yaml', 'ssh2', 'tweetnacl', 'dockerfile-ast', '@balena/dockerignore'],
  logLevel: 'warning',
});

// dist/berth.cjs, the file users run: the launcher lines, then a loader that compiles the bundle
// with V8's code cache for it (dist/berth-main.cache, made below): compiling the bundle's
// functions is ~20 ms of every start, and Node 20 keeps no cache of its own. The cache is code:
// it is used only when it was made for this very bundle (the build id that ends the bundle
// starts the cache: V8 itself checks little more than the source's length) and when it is the
// bundle owner's and writable by no one else. One that V8 rejects (another Node) is ignored.
const buildId = randomBytes(16).toString('hex');
appendFileSync('dist/berth-main.cjs', `//# berth-build ${buildId}\n`);
const LOADER = `const fs = require('node:fs');
const Module = require('node:module');
const { Script } = require('node:vm');
const file = require('node:path').join(__dirname, 'berth-main.cjs');
let source;
try {
  source = fs.readFileSync(file, 'utf8');
} catch (e) {
  process.stderr.write(\`berth: error: cannot read \${file}: \${e.message}\\nberth: hint: berth.cjs runs the bundle beside it: link it (ln -s), do not copy it alone\\n\`);
  process.exit(125);
}
let cachedData;
try {
  const id = Buffer.from(source.slice(source.lastIndexOf('//# berth-build ') + 16).trim());
  const cache = fs.readFileSync(file.replace(/\\.cjs$/, '.cache'));
  const st = fs.statSync(file.replace(/\\.cjs$/, '.cache'));
  if (st.uid === fs.statSync(file).uid && !(st.mode & 0o022) && cache.subarray(0, id.length).equals(id)) cachedData = cache.subarray(id.length);
} catch { /* none: compiled as usual */ }
const main = new Script(Module.wrap(source), { filename: file, cachedData }).runInThisContext();
main.call(module.exports, module.exports, Module.createRequire(file), module, file, __dirname);
`;
writeFileSync('dist/berth.cjs', LAUNCHER + LOADER, { mode: 0o755 });
chmodSync('dist/berth.cjs', 0o755);
chmodSync('dist/berth-main.cjs', 0o644);

// The cache holds what a container's start compiles: made by running the start of one (its
// plan, printed with --dry-run, for an empty directory image) and keeping what V8 compiled.
const cacheFile = 'dist/berth-main.cache';
rmSync(cacheFile, { force: true });
const scratch = mkdtempSync(path.join(tmpdir(), 'berth-build-cache-'));
const producer = `const { readFileSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const { Script } = require('node:vm');
const file = ${JSON.stringify(path.resolve('dist/berth-main.cjs'))};
const script = new Script(Module.wrap(readFileSync(file, 'utf8')), { filename: file });
process.on('exit', () => writeFileSync(${JSON.stringify(path.resolve(cacheFile))}, Buffer.concat([Buffer.from(${JSON.stringify(buildId)}), script.createCachedData()]), { mode: 0o644 }));
process.argv.splice(1, Infinity, file, 'exec', '--dry-run', ${JSON.stringify(scratch)}, 'true');
script.runInThisContext().call(module.exports, module.exports, Module.createRequire(file), module, file, require('node:path').dirname(file));
`;
const made = spawnSync(process.execPath, ['-e', producer], { encoding: 'utf8' });
rmSync(scratch, { recursive: true, force: true });
if (made.status === 0 && existsSync(cacheFile)) chmodSync(cacheFile, 0o644);
else {
  rmSync(cacheFile, { force: true });
  console.warn(`build: no code cache for dist/berth-main.cjs (berth starts ~20 ms slower): ${made.stderr || made.error}`);
}

// What C shares with the TypeScript (exit statuses, the default PATH, a step plan's Slurm
// inputs): native/contract.h, from src/plan/contract.ts. Written only when it changes, so that
// make rebuilds nothing otherwise; committed, so that native/ builds without Node.
const { contractHeader } = await import('./dist/plan/contract.js');
const header = contractHeader();
if (!existsSync('native/contract.h') || readFileSync('native/contract.h', 'utf8') !== header) writeFileSync('native/contract.h', header);

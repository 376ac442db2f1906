// Times commands: node bench/timing.mjs RUNS [--cold] [--uid N --gid N] -- LABEL=COMMAND ...
// Each command (run by sh -c) is started RUNS times by spawnSync; prints the median and the
// ratio to the first one. --cold drops the page cache before every run (needs root).
// --uid/--gid start the commands as that user, with no extra process in between.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const runs = Number(args.shift());
const opt = (name) => {
  const i = args.indexOf(name);
  if (i === -1 || i > args.indexOf('--')) return undefined;
  return args[i + 1];
};
const cold = args.slice(0, args.indexOf('--')).includes('--cold');
const uid = opt('--uid') === undefined ? undefined : Number(opt('--uid'));
const gid = opt('--gid') === undefined ? undefined : Number(opt('--gid'));
const commands = args.slice(args.indexOf('--') + 1).map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
let first;
for (const [label, command] of commands) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    if (cold) {
      spawnSync('sync');
      writeFileSync('/proc/sys/vm/drop_caches', '3');
    }
    const t = process.hrtime.bigint();
    const r = spawnSync('/bin/sh', ['-c', command], { stdio: ['ignore', 'ignore', 'pipe'], uid, gid, env: process.env });
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    if (r.status !== 0) {
      console.log(`${label.padEnd(48)} failed (${r.status}): ${r.stderr.toString().trim().split('\n').pop()}`);
      break;
    }
    times.push(ms);
  }
  if (times.length < runs) continue;
  const m = median(times);
  first ??= m;
  console.log(`${label.padEnd(48)} ${m.toFixed(1).padStart(8)} ms   ${(m / first).toFixed(2).padStart(6)}x`);
}

// The adversarial suite's cast (test/run creates both users and runs this suite as root): the
// victim, an ordinary user whose files and jobs are attacked; the attacker, a second ordinary
// user who plants, races and forges; and root, which runs a step of its own and checks outcomes.
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, run, type Ran } from '../helpers.js';

export const VICTIM = process.env.BERTH_VICTIM ?? 'berth-test';
export const ATTACKER = process.env.BERTH_ATTACKER ?? 'berth-attacker';

export interface Account { name: string; uid: number; gid: number; home: string }

export function account(name: string): Account {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  const f = r.stdout.trim().split(':');
  if (r.status !== 0 || f.length < 7) throw new Error(`no user ${name}: test/run creates it (run the suite as root)`);
  return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
}

if (process.getuid?.() !== 0) throw new Error('the security suite runs as root (it acts as two users): run test/run as root, as CI does');

/** Runs cmd as `user`, with that user's HOME and a clean environment plus `env`. */
export function as(user: string, cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string>; input?: string } = {}): Promise<Ran> {
  const a = account(user);
  const vars = { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: a.home, USER: user, LOGNAME: user, ...(process.env.SLURM_CONF ? { SLURM_CONF: process.env.SLURM_CONF } : {}), ...opts.env };
  return run('runuser', ['-u', user, '--', 'env', '-i', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), cmd, ...args], { cwd: opts.cwd, input: opts.input });
}

/** A fresh directory under /tmp owned by `user` (mode 0700 unless given). */
export function dirOf(user: string, prefix: string, mode = 0o700): string {
  const dir = mkdtempSync(path.join('/tmp', `berth-sec-${prefix}-`));
  const a = account(user);
  chownSync(dir, a.uid, a.gid);
  spawnSync('chmod', [mode.toString(8), dir]);
  return dir;
}

/** A directory of the victim's (0755) holding test/fixtures/make-foreign-images.sh's images, made as the victim. */
export async function victimImages(prefix: string): Promise<string> {
  const dir = dirOf(VICTIM, prefix, 0o755);
  const made = await as(VICTIM, path.join(ROOT, 'test/fixtures/make-foreign-images.sh'), [dir]);
  if (made.code !== 0) throw new Error(`make-foreign-images.sh failed: ${made.stderr}`);
  return dir;
}

/** The metadata trailer's JSON of a berth image, and a function that writes a file with other metadata. */
export function trailer(file: string): { metadata: Record<string, unknown>; write(to: string, metadata: object): void } {
  const bytes = readFileSync(file);
  const len = Number(bytes.readBigUInt64LE(bytes.length - 16));
  const start = bytes.length - 16 - len;
  return {
    metadata: JSON.parse(bytes.subarray(start, start + len).toString('utf8')) as Record<string, unknown>,
    write: (to, metadata) => {
      const json = Buffer.from(JSON.stringify(metadata));
      const tail = Buffer.alloc(8);
      tail.writeBigUInt64LE(BigInt(json.length));
      writeFileSync(to, Buffer.concat([bytes.subarray(0, start), json, tail, Buffer.from('BERTHMD1')]));
    },
  };
}

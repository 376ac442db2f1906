// Instances are per user (SECURITY.md): another user can neither list, join nor stop the
// victim's, not through the victim's runtime directory, not with a state file that names the
// victim's pid, and a runtime directory the attacker made first is refused, never used.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, chownSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT } from '../helpers.js';
import { ATTACKER, VICTIM, account, as, dirOf } from './users.js';

let work: string;
let attackerDir: string;
const victimRuntime = () => path.join(work, 'rt');
const victim = (args: string[], rt = victimRuntime()) => as(VICTIM, process.execPath, [BERTH, ...args], { cwd: work, env: { BERTH_RUNTIME_DIR: rt, BERTH_IMAGE_LINGER: '0' } });
const attacker = (args: string[], rt: string) => as(ATTACKER, process.execPath, [BERTH, ...args], { cwd: attackerDir, env: { BERTH_RUNTIME_DIR: rt, BERTH_IMAGE_LINGER: '0' } });

interface Listed { name: string; status: string; pid: number }
let db: Listed;

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

/** The victim's instance is as it was: running, with the same command. */
async function victimUntouched(): Promise<void> {
  const r = await victim(['instance', 'list', '--json']);
  expect((JSON.parse(r.stdout) as Listed[]).map(({ name, status, pid }) => ({ name, status, pid }))).toEqual([{ name: 'db', status: 'running', pid: db.pid }]);
  expect(alive(db.pid)).toBe(true);
  expect(readFileSync(path.join(victimRuntime(), 'instances/db/log'), 'utf8')).toBe('daemon up\n');
}

beforeAll(async () => {
  work = dirOf(VICTIM, 'instance-victim', 0o755);
  attackerDir = dirOf(ATTACKER, 'instance-attacker', 0o755);
  const made = await as(VICTIM, path.join(ROOT, 'test/fixtures/make-instance-images.sh'), [work], { env: { NODE: process.execPath } });
  expect(made.stderr).toBe('');
  const started = await victim(['instance', 'start', '--writable-tmpfs', path.join(work, 'daemon.sqsh'), 'db']);
  expect(started.code).toBe(0);
  db = (JSON.parse((await victim(['instance', 'list', '--json'])).stdout) as Listed[])[0]!;
  expect(alive(db.pid)).toBe(true);
}, 180_000);

afterAll(async () => {
  await victim(['instance', 'stop', '--all', '--force']);
  for (const d of [work, attackerDir]) if (d) rmSync(d, { recursive: true, force: true });
});

describe("another user and the victim's instance", () => {
  it("cannot list, join or stop it through the victim's runtime directory", async () => {
    for (const args of [['instance', 'list'], ['exec', 'instance://db', 'cat', '/written-by-instance'], ['instance', 'stop', 'db'], ['instance', 'stop', '--all', '-F']]) {
      const r = await attacker(args, victimRuntime());
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^berth: error: cannot use the runtime directory: .*(someone other than root and uid \d+ can replace|belongs to someone else)/);
      expect(r.code).toBe(125);
    }
    await victimUntouched();
  });

  it('does not see it in its own list', async () => {
    const rt = path.join(attackerDir, 'rt');
    const r = await attacker(['instance', 'list', '--json'], rt);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual([]);
  });

  it("cannot join or signal it with a state file of its own that names the victim's pid", async () => {
    // The attacker's own, private instances directory, with a forged instance "db" whose state
    // is the victim's process exactly (pid and start time, both public in /proc).
    const rt = path.join(attackerDir, 'forged-rt');
    const a = account(ATTACKER);
    const start = readFileSync(`/proc/${db.pid}/stat`, 'latin1').replace(/^.*\) /s, '').split(' ')[19];
    const dir = path.join(rt, 'instances', 'db');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(dir, 'state'), `pid ${db.pid}\nstart ${start}\nmonitor ${db.pid}\nmonitorstart ${start}\nstarted 0\njob -\nimage /x\n`, { mode: 0o600 });
    writeFileSync(path.join(dir, 'plan'), `# berth-plan v1\nimage /x\nruntime ${rt}\ncwd /\npath /bin\narg true\n`, { mode: 0o600 });
    writeFileSync(path.join(dir, 'log'), '', { mode: 0o600 });
    for (const p of [rt, path.join(rt, 'instances'), dir, ...readdirSync(dir).map((f) => path.join(dir, f))]) chownSync(p, a.uid, a.gid);

    const join = await attacker(['exec', 'instance://db', 'cat', '/written-by-instance'], rt);
    expect(join.stdout).toBe('');
    expect(join.stderr).toContain('the instance db is no longer running');
    expect(join.code).toBe(125);
    const stop = await attacker(['instance', 'stop', '-s', 'KILL', 'db'], rt);
    expect(stop.code).toBe(0); // its own forged entry is removed ...
    await victimUntouched(); // ... and the victim's process was never signalled
  });

  it('a runtime directory the attacker made first is refused, and nothing is started there', async () => {
    // Where berth would put it without XDG_RUNTIME_DIR (/tmp/berth-UID): anyone may create it first.
    const planted = dirOf(ATTACKER, 'instance-planted', 0o777);
    try {
      for (const args of [['instance', 'start', path.join(work, 'daemon.sqsh'), 'db2'], ['instance', 'list']]) {
        const r = await victim(args, planted);
        expect(r.stderr).toContain('belongs to someone else');
        expect(r.code).toBe(125);
      }
      expect(readdirSync(planted)).toEqual([]);
      const running = (JSON.parse((await victim(['instance', 'list', '--json'])).stdout) as Listed[]).map((i) => i.name);
      expect(running).toEqual(['db']);
    } finally {
      rmSync(planted, { recursive: true, force: true });
    }
  });
});

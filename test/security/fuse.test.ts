// A FUSE mount is whatever its server says (#11, found in review): with user_allow_other in
// /etc/fuse.conf (common on clusters, for sshfs), another user can mount a file system whose
// directories claim to be the victim's, mode 0700, where the victim's berth would otherwise
// keep its runtime directory. berth believes a FUSE mount only when root or the user made it.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BERTH, ROOT } from '../helpers.js';
import { ATTACKER, VICTIM, account, as, dirOf } from './users.js';

const FUSE_CONF = '/etc/fuse.conf';
let fuseConf: string | undefined;
let attackerDir: string;
let work: string;
// Where the victim's runtime directory would be (runtime_dir=/tmp/berth-sec-fuse-%U, say): the attacker mounts there first.
const mnt = () => `/tmp/berth-sec-fuse-${account(VICTIM).uid}`;

beforeAll(async () => {
  fuseConf = existsSync(FUSE_CONF) ? readFileSync(FUSE_CONF, 'utf8') : undefined;
  writeFileSync(FUSE_CONF, `${fuseConf ?? ''}\nuser_allow_other\n`); // the site's choice this attack needs
  work = dirOf(VICTIM, 'fuse-victim', 0o755);
  attackerDir = dirOf(ATTACKER, 'fuse-attacker', 0o755);
  const v = account(VICTIM);
  // The attacker's file system, whose root claims to be the victim's, mode 0700.
  rmSync(mnt(), { recursive: true, force: true });
  const made = await as(ATTACKER, 'bash', ['-c', `set -e; cd ${attackerDir}; mkdir ${mnt()}; python3 -c '
import tarfile
with tarfile.open("evil.tar", "w") as t:
    d = tarfile.TarInfo("plan"); d.size = 0; d.mode = 0o600; d.uid = ${v.uid}; d.gid = ${v.gid}; t.addfile(d)
'; tar2sqfs --quiet --defaults uid=${v.uid},gid=${v.gid},mode=0700 evil.sqsh < evil.tar; squashfuse -o allow_other evil.sqsh ${mnt()}`]);
  expect(made.stderr).toBe('');
  const r = await as(VICTIM, 'bash', ['-c', `cd ${work} && ${ROOT}/test/fixtures/make-run-images.sh . >/dev/null && ${process.execPath} ${BERTH} convert oci:oci:busybox -o bb.sqsh --quiet`]);
  expect(r.stderr).toBe('');
}, 120_000);

afterAll(() => {
  spawnSync('umount', ['-l', mnt()]);
  rmSync(mnt(), { recursive: true, force: true });
  if (fuseConf === undefined) rmSync(FUSE_CONF, { force: true });
  else writeFileSync(FUSE_CONF, fuseConf);
  for (const d of [work, attackerDir]) if (d) rmSync(d, { recursive: true, force: true });
});

it("refuses a runtime directory on another user's FUSE mount that claims to be the victim's", async () => {
  const rt = mnt();
  const seen = spawnSync('runuser', ['-u', VICTIM, '--', 'stat', '-c', '%u %a', rt], { encoding: 'utf8' });
  expect(seen.stdout).toBe(`${account(VICTIM).uid} 700\n`); // what the victim sees: its own, private
  const r = await as(VICTIM, process.execPath, [BERTH, 'exec', 'bb.sqsh', 'cat', '/etc/motd'], { cwd: work, env: { BERTH_RUNTIME_DIR: rt } });
  expect(r.stdout).toBe('');
  expect(r.code).toBe(125);
  expect(r.stderr).toContain('is on a FUSE mount another user made');
});

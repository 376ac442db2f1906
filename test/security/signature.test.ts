// The signature policy, played by an attacker (#16; SECURITY.md, "Image signatures"). The site
// requires the lab's signature and denies local images. The attacker copies the verdict a real,
// signed pull recorded (its digest and the lab's genuine signature) into an image of their own
// making, and hands the victim that file. Only an entry of berth's caches vouches for a verdict:
// the file where it lies, the victim's own cp of it and the victim's berth convert of it are each
// judged as the local image they are, and refused. The real image runs from the victim's cache.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, run } from '../helpers.js';
import { push, startRegistry, type Registry } from '../registry.js';
import { account, as, ATTACKER, dirOf, trailer, VICTIM } from './users.js';

let work: string;
let registry: Registry;
let victimDir: string;
let attackerDir: string;
let site: string;

const victim = (args: string[]) => as(VICTIM, process.execPath, [BERTH, ...args], {
  env: { BERTH_SITE_CONFIG: site, BERTH_CONFIG: path.join(victimDir, 'user.yaml'), BERTH_CACHE_DIR: path.join(victimDir, 'cache'), BERTH_IMAGE_LINGER: '0' },
});

beforeAll(async () => {
  work = mkdtempSync('/tmp/berth-sec-signature-');
  chmodSync(work, 0o755);
  registry = await startRegistry(path.join(work, 'registry'));
  const made = spawnSync('bash', ['-c', `set -e; source ${ROOT}/test/fixtures/busybox-root.sh; cd ${work}; umoci init --layout oci >/dev/null
    umoci new --image oci:real; umoci unpack --rootless --image oci:real real >/dev/null; busybox_root real/rootfs; echo 'from the lab' > real/rootfs/etc/motd
    umoci repack --refresh-bundle --image oci:real real >/dev/null; umoci config --image oci:real --config.env PATH=/bin >/dev/null
    umoci new --image oci:trojan; umoci unpack --rootless --image oci:trojan trojan >/dev/null; busybox_root trojan/rootfs; echo pwned > trojan/rootfs/etc/motd
    umoci repack --refresh-bundle --image oci:trojan trojan >/dev/null; umoci config --image oci:trojan --config.env PATH=/bin >/dev/null
    chmod -R a+rX ${work}`], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(made.stderr);
  await push(`oci:${work}/oci:real`, registry, 'lab/app:1');
  // The site's key pair (root's), and the policy.
  spawnSync('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', path.join(work, 'lab.pem')]);
  spawnSync('openssl', ['pkey', '-in', path.join(work, 'lab.pem'), '-pubout', '-out', path.join(work, 'lab.pub')]);
  const signed = await run(process.execPath, [BERTH, 'sign', '--key', path.join(work, 'lab.pem'), `docker://${registry.host}/lab/app:1`]);
  expect(signed.code, signed.stderr).toBe(0);
  site = path.join(work, 'site.yaml');
  writeFileSync(site, `trust:\n  - match: ${registry.host}/lab/*\n    require: [${path.join(work, 'lab.pub')}]\n  - match: local\n    deny: true\n`);
  victimDir = dirOf(VICTIM, 'signature-victim', 0o755);
  attackerDir = dirOf(ATTACKER, 'signature-attacker', 0o755);
  writeFileSync(path.join(victimDir, 'user.yaml'), '');
  chmodSync(path.join(victimDir, 'user.yaml'), 0o644);
}, 180_000);

afterAll(async () => {
  await registry?.stop();
  for (const d of [work, victimDir, attackerDir]) if (d) cleanup(d);
});

describe("another user's image file with a real verdict copied in", () => {
  it('is judged as a local image and refused, however the victim comes to run it; the real image runs from the cache', async () => {
    const ref = `docker://${registry.host}/lab/app:1`;
    const mine = path.join(victimDir, 'app.sqsh');
    const pulled = await victim(['pull', ref, '-o', mine]);
    expect(pulled.code, pulled.stderr).toBe(0);
    // The real image, from the victim's cache (where berth wrote it, verdict and all), runs.
    const own = await victim(['run', ref, '--', 'cat', '/etc/motd']);
    expect(own.stdout, own.stderr).toBe('from the lab\n');

    // The attacker converts their trojan and gives it the real image's verdict, signature and all.
    const honest = path.join(attackerDir, 'honest.sqsh');
    const converted = await as(ATTACKER, process.execPath, [BERTH, 'convert', `oci:${work}/oci:trojan`, '-o', honest, '-q']);
    expect(converted.code, converted.stderr).toBe(0);
    const real = trailer(mine).metadata;
    const forged = path.join(attackerDir, 'app.sqsh');
    const t = trailer(honest);
    t.write(path.join(work, 'forged.sqsh'), { ...t.metadata, manifestDigest: real['manifestDigest'], provenance: real['provenance'] });
    expect((await as(ATTACKER, 'cp', [path.join(work, 'forged.sqsh'), forged])).code).toBe(0);
    expect(spawnSync('rdsquashfs', ['--cat', '/etc/motd', forged], { encoding: 'utf8' }).stdout).toBe('pwned\n');

    // Run where it lies, copied into the victim's own directory, or converted by the victim: a
    // file named by path is whatever its maker put in it, so each is the local image it is.
    const copied = path.join(victimDir, 'copied.sqsh');
    expect((await as(VICTIM, 'cp', [forged, copied])).code).toBe(0);
    const reconverted = path.join(victimDir, 'reconverted.sqsh');
    expect((await victim(['convert', forged, '-o', reconverted, '-q'])).code).toBe(0);
    for (const file of [forged, copied, reconverted]) {
      const ran = await victim(['run', file, '--', 'cat', '/etc/motd']);
      expect(ran.stdout, file).toBe('');
      expect(ran.code, file).toBe(125);
      expect(ran.stderr).toMatch(/a local image[^\n]*is denied by the site's policy/);
    }
    expect((await victim(['run', forged, '--', 'true'])).stderr).toContain(`${forged} (a local image: its recorded verdict is not believed: a file named by path`);
    expect((await victim(['run', reconverted, '--', 'true'])).stderr).toContain(`${reconverted} (a local image: not pulled from a registry under a policy`);
    // inspect says what the file claims and that it is not believed.
    expect((await victim(['inspect', copied])).stdout).toMatch(/Signature: .*\(recorded, not believed: the file is named by path/);
  });
});

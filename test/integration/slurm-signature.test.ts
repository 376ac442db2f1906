// The site's signature policy through the real SPANK plugin (#16): a step whose image the
// policy rejects is refused before its container starts (a docker:// tag at submission, when
// the plugin resolves it; any image when a node makes the step's plan), and the job's output
// names the image's digest and signer. The test Slurm cluster (test/slurm/cluster) passes the
// job's environment, so BERTH_SITE_CONFIG gives the nodes' berth the site's file.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BERTH, ROOT, cleanup, run, tempDir } from '../helpers.js';
import { push, startRegistry, type Registry } from '../registry.js';

let work: string;
let registry: Registry;
let digest: string;

const env = () => ({ ...process.env, BERTH_CACHE_DIR: path.join(work, 'cache'), BERTH_SITE_CONFIG: path.join(work, 'site.yaml'), BERTH_CONFIG: path.join(work, 'user.yaml') });
const srun = (...args: string[]) => run('srun', args, { cwd: work, env: env() });

async function sh(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
}

beforeAll(async () => {
  const up = spawnSync('sinfo', ['-h'], { encoding: 'utf8' });
  if (up.status !== 0 || !process.env.SLURM_CONF) throw new Error(`no test Slurm cluster (SLURM_CONF=${process.env.SLURM_CONF}): start it with test/slurm/cluster start`);
  work = tempDir('slurm-signature');
  mkdirSync(path.join(work, 'keys'));
  await sh('bash', ['-c', `set -e; source ${ROOT}/test/fixtures/busybox-root.sh; cd ${work}; umoci init --layout oci >/dev/null
    umoci new --image oci:bb; umoci unpack --rootless --image oci:bb bb >/dev/null; busybox_root bb/rootfs; echo 'from the image' > bb/rootfs/etc/motd
    umoci repack --refresh-bundle --image oci:bb bb >/dev/null; umoci config --image oci:bb --config.env PATH=/bin --config.cmd /bin/sh >/dev/null`]);
  await sh('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path.join(work, 'keys/lab.pem')]);
  await sh('openssl', ['pkey', '-in', path.join(work, 'keys/lab.pem'), '-pubout', '-out', path.join(work, 'keys/lab.pub')]);
  registry = await startRegistry(path.join(work, 'registry'));
  await push(`oci:${work}/oci:bb`, registry, 'lab/signed:1');
  await push(`oci:${work}/oci:bb`, registry, 'lab/unsigned:1');
  const res = await fetch(`http://${registry.host}/v2/lab/signed/manifests/1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  digest = `sha256:${createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')}`;
  const signed = await run(process.execPath, [BERTH, 'sign', '--key', path.join(work, 'keys/lab.pem'), `docker://${registry.host}/lab/signed:1`]);
  if (signed.code !== 0) throw new Error(signed.stderr);
  const local = await run(process.execPath, [BERTH, 'convert', `oci:${work}/oci:bb`, '-o', path.join(work, 'local.sqsh'), '-q']);
  if (local.code !== 0) throw new Error(local.stderr);
  writeFileSync(path.join(work, 'user.yaml'), '');
  writeFileSync(path.join(work, 'site.yaml'), `trust:\n  - match: ${registry.host}/lab/*\n    require: [${path.join(work, 'keys/lab.pub')}]\n  - match: local\n    deny: true\n`);
}, 180_000);
afterAll(async () => {
  await registry?.stop();
  cleanup(work);
});

describe('the SPANK plugin under a signature policy', () => {
  it('runs a signed image, and the job output names its digest and signer', async () => {
    const r = await srun('-n1', `--container-image=docker://${registry.host}/lab/signed:1`, 'cat', '/etc/motd');
    expect(r.stdout, r.stderr).toBe('from the image\n');
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`berth: image docker://${registry.host}/lab/signed@${digest}: signed by ${path.join(work, 'keys/lab.pub')} \\(sha256:[0-9a-f]{64}\\), verified `));
  });

  it('refuses an unsigned docker:// image at submission: no step starts', async () => {
    const r = await srun('-n1', `--container-image=docker://${registry.host}/lab/unsigned:1`, 'sh', '-c', 'echo ran');
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`docker://${registry.host}/lab/unsigned@${digest} is not signed by .*lab\\.pub \\(sha256:[0-9a-f]{12}…\\), as the site's policy requires`));
  });

  it('sbatch refuses it too: the job never queues', async () => {
    const r = await run('sbatch', [`--container-image=docker://${registry.host}/lab/unsigned:1`, '--wrap', 'echo ran'], { cwd: work, env: env() });
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toMatch(/Submitted batch job/);
    expect(r.stderr).toMatch(new RegExp(`docker://${registry.host}/lab/unsigned@${digest} is not signed by .*lab\\.pub`));
  });

  it('a file carrying a real verdict, staged to the nodes or run in place, is the local image it is', async () => {
    // The signed image pulled to a file: every byte of its verdict is true, but a file named by
    // path could be anyone's making with that verdict pasted in (SECURITY.md): only the copy the
    // plugin staged from the cache for a docker:// image keeps the cache's word.
    const file = path.join(work, 'signed-file.sqsh');
    const pulled = await run(process.execPath, [BERTH, 'pull', `docker://${registry.host}/lab/signed:1`, '-o', file], { env: env() });
    expect(pulled.code, pulled.stderr).toBe(0);
    for (const stage of [[], ['--no-container-stage']]) {
      const r = await srun('-n1', ...stage, `--container-image=${file}`, 'sh', '-c', 'echo ran');
      expect(r.stdout, stage.join(' ')).toBe('');
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/\(a local image: its recorded verdict is not believed: a file named by path[^\n]*is denied by the site's policy/);
    }
  });

  it('refuses a local image the policy denies before its container starts, naming its digest', async () => {
    const r = await srun('-n1', `--container-image=${path.join(work, 'local.sqsh')}`, 'sh', '-c', 'echo ran');
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`local\\.sqsh \\(a local image: not pulled from a registry under a policy; digest sha256:[0-9a-f]{64}\\) is denied by the site's policy`));
  });
});

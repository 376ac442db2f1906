// RDMA discovery on a host root of the test's own: device stand-ins, the host's real rdma-core
// libraries (with their real sonames) and a real ld.so cache made by `ldconfig -r`.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rdmaFacts } from '../../src/host/rdma.js';
import { buildPlan, type HostFacts } from '../../src/plan/build.js';
import { cleanup, tempDir } from '../helpers.js';

let root: string;
const lib = '/usr/lib/x86_64-linux-gnu';

beforeAll(() => {
  root = tempDir('rdma-root');
  for (const d of [lib, `${lib}/libibverbs`, 'etc/libibverbs.d', 'dev/infiniband']) mkdirSync(path.join(root, d), { recursive: true });
  for (const soname of ['libibverbs.so.1', 'librdmacm.so.1', 'libnl-3.so.200', 'libnl-route-3.so.200']) {
    const real = realpathSync(`/lib/x86_64-linux-gnu/${soname}`);
    copyFileSync(real, path.join(root, lib, path.basename(real)));
  }
  copyFileSync(realpathSync(`${lib}/libibverbs/libefa-rdmav34.so`), path.join(root, lib, 'libibverbs/libefa-rdmav34.so'));
  writeFileSync(path.join(root, 'etc/libibverbs.d/efa.driver'), 'driver efa\n');
  writeFileSync(path.join(root, 'dev/infiniband/uverbs0'), '');
  writeFileSync(path.join(root, 'dev/infiniband/rdma_cm'), '');
  writeFileSync(path.join(root, 'etc/ld.so.conf'), `${lib}\n`);
  const r = spawnSync('/sbin/ldconfig', ['-r', root], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
});
afterAll(() => cleanup(root));

describe('rdmaFacts', () => {
  it("finds the devices, the libraries through the root's ld.so cache with what they need, providers and drivers", () => {
    const facts = rdmaFacts(root);
    expect(facts.devices).toEqual(['/dev/infiniband/rdma_cm', '/dev/infiniband/uverbs0']);
    expect(facts.files.map((f) => f.path).sort()).toEqual(
      ['libibverbs.so.1', 'libnl-3.so.200', 'libnl-route-3.so.200', 'librdmacm.so.1'].map((n) => `${lib}/${n}`));
    expect(facts.files.find((f) => f.path.endsWith('libnl-route-3.so.200'))!.origin).toBe('rdma: libnl-route-3.so.200, needed by libibverbs.so.1');
    expect(facts.dirs).toEqual([
      { path: `${lib}/libibverbs`, origin: 'rdma: libibverbs provider plugins' },
      { path: '/etc/libibverbs.d', origin: 'rdma: provider driver files' },
    ]);
  });

  it('becomes binds at the same paths, devices without nodev, and the library path', () => {
    const facts = rdmaFacts(root);
    const host: HostFacts = { uid: 1000, gid: 1000, user: 'u', group: 'g', home: '/home/u', cwd: '/', env: {}, runtimeDir: '/r', scope: '', linger: 0, has: { hosts: false, resolvConf: false } };
    const meta = { berthImage: 1, source: 's', manifestDigest: null, configDigest: 'c', platform: { os: 'linux', architecture: 'amd64' }, created: null, layers: [],
      config: { Env: ['LD_LIBRARY_PATH=/opt/app/lib'], Entrypoint: null, Cmd: ['x'], WorkingDir: '', User: '', Labels: {}, Volumes: [], ExposedPorts: [], StopSignal: null } };
    const plan = buildPlan('/i', meta, host, { binds: [], home: false, containall: false, writableTmpfs: false, fakeroot: false, cleanenv: false, env: [], pwd: undefined, rdma: facts }, { mode: 'exec', args: ['ibv_devinfo'] });
    expect(plan.ops.find((o) => o.target === '/dev/infiniband/uverbs0')).toMatchObject({ kind: 'bind', options: ['nosuid', 'noexec'] });
    expect(plan.ops.find((o) => o.target === `${lib}/libibverbs.so.1`)).toMatchObject({ source: `${lib}/libibverbs.so.1`, options: ['ro', 'nosuid', 'nodev'] });
    expect(plan.ops.find((o) => o.target === '/etc/libibverbs.d')!.options).toContain('rbind');
    expect(plan.env).toContain(`LD_LIBRARY_PATH=${lib}:/opt/app/lib`);
  });
});

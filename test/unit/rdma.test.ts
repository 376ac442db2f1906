// RDMA discovery on a host root of the test's own: device stand-ins, the host's real rdma-core
// libraries (with their real sonames) and a real ld.so cache made by `ldconfig -r`.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rdmaBinding } from '../../src/host/rdma.js';
import { buildPlan, type HostFacts } from '../../src/plan/build.js';
import { cleanup, tempDir } from '../helpers.js';

const IMAGE = { path: '/i', format: 'squashfs', offset: 0 } as const;

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

describe('rdmaBinding', () => {
  it("finds the devices, the libraries through the root's ld.so cache with what they need, providers and drivers", () => {
    const b = rdmaBinding(root);
    expect(b.devices.map((d) => d.target)).toEqual(['/dev/infiniband/rdma_cm', '/dev/infiniband/uverbs0']);
    expect(b.devices[0]!.source).toBe(path.join(root, 'dev/infiniband/rdma_cm'));
    expect(b.binds.map((f) => f.target)).toEqual([
      `${lib}/libibverbs`, // the provider plugins, whole
      ...['libibverbs.so.1', 'libnl-route-3.so.200', 'libnl-3.so.200', 'librdmacm.so.1'].map((n) => `${lib}/${n}`),
      '/etc/libibverbs.d',
    ]);
    expect(b.binds.find((f) => f.target.endsWith('libnl-route-3.so.200'))!.origin).toBe('rdma: libnl-route-3.so.200, needed by libibverbs.so.1');
    expect(b.binds[0]!.source).toBe(path.join(root, lib, 'libibverbs'));
    expect(b.libraryPath).toEqual([lib]);
    // What the image's loader checks inside: the entry points and every provider.
    expect(b.verify).toEqual([`${lib}/libibverbs.so.1`, `${lib}/libibverbs/libefa-rdmav34.so`, `${lib}/librdmacm.so.1`]);
  });

  it('adds the fabric libraries the site lists (rdma.libraries): sonames with what they need, and paths as they are', () => {
    const b = rdmaBinding(root, ['libnl-3.so.200', '/etc/libibverbs.d', '/no/such/dir']);
    expect(b.verify).toContain(`${lib}/libnl-3.so.200`);
    expect(b.binds.filter((f) => f.target === '/etc/libibverbs.d')).toHaveLength(2); // the plan keeps the first
    expect(b.binds.some((f) => f.target === '/no/such/dir')).toBe(false);
  });

  it('becomes binds at the same paths, devices without nodev, and the library path', () => {
    const host: HostFacts = { uid: 1000, gid: 1000, user: 'u', group: 'g', home: '/home/u', cwd: '/', env: {}, runtimeDir: '/r', scope: '', linger: 0, has: { hosts: false, resolvConf: false } };
    const meta = { berthImage: 1, source: 's', manifestDigest: null, configDigest: 'c', platform: { os: 'linux', architecture: 'amd64' }, created: null, layers: [],
      config: { Env: ['LD_LIBRARY_PATH=/opt/app/lib'], Entrypoint: null, Cmd: ['x'], WorkingDir: '', User: '', Labels: {}, Volumes: [], ExposedPorts: [], StopSignal: null } };
    const plan = buildPlan(IMAGE, meta, host, { binds: [], home: false, contain: false, writableTmpfs: false, fakeroot: false, pid: false, cleanenv: false, env: [], pwd: undefined, bindings: [rdmaBinding(root)] }, { mode: 'exec', args: ['ibv_devinfo'] });
    expect(plan.ops.find((o) => o.target === '/dev/infiniband/uverbs0')).toMatchObject({ kind: 'bind', options: ['nosuid', 'noexec'] });
    expect(plan.ops.find((o) => o.target === `${lib}/libibverbs.so.1`)).toMatchObject({ source: path.join(root, lib, 'libibverbs.so.1'), options: ['rbind', 'ro', 'nosuid', 'nodev'] });
    expect(plan.ops.find((o) => o.target === '/etc/libibverbs.d')!.options).toContain('rbind');
    expect(plan.env).toContain(`LD_LIBRARY_PATH=${lib}:/opt/app/lib`);
  });
});

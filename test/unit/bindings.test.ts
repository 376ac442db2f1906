// Host bindings as registered units (#18): one table of settings made of berth's own and each
// binding's, and `run` and `doctor` reading the same facts, so that they cannot disagree.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { SETTINGS } from '../../src/config/schema.js';
import { ALL_BINDINGS, bindingSettings, type BindingRequest } from '../../src/host/bindings.js';
import { rdma } from '../../src/host/rdma.js';
import { cleanup, tempDir } from '../helpers.js';

const lib = '/usr/lib/x86_64-linux-gnu';
let dir: string;
beforeAll(() => {
  dir = tempDir('bindings');
});
afterAll(() => cleanup(dir));

/** A node's root with InfiniBand devices and, of rdma-core, only what is named. */
function rdmaRoot(name: string, sonames: string[]): string {
  const root = path.join(dir, name);
  for (const d of [lib, `${lib}/libibverbs`, 'dev/infiniband']) mkdirSync(path.join(root, d), { recursive: true });
  for (const soname of sonames) {
    const real = realpathSync(`/lib/x86_64-linux-gnu/${soname}`);
    copyFileSync(real, path.join(root, lib, path.basename(real)));
  }
  if (sonames.includes('libibverbs.so.1')) copyFileSync(realpathSync(`${lib}/libibverbs/libefa-rdmav34.so`), path.join(root, lib, 'libibverbs/libefa-rdmav34.so'));
  writeFileSync(path.join(root, 'dev/infiniband/uverbs0'), '');
  mkdirSync(path.join(root, 'etc'), { recursive: true });
  writeFileSync(path.join(root, 'etc/ld.so.conf'), `${lib}\n`);
  const r = spawnSync('/sbin/ldconfig', ['-r', root], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return root;
}

const defaults = () => loadConfig({ XDG_CONFIG_HOME: dir }, path.join(dir, 'no-site.yaml')).values;
const image = { path: '/i', architecture: 'amd64', files: () => { throw new Error('not opened in these tests'); } };
/** What `berth run` asks of the RDMA binding with --rdma, --no-rdma or neither. */
const rdmaRequest = (flag?: boolean): BindingRequest<typeof rdma.settings> => ({
  settings: { 'run.rdma': flag, 'rdma.libraries': [] }, given: new Set(flag === undefined ? [] : ['run.rdma'] as const), env: {}, image,
});

describe('the settings table', () => {
  it("is berth's own settings and every binding's, none claimed twice", () => {
    const claimed = ALL_BINDINGS.flatMap((b) => Object.keys(b.settings));
    expect(new Set(claimed).size).toBe(claimed.length);
    for (const key of claimed) expect(Object.keys(SETTINGS)).toContain(key);
    expect(Object.keys(SETTINGS)).toEqual(expect.arrayContaining(['run.rdma', 'run.gpus', 'run.devices', 'run.mpi', 'cdi.dirs', 'host.root']));
  });

  it('a flag wins over the configured value, and a list flag adds to it', () => {
    const [cdi] = ALL_BINDINGS.filter((b) => b.name === 'CDI');
    const { settings, given } = bindingSettings(cdi!, { ...defaults(), 'run.devices': ['site.org/x=1'] }, { 'run.devices': ['a.org/b=c'] });
    expect(settings['run.devices']).toEqual(['site.org/x=1', 'a.org/b=c']);
    expect([...given]).toEqual(['run.devices']);
    expect(bindingSettings(rdma, { ...defaults(), 'run.rdma': true }, { 'run.rdma': false }).settings['run.rdma']).toBe(false);
  });
});

describe('RDMA: doctor counts what the binding found (#18)', () => {
  it('counts the providers found, also where librdmacm is missing', () => {
    const root = rdmaRoot('no-rdmacm', ['libibverbs.so.1', 'libnl-3.so.200', 'libnl-route-3.so.200']);
    const facts = rdma.facts(root, rdmaRequest().settings);
    expect(facts.stack().providers).toEqual([`${lib}/libibverbs/libefa-rdmav34.so`]);
    expect(rdma.doctor(facts)).toEqual([{ name: 'RDMA', verdict: 'ok', detail: expect.stringMatching(/^bound by default: 1 devices, \d+ libraries and directories, 1 providers$/) }]);
  });

  it('where doctor fails, --rdma is refused, and without it the devices are still bound', () => {
    const root = rdmaRoot('no-verbs', []);
    const facts = rdma.facts(root, rdmaRequest().settings);
    expect(rdma.doctor(facts)[0]).toMatchObject({ verdict: 'fail', detail: '1 devices, but no libibverbs in the ld.so cache' });
    expect(() => rdma.plan(facts, rdmaRequest(true))).toThrow(/--rdma: this node has no libibverbs/);
    expect(rdma.plan(facts, rdmaRequest())[0]!.devices.map((d) => d.target)).toEqual(['/dev/infiniband/uverbs0']);
    expect(rdma.plan(facts, rdmaRequest(false))).toEqual([]);
  });
});

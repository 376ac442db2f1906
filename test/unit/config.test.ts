// Configuration files are checked at the edge: every error names file, line and fix.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfigFile } from '../../src/config/load.js';
import { runtimeDir } from '../../src/host/user.js';
import { cleanup, tempDir } from '../helpers.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('config');
});
afterAll(() => cleanup(dir));

describe('parseConfigFile', () => {
  it('reads every kind of setting', () => {
    expect(parseConfigFile('cache:\n  dir: /shared/berth\nimages:\n  linger: 0\npull:\n  parallel: 4\n  registries: [docker.io, ghcr.io]\nrun:\n  binds: ["/scratch", "/apps:/apps:ro"]\n', 'f.yaml'))
      .toEqual({ 'cache.dir': '/shared/berth', 'images.linger': 0, 'pull.parallel': 4, 'pull.registries': ['docker.io', 'ghcr.io'], 'run.binds': ['/scratch', '/apps:/apps:ro'] });
    expect(parseConfigFile('', 'empty.yaml')).toEqual({});
  });

  it.each([
    ['cache:\n  dir: /x\ncahce:\n  dir: /y\n', /f\.yaml:3: unknown section 'cahce'/, /the sections are: cache, runtime, images, build, pull, run/],
    ['pull:\n  parallel: 2\n  paralel: 3\n', /f\.yaml:3: unknown setting 'pull\.paralel'/, /'pull' has: parallel, registries/],
    ['cache:\n  dir: relative/path\n', /f\.yaml:2: cache\.dir must be an absolute path/, /dir: \/shared\/berth/],
    ['images:\n  linger: soon\n', /f\.yaml:2: images\.linger must be a whole number of seconds/, /linger: 10/],
    ['pull:\n  parallel: 0\n', /f\.yaml:2: pull\.parallel must be a whole number of at least 1/, /parallel: 3/],
    ['run:\n  binds: /scratch\n', /f\.yaml:2: run\.binds must be a list of strings/, /binds: \["a", "b"\]/],
    ['cache:\n  dir: [unclosed\n', /f\.yaml:\d+: not valid YAML/, /fix the syntax/],
  ])('refuses %j', (text, message, hint) => {
    let err: { message: string; hint?: string } | undefined;
    try {
      parseConfigFile(text, 'f.yaml');
    } catch (e: unknown) {
      err = e as { message: string; hint?: string };
    }
    expect(err?.message).toMatch(message);
    expect(err?.hint).toMatch(hint);
  });
});

describe('loadConfig', () => {
  it('defaults, then the site file, then the user file, then the environment', () => {
    const site = path.join(dir, 'site.yaml');
    const user = path.join(dir, 'user.yaml');
    writeFileSync(site, 'cache:\n  dir: /site/cache\nimages:\n  linger: 30\npull:\n  parallel: 8\n');
    writeFileSync(user, 'images:\n  linger: 5\n');
    const c = loadConfig({ BERTH_CONFIG: user, BERTH_IMAGE_LINGER: '2' }, site);
    expect(c.values).toMatchObject({ 'cache.dir': '/site/cache', 'images.linger': 2, 'pull.parallel': 8, 'run.binds': [] });
    expect(c.sources).toMatchObject({ 'cache.dir': site, 'images.linger': '$BERTH_IMAGE_LINGER', 'pull.parallel': site, 'run.binds': 'default' });
    expect(loadConfig({ BERTH_CONFIG: user }, site).values['images.linger']).toBe(5);
  });

  it('a BERTH_CONFIG that does not exist is an error, a missing site file is not', () => {
    expect(() => loadConfig({ BERTH_CONFIG: path.join(dir, 'nope.yaml') }, path.join(dir, 'no-site.yaml'))).toThrow(/BERTH_CONFIG names .*nope\.yaml, which does not exist/);
  });
});

describe('every problem at once, files and variables alike (#18)', () => {
  const problems = (f: () => unknown) => {
    try {
      f();
    } catch (e: unknown) {
      return e as { code: string; message: string; hint?: string };
    }
    throw new Error('no error');
  };

  it('names each wrong value of a file with its line, and each hint', () => {
    const e = problems(() => parseConfigFile('cache:\n  dir: rel\nimages:\n  linger: -1\npull:\n  paralel: 3\n', 'f.yaml'));
    expect(e.message.split('\n')).toEqual([
      '3 problems in the configuration:',
      "  f.yaml:6: unknown setting 'pull.paralel'",
      '  f.yaml:2: cache.dir must be an absolute path',
      '  f.yaml:4: images.linger must be a whole number of seconds, 0 or more',
    ]);
    expect(e.hint).toMatch(/f\.yaml:2: e\.g\. dir: \/shared\/berth\n {2}f\.yaml:4: e\.g\. linger: 10/);
  });

  it('checks environment variables as it checks files: a relative BERTH_HOST_ROOT is refused', () => {
    const e = problems(() => loadConfig({ BERTH_HOST_ROOT: 'relative/root', XDG_CONFIG_HOME: dir }, path.join(dir, 'no-site.yaml')));
    expect(e).toMatchObject({ code: 'CONFIG_INVALID', message: '$BERTH_HOST_ROOT=relative/root: host.root must be an absolute path', hint: 'e.g. BERTH_HOST_ROOT=/shared/berth' });
    expect(problems(() => loadConfig({ BERTH_IMAGE_LINGER: 'soon', XDG_CONFIG_HOME: dir }, path.join(dir, 'no-site.yaml'))).message)
      .toBe('$BERTH_IMAGE_LINGER=soon: images.linger must be a whole number of seconds, 0 or more');
  });

  it('reports the site file, the user file and the environment together', () => {
    const site = path.join(dir, 'bad-site.yaml');
    const user = path.join(dir, 'bad-user.yaml');
    writeFileSync(site, 'pull:\n  parallel: 0\n');
    writeFileSync(user, 'run:\n  home: maybe\n');
    const e = problems(() => loadConfig({ BERTH_CONFIG: user, BERTH_RUNTIME_DIR: 'here' }, site));
    expect(e.message).toContain(`${site}:2: pull.parallel must be a whole number of at least 1`);
    expect(e.message).toContain(`${user}:2: run.home must be true or false`);
    expect(e.message).toContain('$BERTH_RUNTIME_DIR=here: runtime.dir must be an absolute path');
  });

  it('gives each reader its own copy of a list default', () => {
    const a = loadConfig({ XDG_CONFIG_HOME: dir }, path.join(dir, 'no-site.yaml'));
    a.values['cdi.dirs'].push('/changed');
    expect(loadConfig({ XDG_CONFIG_HOME: dir }, path.join(dir, 'no-site.yaml')).values['cdi.dirs']).toEqual(['/etc/cdi', '/var/run/cdi']);
  });
});

describe('the runtime directory', () => {
  it("BERTH_RUNTIME_DIR, else in a Slurm job the plugin's (BERTH_SLURM_KEEPS_SERVERS), else $XDG_RUNTIME_DIR/berth, else /tmp/berth-UID", () => {
    const none = path.join(dir, 'none.yaml');
    writeFileSync(none, '');
    const plugin = tempDir('plugin-rt');
    const xdg = tempDir('xdg');
    try {
      const base = { BERTH_CONFIG: none, XDG_RUNTIME_DIR: xdg };
      expect(runtimeDir(7, { ...base, BERTH_RUNTIME_DIR: '/mine', SLURM_JOB_ID: '3', BERTH_SLURM_KEEPS_SERVERS: plugin })).toBe('/mine');
      expect(runtimeDir(7, { ...base, SLURM_JOB_ID: '3', BERTH_SLURM_KEEPS_SERVERS: plugin })).toBe(plugin);
      // Outside a job, or a value that is no directory of this node's: the usual default.
      expect(runtimeDir(7, { ...base, BERTH_SLURM_KEEPS_SERVERS: plugin })).toBe(`${xdg}/berth`);
      expect(runtimeDir(7, { ...base, SLURM_JOB_ID: '3', BERTH_SLURM_KEEPS_SERVERS: 'relative' })).toBe(`${xdg}/berth`);
      expect(runtimeDir(7, { ...base, SLURM_JOB_ID: '3', BERTH_SLURM_KEEPS_SERVERS: path.join(plugin, 'missing') })).toBe(`${xdg}/berth`);
      expect(runtimeDir(7, { BERTH_CONFIG: none })).toBe('/tmp/berth-7');
    } finally {
      cleanup(plugin);
      cleanup(xdg);
    }
  });
});

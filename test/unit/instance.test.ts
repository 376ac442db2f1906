// plan/instance.ts: what an instance runs, which options joining one takes, the join plan, and
// the instance's line in the helper's plan text.
import { describe, expect, it } from 'vitest';
import { signalNumber } from '../../src/cli/instance.js';
import { checkInstanceName, checkJoinFlags, instanceCommand, joinPlan } from '../../src/plan/instance.js';
import { serializePlan } from '../../src/plan/serialize.js';
import type { ImageMetadata } from '../../src/squashfs/metadata.js';

const meta = (config: Partial<ImageMetadata['config']> = {}, startup?: ImageMetadata['startup']): ImageMetadata => ({
  berthImage: 1, source: 'oci:/x', manifestDigest: null, configDigest: 'sha256:0', platform: { os: 'linux', architecture: 'amd64' },
  created: null, layers: [], ...(startup ? { startup } : {}),
  config: { Env: [], Entrypoint: null, Cmd: null, WorkingDir: '', User: '', Labels: {}, Volumes: [], ExposedPorts: [], StopSignal: null, ...config },
});

describe('what an instance runs', () => {
  it("an OCI image: its Entrypoint/Cmd as berth run runs them (ARGS replace Cmd); nothing to run: it holds", () => {
    expect(instanceCommand(meta({ Cmd: ['postgres'] }), [], false)).toEqual({ mode: 'run', args: [] });
    expect(instanceCommand(meta({ Entrypoint: ['/init'] }), ['-v'], false)).toEqual({ mode: 'run', args: ['-v'] });
    expect(instanceCommand(meta(), ['sleep', '9'], false)).toEqual({ mode: 'run', args: ['sleep', '9'] });
    expect(instanceCommand(meta(), [], false)).toBe('hold');
  });

  it("an Apptainer image: its startscript with ARGS; without one, ARGS, else it holds (as Apptainer's instances do)", () => {
    const app = meta({ Cmd: ['/bin/sh'] }, 'apptainer');
    expect(instanceCommand(app, ['a'], true)).toEqual({ mode: 'exec', args: ['/.singularity.d/startscript', 'a'] });
    expect(instanceCommand(app, ['x', 'y'], false)).toEqual({ mode: 'exec', args: ['x', 'y'] });
    expect(instanceCommand(app, [], false)).toBe('hold');
  });
});

describe('names', () => {
  it.each(['db', 'jupyter-gpu.2', 'A_1', `a${'b'.repeat(63)}`])('takes %j', (name) => expect(() => checkInstanceName(name)).not.toThrow());
  it.each(['', '-x', '.x', '_x', 'a/b', '..', 'a b', 'a\nb', 'é', `a${'b'.repeat(64)}`])('refuses %j', (name) => {
    expect(() => checkInstanceName(name)).toThrow(/invalid instance name/);
  });
});

describe('joining', () => {
  it('takes --env, --env-file and --pwd; refuses what would change the instance, naming where it belongs', () => {
    expect(() => checkJoinFlags('db', { env: ['A=1'], envFile: 'f', pwd: '/x', dryRun: true, planFormat: 'json', bind: [], device: [], home: undefined })).not.toThrow();
    expect(() => checkJoinFlags('db', { bind: ['/a:/b'] })).toThrow('--bind cannot change the running instance db');
    let hint: string | undefined;
    try {
      checkJoinFlags('db', { writableTmpfs: true });
    } catch (e: unknown) {
      hint = (e as { hint?: string }).hint;
    }
    expect(hint).toBe('give --writable-tmpfs to berth instance start; exec instance://db takes only --env, --env-file and --pwd');
    expect(() => checkJoinFlags('db', { home: false })).toThrow('--home cannot change');
  });

  it('the join plan: the instance, the command, --env with BERTH_CONTAINER=1 first, --pwd or empty', () => {
    const p = joinPlan('db', '/run/user/1/berth', ['psql', '-c', 'select 1'], ['PGUSER=me'], undefined);
    expect(p).toMatchObject({ instance: 'db', runtimeDir: '/run/user/1/berth', argv: ['psql', '-c', 'select 1'], env: ['BERTH_CONTAINER=1', 'PGUSER=me'], cwd: '', ops: [] });
    expect(serializePlan(p)).toContain('\ncwd -\n');
    expect(serializePlan(p)).toMatch(/\ninstance db\n/);
    expect(joinPlan('db', '/r', ['true'], [], '/data').cwd).toBe('/data');
    expect(() => joinPlan('db', '/r', ['true'], [], 'rel')).toThrow('--pwd rel: must be an absolute path');
    expect(() => joinPlan('db', '/r', ['true'], ['NOVALUE'], undefined)).toThrow('--env NOVALUE: not NAME=VALUE');
  });

  it('a plan without an instance has no instance line', () => {
    const p = joinPlan('db', '/r', ['true'], [], undefined);
    expect(serializePlan({ ...p, instance: undefined })).not.toMatch(/^instance /m);
  });
});

describe('stop --signal', () => {
  it.each([['TERM', 15], ['SIGINT', 2], ['kill', 9], ['usr1', 10], ['9', 9]])('%s is signal %d', (name, n) => expect(signalNumber(name)).toBe(n));
  it.each(['NOPE', '0', '65', '-1', 'SIG'])('refuses %j', (name) => expect(() => signalNumber(name)).toThrow(`--signal ${name}: not a signal`));
});

// The alias table (src/cli/habits.ts) against the options that exist, and the parsers of
// Apptainer's and Docker's spellings (#13). The containers are test/integration/habits.test.ts's.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, type Option } from 'commander';
import { describe, expect, it } from 'vitest';
import { HABITS, checkImageArgument, refusedHabit } from '../../src/cli/habits.js';
import { containerOptions, dockerRunOptions } from '../../src/cli/options.js';
import { parseBinds } from '../../src/plan/build.js';
import { apptainerEnvironment, expandEnvFlags } from '../../src/plan/prepare.js';
import { osError } from '../../src/errors.js';
import { VERSION } from '../../src/version.js';
import { ROOT } from '../helpers.js';

const spellingsOf = (cmd: Command) => new Set((cmd.options as readonly Option[]).flatMap((o) => [o.short, o.long]).filter(Boolean));

describe('the alias table', () => {
  const run = spellingsOf(dockerRunOptions(containerOptions(new Command('run'))));
  it('every alias is an option of berth run, and no refused spelling is one', () => {
    for (const h of HABITS) {
      for (const s of h.spellings) expect(run.has(s), `${s} (${h.kind})`).toBe(h.kind === 'alias');
    }
  });
  it('a refused spelling gets the berth way, not an edit-distance guess; anything else gets nothing here', () => {
    expect(refusedHabit('--rm', 'run')).toMatchObject({ message: "--rm is Docker's and has no berth meaning", hint: expect.stringMatching(/leave out --rm/) });
    expect(refusedHabit('--publish-all', 'run')!.message).toBe("--publish-all is Docker's and has no berth meaning");
    expect(refusedHabit('--entrypoint', 'exec')!.message).toMatch(/^berth exec does not take --entrypoint/);
    expect(refusedHabit('--no-such', 'run')).toBeUndefined();
  });
  it("-e NAME=VALUE read as the image says what -e is and gives --env", () => {
    expect(() => checkImageArgument('FOO=bar', { cleanenv: true })).toThrow(/-e is Apptainer's --cleanenv/);
    expect(() => checkImageArgument('app.sqsh', { cleanenv: true })).not.toThrow();
    expect(() => checkImageArgument('FOO=bar', {})).not.toThrow(); // not -e: the image's own error says it does not exist
    expect(() => checkImageArgument('HOSTVAR', { cleanenv: true })).toThrow(expect.objectContaining({ hint: "to pass the host's HOSTVAR write --env HOSTVAR" }));
  });
});

describe('bind options', () => {
  it('takes Apptainer\'s and Docker\'s options, and refuses the others', () => {
    expect(parseBinds(['/a:/b:nosuid'])).toEqual([{ source: '/a', target: '/b', readOnly: false }]);
    expect(parseBinds(['/a:/b:ro:noexec'])).toEqual([{ source: '/a', target: '/b', readOnly: true, options: ['noexec'] }]);
    expect(parseBinds(['/a:/b:ro,z,/c'])).toEqual([{ source: '/a', target: '/b', readOnly: true }, { source: '/c', target: '/c', readOnly: false }]);
    expect(() => parseBinds(['/a:/b:bogus'])).toThrow(/unknown option 'bogus'/);
    expect(() => parseBinds(['ro'])).toThrow(/invalid --bind/);
  });
});

describe('environment habits', () => {
  it('--env splits A=1,B=2 as Apptainer does, keeps DIRS=a,b, and passes a host value for NAME', () => {
    expect(expandEnvFlags(['A=1,B=2', 'DIRS=a,b', 'HOSTY'], { HOSTY: 'h' })).toEqual(['A=1', 'B=2', 'DIRS=a,b', 'HOSTY=h']);
    expect(() => expandEnvFlags(['UNSET_HERE'], {})).toThrow(/UNSET_HERE is not set here/);
    expect(() => expandEnvFlags(['not a name'], {})).toThrow(/invalid --env/);
  });
  it('APPTAINER_BIND, SINGULARITY_BIND, APPTAINERENV_* and SINGULARITYENV_* (APPTAINER_ wins)', () => {
    expect(apptainerEnvironment({ SINGULARITY_BIND: '/s', APPTAINER_BIND: '/a:/b', APPTAINERENV_X: '1', SINGULARITYENV_X: '2', SINGULARITYENV_Y: '3', APPTAINERENV_: 'no' }))
      .toEqual({ binds: ['/s', '/a:/b'], env: ['X=1', 'Y=3'] });
  });
});

it("berth's version is package.json's (which the Makefiles build into the helper and the plugin)", () => {
  expect(VERSION).toBe((JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
});

describe('operating-system errors as berth errors (osError)', () => {
  const fail = (fn: () => unknown): unknown => {
    try {
      fn();
    } catch (e: unknown) {
      return e;
    }
    throw new Error('it did not fail');
  };
  it('names what, which path, the system call and what to do', () => {
    const e = osError(fail(() => readFileSync('/proc/self/no-such-file')), 'cannot read --env-file x')!;
    expect(e.message).toBe('cannot read --env-file x: no such file or directory (ENOENT: open /proc/self/no-such-file)');
    expect(e.hint).toBe('check the path');
    const dir = osError(fail(() => readFileSync('/proc')))!;
    expect(dir.message).toBe('a system call failed: is a directory (EISDIR: read)');
    expect(dir.hint).toBe('name a file, not a directory');
  });
  it('leaves anything that is not an errno error alone', () => {
    expect(osError(new Error('plain'))).toBeUndefined();
    expect(osError({ code: 'ERR_INVALID_ARG_TYPE' })).toBeUndefined();
  });
});

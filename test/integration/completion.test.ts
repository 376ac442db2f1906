// Shell completion and the man page (#13) are generated from the command definitions: every
// command and every option that `--help` shows must appear in each, and bash's must complete.
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { berth } from '../helpers.js';

/** The commands and their options as commander's --help prints them (what the user sees). */
const commands = new Map<string, string[]>();

function optionsIn(help: string): string[] {
  const section = help.split(/^Options:\n/m)[1]?.split(/^\S/m)[0] ?? '';
  return [...section.matchAll(/^ {2}(-[\w-]+(?:, --?[\w-]+)?)/gm)].flatMap((m) => m[1]!.split(', '));
}

beforeAll(async () => {
  const top = (await berth('--help')).stdout;
  const names = [...(top.split(/^Commands:\n/m)[1] ?? '').matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
  for (const name of names) commands.set(name, optionsIn((await berth(name, '--help')).stdout));
}, 60_000);

describe('completion and man page', () => {
  it('the commands were found (the help lists them)', () => {
    for (const c of ['run', 'exec', 'shell', 'pull', 'inspect', 'srun', 'version', 'completion', 'man']) expect(commands.has(c), c).toBe(true);
    expect(commands.get('exec')).toEqual(expect.arrayContaining(['--bind', '-B', '--nv', '-C', '--containall', '-u', '--user', '--env-file']));
  });

  it('bash, zsh and fish scripts and the man page name every command and option', async () => {
    const bash = (await berth('completion', 'bash')).stdout;
    const zsh = (await berth('completion', 'zsh')).stdout;
    const fish = (await berth('completion', 'fish')).stdout;
    const man = (await berth('man')).stdout;
    for (const [name, options] of commands) {
      const bashCase = new RegExp(`^ {4}${name}\\) opts='([^']*)'`, 'm').exec(bash)?.[1]?.split(' ') ?? [];
      const zshCase = new RegExp(`^ {4}${name}\\) _arguments (.*)$`, 'm').exec(zsh)?.[1] ?? '';
      const manSection = man.split(`.SS berth ${name}\n`)[1]?.split('.SS ')[0] ?? '';
      expect(fish, name).toContain(`-n __fish_use_subcommand -a ${name} `);
      expect(man, name).toContain(`.SS berth ${name}\n`);
      for (const o of options) {
        expect(bashCase, `bash: ${name} ${o}`).toContain(o);
        expect(zshCase, `zsh: ${name} ${o}`).toContain(`'*${o}[`);
        const fishFlag = o.startsWith('--') ? ` -l ${o.slice(2)}` : ` -s ${o.slice(1)}`;
        expect(fish.split('\n').some((l) => l.includes(`__fish_seen_subcommand_from ${name}'`) && l.includes(fishFlag)), `fish: ${name} ${o}`).toBe(true);
        expect(manSection, `man: ${name} ${o}`).toContain(o.replace(/-/g, '\\-'));
      }
    }
    expect(man).toMatch(/^\.TH BERTH 1 /);
    expect(man).toContain('.SH EXIT STATUS');
  });

  it('bash completes commands and options for real', async () => {
    const script = (await berth('completion', 'bash')).stdout;
    const complete = (words: string[]) => spawnSync('bash', ['-c', `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _berth; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
    expect(complete(['berth', 'ex']).stdout).toBe('exec\n');
    expect(complete(['berth', 'exec', '--containa']).stdout).toBe('--containall\n');
    expect(complete(['berth', 'completion', '-']).stdout.split('\n')).toContain('--help');
    expect(spawnSync('bash', ['-n'], { input: script }).status).toBe(0);
  });

});

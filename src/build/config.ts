// What the metadata instructions do to the image's config (ENV, LABEL, WORKDIR, USER,
// STOPSIGNAL, EXPOSE, VOLUME, CMD, ENTRYPOINT) and to the shell RUN uses (SHELL): pure, and
// with the instruction as substituted, which is what the step's cache key holds.
import path from 'node:path';
import type { CommandForm, Step } from './dockerfile.js';
import type { OciConfig } from './layer.js';
import { setEnv } from './words.js';

export interface ConfigState {
  config: OciConfig['config'];
  shell: string[];
  /** This stage set CMD: an ENTRYPOINT after it keeps it (Docker's rule). */
  cmdSet: boolean;
}

export type MetadataStep = Exclude<Step, { kind: 'RUN' | 'COPY' | 'ADD' | 'ARG' }>;

/** A command as the config or RUN has it: exec form as it is, shell form through SHELL. */
export function commandArgv(command: CommandForm, shell: string[]): string[] {
  return 'exec' in command ? command.exec : [...shell, command.shell];
}

export function applyMetadata(s: MetadataStep, state: ConfigState, x: (word: string) => string): { instruction: string; state: ConfigState } {
  const c = state.config;
  const to = (instruction: string, config: OciConfig['config'], more: Partial<ConfigState> = {}) => ({ instruction, state: { ...state, config, ...more } });
  switch (s.kind) {
    case 'ENV': {
      const pairs = s.pairs.map(([k, v]) => [k, x(v)] as const);
      return to(`ENV ${JSON.stringify(pairs)}`, { ...c, Env: pairs.reduce((env, [k, v]) => setEnv(env, k, v), c.Env) });
    }
    case 'LABEL': {
      const pairs = s.pairs.map(([k, v]) => [x(k), x(v)] as const);
      return to(`LABEL ${JSON.stringify(pairs)}`, { ...c, Labels: { ...c.Labels, ...Object.fromEntries(pairs) } });
    }
    case 'WORKDIR': {
      const dir = path.posix.resolve(c.WorkingDir || '/', x(s.word));
      return to(`WORKDIR ${dir}`, { ...c, WorkingDir: dir });
    }
    case 'USER':
      return to(`USER ${x(s.word)}`, { ...c, User: x(s.word) });
    case 'STOPSIGNAL':
      return to(`STOPSIGNAL ${x(s.word)}`, { ...c, StopSignal: x(s.word) });
    case 'EXPOSE': {
      const ports = s.words.map(x).map((w) => (w.includes('/') ? w.toLowerCase() : `${w}/tcp`));
      return to(`EXPOSE ${ports.join(' ')}`, { ...c, ExposedPorts: { ...c.ExposedPorts, ...Object.fromEntries(ports.map((q) => [q, {}])) } });
    }
    case 'VOLUME': {
      const vols = s.words.map(x);
      return to(`VOLUME ${JSON.stringify(vols)}`, { ...c, Volumes: { ...c.Volumes, ...Object.fromEntries(vols.map((v) => [v, {}])) } });
    }
    case 'CMD':
      return to(`CMD ${JSON.stringify(commandArgv(s.command, state.shell))}`, { ...c, Cmd: commandArgv(s.command, state.shell) }, { cmdSet: true });
    case 'ENTRYPOINT': {
      const argv = commandArgv(s.command, state.shell);
      // An ENTRYPOINT clears the CMD the base image had, not one this stage set before it.
      const { Cmd: inherited, ...rest } = c;
      return to(`ENTRYPOINT ${JSON.stringify(argv)}`, state.cmdSet && inherited ? { ...rest, Cmd: inherited, Entrypoint: argv } : { ...rest, Entrypoint: argv });
    }
    case 'SHELL': {
      const shell = 'exec' in s.command ? s.command.exec : state.shell;
      return to(`SHELL ${JSON.stringify(shell)}`, c, { shell });
    }
  }
}

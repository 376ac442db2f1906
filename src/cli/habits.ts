// What users of Apptainer/Singularity and Docker type first, in one table: every spelling that
// has a berth meaning is an alias (a real option of the container commands, documented as one),
// and every one that has none is refused with the berth way to do it. main.ts asks this table
// first when commander meets an unknown option, so a habit gets its answer, not an edit-distance
// guess (`--rm` was "Did you mean --rdma?"). The README's "Coming from" table is this one.
import { existsSync, statSync } from 'node:fs';
import { BerthError } from '../errors.js';

export type Origin = 'Apptainer' | 'Docker' | 'Apptainer, Docker';

export interface Habit {
  /** The spellings as typed, long first. */
  spellings: string[];
  from: Origin;
  /** alias: accepted, meaning `berth`; refused: not accepted, and `berth` says what to do instead. */
  kind: 'alias' | 'refused';
  berth: string;
}

export const HABITS: Habit[] = [
  // Accepted (the options are defined in options.ts; this is what they mean).
  { spellings: ['--nv'], from: 'Apptainer', kind: 'alias', berth: '--gpus all (warns and goes on where the node has no GPU)' },
  { spellings: ['--rocm'], from: 'Apptainer', kind: 'alias', berth: '--gpus all (warns and goes on where the node has no GPU)' },
  { spellings: ['-c', '--contain'], from: 'Apptainer', kind: 'alias', berth: '--contain: no host $HOME or working directory (an empty, writable home instead), private /tmp and /dev/shm' },
  { spellings: ['-C', '--containall'], from: 'Apptainer', kind: 'alias', berth: '--contain, plus --cleanenv and --pid' },
  { spellings: ['-H', '--home'], from: 'Apptainer', kind: 'alias', berth: '--home SRC[:DST]: SRC as the home directory, at DST (default SRC); $HOME is DST' },
  { spellings: ['--cwd'], from: 'Apptainer', kind: 'alias', berth: '--pwd DIR' },
  // Where the two tools disagree, Docker's meaning wins: Apptainer's -w is --writable (refused
  // below) and its --workdir a scratch directory; its -u is --userns, which berth always uses.
  { spellings: ['-w', '--workdir'], from: 'Docker', kind: 'alias', berth: '--pwd DIR' },
  { spellings: ['-v', '--volume'], from: 'Docker', kind: 'alias', berth: '--bind SRC:DST[:ro]' },
  { spellings: ['-u', '--user'], from: 'Docker', kind: 'alias', berth: '--user UID[:GID]: be that uid and gid inside (your own outside, as --fakeroot is uid 0)' },
  { spellings: ['--overlay'], from: 'Apptainer', kind: 'alias', berth: '--overlay DIR: a writable root whose changes stay in DIR/upper (a directory; overlay image files are not read)' },
  { spellings: ['--entrypoint'], from: 'Docker', kind: 'alias', berth: 'berth run --entrypoint CMD: replaces the image\'s Entrypoint' },
  { spellings: ['-p', '--publish'], from: 'Docker', kind: 'alias', berth: '-p HOST_PORT:CONTAINER_PORT: a TCP port of the container on the host, through user-mode networking (--network user)' },
  { spellings: ['--network'], from: 'Apptainer, Docker', kind: 'alias', berth: '--network none|user|host: a loopback only, user-mode networking (pasta), or the host\'s (the default)' },
  { spellings: ['--net'], from: 'Apptainer', kind: 'alias', berth: '--network user: a network namespace of its own, unprivileged, through pasta' },
  { spellings: ['--ipc', '--uts', '--hostname'], from: 'Apptainer, Docker', kind: 'alias', berth: '--ipc, --uts, --hostname NAME: IPC and UTS namespaces of its own' },
  { spellings: ['--memory'], from: 'Apptainer, Docker', kind: 'alias', berth: '--memory SIZE (512m, 4g): memory.max, and no swap beyond it, in a cgroup v2 of the container\'s where your cgroup is delegated (berth doctor)' },
  { spellings: ['-m'], from: 'Docker', kind: 'alias', berth: '--memory SIZE' },
  { spellings: ['--cpus'], from: 'Apptainer, Docker', kind: 'alias', berth: '--cpus N (fractional): cpu.max, N CPUs\' time per period' },
  { spellings: ['--pids-limit'], from: 'Apptainer, Docker', kind: 'alias', berth: '--pids-limit N: pids.max' },
  { spellings: ['-i', '--interactive', '-t', '--tty'], from: 'Docker', kind: 'alias', berth: 'nothing to do: the container always has your stdin and terminal' },
  // Refused, with the berth way.
  { spellings: ['--rm'], from: 'Docker', kind: 'refused', berth: 'berth leaves nothing behind: every container is gone when its command exits; leave out --rm' },
  { spellings: ['--name'], from: 'Docker', kind: 'refused', berth: 'a container of berth run has no name; a named, long-running one is an instance (berth instance start IMAGE NAME), and under Slurm, --container-name' },
  { spellings: ['-d', '--detach'], from: 'Docker', kind: 'refused', berth: 'berth runs the container in the foreground; for a background service use an instance (berth instance start), or the shell\'s &' },
  { spellings: ['-P', '--publish-all'], from: 'Docker', kind: 'refused', berth: 'name each port: -p HOST_PORT:CONTAINER_PORT' },
  { spellings: ['--mount'], from: 'Apptainer, Docker', kind: 'refused', berth: 'write --bind SRC:DST[:ro]' },
  { spellings: ['--privileged', '--cap-add', '--security-opt'], from: 'Docker', kind: 'refused', berth: 'berth never has privileges beyond yours; --fakeroot makes you uid 0 inside a user namespace' },
  { spellings: ['--writable'], from: 'Apptainer', kind: 'refused', berth: 'the image is read-only; --overlay DIR keeps a writable root\'s changes in a directory of yours, --writable-tmpfs in memory until exit' },
  { spellings: ['-W', '--scratch', '-S'], from: 'Apptainer', kind: 'refused', berth: 'bind a directory of yours instead: --bind /scratch/me:/scratch' },
  { spellings: ['--apply-cgroups'], from: 'Apptainer', kind: 'refused', berth: 'berth reads no cgroups TOML file: give the limits as flags, --memory SIZE, --cpus N, --pids-limit N' },
  { spellings: ['--memory-swap', '--memory-reservation', '--cpu-shares', '--cpuset-cpus'], from: 'Apptainer, Docker', kind: 'refused', berth: 'berth sets --memory (with no swap beyond it), --cpus and --pids-limit only' },
  { spellings: ['--app'], from: 'Apptainer', kind: 'refused', berth: 'berth runs an image\'s main runscript only; name the app\'s command with berth exec' },
];

const BY_SPELLING = new Map(HABITS.flatMap((h) => h.spellings.map((s) => [s, h] as const)));

/** The habit an unknown option is, if it is one ('--rm', '--name=x', '-d'). */
export function habitOf(option: string): Habit | undefined {
  return BY_SPELLING.get(option.replace(/=.*$/, ''));
}

/** berth's answer to an unknown option that is another tool's habit: the error main.ts prints. */
export function refusedHabit(option: string, command: string): BerthError | undefined {
  const h = habitOf(option);
  if (!h) return undefined;
  const name = option.replace(/=.*$/, '');
  const whose = h.from.split(', ').map((o) => `${o}'s`).join(' and ');
  if (h.kind === 'alias') {
    // An alias of another command (--entrypoint is berth run's): say where it belongs.
    return new BerthError('USAGE', `berth ${command} does not take ${name} (${whose}; in berth: ${h.berth})`, `see berth ${command} --help`);
  }
  return new BerthError('USAGE', `${name} is ${whose} and has no berth meaning`, h.berth);
}

/**
 * `-e FOO=bar`: in berth, as in Apptainer, -e is --cleanenv, so FOO=bar was taken for the image.
 * Docker's -e sets a variable; berth's spelling is --env.
 */
export function checkImageArgument(image: string, flags: { cleanenv?: boolean; workdir?: string }): void {
  // Apptainer's `-w IMAGE` (--writable): berth's -w is Docker's --workdir, which took the image.
  const w = flags.workdir;
  if (w !== undefined && (/\.(sif|sqsh|squashfs|simg|img)$/.test(w) || isFile(w))) {
    throw new BerthError('USAGE', `'${w}' was taken as the working directory: -w is Docker's --workdir in berth, not Apptainer's --writable`,
      'the image is read-only: --writable-tmpfs gives a writable root whose changes vanish at exit');
  }
  if (!flags.cleanenv) return;
  if (/^[A-Za-z_][A-Za-z0-9_]*=/.test(image)) {
    throw new BerthError('USAGE', `'${image}' was read as the image: -e is Apptainer's --cleanenv in berth, not Docker's -e VAR=VALUE`,
      `to set a variable write --env ${image}`);
  }
  // Docker's `-e NAME` (pass the host's value): an upper-case word that is no file here.
  if (/^[A-Z_][A-Z0-9_]*$/.test(image) && !existsSync(image)) {
    throw new BerthError('USAGE', `'${image}' was read as the image: -e is Apptainer's --cleanenv in berth, not Docker's -e VAR`,
      `to pass the host's ${image} write --env ${image}`);
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

// What main.ts and the commands share: the options of the container commands (run, exec,
// shell, plan, srun), made from the settings table so that a flag and its setting cannot drift
// apart, and what a command hands back for main.ts to print.
import { Command, InvalidArgumentError, Option } from 'commander';
import { SETTINGS, type Setting } from '../config/schema.js';
import { isBerthError } from '../errors.js';
import { parsePublish } from '../plan/build.js';

/** What a command hands back: text for stdout, or (for containers) an exit status too. */
export type CommandResult = string | { out?: string; exitCode: number };

export const collect = (value: string, previous: string[]) => [...previous, value];

/** The flags that are settings (config/schema.ts, the bindings' included): one name, one meaning. */
export function settingOptions(cmd: Command): Command {
  for (const [key, s] of Object.entries(SETTINGS) as [string, Setting][]) {
    if (!s.flag) continue;
    const help = `${s.describe} [${key}]`;
    if (s.type === 'strings') cmd.option(s.flag, help, collect, []);
    else if (s.type === 'boolean') {
      cmd.option(s.flag, help);
      cmd.option(s.flag.replace('--', '--no-'), `the opposite of ${s.flag}`);
    } else if (s.type === 'seconds' || s.type === 'count') {
      // A number, for the setting's own check to judge (prepare.ts: checkedFlag).
      cmd.addOption(new Option(s.flag, help).argParser(Number));
    } else cmd.option(s.flag, help);
  }
  return cmd;
}

/** -p checked as commander reads it: `-p IMAGE` (Apptainer's -p is --pid) must not take the image as its value silently. */
function publishSpec(spec: string): string {
  try {
    return parsePublish(spec);
  } catch (e: unknown) {
    throw new InvalidArgumentError(isBerthError(e) ? `${e.message}; ${e.hint}` : String(e));
  }
}

/**
 * Every option a container takes: the settings' flags, then those that exist only on the command
 * line, then Apptainer's and Docker's spellings that mean something in berth (habits.ts says
 * what each means and refuses the others).
 */
export function containerOptions(cmd: Command): Command {
  return settingOptions(cmd)
    .option('-H, --home <src[:dst]>', 'bind SRC as the home directory, at DST inside (default SRC); $HOME is DST (Apptainer\'s)')
    .option('--no-home', 'do not bind $HOME and the working directory')
    .option('-c, --contain', 'no host $HOME or working directory (an empty, writable home instead), private /tmp and /dev/shm')
    .option('-C, --containall', '--contain, and --cleanenv and --pid too (Apptainer\'s)')
    .option('--writable-tmpfs', 'let the container write anywhere; changes go to memory and vanish at exit')
    .option('--overlay <dir>', "let the container write anywhere, keeping the changes in DIR/upper for the next container (Apptainer's writable overlay directory; made if missing)")
    .option('--fakeroot', 'be root (uid 0) inside the container; still only your own privileges (implies --pid)')
    .option('-u, --user <uid[:gid]>', "be this uid and gid (or the image's user and group of these names) inside; your own outside (Docker's -u)")
    .option('--pid', 'a PID namespace of its own: the container sees only its own processes (implied by --fakeroot and --containall)')
    .option('--ipc', 'an IPC namespace of its own (System V IPC, POSIX message queues; implied by --containall)')
    .option('--uts', 'a UTS namespace of its own: the hostname can change inside without changing the host\'s')
    .option('--hostname <name>', 'the hostname inside (implies --uts)')
    .option('--network <mode>', 'none: a loopback only; user: user-mode networking through pasta; host: the host\'s (default)')
    .option('--net', "Apptainer's --net: a network of its own, here user-mode (as --network user)")
    .addOption(new Option('-p, --publish <host:container>', "publish a container's TCP port on the host (Docker's -p; implies --network user); repeatable")
      .argParser((spec: string, before: string[] = []) => [...before, publishSpec(spec)]))
    .option('-e, --cleanenv', "do not pass the host environment (except TERM, LANG, LC_ALL, TZ); Apptainer's -e, not Docker's: use --env")
    .option('--env <K=V>', 'set a variable inside; repeatable, or comma-separated; --env NAME passes the host\'s value', collect, [])
    .option('--env-file <file>', 'set variables from KEY=VALUE lines')
    .option('-m, --memory <size>', "limit the container's memory (e.g. 512m, 4g; no swap beyond it where the node accounts swap): cgroup v2, where your cgroup is delegated (Docker's and Apptainer's)")
    .option('--cpus <n>', "limit the container to N CPUs' time, fractional (e.g. 2, 0.5): cgroup v2 cpu.max (Docker's and Apptainer's)")
    .option('--pids-limit <n>', "limit the container's processes and threads (Docker's and Apptainer's)")
    .option('--limits <mode>', 'strict (default): a limit that cannot be applied here is an error; best-effort: a warning, and the container runs without it')
    .option('--pwd <dir>', 'working directory inside (default: the image WorkingDir, else where you are)')
    .option('--dry-run', 'print the launch plan instead of running it')
    .addOption(new Option('--plan-format <format>', 'how --dry-run prints the plan: json, or helper (the text berth-helper reads)').choices(['json', 'helper']).default('json'))
    // Aliases (habits.ts): the same meaning under the spelling people already type.
    .option('--nv', "alias of --gpus all (Apptainer's; warns and goes on where the node has no GPU)")
    .option('--rocm', "alias of --gpus all (Apptainer's; warns and goes on where the node has no GPU)")
    .option('--cwd <dir>', "alias of --pwd (Apptainer's)")
    .option('-w, --workdir <dir>', "alias of --pwd (Docker's)")
    .option('-v, --volume <spec>', "alias of --bind (Docker's -v SRC:DST[:ro])", collect, [])
    .option('-i, --interactive', "accepted for Docker's habit: the container always has your stdin")
    .option('-t, --tty', "accepted for Docker's habit: the container always has your terminal")
    .passThroughOptions();
}

/** What berth run takes beyond the other container commands: docker run's --entrypoint. */
export function dockerRunOptions(cmd: Command): Command {
  return cmd.option('--entrypoint <command>', "replace the image's Entrypoint ('' for none); its Cmd goes too, as in docker run");
}

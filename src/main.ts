// The berth command line: wiring only. Commands return what goes to stdout; this file prints
// it, and is the only place that catches errors and exits. (The file is started by the launcher
// lines build.mjs puts first, never by Node reading berth's options: see there.)
import { Argument, Command, CommanderError, Option } from 'commander';
import { refusedHabit } from './cli/habits.js';
import { containerOptions, dockerRunOptions, type CommandResult } from './cli/options.js';
import { printableLines } from './cli/terminal.js';
import { BerthError, EXIT, isBerthError, messageOf, osError } from './errors.js';
import { takeLaunchChannel } from './runtime/launch.js';
import { VERSION } from './version.js';

takeLaunchChannel();

function printError(e: BerthError): void {
  // A message may quote an image's or a registry's text: escaped, line by line.
  process.stderr.write(`berth: error: ${printableLines(e.message)}\n${e.hint ? `berth: hint: ${printableLines(e.hint)}\n` : ''}`);
}

function run(action: () => Promise<CommandResult>): Promise<void> {
  // A command whose work was dropped (an event nobody answers) must not look like a success.
  let settled = false;
  process.once('beforeExit', () => {
    if (settled) return;
    process.stderr.write('berth: internal error: the command stopped before it finished; this is a bug in berth\n');
    process.exitCode = EXIT.berth;
  });
  return action().finally(() => { settled = true; }).then(
    (result) => {
      const out = typeof result === 'string' ? result : result.out;
      if (out) process.stdout.write(out.endsWith('\n') ? out : `${out}\n`);
      if (typeof result !== 'string') process.exitCode = result.exitCode;
    },
    (e: unknown) => {
      // Every failure of berth's own is 125 (docker run's contract, README "Exit status"). An
      // operating-system error nobody converted still reaches the user as what and why, not as
      // a stack: the path, the system call and what to do.
      if (e instanceof CommanderError) return commanderError(e); // a command's own parser (berth srun's)
      const known = isBerthError(e) ? e : osError(e);
      if (known) printError(known);
      else {
        process.stderr.write(`berth: internal error: ${messageOf(e)}\n${e instanceof Error && e.stack ? `${e.stack}\n` : ''}` +
          `berth: this is a bug in berth ${VERSION} (node ${process.version}); please report it with the command you ran\n`);
      }
      process.exitCode = EXIT.berth;
    },
  );
}

/** The command being parsed, for the answer to an unknown option. */
let parsing = 'berth';

const program = new Command('berth')
  .description('Run OCI/Docker images on HPC clusters from one squashfs file, with no root and no setuid.')
  .addOption(new Option('-v, --version', "print the versions of berth, berth-helper and the SPANK plugin (as berth version)"))
  // Errors are thrown, not exited on, and printed below in berth's form with berth's status.
  .exitOverride()
  .configureOutput({ outputError: () => {} })
  .enablePositionalOptions()
  .hook('preSubcommand', (_cmd, sub) => { parsing = sub.name(); });

program
  .command('convert')
  .description('convert an image into one read-only squashfs file')
  .argument('<source>', 'oci:DIR[:TAG|@DIGEST], docker-archive:FILE.tar[:NAME:TAG] or docker://REF')
  .requiredOption('-o, --output <file>', 'the squashfs file to write')
  .addOption(new Option('--compression <name>', 'zstd | gzip | xz | lz4 | none (default: zstd, see README)'))
  .option('--level <n>', 'compression level (zstd: 1-22, default 3; gzip: 1-9)')
  .option('-j, --jobs <n>', 'compressor threads (default: available cores)')
  .option('--platform <os/arch[/variant]>', 'which image of a multi-platform index (default: this host)')
  .option('-f, --force', 'replace the output file if it exists')
  .option('-q, --quiet', 'print nothing but errors')
  .option('--json', 'print the result as JSON on stdout')
  .option('--insecure', 'docker://: allow plain http for this registry (always allowed for localhost)')
  .action((source: string, flags) => run(async () => (await import('./cli/convert.js')).convertCommand(source, flags)));

program
  .command('commit')
  .description("save what containers changed in an --overlay directory as a new image on top of the one they ran")
  .argument('[image]', 'the image the overlay was used with (default: the one berth noted in the overlay)')
  .option('--from-overlay <dir>', 'the directory given to --overlay')
  .requiredOption('-o, --output <file>', 'the new squashfs image to write')
  .option('--oci-layout <dir>', 'also keep the new image as an OCI layout here (a new directory), for skopeo or umoci to push')
  .option('--keep-owner', 'keep your uid and gid on the changed files (default: root\'s, as --fakeroot saw them)')
  .option('-f, --force', 'replace the output file if it exists')
  .option('-q, --quiet', 'print nothing but errors')
  .option('--json', 'print the result as JSON on stdout')
  .action((image: string | undefined, flags) => run(async () => (await import('./cli/commit.js')).commitCommand(image, flags)));

program
  .command('build')
  .description('build an image from a Dockerfile, without root (RUN steps run in berth\'s own container as a fake root)')
  .argument('<context>', 'the directory COPY and ADD take files from')
  .option('-f, --file <dockerfile>', 'the Dockerfile (default: CONTEXT/Dockerfile)')
  .option('-t, --tag <name>', 'keep the image in your cache under NAME: berth images lists it, berth run NAME runs it')
  .option('--build-arg <name=value>', 'a value for an ARG (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
  .option('--target <stage>', 'build this stage (and what it needs) and stop')
  .option('-o, --output <file>', 'write the image to this squashfs file')
  .option('--oci-layout <dir>', 'also write the image as an OCI layout here (a new directory), one layer per step')
  .option('--no-cache', 'run every RUN, COPY and ADD again, not from the build cache')
  .option('--force', 'replace the -o file if it exists')
  .option('-q, --quiet', "print only the image's digest (no steps, no step output)")
  .option('--json', 'print the result as JSON on stdout (no steps on stderr)')
  .action((context: string, flags) => run(async () => (await import('./cli/build.js')).buildCommand(context, flags)));

program
  .command('pull')
  .description('pull an image from a registry into the cache and convert it (once); print its path')
  .argument('<reference>', 'docker://[REGISTRY/]REPO[:TAG|@DIGEST] (Docker Hub by default)')
  .option('-o, --output <file>', 'also copy the image here')
  .option('--platform <os/arch[/variant]>', 'which image of a multi-platform index (default: this host)')
  .option('--insecure', 'allow plain http for this registry (always allowed for localhost)')
  .option('--parallel <n>', 'layers downloaded at once (default: pull.parallel, 3)')
  .option('-f, --force', 'replace the -o file if it exists')
  .option('-q, --quiet', 'print nothing but errors')
  .option('--json', 'print the result as JSON on stdout')
  .option('--print-path', "print the image's path and a newline, and nothing else but errors (for scripts; the Slurm plugin's)")
  // Apptainer's order (pull OUT.sif SOURCE) gets its own answer, not "too many arguments".
  .allowExcessArguments()
  .action((reference: string, flags, cmd: Command) => run(async () => (await import('./cli/pull.js')).pullCommand(reference, flags, cmd.args.slice(1))));

program
  .command('sign')
  .description("sign an image pushed to a registry, in cosign's format, for sites whose trust: policy requires it")
  .argument('<reference>', 'docker://[REGISTRY/]REPO[:TAG|@DIGEST]: the manifest that berth pull checks on this platform')
  .option('--key <file>', 'the private key: PEM (ECDSA P-256 or Ed25519) as openssl writes it, or a cosign key file (COSIGN_PASSWORD)')
  .option('--platform <os/arch[/variant]>', 'which image of a multi-platform index (default: this host)')
  .option('--insecure', 'allow plain http for this registry (always allowed for localhost)')
  .option('--json', 'print the result as JSON on stdout')
  .action((reference: string, flags) => run(async () => (await import('./cli/sign.js')).signCommand(reference, flags)));

program
  .command('login')
  .description('check and save credentials for a registry (in ~/.docker/config.json)')
  .argument('<registry>', 'e.g. ghcr.io, nvcr.io, docker.io')
  .option('-u, --username <name>', 'user name (default: $BERTH_REGISTRY_USERNAME)')
  .option('--password-stdin', 'read the password from standard input (for scripts)')
  .option('--insecure', 'allow plain http for this registry')
  .action((registry: string, flags) => run(async () => (await import('./cli/login.js')).loginCommand(registry, flags)));

program
  .command('images')
  .description('list the converted images in the cache (run, exec and shell take their digests)')
  .option('--json', 'print JSON')
  .action((flags) => run(async () => (await import('./cli/images.js')).imagesCommand(flags)));

program
  .command('rm')
  .description('remove converted images from the cache')
  .argument('<image...>', 'a manifest digest (or its first 12+ hex digits), or the docker:// reference it was pulled as')
  .action((images: string[]) => run(async () => (await import('./cli/images.js')).rmCommand(images)));

program
  .command('prune')
  .description('remove the downloaded layers and the build cache (converted and tagged images stay)')
  .action(() => run(async () => (await import('./cli/images.js')).pruneCommand()));

program
  .command('doctor')
  .description('check what this node allows (user namespaces, FUSE, overlayfs, tools, directories) and what GPU, MPI, RDMA and CDI binding would do, with fixes')
  .option('--json', 'print JSON')
  .action((flags) => run(async () => (await import('./cli/doctor.js')).doctorCommand(flags)));

program
  .command('config')
  .description('show every setting, its value and where it came from')
  .option('--json', 'print JSON')
  .action((flags) => run(async () => (await import('./cli/config.js')).configCommand(flags)));

program
  .command('inspect')
  .description('show what a berth image carries: config, digests, source, size, compression')
  .argument('<image>', 'an image file or directory, or docker://REF (pulled into the cache if it is not there)')
  .option('--json', 'print JSON')
  .action((image: string, flags) => run(async () => (await import('./cli/inspect.js')).inspectCommand(image, flags)));

const containerCommands = [
  ['run', "run an image's Entrypoint/Cmd, as docker run does (arguments replace Cmd)", '[args...]', 'arguments for the entrypoint (after --)'],
  ['exec', 'run a command in an image', '<command...>', 'the command and its arguments'],
  ['shell', "open the image's shell (bash if it has one, else sh)", '[args...]', 'arguments for the shell'],
] as const;
for (const [name, description, args, argsHelp] of containerCommands) {
  const cmd = containerOptions(program.command(name).description(description)
    .argument('<image>', 'a squashfs file made by berth convert, an image berth runs as it is, docker://REF, or instance://NAME (a running instance: berth instance start)')
    .argument(args, argsHelp));
  if (name === 'run') dockerRunOptions(cmd);
  cmd.action((image: string, rest: string[], flags) => run(async () => (await import('./cli/run.js')).runCommand(name, image, rest, flags)));
}

// Apptainer's instances: named, long-running containers of the user's on this node (cli/instance.ts).
const instance = program.command('instance')
  .description("named, long-running containers of yours on this node (Apptainer's instances); exec instance://NAME joins one")
  .enablePositionalOptions();
containerOptions(instance.command('start')
  .description("start IMAGE detached as the instance NAME: its startscript (Apptainer) or Entrypoint/Cmd, ARGS replacing Cmd; output to a log")
  .argument('<image>', 'a squashfs file, SIF or docker://')
  .argument('<name>', "the instance's name: letters, digits, '.', '_', '-' (up to 64)")
  .argument('[args...]', 'arguments for the startscript, or in place of Cmd'))
  .action((image: string, name: string, rest: string[], flags) => run(async () => (await import('./cli/instance.js')).instanceStartCommand(image, name, rest, flags)));
instance.command('stop')
  .description('stop an instance (SIGTERM, then SIGKILL after --timeout) and remove what it left; an instance that ended is removed')
  .argument('[name]', 'the instance')
  .option('-a, --all', 'every instance of yours on this node')
  .option('-s, --signal <signal>', 'the signal to send first (default TERM)')
  .option('-t, --timeout <seconds>', 'then SIGKILL after this long (default 10)')
  .option('-F, --force', 'SIGKILL at once')
  .action((name: string | undefined, flags) => run(async () => (await import('./cli/instance.js')).instanceStopCommand(name, flags)));
instance.command('list')
  .description('list your instances on this node: name, pid, status, start, job, image, log')
  .option('--json', 'print JSON')
  .action((flags) => run(async () => (await import('./cli/instance.js')).instanceListCommand(flags)));

containerOptions(program.command('plan')
  .description('print the launch plan for an image on this node, without running anything')
  .argument('<image>', 'a squashfs file, or docker://')
  .argument('[command...]', 'the command (default: the image\'s Entrypoint/Cmd)'))
  .option('--slurm-step', "the plan of a Slurm step's container, which each task joins (the SPANK plugin's)")
  .addOption(new Option('--staged-registry-image', "the image is the SPANK plugin's staged copy of a registry image it pulled").hideHelp())
  .option('--keep-env <names>', 'with --slurm-step: host variables that pass as they are, comma-separated')
  .option('--step-linger <seconds>', "with --slurm-step: how long the step's container waits for the next task (default 2)")
  .option('--entrypoint', "with --slurm-step: run the image's Entrypoint once when the step's container starts")
  .option('--save-overlay <dir>', "with --slurm-step: keep the container's writable layer in this directory of the node's, for the plugin's --container-save")
  .addOption(new Option('--format <format>', 'json, or helper (the text berth-helper reads)').choices(['json', 'helper']))
  .option('-o, --output <file>', 'write it here (atomically) instead of stdout')
  .action((image: string, rest: string[], flags) => run(async () => (await import('./cli/plan.js')).planCommand(image, rest, flags)));

program.command('resolve')
  .description("pin a docker:// reference to this platform's image manifest digest (what a job's nodes then run)")
  .argument('<reference>', 'docker://[REGISTRY/]REPO[:TAG|@DIGEST]')
  .option('--platform <os/arch[/variant]>', 'which image of a multi-platform index (default: this host)')
  .option('--insecure', 'allow plain http for this registry (always allowed for localhost)')
  .action((reference: string, flags) => run(async () => (await import('./cli/pull.js')).resolveCommand(reference, flags)));

program.command('srun')
  .description('run a command in an image under Slurm without the SPANK plugin: berth srun [SRUN OPTIONS] --image IMAGE [OPTIONS] -- COMMAND')
  .argument('[args...]', 'srun options, --image IMAGE, berth options (as for exec), -- and the command')
  .allowUnknownOption()
  .helpOption(false)
  .passThroughOptions()
  .action((args: string[]) => run(async () => (await import('./cli/srun.js')).srunCommand(args)));

program.command('push')
  .description('copy an image to a cluster over SSH (SFTP): resumable, verified, skipped when already there')
  .argument('<image>', 'a squashfs file')
  .argument('<destination>', '[USER@]HOST:[PATH] (HOST may be a ~/.ssh/config alias; default PATH: ~/berth-images/)')
  .option('--accept-new-host-key', "trust the host's key if it is not in known_hosts yet (never a changed one)")
  .option('-q, --quiet', 'print nothing but errors')
  .option('--json', 'print the result as JSON on stdout')
  .action((image: string, destination: string, flags) => run(async () => (await import('./cli/push.js')).pushCommand(image, destination, flags)));

program.command('submit')
  .description('submit a job to a cluster over SSH: berth submit [USER@]HOST --image IMAGE [SBATCH OPTIONS] [--wait] -- COMMAND')
  .argument('[args...]', 'the host, --image IMAGE.sqsh|docker://REF, sbatch options, --wait, --accept-new-host-key, -- and the command')
  .allowUnknownOption()
  .helpOption(false)
  .passThroughOptions()
  .action((args: string[]) => run(async () => (await import('./cli/submit.js')).submitCommand(args)));

program.command('version')
  .description("print the versions of berth, berth-helper and the SPANK plugin; a mismatch is an error")
  .option('--json', 'print JSON')
  .action((flags) => run(async () => (await import('./cli/version.js')).versionCommand(flags)));

program.command('completion')
  .description('print a shell completion script: berth completion bash|zsh|fish')
  .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish']))
  .action((shell: string) => run(async () => (await import('./cli/completion.js')).completionScript(program, shell)));

program.command('man')
  .description("print berth's manual page (roff): berth man | man -l -")
  .action(() => run(async () => (await import('./cli/completion.js')).manPage(program, VERSION)));

/** A commander error (a bad flag, a missing argument) in berth's form; help and version are not errors. */
function commanderError(e: CommanderError): void {
  if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') {
    process.exitCode = EXIT.ok;
    return;
  }
  // `berth` alone: commander has printed the help (on stderr); there is nothing to add.
  if (e.code === 'commander.help') {
    process.exitCode = EXIT.berth;
    return;
  }
  const unknown = /unknown option '([^']+)'/.exec(e.message)?.[1];
  const habit = unknown && refusedHabit(unknown, parsing);
  const text = e.message.replace(/^error: /, '').replace(/\n\(Did you mean (.*)\?\)$/, ' (did you mean $1?)');
  printError(habit || new BerthError('USAGE', text, `run berth ${parsing === 'berth' ? '' : `${parsing} `}--help for usage`));
  process.exitCode = EXIT.berth;
}

// -v and --version alone: berth's, the helper's and the plugin's versions (the `version` command).
const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '-v' || argv[0] === '--version')) argv[0] = 'version';
program.parseAsync(argv, { from: 'user' }).catch((e: unknown) => {
  if (e instanceof CommanderError) return commanderError(e);
  printError(isBerthError(e) ? e : new BerthError('USAGE', messageOf(e)));
  process.exitCode = EXIT.berth;
});

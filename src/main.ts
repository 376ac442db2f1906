#!/usr/bin/env node
// The berth command line: wiring only. Commands return what goes to stdout; this file prints
// it, and is the only place that catches errors and exits.
import { Command, Option } from 'commander';
import { EXIT, isBerthError, messageOf } from './errors.js';

const VERSION = '0.1.0';

function run(action: () => Promise<string>): Promise<void> {
  return action().then(
    (out) => {
      if (out) process.stdout.write(out.endsWith('\n') ? out : `${out}\n`);
    },
    (e: unknown) => {
      if (isBerthError(e)) {
        process.stderr.write(`berth: error: ${e.message}\n${e.hint ? `berth: hint: ${e.hint}\n` : ''}`);
        process.exitCode = e.code === 'USAGE' ? EXIT.usage : EXIT.failure;
      } else {
        process.stderr.write(`berth: internal error: ${messageOf(e)}\n${e instanceof Error && e.stack ? `${e.stack}\n` : ''}` +
          `berth: this is a bug in berth ${VERSION} (node ${process.version}); please report it with the command you ran\n`);
        process.exitCode = EXIT.internal;
      }
    },
  );
}

// Temp files are dropped by 'exit' handlers; make signals go through them.
for (const [signal, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
  process.on(signal, () => process.exit(128 + n));
}

const program = new Command('berth')
  .version(VERSION)
  .description('Run OCI/Docker images on HPC clusters from one squashfs file, with no root and no setuid.')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('convert')
  .description('convert an image into one read-only squashfs file')
  .argument('<source>', 'oci:DIR[:TAG|@DIGEST] or docker-archive:FILE.tar[:NAME:TAG]')
  .requiredOption('-o, --output <file>', 'the squashfs file to write')
  .addOption(new Option('--compression <name>', 'zstd | gzip | xz | lz4 | none (default: zstd, see README)'))
  .option('--level <n>', 'compression level (zstd: 1-22, default 3; gzip: 1-9)')
  .option('-j, --jobs <n>', 'compressor threads (default: available cores)')
  .option('--platform <os/arch[/variant]>', 'which image of a multi-platform index (default: this host)')
  .option('-f, --force', 'replace the output file if it exists')
  .option('-q, --quiet', 'print nothing but errors')
  .option('--json', 'print the result as JSON on stdout')
  .action((source: string, flags) => run(async () => (await import('./cli/convert.js')).convertCommand(source, flags)));

program
  .command('inspect')
  .description('show what a berth image carries: config, digests, source, size, compression')
  .argument('<image>', 'a squashfs file made by berth convert')
  .option('--json', 'print JSON')
  .action((image: string, flags) => run(async () => (await import('./cli/inspect.js')).inspectCommand(image, flags)));

program.parseAsync().catch((e: unknown) => {
  process.stderr.write(`berth: error: ${messageOf(e)}\n`);
  process.exitCode = EXIT.usage;
});

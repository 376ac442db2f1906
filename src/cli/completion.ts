// Shell completion (bash, zsh, fish) and the manual page, generated from the commander
// definitions main.ts makes, so that neither can name a command or option that does not exist
// or miss one that does (test/unit/completion.test.ts checks every one appears).
import type { Command, Option } from 'commander';

interface Flag {
  short?: string;
  long?: string;
  value: boolean;
  help: string;
}

interface Cmd {
  name: string;
  usage: string;
  help: string;
  flags: Flag[];
}

const HELP: Flag = { short: '-h', long: '--help', value: false, help: 'show the help' };

function flagsOf(cmd: Command): Flag[] {
  const flags = (cmd.options as readonly Option[]).filter((o) => !o.hidden).map((o) => ({
    ...(o.short ? { short: o.short } : {}), ...(o.long ? { long: o.long } : {}), value: o.required || o.optional, help: o.description,
  }));
  return [...flags, HELP];
}

/** The commands and their options, as the user types them. */
export function commandTable(program: Command): { top: Flag[]; commands: Cmd[] } {
  return {
    top: flagsOf(program),
    commands: program.commands.map((c) => ({ name: c.name(), usage: c.usage(), help: c.description(), flags: flagsOf(c) })),
  };
}

const spellings = (f: Flag) => [f.short, f.long].filter((s): s is string => !!s);
const sq = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

function bash(t: ReturnType<typeof commandTable>): string {
  const cases = t.commands.map((c) => `    ${c.name}) opts=${sq(c.flags.flatMap(spellings).join(' '))}; takes=${sq(c.flags.filter((f) => f.value).flatMap(spellings).join(' '))} ;;`);
  return `# bash completion for berth (berth completion bash); source it, or put it in
# ~/.local/share/bash-completion/completions/berth
_berth() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} opts='' takes=''
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W ${sq([...t.commands.map((c) => c.name), ...t.top.flatMap(spellings)].join(' '))} -- "$cur"))
    return
  fi
  case \${COMP_WORDS[1]} in
${cases.join('\n')}
  esac
  # After an option that takes a value, or a word that is not an option: files.
  case " $takes " in *" $prev "*) COMPREPLY=($(compgen -f -- "$cur")); return ;; esac
  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
}
complete -o filenames -F _berth berth
`;
}

function zsh(t: ReturnType<typeof commandTable>): string {
  const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/'/g, "'\\''").replace(/([[\]:])/g, '\\$1');
  const spec = (f: Flag) => spellings(f).map((s) => `'*${s}[${esc(f.help)}]${f.value ? ':value:_files' : ''}'`).join(' ');
  const cases = t.commands.map((c) => `    ${c.name}) _arguments -s ${c.flags.map(spec).join(' ')} '*:file:_files' ;;`);
  return `#compdef berth
# zsh completion for berth (berth completion zsh): put it in a directory of $fpath as _berth
_berth() {
  local -a commands
  commands=(${t.commands.map((c) => `'${esc(c.name)}:${esc(c.help)}'`).join(' ')})
  if (( CURRENT == 2 )); then
    _describe 'berth command' commands
    _arguments ${t.top.map(spec).join(' ')}
    return
  fi
  words=("\${(@)words[2,-1]}")
  (( CURRENT-- ))
  case $words[1] in
${cases.join('\n')}
  esac
}
_berth "$@"
`;
}

function fish(t: ReturnType<typeof commandTable>): string {
  const opt = (f: Flag, cond: string) => `complete -c berth -n ${sq(cond)}${f.short ? ` -s ${f.short.slice(1)}` : ''}${f.long ? ` -l ${f.long.slice(2)}` : ''}${f.value ? ' -r' : ''} -d ${sq(f.help)}`;
  return [
    '# fish completion for berth (berth completion fish): put it in ~/.config/fish/completions/berth.fish',
    ...t.commands.map((c) => `complete -c berth -f -n __fish_use_subcommand -a ${c.name} -d ${sq(c.help)}`),
    ...t.top.map((f) => opt(f, '__fish_use_subcommand')),
    ...t.commands.flatMap((c) => c.flags.map((f) => opt(f, `__fish_seen_subcommand_from ${c.name}`))),
    '',
  ].join('\n');
}

export function completionScript(program: Command, shell: string): string {
  const t = commandTable(program);
  return shell === 'bash' ? bash(t) : shell === 'zsh' ? zsh(t) : fish(t);
}

/** roff text: backslashes and hyphens escaped, and no line may start with a control character. */
const roff = (s: string) => s.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');

export function manPage(program: Command, version: string): string {
  const t = commandTable(program);
  const flag = (f: Flag) => `.TP\n.B ${roff(spellings(f).join(', '))}${f.value ? ' \\fIvalue\\fR' : ''}\n${roff(f.help)}`;
  return [
    `.TH BERTH 1 "" "berth ${roff(version)}" "User Commands"`,
    '.SH NAME',
    `berth \\- ${roff(program.description())}`,
    '.SH SYNOPSIS',
    '.B berth',
    '\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]',
    '.SH OPTIONS',
    ...t.top.map(flag),
    '.SH COMMANDS',
    ...t.commands.flatMap((c) => [`.SS ${roff(`berth ${c.name}`)}`, `.B berth ${roff(c.name)}`, roff(c.usage), '.PP', roff(c.help), ...c.flags.map(flag)]),
    '.SH EXIT STATUS',
    '125 when berth itself fails (a bad option, an image that cannot be had, a container that cannot be set up); 126 when the command cannot be invoked; 127 when it is not found; otherwise the command\'s own status (128+N after signal N), as docker run.',
    '.SH SEE ALSO',
    'The README of berth, and berth \\fICOMMAND\\fR \\-\\-help.',
    '',
  ].join('\n');
}

// OpenSSH's patterns (ssh_config(5), PATTERNS): `*` is any run of characters, `?` any one, and
// everything else stands for itself, compared without regard to case. Host lines, Include file
// names and known_hosts entries all use them.

export function sshPattern(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

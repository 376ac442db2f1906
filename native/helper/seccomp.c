/* Root emulation for berth build's RUN steps (plan line `fake_syscalls 1`): a seccomp filter,
 * installed just before the command's exec, under which the system calls that a single-uid user
 * namespace refuses and that package managers make as root (chown to another id, the set*id
 * family, setgroups, mknod of a device) return 0 without doing anything, as Charliecloud's
 * root emulation does (ch-run --seccomp, ch_seccomp.c). What is lost: a file chowned to
 * another id stays the caller's (root's in the image), a process that "dropped" its ids is
 * still root, and a device node is not made. Only the machine's native system calls are
 * filtered; a 32-bit x86 process's calls pass as they are. Needs no_new_privs (set before). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "helper.h"

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NATIVE_ARCH AUDIT_ARCH_PPC64LE
#else
#error "berth-helper's seccomp.c does not know this architecture's AUDIT_ARCH"
#endif

/* Faked whatever their arguments (aarch64 has no chown, lchown or mknod: only the *at forms). */
static const int FAKED[] = {
#ifdef SYS_chown
	SYS_chown,
#endif
#ifdef SYS_lchown
	SYS_lchown,
#endif
	SYS_fchown, SYS_fchownat,
	SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid,
	SYS_setfsuid, SYS_setfsgid, SYS_setgroups,
};

#define DATA(field) offsetof(struct seccomp_data, field)
#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define FAKE BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0) /* errno 0: the call returns 0 */
#define NFAKED (sizeof FAKED / sizeof FAKED[0])

void install_fake_syscalls(void)
{
	/* arch; nr; one test per faked call; mknod(at)'s mode: fake a char or block device only. */
	struct sock_filter f[4 + 2 * NFAKED + 16];
	size_t n = 0;
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA(arch));
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
	f[n++] = (struct sock_filter)ALLOW;
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA(nr));
	for (size_t i = 0; i < NFAKED; i++) {
		f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)FAKED[i], 0, 1);
		f[n++] = (struct sock_filter)FAKE;
	}
	/* mknodat(dirfd, path, mode, dev): mode is args[2]; mknod(path, mode, dev): args[1]. */
#ifdef SYS_mknod
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mknod, 0, 2);
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA(args[1]));
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 2, 0, 0);
#endif
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mknodat, 0, 6);
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA(args[2]));
	/* the mode (low 32 bits, little-endian) is in A: its file type decides */
	f[n++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT);
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 1, 0);
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 0, 1);
	f[n++] = (struct sock_filter)FAKE;
	f[n++] = (struct sock_filter)ALLOW;
	f[n++] = (struct sock_filter)ALLOW;
	struct sock_fprog prog = { .len = (unsigned short)n, .filter = f };
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		fail_errno("cannot install the seccomp filter that fakes chown, setgroups and the set*id calls (plan line fake_syscalls)");
}

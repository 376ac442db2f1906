/* The C unit tests' whole framework: CHECK(cond, name) prints one line per check ("ok NAME" or
 * "FAIL NAME (file:line)") and counts failures; checks_done() prints the tally and gives the
 * exit status. Debian has no C test framework worth a dependency for tests of this size. */
#ifndef BERTH_CHECK_H
#define BERTH_CHECK_H

#include <stdio.h>

static int checks_run, checks_failed;

#define CHECK(cond, name)                                                                                                  \
	do {                                                                                                               \
		checks_run++;                                                                                              \
		if (cond) {                                                                                                \
			printf("ok   %s\n", name);                                                                         \
		} else {                                                                                                   \
			checks_failed++;                                                                                   \
			printf("FAIL %s (%s:%d: %s)\n", name, __FILE__, __LINE__, #cond);                                  \
		}                                                                                                          \
		fflush(stdout);                                                                                            \
	} while (0)

static inline int checks_done(const char *suite)
{
	printf("%s: %d checks, %d failed\n", suite, checks_run, checks_failed);
	return checks_failed ? 1 : 0;
}

#endif

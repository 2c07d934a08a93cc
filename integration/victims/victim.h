/*
 * Shared helpers for the lazyr test victims.
 *
 * Every line a victim prints goes out with ONE write(2) to fd 1, so a dump
 * can never split a line: either the whole write happened before the freeze
 * (and is in the output file at the dumped file position) or it happens
 * after restore. No stdio buffering is used for output for the same reason.
 *
 * Convention checked by the Go harness: a line starting with "FAIL" means the
 * victim found its own state corrupted; it then exits with status 1.
 */
#ifndef LAZYR_VICTIM_H
#define LAZYR_VICTIM_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((format(printf, 1, 2), unused)) static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';

	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(1, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			_exit(3);
		}
		p += w;
		n -= w;
	}
}

#define fail(...)                \
	do {                     \
		say("FAIL " __VA_ARGS__); \
		exit(1);         \
	} while (0)

/* Monotonic time in nanoseconds. */
__attribute__((unused)) static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Sleep for ms milliseconds, resuming with the remaining time after EINTR.
 * A restore may hand a task that was dumped inside the sleep back with
 * EINTR (the kernel's restart block is not part of the image); the
 * remaining time was written to rem by the kernel before the dump.
 */
__attribute__((unused)) static void sleep_ms(long ms)
{
	struct timespec req = { ms / 1000, (ms % 1000) * 1000000L }, rem;
	int err;

	while ((err = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem)) != 0) {
		if (err != EINTR)
			fail("clock_nanosleep: %s", strerror(err));
		req = rem;
	}
}

/* Parse a non-negative decimal argument or die. */
__attribute__((unused)) static long arg_long(int argc, char **argv, int i, long def)
{
	char *end;
	long v;

	if (argc <= i)
		return def;
	errno = 0;
	v = strtol(argv[i], &end, 10);
	if (errno || *end || v < 0) {
		say("usage: bad number %s", argv[i]);
		exit(2);
	}
	return v;
}

#endif

/*
 * piperead: pipe state across a dump. Pipe A carries data that stays unread
 * in the pipe buffer while the victim blocks in read(2) on pipe B; the test
 * writes a line into B through /proc/PID/fd/<wfd> after the restore.
 *
 * Output:  ready rfd=<B read fd> wfd=<B write fd> pid=<pid>
 *          got <line>                      (for each line read from B)
 *          pending pending-data-<123+k>    (the content of A in round k)
 *
 * After each line it drains A (non-blocking, so lost pipe data shows as
 * "FAIL" instead of a hang) and refills A with the next round's token.
 * A's read end is O_NONBLOCK: a restore that loses file status flags makes
 * the check below fail too.
 */
#include "victim.h"

#include <fcntl.h>

static void put(int fd, const char *s)
{
	size_t n = strlen(s);

	if (write(fd, s, n) != (ssize_t)n)
		fail("write pipe A: %s", strerror(errno));
}

int main(void)
{
	int a[2], b[2];
	char tok[64], line[512];
	size_t have = 0;
	unsigned long round = 0;

	if (pipe(a) < 0 || pipe(b) < 0)
		fail("pipe: %s", strerror(errno));
	if (fcntl(a[0], F_SETFL, O_NONBLOCK) < 0)
		fail("fcntl: %s", strerror(errno));
	snprintf(tok, sizeof(tok), "pending-data-%lu", 123 + round);
	put(a[1], tok);
	say("ready rfd=%d wfd=%d pid=%d", b[0], b[1], getpid());

	for (;;) {
		char *nl = memchr(line, '\n', have);

		if (nl == NULL) {
			if (have == sizeof(line))
				fail("line too long");
			ssize_t r = read(b[0], line + have, sizeof(line) - have);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				fail("read pipe B: %s", strerror(errno));
			if (r == 0)
				fail("pipe B: unexpected EOF");
			have += (size_t)r;
			continue;
		}

		*nl = '\0';
		say("got %s", line);
		have -= (size_t)(nl + 1 - line);
		memmove(line, nl + 1, have);

		if (!(fcntl(a[0], F_GETFL) & O_NONBLOCK))
			fail("pipe A lost O_NONBLOCK");
		char buf[128];
		ssize_t r = read(a[0], buf, sizeof(buf) - 1);
		if (r < 0)
			fail("read pipe A (pending data lost?): %s", strerror(errno));
		buf[r] = '\0';
		if (strcmp(buf, tok) != 0)
			fail("pipe A holds '%s', want '%s'", buf, tok);
		say("pending %s", buf);

		round++;
		snprintf(tok, sizeof(tok), "pending-data-%lu", 123 + round);
		put(a[1], tok);
	}
}

/*
 * files: regular-file state across a dump: an O_APPEND log it writes to and
 * a data file it reads one fixed-width line per tick.
 *
 * usage: files LOG DATA
 *
 * DATA holds lines "%06d\n" numbered 0, 1, 2, ... (created by the test).
 * Each tick it reads the next line with single-byte read(2)s (no stdio
 * read-ahead, so the fd's file position is the whole state), checks it is
 * the next number and that the position is where that line ends, and checks
 * that LOG still has O_APPEND. Then it appends "log <n>" to LOG.
 *
 * Output:  start pid=<pid>
 *          line <k> ok
 *          tick <n> pid=<pid>
 */
#include "victim.h"

#include <fcntl.h>

#define LINE_WIDTH 7 /* "%06d\n" */

int main(int argc, char **argv)
{
	if (argc != 3) {
		say("usage: files LOG DATA");
		return 2;
	}
	int logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		fail("open %s: %s", argv[1], strerror(errno));
	int datafd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (datafd < 0)
		fail("open %s: %s", argv[2], strerror(errno));

	say("start pid=%d", getpid());
	for (unsigned long n = 0;; n++) {
		char line[32];
		size_t len = 0;

		for (;;) {
			char c;
			ssize_t r = read(datafd, &c, 1);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				fail("read data: %s", strerror(errno));
			if (r == 0)
				fail("line data file ended at line %lu", n);
			if (c == '\n')
				break;
			if (len + 1 >= sizeof(line))
				fail("line %lu too long", n);
			line[len++] = c;
		}
		line[len] = '\0';

		char *end;
		unsigned long k = strtoul(line, &end, 10);
		if (*end != '\0' || len == 0)
			fail("line %lu: bad content '%s'", n, line);
		if (k != n)
			fail("line got %lu want %lu", k, n);
		off_t pos = lseek(datafd, 0, SEEK_CUR);
		if (pos != (off_t)((n + 1) * LINE_WIDTH))
			fail("line %lu: data position %ld want %lu", n, (long)pos,
			     (unsigned long)((n + 1) * LINE_WIDTH));
		int fl = fcntl(logfd, F_GETFL);
		if (fl < 0 || !(fl & O_APPEND))
			fail("log fd lost O_APPEND (flags=%#x)", fl);
		if (!(fcntl(logfd, F_GETFD) & FD_CLOEXEC))
			fail("log fd lost FD_CLOEXEC");
		say("line %lu ok", k);

		char msg[64];
		int m = snprintf(msg, sizeof(msg), "log %lu\n", n);
		if (write(logfd, msg, (size_t)m) != m)
			fail("write log: %s", strerror(errno));
		say("tick %lu pid=%d", n, getpid());
		sleep_ms(100);
	}
}

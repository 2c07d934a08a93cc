/*
 * fd_refused: holds something lazyr refuses to dump, which it must name
 * while leaving the process running exactly as before.
 *
 * usage: fd_refused extunix PATH   a stream socket connected to PATH, a
 *                                  listener outside the process
 *        fd_refused pidfd          a pidfd (not supported yet)
 *
 * Output:  refused kind=<kind> fd=<fd or -1> pid=<pid>
 *          tick <n> pid=<pid>      (every 100 ms)
 */
#include "victim.h"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	const char *kind = argc > 1 ? argv[1] : "";
	int fd = -1;

	if (strcmp(kind, "extunix") == 0 && argc > 2) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[2]);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			fail("connect %s: %s", argv[2], strerror(errno));
	} else if (strcmp(kind, "pidfd") == 0) {
		fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		if (fd < 0)
			fail("pidfd_open: %s", strerror(errno));
	} else {
		say("usage: fd_refused extunix PATH | pidfd");
		return 2;
	}
	say("refused kind=%s fd=%d pid=%d", kind, fd, getpid());
	for (unsigned long n = 0;; n++) {
		say("tick %lu pid=%d", n, getpid());
		sleep_ms(100);
	}
}

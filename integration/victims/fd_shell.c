/*
 * fd_shell: a job started from a shell, for --shell-job. "fd_shell shell"
 * plays the shell: started as a session leader with a terminal on fd 0, it
 * starts "fd_shell job" in a process group of its own, makes that group the
 * terminal's foreground group (job control), and waits. The job reads lines
 * from its terminal.
 *
 * Output:  shell job=<pid>
 *          ready job pid=<pid> pgid=<pgid> sid=<sid>
 *          tick <n> fg=<1 if its group is the terminal's foreground group> sid=<sid>
 *          got <line>                 (for each line read from the terminal)
 */
#include "victim.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <termios.h>

static int job(void)
{
	char line[256];

	say("ready job pid=%d pgid=%d sid=%d", getpid(), getpgrp(), getsid(0));
	for (unsigned long n = 0;; n++) {
		struct pollfd p = { .fd = 0, .events = POLLIN };

		if (!isatty(0))
			fail("fd 0 is not a terminal");
		while (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
			ssize_t r = read(0, line, sizeof(line) - 1);

			if (r <= 0)
				fail("read terminal: %zd (%s)", r, strerror(errno));
			line[r] = '\0';
			line[strcspn(line, "\n")] = '\0';
			say("got %s", line);
		}
		say("tick %lu fg=%d sid=%d", n, tcgetpgrp(0) == getpgrp(), getsid(0));
		sleep_ms(100);
	}
}

int main(int argc, char **argv)
{
	pid_t c;

	if (argc > 1 && strcmp(argv[1], "job") == 0)
		return job();
	signal(SIGTTOU, SIG_IGN);
	signal(SIGCHLD, SIG_IGN); /* a dumped job is reaped at once */
	c = fork();
	if (c < 0)
		fail("fork: %s", strerror(errno));
	if (c == 0) {
		signal(SIGTTOU, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		setpgid(0, 0);
		execl(argv[0], argv[0], "job", (char *)NULL);
		_exit(127);
	}
	setpgid(c, c);
	if (tcsetpgrp(0, c) < 0)
		fail("tcsetpgrp: %s", strerror(errno));
	say("shell job=%d", c);
	for (;;)
		pause();
}

/*
 * fd_all: every fd family of fd_families.h at once, each checked every tick.
 *
 * usage: fd_all DIR      (DIR: a directory for the files it makes)
 *
 * Output:  ready <family> ...   (see fd_families.h)
 *          ready pid=<pid>
 *          tick <n>             (every ~100 ms, after checking everything)
 */
#include "fd_families.h"

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";

	(void)dir;
	fifo_setup(dir);
	unix_setup(dir);
	event_setup();
	inotify_setup(dir);
	shm_setup();
	sysv_setup();
	ghost_setup(dir);
	pty_setup();
	locks_setup(dir);
	say("ready pid=%d", getpid());
	for (unsigned long n = 0;; n++) {
		fifo_check(n);
		unix_check(n);
		event_check(n);
		inotify_check(n);
		shm_check(n);
		sysv_check(n);
		ghost_check(n);
		pty_check(n);
		say("tick %lu", n);
		sleep_ms(100);
	}
}

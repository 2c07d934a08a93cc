/*
 * fd_unix: unix sockets of every type with queued messages, a listener, a peer that closed.
 *
 * usage: fd_unix DIR      (DIR: a directory for the files it makes)
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
	unix_setup(dir);
	say("ready pid=%d", getpid());
	for (unsigned long n = 0;; n++) {
		unix_check(n);
		say("tick %lu", n);
		sleep_ms(100);
	}
}

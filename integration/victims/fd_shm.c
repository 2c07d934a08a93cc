/*
 * fd_shm: a memfd mapped shared and MAP_SHARED anonymous memory.
 *
 * usage: fd_shm DIR      (DIR: a directory for the files it makes)
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
	shm_setup();
	say("ready pid=%d", getpid());
	for (unsigned long n = 0;; n++) {
		shm_check(n);
		say("tick %lu", n);
		sleep_ms(100);
	}
}
